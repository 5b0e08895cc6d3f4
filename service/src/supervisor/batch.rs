//! One moment of the supervisor: reap every child that died, let the
//! adoption source drain what it knows, give the tracker the whole moment
//! at once, and carry out what it answers (spawning, signalling).

use std::{collections::HashSet, sync::Arc};

use adoptd_dbus::Signal;
use tracing::{debug, error, info, trace, warn};

use super::{Supervisor, Update};
use crate::{
    config::ServiceSpec,
    invocation::InvocationId,
    logging,
    memory::{self, Shrink},
    output, proc, reaper, spawn,
    tracker::{Action, Event, Expect, Notification, Outcome, Pid, ServiceId},
};

impl Supervisor {
    /// One moment: reap, drain the source, decide.
    pub(super) fn reap_batch(&mut self) {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.clear();
        let mut events = Vec::new();
        // A source that saw a child die between the reap and its look asks
        // for another round, so the whole moment lands in one batch.
        let mut looked_at = 0;
        // Reaping now answers every SIGCHLD read so far.
        let mut unanswered = false;
        for _ in 0..MAX_ROUNDS {
            if self.source.looks_before_reaping() {
                let source = &mut self.source;
                reaper::reap_all_looking(&mut reaped, &mut |pid| source.look_before_reaping(pid));
            } else {
                reaper::reap_all(&mut reaped);
            }
            // Adoption notices of everything just reaped are queued by now.
            // A SIGCHLD read here may be of a child that died after the
            // reap above: once read, it will not wake the loop again, so
            // it takes another round.
            let mut child_died = false;
            match self.signals.get_mut().drain() {
                Ok(wakeup) => {
                    child_died = wakeup.children;
                    self.wakeup.merge(wakeup);
                }
                Err(e) => error!("cannot read signals: {e}"),
            }
            let notices = std::mem::take(&mut self.wakeup.adoptions);
            let lost = std::mem::take(&mut self.wakeup.adoptions_lost);
            self.source.adoption_notices(&notices, lost);
            self.drop_reported(&mut reaped, looked_at);
            if let Err(e) = self.source.collect(&reaped[looked_at..], &mut events) {
                warn!(
                    "the {} source could not read adoptions: {e}",
                    self.source.kind()
                );
            }
            looked_at = reaped.len();
            unanswered = child_died;
            if !self.source.needs_another_round() && !child_died {
                break;
            }
        }
        // The last round's SIGCHLD, if rounds ran out, is answered by the
        // next batch (see `Supervisor::run`).
        self.wakeup.children = unanswered;
        // Exits of main processes that are not adoptd's children come after
        // the source has drained the adoptions of their orphans.
        reaped.append(&mut self.watched.exits);
        for &(pid, _) in &reaped {
            self.pidfds.remove(&pid);
        }
        trace!(?reaped, ?events, "a moment");
        if let Some(held) = &mut self.held_back {
            held.reaped(&reaped);
        }
        // A storm's moment reaps thousands and adopts as many: a set, not
        // a search of the list for each adoption.
        let reaped_now: HashSet<Pid> = if events.is_empty() {
            HashSet::new()
        } else {
            reaped.iter().map(|&(pid, _)| pid).collect()
        };
        for event in &events {
            if let Event::Adopted {
                pid,
                previous_parent,
                ..
            } = *event
            {
                let dead = reaped_now.contains(&pid);
                debug!(
                    pid,
                    previous_parent = previous_parent.unwrap_or(0),
                    dead,
                    "adopted"
                );
                if !dead {
                    self.hold(pid);
                }
            }
        }
        self.find_reattached_again(&reaped, &mut events);
        for &(pid, status) in &reaped {
            events.push(Event::Exited { pid, status });
            if let Some(id) = self.tracker.main_of(pid)
                && let Some(main) = read_pid_file(&self.specs[id.index()])
            {
                events.push(Event::PidFile {
                    service: id,
                    pid: main,
                });
            }
        }
        self.reaped = reaped;
        if !events.is_empty() {
            let now = self.now();
            let out = self.tracker.apply(now, &events);
            self.carry_out(out);
        }
        self.shrink_if_sparse();
    }

    /// After a storm: gives back the room of tables that emptied, and the
    /// allocator's free pages (see [`crate::memory`]).
    pub(super) fn shrink_if_sparse(&mut self) {
        let shrunk = self.tracker.shrink_if_sparse()
            | self.source.shrink_if_sparse()
            | self.pidfds.shrink_if_sparse()
            | self.reaped.shrink_if_sparse();
        if shrunk {
            debug!("shrank tables a storm left sparse");
            memory::return_free_pages();
        }
    }

