//! The supervisor's side of a re-attach after a crash ([`crate::reattach`]):
//! keeping the record as things change, taking back at start-up the runs
//! an earlier adoptd left, and finding a re-attached run's newer processes
//! when it ends.
//!
//! Invariants: a service's file of the record is written at most once per
//! turn of the loop, after a turn whose tracker notices changed that
//! service's published status (removed once it has no main process), and
//! never per fork; a file that cannot be written is said once in the log
//! and supervision goes on. A service is re-attached before anything
//! starts, so its autostart finds it running and starts nothing.

use std::{cell::RefCell, collections::BTreeSet, os::fd::OwnedFd, path::PathBuf, time::Duration};

use tracing::{error, info, warn};

use super::Supervisor;
use crate::{
    proc,
    reattach::{self, Finding, Record, Run},
    spawn,
    tracker::{Clues, Command, Event, ExitStatus, Pid, Restart, ServiceId, Tracker},
};

/// Where the record goes, and whether it is due.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    /// The state directory; `None`: nothing is recorded.
    directory: Option<PathBuf>,
    /// Services whose published status changed since their file was
    /// written.
    pub(super) changed: RefCell<BTreeSet<ServiceId>>,
    /// Names whose file an earlier adoptd wrote, to be written again or
    /// removed by this one.
    stale: BTreeSet<String>,
    /// A write failed and the log said so: said again only once one
    /// succeeds and another fails.
    failing: bool,
    /// adoptd's own start time, which the record names its writer by.
    start_time: u64,
    /// This boot's id, read once.
    boot_id: String,
    /// Runs found at start-up, re-attached once the configuration is read.
    found: Vec<(String, Finding)>,
    /// The services a record names whose writer, another adoptd, still
    /// runs them: not started at start-up.
    held: BTreeSet<String>,
    /// Services whose recorded run ended while no adoptd watched, to be
    /// started again by their restart policy.
    ended: Vec<ServiceId>,
}

