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
//! service costs one read of `stat` each. A newcomer whose environment
//! names no run is placed by the first of its descendants whose
//! environment does: a hop caught inside `exit` has lost its memory, and
//! the children it forked are still its own, not yet adoptd's. One that
//! names none either and is inside `exit` is reported as dying: the
//! tracker never places it by a guess (it might be another service's hop)
//! and flags the hand-offs of its moment, and its exit is placed later.
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
            let mut clues = clues_of(stat);
            let in_a_run_session = clues
                .session
                .is_some_and(|session| self.runs.is_run_session(session));
            if !in_a_run_session {
                clues.run_of = self.run_of(pid);
                // Caught inside `exit`: its memory (and the environment
                // with it) may be gone, and its children are not adoptd's
                // until it is a zombie. Placed by a guess, it could take
                // another service's hand-off: the tracker is told, and
                // another round may see it dead, with its children.
                if clues.run_of.is_none()
                    && proc::read_stat(pid).is_none_or(|now| now.exiting || now.zombie)
                {
                    clues.dying = true;
                    self.saw_zombie = true;
                }
            }
            self.children.insert(pid);
            events.push(Event::Adopted {
                pid,
                previous_parent: None,
                clues,
            });
        }
        Ok(())
    }
}

/// How many descendants of a newcomer may be asked which run they come
/// from when its own environment names none.
const DESCENDANTS_ASKED: usize = 16;

impl Procfs {
    /// The run `pid`'s environment names, else the first that the
    /// environment of one of its descendants names (breadth first, at most
    /// [`DESCENDANTS_ASKED`]): a hop caught inside `exit` has lost its
    /// memory, but the child it forked still carries the run's id.
    fn run_of(&mut self, pid: Pid) -> Option<ServiceId> {
        if let Some(service) = self.runs.service_named_by_environment(pid) {
            return Some(service);
        }
        let mut queue = std::collections::VecDeque::from([pid]);
        let mut asked = 0;
        let mut found = Vec::new();
        while let Some(parent) = queue.pop_front() {
            found.clear();
            // A process gone meanwhile has no children to ask.
            let _ = self.reader.read(Some(parent), &mut found);
            for &child in &found {
                if asked == DESCENDANTS_ASKED {
                    return None;
                }
                asked += 1;
                if let Some(service) = self.runs.service_named_by_environment(child) {
                    return Some(service);
                }
                queue.push_back(child);
            }
        }
        None
    }

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

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader},
        os::unix::process::CommandExt,
        process::{Child, Command, Stdio},
    };

    use super::*;
    use crate::{
        invocation::INVOCATION_VARIABLE,
        tracker::{Now, Policy, Tracker},
    };

    /// Kills the process group of a test's processes, even when it fails.
    struct Group(Child);

    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the group this test started.
            unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_process_whose_environment_names_no_run_is_placed_by_its_child() {
        let service = Tracker::new().add_service(Policy::default(), Now::default());
        let invocation = InvocationId::new();
        let mut procfs = Procfs::default();
        procfs.runs.started(u32::MAX, service, invocation);
        // A child that carries the run's id, under a parent whose
        // environment is empty (as a hop inside `exit` has lost it). The
        // child says it is ready once it runs, and execs nothing after
        // that: a process in the middle of an exec has no environment to
        // read yet.
        let script = format!(
            "{INVOCATION_VARIABLE}={invocation} /bin/sh -c 'echo ready; sleep 300; :' & exec sleep 300"
        );
        let mut command = Command::new("env");
        command
            .args(["-i", "/bin/sh", "-c", &script])
            .stdout(Stdio::piped())
            .process_group(0);
        let mut group = Group(command.spawn().expect("/bin/sh"));
        let parent = group.0.id();
        let mut line = String::new();
        let stdout = group.0.stdout.take().expect("a pipe");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the shell's word");
        assert_eq!(line, "ready\n");

        assert_eq!(procfs.runs.service_named_by_environment(parent), None);
        assert_eq!(procfs.run_of(parent), Some(service));
        drop(group);
        assert_eq!(procfs.run_of(parent), None, "a process gone names nothing");
    }
}
