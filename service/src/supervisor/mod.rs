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
//! Spawning happens in this task too, synchronously: [`crate::spawn`]
//! holds this thread only until the child has exec'd (a vfork-like clone),
//! and reaps a child whose `exec` failed itself, which must never race the
//! reaper. The starts an outcome asks for in a row (every autostart at
//! start-up is one outcome) are made several at once, on a thread a core
//! that lives for those starts only ([`crate::spawn::spawn_each`]); the
//! tracker hears of each, in order, once they are all made.
//!
//! The parts: `catalogue.rs` loads and reloads the service files and
//! resolves names; `batch.rs` is one moment (reap, drain the source,
//! decide) and carries out what the tracker answers. A spawned service's
//! output pipes go to [`crate::output`], whose tasks read them: the
//! supervisor never does.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::PathBuf,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use adoptd_dbus::LoadState;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
};
use tracing::{debug, error, info, warn};

use crate::{
    config::{self, ServiceSpec},
    notify::NotifySocket,
    output::Outputs,
    reaper::{self, Signals},
    source::AdoptionSource,
    tracker::{Command, CommandError, ExitStatus, Notice, Now, Pid, ServiceId, Status, Tracker},
};

mod batch;
mod catalogue;
mod outbox;
mod reattach;
mod reexec;
mod watched;

/// A question or order for the supervisor, from the bus layer.
#[derive(Debug)]
pub enum Request {
    /// An operator's command for a service (authorized already). `Start`
    /// of a name instantiates a template's instance on demand.
    Control {
        service: Target,
        command: Command,
        /// The service, and how many updates the supervisor had published
        /// once it acted on the command.
        reply: oneshot::Sender<Result<(ServiceId, u64), RequestError>>,
    },
    /// Which service is this name, without creating anything.
    Lookup {
        name: String,
        reply: oneshot::Sender<Result<ServiceId, RequestError>>,
    },
    /// The service's member processes (adoptd's own children), ascending;
    /// the bus layer adds their descendants from /proc.
    Members {
        service: ServiceId,
        reply: oneshot::Sender<Vec<Pid>>,
    },
    /// Every service's member processes, as `Members` gives one's (a
    /// service without any is left out): the bus layer answers a whole
    /// `GetManagedObjects` with one question.
    AllMembers {
        reply: oneshot::Sender<Vec<(ServiceId, Vec<Pid>)>>,
    },
    /// Re-read the configuration directory; the reply lists the refusals
    /// (`FILE:LINE: KEY: message`), empty when every file loaded, and how
    /// many updates were published by then (so the bus can answer once it
    /// has applied them).
    Reload {
        reply: oneshot::Sender<(Vec<String>, u64)>,
    },
    /// Re-execute adoptd ([`crate::reexec`]) once `answered` says the
    /// reply to the caller has left; `reply` says whether it will.
    Reexecute {
        reply: oneshot::Sender<Result<(), RequestError>>,
        answered: oneshot::Receiver<()>,
    },
}

/// Which service a request is for.
#[derive(Debug)]
pub enum Target {
    /// A service object's own.
    Id(ServiceId),
    /// By name, as the Manager's methods take it.
    Name(String),
}

/// What the supervisor tells the bus layer, in the order it happened.
#[derive(Debug)]
pub enum Update {
    /// Answer once every update before this one is on the bus (at once
    /// when no bus is connected): a re-exec waits for it, so that no
    /// signal of the old image is lost with it.
    Flush(oneshot::Sender<()>),
    /// A service became known (at load, on reload, or as a new instance).
    ServiceAdded {
        service: ServiceId,
        spec: Arc<ServiceSpec>,
        status: Status,
        load: Load,
    },
    /// A reload changed what a service was loaded from, or whether its
    /// file loaded.
    Configured {
        service: ServiceId,
        spec: Arc<ServiceSpec>,
        load: Load,
    },
    /// Why the last start could not run the program; empty once one could.
    ExecError { service: ServiceId, error: String },
    /// The last `STATUS=` a service sent over sd_notify.
    StatusText { service: ServiceId, text: String },
    /// How many orphans were reaped so far (a restored image says it once).
    OrphansReaped { total: u64 },
    /// Every service of the previous image is published again, as it was
    /// ([`crate::reexec`]): what changes from here on, until the bus is
    /// reached, happened after the previous image's last signals and is
    /// signalled once the name is owned again.
    Restored,
    /// A service is gone (its file was removed, and it has stopped).
    ServiceRemoved { service: ServiceId, name: String },
    /// What the tracker said changed, as it said it: a new status (one per
    /// service per moment), a hand-off, an end, an orphan reaped.
    Tracker(Notice),
}

/// Whether a service's file loaded, as the bus publishes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Load {
    pub state: LoadState,
    /// The refusal, `FILE:LINE: KEY: message`, when the file as it is now
    /// was refused.
    pub error: Option<String>,
    /// The digest of the file as it was last read (loaded or refused),
    /// which `NeedDaemonReload` compares the file on disk with.
    pub digest: Option<u64>,
}

