//! adoptctl as admins and scripts run it: the real binary against a real
//! adoptd on a real dbus-daemon (set up as Debian's system bus with
//! adoptd's policy), with real daemonizing processes.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

mod support;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use adoptd_test_support::{
    bus::{Monitor, TestBus},
    *,
};
use serde_json::Value as Json;
use support::{adoptctl, adoptctl_alone, assert_snapshot, redact, run};

/// A service that daemonizes with two hops, as daemon(3) users do.
fn dancer(scratch: &Scratch, reports: &Reports, name: &str) {
    scratch.service(
        name,
        &format!(
            "exec = {}\nrestart = \"no\"\ndescription = \"dancer {name}\"\n",
            dance_exec(reports, name, &["fork", "setsid", "fork", "serve"])
        ),
    );
}

/// A service that is loaded but not started.
fn idle(scratch: &Scratch, name: &str) {
    scratch.service(
        name,
        &format!(
            "exec = {}\nautostart = false\ndescription = \"idle {name}\"\n",
            argv(&["/bin/sleep", "1000"])
        ),
    );
}

fn json_lines(text: &str) -> Vec<Json> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect()
}

#[test]
fn status_of_a_daemon_reads_like_its_snapshot() {
    let scratch = Scratch::new("ctl-status");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "dancer");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let settled = reports.next();
    watch.wait_main_pid("dancer", settled.pid);

    let human = run(adoptctl(&bus).args(["status", "dancer"]));
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stderr.is_empty(), "{}", human.stderr);
    let numbers = [(settled.pid, "[MAIN]"), (settled.last_parent, "[PREVIOUS]")];
    let dance = dance();
    let text = redact(
        &since_redacted(&human.stdout),
        &numbers,
        &[
            (dance.to_str().expect("utf-8"), "[DANCE]"),
            (reports.path.to_str().expect("utf-8"), "[REPORTS]"),
            (scratch.services().to_str().expect("utf-8"), "[SERVICES]"),
        ],
    );
    assert_snapshot("status_dancer", &text);
}

