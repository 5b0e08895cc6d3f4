//! One reading of every service's expensive properties (`PIDs`,
//! `NeedDaemonReload`) for `GetManagedObjects`, which reads every object
//! at once ([`super::object_manager`]). Read object by object, with a turn
//! each (see `turns`), ten thousand services took minutes. A snapshot asks
//! the supervisor once, walks /proc once and reads each file once, in one
//! turn, and answers every object of the call from that.
//!
//! Invariants:
//!
//! - A reading is used only while the snapshot is younger than
//!   [`LIFETIME`] and the service's published status and loaded file are
//!   still what they were when it was taken; otherwise (a service that
//!   started, stopped or reloaded since, or is newer than the snapshot)
//!   the property is read alone, as for any caller.
//! - Reads that name their caller (`Get`, `GetAll`) never use a snapshot.
//! - At most one snapshot is kept, and it is dropped once it is too old
//!   to be used, so it costs memory only around such calls.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{sync::Mutex, time::Instant};

use super::Shared;
use crate::{
    config, proc,
    supervisor::Request,
    tracker::{ServiceId, Status},
};

/// How long a snapshot answers: long enough for one `GetManagedObjects`
/// of ten thousand objects to be assembled, short enough that no reader
/// is told of processes gone a second ago.
const LIFETIME: Duration = Duration::from_secs(1);

/// The snapshot in use, if any.
#[derive(Default)]
pub(super) struct Snapshots {
    current: Mutex<Option<Arc<Snapshot>>>,
}

/// The expensive properties of one service, as read for a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Reading {
    pub(super) pids: Vec<u32>,
    pub(super) need_daemon_reload: bool,
}

struct Snapshot {
    taken: Instant,
    services: HashMap<ServiceId, Taken>,
}

/// A reading and what the service was when it was taken.
struct Taken {
    status: Status,
    loaded_digest: Option<u64>,
    reading: Reading,
}

impl Snapshots {
    /// `service`'s reading in a snapshot of every service, taking one if
    /// none is young enough; `None` if the service changed since, or is
    /// newer than any snapshot: the caller then reads it alone.
    pub(super) async fn reading(
        shared: &Arc<Shared>,
        service: ServiceId,
    ) -> Result<Option<Reading>, adoptd_dbus::Error> {
        let mut current = shared.snapshots.current.lock().await;
        let young = |snapshot: &Snapshot| snapshot.taken.elapsed() < LIFETIME;
        let snapshot = match current.as_ref() {
            Some(snapshot) if young(snapshot) => Arc::clone(snapshot),
            _ => {
                let snapshot = Arc::new(take(shared).await?);
                *current = Some(Arc::clone(&snapshot));
                forget_when_old(Arc::downgrade(shared), Arc::downgrade(&snapshot));
                snapshot
            }
        };
        drop(current);
        let registry = shared.registry();
        let Some(entry) = registry.get(service) else {
            return Ok(None);
        };
        let reading = snapshot
            .services
            .get(&service)
            .filter(|taken| {
                taken.status == entry.status && taken.loaded_digest == entry.load.digest
            })
            .map(|taken| taken.reading.clone());
        drop(registry);
        if reading.is_some() {
            // Each goes into a reply of every object: a burst of them is
            // a large reply, whose memory is given back after it.
            shared.trim.replied();
        }
        Ok(reading)
    }
}

/// Reads every service's expensive properties, in one turn.
async fn take(shared: &Arc<Shared>) -> Result<Snapshot, adoptd_dbus::Error> {
    let failed = |e: &dyn std::fmt::Display| adoptd_dbus::Error::Failed(e.to_string());
    // The calls a snapshot answers name no caller: they share one.
    let _turn = shared.turns.take("", None).await.map_err(|e| failed(&e))?;
    // Its age counts from before anything is read.
    let taken = Instant::now();
    let files: Vec<(ServiceId, Status, Option<u64>, PathBuf)> = shared
        .registry()
        .entries()
        .map(|e| (e.id, e.status, e.load.digest, e.spec.source.clone()))
        .collect();
    let members: HashMap<ServiceId, Vec<u32>> = shared
        .ask(|reply| Request::AllMembers { reply })
        .await?
        .into_iter()
        .collect();
    let services = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|(id, status, loaded_digest, source)| {
                let pids = members
                    .get(&id)
                    .map(|members| proc::with_descendants(members))
                    .unwrap_or_default();
                let reading = Reading {
                    pids,
                    need_daemon_reload: config::file_digest(&source) != loaded_digest,
                };
                let taken = Taken {
                    status,
                    loaded_digest,
                    reading,
                };
                (id, taken)
            })
            .collect()
    })
    .await
    .map_err(|e| failed(&e))?;
    Ok(Snapshot { taken, services })
}

/// Drops `snapshot` once it is too old to answer, unless a newer one
/// replaced it already.
fn forget_when_old(shared: Weak<Shared>, snapshot: Weak<Snapshot>) {
    tokio::spawn(async move {
        tokio::time::sleep(LIFETIME).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut current = shared.snapshots.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|kept| Weak::ptr_eq(&Arc::downgrade(kept), &snapshot))
        {
            *current = None;
        }
    });
}
