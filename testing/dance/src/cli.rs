//! Command-line parsing: options, steps and signal names.
//!
//! Everything is validated here, before the first step runs, so that a bad
//! choreography fails with exit status 2 without forking anything.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    os::unix::ffi::OsStrExt,
    path::PathBuf,
};

use libc::c_int;

/// The `--help` text.
pub const USAGE: &str = "\
Usage: dance [--report SOCKET] [--tag TAG] [--hop-times FILE] STEP...

Performs a daemonization choreography so that supervisor tests know the truth.
Steps run in order, each by the process that carries on after the previous
one (the current hop).

Options:
  --report SOCKET  send the report as one datagram to the UNIX datagram socket
                   bound at SOCKET (default: print it as a line on stdout)
  --tag TAG        tag to put in the report: printable ASCII without spaces
                   (default: -)
  --hop-times FILE the parent side of each hop appends a line
                   \"PID SECONDS.NANOSECONDS\" to FILE (its pid and the
                   CLOCK_REALTIME time) just before it ends
  -h, --help       print this help and exit

Steps (a hop is a fork after which the child carries on):
  fork             hop; the parent exits 0 at once
  fork-exit:CODE   hop; the parent exits with CODE (0-255)
  fork-kill:SIG    hop; the parent kills itself with SIG
  launch           hop; the parent waits for the child and then exits with the
                   child's exit status (128+N if signal N killed it)
  fork-late        hop; the parent waits until the child has ended, without
                   reaping it, then exits 0: the child ends first, and its
                   status reaches the subreaper with the parent's death
  fork-late-exit:CODE
                   as fork-late, but the parent exits with CODE
  setsid           start a new session
  zombie           fork a child that exits 0 at once; it is never reaped
  workers:N        fork N workers that wait until a signal kills them
  orphan           fork a child that forks a grandchild and exits 0; the child
                   is reaped, the grandchild waits until killed, orphaned
  storm:N          fork N children, at most 64 alive at once; each forks a
                   grandchild and exits 0 at once, and the orphaned grandchild
                   exits 0 as soon as its parent has ended. The children are
                   reaped; the step ends once every grandchild has ended too
  pidfile:PATH     write the pid and a newline to PATH (via PATH.tmp, renamed)
  report           send the report now
  notify           send \"READY=1\" and \"MAINPID=<own pid>\" to $NOTIFY_SOCKET
                   (sd_notify; a path, or @NAME in the abstract namespace)
  sleep:MS         sleep MS milliseconds
  await:SIG        wait until SIG arrives (it is blocked from the start, so a
                   SIG sent before this step waits for it)
  exit:CODE        exit with CODE (0-255)
  kill:SIG         kill self with SIG
  serve            send the report, then wait: SIGTERM or SIGINT sends SIGTERM
                   to the live workers, reaps them and exits 0; SIGHUP only
                   logs \"dance: reload\" on stderr; dead workers are reaped

exit, kill and serve must be the last step. Without one of them, the last hop
exits 0 after its steps. The parent side of a hop writes nothing, except its
line in the --hop-times file.

SIG is a name (TERM, SIGTERM, term) or a number. Its default action must end
the process: CHLD, CONT, STOP, TSTP, TTIN, TTOU, URG and WINCH are refused.
A process that kills itself disables its core dumps first.

The report is one line of ASCII, sent as one datagram without a newline:
  settled tag=TAG pid=PID last_parent=PPID hops=H sid=SID
PID is the reporting process, PPID the process that forked its last hop (0 if
there was no hop), H the number of hops (fork, fork-exit, fork-kill, launch, fork-late,
fork-late-exit),
SID its session id.

Exit status: 2 for a usage error, 111 for a failed system call.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print [`USAGE`] and exit 0.
    Help,
    /// Perform the choreography.
    Run(Config),
}

/// A validated choreography.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    /// Where to send the report; `None` prints it on stdout.
    pub report: Option<PathBuf>,
    /// The report's tag.
    pub tag: String,
    /// Where the parent side of each hop appends its pid and exit time.
    pub hop_times: Option<PathBuf>,
    /// The steps, in order; only the last one may be terminal.
    pub steps: Vec<Step>,
}

/// One step of the choreography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Fork,
    ForkExit(u8),
    ForkKill(c_int),
    Launch,
    /// A hop whose parent ends only after the child has, with this code.
    ForkLate(u8),
    Setsid,
    Zombie,
    Workers(u32),
    Orphan,
    Storm(u32),
    Pidfile(PathBuf),
    Report,
    Notify,
    Sleep(u64),
    /// Wait until this signal arrives (blocked from the start, so one sent
    /// early waits).
    Await(c_int),
    Exit(u8),
    Kill(c_int),
    Serve,
}

