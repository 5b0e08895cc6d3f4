//! Everything that exists is documented: each key of a service file (as
//! adoptd's parser knows them), each option of adoptd and adoptctl (as
//! their --help prints them) and each D-Bus member of the contract
//! (dbus/org.adoptd1.xml) has its place in the man pages or in
//! docs/dbus-api.md. Adding one without documenting it fails here.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repository().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn adoptd() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_adoptctl")).with_file_name("adoptd");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p adoptd`)",
        path.display()
    );
    path
}

fn stdout_of(command: &mut Command) -> String {
    let output = command.output().expect("run the command");
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn adoptctl_man_page() -> String {
    stdout_of(Command::new(env!("CARGO_BIN_EXE_adoptctl")).args(["generate", "man"]))
}

/// The text of the file under service/src that defines `const NAME`,
/// wherever the parser's modules put it.
fn source_defining(name: &str) -> String {
    let needle = format!("const {name}: &[&str] = &[");
    let mut directories = vec![repository().join("service/src")];
    while let Some(directory) = directories.pop() {
        let entries = std::fs::read_dir(&directory).expect("read service/src");
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                directories.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read a source file");
                if text.contains(&needle) {
                    return text;
                }
            }
        }
    }
    panic!("no file under service/src defines {name} any more: update this test")
}

/// The strings of a `const NAME: &[&str] = &[…];` in Rust source.
fn string_array(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("const {name}: &[&str] = &["))
        .unwrap_or_else(|| panic!("{name} is not in the source any more: update this test"));
    let rest = &source[start..];
    let body = &rest[rest.find("= &[").expect("an array") + 4..rest.find("];").expect("its end")];
    body.split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// `--long` and `-s` options in a --help text (lines that start with a
/// dash once indented).
fn options_in_help(help: &str) -> BTreeSet<String> {
    let mut options = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split([' ', ',']) {
            let option = word.split(['<', '=']).next().unwrap_or_default();
            if option.starts_with('-') && option.len() > 1 {
                options.insert(option.to_owned());
            }
        }
    }
    options
}

/// The commands listed under "Commands:" in a --help text.
fn commands_in_help(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|command| *command != "help")
        .map(str::to_owned)
        .collect()
}

/// `-` as roff writes it in the pages.
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

#[test]
fn every_service_file_key_is_in_adoptd_service_5() {
    let config = source_defining("TOP_LEVEL_KEYS");
    let page = read("man/adoptd-service.5");
    let keys = string_array(&config, "TOP_LEVEL_KEYS");
    assert!(keys.len() >= 18, "{keys:?}");
    for key in &keys {
        assert!(
            page.contains(&format!(".TP\n.B {}\n", roff(key))),
            "service-file key {key} has no entry under KEYS in man/adoptd-service.5"
        );
    }
    for key in string_array(&config, "START_LIMIT_KEYS") {
        assert!(
            page.contains(&roff(&format!("start-limit.{key}"))),
            "service-file key start-limit.{key} is not in man/adoptd-service.5"
        );
    }
    // Each entry gives a default (or says the key is required) and the
    // systemd setting it corresponds to.
    let keys_section = &page
        [page.find(".SH KEYS").expect("KEYS")..page.find(".SH SPECIFIERS").expect("SPECIFIERS")];
    for entry in keys_section.split(".TP\n").skip(1) {
        let key = entry.lines().next().unwrap_or_default();
        assert!(
            entry.contains("Default") || entry.contains("Required."),
            "{key}: no default"
        );
        assert!(entry.contains("systemd"), "{key}: no systemd equivalent");
    }
}

#[test]
fn every_adoptd_option_is_in_adoptd_8() {
    let help = stdout_of(Command::new(adoptd()).arg("--help"));
    let page = read("man/adoptd.8");
    let options = options_in_help(&help);
    assert!(options.contains("--private-bus"), "{options:?}");
    let section = section(&page, ".SH OPTIONS\n", "\n.SH ");
    let entries: BTreeSet<&str> = section
        .split(".TP\n")
        .skip(1)
        .filter_map(|entry| entry.lines().next())
        .flat_map(|line| line.split([' ', '"', ',']))
        .collect();
    for option in options {
        assert!(
            entries.contains(roff(&option).as_str()),
            "adoptd {option} has no entry under OPTIONS in man/adoptd.8"
        );
    }
}

