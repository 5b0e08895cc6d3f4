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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    time::Duration,
};

use adoptd_dbus::Signal;

use crate::memory::Shrink;

mod handoff;
mod policy;

use handoff::{GRAVES_PER_SERVICE, Grave};
pub use policy::{Expect, Policy, Restart, StartLimit};

/// A process id, as the kernel gives it in adoptd's pid namespace.
pub type Pid = u32;

/// How many adoptees, live or exited, may wait for an explanation at once.
const UNCLAIMED_LIMIT: usize = 4096;

/// A failure of an adoptee no service could be found for.
#[derive(Clone, Copy, Debug)]
struct UnexplainedFailure {
    status: ExitStatus,
    /// Its start time, where known.
    born: Option<u64>,
    session: Option<Pid>,
}

/// How many unexplained failures are remembered.
const UNEXPLAINED_FAILURES: usize = 64;

/// The exit code recorded when a service's program could not be executed
/// at all (as a shell reports "cannot execute").
pub const EXIT_CODE_EXEC_FAILED: i32 = 127;

/// Identifies a service inside the tracker; stable for the service's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(u32);

impl ServiceId {
    /// The index of the service in the tracker's table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The moment an event happened, on both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Now {
    /// Monotonic time, for deadlines and start limits.
    pub monotonic: Duration,
    /// Wall-clock time in microseconds since the epoch, for timestamps
    /// shown to people.
    pub realtime_us: u64,
}

/// How a process ended, as `waitid` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// What an adoption source can tell about a newcomer when it cannot tell
/// its previous parent (the `procfs` source): used to attribute it to a
/// service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinship {
    /// The session id of the process.
    pub session: Option<Pid>,
    /// Its start time (clock ticks since boot), to find the oldest.
    pub start_time: Option<u64>,
    /// The nearest ancestor that is (or was, in this moment) adoptd's own
    /// child, for sources that see lineage but not adoptd's services.
    pub ancestor: Option<Pid>,
    /// The service whose current run the process's environment names
    /// (the `procfs` source reads the invocation id adoptd gave the run).
    pub service: Option<ServiceId>,
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
        kinship: Kinship,
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
    OrphanReaped { pid: Pid, status: ExitStatus },
}

/// The tracker's answer to one batch, tick or command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub actions: Vec<Action>,
    pub notices: Vec<Notice>,
}

/// A service's state, as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunResult {
    Success,
    ExitCode,
    Signal,
    Timeout,
    StartLimitHit,
}

impl RunResult {
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

    pub fn contains(self, other: Changes) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn insert(&mut self, other: Changes) {
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
}

/// Every service's run-time state and every tracked process.
#[derive(Debug, Default)]
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
    unclaimed: BTreeMap<Pid, (Option<Pid>, Kinship)>,
    /// Adoptees that exited before any service could be found for them,
    /// whose previous parent is known: when a later moment explains that
    /// parent (a dance whose hops finished child first), they join the
    /// lineage of its service. Bounded by [`UNCLAIMED_LIMIT`].
    unclaimed_graves: BTreeMap<Pid, Grave>,
    /// Live adoptees whose previous parent is known but no service is:
    /// they wait, like the unclaimed graves, for that parent to be
    /// explained. Bounded by [`UNCLAIMED_LIMIT`].
    waiting: BTreeMap<Pid, (Option<Pid>, Kinship)>,
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

