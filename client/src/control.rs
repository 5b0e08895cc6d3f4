//! `start`, `stop`, `restart`, `reload` and `kill`.
//!
//! adoptd answers a control method as soon as it has accepted the
//! request; the service gets where it is going afterwards. To wait,
//! adoptctl subscribes to the services' `PropertiesChanged` *before* the
//! call, then follows `State` until the target. A `State` counts only with
//! a `StateChangeTimestamp` newer than the one read before the call: a
//! reply may overtake the signal of the change it caused, and a restarted
//! service is `running` both before and after.

use std::{collections::HashMap, io::IsTerminal as _};

use adoptd_dbus::{
    BUS_NAME, Error as BusError, ManagerProxy, SERVICE_INTERFACE, SERVICE_PATH_PREFIX,
    ServiceProxy, ServiceResult, Signal, State, service_path,
};
use futures_util::StreamExt as _;
use zbus::{MatchRule, MessageStream, OwnedVariant, proxy::CacheProperties};

use crate::{
    bus::Bus,
    error::{Exit, Failure},
    render,
};

/// A request that changes the state of services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }
}

/// Asks adoptd to `action` each of `names`, then (unless `no_block`)
/// waits for every one to get there.
pub async fn change(bus: &Bus, action: Action, names: &[String], no_block: bool) -> Exit {
    let manager = match manager(bus).await {
        Ok(manager) => manager,
        Err(failure) => return report(failure),
    };
    let mut changes = if no_block {
        None
    } else {
        match subscribe(bus).await {
            Ok(changes) => Some(changes),
            Err(failure) => return report(failure),
        }
    };
    let mut exit = Exit::Success;
    let mut waits: HashMap<String, Wait> = HashMap::new();
    for name in names {
        let path = service_path(name).to_string();
        if waits.contains_key(&path) {
            continue;
        }
        let before = if no_block {
            0
        } else {
            timestamp(bus, &path).await
        };
        let reply = match action {
            Action::Start => manager.start_service(name).await,
            Action::Stop => manager.stop_service(name).await,
            Action::Restart => manager.restart_service(name).await,
        };
        let before = match (action, reply) {
            (_, Ok(_)) => before,
            // Already where it is asked to go (or on its way there).
            (Action::Start, Err(BusError::AlreadyRunning(_))) => 0,
            (Action::Stop, Err(BusError::NotRunning(_))) => continue,
            (_, Err(error)) => {
                exit = exit.max(report(Failure::from_bus(Some(name), &bus.name, &error)));
                continue;
            }
        };
        waits.insert(path, Wait::new(name, action, before));
    }
    if let Some(changes) = changes.as_mut() {
        exit = exit.max(wait(bus, changes, waits).await);
    }
    exit
}

/// Sends the reload signal to each of `names`.
pub async fn reload(bus: &Bus, names: &[String]) -> Exit {
    signal_each(bus, names, None).await
}

/// Sends `signal` to the main process of each of `names`.
pub async fn kill(bus: &Bus, names: &[String], signal: &str) -> Exit {
    let number = match signal.parse::<Signal>() {
        Ok(parsed) => parsed.number(),
        Err(error) => {
            return report(Failure::new(
                Exit::Usage,
                format!("{signal:?} is not a signal: {error}"),
            ));
        }
    };
    signal_each(bus, names, Some(number)).await
}

/// Makes each failed service of `names` stopped, its start-limit count
/// cleared.
pub async fn reset_failed(bus: &Bus, names: &[String]) -> Exit {
    each(bus, names, Call::ResetFailed).await
}

/// What [`each`] calls on every service.
#[derive(Clone, Copy)]
enum Call {
    Kill(i32),
    Reload,
    ResetFailed,
}

async fn signal_each(bus: &Bus, names: &[String], signal: Option<i32>) -> Exit {
    each(bus, names, signal.map_or(Call::Reload, Call::Kill)).await
}

