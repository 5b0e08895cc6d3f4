//! Benchmark of a re-exec in place (not a test): how long `Reexecute()`
//! takes with N running services, and how long the bus name was away.
//!
//! ```text
//! cargo build --release -p adoptd
//! cargo run --release -p adoptd --example bench_reexec -- [--runs R] [N]
//! ```
//!
//! A `dbus-daemon --session` listens in a scratch directory; adoptd (this
//! build's release binary) starts N services (default 1,000), each a
//! `/bin/sleep` whose output goes to the log, so each has a pidfd and two
//! output pipes to carry across. Once all run, a client calls
//! `Reexecute()` R times (default 5). For each: *total* is from the call
//! to the answer of the new image's first `ListServices` (every service
//! restored and published); *name away* is from the `NameOwnerChanged`
//! that took the name away to the one that gave it back. After each run
//! every service must be running with the main pid it had before, or the
//! benchmark fails. Beside them, the size of the state and the time adoptd
//! took to save it, from its log.

// A benchmark that cannot measure says why and stops.
#![allow(clippy::expect_used)]

#[path = "support/bus.rs"]
mod bus;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use adoptd_dbus::{BUS_NAME, ManagerProxy, State};
use bus::Bus;
use futures_util::StreamExt as _;
use support::{binary, cores, cpu_model};
use zbus::{fdo::DBusProxy, names::BusName};

/// How long any one expected event may take.
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let mut runs = 5;
    let mut count = 1_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = number(args.next()),
            _ => count = number(Some(arg)),
        }
    }
    println!("machine: {}, {} cores", cpu_model(), cores());
    let scratch = Scratch::new(count);
    let bus = Bus::start(&scratch.path);
    let mut adoptd = Adoptd::start(&scratch, &bus.address, count);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut totals = Vec::new();
    let mut aways = Vec::new();
    runtime.block_on(async {
        let connection = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .expect("connect to the bus");
        let before = running(&connection, count).await;
        for run in 0..runs {
            let (total, away) = reexecute(&connection).await;
            let after = running(&connection, count).await;
            assert_eq!(after, before, "run {run}: a main pid changed");
            totals.push(total);
            aways.push(away);
        }
    });
    let saves = adoptd.saves(runs);
    totals.sort_unstable();
    aways.sort_unstable();
    let median = |times: &[Duration]| times[times.len() / 2];
    let max = |times: &[Duration]| times[times.len() - 1];
    println!(
        "{count} services, {runs} re-execs: total median {:.1} ms (max {:.1} ms); \
         name away median {:.1} ms (max {:.1} ms); state {} bytes, saved in {:.1} ms",
        median(&totals).as_secs_f64() * 1e3,
        max(&totals).as_secs_f64() * 1e3,
        median(&aways).as_secs_f64() * 1e3,
        max(&aways).as_secs_f64() * 1e3,
        saves.0,
        saves.1 as f64 / 1e3,
    );
}

/// One `Reexecute()`: the time to the new image's first answer, and how
/// long the name was away.
async fn reexecute(connection: &zbus::Connection) -> (Duration, Duration) {
    let daemon = DBusProxy::new(connection).await.expect("the bus's proxy");
    let mut owners = daemon
        .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
        .await
        .expect("subscribe to NameOwnerChanged");
    let manager = ManagerProxy::new(connection).await.expect("the manager");
    let started = Instant::now();
    manager.reexecute().await.expect("Reexecute");
    let mut gone = None;
    let back = loop {
        let change = tokio::time::timeout(TIMEOUT, owners.next())
            .await
            .expect("the name back in time")
            .expect("NameOwnerChanged");
        let args = change.args().expect("its arguments");
        match args.new_owner().as_ref() {
            None => gone = Some(Instant::now()),
            Some(_) if gone.is_some() => break Instant::now(),
            Some(_) => {}
        }
    };
    ManagerProxy::new(connection)
        .await
        .expect("the manager")
        .list_services()
        .await
        .expect("ListServices of the new image");
    let total = started.elapsed();
    (total, back - gone.unwrap_or(back))
}

