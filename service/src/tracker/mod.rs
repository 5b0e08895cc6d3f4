//! The tracker: which process *is* each service, as a pure state machine.
//!
//! It owns every service's run-time state (state, main process, previous
//! process, members, counters) and decides hand-offs, failures, clean-ups,
//! restarts and stops. It does no I/O and reads no clock: the supervisor
//! feeds it [`Event`]s and [`Command`]s with the time they happened, and
//! carries out the [`Action`]s it returns; the bus layer publishes the
//! [`Notice`]s.
//!
//! # One moment, any order
//!
//! [`Tracker::apply`] takes one *batch*: everything the sources and the
//! reaper learned in one wake-up. The kernel reparents a dying process's
//! children before the process becomes waitable, so a batch that holds the
//! exit of a main process also holds every adoption caused by it, but the
//! order in which the sources report them is arbitrary ("Exited before
//! Adopted" or the other way round). The tracker therefore records every
//! fact of the batch first, in a canonical order (spawns, forks, adoptions,
//! exits), and only then decides about the main processes that exited. The
//! result does not depend on the order of the events inside a batch; a
//! property test checks every permutation.
//!
//! # One dance, one verdict
//!
//! The hand-off rule (DESIGN.md, "Following the main process") lives in
//! [`handoff`]: it walks the *lineage* of the run (each adoptee's previous
//! parent, and the graves of the members that exited) rather than the
//! order facts arrived in, so the same forks and exit statuses give the
//! same state, result, main and previous pid and hand-off count whichever
//! process the kernel ran first and however the events fell into moments.
//! A failed hop fails the run whenever it happened; a guess made among
//! live candidates is revised from where it was made once they end.
//! `model.rs` holds the tracker to that on random dances under random
//! schedules.
//!
//! Leftover members are stopped (the stop signal to all of them at once,
//! and to any that joins while the service stops; SIGKILL after the stop
//! timeout) before the service settles or restarts.
//!
//! # Adoptees not yet explained
//!
//! A source may report an adoptee before the process it came from is known
//! (a hop that finished child first is reaped only when its own parent
//! dies). Such adoptees, live or exited, wait, indexed by previous parent,
//! until a moment explains that parent; their bounded tables cost a moment
//! nothing unless it reports a process they may descend from.
//!
//! # Where things are
//!
//! This file is the public vocabulary (events, commands, actions, notices,
//! the published status) and the [`Tracker`]'s own methods. The work of
//! one moment is a `Batch` (`batch.rs`: recording facts and collecting
//! what changed); `attribution.rs` finds the service of each adoptee;
//! `handoff.rs` is the hand-off rule; `contenders.rs` revises a guess;
//! `lifecycle.rs` starts, stops and restarts; `service.rs` is one service's
//! run-time state; `policy.rs` what its configuration asks for.
//!
//! # Ids
//!
//! A [`ServiceId`] is the index of its service in the tracker's table:
//! [`Tracker::add_service`] hands ids out in order and services are never
//! removed (a retired service stays, stopped), so indexing the table by an
//! id the tracker handed out never fails. Ids that come from outside (a
//! command for an unknown id) go through `services.get`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::Duration,
};

use adoptd_dbus::Signal;
use serde::{Deserialize, Serialize};

use crate::memory::Shrink;

mod attribution;
mod batch;
mod contenders;
mod handoff;
mod lifecycle;
mod policy;
mod service;

use attribution::UnexplainedFailure;
use batch::{Batch, Facts};
pub use policy::{Expect, Policy, Restart, StartLimit};
use service::{Grave, Process, Service};

/// A process id, as the kernel gives it in adoptd's pid namespace.
pub type Pid = u32;

/// The exit code recorded when a service's program could not be executed
/// at all (as a shell reports "cannot execute").
pub const EXIT_CODE_EXEC_FAILED: i32 = 127;

/// Identifies a service inside the tracker; stable for the service's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceId(u32);