    /// Takes `pid` off the waiting adoptees, and its parent's list.
    fn stop_waiting(&mut self, pid: Pid) -> Option<(Option<Pid>, Kinship)> {
        let entry = self.waiting.remove(&pid)?;
        if let Some(parent) = entry.0
            && let Some(siblings) = self.orphans_of.get_mut(&parent)
        {
            siblings.retain(|&sibling| sibling != pid);
            if siblings.is_empty() {
                self.orphans_of.remove(&parent);
            }
        }
        Some(entry)
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

    /// Replaces a service's policy; it applies from the next decision on.
    pub fn set_policy(&mut self, service: ServiceId, policy: Policy) {
        if let Some(s) = self.services.get_mut(service.index()) {
            s.policy = policy;
        }
    }

    /// The number of services ever added.
    pub fn service_count(&self) -> usize {
        self.services.len()
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
    pub fn apply(&mut self, now: Now, events: &[Event]) -> Output {
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

    /// Fires the deadlines that are due at `now`.
    pub fn tick(&mut self, now: Now) -> Output {
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
    ) -> Result<Output, CommandError> {
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
    pub fn notified(&mut self, now: Now, service: ServiceId, notification: Notification) -> Output {
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
}

/// One service's run-time state.
#[derive(Debug)]
struct Service {
    policy: Policy,
    state: State,
    main: Option<Pid>,
    previous: Option<Pid>,
    main_source: MainPidSource,
    handoffs: u32,
    restarts: u32,
    state_changed_at: Now,
    last_exit: Option<ExitStatus>,
    result: RunResult,
    /// Live member processes (unordered).
    members: BTreeSet<Pid>,
    /// What to do once every member is gone, while stopping.
    after_stop: Option<AfterStop>,
    /// When a restart is due or the stop timeout ends.
    deadline: Option<Duration>,
    /// SIGKILL was needed to stop it.
    killed: bool,
    /// Start times inside the start-limit window.
    starts: VecDeque<Duration>,
    /// After a hand-off that was a guess among several adoptees: the ones
    /// not chosen (or, once they handed off in turn, their heirs), each with
    /// the hand-off count it would give. If the chosen main process ends
    /// without an heir while a contender lives, the guess was wrong and the
    /// contender takes over.
    contenders: Vec<Contender>,
    /// The main process is a guess only because live candidates were
    /// ambiguous (its lineage is known): once no contender is left, it is
    /// the heir for certain.
    certain_once_alone: bool,
    /// A candidate for the main line failed while another one was
    /// followed: if the followed one ends without an heir, the run failed
    /// with this status.
    pending_failure: Option<ExitStatus>,
    /// Where the current guess was made: the main process it replaced and
    /// the hand-off count then.
    guess_origin: Option<(Pid, u32)>,
    /// The process adoptd spawned for the current run.
    run_root: Option<Pid>,
    /// When the current run's first process started: its descendants
    /// cannot be older.
    run_start_time: Option<u64>,
    /// A Spawn action is out and its outcome not reported yet.
    spawn_pending: bool,
    /// The run said `READY=1` (`expect = "notify"`).
    ready: bool,
    /// The run's members that exited, oldest first (see [`handoff`]).
    graves: VecDeque<Grave>,
    /// Graves of this run were forgotten (a storm): a lineage that stops
    /// may have stopped at one of them.
    graves_forgotten: bool,
    /// How many of the run's graves are of failed processes: the walks
    /// that look for a failure are skipped while there is none.
    failed_graves: u32,
}

/// A live process that could still turn out to be the main process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Contender {
    pid: Pid,
    previous: Pid,
    handoffs: u32,
}

/// Where a service goes once its clean-up is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterStop {
    Stopped,
    Failed,
    Restart,
    /// An operator's restart: start again at once.
    StartAgain,
}

impl Service {
    fn new(policy: Policy, now: Now) -> Self {
        Service {
            policy,
            state: State::Stopped,
            main: None,
            previous: None,
            main_source: MainPidSource::Spawn,
            handoffs: 0,
            restarts: 0,
            state_changed_at: now,
            last_exit: None,
            result: RunResult::Success,
            members: BTreeSet::new(),
            after_stop: None,
            deadline: None,
            killed: false,
            starts: VecDeque::new(),
            contenders: Vec::new(),
            certain_once_alone: false,
            pending_failure: None,
            run_root: None,
            guess_origin: None,
            run_start_time: None,
            spawn_pending: false,
            ready: false,
            graves: VecDeque::new(),
            graves_forgotten: false,
            failed_graves: 0,
        }
    }

    fn status(&self) -> Status {
        Status {
            state: self.state,
            main_pid: self.main,
            previous_pid: self.previous,
            main_pid_source: self.main_source,
            handoffs: self.handoffs,
            restarts: self.restarts,
            state_changed_at: self.state_changed_at,
            last_exit: self.last_exit,
            result: self.result,
        }
    }

    /// Hand-offs followed before the main process is considered final.
    fn handoff_limit(&self) -> u32 {
        match self.policy.expect {
            Expect::Foreground => 0,
            Expect::Fork => 1,
            Expect::Daemon => 2,
            Expect::Auto | Expect::Notify => u32::MAX,
        }
    }

    /// Whether the run has come far enough to count as running.
    fn has_started(&self) -> bool {
        match self.policy.expect {
            Expect::Notify => self.ready,
            _ => self.handoffs >= self.handoffs_to_run(),
        }
    }

    /// Hand-offs needed before the service counts as running.
    fn handoffs_to_run(&self) -> u32 {
        match self.policy.expect {
            Expect::Fork => 1,
            Expect::Daemon => 2,
            Expect::Auto | Expect::Foreground | Expect::Notify => 0,
        }
    }

    fn remove_member(&mut self, pid: Pid) {
        self.members.remove(&pid);
    }

    /// The latest grave of `pid` in the current run.
    fn grave(&self, pid: Pid) -> Option<&Grave> {
        self.graves.iter().rev().find(|g| g.pid == pid)
    }

    /// Remembers a member that exited, forgetting the oldest beyond the
    /// bound.
    fn bury(&mut self, grave: Grave) {
        if self.graves.len() >= GRAVES_PER_SERVICE
            && let Some(forgotten) = self.graves.pop_front()
        {
            self.graves_forgotten = true;
            if !forgotten.status.is_success() {
                self.failed_graves = self.failed_graves.saturating_sub(1);
            }
        }
        if !grave.status.is_success() {
            self.failed_graves = self.failed_graves.saturating_add(1);
        }
        self.graves.push_back(grave);
    }

    /// The run is over: its lineage is no longer needed.
    fn forget_graves(&mut self) {
        self.graves.clear();
        self.graves.shrink_to_fit();
        self.graves_forgotten = false;
        self.failed_graves = 0;
    }
}

/// A tracked process.
#[derive(Clone, Copy, Debug)]
struct Process {
    service: ServiceId,
    adoption: Option<Adoption>,
    session: Option<Pid>,
    start_time: Option<u64>,
    sequence: u64,
}

/// How a process came to be adoptd's child.
#[derive(Clone, Copy, Debug)]
struct Adoption {
    previous_parent: Option<Pid>,
    /// The service's main process when the adoption happened: an adoptee
    /// orphaned inside the service while `M` was alive has `Some(M)`.
    under_main: Option<Pid>,
    /// The source could not tell its service or previous parent for sure,
    /// and the tracker chose among several: a hand-off through it is
    /// published as a guess.
    guessed: bool,
}

/// How far attribution may go for a source that cannot tell lineage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fallback {
    None,
    OnlyExit,
    ClosestExit,
}

/// Among exits ascending by pid, the one whose pid came closest before
/// `pid` (pids are handed out in increasing order, so the youngest older
/// process is the likeliest parent: the hop just before it), else the
/// highest; never `pid` itself.
fn closest_before(exits: &[(Pid, ServiceId)], pid: Pid) -> Option<(Pid, ServiceId)> {
    let below = exits.partition_point(|&(dead, _)| dead < pid);
    if below > 0 {
        return Some(exits[below - 1]);
    }
    exits.iter().rev().find(|&&(dead, _)| dead != pid).copied()
}

/// A batch's events in canonical order.
#[derive(Default)]
struct Facts {
    spawned: Vec<(ServiceId, Pid, Option<u64>)>,
    spawn_failed: Vec<ServiceId>,
    forked: BTreeMap<Pid, Pid>,
    adopted: BTreeMap<Pid, (Option<Pid>, Kinship)>,
    exited: BTreeMap<Pid, ExitStatus>,
    pid_files: BTreeMap<ServiceId, Pid>,
}

impl Facts {
    fn sort(events: &[Event]) -> Self {
        let mut facts = Facts::default();
        for event in events {
            match *event {
                Event::Spawned {
                    service,
                    pid,
                    start_time,
                } => facts.spawned.push((service, pid, start_time)),
                Event::SpawnFailed { service } => facts.spawn_failed.push(service),
                Event::Forked { parent, child } => {
                    facts.forked.insert(child, parent);
                }
                Event::Adopted {
                    pid,
                    previous_parent,
                    kinship,
                } => {
                    facts.adopted.insert(pid, (previous_parent, kinship));
                }
                Event::Exited { pid, status } => {
                    facts.exited.insert(pid, status);
                }
                Event::PidFile { service, pid } => {
                    facts.pid_files.insert(service, pid);
                }
            }
        }
        facts.spawned.sort_unstable();
        facts.spawn_failed.sort_unstable();
        facts
    }
}

/// A member that exited in the current batch, kept until the batch's
/// decisions are made.
#[derive(Clone, Copy, Debug)]
struct Departed {
    process: Process,
    status: ExitStatus,
}

/// The work of one `apply`, `tick` or `command`: collects actions and
/// notices and remembers each touched service's published view as it was,
/// so that one notice per service lists everything that changed.
struct Batch<'a> {
    tracker: &'a mut Tracker,
    now: Now,
    before: BTreeMap<ServiceId, Status>,
    departed: HashMap<Pid, Departed>,
    /// Services whose program could not be started in this batch.
    failed_spawns: BTreeSet<ServiceId>,
    out: Output,
}

impl<'a> Batch<'a> {
    fn new(tracker: &'a mut Tracker, now: Now) -> Self {
        Batch {
            tracker,
            now,
            before: BTreeMap::new(),
            departed: HashMap::new(),
            failed_spawns: BTreeSet::new(),
            out: Output::default(),
        }
    }

