//! What the supervisor hands to the bus layer, in order, and when.
//!
//! Each update wakes the bus thread, which then publishes it (and, with
//! `--private-bus`, the broker's thread routes it). While the supervisor
//! makes a moment's new processes (a restart), those threads would take
//! the CPU the spawn and its exec need: on two cores the spawning thread,
//! the new program, the bus thread and the broker's thread all want one.
//! So the updates of a moment that spawns wait until its spawns are made,
//! and then go out together, in the order they were made.
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
    sender: mpsc::UnboundedSender<Update>,
    /// How many updates were published so far, held or sent.
    published: Cell<u64>,
    /// The updates held while spawns are made; `None` when none are.
    held: RefCell<Option<Vec<Update>>>,
}

impl Outbox {
    pub(super) fn new(sender: mpsc::UnboundedSender<Update>) -> Self {
        Outbox {
            sender,
            published: Cell::new(0),
            held: RefCell::new(None),
        }
    }

    /// Hands `update` to the bus layer, or holds it while spawns are made.
    pub(super) fn publish(&self, update: Update) {
        self.published.set(self.published.get() + 1);
        if let Some(held) = self.held.borrow_mut().as_mut() {
            held.push(update);
            return;
        }
        // No receiver (no bus, or it is reconnecting and will resync): the
        // log still says everything.
        self.sender.send(update).ok();
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

    /// Sends what was held, in order, and stops holding.
    pub(super) fn release(&self) {
        let held = self.held.borrow_mut().take();
        for update in held.into_iter().flatten() {
            self.sender.send(update).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reaped(total: u64) -> Update {
        Update::OrphansReaped { total }
    }

    fn sent(receiver: &mut mpsc::UnboundedReceiver<Update>) -> Vec<u64> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .filter_map(|update| match update {
                Update::OrphansReaped { total } => Some(total),
                _ => None,
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
        assert_eq!(sent(&mut receiver), [1]);
        outbox.release();
        outbox.publish(reaped(4));
        assert_eq!(sent(&mut receiver), [2, 3, 4]);
        assert_eq!(outbox.published(), 4);
    }
}
