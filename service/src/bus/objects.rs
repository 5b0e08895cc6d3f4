//! The objects adoptd serves, and the dispatch of every method call made
//! to them.
//!
//! zbus's object server keeps a node for each object (its path, a map of
//! its interfaces, an instance of each standard interface): about 1.3 kB
//! a service object, a third of what a service cost adoptd in all. adoptd
//! serves its objects itself instead. The tree above the service objects
//! is fixed, and a service object is its registry entry: a call to
//! `/org/adoptd1/service/LABEL` finds the service by name in the registry
//! and makes a [`Service`] for the length of the call (two words). The
//! call then runs zbus's code generated for the interface
//! (`Interface::call`), so arguments, replies and errors are what
//! `#[interface]` makes of them, as under zbus's object server.
//!
//! Invariants:
//!
//! - zbus's object server is never started on adoptd's connection: it
//!   would answer every call too (`Connection::object_server` starts it,
//!   and so does `connection::Builder::serve_at`). The generated code
//!   takes a `&ObjectServer` all the same, for arguments marked
//!   `#[zbus(object_server)]`, which none of adoptd's interfaces has: it
//!   gets that of a connection of its own that carries no call
//!   ([`Dispatch::unused`]).
//! - Every method call is answered once: by the generated code when it
//!   succeeds, else here with its error (an unknown object, interface or
//!   method as zbus names them).
//! - Each call runs in a task of its own, as under zbus's object server,
//!   so a slow call (a turn for `PIDs`, a request to the supervisor) never
//!   holds up another.
//! - The objects are: the parents (`/`, `/org`, `/org/adoptd1/service`,
//!   the last only while it has a child, as zbus made it), the Manager's
//!   at `/org/adoptd1`, and the service objects the registry marks as
//!   published on this connection. `org.freedesktop.DBus.Peer` answers on
//!   any path, as the specification says.

use std::sync::Arc;

use adoptd_dbus::{MANAGER_PATH, SERVICE_PATH_PREFIX};
use futures_util::StreamExt as _;
use tracing::debug;
use zbus::{
    BoxDBusError, Connection, MatchRule, Message, MessageStream, ObjectServer,
    message::{Header, Type},
    names::InterfaceName,
    object_server::{DispatchResult, Interface},
};

use super::{
    Shared,
    introspect::Introspectable,
    manager::Manager,
    object_manager::{self, ObjectManager},
    service::Service,
    standard::{Peer, Properties},
};
use crate::tracker::ServiceId;

/// What is served at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Object {
    /// `/`, `/org` or `/org/adoptd1/service`: only the standard
    /// interfaces, and children.
    Parent(&'static str),
    /// `/org/adoptd1`: the Manager and the ObjectManager.
    Manager,
    /// A service object.
    Service(ServiceId),
}

impl Object {
    /// What is at `path` now; `None` where nothing is.
    pub(super) fn at(shared: &Shared, path: &str) -> Option<Object> {
        if path == MANAGER_PATH {
            return Some(Object::Manager);
        }
        let registry = shared.registry();
        if let Some(parent) = PARENTS.into_iter().find(|parent| *parent == path) {
            // zbus made the service objects' parent with the first of them
            // and removed it with the last: so does adoptd.
            let made = parent != SERVICE_PATH_PREFIX || registry.any_published();
            return made.then_some(Object::Parent(parent));
        }
        let label = path.strip_prefix(SERVICE_PATH_PREFIX)?.strip_prefix('/')?;
        let name = adoptd_dbus::unescape_label(label)?;
        let service = registry.find(&name)?;
        registry
            .is_published(service)
            .then_some(Object::Service(service))
    }
}

/// One of adoptd's own interfaces (not a standard one) of an object, made
/// for one call.
pub(super) enum Own {
    Manager(Manager),
    ObjectManager(ObjectManager),
    Service(Service),
}

impl Own {
    /// `object`'s interface named `name`; `None` when it has none of that
    /// name.
    pub(super) fn of(shared: Arc<Shared>, object: Object, name: &InterfaceName<'_>) -> Option<Own> {
        match object {
            Object::Manager if *name == Manager::name() => Some(Own::Manager(Manager { shared })),
            Object::Manager if *name == ObjectManager::name() => {
                Some(Own::ObjectManager(ObjectManager { shared }))
            }
            Object::Service(id) if *name == Service::name() => {
                Some(Own::Service(Service { id, shared }))
            }
            Object::Parent(_) | Object::Manager | Object::Service(_) => None,
        }
    }

    pub(super) fn interface(&self) -> &dyn Interface {
        match self {
            Own::Manager(manager) => manager,
            Own::ObjectManager(objects) => objects,
            Own::Service(service) => service,
        }
    }
}

