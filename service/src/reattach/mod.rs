//! Re-attach after a crash: an adoptd started anew (not re-executed)
//! takes back the runs its predecessor left, instead of starting second
//! copies of them.
//!
//! What it owns: the [`record`] of what adoptd runs, kept in the state
//! directory, and [`find`], which turns a record into the processes that
//! still live. A pid is never believed on its own: a process counts as a
//! run's only if its start time fits (the main process's exactly; any
//! other's no older than the run) and its environment carries the run's
//! invocation id (`ADOPTD_INVOCATION_ID`, see [`crate::invocation`]), both
//! read again after its pidfd is open, so a pid reused in between is
//! never taken. A program may write its title over its environment
//! (nginx does, and its workers inherit the result): the main process,
//! known by its pid and exact start time in this boot, and its
//! descendants, known by lineage, count as the run's also when their
//! environment names no run at all, never when it names another. Every process found is held by that pidfd from then on:
//! signals go through it, and its end is learnt from it.
//!
//! What a re-attached run can be followed in: its processes are not
//! adoptd's children any more (they were reparented, when the old adoptd
//! died, to whoever reaped its children: the init or subreaper above it),
//! so no source sees them reaped or adopted:
//! - every source: the end of each process found at re-attach, through
//!   its pidfd, with its exit status from `PIDFD_GET_INFO` (Linux 6.15 and
//!   later) or from `/proc` while it is an unreaped zombie; where neither
//!   tells, the end counts as clean and the log says the status is
//!   unknown;
//! - every source: when the main process ends or is stopped, the run's
//!   processes that appeared since (workers forked after the re-attach)
//!   are found again by invocation id and start time, and stopped with
//!   the rest as leftover members;
//! - no source sees hand-offs as they happen. A re-attached main process
//!   that forks and exits leaves its child to the other reaper, with no
//!   adoption for adoptd to see (`proc-connector` hears the fork but keeps
//!   lineage only below adoptd's own children; `procfs` and `adoptsig` see
//!   nothing). So the processes found again when the main process ends
//!   that have no parent in the run are reported as adoptees with no
//!   known previous parent, as `procfs` reports its newcomers, and the
//!   hand-off rule picks the heir among them (a guess where another
//!   member could be it); the rest are workers. A restart of the service
//!   makes it adoptd's child again, followed in full.
//!
//! Invariants: a record that does not read names nothing (nothing is
//! re-attached, and the services start as on a first start); a run whose
//! main process is gone is not re-attached: its verified leftovers are
//! killed, and then the service starts again by its restart policy (the
//! end was unseen, so `on-failure` takes it as a failure) or its
//! autostart, so a restart never finds its port held.

use std::{collections::HashMap, os::fd::OwnedFd, path::PathBuf};

use tracing::{debug, warn};

pub mod record;

pub use record::{Record, RecordError, Run};

use crate::{
    invocation::InvocationId,
    proc, spawn,
    tracker::{Pid, Reattach},
};

/// Where the record is kept: `--state-dir`, else `$ADOPTD_RUNTIME_DIR`
/// (the directory of a second adoptd beside the real one, as for the
/// private bus), else `/run/adoptd` for root and
/// `$XDG_RUNTIME_DIR/adoptd` for other users; `None` when none of these
/// is known, and then nothing is recorded or re-attached.
pub fn default_state_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(directory) = absolute(adoptd_dbus::RUNTIME_DIR_VARIABLE) {
        return Some(directory);
    }
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/run/adoptd"));
    }
    absolute("XDG_RUNTIME_DIR").map(|directory| directory.join("adoptd"))
}

/// What became of one recorded run.
#[derive(Debug)]
pub enum Finding {
    /// Its main process lives: take the run over.
    Alive {
        run: Reattach,
        /// The run's invocation id, which its processes carry.
        invocation: InvocationId,
        /// It was being stopped: the stop goes on.
        stopping: bool,
        /// A pidfd for every process of the run.
        pidfds: Vec<(Pid, OwnedFd)>,
    },
    /// Its main process is gone but these processes of the run live: they
    /// are killed before the service starts again.
    Leftovers(Vec<(Pid, OwnedFd)>),
    /// Nothing of it lives.
    Gone,
}

/// A process of a run, verified.
#[derive(Debug)]
pub struct Verified {
    pub pid: Pid,
    pub start_time: u64,
    pub pidfd: OwnedFd,
}

/// Finds what lives of each of `runs`, by name.
pub fn find(runs: &[Run]) -> Vec<(String, Finding)> {
    let wanted: HashMap<InvocationId, &Run> =
        runs.iter().map(|run| (run.invocation, run)).collect();
    let mut by_run = processes_of(&wanted);
    runs.iter()
        .map(|run| {
            let found = by_run.remove(&run.invocation).unwrap_or_default();
            (run.name.clone(), finding(run, found))
        })
        .collect()
}

/// The live processes of one run, found again (workers forked since the
/// re-attach), leaving out `known`.
pub fn find_again(
    invocation: InvocationId,
    run_start_time: Option<u64>,
    known: &dyn Fn(Pid) -> bool,
) -> Vec<Verified> {
    let mut environment = Vec::new();
    let mut found = Vec::new();
    for pid in all_pids() {
        if known(pid) {
            continue;
        }
        if let Some(verified) = verify(
            pid,
            invocation,
            run_start_time,
            None,
            Vouched::ByName,
            &mut environment,
        ) {
            found.push(verified);
        }
    }
    found
}

