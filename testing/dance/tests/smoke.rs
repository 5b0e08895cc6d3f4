//! Smoke tests that run the real `dance` binary.
//!
//! Nothing here sleeps: every wait is a blocking call with a timeout.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a failed test"
)]

use std::{
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{net::UnixDatagram, process::ExitStatusExt},
    },
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn dance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dance"))
}

/// A path in the temporary directory, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("dance-smoke-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bound datagram socket that receives reports.
struct ReportSocket {
    path: TempPath,
    socket: UnixDatagram,
}

impl ReportSocket {
    fn bind(name: &str) -> Self {
        let path = TempPath::new(&format!("{name}.sock"));
        let socket = UnixDatagram::bind(&path.0).expect("bind the report socket");
        socket
            .set_read_timeout(Some(TIMEOUT))
            .expect("set a read timeout");
        ReportSocket { path, socket }
    }

    fn receive(&self) -> Report {
        let mut buf = [0u8; 512];
        // A signal to the test process may interrupt the wait: wait again.
        let len = loop {
            match self.socket.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.expect("receive the report"),
            }
        };
        let line = std::str::from_utf8(&buf[..len]).expect("an ASCII report");
        assert!(!line.contains('\n'), "newline in {line:?}");
        Report::parse(line)
    }
}

/// A parsed report line.
#[derive(Debug)]
struct Report {
    tag: String,
    pid: i32,
    last_parent: i32,
    hops: u32,
    sid: i32,
}

impl Report {
    fn parse(line: &str) -> Report {
        let fields: Vec<&str> = line.split(' ').collect();
        let ["settled", tag, pid, last_parent, hops, sid] = fields[..] else {
            panic!("malformed report {line:?}");
        };
        let value = |field: &str, key: &str| -> String {
            field
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .unwrap_or_else(|| panic!("expected {key}= in {line:?}"))
                .to_owned()
        };
        let number = |field: &str, key: &str| -> i64 {
            value(field, key)
                .parse()
                .unwrap_or_else(|_| panic!("bad {key} in {line:?}"))
        };
        Report {
            tag: value(tag, "tag"),
            pid: number(pid, "pid") as i32,
            last_parent: number(last_parent, "last_parent") as i32,
            hops: number(hops, "hops") as u32,
            sid: number(sid, "sid") as i32,
        }
    }
}

/// Waits until `fd` is readable; false on timeout.
fn readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pollfd, 1, ms) } {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            -1 => panic!("poll: {}", io::Error::last_os_error()),
            n => return n > 0,
        }
    }
}

/// Waits until the process `pid` (not necessarily our child) has ended.
fn wait_gone(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd == -1 {
        let err = io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "pidfd_open: {err}");
        return;
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    assert!(readable(fd.as_raw_fd(), TIMEOUT), "process {pid} lives on");
}

/// Waits for our child with a timeout and reaps it.
fn wait_child(child: &mut Child) -> ExitStatus {
    wait_gone(child.id() as i32);
    child.wait().expect("reap the child")
}

