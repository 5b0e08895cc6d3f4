//! Giving back the memory of large replies.
//!
//! A client that reads `PIDs` of thousands of services makes adoptd build
//! replies of megabytes in all, which glibc keeps in its arenas once they
//! are freed. After a burst of such reads, once a second has passed since
//! the last one (the replies are sent and freed by then), the allocator is
//! asked to return its free pages. A quiet bus schedules nothing.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use tokio::time::{Duration, Instant};
use tracing::debug;

use crate::memory;

/// How many reads make a burst worth giving memory back after.
const READS_BEFORE_TRIM: u32 = 256;
/// How long after the last read of a burst.
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// Counts large replies and trims after a burst of them.
#[derive(Debug, Default)]
pub(super) struct Trim {
    /// Reads since the last trim, and when the last one was.
    reads: Mutex<(u32, Option<Instant>)>,
    /// A trim task is waiting.
    scheduled: AtomicBool,
}

impl Trim {
    /// Counts one large reply; after a burst, schedules a trim.
    pub(super) fn replied(self: &std::sync::Arc<Self>) {
        let reads = {
            let mut reads = self.lock();
            reads.0 = reads.0.saturating_add(1);
            reads.1 = Some(Instant::now());
            reads.0
        };
        if reads >= READS_BEFORE_TRIM && !self.scheduled.swap(true, Ordering::AcqRel) {
            let trim = std::sync::Arc::clone(self);
            tokio::spawn(async move { trim.after_the_burst().await });
        }
    }

    async fn after_the_burst(&self) {
        loop {
            let last = self.lock().1.unwrap_or_else(Instant::now);
            let at = last + TRIM_AFTER;
            if Instant::now() >= at {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        *self.lock() = (0, None);
        self.scheduled.store(false, Ordering::Release);
        debug!("giving back the memory of large replies");
        memory::return_free_pages();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, Option<Instant>)> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }
}
