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
//! called clean on such a doubt), and hand-offs of that moment are guesses.
//! A guess never ends a run while a live member could be its daemon. A
//! daemon that empties its environment before it is seen falls back to
//! the older rules. Exact answers need the `proc-connector` (root) or
//! `adoptsig` (patched kernel) sources, which `--tracker auto` prefers.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
};

use super::{AdoptionSource, SourceKind, runs::Runs};
use crate::{
    invocation::InvocationId,
    memory::Shrink,
    tracker::{Event, ExitStatus, Kinship, Pid, ServiceId},
};

/// Known children of adoptd and how to find new ones.
#[derive(Debug, Default)]
pub struct Procfs {
    children: HashSet<Pid>,
    /// The last look found a zombie child, not yet reaped.
    saw_zombie: bool,
    /// Scratch buffer for reading `children` files.
    buffer: String,
    /// Which run a newcomer that left its session comes from.
    runs: Runs,
    /// What `/proc` said of children adoptd never saw alive, read while
    /// they were zombies, until the reap is reported.
    seen_dead: HashMap<Pid, Kinship>,
}

impl Procfs {
    /// Checks that this kernel lists children in /proc.
    pub fn open() -> io::Result<Self> {
        let tid = rustix::thread::gettid().as_raw_nonzero();
        fs::metadata(format!("/proc/self/task/{tid}/children"))?;
        Ok(Procfs::default())
    }

    fn scan_children(&mut self, found: &mut Vec<Pid>) -> io::Result<()> {
        for task in fs::read_dir("/proc/self/task")? {
            let mut path = task?.path();
            path.push("children");
            self.buffer.clear();
            match fs::File::open(&path) {
                Ok(mut file) => {
                    io::Read::read_to_string(&mut file, &mut self.buffer)?;
                }
                // A thread that ended between the listing and the open.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            found.extend(
                self.buffer
                    .split_ascii_whitespace()
                    .filter_map(|p| p.parse::<Pid>().ok()),
            );
        }
        Ok(())
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
            && let Some(stat) = read_stat(pid)
        {
            self.seen_dead.insert(pid, stat.kinship);
        }
    }

    fn collect(&mut self, reaped: &[(Pid, ExitStatus)], events: &mut Vec<Event>) -> io::Result<()> {
        for &(pid, _) in reaped {
            if !self.children.remove(&pid) {
                events.push(Event::Adopted {
                    pid,
                    previous_parent: None,
                    kinship: self.seen_dead.remove(&pid).unwrap_or_default(),
                });
            }
        }
        self.seen_dead.clear();
        let mut found = Vec::new();
        self.saw_zombie = false;
        self.scan_children(&mut found)?;
        for pid in found {
            if self.children.contains(&pid) {
                continue;
            }
            // A zombie is reaped in another round of this batch and
            // reported then: it must never look like a live adoptee.
            let Some(stat) = read_stat(pid) else {
                continue;
            };
            if stat.zombie {
                self.saw_zombie = true;
                continue;
            }
            self.children.insert(pid);
            let mut kinship = stat.kinship;
            let in_a_run_session = kinship
                .session
                .is_some_and(|session| self.runs.is_run_session(session));
            if !in_a_run_session {
                kinship.service = self.runs.service_named_by_environment(pid);
            }
            events.push(Event::Adopted {
                pid,
                previous_parent: None,
                kinship,
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

/// What `/proc/PID/stat` says that matters here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub zombie: bool,
    pub kinship: Kinship,
}

/// Reads `/proc/PID/stat`; `None` if the process is gone.
pub fn read_stat(pid: Pid) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Reads the parent pid from `/proc/PID/stat`; `None` if the process is gone.
pub fn read_ppid(pid: Pid) -> Option<Pid> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Parses the fields after the command name, which may itself hold spaces
/// and parentheses: state ppid pgrp session … starttime (field 22).
fn parse_stat(stat: &str) -> Option<Stat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    let zombie = matches!(*fields.first()?, "Z" | "X");
    let session = fields.get(3)?.parse().ok();
    let start_time = fields.get(19)?.parse().ok();
    Some(Stat {
        zombie,
        kinship: Kinship {
            session,
            start_time,
            ancestor: None,
            service: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name_parses() {
        let stat = "4242 (a) b (c) ) S 1 4242 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                zombie: false,
                kinship: Kinship {
                    session: Some(4240),
                    start_time: Some(987654),
                    ancestor: None,
                    service: None,
                },
            })
        );
    }

    #[test]
    fn truncated_stat_gives_nothing() {
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn zombies_are_recognised() {
        let stat = "77 (sleep) Z 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 1000 100";
        assert!(parse_stat(stat).is_some_and(|s| s.zombie));
    }

    #[test]
    fn our_own_stat_has_a_session() {
        let own = read_stat(std::process::id()).expect("our own stat");
        assert!(!own.zombie);
        assert!(own.kinship.session.is_some());
        assert!(own.kinship.start_time.is_some());
    }
}
