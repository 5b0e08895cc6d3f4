//! The applet's side of the bus: one connection, adoptd's signals turned
//! into [`BusEvent`]s, and the window's [`Request`]s carried out.
//!
//! - [`choice`]: which bus (adoptctl's rules);
//! - [`decode`]: messages into plain types.
//!
//! It runs on a tokio runtime in a thread of its own ([`spawn`]), and talks
//! to the window only through the two channels. Two match rules cover
//! everything, however many services there are: every signal under
//! `/org/adoptd1` from anyone (then kept only if its sender owns
//! `org.adoptd1`, so nobody else can fake a state), and `NameOwnerChanged`
//! of `org.adoptd1`.
//!
//! Order. Each message received carries its position on the connection.
//! A service's properties are read with `GetAll`; a `PropertiesChanged`
//! received before that reply is older than it and dropped, one received
//! after is applied; signals that come while a read is on its way wait
//! for it. The loop never awaits a reply itself (replies come back as
//! messages to the loop), so the signal queue is always drained and the
//! connection can never stall on a full queue.

pub mod choice;
pub mod decode;

use std::{collections::HashMap, num::NonZeroUsize, time::Duration};

use adoptd_dbus::{BUS_NAME, MANAGER_PATH, ManagerProxy, SERVICE_INTERFACE, ServiceProxy};
use futures_util::{FutureExt, StreamExt, stream::FuturesUnordered};
use tokio::sync::mpsc;
use zbus::{
    Connection, MatchRule, Message, MessageStream,
    message::Sequence,
    names::OwnedUniqueName,
    proxy::{CacheProperties, MethodFlags},
};

pub use self::choice::Choice;
use self::decode::Signal;
use crate::event::{BusEvent, Control, Request, ServiceSnapshot, now_micros};

/// How many signals may wait in the queue of the connection; the loop
/// drains it faster than adoptd fills it, so this only absorbs bursts
/// (a thousand services starting at once).
const QUEUED_SIGNALS: usize = 8192;
/// How many `GetAll` calls are on their way at once while listing.
const PARALLEL_READS: usize = 32;
/// How long to wait before trying a bus again after it was lost, or
/// another bus while adoptd is not on this one (automatic choice only).
const RETRY: Duration = Duration::from_secs(2);

/// Starts the bus side on its own thread. Events go to `events`; requests
/// are read from the returned sender's other end. The thread ends when
/// the window drops its ends of both channels.
pub fn spawn(
    choice: Choice,
    events: mpsc::UnboundedSender<BusEvent>,
) -> std::io::Result<mpsc::UnboundedSender<Request>> {
    let (requests, incoming) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("bus".to_owned())
        .spawn(move || runtime.block_on(run(choice, events, incoming)))?;
    Ok(requests)
}

/// Connects, follows adoptd until the bus is lost, and again, until the
/// window goes away.
pub async fn run(
    choice: Choice,
    events: mpsc::UnboundedSender<BusEvent>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    loop {
        let bus = match choice::connect(&choice).await {
            Ok(bus) => bus,
            Err(reason) => {
                if events.send(BusEvent::AdoptdGone { reason }).is_err() {
                    return;
                }
                if !refuse_until(&mut requests, RETRY).await {
                    return;
                }
                continue;
            }
        };
        if events
            .send(BusEvent::Connected {
                bus: bus.name.clone(),
            })
            .is_err()
        {
            return;
        }
        let mut follower = Follower::new(bus.connection, bus.name, &events);
        let end = follower.follow(&mut requests, choice.may_move()).await;
        drop(follower);
        match end {
            End::WindowGone => return,
            End::BusLost(reason) => {
                if events.send(BusEvent::AdoptdGone { reason }).is_err() {
                    return;
                }
                if !refuse_until(&mut requests, RETRY).await {
                    return;
                }
            }
            End::LookElsewhere => {}
        }
    }
}

/// Answers requests with "not running" for `wait`; false if the window
/// went away meanwhile.
async fn refuse_until(requests: &mut mpsc::UnboundedReceiver<Request>, wait: Duration) -> bool {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return true,
            request = requests.recv() => match request {
                Some(request) => refuse(request, "adoptd is not running"),
                None => return false,
            },
        }
    }
}

fn refuse(request: Request, why: &str) {
    match request {
        Request::Control { reply, .. } => {
            reply.send(Err(why.to_owned())).ok();
        }
        Request::Pids { reply, .. } => {
            reply.send(Err(why.to_owned())).ok();
        }
    }
}

