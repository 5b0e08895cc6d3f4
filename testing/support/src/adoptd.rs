//! A real adoptd on a scratch configuration directory, its log read line
//! by line, and stopped with every process it leaves when dropped.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    io::{BufRead, BufReader},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError, Weak, mpsc},
    time::{Duration, Instant},
};

use crate::{Pidfd, Report, Scratch, TIMEOUT, Watch, adoptd_binary, descendants, signal};

/// One line of adoptd's log: the message and its key=value fields.
#[derive(Clone, Debug, Default)]
pub struct LogLine {
    pub text: String,
    pub message: String,
    pub fields: HashMap<String, String>,
}

impl LogLine {
    fn parse(text: &str) -> Self {
        // "TIMESTAMP  LEVEL target: message key=value key="value""
        let rest = text.split_once(": ").map_or(text, |(_, rest)| rest);
        let mut fields = HashMap::new();
        let mut message = Vec::new();
        for token in rest.split(' ') {
            match token.split_once('=') {
                Some((key, value))
                    if !key.is_empty()
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    fields.insert(key.to_owned(), value.trim_matches('"').to_owned());
                }
                _ if fields.is_empty() => message.push(token),
                _ => {}
            }
        }
        LogLine {
            text: text.to_owned(),
            message: message.join(" "),
            fields,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn pid(&self, key: &str) -> u32 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.text))
    }

    pub fn is(&self, message: &str, service: &str) -> bool {
        self.message == message && self.get("service") == Some(service)
    }
}

/// A running adoptd, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Adoptd {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub log: Vec<LogLine>,
    /// The last lines adoptd wrote, read or not by the test, for a watch
    /// that times out to show (see [`Adoptd::describe`]).
    tail: Tail,
}

/// The last [`TAIL_LINES`] lines of adoptd's log, as its reader thread
/// gets them.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// A [`Tail`] that does not keep its adoptd's lines alive.
type WeakTail = Weak<Mutex<VecDeque<String>>>;

/// How many of adoptd's last lines a failed watch shows.
const TAIL_LINES: usize = 1000;

thread_local! {
    /// The adoptds this thread (one test) started, by pid, while their
    /// handles live: a wait that knows no adoptd (a dance's report) shows
    /// what they were doing when it times out.
    static STARTED: RefCell<Vec<(u32, WeakTail)>> =
        const { RefCell::new(Vec::new()) };
}

/// What every adoptd this thread started, and has not stopped, was
/// doing: for a wait that timed out elsewhere (see [`Adoptd::describe`]).
pub(crate) fn what_this_tests_adoptds_were_doing() -> String {
    STARTED.with_borrow(|started| {
        let described: Vec<String> = started
            .iter()
            .filter_map(|(pid, tail)| {
                let tail = tail.upgrade()?;
                let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                Some(format!(
                    "adoptd {pid}: {}",
                    what_adoptd_was_doing(*pid, tail.iter().map(String::as_str))
                ))
            })
            .collect();
        if described.is_empty() {
            "(no adoptd of this test runs)".to_owned()
        } else {
            described.join("\n")
        }
    })
}

