//! The reader of services' output: one task for every run's stdout and
//! stderr pipes, line by line, into the log and the service's [`Record`].
//!
//! One task, not one a run: a task and the runtime's registrations of two
//! pipes cost about 1.3 kB a running service, for a reader that mostly
//! waits. The task keeps an epoll set of its own (level-triggered, each
//! pipe's key in its event) and waits on that set's descriptor; each run
//! is a [`Reader`] in a map. Runs reach it through a channel from
//! [`forward`], which starts the task at the first run.
//!
//! Each turn reads at most one chunk ([`CHUNK`] bytes) from each pipe that
//! is ready (at most [`PIPES_A_TURN`] of them) and then yields, so
//! services that write without pause share the thread with the supervisor
//! instead of holding it. Of a flood, at most [`LINES_PER_SECOND`] lines a
//! second of one service (both streams together) are logged and kept; the
//! others are only counted, and once the second is over a mark,
//! `adoptd: suppressed N lines`, takes their place in the log and the
//! record (as journald's rate limit does).
//!
//! A pipe at its end leaves the set but stays open until both of its run's
//! pipes have ended; then the run's entry in [`Outputs`]' list of pipes
//! goes, and only then the pipes close, so every descriptor listed there
//! is open (a re-exec passes them on).

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rustix::event::epoll;
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::{debug, info, warn};

use super::{Line, MAX_LINE, Outputs, ReadPipes, Record, Stream, lock};
use crate::{config::ServiceSpec, tracker::ServiceId};

/// How many lines a second of one service are logged and kept; the rest
/// of a flood is counted and marked.
pub const LINES_PER_SECOND: u32 = 1000;

/// The most read from a pipe in one turn.
const CHUNK: usize = 4096;

/// The most pipes read from in one turn.
const PIPES_A_TURN: usize = 32;

/// Reads one run's `stdout` and `stderr` (the read ends of its pipes) until
/// every writer has closed them, in the reader task, into the log (tagged
/// with the service's name and the stream) and `service`'s record in
/// `outputs`, which keeps up to `spec`'s `output-buffer` bytes.
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
    for pipe in [&stdout, &stderr] {
        if let Err(e) = rustix::fs::fcntl_setfl(pipe, rustix::fs::OFlags::NONBLOCK) {
            warn!(service = %spec.name, "cannot read the service's output: {e}");
            return;
        }
    }
    let key = outputs.reading(read_pipes);
    let run = Run {
        key,
        pipes: [stdout, stderr],
        open: [true, true],
        reader: Reader {
            outputs: Arc::clone(&outputs),
            service,
            spec,
            record: None,
            partial: [Partial::default(), Partial::default()],
            window: Window::new(),
        },
    };
    let mut task = lock(&outputs.reader_task);
    // The first run starts the task; a task that is gone (it could not
    // wait any more) is started again.
    let run = match task.as_ref() {
        Some(sender) => match sender.send(run) {
            Ok(()) => return,
            Err(mpsc::error::SendError(run)) => run,
        },
        None => run,
    };
    match start_task() {
        Ok(sender) => {
            sender.send(run).ok();
            *task = Some(sender);
        }
        Err(e) => {
            warn!(service = %run.reader.spec.name, "cannot read the service's output: {e}");
            outputs.done_reading(run.key);
        }
    }
}

/// One run's pipes and reading state, in the reader task.
pub(super) struct Run {
    /// Its entry in [`Outputs`]' list of pipes.
    key: u64,
    /// stdout, stderr.
    pipes: [OwnedFd; 2],
    /// Which pipes are in the set still (not at their end).
    open: [bool; 2],
    reader: Reader,
}

/// The key of `stream`'s pipe of run `key` in the epoll set.
fn event_key(key: u64, stream: Stream) -> u64 {
    key << 1 | index(stream) as u64
}

/// The run and the stream of an [`event_key`].
fn run_and_stream(event_key: u64) -> (u64, Stream) {
    let stream = if event_key & 1 == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    (event_key >> 1, stream)
}

