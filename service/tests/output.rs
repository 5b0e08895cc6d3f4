//! Services' output (`output = "log"`): both streams apart, kept for
//! `GetOutput`, copied to `FollowOutput`'s pipe, refused to the
//! unauthorized, and never in supervision's way, against a real adoptd on a
//! real dbus-daemon.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    sync::mpsc,
    time::{Duration, Instant},
};

use adoptd_dbus::{BUS_NAME, OutputLine, SERVICE_INTERFACE, ServiceProxy};
use adoptd_test_support::{
    bus::{TestBus, block_on},
    *,
};

/// A service running `script` under /bin/sh, never restarted.
fn shell_service(scratch: &Scratch, name: &str, script: &str) {
    scratch.service(
        name,
        &format!(
            "exec = [\"/bin/sh\", \"-c\", {script:?}]\nexpect = \"foreground\"\nrestart = \"no\"\n"
        ),
    );
}

/// adoptd on `bus`, once it owns its name.
fn adoptd_on(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    let mut adoptd = Adoptd::start(scratch, &["--address", &bus.address]);
    adoptd.wait_for("adoptd to own org.adoptd1", |l| {
        l.message.starts_with("published as org.adoptd1")
    });
    adoptd
}

/// Waits until adoptd has logged `text` as a line of `service`'s output:
/// by then the line is in the service's record too.
fn wait_output(adoptd: &mut Adoptd, service: &str, text: &str) -> LogLine {
    adoptd.wait_for(&format!("{service} to print {text:?}"), |l| {
        l.get("service") == Some(service) && l.get("stream").is_some() && l.message == text
    })
}

async fn proxy(bus: &TestBus, name: &str) -> ServiceProxy<'static> {
    let connection = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the test bus");
    ServiceProxy::new(&connection, adoptd_dbus::service_path(name))
        .await
        .expect("a service proxy")
}

fn get_output(bus: &TestBus, name: &str, lines: u32) -> Vec<OutputLine> {
    block_on(async {
        proxy(bus, name)
            .await
            .get_output(lines)
            .await
            .expect("GetOutput")
    })
}

fn texts(lines: &[OutputLine]) -> Vec<(&str, &str)> {
    lines
        .iter()
        .map(|(_, stream, line)| (stream.as_str(), line.as_str()))
        .collect()
}