/// Why following stopped.
enum End {
    WindowGone,
    BusLost(String),
    /// adoptd is not on this bus, and the automatic choice may find it on
    /// another.
    LookElsewhere,
}

/// A read that came back to the loop.
enum Read {
    /// `ListServices` then `GetAll` of each, for adoptd's `owner`.
    Snapshot {
        owner: OwnedUniqueName,
        services: Vec<(ServiceSnapshot, Sequence)>,
    },
    /// `GetAll` of one service after `ServiceAdded`; `None` if it was gone
    /// by then.
    Added {
        owner: OwnedUniqueName,
        path: String,
        service: Option<(ServiceSnapshot, Sequence)>,
    },
    Failed {
        owner: OwnedUniqueName,
        reason: String,
    },
}

/// The state of one connection.
struct Follower<'a> {
    connection: Connection,
    bus: String,
    events: &'a mpsc::UnboundedSender<BusEvent>,
    /// adoptd's unique name, while it is on the bus.
    owner: Option<OwnedUniqueName>,
    /// While the snapshot is on its way: every signal since, in order.
    listing: Option<Vec<Message>>,
    /// Services whose `GetAll` after `ServiceAdded` is on its way, with
    /// the signals about them received since.
    adding: HashMap<String, Vec<Message>>,
    /// The position of the `GetAll` reply each known service was read
    /// from: older `PropertiesChanged` are stale.
    read_at: HashMap<String, Sequence>,
}

impl<'a> Follower<'a> {
    fn new(
        connection: Connection,
        bus: String,
        events: &'a mpsc::UnboundedSender<BusEvent>,
    ) -> Self {
        Follower {
            connection,
            bus,
            events,
            owner: None,
            listing: None,
            adding: HashMap::new(),
            read_at: HashMap::new(),
        }
    }

