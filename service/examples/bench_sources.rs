//! Benchmark of the adoption sources (not a test): for each source this
//! machine supports, adoptd's CPU time per 1,000 process exits in a
//! service, and the hand-off latency from a parent's exit to adoptd's
//! decision.
//!
//! ```text
//! cargo build --release -p adoptd -p dance
//! cargo run --release -p adoptd --example bench_sources -- [--storm N] [--hops H] [SOURCE...]
//! ```
//!
//! Sources default to `procfs`, and `proc-connector` as root. It runs the
//! adoptd and dance binaries next to this example's directory (the release
//! build), logging at `info`, as adoptd runs by default.
//!
//! CPU: one service runs `dance report storm:N serve`: N children that exit
//! at once, each leaving an orphan that adoptd adopts and reaps, so 2N exits
//! of the service's processes, N of them adoptd's own children. adoptd's
//! utime + stime (`/proc/PID/stat`, every thread) is read at the first
//! report and again once the storm has ended (second report) and adoptd has
//! reaped everything (a SIGHUP barrier: adoptd reaps a whole batch before it
//! logs the reload). Resolution: one clock tick (10 ms) per reading.
//!
//! The peer, in the same run when `tini` is installed (Debian's package):
//! `tini -s` (a child subreaper, as adoptd is when not PID 1) runs the same
//! dance directly; its CPU is read the same way, from the first report
//! until the second and until tini has no child left but the dance (its
//! `/proc/PID/task/*/children`, polled every millisecond by this program,
//! not by tini). adoptd's figure is then printed as a ratio to tini's.
//!
//! The floor, in the same run when `cc` is installed: a subreaper in C
//! that the benchmark compiles, which does for each process it reaps the
//! least that attributing it takes: `waitid` with `WNOWAIT` to find it,
//! one read of its `/proc/PID/stat` (its parent, session and start time,
//! what adoptd's sources read), and the `waitid` that reaps it; measured
//! as tini is. What the kernel alone costs for the work adoptd does.
//!
//! Latency: another adoptd runs one service that hops H times (`fork
//! setsid`, then `sleep:5 fork` H - 1 times, so each hop is its own
//! moment), with `--hop-times`: each hop's parent writes its pid and the
//! CLOCK_REALTIME time just before `_exit`. adoptd logs each `hand-off`
//! with the previous pid, stamped by tracing with the realtime clock in
//! microseconds when the line is made, right after the tracker's decision.
//! Latency = log stamp − exit stamp. Bounds: −1 µs (the log's truncation)
//! to + the time from the note to the end of `_exit` (the parent's own
//! teardown, a few µs, counted in); both clocks are the same clock of one
//! machine.

// A benchmark that cannot measure says why and stops.
#![allow(clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use support::{binary, compile_c, cores, cpu_model, parse_utc_micros, percentile};

/// How long any one expected event may take.
const TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let mut storm: u32 = 10_000;
    let mut hops: u32 = 500;
    let mut sources = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--storm" => storm = number(args.next()),
            "--hops" => hops = number(args.next()),
            _ => sources.push(arg),
        }
    }
    if sources.is_empty() {
        sources.push("procfs".to_owned());
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            sources.push("proc-connector".to_owned());
        }
    }
    println!("machine: {}, {} cores", cpu_model(), cores());
    println!("storm: {storm} children + {storm} orphans; hops: {hops}");
    let per_thousand = |cpu: &CpuRun| cpu.cpu_ms as f64 * 1000.0 / f64::from(2 * storm);
    let tini = ["/usr/bin/tini", "/usr/sbin/tini"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    let tini = match tini {
        Some(tini) => Some(peer_cpu_per_exits(&tini, &["-s", "--"], storm)),
        None => {
            println!("tini -s: not installed (apt-get install tini), not measured");
            None
        }
    };
    if let Some(cpu) = &tini {
        println!(
            "tini -s: CPU {:.1} ms per 1,000 process exits ({} ms for {} exits, {:.2} s wall)",
            per_thousand(cpu),
            cpu.cpu_ms,
            2 * storm,
            cpu.wall.as_secs_f64(),
        );
    }
    let floor = match compile_floor() {
        Ok(program) => Some(peer_cpu_per_exits(&program, &[], storm)),
        Err(problem) => {
            println!("floor: not measured: {problem}");
            None
        }
    };
    if let Some(cpu) = &floor {
        println!(
            "floor (waitid, one stat read, waitid): CPU {:.1} ms per 1,000 process exits ({} ms for {} exits, {:.2} s wall)",
            per_thousand(cpu),
            cpu.cpu_ms,
            2 * storm,
            cpu.wall.as_secs_f64(),
        );
    }
    for source in &sources {
        let cpu = cpu_per_exits(source, storm);
        let ratio_to = |peer: &Option<CpuRun>, name: &str| {
            peer.as_ref()
                .filter(|peer| peer.cpu_ms > 0)
                .map(|peer| format!(", {:.1}× {name}", cpu.cpu_ms as f64 / peer.cpu_ms as f64))
                .unwrap_or_default()
        };
        let ratio = format!(
            "{}{}",
            ratio_to(&tini, "tini's"),
            ratio_to(&floor, "the floor's")
        );
        println!(
            "{source}: CPU {:.1} ms per 1,000 process exits ({} ms for {} exits, {:.2} s wall{ratio})",
            per_thousand(&cpu),
            cpu.cpu_ms,
            2 * storm,
            cpu.wall.as_secs_f64(),
        );
        let mut latencies = handoff_latencies(source, hops);
        latencies.sort_unstable();
        println!(
            "{source}: hand-off latency over {} hand-offs: p50 {} µs, p99 {} µs, max {} µs",
            latencies.len(),
            percentile(&latencies, 50),
            percentile(&latencies, 99),
            latencies.last().copied().unwrap_or(0),
        );
    }
}

