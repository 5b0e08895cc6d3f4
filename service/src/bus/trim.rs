//! Giving back the memory of large replies, and of bursts of updates.
//!
//! A client that reads `PIDs` of thousands of services makes adoptd build
//! replies of megabytes in all, which glibc keeps in its arenas once they
//! are freed. After a burst of such reads, once a second has passed since
//! the last one (the replies are sent and freed by then), the allocator is
//! asked to return its free pages. A quiet bus schedules nothing.
//!
//! Likewise the supervisor's updates: a thousand services started at once
//! queue thousands of them on the channel to the bus task, whose blocks
//! are freed as the bus applies them, after the supervisor gave its own
//! memory back. Once the bus task has applied a burst and the channel is
//! empty, the allocator is asked again ([`UpdateBurst`]).

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

/// How many updates applied in one go make a burst worth giving memory
/// back after.
const UPDATES_BEFORE_TRIM: u32 = 1000;

/// Counts the updates the bus task applies in one go (without finding
/// the channel empty), and trims after a burst of them.
#[derive(Debug, Default)]
pub(super) struct UpdateBurst {
    applied: u32,
}

impl UpdateBurst {
    /// Counts one update applied; `more` says whether others wait. Says
    /// whether it gave memory back.
    pub(super) fn applied(&mut self, more: bool) -> bool {
        self.applied = self.applied.saturating_add(1);
        if more {
            return false;
        }
        let burst = self.applied >= UPDATES_BEFORE_TRIM;
        if burst {
            debug!("giving back the memory of {} updates", self.applied);
            memory::return_free_pages();
        }
        self.applied = 0;
        burst
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_once_a_burst_of_updates_is_applied() {
        let mut burst = UpdateBurst::default();
        for _ in 1..UPDATES_BEFORE_TRIM {
            assert!(!burst.applied(true), "not while updates wait");
        }
        assert!(burst.applied(false), "the channel is empty after the burst");
        assert!(!burst.applied(false), "a lone update is no burst");
    }

    #[test]
    fn updates_that_find_the_channel_empty_between_them_are_no_burst() {
        let mut burst = UpdateBurst::default();
        for _ in 0..2 * UPDATES_BEFORE_TRIM {
            assert!(!burst.applied(false));
        }
    }
}
