//! Every way a service file can be refused, located as precisely as is
//! known, with a message a person can act on.

use std::{
    io,
    path::{Path, PathBuf},
};

use adoptd_dbus::SignalError;

use super::{DurationError, NameError, Position, SizeError};

/// A problem with a service file, located as precisely as is known.
///
/// Displays as `{path}:{line}: {key}: {message}`, leaving out what is not
/// known. The message is complete on its own (underlying I/O, duration and
/// signal errors are part of it and stay inspectable in [`Self::kind`]), so
/// it is not repeated as an error `source()`.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The service file (or the directory, for errors reading it).
    pub path: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// The key at fault, dotted for nested keys (`"start-limit.burst"`).
    pub key: Option<String>,
    pub kind: ConfigErrorKind,
    /// The [`digest`](super::digest) of the file as it was read, when it
    /// could be read: what `NeedDaemonReload` compares the file with.
    pub digest: Option<u64>,
}

/// What is wrong; each message reads after `"{key}: "` and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("cannot read the directory: {0}")]
    ReadDir(io::Error),
    #[error("cannot read the file: {0}")]
    Read(io::Error),
    #[error("not a regular file (a service file must be a file or a symlink to one)")]
    NotAFile,
    #[error("file too large (more than {limit} bytes; a service file is a few lines of TOML)")]
    TooLarge { limit: u64 },
    #[error("the file is not valid UTF-8 (save it as UTF-8)")]
    NotUtf8,
    #[error("bad file name {name:?}: {reason}")]
    BadFileName {
        name: String,
        reason: FileNameProblem,
    },
    #[error(
        "a file cannot define a single instance: name the template \"{template}@.toml\" and list \"{instance}\" in its instances"
    )]
    InstanceFile { template: String, instance: String },
    #[error("invalid TOML: {0}")]
    Syntax(String),
    #[error("unknown key ({})", unknown_key_hint(.suggestion, .known))]
    UnknownKey {
        suggestion: Option<&'static str>,
        known: &'static [&'static str],
    },
    #[error(
        "missing: every service needs one, e.g. exec = [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]"
    )]
    MissingExec,
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("exec is an argv, not a shell line: write exec = {suggestion}")]
    ExecIsString { suggestion: String },
    #[error("exec is empty; it needs at least the program, e.g. exec = [\"/usr/sbin/nginx\"]")]
    ExecEmpty,
    #[error("exec[{index}] must be a string, found {found} (quote it)")]
    ExecArgumentType { index: usize, found: &'static str },
    #[error(
        "exec[0] must be an absolute path ({program:?} is relative; write e.g. {suggestion:?})"
    )]
    ExecRelative { program: String, suggestion: String },
    #[error("contains a NUL byte, which no program can receive")]
    Nul,
    #[error("must be an absolute path ({path:?} is relative)")]
    RelativePath { path: String },
    #[error("must not be empty")]
    Empty,
    #[error("must not contain ':' (user and group are separate keys)")]
    Colon,
    #[error("invalid value {value:?} (use {choices})")]
    InvalidChoice {
        value: String,
        choices: &'static str,
    },
    #[error("invalid duration {text:?}: {error}")]
    Duration { text: String, error: DurationError },
    #[error("invalid size {text:?}: {error}")]
    Size { text: String, error: SizeError },
    #[error("interval must be more than 0 (to lift the limit, raise burst instead)")]
    ZeroInterval,
    #[error("invalid signal {text:?}: {error}")]
    Signal { text: String, error: SignalError },
    #[error("burst must be a whole number from 1 to {}, not {value}", u32::MAX)]
    Burst { value: String },
    #[error(
        "invalid variable name {name:?} (use letters, digits and _, not starting with a digit)"
    )]
    EnvironmentName { name: String },
    #[error("{name} is set by adoptd itself, to a new value for each start")]
    ReservedVariable { name: &'static str },
    #[error("must be a string, found {found} (quote it)")]
    EnvironmentValue { found: &'static str },
    #[error(
        "instances are only allowed in a template (rename the file to \"{name}@.toml\" to make it one)"
    )]
    InstancesOutsideTemplate { name: String },
    #[error(
        "%i is only meaningful in a template file NAME@.toml (rename the file to \"{name}@.toml\", or write %%i for a literal \"%i\")"
    )]
    InstanceSpecifierOutsideTemplate { name: String },
    #[error("invalid instance name: {error}")]
    BadInstanceName { instance: String, error: NameError },
    #[error("instance {instance:?} is listed twice; the first is kept")]
    DuplicateInstance { instance: String },
    /// A check that failed only for this instance of a template.
    #[error("for instance {instance:?}: {kind}")]
    Instance {
        instance: String,
        kind: Box<ConfigErrorKind>,
    },
}

/// Why a `*.toml` file name is not a service file name.
#[derive(Debug, thiserror::Error)]
pub enum FileNameProblem {
    #[error("service files are named NAME.toml or NAME@.toml")]
    NotToml,
    #[error("the name is not valid UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Name(NameError),
}

impl ConfigError {
    pub(super) fn whole_file(path: &Path, kind: ConfigErrorKind) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            kind,
            digest: None,
        }
    }

    pub(super) fn at(path: &Path, at: Position, key: &str, kind: ConfigErrorKind) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: Some(at.line),
            column: Some(at.column),
            key: Some(key.to_string()),
            kind,
            digest: None,
        }
    }

    pub(super) fn for_instance(self, instance: &str) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Instance {
                instance: instance.to_string(),
                kind: Box::new(self.kind),
            },
            ..self
        }
    }

    pub(super) fn render(&self) -> String {
        let mut text = self.path.display().to_string();
        if let Some(line) = self.line {
            text.push_str(&format!(":{line}"));
        }
        if let Some(key) = &self.key {
            text.push_str(&format!(": {key}"));
        }
        text.push_str(&format!(": {}", self.kind));
        text
    }
}

pub(super) fn unknown_key_hint(suggestion: &Option<&'static str>, known: &[&str]) -> String {
    match suggestion {
        Some(key) => format!("did you mean \"{key}\"?"),
        None => format!("the keys are {}", known.join(", ")),
    }
}

/// The known key a mistyped one most likely meant: the same with dashes for
/// underscores or in lower case, or one within two edits.
pub(super) fn suggest_key(key: &str, known: &'static [&'static str]) -> Option<&'static str> {
    // Far longer than every known key means more than two edits away; the
    // check also keeps a megabyte-long key from costing seconds.
    if key.len() > 20 {
        return None;
    }
    let normalized = key.to_ascii_lowercase().replace('_', "-");
    known
        .iter()
        .map(|candidate| (strsim::levenshtein(&normalized, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate)
}