fn number(arg: Option<String>) -> u32 {
    arg.and_then(|a| a.parse().ok())
        .expect("--storm and --hops take a number")
}

struct CpuRun {
    cpu_ms: u64,
    wall: Duration,
}

fn cpu_per_exits(source: &str, storm: u32) -> CpuRun {
    let scratch = Scratch::new("cpu");
    let reports = scratch.reports();
    scratch.service(
        "storm",
        &dance_argv(
            &reports,
            None,
            &[
                "report".to_owned(),
                format!("storm:{storm}"),
                "serve".into(),
            ],
        ),
    );
    let mut adoptd = Adoptd::start(&scratch, source);
    reports.next();
    let before = cpu_ms(adoptd.pid());
    let started = Instant::now();
    reports.next();
    adoptd.barrier();
    let wall = started.elapsed();
    let after = cpu_ms(adoptd.pid());
    adoptd.stop();
    CpuRun {
        cpu_ms: after - before,
        wall,
    }
}

/// The same storm under a peer subreaper, `program` `arguments` `dance…`.
fn peer_cpu_per_exits(program: &Path, arguments: &[&str], storm: u32) -> CpuRun {
    let scratch = Scratch::new("peer");
    let reports = scratch.reports();
    let argv = dance_args(
        &reports,
        None,
        &[
            "report".to_owned(),
            format!("storm:{storm}"),
            "serve".into(),
        ],
    );
    let mut child = Command::new(program)
        .args(arguments)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let pid = child.id();
    reports.next();
    let before = cpu_ms(pid);
    let started = Instant::now();
    reports.next();
    // Until the peer has reaped every orphan: only the dance is left.
    let deadline = Instant::now() + TIMEOUT;
    while children(pid).len() > 1 {
        assert!(Instant::now() < deadline, "the peer did not reap the storm");
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = started.elapsed();
    let after = cpu_ms(pid);
    // Each peer exits once its child has.
    for dance in children(pid) {
        // SAFETY: kill on the pid of the peer's unreaped child.
        unsafe { libc::kill(dance as i32, libc::SIGKILL) };
    }
    child.wait().expect("wait for the peer");
    CpuRun {
        cpu_ms: after - before,
        wall,
    }
}

/// Compiles [`FLOOR`] with `cc` into the temporary directory.
fn compile_floor() -> Result<PathBuf, String> {
    let directory = std::env::temp_dir().join(format!("adoptd-bench-floor-{}", std::process::id()));
    std::fs::create_dir_all(&directory).map_err(|e| e.to_string())?;
    compile_c(FLOOR, &directory, "floor")
}

/// The least a subreaper that attributes what it reaps does: see the
/// module header.
const FLOOR: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, 0);
    pid_t child = fork();
    if (child == 0) {
        sigprocmask(SIG_UNBLOCK, &set, 0);
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int signals = signalfd(-1, &set, SFD_CLOEXEC);
    for (;;) {
        struct signalfd_siginfo received;
        if (read(signals, &received, sizeof received) < 0) return 1;
        for (;;) {
            siginfo_t info;
            info.si_pid = 0;
            if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0)
                break;
            char path[64], stat[2048];
            snprintf(path, sizeof path, "/proc/%d/stat", info.si_pid);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                if (read(fd, stat, sizeof stat) < 0) return 1;
                close(fd);
            }
            pid_t pid = info.si_pid;
            waitid(P_PID, pid, &info, WEXITED);
            if (pid == child) return 0;
        }
    }
}
"#;