/// How long the killed leftovers of a run whose main process is gone may
/// take to end before the service starts again.
const LEFTOVER_BOUND: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Keeps the record in `directory` from now on.
    pub fn keep_record_in(&mut self, directory: Option<PathBuf>) {
        if directory.is_none() {
            warn!(
                "no state directory (neither --state-dir nor $XDG_RUNTIME_DIR): services cannot be re-attached after a crash"
            );
        }
        self.record.directory = directory;
        self.record.boot_id = reattach::record::boot_id();
        self.record.start_time = proc::read_stat(std::process::id()).map_or(0, |s| s.start_time);
    }

    /// An ordinary start: reads the record an earlier adoptd left, takes
    /// back the runs of it that still live, then loads the configuration
    /// and starts the rest as usual.
    pub fn load_reattaching(&mut self) {
        if let Some(directory) = self.record.directory.clone() {
            let (records, errors) = reattach::record::read(&directory);
            for error in errors {
                warn!(
                    "{}; its service is not re-attached",
                    crate::errors::chain(&error)
                );
            }
            let mut runs = Vec::new();
            for (path, record) in records {
                if reattach::writer_lives(&record) {
                    error!(
                        service = %record.run.name,
                        "the adoptd that wrote {} still runs (pid {}): the service is neither re-attached nor started here; give each adoptd a state directory of its own (--state-dir)",
                        path.display(),
                        record.adoptd_pid
                    );
                    self.record.held.insert(record.run.name);
                } else {
                    runs.push(record.run);
                }
            }
            self.record.found = reattach::find(&runs);
            // What this adoptd does not run is not its record: the files
            // of every run found are written again, or removed, once the
            // configuration is loaded.
            self.record.stale = runs.into_iter().map(|run| run.name).collect();
        }
        self.load();
        for (name, finding) in std::mem::take(&mut self.record.found) {
            if !matches!(finding, Finding::Gone) {
                warn!(service = %name, "processes of an earlier adoptd's run live on, but this configuration loads no service of that name: they are left alone");
            }
        }
        self.write_record_if_changed();
    }

    /// Whether service `id` runs under the live adoptd whose record this
    /// one found, and so must not start here by itself.
    pub(super) fn held_by_live_writer(&self, id: ServiceId) -> bool {
        let held = self.record.held.contains(&self.specs[id.index()].name);
        if held {
            error!(service = %self.specs[id.index()].name, "not started: another adoptd with this state directory runs it");
        }
        held
    }

    /// Re-attaches the runs found at start-up whose service is loaded now
    /// (called once the configuration is read, before anything starts).
    pub(super) fn reattach_found(&mut self) {
        for (name, finding) in std::mem::take(&mut self.record.found) {
            let id = match self.resolve(&name, true) {
                Ok(id) if !self.stubs.contains(&id) => id,
                _ => {
                    self.record.found.push((name, finding));
                    continue;
                }
            };
            let ended = || {
                matches!(
                    self.specs[id.index()].policy.restart,
                    Restart::OnFailure | Restart::Always
                )
                .then_some(id)
            };
            match finding {
                Finding::Gone => self.record.ended.extend(ended()),
                Finding::Leftovers(pidfds) => {
                    kill_leftovers(&name, pidfds);
                    self.record.ended.extend(ended());
                }
                Finding::Alive {
                    run,
                    invocation,
                    stopping,
                    pidfds,
                } => {
                    let now = self.now();
                    let out = self.tracker.reattach(now, id, &run);
                    if self.tracker.main_of(run.main_pid) != Some(id) {
                        warn!(service = %name, "cannot re-attach: its processes are tracked already");
                        continue;
                    }
                    for (pid, pidfd) in pidfds {
                        let started = self.tracker.start_time_of(pid);
                        self.watch(pid, &pidfd, started).ok();
                        self.pidfds.insert(pid, pidfd);
                    }
                    self.invocations.insert(id, invocation);
                    info!(
                        service = %name,
                        main_pid = run.main_pid,
                        processes = run.members.len(),
                        %invocation,
                        "re-attached the run an earlier adoptd left"
                    );
                    self.carry_out(out);
                    if stopping {
                        // An operator's stop was under way: carried on.
                        self.command(id, Command::Stop).ok();
                    }
                }
            }
        }
    }

    /// After the autostart at start-up: starts the services whose run
    /// ended while no adoptd watched, as their restart policy asks (its
    /// status is unknown, so `on-failure` counts it as a failure: a
    /// daemon that died unwatched is not taken to have meant it).
    pub(super) fn restart_ended_while_away(&mut self) {
        for id in std::mem::take(&mut self.record.ended) {
            if self.check_not_held_back(id).is_ok() && self.command(id, Command::Start).is_ok() {
                info!(service = %self.specs[id.index()].name, "its run ended while no adoptd watched: started again by its restart policy");
            }
        }
    }

    /// In a batch: when the main process of a re-attached run ended, the
    /// run's processes that appeared since its re-attach (adoptd did not
    /// see them fork) join the service, held by pidfd, so that its
    /// clean-up stops them too.
    pub(super) fn find_reattached_again(
        &mut self,
        reaped: &[(Pid, ExitStatus)],
        events: &mut Vec<Event>,
    ) {
        let ended: Vec<(ServiceId, Pid)> = reaped
            .iter()
            .filter_map(|&(pid, _)| Some((self.tracker.main_of(pid)?, pid)))
            .filter(|&(id, _)| {
                self.tracker
                    .status(id)
                    .is_some_and(|s| s.reattached_at_us.is_some())
            })
            .collect();
        for (id, main) in ended {
            let Some(&invocation) = self.invocations.get(&id) else {
                continue;
            };
            let tracker = &self.tracker;
            let known = |pid| tracker.service_of(pid).is_some();
            let found = reattach::find_again(invocation, self.tracker.run_start_time(id), &known);
            for verified in found {
                if self
                    .watch(verified.pid, &verified.pidfd, Some(verified.start_time))
                    .is_err()
                {
                    continue;
                }
                self.pidfds.insert(verified.pid, verified.pidfd);
                events.push(reappeared(
                    &self.tracker,
                    id,
                    main,
                    verified.pid,
                    verified.start_time,
                ));
            }
        }
    }

    /// Writes the file of every service whose published status changed
    /// since it was last written, or removes it when the service has no
    /// run any more.
    pub(super) fn write_record_if_changed(&mut self) {
        let changed = std::mem::take(&mut *self.record.changed.borrow_mut());
        let stale = std::mem::take(&mut self.record.stale);
        let Some(directory) = self.record.directory.clone() else {
            return;
        };
        let mut failed = None;
        for id in changed {
            let Some(spec) = self.specs.get(id.index()) else {
                continue;
            };
            let name = spec.name.clone();
            let written = match self.recorded_run(id, &name) {
                Some(run) => reattach::record::write(
                    &directory,
                    &Record {
                        format: reattach::record::FORMAT,
                        boot_id: self.record.boot_id.clone(),
                        adoptd_pid: std::process::id(),
                        adoptd_start_time: self.record.start_time,
                        run,
                    },
                ),
                // A name that another service took since keeps that
                // service's file.
                None if self.names.get(&name).is_some_and(|&other| other != id) => Ok(()),
                None => reattach::record::remove(&directory, &name),
            };
            if let Err(e) = written {
                failed = Some(e);
            }
        }
        for name in stale {
            let ours = self
                .names
                .get(&name)
                .is_some_and(|&id| self.recorded_run(id, &name).is_some());
            if !ours && let Err(e) = reattach::record::remove(&directory, &name) {
                failed = Some(e);
            }
        }
        match failed {
            None => self.record.failing = false,
            Some(e) if !self.record.failing => {
                self.record.failing = true;
                warn!(
                    "{}: after a crash, services cannot be re-attached",
                    crate::errors::chain(&e)
                );
            }
            Some(_) => {}
        }
    }

    /// Service `id`'s current run, for the record; `None` without a main
    /// process.
    fn recorded_run(&self, id: ServiceId, name: &str) -> Option<Run> {
        if self.names.get(name) != Some(&id) {
            return None;
        }
        let status = self.tracker.status(id)?;
        let main_pid = status.main_pid?;
        let main_start_time = self
            .tracker
            .start_time_of(main_pid)
            .or_else(|| proc::read_stat(main_pid).map(|s| s.start_time))?;
        Some(Run {
            name: name.to_owned(),
            invocation: *self.invocations.get(&id)?,
            main_pid,
            main_start_time,
            run_start_time: self.tracker.run_start_time(id),
            previous_pid: status.previous_pid,
            main_pid_source: status.main_pid_source,
            handoffs: status.handoffs,
            restarts: status.restarts,
            state_changed_at_us: status.state_changed_at.realtime_us,
            last_exit: status.last_exit,
            result: status.result,
            stopping: status.state == crate::tracker::State::Stopping,
        })
    }
}

