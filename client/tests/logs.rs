//! `adoptctl logs` and the output tail of `adoptctl status`: the real
//! binary against a real adoptd on a real dbus-daemon.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

mod support;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    sync::mpsc,
};

use adoptd_test_support::{bus::TestBus, *};
use serde_json::Value as Json;
use support::{adoptctl, run};

/// adoptd on `bus`, once it owns its name.
fn adoptd_on(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    let mut adoptd = Adoptd::start(scratch, &["--address", &bus.address]);
    adoptd.wait_for("adoptd to own org.adoptd1", |l| {
        l.message.starts_with("published as org.adoptd1")
    });
    adoptd
}

/// A service running `script` under /bin/sh, never restarted.
fn shell_service(scratch: &Scratch, name: &str, script: &str) {
    scratch.service(
        name,
        &format!(
            "exec = {}\nexpect = \"foreground\"\nrestart = \"no\"\n",
            argv(&["/bin/sh", "-c", script])
        ),
    );
}

/// Prints "line 1" to "line 12" on stdout, then "oops" on stderr, then
/// "done", and waits; returns once adoptd has read "done". (Lines of the
/// two streams are in the order adoptd read them, which need not be the
/// order they were written in: they come through two pipes.)
fn talker(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    shell_service(
        scratch,
        "talker",
        "i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo line $i; done; echo oops >&2; echo done; exec sleep 1000",
    );
    let mut adoptd = adoptd_on(scratch, bus);
    for text in ["oops", "done"] {
        adoptd.wait_for(&format!("talker to print {text}"), |l| {
            l.get("service") == Some("talker") && l.message == text
        });
    }
    adoptd
}

/// The LINE part of `TIME STREAM LINE` lines: (stream, line).
fn streams_and_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            // "2026-05-01 12:00:03.250 stdout line 1"
            let mut parts = line.splitn(4, ' ');
            let (_date, _time) = (parts.next(), parts.next());
            let stream = parts.next().expect("a stream").to_owned();
            (stream, parts.next().unwrap_or_default().to_owned())
        })
        .collect()
}

fn last_stdout(lines: &[(String, String)]) -> Option<&str> {
    lines
        .iter()
        .rev()
        .find(|(stream, _)| stream == "stdout")
        .map(|(_, line)| line.as_str())
}

#[test]
fn logs_shows_the_latest_ten_lines_or_n_and_json() {
    let scratch = Scratch::new("ctl-logs");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let _adoptd = talker(&scratch, &bus);

    let ten = run(adoptctl(&bus).args(["logs", "talker"]));
    assert_eq!(ten.code, 0, "{}", ten.stderr);
    let ten = streams_and_lines(&ten.stdout);
    assert_eq!(ten.len(), 10, "{ten:?}");
    assert_eq!(last_stdout(&ten), Some("done"), "{ten:?}");
    assert!(
        ten.contains(&("stdout".to_owned(), "line 12".to_owned())),
        "{ten:?}"
    );

    let all = run(adoptctl(&bus).args(["logs", "-n", "100", "talker"]));
    let all = streams_and_lines(&all.stdout);
    assert_eq!(all.len(), 14, "{all:?}");
    let stdout: Vec<&str> = all
        .iter()
        .filter(|(stream, _)| stream == "stdout")
        .map(|(_, line)| line.as_str())
        .collect();
    let written: Vec<String> = (1..=12).map(|i| format!("line {i}")).collect();
    assert_eq!(stdout[..12], written[..], "{all:?}");
    assert!(
        all.contains(&("stderr".to_owned(), "oops".to_owned())),
        "{all:?}"
    );

    let json = run(adoptctl(&bus).args(["--json", "logs", "-n", "2", "talker"]));
    assert_eq!(json.code, 0, "{}", json.stderr);
    let objects: Vec<Json> = json
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    assert_eq!(objects.len(), 2, "{}", json.stdout);
    let done = objects
        .iter()
        .find(|o| o["line"] == "done")
        .expect("done among the last two");
    assert_eq!(done["stream"], "stdout");
    assert!(done["realtime"].as_u64().is_some_and(|us| us > 0), "{done}");
}

#[test]
fn logs_of_a_missing_service_exits_4() {
    let scratch = Scratch::new("ctl-logs-missing");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let _adoptd = adoptd_on(&scratch, &bus);
    let missing = run(adoptctl(&bus).args(["logs", "nope"]));
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    assert_eq!(missing.stderr, "adoptctl: no service is named \"nope\"\n");
}

