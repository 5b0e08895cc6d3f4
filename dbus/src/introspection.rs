//! The checked-in introspection contract, and a reader that reduces any
//! introspection XML to lines that can be compared.
//!
//! Each member of an interface becomes one line, independent of order,
//! indentation, comments and the names of out arguments (which zbus does not
//! emit):
//!
//! ```text
//! property MainPID u read
//! property Name s read const
//! method GetService(s name) -> (o)
//! signal Adopted(u pid, u previous_pid)
//! ```
//!
//! A property line ends with its `EmitsChangedSignal` annotation unless that
//! is the default, `true`. The XML is read by zbus's own reader
//! (`zbus_xml`), as D-Bus tools write it. Interface-level annotations are
//! not read.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use zbus_xml::{Arg, ArgDirection, Interface, Node, PropertyAccess};

/// `org.adoptd1.xml`: the contract the daemon must serve and the proxies
/// restate.
pub const INTROSPECTION_XML: &str = include_str!("../org.adoptd1.xml");

/// The members of every interface in `xml`, as comparable lines, by
/// interface name. Interfaces of nested `<node>`s are included.
pub fn interface_members(xml: &str) -> Result<BTreeMap<String, BTreeSet<String>>, ParseError> {
    let node = Node::try_from(xml).map_err(|e| ParseError(e.to_string()))?;
    let mut interfaces = BTreeMap::new();
    collect(&node, &mut interfaces);
    Ok(interfaces)
}

fn collect(node: &Node<'_>, interfaces: &mut BTreeMap<String, BTreeSet<String>>) {
    for interface in node.interfaces() {
        interfaces.insert(interface.name().to_string(), members(interface));
    }
    for child in node.nodes() {
        collect(child, interfaces);
    }
}

fn members(interface: &Interface<'_>) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for method in interface.methods() {
        let (outputs, inputs): (Vec<&Arg<'_>>, Vec<&Arg<'_>>) = method
            .args()
            .iter()
            .partition(|arg| matches!(arg.direction(), Some(ArgDirection::Out)));
        let inputs: Vec<String> = inputs.into_iter().map(named).collect();
        let outputs: Vec<String> = outputs.iter().map(|arg| arg.ty().to_string()).collect();
        lines.insert(format!(
            "method {}({}) -> ({})",
            method.name(),
            inputs.join(", "),
            outputs.join(", ")
        ));
    }
    for signal in interface.signals() {
        let args: Vec<String> = signal.args().iter().map(named).collect();
        lines.insert(format!("signal {}({})", signal.name(), args.join(", ")));
    }
    for property in interface.properties() {
        let access = match property.access() {
            PropertyAccess::Read => "read",
            PropertyAccess::Write => "write",
            PropertyAccess::ReadWrite => "readwrite",
        };
        let mut line = format!("property {} {} {access}", property.name(), property.ty());
        let emits = property
            .annotations()
            .iter()
            .find(|a| a.name() == EMITS_CHANGED_SIGNAL)
            .map(|a| a.value());
        if let Some(emits) = emits.filter(|&emits| emits != "true") {
            line.push(' ');
            line.push_str(emits);
        }
        lines.insert(line);
    }
    lines
}

/// `"s name"`, or the signature alone for an argument without a name.
fn named(arg: &Arg<'_>) -> String {
    match arg.name() {
        Some(name) => format!("{} {name}", arg.ty()),
        None => arg.ty().to_string(),
    }
}

/// Introspection XML that [`interface_members`] could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable introspection XML: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

const EMITS_CHANGED_SIGNAL: &str = "org.freedesktop.DBus.Property.EmitsChangedSignal";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_become_order_free_lines() {
        let xml = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <!-- a <comment> with markup -->
  <interface name="org.example.A">
    <signal name="Moved"><arg name="x" type="i"/></signal>
    <method name="Get">
      <arg name="key" type="s" direction="in"/>
      <arg type="v" direction="out"/>
    </method>
    <property name="Size" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Live" type="u" access="read"/>
  </interface>
  <node name="child"><interface name="org.example.B"></interface></node>
</node>"#;
        let members = interface_members(xml).unwrap();
        let lines: Vec<_> = members["org.example.A"]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            lines,
            [
                "method Get(s key) -> (v)",
                "property Live u read",
                "property Size t read const",
                "signal Moved(i x)",
            ]
        );
        assert!(members["org.example.B"].is_empty());
    }

    #[test]
    fn unterminated_markup_is_an_error() {
        assert!(interface_members("<node><!-- open").is_err());
        assert!(interface_members("<node><interface name=\"a\">").is_err());
        assert!(interface_members("<node><interface>").is_err());
    }
}
