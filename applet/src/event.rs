//! What the bus side tells the window side, and what the window asks back.
//!
//! These types are plain Rust: the bus layer turns D-Bus messages into
//! [`BusEvent`]s, the model applies them, and neither the model nor its
//! tests know zbus. Property values arrive as [`Value`]s, loosely typed on
//! purpose: a property the applet does not know, or a value of an
//! unexpected type, is carried along and shown, never a reason to fail.

use std::fmt;

/// One thing that happened on the bus, in the order the bus delivered it.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// Connected to a bus; `bus` names it ("system bus", "bus at …").
    /// adoptd may or may not be on it yet.
    Connected { bus: String },
    /// adoptd is not on the bus (it never was, it left, or the bus went
    /// away): every service is unknown until the next [`BusEvent::Snapshot`].
    AdoptdGone { reason: String },
    /// Every service adoptd has, with all their properties; replaces what
    /// the model knew.
    Snapshot(Vec<ServiceSnapshot>),
    /// A service appeared (`ServiceAdded`, then its properties read).
    Added(ServiceSnapshot),
    /// A service went away (`ServiceRemoved`).
    Removed { path: String },
    /// `PropertiesChanged` on a service: the new values.
    Changed {
        path: String,
        properties: Vec<(String, Value)>,
    },
    /// `Adopted(pid, previous_pid)`: a hand-off. `at` is when the applet
    /// received it, in µs since the epoch.
    Adopted {
        path: String,
        pid: u32,
        previous_pid: u32,
        at: u64,
    },
    /// `Exited(pid, code, signal)`: the main process ended.
    Exited {
        path: String,
        pid: u32,
        code: i32,
        signal: i32,
        at: u64,
    },
}

/// A service object's path and every property it had when read.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSnapshot {
    pub path: String,
    pub properties: Vec<(String, Value)>,
}

/// A property value, as far as the applet needs to tell types apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Bool(bool),
    TextList(Vec<String>),
    UnsignedList(Vec<u64>),
    /// Anything else, in D-Bus's own notation.
    Other(String),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The value as a `u32`, if it is an unsigned number that fits.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            Value::Unsigned(number) => u32::try_from(*number).ok(),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Unsigned(number) => Some(*number),
            _ => None,
        }
    }

    /// The value as an `i32`, if it is a signed number that fits.
    pub fn as_i32(&self) -> Option<i32> {
        match self {
            Value::Signed(number) => i32::try_from(*number).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::Unsigned(number) => write!(f, "{number}"),
            Value::Signed(number) => write!(f, "{number}"),
            Value::Bool(flag) => write!(f, "{}", if *flag { "yes" } else { "no" }),
            Value::TextList(items) => f.write_str(&items.join(" ")),
            Value::UnsignedList(items) => {
                let items: Vec<String> = items.iter().map(u64::to_string).collect();
                f.write_str(&items.join(" "))
            }
            Value::Other(text) => f.write_str(text),
        }
    }
}

/// A control method of a service, as the detail pane's buttons call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Start,
    Stop,
    Restart,
    Reload,
}

impl Control {
    pub const ALL: [Control; 4] = [
        Control::Start,
        Control::Stop,
        Control::Restart,
        Control::Reload,
    ];

    /// The button's label, which is also the D-Bus method's name.
    pub fn label(self) -> &'static str {
        match self {
            Control::Start => "Start",
            Control::Stop => "Stop",
            Control::Restart => "Restart",
            Control::Reload => "Reload",
        }
    }
}

/// What the window asks of the bus side. Each carries where its answer
/// goes.
#[derive(Debug)]
pub enum Request {
    /// Calls a control method of the service at `path`; the answer is
    /// `Err` with adoptd's sentence when it refused.
    Control {
        path: String,
        control: Control,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Reads the service's `PIDs` (not signalled, so read on demand).
    Pids {
        path: String,
        reply: tokio::sync::oneshot::Sender<Result<Vec<u32>, String>>,
    },
}

/// Now, in µs since the epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
