//! Benchmark of introspection (not a test): how long `busctl tree
//! org.adoptd1` and `busctl introspect org.adoptd1 /org/adoptd1` take with
//! 100, 1,000 and 10,000 services, and whether busctl warns.
//!
//! ```text
//! cargo build --release -p adoptd
//! cargo run --release -p adoptd --example bench_introspect -- [--runs R] [N...]
//! ```
//!
//! For each N (default 100 1000 10000) a `dbus-daemon --session` listens
//! in a scratch directory and adoptd (this build's release binary, next to
//! the examples directory) loads N services that are never started, so
//! each is an object and nothing else. Once adoptd owns its name, each
//! busctl command runs R times (default 5); the figure is the median
//! wall-clock time from spawn to exit, output read and discarded. `busctl
//! tree` introspects every object once: the root, the parents, then each
//! service object, so its time grows with N even when each reply stays
//! small; a parent's reply with every child inlined would make it grow
//! faster than that. Beside it, adoptd's own CPU time (utime + stime from
//! `/proc/PID/stat`, 10 ms ticks) per `busctl tree`, which other load on
//! the machine disturbs less than wall-clock time.

// A benchmark that cannot measure says why and stops.
#![allow(clippy::expect_used)]

// Shared with the other benchmarks, which use the rest of it.
#[path = "support/bus.rs"]
mod bus;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bus::Bus;
use support::{binary, cores, cpu_model};

/// How long any one expected event may take.
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let mut runs = 5;
    let mut counts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = number(args.next()),
            _ => counts.push(number(Some(arg))),
        }
    }
    if counts.is_empty() {
        counts = vec![100, 1_000, 10_000];
    }
    println!("machine: {}, {} cores", cpu_model(), cores());
    println!("median of {runs} runs each");
    for count in counts {
        let scratch = Scratch::new(count);
        let bus = Bus::start(&scratch.path);
        let adoptd = Adoptd::start(&scratch, &bus.address);
        let cpu_before = cpu_ms(adoptd.child.id());
        let tree = Timing::of(&bus.address, &["tree", "org.adoptd1"], runs);
        let tree_cpu_ms = (cpu_ms(adoptd.child.id()) - cpu_before) as f64 / runs.max(1) as f64;
        let manager = Timing::of(
            &bus.address,
            &["introspect", "org.adoptd1", "/org/adoptd1"],
            runs,
        );
        let services = Timing::of(
            &bus.address,
            &["introspect", "org.adoptd1", "/org/adoptd1/service"],
            runs,
        );
        println!(
            "{count} services: busctl tree {:.3} s ({:.1} µs per service, {} lines, {} warning lines, \
             adoptd CPU {tree_cpu_ms:.0} ms); \
             introspect /org/adoptd1 {:.1} ms ({} warning lines); \
             introspect /org/adoptd1/service {:.1} ms ({} warning lines)",
            tree.median.as_secs_f64(),
            tree.median.as_secs_f64() * 1e6 / count as f64,
            tree.lines,
            tree.warnings,
            manager.median.as_secs_f64() * 1e3,
            manager.warnings,
            services.median.as_secs_f64() * 1e3,
            services.warnings,
        );
        drop(adoptd);
    }
}

/// A process's utime + stime in milliseconds, all threads.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15, 12 and 13 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / per_second
}

fn number(arg: Option<String>) -> usize {
    arg.and_then(|a| a.parse().ok())
        .expect("--runs and the service counts are numbers")
}

/// How long a busctl command takes, and what it printed.
struct Timing {
    median: Duration,
    /// Lines on stdout, of the last run.
    lines: usize,
    /// Lines on stderr, of the last run.
    warnings: usize,
}

impl Timing {
    fn of(address: &str, args: &[&str], runs: usize) -> Self {
        let mut times = Vec::with_capacity(runs);
        let mut lines = 0;
        let mut warnings = 0;
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            let output = Command::new("busctl")
                .arg(format!("--address={address}"))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run busctl (Debian package systemd)");
            times.push(started.elapsed());
            assert!(
                output.status.success(),
                "busctl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            lines = output
                .stdout
                .split(|&b| b == b'\n')
                .count()
                .saturating_sub(1);
            warnings = output
                .stderr
                .split(|&b| b == b'\n')
                .count()
                .saturating_sub(1);
        }
        times.sort_unstable();
        Timing {
            median: times[times.len() / 2],
            lines,
            warnings,
        }
    }
}

/// A scratch directory with `count` service files, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(count: usize) -> Self {
        let path = std::env::temp_dir().join(format!(
            "adoptd-bench-introspect-{count}-{}",
            std::process::id()
        ));
        std::fs::remove_dir_all(&path).ok();
        let services = path.join("services");
        std::fs::create_dir_all(&services).expect("create the scratch dir");
        for index in 0..count {
            std::fs::write(
                services.join(format!("idle{index}.toml")),
                "exec = [\"/bin/sleep\", \"1000\"]\nautostart = false\n",
            )
            .expect("write a service file");
        }
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

/// A running adoptd, killed when dropped (its services never started).
struct Adoptd {
    child: Child,
}

impl Adoptd {
    /// Starts adoptd on `address` and returns once it owns its name, which
    /// it claims after serving every object.
    fn start(scratch: &Scratch, address: &str) -> Self {
        let mut child = Command::new(binary("adoptd"))
            .arg("--config-dir")
            .arg(scratch.path.join("services"))
            // Not the real adoptd's records of its runs.
            .arg("--state-dir")
            .arg(scratch.path.join("state"))
            .args(["--address", address])
            .env("ADOPTD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start adoptd");
        let stderr = child.stderr.take().expect("adoptd's stderr");
        let (sender, published) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("published as org.adoptd1") {
                    sender.send(()).ok();
                }
            }
        });
        published
            .recv_timeout(TIMEOUT)
            .expect("adoptd did not publish org.adoptd1");
        Adoptd { child }
    }
}

impl Drop for Adoptd {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
