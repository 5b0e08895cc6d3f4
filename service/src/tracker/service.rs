//! One service's run-time state inside the tracker, and the processes it
//! tracks.

use std::{
    collections::{BTreeSet, VecDeque},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    ExitStatus, Expect, MainPidSource, Now, Pid, Policy, RunResult, ServiceId, State, Status,
};

/// One service's run-time state.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Service {
    pub(super) policy: Policy,
    pub(super) state: State,
    pub(super) main: Option<Pid>,
    pub(super) previous: Option<Pid>,
    pub(super) main_source: MainPidSource,
    pub(super) handoffs: u32,
    pub(super) restarts: u32,
    pub(super) state_changed_at: Now,
    pub(super) last_exit: Option<ExitStatus>,
    pub(super) result: RunResult,
    /// Live member processes (unordered).
    pub(super) members: BTreeSet<Pid>,
    /// What to do once every member is gone, while stopping.
    pub(super) after_stop: Option<AfterStop>,
    /// When a restart is due or the stop timeout ends.
    pub(super) deadline: Option<Duration>,
    /// SIGKILL was needed to stop it.
    pub(super) killed: bool,
    /// The run did not become running within `start-timeout`.
    pub(super) timed_out: bool,
    /// Start times inside the start-limit window.
    pub(super) starts: VecDeque<Duration>,
    /// After a hand-off that was a guess among several adoptees: the ones
    /// not chosen (or, once they handed off in turn, their heirs), each with
    /// the hand-off count it would give. If the chosen main process ends
    /// without an heir while a contender lives, the guess was wrong and the
    /// contender takes over.
    pub(super) contenders: Vec<Contender>,
    /// The main process is a guess only because live candidates were
    /// ambiguous (its lineage is known): once no contender is left, it is
    /// the heir for certain.
    pub(super) certain_once_alone: bool,
    /// A candidate for the main line failed while another one was
    /// followed: if the followed one ends without an heir, the run failed
    /// with this status.
    pub(super) pending_failure: Option<ExitStatus>,
    /// Where the current guess was made: the main process it replaced and
    /// the hand-off count then.
    pub(super) guess_origin: Option<(Pid, u32)>,
    /// The process adoptd spawned for the current run.
    pub(super) run_root: Option<Pid>,
    /// When the current run's first process started: its descendants
    /// cannot be older.
    pub(super) run_start_time: Option<u64>,
    /// A Spawn action is out and its outcome not reported yet.
    pub(super) spawn_pending: bool,
    /// The run said `READY=1` (`expect = "notify"`).
    pub(super) ready: bool,
    /// The run's members that exited, oldest first (see [`handoff`]).
    pub(super) graves: VecDeque<Grave>,
    /// Graves of this run were forgotten (a storm): a lineage that stops
    /// may have stopped at one of them.
    pub(super) graves_forgotten: bool,
    /// How many of the run's graves are of failed processes: the walks
    /// that look for a failure are skipped while there is none.
    pub(super) failed_graves: u32,
    /// The current run was re-attached at this realtime µs (see
    /// [`super::Reattach`]); `None` once a run of this adoptd's began.
    #[serde(default)]
    pub(super) reattached_at_us: Option<u64>,
}

/// A live process that could still turn out to be the main process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Contender {
    pub(super) pid: Pid,
    pub(super) previous: Pid,
    pub(super) handoffs: u32,
}

/// Where a service goes once its clean-up is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum AfterStop {
    Stopped,
    Failed,
    Restart,
    /// An operator's restart: start again at once.
    StartAgain,
}

impl Service {
    pub(super) fn new(policy: Policy, now: Now) -> Self {
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
            timed_out: false,
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
            reattached_at_us: None,
        }
    }

    pub(super) fn status(&self) -> Status {
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
            reattached_at_us: self.reattached_at_us,
        }
    }

    /// Hand-offs followed before the main process is considered final.
    pub(super) fn handoff_limit(&self) -> u32 {
        match self.policy.expect {
            Expect::Foreground => 0,
            Expect::Fork => 1,
            Expect::Daemon => 2,
            Expect::Auto | Expect::Notify => u32::MAX,
        }
    }

    /// Whether the run has come far enough to count as running.
    pub(super) fn has_started(&self) -> bool {
        match self.policy.expect {
            Expect::Notify => self.ready,
            _ => self.handoffs >= self.handoffs_to_run(),
        }
    }

    /// Hand-offs needed before the service counts as running.
    pub(super) fn handoffs_to_run(&self) -> u32 {
        match self.policy.expect {
            Expect::Fork => 1,
            Expect::Daemon => 2,
            Expect::Auto | Expect::Foreground | Expect::Notify => 0,
        }
    }

    pub(super) fn remove_member(&mut self, pid: Pid) {
        self.members.remove(&pid);
    }

    /// The latest grave of `pid` in the current run.
    pub(super) fn grave(&self, pid: Pid) -> Option<&Grave> {
        self.graves.iter().rev().find(|g| g.pid == pid)
    }

    /// The status of the failed ancestor of `grave` nearest the run's
    /// root, walking its previous parents through the graves.
    pub(super) fn topmost_failed_ancestor(&self, grave: &Grave) -> Option<ExitStatus> {
        let mut failure = None;
        let mut parent = grave.parent;
        // Recycled pids can make a loop of previous parents.
        for _ in 0..self.graves.len() {
            let Some(ancestor) = parent.and_then(|pid| self.grave(pid)) else {
                break;
            };
            if !ancestor.status.is_success() {
                failure = Some(ancestor.status);
            }
            parent = ancestor.parent;
        }
        failure
    }

    /// Remembers a member that exited, forgetting the oldest beyond the
    /// bound.
    pub(super) fn bury(&mut self, grave: Grave) {
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
    pub(super) fn forget_graves(&mut self) {
        self.graves.clear();
        self.graves.shrink_to_fit();
        self.graves_forgotten = false;
        self.failed_graves = 0;
    }
}

/// A tracked process.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct Process {
    pub(super) service: ServiceId,
    pub(super) adoption: Option<Adoption>,
    pub(super) session: Option<Pid>,
    pub(super) start_time: Option<u64>,
    pub(super) sequence: u64,
}

/// How a process came to be adoptd's child.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct Adoption {
    pub(super) previous_parent: Option<Pid>,
    /// The service's main process when the adoption happened: an adoptee
    /// orphaned inside the service while `M` was alive has `Some(M)`.
    pub(super) under_main: Option<Pid>,
    /// The source could not tell its service or previous parent for sure,
    /// and the tracker chose among several: a hand-off through it is
    /// published as a guess.
    pub(super) guessed: bool,
}

/// How many exited processes of one run the lineage remembers. Real
/// dances take a handful of hops; the bound keeps a storm's cost fixed.
pub(super) const GRAVES_PER_SERVICE: usize = 256;

/// A member of the current run that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Grave {
    pub pid: Pid,
    /// Its previous parent, where known.
    pub parent: Option<Pid>,
    /// The previous parent (or the service) was inferred, not reported.
    pub guessed: bool,
    pub status: ExitStatus,
    /// Its session, where known: when no source told its previous parent,
    /// the walk up its lineage goes on from the session's leader.
    #[serde(default)]
    pub session: Option<Pid>,
}