impl Step {
    /// Whether the step never returns, so nothing may follow it.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Step::Exit(_) | Step::Kill(_) | Step::Serve)
    }
}

/// A bad command line; the message names the offending argument.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The most workers one `workers:N` step may start.
pub const MAX_WORKERS: u32 = 1024;

/// The most children one `storm:N` step may start: a million.
pub const MAX_STORM: u32 = 1_000_000;

/// Signal names, without the `SIG` prefix.
const SIGNALS: &[(&str, c_int)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Signals whose default action does not end the process.
const NOT_FATAL: &[c_int] = &[
    libc::SIGCHLD,
    libc::SIGCONT,
    libc::SIGSTOP,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGURG,
    libc::SIGWINCH,
];

/// Parses the arguments that follow the program name.
pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut report: Option<PathBuf> = None;
    let mut tag: Option<String> = None;
    let mut hop_times: Option<PathBuf> = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if !bytes.starts_with(b"-") {
            let step = parse_step(&arg)?;
            if let Some(last) = steps.last().filter(|last| last.is_terminal()) {
                return Err(UsageError(format!(
                    "step {} cannot follow {}, which never returns",
                    quote(&arg),
                    step_name(last)
                )));
            }
            steps.push(step);
            continue;
        }
        if bytes == b"-h" || bytes == b"--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = match bytes.iter().position(|&b| b == b'=') {
            Some(i) => (&bytes[..i], Some(OsStr::from_bytes(&bytes[i + 1..]))),
            None => (bytes, None),
        };
        if name != b"--report" && name != b"--tag" && name != b"--hop-times" {
            return Err(UsageError(format!("unknown option {}", quote(&arg))));
        }
        let value = match inline {
            Some(value) => value.to_owned(),
            None => args
                .next()
                .ok_or_else(|| UsageError(format!("option {} needs a value", quote(&arg))))?,
        };
        if name == b"--report" {
            if report.is_some() {
                return Err(UsageError("option \"--report\" given twice".into()));
            }
            if value.is_empty() {
                return Err(UsageError("option \"--report\" needs a socket path".into()));
            }
            report = Some(PathBuf::from(value));
        } else if name == b"--hop-times" {
            if hop_times.is_some() {
                return Err(UsageError("option \"--hop-times\" given twice".into()));
            }
            if value.is_empty() {
                return Err(UsageError(
                    "option \"--hop-times\" needs a file path".into(),
                ));
            }
            hop_times = Some(PathBuf::from(value));
        } else {
            if tag.is_some() {
                return Err(UsageError("option \"--tag\" given twice".into()));
            }
            tag = Some(parse_tag(&value)?);
        }
    }
    if steps.is_empty() {
        return Err(UsageError("no steps given".into()));
    }
    Ok(Command::Run(Config {
        report,
        tag: tag.unwrap_or_else(|| "-".into()),
        hop_times,
        steps,
    }))
}

/// Parses one step, `NAME` or `NAME:VALUE`.
pub fn parse_step(arg: &OsStr) -> Result<Step, UsageError> {
    let bytes = arg.as_bytes();
    let (name, value) = match bytes.iter().position(|&b| b == b':') {
        Some(i) => (&bytes[..i], Some(OsStr::from_bytes(&bytes[i + 1..]))),
        None => (bytes, None),
    };
    let bad = |why: &str| UsageError(format!("bad step {}: {why}", quote(arg)));
    let no_value = |step: Step| match value {
        None => Ok(step),
        Some(_) => Err(bad("this step takes no value")),
    };
    let text = || {
        value
            .ok_or_else(|| bad("this step needs a value after ':'"))?
            .to_str()
            .ok_or_else(|| bad("the value is not valid UTF-8"))
    };
    let exit_code = || -> Result<u8, UsageError> {
        parse_number(text()?).ok_or_else(|| bad("CODE must be a number from 0 to 255"))
    };
    let signal = || -> Result<c_int, UsageError> { parse_signal(text()?).map_err(|why| bad(&why)) };
    match name {
        b"fork" => no_value(Step::Fork),
        b"fork-exit" => Ok(Step::ForkExit(exit_code()?)),
        b"fork-kill" => Ok(Step::ForkKill(signal()?)),
        b"launch" => no_value(Step::Launch),
        b"fork-late" => no_value(Step::ForkLate(0)),
        b"fork-late-exit" => Ok(Step::ForkLate(exit_code()?)),
        b"setsid" => no_value(Step::Setsid),
        b"zombie" => no_value(Step::Zombie),
        b"workers" => match parse_number::<u32>(text()?) {
            Some(n) if n <= MAX_WORKERS => Ok(Step::Workers(n)),
            _ => Err(bad(&format!("N must be a number from 0 to {MAX_WORKERS}"))),
        },
        b"orphan" => no_value(Step::Orphan),
        b"storm" => match parse_number::<u32>(text()?) {
            Some(n) if n <= MAX_STORM => Ok(Step::Storm(n)),
            _ => Err(bad(&format!("N must be a number from 0 to {MAX_STORM}"))),
        },
        b"pidfile" => match value {
            Some(path) if !path.is_empty() => Ok(Step::Pidfile(PathBuf::from(path))),
            _ => Err(bad("PATH must not be empty")),
        },
        b"report" => no_value(Step::Report),
        b"notify" => no_value(Step::Notify),
        b"sleep" => parse_number(text()?)
            .map(Step::Sleep)
            .ok_or_else(|| bad("MS must be a number of milliseconds")),
        b"await" => Ok(Step::Await(signal()?)),
        b"exit" => Ok(Step::Exit(exit_code()?)),
        b"kill" => Ok(Step::Kill(signal()?)),
        b"serve" => no_value(Step::Serve),
        _ => Err(UsageError(format!("unknown step {}", quote(arg)))),
    }
}

