//! Every read of `/proc` the daemon makes, in one place: a process's
//! `stat`, its children, its environment, adoptd's own capabilities and
//! pid namespace, and the kernel's descriptor ceiling.
//!
//! Each reader answers `None` (or nothing) for a process that is gone:
//! between listing a pid and opening its files the process may end, and
//! that is never an error here. Text from `/proc` is never trusted to be
//! well formed: a command name may hold spaces and parentheses, so `stat`
//! is read from its last `)`.
//!
//! The procfs source reads `stat` and `task/*/children` on its hot path
//! (once per newcomer, once per batch); [`read_stat`] allocates one
//! string and [`Children`] reuses its buffer, measured with the
//! `bench_sources` example.

use std::{
    fs,
    io::{self, Read},
    os::unix::fs::MetadataExt,
};

use crate::tracker::Pid;

/// What `/proc/PID/stat` says that adoptd uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// State `Z` or `X`: exited, not yet reaped.
    pub zombie: bool,
    /// Inside `exit`, not yet a zombie (`PF_EXITING`): its memory, and
    /// with it its environment, may already be gone, and its children
    /// are still its own until it is a zombie.
    pub exiting: bool,
    pub parent: Pid,
    pub session: Pid,
    /// Clock ticks since boot.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; `None` if the process is gone.
///
/// On the hot path of both sources (once per adoptee), so it makes three
/// system calls: open, one read into a buffer on the stack that holds any
/// `stat` line (52 numbers of at most 20 digits and a 16-byte name), and
/// close; no allocation, no size query.
pub fn read_stat(pid: Pid) -> Option<Stat> {
    let mut file = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buffer = [0u8; STAT_BUFFER];
    let length = file.read(&mut buffer).ok()?;
    // A line as long as the buffer may go on: never parsed cut.
    if length == buffer.len() {
        let mut whole = buffer.to_vec();
        file.read_to_end(&mut whole).ok()?;
        return parse_stat(&whole);
    }
    parse_stat(&buffer[..length])
}

/// The kernel's task flag for "getting shut down" (include/linux/sched.h).
const PF_EXITING: u32 = 0x0000_0004;

/// Room for a whole `/proc/PID/stat` line in one read.
const STAT_BUFFER: usize = 2048;

/// Parses the fields after the command name: state ppid pgrp session
/// tty_nr tpgid flags … starttime (field 22). The name may hold any bytes
/// but NUL, so only what follows its last `)` is read as text.
fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let close = stat.iter().rposition(|&byte| byte == b')')?;
    let after_name = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = after_name.split_ascii_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let session = fields.nth(1)?.parse().ok()?;
    let flags: u32 = fields.nth(2)?.parse().ok()?;
    let start_time = fields.nth(12)?.parse().ok()?;
    let zombie = matches!(state, "Z" | "X");
    Some(Stat {
        zombie,
        exiting: !zombie && flags & PF_EXITING != 0,
        parent,
        session,
        start_time,
    })
}

/// Reads the children of a process from `/proc/PID/task/*/children`,
/// every thread's (an orphan may be reparented to any thread of its new
/// parent), into a buffer kept between reads.
#[derive(Debug, Default)]
pub struct Children {
    buffer: String,
}

impl Children {
    /// Appends the children of `pid` (`None`: adoptd itself) to `found`.
    /// An error only when the task list itself cannot be read; a thread
    /// that ends meanwhile is skipped.
    pub fn read(&mut self, pid: Option<Pid>, found: &mut Vec<Pid>) -> io::Result<()> {
        let tasks = match pid {
            Some(pid) => fs::read_dir(format!("/proc/{pid}/task"))?,
            None => fs::read_dir("/proc/self/task")?,
        };
        for task in tasks {
            let mut path = task?.path();
            path.push("children");
            self.buffer.clear();
            match fs::File::open(&path) {
                Ok(mut file) => {
                    file.read_to_string(&mut self.buffer)?;
                }
                // A thread that ended between the listing and the open.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            found.extend(
                self.buffer
                    .split_ascii_whitespace()
                    .filter_map(|p| p.parse::<Pid>().ok()),
            );
        }
        Ok(())
    }
}

/// Whether this kernel lists children in `/proc` (CONFIG_PROC_CHILDREN).
pub fn lists_children() -> io::Result<()> {
    let tid = rustix::thread::gettid().as_raw_nonzero();
    fs::metadata(format!("/proc/self/task/{tid}/children")).map(|_| ())
}

