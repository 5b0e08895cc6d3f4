//! The applet as a desktop user meets it: the real window under Xvfb,
//! read through the accessibility tree as a screen reader reads it, over a
//! real adoptd on a real dbus-daemon (set up as Debian's system bus with
//! adoptd's policy), with real daemonizing processes.
//!
//! Every wait is on an event with a generous timeout: the window's first
//! appearance on a loaded machine takes seconds, and no test measures
//! speed (docs/BENCHMARKS.md does).

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

mod desktop;

use std::path::{Path, PathBuf};

use adoptd_test_support::{bus::TestBus, *};
use desktop::{Desktop, User};

/// The reason these tests cannot run here, said on stderr, if any.
fn skipped() -> bool {
    let reason = adoptd_test_support::bus::missing_tools().or_else(desktop::missing_tools);
    if let Some(reason) = &reason {
        eprintln!("skipped: {reason}");
    }
    reason.is_some()
}

/// adoptd on `bus`, once it owns its name.
fn adoptd_on(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    let adoptd = Adoptd::start(scratch, &["--address", &bus.address]);
    wait_for_adoptd(&bus.address);
    adoptd
}

/// A service that daemonizes with two hops, as daemon(3) users do. Its
/// program is a copy of the dance helper in the scratch directory, so that
/// screenshots show no path of the build.
fn dancer(scratch: &Scratch, reports: &Reports, autostart: bool) {
    let program = scratch.file("dance");
    std::fs::copy(dance(), &program).expect("copy the dance helper");
    let exec = argv(&[
        program.to_str().expect("utf-8 path"),
        "--report",
        reports.path.to_str().expect("utf-8 path"),
        "--tag",
        "dancer",
        "fork",
        "setsid",
        "fork",
        "serve",
    ]);
    scratch.service(
        "dancer",
        &format!(
            "exec = {exec}\nrestart = \"no\"\nautostart = {autostart}\ndescription = \"Daemonizes with a double fork\"\n"
        ),
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

/// Where a screenshot goes: the build's scratch directory, and `docs/`
/// with `ADOPTD_UPDATE_SCREENSHOTS=1`.
fn keep_screenshot(taken: &Path, name: &str) {
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::copy(taken, &kept).expect("keep the screenshot");
    if std::env::var_os("ADOPTD_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name);
        std::fs::copy(taken, docs).expect("update the screenshot in docs/");
    }
}

#[test]
fn the_window_follows_services_live_and_survives_adoptd() {
    if skipped() {
        return;
    }
    let scratch = Scratch::new("applet-live");
    let bus = TestBus::start(&scratch);
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, false);
    scratch.service(
        "crasher",
        "exec = [\"/bin/sh\", \"-c\", \"exit 3\"]\nrestart = \"no\"\nautostart = false\n",
    );
    scratch.service(
        "web@",
        "exec = [\"/bin/sleep\", \"1000\"]\ninstances = [\"one\", \"two\"]\n",
    );
    let adoptd = adoptd_on(&scratch, &bus);
    let desktop = Desktop::start(&scratch, User::Root, None);
    let mut applet = desktop.applet(&bus.address, &["--show", "dancer", "--notify"]);
    let mut reader = desktop.reader();
    reader.wait_row("the dancer, stopped", &[(0, "dancer"), (1, "○ stopped")]);
    // Before anything can fail.
    reader.serve_notifications();
    reader.wait_row(
        "the template's group",
        &[(0, "web"), (1, "✔ running (2 running)")],
    );
    reader.wait_row("an instance under it", &[(0, "web@two"), (1, "✔ running")]);

    // A hand-off, live.
    start_service(&bus, "dancer");
    let settled = reports.next();
    let (main_pid, previous_pid) = (settled.pid.to_string(), settled.last_parent.to_string());
    reader.wait_row(
        "the dancer's new main PID after its hand-offs",
        &[
            (0, "dancer"),
            (1, "✔ running"),
            (2, &main_pid),
            (3, &previous_pid),
            (4, "2"),
        ],
    );
    reader.wait_name(&format!("handed off from {previous_pid} to {main_pid}"));

    // A failure, live.
    start_service(&bus, "crasher");
    reader.wait_row("the failed service", &[(0, "crasher"), (1, "✖ failed")]);
    reader.wait_notification("crasher failed");

    // A service added by a reload.
    scratch.service(
        "newcomer",
        "exec = [\"/bin/sleep\", \"1000\"]\nrestart = \"no\"\n",
    );
    bus.busctl(&[
        "call",
        "org.adoptd1",
        "/org/adoptd1",
        "org.adoptd1.Manager",
        "Reload",
    ]);
    reader.wait_row("the service the reload added", &[(0, "newcomer")]);
    let shot = scratch.file("light.png");
    reader.screenshot(&shot);
    keep_screenshot(&shot, "applet-light.png");

    // Root's Stop works.
    reader.click("Stop");
    reader.wait_row(
        "the dancer stopped by the button",
        &[(0, "dancer"), (1, "○ stopped")],
    );
    assert_ends(settled.pid, "the dancer's daemon");

    // adoptd goes, then comes back.
    let _ = adoptd.stop();
    reader.wait_name("adoptd status — adoptd is not running");
    let _adoptd = adoptd_on(&scratch, &bus);
    reader.wait_row("the dancer, after adoptd came back", &[(0, "dancer")]);
    applet.assert_running();
}

#[test]
fn another_user_sees_adoptds_refusal_in_the_window() {
    if skipped() {
        return;
    }
    if !is_root() {
        eprintln!("skipped: running the window as another user needs root");
        return;
    }
    let scratch = Scratch::new("applet-nobody");
    let bus = TestBus::start(&scratch);
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, true);
    let _adoptd = adoptd_on(&scratch, &bus);
    let settled = reports.next();
    Watch::connect(&bus.address).wait_main_pid("dancer", settled.pid);
    // What adoptd says to nobody, as busctl hears it.
    let refused = bus.busctl_output(
        &[
            "call",
            "org.adoptd1",
            "/org/adoptd1/service/dancer",
            "org.adoptd1.Service",
            "Stop",
        ],
        Some("nobody"),
    );
    assert!(!refused.status.success(), "nobody may not stop a service");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let sentence = stderr
        .trim()
        .strip_prefix("Call failed: ")
        .unwrap_or(stderr.trim())
        .to_owned();

    let desktop = Desktop::start(&scratch, User::Nobody, Some("Adwaita:dark"));
    let mut applet = desktop.applet(&bus.address, &["--show", "dancer"]);
    let mut reader = desktop.reader();
    reader.wait_row(
        "the dancer, running",
        &[
            (0, "dancer"),
            (1, "✔ running"),
            (2, &settled.pid.to_string()),
        ],
    );
    reader.click("Stop");
    reader.wait_name(&sentence);
    let shot = desktop.home_file("dark.png");
    reader.screenshot(&shot);
    keep_screenshot(&shot, "applet-dark.png");
    assert!(is_alive(settled.pid), "the refused Stop stopped nothing");
    applet.assert_running();
}