/// Parses a signal name (case-insensitive, `SIG` prefix optional) or number
/// whose default action ends the process.
pub fn parse_signal(text: &str) -> Result<c_int, String> {
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = if let Some(n) = parse_number::<c_int>(text) {
        if !(1..=libc::SIGRTMAX()).contains(&n) {
            return Err(format!(
                "signal number must be from 1 to {}",
                libc::SIGRTMAX()
            ));
        }
        n
    } else if let Some(&(_, sig)) = SIGNALS.iter().find(|(known, _)| *known == name) {
        sig
    } else {
        return Err(format!("unknown signal {text:?}"));
    };
    if NOT_FATAL.contains(&sig) {
        return Err(format!("signal {text:?} does not end a process by default"));
    }
    Ok(sig)
}

/// Parses a plain decimal number (digits only, no sign).
fn parse_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Checks a tag: non-empty printable ASCII without spaces.
fn parse_tag(value: &OsStr) -> Result<String, UsageError> {
    match value.to_str() {
        Some(tag) if !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(tag.to_owned())
        }
        _ => Err(UsageError(format!(
            "bad tag {}: it must be printable ASCII without spaces",
            quote(value)
        ))),
    }
}

/// The name of a step as written on the command line.
fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Fork => "fork",
        Step::ForkExit(_) => "fork-exit",
        Step::ForkKill(_) => "fork-kill",
        Step::Launch => "launch",
        Step::ForkLate(0) => "fork-late",
        Step::ForkLate(_) => "fork-late-exit",
        Step::Setsid => "setsid",
        Step::Zombie => "zombie",
        Step::Workers(_) => "workers",
        Step::Orphan => "orphan",
        Step::Storm(_) => "storm",
        Step::Pidfile(_) => "pidfile",
        Step::Report => "report",
        Step::Notify => "notify",
        Step::Sleep(_) => "sleep",
        Step::Await(_) => "await",
        Step::Exit(_) => "exit",
        Step::Kill(_) => "kill",
        Step::Serve => "serve",
    }
}

