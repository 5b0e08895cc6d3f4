//! The supervisor's side of a re-exec ([`crate::reexec`]): what it saves
//! of itself, how it restores that in the new image, and what it holds
//! back when the new image cannot read the state.
//!
//! Invariants: the new image publishes nothing before the whole state is
//! restored, and then every service as it was (same id, spec, load state,
//! status, exec error, status text), so the bus serves unchanged values
//! and emits no PropertiesChanged of its own; the exits of the exec's time
//! are reaped and decided only after that, as the first moment of the new
//! image. Held-back services are never started while a process of theirs
//! from the previous image lives.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;
use tracing::{error, info, warn};

use super::{RequestError, Supervisor, Update};
use crate::{
    config,
    notify::NotifySocket,
    output,
    reexec::{
        self, Fallback,
        exec::{is_open, set_cloexec},
        snapshot::{self, Envelope, Running, Saving},
    },
    tracker::{ExitStatus, Pid, ServiceId},
};

/// The processes of the previous image that an unreadable state left,
/// which keep their services from starting.
#[derive(Debug, Default)]
pub(crate) struct HeldBack {
    /// By service name: its processes still alive.
    by_service: BTreeMap<String, BTreeSet<Pid>>,
    /// The state did not even say which services ran: every child adoptd
    /// had when it started holds every service back.
    every_service: BTreeSet<Pid>,
}

impl HeldBack {
    /// Forgets the processes just reaped.
    pub(super) fn reaped(&mut self, reaped: &[(Pid, ExitStatus)]) {
        for (pid, _) in reaped {
            self.every_service.remove(pid);
            for pids in self.by_service.values_mut() {
                pids.remove(pid);
            }
        }
        self.by_service.retain(|name, pids| {
            if pids.is_empty() {
                info!(service = %name, "no process from before the re-exec is left: it may start");
            }
            !pids.is_empty()
        });
    }

    fn holding(&self, name: &str) -> Option<&BTreeSet<Pid>> {
        self.by_service
            .get(name)
            .or((!self.every_service.is_empty()).then_some(&self.every_service))
    }
}