impl ServiceId {
    /// The index of the service in the tracker's table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The moment an event happened, on both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Now {
    /// Monotonic time, for deadlines and start limits.
    pub monotonic: Duration,
    /// Wall-clock time in microseconds since the epoch, for timestamps
    /// shown to people.
    pub realtime_us: u64,
}

/// How a process ended, as `waitid` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0: the only ending that can be a hand-off.
    pub fn is_success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

/// What an adoption source can tell about a newcomer besides its previous
/// parent (all of it, for the `procfs` source, which cannot tell that):
/// clues to the service it belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clues {
    /// The session id of the process.
    pub session: Option<Pid>,
    /// Its start time (clock ticks since boot), to find the oldest.
    pub start_time: Option<u64>,
    /// The nearest ancestor that is (or was, in this moment) adoptd's own
    /// child, for sources that see lineage but not adoptd's services.
    pub ancestor: Option<Pid>,
    /// The service whose current run the process's environment names
    /// (the `procfs` source reads the invocation id adoptd gave the run).
    pub run_of: Option<ServiceId>,
    /// Caught inside `exit`, with nothing left to name its run (`procfs`):
    /// about to die, it is never placed by a guess, and while it is not
    /// placed no previous parent of its moment is sure.
    #[serde(default)]
    pub dying: bool,
}

/// The tracker's input: facts about processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// adoptd started the service's first process (`start_time` in clock
    /// ticks since boot, where known).
    Spawned {
        service: ServiceId,
        pid: Pid,
        start_time: Option<u64>,
    },
    /// adoptd could not start the service's program at all.
    SpawnFailed { service: ServiceId },
    /// A tracked process created a child.
    Forked { parent: Pid, child: Pid },
    /// `pid` was reparented to adoptd; `previous_parent` is the parent that
    /// died, where the source can tell.
    Adopted {
        pid: Pid,
        previous_parent: Option<Pid>,
        clues: Clues,
    },
    /// adoptd reaped `pid`.
    Exited { pid: Pid, status: ExitStatus },
    /// The pid the service's pid file named when its main process exited;
    /// only used to break a tie between heirs.
    PidFile { service: ServiceId, pid: Pid },
}

/// An operator's request, already authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
    /// Send this signal to the main process.
    Kill(Signal),
    /// Send the configured reload signal to the main process.
    Reload,
    /// A failed service becomes stopped, its start-limit count cleared;
    /// nothing for a service that is not failed.
    ResetFailed,
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the service is already running")]
    AlreadyRunning,
    #[error("the service is not running")]
    NotRunning,
}

/// What the supervisor must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the service's program, then report `Spawned` or `SpawnFailed`.
    Spawn { service: ServiceId },
    /// Send `signal` to `pid`, a live member of `service`.
    Signal {
        service: ServiceId,
        pid: Pid,
        signal: Signal,
    },
}

/// What changed, for the bus layer and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// These published properties of the service changed (one notice per
    /// service per batch).
    Changed {
        service: ServiceId,
        /// The service's published view after the batch.
        status: Status,
        changes: Changes,
    },
    /// A hand-off: `pid` took over from `previous_pid`.
    Adopted {
        service: ServiceId,
        pid: Pid,
        previous_pid: Pid,
    },
    /// The main process ended the service's run (not a hand-off).
    Exited {
        service: ServiceId,
        pid: Pid,
        status: ExitStatus,
    },
    /// A reaped process that belonged to no service.
    OrphanReaped {
        pid: Pid,
        status: ExitStatus,
        /// Orphans reaped since adoptd started, this one included.
        total: u64,
    },
}

/// The tracker's answer to one batch, tick or command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub actions: Vec<Action>,
    pub notices: Vec<Notice>,
}

/// A service's state, as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    Stopped,
    Starting,
    Running,
    Stopping,
    Restarting,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Restarting => "restarting",
            State::Failed => "failed",
        }
    }
}

/// How the tracker learned the current main process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MainPidSource {
    Spawn,
    Adoption,
    PidFile,
    Notify,
    Guess,
}

