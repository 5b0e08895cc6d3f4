//! One service's output: its latest lines within a byte budget, and the
//! pipes of those who follow it.

use std::{collections::VecDeque, io, os::fd::OwnedFd};

use super::Line;

/// One service's latest lines and followers.
#[derive(Debug)]
pub struct Record {
    /// Oldest first; their [`Line::cost`] adds up to `used`, at most
    /// `capacity`.
    lines: VecDeque<Line>,
    used: usize,
    capacity: usize,
    /// Write ends of the followers' pipes, non-blocking.
    followers: Vec<OwnedFd>,
}

impl Record {
    /// An empty record that keeps up to `capacity` bytes of lines; it
    /// allocates nothing until a line comes.
    pub fn new(capacity: usize) -> Record {
        Record {
            lines: VecDeque::new(),
            used: 0,
            capacity,
            followers: Vec::new(),
        }
    }

    /// Keeps up to `capacity` bytes from now on, dropping the oldest lines
    /// if that is less than is kept.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.make_room(0);
    }

    /// Keeps `line` (dropping the oldest lines to make room) and writes it
    /// to every follower.
    pub fn push(&mut self, line: Line) {
        if !self.followers.is_empty() {
            let json = line.to_json();
            self.followers
                .retain(|pipe| write_whole(pipe, json.as_bytes()));
        }
        let cost = line.cost();
        if cost > self.capacity {
            return;
        }
        self.make_room(cost);
        self.used += cost;
        self.lines.push_back(line);
    }

    /// The latest `count` lines, oldest first.
    pub fn latest(&self, count: usize) -> Vec<Line> {
        let skip = self.lines.len().saturating_sub(count);
        self.lines.iter().skip(skip).cloned().collect()
    }

    /// Adds `pipe`, the write end of a pipe, as a follower: every new line
    /// is written to it as one JSON object a line ([`Line::to_json`]).
    ///
    /// adoptd never waits for a follower: the pipe is made non-blocking,
    /// and a follower whose pipe is full (it fell a pipe's size, usually
    /// 64 KiB, behind) or closed is disconnected, its write end closed
    /// (it reads end-of-file and may follow again). Lines are never
    /// silently dropped for a follower that stays, and never torn.
    pub fn follow(&mut self, pipe: OwnedFd) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&pipe)?;
        rustix::fs::fcntl_setfl(&pipe, flags | rustix::fs::OFlags::NONBLOCK)?;
        self.followers.push(pipe);
        Ok(())
    }

    /// How many follow now (for tests).
    pub fn followers(&self) -> usize {
        self.followers.len()
    }

    fn make_room(&mut self, cost: usize) {
        while self.used + cost > self.capacity {
            let Some(oldest) = self.lines.pop_front() else {
                break;
            };
            self.used -= oldest.cost();
        }
        if self.lines.is_empty() {
            // Give the ring back when nothing is kept (capacity 0).
            self.lines = VecDeque::new();
        }
    }
}

/// Writes all of `bytes` to the non-blocking `pipe` at once, or says the
/// follower must go: its pipe is full, closed, or took only part.
fn write_whole(pipe: &OwnedFd, bytes: &[u8]) -> bool {
    matches!(rustix::io::write(pipe, bytes), Ok(n) if n == bytes.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read as _;

    use super::*;
    use crate::output::Stream;

    fn line(text: &str) -> Line {
        Line::from_output(7, Stream::Stdout, text.as_bytes(), false)
    }

    #[test]
    fn the_oldest_lines_go_when_the_budget_is_spent() {
        let cost = line("line 0").cost();
        let mut record = Record::new(cost * 3);
        for i in 0..5 {
            record.push(line(&format!("line {i}")));
        }
        let texts: Vec<String> = record
            .latest(10)
            .iter()
            .map(|l| l.text.to_string())
            .collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"]);
        assert_eq!(record.latest(1)[0].text.as_ref(), "line 4");
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing() {
        let mut record = Record::new(0);
        record.push(line("x"));
        assert!(record.latest(10).is_empty());
    }

    #[test]
    fn a_follower_gets_each_new_line_as_json() {
        let (mut read, write) = std::io::pipe().unwrap();
        let mut record = Record::new(1024);
        record.follow(write.into()).unwrap();
        record.push(line("hello"));
        drop(record);
        let mut text = String::new();
        read.read_to_string(&mut text).unwrap();
        assert_eq!(
            text,
            "{\"realtime\":7,\"stream\":\"stdout\",\"line\":\"hello\"}\n"
        );
    }

    #[test]
    fn a_follower_that_does_not_read_is_disconnected_not_waited_for() {
        let (_read, write) = std::io::pipe().unwrap();
        let mut record = Record::new(1024);
        record.follow(write.into()).unwrap();
        let long = "x".repeat(4000);
        for _ in 0..1000 {
            record.push(line(&long));
        }
        assert_eq!(record.followers(), 0);
    }

    #[test]
    fn a_follower_that_closed_its_end_is_dropped() {
        let (read, write) = std::io::pipe().unwrap();
        let mut record = Record::new(1024);
        record.follow(write.into()).unwrap();
        drop(read);
        record.push(line("anyone?"));
        assert_eq!(record.followers(), 0);
    }
}
