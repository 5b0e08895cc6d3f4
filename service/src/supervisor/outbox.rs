//! What the supervisor hands to the bus layer, in order, and when.
//!
//! Each handover wakes the bus thread, which then publishes what it was
//! handed (and, with `--private-bus`, the broker's thread routes it). On
//! two cores the thread just woken usually takes the supervisor's own CPU
//! at once, so updates handed over one by one were published one by one:
//! a hand-off's `Adopted` went out alone, the bus thread slept, and its
//! `PropertiesChanged` waited for the supervisor to run again and wake it
//! a second time (64 to 128 µs later, in 981 of 1000 hand-offs measured).
//! What the supervisor hands over together ([`Outbox::publish_together`],
//! a moment's notices) therefore goes as one message: one wake-up, and
//! the bus thread finds all of it.
//!
//! While the supervisor makes a moment's new processes (a restart), the
//! bus thread and the broker's would take the CPU the spawn and its exec
//! need: on two cores the spawning thread, the new program, the bus thread
//! and the broker's thread all want one. So the updates of a moment that
//! spawns wait until its spawns are made, and then go out together, in
//! the order they were made.
//!
//! Invariants:
//!
//! - Updates reach the bus layer in the order they were published,
//!   whether or not they waited.
//! - Nothing waits past the end of the moment that held it: every
//!   [`Outbox::hold`] is followed by an [`Outbox::release`] before the
//!   supervisor waits for anything, so a reply that says "applied once the
//!   bus has seen N updates" never waits for an update still held.

use std::cell::{Cell, RefCell};

use tokio::sync::mpsc;

use super::Update;

/// The channel to the bus layer, with the updates held back from it.
pub(super) struct Outbox {
    /// Each message is what was handed over at once, in order.
    sender: mpsc::UnboundedSender<Vec<Update>>,
    /// How many updates were published so far, held or sent.
    published: Cell<u64>,
    /// The updates held while spawns are made; `None` when none are.
    held: RefCell<Option<Vec<Update>>>,
}

impl Outbox {
    pub(super) fn new(sender: mpsc::UnboundedSender<Vec<Update>>) -> Self {
        Outbox {
            sender,
            published: Cell::new(0),
            held: RefCell::new(None),
        }
    }

    /// Hands `update` to the bus layer, or holds it while spawns are made.
    pub(super) fn publish(&self, update: Update) {
        self.publish_together([update]);
    }

    /// Hands `updates` to the bus layer in one message, in their order, or
    /// holds them while spawns are made.
    pub(super) fn publish_together(&self, updates: impl IntoIterator<Item = Update>) {
        let mut together: Vec<Update> = updates.into_iter().collect();
        self.published
            .set(self.published.get() + together.len() as u64);
        if let Some(held) = self.held.borrow_mut().as_mut() {
            held.append(&mut together);
            return;
        }
        self.send(together);
    }

    /// How many updates were published so far.
    pub(super) fn published(&self) -> u64 {
        self.published.get()
    }

    /// Holds the updates published from now on, until [`Outbox::release`].
    pub(super) fn hold(&self) {
        let mut held = self.held.borrow_mut();
        if held.is_none() {
            *held = Some(Vec::new());
        }
    }

    /// Sends what was held, in order and in one message, and stops
    /// holding.
    pub(super) fn release(&self) {
        let held = self.held.borrow_mut().take();
        if let Some(held) = held {
            self.send(held);
        }
    }

    fn send(&self, updates: Vec<Update>) {
        if updates.is_empty() {
            return;
        }
        // No receiver (no bus, or it is reconnecting and will resync): the
        // log still says everything.
        self.sender.send(updates).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reaped(total: u64) -> Update {
        Update::OrphansReaped { total }
    }

    /// The messages sent so far, each as the totals it carried.
    fn sent(receiver: &mut mpsc::UnboundedReceiver<Vec<Update>>) -> Vec<Vec<u64>> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|updates| {
                updates
                    .into_iter()
                    .filter_map(|update| match update {
                        Update::OrphansReaped { total } => Some(total),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn held_updates_go_out_at_the_release_in_their_order() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let outbox = Outbox::new(sender);
        outbox.publish(reaped(1));
        outbox.hold();
        outbox.publish(reaped(2));
        outbox.publish(reaped(3));
        assert_eq!(sent(&mut receiver), [vec![1]]);
        outbox.release();
        outbox.publish(reaped(4));
        assert_eq!(sent(&mut receiver), [vec![2, 3], vec![4]]);
        assert_eq!(outbox.published(), 4);
    }

    #[test]
    fn updates_handed_over_together_go_in_one_message() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let outbox = Outbox::new(sender);
        outbox.publish_together([reaped(1), reaped(2)]);
        outbox.publish_together([]);
        outbox.hold();
        outbox.publish_together([reaped(3), reaped(4)]);
        outbox.publish(reaped(5));
        outbox.release();
        assert_eq!(sent(&mut receiver), [vec![1, 2], vec![3, 4, 5]]);
        assert_eq!(outbox.published(), 5);
    }
}