#[test]
fn the_tray_icon_says_what_failed_and_opens_the_window_on_it() {
    if skipped() {
        return;
    }
    let scratch = Scratch::new("applet-tray");
    let bus = TestBus::start(&scratch);
    scratch.service(
        "steady",
        "exec = [\"/bin/sleep\", \"1000\"]\nrestart = \"no\"\n",
    );
    scratch.service(
        "crasher",
        "exec = [\"/bin/sh\", \"-c\", \"exit 3\"]\nrestart = \"no\"\nautostart = false\ndescription = \"Fails on purpose\"\n",
    );
    let _adoptd = adoptd_on(&scratch, &bus);
    let desktop = Desktop::start(&scratch, User::Root, None);
    let mut applet = desktop.applet(&bus.address, &[]);
    let mut reader = desktop.reader();
    // The panel comes after the applet: the icon registers when it does.
    reader.serve_watcher();
    let registered = reader.wait_registered(1);
    let item = registered[0].clone();
    assert!(
        item.starts_with("org.kde.StatusNotifierItem-"),
        "registered as {item}"
    );
    reader.wait_tray(
        "that all is well",
        &item,
        serde_json::json!({
            "Category": "SystemServices",
            "Id": "adoptd-applet",
            "Title": "adoptd status",
            "Status": "Passive",
            "IconName": "emblem-default",
            "ToolTip": "1 running, 1 stopped",
            "ItemIsMenu": false,
            "Menu": "/MenuBar",
            "menu": ["Open adoptd status", "-", "Quit"],
        }),
        &[],
    );

    start_service(&bus, "crasher");
    let read = reader.wait_tray(
        "that the crasher failed",
        &item,
        serde_json::json!({
            "Status": "NeedsAttention",
            "IconName": "dialog-error",
            "ToolTip": "1 failed, 1 running: crasher",
            "menu": ["Open adoptd status", "-", "crasher — failed", "-", "Quit"],
        }),
        &["NewStatus", "NewIcon", "NewToolTip", "LayoutUpdated"],
    );
    // The title never changed: never announced.
    let signals = read["signals"].as_array().expect("the signals");
    assert!(
        !signals.iter().any(|name| name == "NewTitle"),
        "NewTitle without a new title: {signals:?}"
    );
    let crasher_item = read["ids"][2].as_i64().expect("the crasher's menu item");

    // Its menu item opens the window on it.
    reader.tray_call(
        &item,
        "/MenuBar",
        "com.canonical.dbusmenu",
        "Event",
        "(isvu)",
        serde_json::json!([crasher_item, "clicked", "", 0]),
    );
    reader.wait_name("Fails on purpose");
    // A click on the icon raises the window.
    reader.tray_call(
        &item,
        "/StatusNotifierItem",
        "org.kde.StatusNotifierItem",
        "Activate",
        "(ii)",
        serde_json::json!([0, 0]),
    );
    reader.wait_name("adoptd status — bus at");

    // The panel restarts: the icon registers again.
    reader.serve_watcher();
    let registered = reader.wait_registered(2);
    assert_eq!(registered[1], item);
    // An applet started while a watcher is there registers at once.
    let mut second = desktop.applet(&bus.address, &[]);
    let registered = reader.wait_registered(3);
    assert_ne!(registered[2], item);
    applet.assert_running();
    second.assert_running();
}

