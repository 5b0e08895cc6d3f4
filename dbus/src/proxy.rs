//! Client proxies for `org.adoptd1.Manager` and `org.adoptd1.Service`, and
//! the row type of `ListServices`.
//!
//! These traits restate `org.adoptd1.xml` in Rust; the crate's contract test
//! holds the two together. Control methods return as soon as adoptd has
//! accepted the command: a client that wants to wait watches `State`.
//!
//! Properties whose value never changes are declared `const` (read once,
//! cached, no change stream); `PIDs` is `false` because adoptd does not
//! signal its changes (a fork storm must not become a signal storm), so the
//! proxy reads it from the bus on every call.

use serde::{Deserialize, Serialize};
use zbus::{ObjectPath, OwnedObjectPath, Type, proxy};

use crate::{Error, LoadState, MainPidSource, ServiceResult, State};

/// One entry of `ListServices` (`(ssuutso)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ServiceRow {
    /// The service's name, `name` or `template@instance`.
    pub name: String,
    /// Its `State`.
    pub state: State,
    /// Its `MainPID`, 0 when none.
    pub main_pid: u32,
    /// Its `PreviousPID`, 0 when none.
    pub previous_pid: u32,
    /// Its `StateChangeTimestamp`, µs since the epoch.
    pub state_change_timestamp: u64,
    /// Its `LoadState`.
    pub load_state: LoadState,
    /// Its object path.
    pub path: OwnedObjectPath,
}

/// One line of `GetOutput` (`(tss)`): when adoptd read it (µs since the
/// epoch), `stdout` or `stderr`, and the line without its newline (bytes
/// that were not UTF-8 written `\xNN`, a cut line ending in ` [cut]`).
pub type OutputLine = (u64, String, String);

/// The manager object, `/org/adoptd1`.
#[proxy(
    interface = "org.adoptd1.Manager",
    default_service = "org.adoptd1",
    default_path = "/org/adoptd1"
)]
pub trait Manager {
    /// adoptd's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> zbus::Result<String>;

    /// The adoption source in use: `adoptsig`, `proc-connector` or `procfs`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn tracker(&self) -> zbus::Result<String>;

    /// `init` when adoptd is PID 1, else `subreaper`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn role(&self) -> zbus::Result<String>;

    /// How many reaped processes belonged to no service.
    #[zbus(property)]
    fn orphans_reaped(&self) -> zbus::Result<u64>;

    /// Every loaded service.
    fn list_services(&self) -> Result<Vec<ServiceRow>, Error>;

    /// The object path of a loaded service.
    fn get_service(&self, name: &str) -> Result<OwnedObjectPath, Error>;

    /// Starts a service, instantiating a template (`apache2@chroot3`) on
    /// demand; returns its object path.
    fn start_service(&self, name: &str) -> Result<OwnedObjectPath, Error>;

    /// Stops a service; returns its object path.
    fn stop_service(&self, name: &str) -> Result<OwnedObjectPath, Error>;

    /// Restarts a service; returns its object path.
    fn restart_service(&self, name: &str) -> Result<OwnedObjectPath, Error>;

    /// Re-reads the configuration directory.
    fn reload(&self) -> Result<(), Error>;

    /// Re-executes adoptd in place, keeping its pid and every service;
    /// answers before the exec, after which the name is owned anew.
    fn reexecute(&self) -> Result<(), Error>;

