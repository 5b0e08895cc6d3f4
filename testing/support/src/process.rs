//! Processes seen from outside: pidfds, trees, liveness, signals.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use crate::TIMEOUT;

/// A process found in a tree, held by pidfd so a kill never reaches a
/// recycled pid.
pub struct Held(Pidfd);

impl Held {
    /// SIGKILL, if it still lives.
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                std::os::fd::AsRawFd::as_raw_fd(&(self.0).0),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live descendant of `pid`, held by pidfd.
pub fn descendants(pid: u32) -> Vec<Held> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for (child, zombie) in children_of(parent) {
            if zombie {
                continue;
            }
            // Held only if still the child found: the pid was not reused
            // between the listing and the open.
            if let Some(fd) = Pidfd::open(child)
                && parent_of(child) == Some(parent)
            {
                found.push(Held(fd));
            }
            queue.push(child);
        }
        if found.len() > 100_000 {
            break;
        }
    }
    found
}

/// Sends a signal by pid: only for processes the test itself knows are
/// alive (its own children, or pids just reported).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A pidfd, to wait for a process's end without polling.
pub struct Pidfd(OwnedFd);

impl Pidfd {
    pub fn open(pid: u32) -> Option<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as i32, 0) };
        // SAFETY: a non-negative result is a new descriptor we own.
        (fd >= 0).then(|| Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// True once the process has exited (is a zombie or gone).
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, millis) };
        n == 1
    }
}

/// Asserts that the process ends within the timeout (or is gone already).
pub fn assert_ends(pid: u32, what: &str) {
    if let Some(pidfd) = Pidfd::open(pid) {
        assert!(
            pidfd.wait_exit(TIMEOUT),
            "{what} (pid {pid}) is still running"
        );
    }
}

/// True if the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The children of `pid` (all its threads'), and whether each is a zombie.
pub fn children_of(pid: u32) -> Vec<(u32, bool)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in text.split_whitespace().filter_map(|p| p.parse().ok()) {
            found.push((child, !is_alive(child)));
        }
    }
    found
}
