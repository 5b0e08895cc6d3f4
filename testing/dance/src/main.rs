//! `dance`: a test helper that performs a daemonization choreography.
//!
//! Integration tests run the supervisor against `dance` so that they know
//! the truth: which process forked which, which hops exited how, and which
//! process finally settled (and with what pid, parent and session).
//!
//! ```text
//! dance [--report SOCKET] [--tag TAG] [--hop-times FILE] STEP...
//! ```
//!
//! Steps run in order, each by the process that carries on after the
//! previous one (the current hop). A *hop* is a fork after which the child
//! carries on:
//!
//! | step             | effect                                                          |
//! |------------------|-----------------------------------------------------------------|
//! | `fork`           | hop; the parent exits 0 at once                                 |
//! | `fork-exit:CODE` | hop; the parent exits with CODE (0-255)                         |
//! | `fork-kill:SIG`  | hop; the parent kills itself with SIG                           |
//! | `launch`         | hop; the parent waits for the child, then exits with its status (128+N for signal N) |
//! | `setsid`         | start a new session                                             |
//! | `zombie`         | fork a child that exits 0 at once and is never reaped           |
//! | `workers:N`      | fork N workers that wait until a signal kills them              |
//! | `orphan`         | fork a child that forks a grandchild and exits; reap the child, the grandchild waits until killed |
//! | `storm:N`        | fork N children, at most 64 alive at once; each forks a grandchild and exits 0, the orphaned grandchild exits 0 once its parent has ended; reap the children, end once every grandchild has ended |
//! | `pidfile:PATH`   | write the pid and `\n` to PATH.tmp, rename it to PATH           |
//! | `report`         | send the report now                                             |
//! | `notify`         | send `READY=1` and `MAINPID=<own pid>` to `$NOTIFY_SOCKET` (sd_notify) |
//! | `sleep:MS`       | sleep MS milliseconds                                           |
//! | `await:SIG`      | wait until SIG arrives (blocked from the start: one sent early waits) |
//! | `exit:CODE`      | exit with CODE                                                  |
//! | `kill:SIG`       | kill self with SIG                                              |
//! | `serve`          | send the report, then wait for signals (below)                  |
//!
//! `exit`, `kill` and `serve` must come last; without them the last hop exits
//! 0 after its steps. The parent side of a hop writes nothing (but see
//! `--hop-times` below). SIG is a name
//! (`TERM`, `SIGTERM`, `term`) or a number whose default action ends the
//! process; a process that kills itself disables its core dumps first.
//!
//! While serving, SIGTERM or SIGINT sends SIGTERM to the live workers, reaps
//! them and exits 0; SIGHUP logs `dance: reload` on stderr; workers that die
//! are reaped. The zombie is never reaped, by design.
//!
//! At start, every signal disposition is reset to its default and the signal
//! mask is emptied.
//!
//! # Report
//!
//! `serve` and `report` send one line of ASCII, as one datagram without a
//! newline to the UNIX datagram socket bound at `--report SOCKET`, or else as
//! a line on stdout:
//!
//! ```text
//! settled tag=TAG pid=PID last_parent=PPID hops=H sid=SID
//! ```
//!
//! PID is `getpid()`, PPID the pid of the process that forked the last hop
//! (0 without a hop), H the number of hops, SID `getsid(0)`, TAG `-` unless
//! `--tag` is given. A report that cannot be sent is logged on stderr.
//!
//! # Hop times
//!
//! With `--hop-times FILE`, the parent side of every hop, just before it
//! ends (exits, kills itself, or exits after `launch`), appends one line to
//! FILE with one `write(2)` in append mode:
//!
//! ```text
//! PID SECONDS.NANOSECONDS
//! ```
//!
//! its pid and the `CLOCK_REALTIME` time, so that a benchmark can measure
//! how long a supervisor takes to notice the hand-off. A line that cannot
//! be written is logged on stderr.
//!
//! # Exit status
//!
//! 2 for a usage error (before any step runs), 111 for a failed system call,
//! otherwise as the steps say.

mod cli;
mod sys;

use std::{
    fmt::Display,
    fs::OpenOptions,
    io::{self, Write},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process, thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cli::{Command, Config, Step};
use libc::pid_t;
use sys::Forked;

/// Exit status for a usage error.
const EXIT_USAGE: i32 = 2;
/// Exit status for a failed system call.
const EXIT_SETUP: i32 = 111;

fn main() {
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            process::exit(0)
        }
        Err(err) => {
            eprintln!("dance: {err}\nTry \"dance --help\".");
            process::exit(EXIT_USAGE)
        }
    };
    sys::reset_signals().unwrap_or_else(|err| setup_error("resetting the signal mask", err));
    let awaited: Vec<libc::c_int> = config
        .steps
        .iter()
        .filter_map(|step| match *step {
            Step::Await(sig) => Some(sig),
            _ => None,
        })
        .collect();
    sys::SigSet::of(&awaited)
        .apply(libc::SIG_BLOCK)
        .unwrap_or_else(|err| setup_error("blocking the awaited signals", err));
    Dance::new(&config).run(&config.steps)
}

