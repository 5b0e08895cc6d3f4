//! Keeps the [`View`] current from adoptd's signals, and reconnects.
//!
//! Two match rules cover everything however many services there are:
//! every signal under `/org/adoptd1` (kept only if its sender is the
//! current owner of `org.adoptd1`, so nobody else can fake a state), and
//! `NameOwnerChanged` of `org.adoptd1`. When adoptd appears, one
//! `GetManagedObjects` and one `GetAll` of the manager read everything;
//! a service added later is read with one `GetAll`.
//!
//! Order: each message carries its position on the connection. Signals
//! that arrive while a read is on its way wait for it, and are applied
//! only if they came after its reply. The loop never awaits a reply
//! itself (reads are futures it polls beside the signals), so the signal
//! queue is always drained and the connection never stalls on it.
//!
//! When the bus goes away, the view says adoptd is gone and the follower
//! connects again every [`RETRY`]; when adoptd goes away, the view says
//! so until a new owner of `org.adoptd1` appears.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::Duration,
};

use adoptd_dbus::{BUS_NAME, BusChoice, MANAGER_INTERFACE, MANAGER_PATH, SERVICE_INTERFACE};
use futures_util::{FutureExt, StreamExt, future::LocalBoxFuture, stream::FuturesUnordered};
use zbus::{
    Connection, MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant,
    fdo::PropertiesChanged, message::Sequence, names::OwnedUniqueName,
};

use crate::view::{Adoptd, Service, View};

/// How long to wait before connecting again after the bus was lost.
pub const RETRY: Duration = Duration::from_secs(2);
/// How many signals may wait in the connection's queue: bursts only, the
/// loop drains it.
const QUEUED_SIGNALS: usize = 16384;

/// The view shared with the HTTP side.
pub type SharedView = Arc<Mutex<View>>;

/// Follows adoptd on the bus `choice` names, for ever.
pub async fn run(choice: BusChoice, view: SharedView) {
    loop {
        match adoptd_dbus::choice::connect(&choice).await {
            Ok(bus) => {
                tracing::info!(bus = %bus.name, "connected");
                let mut follower = Follower::new(bus.connection, view.clone());
                let reason = follower.follow().await;
                tracing::warn!(bus = %bus.name, "{reason}; connecting again");
            }
            Err(reason) => tracing::warn!("{reason}; trying again"),
        }
        set_gone(&view);
        tokio::time::sleep(RETRY).await;
    }
}

fn set_gone(view: &SharedView) {
    if let Ok(mut view) = view.lock() {
        view.change(|adoptd| *adoptd = None);
    }
}

type Properties = HashMap<String, OwnedVariant>;
type ManagedObjects = HashMap<OwnedObjectPath, HashMap<String, Properties>>;

/// A read that came back.
enum Read {
    Snapshot {
        owner: OwnedUniqueName,
        adoptd: Adoptd,
        at: Sequence,
    },
    Added {
        owner: OwnedUniqueName,
        path: String,
        service: Option<(Service, Sequence)>,
    },
    Failed {
        owner: OwnedUniqueName,
        reason: String,
    },
}

struct Follower {
    connection: Connection,
    view: SharedView,
    owner: Option<OwnedUniqueName>,
    /// While the snapshot is on its way: every signal since.
    listing: Option<Vec<Message>>,
    /// Services whose `GetAll` is on its way, with their signals since.
    adding: HashMap<String, Vec<Message>>,
    /// Where each known service's read came: older changes are stale.
    read_at: HashMap<String, Sequence>,
    reads: FuturesUnordered<LocalBoxFuture<'static, Read>>,
}

impl Follower {
    fn new(connection: Connection, view: SharedView) -> Self {
        Follower {
            connection,
            view,
            owner: None,
            listing: None,
            adding: HashMap::new(),
            read_at: HashMap::new(),
            reads: FuturesUnordered::new(),
        }
    }

    /// Follows until the connection is lost; why.
    async fn follow(&mut self) -> String {
        let (mut signals, mut owners) = match self.subscribe().await {
            Ok(streams) => streams,
            Err(e) => return format!("cannot subscribe to adoptd's signals: {e}"),
        };
        match self.current_owner().await {
            Ok(Some(owner)) => self.appeared(owner),
            Ok(None) => tracing::warn!("adoptd is not on the bus; waiting for it"),
            Err(e) => return format!("cannot ask the bus for adoptd: {e}"),
        }
        loop {
            tokio::select! {
                message = signals.next() => match message {
                    Some(Ok(message)) => self.on_signal(message),
                    _ => return "lost the bus".to_owned(),
                },
                message = owners.next() => match message {
                    Some(Ok(message)) => self.on_owner_changed(&message),
                    _ => return "lost the bus".to_owned(),
                },
                Some(read) = self.reads.next(), if !self.reads.is_empty() => self.on_read(read),
            }
        }
    }