impl Supervisor {
    /// A re-exec asked over the bus: refused while shutting down or when
    /// there is nothing to execute.
    pub(super) fn accept_reexec(&self) -> Result<(), RequestError> {
        if self.shutting_down {
            return Err(RequestError::Reexec("adoptd is shutting down".to_owned()));
        }
        let path = self.program.path_now();
        nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).map_err(|e| {
            RequestError::Reexec(format!("{} cannot be executed: {e}", path.display()))
        })?;
        Ok(())
    }

    /// Saves everything and executes adoptd anew; returns only when that
    /// failed, and then adoptd goes on as it was.
    pub(super) async fn reexecute(&mut self) {
        // Whatever is pending now is decided by this image.
        self.reap_batch();
        // So are the signals that batch read: none would reach the new
        // image. A stop wins over the re-exec; a reload is done here, its
        // result saved with the rest; a SIGCHLD left over is answered by
        // the new image's first batch, which reaps whatever is there.
        if self.wakeup.shutdown {
            info!("not re-executing: adoptd is told to stop");
            return;
        }
        if std::mem::take(&mut self.wakeup.reload) {
            self.reload();
        }
        let started = Instant::now();
        // Every signal of this image leaves before it is replaced; what
        // happens meanwhile waits, unreaped, for the new image.
        let (flush, flushed) = tokio::sync::oneshot::channel();
        self.publish(Update::Flush(flush));
        if tokio::time::timeout(FLUSH_BOUND, flushed).await.is_err() {
            warn!(
                "the bus layer did not send its last signals within {FLUSH_BOUND:?}; re-executing all the same"
            );
        }
        let (snapshot, keep) = match self.snapshot() {
            Ok(saved) => saved,
            Err(e) => {
                error!("cannot re-execute: {}", crate::errors::chain(&e));
                return;
            }
        };
        info!(
            services = self.specs.len(),
            descriptors = keep.len(),
            bytes = snapshot.len(),
            saved_in_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "re-executing {}",
            self.program.path_now().display()
        );
        let error = reexec::exec(&self.program, &snapshot, &keep);
        error!(
            "cannot re-execute: {}; adoptd goes on as it was",
            crate::errors::chain(&error)
        );
    }

    /// The snapshot and the descriptors it names.
    fn snapshot(&self) -> Result<(Vec<u8>, Vec<RawFd>), reexec::ReexecError> {
        let ids: Vec<ServiceId> = self.tracker.ids().collect();
        let services = ids
            .iter()
            .zip(&self.specs)
            .zip(&self.loads)
            .map(|((&id, spec), load)| snapshot::Service {
                spec: spec.as_ref(),
                load: load.clone(),
                named: self.names.get(&spec.name) == Some(&id),
                stub: self.stubs.contains(&id),
                retiring: self.retiring.contains(&id),
                exec_error: self.exec_failed.get(&id).cloned(),
                status_text: self.status_texts.get(&id).cloned(),
            })
            .collect();
        let running = self
            .names
            .iter()
            .filter_map(|(name, &id)| {
                let status = self.tracker.status(id)?;
                let mut pids: Vec<Pid> = status.main_pid.into_iter().collect();
                pids.extend(
                    self.tracker
                        .members(id)
                        .into_iter()
                        .filter(|&pid| Some(pid) != status.main_pid),
                );
                (!pids.is_empty()).then(|| Running {
                    name: name.clone(),
                    pids,
                })
            })
            .collect();
        let pidfds: Vec<(Pid, RawFd)> = self
            .pidfds
            .iter()
            .map(|(&pid, fd)| (pid, fd.as_raw_fd()))
            .collect();
        let outputs = self.outputs.read_pipes();
        let notify = self.notify.as_ref().map(|socket| snapshot::Notify {
            fd: socket.get_ref().as_raw_fd(),
            address: socket.get_ref().address().to_owned(),
        });
        let mut keep: Vec<RawFd> = pidfds.iter().map(|&(_, fd)| fd).collect();
        keep.extend(outputs.iter().flat_map(|p| [p.stdout, p.stderr]));
        keep.extend(notify.as_ref().map(|n| n.fd));
        let envelope = Envelope {
            format: snapshot::FORMAT,
            running,
            state: Saving {
                epoch: monotonic_now().saturating_sub(self.epoch.elapsed()),
                tracker: &self.tracker,
                services,
                source: snapshot::Source {
                    kind: self.source.kind().as_str().to_owned(),
                    state: self.source.save(),
                },
                pidfds,
                outputs,
                kept_lines: self.outputs.kept_lines(),
                notify,
                invocations: self
                    .invocations
                    .iter()
                    .map(|(&id, &invocation)| (id, invocation))
                    .collect(),
                reported_zombies: self.watched.reported_zombies(),
            },
        };
        let bytes = serde_json::to_vec(&envelope).map_err(reexec::ReexecError::Encode)?;
        Ok((bytes, keep))
    }

    /// Restores the state the previous image saved, publishes every
    /// service as it was, then reaps and decides what ended meanwhile.
    pub fn restore(&mut self, state: snapshot::State) {
        let ids: Vec<ServiceId> = state.tracker.ids().collect();
        if ids.len() != state.services.len() {
            self.load_after_unreadable_state(Fallback {
                reason: format!(
                    "the state holds {} services for the tracker's {}",
                    state.services.len(),
                    ids.len()
                ),
                running: None,
            });
            return;
        }
        let age = monotonic_now().saturating_sub(state.epoch);
        self.epoch = Instant::now().checked_sub(age).unwrap_or_else(|| {
            warn!("cannot take the previous image's epoch; pending deadlines move by {age:?}");
            Instant::now()
        });
        self.tracker = state.tracker;
        // Templates make instances on demand: read from their files, as
        // the services they made are already in the state.
        self.templates = config::load_dir(&self.config_dir).templates;
        for (id, service) in ids.iter().copied().zip(state.services) {
            if service.named {
                self.names.insert(service.spec.name.clone(), id);
            }
            if service.stub {
                self.stubs.insert(id);
            }
            if service.retiring {
                self.retiring.insert(id);
            }
            if let Some(error) = service.exec_error {
                self.exec_failed.insert(id, error);
            }
            if let Some(text) = service.status_text {
                self.status_texts.insert(id, text);
            }
            self.specs.push(Arc::new(service.spec));
            self.loads.push(service.load);
        }
        if state.source.kind == self.source.kind().as_str() {
            if let Err(e) = self.source.restore(state.source.state) {
                warn!(
                    "cannot restore what the {} source knew: {e}; it learns anew",
                    self.source.kind()
                );
            }
        } else {
            warn!(
                "the previous image used the {} source, this one the {}: lineage starts anew",
                state.source.kind,
                self.source.kind()
            );
        }
        for (pid, fd) in state.pidfds {
            if let Some(fd) = take_inherited(fd) {
                self.pidfds.insert(pid, fd);
            } else {
                warn!(pid, fd, "the pidfd of a process was not passed on");
            }
        }
        for pipes in state.outputs {
            let spec = self.specs.get(pipes.service.index()).map(Arc::clone);
            match (
                spec,
                take_inherited(pipes.stdout),
                take_inherited(pipes.stderr),
            ) {
                (Some(spec), Some(stdout), Some(stderr)) => {
                    output::forward(
                        Arc::clone(&self.outputs),
                        pipes.service,
                        spec,
                        stdout,
                        stderr,
                    );
                }
                _ => warn!("the output pipes of a service were not passed on"),
            }
        }
        for (service, lines) in state.kept_lines {
            if let Some(spec) = self.specs.get(service.index()) {
                self.outputs
                    .restore_lines(service, spec.output_buffer, lines);
            }
        }
        if let Some(notify) = state.notify {
            self.take_notify_socket(notify);
        }
        self.invocations.extend(state.invocations);
        self.watched
            .restore_reported_zombies(state.reported_zombies);
        self.watch_again();
        self.publish_restored();
        info!(
            services = self.names.len(),
            pidfds = self.pidfds.len(),
            "restored the state of the previous image"
        );
        // The exits of the exec's time, and the adoptions they caused.
        self.reap_batch();
    }

    /// After a re-exec whose state could not be read: loads the
    /// configuration as at start-up, but starts no service whose
    /// processes from the previous image still live.
    pub fn load_after_unreadable_state(&mut self, fallback: Fallback) {
        let mut held = HeldBack::default();
        match fallback.running {
            Some(names) => {
                // The pids are adoptd's children, which cannot be reused
                // before it reaps them: the ones alive now are the same.
                let children = children_now();
                for (name, pids) in names {
                    let alive: BTreeSet<Pid> = pids.intersection(&children).copied().collect();
                    if !alive.is_empty() {
                        held.by_service.insert(name, alive);
                    }
                }
            }
            None => held.every_service = children_now(),
        }
        error!(
            "cannot restore the state the previous image left: {}; services whose processes still run are not started again",
            fallback.reason
        );
        self.held_back = Some(held);
        self.load();
    }

    /// Refuses to start a service held back by an unreadable state.
    pub(super) fn check_not_held_back(&self, id: ServiceId) -> Result<(), RequestError> {
        let Some(held) = &self.held_back else {
            return Ok(());
        };
        let name = &self.specs[id.index()].name;
        match held.holding(name) {
            Some(pids) => Err(RequestError::HeldBack {
                name: name.clone(),
                pids: pids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
            None => Ok(()),
        }
    }

    fn take_notify_socket(&mut self, notify: snapshot::Notify) {
        let Some(fd) = take_inherited(notify.fd) else {
            warn!("the notification socket was not passed on; a new one is used");
            return;
        };
        let socket = NotifySocket::inherit(fd, notify.address).and_then(|socket| {
            // SAFETY: `NotifySocket` owns its socket and never closes or
            // replaces it while it lives.
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
        });
        match socket {
            Ok(socket) => self.notify = Some(socket),
            Err(e) => warn!("cannot watch the notification socket passed on: {e}"),
        }
    }

    /// Every service to the bus layer, as it was before the exec.
    fn publish_restored(&self) {
        for &id in self.names.values() {
            let (Some(status), Some(spec), Some(load)) = (
                self.tracker.status(id),
                self.specs.get(id.index()),
                self.loads.get(id.index()),
            ) else {
                continue;
            };
            self.publish(Update::ServiceAdded {
                service: id,
                spec: Arc::clone(spec),
                status,
                load: load.clone(),
            });
            if let Some(error) = self.exec_failed.get(&id) {
                self.publish(Update::ExecError {
                    service: id,
                    error: error.clone(),
                });
            }
            if let Some(text) = self.status_texts.get(&id) {
                self.publish(Update::StatusText {
                    service: id,
                    text: text.clone(),
                });
            }
        }
        let orphans = self.tracker.orphans_reaped();
        if orphans > 0 {
            self.publish(Update::OrphansReaped { total: orphans });
        }
        self.publish(Update::Restored);
    }
}

/// How long a re-exec waits for the bus layer to send what it has.
const FLUSH_BOUND: Duration = Duration::from_secs(2);

/// Takes ownership of a descriptor the previous image passed on, and
/// makes it close-on-exec again (a later re-exec keeps it explicitly).
fn take_inherited(fd: RawFd) -> Option<OwnedFd> {
    if fd <= 2 || !is_open(fd) {
        return None;
    }
    set_cloexec(fd, true).ok();
    // SAFETY: the previous image left `fd` open for this image, which
    // opened nothing at its number (it was taken); this is its one owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// adoptd's live children now.
fn children_now() -> BTreeSet<Pid> {
    let mut found = Vec::new();
    if let Err(e) = crate::proc::Children::default().read(None, &mut found) {
        warn!("cannot list adoptd's children: {e}");
    }
    found
        .into_iter()
        .filter(|&pid| crate::proc::read_stat(pid).is_some_and(|stat| !stat.zombie))
        .collect()
}

/// `CLOCK_MONOTONIC` now, the clock `Instant` reads.
fn monotonic_now() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}