    /// The service, remembered as it was before this batch touched it.
    fn notified(&mut self, id: ServiceId, notification: Notification) {
        let Some(service) = self.tracker.services.get(id.index()) else {
            return;
        };
        let listening = service.policy.expect == Expect::Notify
            && matches!(service.state, State::Starting | State::Running);
        let Some(main) = service.main.filter(|_| listening) else {
            return;
        };
        if let Some(new_main) = notification.main_pid.filter(|&pid| pid != main)
            && self
                .tracker
                .processes
                .get(&new_main)
                .is_some_and(|p| p.service == id)
        {
            self.out.notices.push(Notice::Adopted {
                service: id,
                pid: new_main,
                previous_pid: main,
            });
            let service = self.touch(id);
            service.main = Some(new_main);
            service.previous = Some(main);
            service.main_source = MainPidSource::Notify;
            service.contenders.clear();
        }
        if notification.ready {
            let service = self.touch(id);
            service.ready = true;
            if service.state == State::Starting {
                self.set_state(id, State::Running);
            }
        }
    }

    fn touch(&mut self, id: ServiceId) -> &mut Service {
        let service = &mut self.tracker.services[id.index()];
        self.before.entry(id).or_insert_with(|| service.status());
        service
    }

    fn finish(self) -> Output {
        let mut out = self.out;
        for (id, before) in self.before {
            let after = self.tracker.services[id.index()].status();
            let changes = diff(&before, &after);
            if !changes.is_empty() {
                out.notices.push(Notice::Changed {
                    service: id,
                    changes,
                });
            }
        }
        out
    }

    fn set_state(&mut self, id: ServiceId, state: State) {
        let now = self.now;
        let service = self.touch(id);
        if service.state != state {
            service.state = state;
            service.state_changed_at = now;
        }
    }

    fn set_deadline(&mut self, id: ServiceId, deadline: Option<Duration>) {
        let service = &mut self.tracker.services[id.index()];
        if let Some(old) = service.deadline.take() {
            self.tracker.deadlines.remove(&(old, id));
        }
        if let Some(at) = deadline {
            service.deadline = Some(at);
            self.tracker.deadlines.insert((at, id));
        }
    }

    fn new_process(&mut self, service: ServiceId, kinship: Kinship) -> Process {
        let sequence = self.tracker.next_sequence;
        self.tracker.next_sequence += 1;
        Process {
            service,
            adoption: None,
            session: kinship.session,
            start_time: kinship.start_time,
            sequence,
        }
    }

    fn add_member(&mut self, pid: Pid, process: Process) {
        let id = process.service;
        if let Some(session) = process.session {
            self.tracker.sessions.insert(session, id);
        }
        match self.tracker.processes.insert(pid, process) {
            None => {
                self.tracker.services[id.index()].members.insert(pid);
            }
            Some(old) if old.service != id => {
                // Inconsistent input (a pid reported for two services): the
                // newer report wins, and the older service lets go of it.
                let previous_owner = self.touch(old.service);
                previous_owner.remove_member(pid);
                if previous_owner.main == Some(pid) {
                    previous_owner.main = None;
                }
                self.tracker.services[id.index()].members.insert(pid);
            }
            Some(_) => {}
        }
    }

    // ----- facts ---------------------------------------------------------

    fn spawned(&mut self, id: ServiceId, pid: Pid, start_time: Option<u64>) {
        if id.index() >= self.tracker.services.len() {
            return;
        }
        // The spawner makes the process a session leader.
        let process = self.new_process(
            id,
            Kinship {
                session: Some(pid),
                start_time,
                ancestor: None,
                service: None,
            },
        );
        self.add_member(pid, process);
        let service = self.touch(id);
        service.main = Some(pid);
        service.previous = None;
        service.main_source = MainPidSource::Spawn;
        service.handoffs = 0;
        service.killed = false;
        service.contenders.clear();
        service.run_start_time = start_time;
        service.spawn_pending = false;
        service.ready = false;
        service.forget_graves();
        service.pending_failure = None;
        service.run_root = Some(pid);
        service.guess_origin = None;
        let running = service.has_started();
        self.set_state(
            id,
            if running {
                State::Running
            } else {
                State::Starting
            },
        );
    }