#[test]
fn every_adoptctl_command_and_option_is_in_adoptctl_1() {
    let adoptctl = env!("CARGO_BIN_EXE_adoptctl");
    let help = stdout_of(Command::new(adoptctl).arg("--help"));
    let page = adoptctl_man_page();
    let commands = commands_in_help(&help);
    assert!(commands.contains(&"generate".to_owned()), "{commands:?}");
    for option in options_in_help(&help) {
        assert!(page.contains(&roff(&option)), "adoptctl {option}");
    }
    for command in commands {
        assert!(
            page.contains(&format!("\\fBadoptctl {}\\fR", roff(&command))),
            "adoptctl {command} has no entry under COMMANDS"
        );
        let help = stdout_of(Command::new(adoptctl).args([&command, "--help"]));
        for option in options_in_help(&help) {
            assert!(
                page.contains(&roff(&option)),
                "adoptctl {command} {option} is not in adoptctl(1)"
            );
        }
    }
    for code in ["0", "1", "2", "3", "4"] {
        assert!(
            page.contains(&format!(".TP\n.B {code}\n")),
            "exit status {code} is not in adoptctl(1)"
        );
    }
}

#[test]
fn every_dbus_member_is_in_the_api_reference() {
    let members = adoptd_dbus::introspection::interface_members(
        adoptd_dbus::introspection::INTROSPECTION_XML,
    )
    .expect("the contract parses");
    let doc = read("docs/dbus-api.md");
    assert!(members.len() >= 2, "{members:?}");
    for (interface, lines) in &members {
        let section = section(&doc, &format!("## {interface}\n"), "\n## ");
        for line in lines {
            let mut words = line.split_whitespace();
            let kind = words.next().unwrap_or_default();
            let rest: String = words.collect::<Vec<_>>().join(" ");
            let name = rest.split(['(', ' ']).next().unwrap_or_default().to_owned();
            let (part, entry) = match kind {
                "property" => {
                    let signature = rest.split(' ').nth(1).unwrap_or_default();
                    ("### Properties", format!("| `{name}` | `{signature}` |"))
                }
                "method" => ("### Methods", format!("#### `{name}(")),
                _ => ("### Signals", format!("#### `{name}(")),
            };
            let part = section_of(section, part);
            assert!(
                part.contains(&entry),
                "{interface} {kind} {name}: docs/dbus-api.md has no `{entry}` under {interface}"
            );
        }
    }
}

/// The text of `doc` from `start` to the next `end` (or its end).
fn section<'a>(doc: &'a str, start: &str, end: &str) -> &'a str {
    let from = doc
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in the document"));
    let rest = &doc[from + start.len()..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

fn section_of<'a>(section: &'a str, heading: &str) -> &'a str {
    let Some(from) = section.find(heading) else {
        return "";
    };
    let rest = &section[from + heading.len()..];
    &rest[..rest.find("\n### ").unwrap_or(rest.len())]
}

#[test]
fn pages_refer_only_to_pages_that_exist() {
    let ours = ["adoptd(8)", "adoptd-service(5)", "adoptctl(1)"];
    let pages = [
        ("adoptd(8)", read("man/adoptd.8")),
        ("adoptd-service(5)", read("man/adoptd-service.5")),
        ("adoptctl(1)", adoptctl_man_page()),
    ];
    for (name, page) in &pages {
        let references = page_references(page);
        assert!(!references.is_empty(), "{name} names no page of adoptd's");
        for reference in references {
            assert!(
                ours.contains(&reference.as_str()),
                "{name} refers to {reference}, which is not a page adoptd ships"
            );
        }
    }
}

/// The pages of adoptd's own that `page` names: `adoptd\-service (5)`
/// written with `.BR`, or `\fBadoptctl\fR(1)`, as `adoptd-service(5)`.
fn page_references(page: &str) -> Vec<String> {
    let text = page
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "");
    let mut references = Vec::new();
    for (at, _) in text.match_indices("adopt") {
        let rest = &text[at..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let after = rest[name_end..].trim_start_matches(' ');
        let mut chars = after.chars();
        if let (Some('('), Some(section), Some(')')) = (chars.next(), chars.next(), chars.next())
            && section.is_ascii_digit()
        {
            references.push(format!("{}({section})", &rest[..name_end]));
        }
    }
    references
}

#[test]
fn the_pages_are_clean_roff() {
    if Command::new("groff").arg("--version").output().is_err() {
        eprintln!("groff is not installed: the pages are not checked");
        return;
    }
    let generated = std::env::temp_dir().join(format!("adoptctl-{}.1", std::process::id()));
    std::fs::write(&generated, adoptctl_man_page()).expect("write adoptctl.1");
    for page in [
        repository().join("man/adoptd.8"),
        repository().join("man/adoptd-service.5"),
        generated.clone(),
    ] {
        let output = Command::new("groff")
            .args(["-man", "-ww", "-z", "-K", "utf-8"])
            .arg(&page)
            .output()
            .expect("groff");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "{}: {}",
            page.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::remove_file(&generated).ok();
}