    async fn subscribe(&self) -> zbus::Result<(MessageStream, MessageStream)> {
        let signals = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .path_namespace(MANAGER_PATH)
            .build()?;
        let owners = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .member("NameOwnerChanged")
            .arg(0, BUS_NAME)
            .build()?;
        let signals = MessageStream::for_match_rule(
            signals,
            &self.connection,
            NonZeroUsize::new(QUEUED_SIGNALS),
        )
        .await?;
        let owners = MessageStream::for_match_rule(owners, &self.connection, None).await?;
        Ok((signals, owners))
    }

    async fn current_owner(&self) -> zbus::Result<Option<OwnedUniqueName>> {
        let reply = self
            .connection
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "GetNameOwner",
                &(BUS_NAME,),
            )
            .await;
        match reply {
            Ok(reply) => Ok(reply.body().deserialize::<OwnedUniqueName>().ok()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A (new) adoptd owns the name: forget the old one, read this one.
    fn appeared(&mut self, owner: OwnedUniqueName) {
        tracing::info!(owner = %owner, "adoptd is on the bus");
        self.owner = Some(owner.clone());
        self.listing = Some(Vec::new());
        self.adding.clear();
        self.read_at.clear();
        self.reads
            .push(read_snapshot(self.connection.clone(), owner).boxed_local());
    }

    fn gone(&mut self) {
        tracing::warn!("adoptd left the bus");
        self.owner = None;
        self.listing = None;
        self.adding.clear();
        self.read_at.clear();
        set_gone(&self.view);
    }

    fn on_owner_changed(&mut self, message: &Message) {
        let Ok((_, _, new_owner)) = message.body().deserialize::<(String, String, String)>() else {
            return;
        };
        if new_owner.is_empty() {
            self.gone();
            return;
        }
        match OwnedUniqueName::try_from(new_owner) {
            Ok(owner) if self.owner.as_ref() != Some(&owner) => self.appeared(owner),
            _ => {}
        }
    }

    fn on_signal(&mut self, message: Message) {
        let header = message.header();
        let from_adoptd = match (header.sender(), &self.owner) {
            (Some(sender), Some(owner)) => sender.as_str() == owner.as_str(),
            _ => false,
        };
        if !from_adoptd {
            return;
        }
        if let Some(waiting) = &mut self.listing {
            waiting.push(message);
            return;
        }
        self.handle(message);
    }

    /// Applies one of adoptd's signals, once no snapshot is on its way.
    fn handle(&mut self, message: Message) {
        let header = message.header();
        let Some(path) = header.path().map(ToString::to_string) else {
            return;
        };
        let member = header
            .member()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let interface = header
            .interface()
            .map(|i| i.as_str().to_owned())
            .unwrap_or_default();
        drop(header);
        match (interface.as_str(), member.as_str()) {
            ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
                if let Some(waiting) = self.adding.get_mut(&path) {
                    waiting.push(message);
                    return;
                }
                self.on_properties_changed(&path, &message);
            }
            (MANAGER_INTERFACE, "ServiceAdded") => {
                let Ok((_, added)) = message.body().deserialize::<(String, OwnedObjectPath)>()
                else {
                    return;
                };
                let added = added.to_string();
                let fresh = self
                    .read_at
                    .get(&added)
                    .is_some_and(|read_at| *read_at > message.recv_position());
                if !fresh
                    && !self.adding.contains_key(&added)
                    && let Some(owner) = self.owner.clone()
                {
                    self.adding.insert(added.clone(), Vec::new());
                    self.reads
                        .push(read_added(self.connection.clone(), owner, added).boxed_local());
                }
            }
            (MANAGER_INTERFACE, "ServiceRemoved") => {
                let Ok((_, removed)) = message.body().deserialize::<(String, OwnedObjectPath)>()
                else {
                    return;
                };
                let removed = removed.to_string();
                self.adding.remove(&removed);
                self.read_at.remove(&removed);
                self.with_adoptd(|adoptd| {
                    adoptd.services.remove(&removed);
                });
            }
            _ => {}
        }
    }

    fn on_properties_changed(&mut self, path: &str, message: &Message) {
        let Some(changed) = PropertiesChanged::from_message(message.clone()) else {
            return;
        };
        let Ok(args) = changed.args() else {
            return;
        };
        let properties = args
            .changed_properties
            .iter()
            .map(|(name, value)| (*name, value));
        if path == MANAGER_PATH && args.interface_name.as_str() == MANAGER_INTERFACE {
            self.with_adoptd(|adoptd| adoptd.set_manager(properties));
            return;
        }
        if args.interface_name.as_str() != SERVICE_INTERFACE {
            return;
        }
        let current = self
            .read_at
            .get(path)
            .is_some_and(|read_at| message.recv_position() > *read_at);
        if current {
            self.with_adoptd(|adoptd| {
                if let Some(service) = adoptd.services.get_mut(path) {
                    service.apply(properties);
                }
            });
        }
    }

    fn on_read(&mut self, read: Read) {
        match read {
            Read::Snapshot { owner, adoptd, at } => {
                if self.owner.as_ref() != Some(&owner) {
                    return;
                }
                self.read_at = adoptd
                    .services
                    .keys()
                    .map(|path| (path.clone(), at))
                    .collect();
                tracing::info!(services = adoptd.services.len(), "read adoptd's services");
                if let Ok(mut view) = self.view.lock() {
                    view.change(|current| *current = Some(adoptd));
                }
                for message in self.listing.take().unwrap_or_default() {
                    self.handle(message);
                }
            }
            Read::Added {
                owner,
                path,
                service,
            } => {
                if self.owner.as_ref() != Some(&owner) {
                    return;
                }
                let waiting = self.adding.remove(&path).unwrap_or_default();
                if let Some((service, at)) = service {
                    self.read_at.insert(path.clone(), at);
                    self.with_adoptd(|adoptd| {
                        adoptd.services.insert(path.clone(), service);
                    });
                }
                for message in waiting {
                    self.handle(message);
                }
            }
            Read::Failed { owner, reason } => {
                if self.owner.as_ref() == Some(&owner) {
                    tracing::warn!("cannot read adoptd's services: {reason}; reading again");
                    self.appeared(owner);
                }
            }
        }
    }

    fn with_adoptd(&self, change: impl FnOnce(&mut Adoptd)) {
        if let Ok(mut view) = self.view.lock() {
            view.change(|adoptd| adoptd.as_mut().map(change));
        }
    }
}

async fn read_snapshot(connection: Connection, owner: OwnedUniqueName) -> Read {
    match snapshot(&connection, &owner).await {
        Ok((adoptd, at)) => Read::Snapshot { owner, adoptd, at },
        Err(e) => {
            // Not at once again: a failing adoptd must not become a loop.
            tokio::time::sleep(RETRY).await;
            Read::Failed {
                owner,
                reason: e.to_string(),
            }
        }
    }
}

/// The manager's properties and every service, and where the services'
/// reply came on the connection.
async fn snapshot(
    connection: &Connection,
    owner: &OwnedUniqueName,
) -> zbus::Result<(Adoptd, Sequence)> {
    let objects = connection
        .call_method(
            Some(owner.as_ref()),
            MANAGER_PATH,
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        )
        .await?;
    let at = objects.recv_position();
    let objects: ManagedObjects = objects.body().deserialize()?;
    let manager = connection
        .call_method(
            Some(owner.as_ref()),
            MANAGER_PATH,
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(MANAGER_INTERFACE,),
        )
        .await?;
    let manager: Properties = manager.body().deserialize()?;
    let mut adoptd = Adoptd::default();
    adoptd.set_manager(
        manager
            .iter()
            .map(|(name, value)| (name.as_str(), &**value)),
    );
    for (path, interfaces) in objects {
        if let Some(properties) = interfaces.get(SERVICE_INTERFACE) {
            let service = Service::read(
                properties
                    .iter()
                    .map(|(name, value)| (name.as_str(), &**value)),
            );
            adoptd.services.insert(path.to_string(), service);
        }
    }
    Ok((adoptd, at))
}

async fn read_added(connection: Connection, owner: OwnedUniqueName, path: String) -> Read {
    let reply = connection
        .call_method(
            Some(owner.as_ref()),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(SERVICE_INTERFACE,),
        )
        .await;
    let service = reply.ok().and_then(|reply| {
        let at = reply.recv_position();
        let properties: Properties = reply.body().deserialize().ok()?;
        Some((
            Service::read(
                properties
                    .iter()
                    .map(|(name, value)| (name.as_str(), &**value)),
            ),
            at,
        ))
    });
    Read::Added {
        owner,
        path,
        service,
    }
}