async fn each(bus: &Bus, names: &[String], call: Call) -> Exit {
    let mut exit = Exit::Success;
    for name in names {
        let service = ServiceProxy::builder(&bus.connection)
            .path(service_path(name))
            .cache_properties(CacheProperties::No)
            .build()
            .await;
        let service = match service {
            Ok(service) => service,
            Err(e) => {
                exit = exit.max(report(Failure::from_zbus(Some(name), &bus.name, &e)));
                continue;
            }
        };
        let reply = match call {
            Call::Kill(signal) => service.kill(signal).await,
            Call::Reload => service.reload().await,
            Call::ResetFailed => service.reset_failed().await,
        };
        if let Err(error) = reply {
            exit = exit.max(report(Failure::from_bus(Some(name), &bus.name, &error)));
        }
    }
    exit
}

async fn manager(bus: &Bus) -> Result<ManagerProxy<'static>, Failure> {
    ManagerProxy::builder(&bus.connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure::from_zbus(None, &bus.name, &e))
}

/// The signals a wait follows.
type Changes = futures_util::stream::Select<MessageStream, MessageStream>;

/// `PropertiesChanged` of every service object, and adoptd leaving.
async fn subscribe(bus: &Bus) -> Result<Changes, Failure> {
    let failed = |e: zbus::Error| Failure::from_zbus(None, &bus.name, &e);
    let changes = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace(SERVICE_PATH_PREFIX)
        .build()
        .map_err(failed)?;
    let owner = crate::bus::owner_changes().map_err(failed)?;
    // Every service's changes come in: a burst of other services' (a
    // reload, a restart storm) must not push out the one awaited, which
    // zbus would drop without a word once the queue is full.
    let queue = std::num::NonZeroUsize::new(1 << 16);
    let changes = MessageStream::for_match_rule(changes, &bus.connection, queue)
        .await
        .map_err(failed)?;
    let owner = MessageStream::for_match_rule(owner, &bus.connection, queue)
        .await
        .map_err(failed)?;
    Ok(futures_util::stream::select(changes, owner))
}

/// The service's `StateChangeTimestamp` now; 0 when it has no object yet
/// (a template instance that the start creates).
async fn timestamp(bus: &Bus, path: &str) -> u64 {
    let reply = bus
        .connection
        .call_method(
            Some(BUS_NAME),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(SERVICE_INTERFACE, "StateChangeTimestamp"),
        )
        .await;
    reply
        .ok()
        .and_then(|reply| reply.body().deserialize::<OwnedVariant>().ok())
        .and_then(|value| u64::try_from(value).ok())
        .unwrap_or(0)
}

/// What is known of one service being waited for.
#[derive(Debug)]
struct Wait {
    name: String,
    action: Action,
    /// `StateChangeTimestamp` before the request.
    before: u64,
    state: Option<State>,
    since: u64,
    result: Option<ServiceResult>,
    exit_code: i32,
    exit_signal: i32,
    /// Why a start asked for could not run the program.
    exec_error: Option<String>,
}

/// Where a wait stands.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Done,
    Failed(String),
}

impl Wait {
    fn new(name: &str, action: Action, before: u64) -> Self {
        Wait {
            name: name.to_owned(),
            action,
            before,
            state: None,
            since: 0,
            result: None,
            exit_code: -1,
            exit_signal: -1,
            exec_error: None,
        }
    }

    /// Takes in a change signalled after the request, or a reading whose
    /// state changed after it: an `ExecError` is this start's then (adoptd
    /// tries the program before it answers), not an earlier start's.
    fn changed(&mut self, changed: &HashMap<String, OwnedVariant>) {
        if let Some(error) = changed
            .get("ExecError")
            .and_then(|value| <&str>::try_from(value).ok())
            .filter(|error| !error.is_empty())
        {
            self.exec_error = Some(error.to_owned());
        }
        self.update(changed);
    }