/// "since 2026-…; 3s ago" → "since [TIME]; [AGO] ago".
fn since_redacted(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(" since ") {
            Some((head, _)) if head.trim_start().starts_with("State:") => {
                format!("{head} since [TIME]; [AGO] ago\n")
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

#[test]
fn status_json_keys_are_the_dbus_property_names() {
    let scratch = Scratch::new("ctl-json");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "dancer");
    idle(&scratch, "idle");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let settled = reports.next();
    watch.wait_main_pid("dancer", settled.pid);

    let output = run(adoptctl(&bus).args(["--json", "status", "dancer", "idle"]));
    assert_eq!(output.code, 3, "idle is not running: {}", output.stderr);
    let objects = json_lines(&output.stdout);
    assert_eq!(objects.len(), 2);
    let dancer = &objects[0];
    assert_eq!(dancer["Name"], "dancer");
    assert_eq!(dancer["Description"], "dancer dancer");
    assert_eq!(dancer["State"], "running");
    assert_eq!(dancer["MainPID"], settled.pid);
    assert_eq!(dancer["PreviousPID"], settled.last_parent);
    assert_eq!(dancer["MainPIDSource"], "adoption");
    assert_eq!(dancer["Handoffs"], 2);
    assert_eq!(dancer["ExitCode"], -1);
    assert_eq!(dancer["Result"], "success");
    assert_eq!(dancer["Expect"], "auto");
    assert_eq!(dancer["Restart"], "no");
    assert!(dancer["StateChangeTimestamp"].as_u64().expect("a number") > 0);
    assert_eq!(objects[1]["Name"], "idle");
    assert_eq!(objects[1]["State"], "stopped");
    assert_eq!(objects[1]["MainPID"], 0);
    // The same as busctl reads.
    let busctl = bus.busctl(&[
        "get-property",
        "org.adoptd1",
        "/org/adoptd1/service/dancer",
        "org.adoptd1.Service",
        "MainPID",
    ]);
    assert_eq!(busctl.trim(), format!("u {}", dancer["MainPID"]));
}

#[test]
fn list_is_one_aligned_table_sorted_by_name_and_json_for_jq() {
    let scratch = Scratch::new("ctl-list");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "web");
    idle(&scratch, "a-long-service-name");
    idle(&scratch, "zz");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let settled = reports.next();
    watch.wait_main_pid("web", settled.pid);

    let table = run(adoptctl(&bus).arg("list"));
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    let state_column = lines[0].find("STATE").expect("a header");
    for line in &lines[1..] {
        let state = line[state_column..].split(' ').next().unwrap_or_default();
        assert!(["running", "stopped"].contains(&state), "{line}");
    }
    let cells: String = lines
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            // The age of the state changes from run to run.
            let cells: Vec<&str> = cells
                .iter()
                .map(|cell| {
                    if cell.ends_with(" ago") {
                        "[AGO] ago"
                    } else {
                        cell
                    }
                })
                .collect();
            format!("{}\n", cells.join(" | "))
        })
        .collect();
    let cells = redact(
        &cells,
        &[(settled.pid, "[MAIN]"), (settled.last_parent, "[PREVIOUS]")],
        &[],
    );
    assert_snapshot("list", &cells);

    let json = run(adoptctl(&bus).args(["--json", "list"]));
    assert_eq!(json.code, 0, "{}", json.stderr);
    let rows: Json = serde_json::from_str(&json.stdout).expect("one JSON array");
    let names: Vec<&str> = rows
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| row["Name"].as_str().expect("Name"))
        .collect();
    assert_eq!(names, ["a-long-service-name", "web", "zz"]);
    assert_eq!(rows[1]["MainPID"], settled.pid);
    assert_eq!(rows[1]["PreviousPID"], settled.last_parent);
    assert_eq!(rows[1]["State"], "running");

    // What a script does with it.
    if installed("jq").is_some() {
        let script = format!(
            "{} --json list | jq -r '.[] | select(.State == \"running\") | .Name'",
            env!("CARGO_BIN_EXE_adoptctl")
        );
        let piped = Command::new("sh")
            .args(["-c", &script])
            .env("ADOPTD_BUS_ADDRESS", &bus.address)
            .output()
            .expect("sh");
        assert!(piped.status.success(), "{piped:?}");
        assert_eq!(String::from_utf8_lossy(&piped.stdout), "web\n");
    } else {
        eprintln!("jq is not installed: the pipe into jq is not tried");
    }
}

#[test]
fn exit_codes_say_running_failed_usage_not_running_and_missing() {
    let scratch = Scratch::new("ctl-exit");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "web");
    idle(&scratch, "idle");
    scratch.service(
        "broken",
        &format!(
            "exec = {}\nautostart = false\nrestart = \"no\"\nexpect = \"fork\"\n",
            argv(&["/bin/sh", "-c", "exit 7"])
        ),
    );
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let settled = reports.next();
    watch.wait_main_pid("web", settled.pid);

    // 0: every named service runs.
    assert_eq!(run(adoptctl(&bus).args(["status", "web"])).code, 0);
    assert_eq!(run(adoptctl(&bus).args(["status", "w*"])).code, 0);

    // 3: one is not running, whether it is asked for by name or glob.
    let stopped = run(adoptctl(&bus).args(["status", "web", "idle"]));
    assert_eq!(stopped.code, 3);
    assert!(
        stopped.stdout.contains("○ idle - idle idle"),
        "{}",
        stopped.stdout
    );
    let killed = run(adoptctl(&bus).args(["kill", "--signal", "HUP", "idle"]));
    assert_eq!(killed.code, 3);
    assert_eq!(
        killed.stderr,
        "adoptctl: idle: the service is not running\n"
    );

    // 4: no such service, even beside others; a glob matching nothing.
    let missing = run(adoptctl(&bus).args(["status", "web", "nope"]));
    assert_eq!(missing.code, 4);
    assert_eq!(missing.stderr, "adoptctl: no service is named \"nope\"\n");
    assert!(missing.stdout.contains("web"), "the others are still shown");
    assert_eq!(run(adoptctl(&bus).args(["status", "nope@*"])).code, 4);
    assert_eq!(run(adoptctl(&bus).args(["restart", "nope"])).code, 4);

    // 2: usage, by clap and by adoptctl.
    let usage = run(adoptctl(&bus).args(["status", "--frobnicate"]));
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("Usage"), "{}", usage.stderr);
    assert_eq!(run(adoptctl(&bus).arg("start")).code, 2);
    let signal = run(adoptctl(&bus).args(["kill", "--signal", "NOPE", "web"]));
    assert_eq!(signal.code, 2, "{}", signal.stderr);

    // 1: a start that fails, with the reason adoptd gave.
    let failed = run(adoptctl(&bus).args(["start", "broken"]));
    assert_eq!(failed.code, 1);
    assert_eq!(
        failed.stderr,
        "adoptctl: broken failed to start: exit-code (code 7); see adoptctl status broken\n"
    );
    // 1: adoptd is not on the bus asked for.
    let other = Scratch::new("ctl-exit-empty");
    let empty = TestBus::start(&other);
    let absent = run(adoptctl(&bus).args(["--address", &empty.address, "list"]));
    assert_eq!(absent.code, 1);
    assert_eq!(
        absent.stderr,
        format!(
            "adoptctl: adoptd is not running on the bus at {}\n",
            empty.address
        )
    );
    // The service never noticed any of it.
    assert!(is_alive(settled.pid));
}

