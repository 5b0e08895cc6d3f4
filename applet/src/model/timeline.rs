//! A service's hand-off timeline: the `Adopted` and `Exited` signals the
//! applet has seen since it started, oldest first, bounded.

use std::collections::VecDeque;

use crate::model::since;

/// At most this many entries are kept per service; older ones go.
pub const KEPT: usize = 100;

/// One entry of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When the applet received the signal, µs since the epoch.
    pub at: u64,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// The main process handed over from `previous_pid` to `pid`.
    Handoff { pid: u32, previous_pid: u32 },
    /// The main process `pid` ended; code or signal is −1 when it does not
    /// apply.
    Exit { pid: u32, code: i32, signal: i32 },
}

/// The entries of one service.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    entries: VecDeque<Entry>,
}

impl Timeline {
    pub fn push(&mut self, entry: Entry) {
        if self.entries.len() == KEPT {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Entry {
    /// The line the detail pane shows for this entry, relative to `now`.
    pub fn describe(&self, now: u64) -> String {
        let when = since::relative(self.at, now);
        match self.what {
            What::Handoff { pid, previous_pid } => {
                format!("{when}: handed off from {previous_pid} to {pid}")
            }
            What::Exit { pid, code, signal } => {
                let how = match (code, signal) {
                    (_, signal) if signal > 0 => format!("killed by signal {signal}"),
                    (0, _) => "exited cleanly".to_owned(),
                    (code, _) if code > 0 => format!("exited with code {code}"),
                    _ => "ended".to_owned(),
                };
                format!("{when}: {pid} {how}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff(at: u64) -> Entry {
        Entry {
            at,
            what: What::Handoff {
                pid: 2,
                previous_pid: 1,
            },
        }
    }

    #[test]
    fn keeps_the_newest_entries_only() {
        let mut timeline = Timeline::default();
        for at in 1..=(KEPT as u64 + 5) {
            timeline.push(handoff(at));
        }
        assert_eq!(timeline.len(), KEPT);
        assert_eq!(timeline.entries().next().map(|e| e.at), Some(6));
    }

    #[test]
    fn entries_say_what_happened() {
        let now = 10_000_000;
        assert_eq!(
            handoff(now).describe(now),
            "just now: handed off from 1 to 2"
        );
        let exit = |code, signal| Entry {
            at: now,
            what: What::Exit {
                pid: 7,
                code,
                signal,
            },
        };
        assert_eq!(exit(3, -1).describe(now), "just now: 7 exited with code 3");
        assert_eq!(exit(-1, 9).describe(now), "just now: 7 killed by signal 9");
        assert_eq!(exit(0, -1).describe(now), "just now: 7 exited cleanly");
    }
}