/// How many hand-offs the benchmark times.
const BENCH_ROUNDS: usize = 20;

/// How many services the benchmark loads: 1000, or
/// `$ADOPTD_BENCH_SERVICES` (0 gives the applet's memory with one).
fn bench_services() -> usize {
    std::env::var("ADOPTD_BENCH_SERVICES")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1000)
}

/// The figures of docs/BENCHMARKS.md: how long from a hand-off (adoptd's
/// log line for it) to the window painting the frame that shows the new
/// main PID (the applet's `ADOPTD_APPLET_TRACE` lines), and the applet's
/// memory with a thousand services. Run with
/// `cargo test --release -p adoptd-applet --test window -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark, run by hand"]
fn bench_handoff_to_window_and_memory_with_a_thousand_services() {
    if skipped() {
        return;
    }
    let services = bench_services();
    let scratch = Scratch::new("applet-bench");
    let bus = TestBus::start(&scratch);
    let reports = Reports::bind(&scratch);
    let program = scratch.file("dance");
    std::fs::copy(dance(), &program).expect("copy the dance helper");
    scratch.service(
        "aaa-dancer",
        &format!(
            "exec = {}\nrestart = \"no\"\nautostart = false\n",
            argv(&[
                program.to_str().expect("utf-8"),
                "--report",
                reports.path.to_str().expect("utf-8"),
                "--tag",
                "aaa-dancer",
                "fork",
                "setsid",
                "fork",
                "serve",
            ])
        ),
    );
    for n in 0..services {
        scratch.service(
            &format!("idle-{n:04}"),
            "exec = [\"/bin/sleep\", \"100000\"]\nrestart = \"no\"\n",
        );
    }
    let mut adoptd = adoptd_on(&scratch, &bus);
    let desktop = Desktop::start(&scratch, User::Root, None);
    let applet = desktop.applet_with(&bus.address, &[], &[("ADOPTD_APPLET_TRACE", "1")]);
    let mut reader = desktop.reader();
    let listed = match services {
        0 => "1 service: 1 stopped".to_owned(),
        _ => format!("{} services: {services} running, 1 stopped", services + 1),
    };
    reader.wait_name(&listed);
    let memory = |what: &str| {
        let status = std::fs::read_to_string(format!("/proc/{}/status", applet.pid()))
            .expect("the applet's status");
        let field = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::trim)
                .unwrap_or("?")
                .to_owned()
        };
        eprintln!(
            "bench: applet memory {what}: VmRSS {}, VmHWM {}",
            field("VmRSS:"),
            field("VmHWM:")
        );
    };
    memory(&format!("with {} services listed", services + 1));

    let mut latencies = Vec::new();
    let mut to_model = Vec::new();
    let mut apply_took = Vec::new();
    for _ in 0..BENCH_ROUNDS {
        start_service(&bus, "aaa-dancer");
        let settled = reports.next();
        let handoff = adoptd.wait_for("the last hand-off", |l| {
            l.is("hand-off", "aaa-dancer") && l.get("pid") == Some(&settled.pid.to_string())
        });
        let traced = |step: &str| {
            applet.wait_said(&format!("{step} the new main PID"), |line| {
                line.contains(&format!(" {step} "))
                    && line.ends_with(&format!(" main_pid={}", settled.pid))
            })
        };
        let handed_off = log_time(&handoff.text);
        let applied = traced("applied");
        let painted = traced("painted");
        latencies.push((trace_field(&painted, "at=") - handed_off) * 1000.0);
        to_model.push((trace_field(&applied, "at=") - handed_off) * 1000.0);
        apply_took.push(trace_field(&applied, "took_us=") / 1000.0);
        bus.busctl(&[
            "call",
            "org.adoptd1",
            "/org/adoptd1",
            "org.adoptd1.Manager",
            "StopService",
            "s",
            "aaa-dancer",
        ]);
        adoptd.wait_next("the dancer to stop", |l| {
            l.is("status", "aaa-dancer") && l.get("state") == Some("stopped")
        });
    }
    for (what, mut figures) in [
        (
            "hand-off to the window painting the new main PID",
            latencies,
        ),
        ("of which hand-off to the model holding it", to_model),
        (
            "of which the model's own work (items changed, rows re-bound)",
            apply_took,
        ),
    ] {
        figures.sort_by(f64::total_cmp);
        let at = |fraction: f64| {
            let index = ((figures.len() as f64 - 1.0) * fraction).round() as usize;
            figures.get(index).copied().unwrap_or(f64::NAN)
        };
        eprintln!(
            "bench: {what}, {BENCH_ROUNDS} rounds: \
             min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            at(0.0),
            at(0.5),
            at(0.9),
            at(1.0)
        );
    }
    memory(&format!("after {BENCH_ROUNDS} hand-offs"));
}