#[test]
fn status_ends_with_the_last_ten_lines_of_output() {
    let scratch = Scratch::new("ctl-status-tail");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let _adoptd = talker(&scratch, &bus);
    let status = run(adoptctl(&bus).args(["status", "talker"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    let (block, tail) = status
        .stdout
        .split_once("\n\n")
        .expect("a blank line before the output");
    assert!(block.contains("State: running"), "{block}");
    let tail = streams_and_lines(tail);
    assert_eq!(tail.len(), 10, "{tail:?}");
    assert_eq!(last_stdout(&tail), Some("done"), "{tail:?}");
}

#[test]
fn nobody_is_refused_the_output_and_status_says_it_is_hidden() {
    if !is_root() {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    let scratch = Scratch::new("ctl-logs-nobody");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let _adoptd = talker(&scratch, &bus);
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_adoptctl"))
            .args(args)
            .env("ADOPTD_BUS_ADDRESS", &bus.address)
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        let output = assert_cmd::Command::from_std(command)
            .timeout(TIMEOUT)
            .output()
            .expect("setpriv adoptctl");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    for args in [&["logs", "talker"][..], &["logs", "-f", "talker"]] {
        let (code, stdout, stderr) = as_nobody(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(
            stderr,
            "adoptctl: talker: permission denied: a service's output may hold secrets; run adoptctl as root (or allow org.adoptd1.read-output in polkit)\n",
            "{args:?}"
        );
    }

    let (code, stdout, stderr) = as_nobody(&["status", "talker"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(!stdout.contains("line 12"), "{stdout}");
    assert!(
        stdout.ends_with(
            "       Output: hidden; root, or polkit's org.adoptd1.read-output, may read it\n"
        ),
        "{stdout}"
    );
}

#[test]
fn logs_follow_prints_each_new_line_until_interrupted() {
    let scratch = Scratch::new("ctl-logs-follow");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    shell_service(
        &scratch,
        "ticker",
        "i=0; while :; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.05; done",
    );
    let mut adoptd = adoptd_on(&scratch, &bus);
    adoptd.wait_for("the first tick", |l| {
        l.get("service") == Some("ticker") && l.message == "tick 1"
    });

    let mut command = Command::new(env!("CARGO_BIN_EXE_adoptctl"));
    command
        .args(["--json", "logs", "-f", "-n", "1", "ticker"])
        .env("ADOPTD_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // As a terminal's foreground job: SIGINT has its default action even
    // when the tests run where it is ignored (a shell's background job),
    // since an ignored signal stays ignored across exec.
    // SAFETY: signal() is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut follower = KillOnDrop(command.spawn().expect("start adoptctl logs -f"));
    let stdout = follower.0.stdout.take().expect("its stdout");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<Json> = Vec::new();
    while seen.len() < 5 {
        let line = lines
            .recv_timeout(TIMEOUT)
            .expect("a line from adoptctl logs -f within the timeout");
        seen.push(serde_json::from_str(&line).expect("a JSON object per line"));
    }
    let realtimes: Vec<u64> = seen
        .iter()
        .map(|o| o["realtime"].as_u64().expect("realtime"))
        .collect();
    assert!(realtimes.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    // Printed once each, though the first came from GetOutput and may be
    // in the stream too.
    let texts: Vec<&str> = seen
        .iter()
        .map(|o| o["line"].as_str().expect("line"))
        .collect();
    for (index, text) in texts.iter().enumerate() {
        assert!(!texts[..index].contains(text), "{text} twice in {texts:?}");
    }
    assert!(
        seen.iter().any(|o| o["stream"] == "stderr")
            && seen.iter().any(|o| o["stream"] == "stdout"),
        "{seen:?}"
    );
    // Still following: interrupt it as a person would.
    assert!(follower.0.try_wait().expect("its status").is_none());
    let pidfd = Pidfd::open(follower.0.id()).expect("a pidfd of adoptctl");
    signal(follower.0.id(), libc::SIGINT);
    assert!(pidfd.wait_exit(TIMEOUT), "adoptctl logs -f ignored SIGINT");
    let status = follower.0.wait().expect("adoptctl ends on SIGINT");
    assert!(!status.success());
}

/// A child that a failing test does not leave behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
}
