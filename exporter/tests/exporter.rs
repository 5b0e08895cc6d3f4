//! adoptd-exporter as a monitoring system meets it: the real binary
//! following a real adoptd on a real dbus-daemon (set up as Debian's
//! system bus with adoptd's policy), with real processes that fail and
//! hand off, scraped over HTTP, and by Debian's Prometheus where it is
//! installed.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use adoptd_test_support::{bus::TestBus, *};
use serde_json::Value as Json;
use support::{Exporter, crate_file, get, state};

fn adoptd_on(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    let mut adoptd = Adoptd::start(scratch, &["--address", &bus.address]);
    adoptd.wait_for("adoptd to own org.adoptd1", |l| {
        l.message.starts_with("published as org.adoptd1")
    });
    adoptd
}

/// A service that runs in the foreground until killed, never restarted.
fn crasher(scratch: &Scratch, reports: &Reports, name: &str) {
    dance_service(scratch, reports, name, "", &["serve"]);
}

/// A service that daemonizes with two hops once started by hand.
fn dancer(scratch: &Scratch, reports: &Reports, name: &str) {
    dance_service(
        scratch,
        reports,
        name,
        "autostart = false",
        &["fork", "setsid", "fork", "serve"],
    );
}

fn start_service(bus: &TestBus, name: &str) {
    bus.busctl(&[
        "call",
        "org.adoptd1",
        "/org/adoptd1",
        "org.adoptd1.Manager",
        "StartService",
        "s",
        name,
    ]);
}

#[test]
fn a_scrape_shows_a_failure_and_a_handoff_as_they_happen() {
    let scratch = Scratch::new("exporter-events");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    crasher(&scratch, &reports, "crash");
    dancer(&scratch, &reports, "dancer");
    let _adoptd = adoptd_on(&scratch, &bus);
    let crash = reports.next();
    let mut exporter = Exporter::start(&bus.address, free_port());
    exporter.wait_for("read adoptd's services");

    let scrape = exporter.scrape_until("crash running", |s| s.is(&state("crash", "running"), "1"));
    assert!(scrape.is("adoptd_up", "1"), "{}", scrape.text);
    assert!(
        scrape.is(&state("dancer", "stopped"), "1"),
        "{}",
        scrape.text
    );
    assert!(
        scrape.is(
            "adoptd_service_main_pid_source{name=\"crash\",source=\"spawn\"}",
            "1"
        ),
        "{}",
        scrape.text
    );
    assert!(
        scrape.is(
            "adoptd_service_info{name=\"crash\",template=\"crash\",instance=\"\",expect=\"auto\",load_state=\"loaded\"}",
            "1"
        ),
        "{}",
        scrape.text
    );
    assert!(
        scrape.samples.keys().any(|s| s.starts_with("adoptd_info{")),
        "{}",
        scrape.text
    );
    assert!(
        scrape
            .samples
            .keys()
            .any(|s| s.starts_with("adoptd_service_start_time_seconds{name=\"crash\"}")),
        "{}",
        scrape.text
    );

    signal(crash.pid, libc::SIGKILL);
    let scrape = exporter.scrape_until("crash failed", |s| s.is(&state("crash", "failed"), "1"));
    assert!(
        scrape.is(&state("crash", "running"), "0"),
        "{}",
        scrape.text
    );

    start_service(&bus, "dancer");
    let settled = reports.next();
    let scrape = exporter.scrape_until("dancer's two hand-offs", |s| {
        s.is("adoptd_service_handoffs_total{name=\"dancer\"}", "2")
            && s.is(&state("dancer", "running"), "1")
    });
    assert!(
        scrape.is(
            "adoptd_service_main_pid_source{name=\"dancer\",source=\"adoption\"}",
            "1"
        ),
        "{}",
        scrape.text
    );

    // No pid is ever a label: each hand-off would make a new series.
    let pids = [crash.pid, settled.pid, settled.last_parent].map(|pid| pid.to_string());
    let mut labels = BTreeSet::new();
    for series in scrape.samples.keys() {
        let Some((_, rest)) = series.split_once('{') else {
            continue;
        };
        for pair in rest.trim_end_matches('}').split("\",") {
            let (label, value) = pair.split_once("=\"").expect("label=\"value\"");
            labels.insert(label.to_owned());
            assert!(
                !pids.contains(&value.trim_end_matches('"').to_owned()),
                "{series}"
            );
        }
    }
    let expected: BTreeSet<String> = [
        "name",
        "state",
        "template",
        "instance",
        "expect",
        "load_state",
        "source",
        "version",
        "tracker",
        "role",
    ]
    .map(str::to_owned)
    .into();
    assert!(labels.is_subset(&expected), "{labels:?}");
}

