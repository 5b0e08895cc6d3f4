//! adoptd as its D-Bus clients see it: every service's properties, kept
//! current from `PropertiesChanged`, and its `Adopted` and `Exited`
//! signals, in the order the bus delivered them.
//!
//! A thread of the watch reads the bus all the time, so a burst of signals
//! never waits in a socket; the test reads what the thread collected and
//! waits on it with the common timeout. Every property value seen is kept,
//! so a test can also say what never happened (`running` before ready).
//!
//! Properties are read whole once subscribed (and when a service
//! appears); a change signalled while that read was under way is applied
//! after it, so a status may briefly lag, never end wrong: the signals
//! that follow bring it to the truth.

use std::{collections::HashMap, future::Future, sync::mpsc, time::Instant};

use adoptd_dbus::{
    BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, MainPidSource, ManagerProxy, SERVICE_INTERFACE,
    ServiceResult, State, service_name_from_path,
};
use futures_util::StreamExt as _;
use zbus::{
    Connection, MatchRule, Message, MessageStream, OwnedVariant,
    fdo::{DBusProxy, PropertiesChanged, PropertiesProxy},
    names::{BusName, InterfaceName},
};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::{Report, TIMEOUT};

/// A service's properties that change, as last published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    pub main_pid: u32,
    pub previous_pid: u32,
    pub main_pid_source: MainPidSource,
    pub handoffs: u32,
    pub restarts: u32,
    pub exit_code: i32,
    pub exit_signal: i32,
    pub result: ServiceResult,
    pub state_change_timestamp: u64,
}

/// One signal of adoptd's, about service `service`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Its properties changed; `status` is what they are now.
    Changed { service: String, status: Status },
    Adopted {
        service: String,
        pid: u32,
        previous_pid: u32,
    },
    Exited {
        service: String,
        pid: u32,
        code: i32,
        signal: i32,
    },
    /// Its object went away.
    Removed { service: String },
}

/// What the reading thread hands over.
enum Delivery {
    Signal(Signal),
    Failed(String),
}

/// A connection to adoptd's bus that records every signal of adoptd's.
pub struct Watch {
    runtime: tokio::runtime::Runtime,
    connection: Connection,
    deliveries: mpsc::Receiver<Delivery>,
    /// Every signal read so far, the first ones made from the properties
    /// read at subscription (as `Changed`).
    pub seen: Vec<Signal>,
    /// What a wait that timed out also shows (adoptd's threads and last
    /// lines, [`crate::Adoptd::describe`]).
    describe: Option<Box<dyn Fn() -> String + Send>>,
}

