//! The supervisor: the one owner of all state.
//!
//! A single task runs [`Supervisor::run`]. It alone touches the tracker,
//! the loaded service files and the pidfds; everything else talks to it by
//! messages. One turn of its loop handles one wake-up: a signal (children
//! died, or shutdown), an operator's [`Request`], or a deadline. A wake-up
//! for children is handled as one *batch*: reap everything, let the
//! adoption source drain what it knows, then give the tracker the whole
//! moment at once, and carry out what it answers.
//!
//! Spawning happens in this task too, synchronously: the standard library
//! waits for a child whose `exec` failed, and that must never race the
//! reaper.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::PathBuf,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use adoptd_dbus::Signal;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
};
use tracing::{debug, error, info, warn};

use crate::{
    config::{self, ServiceSpec},
    invocation::InvocationId,
    memory::{self, Shrink},
    notify::NotifySocket,
    proc,
    reaper::{self, Signals},
    source::AdoptionSource,
    spawn,
    tracker::{
        Action, Command, CommandError, Event, ExitStatus, Expect, Notice, Notification, Now, Pid,
        Restart, ServiceId, State, Status, Tracker,
    },
};

/// A question or order for the supervisor, from the bus layer.
#[derive(Debug)]
pub enum Request {
    /// An operator's command for a service, by name (authorized already).
    /// `Start` instantiates a template's instance on demand.
    Control {
        name: String,
        command: Command,
        reply: oneshot::Sender<Result<ServiceId, RequestError>>,
    },
    /// Which service is this name, without creating anything.
    Lookup {
        name: String,
        reply: oneshot::Sender<Result<ServiceId, RequestError>>,
    },
    /// The service's live processes, ascending: members and their
    /// descendants.
    Members {
        service: ServiceId,
        reply: oneshot::Sender<Vec<Pid>>,
    },
    /// Re-read the configuration directory.
    Reload { reply: oneshot::Sender<()> },
}

/// What the supervisor tells the bus layer, in the order it happened.
#[derive(Clone, Debug)]
pub enum Update {
    /// A service became known (at load, on reload, or as a new instance).
    ServiceAdded {
        service: ServiceId,
        spec: Arc<ServiceSpec>,
        status: Status,
    },
    /// A service is gone (its file was removed, and it has stopped).
    ServiceRemoved { service: ServiceId, name: String },
    /// What the tracker said changed, as it said it: a new status (one per
    /// service per moment), a hand-off, an end, an orphan reaped.
    Tracker(Notice),
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no service is named {0:?}")]
    NoSuchService(String),
    #[error("{name:?} is not a valid service name: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{name}: {source}")]
    Refused {
        name: String,
        #[source]
        source: CommandError,
    },
    #[error("cannot instantiate {name}: {reason}")]
    BadInstance { name: String, reason: String },
}

/// How adoptd runs: as the machine's or a container's init, or as a child
/// subreaper under another init.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Init,
    Subreaper,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Subreaper => "subreaper",
        }
    }
}

/// How many `PIDs` reads make a burst worth giving memory back after, and
/// how long after its last read.
const READS_BEFORE_TRIM: u32 = 256;
const TRIM_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything the supervisor owns.
pub struct Supervisor {
    tracker: Tracker,
    /// Indexed by `ServiceId`.
    specs: Vec<Arc<ServiceSpec>>,
    names: BTreeMap<String, ServiceId>,
    /// Services whose file is gone, removed once they settle.
    retiring: BTreeSet<ServiceId>,
    templates: BTreeMap<String, config::Template>,
    config_dir: PathBuf,
    /// The source's own wake-up descriptor, if it has one; declared (and
    /// so dropped) before the source that owns the descriptor.
    source_wakeup: Option<AsyncFd<RawFd>>,
    source: Box<dyn AdoptionSource + Send>,
    /// Where services with `expect = "notify"` say they are ready.
    notify: Option<AsyncFd<NotifySocket>>,
    pidfds: HashMap<Pid, OwnedFd>,
    signals: AsyncFd<Signals>,
    /// What the signalfd said that is not acted on yet.
    wakeup: reaper::Wakeup,
    updates: mpsc::UnboundedSender<Update>,
    epoch: Instant,
    shutting_down: bool,
    /// Reused across batches.
    reaped: Vec<(Pid, ExitStatus)>,
    /// `PIDs` reads since the allocator last gave back free pages, and
    /// when it will next: a client listing thousands of services makes
    /// adoptd build a reply of megabytes, which glibc keeps once freed.
    reads_since_trim: u32,
    trim_at: Option<tokio::time::Instant>,
}

