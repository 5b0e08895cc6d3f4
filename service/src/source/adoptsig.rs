//! The `adoptsig` source: the kernel says who was adopted, and from whom.
//!
//! On a kernel with the adoption patch (kernel-patch/), the kernel keeps,
//! for each process reparented to adoptd, a record in that child's wait
//! state: the pid of the parent whose exit caused the adoption. The
//! reaper's `waitid` loop collects the records with the `WADOPTED` option
//! ([`reaper::collect_adoptions`]) as (adopted pid, previous parent) pairs,
//! and the supervisor hands them to this source before the tracker decides.
//!
//! What the kernel guarantees:
//! - every adoption is recorded, at no cost that depends on anything but
//!   the child itself: no queue, so nothing is ever lost or overflows;
//! - the records caused by a death are in place before the dead process
//!   can be waited for, so one reap loop that runs until nothing is left
//!   sees an exit and all the adoptions it caused together; a child adopted
//!   as a zombie gives its record before its exit;
//! - both pids are in adoptd's pid namespace; the adopted pid stays valid
//!   until adoptd reaps it, the previous parent's only while it is itself
//!   an unreaped child of adoptd (otherwise it may be reused: the tracker
//!   only compares it with pids it already knows);
//! - a record is replaced when the child is adopted again: adoptd, as the
//!   last reaper, always hears of the adoption that made the child its own;
//! - `PR_SET_ADOPT_SIGCHLD` makes the kernel send SIGCHLD for each live
//!   adoption, so a grandchild orphaned by a process that was not adoptd's
//!   child still wakes the reaper. The setting is cleared by exec.
//!
//! A stock kernel refuses `WADOPTED` with EINVAL: [`Adoptsig::open`] fails
//! and `--tracker auto` goes on to the next source.
//!
//! [`reaper::collect_adoptions`]: crate::reaper::collect_adoptions

use std::{collections::HashSet, io};

use super::{AdoptionSource, SourceKind, clues_of};
use crate::{
    invocation::InvocationId,
    memory::Shrink,
    proc, reaper,
    tracker::{Clues, Event, ExitStatus, Pid, ServiceId},
};

/// `prctl` option of kernel-patch/: SIGCHLD for each live adoption.
const PR_SET_ADOPT_SIGCHLD: libc::c_int = 74;

/// Adoption records and adoptd's known children.
#[derive(Debug)]
pub struct Adoptsig {
    children: HashSet<Pid>,
    records: Vec<(Pid, Pid)>,
}

impl Adoptsig {
    /// Checks that the kernel keeps adoption records, asks for a SIGCHLD
    /// per adoption and turns on their collection by the reaper; fails on
    /// a kernel without the patch.
    pub fn open() -> io::Result<Self> {
        // Probe with WADOPTED alone and WNOWAIT: nothing is consumed.
        // SAFETY: an all-zero siginfo_t is valid; the kernel fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let options = reaper::WADOPTED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a valid, writable siginfo_t.
        let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, options) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ECHILD) => {} // The option is known; no children yet.
                Some(libc::EINVAL) => {
                    return Err(io::Error::other("this kernel has no waitid(WADOPTED)"));
                }
                _ => return Err(error),
            }
        }
        // Only asked once WADOPTED is known: on another kernel the number
        // may mean another option.
        // SAFETY: PR_SET_ADOPT_SIGCHLD takes 1 and zeros.
        let rc = unsafe { libc::prctl(PR_SET_ADOPT_SIGCHLD, 1 as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        reaper::collect_adoptions();
        Ok(Adoptsig {
            children: HashSet::new(),
            records: Vec::new(),
        })
    }
}

impl AdoptionSource for Adoptsig {
    fn kind(&self) -> SourceKind {
        SourceKind::Adoptsig
    }

    fn spawned(&mut self, pid: Pid, _service: ServiceId, _invocation: InvocationId) {
        self.children.insert(pid);
    }

    fn shrink_if_sparse(&mut self) -> bool {
        self.children.shrink_if_sparse() | self.records.shrink_if_sparse()
    }

    fn adoption_notices(&mut self, records: &[(Pid, Pid)], lost: bool) {
        self.records.extend_from_slice(records);
        if lost {
            // The reaper never reports a loss: the kernel keeps records.
            tracing::warn!("adoption records reported lost");
        }
    }

    fn save(&self) -> serde_json::Value {
        serde_json::json!({ "children": self.children })
    }

    /// The kernel keeps the adoption records of the exec's time in the
    /// children's wait state, so the next reap collects them: nothing is
    /// lost.
    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Saved {
            children: HashSet<Pid>,
        }
        let saved: Saved = serde_json::from_value(saved)?;
        self.children = saved.children;
        Ok(())
    }

    fn collect(&mut self, reaped: &[(Pid, ExitStatus)], events: &mut Vec<Event>) -> io::Result<()> {
        for (pid, previous_parent) in self.records.drain(..) {
            self.children.insert(pid);
            let clues = proc::read_stat(pid).map(clues_of).unwrap_or_default();
            events.push(Event::Adopted {
                pid,
                previous_parent: Some(previous_parent),
                clues,
            });
        }
        for &(pid, _) in reaped {
            if !self.children.remove(&pid) {
                // A child adoptd neither started nor was told of: one that
                // was adopted before the source was opened.
                events.push(Event::Adopted {
                    pid,
                    previous_parent: None,
                    clues: Clues::default(),
                });
            }
        }
        Ok(())
    }
}
