//! The bus layer: adoptd's services on D-Bus, as `dbus/org.adoptd1.xml`
//! says. This is the only code of the daemon that knows zbus.
//!
//! Concurrency rules, stated once:
//!
//! - One task, [`run`], owns the connection's life and is the only writer of
//!   the [`Registry`]: it applies every [`Update`] of the supervisor, in
//!   order, and turns it into at most one `PropertiesChanged` per object
//!   (plus the `Adopted`, `Exited` and `ServiceAdded` signals).
//! - Method calls are answered by [`objects`], not by zbus's object
//!   server: a service object is its registry entry, and the interface
//!   object that answers a call ([`manager`], [`service`]) is made for it.
//! - The interface objects only read the
//!   registry, under a short lock that is never held across an `.await`, so
//!   reading a property never waits for the supervisor. Only `PIDs` asks
//!   the supervisor, because member processes change too often to publish.
//!   `PIDs` and `NeedDaemonReload` (a file read) take turns ([`turns`]):
//!   one at a time in adoptd, one per caller. `GetManagedObjects`, which
//!   reads every object at once, reads them all in one turn ([`snapshot`])
//!   and writes its reply without a map of every property
//!   ([`object_manager`]).
//! - `GetOutput` and `FollowOutput` authorize the caller too, then read
//!   [`crate::output`]'s record of the service, which is not the
//!   registry's and not the supervisor's.
//! - Methods that change anything authorize the caller ([`auth`]), then send
//!   a [`Request`] and await its reply; they never touch state themselves.
//! - The registry is kept current whether or not a bus is connected, so the
//!   supervisor never has to resend anything: after a reconnect, every
//!   object is published again from the registry, then the name is claimed.
//!
//! The supervisor never waits for the bus: updates travel on an unbounded
//! channel (each message what the supervisor handed over at once, such as
//! a moment's notices, so that they cost one wake-up of this thread) and
//! requests come from here.

mod auth;
mod configured;
mod convert;
mod introspect;
mod manager;
mod object_manager;
mod objects;
pub mod private;
mod registry;
mod service;
mod snapshot;
mod standard;
mod trim;
mod turns;
mod watch;

use registry::{Entry, Registry};

use std::{
    borrow::Cow,
    collections::HashMap,
    io::Write as _,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use adoptd_dbus::{
    BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, MainPidSource, SERVICE_INTERFACE, ServiceResult,
    State,
};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, error, info, warn};
use zbus::{
    Connection, Variant,
    fdo::{RequestNameFlags, RequestNameReply},
    names::InterfaceName,
    object_server::SignalEmitter,
};

use convert::exit_code_and_signal;
use standard::Properties;

use crate::{
    supervisor::{Request, Update},
    tracker::{Changes, Notice, ServiceId, Status},
};

/// Which bus adoptd publishes its services on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusChoice {
    /// The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, or its well-known socket).
    System,
    /// The session bus of the user (`$DBUS_SESSION_BUS_ADDRESS`).
    Session,
    /// The bus at this D-Bus address.
    Address(String),
    /// A bus of adoptd's own ([`private`]), whose address adoptd prints on
    /// stdout as `ADOPTD_BUS_ADDRESS=…`.
    Private,
}

/// Waits until trying again is worth it: until the bus socket appears when
/// it is missing (no wake-up meanwhile), else for the back-off delay.
async fn wait_before_retrying(choice: &BusChoice, delay: std::time::Duration) {
    let address = match choice {
        BusChoice::System => std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .unwrap_or_else(|_| "unix:path=/var/run/dbus/system_bus_socket".to_owned()),
        BusChoice::Session => std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_default(),
        BusChoice::Address(address) => address.clone(),
        BusChoice::Private => String::new(),
    };
    if let Some(socket) = watch::socket_path(&address).filter(|s| !s.exists()) {
        match watch::until_exists(&socket).await {
            Ok(()) => return,
            Err(e) => debug!("cannot watch for {}: {e}", socket.display()),
        }
    }
    tokio::time::sleep(delay).await;
}

/// What the Manager object says about this adoptd.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// `init` or `subreaper`.
    pub role: &'static str,
    /// The adoption source in use (the `Tracker` property).
    pub source: &'static str,
}

/// How much lower than adoptd's own the priority of the threads that walk
/// /proc and read files for readers is (a nice value; 19 is the lowest).
const READERS_NICENESS: libc::c_int = 10;

