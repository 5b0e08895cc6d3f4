//! The new process between its creation and its `exec`: a vfork-like
//! clone that shares adoptd's memory and its descriptor table, so that
//! starting a program costs the same whatever adoptd's size (no page
//! tables and no table of thousands of descriptors are copied), and the
//! supervisor's thread is held only until the child has exec'd or failed.
//!
//! The descriptor table: three descriptors of adoptd's, reserved once as
//! `/dev/null` (the [`Slots`], the lowest free numbers from 3 up), are
//! pointed at what the child's 0, 1 and 2 will be just before the clone
//! and back at `/dev/null` right after it. The child's first step,
//! `close_range(above the slots, ~0, CLOSE_RANGE_UNSHARE)`, gives it a
//! table of its own holding only the descriptors below (0 to 2 and the
//! slots); it then moves the slots onto 0, 1 and 2 and closes the rest.
//! Where that call is missing (kernels before 5.9), or no slots could be
//! reserved, the child copies the whole table as fork would.
//!
//! Spawns may run at once on several threads (`super::spawn_each`), each
//! with a set of slots of its own. A child's small table may then hold
//! another spawn's slots, if they lie below its own; it closes them with
//! the rest before its exec, so no program inherits another's pipes.
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
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
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

/// What the child is given besides the plan.
struct Child<'a> {
    plan: &'a Plan<'a>,
    /// The slots holding the child's 0, 1 and 2, and the first
    /// descriptor above them; None when the table is not shared.
    slots: Option<([RawFd; 3], libc::c_uint)>,
}

/// Three descriptors reserved for the child's standard ones (see the
/// module header), and the `/dev/null` they are reset to.
struct Slots {
    fds: [OwnedFd; 3],
    null: OwnedFd,
}

/// The sets of slots not in use by a spawn, reserved at the first
/// spawn, while the lowest numbers are still free (a set high in the table
/// would make each child copy the table up to it). Spawns that run at
/// once ([`super::spawn_each`]) each take a set of their own.
static SLOTS: Mutex<Vec<Slots>> = Mutex::new(Vec::new());

/// Whether the first sets were reserved (a set given up after a failure
/// is not replaced at a higher number).
static RESERVED: AtomicBool = AtomicBool::new(false);

