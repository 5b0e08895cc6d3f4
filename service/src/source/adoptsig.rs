//! The `adoptsig` source: the kernel says who was adopted, and from whom.
//!
//! On a kernel with the `PR_SET_ADOPTSIG` patch (kernel-patch/), adoptd asks
//! for a queued real-time signal ([`reaper::adopt_signal`]) for each process
//! reparented to it. Each notice carries the adopted pid and the pid of its
//! previous parent, in adoptd's pid namespace, and arrives on the same
//! signalfd as SIGCHLD. The kernel queues every notice caused by a death
//! before the dead process becomes waitable, so the supervisor reaps first
//! and then reads the signalfd dry, and hands the notices over before the
//! tracker decides.
//!
//! When the kernel could not queue a notice (the signal queue limit), it
//! sends one marker instead; the source then looks at adoptd's children in
//! /proc, as the `procfs` source does, for adoptees it was not told of.
//!
//! [`reaper::adopt_signal`]: crate::reaper::adopt_signal

use std::{collections::HashSet, io};

use super::{AdoptionSource, SourceKind, procfs};
use crate::{
    memory::Shrink,
    reaper,
    spawn::InvocationId,
    tracker::{Event, ExitStatus, Kinship, Pid, ServiceId},
};

const PR_SET_ADOPTSIG: libc::c_int = 0x4144_4f50;
const PR_GET_ADOPTSIG: libc::c_int = 0x4144_4f51;

/// Adoption notices and adoptd's known children.
#[derive(Debug)]
pub struct Adoptsig {
    children: HashSet<Pid>,
    notices: Vec<(Pid, Pid)>,
    lost: bool,
    /// Looks at the children after lost notices.
    rescan: procfs::Procfs,
}

impl Adoptsig {
    /// Asks the kernel for adoption notices; fails on a kernel without the
    /// patch. The signal must already be blocked (see `reaper`).
    pub fn open() -> io::Result<Self> {
        let mut current: libc::c_int = 0;
        // SAFETY: PR_GET_ADOPTSIG writes one int through the pointer.
        let rc = unsafe { libc::prctl(PR_GET_ADOPTSIG, &raw mut current, 0, 0, 0) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::EINVAL) => io::Error::other("this kernel has no PR_SET_ADOPTSIG"),
                _ => error,
            });
        }
        let signal = reaper::adopt_signal();
        // SAFETY: PR_SET_ADOPTSIG takes a signal number and zeros.
        let rc = unsafe { libc::prctl(PR_SET_ADOPTSIG, signal as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Adoptsig {
            children: HashSet::new(),
            notices: Vec::new(),
            lost: false,
            rescan: procfs::Procfs::open()?,
        })
    }
}

impl AdoptionSource for Adoptsig {
    fn kind(&self) -> SourceKind {
        SourceKind::Adoptsig
    }

    fn spawned(&mut self, pid: Pid, service: ServiceId, invocation: InvocationId) {
        self.children.insert(pid);
        self.rescan.spawned(pid, service, invocation);
    }

    fn shrink_if_sparse(&mut self) -> bool {
        self.children.shrink_if_sparse()
            | self.notices.shrink_if_sparse()
            | self.rescan.shrink_if_sparse()
    }

    fn adoption_notices(&mut self, notices: &[(Pid, Pid)], lost: bool) {
        self.notices.extend_from_slice(notices);
        self.lost |= lost;
    }

    fn collect(&mut self, reaped: &[(Pid, ExitStatus)], events: &mut Vec<Event>) -> io::Result<()> {
        for (pid, previous_parent) in self.notices.drain(..) {
            self.children.insert(pid);
            self.rescan.know(pid);
            let kinship = procfs::read_stat(pid)
                .map(|s| s.kinship)
                .unwrap_or_default();
            events.push(Event::Adopted {
                pid,
                previous_parent: Some(previous_parent),
                kinship,
            });
        }
        if std::mem::take(&mut self.lost) {
            tracing::warn!("the kernel lost adoption notices; looking at adoptd's children");
            let mut found = Vec::new();
            self.rescan.collect(&[], &mut found)?;
            for event in found {
                if let Event::Adopted { pid, .. } = event {
                    self.children.insert(pid);
                }
                events.push(event);
            }
        }
        for &(pid, _) in reaped {
            if !self.children.remove(&pid) {
                // Adopted and reaped without a notice: only after a loss.
                events.push(Event::Adopted {
                    pid,
                    previous_parent: None,
                    kinship: Kinship::default(),
                });
            }
        }
        // Keep the rescan's view of the children in step.
        for &(pid, _) in reaped {
            self.rescan.forget(pid);
        }
        Ok(())
    }
}