impl Supervisor {
    pub fn new(
        config_dir: PathBuf,
        source: Box<dyn AdoptionSource + Send>,
        signals: AsyncFd<Signals>,
        updates: mpsc::UnboundedSender<Update>,
    ) -> Self {
        // SAFETY: the descriptor belongs to the source, which the supervisor
        // owns and drops after this registration (see the field order).
        let source_wakeup = source.wakeup_fd().and_then(|fd| {
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    warn!(
                        "cannot watch the {} tracker: {}",
                        source.kind(),
                        e.into_parts().1
                    )
                })
                .ok()
        });
        let notify = NotifySocket::open()
            .and_then(|socket| {
                // SAFETY: `NotifySocket` owns its socket and never closes or
                // replaces it while it lives.
                unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
            })
            .map_err(|e| error!("cannot open the notification socket: {e}; services with expect = \"notify\" will not become running"))
            .ok();
        Supervisor {
            source_wakeup,
            notify,
            tracker: Tracker::new(),
            specs: Vec::new(),
            names: BTreeMap::new(),
            retiring: BTreeSet::new(),
            templates: BTreeMap::new(),
            config_dir,
            source,
            pidfds: HashMap::new(),
            signals,
            wakeup: reaper::Wakeup::default(),
            updates,
            epoch: Instant::now(),
            shutting_down: false,
            reaped: Vec::new(),
            reads_since_trim: 0,
            trim_at: None,
        }
    }

    /// Loads the configuration directory and starts what starts by itself.
    pub fn load(&mut self) {
        self.read_config(true);
    }

    /// Reads the configuration directory. New services are added (and
    /// started if they start by themselves; at start-up, all such are);
    /// changed ones take effect at their next start; a file that became
    /// unreadable or wrong keeps its service as it was. A service whose file
    /// is gone is removed once it is stopped, and never restarted meanwhile.
    fn read_config(&mut self, initial: bool) {
        let loaded = config::load_dir(&self.config_dir);
        for problem in &loaded.errors {
            error!("{problem}");
        }
        // Names whose file is there but wrong: their services stay.
        let kept: BTreeSet<String> = loaded
            .errors
            .iter()
            .filter_map(|e| {
                e.path
                    .file_stem()?
                    .to_str()
                    .map(|n| n.trim_end_matches('@').to_owned())
            })
            .collect();
        self.templates = loaded.templates;
        let mut present = BTreeSet::new();
        let mut autostart = Vec::new();
        for spec in loaded.services {
            let starts = spec.autostart && (initial || !self.names.contains_key(&spec.name));
            present.insert(spec.name.clone());
            let id = self.add_or_update(spec);
            self.retiring.remove(&id);
            if starts {
                autostart.push(id);
            }
        }
        let gone: Vec<(String, ServiceId)> = self
            .names
            .iter()
            .filter(|(name, _)| !present.contains(*name))
            .filter(|(name, _)| {
                let (base, instance) = config::split_name(name);
                let on_demand = instance.is_some() && self.templates.contains_key(base);
                !on_demand && !kept.contains(base)
            })
            .map(|(name, &id)| (name.clone(), id))
            .collect();
        for (name, id) in gone {
            info!(service = %name, "its service file is gone: removed once stopped");
            let mut policy = self.specs[id.index()].policy;
            policy.restart = Restart::No;
            self.tracker.set_policy(id, policy);
            self.retiring.insert(id);
        }
        self.remove_retired();
        info!(
            services = self.names.len(),
            templates = self.templates.len(),
            errors = loaded.errors.len(),
            "loaded {}",
            self.config_dir.display()
        );
        for id in autostart {
            self.command(id, Command::Start).ok();
        }
    }

    /// Forgets the retiring services that have settled.
    fn remove_retired(&mut self) {
        let settled: Vec<ServiceId> = self
            .retiring
            .iter()
            .copied()
            .filter(|&id| {
                self.tracker.status(id).is_some_and(|s| {
                    matches!(s.state, State::Stopped | State::Failed) && s.main_pid.is_none()
                }) && self.tracker.members(id).is_empty()
            })
            .collect();
        for id in settled {
            self.retiring.remove(&id);
            let name = self.specs[id.index()].name.clone();
            self.names.remove(&name);
            info!(service = %name, "removed");
            self.publish(Update::ServiceRemoved { service: id, name });
        }
    }

    /// Runs until `shutdown` resolves or SIGTERM/SIGINT arrives, then stops
    /// every service and returns once all are stopped.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut requests_open = true;
        loop {
            // Signals read along with a batch, whatever woke the loop.
            if std::mem::take(&mut self.wakeup.shutdown) {
                self.begin_shutdown();
            }
            if std::mem::take(&mut self.wakeup.reload) {
                self.reload();
            }
            if self.shutting_down && self.tracker.is_idle() {
                info!("every service is stopped");
                return;
            }
            let deadline = self
                .tracker
                .next_deadline()
                .map(|at| tokio::time::Instant::from_std(self.epoch + at));
            tokio::select! {
                readable = self.signals.readable_mut() => {
                    let mut guard = match readable {
                        Ok(guard) => guard,
                        Err(e) => {
                            error!("cannot wait for signals: {e}");
                            return;
                        }
                    };
                    match guard.get_inner_mut().drain() {
                        Ok(wakeup) => self.wakeup.merge(wakeup),
                        Err(e) => error!("cannot read signals: {e}"),
                    }
                    guard.clear_ready();
                    drop(guard);
                    // Reap even without SIGCHLD: a coalesced signal is
                    // never lost this way.
                    self.reap_batch();
                }
                () = readable(self.source_wakeup.as_ref(), "the tracker's events") => self.reap_batch(),
                () = readable(self.notify.as_ref(), "notifications") => self.read_notifications(),
                () = &mut shutdown, if !self.shutting_down => self.begin_shutdown(),
                request = requests.recv(), if requests_open => match request {
                    Some(request) => self.handle_request(request),
                    None => requests_open = false,
                },
                () = sleep_until(self.trim_at) => {
                    self.trim_at = None;
                    self.reads_since_trim = 0;
                    debug!("giving back the memory of a large reply");
                    memory::return_free_pages();
                }
                () = sleep_until(deadline) => {
                    let now = self.now();
                    let out = self.tracker.tick(now);
                    self.carry_out(out);
                }
            }
        }
    }

    fn now(&self) -> Now {
        let realtime_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Now {
            monotonic: self.epoch.elapsed(),
            realtime_us,
        }
    }

    fn add_or_update(&mut self, spec: ServiceSpec) -> ServiceId {
        let policy = spec.policy;
        match self.names.get(&spec.name) {
            Some(&id) => {
                self.tracker.set_policy(id, policy);
                self.specs[id.index()] = Arc::new(spec);
                id
            }
            None => {
                let now = self.now();
                let id = self.tracker.add_service(policy, now);
                self.names.insert(spec.name.clone(), id);
                let spec = Arc::new(spec);
                self.specs.push(Arc::clone(&spec));
                if let Some(status) = self.tracker.status(id) {
                    self.publish(Update::ServiceAdded {
                        service: id,
                        spec,
                        status,
                    });
                }
                id
            }
        }
    }

    /// Re-reads the configuration directory: new services are added (and
    /// started if they start by themselves), changed ones take effect at
    /// their next start. Removed files leave their services in place until
    /// they are stopped.
    fn reload(&mut self) {
        info!("reloading {}", self.config_dir.display());
        self.read_config(false);
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        info!("stopping every service");
        self.shutting_down = true;
        let ids: Vec<ServiceId> = self.names.values().copied().collect();
        for id in ids {
            // Stopped services refuse; that is fine.
            self.command(id, Command::Stop).ok();
        }
    }

    fn handle_request(&mut self, request: Request) {
        // A requester that went away does not undo its command.
        match request {
            Request::Control {
                name,
                command,
                reply,
            } => {
                let result = self
                    .resolve(&name, command == Command::Start)
                    .and_then(|id| {
                        self.command(id, command)
                            .map(|()| id)
                            .map_err(|source| RequestError::Refused { name, source })
                    });
                reply.send(result).ok();
            }
            Request::Lookup { name, reply } => {
                reply.send(self.resolve(&name, false)).ok();
            }
            Request::Members { service, reply } => {
                // An orphan adopted without any death of adoptd's own
                // children raises no signal: a source that only looks after
                // reaps (procfs) looks now, so the answer includes it.
                self.reap_batch();
                let members = self.tracker.members(service);
                reply.send(proc::with_descendants(&members)).ok();
                self.reads_since_trim = self.reads_since_trim.saturating_add(1);
                if self.reads_since_trim >= READS_BEFORE_TRIM {
                    // A second after the last read of the burst, the reply
                    // has been sent and freed.
                    self.trim_at = Some(tokio::time::Instant::now() + TRIM_AFTER);
                }
            }
            Request::Reload { reply } => {
                self.reload();
                reply.send(()).ok();
            }
        }
    }

    /// Finds a service by name; with `instantiate`, creates a template's
    /// instance on demand.
    fn resolve(&mut self, name: &str, instantiate: bool) -> Result<ServiceId, RequestError> {
        config::validate_service_name(name).map_err(|e| RequestError::InvalidName {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        let (template, instance) = config::split_name(name);
        let (Some(instance), true) = (instance, instantiate) else {
            return Err(RequestError::NoSuchService(name.to_owned()));
        };
        let template = self
            .templates
            .get(template)
            .ok_or_else(|| RequestError::NoSuchService(name.to_owned()))?;
        let spec = template
            .instantiate(instance)
            .map_err(|e| RequestError::BadInstance {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(self.add_or_update(spec))
    }

    fn command(&mut self, id: ServiceId, command: Command) -> Result<(), CommandError> {
        if self.shutting_down && matches!(command, Command::Start | Command::Restart) {
            return Err(CommandError::NotRunning);
        }
        let now = self.now();
        let out = self.tracker.command(now, id, command)?;
        self.carry_out(out);
        Ok(())
    }

    /// One moment: reap, drain the source, decide.
    fn reap_batch(&mut self) {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.clear();
        let mut events = Vec::new();
        // A source that saw a child die between the reap and its look asks
        // for another round, so the whole moment lands in one batch.
        let mut looked_at = 0;
        for _ in 0..MAX_ROUNDS {
            if self.source.looks_before_reaping() {
                let source = &mut self.source;
                reaper::reap_all_looking(&mut reaped, &mut |pid| source.look_before_reaping(pid));
            } else {
                reaper::reap_all(&mut reaped);
            }
            // Adoption notices of everything just reaped are queued by now.
            match self.signals.get_mut().drain() {
                Ok(wakeup) => self.wakeup.merge(wakeup),
                Err(e) => error!("cannot read signals: {e}"),
            }
            let notices = std::mem::take(&mut self.wakeup.adoptions);
            let lost = std::mem::take(&mut self.wakeup.adoptions_lost);
            self.source.adoption_notices(&notices, lost);
            if let Err(e) = self.source.collect(&reaped[looked_at..], &mut events) {
                warn!(
                    "the {} tracker could not read adoptions: {e}",
                    self.source.kind()
                );
            }
            looked_at = reaped.len();
            if !self.source.needs_another_round() {
                break;
            }
        }
        for &(pid, _) in &reaped {
            self.pidfds.remove(&pid);
        }
        for event in &events {
            if let Event::Adopted {
                pid,
                previous_parent,
                ..
            } = *event
            {
                let dead = reaped.iter().any(|&(dead, _)| dead == pid);
                debug!(
                    pid,
                    previous_parent = previous_parent.unwrap_or(0),
                    dead,
                    "adopted"
                );
                if !dead {
                    self.hold(pid);
                }
            }
        }
        for &(pid, status) in &reaped {
            events.push(Event::Exited { pid, status });
            if let Some(id) = self.tracker.main_of(pid)
                && let Some(main) = read_pid_file(&self.specs[id.index()])
            {
                events.push(Event::PidFile {
                    service: id,
                    pid: main,
                });
            }
        }
        self.reaped = reaped;
        if !events.is_empty() {
            let now = self.now();
            let out = self.tracker.apply(now, &events);
            self.carry_out(out);
        }
        self.shrink_if_sparse();
    }

    /// After a storm: gives back the room of tables that emptied, and the
    /// allocator's free pages (see [`crate::memory`]).
    fn shrink_if_sparse(&mut self) {
        let shrunk = self.tracker.shrink_if_sparse()
            | self.source.shrink_if_sparse()
            | self.pidfds.shrink_if_sparse()
            | self.reaped.shrink_if_sparse();
        if shrunk {
            debug!("shrank tables a storm left sparse");
            memory::return_free_pages();
        }
    }

    /// Acts on what services said over the notification socket.
    fn read_notifications(&mut self) {
        let Some(socket) = &self.notify else {
            return;
        };
        let mut messages = Vec::new();
        if let Err(e) = socket.get_ref().read_all(&mut messages) {
            warn!("cannot read notifications: {e}");
        }
        for message in messages {
            let Some(id) = self.service_of_sender(message.sender) else {
                debug!(
                    pid = message.sender,
                    "a notification from a process of no service"
                );
                continue;
            };
            let name = self.specs[id.index()].name.clone();
            if let Some(status) = &message.status {
                info!(service = %name, "status: {status}");
            }
            let main_pid = message.main_pid.filter(|&pid| {
                let known = self.tracker.service_of(pid) == Some(id);
                if !known {
                    warn!(service = %name, pid, "MAINPID={pid} ignored: not a process adoptd knows in this service");
                }
                known
            });
            let now = self.now();
            let out = self.tracker.notified(
                now,
                id,
                Notification {
                    ready: message.ready,
                    main_pid,
                },
            );
            self.carry_out(out);
        }
    }

    /// The service of a process that sent a notification: its own, or that
    /// of its nearest ancestor adoptd tracks.
    fn service_of_sender(&self, sender: Pid) -> Option<ServiceId> {
        let mut pid = sender;
        // Deep enough for any real process tree; bounded whatever /proc says.
        for _ in 0..64 {
            if let Some(id) = self.tracker.service_of(pid) {
                return Some(id);
            }
            pid = proc::read_stat(pid)?.parent;
            if pid <= 1 || pid == std::process::id() {
                return None;
            }
        }
        None
    }

    /// Keeps a pidfd for a new child of adoptd's.
    fn hold(&mut self, pid: Pid) {
        match spawn::open_pidfd(pid) {
            Ok(fd) => {
                self.pidfds.insert(pid, fd);
            }
            Err(e) => debug!("{}", crate::errors::chain(&e)),
        }
    }

    /// Carries out the tracker's actions (which may produce further
    /// outputs, as spawning does) and logs its notices.
    fn carry_out(&mut self, out: crate::tracker::Outcome) {
        self.carry_out_actions(out);
        if !self.retiring.is_empty() {
            self.remove_retired();
        }
    }

    fn carry_out_actions(&mut self, out: crate::tracker::Outcome) {
        let mut pending = vec![out];
        while let Some(out) = pending.pop() {
            for notice in &out.notices {
                self.log_notice(notice);
            }
            for action in out.actions {
                match action {
                    Action::Spawn { service } => pending.push(self.spawn(service)),
                    Action::Signal {
                        service,
                        pid,
                        signal,
                    } => self.signal(service, pid, signal),
                }
            }
        }
    }

    fn spawn(&mut self, id: ServiceId) -> crate::tracker::Outcome {
        let spec = Arc::clone(&self.specs[id.index()]);
        let invocation = InvocationId::new();
        let notify_socket = self
            .notify
            .as_ref()
            .filter(|_| spec.policy.expect == Expect::Notify)
            .map(|socket| socket.get_ref().address());
        let event = match spawn::spawn(&spec, invocation, notify_socket) {
            Ok(spawned) => {
                self.source.spawned(spawned.pid, id, invocation);
                self.pidfds.insert(spawned.pid, spawned.pidfd);
                if let Some(output) = spawned.output {
                    forward_output(&spec.name, output);
                }
                info!(service = %spec.name, pid = spawned.pid, %invocation, "started {}", spec.exec.join(" "));
                Event::Spawned {
                    service: id,
                    pid: spawned.pid,
                    start_time: proc::read_stat(spawned.pid).map(|stat| stat.start_time),
                }
            }
            Err(e) => {
                error!(service = %spec.name, "cannot start: {}", crate::errors::chain(&e));
                Event::SpawnFailed { service: id }
            }
        };
        let now = self.now();
        self.tracker.apply(now, &[event])
    }

    fn signal(&mut self, id: ServiceId, pid: Pid, signal: Signal) {
        let name = &self.specs[id.index()].name;
        match self.pidfds.get(&pid) {
            Some(fd) => match spawn::send_signal(fd, signal) {
                Ok(()) => debug!(service = %name, pid, %signal, "signalled"),
                Err(e) => debug!(service = %name, pid, %signal, "cannot signal: {e}"),
            },
            // Never by bare pid: without a pidfd the process may not be
            // the one the tracker means any more.
            None => {
                warn!(service = %name, pid, %signal, "not signalled: adoptd holds no pidfd for it")
            }
        }
    }

    /// Hands an update to the bus layer, if one listens.
    fn publish(&self, update: Update) {
        // No receiver (no bus, or it is reconnecting and will resync): the
        // log still says everything.
        self.updates.send(update).ok();
    }

    /// Logs what the tracker said and hands it to the bus layer.
    fn log_notice(&self, notice: &Notice) {
        match *notice {
            Notice::Changed {
                service, status, ..
            } => info!(
                service = %self.specs[service.index()].name,
                state = status.state.as_str(),
                main_pid = status.main_pid.unwrap_or(0),
                previous_pid = status.previous_pid.unwrap_or(0),
                source = status.main_pid_source.as_str(),
                handoffs = status.handoffs,
                restarts = status.restarts,
                result = status.result.as_str(),
                "status"
            ),
            Notice::Adopted {
                service,
                pid,
                previous_pid,
            } => {
                info!(service = %self.specs[service.index()].name, pid, previous_pid, "hand-off");
            }
            Notice::Exited {
                service,
                pid,
                status,
            } => {
                let (code, signal) = match status {
                    ExitStatus::Code(code) => (code, 0),
                    ExitStatus::Signal(signal) => (-1, signal),
                };
                info!(service = %self.specs[service.index()].name, pid, code, signal, "main process exited");
            }
            Notice::OrphanReaped { pid, status, .. } => {
                debug!(pid, ?status, "reaped a process of no service");
            }
        }
        self.publish(Update::Tracker(*notice));
    }
}

/// The pid in the service's pid file, if it has one that reads well.
fn read_pid_file(spec: &ServiceSpec) -> Option<Pid> {
    let path = spec.pid_file.as_ref()?;
    let path = match &spec.chroot {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.clone(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&pid: &Pid| pid > 0)
}

/// How many reap-and-look rounds one batch may take.
const MAX_ROUNDS: usize = 8;

/// Resolves when the source's descriptor is readable (clearing the
/// readiness, as `collect` drains it); never without one.
/// Resolves when `fd` may have something to read (never without one);
/// the reader then reads until it would block.
async fn readable<T: AsRawFd>(fd: Option<&AsyncFd<T>>, what: &str) {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    match fd.readable().await {
        Ok(mut guard) => guard.clear_ready(),
        Err(e) => {
            warn!("cannot wait for {what}: {e}");
            std::future::pending().await
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The longest line of a service's output kept whole; longer ones are cut.
const MAX_LINE: usize = 4096;

/// Logs a service's output line by line until every writer has closed it.
fn forward_output(name: &str, fd: OwnedFd) {
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(pipe) => pipe,
        Err(e) => {
            warn!(service = %name, "cannot read the service's output: {e}");
            return;
        }
    };
    let name = name.to_owned();
    // A task per running service, mostly waiting: what it keeps between
    // reads is small (the read buffer lives only while it reads, and the
    // line buffer only holds an unfinished line).
    tokio::spawn(async move {
        let pipe = pipe;
        let mut line = Vec::new();
        loop {
            if pipe.readable().await.is_err() {
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = match pipe.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            };
            for &byte in &chunk[..n] {
                if byte == b'\n' || line.len() >= MAX_LINE {
                    info!(target: "adoptd::output", service = %name, "{}", String::from_utf8_lossy(&line));
                    line.clear();
                    if byte == b'\n' {
                        continue;
                    }
                }
                line.push(byte);
            }
            if line.is_empty() && line.capacity() > 0 {
                line = Vec::new();
            }
        }
        if !line.is_empty() {
            info!(target: "adoptd::output", service = %name, "{}", String::from_utf8_lossy(&line));
        }
    });
}