/// Every service's main pid, checked running.
async fn running(connection: &zbus::Connection, count: usize) -> BTreeMap<String, u32> {
    let name = BusName::try_from(BUS_NAME).expect("the name");
    let daemon = DBusProxy::new(connection).await.expect("the bus's proxy");
    assert!(daemon.name_has_owner(name).await.expect("NameHasOwner"));
    let rows = ManagerProxy::new(connection)
        .await
        .expect("the manager")
        .list_services()
        .await
        .expect("ListServices");
    assert_eq!(rows.len(), count, "services listed");
    rows.into_iter()
        .map(|row| {
            assert_eq!(row.state, State::Running, "{}", row.name);
            (row.name, row.main_pid)
        })
        .collect()
}

fn number(arg: Option<String>) -> usize {
    arg.and_then(|a| a.parse().ok())
        .expect("--runs and the service count are numbers")
}

/// A scratch directory with `count` service files, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(count: usize) -> Self {
        let path = std::env::temp_dir().join(format!(
            "adoptd-bench-reexec-{count}-{}",
            std::process::id()
        ));
        std::fs::remove_dir_all(&path).ok();
        let services = path.join("services");
        std::fs::create_dir_all(&services).expect("create the scratch dir");
        for index in 0..count {
            std::fs::write(
                services.join(format!("sleeper{index}.toml")),
                "exec = [\"/bin/sleep\", \"100000\"]\n",
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

/// A running adoptd, stopped with its services when dropped.
struct Adoptd {
    child: Child,
    /// Its log lines that say it re-executes.
    reexecs: mpsc::Receiver<String>,
}

impl Adoptd {
    /// Starts adoptd on `address` and returns once its `count` services
    /// run and it owns its name.
    fn start(scratch: &Scratch, address: &str, count: usize) -> Self {
        let mut child = Command::new(binary("adoptd"))
            .arg("--config-dir")
            .arg(scratch.path.join("services"))
            // Not the real adoptd's records of its runs.
            .arg("--state-dir")
            .arg(scratch.path.join("state"))
            .args(["--address", address, "--tracker", "procfs"])
            .env("ADOPTD_LOG", "info,adoptd::output=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start adoptd");
        let stderr = child.stderr.take().expect("adoptd's stderr");
        let (sender, ready) = mpsc::channel();
        let (reexec_sender, reexecs) = mpsc::channel();
        std::thread::spawn(move || {
            let mut running = 0;
            let mut published = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("state=\"running\"") {
                    running += 1;
                }
                published |= line.contains("published as org.adoptd1");
                if published && running >= count {
                    sender.send(()).ok();
                }
                if line.contains("re-executing") && line.contains("bytes=") {
                    reexec_sender.send(line.clone()).ok();
                }
                if std::env::var_os("BENCH_ECHO").is_some()
                    && [
                        "re-executing",
                        "restored",
                        "published as",
                        "adoptd starting",
                    ]
                    .iter()
                    .any(|what| line.contains(what))
                {
                    eprintln!("{line}");
                }
            }
        });
        ready
            .recv_timeout(TIMEOUT)
            .expect("adoptd did not run every service");
        Adoptd { child, reexecs }
    }

    /// The state's size and the median time to save it (µs), from the log
    /// of `runs` re-execs.
    fn saves(&mut self, runs: usize) -> (u64, u64) {
        let field = |line: &str, key: &str| -> u64 {
            line.split(' ')
                .find_map(|token| token.strip_prefix(key)?.parse().ok())
                .unwrap_or(0)
        };
        let mut bytes = 0;
        let mut times = Vec::new();
        for _ in 0..runs {
            let line = self
                .reexecs
                .recv_timeout(TIMEOUT)
                .expect("the log of a re-exec");
            bytes = field(&line, "bytes=");
            times.push(field(&line, "saved_in_us="));
        }
        times.sort_unstable();
        (bytes, times.get(times.len() / 2).copied().unwrap_or(0))
    }
}

impl Drop for Adoptd {
    fn drop(&mut self) {
        // SIGTERM stops every service before adoptd exits.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok();
        self.child.wait().ok();
    }
}