/// Reads a pipe until EOF, i.e. until every process holding its write end
/// has closed it or ended.
fn read_to_eof(mut pipe: impl Read + AsRawFd) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            readable(pipe.as_raw_fd(), left),
            "no EOF within {TIMEOUT:?}"
        );
        match pipe.read(&mut buf).expect("read the pipe") {
            0 => return String::from_utf8(text).expect("UTF-8 output"),
            n => text.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads a pipe until `needle` has appeared.
fn read_until(pipe: &mut (impl Read + AsRawFd), needle: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            readable(pipe.as_raw_fd(), left),
            "no {needle:?} in {text:?}"
        );
        match pipe.read(&mut buf).expect("read the pipe") {
            0 => panic!("EOF before {needle:?} in {text:?}"),
            n => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

#[test]
fn two_forks_report_and_exit() {
    let socket = ReportSocket::bind("hops");
    let mut child = dance()
        .arg("--report")
        .arg(&socket.path.0)
        .args(["--tag", "two", "fork", "fork", "report", "exit:0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn dance");
    let spawned = child.id() as i32;
    assert!(wait_child(&mut child).success());

    let report = socket.receive();
    assert_eq!(report.tag, "two");
    assert_eq!(report.hops, 2);
    assert_ne!(report.pid, spawned);
    assert_ne!(report.last_parent, 0);
    assert_ne!(report.last_parent, spawned);
    assert_ne!(report.last_parent, report.pid);
    wait_gone(report.pid);
}

#[test]
fn launch_serve_reload_and_terminate() {
    let socket = ReportSocket::bind("serve");
    let pidfile = TempPath::new("serve.pid");
    let mut pidfile_step = std::ffi::OsString::from("pidfile:");
    pidfile_step.push(&pidfile.0);
    // Every process inherits stdout and stderr: EOF on both means that the
    // launcher, the server and its workers have all ended.
    let mut child = dance()
        .arg("--report")
        .arg(&socket.path.0)
        .args(["launch", "setsid", "workers:2", "zombie"])
        .arg(pidfile_step)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dance");
    let launcher = child.id() as i32;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");

    let report = socket.receive();
    assert_eq!(report.tag, "-");
    assert_eq!(report.hops, 1);
    assert_eq!(report.last_parent, launcher);
    assert_ne!(report.pid, launcher);
    assert_eq!(report.sid, report.pid);
    let written = std::fs::read_to_string(&pidfile.0).expect("read the pidfile");
    assert_eq!(written, format!("{}\n", report.pid));

    // SAFETY: plain kill(2) on the server's pid.
    assert_eq!(unsafe { libc::kill(report.pid, libc::SIGHUP) }, 0);
    read_until(&mut stderr, "dance: reload\n");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(report.pid, libc::SIGTERM) }, 0);

    assert_eq!(read_to_eof(stdout), "");
    read_to_eof(stderr);
    let status = wait_child(&mut child);
    assert_eq!(status.code(), Some(0), "launcher ended {status:?}");
}

#[test]
fn failing_hops_and_report_on_stdout() {
    let mut child = dance()
        .args([
            "--tag=out",
            "fork-kill:TERM",
            "fork-exit:3",
            "setsid",
            "report",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn dance");
    let spawned = child.id() as i32;
    let stdout = child.stdout.take().expect("piped stdout");
    let status = wait_child(&mut child);
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "first hop ended {status:?}"
    );

    let output = read_to_eof(stdout);
    let line = output.strip_suffix('\n').expect("a line on stdout");
    let report = Report::parse(line);
    assert_eq!(report.tag, "out");
    assert_eq!(report.hops, 2);
    assert_ne!(report.last_parent, spawned);
    assert_eq!(report.sid, report.pid);
}

#[test]
fn usage_error_runs_nothing() {
    let mut child = dance()
        .args(["fork", "fork-exit:300", "report"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dance");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    assert_eq!(read_to_eof(stdout), "");
    assert!(read_to_eof(stderr).contains("\"fork-exit:300\""));
    assert_eq!(wait_child(&mut child).code(), Some(2));
}

#[test]
fn a_storm_ends_after_its_children_and_orphans() {
    let socket = ReportSocket::bind("storm");
    let mut child = dance()
        .arg("--report")
        .arg(&socket.path.0)
        .args(["--tag", "storm", "storm:300", "report", "exit:0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn dance");
    let spawned = child.id() as i32;
    // The report comes after the storm: the storm step returned.
    let report = socket.receive();
    assert_eq!(report.tag, "storm");
    assert_eq!(report.pid, spawned);
    assert_eq!(report.hops, 0);
    assert_eq!(wait_child(&mut child).code(), Some(0));
}

#[test]
fn hop_parents_note_their_pid_and_time() {
    let socket = ReportSocket::bind("times");
    let times = TempPath::new("hop-times");
    let before = std::time::SystemTime::now();
    let mut child = dance()
        .arg("--report")
        .arg(&socket.path.0)
        .arg("--hop-times")
        .arg(&times.0)
        .args(["fork", "fork-exit:0", "report", "exit:0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn dance");
    let spawned = child.id() as i32;
    let report = socket.receive();
    assert!(wait_child(&mut child).success());
    // The report comes from the last hop: both parents have written by
    // the time it may end; wait for it so the file is complete.
    wait_gone(report.last_parent);
    let text = std::fs::read_to_string(&times.0).expect("read the hop times");
    let lines: Vec<(i32, f64)> = text
        .lines()
        .map(|line| {
            let (pid, time) = line.split_once(' ').expect("PID TIME");
            let (_, nanos) = time.split_once('.').expect("SECONDS.NANOSECONDS");
            assert_eq!(nanos.len(), 9, "{line:?}");
            (pid.parse().expect("a pid"), time.parse().expect("a time"))
        })
        .collect();
    // The two parents end concurrently: their lines come in either order.
    let mut pids: Vec<i32> = lines.iter().map(|&(pid, _)| pid).collect();
    pids.sort_unstable();
    let mut expected = vec![spawned, report.last_parent];
    expected.sort_unstable();
    assert_eq!(pids, expected, "{text:?}");
    let since_epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64()
    };
    for &(_, time) in &lines {
        assert!(time >= since_epoch(before) - 0.001, "{text:?}");
        assert!(
            time <= since_epoch(std::time::SystemTime::now()),
            "{text:?}"
        );
    }
}
