//! Watching adoptd's messages on its private bus with real busctl, as
//! dbus/README.md says: busd, the embedded broker, takes only a unique
//! name as a match rule's `destination`, so `busctl monitor org.adoptd1`
//! is refused there; a monitor without a name, or one that matches
//! `sender='org.adoptd1'`, works.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

use std::process::Command;

use adoptd_dbus::{BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH};
use adoptd_test_support::{
    bus::{Monitor, which},
    *,
};

#[test]
fn the_private_bus_is_monitored_by_sender_not_by_name() {
    if which("busctl").is_none() {
        eprintln!("skipped: busctl is not installed (Debian package systemd)");
        return;
    }
    let scratch = Scratch::new("monitor");
    scratch.service(
        "idle",
        "exec = [\"/bin/sleep\", \"1000\"]\nautostart = false\n",
    );
    // Never the real adoptd's place (/run/adoptd, the user's runtime dir).
    let runtime = scratch.file("run");
    let mut command = Command::new(env!("CARGO_BIN_EXE_adoptd"));
    command
        .arg("--private-bus")
        .arg("--config-dir")
        .arg(scratch.services())
        .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, &runtime);
    let mut adoptd = Adoptd::spawn(command);
    adoptd.wait_for("adoptd to own org.adoptd1", |l| {
        l.message.starts_with("published as org.adoptd1")
    });
    let address = adoptd_dbus::private_bus_address(&runtime.join("bus"));
    let busctl = |args: &[&str]| {
        let mut command = Command::new("busctl");
        command.arg(format!("--address={address}")).args(args);
        command
    };

    let by_name = busctl(&["monitor", BUS_NAME])
        .output()
        .expect("busctl monitor");
    let refusal = String::from_utf8_lossy(&by_name.stderr);
    assert!(
        !by_name.status.success() && refusal.contains("Invalid unique name"),
        "busd accepts `busctl monitor {BUS_NAME}` now: say so in dbus/README.md ({refusal})"
    );

    let ready = |line: &str| line.starts_with("Monitoring bus message stream");
    let everything = Monitor::start(busctl(&["monitor"]), ready);
    let from_adoptd = Monitor::start(
        busctl(&[&format!("--match=sender='{BUS_NAME}'"), "monitor"]),
        ready,
    );
    let call = busctl(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        "ListServices",
    ])
    .output()
    .expect("busctl call");
    assert!(call.status.success(), "ListServices failed");

    everything.wait_for("the call to ListServices", |line| {
        line.contains("Member=ListServices")
    });
    everything.wait_for("its reply", |line| line.contains("Type=method_return"));
    from_adoptd.wait_for("adoptd's reply", |line| line.contains("Type=method_return"));
}
