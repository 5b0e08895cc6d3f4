//! adoptd: a supervisor that follows every daemon to its real main process.
//!
//! The binary is a thin `main` over [`run`]. Inside, modules are named
//! after concepts: [`config`] turns service files into specs, [`tracker`]
//! is the pure state machine that knows which process is each service,
//! [`supervisor`] owns all state and drives the tracker, [`spawn`] starts
//! programs, [`reaper`] collects dead children, [`output`] keeps what
//! services print, [`source`] learns of adoptions, [`proc`] reads `/proc`,
//! [`reexec`] and [`reattach`] carry supervision across adoptd's own
//! re-exec and crash, and [`bus`] publishes it all on D-Bus.
//!
//! # Threads and tasks
//!
//! Every thread and task adoptd runs, once:
//!
//! - the main thread drives a current-thread tokio runtime, on which run
//!   - the supervisor's loop ([`supervisor::Supervisor::run`]), the one
//!     owner of all state and the only code that reaps, spawns or signals;
//!   - one task reading the stdout and stderr of every running service
//!     with `output = "log"` (one epoll set of their pipes) into the log
//!     and their [`output`] records;
//!   - one task per main process that is not adoptd's child (`MAINPID=`
//!     naming a worker), and per process of a run re-attached after a
//!     crash ([`reattach`]), waiting on its pidfd for its end;
//! - the bus thread ([`bus::start`]) drives a current-thread runtime of
//!   its own, so that no read by a client runs on the supervisor's thread;
//!   on it run
//!   - the bus task ([`bus::run`]), which owns the connection and the
//!     registry of what is published (it also waits, with inotify, for a
//!     missing bus socket to appear), and the method calls zbus runs for
//!     it;
//!   - a short-lived task that gives memory back after a burst of large
//!     replies;
//! - that runtime's blocking threads, at a lower priority than adoptd's,
//!   walk `/proc` for `PIDs` (one walk at a time, one per caller) and read
//!   service files for `NeedDaemonReload`;
//! - with `--private-bus`, one thread runs the embedded broker on a
//!   runtime of its own ([`bus::private`]).
//!
//! Every thread starts with SIGCHLD and the other handled signals blocked
//! ([`reaper::block_signals`] runs before the runtime), so only the
//! supervisor's signalfd ever sees them.
use std::{future::Future, path::PathBuf};

use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::info;

pub mod bus;
pub mod config;
pub mod errors;
pub mod exit_info;
pub mod invocation;
pub mod logging;
pub mod memory;
pub mod notify;
pub mod output;
pub mod proc;
pub mod reaper;
pub mod reattach;
pub mod reexec;
pub mod source;
pub mod spawn;
pub mod supervisor;
pub mod tracker;

pub use bus::BusChoice;
pub use source::SourceChoice;
pub use supervisor::Role;

/// How to run adoptd.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the service files are.
    pub config_dir: PathBuf,
    /// Which adoption source to use (`--tracker`).
    pub source: SourceChoice,
    /// Where to publish the services.
    pub bus: BusChoice,
    /// Where the record of what runs is kept, for a re-attach after a
    /// crash (`--state-dir`; see [`reattach::default_state_dir`]).
    pub state_dir: Option<PathBuf>,
}

/// Why adoptd could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot become a child subreaper")]
    Subreaper(#[source] nix::Error),
    #[error("no adoption source can be used")]
    Source(#[from] source::SourceError),
    #[error("cannot open the signalfd")]
    Signals(#[source] std::io::Error),
    #[error("cannot wait on the signalfd any more, so no child can be reaped")]
    Reaping(#[source] std::io::Error),
}

/// Supervises the services of `options.config_dir` until `shutdown`
/// resolves or SIGTERM/SIGINT arrives, then stops them all and returns.
///
/// The caller must have blocked [`reaper::HANDLED`] signals in every thread
/// (see [`reaper::block_signals`]) before starting the runtime.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let role = role()?;
    let source = source::open(options.source)?;
    let signals = reaper::Signals::open().map_err(|e| RunError::Signals(e.into()))?;
    // SAFETY: `Signals` owns its signalfd and never closes or replaces it
    // while it lives, so the descriptor stays the one registered.
    let signals =
        unsafe { AsyncFd::register_with_interest(signals, tokio::io::Interest::READABLE) }
            .map_err(|e| RunError::Signals(e.into()))?;
    let descriptor_limit = spawn::raise_descriptor_limit();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        role = role.as_str(),
        tracker = source.kind().as_str(),
        descriptors = descriptor_limit.unwrap_or(0),
        "adoptd starting"
    );
    // The bus layer gets every update from the first on, so it never
    // needs the supervisor to repeat itself (not even after a reconnect).
    let (updates, published) = mpsc::unbounded_channel();
    let (requests, receiver) = mpsc::channel(64);
    let identity = bus::Identity {
        role: role.as_str(),
        source: source.kind().as_str(),
    };
    let outputs = std::sync::Arc::new(output::Outputs::default());
    let mut supervisor = supervisor::Supervisor::new(
        options.config_dir,
        source,
        signals,
        updates,
        std::sync::Arc::clone(&outputs),
    );
    supervisor.keep_record_in(options.state_dir);
    match reexec::inherited() {
        None => supervisor.load_reattaching(),
        Some(reexec::Inherited::State(state)) => supervisor.restore(*state),
        Some(reexec::Inherited::Fallback(fallback)) => {
            supervisor.load_after_unreadable_state(fallback);
        }
    }
    // Started once everything loaded or restored is queued for it: the
    // bus claims the name only after publishing what it was given first,
    // so a client never finds the name without the objects.
    bus::start(options.bus, identity, published, requests, outputs);
    supervisor
        .run(receiver, shutdown)
        .await
        .map_err(RunError::Reaping)
}

/// PID 1 is init; anything else makes itself a child subreaper so that
/// orphans of its services are reparented to it.
fn role() -> Result<Role, RunError> {
    if std::process::id() == 1 {
        return Ok(Role::Init);
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(RunError::Subreaper)?;
    Ok(Role::Subreaper)
}
