//! Services' output: read from their pipes, forwarded to adoptd's log,
//! kept in memory for `GetOutput`, and copied to followers.
//!
//! What it owns: [`Outputs`], one [`Record`] per service that has printed
//! something (or is followed), keyed by [`ServiceId`]. A service that
//! prints nothing has no record, so it costs nothing here. Each record keeps
//! the service's latest lines within its `output-buffer` budget and the
//! pipes of its followers.
//!
//! Concurrency: one reader task ([`forward`]) reads the stdout and stderr
//! of every run of a service with `output = "log"`; the bus layer reads
//! records and adds followers. Both take the record's lock only for a
//! moment and never across an `.await`, and nothing here ever waits for a
//! client: a follower that stops reading is disconnected (see
//! [`Record::follow`]). The supervisor only hands over the pipes: it never
//! reads them, so a flood of output cannot delay supervision. The reader
//! reads at most one chunk a pipe per turn and then yields, and a flood beyond
//! [`LINES_PER_SECOND`] is counted, not kept (see [`read`]).
//!
//! The parts: `line.rs` (one line: its stream, time and text, cut and
//! escaped), `record.rs` (one service's lines and followers), `read.rs`
//! (the reader task).

use std::{
    collections::HashMap,
    os::fd::{OwnedFd, RawFd},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use crate::tracker::ServiceId;

mod line;
mod read;
mod record;

pub use line::{Line, MAX_LINE, Stream};
pub use read::{LINES_PER_SECOND, forward};
pub use record::Record;

/// Every service's output record, shared by the reader tasks and the bus
/// layer.
#[derive(Debug, Default)]
pub struct Outputs {
    records: Mutex<HashMap<ServiceId, Arc<Mutex<Record>>>>,
    /// The pipes the reader task reads, by run: what a re-exec passes to
    /// the new image, which reads them on. The task removes a run's entry
    /// before it closes its pipes, so every descriptor listed is open.
    pipes: Mutex<HashMap<u64, ReadPipes>>,
    next_reader: std::sync::atomic::AtomicU64,
    /// Where new runs go to the reader task, once it runs.
    reader_task: Mutex<Option<tokio::sync::mpsc::UnboundedSender<read::Run>>>,
}

/// The pipes one reader task reads: a service's stdout and stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadPipes {
    pub service: ServiceId,
    pub stdout: RawFd,
    pub stderr: RawFd,
}

impl Outputs {
    /// Every service's kept lines, oldest first, for a re-exec (services
    /// that kept none are left out).
    pub fn kept_lines(&self) -> Vec<(ServiceId, Vec<Line>)> {
        let records: Vec<(ServiceId, Arc<Mutex<Record>>)> = lock(&self.records)
            .iter()
            .map(|(&id, record)| (id, Arc::clone(record)))
            .collect();
        records
            .into_iter()
            .map(|(id, record)| (id, lock(&record).latest(usize::MAX)))
            .filter(|(_, lines)| !lines.is_empty())
            .collect()
    }

    /// Gives `service` back the lines a re-exec saved, within `capacity`.
    pub fn restore_lines(&self, service: ServiceId, capacity: usize, lines: Vec<Line>) {
        let record = self.record(service, capacity);
        let mut record = lock(&record);
        for line in lines {
            record.push(line);
        }
    }

    /// The pipes the reader task reads now.
    pub fn read_pipes(&self) -> Vec<ReadPipes> {
        lock(&self.pipes).values().copied().collect()
    }

    /// The reader task is given `pipes` to read; the answer is their key.
    fn reading(&self, pipes: ReadPipes) -> u64 {
        let key = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.pipes).insert(key, pipes);
        key
    }

    /// The reader task is about to close the pipes of `key`.
    fn done_reading(&self, key: u64) {
        lock(&self.pipes).remove(&key);
    }

    /// The latest `count` lines of `service`, oldest first; none when it
    /// has printed nothing.
    pub fn latest(&self, service: ServiceId, count: usize) -> Vec<Line> {
        match self.existing(service) {
            Some(record) => lock(&record).latest(count),
            None => Vec::new(),
        }
    }

    /// Copies every new line of `service` to `pipe` (a pipe's write end),
    /// as [`Record::follow`] says; `capacity` is the service's
    /// `output-buffer`, in case this creates its record.
    pub fn follow(
        &self,
        service: ServiceId,
        capacity: usize,
        pipe: OwnedFd,
    ) -> std::io::Result<()> {
        lock(&self.record(service, capacity)).follow(pipe)
    }

    /// Forgets `service`'s record (the service is gone); its followers'
    /// pipes close.
    pub fn forget(&self, service: ServiceId) {
        lock(&self.records).remove(&service);
    }

    /// `service`'s record, made on first use with room for `capacity`
    /// bytes of lines; an existing record gets `capacity` (a reload may
    /// have changed it).
    pub(crate) fn record(&self, service: ServiceId, capacity: usize) -> Arc<Mutex<Record>> {
        let record = Arc::clone(
            lock(&self.records)
                .entry(service)
                .or_insert_with(|| Arc::new(Mutex::new(Record::new(capacity)))),
        );
        lock(&record).set_capacity(capacity);
        record
    }

    fn existing(&self, service: ServiceId) -> Option<Arc<Mutex<Record>>> {
        lock(&self.records).get(&service).cloned()
    }
}

/// Locks `mutex`, whose data stays consistent even if a holder panicked
/// (every update is a single push or pop).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