    /// A service object appeared.
    #[zbus(signal)]
    fn service_added(&self, name: &str, path: ObjectPath<'_>) -> zbus::Result<()>;

    /// A service object went away.
    #[zbus(signal)]
    fn service_removed(&self, name: &str, path: ObjectPath<'_>) -> zbus::Result<()>;
}

/// A service object, `/org/adoptd1/service/<escaped name>`: build it with
/// `ServiceProxy::new(&connection, service_path(name)).await`, or with the
/// path `GetService` returned (see [`service_path`](crate::service_path)).
#[proxy(interface = "org.adoptd1.Service", default_service = "org.adoptd1")]
pub trait Service {
    /// The full name, `apache2@chroot1`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> zbus::Result<String>;

    /// The template part, `apache2`; the name itself for a plain service.
    #[zbus(property(emits_changed_signal = "const"))]
    fn template(&self) -> zbus::Result<String>;

    /// The instance part, `chroot1`; empty for a plain service.
    #[zbus(property(emits_changed_signal = "const"))]
    fn instance(&self) -> zbus::Result<String>;

    /// The configured description, `%i` expanded.
    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;

    /// The lifecycle state.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<State>;

    /// The main process, 0 when none.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;

    /// The process the main process took over from, 0 when none.
    #[zbus(property, name = "PreviousPID")]
    fn previous_pid(&self) -> zbus::Result<u32>;

    /// How adoptd learnt `MainPID`.
    #[zbus(property, name = "MainPIDSource")]
    fn main_pid_source(&self) -> zbus::Result<MainPidSource>;

    /// Every member process; not signalled, read on demand.
    #[zbus(property(emits_changed_signal = "false"), name = "PIDs")]
    fn pids(&self) -> zbus::Result<Vec<u32>>;

    /// Hand-offs since the last start.
    #[zbus(property)]
    fn handoffs(&self) -> zbus::Result<u32>;

    /// Restarts so far.
    #[zbus(property)]
    fn restarts(&self) -> zbus::Result<u32>;

    /// When `State` last changed, in µs since the epoch.
    #[zbus(property)]
    fn state_change_timestamp(&self) -> zbus::Result<u64>;

    /// When adoptd re-attached the current run after a crash of the adoptd
    /// that started it, in µs since the epoch; 0 for a run it started.
    #[zbus(property)]
    fn reattached_timestamp(&self) -> zbus::Result<u64>;

    /// Exit code of the last main process that ended the service, −1 when
    /// none.
    #[zbus(property)]
    fn exit_code(&self) -> zbus::Result<i32>;

    /// Signal that killed the last main process that ended the service, −1
    /// when none.
    #[zbus(property)]
    fn exit_signal(&self) -> zbus::Result<i32>;

    /// Why the service last ended.
    #[zbus(property)]
    fn result(&self) -> zbus::Result<ServiceResult>;

    /// The configured argv, `%i` expanded.
    #[zbus(property)]
    fn command(&self) -> zbus::Result<Vec<String>>;

    /// The configured chroot, empty when none.
    #[zbus(property)]
    fn chroot(&self) -> zbus::Result<String>;

    /// The configured user, empty when adoptd's own.
    #[zbus(property)]
    fn user(&self) -> zbus::Result<String>;

    /// The configured `expect`: `auto`, `foreground`, `fork`, `daemon` or
    /// `notify`.
    #[zbus(property)]
    fn expect(&self) -> zbus::Result<String>;

    /// The configured `restart`: `no`, `on-failure` or `always`.
    #[zbus(property, name = "Restart")]
    fn restart_policy(&self) -> zbus::Result<String>;

    /// `loaded`, `bad-setting` or `not-found`.
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<LoadState>;

    /// Why the file was refused (`FILE:LINE: KEY: message`), empty when
    /// loaded.
    #[zbus(property)]
    fn load_error(&self) -> zbus::Result<String>;

    /// The service file (the template's for an instance).
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;

    /// The file on disk differs from what was last read (compared when
    /// read, never signalled).
    #[zbus(property(emits_changed_signal = "false"))]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;

    /// Why the last start could not run the program, empty when it could.
    #[zbus(property)]
    fn exec_error(&self) -> zbus::Result<String>;

    /// The last `STATUS=` the service sent over sd_notify.
    #[zbus(property)]
    fn status_text(&self) -> zbus::Result<String>;

    /// The configured group, empty when none.
    #[zbus(property)]
    fn group(&self) -> zbus::Result<String>;

    /// The configured working directory, empty for `/`.
    #[zbus(property)]
    fn working_directory(&self) -> zbus::Result<String>;

    /// The configured environment, as `K=V`.
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;

    /// The configured `restart-delay`, µs.
    #[zbus(property, name = "RestartUSec")]
    fn restart_usec(&self) -> zbus::Result<u64>;

    /// The configured `start-timeout`, µs; 0 for none.
    #[zbus(property, name = "TimeoutStartUSec")]
    fn timeout_start_usec(&self) -> zbus::Result<u64>;

    /// The configured `stop-timeout`, µs.
    #[zbus(property, name = "TimeoutStopUSec")]
    fn timeout_stop_usec(&self) -> zbus::Result<u64>;

    /// The configured `start-limit.burst`.
    #[zbus(property)]
    fn start_limit_burst(&self) -> zbus::Result<u32>;

    /// The configured `start-limit.interval`, µs.
    #[zbus(property, name = "StartLimitIntervalUSec")]
    fn start_limit_interval_usec(&self) -> zbus::Result<u64>;

    /// The configured `stop-signal`, as a number.
    #[zbus(property)]
    fn kill_signal(&self) -> zbus::Result<i32>;

    /// The configured `reload-signal`, as a number.
    #[zbus(property)]
    fn reload_signal(&self) -> zbus::Result<i32>;

    /// The configured `pid-file`, empty when none.
    #[zbus(property, name = "PIDFile")]
    fn pid_file(&self) -> zbus::Result<String>;

    /// The configured `output`: `log`, `null` or `inherit`.
    #[zbus(property)]
    fn output(&self) -> zbus::Result<String>;

    /// Whether the service starts when adoptd starts.
    #[zbus(property)]
    fn autostart(&self) -> zbus::Result<bool>;

    /// Starts the service.
    fn start(&self) -> Result<(), Error>;

    /// Stops the service; it is not restarted.
    fn stop(&self) -> Result<(), Error>;

    /// Stops the service, then starts it.
    fn restart(&self) -> Result<(), Error>;

    /// Sends the service's `reload-signal` to its main process.
    fn reload(&self) -> Result<(), Error>;

    /// Sends `signal` to the main process.
    fn kill(&self, signal: i32) -> Result<(), Error>;

    /// A failed service becomes stopped; its start-limit count starts again.
    fn reset_failed(&self) -> Result<(), Error>;

    /// The service's last output lines, oldest first, at most `lines`.
    /// Needs root, adoptd's own user, or polkit's `org.adoptd1.read-output`.
    fn get_output(&self, lines: u32) -> Result<Vec<OutputLine>, Error>;

    /// The read end of a pipe on which adoptd writes each new line of the
    /// output as one JSON object a line (`{"realtime":…,"stream":"stdout",
    /// "line":"…"}`) until the reader closes it; a reader that falls a
    /// full pipe behind is disconnected (end-of-file). Authorized as
    /// `get_output`.
    fn follow_output(&self) -> Result<zbus::OwnedFd, Error>;

    /// The main process handed over to `pid`; `previous_pid` is the process
    /// it took over from.
    #[zbus(signal)]
    fn adopted(&self, pid: u32, previous_pid: u32) -> zbus::Result<()>;

    /// The main process ended without a hand-off: `code` is its exit code
    /// and `signal` the signal that killed it, −1 for the one that does not
    /// apply.
    #[zbus(signal)]
    fn exited(&self, pid: u32, code: i32, signal: i32) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use zbus::wire::{LE, serialized::Context, to_bytes};

    use super::*;

    #[test]
    fn service_row_survives_the_wire() {
        let row = ServiceRow {
            name: "apache2@chroot1".to_owned(),
            state: State::Running,
            main_pid: 4242,
            previous_pid: 4241,
            state_change_timestamp: 1_700_000_000_000_000,
            load_state: LoadState::BadSetting,
            path: crate::service_path("apache2@chroot1"),
        };
        let encoded = to_bytes(Context::new(LE, 0), &vec![row.clone()]).unwrap();
        let (decoded, _): (Vec<ServiceRow>, _) = encoded.deserialize().unwrap();
        assert_eq!(decoded, [row]);
    }

    #[test]
    fn a_state_the_client_does_not_know_is_an_error_not_a_guess() {
        let encoded = to_bytes(Context::new(LE, 0), &"hibernating").unwrap();
        let decoded: zbus::Result<(State, _)> = encoded.deserialize();
        assert!(decoded.is_err());
    }
}