/// Runs [`run`] on a thread of its own, with a runtime of its own, so that
/// no bus work (dispatching calls, building replies, routing signals)
/// ever runs on the supervisor's thread. The blocking threads of that
/// runtime, which do the expensive reads, run at a lower priority than
/// adoptd's: under a read load the scheduler prefers the supervisor and
/// the bus thread to them.
///
/// The thread ends when the supervisor goes away (its update channel
/// closes). Where no thread or runtime can be made, adoptd supervises
/// without a bus, and says so.
pub fn start(
    choice: BusChoice,
    identity: Identity,
    updates: mpsc::UnboundedReceiver<Vec<Update>>,
    requests: mpsc::Sender<Request>,
    outputs: Arc<crate::output::Outputs>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("adoptd-reader")
        // Reads wait for each other (see `turns`), so a few threads serve
        // them all, whatever the number of callers.
        .max_blocking_threads(2)
        .on_thread_start(lower_priority)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the bus layer's runtime: {e}; adoptd supervises without a bus");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("adoptd-bus".to_owned())
        .spawn(move || runtime.block_on(run(choice, identity, updates, requests, outputs)));
    if let Err(e) = spawned {
        error!("cannot start the bus layer's thread: {e}; adoptd supervises without a bus");
    }
}

/// Lowers the calling thread's priority (on Linux, a nice value is a
/// thread's own) to [`READERS_NICENESS`]; a failure only costs fairness.
fn lower_priority() {
    // SAFETY: gettid and setpriority take and return plain integers.
    let result = unsafe {
        let thread = libc::gettid();
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::id_t::try_from(thread).unwrap_or(0),
            READERS_NICENESS,
        )
    };
    if result != 0 {
        debug!(
            "cannot lower a reader thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Publishes the supervisor's services on `choice` until the supervisor
/// goes away (its update channel closes).
///
/// A bus that cannot be reached, or that goes away, is retried with
/// back-off; meanwhile updates keep the registry current, so nothing is
/// lost when the bus comes (back).
pub async fn run(
    choice: BusChoice,
    identity: Identity,
    mut updates: mpsc::UnboundedReceiver<Vec<Update>>,
    requests: mpsc::Sender<Request>,
    outputs: Arc<crate::output::Outputs>,
) {
    let choice = match choice {
        BusChoice::Private => match private::start().await {
            Ok(bus) => {
                // One line a shell can eval, for adoptctl and busctl.
                // Not println!: it panics when nobody reads standard output.
                let mut stdout = std::io::stdout();
                writeln!(stdout, "ADOPTD_BUS_ADDRESS={}", bus.address)
                    .and_then(|()| stdout.flush())
                    .ok();
                BusChoice::Address(bus.address)
            }
            Err(e) => {
                error!(
                    "cannot start the private bus: {}; adoptd supervises without a bus",
                    crate::errors::chain(&e)
                );
                return;
            }
        },
        choice => choice,
    };
    let shared = Arc::new(Shared {
        registry: Mutex::new(Registry::default()),
        published: Notify::new(),
        applied: Notify::new(),
        requests,
        identity,
        owner_uid: nix::unistd::geteuid().as_raw(),
        turns: turns::Turns::new(),
        snapshots: snapshot::Snapshots::default(),
        trim: Arc::default(),
        outputs,
    });
    let mut backoff = Backoff::default();
    let mut warned = false;
    let mut reconnecting = false;
    // After a re-exec: what happened between the restore and the bus.
    let mut since_restore: Option<SinceRestore> = None;
    let mut burst = trim::UpdateBurst::default();
    loop {
        let Connected {
            connection,
            dispatch: _dispatch,
        } = {
            let connecting = async {
                loop {
                    match connect(&choice, &shared).await {
                        Ok(connection) => return connection,
                        Err(e) => {
                            let delay = backoff.next_delay();
                            if warned {
                                debug!(
                                    "cannot publish on the {choice} (retrying in {delay:?}): {e}"
                                );
                            } else {
                                warn!(
                                    "cannot publish on the {choice}: {e}; adoptd supervises without it and keeps trying"
                                );
                                warned = true;
                            }
                            wait_before_retrying(&choice, delay).await;
                        }
                    }
                }
            };
            let mut connecting = std::pin::pin!(connecting);
            loop {
                // Updates first: the registry is current before each step
                // of connecting, so the services loaded at start-up are all
                // served before the name is claimed.
                tokio::select! {
                    biased;
                    handed = updates.recv() => match handed {
                        // Not connected (yet): only the registry learns it.
                        Some(handed) => {
                            let mut handed = handed.into_iter().peekable();
                            while let Some(update) = handed.next() {
                                if matches!(update, Update::Restored) {
                                    since_restore = Some(SinceRestore::default());
                                } else if let Some(since) = &mut since_restore {
                                    since.note(&update);
                                }
                                shared.registry().apply(&update);
                                shared.applied.notify_waiters();
                                if let Update::Flush(done) = update {
                                    done.send(()).ok();
                                }
                                burst.applied(handed.peek().is_some() || !updates.is_empty());
                            }
                        }
                        None => return,
                    },
                    connection = &mut connecting => break connection,
                }
            }
        };
        backoff = Backoff::default();
        warned = false;
        if reconnecting {
            info!("reconnected to the {choice}: every service is published again");
        }
        reconnecting = true;
        let publisher = Publisher {
            connection: &connection,
            shared: &shared,
        };
        // Services added while the name was being claimed.
        if let Err(e) = publisher.publish_all(Announce::Yes).await {
            debug!("cannot serve every service yet: {e}");
        }
        if let Some(since) = since_restore.take() {
            since.signal(&publisher).await;
        }
        loop {
            tokio::select! {
                handed = updates.recv() => match handed {
                    // What the supervisor handed over at once (a moment's
                    // notices) is published at once, in order.
                    Some(handed) => {
                        let mut handed = handed.into_iter().peekable();
                        while let Some(update) = handed.next() {
                            publisher.publish(update).await;
                            burst.applied(handed.peek().is_some() || !updates.is_empty());
                        }
                    }
                    None => return,
                },
                () = connection.closed() => {
                    warn!("lost the connection to the {choice}; reconnecting");
                    break;
                }
            }
        }
        shared.registry().unpublish_all();
        // Wake methods waiting for an object that will not appear on
        // this connection.
        shared.published.notify_waiters();
    }
}

impl std::fmt::Display for BusChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusChoice::System => f.write_str("system bus"),
            BusChoice::Session => f.write_str("session bus"),
            BusChoice::Address(address) => write!(f, "bus at {address}"),
            BusChoice::Private => f.write_str("private bus"),
        }
    }
}

