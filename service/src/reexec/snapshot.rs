//! The snapshot a re-exec hands the new image: its format and its parts.
//!
//! An [`Envelope`] is read the same way by every version of adoptd: its
//! `format` says how to read `state`, and `running` (the services that
//! have live processes, by name, with those pids) stays readable whatever
//! the format, so that a binary which cannot restore a newer or older
//! state still knows what not to start again. Anything that changes the
//! meaning of `state` takes a new [`FORMAT`].
//!
//! The writer borrows what it saves ([`Saving`]); the reader owns it
//! ([`State`]). Both are one generic shape, so they cannot drift apart.

use std::{os::fd::RawFd, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    config::ServiceSpec,
    invocation::InvocationId,
    output::{Line, ReadPipes},
    supervisor::Load,
    tracker::{Pid, ServiceId, Tracker},
};

/// The format of [`State`] this adoptd writes and reads.
pub const FORMAT: u32 = 1;

/// A whole snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<S> {
    /// The writer's [`FORMAT`].
    pub format: u32,
    /// Every service with live processes: the part every version reads.
    pub running: Vec<Running>,
    /// The part of this format.
    pub state: S,
}

/// A service that has live processes, in the stable part.
#[derive(Debug, Serialize, Deserialize)]
pub struct Running {
    pub name: String,
    /// Its main process first, then its other members.
    pub pids: Vec<Pid>,
}

/// The state of format 1, generic over borrowed (writing) and owned
/// (reading) parts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Parts<T, S> {
    /// The supervisor's epoch, as a reading of `CLOCK_MONOTONIC`: the
    /// tracker's deadlines and start times count from it, so the new image
    /// takes the same epoch and they keep their meaning.
    pub epoch: Duration,
    pub tracker: T,
    /// Indexed by `ServiceId`, as the tracker's table: removed services
    /// stay (not `named`), so ids do not move.
    pub services: Vec<Service<S>>,
    pub source: Source,
    /// Every pidfd adoptd holds: the pid and the descriptor, kept open
    /// across the exec.
    pub pidfds: Vec<(Pid, RawFd)>,
    /// The pipes of every running output reader.
    pub outputs: Vec<ReadPipes>,
    /// The lines each service's output record keeps (`GetOutput`).
    pub kept_lines: Vec<(ServiceId, Vec<Line>)>,
    /// The sd_notify socket, when there is one.
    pub notify: Option<Notify>,
    /// Each service's current run's invocation id, which the record for
    /// a re-attach after a crash names ([`crate::reattach`]).
    #[serde(default)]
    pub invocations: Vec<(ServiceId, InvocationId)>,
    /// Exits already reported of processes followed by pidfd that were
    /// zombies then, with their start time: if adoptd inherits and reaps
    /// one after the exec, that reap is not news.
    #[serde(default)]
    pub reported_zombies: Vec<(Pid, u64)>,
}

/// What the writer saves, borrowed.
pub type Saving<'a> = Parts<&'a Tracker, &'a ServiceSpec>;

/// What the reader restores.
pub type State = Parts<Tracker, ServiceSpec>;

/// One service of the catalogue.
#[derive(Debug, Serialize, Deserialize)]
pub struct Service<S> {
    /// The service as loaded (not as its file may say now: that is what
    /// `NeedDaemonReload` shows, and it must show the same after the exec).
    pub spec: S,
    pub load: Load,
    /// Its name resolves; false for a service removed, kept for its id.
    pub named: bool,
    /// Known only from a refused file: never started.
    pub stub: bool,
    /// Its file is gone; removed once it settles.
    pub retiring: bool,
    /// Why its last start could not run the program.
    pub exec_error: Option<String>,
    /// The last `STATUS=` it sent over sd_notify.
    pub status_text: Option<String>,
}

/// What the adoption source knew.
#[derive(Debug, Serialize, Deserialize)]
pub struct Source {
    /// The source's name (`procfs`, …): a state is only restored into a
    /// source of the same kind.
    pub kind: String,
    pub state: serde_json::Value,
}

/// The sd_notify socket and the address the services were given.
#[derive(Debug, Serialize, Deserialize)]
pub struct Notify {
    pub fd: RawFd,
    pub address: String,
}
