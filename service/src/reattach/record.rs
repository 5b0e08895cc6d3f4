//! The record on disk: what an adoptd runs, as the next adoptd reads it
//! after a crash.
//!
//! One small JSON file per service that has a main process,
//! `runs/NAME.json` in the state directory ([`RUNS`]; the name escaped as
//! a bus label, so it is one plain file name), rewritten whole (a
//! temporary file beside it, then `rename`, so a reader sees the old
//! version or the new one, never half of one) after a batch that changed
//! that service's published run: its main or previous process, hand-offs,
//! restarts, state. A batch writes each changed service once however
//! often it changed, and nothing for the others; a fork changes nothing
//! published and so writes nothing. A service whose run ended has its file
//! removed. So the cost of a change does not grow with the number of
//! services.
//!
//! Nothing in it is trusted: a file that does not parse, of another
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

/// The record's directory inside the state directory.
pub const RUNS: &str = "runs";

/// The format this adoptd writes and reads.
pub const FORMAT: u32 = 1;

/// What one file of the record says: one service's run, and who wrote it.
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
    pub run: Run,
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

/// The file of service `name` in the record in `directory`.
pub fn path_of(directory: &Path, name: &str) -> PathBuf {
    directory
        .join(RUNS)
        .join(format!("{}.json", adoptd_dbus::escape_label(name)))
}

/// Writes `record`, its service's file in `directory` (made, only its
/// owner may enter it, if it is missing), atomically.
pub fn write(directory: &Path, record: &Record) -> Result<(), RecordError> {
    let path = path_of(directory, &record.run.name);
    let mut temporary = path.clone().into_os_string();
    temporary.push(".new");
    let write_error = |source| RecordError::Write {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec(record).map_err(|e| write_error(e.into()))?;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
    };
    // The directory is made at the first write (or again, if it went):
    // not looked at for each of them.
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let runs = directory.join(RUNS);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&runs)
                .map_err(|source| RecordError::Directory { path: runs, source })?;
            open()
        }
        opened => opened,
    }
    .map_err(write_error)?;
    file.write_all(&bytes).map_err(write_error)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(write_error)
}

/// Removes service `name`'s file from the record in `directory`, if any.
pub fn remove(directory: &Path, name: &str) -> Result<(), RecordError> {
    let path = path_of(directory, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RecordError::Write { path, source }),
    }
}

/// Reads every file of the record in `directory`: the ones that read, and
/// why each of the others does not. None when there is no record.
pub fn read(directory: &Path) -> (Vec<(PathBuf, Record)>, Vec<RecordError>) {
    let runs = directory.join(RUNS);
    let mut records = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(&runs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (records, errors),
        Err(source) => {
            errors.push(RecordError::Read { path: runs, source });
            return (records, errors);
        }
    };
    let boot_id = boot_id();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let read = std::fs::read(&path)
            .map_err(|source| RecordError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|bytes| decode(&path, &bytes, &boot_id));
        match read {
            Ok(record) => records.push((path, record)),
            Err(error) => errors.push(error),
        }
    }
    (records, errors)
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
            run: Run {
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
            },
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
            decode(Path::new("r"), br#"{"format": 1, "run": 3}"#, "b00t").expect_err("broken");
        assert!(matches!(error, RecordError::Decode { .. }), "{error}");
    }
}

#[cfg(test)]
mod files {
    use super::*;

    #[test]
    fn each_service_has_a_file_of_its_own_removed_when_its_run_ends() {
        let directory = tempfile::tempdir().expect("a directory");
        let mut record = tests_record();
        record.boot_id = boot_id();
        write(directory.path(), &record).expect("written");
        record.run.name = "apache2@chroot1".to_owned();
        write(directory.path(), &record).expect("written");
        let (records, errors) = read(directory.path());
        assert!(errors.is_empty(), "{errors:?}");
        let mut names: Vec<String> = records.into_iter().map(|(_, r)| r.run.name).collect();
        names.sort();
        assert_eq!(names, ["apache2@chroot1", "web"]);
        remove(directory.path(), "web").expect("removed");
        remove(directory.path(), "web").expect("removed twice");
        let (records, _) = read(directory.path());
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_directory_that_went_is_made_again_only_its_owner_may_enter() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().expect("a directory");
        let state = directory.path().join("state");
        let mut record = tests_record();
        record.boot_id = boot_id();
        write(&state, &record).expect("written into a directory not there yet");
        std::fs::remove_dir_all(&state).expect("the directory goes");
        write(&state, &record).expect("written again");
        let (records, errors) = read(&state);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records.len(), 1);
        let mode = std::fs::metadata(state.join(RUNS))
            .expect("the runs directory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    fn tests_record() -> Record {
        Record {
            format: FORMAT,
            boot_id: String::new(),
            adoptd_pid: 1,
            adoptd_start_time: 1,
            run: Run {
                name: "web".to_owned(),
                invocation: InvocationId::new(),
                main_pid: 42,
                main_start_time: 100,
                run_start_time: None,
                previous_pid: None,
                main_pid_source: MainPidSource::Spawn,
                handoffs: 0,
                restarts: 0,
                state_changed_at_us: 0,
                last_exit: None,
                result: RunResult::Success,
                stopping: false,
            },
        }
    }
}
