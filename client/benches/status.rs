//! `adoptctl status NAME` as a whole process: fork, exec, connect, one
//! `GetAll`, print, exit. Starts its own dbus-daemon and adoptd with one
//! service, runs the command many times, and prints the distribution
//! beside that of `cat` reading a small status file, the baseline the
//! budget is set against.
//!
//! `cargo bench -p adoptctl --bench status` (builds with the release
//! profile; adoptd must be built too: `cargo build --release -p adoptd`).

// A benchmark that cannot set itself up says why and stops.
#![allow(clippy::expect_used)]

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const RUNS: usize = 500;

fn main() {
    let adoptctl = PathBuf::from(env!("CARGO_BIN_EXE_adoptctl"));
    let adoptd = adoptctl.with_file_name("adoptd");
    assert!(
        adoptd.exists(),
        "{} is missing: cargo build --release -p adoptd",
        adoptd.display()
    );
    let scratch = std::env::temp_dir().join(format!("adoptctl-bench-{}", std::process::id()));
    let services = scratch.join("services");
    std::fs::create_dir_all(&services).expect("scratch directory");
    std::fs::write(
        services.join("web.toml"),
        "description = \"a web server\"\nexec = [\"/bin/sleep\", \"100000\"]\n",
    )
    .expect("service file");
    let status_file = scratch.join("status");
    std::fs::write(&status_file, "up (pid 1234) 42 seconds\n").expect("status file");

    let socket = scratch.join("bus");
    let address = format!("unix:path={}", socket.display());
    let bus = Guard(
        Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon)"),
    );
    let mut bus = bus;
    first_line(bus.0.stdout.take().expect("stdout"));
    let mut daemon = Guard(
        Command::new(&adoptd)
            .args(["--address", &address, "--config-dir"])
            .arg(&services)
            .env("ADOPTD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("adoptd"),
    );
    let mut log = BufReader::new(daemon.0.stderr.take().expect("stderr")).lines();
    for line in log.by_ref() {
        if line
            .expect("adoptd's log")
            .contains("published as org.adoptd1")
        {
            break;
        }
    }
    // Drained to the end, so that adoptd never writes into a closed pipe
    // while it stops its service.
    std::thread::spawn(move || log.for_each(drop));

    let mut status = Command::new(&adoptctl);
    status
        .args(["status", "web"])
        .env("ADOPTD_BUS_ADDRESS", &address);
    let mut cat = Command::new("cat");
    cat.arg(&status_file);
    // Warm the page cache and adoptd's first answer.
    for _ in 0..20 {
        run(&mut status);
        run(&mut cat);
    }
    let status_times = measure(&mut status);
    let cat_times = measure(&mut cat);
    println!("{RUNS} runs each, wall time of the whole process:");
    print("adoptctl status web", &status_times);
    print("cat status-file", &cat_times);

    drop(daemon);
    drop(bus);
    std::fs::remove_dir_all(&scratch).ok();
}

fn measure(command: &mut Command) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run(command)).collect();
    times.sort();
    times
}

fn run(command: &mut Command) -> Duration {
    let start = Instant::now();
    let output = command.stdout(Stdio::null()).status().expect("run");
    let took = start.elapsed();
    assert!(output.success(), "{command:?} failed: {output}");
    took
}

fn print(what: &str, times: &[Duration]) {
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "  {what:<22} min {:>7.2?}  median {:>7.2?}  mean {:>7.2?}  p90 {:>7.2?}  p99 {:>7.2?}",
        at(0.0),
        at(0.5),
        mean,
        at(0.9),
        at(0.99)
    );
}

fn first_line(stdout: std::process::ChildStdout) {
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("dbus-daemon's address");
}

/// A child asked to end (SIGTERM, so adoptd stops its service) and
/// waited for when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // our own unwaited child, so it cannot have been recycled.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        self.0.wait().ok();
    }
}
