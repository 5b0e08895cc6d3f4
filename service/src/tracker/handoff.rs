//! The hand-off rule (DESIGN.md, "Following the main process"): what
//! happens when a service's main process exits.
//!
//! The tracker keeps the *lineage* of the current run: every adoptee's
//! previous parent, and a [`Grave`] for each member that exited (its
//! previous parent and how it ended). From a live adoptee the lineage walks
//! up through the graves until it reaches the main process that just exited
//! (the adoptee descends from it, through those hops), or stops at a
//! process the tracker never saw (a hop reaped by its own parent, as a
//! launcher reaps its child). Because it is built from facts, never from
//! the order they arrived in, the verdict is the same whichever process the
//! kernel ran first and however the events fell into moments:
//!
//! - the heir is the live adoptee that descends from the main process
//!   through hops that all exited successfully (step 1), else one orphaned
//!   inside the service while the main process lived whose lineage the
//!   tracker cannot follow (step 2); ties are broken by step 3;
//! - a hop that failed fails the run, whenever it happened: an adoptee that
//!   descends from it is never an heir, and when nothing else is left the
//!   run ends with the failed hop's status, as it does when a process of
//!   the dance ended badly before the main process exited cleanly;
//! - of two failures, one below the other, the upper one is the run's: a
//!   hop between them may still be a zombie of a live process, unseen when
//!   the run ends, so the run's status is settled again once the clean-up
//!   has reaped every member ([`Batch::settle_failure`]);
//! - everything else ends the run with the main process's own status.
//!
//! Invariant: a service's graves belong to its current run (cleared at each
//! spawn and when the run is over) and are bounded by
//! `GRAVES_PER_SERVICE`, oldest forgotten first, so a fork storm costs a
//! fixed amount of memory whatever its size.

use std::collections::BTreeMap;

use super::{
    Batch, ExitStatus, MainPidSource, Notice, Pid, RunResult, ServiceId, State,
    service::{Adoption, Contender},
};

/// Where a live adoptee's lineage leads, seen from an exiting main process.
#[derive(Debug)]
enum Lineage {
    /// It descends from the main process through `hops` (the exited hops
    /// from the main process's child down to the adoptee's previous
    /// parent).
    Reaches {
        hops: Vec<Pid>,
        failure: Option<ExitStatus>,
        guessed: bool,
    },
    /// The walk stopped at a process the tracker never saw exit, or
    /// (`guessed`) at one whose own previous parent no source reported.
    Unresolved {
        failure: Option<ExitStatus>,
        guessed: bool,
    },
}

/// The outcome of the hand-off rule.
pub(super) struct Succession {
    /// Processes that took over and exited before the heir did.
    pub hops: Vec<Pid>,
    pub heir: Pid,
    pub source: MainPidSource,
    /// The candidates not chosen, where the choice was a guess, with the
    /// hand-offs each would bring.
    pub others: Vec<(Pid, u32)>,
    /// The heir's lineage was inferred, not reported.
    pub lineage_guessed: bool,
    /// A process of the dance failed: if the heir ends without an heir of
    /// its own, the run failed with this status.
    pub pending_failure: Option<ExitStatus>,
}

/// What the rule decides for a main process that exited.
pub(super) enum Verdict {
    Heir(Succession),
    /// The run is over, ended with this status.
    Ended(ExitStatus),
}

/// A live adoptee that could be the heir, with the hops that lead to it.
struct Candidate {
    pid: Pid,
    hops: Vec<Pid>,
    guessed: bool,
}