/// A number in one of the applet's trace lines (`at=…`, `took_us=…`).
fn trace_field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(key))
        .and_then(|value| value.parse().ok())
        .expect("a number in the trace line")
}

/// The wall-clock time of one of adoptd's log lines
/// (`2026-12-01T07:55:21.700581Z  INFO …`), in seconds since the epoch.
fn log_time(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().expect("a timestamp");
    let (date, time) = stamp.split_once('T').expect("date and time");
    let mut date = date.split('-').map(|n| n.parse::<i64>().expect("a date"));
    let (year, month, day) = (
        date.next().expect("year"),
        date.next().expect("month"),
        date.next().expect("day"),
    );
    let time = time.trim_end_matches('Z');
    let mut time = time.split(':');
    let hours: f64 = time.next().expect("hours").parse().expect("hours");
    let minutes: f64 = time.next().expect("minutes").parse().expect("minutes");
    let seconds: f64 = time.next().expect("seconds").parse().expect("seconds");
    // Days from the civil date (proleptic Gregorian calendar).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    days as f64 * 86_400.0 + hours * 3600.0 + minutes * 60.0 + seconds
}

#[test]
fn log_times_are_read_as_seconds_since_the_epoch() {
    assert_eq!(log_time("1970-01-01T00:00:01.5Z  INFO x"), 1.5);
    assert_eq!(
        log_time("2026-12-01T07:55:21.000000Z  INFO x"),
        1_796_111_721.0
    );
}
