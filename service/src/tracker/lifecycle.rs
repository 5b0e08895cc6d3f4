//! Starting, stopping and restarting: the end of a run, the clean-up of
//! leftover members (the stop signal to all at once, SIGKILL after the
//! stop timeout), restart delays and start limits, and operators'
//! commands.

use adoptd_dbus::Signal;

use super::{
    Action, Batch, Command, CommandError, ExitStatus, Notice, Pid, Restart, RunResult, ServiceId,
    State, service::AfterStop,
};

impl Batch<'_> {
    /// The main process ended the run: record how, then clean up.
    pub(super) fn end_run(&mut self, id: ServiceId, status: ExitStatus) {
        let service = self.touch(id);
        let main = service.main.take();
        service.last_exit = Some(status);
        let operator_stop = service.after_stop;
        let after = match operator_stop {
            Some(after) => {
                service.result = if service.killed || service.timed_out {
                    RunResult::Timeout
                } else {
                    RunResult::Success
                };
                after
            }
            None => {
                let failed = !status.is_success();
                service.result = RunResult::of_exit(status);
                let restart = match service.policy.restart {
                    Restart::No => false,
                    Restart::OnFailure => failed,
                    Restart::Always => true,
                };
                match (restart, failed) {
                    (true, _) => AfterStop::Restart,
                    (false, true) => AfterStop::Failed,
                    (false, false) => AfterStop::Stopped,
                }
            }
        };
        if let Some(pid) = main {
            self.out.notices.push(Notice::Exited {
                service: id,
                pid,
                status,
            });
        }
        self.begin_stop(id, after);
    }

    /// Stops what is left of the service, then goes where `after` says.
    /// With a live main process, only the main process is signalled first
    /// (it usually stops its own workers); otherwise every member is.
    pub(super) fn begin_stop(&mut self, id: ServiceId, after: AfterStop) {
        let now = self.now;
        let service = self.touch(id);
        let first_stop = service.after_stop.is_none() || service.deadline.is_none();
        service.after_stop = Some(after);
        let signal = service.policy.stop_signal;
        let timeout = service.policy.stop_timeout;
        let targets: Vec<Pid> = match service.main {
            Some(main) => vec![main],
            None => service.members.iter().copied().collect(),
        };
        if targets.is_empty() {
            self.finish_stop(id);
            return;
        }
        self.signal_all(id, &targets, signal);
        self.set_state(id, State::Stopping);
        if first_stop {
            self.set_deadline(id, Some(now.monotonic + timeout));
        }
    }

    /// Every member is gone: settle as planned.
    pub(super) fn finish_stop(&mut self, id: ServiceId) {
        self.settle_failure(id);
        let service = self.touch(id);
        let after = service.after_stop.take().unwrap_or(AfterStop::Stopped);
        service.forget_graves();
        self.set_deadline(id, None);
        match after {
            AfterStop::Stopped => self.set_state(id, State::Stopped),
            AfterStop::Failed => self.set_state(id, State::Failed),
            AfterStop::StartAgain => self.start(id),
            AfterStop::Restart => self.schedule_restart(id),
        }
    }

    pub(super) fn schedule_restart(&mut self, id: ServiceId) {
        let now = self.now;
        let service = self.touch(id);
        let limit = service.policy.start_limit;
        let delay = service.policy.restart_delay;
        let due = now.monotonic + delay;
        while service
            .starts
            .front()
            .is_some_and(|&at| due.saturating_sub(at) >= limit.interval)
        {
            service.starts.pop_front();
        }
        if service.starts.len() >= limit.burst as usize {
            service.result = RunResult::StartLimitHit;
            self.set_state(id, State::Failed);
            return;
        }
        service.restarts = service.restarts.saturating_add(1);
        self.set_state(id, State::Restarting);
        // A program that cannot be started fails again at once: its
        // restart waits for the next turn of the supervisor's loop (a
        // deadline due now), so that nothing, not even a start limit of a
        // million, keeps adoptd from its signals meanwhile.
        if delay.is_zero() && !self.failed_spawns.contains(&id) {
            self.start(id);
        } else {
            self.set_deadline(id, Some(due));
        }
    }

    /// Asks the supervisor to spawn the service's program.
    pub(super) fn start(&mut self, id: ServiceId) {
        let now = self.now;
        let service = self.touch(id);
        service.starts.push_back(now.monotonic);
        let keep = service.policy.start_limit.burst as usize + 1;
        while service.starts.len() > keep {
            service.starts.pop_front();
        }
        service.after_stop = None;
        service.killed = false;
        self.set_deadline(id, None);
        if self.tracker.services[id.index()].state == State::Restarting {
            // Stays "restarting" until the spawn is reported.
        } else {
            self.set_state(id, State::Starting);
        }
        self.tracker.services[id.index()].spawn_pending = true;
        self.out.actions.push(Action::Spawn { service: id });
    }

    /// After a batch: a service that is cleaning up and has no member left
    /// settles; a settled service that gained members (late adoptees of a
    /// finished run) cleans them up.
    pub(super) fn settle_clean_ups(&mut self) {
        let touched: Vec<ServiceId> = self.before.keys().copied().collect();
        for id in touched {
            let service = &self.tracker.services[id.index()];
            if service.main.is_some() {
                continue;
            }
            let settled = matches!(
                service.state,
                State::Stopped | State::Failed | State::Restarting
            );
            if service.state == State::Stopping && service.members.is_empty() {
                self.finish_stop(id);
            } else if settled && !service.members.is_empty() {
                let members: Vec<Pid> = service.members.iter().copied().collect();
                self.signal_all(id, &members, Signal::KILL);
            }
        }
    }

    pub(super) fn signal_all(&mut self, id: ServiceId, pids: &[Pid], signal: Signal) {
        self.out
            .actions
            .extend(pids.iter().map(|&pid| Action::Signal {
                service: id,
                pid,
                signal,
            }));
    }

    pub(super) fn deadline_passed(&mut self, id: ServiceId) {
        let service = &self.tracker.services[id.index()];
        match service.state {
            State::Restarting => self.start(id),
            // Not running within start-timeout: stopped, and failed (or
            // restarted, as a failure is) with Result = timeout.
            State::Starting if service.main.is_some() || !service.members.is_empty() => {
                let after = match service.policy.restart {
                    Restart::No => AfterStop::Failed,
                    Restart::OnFailure | Restart::Always => AfterStop::Restart,
                };
                let service = self.touch(id);
                service.timed_out = true;
                service.result = RunResult::Timeout;
                self.set_deadline(id, None);
                self.begin_stop(id, after);
            }
            State::Stopping => {
                let members: Vec<Pid> = service.members.iter().copied().collect();
                self.signal_all(id, &members, Signal::KILL);
                self.touch(id).killed = true;
                self.set_deadline(id, None);
            }
            _ => self.set_deadline(id, None),
        }
    }

    pub(super) fn command(&mut self, id: ServiceId, command: Command) -> Result<(), CommandError> {
        let service = &self.tracker.services[id.index()];
        let state = service.state;
        let main = service.main;
        match command {
            Command::Start => match state {
                State::Stopped | State::Failed => {
                    self.touch(id).starts.clear();
                    self.start(id);
                }
                State::Restarting => self.start(id),
                State::Stopping => self.touch(id).after_stop = Some(AfterStop::StartAgain),
                State::Starting | State::Running => return Err(CommandError::AlreadyRunning),
            },
            Command::Stop => match state {
                State::Stopped | State::Failed => return Err(CommandError::NotRunning),
                State::Restarting => {
                    self.set_deadline(id, None);
                    self.set_state(id, State::Stopped);
                }
                State::Stopping => self.touch(id).after_stop = Some(AfterStop::Stopped),
                State::Starting | State::Running => {
                    self.touch(id).after_stop = None;
                    self.begin_stop(id, AfterStop::Stopped);
                }
            },
            Command::Restart => match state {
                State::Stopped | State::Failed => {
                    self.touch(id).starts.clear();
                    self.start(id);
                }
                State::Restarting => self.start(id),
                State::Stopping => self.touch(id).after_stop = Some(AfterStop::StartAgain),
                State::Starting | State::Running => {
                    self.touch(id).after_stop = None;
                    self.begin_stop(id, AfterStop::StartAgain);
                }
            },
            Command::Kill(_) | Command::Reload if main.is_none() => {
                return Err(CommandError::NotRunning);
            }
            Command::Kill(signal) => self.signal_main(id, main, signal),
            Command::ResetFailed => {
                if state == State::Failed {
                    let service = self.touch(id);
                    service.starts.clear();
                    service.result = RunResult::Success;
                    self.set_state(id, State::Stopped);
                }
            }
            Command::Reload => {
                let signal = service.policy.reload_signal;
                self.signal_main(id, main, signal);
            }
        }
        Ok(())
    }

    pub(super) fn signal_main(&mut self, id: ServiceId, main: Option<Pid>, signal: Signal) {
        if let Some(pid) = main {
            self.out.actions.push(Action::Signal {
                service: id,
                pid,
                signal,
            });
        }
    }
}