impl Batch<'_> {
    /// The main process `main` of service `id` exited with `status`.
    pub(super) fn main_exited(
        &mut self,
        id: ServiceId,
        main: Pid,
        status: ExitStatus,
        pid_files: &BTreeMap<ServiceId, Pid>,
    ) {
        let service = &self.tracker.services[id.index()];
        let handoffs_left = service.handoff_limit().saturating_sub(service.handoffs);
        let stopping = service.after_stop.is_some();
        let guessed_main = service.main_source == MainPidSource::Guess;
        let pid_file = pid_files.get(&id).copied();
        let mut from = main;
        let verdict = match service.guess_origin {
            // A guessed main process may have been the wrong candidate:
            // the search starts from the process the guess was made at,
            // with everything known now, so the verdict does not depend on
            // which candidate exited first.
            Some((origin, handoffs)) if guessed_main && !stopping && status.is_success() => {
                let left = service.handoff_limit().saturating_sub(handoffs);
                match self.find_heir(id, origin, left, pid_file, true) {
                    Verdict::Heir(mut succession) => {
                        if let Some(at) = succession.hops.iter().position(|&hop| hop == main) {
                            // It came through the guessed main: the guess was
                            // right, and the hops before it are counted.
                            succession.hops.drain(..=at);
                        } else {
                            self.touch(id).handoffs = handoffs;
                            from = origin;
                        }
                        Verdict::Heir(succession)
                    }
                    ended => ended,
                }
            }
            _ if stopping || !status.is_success() => Verdict::Ended(status),
            _ => self.find_heir(id, main, handoffs_left, pid_file, true),
        };
        // A guess never ends a run while a live member could be its daemon:
        // the service keeps running on the likeliest one, still a guess.
        let verdict = match verdict {
            Verdict::Ended(ended)
                if ended.is_success()
                    && !stopping
                    && (guessed_main || self.has_unproven_adoptee(id, main)) =>
            {
                match self.likeliest_member(id, main, pid_file, None) {
                    Some(succession) => Verdict::Heir(succession),
                    None => Verdict::Ended(ended),
                }
            }
            verdict => verdict,
        };
        // Only a run that ended on the charge takes it: one that failed by
        // its own main process leaves it to the run it may explain.
        if let Verdict::Ended(ended) = verdict
            && !ended.is_success()
            && status.is_success()
            && let Some(run) = self.tracker.services[id.index()].run_start_time
            && let Some(at) =
                self.unexplained_failure_of(id)
                    .filter(|&chosen| chosen == ended)
                    .and_then(|chosen| {
                        self.tracker.unexplained_failures.iter().position(|f| {
                            f.status == chosen && f.born.is_some_and(|born| born >= run)
                        })
                    })
        {
            // Taken: it explains this run, no other.
            self.tracker.unexplained_failures.remove(at);
        }
        match verdict {
            Verdict::Heir(succession) => self.hand_off(id, from, succession),
            Verdict::Ended(ended) => {
                // A failure found earlier elsewhere on the line is the
                // run's when nothing better is known now: over a clean end,
                // or over this main process's own failure unless it came
                // from below it (this one's is then the first). A failure
                // the lineage shows now is the better informed.
                let from_lineage = status.is_success() && !ended.is_success();
                let status = match self.tracker.services[id.index()].pending_failure {
                    Some(failure)
                        if !stopping
                            && !from_lineage
                            && (ended.is_success() || !self.has_failed_descendant(id, main)) =>
                    {
                        failure
                    }
                    _ => ended,
                };
                match self.best_contender(id, pid_file) {
                    Some(contender) => {
                        if !status.is_success() {
                            // The guess may have been right: the failure
                            // stands if the contender ends too.
                            let service = self.touch(id);
                            service.pending_failure = Some(
                                service
                                    .pending_failure
                                    .map_or(status, |known| lesser(known, status)),
                            );
                        }
                        self.correct_guess(id, contender)
                    }
                    None => self.end_run(id, status),
                }
            }
        }
    }

    /// The rule for a main process that exited successfully.
    pub(super) fn find_heir(
        &self,
        id: ServiceId,
        main: Pid,
        handoffs_left: u32,
        pid_file: Option<Pid>,
        orphans_may_inherit: bool,
    ) -> Verdict {
        let mut descendants = Vec::new();
        let mut orphans = Vec::new();
        let mut failure: Option<ExitStatus> = None;
        let mut note_failure = |status: ExitStatus| {
            // The lowest failure wins where several are found, so the
            // verdict does not depend on the order of the search.
            failure = Some(failure.map_or(status, |known| lesser(known, status)));
        };
        for pid in self.live_adoptees(id, |_| true) {
            if pid == main {
                continue;
            }
            match self.lineage(id, pid, main) {
                Lineage::Reaches {
                    failure: Some(status),
                    ..
                } => note_failure(status),
                Lineage::Reaches {
                    hops,
                    failure: None,
                    guessed,
                } => {
                    // More hand-offs than `expect` allows end the run,
                    // unless the hops were only inferred: an unproven
                    // count never stops a live daemon.
                    if hops.len() < handoffs_left as usize || guessed {
                        descendants.push(Candidate { pid, hops, guessed });
                    }
                }
                Lineage::Unresolved { failure, guessed } => {
                    let orphaned_under_main = self
                        .adoption_of(pid)
                        .is_some_and(|a| a.under_main == Some(main));
                    match failure {
                        Some(status) if orphaned_under_main => note_failure(status),
                        None if orphaned_under_main && orphans_may_inherit => {
                            orphans.push((pid, guessed))
                        }
                        _ => {}
                    }
                }
            }
        }
        let heir = self
            .choose_descendant(descendants, handoffs_left, pid_file)
            .or_else(|| self.choose_orphan(id, orphans, pid_file));
        let failure = failure.or_else(|| self.failure_below(id, main));
        match (heir, failure) {
            (Some(mut succession), Some(status)) => {
                // A process of the dance failed, yet a live candidate is
                // left (a helper slower than the failed hop): it is followed
                // as a guess, and the failure stands if it ends.
                succession.source = MainPidSource::Guess;
                succession.lineage_guessed = true;
                succession.pending_failure = Some(status);
                Verdict::Heir(succession)
            }
            (Some(succession), None) => Verdict::Heir(succession),
            (None, Some(status)) => Verdict::Ended(status),
            (None, None) => match self.unexplained_failure_of(id) {
                // A failure no service could be found for is charged to
                // this run only on a doubt: it never ends the run while a
                // live member could be its daemon. The likeliest one runs,
                // flagged, and the failure stands if it ends.
                Some(charged) => match self.likeliest_member(id, main, pid_file, Some(charged)) {
                    Some(succession) => Verdict::Heir(succession),
                    None => Verdict::Ended(charged),
                },
                None => Verdict::Ended(ExitStatus::Code(0)),
            },
        }
    }

    /// An unexplained failure that may come from this run (it started no
    /// earlier than the run).
    /// One in a session of the run's own processes first.
    fn unexplained_failure_of(&self, id: ServiceId) -> Option<ExitStatus> {
        let service = &self.tracker.services[id.index()];
        let run = service.run_start_time?;
        let young: Vec<&super::UnexplainedFailure> = self
            .tracker
            .unexplained_failures
            .iter()
            .filter(|f| f.born.is_some_and(|born| born >= run))
            .collect();
        let ours = |session: Pid| {
            self.tracker.sessions.get(&session) == Some(&id)
                || service.grave(session).is_some()
                || service.members.contains(&session)
        };
        young
            .iter()
            .find(|f| f.session.is_some_and(ours))
            .or_else(|| young.first())
            .map(|f| f.status)
    }

    /// Step 2: one orphaned inside the service while the main process
    /// lived, whose lineage cannot be followed.
    fn choose_orphan(
        &self,
        id: ServiceId,
        orphans: Vec<(Pid, bool)>,
        pid_file: Option<Pid>,
    ) -> Option<Succession> {
        {
            let pids: Vec<Pid> = orphans.iter().map(|&(pid, _)| pid).collect();
            let (heir, source) = self.choose(&pids, pid_file)?;
            let heir_guessed = orphans.iter().any(|&(pid, guessed)| pid == heir && guessed);
            // A lineage that stopped may have stopped at a forgotten hop.
            let source = match source {
                MainPidSource::Adoption if self.tracker.services[id.index()].graves_forgotten => {
                    MainPidSource::Guess
                }
                source => source,
            };
            Some(Succession {
                hops: Vec::new(),
                heir,
                source,
                others: pids
                    .into_iter()
                    .filter(|&pid| pid != heir)
                    .map(|pid| (pid, 1))
                    .collect(),
                lineage_guessed: heir_guessed || self.tracker.services[id.index()].graves_forgotten,
                pending_failure: None,
            })
        }
    }

    /// Step 1 among several descendants: the pid file, else the one that
    /// came through the most hops (a live sibling nearer the main process
    /// is likelier a helper still exiting), else step 3. Only a single
    /// candidate is certain.
    fn choose_descendant(
        &self,
        mut candidates: Vec<Candidate>,
        handoffs_left: u32,
        pid_file: Option<Pid>,
    ) -> Option<Succession> {
        let deepest = candidates.iter().map(|c| c.hops.len()).max()?;
        let chosen = if let [_] = candidates.as_slice() {
            (0, MainPidSource::Adoption)
        } else if let Some(at) = pid_file.and_then(|p| candidates.iter().position(|c| c.pid == p)) {
            (at, MainPidSource::PidFile)
        } else {
            let deep: Vec<Pid> = candidates
                .iter()
                .filter(|c| c.hops.len() == deepest)
                .map(|c| c.pid)
                .collect();
            let (pid, _) = self.choose(&deep, None)?;
            let at = candidates.iter().position(|c| c.pid == pid)?;
            (at, MainPidSource::Guess)
        };
        let (at, source) = chosen;
        let heir = candidates.swap_remove(at);
        let mut hops = heir.hops;
        // An inferred chain longer than `expect` allows keeps its last
        // hops: the count is a guess either way.
        let allowed = (handoffs_left as usize).saturating_sub(1);
        if hops.len() > allowed {
            hops.drain(..hops.len() - allowed);
        }
        Some(Succession {
            hops,
            heir: heir.pid,
            source,
            others: candidates
                .into_iter()
                .map(|c| (c.pid, handoffs_through(&c.hops)))
                .collect(),
            lineage_guessed: heir.guessed,
            pending_failure: None,
        })
    }

    /// A guess on the likeliest live adoptee other than `main`, the others
    /// kept as contenders, with `pending_failure` standing if it ends: how
    /// a run goes on when a doubt must not end it.
    fn likeliest_member(
        &self,
        id: ServiceId,
        main: Pid,
        pid_file: Option<Pid>,
        pending_failure: Option<ExitStatus>,
    ) -> Option<Succession> {
        let live: Vec<Pid> = self
            .live_adoptees(id, |_| true)
            .into_iter()
            .filter(|&pid| pid != main)
            .collect();
        let (heir, _) = self.choose(&live, pid_file)?;
        Some(Succession {
            hops: Vec::new(),
            heir,
            source: MainPidSource::Guess,
            others: live
                .iter()
                .filter(|&&pid| pid != heir)
                .map(|&pid| (pid, 1))
                .collect(),
            lineage_guessed: true,
            pending_failure,
        })
    }

    /// Whether a live adoptee of the service has a lineage that was only
    /// inferred and does not lead anywhere: it may descend from `main`
    /// through processes never seen, so the run cannot be called over.
    fn has_unproven_adoptee(&self, id: ServiceId, main: Pid) -> bool {
        self.live_adoptees(id, |adoption| {
            adoption.guessed || adoption.previous_parent.is_none()
        })
        .into_iter()
        .filter(|&pid| pid != main)
        .any(|pid| {
            matches!(
                self.lineage(id, pid, main),
                Lineage::Unresolved { guessed: true, .. }
            )
        })
    }

    /// The youngest process of the run that died, no older than `pid`'s
    /// session leader and older than `pid`, and whether it is the only
    /// one: every process of a session descends from its leader (a
    /// session can only be entered by being forked into it), so `pid`'s
    /// previous parent is among them, or is a process never seen.
    fn nearest_grave_in_session(&self, id: ServiceId, pid: Pid) -> Option<(Pid, bool)> {
        let leader = self.tracker.processes.get(&pid)?.session?;
        if leader >= pid {
            return None;
        }
        let service = &self.tracker.services[id.index()];
        let mut between = service
            .graves
            .iter()
            .map(|g| g.pid)
            .filter(|&dead| dead >= leader && dead < pid);
        let first = between.next()?;
        let (nearest, count) = between.fold((first, 1), |(max, n), dead| (max.max(dead), n + 1));
        // A live member between them may have forked a hop that died
        // unseen (a zombie of a live parent is not adoptd's child).
        let live_between = service
            .members
            .range(leader..pid)
            .any(|&member| Some(member) != service.main);
        Some((nearest, count == 1 && !live_between))
    }

    /// Walks from the live adoptee `pid` up its previous parents, through
    /// the graves of the run, towards `main`.
    fn lineage(&self, id: ServiceId, pid: Pid, main: Pid) -> Lineage {
        let service = &self.tracker.services[id.index()];
        let Some(adoption) = self.adoption_of(pid) else {
            return Lineage::Unresolved {
                failure: None,
                guessed: true,
            };
        };
        let mut hops = Vec::new();
        let mut failure = None;
        let mut guessed = adoption.guessed;
        let mut parent = adoption.previous_parent;
        if parent.is_none()
            && let Some((nearest, alone)) = self.nearest_grave_in_session(id, pid)
        {
            // No source told its previous parent (procfs saw it orphaned
            // before the hop that orphaned it was reaped). Its ancestors
            // in its session are no older than the session's leader: the
            // walk goes on from the youngest of the run's dead between the
            // two, exact only if it is the only one.
            guessed |= !alone;
            parent = Some(nearest);
        }
        // Each grave is visited once at most: recycled pids can make a
        // loop of previous parents.
        while hops.len() <= service.graves.len() {
            let Some(at) = parent else {
                // Only the run's first process has no previous parent.
                guessed |= hops.last().copied() != service.run_root;
                break;
            };
            if at == main {
                hops.reverse();
                return Lineage::Reaches {
                    hops,
                    failure,
                    guessed,
                };
            }
            let Some(grave) = service.grave(at) else {
                break;
            };
            if hops.contains(&at) {
                break;
            }
            hops.push(at);
            if !grave.status.is_success() {
                // Walking up, the last failure seen is the one nearest the
                // main process: the first hop of the dance that failed.
                failure = Some(grave.status);
            }
            guessed |= grave.guessed;
            parent = grave.parent.or_else(|| {
                // No source told its previous parent, which was in its
                // session (only a session's leader has its parent outside):
                // the walk goes on from the leader, when it is another of
                // the run's dead, as a guess. A hop that ended before its
                // own parent was reaped is found this way (procfs saw its
                // children orphaned a moment before it).
                let leader = grave.session.filter(|&leader| leader != at)?;
                service.grave(leader)?;
                guessed = true;
                Some(leader)
            });
        }
        Lineage::Unresolved { failure, guessed }
    }

    /// A main process followed although its lineage could not be walked
    /// (a hop the tracker learned of only later) turns out to descend from
    /// a hop that failed: the run failed, as it would have on a schedule
    /// that showed the failure first.
    pub(super) fn fail_runs_that_descend_from_a_failure(&mut self) {
        let touched: Vec<ServiceId> = self.before.keys().copied().collect();
        for id in touched {
            let service = &self.tracker.services[id.index()];
            let Some(main) = service.main else { continue };
            let following = service.after_stop.is_none()
                && matches!(service.state, State::Starting | State::Running)
                && service.main_source != MainPidSource::Spawn
                && service.failed_graves > 0;
            if !following {
                continue;
            }
            if let Some(status) = self.ancestry_failure(id, main) {
                self.end_run(id, status);
            }
        }
    }

    /// The failure nearest the run's root among the exited ancestors of
    /// `pid`, walking its previous parents through the graves.
    fn ancestry_failure(&self, id: ServiceId, pid: Pid) -> Option<ExitStatus> {
        let service = &self.tracker.services[id.index()];
        let mut failure = None;
        let mut parent = self.adoption_of(pid)?.previous_parent;
        let mut steps = 0;
        while let Some(at) = parent {
            let grave = service.grave(at)?;
            if !grave.status.is_success() {
                failure = Some(grave.status);
            }
            steps += 1;
            if steps > service.graves.len() {
                break;
            }
            parent = grave.parent;
        }
        failure
    }

    /// Whether a failed process of the run descends from `pid`.
    fn has_failed_descendant(&self, id: ServiceId, pid: Pid) -> bool {
        if self.tracker.services[id.index()].failed_graves == 0 {
            return false;
        }
        let graves = &self.tracker.services[id.index()].graves;
        graves
            .iter()
            .filter(|g| !g.status.is_success())
            .any(|failed| {
                let mut parent = failed.parent;
                for _ in 0..=graves.len() {
                    match parent {
                        Some(at) if at == pid => return true,
                        Some(at) => {
                            parent = graves
                                .iter()
                                .rev()
                                .find(|g| g.pid == at)
                                .and_then(|g| g.parent)
                        }
                        None => return false,
                    }
                }
                false
            })
    }

    /// The clean-up reaped every member, so the run's lineage is as
    /// complete as it will be: a failure never stands for the run over a
    /// failure of its own ancestor, which is nearer the start of the main
    /// line. A failure chosen while a hop between the two was unseen (a
    /// zombie of a live parent, handed to adoptd only by the clean-up) is
    /// corrected now to what a schedule that showed the link first gave.
    pub(super) fn settle_failure(&mut self, id: ServiceId) {
        let service = &self.tracker.services[id.index()];
        let Some(chosen) = service.last_exit.filter(|status| !status.is_success()) else {
            return;
        };
        if service.failed_graves < 2
            || !matches!(service.result, RunResult::ExitCode | RunResult::Signal)
        {
            return;
        }
        let mut above: Option<ExitStatus> = None;
        for grave in service.graves.iter().filter(|g| g.status == chosen) {
            match service.topmost_failed_ancestor(grave) {
                Some(status) => above = Some(above.map_or(status, |known| lesser(known, status))),
                // Some process that failed so has no failed ancestor: the
                // choice may be its, and stands.
                None => return,
            }
        }
        if let Some(status) = above {
            let service = self.touch(id);
            service.last_exit = Some(status);
            service.result = RunResult::of_exit(status);
        }
    }

    /// A process of the run's dance that ended badly (a child of `main`
    /// or of an earlier main process, or a hop below one, reaped along with
    /// it or earlier): its status.
    fn failure_below(&self, id: ServiceId, main: Pid) -> Option<ExitStatus> {
        let service = &self.tracker.services[id.index()];
        if service.failed_graves == 0 {
            return None;
        }
        let graves = &service.graves;
        let root = service.run_root;
        let mut found: Option<ExitStatus> = None;
        for grave in graves {
            let mut failure = (!grave.status.is_success()).then_some(grave.status);
            let mut parent = grave.parent;
            let mut guessed = grave.guessed;
            let mut steps = 0;
            let reaches = loop {
                // A process of the service whose lineage no source told
                // (procfs) is still of the run: its failure counts.
                let Some(at) = parent else {
                    break Some(grave.pid) != root;
                };
                if at == main || Some(at) == root {
                    break true;
                }
                steps += 1;
                // An inferred lineage that breaks off (at a process not
                // seen, or in a loop of guessed parents) cannot show the
                // failure is off the main line: it counts.
                let Some(hop) = graves.iter().find(|g| g.pid == at) else {
                    break guessed;
                };
                if steps > graves.len() {
                    break guessed;
                }
                if !hop.status.is_success() {
                    failure = Some(hop.status);
                }
                guessed |= hop.guessed;
                parent = hop.parent;
            };
            if let (true, Some(status)) = (reaches, failure) {
                found = Some(found.map_or(status, |known| lesser(known, status)));
            }
        }
        found
    }

    /// Step 3 of the rule, for several candidates.
    pub(super) fn choose(
        &self,
        candidates: &[Pid],
        pid_file: Option<Pid>,
    ) -> Option<(Pid, MainPidSource)> {
        if let [only] = candidates {
            return Some((*only, MainPidSource::Adoption));
        }
        if let Some(pid) = pid_file.filter(|pid| candidates.contains(pid)) {
            return Some((pid, MainPidSource::PidFile));
        }
        let leaders: Vec<Pid> = candidates
            .iter()
            .copied()
            .filter(|pid| self.tracker.processes.get(pid).and_then(|p| p.session) == Some(*pid))
            .collect();
        if let [leader] = leaders.as_slice() {
            return Some((*leader, MainPidSource::Guess));
        }
        let oldest = candidates.iter().copied().min_by_key(|pid| {
            let p = self.tracker.processes.get(pid);
            (
                p.and_then(|p| p.start_time).unwrap_or(u64::MAX),
                p.map_or(u64::MAX, |p| p.sequence),
                *pid,
            )
        })?;
        Some((oldest, MainPidSource::Guess))
    }

    /// The heir takes over: one `Adopted` notice per hop, in order.
    fn hand_off(&mut self, id: ServiceId, main: Pid, succession: Succession) {
        let mut previous = main;
        for &hop in succession.hops.iter().chain([&succession.heir]) {
            self.out.notices.push(Notice::Adopted {
                service: id,
                pid: hop,
                previous_pid: previous,
            });
            previous = hop;
        }
        let guessed = succession.lineage_guessed
            || self
                .adoption_of(succession.heir)
                .is_some_and(|a: Adoption| a.guessed);
        let source = match succession.source {
            MainPidSource::Adoption if guessed => MainPidSource::Guess,
            source => source,
        };
        let hops = handoffs_through(&succession.hops);
        let before_handoffs = self.tracker.services[id.index()].handoffs;
        let previous = succession.hops.last().copied().unwrap_or(main);
        let contenders: Vec<Contender> = if source == MainPidSource::Guess {
            let before = self.tracker.services[id.index()].handoffs;
            succession
                .others
                .iter()
                .map(|&(pid, brings)| Contender {
                    pid,
                    previous: self
                        .adoption_of(pid)
                        .and_then(|a| a.previous_parent)
                        .unwrap_or(main),
                    handoffs: before.saturating_add(brings),
                })
                .collect()
        } else {
            Vec::new()
        };
        let service = self.touch(id);
        service.main = Some(succession.heir);
        service.previous = Some(previous);
        service.main_source = source;
        service.handoffs = service.handoffs.saturating_add(hops);
        service.certain_once_alone = source == MainPidSource::Guess && !guessed;
        if source != MainPidSource::Guess {
            service.guess_origin = None;
        } else if service.guess_origin.is_none() {
            service.guess_origin = Some((main, before_handoffs));
        }
        if let Some(status) = succession.pending_failure {
            service.pending_failure = Some(
                service
                    .pending_failure
                    .map_or(status, |known| lesser(known, status)),
            );
        }
        service.contenders = contenders;
        let running = service.has_started();
        if running && service.state == State::Starting {
            self.set_state(id, State::Running);
        }
    }
}

/// The hand-offs a path through `hops` to an heir makes.
fn handoffs_through(hops: &[Pid]) -> u32 {
    u32::try_from(hops.len() + 1).unwrap_or(u32::MAX)
}

/// The lesser of two failures, in a fixed order (exit codes before
/// signals), so that which one is found first never matters.
pub(super) fn lesser(a: ExitStatus, b: ExitStatus) -> ExitStatus {
    let key = |s: ExitStatus| match s {
        ExitStatus::Code(code) => (0, code),
        ExitStatus::Signal(signal) => (1, signal),
    };
    if key(b) < key(a) { b } else { a }
}
