//! `adoptctl monitor [NAME…]`: adoptd's signals as they arrive, one line
//! (or one JSON object) each, until interrupted.
//!
//! The subscription is made before anything is read, so no event between
//! the first reading and the first signal is lost; "Monitoring …" on
//! stderr says that it is in place.

use std::collections::HashMap;

use adoptd_dbus::{BUS_NAME, MANAGER_PATH, SERVICE_INTERFACE, State, service_name_from_path};
use futures_util::StreamExt as _;
use serde_json::{Map, Value as Json};
use zbus::{MatchRule, Message, MessageStream, OwnedVariant, Variant};

use crate::{
    bus::Bus,
    error::{Exit, Failure},
    glob, properties, render,
};

/// Prints events of the services `names` selects (every one when empty)
/// until interrupted or the bus goes away.
pub async fn run(bus: &Bus, names: &[String], json: bool) -> Exit {
    let mut signals = match subscribe(bus).await {
        Ok(signals) => signals,
        Err(failure) => {
            crate::report(&failure);
            return failure.exit;
        }
    };
    // The states now, to say what each change was from; adoptd may also
    // not be there yet, which the stream will tell.
    let mut states: HashMap<String, State> = match properties::rows(bus).await {
        Ok(rows) => rows.into_iter().map(|row| (row.name, row.state)).collect(),
        Err(_) => HashMap::new(),
    };
    eprintln!("Monitoring adoptd on the {}; interrupt to stop.", bus.name);
    let selected = |name: &str| names.is_empty() || names.iter().any(|p| glob::matches(p, name));
    while let Some(message) = signals.next().await {
        let Ok(message) = message else { continue };
        let Some(event) = Event::read(&message) else {
            continue;
        };
        if event.service.as_deref().is_some_and(|name| !selected(name)) {
            continue;
        }
        let previous = match (&event.service, event.state()) {
            (Some(name), Some(state)) => states.insert(name.clone(), state),
            _ => None,
        };
        let line = if json {
            Some(crate::json_line(&event.to_json()))
        } else {
            event.to_text(previous)
        };
        if let Some(line) = line
            && !render::emit(&line)
        {
            return Exit::Success; // the reader went away
        }
    }
    crate::report(&Failure::failed(format!(
        "lost the connection to the {}",
        bus.name
    )));
    Exit::Failure
}

type Signals = futures_util::stream::Select<MessageStream, MessageStream>;

/// Every signal of adoptd, and adoptd coming and going.
async fn subscribe(bus: &Bus) -> Result<Signals, Failure> {
    let failed = |e: zbus::Error| Failure::from_zbus(None, &bus.name, &e);
    let from_adoptd = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)
        .build()
        .map_err(failed)?;
    let owner = crate::bus::owner_changes().map_err(failed)?;
    // A burst (a restart storm, thousands of services starting) must not
    // be dropped while lines are written.
    let queue = std::num::NonZeroUsize::new(1 << 16);
    let from_adoptd = MessageStream::for_match_rule(from_adoptd, &bus.connection, queue)
        .await
        .map_err(failed)?;
    let owner = MessageStream::for_match_rule(owner, &bus.connection, queue)
        .await
        .map_err(failed)?;
    Ok(futures_util::stream::select(from_adoptd, owner))
}

/// One event worth a line.
#[derive(Debug)]
struct Event {
    /// µs since the epoch, when adoptctl received it.
    time: u64,
    /// The service it is about; `None` for adoptd itself.
    service: Option<String>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Changed(HashMap<String, OwnedVariant>),
    Adopted {
        pid: u32,
        previous_pid: u32,
    },
    Exited {
        pid: u32,
        code: i32,
        signal: i32,
    },
    Added,
    Removed,
    /// adoptd took (true) or left (false) its bus name.
    Adoptd(bool),
}

