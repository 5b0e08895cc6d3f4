//! Thin wrappers around the few `libc` calls that `dance` needs.
//!
//! `dance` never starts a thread, so `fork` is safe to call at any point and
//! the child may carry on with arbitrary code.

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr,
};

use libc::{c_int, pid_t};

/// The result of [`fork`], seen from the side that returns.
pub enum Forked {
    /// We are the parent; the value is the child's pid.
    Parent(pid_t),
    /// We are the child.
    Child,
}

/// Forks the (single-threaded) process.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the process is single-threaded, so the child gets a consistent
    // copy of every lock and allocator state.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent(child)),
    }
}

/// Ends the process at once, without running any exit handler or flushing
/// anything: the parent side of a hop writes nothing.
pub fn exit_quietly(code: u8) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(c_int::from(code)) }
}

pub fn getpid() -> pid_t {
    // SAFETY: `getpid` cannot fail.
    unsafe { libc::getpid() }
}

pub fn getsid() -> pid_t {
    // SAFETY: `getsid(0)` only reads the calling process's session id.
    unsafe { libc::getsid(0) }
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: `setsid` has no memory-safety preconditions.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to `pid`.
pub fn kill(pid: pid_t, sig: c_int) -> io::Result<()> {
    // SAFETY: `kill` has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A set of signals.
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn empty() -> Self {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `sigemptyset` initialises the whole set.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            SigSet(set.assume_init())
        }
    }

    pub fn of(signals: &[c_int]) -> Self {
        let mut set = Self::empty();
        for &sig in signals {
            // SAFETY: the set is initialised; an invalid signal only yields
            // EINVAL, and callers pass valid constants.
            unsafe { libc::sigaddset(&mut set.0, sig) };
        }
        set
    }

    /// Applies `how` (`SIG_BLOCK`, `SIG_UNBLOCK`, `SIG_SETMASK`) to the
    /// signal mask.
    pub fn apply(&self, how: c_int) -> io::Result<()> {
        // SAFETY: the set is initialised; the old mask is not asked for.
        if unsafe { libc::sigprocmask(how, &self.0, ptr::null_mut()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for one of the (blocked) signals in the set and returns it.
    pub fn wait(&self) -> io::Result<c_int> {
        loop {
            // SAFETY: the set is initialised; no siginfo is asked for.
            match unsafe { libc::sigwaitinfo(&self.0, ptr::null_mut()) } {
                -1 => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
                sig => return Ok(sig),
            }
        }
    }
}

/// Sets the disposition of `sig` back to its default action.
fn default_action(sig: c_int) {
    // SAFETY: `SIG_DFL` installs no handler. Signals that cannot be changed
    // (KILL, STOP, those reserved by the C library) fail harmlessly.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// Restores the default action of every signal, then empties the signal
/// mask (a supervisor may have left signals ignored or blocked).
pub fn reset_signals() -> io::Result<()> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            default_action(sig);
        }
    }
    SigSet::empty().apply(libc::SIG_SETMASK)
}

/// Kills the process with `sig`, default action restored and core dumps
/// disabled. `sig` must be one whose default action ends the process; if it
/// somehow does not, the process exits with 128 + `sig`.
pub fn die_by_signal(sig: c_int) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let mut limit = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: `getrlimit` fills `limit` when it returns 0; `setrlimit` only
    // reads its argument. Lowering the soft limit is always allowed.
    unsafe {
        let limit = if libc::getrlimit(libc::RLIMIT_CORE, limit.as_mut_ptr()) == 0 {
            libc::rlimit {
                rlim_cur: 0,
                ..limit.assume_init()
            }
        } else {
            no_core
        };
        libc::setrlimit(libc::RLIMIT_CORE, &limit);
    }
    default_action(sig);
    // Errors are moot: the fallback below still ends the process.
    let _ = SigSet::of(&[sig]).apply(libc::SIG_UNBLOCK);
    let _ = kill(getpid(), sig);
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(128 + sig) }
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(c_int),
    Signaled(c_int),
}

impl Ended {
    /// The status a shell would report: the exit code, or 128 + signal.
    pub fn shell_status(self) -> c_int {
        match self {
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => 128 + sig,
        }
    }
}

fn ended(status: c_int) -> Ended {
    if libc::WIFSIGNALED(status) {
        Ended::Signaled(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    }
}

/// Waits until the child `pid` ends and reaps it.
pub fn wait_for(pid: pid_t) -> io::Result<Ended> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid place for the status.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(ended(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Waits until the child `pid` has ended, leaving it unreaped (a zombie
/// that goes to the subreaper with its status when this process ends).
pub fn wait_until_ended(pid: pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid place for the result.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reaps the child `pid` if it has ended; returns whether it is gone
/// (reaped now, or not our child any more).
pub fn reap_if_ended(pid: pid_t) -> bool {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid place for the status.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 => return false,
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return true,
        }
    }
}

/// Waits for signals forever, with an empty signal mask, so that the first
/// signal whose default action ends the process ends it.
pub fn park() -> ! {
    // An error leaves the inherited mask, which is empty anyway.
    let _ = SigSet::empty().apply(libc::SIG_SETMASK);
    loop {
        // SAFETY: `pause` has no preconditions.
        unsafe { libc::pause() };
    }
}

/// A pipe: its read end, then its write end. Neither is close-on-exec
/// (nothing in `dance` execs); children inherit both.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe` writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `pipe` succeeded, so both are new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads `fd` until end of file, discarding what it reads.
pub fn read_to_end(fd: &OwnedFd) -> io::Result<()> {
    let mut buffer = [0u8; 64];
    loop {
        // SAFETY: the buffer is valid for its length.
        match unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) } {
            0 => return Ok(()),
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            -1 => return Err(io::Error::last_os_error()),
            _ => {}
        }
    }
}