/// Quotes an argument for an error message.
fn quote(arg: &OsStr) -> String {
    format!("{:?}", arg.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn steps(args: &[&str]) -> Vec<Step> {
        match run(args) {
            Ok(Command::Run(config)) => config.steps,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match run(args) {
            Err(UsageError(message)) => message,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn every_step() {
        assert_eq!(
            steps(&[
                "fork",
                "fork-exit:3",
                "fork-kill:TERM",
                "launch",
                "fork-late",
                "fork-late-exit:7",
                "setsid",
                "zombie",
                "workers:2",
                "orphan",
                "storm:20000",
                "pidfile:/run/x.pid",
                "report",
                "sleep:10",
                "serve",
            ]),
            vec![
                Step::Fork,
                Step::ForkExit(3),
                Step::ForkKill(libc::SIGTERM),
                Step::Launch,
                Step::ForkLate(0),
                Step::ForkLate(7),
                Step::Setsid,
                Step::Zombie,
                Step::Workers(2),
                Step::Orphan,
                Step::Storm(20000),
                Step::Pidfile("/run/x.pid".into()),
                Step::Report,
                Step::Sleep(10),
                Step::Serve,
            ]
        );
        assert_eq!(steps(&["exit:255"]), vec![Step::Exit(255)]);
        assert_eq!(steps(&["kill:9"]), vec![Step::Kill(libc::SIGKILL)]);
    }

    #[test]
    fn options_and_defaults() {
        assert_eq!(
            run(&["fork"]),
            Ok(Command::Run(Config {
                report: None,
                tag: "-".into(),
                hop_times: None,
                steps: vec![Step::Fork],
            }))
        );
        assert_eq!(
            run(&["--report", "/tmp/s", "--tag=web-1", "serve"]),
            Ok(Command::Run(Config {
                report: Some("/tmp/s".into()),
                tag: "web-1".into(),
                hop_times: None,
                steps: vec![Step::Serve],
            }))
        );
        assert_eq!(
            run(&["--report=/tmp/s", "--tag", "t", "report"]),
            Ok(Command::Run(Config {
                report: Some("/tmp/s".into()),
                tag: "t".into(),
                hop_times: None,
                steps: vec![Step::Report],
            }))
        );
        assert_eq!(
            run(&["--hop-times", "/tmp/h", "fork", "serve"]),
            Ok(Command::Run(Config {
                report: None,
                tag: "-".into(),
                hop_times: Some("/tmp/h".into()),
                steps: vec![Step::Fork, Step::Serve],
            }))
        );
    }

    #[test]
    fn help() {
        assert_eq!(run(&["--help"]), Ok(Command::Help));
        assert_eq!(run(&["fork", "-h"]), Ok(Command::Help));
        for step in [
            "fork ",
            "fork-exit:",
            "fork-kill:",
            "launch ",
            "setsid ",
            "zombie ",
            "workers:",
            "orphan ",
            "storm:",
            "pidfile:",
            "report ",
            "sleep:",
            "exit:",
            "kill:",
            "serve ",
        ] {
            assert!(USAGE.contains(&format!("  {step}")), "{step} undocumented");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("SIGKILL"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("segv"), Ok(libc::SIGSEGV));
        assert_eq!(parse_signal("15"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("34"), Ok(34));
        for bad in [
            "", "0", "65", "-1", "TERMX", "SIG", "+15", "CHLD", "STOP", "18",
        ] {
            assert!(parse_signal(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_steps_are_named() {
        for (args, needle) in [
            (&["fork", "forks"][..], "\"forks\""),
            (&["fork-exit:abc"], "\"fork-exit:abc\""),
            (&["fork-exit:256"], "\"fork-exit:256\""),
            (&["fork-exit"], "\"fork-exit\""),
            (&["exit:-1"], "\"exit:-1\""),
            (&["fork-kill:FOO"], "\"fork-kill:FOO\""),
            (&["kill:WINCH"], "\"kill:WINCH\""),
            (&["workers:x"], "\"workers:x\""),
            (&["workers:5000"], "\"workers:5000\""),
            (&["storm:x"], "\"storm:x\""),
            (&["storm:1000001"], "\"storm:1000001\""),
            (&["storm"], "\"storm\""),
            (&["--hop-times=", "fork"], "\"--hop-times\""),
            (&["sleep:1.5"], "\"sleep:1.5\""),
            (&["pidfile:"], "\"pidfile:\""),
            (&["fork:1"], "\"fork:1\""),
            (&["serve:now"], "\"serve:now\""),
            (&["--bogus", "fork"], "\"--bogus\""),
            (&["fork", "--report"], "\"--report\""),
            (&["--tag", "a b", "fork"], "\"a b\""),
            (&["--tag=", "fork"], "\"\""),
            (&["exit:0", "fork"], "\"fork\""),
            (&["serve", "report"], "\"report\""),
        ] {
            let message = error(args);
            assert!(message.contains(needle), "{args:?}: {message}");
        }
        assert_eq!(error(&[]), "no steps given");
        assert_eq!(error(&["--tag", "t"]), "no steps given");
        assert!(error(&["--tag", "a", "--tag", "b", "fork"]).contains("twice"));
        assert!(error(&["--hop-times", "a", "--hop-times=b", "fork"]).contains("twice"));
    }

    #[test]
    fn non_utf8_pidfile_path() {
        let arg = OsStr::from_bytes(b"pidfile:/tmp/\xff.pid");
        assert_eq!(
            parse_step(arg),
            Ok(Step::Pidfile(OsStr::from_bytes(b"/tmp/\xff.pid").into()))
        );
    }
}