    fn spawn_failed(&mut self, id: ServiceId) {
        // Only a spawn that was asked for can fail.
        let Some(service) = self.tracker.services.get_mut(id.index()) else {
            return;
        };
        if !std::mem::take(&mut service.spawn_pending) {
            return;
        }
        self.failed_spawns.insert(id);
        self.end_run(id, ExitStatus::Code(EXIT_CODE_EXEC_FAILED));
    }

    /// Forks join their parent's service; a chain reported in one batch
    /// joins whatever the order of its links.
    fn forked(&mut self, forks: &BTreeMap<Pid, Pid>) {
        for &child in forks.keys() {
            if self.tracker.processes.contains_key(&child) {
                continue;
            }
            let mut ancestor = forks.get(&child).copied();
            let mut hops = 0;
            let service = loop {
                let Some(pid) = ancestor else { break None };
                if let Some(p) = self.tracker.processes.get(&pid) {
                    break Some(p.service);
                }
                ancestor = forks.get(&pid).copied();
                hops += 1;
                if hops > forks.len() {
                    break None; // a cycle: inconsistent input
                }
            };
            if let Some(service) = service {
                let process = self.new_process(service, Kinship::default());
                self.add_member(child, process);
                self.touch(service);
            }
        }
    }

    /// Records adoptions. Each adoptee is first attributed to a service:
    /// by known membership, by its previous parent, by the ancestor the
    /// source names, by its session, and, for sources that know none of
    /// these, as the only service with an exit in this batch or, failing
    /// that, the service of the closest earlier pid that exited (a guess).
    /// Attribution runs in rounds until nothing changes, so an adoptee
    /// linked to another adoptee of the same batch is found whatever the
    /// order. Only then are missing previous parents inferred, from every
    /// attribution at once.
    fn adopted(
        &mut self,
        adoptions: &BTreeMap<Pid, (Option<Pid>, Kinship)>,
        exited: &BTreeMap<Pid, ExitStatus>,
    ) {
        let exiting_services: BTreeSet<ServiceId> = exited
            .keys()
            .filter_map(|pid| self.tracker.processes.get(pid).map(|p| p.service))
            .collect();
        let mut attributed: BTreeMap<Pid, (ServiceId, bool)> = BTreeMap::new();
        // Sessions of the processes attributed in this moment: a hop that
        // started a session and died unseen shares it with its heir.
        let mut sessions: HashMap<Pid, ServiceId> = HashMap::new();
        let mut pending: Vec<Pid> = adoptions.keys().copied().collect();
        for fallback in [Fallback::None, Fallback::OnlyExit, Fallback::ClosestExit] {
            loop {
                let before = pending.len();
                let owned_exits = match fallback {
                    Fallback::ClosestExit => self.owned_exits(exited, &attributed),
                    _ => Vec::new(),
                };
                pending.retain(|&pid| {
                    let (previous_parent, kinship) = adoptions[&pid];
                    let dead = exited.contains_key(&pid);
                    let found = self
                        .attribute(pid, previous_parent, kinship, &attributed)
                        .or_else(|| kinship.session.and_then(|s| sessions.get(&s).copied()))
                        // The leader of a session one of them is in.
                        .or_else(|| sessions.get(&pid).copied())
                        .map(|service| (service, false))
                        .or_else(|| {
                            match (fallback, previous_parent) {
                                (Fallback::OnlyExit, None) if exiting_services.len() == 1 => {
                                    exiting_services.first().map(|&service| (service, false))
                                }
                                // Not for the dead whose session named no
                                // service: a storm's orphans must not
                                // become another service's hops.
                                (Fallback::ClosestExit, None)
                                    if !dead || kinship.session.is_none() =>
                                {
                                    closest_before(&owned_exits, pid)
                                        .map(|(_, service)| (service, true))
                                }
                                _ => None,
                            }
                            // A coincidence never claims a live process
                            // older than the service's run (one that came
                            // from elsewhere, as PID 1 may adopt).
                            .filter(|&(service, _)| dead || self.young_enough(service, kinship))
                        });
                    match found {
                        Some(found) => {
                            attributed.insert(pid, found);
                            if let Some(session) = kinship.session {
                                sessions.entry(session).or_insert(found.0);
                            }
                            false
                        }
                        None => true,
                    }
                });
                if pending.len() == before {
                    break;
                }
            }
        }
        // Unattributed adoptees whose previous parent is known wait until
        // a later moment explains that parent (the kernel reports a child
        // orphaned by a hop before the hop itself is reaped); the others
        // wait for the next moment with an exit of a tracked process, which
        // may explain them. After that they belong to no service.
        let unexplained_deaths = pending.iter().any(|pid| exited.contains_key(pid));
        for pid in pending {
            let (previous_parent, kinship) = adoptions[&pid];
            match (exited.get(&pid), previous_parent) {
                (Some(&status), Some(parent)) => {
                    self.remember_unclaimed_grave(Grave {
                        pid,
                        parent: Some(parent),
                        guessed: false,
                        status,
                    });
                }
                (None, Some(parent)) if self.tracker.waiting.len() < UNCLAIMED_LIMIT => {
                    self.tracker.waiting.insert(pid, (previous_parent, kinship));
                    self.tracker.orphans_of.entry(parent).or_default().push(pid);
                }
                (None, None) if exiting_services.is_empty() => {
                    self.tracker
                        .unclaimed
                        .insert(pid, (previous_parent, kinship));
                }
                (Some(&status), None) if !status.is_success() => {
                    let failures = &mut self.tracker.unexplained_failures;
                    if failures.len() >= UNEXPLAINED_FAILURES {
                        failures.pop_front();
                    }
                    failures.push_back(UnexplainedFailure {
                        status,
                        born: kinship.start_time,
                        session: kinship.session,
                    });
                }
                _ => {}
            }
        }
        self.claim_graves(&attributed);
        // Each service's exits of this moment, ascending, for inferring
        // previous parents in logarithmic time (a storm brings thousands).
        let mut exits_by_service: HashMap<ServiceId, Vec<(Pid, ServiceId)>> = HashMap::new();
        for (dead, service) in self.owned_exits(exited, &attributed) {
            exits_by_service
                .entry(service)
                .or_default()
                .push((dead, service));
        }
        // A process placed by the closest exit may have been another
        // service's hop: then any previous parent inferred in this moment
        // may be wrong, and says so.
        // So may one inferred while some exit of this moment is unexplained
        // (a hop that died unseen, whose service is unknown).
        let any_placed_by_guess =
            unexplained_deaths || attributed.values().any(|&(_, guessed)| guessed);
        let mut records = Vec::with_capacity(attributed.len());
        for (&pid, &(service, attribution_guessed)) in &attributed {
            let (previous_parent, kinship) = adoptions[&pid];
            let (previous_parent, inference_guessed) = match previous_parent {
                Some(parent) => (Some(parent), false),
                None => {
                    let exits = exits_by_service
                        .get(&service)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    let others = exits.len()
                        - usize::from(exits.binary_search_by_key(&pid, |e| e.0).is_ok());
                    let closest = closest_before(exits, pid).map(|(dead, _)| dead);
                    (closest, others > 1 || any_placed_by_guess)
                }
            };
            records.push((
                pid,
                service,
                previous_parent,
                kinship,
                attribution_guessed || inference_guessed,
            ));
        }
        for (pid, service, previous_parent, kinship, guessed) in records {
            self.record_adoption(service, pid, previous_parent, kinship, guessed);
            if !exited.contains_key(&pid) {
                self.stop_if_stopping(service, pid);
            }
        }
    }