    /// Takes in changed properties (from a signal or a read).
    fn update(&mut self, changed: &HashMap<String, OwnedVariant>) {
        let timestamp = changed
            .get("StateChangeTimestamp")
            .and_then(|value| u64::try_from(value).ok());
        let state = changed
            .get("State")
            .and_then(|value| <&str>::try_from(value).ok())
            .and_then(|state| state.parse::<State>().ok());
        // Never let an older reading overwrite a newer one.
        if let (Some(state), Some(timestamp)) = (state, timestamp)
            && timestamp >= self.since
        {
            self.state = Some(state);
            self.since = timestamp;
        }
        if let Some(result) = changed
            .get("Result")
            .and_then(|value| <&str>::try_from(value).ok())
            .and_then(|result| result.parse().ok())
        {
            self.result = Some(result);
        }
        if let Some(code) = changed
            .get("ExitCode")
            .and_then(|value| i32::try_from(value).ok())
        {
            self.exit_code = code;
        }
        if let Some(signal) = changed
            .get("ExitSignal")
            .and_then(|value| i32::try_from(value).ok())
        {
            self.exit_signal = signal;
        }
    }

    fn outcome(&self) -> Outcome {
        if let (Action::Start | Action::Restart, Some(error)) = (self.action, &self.exec_error) {
            return Outcome::Failed(format!("{} could not be started: {error}", self.name));
        }
        let Some(state) = self.state else {
            return Outcome::Pending;
        };
        if self.since <= self.before && self.before != 0 {
            return Outcome::Pending;
        }
        match (self.action, state) {
            (Action::Start | Action::Restart, State::Running) => Outcome::Done,
            (Action::Start | Action::Restart, State::Failed) => Outcome::Failed(format!(
                "{} failed to {}{}",
                self.name,
                self.action.verb(),
                self.why()
            )),
            (Action::Start | Action::Restart, State::Stopped) => Outcome::Failed(format!(
                "{} exited before it was running{}",
                self.name,
                self.why()
            )),
            (Action::Stop, State::Stopped | State::Failed) => Outcome::Done,
            _ => Outcome::Pending,
        }
    }

    /// `: exit-code (code 1)`, from what is known of the end.
    fn why(&self) -> String {
        let result = self
            .result
            .filter(|result| *result != ServiceResult::Success)
            .map(|result| result.as_str().to_owned());
        let exit = render::last_exit(self.exit_code, self.exit_signal);
        match (result, exit) {
            (Some(result), Some(exit)) => format!(": {result} ({exit})"),
            (Some(result), None) => format!(": {result}"),
            (None, Some(exit)) => format!(" ({exit})"),
            (None, None) => String::new(),
        }
    }
}

/// Follows `waits` until each is done or failed; the worst exit status.
async fn wait(bus: &Bus, changes: &mut Changes, mut waits: HashMap<String, Wait>) -> Exit {
    let mut exit = Exit::Success;
    // A first reading, in case every change happened before the
    // subscription delivered anything.
    let paths: Vec<String> = waits.keys().cloned().collect();
    for path in paths {
        if let Ok(properties) = get_all(bus, &path).await
            && let Some(wait) = waits.get_mut(&path)
        {
            let since = properties
                .get("StateChangeTimestamp")
                .and_then(|value| u64::try_from(value).ok())
                .unwrap_or(0);
            if since > wait.before {
                wait.changed(&properties);
            } else {
                wait.update(&properties);
            }
        }
    }
    exit = exit.max(settle(&mut waits));
    // On a terminal, a wait longer than a second says what it waits for.
    let terminal = std::io::stderr().is_terminal();
    let started = tokio::time::Instant::now();
    let mut progress = tokio::time::interval_at(
        started + std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(5),
    );
    while !waits.is_empty() {
        let next = tokio::select! {
            next = changes.next() => next,
            _ = progress.tick() => {
                if terminal {
                    say_progress(&waits, started.elapsed());
                }
                continue;
            }
        };
        let Some(message) = next else {
            return exit.max(report(Failure::failed(format!(
                "lost the connection to the {} while waiting",
                bus.name
            ))));
        };
        let Ok(message) = message else { continue };
        let header = message.header();
        if header
            .member()
            .is_some_and(|m| m.as_str() == "NameOwnerChanged")
        {
            let owner: Result<(String, String, String), _> = message.body().deserialize();
            if let Ok((_, _, new_owner)) = owner
                && new_owner.is_empty()
            {
                let names: Vec<&str> = waits.values().map(|w| w.name.as_str()).collect();
                return exit.max(report(Failure::failed(format!(
                    "adoptd left the {} while {} was being waited for",
                    bus.name,
                    names.join(", ")
                ))));
            }
            continue;
        }
        let Some(path) = header.path().map(|p| p.to_string()) else {
            continue;
        };
        let Some(wait) = waits.get_mut(&path) else {
            continue;
        };
        let body: Result<(String, HashMap<String, OwnedVariant>, Vec<String>), _> =
            message.body().deserialize();
        if let Ok((interface, changed, _)) = body
            && interface == SERVICE_INTERFACE
        {
            wait.changed(&changed);
        }
        exit = exit.max(settle(&mut waits));
    }
    exit
}

