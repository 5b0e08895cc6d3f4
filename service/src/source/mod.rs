//! Adoption sources: how adoptd learns that a process was reparented to it.
//!
//! One source is chosen at start-up. After every reap batch the supervisor
//! asks it to [`collect`](AdoptionSource::collect) everything it knows into
//! tracker [`Event`]s, *before* the tracker decides about the exits of the
//! batch: the kernel reparents a dying process's children before the
//! process becomes waitable, so the adoptions caused by an exit are always
//! known to a source that drains its information at that point.

use std::{fmt, io, os::fd::RawFd, str::FromStr};

use crate::{
    invocation::InvocationId,
    proc::Stat,
    tracker::{Clues, Event, ExitStatus, Pid, ServiceId},
};

pub mod adoptsig;
pub mod proc_connector;
pub mod procfs;
pub mod runs;

/// A way of learning adoptions.
pub trait AdoptionSource {
    /// The name shown in the Manager's `Tracker` property.
    fn kind(&self) -> SourceKind;

    /// adoptd started `pid` itself, for `service`'s run `invocation`: it
    /// is a known child, not an adoptee.
    fn spawned(&mut self, pid: Pid, service: ServiceId, invocation: InvocationId);

    /// Adoption notices read from adoptd's signalfd (the `adoptsig`
    /// source), handed over before each `collect`.
    fn adoption_notices(&mut self, _notices: &[(Pid, Pid)], _lost: bool) {}

    /// After `collect`: a child died while the source looked, so reaping
    /// again now would complete the moment.
    fn needs_another_round(&self) -> bool {
        false
    }

    /// Whether the source wants to see each child adoptd is about to reap
    /// (see [`AdoptionSource::look_before_reaping`]).
    fn looks_before_reaping(&self) -> bool {
        false
    }

    /// `pid` is a zombie child of adoptd's, reaped right after this call:
    /// its `/proc` entry can still be read.
    fn look_before_reaping(&mut self, _pid: Pid) {}

    /// A descriptor that becomes readable when the source has news of its
    /// own (besides reaps); the supervisor then calls `collect`.
    fn wakeup_fd(&self) -> Option<RawFd> {
        None
    }

    /// Shrinks the tables a storm left sparse (see [`crate::memory`]);
    /// says whether any was.
    fn shrink_if_sparse(&mut self) -> bool {
        false
    }

    /// Called after each reap batch with what was reaped: appends the
    /// adoptions (and, for sources that see them, forks) that happened
    /// since the last call. Must drain everything pending.
    fn collect(&mut self, reaped: &[(Pid, ExitStatus)], events: &mut Vec<Event>) -> io::Result<()>;
}

/// The adoption sources adoptd knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Adoptsig,
    ProcConnector,
    Procfs,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Adoptsig => "adoptsig",
            SourceKind::ProcConnector => "proc-connector",
            SourceKind::Procfs => "procfs",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--tracker`: a source, or the first one that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SourceChoice {
    #[default]
    Auto,
    Only(SourceKind),
}

impl FromStr for SourceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(SourceChoice::Auto),
            "adoptsig" => Ok(SourceChoice::Only(SourceKind::Adoptsig)),
            "proc-connector" => Ok(SourceChoice::Only(SourceKind::ProcConnector)),
            "procfs" => Ok(SourceChoice::Only(SourceKind::Procfs)),
            other => Err(format!(
                "unknown adoption source {other:?} (choose auto, adoptsig, proc-connector or procfs)"
            )),
        }
    }
}

/// Why no source could be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the {0} source is not available in this build of adoptd")]
    NotBuilt(SourceKind),
    #[error("the {kind} source cannot be used on this system")]
    Unavailable {
        kind: SourceKind,
        #[source]
        source: io::Error,
    },
}

/// Opens the chosen source; `auto` takes the first that works, in the
/// order of DESIGN.md, and logs why it passed over the others.
pub fn open(choice: SourceChoice) -> Result<Box<dyn AdoptionSource + Send>, SourceError> {
    let order: &[SourceKind] = match choice {
        SourceChoice::Auto => &[
            SourceKind::Adoptsig,
            SourceKind::ProcConnector,
            SourceKind::Procfs,
        ],
        SourceChoice::Only(kind) => match kind {
            SourceKind::Adoptsig => &[SourceKind::Adoptsig],
            SourceKind::ProcConnector => &[SourceKind::ProcConnector],
            SourceKind::Procfs => &[SourceKind::Procfs],
        },
    };
    let mut last_error = None;
    for &kind in order {
        match open_one(kind) {
            Ok(source) => return Ok(source),
            Err(error) => {
                if choice == SourceChoice::Auto {
                    tracing::info!(source = %kind, "passing over the {kind} source: {}", crate::errors::chain(&error));
                }
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or(SourceError::NotBuilt(SourceKind::Procfs)))
}

fn open_one(kind: SourceKind) -> Result<Box<dyn AdoptionSource + Send>, SourceError> {
    match kind {
        SourceKind::Procfs => procfs::Procfs::open()
            .map(|s| Box::new(s) as Box<dyn AdoptionSource + Send>)
            .map_err(|source| SourceError::Unavailable { kind, source }),
        SourceKind::ProcConnector => proc_connector::ProcConnector::open()
            .map(|s| Box::new(s) as Box<dyn AdoptionSource + Send>)
            .map_err(|source| SourceError::Unavailable { kind, source }),
        SourceKind::Adoptsig => adoptsig::Adoptsig::open()
            .map(|s| Box::new(s) as Box<dyn AdoptionSource + Send>)
            .map_err(|source| SourceError::Unavailable { kind, source }),
    }
}

/// What a process's `stat` tells the tracker about where it belongs.
fn clues_of(stat: Stat) -> Clues {
    Clues {
        session: Some(stat.session),
        start_time: Some(stat.start_time),
        ..Clues::default()
    }
}