#[test]
fn the_exporter_follows_adoptd_and_the_bus_through_restarts() {
    let scratch = Scratch::new("exporter-restarts");
    let Some(mut bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    crasher(&scratch, &reports, "web");
    let adoptd = adoptd_on(&scratch, &bus);
    reports.next();
    let mut exporter = Exporter::start(&bus.address, free_port());
    exporter.wait_for("read adoptd's services");
    exporter.scrape_until("web running", |s| s.is(&state("web", "running"), "1"));

    // adoptd goes: the exporter says so, and keeps serving.
    adoptd.stop();
    let scrape = exporter.scrape_until("adoptd_up 0", |s| s.is("adoptd_up", "0"));
    assert!(
        !scrape.text.contains("adoptd_service_state"),
        "{}",
        scrape.text
    );

    // A new adoptd: its services, read afresh.
    let adoptd = adoptd_on(&scratch, &bus);
    reports.next();
    exporter.scrape_until("the new adoptd's web running", |s| {
        s.is("adoptd_up", "1") && s.is(&state("web", "running"), "1")
    });

    // The bus itself dies and comes back; adoptd and the exporter both
    // connect again.
    bus.restart();
    exporter.wait_for("connecting again");
    exporter.wait_for("read adoptd's services");
    exporter.scrape_until("web running after the bus restart", |s| {
        s.is("adoptd_up", "1") && s.is(&state("web", "running"), "1")
    });
    drop(adoptd);
}

#[test]
fn a_service_added_by_reload_is_exported_and_one_removed_is_not() {
    let scratch = Scratch::new("exporter-reload");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    // Stopped, so that it goes at once when its file goes.
    dancer(&scratch, &reports, "old");
    let _adoptd = adoptd_on(&scratch, &bus);
    let mut exporter = Exporter::start(&bus.address, free_port());
    exporter.wait_for("read adoptd's services");
    exporter.scrape_until("old stopped", |s| s.is(&state("old", "stopped"), "1"));

    std::fs::remove_file(scratch.services().join("old.toml")).expect("remove old.toml");
    dancer(&scratch, &reports, "new");
    bus.busctl(&[
        "call",
        "org.adoptd1",
        "/org/adoptd1",
        "org.adoptd1.Manager",
        "Reload",
    ]);
    let scrape = exporter.scrape_until("new, and not old", |s| {
        s.is(&state("new", "stopped"), "1")
            && s.value(&state("old", "stopped")).is_none()
            && s.value(&state("old", "running")).is_none()
    });
    assert!(!scrape.text.contains("name=\"old\""), "{}", scrape.text);
}

#[test]
fn a_scrape_is_clean_openmetrics_for_promtool() {
    let Some(promtool) = installed("promtool") else {
        eprintln!("skipped: promtool is not installed (Debian package prometheus)");
        return;
    };
    let scratch = Scratch::new("exporter-promtool");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    crasher(&scratch, &reports, "web");
    scratch.service(
        "echo@",
        &format!(
            "exec = {}\ninstances = [\"one\", \"two\"]\n",
            argv(&["/bin/sleep", "1000"])
        ),
    );
    let _adoptd = adoptd_on(&scratch, &bus);
    reports.next();
    let mut exporter = Exporter::start(&bus.address, free_port());
    exporter.wait_for("read adoptd's services");
    exporter.scrape_until("every service running", |s| {
        ["web", "echo@one", "echo@two"]
            .iter()
            .all(|name| s.is(&state(name, "running"), "1"))
    });
    let (_, body) = get(exporter.port, "/metrics");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), body.as_bytes())
        .expect("write to promtool");
    let output = check.wait_with_output().expect("promtool ends");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {output:?}\n{body}"
    );

    let rules = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(crate_file("prometheus/adoptd.rules.yml"))
        .output()
        .expect("promtool");
    assert!(rules.status.success(), "promtool check rules: {rules:?}");
    let tests = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(crate_file("prometheus/adoptd.rules.test.yml"))
        .output()
        .expect("promtool");
    assert!(tests.status.success(), "promtool test rules: {tests:?}");
}