    /// Acts on what services said over the notification socket.
    pub(super) fn read_notifications(&mut self) {
        let Some(socket) = &self.notify else {
            return;
        };
        let mut messages = Vec::new();
        if let Err(e) = socket.get_ref().read_all(&mut messages) {
            warn!("cannot read notifications: {e}");
        }
        for message in messages {
            let Some(id) = self.service_of_sender(message.sender) else {
                debug!(
                    pid = message.sender,
                    "a notification from a process of no service"
                );
                continue;
            };
            let name = self.specs[id.index()].name.clone();
            if let Some(status) = &message.status {
                info!(service = %name, "status: {status}");
                self.status_texts.insert(id, status.clone());
                self.publish(Update::StatusText {
                    service: id,
                    text: status.clone(),
                });
            }
            let mut descendant = None;
            let main_pid = message.main_pid.filter(|&pid| {
                if self.tracker.service_of(pid) == Some(id) {
                    return true;
                }
                descendant = self.vouch_for_descendant(id, pid);
                if descendant.is_none() {
                    warn!(service = %name, pid, "MAINPID={pid} ignored: not a live process of this service");
                }
                descendant.is_some()
            });
            let now = self.now();
            let out = self.tracker.notified(
                now,
                id,
                Notification {
                    ready: message.ready,
                    main_pid,
                    descendant,
                },
            );
            self.carry_out(out);
        }
    }

    /// The service of a process that sent a notification: its own, or that
    /// of its nearest ancestor adoptd tracks.
    pub(super) fn service_of_sender(&self, sender: Pid) -> Option<ServiceId> {
        let mut pid = sender;
        // Deep enough for any real process tree; bounded whatever /proc says.
        for _ in 0..64 {
            if let Some(id) = self.tracker.service_of(pid) {
                return Some(id);
            }
            pid = proc::read_stat(pid)?.parent;
            if pid <= 1 || pid == std::process::id() {
                return None;
            }
        }
        None
    }

    /// Keeps a pidfd for a new child of adoptd's.
    pub(super) fn hold(&mut self, pid: Pid) {
        match spawn::open_pidfd(pid) {
            Ok(fd) => {
                self.pidfds.insert(pid, fd);
            }
            Err(e) => debug!("{}", crate::errors::chain(&e)),
        }
    }

    /// Carries out the tracker's actions (which may produce further
    /// outputs, as spawning does) and logs its notices.
    pub(super) fn carry_out(&mut self, out: Outcome) {
        // A restart's new process first, then the bus (see `outbox`), then
        // the moment's log lines, in one write (see `logging`).
        let spawns = out
            .actions
            .iter()
            .any(|action| matches!(action, Action::Spawn { .. }));
        let held_lines = logging::Held::begin();
        if spawns {
            self.outbox.hold();
        }
        self.carry_out_actions(out);
        if spawns {
            self.outbox.release();
        }
        drop(held_lines);
        if !self.retiring.is_empty() {
            self.remove_retired();
        }
    }

    pub(super) fn carry_out_actions(&mut self, out: Outcome) {
        let mut pending = vec![out];
        while let Some(out) = pending.pop() {
            // The bus hears first (see `outbox`), the log after the
            // actions: a restart's new process does not wait while the
            // lines about its predecessor are formatted (30 µs of a
            // restart's 150 before the clone). The lines keep their order.
            self.tell_notices(&out.notices);
            let mut start_lines = Vec::new();
            let mut actions = out.actions.into_iter().peekable();
            while let Some(action) = actions.next() {
                match action {
                    Action::Spawn { service } => {
                        // The starts in a row are made at once.
                        let mut services = vec![service];
                        while let Some(&Action::Spawn { service }) = actions.peek() {
                            services.push(service);
                            actions.next();
                        }
                        pending.extend(self.spawn_each(&services, &mut start_lines));
                    }
                    Action::Signal {
                        service,
                        pid,
                        signal,
                    } => self.signal(service, pid, signal),
                }
            }
            for notice in &out.notices {
                self.log_notice(notice);
            }
            for line in start_lines {
                self.log_start(line);
            }
        }
    }

    /// The log line of one start: its process, or why it could not be
    /// made.
    fn log_start(&self, line: StartLine) {
        let spec = &self.specs[line.service.index()];
        match line.result {
            Ok((pid, invocation)) => {
                info!(service = %spec.name, pid, %invocation, "started {}", spec.exec.join(" "));
            }
            Err(reason) => error!(service = %spec.name, "cannot start: {reason}"),
        }
    }

