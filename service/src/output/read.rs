//! The reader task of one run of a service: its stdout and stderr pipes,
//! line by line, into the log and the service's [`Record`].
//!
//! Each turn reads at most one chunk ([`CHUNK`] bytes) from one pipe and
//! then yields, so a service that writes without pause shares the thread
//! with the supervisor instead of holding it. Of a flood, at most
//! [`LINES_PER_SECOND`] lines a second (both streams together) are logged
//! and kept; the others are only counted, and once the second is over a
//! mark, `adoptd: suppressed N lines`, takes their place in the log and
//! the record (as journald's rate limit does).

use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::net::unix::pipe::Receiver;
use tracing::{info, warn};

use super::{Line, MAX_LINE, Outputs, ReadPipes, Record, Stream, lock};
use crate::{config::ServiceSpec, tracker::ServiceId};

/// How many lines a second of one service are logged and kept; the rest
/// of a flood is counted and marked.
pub const LINES_PER_SECOND: u32 = 1000;

/// The most read from a pipe in one turn.
const CHUNK: usize = 4096;

/// Reads one run's `stdout` and `stderr` (the read ends of its pipes) until
/// every writer has closed them, in a task of its own, into the log
/// (tagged with the service's name and the stream) and `service`'s record
/// in `outputs`, which keeps up to `spec`'s `output-buffer` bytes.
pub fn forward(
    outputs: Arc<Outputs>,
    service: ServiceId,
    spec: Arc<ServiceSpec>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) {
    let read_pipes = ReadPipes {
        service,
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
    };
    let pipes = Receiver::from_owned_fd(stdout)
        .and_then(|stdout| Ok((stdout, Receiver::from_owned_fd(stderr)?)));
    let (stdout, stderr) = match pipes {
        Ok(pipes) => pipes,
        Err(e) => {
            warn!(service = %spec.name, "cannot read the service's output: {e}");
            return;
        }
    };
    let key = outputs.reading(read_pipes);
    let mut reader = Reader {
        outputs,
        service,
        spec,
        record: None,
        partial: [Partial::default(), Partial::default()],
        window: Window::new(),
    };
    // A task per running service, mostly waiting: between reads it keeps
    // only what is above, which allocates nothing but an unfinished line.
    tokio::spawn(async move {
        let mut stdout_open = true;
        let mut stderr_open = true;
        while stdout_open || stderr_open {
            tokio::select! {
                ready = stdout.readable(), if stdout_open => {
                    stdout_open = ready.is_ok() && reader.read_chunk(&stdout, Stream::Stdout);
                }
                ready = stderr.readable(), if stderr_open => {
                    stderr_open = ready.is_ok() && reader.read_chunk(&stderr, Stream::Stderr);
                }
            }
            tokio::task::yield_now().await;
        }
        reader.finish();
        reader.outputs.done_reading(key);
        // The pipes close here, after they left the list.
        drop((stdout, stderr));
    });
}

/// One run's reading state.
struct Reader {
    outputs: Arc<Outputs>,
    service: ServiceId,
    /// The configuration of this run (its name, its `output-buffer`).
    spec: Arc<ServiceSpec>,
    /// The service's record, fetched (and so made) at the first line.
    record: Option<Arc<Mutex<Record>>>,
    /// The unfinished line of stdout and of stderr.
    partial: [Partial; 2],
    window: Window,
}

/// A line not yet ended by a newline.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    /// It grew beyond [`MAX_LINE`]: the rest, up to the newline, is not
    /// kept.
    cut: bool,
}

/// The rate limit's current second.
struct Window {
    started: Instant,
    lines: u32,
    suppressed: [u64; 2],
}

impl Window {
    fn new() -> Window {
        Window {
            started: Instant::now(),
            lines: 0,
            suppressed: [0; 2],
        }
    }
}

impl Reader {
    /// Reads one chunk of `pipe` (without waiting) and handles its lines;
    /// false once the pipe is at its end or broken.
    fn read_chunk(&mut self, pipe: &Receiver, stream: Stream) -> bool {
        let mut chunk = [0u8; CHUNK];
        let n = match pipe.try_read(&mut chunk) {
            Ok(0) => {
                self.end_of(stream);
                return false;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(e) => {
                warn!(service = %self.spec.name, stream = stream.as_str(), "cannot read the service's output: {e}");
                self.end_of(stream);
                return false;
            }
        };
        let mut rest = &chunk[..n];
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.take(stream, &rest[..newline]);
            self.end_line(stream);
            rest = &rest[newline + 1..];
        }
        self.take(stream, rest);
        let partial = &mut self.partial[index(stream)];
        if partial.bytes.is_empty() && partial.bytes.capacity() > 0 {
            partial.bytes = Vec::new();
        }
        true
    }

    /// Adds `bytes` (no newline among them) to `stream`'s unfinished line.
    fn take(&mut self, stream: Stream, bytes: &[u8]) {
        let partial = &mut self.partial[index(stream)];
        let room = MAX_LINE.saturating_sub(partial.bytes.len());
        if bytes.len() > room {
            partial.cut = true;
        }
        partial
            .bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// `stream`'s unfinished line is complete.
    fn end_line(&mut self, stream: Stream) {
        let cut = std::mem::take(&mut self.partial[index(stream)].cut);
        let admitted = self.admit(stream);
        let partial = &mut self.partial[index(stream)];
        if !admitted {
            partial.bytes.clear();
            return;
        }
        let line = Line::from_output(realtime_us(), stream, &partial.bytes, cut);
        partial.bytes.clear();
        info!(target: "adoptd::output", service = %self.spec.name, stream = stream.as_str(), "{}", line.text);
        self.record().push(line);
    }

    /// `stream` ended: its unfinished line counts as a line.
    fn end_of(&mut self, stream: Stream) {
        let partial = &self.partial[index(stream)];
        if !partial.bytes.is_empty() || partial.cut {
            self.end_line(stream);
        }
        self.partial[index(stream)] = Partial::default();
    }

    /// Both pipes are closed: what was suppressed is said now.
    fn finish(&mut self) {
        self.mark_suppressed();
    }

    /// Whether a line of `stream` may be logged and kept now, by the rate
    /// limit; starting a new second first marks what the last suppressed.
    fn admit(&mut self, stream: Stream) -> bool {
        if self.window.started.elapsed() >= Duration::from_secs(1) {
            self.mark_suppressed();
            self.window = Window::new();
        }
        if self.window.lines < LINES_PER_SECOND {
            self.window.lines += 1;
            true
        } else {
            self.window.suppressed[index(stream)] += 1;
            false
        }
    }

    fn mark_suppressed(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let count = std::mem::take(&mut self.window.suppressed[index(stream)]);
            if count == 0 {
                continue;
            }
            let text =
                format!("adoptd: suppressed {count} lines (more than {LINES_PER_SECOND} a second)");
            warn!(target: "adoptd::output", service = %self.spec.name, stream = stream.as_str(), "{text}");
            let mark = Line::from_output(realtime_us(), stream, text.as_bytes(), false);
            self.record().push(mark);
        }
    }

    fn record(&mut self) -> std::sync::MutexGuard<'_, Record> {
        let record = self
            .record
            .get_or_insert_with(|| self.outputs.record(self.service, self.spec.output_buffer));
        lock(record)
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn realtime_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
