//! `org.freedesktop.DBus.ObjectManager` at `/org/adoptd1`: every service
//! object with all its properties in one `GetManagedObjects`, and
//! `InterfacesAdded`/`InterfacesRemoved` as service objects come and go.
//!
//! adoptd serves its own rather than zbus's, which builds a map of every
//! property of every object before it writes the reply (about 10 kB an
//! object: 150 MB and more for ten thousand services). This one writes the
//! reply straight from a copy of each service's registry entry (an `Arc`
//! of its configuration and a few words), one object's properties at a
//! time, so the reply's own bytes are the only thing that grows with it.
//!
//! Invariants:
//!
//! - An object's properties are those `GetAll` gives for it, with the same
//!   values ([`properties`] lists them; a test holds the two together).
//! - The reply is written from data copied before writing begins, so the
//!   registry's lock is never held while megabytes are written, and the
//!   bus task applying updates meanwhile cannot change a reply half-way.
//! - `PIDs` and `NeedDaemonReload` come from one snapshot of every service
//!   ([`super::snapshot`]); a service that changed since it was taken is
//!   read alone, as for any caller.
//! - The managed objects are the service objects published on the
//!   connection; the parents above them carry only the standard
//!   interfaces, which the specification leaves out, and are not listed.
//! - `InterfacesAdded` is sent for a service object published once the
//!   name has been claimed: the objects published before it are what a
//!   client's first `GetManagedObjects` finds.

use std::{collections::HashMap, io::Cursor, sync::Arc};

use adoptd_dbus::SERVICE_INTERFACE;
use serde::ser::{Serialize, SerializeMap, Serializer};
use zbus::{
    BoxDBusError, Connection, Message, ObjectPath, OwnedObjectPath, OwnedVariant, Signature, Type,
    Variant, interface,
    message::{Builder, Flags, Header},
    object_server::SignalEmitter,
    wire::serialized::Data,
};

use super::{
    Entry, Shared, changed_properties, configured,
    service::{Caller, need_daemon_reload_now, pids_now},
    snapshot::{Reading, Snapshots},
};
use crate::tracker::{Changes, ServiceId};

/// The ObjectManager object.
pub(super) struct ObjectManager {
    pub(super) shared: Arc<Shared>,
}

#[interface(
    name = "org.freedesktop.DBus.ObjectManager",
    introspection_docs = false
)]
impl ObjectManager {
    /// Every service object, with the properties `GetAll` gives for it.
    ///
    /// adoptd's dispatch answers this call with [`answer_get_managed_objects`],
    /// which writes the same reply once; this method gives the interface
    /// its member (introspection, the generated code).
    async fn get_managed_objects(&self) -> zbus::fdo::Result<ManagedObjects> {
        ManagedObjects::read(&self.shared).await
    }

    /// A new object, or new interfaces of one, with their properties.
    #[zbus(signal)]
    pub(super) async fn interfaces_added(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces_and_properties: &Interfaces<'_>,
    ) -> zbus::Result<()>;

    /// An object gone, or interfaces of one.
    #[zbus(signal)]
    pub(super) async fn interfaces_removed(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces: &[&str],
    ) -> zbus::Result<()>;
}

/// Sends `InterfacesAdded` for `service`'s object, its properties read
/// now.
pub(super) async fn announce_added(
    emitter: &SignalEmitter<'_>,
    shared: &Arc<Shared>,
    service: ServiceId,
) -> zbus::Result<()> {
    let Some(object) = Object::read(shared, service, Read::Alone).await? else {
        return Ok(());
    };
    ObjectManager::interfaces_added(emitter, object.path.as_ref(), &Interfaces(&object)).await
}

/// Sends `InterfacesRemoved` for the service object at `path`.
pub(super) async fn announce_removed(
    emitter: &SignalEmitter<'_>,
    path: ObjectPath<'_>,
) -> zbus::Result<()> {
    ObjectManager::interfaces_removed(emitter, path, &[SERVICE_INTERFACE]).await
}

/// How `PIDs` and `NeedDaemonReload` are read for an [`Object`].
#[derive(Clone, Copy)]
enum Read {
    /// From the snapshot of every service, unless the service changed
    /// since it was taken.
    Snapshot,
    /// For this service alone, without a turn (an announcement).
    Alone,
}

