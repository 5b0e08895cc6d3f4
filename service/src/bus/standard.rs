//! The standard interfaces every object of adoptd has besides
//! `Introspectable` ([`super::introspect`]): `org.freedesktop.DBus.Peer`
//! and `org.freedesktop.DBus.Properties`, as zbus's object server serves
//! them on its objects (the same members, arguments and errors), over
//! adoptd's objects ([`super::objects`]).

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use zbus::{
    BoxDBusError, Connection, ObjectServer, OwnedVariant, Variant, fdo, interface,
    message::Header,
    names::InterfaceName,
    object_server::{DispatchResult, Interface, SignalEmitter},
};

use super::{
    Shared,
    introspect::Introspectable,
    objects::{Object, Own, unknown_interface},
};

/// `org.freedesktop.DBus.Peer`.
pub(super) struct Peer;

#[interface(name = "org.freedesktop.DBus.Peer", introspection_docs = false)]
impl Peer {
    fn ping(&self) {}

    fn get_machine_id(&self) -> fdo::Result<String> {
        // Where the reference implementation looks, in its order.
        ["/var/lib/dbus/machine-id", "/etc/machine-id"]
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
            .map(|id| id.trim_end().to_owned())
            .ok_or_else(|| fdo::Error::Failed("This machine has no machine id.".to_owned()))
    }
}

/// `org.freedesktop.DBus.Properties` of one object, for one call.
pub(super) struct Properties {
    pub(super) shared: Arc<Shared>,
    pub(super) object: Object,
}

#[interface(name = "org.freedesktop.DBus.Properties", introspection_docs = false)]
impl Properties {
    async fn get(
        &self,
        interface_name: InterfaceName<'_>,
        property_name: &str,
        #[zbus(connection)] connection: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedVariant, BoxDBusError> {
        if is_standard(&interface_name) {
            return Err(unknown_property(property_name));
        }
        let own = self.own(&interface_name)?;
        own.interface()
            .get(property_name, server, connection, Some(&header), &emitter)
            .await
            .unwrap_or_else(|| Err(unknown_property(property_name)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn set(
        &self,
        interface_name: InterfaceName<'_>,
        property_name: &str,
        value: Variant<'_>,
        #[zbus(connection)] connection: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), BoxDBusError> {
        if is_standard(&interface_name) {
            return Err(unknown_property(property_name));
        }
        let own = self.own(&interface_name)?;
        let set = own.interface().set(
            property_name,
            &value,
            server,
            connection,
            Some(&header),
            &emitter,
        );
        match set {
            DispatchResult::Async(set) => set.await,
            // zbus says "not found" of a property without a setter too,
            // and no property of adoptd's has one.
            DispatchResult::NotFound if declares_property(&own, property_name) => {
                Err(read_only(property_name))
            }
            DispatchResult::NotFound => Err(unknown_property(property_name)),
            // adoptd's interfaces have no property a `&mut self` sets.
            DispatchResult::RequiresMut => Err(read_only(property_name)),
        }
    }

    async fn get_all(
        &self,
        interface_name: InterfaceName<'_>,
        #[zbus(connection)] connection: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<HashMap<String, OwnedVariant>, BoxDBusError> {
        if is_standard(&interface_name) {
            return Ok(HashMap::new());
        }
        let own = self.own(&interface_name)?;
        Ok(own
            .interface()
            .get_all(server, connection, Some(&header), &emitter)
            .await?)
    }

    /// The one signal of every change (see `bus::Publisher`).
    #[zbus(signal)]
    pub(super) async fn properties_changed(
        emitter: &SignalEmitter<'_>,
        interface_name: InterfaceName<'_>,
        changed_properties: HashMap<&str, Variant<'_>>,
        invalidated_properties: Cow<'_, [&str]>,
    ) -> zbus::Result<()>;
}

impl Properties {
    /// The object's interface named `name`; zbus's error when it has none.
    fn own(&self, name: &InterfaceName<'_>) -> Result<Own, BoxDBusError> {
        Own::of(Arc::clone(&self.shared), self.object, name).ok_or_else(|| unknown_interface(name))
    }
}

/// Whether `name` is one of the standard interfaces, which every object
/// has and which have no properties.
fn is_standard(name: &InterfaceName<'_>) -> bool {
    *name == Peer::name() || *name == Properties::name() || *name == Introspectable::name()
}

fn unknown_property(name: &str) -> BoxDBusError {
    fdo::Error::UnknownProperty(format!("Unknown property '{name}'")).into()
}

fn read_only(name: &str) -> BoxDBusError {
    fdo::Error::PropertyReadOnly(format!("Property '{name}' is read-only")).into()
}

/// Whether the interface `own` serves declares property `name` (its
/// introspection, as zbus writes it: asked only of a `Set`, which is
/// rare, and without reading the property).
fn declares_property(own: &Own, name: &str) -> bool {
    let mut xml = String::new();
    own.interface().introspect_to_writer(&mut xml, 0);
    xml.contains(&format!("<property name=\"{name}\" "))
}
