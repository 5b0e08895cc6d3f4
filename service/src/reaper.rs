//! The reaper: the one place that collects dead children.
//!
//! The signals adoptd cares about (SIGCHLD and the shutdown signals) are
//! blocked in every thread before the runtime starts, by [`block_signals`]
//! in `main`, and read from one signalfd. A SIGCHLD is only a wake-up:
//! several deaths may share one, so [`reap_all`] loops `waitid(P_ALL,
//! WEXITED | WNOHANG)` until nothing is left. Nothing else in adoptd may
//! wait for children (no `tokio::process`, no `Child::wait`): a second
//! reaper would steal exits from this one.
//!
//! On a kernel with `waitid(WADOPTED)` (kernel-patch/), once the `adoptsig`
//! source has called [`collect_adoptions`], the same loop also collects
//! the adoption records of adoptd's children: (adopted pid, previous
//! parent). They are kept until the next [`Signals::drain`], which hands
//! them over in [`Wakeup::adoptions`], so they reach the source in the same
//! batch as the exits they were collected with, before the tracker decides.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use nix::{
    errno::Errno,
    sys::{
        signal::{SigSet, SigmaskHow, Signal, pthread_sigmask},
        signalfd::{SfdFlags, SignalFd},
    },
};

use crate::tracker::{ExitStatus, Pid};

/// The signals adoptd reads from its signalfd instead of handling them.
/// The mask is kept across a re-exec (execve keeps it), so a signal that
/// arrives meanwhile waits for the new image's signalfd.
pub const HANDLED: [Signal; 5] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    REEXEC_SIGNAL,
];

/// The signal that makes adoptd re-execute itself (`adoptctl
/// daemon-reexec` without a bus; see [`crate::reexec`]). SIGUSR2, as
/// nothing else in adoptd uses it: SIGTERM stops, SIGHUP reloads.
pub const REEXEC_SIGNAL: Signal = Signal::SIGUSR2;

/// `waitid` option of kernel-patch/: also report children reparented to
/// the caller.
pub const WADOPTED: libc::c_int = 0x10;

/// `si_code` of an adoption record (kernel-patch/, `CLD_ADOPTED`).
pub const CLD_ADOPTED: i32 = 7;

/// Whether [`reap_all`] asks for adoption records too.
static COLLECT_ADOPTIONS: AtomicBool = AtomicBool::new(false);

/// Adoption records collected by [`reap_all`], until [`Signals::drain`].
static ADOPTIONS: Mutex<Vec<(Pid, Pid)>> = Mutex::new(Vec::new());

/// From now on, [`reap_all`] also collects adoption records
/// (`waitid(WADOPTED)`). Only for a kernel that accepts the option: the
/// `adoptsig` source probes it first.
pub fn collect_adoptions() {
    COLLECT_ADOPTIONS.store(true, Ordering::Relaxed);
}

fn take_adoptions() -> Vec<(Pid, Pid)> {
    // A panic while the lock was held cannot leave the Vec half-written.
    let mut adoptions = ADOPTIONS.lock().unwrap_or_else(PoisonError::into_inner);
    std::mem::take(&mut *adoptions)
}

/// Blocks the signals adoptd reads from its signalfd, for the calling
/// thread and every thread it starts afterwards. Call it in `main` before
/// the runtime starts.
pub fn block_signals() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None)
}

fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    set
}

/// What one read of the signalfd said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wakeup {
    /// A child may have died (or was adopted and died).
    pub children: bool,
    /// SIGTERM or SIGINT: stop everything and exit.
    pub shutdown: bool,
    /// SIGHUP: re-read the configuration.
    pub reload: bool,
    /// SIGUSR2 ([`REEXEC_SIGNAL`]): re-execute adoptd.
    pub reexec: bool,
    /// Adoption records (adopted pid, previous parent) that [`reap_all`]
    /// collected since the last read, in kernel order.
    pub adoptions: Vec<(Pid, Pid)>,
    /// Adoptions may have gone unreported: rescan the children. The
    /// kernel keeps every record until it is collected, so this is never
    /// set by the kernel; it stays for the sources' interface.
    pub adoptions_lost: bool,
}

impl Wakeup {
    /// Whether a signal read asks the supervisor for something it has not
    /// done yet. A signal once read never wakes anything again, so the
    /// supervisor must not wait while this holds.
    pub fn asks_for_work(&self) -> bool {
        self.children || self.shutdown || self.reload || self.reexec
    }

