//! Test support: a real adoptd binary on a scratch configuration
//! directory, its log read line by line, and the dance helper's reports.
//!
//! Every wait has a timeout and waits on an event (a log line, a datagram,
//! a pidfd becoming readable); nothing sleeps and hopes.

// Each test binary uses a different part; a failed expectation in test
// support is a test failure, said with a reason.
#![allow(dead_code, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixDatagram,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch directory, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "adoptd-test-{}-{}-{}",
            name,
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(path.join("services")).expect("create scratch dir");
        Scratch { path }
    }

    pub fn services(&self) -> PathBuf {
        self.path.join("services")
    }

    /// Writes a service file `NAME.toml` (or `NAME@.toml`).
    pub fn service(&self, file_name: &str, text: &str) {
        std::fs::write(self.services().join(format!("{file_name}.toml")), text)
            .expect("write service file");
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The dance helper binary, built by `cargo test --workspace`.
pub fn dance() -> PathBuf {
    let path = bin_dir().join("dance");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p dance`)",
        path.display()
    );
    path
}

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_adoptd"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// A TOML array of strings.
pub fn argv(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `exec` of a dance service that reports to `reports`.
pub fn dance_exec(reports: &Reports, tag: &str, steps: &[&str]) -> String {
    let dance = dance();
    let socket = reports.path.to_string_lossy().into_owned();
    let mut args = vec![
        dance.to_str().expect("utf-8 path"),
        "--report",
        &socket,
        "--tag",
        tag,
    ];
    args.extend_from_slice(steps);
    argv(&args)
}

/// Writes a service `name` that runs the dance helper's `steps`, reports
/// to `reports`, is never restarted, and has `extra` service-file lines.
pub fn dance_service(
    scratch: &Scratch,
    reports: &Reports,
    name: &str,
    extra: &str,
    steps: &[&str],
) {
    scratch.service(
        name,
        &format!(
            "exec = {}\nrestart = \"no\"\n{extra}\n",
            dance_exec(reports, name, steps)
        ),
    );
}

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
}

impl Adoptd {
    /// Starts adoptd on `scratch`'s services with extra arguments.
    pub fn start(scratch: &Scratch, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_adoptd"));
        command
            .arg("--config-dir")
            .arg(scratch.services())
            .args(extra);
        Self::spawn(command)
    }

    /// Starts adoptd on `scratch`'s services with the given tracker.
    pub fn start_tracker(scratch: &Scratch, tracker: &str, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_adoptd"));
        command
            .arg("--config-dir")
            .arg(scratch.services())
            .args(["--tracker", tracker])
            .args(extra);
        Self::spawn(command)
    }

    /// Starts adoptd from a prepared command (e.g. under `unshare`).
    pub fn spawn(mut command: Command) -> Self {
        command.env(
            "ADOPTD_LOG",
            std::env::var("ADOPTD_TEST_LOG").unwrap_or_else(|_| "debug".into()),
        );
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start adoptd");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ADOPTD_TEST_ECHO").is_some() {
                    eprintln!("adoptd| {line}");
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
        let deadline = Instant::now() + TIMEOUT;
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
                Err(_) => panic!(
                    "timed out waiting for {what}; adoptd said:\n{}",
                    self.log
                        .iter()
                        .map(|l| l.text.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
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
            signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + TIMEOUT;
            let mut ended = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    ended = true;
                    break;
                }
                // Drop must not hang: this is the one poll, bounded.
                std::thread::sleep(Duration::from_millis(10));
            }
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

/// A process found in a tree, held by pidfd so a kill never reaches a
/// recycled pid.
pub struct Held(Pidfd);

impl Held {
    /// SIGKILL, if it still lives.
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                std::os::fd::AsRawFd::as_raw_fd(&(self.0).0),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live descendant of `pid`, held by pidfd.
pub fn descendants(pid: u32) -> Vec<Held> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for (child, zombie) in children_of(parent) {
            if zombie {
                continue;
            }
            // Held only if still the child found: the pid was not reused
            // between the listing and the open.
            if let Some(fd) = Pidfd::open(child)
                && parent_of(child) == Some(parent)
            {
                found.push(Held(fd));
            }
            queue.push(child);
        }
        if found.len() > 100_000 {
            break;
        }
    }
    found
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let pidfd = Pidfd::open(child.id()).expect("pidfd of adoptd");
    assert!(pidfd.wait_exit(TIMEOUT), "adoptd did not exit");
    child.wait().expect("wait adoptd")
}

/// Sends a signal by pid: only for processes the test itself knows are
/// alive (its own children, or pids just reported).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A pidfd, to wait for a process's end without polling.
pub struct Pidfd(OwnedFd);

impl Pidfd {
    pub fn open(pid: u32) -> Option<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as i32, 0) };
        // SAFETY: a non-negative result is a new descriptor we own.
        (fd >= 0).then(|| Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// True once the process has exited (is a zombie or gone).
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, millis) };
        n == 1
    }
}

/// Asserts that the process ends within the timeout (or is gone already).
pub fn assert_ends(pid: u32, what: &str) {
    if let Some(pidfd) = Pidfd::open(pid) {
        assert!(
            pidfd.wait_exit(TIMEOUT),
            "{what} (pid {pid}) is still running"
        );
    }
}

/// True if the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The children of `pid` (all its threads'), and whether each is a zombie.
pub fn children_of(pid: u32) -> Vec<(u32, bool)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in text.split_whitespace().filter_map(|p| p.parse().ok()) {
            found.push((child, !is_alive(child)));
        }
    }
    found
}

/// What a dance process reported when it settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub tag: String,
    pub pid: u32,
    pub last_parent: u32,
    pub hops: u32,
    pub sid: u32,
}

/// The datagram socket dance processes report to.
pub struct Reports {
    pub path: PathBuf,
    socket: UnixDatagram,
}

impl Reports {
    pub fn bind(scratch: &Scratch) -> Self {
        Self::bind_at(&scratch.file("reports.sock"))
    }

    pub fn bind_at(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bind report socket");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        // Services may run as another user.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).ok();
        Reports {
            path: path.to_owned(),
            socket,
        }
    }

    /// The next report, whoever sent it.
    pub fn next(&self) -> Report {
        let mut buffer = [0u8; 512];
        // A signal to the test process may interrupt the wait: wait again.
        let n = loop {
            match self.socket.recv(&mut buffer) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("no dance report within {TIMEOUT:?}: {e}"),
                Ok(n) => break n,
            }
        };
        parse_report(&String::from_utf8_lossy(&buffer[..n]))
    }

    /// The reports of `count` dancers, by tag.
    pub fn collect(&self, count: usize) -> HashMap<String, Report> {
        (0..count)
            .map(|_| self.next())
            .map(|r| (r.tag.clone(), r))
            .collect()
    }
}

fn parse_report(text: &str) -> Report {
    let field = |key: &str| -> String {
        text.split(' ')
            .find_map(|t| t.strip_prefix(&format!("{key}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key} in report {text:?}"))
    };
    let number = |key: &str| field(key).parse::<u32>().expect("number in report");
    Report {
        tag: field("tag"),
        pid: number("pid"),
        last_parent: number("last_parent"),
        hops: number("hops"),
        sid: number("sid"),
    }
}

/// The adoption sources the shared suite runs against on this machine:
/// `$ADOPTD_TEST_TRACKER` alone if set, else `procfs` and, as root in the
/// initial pid namespace, `proc-connector`.
pub fn trackers() -> Vec<String> {
    if let Ok(tracker) = std::env::var("ADOPTD_TEST_TRACKER") {
        return vec![tracker];
    }
    let mut trackers = vec!["procfs".to_owned()];
    let initial_namespace = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == 0xEFFF_FFFC)
        .unwrap_or(false);
    if is_root() && initial_namespace {
        trackers.push("proc-connector".to_owned());
    }
    trackers
}

/// True when the tests run as root (chroot, users, PID namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Waits until `path` holds a pid (a daemon's pid file), watching its
/// directory with inotify; returns the pid.
pub fn wait_for_pid_file(path: &Path) -> u32 {
    wait_for_file(path, |text| {
        text.trim().parse::<u32>().ok().filter(|&pid| pid > 0)
    })
}

/// Waits until `read(contents of path)` gives something, watching the
/// file's directory with inotify, with the common timeout.
pub fn wait_for_file<T>(path: &Path, read: impl Fn(&str) -> Option<T>) -> T {
    let directory = path.parent().expect("a directory");
    // SAFETY: inotify_init1 returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(fd >= 0, "inotify_init1");
    // SAFETY: a new descriptor we own.
    let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
    let c_directory =
        std::ffi::CString::new(directory.as_os_str().as_encoded_bytes()).expect("path");
    let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_MODIFY;
    // SAFETY: a valid descriptor and C string.
    let watch = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_directory.as_ptr(), mask) };
    assert!(watch >= 0, "inotify_add_watch {}", directory.display());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // Checked after the watch exists, so no change is missed.
        if let Some(found) = std::fs::read_to_string(path)
            .ok()
            .as_deref()
            .and_then(&read)
        {
            return found;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {}", path.display());
        let mut poll = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, millis) };
        let mut buffer = [0u8; 4096];
        // SAFETY: the buffer is valid for its length; drains the events.
        unsafe {
            libc::read(
                inotify.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
    }
}

/// A TCP port on loopback nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of an installed program, or `None` (the test then says it
/// skips).
pub fn installed(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.exists())
}

/// A small deterministic random source, so that a failing seed can be
/// replayed (`ADOPTD_TEST_SEED`).
pub struct Lcg(pub u64);

impl Lcg {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}
