//! What the adoptctl tests add to the workspace's test support
//! (`adoptd-test-support`): running adoptctl on a test bus,
//! redacting volatile values, and comparing with snapshot files.

#![allow(dead_code, clippy::expect_used)]

use std::path::PathBuf;

use adoptd_test_support::{TIMEOUT, bus::TestBus};

/// adoptctl, talking to `bus` through `$ADOPTD_BUS_ADDRESS`, with a
/// timeout, without colour or the caller's bus variables.
pub fn adoptctl(bus: &TestBus) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_adoptctl"));
    command
        .env("ADOPTD_BUS_ADDRESS", &bus.address)
        .env_remove("NO_COLOR")
        .env("TZ", "UTC")
        .timeout(TIMEOUT);
    command
}

/// adoptctl without a bus (generate, --help).
pub fn adoptctl_alone() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_adoptctl"));
    command.env_remove("ADOPTD_BUS_ADDRESS").timeout(TIMEOUT);
    command
}

/// What a finished adoptctl printed, and its exit code.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(command: &mut assert_cmd::Command) -> Run {
    let output = command.output().expect("run adoptctl");
    Run {
        code: output.status.code().expect("adoptctl exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `text` with each whole-number occurrence of a value replaced by its
/// token, and every other replacement done as plain text.
pub fn redact(text: &str, numbers: &[(u32, &str)], words: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (word, token) in words {
        text = text.replace(word, token);
    }
    for (number, token) in numbers {
        text = replace_number(&text, &number.to_string(), token);
    }
    text
}

fn replace_number(text: &str, number: &str, token: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(number) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + number.len()..].chars().next();
        let whole = !before.is_some_and(|c| c.is_ascii_digit())
            && !after.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..at]);
        out.push_str(if whole { token } else { number });
        rest = &rest[at + number.len()..];
    }
    out.push_str(rest);
    out
}

/// Compares `actual` with `tests/snapshots/NAME.txt`; with
/// `ADOPTCTL_UPDATE_SNAPSHOTS=1`, writes it instead.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("ADOPTCTL_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("snapshot dir");
        std::fs::write(&path, actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; run with ADOPTCTL_UPDATE_SNAPSHOTS=1 to write it. Output:\n{actual}",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "output differs from {} (ADOPTCTL_UPDATE_SNAPSHOTS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn redaction_replaces_whole_numbers_only() {
    assert_eq!(
        redact("pid 123 1234 0123 x123", &[(123, "[PID]")], &[]),
        "pid [PID] 1234 0123 x[PID]"
    );
}