/// `pid` and all its descendants, ascending, walking `children` files.
pub fn with_descendants(pids: &[Pid]) -> Vec<Pid> {
    let mut all: std::collections::BTreeSet<Pid> = pids.iter().copied().collect();
    let mut queue: Vec<Pid> = pids.to_vec();
    let mut children = Children::default();
    let mut found = Vec::new();
    while let Some(pid) = queue.pop() {
        found.clear();
        // A process gone meanwhile has no descendants left to list.
        let _ = children.read(Some(pid), &mut found);
        for &child in &found {
            if all.insert(child) {
                queue.push(child);
            }
        }
    }
    all.into_iter().collect()
}

/// Every pid in `/proc` with its parent, for rebuilding a process tree.
pub fn parents() -> io::Result<Vec<(Pid, Pid)>> {
    let mut all = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Pid>().ok())
        else {
            continue;
        };
        if let Some(stat) = read_stat(pid) {
            all.push((pid, stat.parent));
        }
    }
    Ok(all)
}

/// Reads at most `limit` bytes of `/proc/PID/environ` into `into`
/// (cleared first); `None` if the process is gone or hides it.
pub fn read_environment(pid: Pid, limit: u64, into: &mut Vec<u8>) -> Option<()> {
    into.clear();
    let file = fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    file.take(limit).read_to_end(into).ok().map(|_| ())
}

/// Whether CAP_NET_ADMIN is among adoptd's effective capabilities.
pub fn has_net_admin() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| net_admin_in(&status))
}

/// Whether a `/proc/PID/status` text gives CAP_NET_ADMIN in `CapEff`.
fn net_admin_in(status: &str) -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|effective| effective & (1 << CAP_NET_ADMIN) != 0)
}

/// Whether adoptd runs in the kernel's own pid namespace, which has a fixed
/// inode number (PROC_PID_INIT_INO); a container's init runs in another.
pub fn in_initial_pid_namespace() -> bool {
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == PROC_PID_INIT_INO)
}

/// The kernel's ceiling on a process's descriptors (`fs.nr_open`).
pub fn nr_open() -> Option<u64> {
    fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name_parses() {
        let stat = b"4242 (a) b (c) ) S 1 4242 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                zombie: false,
                exiting: false,
                parent: 1,
                session: 4240,
                start_time: 987654,
            })
        );
    }

    #[test]
    fn stat_with_a_command_name_that_is_not_utf8_parses() {
        // prctl(PR_SET_NAME) takes any bytes: the process is there all
        // the same, and must not be taken for gone.
        let stat = b"4242 (\xff\xfe) S 1 4242 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_stat(stat).map(|s| s.session), Some(4240));
    }

    #[test]
    fn truncated_stat_gives_nothing() {
        assert_eq!(parse_stat(b"12 (x) S 1"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn zombies_are_recognised() {
        let stat = b"77 (sleep) Z 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 1000 100";
        assert!(parse_stat(stat).is_some_and(|s| s.zombie));
    }

    #[test]
    fn a_process_inside_exit_is_told_from_a_zombie() {
        // flags 4194564 = PF_EXITING | PF_RANDOMIZE.
        let exiting = b"77 (sleep) R 1 77 77 0 -1 4194564 100 0 0 0 1 2 0 0 20 0 1 0 5 1000 100";
        assert!(parse_stat(exiting).is_some_and(|s| s.exiting && !s.zombie));
        let dead = b"77 (sleep) Z 1 77 77 0 -1 4194564 100 0 0 0 1 2 0 0 20 0 1 0 5 1000 100";
        assert!(parse_stat(dead).is_some_and(|s| s.zombie && !s.exiting));
        let alive = b"77 (sleep) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 1000 100";
        assert!(parse_stat(alive).is_some_and(|s| !s.exiting && s.start_time == 5));
    }

    #[test]
    fn our_own_stat_names_our_parent_and_session() {
        let own = read_stat(std::process::id()).unwrap_or_else(|| panic!("our own stat"));
        assert!(!own.zombie);
        assert!(!own.exiting);
        assert_eq!(own.parent, std::os::unix::process::parent_id());
        // A process started by a kernel thread without setsid() is in
        // session 0, as in some containers: compare with the kernel's own
        // answer rather than assume a positive id.
        let session = nix::unistd::getsid(None).map(|pid| pid.as_raw());
        assert_eq!(Ok(own.session as i32), session);
        assert!(own.start_time > 0);
    }

    #[test]
    fn net_admin_is_read_from_the_effective_capabilities() {
        assert!(net_admin_in(
            "Name:\tx\nCapInh:\t0\nCapEff:\t000001ffffffffff\n"
        ));
        assert!(net_admin_in("CapEff:\t0000000000001000\n"));
        assert!(!net_admin_in(
            "CapPrm:\t0000000000001000\nCapEff:\t0000000000000000\n"
        ));
        assert!(!net_admin_in("CapEff:\tzz\n"));
        assert!(!net_admin_in(""));
    }
}
