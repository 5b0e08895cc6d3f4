//! `/org/adoptd1/service/<label>`, interface `org.adoptd1.Service`: one
//! object per loaded service.
//!
//! The object holds only the service's id and the shared registry (a few
//! words, so that ten thousand services stay cheap); every property is read
//! from the registry, which the bus task keeps current.

use std::sync::Arc;

use adoptd_dbus::{Error, LoadState, MainPidSource, OutputLine, ServiceResult, Signal, State};
use zbus::{Connection, interface, message::Header, object_server::SignalEmitter};

use super::{
    Entry, Shared, auth, configured,
    convert::{exit_code_and_signal, request_error},
};
use crate::{
    config, proc,
    supervisor::{Request, Target},
    tracker::{Command, ServiceId},
};

/// A Service object.
pub(super) struct Service {
    pub(super) id: ServiceId,
    pub(super) shared: Arc<Shared>,
}

#[interface(name = "org.adoptd1.Service")]
impl Service {
    /// The full name: apache2@chroot1.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.spec.name.clone())
    }

    /// The template part: apache2; the name itself for a plain service.
    #[zbus(property(emits_changed_signal = "const"))]
    fn template(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.spec.template().unwrap_or(&e.spec.name).to_owned())
    }

    /// The instance part: chroot1; empty for a plain service.
    #[zbus(property(emits_changed_signal = "const"))]
    fn instance(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.spec.instance().unwrap_or_default().to_owned())
    }

    /// The configured description, %i expanded.
    #[zbus(property)]
    fn description(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.spec.description.clone())
    }

    /// stopped, starting, running, stopping, restarting or failed.
    #[zbus(property)]
    fn state(&self) -> zbus::fdo::Result<State> {
        self.read(|e| State::from(e.status.state))
    }

    /// The main process; 0 when none.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::fdo::Result<u32> {
        self.read(|e| e.status.main_pid.unwrap_or(0))
    }

    /// The process the main process took over from; 0 when none.
    #[zbus(property, name = "PreviousPID")]
    fn previous_pid(&self) -> zbus::fdo::Result<u32> {
        self.read(|e| e.status.previous_pid.unwrap_or(0))
    }

    /// How MainPID was learnt: spawn, adoption, pid-file, notify or guess.
    #[zbus(property, name = "MainPIDSource")]
    fn main_pid_source(&self) -> zbus::fdo::Result<MainPidSource> {
        self.read(|e| MainPidSource::from(e.status.main_pid_source))
    }

    /// Every member process; not signalled (a fork storm must not become a
    /// signal storm).
    #[zbus(property(emits_changed_signal = "false"), name = "PIDs")]
    async fn pids(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> zbus::fdo::Result<Vec<u32>> {
        pids_now(&self.shared, self.id, Some(&Caller::of(header.as_ref()))).await
    }

    /// Hand-offs of the main process since the last start.
    #[zbus(property)]
    fn handoffs(&self) -> zbus::fdo::Result<u32> {
        self.read(|e| e.status.handoffs)
    }

    /// Restarts so far.
    #[zbus(property)]
    fn restarts(&self) -> zbus::fdo::Result<u32> {
        self.read(|e| e.status.restarts)
    }

    /// When State last changed, in microseconds since the epoch.
    #[zbus(property)]
    fn state_change_timestamp(&self) -> zbus::fdo::Result<u64> {
        self.read(|e| e.status.state_changed_at.realtime_us)
    }

    /// When this adoptd re-attached the current run, which an earlier
    /// adoptd started and left running when it ended without handing its
    /// state over (a crash), in microseconds since the epoch; 0 for a run
    /// this adoptd started.
    #[zbus(property)]
    fn reattached_timestamp(&self) -> zbus::fdo::Result<u64> {
        self.read(|e| e.status.reattached_at_us.unwrap_or(0))
    }

    /// Exit code of the last main process that ended the service (not of a
    /// hand-off); -1 when none.
    #[zbus(property)]
    fn exit_code(&self) -> zbus::fdo::Result<i32> {
        self.read(|e| exit_code_and_signal(e.status.last_exit).0)
    }

    /// Signal that killed the last main process that ended the service; -1
    /// when none.
    #[zbus(property)]
    fn exit_signal(&self) -> zbus::fdo::Result<i32> {
        self.read(|e| exit_code_and_signal(e.status.last_exit).1)
    }

    /// Why the service last ended: success, exit-code, signal, timeout or
    /// start-limit-hit.
    #[zbus(property)]
    fn result(&self) -> zbus::fdo::Result<ServiceResult> {
        self.read(|e| ServiceResult::from(e.status.result))
    }

    /// The configured argv, %i expanded.
    #[zbus(property)]
    fn command(&self) -> zbus::fdo::Result<Vec<String>> {
        self.read(|e| e.spec.exec.clone())
    }

    /// The configured chroot; empty when none.
    #[zbus(property)]
    fn chroot(&self) -> zbus::fdo::Result<String> {
        self.read(|e| configured::path_text(e.spec.chroot()))
    }

    /// The configured user; empty when adoptd's own.
    #[zbus(property)]
    fn user(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.spec.user().unwrap_or_default().to_owned())
    }

    /// The configured expect: auto, foreground, fork, daemon or notify.
    #[zbus(property)]
    fn expect(&self) -> zbus::fdo::Result<&'static str> {
        self.read(|e| e.spec.policy.expect.as_str())
    }

    /// The configured restart policy: no, on-failure or always.
    #[zbus(property)]
    fn restart(&self) -> zbus::fdo::Result<&'static str> {
        self.read(|e| e.spec.policy.restart.as_str())
    }

    /// loaded, bad-setting or not-found.
    #[zbus(property)]
    fn load_state(&self) -> zbus::fdo::Result<LoadState> {
        self.read(|e| e.load.state)
    }

    /// FILE:LINE: KEY: message of the refusal; empty when loaded.
    #[zbus(property)]
    fn load_error(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.load.error.clone().unwrap_or_default())
    }

    /// The service file (the template's file for an instance).
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.spec.source.to_string_lossy().into_owned())
    }

    /// The file on disk differs from what was last read (loaded or
    /// refused). Read on demand: the file is compared when asked, so no
    /// watch on the configuration directory costs a wake-up.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn need_daemon_reload(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> zbus::fdo::Result<bool> {
        need_daemon_reload_now(&self.shared, self.id, Some(&Caller::of(header.as_ref()))).await
    }

    /// Why the last start could not run the program; empty when it could.
    #[zbus(property)]
    fn exec_error(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.exec_error.clone())
    }

    /// The last STATUS= the service sent over sd_notify.
    #[zbus(property)]
    fn status_text(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.status_text.clone())
    }

    /// The configured group; empty when none.
    #[zbus(property)]
    fn group(&self) -> zbus::fdo::Result<String> {
        self.read(|e| e.spec.group().unwrap_or_default().to_owned())
    }

    /// The configured working directory; empty for /.
    #[zbus(property)]
    fn working_directory(&self) -> zbus::fdo::Result<String> {
        self.read(|e| configured::path_text(e.spec.working_directory()))
    }

    /// The configured environment, as K=V.
    #[zbus(property)]
    fn environment(&self) -> zbus::fdo::Result<Vec<String>> {
        self.read(configured::environment)
    }

    /// The configured restart-delay, in microseconds.
    #[zbus(property, name = "RestartUSec")]
    fn restart_usec(&self) -> zbus::fdo::Result<u64> {
        self.read(|e| configured::micros(e.spec.policy.restart_delay))
    }

    /// The configured start-timeout, in microseconds; 0 for none.
    #[zbus(property, name = "TimeoutStartUSec")]
    fn timeout_start_usec(&self) -> zbus::fdo::Result<u64> {
        self.read(|e| configured::micros(e.spec.policy.start_timeout))
    }

    /// The configured stop-timeout, in microseconds.
    #[zbus(property, name = "TimeoutStopUSec")]
    fn timeout_stop_usec(&self) -> zbus::fdo::Result<u64> {
        self.read(|e| configured::micros(e.spec.policy.stop_timeout))
    }

    /// The configured start-limit burst.
    #[zbus(property)]
    fn start_limit_burst(&self) -> zbus::fdo::Result<u32> {
        self.read(|e| e.spec.policy.start_limit.burst)
    }

    /// The configured start-limit interval, in microseconds.
    #[zbus(property, name = "StartLimitIntervalUSec")]
    fn start_limit_interval_usec(&self) -> zbus::fdo::Result<u64> {
        self.read(|e| configured::micros(e.spec.policy.start_limit.interval))
    }

    /// The configured stop-signal, as a number (systemd's KillSignal).
    #[zbus(property)]
    fn kill_signal(&self) -> zbus::fdo::Result<i32> {
        self.read(|e| e.spec.policy.stop_signal.number())
    }

    /// The configured reload-signal, as a number.
    #[zbus(property)]
    fn reload_signal(&self) -> zbus::fdo::Result<i32> {
        self.read(|e| e.spec.policy.reload_signal.number())
    }

    /// The configured pid-file; empty when none.
    #[zbus(property, name = "PIDFile")]
    fn pid_file(&self) -> zbus::fdo::Result<String> {
        self.read(|e| configured::path_text(e.spec.pid_file()))
    }

    /// The configured output: log, null or inherit.
    #[zbus(property)]
    fn output(&self) -> zbus::fdo::Result<&'static str> {
        self.read(|e| e.spec.output.as_str())
    }

    /// Whether the service starts when adoptd starts (for an instance:
    /// its template's).
    #[zbus(property)]
    fn autostart(&self) -> zbus::fdo::Result<bool> {
        self.read(|e| e.spec.autostart)
    }

    /// Starts the service; AlreadyRunning if it is starting or running.
    #[zbus(name = "Start")]
    async fn start_method(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.control(Command::Start, &header, connection).await
    }

    /// Stops the service; it is not restarted.
    #[zbus(name = "Stop")]
    async fn stop_method(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.control(Command::Stop, &header, connection).await
    }

    /// Stops the service if it runs, then starts it.
    #[zbus(name = "Restart")]
    async fn restart_method(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.control(Command::Restart, &header, connection).await
    }

    /// Sends the configured reload-signal (default SIGHUP) to the main
    /// process; NotRunning if there is none.
    #[zbus(name = "Reload")]
    async fn reload_method(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.control(Command::Reload, &header, connection).await
    }

    /// A failed service becomes stopped, and its start-limit count starts
    /// again; nothing for one that is not failed.
    async fn reset_failed(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.control(Command::ResetFailed, &header, connection)
            .await
    }

    /// Sends signal to the main process; NotRunning if there is none.
    async fn kill(
        &self,
        signal: i32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), KillError> {
        auth::authorize(connection, &header, self.shared.owner_uid)
            .await
            .map_err(KillError::Refused)?;
        let Some(signal) = Signal::new(signal) else {
            return Err(KillError::InvalidArgs(zbus::fdo::Error::InvalidArgs(
                format!(
                    "{signal} is not a signal: signals are numbered 1 to {}.",
                    libc::SIGRTMAX()
                ),
            )));
        };
        self.send(Command::Kill(signal))
            .await
            .map_err(KillError::Refused)
    }

    /// The service's last output lines, oldest first, at most lines.
    async fn get_output(
        &self,
        lines: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<OutputLine>, Error> {
        auth::authorize_reading_output(connection, &header, self.shared.owner_uid).await?;
        self.read(|_| ()).map_err(|e| Error::ZBus(e.into()))?;
        let count = usize::try_from(lines).unwrap_or(usize::MAX);
        Ok(self
            .shared
            .outputs
            .latest(self.id, count)
            .into_iter()
            .map(|line| {
                (
                    line.realtime_us,
                    line.stream.as_str().to_owned(),
                    line.text.into(),
                )
            })
            .collect())
    }

    /// The read end of a pipe on which adoptd writes each new output line
    /// as one JSON object a line, until the client closes it. A client
    /// that falls a full pipe behind is disconnected, never waited for
    /// (see [`crate::output::Record::follow`]).
    async fn follow_output(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<zbus::OwnedFd, Error> {
        auth::authorize_reading_output(connection, &header, self.shared.owner_uid).await?;
        let capacity = self
            .read(|e| e.spec.output_buffer)
            .map_err(|e| Error::ZBus(e.into()))?;
        let failed = |e: std::io::Error| Error::Failed(format!("cannot make the pipe: {e}."));
        let (read, write) = std::io::pipe().map_err(failed)?;
        self.shared
            .outputs
            .follow(self.id, capacity, write.into())
            .map_err(failed)?;
        Ok(zbus::OwnedFd::from(std::os::fd::OwnedFd::from(read)))
    }

    /// The main process handed over to pid; previous_pid is the process it
    /// took over from.
    #[zbus(signal)]
    pub(super) async fn adopted(
        emitter: &SignalEmitter<'_>,
        pid: u32,
        previous_pid: u32,
    ) -> zbus::Result<()>;

    /// The main process ended without a hand-off; code or signal is -1 when
    /// it does not apply.
    #[zbus(signal)]
    pub(super) async fn exited(
        emitter: &SignalEmitter<'_>,
        pid: u32,
        code: i32,
        signal: i32,
    ) -> zbus::Result<()>;
}

impl Service {
    /// Reads from this service's registry entry (which exists before the
    /// object is served).
    fn read<T>(&self, read: impl FnOnce(&Entry) -> T) -> zbus::fdo::Result<T> {
        self.shared
            .registry()
            .get(self.id)
            .map(read)
            .ok_or_else(gone)
    }

    async fn control(
        &self,
        command: Command,
        header: &Header<'_>,
        connection: &Connection,
    ) -> Result<(), Error> {
        auth::authorize(connection, header, self.shared.owner_uid).await?;
        self.send(command).await
    }

    /// Hands an authorized command to the supervisor.
    async fn send(&self, command: Command) -> Result<(), Error> {
        let (_, published) = self
            .shared
            .ask(|reply| Request::Control {
                service: Target::Id(self.id),
                command,
                reply,
            })
            .await?
            .map_err(request_error)?;
        // Answer once the registry shows what the command did.
        self.shared.wait_applied(published).await;
        Ok(())
    }
}

/// Whose turn a read takes: its sender's unique name, and the serial of
/// the call, whose expensive reads share one turn (see `turns`).
pub(super) struct Caller {
    name: String,
    serial: Option<u32>,
}

impl Caller {
    /// The sender of the message `header` heads. Without a header (zbus
    /// reading the object for a call of its own, which adoptd's
    /// ObjectManager leaves none of), the reads share one caller's turn.
    fn of(header: Option<&Header<'_>>) -> Self {
        Caller {
            name: header
                .and_then(|h| h.sender())
                .map(|sender| sender.to_string())
                .unwrap_or_default(),
            serial: header.map(|h| h.primary().serial_num().get()),
        }
    }

    /// The one caller that calls answered by a snapshot share.
    pub(super) fn snapshot() -> Self {
        Caller {
            name: String::new(),
            serial: None,
        }
    }
}

/// `service`'s member processes now, read alone in `caller`'s turn, or
/// without a turn for adoptd's own announcement of a new object (`None`:
/// one read per object added, which readers cannot multiply).
pub(super) async fn pids_now(
    shared: &Arc<Shared>,
    service: ServiceId,
    caller: Option<&Caller>,
) -> zbus::fdo::Result<Vec<u32>> {
    // One expensive read at a time, one per caller (see `turns`): the
    // supervisor answers at most one of these questions at a time, and
    // the walk runs on a blocking thread of low priority, so a read loop
    // costs the readers, never the supervision.
    let _turn = take_turn(shared, caller).await?;
    let members = shared
        .ask(|reply| Request::Members { service, reply })
        .await
        .map_err(failed)?;
    let all = tokio::task::spawn_blocking(move || proc::with_descendants(&members))
        .await
        .map_err(failed)?;
    shared.trim.replied();
    Ok(all)
}

/// Whether `service`'s file on disk differs from what was last read,
/// read now in `caller`'s turn (or without one, as [`pids_now`]).
pub(super) async fn need_daemon_reload_now(
    shared: &Arc<Shared>,
    service: ServiceId,
    caller: Option<&Caller>,
) -> zbus::fdo::Result<bool> {
    let (source, digest) = shared
        .registry()
        .get(service)
        .map(|e| (e.spec.source.clone(), e.load.digest))
        .ok_or_else(gone)?;
    // A file read per call: it takes its turn as PIDs does.
    let _turn = take_turn(shared, caller).await?;
    let now = tokio::task::spawn_blocking(move || config::file_digest(&source))
        .await
        .map_err(failed)?;
    Ok(now != digest)
}

/// `caller`'s turn for an expensive read; none for adoptd's own.
async fn take_turn<'a>(
    shared: &'a Shared,
    caller: Option<&Caller>,
) -> zbus::fdo::Result<Option<super::turns::Turn<'a>>> {
    match caller {
        Some(caller) => Ok(Some(
            shared
                .turns
                .take(&caller.name, caller.serial)
                .await
                .map_err(failed)?,
        )),
        None => Ok(None),
    }
}

fn failed(e: impl std::fmt::Display) -> zbus::fdo::Error {
    zbus::fdo::Error::Failed(e.to_string())
}

fn gone() -> zbus::fdo::Error {
    zbus::fdo::Error::UnknownObject("the service is gone".to_owned())
}

/// Kill's errors: the contract's, or the standard InvalidArgs for a number
/// that is no signal (adoptd's error type can only name its own errors).
#[derive(Debug)]
pub(super) enum KillError {
    Refused(Error),
    InvalidArgs(zbus::fdo::Error),
}

impl zbus::DBusError for KillError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::Message> {
        match self {
            KillError::Refused(e) => e.create_reply(call),
            KillError::InvalidArgs(e) => e.create_reply(call),
        }
    }

    fn name(&self) -> zbus::names::ErrorName<'_> {
        match self {
            KillError::Refused(e) => e.name(),
            KillError::InvalidArgs(e) => e.name(),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            KillError::Refused(e) => e.description(),
            KillError::InvalidArgs(e) => e.description(),
        }
    }
}