/// Reports a failed system call and exits 111.
fn setup_error(what: &str, err: impl Display) -> ! {
    eprintln!("dance: {what}: {err}");
    process::exit(EXIT_SETUP)
}

/// The state of the current hop.
struct Dance {
    report_to: Option<PathBuf>,
    tag: String,
    hop_times: Option<PathBuf>,
    /// The pid of the process that forked this hop; 0 before any hop.
    last_parent: pid_t,
    /// How many hops led to this process.
    hops: u32,
    /// This process's workers that have not been reaped yet.
    workers: Vec<pid_t>,
}

impl Dance {
    fn new(config: &Config) -> Self {
        Dance {
            report_to: config.report.clone(),
            tag: config.tag.clone(),
            hop_times: config.hop_times.clone(),
            last_parent: 0,
            hops: 0,
            workers: Vec::new(),
        }
    }

    fn run(mut self, steps: &[Step]) -> ! {
        for step in steps {
            self.step(step);
        }
        process::exit(0)
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Fork => {
                if self.hop().is_some() {
                    self.note_hop_end();
                    sys::exit_quietly(0)
                }
            }
            Step::ForkExit(code) => {
                if self.hop().is_some() {
                    self.note_hop_end();
                    sys::exit_quietly(code)
                }
            }
            Step::ForkKill(sig) => {
                if self.hop().is_some() {
                    self.note_hop_end();
                    sys::die_by_signal(sig)
                }
            }
            Step::Launch => {
                if let Some(child) = self.hop() {
                    match sys::wait_for(child) {
                        Ok(ended) => {
                            self.note_hop_end();
                            process::exit(ended.shell_status())
                        }
                        Err(err) => setup_error("launch: waiting for the child", err),
                    }
                }
            }
            Step::ForkLate(code) => {
                if let Some(child) = self.hop() {
                    if let Err(err) = sys::wait_until_ended(child) {
                        setup_error("fork-late: waiting for the child", err)
                    }
                    self.note_hop_end();
                    sys::exit_quietly(code)
                }
            }
            Step::Setsid => sys::setsid().unwrap_or_else(|err| setup_error("setsid", err)),
            Step::Zombie => match fork("zombie") {
                Forked::Child => sys::exit_quietly(0),
                Forked::Parent(_) => {}
            },
            Step::Workers(n) => {
                for _ in 0..n {
                    match fork("workers") {
                        Forked::Child => sys::park(),
                        Forked::Parent(worker) => self.workers.push(worker),
                    }
                }
            }
            Step::Orphan => orphan(),
            Step::Storm(n) => storm(n),
            Step::Pidfile(ref path) => write_pidfile(path)
                .unwrap_or_else(|err| setup_error(&format!("pidfile {}", path.display()), err)),
            Step::Report => self.report(),
            Step::Notify => {
                notify_ready().unwrap_or_else(|err| setup_error("notify: $NOTIFY_SOCKET", err))
            }
            Step::Sleep(ms) => thread::sleep(Duration::from_millis(ms)),
            Step::Await(sig) => {
                sys::SigSet::of(&[sig])
                    .wait()
                    .unwrap_or_else(|err| setup_error("awaiting a signal", err));
            }
            Step::Exit(code) => process::exit(i32::from(code)),
            Step::Kill(sig) => sys::die_by_signal(sig),
            Step::Serve => self.serve(),
        }
    }

    /// Forks. The child carries on as the next hop and gets `None`; the
    /// parent gets the child's pid and must end.
    fn hop(&mut self) -> Option<pid_t> {
        let me = sys::getpid();
        match fork("hop") {
            Forked::Parent(child) => Some(child),
            Forked::Child => {
                self.last_parent = me;
                self.hops += 1;
                // The workers are the parent's children, not ours.
                self.workers.clear();
                None
            }
        }
    }

    /// Appends this hop parent's pid and the time to the `--hop-times`
    /// file, if there is one; a failure is logged, not fatal.
    fn note_hop_end(&self) {
        let Some(path) = &self.hop_times else { return };
        // Read the clock last, as close to the end as the write allows.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "{} {}.{:09}\n",
            sys::getpid(),
            now.as_secs(),
            now.subsec_nanos()
        );
        // One write in append mode: lines of concurrent hops never mix.
        let written = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(err) = written {
            eprintln!("dance: appending to {}: {err}", path.display());
        }
    }

    fn report_line(&self) -> String {
        format!(
            "settled tag={} pid={} last_parent={} hops={} sid={}",
            self.tag,
            sys::getpid(),
            self.last_parent,
            self.hops,
            sys::getsid()
        )
    }

    /// Sends the report; a failure is logged, not fatal.
    fn report(&self) {
        let line = self.report_line();
        match &self.report_to {
            Some(socket) => {
                let sent =
                    UnixDatagram::unbound().and_then(|sock| sock.send_to(line.as_bytes(), socket));
                if let Err(err) = sent {
                    eprintln!("dance: sending the report to {}: {err}", socket.display());
                }
            }
            None => {
                let mut stdout = io::stdout().lock();
                if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                    eprintln!("dance: printing the report: {err}");
                }
            }
        }
    }

    /// Reports, then waits for signals until SIGTERM or SIGINT.
    fn serve(&mut self) -> ! {
        let signals = sys::SigSet::of(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD]);
        // Block before reporting: the test may signal as soon as it has the
        // report.
        signals
            .apply(libc::SIG_BLOCK)
            .unwrap_or_else(|err| setup_error("blocking signals", err));
        // Workers that died before SIGCHLD was blocked raised no signal.
        self.reap_workers();
        self.report();
        loop {
            match signals.wait() {
                Ok(libc::SIGCHLD) => self.reap_workers(),
                Ok(libc::SIGHUP) => eprintln!("dance: reload"),
                Ok(_) => self.stop(),
                Err(err) => setup_error("waiting for signals", err),
            }
        }
    }

    /// Reaps the workers that have ended (and only them: the zombie stays).
    fn reap_workers(&mut self) {
        self.workers.retain(|&worker| !sys::reap_if_ended(worker));
    }

    /// Terminates and reaps the live workers, then exits 0.
    fn stop(&mut self) -> ! {
        for &worker in &self.workers {
            // The worker may have died since the last reaping: ignore ESRCH.
            let _ = sys::kill(worker, libc::SIGTERM);
            // A stopped worker would not act on SIGTERM until continued.
            let _ = sys::kill(worker, libc::SIGCONT);
        }
        for &worker in &self.workers {
            if let Err(err) = sys::wait_for(worker) {
                eprintln!("dance: reaping worker {worker}: {err}");
            }
        }
        process::exit(0)
    }
}