/// `adoptctl: waiting 6s for web to be running (now starting)`, one line
/// for every wait still pending.
fn say_progress(waits: &HashMap<String, Wait>, elapsed: std::time::Duration) {
    let mut pending: Vec<&Wait> = waits.values().collect();
    pending.sort_by(|a, b| a.name.cmp(&b.name));
    for wait in pending {
        let goal = match wait.action {
            Action::Start | Action::Restart => "running",
            Action::Stop => "stopped",
        };
        let now = wait.state.map_or("unknown", State::as_str);
        eprintln!(
            "adoptctl: waiting {}s for {} to be {goal} (now {now})",
            elapsed.as_secs(),
            wait.name
        );
    }
}

/// Removes the waits that are over, reporting failures.
fn settle(waits: &mut HashMap<String, Wait>) -> Exit {
    let mut exit = Exit::Success;
    waits.retain(|_, wait| match wait.outcome() {
        Outcome::Pending => true,
        Outcome::Done => false,
        Outcome::Failed(message) => {
            exit = exit.max(report(Failure::new(
                Exit::Failure,
                format!("{message}; see adoptctl status {}", wait.name),
            )));
            false
        }
    });
    exit
}

async fn get_all(bus: &Bus, path: &str) -> zbus::Result<HashMap<String, OwnedVariant>> {
    bus.connection
        .call_method(
            Some(BUS_NAME),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(SERVICE_INTERFACE),
        )
        .await?
        .body()
        .deserialize()
}

fn report(failure: Failure) -> Exit {
    crate::report(&failure);
    failure.exit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(state: &str, since: u64) -> HashMap<String, OwnedVariant> {
        HashMap::from([
            (
                "State".to_owned(),
                OwnedVariant::from(zbus::Str::from(state.to_owned())),
            ),
            ("StateChangeTimestamp".to_owned(), OwnedVariant::from(since)),
        ])
    }

    #[test]
    fn a_stale_running_does_not_end_a_restart() {
        let mut wait = Wait::new("web", Action::Restart, 100);
        wait.update(&changed("running", 100));
        assert_eq!(wait.outcome(), Outcome::Pending);
        wait.update(&changed("stopping", 200));
        assert_eq!(wait.outcome(), Outcome::Pending);
        wait.update(&changed("running", 300));
        assert_eq!(wait.outcome(), Outcome::Done);
    }

    #[test]
    fn an_older_reading_never_overwrites_a_newer_one() {
        let mut wait = Wait::new("web", Action::Start, 100);
        wait.update(&changed("running", 300));
        wait.update(&changed("stopped", 100));
        assert_eq!(wait.outcome(), Outcome::Done);
    }

    #[test]
    fn a_failed_start_says_why() {
        let mut wait = Wait::new("web", Action::Start, 100);
        let mut end = changed("failed", 200);
        end.insert(
            "Result".to_owned(),
            OwnedVariant::from(zbus::Str::from("exit-code")),
        );
        end.insert("ExitCode".to_owned(), OwnedVariant::from(3i32));
        end.insert("ExitSignal".to_owned(), OwnedVariant::from(-1i32));
        wait.update(&end);
        assert_eq!(
            wait.outcome(),
            Outcome::Failed("web failed to start: exit-code (code 3)".to_owned())
        );
    }

    #[test]
    fn stop_is_done_when_stopped_or_failed() {
        let mut wait = Wait::new("web", Action::Stop, 100);
        wait.update(&changed("stopping", 150));
        assert_eq!(wait.outcome(), Outcome::Pending);
        wait.update(&changed("failed", 200));
        assert_eq!(wait.outcome(), Outcome::Done);
    }
}