    fn remember_unclaimed_grave(&mut self, grave: Grave) {
        let tracker = &mut *self.tracker;
        if tracker.unclaimed_graves.len() >= UNCLAIMED_LIMIT
            && let Some((oldest, forgotten)) = tracker.unclaimed_graves.pop_first()
            && let Some(parent) = forgotten.parent
            && let Some(siblings) = tracker.orphans_of.get_mut(&parent)
        {
            siblings.retain(|&pid| pid != oldest);
        }
        if let Some(parent) = grave.parent {
            tracker
                .orphans_of
                .entry(parent)
                .or_default()
                .push(grave.pid);
        }
        tracker.unclaimed_graves.insert(grave.pid, grave);
    }

    /// Moves into this moment's adoptions the waiting adoptees that the
    /// moment may explain: those whose previous parent (or an unclaimed
    /// grave between) is one of its processes, and those it reports again.
    fn wake_waiting(
        &mut self,
        facts: &Facts,
        adoptions: &mut BTreeMap<Pid, (Option<Pid>, Kinship)>,
    ) {
        if self.tracker.waiting.is_empty() {
            return;
        }
        let mut frontier: Vec<Pid> = facts
            .adopted
            .keys()
            .chain(facts.exited.keys())
            .copied()
            .collect();
        for &pid in &frontier {
            if let Some(entry) = self.tracker.stop_waiting(pid) {
                adoptions.entry(pid).or_insert(entry);
            }
        }
        let mut seen: HashSet<Pid> = HashSet::new();
        while let Some(parent) = frontier.pop() {
            if !seen.insert(parent) {
                continue;
            }
            let children = self
                .tracker
                .orphans_of
                .get(&parent)
                .cloned()
                .unwrap_or_default();
            for child in children {
                if let Some(entry) = self.tracker.stop_waiting(child) {
                    adoptions.insert(child, entry);
                }
                if self.tracker.unclaimed_graves.contains_key(&child) {
                    frontier.push(child);
                }
            }
        }
    }

    /// Unclaimed graves whose previous parent is now known join that
    /// parent's service, and so do the graves below them.
    fn claim_graves(&mut self, attributed: &BTreeMap<Pid, (ServiceId, bool)>) {
        if self.tracker.unclaimed_graves.is_empty() {
            return;
        }
        let mut frontier: Vec<(Pid, ServiceId)> = attributed
            .iter()
            .map(|(&pid, &(service, _))| (pid, service))
            .collect();
        while let Some((parent, service)) = frontier.pop() {
            let Some(children) = self.tracker.orphans_of.remove(&parent) else {
                continue;
            };
            for child in children {
                if let Some(grave) = self.tracker.unclaimed_graves.remove(&child) {
                    self.touch(service).bury(grave);
                    frontier.push((child, service));
                } else if self.tracker.waiting.contains_key(&child) {
                    // Still waiting: keep it findable.
                    self.tracker
                        .orphans_of
                        .entry(parent)
                        .or_default()
                        .push(child);
                }
            }
        }
    }

    /// A live process that joins a service whose main process is gone
    /// while it stops (the heir of a dance that was under way when the stop
    /// came) gets the stop signal like the members before it.
    fn stop_if_stopping(&mut self, id: ServiceId, pid: Pid) {
        let service = &self.tracker.services[id.index()];
        if service.state == State::Stopping && service.main.is_none() {
            let signal = if service.killed {
                Signal::KILL
            } else {
                service.policy.stop_signal
            };
            self.signal_all(id, &[pid], signal);
        }
    }

