//! Waiting for a file's contents, with inotify.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::Instant,
};

use crate::TIMEOUT;

/// Waits until `path` holds a pid (a daemon's pid file), watching its
/// directory with inotify; returns the pid.
pub fn wait_for_pid_file(path: &Path) -> u32 {
    wait_for_file(path, |text| {
        text.trim().parse::<u32>().ok().filter(|&pid| pid > 0)
    })
}

/// Waits until `read(contents of path)` gives something, watching the
/// file's directory with inotify, with the common timeout.
pub fn wait_for_file<T>(path: &Path, read: impl Fn(&str) -> Option<T>) -> T {
    let directory = path.parent().expect("a directory");
    // SAFETY: inotify_init1 returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(fd >= 0, "inotify_init1");
    // SAFETY: a new descriptor we own.
    let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
    let c_directory =
        std::ffi::CString::new(directory.as_os_str().as_encoded_bytes()).expect("path");
    let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_MODIFY;
    // SAFETY: a valid descriptor and C string.
    let watch = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_directory.as_ptr(), mask) };
    assert!(watch >= 0, "inotify_add_watch {}", directory.display());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // Checked after the watch exists, so no change is missed.
        if let Some(found) = std::fs::read_to_string(path)
            .ok()
            .as_deref()
            .and_then(&read)
        {
            return found;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {}", path.display());
        let mut poll = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, millis) };
        let mut buffer = [0u8; 4096];
        // SAFETY: the buffer is valid for its length; drains the events.
        unsafe {
            libc::read(
                inotify.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
    }
}