/// One service object as it is written: a copy of its registry entry and
/// its expensive properties.
pub(super) struct Object {
    path: OwnedObjectPath,
    entry: Entry,
    reading: Reading,
}

impl Object {
    /// `service`'s object as it is now; `None` if it is gone.
    async fn read(
        shared: &Arc<Shared>,
        service: ServiceId,
        read: Read,
    ) -> zbus::fdo::Result<Option<Object>> {
        let snapshot = match read {
            Read::Snapshot => Snapshots::reading(shared, service)
                .await
                .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?,
            Read::Alone => None,
        };
        // GetManagedObjects' reads share the snapshot's turn (its calls
        // name no caller); an announcement is adoptd's own and takes none,
        // so the bus task that sends it never waits behind readers.
        let caller = match read {
            Read::Snapshot => Some(Caller::snapshot()),
            Read::Alone => None,
        };
        let reading = match snapshot {
            Some(reading) => reading,
            None => Reading {
                pids: pids_now(shared, service, caller.as_ref()).await?,
                need_daemon_reload: need_daemon_reload_now(shared, service, caller.as_ref())
                    .await?,
            },
        };
        let Some(entry) = shared.registry().get(service).cloned() else {
            return Ok(None);
        };
        Ok(Some(Object {
            path: adoptd_dbus::service_path(&entry.spec.name),
            entry,
            reading,
        }))
    }
}

/// Every property of a service object, by name, with the value `GetAll`
/// gives for it.
fn properties(object: &Object) -> Vec<(&'static str, Variant<'static>)> {
    let entry = &object.entry;
    let spec = &entry.spec;
    let mut properties = vec![
        ("Name", Variant::from(spec.name.clone())),
        (
            "Template",
            Variant::from(spec.template().unwrap_or(&spec.name).to_owned()),
        ),
        (
            "Instance",
            Variant::from(spec.instance().unwrap_or_default().to_owned()),
        ),
        ("PIDs", Variant::from(object.reading.pids.clone())),
        (
            "NeedDaemonReload",
            Variant::from(object.reading.need_daemon_reload),
        ),
    ];
    // The status's and the configuration's, as their changes announce them.
    properties.extend(changed_properties(&entry.status, Changes::ALL));
    properties.extend(configured::properties(entry));
    properties
}

/// Answers `call`, a `GetManagedObjects`, on `connection`.
///
/// zbus's generated code would write the reply into a vector that grows
/// by doubling, then copy it behind the header: for ten thousand objects
/// a 13 MB reply took 30 MB and more at its peak, half of adoptd's memory
/// budget. This one measures the reply first (one more pass of the
/// serializer, a few milliseconds) and writes it once, header and body,
/// into a buffer of its exact size.
pub(super) async fn answer_get_managed_objects(
    connection: &Connection,
    shared: &Arc<Shared>,
    call: &Header<'_>,
) -> Result<(), BoxDBusError> {
    // As zbus's generated code: a caller that wants no reply gets none.
    if call.primary().flags().contains(Flags::NO_REPLY_EXPECTED) {
        return Ok(());
    }
    let objects = ManagedObjects::read(shared).await?;
    let mut reply = Message::method_return(call);
    // As zbus's replies are (`Connection::reply`); a broker sets it anyway.
    if let Some(name) = connection.unique_name() {
        reply = reply.sender(name);
    }
    let reply = written_once(reply, &objects)?;
    drop(objects);
    connection.send(&reply).await?;
    Ok(())
}

/// The D-Bus specification's largest message: 128 MiB.
const MAX_MESSAGE_BYTES: usize = 1 << 27;