/// Starts the reader task on the current runtime; the answer is where its
/// runs go.
fn start_task() -> std::io::Result<mpsc::UnboundedSender<Run>> {
    let set = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    // SAFETY: the set's descriptor is owned by the AsyncFd from here on,
    // and closed only when it is dropped.
    let set = unsafe { AsyncFd::register_with_interest(set, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let (sender, mut runs) = mpsc::unbounded_channel::<Run>();
    tokio::spawn(async move {
        // Boxed: a table grows by doubling, and at a thousand runs most of
        // its room is empty slots, which then cost a pointer, not a run.
        let mut reading: HashMap<u64, Box<Run>> = HashMap::new();
        loop {
            tokio::select! {
                run = runs.recv() => {
                    // The sender lives as long as `Outputs`, which this
                    // task holds a share of: the channel never ends.
                    let Some(run) = run else { return };
                    add(set.get_ref(), &mut reading, run);
                }
                ready = set.readable() => {
                    let Ok(mut ready) = ready else {
                        warn!("cannot wait for services' output any more");
                        return;
                    };
                    let mut keys = [0u64; PIPES_A_TURN];
                    match ready_keys(set.get_ref(), &mut keys) {
                        Ok(0) => ready.clear_ready(),
                        Ok(count) => {
                            drop(ready);
                            for &key in &keys[..count] {
                                read_one(set.get_ref(), &mut reading, key);
                            }
                        }
                        // Cannot be, for a wait that does not sleep on a
                        // set of our own: the set stays ready, the next
                        // turn tries again.
                        Err(e) => debug!("cannot look at the output pipes: {e}"),
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    Ok(sender)
}

/// The keys of the pipes of `set` that are ready now, without waiting,
/// into `keys`; how many.
fn ready_keys(set: &OwnedFd, keys: &mut [u64; PIPES_A_TURN]) -> rustix::io::Result<usize> {
    let mut events = [const { std::mem::MaybeUninit::<epoll::Event>::uninit() }; PIPES_A_TURN];
    let now = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let (ready, _) = epoll::wait(set, &mut events, Some(&now))?;
    for (key, event) in keys.iter_mut().zip(ready.iter()) {
        *key = event.data.u64();
    }
    Ok(ready.len())
}

/// Puts `run`'s pipes in the set; a run whose pipes cannot be waited on
/// is read no further.
fn add(set: &OwnedFd, reading: &mut HashMap<u64, Box<Run>>, run: Run) {
    for stream in [Stream::Stdout, Stream::Stderr] {
        let pipe = &run.pipes[index(stream)];
        let data = epoll::EventData::new_u64(event_key(run.key, stream));
        if let Err(e) = epoll::add(set, pipe, data, epoll::EventFlags::IN) {
            warn!(service = %run.reader.spec.name, "cannot read the service's output: {e}");
            for pipe in &run.pipes {
                epoll::delete(set, pipe).ok();
            }
            run.reader.outputs.done_reading(run.key);
            return;
        }
    }
    reading.insert(run.key, Box::new(run));
}

/// Reads one chunk of the pipe of `event_key`; ends its run once both of
/// its pipes have ended.
fn read_one(set: &OwnedFd, reading: &mut HashMap<u64, Box<Run>>, event_key: u64) {
    let (key, stream) = run_and_stream(event_key);
    let Some(run) = reading.get_mut(&key) else {
        return;
    };
    let i = index(stream);
    if !run.open[i] {
        return;
    }
    if run.reader.read_chunk(run.pipes[i].as_fd(), stream) {
        return;
    }
    run.open[i] = false;
    epoll::delete(set, &run.pipes[i]).ok();
    if run.open.iter().any(|&open| open) {
        return;
    }
    if let Some(mut run) = reading.remove(&key) {
        run.reader.finish();
        run.reader.outputs.done_reading(run.key);
        // The pipes close here, after they left the list.
        drop(run);
    }
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
    fn read_chunk(&mut self, pipe: std::os::fd::BorrowedFd<'_>, stream: Stream) -> bool {
        let mut chunk = [0u8; CHUNK];
        let n = match rustix::io::read(pipe, &mut chunk) {
            Ok(0) => {
                self.end_of(stream);
                return false;
            }
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return true,
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