#[test]
fn control_commands_return_once_the_service_got_there() {
    let scratch = Scratch::new("ctl-control");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "web");
    scratch.service(
        "echo@",
        &format!("exec = {}\n", argv(&["/bin/sleep", "1000"])),
    );
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let first = reports.next();
    watch.wait_main_pid("web", first.pid);
    let state = |name: &str| {
        let output = run(adoptctl(&bus).args(["--json", "status", name]));
        json_lines(&output.stdout)[0].clone()
    };

    let stop = run(adoptctl(&bus).args(["stop", "web"]));
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    assert_eq!(state("web")["State"], "stopped");
    assert_ends(first.pid, "the stopped main process");
    // Stopping what is stopped is no error.
    assert_eq!(run(adoptctl(&bus).args(["stop", "web"])).code, 0);

    let start = run(adoptctl(&bus).args(["start", "web"]));
    assert_eq!(start.code, 0, "{}", start.stderr);
    let second = reports.next();
    assert_eq!(state("web")["State"], "running");
    // Starting what runs is no error either.
    assert_eq!(run(adoptctl(&bus).args(["start", "web"])).code, 0);

    let restart = run(adoptctl(&bus).args(["restart", "web"]));
    assert_eq!(restart.code, 0, "{}", restart.stderr);
    let after = state("web");
    assert_eq!(after["State"], "running");
    let third = reports.next();
    assert_ne!(third.pid, second.pid);

    // A template instance is made on demand, several names at once.
    let instances = run(adoptctl(&bus).args(["start", "echo@a", "echo@b"]));
    assert_eq!(instances.code, 0, "{}", instances.stderr);
    assert_eq!(state("echo@a")["State"], "running");
    assert_eq!(state("echo@b")["State"], "running");
    assert_eq!(run(adoptctl(&bus).args(["status", "echo@*"])).code, 0);

    let no_block = run(adoptctl(&bus).args(["stop", "--no-block", "echo@a", "echo@b"]));
    assert_eq!(no_block.code, 0, "{}", no_block.stderr);
    watch.wait_ended("echo@a", adoptd_dbus::State::Stopped);

    let reload = run(adoptctl(&bus).args(["reload", "web"]));
    assert_eq!(reload.code, 0, "{}", reload.stderr);
    let kill = run(adoptctl(&bus).args(["kill", "-s", "TERM", "web"]));
    assert_eq!(kill.code, 0, "{}", kill.stderr);
    assert_ends(third.pid, "the main process after kill -s TERM");
}

#[test]
fn a_shell_script_restarts_what_is_not_running() {
    let scratch = Scratch::new("ctl-script");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "web");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let first = reports.next();
    watch.wait_main_pid("web", first.pid);
    assert_eq!(run(adoptctl(&bus).args(["stop", "web"])).code, 0);

    let adoptctl_path = env!("CARGO_BIN_EXE_adoptctl");
    let script = format!(
        "{adoptctl_path} status web >/dev/null || {adoptctl_path} restart web; {adoptctl_path} status web >/dev/null"
    );
    let output = Command::new("sh")
        .args(["-c", &script])
        .env("ADOPTD_BUS_ADDRESS", &bus.address)
        .output()
        .expect("sh");
    assert!(output.status.success(), "{output:?}");
    let second = reports.next();
    assert_ne!(second.pid, first.pid);
}

