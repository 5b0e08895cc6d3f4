//! The questions scripts ask: `is-active`, `is-failed`, `show` and `cat`,
//! with the exit codes systemctl gives for them.

use std::{collections::BTreeMap, fmt::Write as _};

use adoptd_dbus::{BUS_NAME, SERVICE_INTERFACE, State, service_path};
use zbus::OwnedVariant;

use crate::{
    bus::Bus,
    error::{Exit, Failure},
    properties,
};

/// Which state `is-active` and `is-failed` ask about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Question {
    /// Running.
    Active,
    /// Failed.
    Failed,
}

/// Prints each service's state (unless `quiet`); 0 when at least one is
/// in the state asked about, as systemctl: else 3 for is-active (4 when
/// a name is no service at all), 1 for is-failed.
pub async fn is(bus: &Bus, names: &[String], question: Question, quiet: bool) -> Exit {
    let mut text = String::new();
    let mut any = false;
    let mut missing = false;
    for name in names {
        match properties::one(bus, name).await {
            Ok(status) => {
                let _ = writeln!(text, "{}", status.state);
                any |= match question {
                    Question::Active => status.state == State::Running,
                    Question::Failed => status.state == State::Failed,
                };
            }
            Err(failure) if failure.exit == Exit::NoSuchService => {
                let _ = writeln!(text, "unknown");
                missing = true;
            }
            Err(failure) => {
                crate::report(&failure);
                return failure.exit;
            }
        }
    }
    if !quiet {
        crate::render::emit(&text);
    }
    match (any, question) {
        (true, _) => Exit::Success,
        (false, Question::Failed) => Exit::Failure,
        (false, Question::Active) if missing => Exit::NoSuchService,
        (false, Question::Active) => Exit::NotRunning,
    }
}

/// Prints the properties of each service as `Name=Value` lines, sorted,
/// a blank line between services; `properties` chooses some, `value_only`
/// leaves out the names. With `json`, one object per service and line.
pub async fn show(
    bus: &Bus,
    names: &[String],
    chosen: &[String],
    value_only: bool,
    json: bool,
) -> Exit {
    let mut text = String::new();
    let mut exit = Exit::Success;
    for (index, name) in names.iter().enumerate() {
        let all = match get_all(bus, name).await {
            Ok(all) => all,
            Err(failure) => {
                crate::report(&failure);
                exit = exit.max(failure.exit);
                continue;
            }
        };
        let mut shown: BTreeMap<String, String> = BTreeMap::new();
        for (property, value) in &all {
            if !chosen.is_empty() && !chosen.iter().any(|c| c == property) {
                continue;
            }
            shown.insert(property.clone(), plain(value));
        }
        if let Some(unknown) = chosen.iter().find(|c| !all.contains_key(*c)) {
            crate::report(&Failure::new(
                Exit::Usage,
                format!("{name} has no property {unknown:?} (see adoptctl show {name})"),
            ));
            exit = exit.max(Exit::Usage);
        }
        if json {
            text.push_str(&crate::json_line(&shown));
            continue;
        }
        if index > 0 {
            text.push('\n');
        }
        for (property, value) in shown {
            if value_only {
                let _ = writeln!(text, "{value}");
            } else {
                let _ = writeln!(text, "{property}={value}");
            }
        }
    }
    crate::render::emit(&text);
    exit
}

/// Prints each service's file, `# PATH` first, as systemctl cat does.
pub async fn cat(bus: &Bus, names: &[String]) -> Exit {
    let mut exit = Exit::Success;
    let mut text = String::new();
    for name in names {
        let status = match properties::one(bus, name).await {
            Ok(status) => status,
            Err(failure) => {
                crate::report(&failure);
                exit = exit.max(failure.exit);
                continue;
            }
        };
        match std::fs::read_to_string(&status.fragment_path) {
            Ok(file) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                let _ = writeln!(text, "# {}", status.fragment_path);
                text.push_str(&file);
                if !file.ends_with('\n') {
                    text.push('\n');
                }
            }
            Err(e) => {
                let failure =
                    Failure::failed(format!("{name}: cannot read {}: {e}", status.fragment_path));
                crate::report(&failure);
                exit = exit.max(failure.exit);
            }
        }
    }
    crate::render::emit(&text);
    exit
}

async fn get_all(bus: &Bus, name: &str) -> Result<BTreeMap<String, OwnedVariant>, Failure> {
    let reply = bus
        .connection
        .call_method(
            Some(BUS_NAME),
            service_path(name).as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(SERVICE_INTERFACE),
        )
        .await
        .map_err(|e| Failure::from_zbus(Some(name), &bus.name, &e))?;
    reply
        .body()
        .deserialize()
        .map_err(|e| Failure::failed(format!("{name}: unreadable properties: {e}")))
}

/// A property's value as systemctl show writes it: strings bare, arrays
/// space-separated, booleans yes/no.
fn plain(value: &OwnedVariant) -> String {
    use zbus::Variant;
    match &**value {
        Variant::Str(text) => text.to_string(),
        Variant::Bool(flag) => if *flag { "yes" } else { "no" }.to_owned(),
        Variant::U32(n) => n.to_string(),
        Variant::I32(n) => n.to_string(),
        Variant::U64(n) => n.to_string(),
        Variant::I64(n) => n.to_string(),
        Variant::Array(array) => array
            .iter()
            .map(|item| match item {
                Variant::Str(text) => text.to_string(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}