impl Watch {
    /// Connects to the bus at `address`, waits until adoptd owns its name
    /// there, and subscribes to its signals; each service known by then
    /// is recorded with its current properties.
    pub fn connect(address: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the watch");
        let (sender, deliveries) = mpsc::channel();
        let connection = runtime.block_on(async {
            within_timeout("the watch to subscribe", async {
                let connection = zbus::connection::Builder::address(address)
                    .build()
                    .await
                    .expect("connect to adoptd's bus");
                wait_for_owner(&connection).await;
                let rule = MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .path_namespace(MANAGER_PATH)
                    .build()
                    .expect("a match rule");
                let mut stream = MessageStream::for_match_rule(rule, &connection, None)
                    .await
                    .expect("subscribe to adoptd's signals");
                // Drained at once: a stream left unread would stall the
                // connection, replies to the reads below included.
                let (messages, received) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Some(message) = stream.next().await {
                        if messages.send(message).is_err() {
                            return;
                        }
                    }
                });
                let mut statuses = HashMap::new();
                for service in list_services(&connection).await {
                    let status = read_status(&connection, &service)
                        .await
                        .unwrap_or_else(|| panic!("GetAll of {service}"));
                    statuses.insert(service.clone(), status.clone());
                    sender
                        .send(Delivery::Signal(Signal::Changed { service, status }))
                        .ok();
                }
                let reader = Reader {
                    connection: connection.clone(),
                    statuses,
                    sender,
                };
                tokio::spawn(reader.run(received));
                connection
            })
            .await
        });
        Watch {
            runtime,
            connection,
            deliveries,
            seen: Vec::new(),
            describe: None,
        }
    }

    /// Shows what `describe` says when a wait of this watch times out.
    pub(crate) fn describe_on_timeout(&mut self, describe: impl Fn() -> String + Send + 'static) {
        self.describe = Some(Box::new(describe));
    }

    /// Runs a D-Bus conversation to its end, within the common timeout.
    pub fn block_on<F: Future>(&self, what: &str, future: F) -> F::Output {
        self.runtime.block_on(within_timeout(what, future))
    }

    /// Starts the services (`StartService`), all in the same instant.
    pub fn start(&self, services: &[&str]) {
        self.block_on("StartService", async {
            let manager = ManagerProxy::new(&self.connection)
                .await
                .expect("the manager's proxy");
            let calls = services.iter().map(|name| manager.start_service(name));
            for (name, reply) in services
                .iter()
                .zip(futures_util::future::join_all(calls).await)
            {
                reply.unwrap_or_else(|e| panic!("StartService {name}: {e}"));
            }
        });
    }

    /// Stops the services (`StopService`).
    pub fn stop(&self, services: &[&str]) {
        self.block_on("StopService", async {
            let manager = ManagerProxy::new(&self.connection)
                .await
                .expect("the manager's proxy");
            for name in services {
                manager
                    .stop_service(name)
                    .await
                    .unwrap_or_else(|e| panic!("StopService {name}: {e}"));
            }
        });
    }

    /// The properties of `service` as adoptd answers them now (`GetAll`).
    pub fn read(&self, service: &str) -> Status {
        self.block_on("GetAll", read_status(&self.connection, service))
            .unwrap_or_else(|| panic!("no service {service} on the bus"))
    }

    /// Re-reads the configuration directory (`Reload`).
    pub fn reload(&self) {
        self.block_on("Reload", async {
            let manager = ManagerProxy::new(&self.connection)
                .await
                .expect("the manager's proxy");
            manager.reload().await.expect("Reload");
        });
    }

    /// The last status of `service` seen so far.
    pub fn status(&self, service: &str) -> Option<Status> {
        self.statuses(service).pop()
    }

    /// Every status of `service` seen so far, oldest first.
    pub fn statuses(&self, service: &str) -> Vec<Status> {
        self.seen
            .iter()
            .filter_map(|signal| match signal {
                Signal::Changed { service: s, status } if s == service => Some(status.clone()),
                _ => None,
            })
            .collect()
    }

    /// Returns the first status of `service`, seen already or still to
    /// come, that matches; waits for it if need be.
    pub fn wait_status(
        &mut self,
        service: &str,
        what: &str,
        matches: impl Fn(&Status) -> bool,
    ) -> Status {
        let signal = self.wait_signal(&format!("{service}: {what}"), |signal| {
            matches!(signal, Signal::Changed { service: s, status } if s == service && matches(status))
        });
        match signal {
            Signal::Changed { status, .. } => status,
            _ => unreachable!("only a Changed matches"),
        }
    }

    /// Waits until `service` runs with `main_pid`.
    pub fn wait_main_pid(&mut self, service: &str, main_pid: u32) -> Status {
        self.wait_status(service, &format!("running as {main_pid}"), |status| {
            status.state == State::Running && status.main_pid == main_pid
        })
    }

    /// Waits until `service` runs with the pid its dance settled as, or,
    /// under `procfs`, with a main pid flagged as a guess (its documented
    /// limit); returns the status, or `None` when procfs guessed wrong and
    /// said so.
    pub fn wait_settled(
        &mut self,
        service: &str,
        settled: &Report,
        tracker: &str,
        context: &str,
    ) -> Option<Status> {
        let status = self.wait_status(service, context, |status| {
            status.state == State::Running
                && (status.main_pid == settled.pid
                    || (tracker == "procfs" && status.main_pid_source == MainPidSource::Guess))
        });
        if status.main_pid == settled.pid {
            return Some(status);
        }
        // procfs degraded safely: the wrong main pid says so.
        assert_eq!(status.main_pid_source, MainPidSource::Guess, "{context}");
        eprintln!("{context}: procfs guessed: {status:?}");
        None
    }

    /// Whether any main pid of `service` seen so far was a guess: `procfs`
    /// may then have a wrong previous pid or hand-off count, and has said
    /// so.
    pub fn guessed(&self, service: &str) -> bool {
        self.statuses(service)
            .iter()
            .any(|status| status.main_pid_source == MainPidSource::Guess)
    }

    /// The `Adopted` signals of `service` seen so far, as (pid, previous
    /// pid).
    pub fn adoptions(&self, service: &str) -> Vec<(u32, u32)> {
        self.seen
            .iter()
            .filter_map(|signal| match signal {
                Signal::Adopted {
                    service: s,
                    pid,
                    previous_pid,
                } if s == service => Some((*pid, *previous_pid)),
                _ => None,
            })
            .collect()
    }

    /// Waits until a run of `service` has ended and left it in `state`
    /// (`Stopped`, `Failed`): a main process of it ended, so a status from
    /// before its start does not count.
    pub fn wait_ended(&mut self, service: &str, state: State) -> Status {
        self.wait_status(
            service,
            &format!("{} after a run", state.as_str()),
            |status| status.state == state && (status.exit_code >= 0 || status.exit_signal > 0),
        )
    }

    /// Waits until `service` is in `state`.
    pub fn wait_state(&mut self, service: &str, state: State) -> Status {
        self.wait_status(service, state.as_str(), |status| status.state == state)
    }

    /// Returns the first signal, seen already or still to come, that
    /// matches; waits for it if need be.
    pub fn wait_signal(&mut self, what: &str, matches: impl Fn(&Signal) -> bool) -> Signal {
        if let Some(signal) = self.seen.iter().find(|s| matches(s)) {
            return signal.clone();
        }
        self.wait_next(what, matches)
    }

    /// Waits for the next new signal that matches, and returns it.
    pub fn wait_next(&mut self, what: &str, matches: impl Fn(&Signal) -> bool) -> Signal {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.deliveries.recv_timeout(left) {
                Ok(Delivery::Signal(signal)) => {
                    self.seen.push(signal.clone());
                    if matches(&signal) {
                        return signal;
                    }
                }
                Ok(Delivery::Failed(reason)) => {
                    panic!("waiting for {what}, the watch failed: {reason}")
                }
                Err(error) => panic!(
                    "{} waiting for {what}; adoptd signalled:\n{}\n{}",
                    match error {
                        mpsc::RecvTimeoutError::Timeout => "timed out",
                        mpsc::RecvTimeoutError::Disconnected => "the bus went away",
                    },
                    self.seen
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.describe
                        .as_ref()
                        .map(|describe| describe())
                        .unwrap_or_default()
                ),
            }
        }
    }

    /// Takes in every signal delivered so far, without waiting.
    pub fn catch_up(&mut self) {
        while let Ok(delivery) = self.deliveries.try_recv() {
            match delivery {
                Delivery::Signal(signal) => self.seen.push(signal),
                Delivery::Failed(reason) => panic!("the watch failed: {reason}"),
            }
        }
    }
}