impl Load {
    /// `spec`'s file, as it is now, was loaded.
    pub fn loaded(spec: &ServiceSpec) -> Self {
        Load {
            state: LoadState::Loaded,
            error: None,
            digest: Some(spec.digest),
        }
    }
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
    #[error(
        "{name} cannot start: its service file was refused ({error}); mend it and run adoptctl daemon-reload"
    )]
    NotLoaded { name: String, error: String },
    #[error(
        "{name} is not started: processes of it from before adoptd's re-exec still run ({pids}), and the state that said so could not be read"
    )]
    HeldBack { name: String, pids: String },
    #[error("cannot re-execute adoptd: {0}")]
    Reexec(String),
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

/// Everything the supervisor owns.
pub struct Supervisor {
    tracker: Tracker,
    /// Indexed by `ServiceId`.
    specs: Vec<Arc<ServiceSpec>>,
    /// Whether each service's file loaded, indexed by `ServiceId`.
    loads: Vec<Load>,
    /// Services known only from a refused file: never started.
    stubs: BTreeSet<ServiceId>,
    /// Services whose last start could not run the program, and why.
    exec_failed: BTreeMap<ServiceId, String>,
    /// The last `STATUS=` of each service that sent one.
    status_texts: HashMap<ServiceId, String>,
    /// After a re-exec whose state could not be read: the processes of the
    /// previous image that still live, whose services must not start.
    held_back: Option<reexec::HeldBack>,
    /// What a re-exec executes: the program adoptd was started as.
    program: crate::reexec::Program,
    /// A re-exec was asked for over the bus; it happens once the answer
    /// has left (or after a bound, should the bus never say).
    reexec_pending: Option<(oneshot::Receiver<()>, tokio::time::Instant)>,
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
    /// Main processes that are not adoptd's children, followed by pidfd.
    watched: watched::Watched,
    signals: AsyncFd<Signals>,
    /// What the signalfd said that is not acted on yet.
    wakeup: reaper::Wakeup,
    /// The updates for the bus layer.
    outbox: outbox::Outbox,
    /// Where the services' output goes, read by tasks of its own.
    outputs: Arc<Outputs>,
    epoch: Instant,
    shutting_down: bool,
    /// Reused across batches.
    reaped: Vec<(Pid, ExitStatus)>,
    /// Each service's current run's invocation id.
    invocations: HashMap<ServiceId, crate::invocation::InvocationId>,
    /// Where the record for a re-attach after a crash is kept.
    record: reattach::Recording,
}

