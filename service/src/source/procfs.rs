//! The `procfs` source: works for any user on any kernel with `/proc`.
//!
//! It cannot see forks or reparenting as they happen. After each reap
//! batch it compares adoptd's children (`/proc/self/task/*/children`, as
//! orphans may be reparented to any of adoptd's threads) with the children
//! it already knows: every newcomer was adopted since the last look, and
//! every reaped pid it never knew was adopted and died in between. Neither
//! comes with its previous parent; the source reports each newcomer's
//! session and start time, and the service whose run its environment names
//! (`ADOPTD_INVOCATION_ID`, see `spawn`), so the tracker can attribute it
//! (by that run, by session, or as the only service with an exit in the
//! batch). The environment is read only for newcomers that left the
//! session of their service's latest run, so a storm of orphans inside a
//! service costs one read of `stat` each.
//!
//! A child adoptd never saw alive is looked at while it is still a zombie,
//! just before it is reaped (see [`AdoptionSource::look_before_reaping`]):
//! its session and start time are still in /proc then, so a storm's
//! orphans stay in their own service, and a hop that started a session
//! and died unseen is placed by the heir that shares that session.
//!
//! Limits, documented and tested: when several processes of one service
//! exit in the same batch (a hop was born and died between two looks), the
//! previous parent of a newcomer cannot be known; the tracker takes the
//! closest earlier pid and publishes the hand-off as a guess. When several
//! *services* daemonize in the same instant, a hop that started a session
//! of its own and died unseen with no heir in that session cannot be
//! placed at all: its failure, if it failed, is charged to a run that
//! started before it and would otherwise end cleanly (a run's end is never
//! called clean on such a doubt; two such failures of one moment may each
//! be charged to the other's run), and hand-offs of that moment are
//! guesses.
//! A guess never ends a run while a live member could be its daemon. A
//! daemon that empties its environment before it is seen falls back to
//! the older rules. Exact answers need the `proc-connector` (root) or
//! `adoptsig` (patched kernel) sources, which `--tracker auto` prefers.

use std::{
    collections::{HashMap, HashSet},
    io,
};

use super::{AdoptionSource, SourceKind, clues_of, runs::Runs};
use crate::{
    invocation::InvocationId,
    memory::Shrink,
    proc,
    tracker::{Clues, Event, ExitStatus, Pid, ServiceId},
};

/// Known children of adoptd and how to find new ones. A re-exec carries
/// it all across (`save`, `restore`): a child adopted during the exec is a
/// newcomer at the next look, as any other.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Procfs {
    children: HashSet<Pid>,
    /// The last look found a zombie child, not yet reaped.
    saw_zombie: bool,
    /// Reads adoptd's `children` files.
    #[serde(skip)]
    reader: proc::Children,
    /// Which run a newcomer that left its session comes from.
    runs: Runs,
    /// What `/proc` said of children adoptd never saw alive, read while
    /// they were zombies, until the reap is reported.
    seen_dead: HashMap<Pid, Clues>,
}

impl Procfs {
    /// Checks that this kernel lists children in /proc.
    pub fn open() -> io::Result<Self> {
        proc::lists_children()?;
        Ok(Procfs::default())
    }
}

impl AdoptionSource for Procfs {
    fn kind(&self) -> SourceKind {
        SourceKind::Procfs
    }

    fn spawned(&mut self, pid: Pid, service: ServiceId, invocation: InvocationId) {
        self.know(pid);
        self.runs.started(pid, service, invocation);
    }

    fn needs_another_round(&self) -> bool {
        self.saw_zombie
    }

    fn shrink_if_sparse(&mut self) -> bool {
        self.children.shrink_if_sparse() | self.seen_dead.shrink_if_sparse()
    }

    fn looks_before_reaping(&self) -> bool {
        true
    }

    fn look_before_reaping(&mut self, pid: Pid) {
        // A child adopted and dead between two looks: its session says
        // which service it came from (a storm's orphans keep their
        // service's session), as its environment no longer can.
        if !self.children.contains(&pid)
            && let Some(stat) = proc::read_stat(pid)
        {
            self.seen_dead.insert(pid, clues_of(stat));
        }
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        *self = serde_json::from_value(saved)?;
        Ok(())
    }

    fn collect(&mut self, reaped: &[(Pid, ExitStatus)], events: &mut Vec<Event>) -> io::Result<()> {
        for &(pid, _) in reaped {
            if !self.children.remove(&pid) {
                events.push(Event::Adopted {
                    pid,
                    previous_parent: None,
                    clues: self.seen_dead.remove(&pid).unwrap_or_default(),
                });
            }
        }
        self.seen_dead.clear();
        let mut found = Vec::new();
        self.saw_zombie = false;
        self.reader.read(None, &mut found)?;
        for pid in found {
            if self.children.contains(&pid) {
                continue;
            }
            // A zombie is reaped in another round of this batch and
            // reported then: it must never look like a live adoptee.
            let Some(stat) = proc::read_stat(pid) else {
                continue;
            };
            if stat.zombie {
                self.saw_zombie = true;
                continue;
            }
            self.children.insert(pid);
            let mut clues = clues_of(stat);
            let in_a_run_session = clues
                .session
                .is_some_and(|session| self.runs.is_run_session(session));
            if !in_a_run_session {
                clues.run_of = self.runs.service_named_by_environment(pid);
            }
            events.push(Event::Adopted {
                pid,
                previous_parent: None,
                clues,
            });
        }
        Ok(())
    }
}

impl Procfs {
    /// Forgets a reaped child without looking (for sources that use this
    /// one only to rescan).
    pub fn forget(&mut self, pid: Pid) {
        self.children.remove(&pid);
    }

    /// Counts `pid` as a known child, not an adoptee (for sources that use
    /// this one only to rescan).
    pub fn know(&mut self, pid: Pid) {
        self.children.insert(pid);
    }
}