    fn attribute(
        &self,
        pid: Pid,
        previous_parent: Option<Pid>,
        kinship: Kinship,
        attributed: &BTreeMap<Pid, (ServiceId, bool)>,
    ) -> Option<ServiceId> {
        let tracker = &*self.tracker;
        let known = |pid: Pid| {
            tracker
                .processes
                .get(&pid)
                .map(|p| p.service)
                .or_else(|| attributed.get(&pid).map(|&(service, _)| service))
        };
        // A previous parent that exited unexplained itself is followed up
        // through the unclaimed graves (a dance that finished child first).
        let known_ancestor = |mut pid: Pid| {
            for _ in 0..=tracker.unclaimed_graves.len() {
                if let Some(service) = known(pid) {
                    return Some(service);
                }
                pid = tracker.unclaimed_graves.get(&pid)?.parent?;
            }
            None
        };
        known(pid)
            .or_else(|| previous_parent.and_then(known_ancestor))
            .or_else(|| kinship.ancestor.and_then(known))
            .or_else(|| {
                kinship
                    .service
                    .filter(|service| service.index() < tracker.services.len())
            })
            .or_else(|| {
                let session = kinship.session?;
                tracker
                    .sessions
                    .get(&session)
                    .copied()
                    .or_else(|| known(session))
            })
    }

    /// Whether a live process may descend from the service's current run.
    fn young_enough(&self, service: ServiceId, kinship: Kinship) -> bool {
        match (
            self.tracker.services[service.index()].run_start_time,
            kinship.start_time,
        ) {
            (Some(run), Some(born)) => born >= run,
            _ => false,
        }
    }

    /// The exited processes whose service is known, ascending by pid.
    fn owned_exits(
        &self,
        exited: &BTreeMap<Pid, ExitStatus>,
        attributed: &BTreeMap<Pid, (ServiceId, bool)>,
    ) -> Vec<(Pid, ServiceId)> {
        exited
            .keys()
            .filter_map(|&dead| {
                self.tracker
                    .processes
                    .get(&dead)
                    .map(|p| p.service)
                    .or_else(|| attributed.get(&dead).map(|&(service, _)| service))
                    .map(|service| (dead, service))
            })
            .collect()
    }

    fn record_adoption(
        &mut self,
        service: ServiceId,
        pid: Pid,
        previous_parent: Option<Pid>,
        kinship: Kinship,
        guessed: bool,
    ) {
        let under_main = self.tracker.services[service.index()].main;
        let mut process = match self.tracker.processes.get(&pid) {
            Some(known) => *known,
            None => self.new_process(service, kinship),
        };
        process.session = process.session.or(kinship.session);
        process.start_time = process.start_time.or(kinship.start_time);
        process.adoption = Some(Adoption {
            previous_parent,
            under_main,
            guessed,
        });
        // `add_member` replaces a known process's record in place.
        self.add_member(pid, process);
        self.touch(service);
    }

    /// Removes the exited processes; returns the main processes among them.
    fn exited(&mut self, exits: &BTreeMap<Pid, ExitStatus>) -> Vec<(ServiceId, Pid, ExitStatus)> {
        let mut main_exits = Vec::new();
        for (&pid, &status) in exits {
            let Some(process) = self.tracker.processes.remove(&pid) else {
                self.tracker.orphans_reaped += 1;
                self.out.notices.push(Notice::OrphanReaped { pid, status });
                continue;
            };
            let service = self.touch(process.service);
            service.remove_member(pid);
            if service.main == Some(pid) {
                main_exits.push((process.service, pid, status));
            }
            // Main processes too: a later adoptee's lineage may lead
            // through one that failed.
            service.bury(Grave {
                pid,
                parent: process.adoption.and_then(|a| a.previous_parent),
                guessed: process.adoption.is_some_and(|a| a.guessed),
                status,
            });
            self.departed.insert(pid, Departed { process, status });
        }
        main_exits.sort_unstable_by_key(|&(service, pid, _)| (service, pid));
        main_exits
    }

    // ----- decisions -----------------------------------------------------

    fn follow_all_contenders(&mut self) {
        let touched: Vec<ServiceId> = self.before.keys().copied().collect();
        for id in touched {
            if !self.tracker.services[id.index()].contenders.is_empty() {
                self.follow_contenders(id);
            }
        }
    }

    /// Follows each contender of the service through its own exits in
    /// this batch: a contender that exited successfully is replaced by the
    /// adoptees it left (one more hand-off each); one that failed is gone.
    fn follow_contenders(&mut self, id: ServiceId) {
        let contenders = std::mem::take(&mut self.tracker.services[id.index()].contenders);
        let mut next = Vec::new();
        // Recycled pids can make two processes each other's adoptee:
        // each is followed once.
        let mut seen: HashSet<Pid> = contenders.iter().map(|c| c.pid).collect();
        let mut queue = contenders;
        while let Some(contender) = queue.pop() {
            let alive = self.tracker.services[id.index()]
                .members
                .contains(&contender.pid);
            if alive {
                next.push(contender);
                continue;
            }
            let Some(status) = self.departed.get(&contender.pid).map(|d| d.status) else {
                continue;
            };
            if !status.is_success() {
                let service = &mut self.tracker.services[id.index()];
                service.pending_failure = Some(
                    service
                        .pending_failure
                        .map_or(status, |known| handoff::lesser(known, status)),
                );
                continue;
            }
            let live = self.live_adoptees(id, |a| a.previous_parent == Some(contender.pid));
            let dead = self.departed_adoptees(id, contender.pid);
            for pid in live.into_iter().chain(dead) {
                if !seen.insert(pid) {
                    continue;
                }
                queue.push(Contender {
                    pid,
                    previous: contender.pid,
                    handoffs: contender.handoffs.saturating_add(1),
                });
            }
        }
        next.sort_unstable_by_key(|c| c.pid);
        next.dedup_by_key(|c| c.pid);
        let service = &mut self.tracker.services[id.index()];
        service.contenders = next;
        // The guess was only a choice among live candidates, and every
        // other one is gone without taking over: it was right.
        let main = service.main.filter(|m| service.members.contains(m));
        if service.contenders.is_empty()
            && service.certain_once_alone
            && let Some(main) = main
            && self.guess_is_proven(id, main)
        {
            let service = self.touch(id);
            service.certain_once_alone = false;
            if service.main_source == MainPidSource::Guess {
                service.main_source = MainPidSource::Adoption;
            }
        }
    }