/// What the bus task and the interface objects share.
struct Shared {
    registry: Mutex<Registry>,
    /// Notified whenever service objects were published.
    published: Notify,
    /// Notified whenever an update was applied to the registry.
    applied: Notify,
    requests: mpsc::Sender<Request>,
    identity: Identity,
    /// adoptd's own effective uid: its owner may control what it runs.
    owner_uid: u32,
    /// Turns for the expensive reads (`PIDs`, `NeedDaemonReload`): one at
    /// a time, one per caller.
    turns: turns::Turns,
    /// One reading of every service for the calls that read them all.
    snapshots: snapshot::Snapshots,
    /// Gives back the memory of large replies after a burst.
    trim: Arc<trim::Trim>,
    /// The services' output, for `GetOutput` and `FollowOutput`.
    outputs: Arc<crate::output::Outputs>,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind, still
        // consistent enough to read.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a request to the supervisor and waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Request,
    ) -> Result<T, adoptd_dbus::Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || adoptd_dbus::Error::Failed("adoptd is shutting down.".to_owned());
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Waits until the registry has applied `count` updates (what the
    /// supervisor had published when it answered), bounded like
    /// [`Shared::wait_published`].
    async fn wait_applied(&self, count: u64) {
        loop {
            let notified = self.applied.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.registry().applied >= count {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(5), notified)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Waits until the object of `service` is on the bus (a method that
    /// created it answers only then), or the connection went away.
    async fn wait_published(&self, service: ServiceId) {
        loop {
            let notified = self.published.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.registry().is_published(service) {
                return;
            }
            // Bounded: a connection lost meanwhile notifies too, but the
            // answer must never hang on the bus task.
            if tokio::time::timeout(Duration::from_secs(5), notified)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Connects, serves the Manager and every service object, then claims
/// the name, so that whoever sees the name sees everything.
async fn connect(choice: &BusChoice, shared: &Arc<Shared>) -> zbus::Result<Connected> {
    let builder = match choice {
        BusChoice::System => zbus::connection::Builder::system(),
        BusChoice::Session => zbus::connection::Builder::session(),
        BusChoice::Address(address) => zbus::connection::Builder::address(address.as_str()),
        BusChoice::Private => {
            return Err(zbus::Error::Address(
                "the private bus has no address before it starts".to_owned(),
            ));
        }
    };
    let connection = builder.build().await?;
    let dispatch = objects::serve(&connection, shared).await?;
    let publisher = Publisher {
        connection: &connection,
        shared,
    };
    // Before the name is claimed: nobody can be told of these objects
    // yet, and a client's first GetManagedObjects finds them.
    publisher.publish_all(Announce::No).await?;
    // Queue behind another owner rather than fail: when it goes, adoptd
    // takes over without anyone restarting it.
    match request_name(&connection).await {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => {
            info!("published as {BUS_NAME} on the {choice}");
        }
        Ok(RequestNameReply::InQueue | RequestNameReply::Exists) => warn!(
            "another process owns {BUS_NAME} on the {choice}; adoptd waits in its queue and takes over when it leaves"
        ),
        // The bus policy refuses it (not root on a system bus): a setup
        // mistake that retrying will not mend. The objects stay reachable
        // by adoptd's unique name.
        Err(e) => error!(
            "cannot own {BUS_NAME} on the {choice}: {e} (install dbus/org.adoptd1.conf, and run adoptd as root)"
        ),
    }
    Ok(Connected {
        connection,
        dispatch: AbortOnDrop(dispatch),
    })
}

/// Asks the bus for [`BUS_NAME`], queueing behind another owner.
///
/// Asked of the bus directly: zbus's `Connection::request_name` warns
/// when its object server is not running, which on adoptd's connection
/// it never is (adoptd answers its calls itself, [`objects`]); nothing
/// else of zbus's bookkeeping of owned names is used here.
async fn request_name(connection: &Connection) -> zbus::fdo::Result<RequestNameReply> {
    let bus = zbus::fdo::DBusProxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let name = zbus::names::WellKnownName::from_static_str(BUS_NAME)?;
    bus.request_name(name, RequestNameFlags::empty()).await
}

/// A connection, with the task that answers its method calls.
struct Connected {
    connection: Connection,
    dispatch: AbortOnDrop,
}

/// Stops a task when dropped: the calls of a connection given up are
/// answered no more.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether serving an object sends `InterfacesAdded`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Announce {
    Yes,
    No,
}

/// Emits the signals of updates on one connection.
struct Publisher<'a> {
    connection: &'a Connection,
    shared: &'a Arc<Shared>,
}

impl Publisher<'_> {
    /// Serves every service object not served yet (including those added
    /// while this runs).
    async fn publish_all(&self, announce: Announce) -> zbus::Result<()> {
        loop {
            let unpublished = self.shared.registry().unpublished();
            if unpublished.is_empty() {
                break;
            }
            for service in unpublished {
                self.serve(service, announce).await?;
            }
        }
        self.shared.published.notify_waiters();
        Ok(())
    }

    async fn serve(&self, service: ServiceId, announce: Announce) -> zbus::Result<()> {
        {
            let mut registry = self.shared.registry();
            if registry.get(service).is_none() {
                return Ok(());
            }
            // Calls to its path are answered from now on ([`objects`]).
            registry.set_published(service);
        }
        if announce == Announce::Yes {
            // The object is served whatever becomes of its announcement:
            // a failed read or signal must not hold back the next objects.
            let emitter = SignalEmitter::new(self.connection, MANAGER_PATH)?;
            if let Err(e) = object_manager::announce_added(&emitter, self.shared, service).await {
                debug!("cannot announce a new service object: {e}");
            }
        }
        Ok(())
    }

    async fn publish(&self, update: Update) {
        let was_known = match &update {
            Update::ServiceAdded { service, .. } => self.shared.registry().get(*service).is_some(),
            _ => true,
        };
        // What a reload, a start or sd_notify may change, as it was.
        let configured_before = match &update {
            Update::Configured { service, .. }
            | Update::ExecError { service, .. }
            | Update::StatusText { service, .. } => self
                .shared
                .registry()
                .get(*service)
                .map(configured::properties),
            _ => None,
        };
        self.shared.registry().apply(&update);
        self.shared.applied.notify_waiters();
        let result = match update {
            Update::ServiceAdded { service, spec, .. } => {
                self.service_added(service, &spec.name, was_known).await
            }
            Update::Tracker(Notice::Changed {
                service,
                status,
                changes,
            }) => self.status_changed(service, &status, changes).await,
            Update::Tracker(notice @ (Notice::Adopted { .. } | Notice::Exited { .. })) => {
                self.publish_signal(notice).await;
                Ok(())
            }
            Update::Restored => Ok(()),
            Update::Flush(done) => {
                done.send(()).ok();
                Ok(())
            }
            Update::ServiceRemoved { name, .. } => self.service_removed(&name).await,
            Update::Configured { service, .. }
            | Update::ExecError { service, .. }
            | Update::StatusText { service, .. } => {
                self.configuration_changed(service, configured_before).await
            }
            Update::Tracker(Notice::OrphanReaped { total, .. })
            | Update::OrphansReaped { total } => {
                let changed = HashMap::from([("OrphansReaped", Variant::from(total))]);
                self.properties_changed(MANAGER_PATH.to_owned(), MANAGER_INTERFACE, changed)
                    .await
            }
        };
        if let Err(e) = result {
            // A broken connection shows as closed, and is re-made then.
            debug!("cannot emit a signal: {e}");
        }
    }

    /// Emits the `Adopted` or `Exited` signal of `notice`.
    async fn publish_signal(&self, notice: Notice) {
        let result = match notice {
            Notice::Adopted {
                service,
                pid,
                previous_pid,
            } => match self.emitter(service) {
                Some(emitter) => service::Service::adopted(&emitter, pid, previous_pid).await,
                None => Ok(()),
            },
            Notice::Exited {
                service,
                pid,
                status,
            } => match self.emitter(service) {
                Some(emitter) => {
                    let (code, signal) = exit_code_and_signal(Some(status));
                    service::Service::exited(&emitter, pid, code, signal).await
                }
                None => Ok(()),
            },
            Notice::Changed { .. } | Notice::OrphanReaped { .. } => Ok(()),
        };
        if let Err(e) = result {
            debug!("cannot emit a signal: {e}");
        }
    }

    /// Takes the service's object off the bus, and says InterfacesRemoved
    /// and ServiceRemoved.
    async fn service_removed(&self, name: &str) -> zbus::Result<()> {
        // Its entry is gone from the registry: calls to its path find no
        // object.
        let path = adoptd_dbus::service_path(name);
        let emitter = SignalEmitter::new(self.connection, MANAGER_PATH)?;
        object_manager::announce_removed(&emitter, path.as_ref()).await?;
        manager::Manager::service_removed(&emitter, name, path.as_ref()).await
    }

    async fn service_added(
        &self,
        service: ServiceId,
        name: &str,
        was_known: bool,
    ) -> zbus::Result<()> {
        if was_known {
            return Ok(());
        }
        self.serve(service, Announce::Yes).await?;
        self.shared.published.notify_waiters();
        let path = adoptd_dbus::service_path(name);
        let emitter = SignalEmitter::new(self.connection, MANAGER_PATH)?;
        manager::Manager::service_added(&emitter, name, path.as_ref()).await
    }

    /// One `PropertiesChanged` with every property that changed.
    async fn status_changed(
        &self,
        service: ServiceId,
        status: &Status,
        changes: Changes,
    ) -> zbus::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = {
            let registry = self.shared.registry();
            match registry.get(service) {
                Some(entry) if entry.published => adoptd_dbus::service_path(&entry.spec.name),
                _ => return Ok(()),
            }
        };
        let changed = changed_properties(status, changes);
        self.properties_changed(path.to_string(), SERVICE_INTERFACE, changed)
            .await
    }

    /// One `PropertiesChanged` with the configuration properties that
    /// differ from `before`, if any do.
    async fn configuration_changed(
        &self,
        service: ServiceId,
        before: Option<Vec<(&'static str, Variant<'static>)>>,
    ) -> zbus::Result<()> {
        let (path, changed) = {
            let registry = self.shared.registry();
            let (Some(entry), Some(before)) = (registry.get(service), before) else {
                return Ok(());
            };
            if !entry.published {
                return Ok(());
            }
            let changed = configured::changed(&before, configured::properties(entry));
            (adoptd_dbus::service_path(&entry.spec.name), changed)
        };
        if changed.is_empty() {
            return Ok(());
        }
        self.properties_changed(path.to_string(), SERVICE_INTERFACE, changed)
            .await
    }

    async fn properties_changed(
        &self,
        path: String,
        interface: &'static str,
        changed: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<()> {
        let emitter = SignalEmitter::new(self.connection, path)?;
        let interface = InterfaceName::from_static_str(interface)?;
        Properties::properties_changed(&emitter, interface, changed, Cow::Borrowed(&[])).await
    }

    fn emitter(&self, service: ServiceId) -> Option<SignalEmitter<'static>> {
        let path = {
            let registry = self.shared.registry();
            let entry = registry.get(service).filter(|e| e.published)?;
            adoptd_dbus::service_path(&entry.spec.name)
        };
        SignalEmitter::new(self.connection, path).ok()
    }
}

/// The properties that `changes` names, with their new values.
fn changed_properties(
    status: &Status,
    changes: Changes,
) -> HashMap<&'static str, Variant<'static>> {
    let mut changed = HashMap::new();
    if changes.contains(Changes::STATE) {
        changed.insert("State", Variant::from(State::from(status.state).as_str()));
    }
    if changes.contains(Changes::MAIN_PID) {
        changed.insert("MainPID", Variant::from(status.main_pid.unwrap_or(0)));
    }
    if changes.contains(Changes::PREVIOUS_PID) {
        changed.insert(
            "PreviousPID",
            Variant::from(status.previous_pid.unwrap_or(0)),
        );
    }
    if changes.contains(Changes::MAIN_PID_SOURCE) {
        let source = MainPidSource::from(status.main_pid_source);
        changed.insert("MainPIDSource", Variant::from(source.as_str()));
    }
    if changes.contains(Changes::HANDOFFS) {
        changed.insert("Handoffs", Variant::from(status.handoffs));
    }
    if changes.contains(Changes::RESTARTS) {
        changed.insert("Restarts", Variant::from(status.restarts));
    }
    if changes.contains(Changes::STATE_CHANGE_TIMESTAMP) {
        changed.insert(
            "StateChangeTimestamp",
            Variant::from(status.state_changed_at.realtime_us),
        );
    }
    if changes.contains(Changes::EXIT) {
        let (code, signal) = exit_code_and_signal(status.last_exit);
        changed.insert("ExitCode", Variant::from(code));
        changed.insert("ExitSignal", Variant::from(signal));
    }
    if changes.contains(Changes::RESULT) {
        let result = ServiceResult::from(status.result);
        changed.insert("Result", Variant::from(result.as_str()));
    }
    if changes.contains(Changes::REATTACHED) {
        changed.insert(
            "ReattachedTimestamp",
            Variant::from(status.reattached_at_us.unwrap_or(0)),
        );
    }
    changed
}

/// What changed after a re-exec's restore and before the new image owned
/// the name: the clients saw the previous image's values, so these are
/// real changes, signalled once the name is owned.
#[derive(Default)]
struct SinceRestore {
    /// `Adopted` and `Exited`, in order.
    signals: Vec<Notice>,
    /// The properties that changed, by service.
    changed: HashMap<ServiceId, Changes>,
}

impl SinceRestore {
    fn note(&mut self, update: &Update) {
        match update {
            Update::Tracker(Notice::Changed {
                service, changes, ..
            }) => self.changed.entry(*service).or_default().insert(*changes),
            Update::Tracker(notice @ (Notice::Adopted { .. } | Notice::Exited { .. })) => {
                self.signals.push(*notice);
            }
            _ => {}
        }
    }

    async fn signal(self, publisher: &Publisher<'_>) {
        for notice in self.signals {
            publisher.publish_signal(notice).await;
        }
        let mut changed: Vec<(ServiceId, Changes)> = self.changed.into_iter().collect();
        changed.sort_unstable_by_key(|(service, _)| *service);
        for (service, changes) in changed {
            let status = publisher
                .shared
                .registry()
                .get(service)
                .map(|entry| entry.status);
            if let Some(status) = status
                && let Err(e) = publisher.status_changed(service, &status, changes).await
            {
                debug!("cannot emit a signal: {e}");
            }
        }
    }
}

/// Exponential back-off between connection attempts.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const LAST: Duration = Duration::from_secs(5);

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::LAST);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let mut backoff = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