fn finding(run: &Run, candidates: Vec<Pid>) -> Finding {
    let mut environment = Vec::new();
    let main = verify(
        run.main_pid,
        run.invocation,
        run.run_start_time,
        Some(run.main_start_time),
        Vouched::ByIdentity,
        &mut environment,
    );
    // The main process's descendants are the run's by lineage, also where
    // their environment no longer names it (nginx's workers).
    let descendants: Vec<Pid> = match &main {
        Some(main) => proc::with_descendants(&[main.pid])
            .into_iter()
            .filter(|pid| *pid != main.pid && !candidates.contains(pid))
            .collect(),
        None => Vec::new(),
    };
    let named = candidates
        .into_iter()
        .filter(|&pid| pid != run.main_pid)
        .map(|pid| (pid, Vouched::ByName));
    let others: Vec<Verified> = named
        .chain(
            descendants
                .into_iter()
                .map(|pid| (pid, Vouched::ByIdentity)),
        )
        .filter_map(|(pid, vouched)| {
            verify(
                pid,
                run.invocation,
                run.run_start_time,
                None,
                vouched,
                &mut environment,
            )
        })
        .collect();
    let Some(main) = main else {
        if others.is_empty() {
            return Finding::Gone;
        }
        return Finding::Leftovers(others.into_iter().map(|v| (v.pid, v.pidfd)).collect());
    };
    let mut members = vec![(main.pid, Some(main.start_time))];
    let mut pidfds = vec![(main.pid, main.pidfd)];
    for other in others {
        members.push((other.pid, Some(other.start_time)));
        pidfds.push((other.pid, other.pidfd));
    }
    Finding::Alive {
        invocation: run.invocation,
        stopping: run.stopping,
        run: Reattach {
            main_pid: run.main_pid,
            previous_pid: run.previous_pid,
            main_pid_source: run.main_pid_source,
            handoffs: run.handoffs,
            restarts: run.restarts,
            state_changed_at_us: run.state_changed_at_us,
            last_exit: run.last_exit,
            result: run.result,
            run_start_time: run.run_start_time,
            members,
        },
        pidfds,
    }
}

/// How a process is known to be a run's besides its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vouched {
    /// Only by its environment naming the run.
    ByName,
    /// By its exact start time (the main process) or its descent from the
    /// verified main process: its environment may also name no run at all,
    /// as when a program writes its title over it (nginx, PostgreSQL), but
    /// never another run.
    ByIdentity,
}

/// `pid`, held by a pidfd, if it is a live process of run `invocation`:
/// started at `exact` (the main process) or no earlier than the run, its
/// environment naming the run (or, when `vouched` by identity, no run),
/// before and after the pidfd was opened.
fn verify(
    pid: Pid,
    invocation: InvocationId,
    run_start_time: Option<u64>,
    exact: Option<u64>,
    vouched: Vouched,
    environment: &mut Vec<u8>,
) -> Option<Verified> {
    if pid <= 1 || pid == std::process::id() {
        return None;
    }
    let fits = |environment: &mut Vec<u8>| {
        let stat = proc::read_stat(pid).filter(|stat| !stat.zombie)?;
        let timely = match exact {
            Some(started) => stat.start_time == started,
            None => run_start_time.is_none_or(|run| stat.start_time >= run),
        };
        proc::read_environment(pid, ENVIRONMENT_READ_LIMIT, environment)?;
        let ours = match crate::source::runs::invocation_in(environment) {
            Some(named) => named == invocation,
            None => vouched == Vouched::ByIdentity,
        };
        (timely && ours).then_some(stat.start_time)
    };
    let before = fits(environment)?;
    let pidfd = spawn::open_pidfd(pid)
        .inspect_err(|e| debug!("{}", crate::errors::chain(e)))
        .ok()?;
    let after = fits(environment)?;
    if after != before {
        warn!(
            pid,
            "pid {pid} was reused while it was looked at: not taken"
        );
        return None;
    }
    Some(Verified {
        pid,
        start_time: after,
        pidfd,
    })
}

/// Every process whose environment names one of the `wanted` runs, by run.
fn processes_of(wanted: &HashMap<InvocationId, &Run>) -> HashMap<InvocationId, Vec<Pid>> {
    let mut found: HashMap<InvocationId, Vec<Pid>> = HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let mut environment = Vec::new();
    for pid in all_pids() {
        if proc::read_environment(pid, ENVIRONMENT_READ_LIMIT, &mut environment).is_none() {
            continue;
        }
        if let Some(invocation) = crate::source::runs::invocation_in(&environment)
            && wanted.contains_key(&invocation)
        {
            found.entry(invocation).or_default().push(pid);
        }
    }
    found
}

/// Every pid in `/proc` now.
fn all_pids() -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        warn!("cannot list /proc: no process of an earlier adoptd can be found");
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<Pid>().ok())
        .collect()
}

/// How much of a process's environment is searched for the invocation id,
/// as the `procfs` source does.
const ENVIRONMENT_READ_LIMIT: u64 = 64 * 1024;

/// Whether the adoptd that wrote `record` still runs (it is not this one):
/// then its runs are its own.
pub fn writer_lives(record: &Record) -> bool {
    record.adoptd_pid != std::process::id()
        && proc::read_stat(record.adoptd_pid)
            .is_some_and(|stat| !stat.zombie && stat.start_time == record.adoptd_start_time)
}

/// Waits, at most `bound`, for the process behind `pidfd` to end; says
/// whether it did.
pub fn wait_ended(pidfd: &OwnedFd, bound: std::time::Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(pidfd),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(bound.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: one valid pollfd, which lives across the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready >= 0 {
            return ready == 1;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}