#[test]
fn nobody_is_told_to_run_as_root() {
    if !is_root() {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    let scratch = Scratch::new("ctl-nobody");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "web");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let settled = reports.next();
    watch.wait_main_pid("web", settled.pid);
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_adoptctl"))
            .args(args)
            .env("ADOPTD_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null());
        let output = assert_cmd::Command::from_std(command)
            .timeout(TIMEOUT)
            .output()
            .expect("setpriv adoptctl");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, stderr) = as_nobody(&["status", "web"]);
    assert_eq!(code, Some(0), "nobody may read: {stderr}");
    for args in [&["stop", "web"][..], &["kill", "web"], &["restart", "web"]] {
        let (code, stderr) = as_nobody(args);
        assert_eq!(code, Some(1), "{args:?}");
        assert_eq!(
            stderr,
            "adoptctl: web: permission denied; run adoptctl as root (or allow org.adoptd1.manage in polkit)\n",
            "{args:?}"
        );
    }
    assert!(is_alive(settled.pid));
}

#[test]
fn monitor_sees_a_handoff_as_it_happens() {
    let scratch = Scratch::new("ctl-monitor");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "web");
    idle(&scratch, "other");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let first = reports.next();
    watch.wait_main_pid("web", first.pid);
    let text = monitor(&bus, &["monitor", "web"]);
    let json = monitor(&bus, &["--json", "monitor", "w*"]);

    // Another service's events are not shown.
    assert_eq!(run(adoptctl(&bus).args(["start", "other"])).code, 0);
    assert_eq!(
        run(adoptctl(&bus).args(["restart", "--no-block", "web"])).code,
        0
    );
    let second = reports.next();

    let adopted = format!("web: Adopted {} <- {}", second.pid, second.last_parent);
    let seen = text.wait_for(&adopted, |line| line.ends_with(&adopted));
    assert!(seen.iter().all(|line| !line.contains("other")), "{seen:?}");
    assert!(
        seen.iter()
            .any(|line| line.ends_with("web: State running -> stopping")),
        "{seen:?}"
    );
    // Each line starts with the time of day.
    let time = seen[0].split(' ').next().unwrap_or_default();
    assert_eq!(time.len(), "12:00:03.123".len(), "{seen:?}");

    let main_pid = format!("\"MainPID\":{}", second.pid);
    let seen = json.wait_for("Adopted in JSON", |line| {
        line.contains("\"Adopted\"") && line.contains(&main_pid)
    });
    let adopted: Json = serde_json::from_str(seen.last().expect("a line")).expect("JSON");
    assert_eq!(adopted["Event"], "Adopted");
    assert_eq!(adopted["Service"], "web");
    assert_eq!(adopted["MainPID"], second.pid);
    assert_eq!(adopted["PreviousPID"], second.last_parent);
    for line in &seen {
        let object: Json = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(object["Service"], "web", "{line}");
    }
}

/// Starts `adoptctl ARGS…` (a monitor) on the bus, once it says it is
/// subscribed.
fn monitor(bus: &TestBus, args: &[&str]) -> Monitor {
    let mut command = Command::new(env!("CARGO_BIN_EXE_adoptctl"));
    command.args(args).env("ADOPTD_BUS_ADDRESS", &bus.address);
    Monitor::start(command, |line| {
        line.starts_with("Monitoring adoptd on the bus at")
    })
}

#[test]
fn every_subcommand_has_help() {
    for subcommand in [
        "status", "list", "start", "stop", "restart", "reload", "kill", "monitor",
    ] {
        let output = run(adoptctl_alone().args([subcommand, "--help"]));
        assert_eq!(output.code, 0, "{subcommand}");
        assert!(
            output.stdout.contains("Usage: adoptctl"),
            "{subcommand}: {}",
            output.stdout
        );
    }
    let help = run(adoptctl_alone().arg("--help"));
    assert!(help.stdout.contains("Exit status"), "{}", help.stdout);
}