impl Slots {
    fn reserve() -> io::Result<Self> {
        let null = OwnedFd::from(std::fs::File::open("/dev/null")?);
        let slot = || -> io::Result<OwnedFd> {
            // The lowest free number from 3 up, close-on-exec.
            // SAFETY: fcntl with integer arguments; a descriptor it
            // returns is new and ours alone.
            let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: as above.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(Slots {
            fds: [slot()?, slot()?, slot()?],
            null,
        })
    }

    /// Points slot `index` at `fd` (close-on-exec in adoptd).
    fn point(&self, index: usize, fd: RawFd) -> io::Result<()> {
        // SAFETY: dup3 onto a descriptor this type owns.
        let rc = unsafe { libc::dup3(fd, self.fds[index].as_raw_fd(), libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The first descriptor above every slot.
    fn above(&self) -> libc::c_uint {
        let highest = self.fds.iter().map(AsRawFd::as_raw_fd).max().unwrap_or(2);
        libc::c_uint::try_from(highest).map_or(libc::c_uint::MAX, |h| h.saturating_add(1))
    }
}

/// Starts a process that carries out `plan` and execs. Returns its pid
/// once it has exec'd, or the error of the step that failed, once the
/// failed child is reaped. Threads may call it at once, up to
/// [`super::MOST_AT_ONCE`] of them with a set of slots each.
pub(super) fn clone_and_exec(plan: &Plan<'_>) -> io::Result<Pid> {
    debug_assert!(plan.argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(plan.envp.last().is_some_and(|p| p.is_null()));
    let slots = take_slots();
    let mut child = Child { plan, slots: None };
    if let Some(slots) = &slots {
        let pointed = plan
            .stdio
            .iter()
            .enumerate()
            .all(|(index, fd)| fd.is_none_or(|fd| slots.point(index, fd).is_ok()));
        if pointed {
            let fds = [0, 1, 2].map(|index| slots.fds[index].as_raw_fd());
            child.slots = Some((fds, slots.above()));
        }
    }
    let result = clone_child(&child);
    if let Some(slots) = slots {
        // The slots must not keep a pipe's write end open in adoptd (its
        // reader would never see the end): back to /dev/null, or given up.
        let null = slots.null.as_raw_fd();
        if (0..3).all(|index| slots.point(index, null).is_ok()) {
            lock_slots().push(slots);
        }
    }
    result
}

/// A set of slots for one spawn: a free one, reserving the first sets
/// at the first call; `None` when none is left.
fn take_slots() -> Option<Slots> {
    let mut free = lock_slots();
    if !RESERVED.swap(true, Ordering::AcqRel) {
        free.extend((0..super::MOST_AT_ONCE).map_while(|_| Slots::reserve().ok()));
    }
    free.pop()
}

fn lock_slots() -> std::sync::MutexGuard<'static, Vec<Slots>> {
    SLOTS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn clone_child(child: &Child<'_>) -> io::Result<Pid> {
    let plan = child.plan;
    let shared_files = if child.slots.is_some() {
        libc::CLONE_FILES
    } else {
        0
    };
    // Not zeroed: only the child writes to it, and nothing here reads it.
    let mut stack: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(STACK_SIZE);
    // The stack grows down on every architecture Linux runs adoptd on;
    // the ABI wants its top 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    let all = full_signal_set();
    let mut previous = empty_signal_set();
    // The raw call, which blocks the C library's own signals too.
    set_signal_mask(&all, Some(&mut previous));
    // SAFETY: `child_main` only reads `child`, which outlives the call:
    // CLONE_VFORK suspends this thread until the child has exec'd or
    // exited, so neither `child` nor `stack` is dropped or touched while
    // the child runs on them. The child makes raw system calls only (see
    // the module header), and leaves the shared descriptor table first.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | shared_files | libc::SIGCHLD,
            std::ptr::from_ref(child).cast_mut().cast(),
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
extern "C" fn child_main(child: *mut c_void) -> c_int {
    // SAFETY: the pointer is the parent's `&Child`, alive until the exec
    // (see `clone_child`).
    let child = unsafe { &*child.cast_const().cast::<Child<'_>>() };
    let plan = child.plan;
    let errno = match run(child) {
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

fn run(child: &Child<'_>) -> Result<Never, i32> {
    let plan = child.plan;
    if let Some((_, above)) = child.slots {
        leave_shared_descriptors(above)?;
    }
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
        // In a table of its own, the slot holds what `source` is.
        let source = child.slots.map_or(source, |(slots, _)| slots[target]);
        if source == target as RawFd {
            // Already in place: only the close-on-exec flag must go.
            // SAFETY: fcntl with integer arguments.
            check(unsafe { libc::syscall(libc::SYS_fcntl, source, libc::F_SETFD, 0) })?;
        } else {
            // SAFETY: dup3 with integer arguments.
            check(unsafe { libc::syscall(libc::SYS_dup3, source, target, 0) })?;
        }
    }
    if child.slots.is_some() {
        // The slots and whatever else lay below them: the table is the
        // child's alone, and small.
        // SAFETY: close_range with integer arguments.
        check(unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) })?;
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

/// Leaves the descriptor table shared with adoptd for one of the child's
/// own holding only the descriptors below `above`: nothing the child
/// does after this touches adoptd's. Where the kernel lacks
/// CLOSE_RANGE_UNSHARE, the whole table is copied instead.
fn leave_shared_descriptors(above: libc::c_uint) -> Result<(), i32> {
    const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;
    // SAFETY: close_range with integer arguments; with UNSHARE it acts on
    // the child's new table only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            above,
            libc::c_uint::MAX,
            CLOSE_RANGE_UNSHARE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: unshare with a flag.
    check(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) })
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