    async fn follow(
        &mut self,
        requests: &mut mpsc::UnboundedReceiver<Request>,
        may_move: bool,
    ) -> End {
        let (mut signals, mut owners) = match self.subscribe().await {
            Ok(streams) => streams,
            Err(e) => {
                return End::BusLost(format!("cannot follow adoptd on the {}: {e}", self.bus));
            }
        };
        let mut reads = FuturesUnordered::new();
        let first_owner = owner_of(&self.connection).await;
        if let Some(owner) = first_owner {
            self.owner = Some(owner.clone());
            self.listing = Some(Vec::new());
            reads.push(read_snapshot(self.connection.clone(), owner).boxed_local());
        } else if !self.gone(format!("adoptd is not running on the {}", self.bus)) {
            return End::WindowGone;
        }
        let look_elsewhere = tokio::time::sleep(RETRY);
        tokio::pin!(look_elsewhere);
        loop {
            tokio::select! {
                message = signals.next() => match message {
                    Some(Ok(message)) => {
                        if !self.on_signal(message, &mut reads) {
                            return End::WindowGone;
                        }
                    }
                    _ => return End::BusLost(format!("lost the {}", self.bus)),
                },
                message = owners.next() => match message {
                    Some(Ok(message)) => {
                        if !self.on_owner_changed(&message, &mut reads) {
                            return End::WindowGone;
                        }
                        if self.owner.is_none() {
                            look_elsewhere.as_mut().reset(tokio::time::Instant::now() + RETRY);
                        }
                    }
                    _ => return End::BusLost(format!("lost the {}", self.bus)),
                },
                Some(read) = reads.next(), if !reads.is_empty() => {
                    if !self.on_read(read, &mut reads) {
                        return End::WindowGone;
                    }
                }
                request = requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => return End::WindowGone,
                },
                () = &mut look_elsewhere, if may_move && self.owner.is_none() => {
                    return End::LookElsewhere;
                }
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

    /// Sends an event; false once the window is gone.
    fn send(&self, event: BusEvent) -> bool {
        self.events.send(event).is_ok()
    }

    fn gone(&mut self, reason: String) -> bool {
        self.owner = None;
        self.listing = None;
        self.adding.clear();
        self.read_at.clear();
        self.send(BusEvent::AdoptdGone { reason })
    }

    fn on_owner_changed(&mut self, message: &Message, reads: &mut Reads) -> bool {
        let Ok((_, _, new_owner)) = message.body().deserialize::<(String, String, String)>() else {
            return true;
        };
        if new_owner.is_empty() {
            return self.gone(format!("adoptd is not running on the {}", self.bus));
        }
        let Ok(owner) = OwnedUniqueName::try_from(new_owner) else {
            return true;
        };
        if self.owner.as_ref() == Some(&owner) {
            return true;
        }
        // A new adoptd: what the old one said no longer holds.
        self.adding.clear();
        self.read_at.clear();
        self.owner = Some(owner.clone());
        self.listing = Some(Vec::new());
        reads.push(read_snapshot(self.connection.clone(), owner).boxed_local());
        true
    }

    fn sent_by_adoptd(&self, message: &Message) -> bool {
        let header = message.header();
        match (header.sender(), &self.owner) {
            (Some(sender), Some(owner)) => sender.as_str() == owner.as_str(),
            _ => false,
        }
    }

    fn on_signal(&mut self, message: Message, reads: &mut Reads) -> bool {
        if !self.sent_by_adoptd(&message) {
            return true;
        }
        if let Some(waiting) = &mut self.listing {
            waiting.push(message);
            return true;
        }
        self.handle(message, reads)
    }

    /// Applies one signal from adoptd, once no snapshot is on its way.
    fn handle(&mut self, message: Message, reads: &mut Reads) -> bool {
        let position = message.recv_position();
        match decode::signal(&message) {
            Signal::Changed { path, properties } => {
                if let Some(waiting) = self.adding.get_mut(&path) {
                    waiting.push(message);
                    return true;
                }
                match self.read_at.get(&path) {
                    Some(read_at) if position > *read_at => {
                        self.send(BusEvent::Changed { path, properties })
                    }
                    _ => true,
                }
            }
            Signal::Adopted {
                path,
                pid,
                previous_pid,
            } => {
                if let Some(waiting) = self.adding.get_mut(&path) {
                    waiting.push(message);
                    return true;
                }
                self.send(BusEvent::Adopted {
                    path,
                    pid,
                    previous_pid,
                    at: now_micros(),
                })
            }
            Signal::Exited {
                path,
                pid,
                code,
                signal,
            } => {
                if let Some(waiting) = self.adding.get_mut(&path) {
                    waiting.push(message);
                    return true;
                }
                self.send(BusEvent::Exited {
                    path,
                    pid,
                    code,
                    signal,
                    at: now_micros(),
                })
            }
            Signal::ServiceAdded { path } => {
                let known = self
                    .read_at
                    .get(&path)
                    .is_some_and(|read_at| *read_at > position);
                if !known
                    && !self.adding.contains_key(&path)
                    && let Some(owner) = self.owner.clone()
                {
                    self.adding.insert(path.clone(), Vec::new());
                    reads.push(read_added(self.connection.clone(), owner, path).boxed_local());
                }
                true
            }
            Signal::ServiceRemoved { path } => {
                self.adding.remove(&path);
                let stale = self
                    .read_at
                    .get(&path)
                    .is_some_and(|read_at| *read_at > position);
                if stale {
                    // Removed, then added again and read since.
                    return true;
                }
                self.read_at.remove(&path);
                self.send(BusEvent::Removed { path })
            }
            Signal::Other => true,
        }
    }

    fn on_read(&mut self, read: Read, reads: &mut Reads) -> bool {
        match read {
            Read::Snapshot { owner, services } => {
                if self.owner.as_ref() != Some(&owner) {
                    return true;
                }
                let waiting = self.listing.take().unwrap_or_default();
                self.read_at = services
                    .iter()
                    .map(|(service, position)| (service.path.clone(), *position))
                    .collect();
                let services = services.into_iter().map(|(service, _)| service).collect();
                if !self.send(BusEvent::Snapshot(services)) {
                    return false;
                }
                waiting
                    .into_iter()
                    .all(|message| self.handle(message, reads))
            }
            Read::Added {
                owner,
                path,
                service,
            } => {
                if self.owner.as_ref() != Some(&owner) {
                    return true;
                }
                let Some(waiting) = self.adding.remove(&path) else {
                    // Removed while it was read.
                    return true;
                };
                let Some((service, position)) = service else {
                    return true;
                };
                self.read_at.insert(path, position);
                if !self.send(BusEvent::Added(service)) {
                    return false;
                }
                waiting
                    .into_iter()
                    .all(|message| self.handle(message, reads))
            }
            Read::Failed { owner, reason } => {
                if self.owner.as_ref() != Some(&owner) {
                    return true;
                }
                // adoptd is there but does not answer as it should: say
                // so, and wait for it to come back.
                self.gone(reason)
            }
        }
    }

    fn on_request(&self, request: Request) {
        if self.owner.is_none() {
            refuse(request, "adoptd is not running");
            return;
        }
        let connection = self.connection.clone();
        tokio::spawn(async move {
            match request {
                Request::Control {
                    path,
                    control,
                    reply,
                } => {
                    reply
                        .send(call_control(&connection, &path, control).await)
                        .ok();
                }
                Request::Pids { path, reply } => {
                    reply.send(read_pids(&connection, &path).await).ok();
                }
            }
        });
    }
}

type Reads = FuturesUnordered<futures_util::future::LocalBoxFuture<'static, Read>>;

/// The unique name of `org.adoptd1`'s owner, if it has one.
async fn owner_of(connection: &Connection) -> Option<OwnedUniqueName> {
    let dbus = zbus::fdo::DBusProxy::new(connection).await.ok()?;
    let name = zbus::names::BusName::try_from(BUS_NAME).ok()?;
    dbus.get_name_owner(name).await.ok()
}

async fn read_snapshot(connection: Connection, owner: OwnedUniqueName) -> Read {
    match snapshot(&connection, &owner).await {
        Ok(services) => Read::Snapshot { owner, services },
        Err(reason) => Read::Failed { owner, reason },
    }
}

async fn snapshot(
    connection: &Connection,
    owner: &OwnedUniqueName,
) -> Result<Vec<(ServiceSnapshot, Sequence)>, String> {
    let manager = ManagerProxy::builder(connection)
        .destination(owner.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| format!("cannot reach adoptd: {e}"))?;
    let rows = manager
        .list_services()
        .await
        .map_err(|e| format!("adoptd did not list its services: {e}"))?;
    let reads = futures_util::stream::iter(rows.into_iter().map(|row| {
        let path = row.path.to_string();
        async move { read_service(connection, owner, &path).await }
    }))
    .buffer_unordered(PARALLEL_READS)
    .collect::<Vec<_>>()
    .await;
    // A service that went between the list and its read is simply not
    // there; its ServiceRemoved follows.
    Ok(reads.into_iter().flatten().collect())
}

async fn read_added(connection: Connection, owner: OwnedUniqueName, path: String) -> Read {
    let service = read_service(&connection, &owner, &path).await;
    Read::Added {
        owner,
        path,
        service,
    }
}

/// `GetAll` of one service, and where on the connection its reply came.
async fn read_service(
    connection: &Connection,
    owner: &OwnedUniqueName,
    path: &str,
) -> Option<(ServiceSnapshot, Sequence)> {
    let reply = connection
        .call_method(
            Some(owner.as_ref()),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(SERVICE_INTERFACE,),
        )
        .await
        .ok()?;
    let all = reply
        .body()
        .deserialize::<HashMap<String, zbus::OwnedVariant>>()
        .ok()?;
    Some((
        ServiceSnapshot {
            path: path.to_owned(),
            properties: decode::properties(all),
        },
        reply.recv_position(),
    ))
}

async fn service_proxy<'a>(
    connection: &Connection,
    path: &'a str,
) -> zbus::Result<ServiceProxy<'a>> {
    ServiceProxy::builder(connection)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
}

