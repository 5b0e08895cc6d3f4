//! The new process between its creation and its `exec`: a vfork-like
//! clone that shares adoptd's memory, so that starting a program costs
//! the same whatever adoptd's size (no page tables are copied), and the
//! supervisor's thread is held only until the child has exec'd or failed.
//!
//! Invariants of the child, which runs on adoptd's memory while the
//! cloning thread is suspended (`CLONE_VFORK`): it reads only the
//! [`Plan`] prepared before the clone, allocates nothing, takes no lock,
//! and makes raw system calls only (the C library's wrappers of `setuid`
//! and friends would act on adoptd's threads). Every signal is blocked
//! from the clone until the last step before `exec`, and every handler is
//! reset to the default first, so no handler of adoptd's ever runs in it.
//! If a step fails, the child writes the error number into the plan and
//! exits with [`crate::tracker::EXIT_CODE_EXEC_FAILED`]; the parent reads
//! it once it is resumed, which the kernel does only after the child's
//! exec or exit.

use std::{
    ffi::{CStr, c_char, c_int, c_long, c_void},
    io,
    os::fd::RawFd,
    sync::atomic::{AtomicI32, Ordering},
};

use crate::tracker::{EXIT_CODE_EXEC_FAILED, Pid};

/// Everything the child does, prepared (and owned) by the parent.
pub(super) struct Plan<'a> {
    pub program: &'a CStr,
    /// Null-terminated.
    pub argv: &'a [*const c_char],
    /// Null-terminated.
    pub envp: &'a [*const c_char],
    /// Descriptors that become the program's 0, 1 and 2; `None` keeps
    /// adoptd's own.
    pub stdio: [Option<RawFd>; 3],
    pub descriptor_limit: Option<libc::rlimit64>,
    pub chroot: Option<&'a CStr>,
    pub working_directory: &'a CStr,
    pub gid: Option<libc::gid_t>,
    pub groups: &'a [libc::gid_t],
    pub uid: Option<libc::uid_t>,
    /// The error number of the step that failed; 0 while none has.
    pub error: AtomicI32,
}

/// Room for the child's few frames of system calls.
const STACK_SIZE: usize = 64 * 1024;

