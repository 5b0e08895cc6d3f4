//! One moment's work: the facts of a batch recorded in canonical order,
//! the actions and notices it produces, and each touched service's
//! published view as it was, so that one notice per service lists
//! everything that changed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use super::{
    Changes, Clues, EXIT_CODE_EXEC_FAILED, Event, ExitStatus, Expect, MainPidSource, Notice,
    Notification, Now, Outcome, Pid, Process, RunResult, ServiceId, State, Status, Tracker,
    service::{Adoption, Grave, Service},
};

/// A batch's events in canonical order.
#[derive(Default)]
pub(super) struct Facts {
    pub(super) spawned: Vec<(ServiceId, Pid, Option<u64>)>,
    pub(super) spawn_failed: Vec<ServiceId>,
    pub(super) forked: BTreeMap<Pid, Pid>,
    pub(super) adopted: BTreeMap<Pid, (Option<Pid>, Clues)>,
    pub(super) exited: BTreeMap<Pid, ExitStatus>,
    pub(super) pid_files: BTreeMap<ServiceId, Pid>,
}

impl Facts {
    pub(super) fn sort(events: &[Event]) -> Self {
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
                    clues,
                } => {
                    facts.adopted.insert(pid, (previous_parent, clues));
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
pub(super) struct Departed {
    pub(super) process: Process,
    pub(super) status: ExitStatus,
}

/// The work of one `apply`, `tick` or `command`: collects actions and
/// notices and remembers each touched service's published view as it was,
/// so that one notice per service lists everything that changed.
pub(super) struct Batch<'a> {
    pub(super) tracker: &'a mut Tracker,
    pub(super) now: Now,
    pub(super) before: BTreeMap<ServiceId, Status>,
    pub(super) departed: HashMap<Pid, Departed>,
    /// Services whose program could not be started in this batch.
    pub(super) failed_spawns: BTreeSet<ServiceId>,
    pub(super) out: Outcome,
}

impl<'a> Batch<'a> {
    pub(super) fn new(tracker: &'a mut Tracker, now: Now) -> Self {
        Batch {
            tracker,
            now,
            before: BTreeMap::new(),
            departed: HashMap::new(),
            failed_spawns: BTreeSet::new(),
            out: Outcome::default(),
        }
    }

