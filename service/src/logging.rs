//! Where adoptd's log lines go: standard error, written so that it never
//! fails, and held back to the end of each of the supervisor's moments.
//!
//! A line written to a pipe or a console wakes its reader (journald, a
//! terminal, a test), which then competes for the CPU that a restart's
//! new process and the bus's news of the moment need. So, as the bus
//! updates of a moment with spawns wait until they are made
//! (`supervisor::outbox`), the log lines of every moment wait until its
//! spawns are made and its updates are handed to the bus: the thread that
//! holds ([`Held`]) keeps what it logs in a buffer and writes it out, in
//! order and in one write, when the hold ends. Each line's time stamp is
//! still taken when it is logged. Other threads write at once.
//!
//! Invariants: holding is per thread and does not nest (an inner hold is
//! part of the outer one); a hold never keeps more than [`HELD_MAX`]
//! bytes (more is written out at once, still in order); a hold that ends
//! by unwinding writes out what it kept.

use std::{cell::RefCell, io::Write};

/// At most this much of a hold's lines wait for its end; a larger moment
/// (starting thousands of services) writes them out as they come.
pub const HELD_MAX: usize = 64 * 1024;

thread_local! {
    /// The lines this thread holds back, while it holds.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Standard error that never fails: a log line that cannot be written (the
/// console went away, the reader closed its pipe) is dropped. tracing
/// reports write errors with `eprintln!`, which panics on a broken stderr,
/// and a panic of PID 1 is a kernel panic. While the writing thread holds
/// ([`Held`]), lines wait in its buffer.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let kept = HELD.with(|held| {
            let Ok(mut held) = held.try_borrow_mut() else {
                return false;
            };
            let Some(lines) = held.as_mut() else {
                return false;
            };
            if keep(lines, buf) {
                return true;
            }
            write_out(lines);
            lines.clear();
            false
        });
        if !kept {
            write_out(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush().ok();
        Ok(())
    }
}

/// A hold of this thread's log lines: from [`Held::begin`] to its drop,
/// what the thread logs is written out at the drop.
#[must_use = "the hold ends when this is dropped"]
pub struct Held {
    /// Whether this hold began it (an inner hold leaves it to the outer).
    outermost: bool,
}

impl Held {
    /// Begins holding this thread's log lines, unless it already holds.
    pub fn begin() -> Self {
        let outermost = HELD.with(|held| match held.try_borrow_mut() {
            Ok(mut held) if held.is_none() => {
                *held = Some(Vec::new());
                true
            }
            _ => false,
        });
        Self { outermost }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.outermost {
            return;
        }
        let lines = HELD.with(|held| held.try_borrow_mut().ok().and_then(|mut held| held.take()));
        if let Some(lines) = lines {
            write_out(&lines);
        }
    }
}

/// Keeps `buf` after the held `lines` if the hold stays within
/// [`HELD_MAX`]; otherwise keeps nothing, and the caller writes out the
/// held lines, then `buf`.
fn keep(lines: &mut Vec<u8>, buf: &[u8]) -> bool {
    if lines.len() + buf.len() > HELD_MAX {
        return false;
    }
    lines.extend_from_slice(buf);
    true
}

fn write_out(bytes: &[u8]) {
    if !bytes.is_empty() {
        std::io::stderr().write_all(bytes).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_now() -> Option<Vec<u8>> {
        HELD.with(|held| held.borrow().clone())
    }

    /// Forgets what this thread holds (so that a test's hold, at its end,
    /// writes nothing into the test's output), but goes on holding.
    fn forget_held() {
        HELD.with(|held| held.borrow_mut().as_mut().map(Vec::clear));
    }

    #[test]
    fn lines_wait_for_the_end_of_the_hold_in_their_order() {
        let hold = Held::begin();
        Stderr.write_all(b"first\n").ok();
        Stderr.write_all(b"second\n").ok();
        assert_eq!(held_now().as_deref(), Some(b"first\nsecond\n".as_slice()));
        forget_held();
        drop(hold);
        assert_eq!(held_now(), None, "the end of the hold writes them out");
    }

    #[test]
    fn an_inner_hold_is_part_of_the_outer_one() {
        let outer = Held::begin();
        Stderr.write_all(b"outer\n").ok();
        drop(Held::begin());
        assert_eq!(held_now().as_deref(), Some(b"outer\n".as_slice()));
        forget_held();
        drop(outer);
        assert_eq!(held_now(), None);
    }

    #[test]
    fn a_hold_keeps_no_more_than_its_bound() {
        let mut lines = Vec::new();
        let line = [b'x'; 1000];
        let mut kept = 0;
        while keep(&mut lines, &line) {
            kept += 1;
        }
        assert_eq!(kept, HELD_MAX / line.len());
        assert!(lines.len() <= HELD_MAX);
        assert!(keep(&mut Vec::new(), &line), "an empty hold keeps a line");
    }

    #[test]
    fn other_threads_write_at_once() {
        let _hold = Held::begin();
        let other = std::thread::spawn(|| {
            Stderr.write_all(b"").ok();
            held_now()
        })
        .join();
        assert!(matches!(other, Ok(None)), "another thread holds nothing");
        Stderr.write_all(b"held\n").ok();
        assert_eq!(held_now().as_deref(), Some(b"held\n".as_slice()));
        forget_held();
    }
}
