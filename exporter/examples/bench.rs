//! Benchmark of adoptd-exporter with many services (not a test): its
//! memory once it has read them, and the time of a scrape.
//!
//! ```text
//! cargo build --release -p adoptd -p adoptd-exporter
//! cargo run --release -p adoptd-exporter --example bench -- [--services N] [--scrapes K]
//! ```
//!
//! It writes N service files (default 10,000; `/bin/sleep`, loaded but
//! not started, so the machine runs no N processes), starts the release
//! adoptd beside this example with `--private-bus` (its socket in a
//! scratch `$ADOPTD_RUNTIME_DIR`), then the release exporter on that bus,
//! and waits for the exporter's log to say it has read N services. Then:
//! the exporter's memory from `/proc/PID/smaps_rollup` (Rss, and
//! Anonymous: its own heap and stacks), K scrapes of `/metrics` one after
//! another over a fresh connection each, as Prometheus asks (OpenMetrics),
//! timed from connect to the last byte, and the memory again. The first
//! scrape encodes; the next ones reuse its text while nothing changes.
//! Then C times (`--changes`, default 5): start one service with
//! `busctl … StartService` and scrape until a scrape shows it running;
//! that scrape's time is a scrape after a change (it encodes again).
//! Nothing is asserted; adoptd gets SIGTERM at the end (stopping what it
//! started), the exporter SIGKILL.

#![allow(clippy::expect_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// adoptd, sent SIGTERM when dropped so that it stops its services.
struct Terminated(Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on our own child, which we have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        self.0.wait().ok();
    }
}

fn main() {
    let mut services = 10_000usize;
    let mut scrapes = 20usize;
    let mut changes = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--services", Some(n)) => services = n,
            ("--scrapes", Some(n)) => scrapes = n,
            ("--changes", Some(n)) => changes = n,
            _ => {
                eprintln!("usage: bench [--services N] [--scrapes K] [--changes C]");
                std::process::exit(2);
            }
        }
    }
    let release = release_dir();
    let scratch =
        std::env::temp_dir().join(format!("adoptd-exporter-bench-{}", std::process::id()));
    let config = scratch.join("services");
    let runtime = scratch.join("run");
    std::fs::create_dir_all(&config).expect("scratch directory");
    std::fs::create_dir_all(&runtime).expect("runtime directory");
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("runtime directory mode");
    for index in 0..services {
        std::fs::write(
            config.join(format!("svc-{index:05}.toml")),
            "exec = [\"/bin/sleep\", \"100000\"]\nautostart = false\n",
        )
        .expect("write a service file");
    }

    let mut adoptd = Command::new(release.join("adoptd"))
        .arg("--private-bus")
        .arg("--config-dir")
        .arg(&config)
        .env("ADOPTD_RUNTIME_DIR", &runtime)
        .env("ADOPTD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start adoptd");
    let mut first = String::new();
    BufReader::new(adoptd.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("adoptd's bus address");
    let adoptd = Terminated(adoptd);
    let address = first
        .trim()
        .strip_prefix("ADOPTD_BUS_ADDRESS=")
        .expect("ADOPTD_BUS_ADDRESS=… on adoptd's stdout")
        .to_owned();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let started = Instant::now();
    let mut exporter = Command::new(release.join("adoptd-exporter"))
        .args([
            "--address",
            &address,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("ADOPTD_EXPORTER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start adoptd-exporter");
    let stderr = BufReader::new(exporter.stderr.take().expect("stderr"));
    let exporter = Killed(exporter);
    let expected = format!("services={services}");
    let mut lines = stderr.lines();
    loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("the exporter's log ended before it read the services");
        if line.contains("read adoptd's services") && line.contains(&expected) {
            break;
        }
    }
    let read_in = started.elapsed();
    // The log goes on being drained, so the exporter never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    let before = memory(exporter.0.id());

    let scrapes = scrapes.max(1);
    let mut times = Vec::with_capacity(scrapes);
    let mut size = 0;
    let mut series = 0;
    for _ in 0..scrapes {
        let start = Instant::now();
        let body = scrape(port);
        times.push(start.elapsed());
        size = body.len();
        series = body.lines().filter(|l| !l.starts_with('#')).count();
    }
    let after = memory(exporter.0.id());
    let first = times[0];
    let mut changed = Vec::with_capacity(changes);
    let cpu_before = cpu_ms(exporter.0.id());
    for index in 0..changes.min(services) {
        let name = format!("svc-{index:05}");
        let started = Command::new("busctl")
            .arg(format!("--address={address}"))
            .args(["call", "org.adoptd1", "/org/adoptd1", "org.adoptd1.Manager"])
            .args(["StartService", "s", &name])
            .stdout(Stdio::null())
            .status()
            .expect("busctl");
        assert!(started.success(), "busctl StartService {name}");
        let running = format!("adoptd_service_state{{name=\"{name}\",state=\"running\"}} 1\n");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let start = Instant::now();
            let body = scrape(port);
            let took = start.elapsed();
            if body.contains(&running) {
                changed.push(took);
                break;
            }
            assert!(Instant::now() < deadline, "{name} never showed running");
        }
    }
    let cpu_per_change = (cpu_ms(exporter.0.id()) - cpu_before) / changes.max(1) as f64;
    let cached = &mut times[1..];
    cached.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{services} services, {scrapes} scrapes");
    println!(
        "  exporter started and read every service in {:.0} ms",
        ms(read_in)
    );
    println!(
        "  memory after reading:  Rss {} KiB, Anonymous {} KiB",
        before.0, before.1
    );
    println!(
        "  memory after scrapes:  Rss {} KiB, Anonymous {} KiB",
        after.0, after.1
    );
    println!("  a scrape: {size} bytes, {series} series");
    println!("  first scrape (encodes): {:.1} ms", ms(first));
    if !cached.is_empty() {
        println!(
            "  next {} scrapes (nothing changed): min {:.1} ms, median {:.1} ms, max {:.1} ms",
            cached.len(),
            ms(cached[0]),
            ms(cached[cached.len() / 2]),
            ms(cached[cached.len() - 1])
        );
    }
    changed.sort();
    if !changed.is_empty() {
        println!(
            "  {} scrapes after a change (encode again): min {:.1} ms, median {:.1} ms, max {:.1} ms",
            changed.len(),
            ms(changed[0]),
            ms(changed[changed.len() / 2]),
            ms(changed[changed.len() - 1])
        );
        println!(
            "  exporter CPU time per change (the signals, the encode, the scrapes until it showed): {cpu_per_change:.0} ms"
        );
    }
    drop(exporter);
    drop(adoptd);
    std::fs::remove_dir_all(&scratch).ok();
}

/// target/release, where this example's binary is target/release/examples/bench.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("this program's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/release")
        .to_owned();
    for binary in ["adoptd", "adoptd-exporter"] {
        assert!(
            dir.join(binary).exists(),
            "{} is missing: cargo build --release -p adoptd -p adoptd-exporter",
            dir.join(binary).display()
        );
    }
    dir
}

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Accept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// User and system CPU time of every thread of `pid`, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
    let hz = 100.0;
    (ticks(11) + ticks(12)) * 1000.0 / hz
}

/// (Rss, Anonymous) in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Anonymous:"))
}