/// The parents of the service objects, from the root down.
pub(super) const PARENTS: [&str; 4] = ["/", "/org", MANAGER_PATH, SERVICE_PATH_PREFIX];

/// Answers the method calls that reach `connection`, until it closes.
///
/// Runs before the name is claimed, so that whoever sees the name finds
/// every object.
pub(super) async fn serve(
    connection: &Connection,
    shared: &Arc<Shared>,
) -> zbus::Result<tokio::task::JoinHandle<()>> {
    let calls = MessageStream::for_match_rule(
        MatchRule::builder().msg_type(Type::MethodCall).build()?,
        connection,
        None,
    )
    .await?;
    let dispatch = Arc::new(Dispatch {
        connection: connection.clone(),
        shared: Arc::clone(shared),
        unused: unused_connection().await?,
    });
    Ok(tokio::spawn(dispatch.run(calls)))
}

/// What every call's task shares.
pub(super) struct Dispatch {
    connection: Connection,
    shared: Arc<Shared>,
    /// A connection to nobody, whose object server is the one the
    /// generated code is handed: it serves nothing and gets no call.
    unused: (Connection, Connection),
}

impl Dispatch {
    async fn run(self: Arc<Self>, mut calls: MessageStream) {
        while let Some(call) = calls.next().await {
            match call {
                Ok(call) => {
                    tokio::spawn(Arc::clone(&self).answer(call));
                }
                // A message zbus could not read; the next may be fine.
                Err(e) => debug!("cannot read a method call: {e}"),
            }
        }
    }

    /// Answers one call: the generated code replies on success, this on
    /// an error.
    async fn answer(self: Arc<Self>, call: Message) {
        let header = call.header();
        if let Err(e) = self.dispatch(&call, &header).await
            && let Err(e) = self.connection.reply_dbus_error(&header, e).await
        {
            debug!("cannot answer a method call: {e}");
        }
    }

    async fn dispatch(&self, call: &Message, header: &Header<'_>) -> Result<(), BoxDBusError> {
        let failed = |what: &str| zbus::fdo::Error::Failed(format!("Missing {what}"));
        let path = header.path().ok_or_else(|| failed("object path"))?;
        let interface = header.interface().ok_or_else(|| failed("interface"))?;
        let member = header.member().ok_or_else(|| failed("member"))?;
        if *interface == Peer::name() {
            return self.call(&Peer, call, member).await;
        }
        let object = Object::at(&self.shared, path.as_str())
            .ok_or_else(|| zbus::fdo::Error::UnknownObject(format!("Unknown object '{path}'")))?;
        let shared = Arc::clone(&self.shared);
        if *interface == Properties::name() {
            return self
                .call(&Properties { shared, object }, call, member)
                .await;
        }
        if *interface == Introspectable::name() {
            return self
                .call(&Introspectable { shared, object }, call, member)
                .await;
        }
        if object == Object::Manager
            && *interface == ObjectManager::name()
            && member.as_str() == "GetManagedObjects"
        {
            return object_manager::answer_get_managed_objects(&self.connection, &shared, header)
                .await;
        }
        let own = Own::of(shared, object, interface).ok_or_else(|| unknown_interface(interface))?;
        self.call(own.interface(), call, member).await
    }

    /// Runs a method of `interface` by its generated code.
    async fn call(
        &self,
        interface: &dyn Interface,
        call: &Message,
        member: &zbus::names::MemberName<'_>,
    ) -> Result<(), BoxDBusError> {
        match interface.call(self.server(), &self.connection, call, member.clone()) {
            DispatchResult::Async(answer) => answer.await,
            // adoptd's interfaces have no `&mut self` method.
            DispatchResult::NotFound | DispatchResult::RequiresMut => {
                Err(zbus::fdo::Error::UnknownMethod(format!("Unknown method '{member}'")).into())
            }
        }
    }

    /// The object server the generated code is handed (see the module's
    /// invariants).
    fn server(&self) -> &ObjectServer {
        self.unused.0.object_server()
    }
}

/// zbus's error for an interface the object does not have.
pub(super) fn unknown_interface(name: &InterfaceName<'_>) -> BoxDBusError {
    zbus::fdo::Error::UnknownInterface(format!("Unknown interface '{name}'")).into()
}

/// Both ends of a connection over a socket pair, which nothing is sent
/// on.
async fn unused_connection() -> zbus::Result<(Connection, Connection)> {
    let (one, other) = std::os::unix::net::UnixStream::pair()?;
    let guid = zbus::Guid::generate();
    tokio::try_join!(
        zbus::connection::Builder::unix_stream(one)
            .server(guid)
            .p2p()
            .build(),
        zbus::connection::Builder::unix_stream(other).p2p().build(),
    )
}
