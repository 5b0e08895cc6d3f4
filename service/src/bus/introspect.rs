//! `org.freedesktop.DBus.Introspectable` on every object of adoptd
//! ([`super::objects`]).
//!
//! A parent lists its children as empty `<node name="…"/>` elements, as
//! the D-Bus specification describes: a client introspects a child to
//! learn its interfaces. (zbus's object server wrote into a parent's reply
//! the whole introspection of every object below it, so the reply at `/`
//! or `/org/adoptd1` grew with every service, and busctl's parser printed
//! warnings on it.)
//!
//! Invariants:
//!
//! - The XML of each interface is what zbus's `#[interface]` code writes
//!   for the interface served at that path (`Interface::introspect_to_writer`
//!   of the type that answers its calls), so it cannot drift from what is
//!   served; interfaces are listed by name, as zbus's object server did.
//! - The children are those of what is served: the Manager's path, and the
//!   service objects the registry marks as published on this connection.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::Arc,
};

use adoptd_dbus::{MANAGER_PATH, SERVICE_PATH_PREFIX};
use zbus::{interface, object_server::Interface};

use super::{
    Shared,
    manager::Manager,
    object_manager::ObjectManager,
    objects::{Object, Own},
    service::Service,
    standard::{Peer, Properties},
};

/// The Introspectable of one object, for one call.
pub(super) struct Introspectable {
    pub(super) shared: Arc<Shared>,
    pub(super) object: Object,
}

#[interface(
    name = "org.freedesktop.DBus.Introspectable",
    introspection_docs = false
)]
impl Introspectable {
    /// This object's interfaces, and its children as empty nodes.
    fn introspect(&self) -> String {
        let mut interfaces = BTreeMap::new();
        for written in [
            written(self),
            written(&Peer),
            written(&Properties {
                shared: Arc::clone(&self.shared),
                object: self.object,
            }),
        ] {
            interfaces.insert(written.0, written.1);
        }
        let own = match self.object {
            Object::Parent(_) => vec![],
            Object::Manager => vec![Manager::name(), ObjectManager::name()],
            Object::Service(_) => vec![Service::name()],
        };
        for name in own {
            if let Some(own) = Own::of(Arc::clone(&self.shared), self.object, &name) {
                let mut xml = String::new();
                own.interface().introspect_to_writer(&mut xml, 2);
                interfaces.insert(name.to_string(), xml);
            }
        }

        let mut xml = String::from(HEADER);
        for interface in interfaces.values() {
            xml.push_str(interface);
        }
        for child in self.children() {
            // Writing to a String cannot fail.
            let _ = writeln!(xml, "  <node name=\"{child}\"/>");
        }
        xml.push_str("</node>\n");
        xml
    }
}

impl Introspectable {
    /// The names of the objects right below this one, sorted.
    fn children(&self) -> Vec<String> {
        let path = match self.object {
            Object::Parent(path) => path,
            Object::Manager => MANAGER_PATH,
            Object::Service(_) => return vec![],
        };
        let mut children = BTreeSet::new();
        let registry = self.shared.registry();
        let mut published = registry.entries().filter(|e| e.published).peekable();
        if path == SERVICE_PATH_PREFIX {
            // Escaped labels are one element each, so they need no further
            // escaping in XML either.
            children.extend(published.map(|e| adoptd_dbus::escape_label(&e.spec.name)));
        } else {
            let mut served = vec![MANAGER_PATH];
            if published.peek().is_some() {
                served.push(SERVICE_PATH_PREFIX);
            }
            children.extend(
                served
                    .into_iter()
                    .filter_map(|served| child_below(path, served))
                    .map(str::to_owned),
            );
        }
        children.into_iter().collect()
    }
}

/// The introspection of `interface`, as zbus writes it inside a node.
fn written<I: Interface>(interface: &I) -> (String, String) {
    let mut xml = String::new();
    interface.introspect_to_writer(&mut xml, 2);
    (I::name().to_string(), xml)
}

/// The first element of `path` below `parent`, if `path` is below it.
fn child_below<'a>(parent: &str, path: &'a str) -> Option<&'a str> {
    let rest = match parent {
        "/" => path.strip_prefix('/')?,
        parent => path.strip_prefix(parent)?.strip_prefix('/')?,
    };
    rest.split('/').next().filter(|child| !child.is_empty())
}

/// The start of every reply, as zbus writes it.
const HEADER: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_the_next_element_below_its_parent() {
        assert_eq!(child_below("/", "/org/adoptd1"), Some("org"));
        assert_eq!(child_below("/org", "/org/adoptd1"), Some("adoptd1"));
        assert_eq!(
            child_below("/org/adoptd1", "/org/adoptd1/service"),
            Some("service")
        );
        assert_eq!(child_below("/org/adoptd1", "/org/adoptd1"), None);
        assert_eq!(child_below("/org/adoptd1", "/org/adoptd10/x"), None);
        assert_eq!(child_below("/org/adoptd1/service", "/org/adoptd1"), None);
    }

    #[test]
    fn every_parent_is_an_ancestor_of_the_service_objects() {
        for parent in super::super::objects::PARENTS {
            assert!(
                parent == SERVICE_PATH_PREFIX || child_below(parent, SERVICE_PATH_PREFIX).is_some(),
                "{parent}"
            );
        }
        let depth = SERVICE_PATH_PREFIX.split('/').count();
        assert_eq!(super::super::objects::PARENTS.len(), depth);
    }
}
