//! `org.freedesktop.DBus.Introspectable` on the objects above the service
//! objects: `/`, `/org`, `/org/adoptd1` and `/org/adoptd1/service`.
//!
//! zbus's own Introspectable writes into a parent's reply the whole
//! introspection of every object below it, so the reply at `/` or
//! `/org/adoptd1` grows with every service, and busctl's parser prints
//! warnings on it. On these parents adoptd serves its own
//! ([`Parent`]): the parent's own interfaces, then each child as an empty
//! `<node name="…"/>`, as the D-Bus specification describes; a client
//! introspects a child to learn its interfaces. Service objects have no
//! children and keep zbus's.
//!
//! Invariants:
//!
//! - The XML of each interface is what zbus's `#[interface]` code writes
//!   for the interface served at that path, so it cannot drift from what
//!   is served; only `Peer`'s is a copy, because zbus keeps that type
//!   private (a test compares it with zbus's on a service object). zbus
//!   offers no list of a path's interfaces, so [`Parent`] asks for each
//!   type that adoptd serves on a parent: a new interface there must be
//!   added to it.
//! - The children are those of what is served: the Manager's path, and the
//!   service objects the registry marks as published on this connection.
//! - zbus removes `/org/adoptd1/service` with its last service object and
//!   makes it again, with zbus's Introspectable, for the next one; so
//!   [`serve`] runs after every service object is served, and puts
//!   [`Parent`] back wherever it is missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::Arc,
};

use adoptd_dbus::{MANAGER_PATH, SERVICE_PATH_PREFIX};
use zbus::{ObjectServer, fdo, interface, names::InterfaceName, object_server::Interface};

use super::{Shared, manager::Manager, object_manager::ObjectManager};

/// The objects whose introspection lists children: every ancestor of the
/// service objects.
const PARENTS: [&str; 4] = ["/", "/org", MANAGER_PATH, SERVICE_PATH_PREFIX];

/// Serves [`Parent`] on every parent object that exists and lacks it.
///
/// Cheap when nothing is missing (a lookup per parent), so it may run after
/// each service object is served.
pub(super) async fn serve(server: &ObjectServer, shared: &Arc<Shared>) -> zbus::Result<()> {
    for path in PARENTS {
        if server.interface::<_, Parent>(path).await.is_ok() {
            continue;
        }
        match server.remove_named(path, Parent::name()).await {
            // No object there (yet), or a swap that failed half-way.
            Ok(_) | Err(zbus::Error::InterfaceNotFound) => {}
            Err(e) => return Err(e),
        }
        let parent = Parent {
            path,
            shared: Arc::clone(shared),
        };
        // Where there is no object, zbus makes one with its own
        // Introspectable, so refuses this one, and removes the object again.
        server.at(path, parent).await?;
    }
    Ok(())
}

/// The Introspectable of a parent object.
pub(super) struct Parent {
    path: &'static str,
    shared: Arc<Shared>,
}

#[interface(
    name = "org.freedesktop.DBus.Introspectable",
    introspection_docs = false
)]
impl Parent {
    /// This object's interfaces, and its children as empty nodes.
    async fn introspect(&self, #[zbus(object_server)] server: &ObjectServer) -> String {
        // By name, as zbus orders them.
        let mut interfaces = BTreeMap::from([
            written(self),
            written(&fdo::Properties),
            (PEER.0, PEER.1.to_owned()),
        ]);
        if let Ok(manager) = server.interface::<_, Manager>(self.path).await {
            let (name, xml) = written(&*manager.get().await);
            interfaces.insert(name, xml);
        }
        if let Ok(objects) = server.interface::<_, ObjectManager>(self.path).await {
            let (name, xml) = written(&*objects.get().await);
            interfaces.insert(name, xml);
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

impl Parent {
    /// The names of the objects right below this one, sorted.
    fn children(&self) -> Vec<String> {
        let mut children = BTreeSet::new();
        let registry = self.shared.registry();
        let mut published = registry.entries().filter(|e| e.published).peekable();
        if self.path == SERVICE_PATH_PREFIX {
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
                    .filter_map(|path| child_below(self.path, path))
                    .map(str::to_owned),
            );
        }
        children.into_iter().collect()
    }
}

/// The introspection of `interface`, as zbus writes it inside a node.
fn written<I: Interface>(interface: &I) -> (InterfaceName<'static>, String) {
    let mut xml = String::new();
    interface.introspect_to_writer(&mut xml, 2);
    (I::name(), xml)
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

/// `org.freedesktop.DBus.Peer` as zbus writes it at level 2: zbus's type
/// is private.
const PEER: (InterfaceName<'static>, &str) = (
    InterfaceName::from_static_str_unchecked("org.freedesktop.DBus.Peer"),
    r#"  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping">
    </method>
    <method name="GetMachineId">
      <arg type="s" direction="out"/>
    </method>
  </interface>
"#,
);

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
        for parent in PARENTS {
            assert!(
                parent == SERVICE_PATH_PREFIX || child_below(parent, SERVICE_PATH_PREFIX).is_some(),
                "{parent}"
            );
        }
        let depth = SERVICE_PATH_PREFIX.split('/').count();
        assert_eq!(PARENTS.len(), depth);
    }
}
