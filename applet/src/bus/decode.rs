//! adoptd's signals and property values, read from D-Bus messages into
//! the applet's plain types. Anything malformed or unknown reads as
//! [`Signal::Other`] or [`Value::Other`]: never an error.

use std::collections::HashMap;

use adoptd_dbus::{
    SERVICE_INTERFACE,
    proxy::{Adopted, Exited, ServiceAdded, ServiceRemoved},
};
use zbus::{Message, OwnedVariant, Variant, fdo::PropertiesChanged};

use crate::event::Value;

/// A signal of adoptd's, as the bus loop handles it.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// `PropertiesChanged` of a service object.
    Changed {
        path: String,
        properties: Vec<(String, Value)>,
    },
    Adopted {
        path: String,
        pid: u32,
        previous_pid: u32,
    },
    Exited {
        path: String,
        pid: u32,
        code: i32,
        signal: i32,
    },
    ServiceAdded {
        path: String,
    },
    ServiceRemoved {
        path: String,
    },
    /// Anything else (the manager's own properties, a malformed body).
    Other,
}

/// What `message` says, if it is one of adoptd's signals.
pub fn signal(message: &Message) -> Signal {
    let header = message.header();
    let Some(path) = header.path().map(|path| path.to_string()) else {
        return Signal::Other;
    };
    if let Some(changed) = PropertiesChanged::from_message(message.clone()) {
        return match changed.args() {
            Ok(args) if args.interface_name.as_str() == SERVICE_INTERFACE => Signal::Changed {
                path,
                properties: sorted(
                    args.changed_properties
                        .iter()
                        .map(|(name, variant)| ((*name).to_owned(), value(variant))),
                ),
            },
            _ => Signal::Other,
        };
    }
    if let Some(adopted) = Adopted::from_message(message.clone()) {
        return match adopted.args() {
            Ok(args) => Signal::Adopted {
                path,
                pid: args.pid,
                previous_pid: args.previous_pid,
            },
            Err(_) => Signal::Other,
        };
    }
    if let Some(exited) = Exited::from_message(message.clone()) {
        return match exited.args() {
            Ok(args) => Signal::Exited {
                path,
                pid: args.pid,
                code: args.code,
                signal: args.signal,
            },
            Err(_) => Signal::Other,
        };
    }
    if let Some(added) = ServiceAdded::from_message(message.clone()) {
        return match added.args() {
            Ok(args) => Signal::ServiceAdded {
                path: args.path.to_string(),
            },
            Err(_) => Signal::Other,
        };
    }
    if let Some(removed) = ServiceRemoved::from_message(message.clone()) {
        return match removed.args() {
            Ok(args) => Signal::ServiceRemoved {
                path: args.path.to_string(),
            },
            Err(_) => Signal::Other,
        };
    }
    Signal::Other
}

/// The reply of `GetAll`, by property name.
pub fn properties(all: HashMap<String, OwnedVariant>) -> Vec<(String, Value)> {
    sorted(all.into_iter().map(|(name, variant)| {
        let value = value(&variant);
        (name, value)
    }))
}

fn sorted(properties: impl Iterator<Item = (String, Value)>) -> Vec<(String, Value)> {
    let mut properties: Vec<_> = properties.collect();
    properties.sort_by(|a, b| a.0.cmp(&b.0));
    properties
}

/// A property value, as loosely as the applet needs it.
pub fn value(variant: &Variant<'_>) -> Value {
    match variant {
        Variant::Str(text) => Value::Text(text.as_str().to_owned()),
        Variant::ObjectPath(path) => Value::Text(path.to_string()),
        Variant::Bool(flag) => Value::Bool(*flag),
        Variant::U8(number) => Value::Unsigned(u64::from(*number)),
        Variant::U16(number) => Value::Unsigned(u64::from(*number)),
        Variant::U32(number) => Value::Unsigned(u64::from(*number)),
        Variant::U64(number) => Value::Unsigned(*number),
        Variant::I16(number) => Value::Signed(i64::from(*number)),
        Variant::I32(number) => Value::Signed(i64::from(*number)),
        Variant::I64(number) => Value::Signed(*number),
        Variant::Variant(inner) => value(inner),
        Variant::Array(array) => {
            let items = array.inner();
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|item| match item {
                    Variant::Str(text) => Some(text.as_str().to_owned()),
                    _ => None,
                })
                .collect();
            let numbers: Option<Vec<u64>> = items
                .iter()
                .map(|item| match value(item) {
                    Value::Unsigned(number) => Some(number),
                    _ => None,
                })
                .collect();
            match (texts, numbers) {
                (Some(texts), _) if !texts.is_empty() => Value::TextList(texts),
                (_, Some(numbers)) if !numbers.is_empty() => Value::UnsignedList(numbers),
                _ if items.is_empty() => Value::TextList(Vec::new()),
                _ => Value::Other(variant.to_string()),
            }
        }
        other => Value::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::message::Message;

    use super::*;

    fn signal_message<B>(path: &str, interface: &str, member: &str, body: &B) -> Message
    where
        B: serde::Serialize + zbus::wire::DynamicType,
    {
        Message::signal(path, interface, member)
            .build(body)
            .unwrap()
    }

    #[test]
    fn properties_changed_of_a_service_carries_its_values() {
        let mut changed: HashMap<&str, Variant<'_>> = HashMap::new();
        changed.insert("MainPID", Variant::U32(42));
        changed.insert("State", Variant::from("running"));
        let message = signal_message(
            "/org/adoptd1/service/nginx",
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            &(SERVICE_INTERFACE, changed, Vec::<&str>::new()),
        );
        assert_eq!(
            signal(&message),
            Signal::Changed {
                path: "/org/adoptd1/service/nginx".into(),
                properties: vec![
                    ("MainPID".into(), Value::Unsigned(42)),
                    ("State".into(), Value::Text("running".into())),
                ],
            }
        );
    }

    #[test]
    fn adopted_and_exited_are_read() {
        let adopted = signal_message(
            "/org/adoptd1/service/d",
            SERVICE_INTERFACE,
            "Adopted",
            &(12u32, 10u32),
        );
        assert_eq!(
            signal(&adopted),
            Signal::Adopted {
                path: "/org/adoptd1/service/d".into(),
                pid: 12,
                previous_pid: 10
            }
        );
        let exited = signal_message(
            "/org/adoptd1/service/d",
            SERVICE_INTERFACE,
            "Exited",
            &(12u32, 3i32, -1i32),
        );
        assert_eq!(
            signal(&exited),
            Signal::Exited {
                path: "/org/adoptd1/service/d".into(),
                pid: 12,
                code: 3,
                signal: -1
            }
        );
    }

    #[test]
    fn a_malformed_signal_is_other_not_an_error() {
        let wrong = signal_message(
            "/org/adoptd1/service/d",
            SERVICE_INTERFACE,
            "Adopted",
            &("twelve",),
        );
        assert_eq!(signal(&wrong), Signal::Other);
    }

    #[test]
    fn values_of_every_shape_are_kept() {
        assert_eq!(
            value(&Variant::from(vec!["a", "b"])),
            Value::TextList(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            value(&Variant::from(vec![1u32, 2])),
            Value::UnsignedList(vec![1, 2])
        );
        assert_eq!(value(&Variant::I32(-1)), Value::Signed(-1));
        assert!(matches!(value(&Variant::F64(1.5)), Value::Other(_)));
    }
}
