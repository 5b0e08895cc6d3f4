//! Test support for the D-Bus API: a real `dbus-daemon` per test, set up
//! as Debian's system bus with adoptd's own policy file, and `busctl`.
//!
//! Every wait reads an event (the daemon's printed address, a process's
//! output, a D-Bus message) and has a timeout.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
};

use crate::{Pidfd, Scratch, TIMEOUT, signal};

/// Debian's system bus configuration, which the test bus is made from.
pub const SYSTEM_CONF: &str = "/usr/share/dbus-1/system.conf";

/// Why the D-Bus tests cannot run here, if they cannot.
pub fn missing_tools() -> Option<String> {
    for tool in ["dbus-daemon", "busctl"] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} is not installed (Debian packages dbus-daemon, systemd)"
            ));
        }
    }
    if !Path::new(SYSTEM_CONF).exists() {
        return Some(format!(
            "{SYSTEM_CONF} is missing (Debian package dbus-system-bus-common)"
        ));
    }
    None
}

/// Where `tool` is on `$PATH`, if anywhere.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.exists())
}

/// A `dbus-daemon` configured as the system bus, with `dbus/org.adoptd1.conf`
/// as its only service policy, listening on a socket in a scratch directory.
pub struct TestBus {
    child: Child,
    config: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// `unix:path=…`, as given to `--address`.
    pub address: String,
}

impl TestBus {
    /// A bus for `scratch`, or `None`, said on stderr, where
    /// `dbus-daemon` or `busctl` is missing: the test then passes saying
    /// why it could not run.
    pub fn or_skip(scratch: &Scratch) -> Option<Self> {
        if let Some(reason) = missing_tools() {
            eprintln!("skipped: {reason}");
            return None;
        }
        Some(TestBus::start(scratch))
    }

    /// adoptd on this bus with `scratch`'s services, and a watch on it
    /// that is ready once adoptd owns its name.
    pub fn adoptd(&self, scratch: &Scratch) -> (crate::Adoptd, crate::Watch) {
        let adoptd = crate::Adoptd::start(scratch, &["--address", &self.address]);
        let watch = adoptd.watch(&self.address);
        (adoptd, watch)
    }

    pub fn start(scratch: &Scratch) -> Self {
        let socket = scratch.file("system_bus_socket");
        let config = scratch.file("system.conf");
        std::fs::write(&config, system_config(&socket)).expect("write the bus configuration");
        let address = format!("unix:path={}", socket.display());
        // Everyone must reach the socket: some tests connect as nobody.
        std::fs::set_permissions(
            &scratch.path,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("open the scratch directory");
        let child = launch(&config);
        TestBus {
            child,
            config,
            socket,
            address,
        }
    }

    /// Kills the bus (as a crash would) and starts a new one on the same
    /// socket.
    pub fn restart(&mut self) {
        signal(self.child.id(), libc::SIGKILL);
        let pidfd = Pidfd::open(self.child.id()).expect("pidfd of dbus-daemon");
        assert!(pidfd.wait_exit(TIMEOUT), "dbus-daemon did not die");
        self.child.wait().ok();
        std::fs::remove_file(&self.socket).ok();
        self.child = launch(&self.config);
    }

    /// Runs busctl on this bus and returns its output, failing the test if
    /// it fails.
    pub fn busctl(&self, args: &[&str]) -> String {
        let output = self.busctl_output(args, None);
        assert!(
            output.status.success(),
            "busctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs busctl on this bus, as `user` (group nogroup) if given, and
    /// returns whatever it did.
    pub fn busctl_output(&self, args: &[&str], user: Option<&str>) -> Output {
        let mut command = match user {
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={user}"))
                    .arg("--regid=nogroup")
                    .arg("--clear-groups")
                    .arg("busctl");
                command
            }
            None => Command::new("busctl"),
        };
        command
            .arg(format!("--address={}", self.address))
            .args(args)
            .stdin(Stdio::null());
        run_with_timeout(command)
    }

    /// Starts `busctl monitor` on this bus; its lines arrive on the
    /// returned receiver.
    pub fn monitor(&self, args: &[&str]) -> Monitor {
        let mut command = Command::new("busctl");
        command
            .arg(format!("--address={}", self.address))
            .arg("monitor")
            .args(args);
        // busctl says so on stderr once the bus has made it a monitor.
        Monitor::start(command, |line| {
            line.starts_with("Monitoring bus message stream")
        })
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A running `busctl monitor`, killed when dropped.
pub struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    /// Starts a program that streams lines on stdout, once it says on
    /// stderr (a line for which `ready` holds) that it is listening.
    pub fn start(mut command: Command, ready: impl Fn(&str) -> bool + Send + 'static) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the monitor");
        let stderr = child.stderr.take().expect("stderr");
        let (said_ready, monitoring) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if ready(&line) {
                    said_ready.send(()).ok();
                }
            }
        });
        monitoring
            .recv_timeout(TIMEOUT)
            .expect("the monitor did not say it was listening");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    /// Reads lines until one satisfies `matches`; returns every line read.
    pub fn wait_for(&self, what: &str, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = matches(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; the monitor said:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Starts dbus-daemon and waits until it prints its address (it listens
/// by then).
fn launch(config: &Path) -> Child {
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .arg("--nofork")
        .arg("--print-address")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dbus-daemon");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, address) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).ok();
        sender.send(line).ok();
    });
    let printed = address
        .recv_timeout(TIMEOUT)
        .expect("dbus-daemon printed no address");
    assert!(
        printed.starts_with("unix:"),
        "dbus-daemon did not start: {printed:?}"
    );
    child
}

/// Debian's system bus configuration, listening on `socket`, with no other
/// policy than adoptd's and nothing that needs a real system (no user
/// switch, fork, pid file, syslog or activation).
pub fn system_config(socket: &Path) -> String {
    let system = std::fs::read_to_string(SYSTEM_CONF).expect("read system.conf");
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dbus/org.adoptd1.conf");
    let policy = policy.canonicalize().expect("dbus/org.adoptd1.conf");
    let mut config = String::new();
    for line in system.lines() {
        let trimmed = line.trim();
        let dropped = [
            "<user>",
            "<fork/>",
            "<pidfile>",
            "<syslog/>",
            "<servicehelper>",
            "<standard_system_servicedirs/>",
            "<includedir>",
            "<include ",
            "<include>",
        ]
        .iter()
        .any(|element| trimmed.starts_with(element));
        if dropped {
            continue;
        }
        if trimmed.starts_with("<listen>") {
            config.push_str(&format!(
                "  <listen>unix:path={}</listen>\n",
                socket.display()
            ));
            continue;
        }
        if trimmed == "</busconfig>" {
            config.push_str(&format!("  <include>{}</include>\n", policy.display()));
        }
        config.push_str(line);
        config.push('\n');
    }
    config
}

/// Runs a command to its end, killing it if it outlives the timeout.
fn run_with_timeout(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start command");
    let pid = child.id();
    let (sender, done) = mpsc::channel();
    std::thread::spawn(move || {
        sender.send(child.wait_with_output()).ok();
    });
    match done.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("command output"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("{command:?} did not finish within {TIMEOUT:?}");
        }
    }
}

/// Runs a test's D-Bus conversation on a runtime of its own; the test
/// fails if the conversation takes longer than twice [`TIMEOUT`].
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async { tokio::time::timeout(TIMEOUT * 2, future).await })
        .expect("the test's D-Bus conversation timed out")
}