    /// Whether the rule, run again from where the guess was made with what
    /// is known now, leaves `main` as the one candidate.
    fn guess_is_proven(&self, id: ServiceId, main: Pid) -> bool {
        let service = &self.tracker.services[id.index()];
        let Some((origin, handoffs)) = service.guess_origin else {
            return false;
        };
        let left = service.handoff_limit().saturating_sub(handoffs);
        matches!(
            self.find_heir(id, origin, left, None, true),
            handoff::Verdict::Heir(succession) if succession.heir == main && succession.others.is_empty()
        )
    }

    /// The contender to take over from a guessed main process that ended
    /// without an heir.
    fn best_contender(&mut self, id: ServiceId, pid_file: Option<Pid>) -> Option<Contender> {
        let service = &self.tracker.services[id.index()];
        if service.after_stop.is_some() || service.main_source != MainPidSource::Guess {
            return None;
        }
        self.follow_contenders(id);
        let contenders = &self.tracker.services[id.index()].contenders;
        let pids: Vec<Pid> = contenders.iter().map(|c| c.pid).collect();
        let (chosen, _) = self.choose(&pids, pid_file)?;
        contenders.iter().copied().find(|c| c.pid == chosen)
    }

    /// Replaces a wrongly guessed main process by a contender.
    fn correct_guess(&mut self, id: ServiceId, contender: Contender) {
        self.out.notices.push(Notice::Adopted {
            service: id,
            pid: contender.pid,
            previous_pid: contender.previous,
        });
        let service = self.touch(id);
        service.main = Some(contender.pid);
        service.previous = Some(contender.previous);
        service.handoffs = contender.handoffs;
        service.contenders.retain(|c| c.pid != contender.pid);
        if service.contenders.is_empty() && service.certain_once_alone {
            // The last candidate left, of a lineage the source reported.
            service.main_source = MainPidSource::Adoption;
            service.certain_once_alone = false;
        }
        let running = service.has_started();
        if running && service.state == State::Starting {
            self.set_state(id, State::Running);
        }
    }

