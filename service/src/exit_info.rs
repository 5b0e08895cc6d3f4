//! How a process that is not adoptd's child ended.
//!
//! adoptd learns the status of its own children from `waitid`. A main
//! process named by `MAINPID=` may be a worker of the service, whose parent
//! (a member) reaps it: then the exit comes through the pidfd, which turns
//! readable once the process has exited, and the status from one of two
//! places, tried in this order:
//!
//! 1. the pidfd itself, `PIDFD_GET_INFO` with `PIDFD_INFO_EXIT` (Linux
//!    6.15 and later), once its parent has reaped it;
//! 2. field 52 of `/proc/PID/stat` (`exit_code`), while it is a zombie its
//!    parent has not reaped yet; the pid cannot be reused before that reap,
//!    and the start time read with it is checked against the one adoptd
//!    knows.
//!
//! The pidfd is asked again after `/proc` in case the parent reaped in
//! between. On an older kernel whose parent reaped first, the status is
//! unknown: `None`.

use std::{
    fs,
    os::fd::{AsRawFd, OwnedFd},
};

use crate::tracker::{ExitStatus, Pid};

/// The status of the exited process behind `pidfd` (pid `pid`, started at
/// `start_time` clock ticks since boot, where known), if it can be learnt.
pub fn exit_status(pid: Pid, start_time: Option<u64>, pidfd: &OwnedFd) -> Option<ExitStatus> {
    from_pidfd(pidfd)
        .or_else(|| from_zombie(pid, start_time))
        .or_else(|| from_pidfd(pidfd))
}

/// `struct pidfd_info` of `<linux/pidfd.h>`, its first version (64 bytes):
/// the kernel fills what `mask` asks for and says in `mask` what it gave.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `PIDFD_INFO_EXIT`: the exit status, once the process has been reaped.
const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `PIDFD_GET_INFO`: `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;

fn from_pidfd(pidfd: &OwnedFd) -> Option<ExitStatus> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: the ioctl writes at most `size_of::<PidfdInfo>()` bytes (the
    // size is encoded in the request) into `info`, which lives across the
    // call; an older kernel answers ENOTTY or EINVAL and writes nothing.
    let rc = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO, &mut info) };
    (rc == 0 && info.mask & PIDFD_INFO_EXIT != 0).then(|| from_wait_status(info.exit_code))
}

fn from_zombie(pid: Pid, start_time: Option<u64>) -> Option<ExitStatus> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (zombie, started, status) = parse_zombie_stat(&stat)?;
    let same = start_time.is_none_or(|known| known == started);
    (zombie && same).then(|| from_wait_status(status))
}

/// State, start time (field 22) and exit code (field 52) of a `stat` line.
fn parse_zombie_stat(stat: &str) -> Option<(bool, u64, i32)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    // Field N of stat(5) is fields[N - 3] here: pid and comm come first.
    let zombie = matches!(*fields.first()?, "Z" | "X");
    let started = fields.get(22 - 3)?.parse().ok()?;
    let status = fields.get(52 - 3)?.parse().ok()?;
    Some((zombie, started, status))
}

/// A `wait(2)` status word as an [`ExitStatus`].
fn from_wait_status(status: i32) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn the_request_number_is_the_kernels() {
        // 0xc040ff0b in <linux/pidfd.h> for the 64-byte first version.
        assert_eq!(std::mem::size_of::<PidfdInfo>(), 64);
        assert_eq!(PIDFD_GET_INFO, 0xc040_ff0b);
    }

    #[test]
    fn a_zombie_stat_gives_its_state_start_and_status() {
        let stat = "42 (a (b) c) Z 1 42 42 0 -1 4228 0 0 0 0 0 0 0 0 20 0 1 0 777 \
                    0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 \
                    0 0 0 0 0 0 0 9";
        assert_eq!(parse_zombie_stat(stat), Some((true, 777, 9)));
        assert_eq!(parse_zombie_stat("42 (x) S 1"), None);
    }

    #[test]
    fn wait_statuses_become_codes_and_signals() {
        assert_eq!(from_wait_status(3 << 8), ExitStatus::Code(3));
        assert_eq!(from_wait_status(0), ExitStatus::Code(0));
        assert_eq!(from_wait_status(9), ExitStatus::Signal(9));
    }

    #[test]
    fn a_zombie_tells_its_status_through_proc_before_it_is_reaped() {
        let mut child = Command::new("sh")
            .args(["-c", "exit 5"])
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        let pidfd = crate::spawn::open_pidfd(pid).expect("pidfd");
        // The pidfd turns readable when the child exits; it stays a zombie
        // until the wait below.
        let mut polled = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 60,
            tv_nsec: 0,
        };
        let ready = rustix::event::poll(&mut polled, Some(&timeout)).expect("poll");
        assert_eq!(ready, 1, "sh did not exit within a minute");
        assert_eq!(from_zombie(pid, None), Some(ExitStatus::Code(5)));
        assert_eq!(child.wait().expect("wait").code(), Some(5));
    }

    #[test]
    fn a_reaped_process_tells_its_status_through_its_pidfd_on_a_recent_kernel() {
        let mut child = Command::new("sh")
            .args(["-c", "read _; exit 7"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        let pidfd = crate::spawn::open_pidfd(pid).expect("pidfd");
        drop(child.stdin.take());
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(7));
        // Before 6.15 the kernel cannot say, and says nothing.
        if let Some(known) = exit_status(pid, None, &pidfd) {
            assert_eq!(known, ExitStatus::Code(7));
        }
    }
}