impl Adoptd {
    /// Starts adoptd on `scratch`'s services with extra arguments.
    pub fn start(scratch: &Scratch, extra: &[&str]) -> Self {
        let mut command = Command::new(adoptd_binary());
        command
            .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, scratch.runtime_dir())
            .arg("--config-dir")
            .arg(scratch.services())
            .args(extra);
        Self::spawn(command)
    }

    /// Starts adoptd on `scratch`'s services with the given tracker.
    pub fn start_tracker(scratch: &Scratch, tracker: &str, extra: &[&str]) -> Self {
        let mut command = Command::new(adoptd_binary());
        command
            .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, scratch.runtime_dir())
            .arg("--config-dir")
            .arg(scratch.services())
            .args(["--tracker", tracker])
            .args(extra);
        Self::spawn(command)
    }

    /// Starts adoptd on `scratch`'s services with extra arguments, on a
    /// bus of its own (`--private-bus`, in the scratch runtime directory:
    /// no dbus-daemon needed), and returns it with a [`Watch`] on that bus
    /// once adoptd owns its name there.
    pub fn start_watched(scratch: &Scratch, extra: &[&str]) -> (Self, Watch) {
        let mut command = Command::new(adoptd_binary());
        command
            .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, scratch.runtime_dir())
            // Nothing of this adoptd goes near the machine's system bus.
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/system_bus_socket",
            )
            .arg("--private-bus")
            .arg("--config-dir")
            .arg(scratch.services())
            .args(extra);
        let (sender, printed) = mpsc::channel();
        let mut adoptd = Self::launch(command, Some(sender));
        // adoptd prints the address once its bus listens.
        let address = match printed.recv_timeout(TIMEOUT) {
            Ok(address) => address,
            Err(_) => adoptd.fail("adoptd to print its bus address"),
        };
        let watch = adoptd.watch(&address);
        (adoptd, watch)
    }

    /// Starts adoptd from a prepared command (e.g. under `unshare`).
    pub fn spawn(command: Command) -> Self {
        Self::launch(command, None)
    }

    /// Starts adoptd; with `address`, reads its standard output for the
    /// line `ADOPTD_BUS_ADDRESS=…` that `--private-bus` prints, and sends
    /// the address there.
    fn launch(mut command: Command, address: Option<mpsc::Sender<String>>) -> Self {
        // Without it adoptd keeps its records and its private bus where a
        // real adoptd does (/run/adoptd as root).
        assert!(
            command
                .get_envs()
                .any(|(name, value)| name == adoptd_dbus::RUNTIME_DIR_VARIABLE && value.is_some()),
            "a test's adoptd is given {} (Scratch::runtime_dir)",
            adoptd_dbus::RUNTIME_DIR_VARIABLE
        );
        command.env(
            "ADOPTD_LOG",
            std::env::var("ADOPTD_TEST_LOG").unwrap_or_else(|_| "debug".into()),
        );
        command
            .stdin(Stdio::null())
            .stdout(if address.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        // A test process killed from outside runs no Drop: its adoptd then
        // gets SIGTERM, and stops its services as on any shutdown, rather
        // than leave them to the machine's init.
        // SAFETY: prctl with integer arguments is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start adoptd");
        if let Some(address) = address {
            let stdout = child.stdout.take().expect("stdout");
            std::thread::spawn(move || {
                // Read to the end, so that nothing adoptd prints later
                // meets a closed pipe.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(printed) = line
                        .strip_prefix(adoptd_dbus::ADDRESS_VARIABLE)
                        .and_then(|rest| rest.strip_prefix('='))
                    {
                        address.send(printed.to_owned()).ok();
                    }
                }
            });
        }
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        let tail = Tail::default();
        STARTED.with_borrow_mut(|started| {
            started.retain(|(_, tail)| tail.strong_count() > 0);
            started.push((child.id(), Arc::downgrade(&tail)));
        });
        let kept = Arc::clone(&tail);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ADOPTD_TEST_ECHO").is_some() {
                    eprintln!("adoptd| {line}");
                }
                {
                    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                    if kept.len() == TAIL_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Adoptd {
            child,
            lines,
            log: Vec::new(),
            tail,
        }
    }

    /// A watch on this adoptd's bus at `address` (see [`Watch::connect`])
    /// that shows, should a wait of it time out, what this adoptd was
    /// doing.
    pub fn watch(&self, address: &str) -> Watch {
        let mut watch = Watch::connect(address);
        watch.describe_on_timeout(self.describe());
        watch
    }

    /// What a wait that timed out elsewhere (a [`Watch`]'s) shows of this
    /// adoptd: its threads, their signal masks and its last lines.
    fn describe(&self) -> impl Fn() -> String + Send + 'static {
        let pid = self.child.id();
        let tail = Arc::clone(&self.tail);
        move || {
            let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            what_adoptd_was_doing(pid, tail.iter().map(String::as_str))
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the first line, already seen or still to come, that
    /// matches; waits for it if need be.
    pub fn wait_for(&mut self, what: &str, matches: impl Fn(&LogLine) -> bool) -> LogLine {
        if let Some(line) = self.log.iter().find(|l| matches(l)) {
            return line.clone();
        }
        self.wait_next(what, matches)
    }

    /// Waits for the next new line that matches, and returns it.
    pub fn wait_next(&mut self, what: &str, matches: impl Fn(&LogLine) -> bool) -> LogLine {
        self.wait_next_within(what, TIMEOUT, matches)
    }

    /// As [`Adoptd::wait_next`], for a line that comes after work of
    /// adoptd's that may take longer than the common timeout (a storm's
    /// thousands of reaps on a loaded machine).
    pub fn wait_next_within(
        &mut self,
        what: &str,
        within: Duration,
        matches: impl Fn(&LogLine) -> bool,
    ) -> LogLine {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(text) => {
                    let line = LogLine::parse(&text);
                    self.log.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => self.fail(what),
            }
        }
    }

    /// Fails the test for want of `what`, with everything adoptd said and
    /// what each of its threads was doing then.
    fn fail(&mut self, what: &str) -> ! {
        while let Ok(text) = self.lines.try_recv() {
            self.log.push(LogLine::parse(&text));
        }
        panic!(
            "timed out waiting for {what}; {}",
            what_adoptd_was_doing(self.child.id(), self.log.iter().map(|l| l.text.as_str()))
        )
    }

    /// Waits until the service's status line satisfies `matches`.
    pub fn wait_status(
        &mut self,
        service: &str,
        what: &str,
        matches: impl Fn(&LogLine) -> bool,
    ) -> LogLine {
        self.wait_for(&format!("{service}: {what}"), |l| {
            l.is("status", service) && matches(l)
        })
    }

    /// Waits until the service runs with `main_pid`.
    pub fn wait_main_pid(&mut self, service: &str, main_pid: u32) -> LogLine {
        self.wait_status(service, &format!("main_pid={main_pid}"), |l| {
            l.get("main_pid") == Some(&main_pid.to_string()) && l.get("state") == Some("running")
        })
    }

    /// Waits until the service runs with the pid its dance settled as, or,
    /// under `procfs`, with a main pid flagged as a guess (its documented
    /// limit); returns the status line, or `None` when procfs guessed wrong
    /// and said so.
    pub fn wait_settled(
        &mut self,
        service: &str,
        settled: &Report,
        tracker: &str,
        context: &str,
    ) -> Option<LogLine> {
        let status = self.wait_status(service, context, |l| {
            l.get("state") == Some("running")
                && (l.pid("main_pid") == settled.pid
                    || (tracker == "procfs" && l.get("source") == Some("guess")))
        });
        if status.pid("main_pid") == settled.pid {
            return Some(status);
        }
        // procfs degraded safely: the wrong main pid says so.
        assert_eq!(status.get("source"), Some("guess"), "{context}");
        eprintln!("{context}: procfs guessed: {}", status.text);
        None
    }

    /// Every line for `service` seen so far with this message.
    pub fn seen(&self, message: &str, service: &str) -> Vec<LogLine> {
        self.log
            .iter()
            .filter(|l| l.is(message, service))
            .cloned()
            .collect()
    }

    /// Asks adoptd to stop everything and waits for it to exit.
    pub fn stop(self) -> (std::process::ExitStatus, Vec<LogLine>) {
        let pid = self.child.id();
        self.stop_through(pid)
    }

    /// Kills adoptd with SIGKILL, as a crash would, and waits for it to
    /// end; its services are left running (they are reparented to the
    /// test's subreaper, which the caller must have set up).
    pub fn kill(mut self) -> Vec<LogLine> {
        signal(self.child.id(), libc::SIGKILL);
        wait_exit(&mut self.child);
        while let Ok(text) = self.lines.recv_timeout(Duration::from_millis(0)) {
            self.log.push(LogLine::parse(&text));
        }
        std::mem::take(&mut self.log)
    }

    /// Like [`Adoptd::stop`], when adoptd is not the child itself (it runs
    /// under `unshare`): SIGTERM goes to `adoptd_pid`.
    pub fn stop_through(mut self, adoptd_pid: u32) -> (std::process::ExitStatus, Vec<LogLine>) {
        signal(adoptd_pid, libc::SIGTERM);
        self.wait_for("adoptd to finish", |l| {
            l.message == "every service is stopped"
        });
        let status = wait_exit(&mut self.child);
        // Read what is left of the log.
        while let Ok(text) = self.lines.recv_timeout(Duration::from_millis(0)) {
            self.log.push(LogLine::parse(&text));
        }
        let log = std::mem::take(&mut self.log);
        (status, log)
    }
}