#[test]
fn the_man_page_and_completions_come_from_the_command_line() {
    let man = run(adoptctl_alone().args(["generate", "man"]));
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &man.stdout[..80.min(man.stdout.len())]
    );
    assert!(man.stdout.contains(".TH adoptctl 1"), "{}", man.stdout);
    assert!(man.stdout.contains("monitor"), "{}", man.stdout);
    for (shell, marker) in [
        ("bash", "_adoptctl()"),
        ("zsh", "#compdef adoptctl"),
        ("fish", "complete -c adoptctl"),
    ] {
        let completions = run(adoptctl_alone().args(["generate", "completions", shell]));
        assert_eq!(completions.code, 0, "{shell}: {}", completions.stderr);
        assert!(completions.stdout.contains(marker), "{shell}");
        assert!(completions.stdout.contains("restart"), "{shell}");
    }
}

#[test]
fn generate_into_a_closed_pipe_does_not_panic() {
    // A pipe whose reader is gone before adoptctl writes: every write
    // fails with EPIPE, as under `| head` when head has had its line.
    for what in [
        &["generate", "man"][..],
        &["generate", "completions", "bash"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_adoptctl"))
            .args(what)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start adoptctl");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("adoptctl ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(101), "{what:?}: {stderr}");
        assert!(
            output.status.success(),
            "{what:?}: {:?} {stderr}",
            output.status
        );
        assert!(!stderr.contains("panicked"), "{what:?}: {stderr}");
    }
    // And through a shell, as people type it.
    if installed("bash").is_some() {
        for _ in 0..20 {
            let piped = Command::new("bash")
                .args([
                    "-c",
                    &format!(
                        "{} generate completions bash | head -n 1 >/dev/null; echo ${{PIPESTATUS[0]}}",
                        env!("CARGO_BIN_EXE_adoptctl")
                    ),
                ])
                .output()
                .expect("bash");
            assert_eq!(
                String::from_utf8_lossy(&piped.stdout).trim(),
                "0",
                "{piped:?}"
            );
        }
    }
}

#[test]
fn generate_is_listed_in_help() {
    let help = run(adoptctl_alone().arg("--help"));
    assert!(
        help.stdout
            .lines()
            .any(|line| line.trim_start().starts_with("generate ")),
        "{}",
        help.stdout
    );
}

/// What bash completes for `line` (the cursor at its end), from the
/// generated script, with `adoptctl` on `$PATH` talking to `bus`.
fn bash_completes(script: &Path, bus: &TestBus, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (cword, cur) = if line.ends_with(' ') {
        (words.len(), "")
    } else {
        (words.len() - 1, words[words.len() - 1])
    };
    let prev = words[cword - 1];
    let shell = format!(
        "source {script}\n\
         COMP_LINE={line}; COMP_POINT=${{#COMP_LINE}}\n\
         COMP_WORDS=({words} {cur}); COMP_CWORD={cword}\n\
         _adoptctl_services adoptctl {cur} {prev}\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = shell_quote(&script.display().to_string()),
        line = shell_quote(line),
        words = words[..cword]
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
        cur = shell_quote(cur),
        prev = shell_quote(prev),
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &shell])
        .env("PATH", path_with_adoptctl())
        .env("ADOPTD_BUS_ADDRESS", &bus.address)
        .output()
        .expect("bash");
    assert!(output.status.success(), "{output:?}");
    let mut replies: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    replies.sort();
    replies
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `$PATH` with the directory of the adoptctl under test first.
fn path_with_adoptctl() -> std::ffi::OsString {
    let dir = Path::new(env!("CARGO_BIN_EXE_adoptctl"))
        .parent()
        .expect("a directory")
        .to_owned();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("a PATH")
}