    /// Adds what a later read said.
    pub fn merge(&mut self, later: Wakeup) {
        self.children |= later.children;
        self.shutdown |= later.shutdown;
        self.reload |= later.reload;
        self.reexec |= later.reexec;
        self.adoptions.extend(later.adoptions);
        self.adoptions_lost |= later.adoptions_lost;
    }
}

/// The signalfd the handled signals arrive on.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Opens the signalfd (non-blocking, close-on-exec).
    pub fn open() -> nix::Result<Self> {
        let fd = SignalFd::with_flags(
            &handled_set(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )?;
        Ok(Signals { fd })
    }

    /// Reads every pending signal without blocking, and takes the adoption
    /// records [`reap_all`] collected.
    pub fn drain(&mut self) -> nix::Result<Wakeup> {
        let mut wakeup = Wakeup {
            adoptions: take_adoptions(),
            ..Wakeup::default()
        };
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => wakeup.children = true,
                    Ok(Signal::SIGTERM | Signal::SIGINT) => wakeup.shutdown = true,
                    Ok(Signal::SIGHUP) => wakeup.reload = true,
                    Ok(REEXEC_SIGNAL) => wakeup.reexec = true,
                    _ => {}
                },
                Ok(None) => return Ok(wakeup),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }
}

/// As [`reap_all`], but lets `look` see each child while it is still a
/// zombie, just before it is reaped: its `/proc` entry (session, start
/// time) is still there then, and gone after. For a source that reads
/// `/proc` (procfs); it collects no adoption records.
pub fn reap_all_looking(reaped: &mut Vec<(Pid, ExitStatus)>, look: &mut dyn FnMut(Pid)) {
    while let Some((pid, _)) = wait_one(libc::P_ALL, 0, libc::WNOWAIT) {
        look(pid);
        match wait_one(libc::P_PID, pid as libc::id_t, 0) {
            Some(reaped_now) => reaped.push(reaped_now),
            None => return,
        }
    }
}

/// One `waitid` for an exited child, without blocking; `extra` adds flags
/// (`WNOWAIT` to look without reaping). `None` when no child has exited.
fn wait_one(
    idtype: libc::idtype_t,
    id: libc::id_t,
    extra: libc::c_int,
) -> Option<(Pid, ExitStatus)> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; the kernel fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t.
        let rc =
            unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | libc::WNOHANG | extra) };
        if rc != 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return None; // ECHILD: no children at all.
        }
        // SAFETY: waitid succeeded, so the SIGCHLD fields are initialised
        // (si_pid is 0 when no child had exited).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid <= 0 {
            return None;
        }
        let status = match info.si_code {
            libc::CLD_EXITED => ExitStatus::Code(status),
            _ => ExitStatus::Signal(status),
        };
        return Some((pid.unsigned_abs(), status));
    }
}

/// Reaps every child that has exited, in the order the kernel gives them,
/// and after [`collect_adoptions`] collects the adoption records too (a
/// child adopted as a zombie gives its record before its exit).
///
/// Uses `waitid` directly rather than nix's wrapper, which refuses statuses
/// it has no `Signal` variant for (a child killed by a real-time signal
/// would otherwise stay a zombie for ever).
pub fn reap_all(reaped: &mut Vec<(Pid, ExitStatus)>) {
    let mut options = libc::WEXITED | libc::WNOHANG;
    if COLLECT_ADOPTIONS.load(Ordering::Relaxed) {
        options |= WADOPTED;
    }
    let mut adoptions = Vec::new();
    loop {
        // SAFETY: an all-zero siginfo_t is valid; the kernel fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t.
        let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, options) };
        if rc != 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            break; // ECHILD: no children at all.
        }
        // SAFETY: waitid succeeded, so the SIGCHLD fields are initialised
        // (si_pid is 0 when no child had exited).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid <= 0 {
            break;
        }
        let status = match info.si_code {
            // si_status is the previous parent's pid.
            CLD_ADOPTED => {
                adoptions.push((pid.unsigned_abs(), status.unsigned_abs()));
                continue;
            }
            libc::CLD_EXITED => ExitStatus::Code(status),
            _ => ExitStatus::Signal(status),
        };
        reaped.push((pid.unsigned_abs(), status));
    }
    if !adoptions.is_empty() {
        ADOPTIONS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&mut adoptions);
    }
}
