//! Which service an adoptee belongs to: by its previous parent where the
//! source tells it, else by what the source can tell of its clues
//! (session, run, ancestor, start time). Adoptees that cannot be explained
//! yet wait, indexed by previous parent, in bounded tables.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use adoptd_dbus::Signal;

use super::{
    Batch, Clues, ExitStatus, Facts, Pid, ServiceId, State, Tracker, service::Adoption,
    service::Grave,
};

/// How many adoptees, live or exited, may wait for an explanation at once.
pub(super) const UNCLAIMED_LIMIT: usize = 4096;

/// A failure of an adoptee no service could be found for.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct UnexplainedFailure {
    pub(super) status: ExitStatus,
    /// Its start time, where known.
    pub(super) born: Option<u64>,
    pub(super) session: Option<Pid>,
}

/// How many unexplained failures are remembered.
pub(super) const UNEXPLAINED_FAILURES: usize = 64;

/// How far attribution may go for a source that cannot tell lineage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fallback {
    None,
    OnlyExit,
    ClosestExit,
}

/// Among exits ascending by pid, the one whose pid came closest before
/// `pid` (pids are handed out in increasing order, so the youngest older
/// process is the likeliest parent: the hop just before it), else the
/// highest; never `pid` itself.
pub(super) fn closest_before(exits: &[(Pid, ServiceId)], pid: Pid) -> Option<(Pid, ServiceId)> {
    let below = exits.partition_point(|&(dead, _)| dead < pid);
    if below > 0 {
        return Some(exits[below - 1]);
    }
    exits.iter().rev().find(|&&(dead, _)| dead != pid).copied()
}

