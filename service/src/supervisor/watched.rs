//! Main processes that are not adoptd's children.
//!
//! `MAINPID=` may name a worker that the service's main process forked: a
//! live descendant of the service whose parent (a member) reaps it, so its
//! exit never reaches the reaper. The supervisor accepts such a pid only
//! once it holds the process by a pidfd and has checked, after opening it,
//! that the pid still descends from a process of the sender's service with
//! the same start time: a pid that ended and was reused in between is
//! refused, never followed.
//!
//! One task per such process waits for its pidfd to turn readable. The
//! kernel reparents an exiting process's children before it wakes pidfd
//! waiters, so the batch that reports the exit sees its orphans, as for a
//! reaped child. The status comes from [`crate::exit_info`]; where the
//! kernel cannot tell it, the exit counts as clean and the log says so.
//!
//! If the worker is reparented to adoptd before it exits (its parent died
//! first), it is adoptd's child like any adoptee: the reaper collects it
//! and the task's word is ignored. If it exits while its parent lives and
//! that parent dies before reaping it, adoptd reaps a zombie it already
//! reported: that reap is dropped (see [`Supervisor::drop_reported`]).

use std::{collections::HashMap, os::fd::OwnedFd};

use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::{debug, warn};

use super::Supervisor;
use crate::{
    exit_info, proc, spawn,
    tracker::{Clues, ExitStatus, Pid, ServiceId},
};

/// The non-child main processes adoptd follows by pidfd.
#[derive(Debug)]
pub(super) struct Watched {
    /// Each one's start time (clock ticks since boot), where known.
    started: HashMap<Pid, Option<u64>>,
    /// Exits seen but not yet reported to the tracker.
    pub(super) exits: Vec<(Pid, ExitStatus)>,
    /// Reported exits of processes that were zombies then, with their start
    /// time: if adoptd inherits and reaps one, that reap is not news.
    reported_zombies: HashMap<Pid, u64>,
    /// Where the waiting tasks say that a process exited.
    sender: mpsc::UnboundedSender<Pid>,
    pub(super) receiver: mpsc::UnboundedReceiver<Pid>,
}

impl Watched {
    /// The reported zombies, for the image a re-exec starts.
    pub(super) fn reported_zombies(&self) -> Vec<(Pid, u64)> {
        self.reported_zombies
            .iter()
            .map(|(&pid, &started)| (pid, started))
            .collect()
    }

    /// Takes back, after a re-exec, the zombies whose exit the previous
    /// image reported.
    pub(super) fn restore_reported_zombies(&mut self, zombies: Vec<(Pid, u64)>) {
        self.reported_zombies.extend(zombies);
    }

    pub(super) fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Watched {
            started: HashMap::new(),
            exits: Vec::new(),
            reported_zombies: HashMap::new(),
            sender,
            receiver,
        }
    }
}

/// How far up `/proc` a descendant is looked for: deeper than any real
/// process tree, bounded whatever `/proc` says.
const MAX_DEPTH: usize = 64;

impl Supervisor {
    /// Whether `pid`, which the tracker does not know, is a live descendant
    /// of service `id`; if so, holds it by a pidfd, starts waiting for its
    /// exit, and returns what the tracker needs to make it a member.
    pub(super) fn vouch_for_descendant(&mut self, id: ServiceId, pid: Pid) -> Option<Clues> {
        if pid == std::process::id() || self.tracker.service_of(pid).is_some() {
            return None;
        }
        let before = self.descends_from(id, pid)?;
        let pidfd = spawn::open_pidfd(pid).ok()?;
        // Opened after the first look: the same process only if it still
        // descends from the service with the same start time.
        let after = self.descends_from(id, pid)?;
        if after.start_time != before.start_time {
            return None;
        }
        self.watch(pid, &pidfd, Some(after.start_time)).ok()?;
        self.pidfds.insert(pid, pidfd);
        Some(Clues {
            session: Some(after.session),
            start_time: Some(after.start_time),
            ancestor: None,
            run_of: Some(id),
            dying: false,
        })
    }