impl Event {
    fn read(message: &Message) -> Option<Event> {
        let header = message.header();
        let member = header.member()?.as_str().to_owned();
        let path = header.path()?;
        let body = message.body();
        let time = render::now_us();
        let event = |service: Option<String>, kind| {
            Some(Event {
                time,
                service,
                kind,
            })
        };
        if member == "NameOwnerChanged" {
            let (_, _, new_owner): (String, String, String) = body.deserialize().ok()?;
            return event(None, Kind::Adoptd(!new_owner.is_empty()));
        }
        if path.as_str() == MANAGER_PATH {
            let (name, _): (String, zbus::OwnedObjectPath) = match member.as_str() {
                "ServiceAdded" | "ServiceRemoved" => body.deserialize().ok()?,
                _ => return None,
            };
            let kind = if member == "ServiceAdded" {
                Kind::Added
            } else {
                Kind::Removed
            };
            return event(Some(name), kind);
        }
        let name = service_name_from_path(path)?;
        match member.as_str() {
            "PropertiesChanged" => {
                let (interface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                    body.deserialize().ok()?;
                (interface == SERVICE_INTERFACE).then_some(())?;
                event(Some(name), Kind::Changed(changed))
            }
            "Adopted" => {
                let (pid, previous_pid): (u32, u32) = body.deserialize().ok()?;
                event(Some(name), Kind::Adopted { pid, previous_pid })
            }
            "Exited" => {
                let (pid, code, signal): (u32, i32, i32) = body.deserialize().ok()?;
                event(Some(name), Kind::Exited { pid, code, signal })
            }
            _ => None,
        }
    }

    /// The new `State`, if this event changed it.
    fn state(&self) -> Option<State> {
        match &self.kind {
            Kind::Changed(changed) => changed
                .get("State")
                .and_then(|value| <&str>::try_from(value).ok())
                .and_then(|state| state.parse().ok()),
            _ => None,
        }
    }

    /// The line for people; `None` for changes that another line already
    /// says (a hand-off's new MainPID is its `Adopted` line).
    fn to_text(&self, previous: Option<State>) -> Option<String> {
        let service = self.service.as_deref().unwrap_or("adoptd");
        let what = match &self.kind {
            Kind::Changed(changed) => {
                let state = self.state()?;
                let mut what = format!("State {state}");
                if let Some(previous) = previous.filter(|p| *p != state) {
                    what = format!("State {previous} -> {state}");
                }
                if let Some(pid) = number(changed, "MainPID").filter(|pid| *pid > 0) {
                    what.push_str(&format!(", MainPID {pid}"));
                }
                if let Some(result) = changed
                    .get("Result")
                    .and_then(|value| <&str>::try_from(value).ok())
                    .filter(|result| *result != "success")
                {
                    what.push_str(&format!(", Result {result}"));
                }
                what
            }
            Kind::Adopted { pid, previous_pid } => format!("Adopted {pid} <- {previous_pid}"),
            Kind::Exited { pid, code, signal } => match render::last_exit(*code, *signal) {
                Some(how) => format!("Exited {pid}, {how}"),
                None => format!("Exited {pid}"),
            },
            Kind::Added => "added".to_owned(),
            Kind::Removed => "removed".to_owned(),
            Kind::Adoptd(true) => "is on the bus".to_owned(),
            Kind::Adoptd(false) => "left the bus".to_owned(),
        };
        Some(format!("{} {service}: {what}\n", clock(self.time)))
    }

    /// The JSON object: `Time` (µs since the epoch), `Service`, `Event` (the
    /// D-Bus signal's name), and the signal's values under the property
    /// names they stand for.
    fn to_json(&self) -> Json {
        let mut object = Map::new();
        object.insert("Time".to_owned(), Json::from(self.time));
        if let Some(service) = &self.service {
            object.insert("Service".to_owned(), Json::from(service.as_str()));
        }
        let event = match &self.kind {
            Kind::Changed(changed) => {
                let mut sorted: Vec<_> = changed.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                for (name, value) in sorted {
                    object.insert(name.clone(), json_value(value));
                }
                "PropertiesChanged"
            }
            Kind::Adopted { pid, previous_pid } => {
                object.insert("MainPID".to_owned(), Json::from(*pid));
                object.insert("PreviousPID".to_owned(), Json::from(*previous_pid));
                "Adopted"
            }
            Kind::Exited { pid, code, signal } => {
                object.insert("PID".to_owned(), Json::from(*pid));
                object.insert("ExitCode".to_owned(), Json::from(*code));
                object.insert("ExitSignal".to_owned(), Json::from(*signal));
                "Exited"
            }
            Kind::Added => "ServiceAdded",
            Kind::Removed => "ServiceRemoved",
            Kind::Adoptd(true) => "AdoptdAppeared",
            Kind::Adoptd(false) => "AdoptdVanished",
        };
        object.insert("Event".to_owned(), Json::from(event));
        Json::Object(object)
    }
}

fn number(changed: &HashMap<String, OwnedVariant>, name: &str) -> Option<u32> {
    changed
        .get(name)
        .and_then(|value| u32::try_from(value).ok())
}

/// A D-Bus value as JSON: numbers, strings, booleans and arrays of them.
fn json_value(value: &Variant<'_>) -> Json {
    match value {
        Variant::U8(n) => Json::from(*n),
        Variant::Bool(b) => Json::from(*b),
        Variant::I16(n) => Json::from(*n),
        Variant::U16(n) => Json::from(*n),
        Variant::I32(n) => Json::from(*n),
        Variant::U32(n) => Json::from(*n),
        Variant::I64(n) => Json::from(*n),
        Variant::U64(n) => Json::from(*n),
        Variant::F64(n) => Json::from(*n),
        Variant::Str(s) => Json::from(s.as_str()),
        Variant::ObjectPath(p) => Json::from(p.as_str()),
        Variant::Variant(inner) => json_value(inner),
        Variant::Array(items) => Json::Array(items.iter().map(json_value).collect()),
        other => Json::from(format!("{other:?}")),
    }
}

/// `12:00:03.123`, local time.
fn clock(us: u64) -> String {
    let full = render::timestamp(us);
    // "YYYY-MM-DD HH:MM:SS ZONE" → "HH:MM:SS".
    let time = full.split(' ').nth(1).unwrap_or(&full);
    format!("{time}.{:03}", (us / 1000) % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind) -> Event {
        Event {
            time: 0,
            service: Some("web".to_owned()),
            kind,
        }
    }

    fn text(line: Option<String>) -> String {
        let line = line.expect("a line");
        line.split_once(' ').expect("a time").1.to_owned()
    }

    #[test]
    fn a_handoff_reads_as_adopted_new_from_old() {
        let line = event(Kind::Adopted {
            pid: 1234,
            previous_pid: 1233,
        })
        .to_text(None);
        assert_eq!(text(line), "web: Adopted 1234 <- 1233\n");
    }

    #[test]
    fn a_state_change_says_from_what() {
        let changed = HashMap::from([
            (
                "State".to_owned(),
                OwnedVariant::from(zbus::Str::from("running")),
            ),
            ("MainPID".to_owned(), OwnedVariant::from(42u32)),
        ]);
        let line = event(Kind::Changed(changed)).to_text(Some(State::Starting));
        assert_eq!(text(line), "web: State starting -> running, MainPID 42\n");
    }

    #[test]
    fn a_change_without_state_is_no_line_for_people_but_json() {
        let changed = HashMap::from([("Handoffs".to_owned(), OwnedVariant::from(3u32))]);
        let event = event(Kind::Changed(changed));
        assert_eq!(event.to_text(None), None);
        assert_eq!(
            event.to_json(),
            serde_json::json!({
                "Time": 0, "Service": "web", "Event": "PropertiesChanged", "Handoffs": 3
            })
        );
    }

    #[test]
    fn an_exit_by_signal_names_it() {
        let line = event(Kind::Exited {
            pid: 7,
            code: -1,
            signal: 9,
        })
        .to_text(None);
        assert_eq!(text(line), "web: Exited 7, signal 9 (KILL)\n");
    }
}