/// What a process of re-attached run `id`, found again when its main
/// process `main` ended, is to the tracker. One whose parent is still a
/// member of the run is a worker of that member. One whose parent is not
/// was orphaned (the kernel reparents before it lets anyone see an exit),
/// to the reaper above the old adoptd rather than to this one: it is an
/// adoptee with no known previous parent, as the `procfs` source reports
/// them, so a daemon that forked and exited is its heir, flagged `guess`
/// where another member could be, instead of a leftover to stop.
fn reappeared(tracker: &Tracker, id: ServiceId, main: Pid, pid: Pid, start_time: u64) -> Event {
    let stat = proc::read_stat(pid);
    match stat {
        Some(stat) if stat.parent != main && tracker.service_of(stat.parent) == Some(id) => {
            Event::Forked {
                parent: stat.parent,
                child: pid,
            }
        }
        _ => Event::Adopted {
            pid,
            previous_parent: None,
            clues: Clues {
                session: stat.map(|stat| stat.session),
                start_time: Some(start_time),
                ancestor: None,
                run_of: Some(id),
                dying: false,
            },
        },
    }
}

/// Kills the verified leftovers of a run whose main process is gone, and
/// waits (bounded) for them to end, so the service's new start does not
/// find its port held.
fn kill_leftovers(name: &str, pidfds: Vec<(Pid, OwnedFd)>) {
    let pids: Vec<Pid> = pidfds.iter().map(|(pid, _)| *pid).collect();
    warn!(service = %name, ?pids, "the main process of an earlier adoptd's run is gone: killing what is left of the run");
    for (pid, pidfd) in &pidfds {
        if let Err(e) = spawn::send_signal(pidfd, adoptd_dbus::Signal::KILL) {
            warn!(service = %name, pid, "cannot kill a leftover: {e}");
        }
    }
    for (pid, pidfd) in &pidfds {
        if !reattach::wait_ended(pidfd, LEFTOVER_BOUND) {
            warn!(service = %name, pid, "a leftover did not end within {LEFTOVER_BOUND:?}");
        }
    }
}
