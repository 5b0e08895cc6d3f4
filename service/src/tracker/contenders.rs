//! Revising a guess: when step 3 of the hand-off rule had to guess among
//! live candidates, the others stay *contenders*, followed through their
//! own exits until the guess is proven (it is left the only candidate) or
//! corrected (the guessed main process ended cleanly without an heir, and
//! the search starts again from where the guess was made).

use std::collections::HashSet;

use super::{Batch, MainPidSource, Notice, Pid, ServiceId, State, handoff, service::Contender};

impl Batch<'_> {
    pub(super) fn follow_all_contenders(&mut self) {
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
    pub(super) fn follow_contenders(&mut self, id: ServiceId) {
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
    pub(super) fn guess_is_proven(&self, id: ServiceId, main: Pid) -> bool {
        let service = &self.tracker.services[id.index()];
        let Some((origin, handoffs)) = service.guess_origin else {
            return false;
        };
        let left = service.handoff_limit().saturating_sub(handoffs);
        matches!(
            self.find_heir(id, origin, left, None, true),
            handoff::Verdict::Heir(succession)
                if succession.heir == main
                    && succession.others.is_empty()
                    && !succession.lineage_guessed
        )
    }

    /// The contender to take over from a guessed main process that ended
    /// without an heir.
    pub(super) fn best_contender(
        &mut self,
        id: ServiceId,
        pid_file: Option<Pid>,
    ) -> Option<Contender> {
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
    pub(super) fn correct_guess(&mut self, id: ServiceId, contender: Contender) {
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
        let inferred = self
            .tracker
            .processes
            .get(&contender.pid)
            .and_then(|p| p.adoption)
            .is_some_and(|a| a.guessed || a.previous_parent.is_none());
        let service = &mut self.tracker.services[id.index()];
        if service.contenders.is_empty() && service.certain_once_alone && !inferred {
            // The last candidate left, of a lineage the source reported.
            service.main_source = MainPidSource::Adoption;
            service.certain_once_alone = false;
        }
        let running = service.has_started();
        if running && service.state == State::Starting {
            self.set_state(id, State::Running);
        }
    }
}
