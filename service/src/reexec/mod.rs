//! Re-exec in place: adoptd replaces its own image (an upgrade, or
//! `adoptctl daemon-reexec`) without letting go of anything it supervises.
//!
//! What it owns: the way state crosses the `execve`. The supervisor writes
//! a [`snapshot::Envelope`] (every service's tracker state, members,
//! lineage, counters, timestamps, deadlines, invocation ids, the
//! catalogue, the source's knowledge) as JSON into a memfd; [`exec`]
//! clears close-on-exec on that memfd and on every descriptor the new image
//! needs (pidfds, output pipes, the notification socket), names the memfd
//! in [`STATE_FD_VARIABLE`] and executes the program adoptd was started as.
//! The new image finds the variable ([`inherited`]), reads the snapshot
//! and restores it before it publishes anything.
//!
//! Invariants:
//! - the pid stays, so adoptd stays the parent and reaper of every child:
//!   a child that dies during the exec stays a zombie (nobody else may reap
//!   it, and its pid cannot be reused), and the new image reaps and
//!   decides it in its first moment;
//! - the signal mask is kept by `execve`, so SIGCHLD and the handled
//!   signals that arrive meanwhile wait for the new image's signalfd;
//! - a snapshot the new image cannot read (a [`snapshot::FORMAT`] it does
//!   not know, or a broken one) never leads to a second copy of a daemon:
//!   the services its stable part ([`snapshot::Running`]) names as alive
//!   are not started, and when even that part is unreadable no service is
//!   started while adoptd has a live child (see [`Fallback`]);
//! - an `execve` that fails leaves the old image running as before: the
//!   descriptors get close-on-exec back and the memfd is closed.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

pub mod exec;
pub mod snapshot;

pub use exec::{Program, exec};

use crate::tracker::Pid;

/// The environment variable that names the snapshot's descriptor in the
/// new image.
pub const STATE_FD_VARIABLE: &str = "ADOPTD_STATE_FD";

/// Why a re-exec could not be made, or its snapshot not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReexecError {
    #[error("cannot write the state for the new image")]
    Write(#[source] std::io::Error),
    #[error("cannot encode the state for the new image")]
    Encode(#[source] serde_json::Error),
    #[error("cannot keep descriptor {fd} open across the exec")]
    Keep {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot execute {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("${STATE_FD_VARIABLE}={0:?} does not name a descriptor")]
    BadVariable(String),
    #[error("cannot read the state the previous image left in descriptor {fd}")]
    Read {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
    #[error("the state the previous image left is not readable JSON")]
    Decode(#[source] serde_json::Error),
    #[error(
        "the previous image wrote state format {found}; this adoptd reads format {}",
        snapshot::FORMAT
    )]
    UnknownFormat { found: u32 },
}

/// What the new image found of the previous one's state.
#[derive(Debug)]
pub enum Inherited {
    /// Everything: restore it.
    State(Box<snapshot::State>),
    /// A state this image cannot restore. The services named here still
    /// have live processes and must not be started; `None` when even the
    /// names could not be read, and then no service may start while adoptd
    /// has a live child.
    Fallback(Fallback),
}

/// The part of an unreadable state that still keeps duplicates away.
#[derive(Debug)]
pub struct Fallback {
    /// Why the state could not be restored, for the log.
    pub reason: String,
    /// The services that had live processes, with those pids, when the
    /// stable part was readable.
    pub running: Option<BTreeMap<String, BTreeSet<Pid>>>,
}

/// The state the previous image left, if adoptd was re-executed: `None`
/// on an ordinary start. Reads and closes the descriptor.
pub fn inherited() -> Option<Inherited> {
    let value = std::env::var_os(STATE_FD_VARIABLE)?;
    let text = value.to_string_lossy().into_owned();
    Some(match read_state(&text) {
        Ok(bytes) => decode(&bytes),
        Err(error) => Inherited::Fallback(Fallback {
            reason: crate::errors::chain(&error),
            running: None,
        }),
    })
}

fn read_state(variable: &str) -> Result<Vec<u8>, ReexecError> {
    let fd: RawFd = variable
        .parse()
        .ok()
        .filter(|&fd| fd > 2 && exec::is_open(fd))
        .ok_or_else(|| ReexecError::BadVariable(variable.to_owned()))?;
    // SAFETY: the previous image left this descriptor for this image
    // alone (checked open above); nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| ReexecError::Read { fd, source })?;
    Ok(bytes)
}

/// Reads a snapshot: its format first, then the part of that format.
pub fn decode(bytes: &[u8]) -> Inherited {
    let envelope: snapshot::Envelope<serde_json::Value> = match serde_json::from_slice(bytes) {
        Ok(envelope) => envelope,
        Err(error) => {
            return Inherited::Fallback(Fallback {
                reason: crate::errors::chain(&ReexecError::Decode(error)),
                running: stable_names(bytes),
            });
        }
    };
    let running = || Some(by_name(&envelope.running));
    if envelope.format != snapshot::FORMAT {
        return Inherited::Fallback(Fallback {
            reason: ReexecError::UnknownFormat {
                found: envelope.format,
            }
            .to_string(),
            running: running(),
        });
    }
    match serde_json::from_value::<snapshot::State>(envelope.state.clone()) {
        Ok(state) => Inherited::State(Box::new(state)),
        Err(error) => Inherited::Fallback(Fallback {
            reason: crate::errors::chain(&ReexecError::Decode(error)),
            running: running(),
        }),
    }
}

/// The names of the stable part alone, from a snapshot whose other parts
/// do not read.
fn stable_names(bytes: &[u8]) -> Option<BTreeMap<String, BTreeSet<Pid>>> {
    #[derive(serde::Deserialize)]
    struct Stable {
        running: Vec<snapshot::Running>,
    }
    let stable: Stable = serde_json::from_slice(bytes).ok()?;
    Some(by_name(&stable.running))
}

fn by_name(running: &[snapshot::Running]) -> BTreeMap<String, BTreeSet<Pid>> {
    running
        .iter()
        .filter(|r| !r.pids.is_empty())
        .map(|r| (r.name.clone(), r.pids.iter().copied().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_format_falls_back_to_the_names_of_what_runs() {
        let text = br#"{"format": 99, "running": [{"name": "nginx", "pids": [42]},
            {"name": "idle", "pids": []}], "state": {"anything": true}}"#;
        let Inherited::Fallback(fallback) = decode(text) else {
            panic!("format 99 was restored");
        };
        assert!(fallback.reason.contains("format 99"), "{}", fallback.reason);
        assert_eq!(
            fallback.running,
            Some(BTreeMap::from([("nginx".to_owned(), BTreeSet::from([42]))]))
        );
    }

    #[test]
    fn a_broken_state_of_the_known_format_falls_back_too() {
        let text = format!(
            r#"{{"format": {}, "running": [{{"name": "redis", "pids": [7]}}], "state": {{}}}}"#,
            snapshot::FORMAT
        );
        let Inherited::Fallback(fallback) = decode(text.as_bytes()) else {
            panic!("an empty state was restored");
        };
        assert_eq!(
            fallback.running,
            Some(BTreeMap::from([("redis".to_owned(), BTreeSet::from([7]))]))
        );
    }

    #[test]
    fn garbage_names_nothing_and_so_starts_nothing_while_children_live() {
        let Inherited::Fallback(fallback) = decode(b"\x00not json") else {
            panic!("garbage was restored");
        };
        assert_eq!(fallback.running, None);
    }
}