#[test]
fn get_output_keeps_both_streams_apart_oldest_first() {
    let scratch = Scratch::new("output-streams");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    shell_service(
        &scratch,
        "talker",
        "echo one; echo two; echo oops >&2; echo three; exec sleep 1000",
    );
    shell_service(&scratch, "quiet", "exec sleep 1000");
    let mut adoptd = adoptd_on(&scratch, &bus);
    for text in ["one", "two", "three", "oops"] {
        wait_output(&mut adoptd, "talker", text);
    }
    let stderr = wait_output(&mut adoptd, "talker", "oops");
    assert_eq!(stderr.get("stream"), Some("stderr"));

    let lines = get_output(&bus, "talker", 10);
    let stdout: Vec<&str> = texts(&lines)
        .into_iter()
        .filter(|(stream, _)| *stream == "stdout")
        .map(|(_, line)| line)
        .collect();
    assert_eq!(stdout, ["one", "two", "three"], "{lines:?}");
    assert!(texts(&lines).contains(&("stderr", "oops")), "{lines:?}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "{lines:?}");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64;
    assert!(
        lines
            .iter()
            .all(|l| l.0 <= now_us && l.0 + 60_000_000 > now_us)
    );

    // At most the number asked, the newest ones.
    let last_two = get_output(&bus, "talker", 2);
    assert_eq!(last_two[..], lines[2..]);
    assert!(get_output(&bus, "talker", 0).is_empty());
    // A service that printed nothing has nothing (and no record).
    assert!(get_output(&bus, "quiet", 10).is_empty());
}

#[test]
fn services_printing_at_once_each_keep_their_own_lines_of_each_stream() {
    let scratch = Scratch::new("output-many");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    // Runs that end while others go on, and runs that go on printing.
    const SERVICES: usize = 12;
    const LINES: usize = 40;
    for index in 0..SERVICES {
        let name = format!("talker{index}");
        let script = format!(
            "i=0; while [ $i -lt {LINES} ]; do echo \"$i {name}\"; echo \"$i {name} err\" >&2; \
             i=$((i+1)); done; echo \"{name} done\"; {}",
            if index % 2 == 0 {
                "exit 0"
            } else {
                "exec sleep 1000"
            }
        );
        shell_service(&scratch, &name, &script);
    }
    let mut adoptd = adoptd_on(&scratch, &bus);
    for index in 0..SERVICES {
        let name = format!("talker{index}");
        wait_output(&mut adoptd, &name, &format!("{name} done"));
    }
    for index in 0..SERVICES {
        let name = format!("talker{index}");
        let lines = get_output(&bus, &name, 1000);
        let texts = texts(&lines);
        let expected_stdout: Vec<String> = (0..LINES)
            .map(|i| format!("{i} {name}"))
            .chain([format!("{name} done")])
            .collect();
        let expected_stderr: Vec<String> = (0..LINES).map(|i| format!("{i} {name} err")).collect();
        let of = |wanted: &str| -> Vec<&str> {
            texts
                .iter()
                .filter(|(stream, _)| *stream == wanted)
                .map(|&(_, line)| line)
                .collect()
        };
        assert_eq!(of("stdout"), expected_stdout, "{name}: {lines:?}");
        assert_eq!(of("stderr"), expected_stderr, "{name}: {lines:?}");
    }
}

#[test]
fn a_long_line_is_cut_and_marked_and_binary_is_escaped() {
    let scratch = Scratch::new("output-cut");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    shell_service(
        &scratch,
        "odd",
        "printf 'caf\\303\\251 \\377\\376 bytes\\n'; head -c 10000 /dev/zero | tr '\\000' x; echo; echo after; exec sleep 1000",
    );
    let mut adoptd = adoptd_on(&scratch, &bus);
    wait_output(&mut adoptd, "odd", "after");

    let lines = get_output(&bus, "odd", 10);
    let texts: Vec<&str> = lines.iter().map(|(_, _, line)| line.as_str()).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(texts[0], "café \\xff\\xfe bytes");
    assert_eq!(texts[1], format!("{} [cut]", "x".repeat(4096)));
    assert_eq!(texts[2], "after");
}

#[test]
fn follow_output_writes_each_new_line_as_json() {
    let scratch = Scratch::new("output-follow");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    shell_service(
        &scratch,
        "ticker",
        "i=0; while :; do i=$((i+1)); echo tick $i; echo \"tock $i\" >&2; sleep 0.05; done",
    );
    let mut adoptd = adoptd_on(&scratch, &bus);
    wait_output(&mut adoptd, "ticker", "tick 1");

    let fd = block_on(async {
        proxy(&bus, "ticker")
            .await
            .follow_output()
            .await
            .expect("FollowOutput")
    });
    let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !(seen
        .iter()
        .any(|l: &String| l.contains("\"stream\":\"stdout\""))
        && seen.iter().any(|l| l.contains("\"stream\":\"stderr\"")))
    {
        seen.push(
            received
                .recv_timeout(TIMEOUT)
                .expect("a followed line within the timeout"),
        );
    }
    for line in &seen {
        let rest = line
            .strip_prefix("{\"realtime\":")
            .expect("a JSON object with realtime first");
        let (realtime, rest) = rest.split_once(',').expect("more after realtime");
        assert!(realtime.parse::<u64>().is_ok(), "{line}");
        assert!(
            rest.starts_with("\"stream\":\"stdout\",\"line\":\"tick ")
                || rest.starts_with("\"stream\":\"stderr\",\"line\":\"tock "),
            "{line}"
        );
        assert!(rest.ends_with("\"}"), "{line}");
    }
    drop(received);
    adoptd.stop();
}

#[test]
fn nobody_may_not_read_output() {
    if !is_root() {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    let scratch = Scratch::new("output-nobody");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    shell_service(&scratch, "secret", "echo password=hunter2; exec sleep 1000");
    let mut adoptd = adoptd_on(&scratch, &bus);
    adoptd.wait_for("the secret to be printed", |l| {
        l.get("service") == Some("secret") && l.get("stream") == Some("stdout")
    });
    let path = adoptd_dbus::service_path("secret").to_string();
    for args in [
        &[
            "call",
            BUS_NAME,
            &path,
            SERVICE_INTERFACE,
            "GetOutput",
            "u",
            "10",
        ][..],
        &["call", BUS_NAME, &path, SERVICE_INTERFACE, "FollowOutput"],
    ] {
        let output = bus.busctl_output(args, Some("nobody"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was allowed");
        assert!(
            stderr.contains("Only root may read the output of adoptd's services"),
            "{args:?}: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&output.stdout).contains("hunter2"));
    }
    // Root may.
    let read = bus.busctl(&[
        "call",
        BUS_NAME,
        &path,
        SERVICE_INTERFACE,
        "GetOutput",
        "u",
        "10",
    ]);
    assert!(read.contains("hunter2"), "{read}");
}

#[test]
fn a_flood_of_output_does_not_delay_another_services_restart() {
    let scratch = Scratch::new("output-flood");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    scratch.service(
        "flood",
        "exec = [\"/usr/bin/yes\"]\nexpect = \"foreground\"\nrestart = \"no\"\n",
    );
    scratch.service(
        "victim",
        "exec = [\"/bin/sleep\", \"1000\"]\nexpect = \"foreground\"\nrestart = \"always\"\nrestart-delay = \"0\"\n",
    );
    let mut adoptd = adoptd_on(&scratch, &bus);
    let running = adoptd.wait_status("victim", "running", |l| l.get("state") == Some("running"));
    let first = running.pid("main_pid");
    // The flood is on: more than the rate limit came in one second.
    adoptd.wait_for("the flood to be rate-limited", |l| {
        l.get("service") == Some("flood") && l.message.starts_with("adoptd: suppressed")
    });

    let killed = Instant::now();
    signal(first, libc::SIGKILL);
    let restarted = adoptd.wait_next("victim to be started again", |l| {
        l.get("service") == Some("victim")
            && l.message.starts_with("started")
            && l.get("pid").is_some_and(|pid| pid != first.to_string())
    });
    let took = killed.elapsed();
    eprintln!("SIGKILL → restarted beside a flood: {took:?}");
    assert!(
        took < Duration::from_millis(500),
        "SIGKILL → restarted took {took:?} beside a flood: {}",
        restarted.text
    );

    // The buffer holds the flood's latest lines and the marks.
    let lines = get_output(&bus, "flood", 100_000);
    assert!(texts(&lines).contains(&("stdout", "y")));
    assert!(
        lines
            .iter()
            .any(|(_, _, line)| line.starts_with("adoptd: suppressed ")),
        "no suppression mark among {} lines",
        lines.len()
    );
    // Within its 64 KiB budget: about 2,000 one-letter lines, not more.
    assert!(lines.len() < 4000, "{} lines kept", lines.len());
}
