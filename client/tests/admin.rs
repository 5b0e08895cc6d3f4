//! An admin's day with adoptctl: a refused file shown and mended by a
//! reload, configuration that follows the file, a start that says why it
//! could not run the program or timed out, and the verbs scripts use.
//! The real binary against a real adoptd on a real dbus-daemon.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

mod support;

use adoptd_dbus::State;
use adoptd_test_support::{bus::TestBus, *};
use support::{adoptctl, run};

fn sleeper(scratch: &Scratch, name: &str, extra: &str) {
    scratch.service(
        name,
        &format!("exec = {}\n{extra}", argv(&["/bin/sleep", "1000"])),
    );
}

#[test]
fn a_refused_file_is_shown_then_mended_by_a_reload() {
    let scratch = Scratch::new("admin-refused");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    sleeper(&scratch, "typo", "restrat = \"always\"\n");
    sleeper(&scratch, "fine", "");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    watch.wait_state("fine", State::Running);

    let status = run(adoptctl(&bus).args(["status", "typo"]));
    assert_eq!(status.code, 3, "{}{}", status.stdout, status.stderr);
    assert!(
        status.stdout.contains("Loaded: bad-setting ("),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("typo.toml:2: restrat: unknown key (did you mean \"restart\"?)"),
        "{}",
        status.stdout
    );
    let list = run(adoptctl(&bus).arg("list"));
    assert!(
        list.stdout.contains("stopped (bad-setting)"),
        "{}",
        list.stdout
    );
    let start = run(adoptctl(&bus).args(["start", "typo"]));
    assert_eq!(start.code, 1);
    assert!(
        start.stderr.contains("its service file was refused"),
        "{}",
        start.stderr
    );

    // The file changed on disk: status says so before the reload.
    sleeper(&scratch, "typo", "restart = \"always\"\n");
    let stale = run(adoptctl(&bus).args(["show", "-p", "NeedDaemonReload", "--value", "typo"]));
    assert_eq!(stale.stdout, "yes\n", "{}", stale.stderr);
    let reload = run(adoptctl(&bus).arg("daemon-reload"));
    assert_eq!(reload.code, 0, "{}", reload.stderr);
    assert_eq!(reload.stdout, "changed: typo\n");
    let fresh = run(adoptctl(&bus).args(["show", "-p", "NeedDaemonReload", "--value", "typo"]));
    assert_eq!(fresh.stdout, "no\n");
    let start = run(adoptctl(&bus).args(["start", "typo"]));
    assert_eq!(start.code, 0, "{}", start.stderr);
    assert_eq!(run(adoptctl(&bus).args(["is-active", "typo"])).code, 0);

    // A new bad file: the reload says which, fails, and loads the rest.
    sleeper(&scratch, "worse", "stop-timeout = \"soon\"\n");
    sleeper(&scratch, "added", "autostart = false\n");
    let reload = run(adoptctl(&bus).arg("daemon-reload"));
    assert_eq!(reload.code, 1);
    assert!(
        reload.stdout.contains("added: added\n"),
        "{}",
        reload.stdout
    );
    assert!(
        reload.stdout.contains("refused: worse: ")
            && reload
                .stderr
                .contains("worse.toml:2: stop-timeout: invalid duration"),
        "{}{}",
        reload.stdout,
        reload.stderr
    );
}

#[test]
fn configuration_properties_follow_the_file_on_reload() {
    let scratch = Scratch::new("admin-stale");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    sleeper(&scratch, "web", "description = \"old\"\n");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    watch.wait_state("web", State::Running);
    let show = |property: &str| {
        run(adoptctl(&bus).args(["show", "-p", property, "--value", "web"])).stdout
    };
    assert_eq!(show("Description"), "old\n");
    assert_eq!(show("TimeoutStopUSec"), "10000000\n");
    sleeper(
        &scratch,
        "web",
        "description = \"new\"\nstop-timeout = \"1min 30s\"\nenvironment = { LANG = \"C\" }\n",
    );
    let reload = run(adoptctl(&bus).arg("daemon-reload"));
    assert_eq!(reload.stdout, "changed: web\n", "{}", reload.stderr);
    assert_eq!(show("Description"), "new\n");
    assert_eq!(show("TimeoutStopUSec"), "90000000\n");
    assert_eq!(show("Environment"), "LANG=C\n");
    let cat = run(adoptctl(&bus).args(["cat", "web"]));
    assert!(cat.stdout.starts_with("# "), "{}", cat.stdout);
    assert!(
        cat.stdout.contains("description = \"new\""),
        "{}",
        cat.stdout
    );
}

#[test]
fn a_start_that_cannot_run_the_program_says_why_and_reset_failed_clears_it() {
    let scratch = Scratch::new("admin-exec");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    sleeper(
        &scratch,
        "nouser",
        "user = \"no-such-user-here\"\nautostart = false\nrestart = \"no\"\n",
    );
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    watch.wait_state("nouser", State::Stopped);
    let start = run(adoptctl(&bus).args(["start", "nouser"]));
    assert_eq!(start.code, 1);
    assert!(
        start
            .stderr
            .contains("user \"no-such-user-here\" does not exist"),
        "{}",
        start.stderr
    );
    watch.wait_state("nouser", State::Failed);
    let error = run(adoptctl(&bus).args(["show", "-p", "ExecError", "--value", "nouser"]));
    assert_eq!(error.stdout, "user \"no-such-user-here\" does not exist\n");
    let failed = run(adoptctl(&bus).args(["is-failed", "nouser"]));
    assert_eq!((failed.code, failed.stdout.as_str()), (0, "failed\n"));
    let active = run(adoptctl(&bus).args(["is-active", "-q", "nouser"]));
    assert_eq!((active.code, active.stdout.as_str()), (3, ""));
    let reset = run(adoptctl(&bus).args(["reset-failed", "nouser"]));
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    watch.wait_state("nouser", State::Stopped);
    assert_eq!(run(adoptctl(&bus).args(["is-failed", "nouser"])).code, 1);
    assert_eq!(run(adoptctl(&bus).args(["is-active", "nope"])).code, 4);
}

#[test]
fn a_notify_service_that_never_gets_ready_hits_its_start_timeout() {
    let scratch = Scratch::new("admin-timeout");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    sleeper(
        &scratch,
        "slow",
        "expect = \"notify\"\nstart-timeout = \"1s\"\nautostart = false\nrestart = \"no\"\n",
    );
    let (_adoptd, _watch) = bus.adoptd(&scratch);
    let start = run(adoptctl(&bus).args(["start", "slow"]));
    assert_eq!(start.code, 1);
    assert!(
        start.stderr.contains("slow failed to start: timeout"),
        "{}",
        start.stderr
    );
    let result = run(adoptctl(&bus).args(["show", "-p", "Result", "--value", "slow"]));
    assert_eq!(result.stdout, "timeout\n");
}