impl Tracker {
    /// Takes `pid` off the waiting adoptees, and its parent's list.
    pub(super) fn stop_waiting(&mut self, pid: Pid) -> Option<(Option<Pid>, Clues)> {
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
}

impl Batch<'_> {
    /// Records adoptions. Each adoptee is first attributed to a service:
    /// by known membership, by its previous parent, by the ancestor the
    /// source names, by its session, and, for sources that know none of
    /// these, as the only service with an exit in this batch or, failing
    /// that, the service of the closest earlier pid that exited (a guess).
    /// Attribution runs in rounds until nothing changes, so an adoptee
    /// linked to another adoptee of the same batch is found whatever the
    /// order. Only then are missing previous parents inferred, from every
    /// attribution at once.
    pub(super) fn adopted(
        &mut self,
        adoptions: &BTreeMap<Pid, (Option<Pid>, Clues)>,
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
                    let (previous_parent, clues) = adoptions[&pid];
                    let dead = exited.contains_key(&pid);
                    // Neither for one caught inside `exit`: it may be
                    // another service's hop about to hand its children on.
                    let alive_and_well = !dead && !clues.dying;
                    let found = self
                        .attribute(pid, previous_parent, clues, &attributed)
                        .or_else(|| clues.session.and_then(|s| sessions.get(&s).copied()))
                        // The leader of a session one of them is in.
                        .or_else(|| sessions.get(&pid).copied())
                        .map(|service| (service, false))
                        .or_else(|| {
                            match (fallback, previous_parent) {
                                // Neither for the dead whose session named
                                // no service: a storm's orphans must not
                                // become another service's hops, and a hop
                                // of another service may die unseen (its
                                // parent not adoptd's child) in any moment.
                                (Fallback::OnlyExit, None)
                                    if exiting_services.len() == 1
                                        && (alive_and_well || clues.session.is_none()) =>
                                {
                                    exiting_services.first().map(|&service| (service, false))
                                }
                                (Fallback::ClosestExit, None)
                                    if alive_and_well || clues.session.is_none() =>
                                {
                                    closest_before(&owned_exits, pid)
                                        .map(|(_, service)| (service, true))
                                }
                                _ => None,
                            }
                            // A coincidence never claims a live process
                            // older than the service's run (one that came
                            // from elsewhere, as PID 1 may adopt).
                            .filter(|&(service, _)| dead || self.young_enough(service, clues))
                        });
                    match found {
                        Some(found) => {
                            attributed.insert(pid, found);
                            if let Some(session) = clues.session {
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
        let unexplained_deaths = pending
            .iter()
            .any(|pid| exited.contains_key(pid) || adoptions[pid].1.dying);
        for pid in pending {
            let (previous_parent, clues) = adoptions[&pid];
            match (exited.get(&pid), previous_parent) {
                (Some(&status), Some(parent)) => {
                    self.remember_unclaimed_grave(Grave {
                        pid,
                        parent: Some(parent),
                        guessed: false,
                        status,
                        session: clues.session,
                    });
                }
                (None, Some(parent)) if self.tracker.waiting.len() < UNCLAIMED_LIMIT => {
                    self.tracker.waiting.insert(pid, (previous_parent, clues));
                    self.tracker.orphans_of.entry(parent).or_default().push(pid);
                }
                (None, None)
                    if exiting_services.is_empty()
                        || (clues.dying && self.tracker.unclaimed.len() < UNCLAIMED_LIMIT) =>
                {
                    // One caught inside `exit` is tried again with its
                    // exit, when its session may say more.
                    self.tracker.unclaimed.insert(pid, (previous_parent, clues));
                }
                (Some(&status), None) if !status.is_success() => {
                    let failures = &mut self.tracker.unexplained_failures;
                    if failures.len() >= UNEXPLAINED_FAILURES {
                        failures.pop_front();
                    }
                    failures.push_back(UnexplainedFailure {
                        status,
                        born: clues.start_time,
                        session: clues.session,
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
        // Each service's processes that live on after this moment,
        // ascending, gathered once per service.
        let mut live_members: HashMap<ServiceId, Vec<Pid>> = HashMap::new();
        let mut records = Vec::with_capacity(attributed.len());
        for (&pid, &(service, attribution_guessed)) in &attributed {
            let (previous_parent, clues) = adoptions[&pid];
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
                    // The exit is sure to be the parent only if it is the
                    // main process and no other member lives: a live
                    // member's child may have died unseen (a zombie of a
                    // live parent is not adoptd's child) and left this
                    // orphan beside the main process's exit.
                    let main = self.tracker.services[service.index()].main;
                    let not_main = closest.is_some() && closest != main;
                    // Only an older process can be an ancestor.
                    let live = live_members.entry(service).or_insert_with(|| {
                        let members = &self.tracker.services[service.index()].members;
                        let mut live: Vec<Pid> = members
                            .iter()
                            .copied()
                            .filter(|m| !exited.contains_key(m))
                            .chain(attributed.iter().filter_map(|(&p, &(s, _))| {
                                (s == service && !exited.contains_key(&p) && !members.contains(&p))
                                    .then_some(p)
                            }))
                            .collect();
                        live.sort_unstable();
                        live
                    });
                    let others_live =
                        closest.is_some() && live.first().is_some_and(|&older| older < pid);
                    (
                        closest,
                        others > 1 || any_placed_by_guess || not_main || others_live,
                    )
                }
            };
            records.push((
                pid,
                service,
                previous_parent,
                clues,
                attribution_guessed || inference_guessed,
            ));
        }
        for (pid, service, previous_parent, clues, guessed) in records {
            self.record_adoption(service, pid, previous_parent, clues, guessed);
            if !exited.contains_key(&pid) {
                self.stop_if_stopping(service, pid);
            }
        }
    }

    pub(super) fn remember_unclaimed_grave(&mut self, grave: Grave) {
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
    pub(super) fn wake_waiting(
        &mut self,
        facts: &Facts,
        adoptions: &mut BTreeMap<Pid, (Option<Pid>, Clues)>,
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
    pub(super) fn claim_graves(&mut self, attributed: &BTreeMap<Pid, (ServiceId, bool)>) {
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
    pub(super) fn stop_if_stopping(&mut self, id: ServiceId, pid: Pid) {
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

    pub(super) fn attribute(
        &self,
        pid: Pid,
        previous_parent: Option<Pid>,
        clues: Clues,
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
            .or_else(|| clues.ancestor.and_then(known))
            .or_else(|| {
                clues
                    .run_of
                    .filter(|service| service.index() < tracker.services.len())
            })
            .or_else(|| {
                let session = clues.session?;
                tracker
                    .sessions
                    .get(&session)
                    .copied()
                    .or_else(|| known(session))
            })
    }

    /// Whether a live process may descend from the service's current run.
    pub(super) fn young_enough(&self, service: ServiceId, clues: Clues) -> bool {
        match (
            self.tracker.services[service.index()].run_start_time,
            clues.start_time,
        ) {
            (Some(run), Some(born)) => born >= run,
            _ => false,
        }
    }

    /// The exited processes whose service is known, ascending by pid.
    pub(super) fn owned_exits(
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

    pub(super) fn record_adoption(
        &mut self,
        service: ServiceId,
        pid: Pid,
        previous_parent: Option<Pid>,
        clues: Clues,
        guessed: bool,
    ) {
        let under_main = self.tracker.services[service.index()].main;
        let mut process = match self.tracker.processes.get(&pid) {
            Some(known) => *known,
            None => self.new_process(service, clues),
        };
        process.session = process.session.or(clues.session);
        process.start_time = process.start_time.or(clues.start_time);
        process.adoption = Some(Adoption {
            previous_parent,
            under_main,
            guessed,
        });
        // `add_member` replaces a known process's record in place.
        self.add_member(pid, process);
        self.touch(service);
    }
}