impl Drop for Adoptd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Every process of the test is adoptd's descendant now (adoptd
            // is their subreaper); whatever of them outlives adoptd (a
            // process of no service, or all of them if adoptd must be
            // killed) is killed after it, so a failed test leaves nothing.
            let tree = descendants(self.child.id());
            let pidfd = Pidfd::open(self.child.id());
            signal(self.child.id(), libc::SIGTERM);
            // Drop must not hang: the wait is bounded, then adoptd is killed.
            let ended = pidfd.is_some_and(|pidfd| pidfd.wait_exit(TIMEOUT))
                && matches!(self.child.try_wait(), Ok(Some(_)));
            if !ended {
                self.child.kill().ok();
                self.child.wait().ok();
            }
            for process in tree {
                process.kill();
            }
        }
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let pidfd = Pidfd::open(child.id()).expect("pidfd of adoptd");
    assert!(pidfd.wait_exit(TIMEOUT), "adoptd did not exit");
    child.wait().expect("wait adoptd")
}

/// What a failed wait shows of adoptd: its threads (with their signal
/// masks) and the log lines given.
fn what_adoptd_was_doing<'a>(pid: u32, lines: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.collect();
    format!(
        "adoptd's threads then:\n{}\nadoptd said ({} lines):\n{}",
        threads_of(pid),
        lines.len(),
        lines.join("\n")
    )
}