/// Waits until adoptd owns its name on the bus at `address`, and with it
/// has published every object.
pub fn wait_for_adoptd(address: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(within_timeout("adoptd to own its name", async {
        let connection = zbus::connection::Builder::address(address)
            .build()
            .await
            .expect("connect to adoptd's bus");
        wait_for_owner(&connection).await;
    }));
}

/// The reading side: keeps each service's properties and turns messages
/// into [`Signal`]s.
struct Reader {
    connection: Connection,
    statuses: HashMap<String, Status>,
    sender: mpsc::Sender<Delivery>,
}

impl Reader {
    async fn run(mut self, mut messages: UnboundedReceiver<zbus::Result<Message>>) {
        while let Some(message) = messages.recv().await {
            let delivery = match message {
                Ok(message) => match self.signal(&message).await {
                    Some(signal) => Delivery::Signal(signal),
                    None => continue,
                },
                Err(e) => Delivery::Failed(format!("a message could not be read: {e}")),
            };
            if self.sender.send(delivery).is_err() {
                return;
            }
        }
        // The bus went away: adoptd stopped, which a test may wait for.
    }

    async fn signal(&mut self, message: &Message) -> Option<Signal> {
        let header = message.header();
        if header.path()?.as_str() == MANAGER_PATH {
            if header.interface()?.as_str() != MANAGER_INTERFACE {
                return None;
            }
            let member = header.member()?.as_str().to_owned();
            let (service, _path): (String, zbus::OwnedObjectPath) =
                message.body().deserialize().ok()?;
            return match member.as_str() {
                "ServiceAdded" => {
                    let status = read_status(&self.connection, &service).await?;
                    self.statuses.insert(service.clone(), status.clone());
                    Some(Signal::Changed { service, status })
                }
                "ServiceRemoved" => {
                    self.statuses.remove(&service);
                    Some(Signal::Removed { service })
                }
                _ => None,
            };
        }
        let service = service_name_from_path(header.path()?)?;
        if let Some(changed) = PropertiesChanged::from_message(message.clone()) {
            let args = changed.args().ok()?;
            if args.interface_name.as_str() != SERVICE_INTERFACE {
                return None;
            }
            let changed: HashMap<String, OwnedVariant> = args
                .changed_properties
                .iter()
                .filter_map(|(name, value)| Some(((*name).to_owned(), value.try_to_owned().ok()?)))
                .collect();
            let status = match self.statuses.get(&service) {
                Some(known) => known.with(&changed),
                // A service that appeared since: read it whole.
                None => read_status(&self.connection, &service).await?,
            };
            self.statuses.insert(service.clone(), status.clone());
            return Some(Signal::Changed { service, status });
        }
        match header.member()?.as_str() {
            "Adopted" => {
                let (pid, previous_pid) = message.body().deserialize().ok()?;
                Some(Signal::Adopted {
                    service,
                    pid,
                    previous_pid,
                })
            }
            "Exited" => {
                let (pid, code, signal) = message.body().deserialize().ok()?;
                Some(Signal::Exited {
                    service,
                    pid,
                    code,
                    signal,
                })
            }
            _ => None,
        }
    }
}