/// The message `reply` builds, carrying `body`, written in one buffer of
/// its exact size: zbus's header (its serial, the reply's fields), then
/// the body as zbus serializes it.
fn written_once<B: Serialize + Type>(reply: Builder<'_>, body: &B) -> zbus::Result<Message> {
    // SAFETY: this message only lends its header, whose body length is
    // set below; the message sent is checked whole by `from_bytes`.
    let head = unsafe { reply.build_raw_body(&[], B::SIGNATURE, vec![])? };
    let head = head.data();
    // The body starts 8-aligned behind the header: aligned from 0 as in
    // zbus's own builder.
    let context = head.context();
    let body_len = zbus::wire::serialized_size(context, body)?.size();
    let total = head.len() + body_len;
    let body_len_field = u32::try_from(body_len).map_err(|_| zbus::Error::ExcessData)?;
    if total > MAX_MESSAGE_BYTES {
        return Err(zbus::Error::ExcessData);
    }
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(head);
    // The primary header: endianness, type, flags, version, then the
    // body's length.
    let field = bytes.get_mut(4..8).ok_or(zbus::Error::ExcessData)?;
    context.endian().write_u32(field, body_len_field);
    let mut cursor = Cursor::new(&mut bytes);
    cursor.set_position(head.len() as u64);
    // SAFETY: the body carries no file descriptor.
    unsafe { zbus::wire::to_writer(&mut cursor, context, body)? };
    debug_assert_eq!(bytes.len(), total);
    // SAFETY: zbus wrote both parts, the header naming the body's
    // signature and length; `from_bytes` parses and checks the header.
    unsafe { Message::from_bytes(Data::new(bytes, context)) }
}

/// `GetManagedObjects`' reply: `a{oa{sa{sv}}}`.
pub(super) struct ManagedObjects(Vec<Object>);

impl ManagedObjects {
    /// Every published service object as it is now.
    async fn read(shared: &Arc<Shared>) -> zbus::fdo::Result<ManagedObjects> {
        let published: Vec<ServiceId> = shared
            .registry()
            .entries()
            .filter(|e| e.published)
            .map(|e| e.id)
            .collect();
        let mut objects = Vec::with_capacity(published.len());
        for service in published {
            if let Some(object) = Object::read(shared, service, Read::Snapshot).await? {
                objects.push(object);
            }
        }
        Ok(ManagedObjects(objects))
    }
}

impl Type for ManagedObjects {
    const SIGNATURE: &'static Signature = <HashMap<
        OwnedObjectPath,
        HashMap<String, HashMap<String, OwnedVariant>>,
    > as Type>::SIGNATURE;
}

impl Serialize for ManagedObjects {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for object in &self.0 {
            map.serialize_entry(&object.path, &Interfaces(object))?;
        }
        map.end()
    }
}

/// One object's interfaces with their properties: `a{sa{sv}}`.
pub(super) struct Interfaces<'a>(&'a Object);

impl Type for Interfaces<'_> {
    const SIGNATURE: &'static Signature =
        <HashMap<String, HashMap<String, OwnedVariant>> as Type>::SIGNATURE;
}

impl Serialize for Interfaces<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(SERVICE_INTERFACE, &Properties(properties(self.0)))?;
        map.end()
    }
}

/// One interface's properties: `a{sv}`, made while it is written.
struct Properties(Vec<(&'static str, Variant<'static>)>);

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_reply_written_once_is_the_message_zbus_builds_but_for_its_serial() {
        let call = Message::method_call("/org/adoptd1", "GetManagedObjects")
            .interface("org.freedesktop.DBus.ObjectManager")
            .sender(":1.7")
            .build(&())
            .expect("a call");
        let body: BTreeMap<String, (u32, Vec<String>)> = (0..500)
            .map(|n| (format!("s{n}"), (n, vec!["x".repeat(n as usize % 13); 3])))
            .collect();
        let reply = || Message::method_return(&call.header()).sender(":1.9");
        let ours = written_once(reply(), &body).expect("written once");
        let zbus = reply().build(&body).expect("built by zbus");
        let (ours, zbus) = (ours.data().to_vec(), zbus.data().to_vec());
        assert_eq!(ours.len(), zbus.len());
        // Bytes 8..12 are the serial, which zbus gives each message.
        assert_eq!(ours[..8], zbus[..8]);
        assert_eq!(ours[12..], zbus[12..]);
        let read: BTreeMap<String, (u32, Vec<String>)> = written_once(reply(), &body)
            .and_then(|reply| reply.body().deserialize())
            .expect("read back");
        assert_eq!(read, body);
    }
}