/// Calls a control method, letting adoptd ask polkit, and polkit the
/// desktop's agent, for a password; a refusal is adoptd's own sentence.
async fn call_control(connection: &Connection, path: &str, control: Control) -> Result<(), String> {
    let proxy = service_proxy(connection, path)
        .await
        .map_err(|e| e.to_string())?;
    proxy
        .inner()
        .call_with_flags::<_, _, ()>(control.label(), MethodFlags::ALLOW_INTERACTIVE_AUTH, &())
        .await
        .map(|_| ())
        .map_err(|e| sentence(adoptd_dbus::Error::from(e)))
}

async fn read_pids(connection: &Connection, path: &str) -> Result<Vec<u32>, String> {
    let proxy = service_proxy(connection, path)
        .await
        .map_err(|e| e.to_string())?;
    proxy.pids().await.map_err(|e| sentence(e.into()))
}

/// The sentence of an error reply, as adoptd (or the bus) wrote it.
fn sentence(error: adoptd_dbus::Error) -> String {
    use adoptd_dbus::Error;
    match error {
        Error::NoSuchService(text)
        | Error::InvalidName(text)
        | Error::AccessDenied(text)
        | Error::AlreadyRunning(text)
        | Error::NotRunning(text)
        | Error::Failed(text) => text,
        Error::ZBus(zbus::Error::MethodError(_, Some(text), _)) => text,
        Error::ZBus(zbus::Error::FDO(error)) => error.to_string(),
        Error::ZBus(other) => other.to_string(),
    }
}