/// Forks, exiting 111 if that fails.
fn fork(what: &str) -> Forked {
    sys::fork().unwrap_or_else(|err| setup_error(&format!("{what}: fork"), err))
}

/// Leaves behind a grandchild whose parent has exited.
fn orphan() {
    match fork("orphan") {
        Forked::Child => match sys::fork() {
            Ok(Forked::Child) => sys::park(),
            Ok(Forked::Parent(_)) => sys::exit_quietly(0),
            Err(err) => setup_error("orphan: fork of the grandchild", err),
        },
        Forked::Parent(child) => match sys::wait_for(child) {
            Ok(sys::Ended::Exited(0)) => {}
            Ok(ended) => setup_error("orphan", format!("intermediate child ended {ended:?}")),
            Err(err) => setup_error("orphan: waiting for the child", err),
        },
    }
}

/// How many children of a storm may be alive at once, so that a storm
/// stays far below any pid limit.
const STORM_WAVE: u32 = 64;

/// Forks `n` short-lived children in waves; each leaves an orphan that
/// ends once its parent has. Returns when every child and orphan has ended.
fn storm(n: u32) {
    // Every child and grandchild inherits the write end: end of file on the
    // read end means that the last of them has ended.
    let (all_ended, holder) = sys::pipe().unwrap_or_else(|err| setup_error("storm: pipe", err));
    let mut left = n;
    let mut wave = Vec::with_capacity(STORM_WAVE as usize);
    while left > 0 {
        for _ in 0..left.min(STORM_WAVE) {
            match fork("storm") {
                Forked::Child => storm_child(),
                Forked::Parent(child) => wave.push(child),
            }
        }
        left -= left.min(STORM_WAVE);
        for child in wave.drain(..) {
            match sys::wait_for(child) {
                Ok(sys::Ended::Exited(0)) => {}
                Ok(ended) => setup_error("storm", format!("a child ended {ended:?}")),
                Err(err) => setup_error("storm: waiting for a child", err),
            }
        }
    }
    drop(holder);
    sys::read_to_end(&all_ended).unwrap_or_else(|err| setup_error("storm: waiting", err));
}

/// A storm's child: leaves a grandchild that ends as soon as the child has.
fn storm_child() -> ! {
    let (parent_ended, parent_alive) =
        sys::pipe().unwrap_or_else(|err| setup_error("storm: pipe", err));
    match sys::fork() {
        Ok(Forked::Child) => {
            drop(parent_alive);
            // End of file once the parent, the only other holder, has ended.
            let _ = sys::read_to_end(&parent_ended);
            sys::exit_quietly(0)
        }
        Ok(Forked::Parent(_)) => sys::exit_quietly(0),
        Err(err) => setup_error("storm: fork of the grandchild", err),
    }
}

/// Tells the supervisor over `$NOTIFY_SOCKET` that this process is ready
/// and is the main process (the sd_notify protocol).
fn notify_ready() -> io::Result<()> {
    use std::os::{linux::net::SocketAddrExt, unix::net::SocketAddr};
    let target = std::env::var_os("NOTIFY_SOCKET")
        .ok_or_else(|| io::Error::other("NOTIFY_SOCKET is not set"))?;
    let address = match target.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&target)?,
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let message = format!("READY=1\nMAINPID={}\n", sys::getpid());
    socket.send_to_addr(message.as_bytes(), &address)?;
    Ok(())
}

/// Writes the pid and a newline to `path`, atomically.
fn write_pidfile(path: &Path) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{}\n", sys::getpid()))?;
    std::fs::rename(&tmp, path)
}