/// A Prometheus server scraping the exporter every `interval`.
struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Prometheus {
    fn start(scratch: &Scratch, target_port: u16, interval: Duration) -> Option<Self> {
        let binary = installed("prometheus")?;
        let config = scratch.file("prometheus.yml");
        let interval_ms = interval.as_millis();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {interval_ms}ms\n  evaluation_interval: {interval_ms}ms\n\
                 rule_files: [{:?}]\n\
                 scrape_configs:\n  - job_name: adoptd\n    static_configs:\n      - targets: [\"127.0.0.1:{target_port}\"]\n",
                crate_file("prometheus/adoptd.rules.yml")
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let mut child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.file("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prometheus");
        let stderr = child.stderr.take().expect("stderr");
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ADOPTD_TEST_ECHO").is_some() {
                    eprintln!("prometheus| {line}");
                }
                if line.contains("Server is ready to receive web requests") {
                    ready.send(()).ok();
                }
            }
        });
        let prometheus = Prometheus { child, port };
        wait.recv_timeout(TIMEOUT)
            .expect("Prometheus is ready to receive web requests");
        Some(prometheus)
    }

    /// The samples of `selector` over the last `range`, as (unix time in
    /// seconds, value).
    fn samples(&self, selector: &str, range: &str) -> Vec<(f64, String)> {
        let query = format!("{selector}[{range}]");
        let (head, body) = get(
            self.port,
            &format!("/api/v1/query?query={}", percent_encode(&query)),
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        let body: Json = serde_json::from_str(&body).expect("JSON from Prometheus");
        let Some(series) = body["data"]["result"].as_array().and_then(|r| r.first()) else {
            return Vec::new();
        };
        series["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_f64().expect("a time"),
                    pair[1].as_str().expect("a value").to_owned(),
                )
            })
            .collect()
    }

    /// Waits until the samples of `selector` hold a sample after `after`
    /// (unix seconds); all the samples after `after`.
    fn samples_after(&self, selector: &str, after: f64) -> Vec<(f64, String)> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let later: Vec<_> = self
                .samples(selector, "1m")
                .into_iter()
                .filter(|(at, _)| *at > after)
                .collect();
            if !later.is_empty() {
                return later;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus scraped no {selector} after {after} within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn prometheus_sees_a_failure_and_a_handoff_within_one_scrape_interval() {
    if installed("prometheus").is_none() {
        eprintln!("skipped: prometheus is not installed (Debian package prometheus)");
        return;
    }
    let scratch = Scratch::new("exporter-prometheus");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    crasher(&scratch, &reports, "crash");
    dancer(&scratch, &reports, "dancer");
    let _adoptd = adoptd_on(&scratch, &bus);
    let crash = reports.next();
    let mut exporter = Exporter::start(&bus.address, free_port());
    exporter.wait_for("read adoptd's services");
    let interval = Duration::from_secs(1);
    let prometheus =
        Prometheus::start(&scratch, exporter.port, interval).expect("prometheus is installed");
    let running = state("crash", "running");
    let up_at = now_seconds();
    let seen = prometheus.samples_after(&running, up_at);
    assert!(seen.iter().all(|(_, value)| value == "1"), "{seen:?}");

    // The failure: the first scrape after the exporter knew of it shows it.
    signal(crash.pid, libc::SIGKILL);
    exporter.scrape_until("crash failed", |s| s.is(&state("crash", "failed"), "1"));
    let known_at = now_seconds();
    let failed = prometheus.samples_after(&state("crash", "failed"), known_at);
    let (first_at, first) = &failed[0];
    assert_eq!(first, "1", "{failed:?}");
    assert!(
        *first_at - known_at <= interval.as_secs_f64() + 0.5,
        "the first scrape after the failure came {}s later",
        first_at - known_at
    );

    // The hand-off, likewise.
    start_service(&bus, "dancer");
    reports.next();
    exporter.scrape_until("dancer's two hand-offs", |s| {
        s.is("adoptd_service_handoffs_total{name=\"dancer\"}", "2")
    });
    let known_at = now_seconds();
    let handoffs =
        prometheus.samples_after("adoptd_service_handoffs_total{name=\"dancer\"}", known_at);
    let (first_at, first) = &handoffs[0];
    assert_eq!(first, "2", "{handoffs:?}");
    assert!(
        *first_at - known_at <= interval.as_secs_f64() + 0.5,
        "the first scrape after the hand-off came {}s later",
        first_at - known_at
    );
}