impl MainPidSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MainPidSource::Spawn => "spawn",
            MainPidSource::Adoption => "adoption",
            MainPidSource::PidFile => "pid-file",
            MainPidSource::Notify => "notify",
            MainPidSource::Guess => "guess",
        }
    }
}

/// How the service's last run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunResult {
    Success,
    ExitCode,
    Signal,
    Timeout,
    StartLimitHit,
}

impl RunResult {
    /// The result of a run whose main line ended with `status`.
    pub(super) fn of_exit(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Code(0) => RunResult::Success,
            ExitStatus::Code(_) => RunResult::ExitCode,
            ExitStatus::Signal(_) => RunResult::Signal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::ExitCode => "exit-code",
            RunResult::Signal => "signal",
            RunResult::Timeout => "timeout",
            RunResult::StartLimitHit => "start-limit-hit",
        }
    }
}

/// A set of published properties, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes(u16);

impl Changes {
    pub const STATE: Changes = Changes(1);
    pub const MAIN_PID: Changes = Changes(1 << 1);
    pub const PREVIOUS_PID: Changes = Changes(1 << 2);
    pub const MAIN_PID_SOURCE: Changes = Changes(1 << 3);
    pub const HANDOFFS: Changes = Changes(1 << 4);
    pub const RESTARTS: Changes = Changes(1 << 5);
    pub const STATE_CHANGE_TIMESTAMP: Changes = Changes(1 << 6);
    pub const EXIT: Changes = Changes(1 << 7);
    pub const RESULT: Changes = Changes(1 << 8);
    pub const REATTACHED: Changes = Changes(1 << 9);
    /// Every published property of a status.
    pub const ALL: Changes = Changes((1 << 10) - 1);

    pub fn contains(self, other: Changes) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds `other`'s properties.
    pub fn insert(&mut self, other: Changes) {
        self.0 |= other.0;
    }
}

/// The published view of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// The main process, while there is one.
    pub main_pid: Option<Pid>,
    /// The process the main process took over from.
    pub previous_pid: Option<Pid>,
    pub main_pid_source: MainPidSource,
    /// Hand-offs since the last start.
    pub handoffs: u32,
    /// Automatic restarts since adoptd loaded the service.
    pub restarts: u32,
    pub state_changed_at: Now,
    /// How the last main process that ended the service ended.
    pub last_exit: Option<ExitStatus>,
    pub result: RunResult,
    /// When this adoptd re-attached the current run, left by an adoptd
    /// that ended without handing its state over (realtime µs); `None`
    /// for a run this adoptd (or the image it was re-executed from)
    /// started.
    pub reattached_at_us: Option<u64>,
}

/// A run of a service that an earlier adoptd started and that still
/// lives, as [`Tracker::reattach`] takes it over: every process verified
/// already (start time and invocation id), none of them adoptd's child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reattach {
    pub main_pid: Pid,
    pub previous_pid: Option<Pid>,
    pub main_pid_source: MainPidSource,
    pub handoffs: u32,
    pub restarts: u32,
    /// When the run last changed state, as the earlier adoptd published it.
    pub state_changed_at_us: u64,
    /// How the service's last run before this one ended, and its result.
    pub last_exit: Option<ExitStatus>,
    pub result: RunResult,
    /// The start time of the run's first process, where known.
    pub run_start_time: Option<u64>,
    /// Every live process of the run, the main one included, with its
    /// start time.
    pub members: Vec<(Pid, Option<u64>)>,
}

