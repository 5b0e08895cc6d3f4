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
//! is the default, `true`. The reader knows just enough XML for what D-Bus
//! tools and zbus print: elements, attributes, comments and the doctype.
//! Interface-level annotations are not read.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

/// `org.adoptd1.xml`: the contract the daemon must serve and the proxies
/// restate.
pub const INTROSPECTION_XML: &str = include_str!("../org.adoptd1.xml");

/// The members of every interface in `xml`, as comparable lines, by
/// interface name. Interfaces of nested `<node>`s are included.
pub fn interface_members(xml: &str) -> Result<BTreeMap<String, BTreeSet<String>>, ParseError> {
    let mut interfaces = BTreeMap::new();
    let mut current_interface: Option<(String, BTreeSet<String>)> = None;
    let mut current_member: Option<Member> = None;

    for tag in Tags::new(xml) {
        let tag = tag?;
        match (tag.kind, tag.name) {
            (TagKind::Open | TagKind::Empty, "interface") => {
                current_interface = Some((tag.attribute("name")?, BTreeSet::new()));
            }
            (TagKind::Open | TagKind::Empty, "method" | "signal" | "property") => {
                let member = Member {
                    kind: match tag.name {
                        "method" => MemberKind::Method,
                        "signal" => MemberKind::Signal,
                        _ => MemberKind::Property,
                    },
                    name: tag.attribute("name")?,
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    property_type: tag.optional_attribute("type"),
                    access: tag.optional_attribute("access"),
                    emits_changed_signal: None,
                };
                current_member = Some(member);
            }
            (TagKind::Open | TagKind::Empty, "arg") => {
                let member = current_member
                    .as_mut()
                    .ok_or_else(|| ParseError::new("<arg> outside a method or signal"))?;
                let signature = tag.attribute("type")?;
                if tag.optional_attribute("direction").as_deref() == Some("out") {
                    member.outputs.push(signature);
                } else {
                    let name = tag.optional_attribute("name");
                    member.inputs.push(match name {
                        Some(name) => format!("{signature} {name}"),
                        None => signature,
                    });
                }
            }
            (TagKind::Open | TagKind::Empty, "annotation") => {
                let Some(member) = current_member.as_mut() else {
                    continue;
                };
                if tag.attribute("name")? == EMITS_CHANGED_SIGNAL {
                    member.emits_changed_signal = Some(tag.attribute("value")?);
                }
            }
            _ => {}
        }
        let closes = tag.kind == TagKind::Close || tag.kind == TagKind::Empty;
        match (closes, tag.name) {
            (true, "method" | "signal" | "property") => {
                let member = current_member
                    .take()
                    .ok_or_else(|| ParseError::new(format!("stray </{}>", tag.name)))?;
                let (_, members) = current_interface.as_mut().ok_or_else(|| {
                    ParseError::new(format!("<{}> outside an interface", tag.name))
                })?;
                members.insert(member.to_string());
            }
            (true, "interface") => {
                let (name, members) = current_interface
                    .take()
                    .ok_or_else(|| ParseError::new("stray </interface>"))?;
                interfaces.insert(name, members);
            }
            _ => {}
        }
    }
    if current_interface.is_some() || current_member.is_some() {
        return Err(ParseError::new("unclosed <interface> or member"));
    }
    Ok(interfaces)
}

/// Introspection XML that [`interface_members`] could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        ParseError(message.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable introspection XML: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

const EMITS_CHANGED_SIGNAL: &str = "org.freedesktop.DBus.Property.EmitsChangedSignal";

#[derive(Debug, Clone, Copy)]
enum MemberKind {
    Method,
    Signal,
    Property,
}

struct Member {
    kind: MemberKind,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    property_type: Option<String>,
    access: Option<String>,
    emits_changed_signal: Option<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match self.kind {
            MemberKind::Property => {
                let signature = self.property_type.as_deref().unwrap_or("?");
                let access = self.access.as_deref().unwrap_or("?");
                write!(f, "property {name} {signature} {access}")?;
                match self.emits_changed_signal.as_deref() {
                    None | Some("true") => Ok(()),
                    Some(emits) => write!(f, " {emits}"),
                }
            }
            MemberKind::Method => write!(
                f,
                "method {name}({}) -> ({})",
                self.inputs.join(", "),
                self.outputs.join(", ")
            ),
            MemberKind::Signal => write!(f, "signal {name}({})", self.inputs.join(", ")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
    Open,
    Close,
    Empty,
}

struct Tag<'x> {
    kind: TagKind,
    name: &'x str,
    attributes: &'x str,
}

impl Tag<'_> {
    fn attribute(&self, key: &str) -> Result<String, ParseError> {
        self.optional_attribute(key)
            .ok_or_else(|| ParseError::new(format!("<{}> without a {key} attribute", self.name)))
    }

    fn optional_attribute(&self, key: &str) -> Option<String> {
        let mut rest = self.attributes;
        loop {
            let (name, after_name) = rest.split_once('=')?;
            let after_name = after_name.trim_start();
            let quote = after_name.chars().next()?;
            if quote != '"' && quote != '\'' {
                return None;
            }
            let (value, after_value) = after_name[1..].split_once(quote)?;
            if name.trim() == key {
                return Some(unescape_entities(value));
            }
            rest = after_value;
        }
    }
}

/// The tags of a document, skipping text, comments, the doctype and
/// processing instructions.
struct Tags<'x> {
    rest: &'x str,
}

impl<'x> Tags<'x> {
    fn new(xml: &'x str) -> Self {
        Tags { rest: xml }
    }

    fn skip_past(&mut self, end: &str, what: &str) -> Result<(), ParseError> {
        let at = self
            .rest
            .find(end)
            .ok_or_else(|| ParseError::new(format!("unterminated {what}")))?;
        self.rest = &self.rest[at + end.len()..];
        Ok(())
    }
}

impl<'x> Iterator for Tags<'x> {
    type Item = Result<Tag<'x>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let start = self.rest.find('<')?;
            self.rest = &self.rest[start..];
            let skipped = if self.rest.starts_with("<!--") {
                self.skip_past("-->", "comment")
            } else if self.rest.starts_with("<!") {
                self.skip_past(">", "declaration")
            } else if self.rest.starts_with("<?") {
                self.skip_past("?>", "processing instruction")
            } else {
                break;
            };
            if let Err(error) = skipped {
                self.rest = "";
                return Some(Err(error));
            }
        }
        let Some(end) = self.rest.find('>') else {
            self.rest = "";
            return Some(Err(ParseError::new("unterminated tag")));
        };
        let inner = &self.rest[1..end];
        self.rest = &self.rest[end + 1..];

        let (kind, inner) = if let Some(inner) = inner.strip_prefix('/') {
            (TagKind::Close, inner)
        } else if let Some(inner) = inner.strip_suffix('/') {
            (TagKind::Empty, inner)
        } else {
            (TagKind::Open, inner)
        };
        let inner = inner.trim();
        let (name, attributes) = inner.split_once(char::is_whitespace).unwrap_or((inner, ""));
        Some(Ok(Tag {
            kind,
            name,
            attributes,
        }))
    }
}

fn unescape_entities(value: &str) -> String {
    value
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

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
