//! What a service is configured to do that the tracker acts on: how its
//! main process behaves after exec, when it restarts, how it stops.
//!
//! [`Policy::default`] is the one statement of the defaults DESIGN.md
//! gives ("Service files"): a service file that leaves a key out gets the
//! value written here.

use std::time::Duration;

use adoptd_dbus::Signal;
use serde::{Deserialize, Serialize};

/// What the supervisor knows of a service's configuration that matters
/// for following and restarting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub expect: Expect,
    pub restart: Restart,
    pub restart_delay: Duration,
    pub start_limit: StartLimit,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub reload_signal: Signal,
    /// How long `fork`, `daemon` and `notify` services may take to be
    /// running; zero for no limit.
    pub start_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            expect: Expect::Auto,
            restart: Restart::OnFailure,
            restart_delay: Duration::from_millis(100),
            start_limit: StartLimit {
                burst: 5,
                interval: Duration::from_secs(10),
            },
            stop_signal: Signal::TERM,
            stop_timeout: Duration::from_secs(10),
            reload_signal: Signal::HUP,
            start_timeout: Duration::from_secs(90),
        }
    }
}

/// How the service's main process is expected to behave after exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Follow whatever the process does.
    Auto,
    /// The exec'd process stays the main process.
    Foreground,
    /// The process forks once and its parent exits.
    Fork,
    /// The process daemonizes: fork, exit, fork, exit.
    Daemon,
    /// Hand-offs are followed as with `Auto`; the service is running once
    /// one of its processes sends `READY=1` over `$NOTIFY_SOCKET`.
    Notify,
}

impl Expect {
    /// The spelling of service files and of the `Expect` property:
    /// `"auto"`, `"foreground"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Auto => "auto",
            Expect::Foreground => "foreground",
            Expect::Fork => "fork",
            Expect::Daemon => "daemon",
            Expect::Notify => "notify",
        }
    }
}

/// When a service whose main process ended is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    No,
    OnFailure,
    Always,
}

impl Restart {
    /// The spelling of service files and of the `Restart` property:
    /// `"no"`, `"on-failure"`, `"always"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

/// At most `burst` starts within any `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartLimit {
    /// At least 1.
    pub burst: u32,
    /// More than zero.
    pub interval: Duration,
}