/// Starts a process that carries out `plan` and execs. Returns its pid
/// once it has exec'd, or the error of the step that failed, once the
/// failed child is reaped.
pub(super) fn clone_and_exec(plan: &Plan<'_>) -> io::Result<Pid> {
    debug_assert!(plan.argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(plan.envp.last().is_some_and(|p| p.is_null()));
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down on every architecture Linux runs adoptd on;
    // the ABI wants its top 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    let all = full_signal_set();
    let mut previous = empty_signal_set();
    // The raw call, which blocks the C library's own signals too.
    set_signal_mask(&all, Some(&mut previous));
    // SAFETY: `child_main` only reads `plan`, which outlives the call:
    // CLONE_VFORK suspends this thread until the child has exec'd or
    // exited, so neither `plan` nor `stack` is dropped or touched while
    // the child runs on them. The child makes raw system calls only (see
    // the module header).
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(plan).cast_mut().cast(),
        )
    };
    let clone_error = io::Error::last_os_error();
    set_signal_mask(&previous, None);
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    match plan.error.load(Ordering::Acquire) {
        0 => Ok(pid as Pid),
        errno => {
            // The child exits right after it said why: reap it here, as
            // the standard library does, so the reaper never sees it as
            // an orphan. No other thread of adoptd's reaps.
            let mut status = 0;
            // SAFETY: waitpid on our own unreaped child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child: each step of the module header, then `exec`.
extern "C" fn child_main(plan: *mut c_void) -> c_int {
    // SAFETY: the pointer is the parent's `&Plan`, alive until the exec
    // (see `clone_and_exec`).
    let plan = unsafe { &*plan.cast_const().cast::<Plan<'_>>() };
    let errno = match run(plan) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    plan.error.store(errno.max(1), Ordering::Release);
    // SAFETY: ends this process (its one thread) at once; nothing of
    // adoptd's runs on the way out.
    unsafe { libc::syscall(libc::SYS_exit, EXIT_CODE_EXEC_FAILED) };
    EXIT_CODE_EXEC_FAILED
}

enum Never {}

fn run(plan: &Plan<'_>) -> Result<Never, i32> {
    default_signal_actions();
    if let Some(limit) = &plan.descriptor_limit {
        // SAFETY: prlimit64 on this process, reading `limit`.
        check(unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_NOFILE,
                std::ptr::from_ref(limit),
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        })?;
    }
    // SAFETY: setsid takes no argument.
    check(unsafe { libc::syscall(libc::SYS_setsid) })?;
    if let Some(root) = plan.chroot {
        // SAFETY: a NUL-terminated path owned by the parent.
        check(unsafe { libc::syscall(libc::SYS_chroot, root.as_ptr()) })?;
    }
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_chdir, plan.working_directory.as_ptr()) })?;
    if let Some(gid) = plan.gid {
        // SAFETY: a slice of gids owned by the parent, with its length.
        check(unsafe {
            libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr())
        })?;
        // SAFETY: an integer argument.
        check(unsafe { libc::syscall(libc::SYS_setgid, gid) })?;
    }
    if let Some(uid) = plan.uid {
        // SAFETY: an integer argument.
        check(unsafe { libc::syscall(libc::SYS_setuid, uid) })?;
    }
    for (target, source) in plan.stdio.iter().enumerate() {
        let Some(source) = *source else { continue };
        if source == target as RawFd {
            // Already in place: only the close-on-exec flag must go.
            // SAFETY: fcntl with integer arguments.
            check(unsafe { libc::syscall(libc::SYS_fcntl, source, libc::F_SETFD, 0) })?;
        } else {
            // SAFETY: dup3 with integer arguments.
            check(unsafe { libc::syscall(libc::SYS_dup3, source, target, 0) })?;
        }
    }
    close_other_descriptors();
    // A blocked mask survives exec: the program starts with none.
    check(set_signal_mask(&empty_signal_set(), None))?;
    // SAFETY: NUL-terminated program path and null-terminated arrays of
    // NUL-terminated strings, all owned by the parent.
    check(unsafe {
        libc::syscall(
            libc::SYS_execve,
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        )
    })?;
    // execve returns only on failure.
    Err(libc::EINVAL)
}

/// A raw system call's result: its error number on failure.
fn check(rc: c_long) -> Result<(), i32> {
    if rc == -1 {
        // `syscall` keeps the error in errno, which in this child is the
        // suspended parent thread's, unread by it until we are gone.
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    } else {
        Ok(())
    }
}

/// Gives every signal its default action: an ignored signal stays
/// ignored across exec (the Rust runtime ignores SIGPIPE), and a handler
/// of adoptd's must never run in the child. The raw system call, because
/// the C library refuses the signals it reserves for itself; an all-zero
/// kernel sigaction is SIG_DFL with no flags and an empty mask, whatever
/// the architecture's layout.
fn default_signal_actions() {
    let default_action = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a zeroed kernel sigaction of at least
        // the kernel's size and writes nothing (null old action).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default_action.as_ptr(),
                std::ptr::null_mut::<c_void>(),
                8usize,
            );
        }
    }
}

/// Marks every descriptor above stderr close-on-exec, so the program
/// inherits none of adoptd's. Best effort: kernels before 5.11 lack the
/// flag, and adoptd opens everything close-on-exec anyway.
fn close_other_descriptors() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes flags.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
    }
}

/// The calling thread's signal mask, by the raw system call (the C
/// library's wrapper leaves its own signals unblocked).
fn set_signal_mask(set: &libc::sigset_t, previous: Option<&mut libc::sigset_t>) -> c_long {
    let previous = previous.map_or(std::ptr::null_mut(), std::ptr::from_mut);
    // SAFETY: rt_sigprocmask reads the kernel's 8-byte sigset from the
    // start of libc's larger one and writes the previous one likewise.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            std::ptr::from_ref(set),
            previous,
            8usize,
        )
    }
}

fn full_signal_set() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the set it is given.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

fn empty_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}
