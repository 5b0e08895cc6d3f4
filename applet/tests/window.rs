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

// adoptd's test support finds adoptd through a variable cargo sets only
// for adoptd's own tests: route that one name to the binary beside the
// applet, and leave every other `env!` as it is.
macro_rules! env {
    ("CARGO_BIN_EXE_adoptd") => {
        $crate::adoptd_binary()
    };
    ($name:literal) => {
        ::std::env!($name)
    };
}

#[path = "../../service/tests/common/bus.rs"]
mod bus;
#[path = "../../service/tests/common/mod.rs"]
mod common;
mod desktop;

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use bus::TestBus;
use common::*;
use desktop::{Desktop, User};

/// The adoptd binary, built beside the applet by `cargo test --workspace`.
pub fn adoptd_binary() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = Path::new(env!("CARGO_BIN_EXE_adoptd-applet")).with_file_name("adoptd");
        assert!(
            path.exists(),
            "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p adoptd`)",
            path.display()
        );
        path.to_string_lossy().into_owned()
    })
}

/// The reason these tests cannot run here, said on stderr, if any.
fn skipped() -> bool {
    let reason = bus::missing_tools().or_else(desktop::missing_tools);
    if let Some(reason) = &reason {
        eprintln!("skipped: {reason}");
    }
    reason.is_some()
}

/// adoptd on `bus`, once it owns its name.
fn adoptd_on(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    let mut adoptd = Adoptd::start(scratch, &["--address", &bus.address]);
    adoptd.wait_for("adoptd to own org.adoptd1", |l| {
        l.message.starts_with("published as org.adoptd1")
    });
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
    let mut applet = desktop.applet(&bus.address, &["--show", "dancer"]);
    let mut reader = desktop.reader();
    reader.wait_row("the dancer, stopped", &[(0, "dancer"), (1, "○ stopped")]);
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
    let mut adoptd = adoptd_on(&scratch, &bus);
    let settled = reports.next();
    adoptd.wait_main_pid("dancer", settled.pid);
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