impl Status {
    /// The properties a status is read from.
    const PROPERTIES: [&str; 10] = [
        "State",
        "MainPID",
        "PreviousPID",
        "MainPIDSource",
        "Handoffs",
        "Restarts",
        "ExitCode",
        "ExitSignal",
        "Result",
        "StateChangeTimestamp",
    ];

    fn from_properties(properties: &HashMap<String, OwnedVariant>) -> Self {
        Status {
            state: text(properties, "State"),
            main_pid: number(properties, "MainPID"),
            previous_pid: number(properties, "PreviousPID"),
            main_pid_source: text(properties, "MainPIDSource"),
            handoffs: number(properties, "Handoffs"),
            restarts: number(properties, "Restarts"),
            exit_code: number(properties, "ExitCode"),
            exit_signal: number(properties, "ExitSignal"),
            result: text(properties, "Result"),
            state_change_timestamp: number(properties, "StateChangeTimestamp"),
        }
    }

    /// This status with `changed` applied.
    fn with(&self, changed: &HashMap<String, OwnedVariant>) -> Self {
        let mut status = self.clone();
        let has = |name: &str| changed.contains_key(name);
        if has("State") {
            status.state = text(changed, "State");
        }
        if has("MainPID") {
            status.main_pid = number(changed, "MainPID");
        }
        if has("PreviousPID") {
            status.previous_pid = number(changed, "PreviousPID");
        }
        if has("MainPIDSource") {
            status.main_pid_source = text(changed, "MainPIDSource");
        }
        if has("Handoffs") {
            status.handoffs = number(changed, "Handoffs");
        }
        if has("Restarts") {
            status.restarts = number(changed, "Restarts");
        }
        if has("ExitCode") {
            status.exit_code = number(changed, "ExitCode");
        }
        if has("ExitSignal") {
            status.exit_signal = number(changed, "ExitSignal");
        }
        if has("Result") {
            status.result = text(changed, "Result");
        }
        if has("StateChangeTimestamp") {
            status.state_change_timestamp = number(changed, "StateChangeTimestamp");
        }
        status
    }
}

/// A string property parsed into its contract type.
fn text<T: std::str::FromStr>(properties: &HashMap<String, OwnedVariant>, name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let value = properties
        .get(name)
        .unwrap_or_else(|| panic!("no {name} among {properties:?}"));
    let text: &str = value
        .downcast_ref()
        .unwrap_or_else(|e| panic!("{name} is not a string: {e}"));
    text.parse()
        .unwrap_or_else(|e| panic!("{name} {text:?} is not in the contract: {e:?}"))
}

/// A number property.
fn number<T>(properties: &HashMap<String, OwnedVariant>, name: &str) -> T
where
    T: TryFrom<OwnedVariant>,
    <T as TryFrom<OwnedVariant>>::Error: std::fmt::Display,
{
    let value = properties
        .get(name)
        .unwrap_or_else(|| panic!("no {name} among {properties:?}"));
    let value = value.try_clone().expect("a property value");
    T::try_from(value).unwrap_or_else(|e| panic!("{name} is not a number of its type: {e}"))
}

/// Every service adoptd has, by name.
async fn list_services(connection: &Connection) -> Vec<String> {
    let manager = ManagerProxy::new(connection)
        .await
        .expect("the manager's proxy");
    let rows = manager.list_services().await.expect("ListServices");
    rows.into_iter().map(|row| row.name).collect()
}

/// A service's properties, read whole (`GetAll`); `None` when the
/// service is gone already.
async fn read_status(connection: &Connection, service: &str) -> Option<Status> {
    let properties = PropertiesProxy::builder(connection)
        .destination(BUS_NAME)
        .path(adoptd_dbus::service_path(service))
        .build()
        .await
        .expect("the properties' proxy");
    let interface = InterfaceName::try_from(SERVICE_INTERFACE).expect("the interface");
    let all = properties.get_all(interface).await.ok()?;
    // zbus leaves out of GetAll each property that failed to read: those
    // of a service removed while its properties were read.
    if !Status::PROPERTIES
        .iter()
        .all(|name| all.contains_key(*name))
    {
        return None;
    }
    Some(Status::from_properties(&all))
}

/// Waits until `org.adoptd1` has an owner: adoptd publishes every object
/// before it asks for its name, so they are all there by then.
async fn wait_for_owner(connection: &Connection) {
    let dbus = DBusProxy::new(connection).await.expect("the bus's proxy");
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
        .await
        .expect("subscribe to NameOwnerChanged");
    let name = BusName::try_from(BUS_NAME).expect("adoptd's name");
    if !dbus.name_has_owner(name).await.expect("NameHasOwner") {
        owners.next().await.expect("adoptd to own its name");
    }
}

async fn within_timeout<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