/// The children of `pid`, every thread's, zombies included.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn handoff_latencies(source: &str, hops: u32) -> Vec<i64> {
    let scratch = Scratch::new("hops");
    let reports = scratch.reports();
    let times = scratch.path.join("hop-times");
    let mut steps = vec!["fork".to_owned(), "setsid".to_owned()];
    for _ in 1..hops {
        steps.push("sleep:5".to_owned());
        steps.push("fork".to_owned());
    }
    steps.push("serve".to_owned());
    scratch.service("hops", &dance_argv(&reports, Some(&times), &steps));
    let mut adoptd = Adoptd::start(&scratch, source);
    reports.next();
    adoptd.barrier();
    let handoffs = adoptd.handoffs("hops");
    adoptd.stop();
    let exits: HashMap<u32, i64> = std::fs::read_to_string(&times)
        .expect("read the hop times")
        .lines()
        .filter_map(|line| {
            let (pid, time) = line.split_once(' ')?;
            let (seconds, nanos) = time.split_once('.')?;
            let micros =
                seconds.parse::<i64>().ok()? * 1_000_000 + nanos.get(..6)?.parse::<i64>().ok()?;
            Some((pid.parse().ok()?, micros))
        })
        .collect();
    let latencies: Vec<i64> = handoffs
        .iter()
        .filter_map(|&(previous_pid, logged)| Some(logged - exits.get(&previous_pid)?))
        .collect();
    if latencies.len() != hops as usize {
        println!(
            "{source}: {} of {hops} hops matched a hand-off ({} hand-offs logged)",
            latencies.len(),
            handoffs.len()
        );
    }
    latencies
}

/// adoptd's utime + stime in milliseconds, all threads.
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

/// A scratch directory, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("adoptd-bench-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        std::fs::create_dir_all(path.join("services")).expect("create the scratch dir");
        Scratch { path }
    }

    fn service(&self, name: &str, exec: &str) {
        std::fs::write(
            self.path.join("services").join(format!("{name}.toml")),
            format!("exec = {exec}\nrestart = \"no\"\noutput = \"null\"\n"),
        )
        .expect("write a service file");
    }

    fn reports(&self) -> Reports {
        let path = self.path.join("reports.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the report socket");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        Reports { path, socket }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

struct Reports {
    path: PathBuf,
    socket: UnixDatagram,
}

impl Reports {
    fn next(&self) {
        let mut buffer = [0u8; 512];
        self.socket
            .recv(&mut buffer)
            .expect("a report from the dance helper");
    }
}

/// The dance's command line as a service file's `exec`.
fn dance_argv(reports: &Reports, hop_times: Option<&Path>, steps: &[String]) -> String {
    let quoted: Vec<String> = dance_args(reports, hop_times, steps)
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

fn dance_args(reports: &Reports, hop_times: Option<&Path>, steps: &[String]) -> Vec<String> {
    let mut argv = vec![
        binary("dance").display().to_string(),
        "--report".into(),
        reports.path.display().to_string(),
    ];
    if let Some(path) = hop_times {
        argv.push("--hop-times".into());
        argv.push(path.display().to_string());
    }
    argv.extend(steps.iter().cloned());
    argv
}

/// A running adoptd and its log lines.
struct Adoptd {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// What adoptd logs once it has (re)loaded its configuration directory
/// (after the module path, which says where in the supervisor).
const LOADED: &str = ": loaded /";

impl Adoptd {
    fn start(scratch: &Scratch, source: &str) -> Self {
        let mut child = Command::new(binary("adoptd"))
            .arg("--config-dir")
            .arg(scratch.path.join("services"))
            // Not the real adoptd's records of its runs.
            .arg("--state-dir")
            .arg(scratch.path.join("state"))
            .args(["--tracker", source])
            .env("ADOPTD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start adoptd");
        let stderr = child.stderr.take().expect("adoptd's stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Adoptd { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next line that contains `needle`; returns every line
    /// read, that one last.
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut read = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("adoptd did not log {needle:?}"));
            let found = line.contains(needle);
            read.push(line);
            if found {
                return read;
            }
        }
    }

    /// Returns once adoptd has reaped everything that had ended: it reaps
    /// a whole batch before it acts on SIGHUP and reloads.
    fn barrier(&mut self) {
        self.sighup();
        self.wait_for(LOADED);
    }

    fn sighup(&self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
    }

    /// The hand-offs of `service` logged until a barrier: previous pid and
    /// the line's time in microseconds since the epoch.
    fn handoffs(&mut self, service: &str) -> Vec<(u32, i64)> {
        self.sighup();
        let marker = format!("service={service} ");
        self.wait_for(LOADED)
            .iter()
            .filter(|l| l.contains(" hand-off ") && l.contains(&marker))
            .filter_map(|line| {
                let previous = line
                    .split(' ')
                    .find_map(|t| t.strip_prefix("previous_pid="))?
                    .parse()
                    .ok()?;
                Some((previous, parse_utc_micros(line.split(' ').next()?)?))
            })
            .collect()
    }

    fn stop(mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        self.wait_for("every service is stopped");
        self.child.wait().expect("wait for adoptd");
    }
}

impl Drop for Adoptd {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
