//! Turns for the expensive reads (`PIDs`, which walks /proc, and
//! `NeedDaemonReload`, which reads a file): they cost the readers, not the
//! supervision.
//!
//! Invariants:
//!
//! - At most one expensive read runs at a time in the whole of adoptd
//!   (one walk of /proc, one request to the supervisor behind it), so no
//!   read load ever asks the supervisor more than one question at a time.
//! - Each caller (a bus connection, by its unique name) has at most one
//!   read waiting for that turn or running: a caller that sends a thousand
//!   reads at once waits for its own, one after the other, and every other
//!   caller gets its turn in between (the global queue is first come,
//!   first served, and holds one read per caller).
//! - After each read, the next waits as long as that one took: expensive
//!   reads keep at most half of one core busy, however many callers
//!   there are and however fast they ask.
//! - The expensive reads of one call (a `GetAll` reads both `PIDs` and
//!   `NeedDaemonReload`) take one turn: the second follows the first
//!   without a rest, and the rest after it is as long as both took. A
//!   call is its caller and the serial of its message; a caller that
//!   repeats a serial gets no more than [`READS_A_CALL`] reads without a
//!   rest, so the bound above holds for any caller.
//! - The entry of a caller is gone once it has no read left, so the table
//!   is as large as the number of callers reading at this moment.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{AcquireError, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// How many expensive reads one call may make in one turn: the
/// expensive properties of the service interface, all read by a `GetAll`.
pub(super) const READS_A_CALL: usize = 2;

/// Who may run an expensive read now.
#[derive(Debug)]
pub(super) struct Turns {
    /// One read at a time, in the order the callers came.
    global: Arc<Semaphore>,
    /// One read at a time per caller (key: its unique bus name).
    callers: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// When the next read may begin, and whose call read last.
    rest: Mutex<Rest>,
}

/// The rest owed after the last turn, and the call that took it.
#[derive(Debug, Default)]
struct Rest {
    /// The last turn's end plus as long as its call's reads took.
    until: Option<Instant>,
    /// The call of the last turn, which its next read continues.
    last_call: Option<Call>,
}

/// One call's reads in one turn.
#[derive(Debug)]
struct Call {
    caller: String,
    serial: u32,
    /// When its first read began.
    began: Instant,
    /// Its reads so far.
    reads: usize,
}

/// The right to run one expensive read; given back when dropped.
#[derive(Debug)]
pub(super) struct Turn<'a> {
    turns: &'a Turns,
    caller: String,
    /// When its call's first read began: the rest after it is as long as
    /// from then.
    began: Instant,
    /// Held for the read; given back after the caller's own.
    _global: OwnedSemaphorePermit,
    /// Given back first, so that the caller is seen idle when it is.
    own: Option<OwnedSemaphorePermit>,
}

impl Turns {
    pub(super) fn new() -> Self {
        Turns {
            global: Arc::new(Semaphore::new(1)),
            callers: Mutex::default(),
            rest: Mutex::default(),
        }
    }

    /// Waits for `caller`'s turn: first behind its own earlier reads, then
    /// behind the other callers'. `serial` is that of the caller's message,
    /// when there is one: a read that continues the last turn's call (the
    /// same caller and serial, within [`READS_A_CALL`]) does not rest.
    pub(super) async fn take(
        &self,
        caller: &str,
        serial: Option<u32>,
    ) -> Result<Turn<'_>, AcquireError> {
        let own = Arc::clone(
            self.callers()
                .entry(caller.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(1))),
        );
        // The turn forgets the caller when dropped, even if this future is
        // dropped while waiting (a caller that went away).
        let mut turn = Pending {
            turns: self,
            caller: caller.to_owned(),
        };
        let own = own.acquire_owned().await?;
        let global = Arc::clone(&self.global).acquire_owned().await?;
        let continued = self.continue_call(caller, serial);
        let began = match continued {
            Some(began) => began,
            None => {
                let until = lock(&self.rest).until;
                if let Some(at) = until {
                    tokio::time::sleep_until(at).await;
                }
                let began = Instant::now();
                lock(&self.rest).last_call = serial.map(|serial| Call {
                    caller: caller.to_owned(),
                    serial,
                    began,
                    reads: 1,
                });
                began
            }
        };
        Ok(Turn {
            turns: self,
            caller: std::mem::take(&mut turn.caller),
            began,
            _global: global,
            own: Some(own),
        })
    }

    /// When the call this read continues began, counting the read in it;
    /// `None` if it begins a call of its own.
    fn continue_call(&self, caller: &str, serial: Option<u32>) -> Option<Instant> {
        let serial = serial?;
        let mut rest = lock(&self.rest);
        let call = rest.last_call.as_mut()?;
        if call.caller != caller || call.serial != serial || call.reads >= READS_A_CALL {
            return None;
        }
        call.reads += 1;
        Some(call.began)
    }

    /// How many callers have a read waiting or running.
    #[cfg(test)]
    fn callers_reading(&self) -> usize {
        self.callers().len()
    }

    fn callers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        lock(&self.callers)
    }

    /// Forgets `caller` if nobody holds or waits for its semaphore.
    fn forget_if_idle(&self, caller: &str) {
        let mut callers = self.callers();
        if callers
            .get(caller)
            .is_some_and(|own| Arc::strong_count(own) == 1)
        {
            callers.remove(caller);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: still consistent after a panic elsewhere.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        lock(&self.turns.rest).until = Some(now + (now - self.began));
        // Give the permits back before looking whether the caller is idle.
        self.own = None;
        self.turns.forget_if_idle(&self.caller);
    }
}