#[test]
fn completions_complete_verbs_options_and_live_service_names() {
    let scratch = Scratch::new("ctl-complete");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    idle(&scratch, "web");
    idle(&scratch, "webcache");
    idle(&scratch, "mail");
    scratch.service(
        "echo@",
        &format!(
            "exec = {}\ninstances = [\"one\", \"two\"]\n",
            argv(&["/bin/sleep", "1000"])
        ),
    );
    let _adoptd = bus.adoptd(&scratch);
    let names = run(adoptctl(&bus).args(["list", "--names"]));
    assert_eq!(names.code, 0, "{}", names.stderr);
    assert_eq!(names.stdout, "echo@one\necho@two\nmail\nweb\nwebcache\n");

    let Some(_) = installed("bash") else {
        eprintln!("bash is not installed: its completion is not tried");
        return;
    };
    let script = scratch.file("adoptctl.bash");
    let generated = run(adoptctl_alone().args(["generate", "completions", "bash"]));
    std::fs::write(&script, &generated.stdout).expect("write the script");

    assert_eq!(
        bash_completes(&script, &bus, "adoptctl st"),
        ["start", "status", "stop"]
    );
    assert_eq!(
        bash_completes(&script, &bus, "adoptctl status --j"),
        ["--json"]
    );
    assert_eq!(
        bash_completes(&script, &bus, "adoptctl restart --no"),
        ["--no-block"]
    );
    assert_eq!(
        bash_completes(&script, &bus, "adoptctl status we"),
        ["web", "webcache"]
    );
    assert_eq!(
        bash_completes(&script, &bus, "adoptctl stop mail "),
        ["echo@one", "echo@two", "mail", "web", "webcache"]
    );
    // bash breaks words at `@`: what it replaces is the part after it.
    assert_eq!(
        bash_completes(&script, &bus, "adoptctl start echo@"),
        ["one", "two"]
    );
    assert_eq!(
        bash_completes(&script, &bus, "adoptctl --json kill --signal HUP m"),
        ["mail"]
    );

    if let Some(fish) = installed("fish") {
        let script = scratch.file("adoptctl.fish");
        let generated = run(adoptctl_alone().args(["generate", "completions", "fish"]));
        std::fs::write(&script, &generated.stdout).expect("write the script");
        let complete = |line: &str| -> Vec<String> {
            let output = Command::new(&fish)
                .args(["--no-config", "-c"])
                .arg(format!(
                    "source {}; complete -C {}",
                    shell_quote(&script.display().to_string()),
                    shell_quote(line)
                ))
                .env("PATH", path_with_adoptctl())
                .env("ADOPTD_BUS_ADDRESS", &bus.address)
                .output()
                .expect("fish");
            assert!(output.status.success(), "{output:?}");
            let mut words: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
                .collect();
            words.sort();
            words
        };
        assert_eq!(complete("adoptctl status we"), ["web", "webcache"]);
        assert_eq!(complete("adoptctl start echo@"), ["echo@one", "echo@two"]);
        assert!(complete("adoptctl mon").contains(&"monitor".to_owned()));
    } else {
        eprintln!("fish is not installed: its completion is not tried");
    }
    if let Some(zsh) = installed("zsh") {
        let script = scratch.file("_adoptctl");
        let generated = run(adoptctl_alone().args(["generate", "completions", "zsh"]));
        std::fs::write(&script, &generated.stdout).expect("write the script");
        let parsed = Command::new(zsh)
            .arg("-n")
            .arg(&script)
            .output()
            .expect("zsh");
        assert!(parsed.status.success(), "{parsed:?}");
    } else {
        eprintln!("zsh is not installed: its script is not parsed");
    }
}

#[test]
fn daemon_reexec_returns_once_adoptd_is_back_with_its_services() {
    let scratch = Scratch::new("ctl-reexec");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dancer(&scratch, &reports, "dancer");
    let (mut adoptd, mut watch) = bus.adoptd(&scratch);
    let settled = reports.next();
    let before = watch.wait_main_pid("dancer", settled.pid);
    let pid = adoptd.pid();

    let reexec = run(adoptctl(&bus).arg("daemon-reexec"));
    assert_eq!(reexec.code, 0, "{}", reexec.stderr);
    adoptd.wait_for("the new image", |l| {
        l.message == "restored the state of the previous image"
    });
    // Back on the bus when adoptctl returns: it answers at once.
    let status = run(adoptctl(&bus).args(["--json", "status", "dancer"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    let json = &json_lines(&status.stdout)[0];
    assert_eq!(json["MainPID"], before.main_pid, "{json}");
    assert_eq!(json["PreviousPID"], before.previous_pid, "{json}");
    assert_eq!(adoptd.pid(), pid);
    assert!(is_alive(settled.pid));
}