    /// The service, remembered as it was before this batch touched it.
    pub(super) fn notified(&mut self, id: ServiceId, notification: Notification) {
        let Some(service) = self.tracker.services.get(id.index()) else {
            return;
        };
        let listening = service.policy.expect == Expect::Notify
            && matches!(service.state, State::Starting | State::Running);
        let Some(main) = service.main.filter(|_| listening) else {
            return;
        };
        if let Some(new_main) = notification.main_pid.filter(|&pid| pid != main)
            && let Some(clues) = notification.descendant
            && !self.tracker.processes.contains_key(&new_main)
        {
            let process = self.new_process(id, clues);
            self.add_member(new_main, process);
        }
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

    pub(super) fn touch(&mut self, id: ServiceId) -> &mut Service {
        let service = &mut self.tracker.services[id.index()];
        self.before.entry(id).or_insert_with(|| service.status());
        service
    }

    pub(super) fn finish(self) -> Outcome {
        let mut out = self.out;
        for (id, before) in self.before {
            let after = self.tracker.services[id.index()].status();
            let changes = diff(&before, &after);
            if !changes.is_empty() {
                out.notices.push(Notice::Changed {
                    service: id,
                    status: after,
                    changes,
                });
            }
        }
        out
    }

    pub(super) fn set_state(&mut self, id: ServiceId, state: State) {
        let now = self.now;
        let service = self.touch(id);
        if service.state != state {
            let was_starting = service.state == State::Starting;
            service.state = state;
            service.state_changed_at = now;
            // Running in time: the start timeout no longer applies.
            if was_starting && state == State::Running {
                self.set_deadline(id, None);
            }
        }
    }

    pub(super) fn set_deadline(&mut self, id: ServiceId, deadline: Option<Duration>) {
        let service = &mut self.tracker.services[id.index()];
        if let Some(old) = service.deadline.take() {
            self.tracker.deadlines.remove(&(old, id));
        }
        if let Some(at) = deadline {
            service.deadline = Some(at);
            self.tracker.deadlines.insert((at, id));
        }
    }

    pub(super) fn new_process(&mut self, service: ServiceId, clues: Clues) -> Process {
        let sequence = self.tracker.next_sequence;
        self.tracker.next_sequence += 1;
        Process {
            service,
            adoption: None,
            session: clues.session,
            start_time: clues.start_time,
            sequence,
        }
    }

    pub(super) fn add_member(&mut self, pid: Pid, process: Process) {
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

    pub(super) fn spawned(&mut self, id: ServiceId, pid: Pid, start_time: Option<u64>) {
        if id.index() >= self.tracker.services.len() {
            return;
        }
        // The spawner makes the process a session leader.
        let process = self.new_process(
            id,
            Clues {
                session: Some(pid),
                start_time,
                ancestor: None,
                run_of: None,
                dying: false,
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
        service.reattached_at_us = None;
        service.guess_origin = None;
        // A new run has not failed yet.
        service.result = RunResult::Success;
        service.timed_out = false;
        let start_timeout = service.policy.start_timeout;
        let running = service.has_started();
        self.set_state(
            id,
            if running {
                State::Running
            } else {
                State::Starting
            },
        );
        if !running && !start_timeout.is_zero() {
            let due = self.now.monotonic + start_timeout;
            self.set_deadline(id, Some(due));
        }
    }

    pub(super) fn reattach(&mut self, id: ServiceId, run: &super::Reattach) {
        let Some(service) = self.tracker.services.get(id.index()) else {
            return;
        };
        let taken = run
            .members
            .iter()
            .any(|(pid, _)| self.tracker.processes.contains_key(pid));
        if service.state != State::Stopped || service.main.is_some() || taken {
            return;
        }
        for &(pid, start_time) in &run.members {
            let process = self.new_process(
                id,
                Clues {
                    session: None,
                    start_time,
                    ancestor: None,
                    run_of: None,
                    dying: false,
                },
            );
            self.add_member(pid, process);
        }
        if !self.tracker.processes.contains_key(&run.main_pid) {
            let process = self.new_process(id, Clues::default());
            self.add_member(run.main_pid, process);
        }
        let now = self.now;
        let service = self.touch(id);
        service.main = Some(run.main_pid);
        service.previous = run.previous_pid;
        service.main_source = run.main_pid_source;
        service.handoffs = run.handoffs;
        service.restarts = run.restarts;
        service.run_root = Some(run.main_pid);
        service.run_start_time = run.run_start_time;
        service.spawn_pending = false;
        service.ready = true;
        service.forget_graves();
        service.contenders.clear();
        service.pending_failure = None;
        service.guess_origin = None;
        service.result = run.result;
        service.last_exit = run.last_exit;
        service.reattached_at_us = Some(now.realtime_us);
        service.state = State::Running;
        service.state_changed_at = Now {
            monotonic: now.monotonic,
            realtime_us: run.state_changed_at_us,
        };
    }

    pub(super) fn spawn_failed(&mut self, id: ServiceId) {
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
    pub(super) fn forked(&mut self, forks: &BTreeMap<Pid, Pid>) {
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
                let process = self.new_process(service, Clues::default());
                self.add_member(child, process);
                self.touch(service);
            }
        }
    }

    /// Removes the exited processes; returns the main processes among them.
    pub(super) fn exited(
        &mut self,
        exits: &BTreeMap<Pid, ExitStatus>,
    ) -> Vec<(ServiceId, Pid, ExitStatus)> {
        let mut main_exits = Vec::new();
        for (&pid, &status) in exits {
            let Some(process) = self.tracker.processes.remove(&pid) else {
                self.tracker.orphans_reaped += 1;
                self.out.notices.push(Notice::OrphanReaped {
                    pid,
                    status,
                    total: self.tracker.orphans_reaped,
                });
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
                session: process.session,
            });
            self.departed.insert(pid, Departed { process, status });
        }
        main_exits.sort_unstable_by_key(|&(service, pid, _)| (service, pid));
        main_exits
    }

    /// Live adoptees of the service that match, ascending by pid.
    pub(super) fn live_adoptees(
        &self,
        id: ServiceId,
        matches: impl Fn(&Adoption) -> bool,
    ) -> Vec<Pid> {
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
    pub(super) fn departed_adoptees(&self, id: ServiceId, parent: Pid) -> Vec<Pid> {
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
    pub(super) fn adoption_of(&self, pid: Pid) -> Option<Adoption> {
        self.tracker
            .processes
            .get(&pid)
            .or_else(|| self.departed.get(&pid).map(|d| &d.process))
            .and_then(|p| p.adoption)
    }
}

pub(super) fn diff(before: &Status, after: &Status) -> Changes {
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
    mark(
        before.reattached_at_us != after.reattached_at_us,
        Changes::REATTACHED,
    );
    changes
}