impl Supervisor {
    pub fn new(
        config_dir: PathBuf,
        source: Box<dyn AdoptionSource + Send>,
        signals: AsyncFd<Signals>,
        updates: mpsc::UnboundedSender<Vec<Update>>,
        outputs: Arc<Outputs>,
    ) -> Self {
        // SAFETY: the descriptor belongs to the source, which the supervisor
        // owns and drops after this registration (see the field order).
        let source_wakeup = source.wakeup_fd().and_then(|fd| {
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    warn!(
                        "cannot watch the {} source: {}",
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
            loads: Vec::new(),
            stubs: BTreeSet::new(),
            exec_failed: BTreeMap::new(),
            status_texts: HashMap::new(),
            held_back: None,
            program: crate::reexec::Program::current(),
            reexec_pending: None,
            names: BTreeMap::new(),
            retiring: BTreeSet::new(),
            templates: BTreeMap::new(),
            config_dir,
            source,
            pidfds: HashMap::new(),
            watched: watched::Watched::new(),
            signals,
            wakeup: reaper::Wakeup::default(),
            outbox: outbox::Outbox::new(updates),
            outputs,
            epoch: Instant::now(),
            shutting_down: false,
            reaped: Vec::new(),
            invocations: HashMap::new(),
            record: reattach::Recording::default(),
        }
    }

    /// Runs until `shutdown` resolves or SIGTERM/SIGINT arrives, then stops
    /// every service and returns once all are stopped. An error only when
    /// the signalfd can no longer be waited on: adoptd could not reap any
    /// more, and says so rather than pretend to supervise.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut requests_open = true;
        loop {
            // Signals read along with a batch, whatever woke the loop. A
            // SIGCHLD read inside a batch whose rounds ran out comes first:
            // nothing else will wake the loop for that child, and its batch
            // reads the signalfd again (a SIGHUP that came meanwhile is
            // then acted on below, in this turn).
            if std::mem::take(&mut self.wakeup.children) {
                self.reap_batch();
            }
            if std::mem::take(&mut self.wakeup.shutdown) {
                self.begin_shutdown();
            }
            if std::mem::take(&mut self.wakeup.reload) {
                self.reload();
            }
            // Once per turn, however many services changed in it.
            self.write_record_if_changed();
            if std::mem::take(&mut self.wakeup.reexec) && !self.shutting_down {
                info!("SIGUSR2: re-executing");
                self.reexecute().await;
            }
            if self.shutting_down && self.tracker.is_idle() {
                info!("every service is stopped");
                return Ok(());
            }
            let deadline = self
                .tracker
                .next_deadline()
                .map(|at| tokio::time::Instant::from_std(self.epoch + at));
            // What is still asked for (the batch above ran out of rounds
            // again, or a failed re-exec's batch read a signal) is done in
            // the next turn, not after a wait nothing may end: each branch
            // ready now still gets its turn.
            let signals_ask = self.wakeup.asks_for_work();
            tokio::select! {
                () = std::future::ready(()), if signals_ask => {}
                readable = self.signals.readable_mut() => {
                    let mut guard = match readable {
                        Ok(guard) => guard,
                        Err(e) => return Err(e),
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
                () = readable(self.source_wakeup.as_ref(), "the source's events") => self.reap_batch(),
                () = readable(self.notify.as_ref(), "notifications") => self.read_notifications(),
                Some(pid) = self.watched.receiver.recv() => self.watched_exited(pid),
                () = &mut shutdown, if !self.shutting_down => self.begin_shutdown(),
                request = requests.recv(), if requests_open => match request {
                    Some(request) => self.handle_request(request),
                    None => requests_open = false,
                },
                () = reexec_due(&mut self.reexec_pending) => {
                    self.reexec_pending = None;
                    info!("Reexecute(): re-executing");
                    self.reexecute().await;
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
                service,
                command,
                reply,
            } => {
                let id = match service {
                    Target::Id(id) => Ok(id),
                    Target::Name(name) => self.resolve(&name, command == Command::Start),
                };
                let result = id.and_then(|id| {
                    let starts = matches!(command, Command::Start | Command::Restart);
                    if starts {
                        self.check_not_held_back(id)?;
                    }
                    if starts && self.stubs.contains(&id) {
                        return Err(RequestError::NotLoaded {
                            name: self.specs[id.index()].name.clone(),
                            error: self.loads[id.index()].error.clone().unwrap_or_default(),
                        });
                    }
                    self.command(id, command)
                        .map(|()| (id, self.outbox.published()))
                        .map_err(|source| RequestError::Refused {
                            name: self.specs[id.index()].name.clone(),
                            source,
                        })
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
                reply.send(self.tracker.members(service)).ok();
            }
            Request::AllMembers { reply } => {
                self.reap_batch();
                let all: Vec<(ServiceId, Vec<Pid>)> = self
                    .tracker
                    .ids()
                    .map(|id| (id, self.tracker.members(id)))
                    .filter(|(_, members)| !members.is_empty())
                    .collect();
                reply.send(all).ok();
            }
            Request::Reload { reply } => {
                let refused = self.reload();
                reply.send((refused, self.outbox.published())).ok();
            }
            Request::Reexecute { reply, answered } => {
                let result = self.accept_reexec();
                if result.is_ok() {
                    self.reexec_pending =
                        Some((answered, tokio::time::Instant::now() + REEXEC_REPLY_BOUND));
                }
                reply.send(result).ok();
            }
        }
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

    /// Starts each of `services`, as one outcome: their programs are then
    /// made at once ([`crate::spawn::spawn_each`]) rather than one after
    /// the other.
    fn start_each(&mut self, services: &[ServiceId]) {
        if self.shutting_down {
            return;
        }
        let mut starts = crate::tracker::Outcome::default();
        for &id in services {
            let now = self.now();
            if let Ok(out) = self.tracker.command(now, id, Command::Start) {
                starts.actions.extend(out.actions);
                starts.notices.extend(out.notices);
            }
        }
        let many = starts.actions.len() >= MANY_STARTS;
        self.carry_out(starts);
        if many {
            // What the starts needed for a moment (their outcomes, the
            // spawning threads' arenas) lies between what stays.
            crate::memory::return_free_pages();
        }
    }

    /// Hands an update to the bus layer, if one listens.
    fn publish(&self, update: Update) {
        self.outbox.publish(update);
    }

    /// Hands what the tracker said of a moment to the bus layer, at once
    /// (and marks the services' records for rewriting);
    /// [`Self::log_notice`] logs each.
    fn tell_notices(&self, notices: &[Notice]) {
        for notice in notices {
            if let Notice::Changed { service, .. } = *notice {
                self.record.changed.borrow_mut().insert(service);
            }
        }
        self.outbox
            .publish_together(notices.iter().map(|notice| Update::Tracker(*notice)));
    }

    /// The log line of what the tracker said.
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
    }
}

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

/// From this many starts at once (a start-up, a reload), the allocator is
/// asked to return its free pages after them.
const MANY_STARTS: usize = 64;

/// How long a re-exec asked over the bus waits for its answer to leave.
const REEXEC_REPLY_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves when a pending re-exec is due: its answer has left (or will
/// never be known to), or the bound passed.
async fn reexec_due(pending: &mut Option<(oneshot::Receiver<()>, tokio::time::Instant)>) {
    let Some((answered, bound)) = pending else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = answered => {}
        () = tokio::time::sleep_until(*bound) => {}
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
