//! The record on disk: what an adoptd runs, as the next adoptd reads it
//! after a crash.
//!
//! One small JSON file, [`FILE_NAME`] in the state directory, rewritten
//! whole (a temporary file beside it, then `rename`, so a reader sees the
//! old record or the new one, never half of one) after any batch that
//! changed a service's published run: its main or previous process,
//! hand-offs, restarts or state. A batch writes it once however many
//! services changed in it; a fork changes nothing published and so
//! writes nothing.
//!
//! Nothing in it is trusted: a record that does not parse, of another
//! [`FORMAT`] or of another boot, names nothing; every pid it names is
//! checked against the live process (start time and invocation id) before
//! it is believed ([`super::find`]).

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    invocation::InvocationId,
    tracker::{ExitStatus, MainPidSource, Pid, RunResult},
};

/// The record's file name in the state directory.
pub const FILE_NAME: &str = "running.json";

/// The format this adoptd writes and reads.
pub const FORMAT: u32 = 1;

/// Everything the record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// `/proc/sys/kernel/random/boot_id` when it was written: pids and
    /// start times of another boot mean nothing.
    pub boot_id: String,
    /// The adoptd that wrote it, and its start time: a record whose
    /// writer still lives belongs to that adoptd, not to this one.
    pub adoptd_pid: Pid,
    pub adoptd_start_time: u64,
    /// Every service with a main process.
    pub runs: Vec<Run>,
}

/// One service's current run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub name: String,
    /// The invocation id the run's processes carry in their environment.
    pub invocation: InvocationId,
    pub main_pid: Pid,
    /// The main process's start time (clock ticks since boot).
    pub main_start_time: u64,
    /// The start time of the run's first process: none of its processes
    /// is older.
    pub run_start_time: Option<u64>,
    pub previous_pid: Option<Pid>,
    pub main_pid_source: MainPidSource,
    pub handoffs: u32,
    pub restarts: u32,
    /// `StateChangeTimestamp`, µs since the epoch.
    pub state_changed_at_us: u64,
    /// How the service's last run ended (`ExitCode`, `ExitSignal`), and
    /// its `Result`.
    pub last_exit: Option<ExitStatus>,
    pub result: RunResult,
    /// The run was being stopped: the stop is carried on after a
    /// re-attach.
    #[serde(default)]
    pub stopping: bool,
}

/// Why the record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot create the state directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a record adoptd can read", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is of format {found}; this adoptd reads format {FORMAT}", path.display())]
    UnknownFormat { path: PathBuf, found: u32 },
    #[error("{} was written before this boot", path.display())]
    OtherBoot { path: PathBuf },
}

/// Writes `record` into `directory` (made, only its owner may enter it,
/// if it is missing), atomically.
pub fn write(directory: &Path, record: &Record) -> Result<(), RecordError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .map_err(|source| RecordError::Directory {
            path: directory.to_owned(),
            source,
        })?;
    let path = directory.join(FILE_NAME);
    let temporary = directory.join(format!("{FILE_NAME}.new"));
    let write_error = |source| RecordError::Write {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec(record).map_err(|e| write_error(e.into()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(&bytes).map_err(write_error)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(write_error)
}

/// Reads the record in `directory`: `Ok(None)` when there is none.
pub fn read(directory: &Path) -> Result<Option<Record>, RecordError> {
    let path = directory.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Read { path, source }),
    };
    decode(&path, &bytes, &boot_id()).map(Some)
}

/// Reads a record's bytes, as of boot `boot_id`.
fn decode(path: &Path, bytes: &[u8], boot_id: &str) -> Result<Record, RecordError> {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let decode_error = |source| RecordError::Decode {
        path: path.to_owned(),
        source,
    };
    let format: Format = serde_json::from_slice(bytes).map_err(decode_error)?;
    if format.format != FORMAT {
        return Err(RecordError::UnknownFormat {
            path: path.to_owned(),
            found: format.format,
        });
    }
    let record: Record = serde_json::from_slice(bytes).map_err(decode_error)?;
    if record.boot_id != boot_id || boot_id.is_empty() {
        return Err(RecordError::OtherBoot {
            path: path.to_owned(),
        });
    }
    Ok(record)
}

/// This boot's id, empty when the kernel does not say.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            format: FORMAT,
            boot_id: "b00t".to_owned(),
            adoptd_pid: 10,
            adoptd_start_time: 5,
            runs: vec![Run {
                name: "web".to_owned(),
                invocation: InvocationId::new(),
                main_pid: 42,
                main_start_time: 100,
                run_start_time: Some(90),
                previous_pid: Some(41),
                main_pid_source: MainPidSource::Adoption,
                handoffs: 2,
                restarts: 1,
                state_changed_at_us: 1_700_000_000_000_000,
                last_exit: Some(ExitStatus::Signal(9)),
                result: RunResult::Success,
                stopping: false,
            }],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let record = record();
        let bytes = serde_json::to_vec(&record).expect("encodes");
        let read = decode(Path::new("r"), &bytes, "b00t").expect("reads");
        assert_eq!(read, record);
    }

    #[test]
    fn a_record_of_another_boot_names_nothing() {
        let bytes = serde_json::to_vec(&record()).expect("encodes");
        let error = decode(Path::new("r"), &bytes, "other").expect_err("another boot");
        assert!(matches!(error, RecordError::OtherBoot { .. }), "{error}");
    }

    #[test]
    fn garbage_and_unknown_formats_are_refused_with_the_reason() {
        let error = decode(Path::new("r"), b"\x00{", "b00t").expect_err("garbage");
        assert!(matches!(error, RecordError::Decode { .. }), "{error}");
        let error =
            decode(Path::new("r"), br#"{"format": 7, "x": 1}"#, "b00t").expect_err("format 7");
        assert!(error.to_string().contains("format 7"), "{error}");
        let error =
            decode(Path::new("r"), br#"{"format": 1, "runs": 3}"#, "b00t").expect_err("broken");
        assert!(matches!(error, RecordError::Decode { .. }), "{error}");
    }
}