/// Every service's run-time state and every tracked process. Serde
/// writes and reads all of it, for a re-exec of adoptd (`crate::reexec`):
/// its monotonic times are the supervisor's, which keeps them meaning the
/// same across the exec.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tracker {
    services: Vec<Service>,
    processes: HashMap<Pid, Process>,
    /// Session id → the service whose processes live in it.
    sessions: HashMap<Pid, ServiceId>,
    /// (deadline, service): restart delays and stop timeouts.
    deadlines: BTreeSet<(Duration, ServiceId)>,
    orphans_reaped: u64,
    /// Live adoptees that no service could be found for yet (a source that
    /// cannot tell lineage, before the moment that explains them).
    unclaimed: BTreeMap<Pid, (Option<Pid>, Clues)>,
    /// Adoptees that exited before any service could be found for them,
    /// whose previous parent is known: when a later moment explains that
    /// parent (a dance whose hops finished child first), they join the
    /// lineage of its service. Bounded by [`UNCLAIMED_LIMIT`].
    unclaimed_graves: BTreeMap<Pid, Grave>,
    /// Live adoptees whose previous parent is known but no service is:
    /// they wait, like the unclaimed graves, for that parent to be
    /// explained. Bounded by [`UNCLAIMED_LIMIT`].
    waiting: BTreeMap<Pid, (Option<Pid>, Clues)>,
    /// Previous parent → the waiting adoptees and unclaimed graves it left,
    /// so that only a moment that explains a parent looks at them.
    orphans_of: HashMap<Pid, Vec<Pid>>,
    /// Failures of adoptees no service could be found for, with their
    /// start time (a source that cannot tell lineage: a hop that started
    /// a session and failed unseen). A run that would end cleanly after
    /// one that started no later than it takes it as its own failure: an
    /// ended run is never called clean on a doubt. Bounded by
    /// [`UNEXPLAINED_FAILURES`].
    unexplained_failures: VecDeque<UnexplainedFailure>,
    /// Orders processes by when the tracker first saw them.
    next_sequence: u64,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shrinks the tables a storm left sparse (see [`crate::memory`]);
    /// says whether any was.
    pub fn shrink_if_sparse(&mut self) -> bool {
        self.processes.shrink_if_sparse()
            | self.sessions.shrink_if_sparse()
            | self.orphans_of.shrink_if_sparse()
    }

    /// Adds a service, stopped. Starting it is a [`Command::Start`].
    pub fn add_service(&mut self, policy: Policy, now: Now) -> ServiceId {
        let id = ServiceId(u32::try_from(self.services.len()).unwrap_or(u32::MAX));
        self.services.push(Service::new(policy, now));
        id
    }

    /// Every service's id, in order (restoring a re-exec's state pairs
    /// them with the catalogue's services).
    pub fn ids(&self) -> impl Iterator<Item = ServiceId> + use<> {
        (0..u32::try_from(self.services.len()).unwrap_or(u32::MAX)).map(ServiceId)
    }

    /// Replaces a service's policy; it applies from the next decision on.
    pub fn set_policy(&mut self, service: ServiceId, policy: Policy) {
        if let Some(s) = self.services.get_mut(service.index()) {
            s.policy = policy;
        }
    }

    /// The published view of a service.
    pub fn status(&self, service: ServiceId) -> Option<Status> {
        self.services.get(service.index()).map(Service::status)
    }

    /// The service's live member processes, ascending.
    pub fn members(&self, service: ServiceId) -> Vec<Pid> {
        self.services
            .get(service.index())
            .map(|s| s.members.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The service `pid` belongs to, if any.
    pub fn service_of(&self, pid: Pid) -> Option<ServiceId> {
        self.processes.get(&pid).map(|p| p.service)
    }

    /// The start time of a tracked process, where known.
    pub fn start_time_of(&self, pid: Pid) -> Option<u64> {
        self.processes.get(&pid)?.start_time
    }

    /// When the service's current run's first process started (clock
    /// ticks since boot), where known.
    pub fn run_start_time(&self, service: ServiceId) -> Option<u64> {
        self.services.get(service.index())?.run_start_time
    }

    /// The service whose main process `pid` is, if any.
    pub fn main_of(&self, pid: Pid) -> Option<ServiceId> {
        let service = self.service_of(pid)?;
        (self.services[service.index()].main == Some(pid)).then_some(service)
    }

    /// Reaped processes that belonged to no service.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans_reaped
    }

    /// The earliest pending deadline: when to call [`Tracker::tick`].
    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// True when no service has a process or a pending deadline.
    pub fn is_idle(&self) -> bool {
        self.deadlines.is_empty()
            && self
                .services
                .iter()
                .all(|s| s.main.is_none() && s.members.is_empty() && s.state != State::Starting)
    }

    /// Applies one moment's events; see the module header for why the order
    /// inside `events` does not matter.
    pub fn apply(&mut self, now: Now, events: &[Event]) -> Outcome {
        let mut batch = Batch::new(self, now);
        let facts = Facts::sort(events);

        for &(service, pid, start_time) in &facts.spawned {
            batch.spawned(service, pid, start_time);
        }
        for &service in &facts.spawn_failed {
            batch.spawn_failed(service);
        }
        batch.forked(&facts.forked);
        // Adoptees no earlier moment could attribute are tried again: those
        // without a previous parent always, the others once a process they
        // may descend from shows up.
        let mut adoptions = std::mem::take(&mut batch.tracker.unclaimed);
        adoptions.extend(
            facts
                .adopted
                .iter()
                .map(|(&pid, &adoption)| (pid, adoption)),
        );
        batch.wake_waiting(&facts, &mut adoptions);
        batch.adopted(&adoptions, &facts.exited);
        let main_exits = batch.exited(&facts.exited);
        batch.follow_all_contenders();
        for (service, pid, status) in main_exits {
            batch.main_exited(service, pid, status, &facts.pid_files);
        }
        batch.fail_runs_that_descend_from_a_failure();
        batch.settle_clean_ups();
        batch.finish()
    }

    /// Takes over a run an earlier adoptd left (see [`Reattach`]): the
    /// service, stopped until now, is running with the run's main and
    /// previous pid, counters and timestamp, and its processes are
    /// members. Nothing is spawned. Refused (an empty outcome) for a
    /// service that is not stopped or a process that is tracked already.
    pub fn reattach(&mut self, now: Now, service: ServiceId, run: &Reattach) -> Outcome {
        let mut batch = Batch::new(self, now);
        batch.reattach(service, run);
        batch.finish()
    }

    /// Fires the deadlines that are due at `now`.
    pub fn tick(&mut self, now: Now) -> Outcome {
        let mut batch = Batch::new(self, now);
        while let Some(&(at, service)) = batch.tracker.deadlines.first() {
            if at > now.monotonic {
                break;
            }
            batch.deadline_passed(service);
        }
        batch.settle_clean_ups();
        batch.finish()
    }

    /// Carries out an operator's command.
    pub fn command(
        &mut self,
        now: Now,
        service: ServiceId,
        command: Command,
    ) -> Result<Outcome, CommandError> {
        if service.index() >= self.services.len() {
            return Err(CommandError::NotRunning);
        }
        let mut batch = Batch::new(self, now);
        batch.command(service, command)?;
        batch.settle_clean_ups();
        Ok(batch.finish())
    }

    /// A process of `service` spoke the sd_notify protocol. Only services
    /// with `expect = "notify"` listen: `READY=1` makes a starting run
    /// running; `MAINPID=` naming another live process of the service
    /// makes it the main process (a hand-off, `MainPIDSource = notify`).
    pub fn notified(
        &mut self,
        now: Now,
        service: ServiceId,
        notification: Notification,
    ) -> Outcome {
        let mut batch = Batch::new(self, now);
        batch.notified(service, notification);
        batch.finish()
    }
}

/// What a service said over `$NOTIFY_SOCKET` that the tracker acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    /// `READY=1`.
    pub ready: bool,
    /// `MAINPID=`.
    pub main_pid: Option<Pid>,
    /// Where `main_pid` is a live descendant of the service that the
    /// tracker does not know (a worker its main process forked, which is
    /// not adoptd's child): what `/proc` said of it. Its exit then comes as
    /// an [`Event::Exited`] from its pidfd, not from the reaper.
    pub descendant: Option<Clues>,
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