    /// Waits, on a task of its own, for the process behind `pidfd` to end.
    pub(super) fn watch(
        &mut self,
        pid: Pid,
        pidfd: &OwnedFd,
        started: Option<u64>,
    ) -> std::io::Result<()> {
        let waiter = pidfd
            .try_clone()
            .and_then(|fd| {
                // SAFETY: the AsyncFd owns the descriptor and closes it only
                // when it is dropped.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
            })
            .inspect_err(|e| {
                warn!(
                    pid,
                    "cannot wait for the end of the main process {pid}: {e}"
                )
            })?;
        let sender = self.watched.sender.clone();
        tokio::spawn(async move {
            // An error means the descriptor cannot be polled: say it ended,
            // and the supervisor checks.
            waiter.readable().await.ok();
            sender.send(pid).ok();
        });
        self.watched.started.insert(pid, started);
        Ok(())
    }

    /// After a re-exec: follows again, by the pidfds the previous image
    /// passed on, the tracked processes that are not adoptd's children.
    /// One that is gone already was reaped by its parent during the exec:
    /// its pidfd is readable, and its end is reported at once.
    pub(super) fn watch_again(&mut self) {
        let me = std::process::id();
        let foreign: Vec<(Pid, Option<u64>)> = self
            .pidfds
            .keys()
            .copied()
            .filter(|&pid| self.tracker.service_of(pid).is_some())
            .filter_map(|pid| {
                let stat = proc::read_stat(pid);
                let child = stat.is_some_and(|stat| stat.parent == me);
                let started = self
                    .tracker
                    .start_time_of(pid)
                    .or(stat.map(|stat| stat.start_time));
                (!child).then_some((pid, started))
            })
            .collect();
        for (pid, started) in foreign {
            let Some(pidfd) = self.pidfds.remove(&pid) else {
                continue;
            };
            self.watch(pid, &pidfd, started).ok();
            self.pidfds.insert(pid, pidfd);
        }
    }

    /// `pid`'s `stat` if one of its ancestors is a process of service `id`.
    fn descends_from(&self, id: ServiceId, pid: Pid) -> Option<proc::Stat> {
        let stat = proc::read_stat(pid).filter(|stat| !stat.zombie)?;
        let mut ancestor = stat.parent;
        for _ in 0..MAX_DEPTH {
            if ancestor <= 1 || ancestor == std::process::id() {
                return None;
            }
            if self.tracker.service_of(ancestor) == Some(id) {
                return Some(stat);
            }
            ancestor = proc::read_stat(ancestor)?.parent;
        }
        None
    }

    /// A watched process's pidfd turned readable: report its exit in a
    /// batch of its own, unless it is adoptd's child by now (the reaper
    /// reports it) or no longer tracked.
    pub(super) fn watched_exited(&mut self, pid: Pid) {
        let Some(started) = self.watched.started.remove(&pid) else {
            return;
        };
        let now = proc::read_stat(pid)
            .filter(|stat| started.is_none_or(|started| stat.start_time == started));
        if now.is_some_and(|stat| stat.parent == std::process::id()) {
            // Inherited before it ended: the reaper's, like any child.
            return;
        }
        let Some(pidfd) = self.pidfds.get(&pid) else {
            return;
        };
        if self.tracker.service_of(pid).is_none() {
            self.pidfds.remove(&pid);
            return;
        }
        let status = exit_info::exit_status(pid, started, pidfd).unwrap_or_else(|| {
            warn!(
                pid,
                "process {pid}, followed by its pidfd, ended but its status is unknown (its parent reaped it, and this kernel cannot tell a pidfd's exit status): counted as a clean exit"
            );
            ExitStatus::Code(0)
        });
        if let Some(stat) = now.filter(|stat| stat.zombie) {
            self.watched.reported_zombies.insert(pid, stat.start_time);
        }
        debug!(
            pid,
            ?status,
            "a main process that is not adoptd's child ended"
        );
        self.watched.exits.push((pid, status));
        self.reap_batch();
    }

    /// Drops from `reaped[from..]` the zombies whose exit was reported
    /// already, when adoptd inherited and reaped them; forgets the reported
    /// zombies that someone else reaped.
    pub(super) fn drop_reported(&mut self, reaped: &mut Vec<(Pid, ExitStatus)>, from: usize) {
        let zombies = &mut self.watched.reported_zombies;
        if zombies.is_empty() {
            return;
        }
        let mut index = from;
        while index < reaped.len() {
            if zombies.remove(&reaped[index].0).is_some() {
                reaped.remove(index);
            } else {
                index += 1;
            }
        }
        zombies.retain(|&pid, &mut started| {
            proc::read_stat(pid).is_some_and(|stat| stat.zombie && stat.start_time == started)
        });
    }
}