    /// Starts each of `services` (as [`spawn::spawn_each`] does, several
    /// at once where there are many) and tells the tracker of each, in
    /// their order; adds the line to log of each to `lines`.
    fn spawn_each(&mut self, services: &[ServiceId], lines: &mut Vec<StartLine>) -> Vec<Outcome> {
        let specs: Vec<Arc<ServiceSpec>> = services
            .iter()
            .map(|id| Arc::clone(&self.specs[id.index()]))
            .collect();
        let invocations: Vec<InvocationId> = services.iter().map(|_| InvocationId::new()).collect();
        let notify = self
            .notify
            .as_ref()
            .map(|socket| socket.get_ref().address());
        let starts: Vec<spawn::Start<'_>> = specs
            .iter()
            .zip(&invocations)
            .map(|(spec, &invocation)| spawn::Start {
                spec,
                invocation,
                notify_socket: notify.filter(|_| spec.policy.expect == Expect::Notify),
            })
            .collect();
        let results = spawn::spawn_each(&starts);
        drop(starts);
        services
            .iter()
            .zip(specs)
            .zip(invocations)
            .zip(results)
            .map(|(((&id, spec), invocation), result)| {
                let (outcome, line) = self.spawned(id, &spec, invocation, result);
                lines.push(line);
                outcome
            })
            .collect()
    }

    /// Takes in the start of service `id` as run `invocation`: holds the
    /// new process, or records why it could not be made, and tells the
    /// tracker. Returns what the tracker answers, and the start's line
    /// for the log.
    fn spawned(
        &mut self,
        id: ServiceId,
        spec: &Arc<ServiceSpec>,
        invocation: InvocationId,
        result: Result<spawn::Spawned, spawn::SpawnError>,
    ) -> (Outcome, StartLine) {
        let (event, logged) = match result {
            Ok(spawned) => {
                self.source.spawned(spawned.pid, id, invocation);
                self.invocations.insert(id, invocation);
                self.pidfds.insert(spawned.pid, spawned.pidfd);
                if let Some(pipes) = spawned.output {
                    output::forward(
                        Arc::clone(&self.outputs),
                        id,
                        Arc::clone(spec),
                        pipes.stdout,
                        pipes.stderr,
                    );
                }
                if self.exec_failed.remove(&id).is_some() {
                    self.publish(Update::ExecError {
                        service: id,
                        error: String::new(),
                    });
                }
                let event = Event::Spawned {
                    service: id,
                    pid: spawned.pid,
                    start_time: spawned
                        .start_time
                        .or_else(|| proc::read_stat(spawned.pid).map(|stat| stat.start_time)),
                };
                (event, Ok((spawned.pid, invocation)))
            }
            Err(e) => {
                let reason = crate::errors::chain(&e);
                self.exec_failed.insert(id, reason.clone());
                self.publish(Update::ExecError {
                    service: id,
                    error: reason.clone(),
                });
                (Event::SpawnFailed { service: id }, Err(reason))
            }
        };
        let now = self.now();
        let line = StartLine {
            service: id,
            result: logged,
        };
        (self.tracker.apply(now, &[event]), line)
    }

    pub(super) fn signal(&mut self, id: ServiceId, pid: Pid, signal: Signal) {
        let name = &self.specs[id.index()].name;
        match self.pidfds.get(&pid) {
            Some(fd) => match spawn::send_signal(fd, signal) {
                Ok(()) => debug!(service = %name, pid, %signal, "signalled"),
                Err(e) => debug!(service = %name, pid, %signal, "cannot signal: {e}"),
            },
            // Never by bare pid: without a pidfd the process may not be
            // the one the tracker means any more.
            None => {
                warn!(service = %name, pid, %signal, "not signalled: adoptd holds no pidfd for it")
            }
        }
    }
}

/// What the log says of one start, written after the moment's actions.
struct StartLine {
    service: ServiceId,
    /// The new process and its run, or why it could not be made.
    result: Result<(Pid, InvocationId), String>,
}

/// The pid in the service's pid file, if it has one that reads well.
pub(super) fn read_pid_file(spec: &ServiceSpec) -> Option<Pid> {
    let path = spec.pid_file()?;
    let path = match spec.chroot() {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&pid: &Pid| pid > 0)
}

/// How many reap-and-look rounds one batch may take.
pub(super) const MAX_ROUNDS: usize = 8;