/// Forgets an idle caller when a wait for its turn is abandoned.
struct Pending<'a> {
    turns: &'a Turns,
    /// Empty once the wait became a [`Turn`], which forgets it instead.
    caller: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.caller.is_empty() {
            self.turns.forget_if_idle(&self.caller);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn one_read_at_a_time_and_each_caller_forgotten_after_its_last() {
        runtime().block_on(async {
            let turns = Turns::new();
            let first = turns.take(":1.1", None).await.unwrap();
            // Another caller waits while the first reads.
            let second = tokio::time::timeout(
                std::time::Duration::from_millis(20),
                turns.take(":1.2", None),
            )
            .await;
            assert!(second.is_err(), "a second read ran beside the first");
            assert_eq!(
                turns.callers_reading(),
                1,
                "the abandoned wait is forgotten"
            );
            drop(first);
            assert_eq!(turns.callers_reading(), 0);
            let again = turns.take(":1.2", None).await.unwrap();
            assert_eq!(turns.callers_reading(), 1);
            drop(again);
            assert_eq!(turns.callers_reading(), 0);
        });
    }

    #[test]
    fn a_read_waits_as_long_as_the_one_before_took() {
        runtime().block_on(async {
            let turns = Turns::new();
            let first = turns.take(":1.1", None).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            drop(first);
            let ended = Instant::now();
            let _second = turns.take(":1.2", None).await.unwrap();
            assert!(ended.elapsed() >= std::time::Duration::from_millis(30));
        });
    }

    /// A runtime whose clock moves only when every task waits, so that a
    /// rest is measured exactly.
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    }

    const READ: std::time::Duration = std::time::Duration::from_millis(30);

    /// How long `take` waited for its turn.
    async fn wait_for(turns: &Turns, caller: &str, serial: Option<u32>) -> std::time::Duration {
        let asked = Instant::now();
        let turn = turns.take(caller, serial).await.unwrap();
        let waited = asked.elapsed();
        tokio::time::sleep(READ).await;
        drop(turn);
        waited
    }

    #[test]
    fn the_reads_of_one_call_share_a_turn_and_rest_as_long_as_all_took() {
        paused_runtime().block_on(async {
            let turns = Turns::new();
            assert_eq!(wait_for(&turns, ":1.1", Some(7)).await, Duration::ZERO);
            assert_eq!(
                wait_for(&turns, ":1.1", Some(7)).await,
                Duration::ZERO,
                "the second read of the call rested"
            );
            assert_eq!(
                wait_for(&turns, ":1.1", Some(8)).await,
                2 * READ,
                "the next call rests as long as both reads of the last took"
            );
        });
    }

    #[test]
    fn a_repeated_serial_gets_no_more_reads_without_a_rest_than_a_call_has() {
        paused_runtime().block_on(async {
            let turns = Turns::new();
            for _ in 0..READS_A_CALL {
                assert_eq!(wait_for(&turns, ":1.1", Some(7)).await, Duration::ZERO);
            }
            let waited = wait_for(&turns, ":1.1", Some(7)).await;
            assert_eq!(waited, READS_A_CALL as u32 * READ);
        });
    }

    #[test]
    fn another_callers_read_in_between_ends_the_call() {
        paused_runtime().block_on(async {
            let turns = Turns::new();
            wait_for(&turns, ":1.1", Some(7)).await;
            assert_eq!(wait_for(&turns, ":1.2", Some(7)).await, READ);
            assert_eq!(
                wait_for(&turns, ":1.1", Some(7)).await,
                READ,
                "a read after another caller's continued a call"
            );
            assert_eq!(
                wait_for(&turns, ":1.1", None).await,
                READ,
                "a read of no call continued one"
            );
        });
    }

    #[test]
    fn a_caller_with_many_reads_queued_lets_another_in_between() {
        runtime().block_on(async {
            let turns = Arc::new(Turns::new());
            let order = Arc::new(Mutex::new(Vec::new()));
            let held = turns.take(":1.9", None).await.unwrap();
            let local = tokio::task::LocalSet::new();
            // Three reads of one caller, then one of another, all queued
            // while a third caller reads.
            for (caller, tag) in [
                (":1.1", "a1"),
                (":1.1", "a2"),
                (":1.1", "a3"),
                (":1.2", "b"),
            ] {
                let turns = Arc::clone(&turns);
                let order = Arc::clone(&order);
                local.spawn_local(async move {
                    let _turn = turns.take(caller, None).await.unwrap();
                    order.lock().unwrap().push(tag);
                    tokio::task::yield_now().await;
                });
            }
            local
                .run_until(async {
                    tokio::task::yield_now().await;
                    drop(held);
                    while order.lock().unwrap().len() < 4 {
                        tokio::task::yield_now().await;
                    }
                })
                .await;
            // The last task may still hold its turn: it goes with the set.
            drop(local);
            let order = order.lock().unwrap().clone();
            assert_eq!(order[..2], ["a1", "b"], "{order:?}");
            assert_eq!(turns.callers_reading(), 0);
        });
    }
}