/// One line per thread of `pid`: its name, state, CPU ticks (user and
/// system), where in the kernel it waits and the system call it is in,
/// read twice a second apart: a stalled adoptd shows whether it spins
/// (ticks rising) or waits (and on what).
fn threads_of(pid: u32) -> String {
    let read = |path: String| {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|e| format!("({e})"))
    };
    let sample = || -> Vec<String> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return vec![format!("(adoptd {pid} is gone)")];
        };
        let mut lines: Vec<String> = tasks
            .flatten()
            .map(|task| {
                let dir = task.path().display().to_string();
                let stat = read(format!("{dir}/stat"));
                // After the name: state, then utime and stime (fields 14, 15).
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest.split_whitespace().collect())
                    .unwrap_or_default();
                let field = |index: usize| fields.get(index).copied().unwrap_or("?");
                format!(
                    "  {} {} state {} utime {} stime {} wchan {} syscall {}",
                    task.file_name().to_string_lossy(),
                    read(format!("{dir}/comm")),
                    field(0),
                    field(11),
                    field(12),
                    read(format!("{dir}/wchan")),
                    read(format!("{dir}/syscall")),
                )
            })
            .collect();
        lines.sort();
        lines
    };
    let first = sample();
    std::thread::sleep(Duration::from_secs(1));
    let second = sample();
    format!(
        "{}\n a second later:\n{}\n signals (pending for the process and per \
         thread, blocked, ignored, caught):\n{}",
        first.join("\n"),
        second.join("\n"),
        signal_masks(pid)
    )
}

/// The signal lines of `/proc/PID/status` for the process and each of its
/// threads: whether a signal waits that adoptd does not see.
fn signal_masks(pid: u32) -> String {
    let masks = |path: String| -> String {
        std::fs::read_to_string(&path)
            .map(|status| {
                status
                    .lines()
                    .filter(|line| {
                        ["SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"]
                            .iter()
                            .any(|name| line.starts_with(name))
                    })
                    .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|e| format!("({e})"))
    };
    let mut lines = vec![format!(
        "  process: {}",
        masks(format!("/proc/{pid}/status"))
    )];
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            lines.push(format!(
                "  {}: {}",
                task.file_name().to_string_lossy(),
                masks(format!("{}/status", task.path().display()))
            ));
        }
    }
    lines.join("\n")
}
