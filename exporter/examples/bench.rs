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
//! timed from connect to the last byte, and the memory again. Nothing is
//! asserted; everything it started is killed at the end.

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

fn main() {
    let mut services = 10_000usize;
    let mut scrapes = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--services", Some(n)) => services = n,
            ("--scrapes", Some(n)) => scrapes = n,
            _ => {
                eprintln!("usage: bench [--services N] [--scrapes K]");
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
    let _adoptd = Killed(adoptd);
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
    times.sort();
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
    println!(
        "  scrape time: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    drop(exporter);
    drop(_adoptd);
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