    /// Live adoptees of the service that match, ascending by pid.
    fn live_adoptees(&self, id: ServiceId, matches: impl Fn(&Adoption) -> bool) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self.tracker.services[id.index()]
            .members
            .iter()
            .copied()
            .filter(|pid| {
                self.tracker
                    .processes
                    .get(pid)
                    .and_then(|p| p.adoption)
                    .is_some_and(|a| matches(&a))
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Adoptees of `parent` that exited successfully in this batch.
    fn departed_adoptees(&self, id: ServiceId, parent: Pid) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .departed
            .iter()
            .filter(|(_, d)| {
                d.process.service == id
                    && d.status.is_success()
                    && d.process
                        .adoption
                        .is_some_and(|a| a.previous_parent == Some(parent))
            })
            .map(|(&pid, _)| pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// How `pid`, live or departed in this batch, was adopted.
    fn adoption_of(&self, pid: Pid) -> Option<Adoption> {
        self.tracker
            .processes
            .get(&pid)
            .or_else(|| self.departed.get(&pid).map(|d| &d.process))
            .and_then(|p| p.adoption)
    }

    /// The main process ended the run: record how, then clean up.
    fn end_run(&mut self, id: ServiceId, status: ExitStatus) {
        let service = self.touch(id);
        let main = service.main.take();
        service.last_exit = Some(status);
        let operator_stop = service.after_stop;
        let after = match operator_stop {
            Some(after) => {
                service.result = if service.killed {
                    RunResult::Timeout
                } else {
                    RunResult::Success
                };
                after
            }
            None => {
                let (result, failed) = match status {
                    ExitStatus::Code(0) => (RunResult::Success, false),
                    ExitStatus::Code(_) => (RunResult::ExitCode, true),
                    ExitStatus::Signal(_) => (RunResult::Signal, true),
                };
                service.result = result;
                let restart = match service.policy.restart {
                    Restart::No => false,
                    Restart::OnFailure => failed,
                    Restart::Always => true,
                };
                match (restart, failed) {
                    (true, _) => AfterStop::Restart,
                    (false, true) => AfterStop::Failed,
                    (false, false) => AfterStop::Stopped,
                }
            }
        };
        if let Some(pid) = main {
            self.out.notices.push(Notice::Exited {
                service: id,
                pid,
                status,
            });
        }
        self.begin_stop(id, after);
    }

    /// Stops what is left of the service, then goes where `after` says.
    /// With a live main process, only the main process is signalled first
    /// (it usually stops its own workers); otherwise every member is.
    fn begin_stop(&mut self, id: ServiceId, after: AfterStop) {
        let now = self.now;
        let service = self.touch(id);
        let first_stop = service.after_stop.is_none() || service.deadline.is_none();
        service.after_stop = Some(after);
        let signal = service.policy.stop_signal;
        let timeout = service.policy.stop_timeout;
        let targets: Vec<Pid> = match service.main {
            Some(main) => vec![main],
            None => service.members.iter().copied().collect(),
        };
        if targets.is_empty() {
            self.finish_stop(id);
            return;
        }
        self.signal_all(id, &targets, signal);
        self.set_state(id, State::Stopping);
        if first_stop {
            self.set_deadline(id, Some(now.monotonic + timeout));
        }
    }

    /// Every member is gone: settle as planned.
    fn finish_stop(&mut self, id: ServiceId) {
        let service = self.touch(id);
        let after = service.after_stop.take().unwrap_or(AfterStop::Stopped);
        service.forget_graves();
        self.set_deadline(id, None);
        match after {
            AfterStop::Stopped => self.set_state(id, State::Stopped),
            AfterStop::Failed => self.set_state(id, State::Failed),
            AfterStop::StartAgain => self.start(id),
            AfterStop::Restart => self.schedule_restart(id),
        }
    }

    fn schedule_restart(&mut self, id: ServiceId) {
        let now = self.now;
        let service = self.touch(id);
        let limit = service.policy.start_limit;
        let delay = service.policy.restart_delay;
        let due = now.monotonic + delay;
        while service
            .starts
            .front()
            .is_some_and(|&at| due.saturating_sub(at) >= limit.interval)
        {
            service.starts.pop_front();
        }
        if service.starts.len() >= limit.burst as usize {
            service.result = RunResult::StartLimitHit;
            self.set_state(id, State::Failed);
            return;
        }
        service.restarts = service.restarts.saturating_add(1);
        self.set_state(id, State::Restarting);
        // A program that cannot be started fails again at once: its
        // restart waits for the next turn of the supervisor's loop (a
        // deadline due now), so that nothing, not even a start limit of a
        // million, keeps adoptd from its signals meanwhile.
        if delay.is_zero() && !self.failed_spawns.contains(&id) {
            self.start(id);
        } else {
            self.set_deadline(id, Some(due));
        }
    }

    /// Asks the supervisor to spawn the service's program.
    fn start(&mut self, id: ServiceId) {
        let now = self.now;
        let service = self.touch(id);
        service.starts.push_back(now.monotonic);
        let keep = service.policy.start_limit.burst as usize + 1;
        while service.starts.len() > keep {
            service.starts.pop_front();
        }
        service.after_stop = None;
        service.killed = false;
        self.set_deadline(id, None);
        if self.tracker.services[id.index()].state == State::Restarting {
            // Stays "restarting" until the spawn is reported.
        } else {
            self.set_state(id, State::Starting);
        }
        self.tracker.services[id.index()].spawn_pending = true;
        self.out.actions.push(Action::Spawn { service: id });
    }

    /// After a batch: a service that is cleaning up and has no member left
    /// settles; a settled service that gained members (late adoptees of a
    /// finished run) cleans them up.
    fn settle_clean_ups(&mut self) {
        let touched: Vec<ServiceId> = self.before.keys().copied().collect();
        for id in touched {
            let service = &self.tracker.services[id.index()];
            if service.main.is_some() {
                continue;
            }
            let settled = matches!(
                service.state,
                State::Stopped | State::Failed | State::Restarting
            );
            if service.state == State::Stopping && service.members.is_empty() {
                self.finish_stop(id);
            } else if settled && !service.members.is_empty() {
                let members: Vec<Pid> = service.members.iter().copied().collect();
                self.signal_all(id, &members, Signal::KILL);
            }
        }
    }

    fn signal_all(&mut self, id: ServiceId, pids: &[Pid], signal: Signal) {
        self.out
            .actions
            .extend(pids.iter().map(|&pid| Action::Signal {
                service: id,
                pid,
                signal,
            }));
    }

    fn deadline_passed(&mut self, id: ServiceId) {
        let service = &self.tracker.services[id.index()];
        match service.state {
            State::Restarting => self.start(id),
            State::Stopping => {
                let members: Vec<Pid> = service.members.iter().copied().collect();
                self.signal_all(id, &members, Signal::KILL);
                self.touch(id).killed = true;
                self.set_deadline(id, None);
            }
            _ => self.set_deadline(id, None),
        }
    }

    fn command(&mut self, id: ServiceId, command: Command) -> Result<(), CommandError> {
        let service = &self.tracker.services[id.index()];
        let state = service.state;
        let main = service.main;
        match command {
            Command::Start => match state {
                State::Stopped | State::Failed => {
                    self.touch(id).starts.clear();
                    self.start(id);
                }
                State::Restarting => self.start(id),
                State::Stopping => self.touch(id).after_stop = Some(AfterStop::StartAgain),
                State::Starting | State::Running => return Err(CommandError::AlreadyRunning),
            },
            Command::Stop => match state {
                State::Stopped | State::Failed => return Err(CommandError::NotRunning),
                State::Restarting => {
                    self.set_deadline(id, None);
                    self.set_state(id, State::Stopped);
                }
                State::Stopping => self.touch(id).after_stop = Some(AfterStop::Stopped),
                State::Starting | State::Running => {
                    self.touch(id).after_stop = None;
                    self.begin_stop(id, AfterStop::Stopped);
                }
            },
            Command::Restart => match state {
                State::Stopped | State::Failed => {
                    self.touch(id).starts.clear();
                    self.start(id);
                }
                State::Restarting => self.start(id),
                State::Stopping => self.touch(id).after_stop = Some(AfterStop::StartAgain),
                State::Starting | State::Running => {
                    self.touch(id).after_stop = None;
                    self.begin_stop(id, AfterStop::StartAgain);
                }
            },
            Command::Kill(_) | Command::Reload if main.is_none() => {
                return Err(CommandError::NotRunning);
            }
            Command::Kill(signal) => self.signal_main(id, main, signal),
            Command::Reload => {
                let signal = service.policy.reload_signal;
                self.signal_main(id, main, signal);
            }
        }
        Ok(())
    }

    fn signal_main(&mut self, id: ServiceId, main: Option<Pid>, signal: Signal) {
        if let Some(pid) = main {
            self.out.actions.push(Action::Signal {
                service: id,
                pid,
                signal,
            });
        }
    }
}

fn diff(before: &Status, after: &Status) -> Changes {
    let mut changes = Changes::default();
    let mut mark = |changed: bool, what: Changes| {
        if changed {
            changes.insert(what);
        }
    };
    mark(before.state != after.state, Changes::STATE);
    mark(before.main_pid != after.main_pid, Changes::MAIN_PID);
    mark(
        before.previous_pid != after.previous_pid,
        Changes::PREVIOUS_PID,
    );
    mark(
        before.main_pid_source != after.main_pid_source,
        Changes::MAIN_PID_SOURCE,
    );
    mark(before.handoffs != after.handoffs, Changes::HANDOFFS);
    mark(before.restarts != after.restarts, Changes::RESTARTS);
    mark(
        before.state_changed_at != after.state_changed_at,
        Changes::STATE_CHANGE_TIMESTAMP,
    );
    mark(before.last_exit != after.last_exit, Changes::EXIT);
    mark(before.result != after.result, Changes::RESULT);
    changes
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
