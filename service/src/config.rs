//! Service files → service specs.
//!
//! This module owns the meaning of the files in the configuration directory
//! (DESIGN.md, "Service files"): `NAME.toml` is a plain service named `NAME`,
//! `NAME@.toml` a template whose instances are named `NAME@INSTANCE`. It turns
//! them into [`ServiceSpec`]s; reading the directory and its files is its only
//! I/O, and [`parse_str`] is the pure part.
//!
//! Every [`ServiceSpec`] it hands out holds these invariants, so no caller
//! needs to check them again:
//! - `name` passes [`validate_service_name`]: at most [`MAX_NAME_LEN`] bytes of
//!   `[A-Za-z0-9_.:-]`, plus the one `@` of an instance;
//! - `exec` is non-empty and `exec[0]` is an absolute path;
//! - `chroot`, `working_directory` and `pid_file` are absolute paths;
//! - no string contains a NUL byte, so each can become a C string or a D-Bus
//!   string;
//! - environment names match `[A-Za-z_][A-Za-z0-9_]*` and are not
//!   `ADOPTD_INVOCATION_ID`, which adoptd sets for each start;
//! - `user` and `group` are non-empty and contain no `:`;
//! - durations are at most [`MAX_DURATION`], so `Instant::now() + d` cannot
//!   overflow; `start_limit.burst >= 1` and `start_limit.interval > 0`.
//!
//! Every problem becomes a [`ConfigError`] naming the file, line, column and
//! key, with a message a person can act on. One bad file, or one bad template
//! instance, never stops the others from loading: [`load_dir`] returns what
//! loaded next to what did not. Nothing here panics on any input.
//!
//! Files are read through toml's span-keeping document model (`DeTable`)
//! rather than a serde derive: it keeps the position of every key and value,
//! so even the checks made after parsing (a relative path, a bad instance
//! name) point at the line they come from, and each message can say what to
//! write instead. Unknown keys are refused, as serde's `deny_unknown_fields`
//! would, and the first problem in file order is the one reported.
//!
//! Specifiers: in the strings of a service (description, exec, chroot, user,
//! group, working-directory, environment values, pid-file) `%i` is the
//! instance name and `%%` a literal `%`; any other `%` stays as written, so
//! `date +%s` needs no escaping. `%i` in a plain service is an error rather
//! than a literal, because it is almost always a template saved under the
//! wrong file name. Instance names contain no `/` or NUL and are never `.` or
//! `..`, so substitution can neither make an absolute path relative nor climb
//! out of the directory it names. That is why a template is checked in full
//! when its file loads (with `%i` standing for itself), and instantiating it
//! can only fail on the instance name or on `user`/`group` (`:` is allowed in
//! instance names, not in user names).

// ConfigError's public fields are the interface others code against, which
// makes it larger than clippy likes in a Result; errors are rare and off
// every hot path, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    fmt, fs,
    io::{self, Read},
    ops::Range,
    os::unix::{ffi::OsStrExt, fs::OpenOptionsExt},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use toml::{
    Spanned,
    de::{DeInteger, DeTable, DeValue},
};

/// Files larger than this are refused unread: a service file is a few lines,
/// and the cap keeps a stray log file named `x.toml` from filling memory.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The longest full service name (`name` or `template@instance`), in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The longest duration accepted (876000h, 100 years). Longer ones are
/// refused so that adding one to an `Instant` can never overflow and panic.
pub const MAX_DURATION: Duration = Duration::from_secs(876_000 * 3600);

/// One service, ready to run: a plain service, or one instance of a
/// template with `%i` substituted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `"nginx"`, or `"apache2@chroot1"` for an instance.
    pub name: String,
    /// The template's name (`"apache2"`) for an instance, `None` otherwise.
    pub template: Option<String>,
    /// The instance name (`"chroot1"`) for an instance, `None` otherwise.
    pub instance: Option<String>,
    /// The file the service came from (the template's file for an instance).
    pub source: PathBuf,
    /// Free text; empty when the file has none.
    pub description: String,
    /// The argv: never empty, `exec[0]` an absolute path. No shell.
    pub exec: Vec<String>,
    pub expect: Expect,
    pub restart: Restart,
    pub restart_delay: Duration,
    pub start_limit: StartLimit,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub reload_signal: Signal,
    /// Absolute.
    pub chroot: Option<PathBuf>,
    /// A user name or number, resolved when the service is spawned.
    pub user: Option<String>,
    /// A group name or number, resolved when the service is spawned.
    pub group: Option<String>,
    /// Absolute.
    pub working_directory: Option<PathBuf>,
    pub environment: BTreeMap<String, String>,
    /// Absolute; a cross-check of the main process, never required.
    pub pid_file: Option<PathBuf>,
    pub output: Output,
    /// Whether the service starts when adoptd starts. For an instance it is
    /// the template's `autostart`, which decides whether the instances the
    /// template lists start with adoptd.
    pub autostart: bool,
}

/// How the service's main process is expected to behave after exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// Follow whatever the process does.
    #[default]
    Auto,
    /// The exec'd process stays the main process.
    Foreground,
    /// The process forks once and its parent exits.
    Fork,
    /// The process daemonizes: fork, exit, fork, exit.
    Daemon,
    /// Hand-offs are followed as with `Auto`; the service is running once
    /// one of its processes sends `READY=1` over `$NOTIFY_SOCKET`.
    Notify,
}

impl Expect {
    /// The spelling used in service files: `"auto"`, `"foreground"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Auto => "auto",
            Expect::Foreground => "foreground",
            Expect::Fork => "fork",
            Expect::Daemon => "daemon",
            Expect::Notify => "notify",
        }
    }
}

/// When a service whose main process ended is started again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    No,
    #[default]
    OnFailure,
    Always,
}

impl Restart {
    /// The spelling used in service files: `"no"`, `"on-failure"`, `"always"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

/// Where the service's stdout and stderr go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Line by line into adoptd's log, tagged with the service name.
    #[default]
    Log,
    /// Discarded.
    Null,
    /// adoptd's own stdout and stderr.
    Inherit,
}

impl Output {
    /// The spelling used in service files: `"log"`, `"null"`, `"inherit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Output::Log => "log",
            Output::Null => "null",
            Output::Inherit => "inherit",
        }
    }
}

/// At most `burst` starts within any `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLimit {
    /// At least 1.
    pub burst: u32,
    /// More than zero.
    pub interval: Duration,
}

impl Default for StartLimit {
    fn default() -> Self {
        StartLimit {
            burst: 5,
            interval: Duration::from_secs(10),
        }
    }
}

/// A valid signal number, from 1 to SIGRTMAX.
///
/// Realtime signals are counted from the C library's SIGRTMIN (34 with glibc,
/// which keeps 32 and 33 for itself), as `kill -l` and systemd count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const HUP: Signal = Signal(libc::SIGHUP);
    pub const KILL: Signal = Signal(libc::SIGKILL);

    /// `None` unless `number` is a signal (1 to SIGRTMAX; 0 is not a signal).
    pub fn new(number: i32) -> Option<Self> {
        (1..=libc::SIGRTMAX())
            .contains(&number)
            .then_some(Signal(number))
    }

    /// The number to pass to kill(2) or pidfd_send_signal(2).
    pub fn number(self) -> i32 {
        self.0
    }

    /// `"TERM"`, `"RTMIN+3"`, or the number (`"32"`) for the few signals
    /// without a name. Parsing the name gives the same signal back.
    pub fn name(self) -> String {
        if let Some((name, _)) = SIGNAL_NAMES.iter().find(|(_, number)| *number == self.0) {
            return (*name).to_string();
        }
        let rtmin = libc::SIGRTMIN();
        match self.0 - rtmin {
            0 => "RTMIN".to_string(),
            offset if offset > 0 => format!("RTMIN+{offset}"),
            _ => self.0.to_string(),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Signal {
    type Err = SignalError;

    /// Accepts `"TERM"`, `"SIGTERM"`, `"sigterm"`, `"15"`, `"RTMIN+3"`,
    /// `"SIGRTMIN+3"`, `"RTMAX"` and `"RTMAX-2"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let max = libc::SIGRTMAX();
        let digits = text.strip_prefix('-').unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return text
                .parse::<i32>()
                .ok()
                .and_then(Signal::new)
                .ok_or_else(|| SignalError::OutOfRange {
                    number: text.to_string(),
                    max,
                });
        }
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        let realtime = if let Some(offset) = name.strip_prefix("RTMIN") {
            realtime_offset(offset, '+').map(|offset| rtmin.checked_add(offset))
        } else if let Some(offset) = name.strip_prefix("RTMAX") {
            realtime_offset(offset, '-').map(|offset| rtmax.checked_sub(offset))
        } else {
            None
        };
        match realtime {
            Some(Some(number)) if (rtmin..=rtmax).contains(&number) => Ok(Signal(number)),
            Some(_) => Err(SignalError::RealtimeOutOfRange {
                name: name.to_string(),
                count: rtmax - rtmin,
            }),
            None => SIGNAL_NAMES
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, number)| Signal(*number))
                .ok_or(SignalError::UnknownName { max }),
        }
    }
}

/// Why a text is not a signal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error(
        "unknown signal name (use a name such as TERM, HUP, INT or USR1, or a number from 1 to {max})"
    )]
    UnknownName { max: i32 },
    #[error("{number} is not a signal number (use 1 to {max})")]
    OutOfRange { number: String, max: i32 },
    #[error("{name} is out of range (the realtime signals are RTMIN to RTMIN+{count})")]
    RealtimeOutOfRange { name: String, count: i32 },
}

/// Parses a duration: numbers with units, combinable, summed: `"0"`,
/// `"250ms"`, `"10s"`, `"1m30s"`, `"2h"`, `"1h2m3s4ms"`. Units are `us`,
/// `ms`, `s`, `m` and `h`. Spaces around and between the parts are allowed
/// (`"1m 30s"`, `"10 s"`). A bare number other than 0 is refused because its
/// unit would be a guess; fractions are refused (write `"1s500ms"`); the
/// result may not exceed [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        return if text.bytes().all(|byte| byte == b'0') {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::MissingUnit {
                number: text.to_string(),
            })
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (digits, after_digits) = split_while(rest, |c| c.is_ascii_digit());
        let (unit, after_unit) = split_while(after_digits.trim_start(), char::is_alphabetic);
        if digits.is_empty() {
            return Err(match (unit.is_empty(), rest.chars().next()) {
                (false, _) => DurationError::MissingNumber {
                    unit: unit.to_string(),
                },
                (true, Some('.')) => DurationError::Fraction,
                (true, found) => DurationError::Unexpected {
                    found: found.unwrap_or(' '),
                },
            });
        }
        if after_digits.starts_with(['.', ',']) {
            return Err(DurationError::Fraction);
        }
        if unit.is_empty() {
            return Err(match after_digits.trim_start().chars().next() {
                Some(found) if !found.is_ascii_digit() => DurationError::Unexpected { found },
                _ => DurationError::MissingUnit {
                    number: digits.to_string(),
                },
            });
        }
        let count: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
        let part = match unit {
            "us" => Some(Duration::from_micros(count)),
            "ms" => Some(Duration::from_millis(count)),
            "s" => Some(Duration::from_secs(count)),
            "m" => count.checked_mul(60).map(Duration::from_secs),
            "h" => count.checked_mul(3600).map(Duration::from_secs),
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_string(),
                });
            }
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or(DurationError::TooLarge)?;
        rest = after_unit;
    }
    if total > MAX_DURATION {
        return Err(DurationError::TooLarge);
    }
    Ok(total)
}

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("it is empty (write e.g. \"10s\", or \"0\" for none)")]
    Empty,
    #[error("{number} has no unit (add one, e.g. \"{number}s\" or \"{number}ms\")")]
    MissingUnit { number: String },
    #[error("unknown unit \"{unit}\" (use ms, s, m, h)")]
    UnknownUnit { unit: String },
    #[error("\"{unit}\" needs a number before it (e.g. \"10{unit}\")")]
    MissingNumber { unit: String },
    #[error("fractions are not supported (write e.g. \"1s500ms\" instead of \"1.5s\")")]
    Fraction,
    #[error("unexpected {found:?} (write numbers with units, e.g. \"1m30s\")")]
    Unexpected { found: char },
    #[error("too large (the maximum is 876000h, 100 years)")]
    TooLarge,
}

/// A template file, `NAME@.toml`, kept parsed so that any instance can be
/// made from it on demand.
#[derive(Clone, Debug)]
pub struct Template {
    /// `"apache2"` for `apache2@.toml`.
    pub name: String,
    pub source: PathBuf,
    /// The instances the file lists, as written (order kept; bad names and
    /// duplicates included, they fail in [`Template::instantiate_listed`]).
    pub instances: Vec<String>,
    raw: RawService,
}

impl Template {
    /// Makes the service `NAME@instance`: checks the instance name (see
    /// [`validate_service_name`]; the full name may be at most
    /// [`MAX_NAME_LEN`] bytes), substitutes `%i` in every string and checks
    /// the result. An error points at the template's file and, when a value
    /// is at fault, its line.
    pub fn instantiate(&self, instance: &str) -> Result<ServiceSpec, ConfigError> {
        self.instantiate_at(instance, None)
    }

    /// Instantiates every instance the file lists. Each bad or repeated
    /// instance is its own error, pointing at its line in `instances`; a
    /// repeated one keeps its first occurrence. The specs come in file order.
    pub fn instantiate_listed(&self) -> (Vec<ServiceSpec>, Vec<ConfigError>) {
        let mut specs = Vec::new();
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for listed in &self.raw.instances {
            if !seen.insert(listed.value.as_str()) {
                errors.push(ConfigError::at(
                    &self.source,
                    listed.at,
                    "instances",
                    ConfigErrorKind::DuplicateInstance {
                        instance: listed.value.clone(),
                    },
                ));
                continue;
            }
            match self.instantiate_at(&listed.value, Some(listed.at)) {
                Ok(spec) => specs.push(spec),
                Err(error) => errors.push(error),
            }
        }
        (specs, errors)
    }

    fn instantiate_at(
        &self,
        instance: &str,
        listed_at: Option<Position>,
    ) -> Result<ServiceSpec, ConfigError> {
        if let Err(error) = validate_instance_name(&self.name, instance) {
            let kind = ConfigErrorKind::BadInstanceName {
                instance: instance.to_string(),
                error,
            };
            return Err(match listed_at {
                Some(at) => ConfigError::at(&self.source, at, "instances", kind),
                None => ConfigError::whole_file(&self.source, kind),
            });
        }
        let identity = Identity::Instance {
            template: &self.name,
            instance,
        };
        build(&self.raw, &self.source, identity).map_err(|error| error.for_instance(instance))
    }
}

/// What one file defines.
#[derive(Clone, Debug)]
pub enum Unit {
    Service(ServiceSpec),
    Template(Template),
}

/// Everything a configuration directory defines, and what failed to load.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Plain services and the instances templates list (whatever their
    /// template's `autostart`, so they are known by name), sorted by name.
    pub services: Vec<ServiceSpec>,
    /// Every template, by name, for instances started on demand.
    pub templates: BTreeMap<String, Template>,
    /// One per bad file or bad instance, in file order.
    pub errors: Vec<ConfigError>,
}

/// Loads every service file in `dir`.
///
/// Files named `*.toml` are service files; any such file whose name is not a
/// service or template name is an error. Hidden files, other files (editor
/// backups like `web.toml~` or `.web.toml.swp` included) and directories are
/// ignored; symlinks are followed. Never panics: a directory that cannot be
/// read gives one error and nothing else.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            loaded.errors.push(ConfigError::whole_file(
                dir,
                ConfigErrorKind::ReadDir(error),
            ));
            return loaded;
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) if is_service_file_name(&entry.file_name()) => paths.push(entry.path()),
            Ok(_) => {}
            Err(error) => loaded.errors.push(ConfigError::whole_file(
                dir,
                ConfigErrorKind::ReadDir(error),
            )),
        }
    }
    paths.sort();
    for path in paths {
        // A directory named like a service file is not one; anything else
        // that is not a regular file is refused by load_file.
        if fs::metadata(&path).is_ok_and(|metadata| metadata.is_dir()) {
            continue;
        }
        match load_file(&path) {
            Ok(Unit::Service(spec)) => loaded.services.push(spec),
            Ok(Unit::Template(template)) => {
                let (specs, errors) = template.instantiate_listed();
                loaded.services.extend(specs);
                loaded.errors.extend(errors);
                loaded.templates.insert(template.name.clone(), template);
            }
            Err(error) => loaded.errors.push(error),
        }
    }
    loaded.services.sort_by(|a, b| a.name.cmp(&b.name));
    loaded
}

/// Loads one service file, `NAME.toml` or `NAME@.toml`. The file must be a
/// regular file (symlinks followed) of at most [`MAX_FILE_SIZE`] bytes of
/// UTF-8.
pub fn load_file(path: &Path) -> Result<Unit, ConfigError> {
    let file_name = path.file_name().unwrap_or_default();
    let bad_name = |reason| {
        let name = file_name.to_string_lossy().into_owned();
        ConfigError::whole_file(path, ConfigErrorKind::BadFileName { name, reason })
    };
    let stem = (file_name.as_bytes().strip_suffix(b".toml"))
        .ok_or_else(|| bad_name(FileNameProblem::NotToml))?;
    let stem = std::str::from_utf8(stem).map_err(|_| bad_name(FileNameProblem::NotUtf8))?;
    classify_file_name(stem).map_err(|kind| ConfigError::whole_file(path, kind))?;
    let text = read_text(path)?;
    parse_str(stem, path, &text)
}

/// Parses the text of a service file. `name_from_file` is the file name
/// without `.toml`: `"web"` for a plain service, `"apache2@"` for a
/// template. `path` only labels errors and [`ServiceSpec::source`].
pub fn parse_str(name_from_file: &str, path: &Path, text: &str) -> Result<Unit, ConfigError> {
    let kind =
        classify_file_name(name_from_file).map_err(|kind| ConfigError::whole_file(path, kind))?;
    let document = Document { path, text };
    let table = DeTable::parse(text).map_err(|error| document.syntax_error(&error))?;
    let raw = document.read_service(table.get_ref(), kind)?;
    match kind {
        FileKind::Plain { name } => build(&raw, path, Identity::Plain { name }).map(Unit::Service),
        FileKind::Template { name } => {
            // Substitution cannot change what these checks look at (see the
            // module header), so checking with "%i" standing for itself finds
            // now every error any instance would have, bar user/group.
            let probe = Identity::Instance {
                template: name,
                instance: "%i",
            };
            build(&raw, path, probe)?;
            Ok(Unit::Template(Template {
                name: name.to_string(),
                source: path.to_path_buf(),
                instances: raw.instances.iter().map(|i| i.value.clone()).collect(),
                raw,
            }))
        }
    }
}

/// Checks a full service name, `"name"` or `"template@instance"`, such as
/// one that arrives over D-Bus: each part is non-empty, made of
/// `[A-Za-z0-9_.:-]` and not `.` or `..`; the whole is at most
/// [`MAX_NAME_LEN`] bytes. Whether such a service exists is not checked.
pub fn validate_service_name(name: &str) -> Result<(), NameError> {
    match split_name(name) {
        (template, Some(instance)) => {
            if template.is_empty() {
                return Err(NameError::MissingTemplate);
            }
            validate_name_part(template)?;
            if instance.is_empty() {
                return Err(NameError::MissingInstance {
                    template: template.to_string(),
                });
            }
            validate_instance_name(template, instance)
        }
        (plain, None) => {
            validate_name_part(plain)?;
            check_length(plain.len())
        }
    }
}

/// Splits `"apache2@chroot1"` into `("apache2", Some("chroot1"))` and
/// `"nginx"` into `("nginx", None)`, at the first `@`.
pub fn split_name(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((template, instance)) => (template, Some(instance)),
        None => (name, None),
    }
}

/// Why a text is not a service, template or instance name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong { len: usize },
    #[error("{name:?} contains {found:?}; names use only letters, digits and _ . : -")]
    BadCharacter { name: String, found: char },
    #[error("{name:?} is not a name (\".\" and \"..\" could escape a path)")]
    Dots { name: String },
    #[error("\"{template}@\" names a template; add an instance name after the @")]
    MissingInstance { template: String },
    #[error("the template name before the @ is empty")]
    MissingTemplate,
}

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
    fn whole_file(path: &Path, kind: ConfigErrorKind) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            kind,
        }
    }

    fn at(path: &Path, at: Position, key: &str, kind: ConfigErrorKind) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: Some(at.line),
            column: Some(at.column),
            key: Some(key.to_string()),
            kind,
        }
    }

    fn for_instance(self, instance: &str) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Instance {
                instance: instance.to_string(),
                kind: Box::new(self.kind),
            },
            ..self
        }
    }

    fn render(&self) -> String {
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

// ---------------------------------------------------------------------------
// Helpers: file names, reading, the document walk, and building specs.

/// The signals with names, in the numbering of the platform's C library.
const SIGNAL_NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The offset in `"+3"` (after RTMIN) or `"-3"` (after RTMAX); `""` is 0.
fn realtime_offset(text: &str, sign: char) -> Option<i32> {
    if text.is_empty() {
        return Some(0);
    }
    let digits = text.strip_prefix(sign)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Too many digits is out of range, not an unknown name.
    Some(digits.parse().unwrap_or(i32::MAX))
}

fn split_while(text: &str, keep: impl Fn(char) -> bool) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|&(_, c)| !keep(c))
        .map_or(text.len(), |(index, _)| index);
    text.split_at(end)
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "description",
    "exec",
    "expect",
    "restart",
    "restart-delay",
    "start-limit",
    "stop-signal",
    "stop-timeout",
    "reload-signal",
    "chroot",
    "user",
    "group",
    "working-directory",
    "environment",
    "pid-file",
    "output",
    "autostart",
    "instances",
];

const START_LIMIT_KEYS: &[&str] = &["burst", "interval"];

fn unknown_key_hint(suggestion: &Option<&'static str>, known: &[&str]) -> String {
    match suggestion {
        Some(key) => format!("did you mean \"{key}\"?"),
        None => format!("the keys are {}", known.join(", ")),
    }
}

/// The known key a mistyped one most likely meant: the same with dashes for
/// underscores or in lower case, or one within two edits.
fn suggest_key(key: &str, known: &'static [&'static str]) -> Option<&'static str> {
    // Far longer than every known key means more than two edits away; the
    // check also keeps a megabyte-long key from costing seconds.
    if key.len() > 20 {
        return None;
    }
    let normalized = key.to_ascii_lowercase().replace('_', "-");
    known
        .iter()
        .map(|candidate| (edit_distance(&normalized, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

/// Service files are `*.toml` that are not hidden; the rest of a directory
/// (backups, swap files, READMEs) is someone else's business.
fn is_service_file_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.starts_with(b".") && bytes.ends_with(b".toml")
}

#[derive(Clone, Copy, Debug)]
enum FileKind<'a> {
    Plain { name: &'a str },
    Template { name: &'a str },
}

/// What the file name (without `.toml`) says the file is.
fn classify_file_name(stem: &str) -> Result<FileKind<'_>, ConfigErrorKind> {
    let bad_name = |error| ConfigErrorKind::BadFileName {
        name: format!("{stem}.toml"),
        reason: FileNameProblem::Name(error),
    };
    if let Some(name) = stem.strip_suffix('@') {
        validate_name_part(name).map_err(bad_name)?;
        // Leave room for "@" and a one-character instance.
        check_length(name.len() + 2).map_err(bad_name)?;
        return Ok(FileKind::Template { name });
    }
    match split_name(stem) {
        (template, Some(instance)) => {
            validate_name_part(template).map_err(bad_name)?;
            Err(ConfigErrorKind::InstanceFile {
                template: template.to_string(),
                instance: instance.to_string(),
            })
        }
        (name, None) => {
            validate_name_part(name).map_err(bad_name)?;
            check_length(name.len()).map_err(bad_name)?;
            Ok(FileKind::Plain { name })
        }
    }
}

fn validate_name_part(part: &str) -> Result<(), NameError> {
    if part.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(found) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(NameError::BadCharacter {
            name: part.to_string(),
            found,
        });
    }
    if part == "." || part == ".." {
        return Err(NameError::Dots {
            name: part.to_string(),
        });
    }
    Ok(())
}

fn validate_instance_name(template: &str, instance: &str) -> Result<(), NameError> {
    validate_name_part(instance)?;
    check_length(template.len() + 1 + instance.len())
}

fn check_length(len: usize) -> Result<(), NameError> {
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong { len });
    }
    Ok(())
}

/// Reads a file of at most [`MAX_FILE_SIZE`] bytes of UTF-8.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let read_error = |error| ConfigError::whole_file(path, ConfigErrorKind::Read(error));
    // O_NONBLOCK: opening a FIFO named like a service file must not hang
    // the loader; it is refused below like any other non-file.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(ConfigError::whole_file(path, ConfigErrorKind::NotAFile));
    }
    let too_large = || {
        ConfigError::whole_file(
            path,
            ConfigErrorKind::TooLarge {
                limit: MAX_FILE_SIZE,
            },
        )
    };
    if metadata.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    // The size can change between fstat and read; the cap holds anyway.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&error.as_bytes()[..valid]);
        let at = Position::of(&prefix, valid);
        ConfigError {
            line: Some(at.line),
            column: Some(at.column),
            ..ConfigError::whole_file(path, ConfigErrorKind::NotUtf8)
        }
    })
}

/// A line and column, 1-based, kept with raw values so that checks made
/// after parsing can still point at their line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    line: usize,
    column: usize,
}

impl Position {
    fn of(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

#[derive(Clone, Debug)]
struct Located<T> {
    value: T,
    at: Position,
}

/// A service file after the checks that do not depend on an instance name:
/// known keys, types, durations, signals, choices. Strings that may hold
/// `%i` stay raw, with their positions.
#[derive(Clone, Debug)]
struct RawService {
    description: Option<Located<String>>,
    exec: Vec<Located<String>>,
    expect: Expect,
    restart: Restart,
    restart_delay: Duration,
    start_limit: StartLimit,
    stop_signal: Signal,
    stop_timeout: Duration,
    reload_signal: Signal,
    chroot: Option<Located<String>>,
    user: Option<Located<String>>,
    group: Option<Located<String>>,
    working_directory: Option<Located<String>>,
    environment: BTreeMap<String, Located<String>>,
    pid_file: Option<Located<String>>,
    output: Output,
    autostart: bool,
    instances: Vec<Located<String>>,
}

/// The values a key may take, for enums spelled as strings in files.
trait Choice: Copy + 'static {
    const ALL: &'static [Self];
    /// For error messages: "no, on-failure or always".
    const CHOICES: &'static str;
    fn spelling(self) -> &'static str;
}

impl Choice for Expect {
    const ALL: &'static [Self] = &[
        Expect::Auto,
        Expect::Foreground,
        Expect::Fork,
        Expect::Daemon,
        Expect::Notify,
    ];
    const CHOICES: &'static str = "auto, foreground, fork, daemon or notify";
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for Restart {
    const ALL: &'static [Self] = &[Restart::No, Restart::OnFailure, Restart::Always];
    const CHOICES: &'static str = "no, on-failure or always";
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for Output {
    const ALL: &'static [Self] = &[Output::Log, Output::Null, Output::Inherit];
    const CHOICES: &'static str = "log, null or inherit";
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

/// "an integer", "a string", …, to finish "expected …, found …".
fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn integer_value(integer: &DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// The entries of a table in the order they appear in the file, so that
/// the first problem reported is the first one a reader meets.
fn in_file_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(
    &'t Spanned<toml::de::DeString<'i>>,
    &'t Spanned<DeValue<'i>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// One file's text, to turn byte spans into errors with lines and columns.
struct Document<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Document<'_> {
    fn position(&self, span: Range<usize>) -> Position {
        Position::of(self.text, span.start)
    }

    fn error(&self, span: Range<usize>, key: &str, kind: ConfigErrorKind) -> ConfigError {
        ConfigError::at(self.path, self.position(span), key, kind)
    }

    fn wrong_type(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        expected: &'static str,
    ) -> ConfigError {
        let found = describe(value.get_ref());
        self.error(
            value.span(),
            key,
            ConfigErrorKind::WrongType { expected, found },
        )
    }

    fn syntax_error(&self, error: &toml::de::Error) -> ConfigError {
        // toml's messages may span lines; an error here is one line.
        let message = error.message().trim().replace('\n', "; ");
        let kind = ConfigErrorKind::Syntax(message);
        match error.span() {
            Some(span) => {
                let at = self.position(span);
                ConfigError {
                    line: Some(at.line),
                    column: Some(at.column),
                    ..ConfigError::whole_file(self.path, kind)
                }
            }
            None => ConfigError::whole_file(self.path, kind),
        }
    }

    fn unknown_key(
        &self,
        key: &Spanned<toml::de::DeString<'_>>,
        prefix: &str,
        known: &'static [&'static str],
    ) -> ConfigError {
        self.error(
            key.span(),
            &format!("{prefix}{}", key.get_ref()),
            ConfigErrorKind::UnknownKey {
                suggestion: suggest_key(key.get_ref(), known),
                known,
            },
        )
    }

    fn read_service(
        &self,
        table: &DeTable<'_>,
        kind: FileKind<'_>,
    ) -> Result<RawService, ConfigError> {
        let mut raw = RawService {
            description: None,
            exec: Vec::new(),
            expect: Expect::default(),
            restart: Restart::default(),
            restart_delay: Duration::from_millis(100),
            start_limit: StartLimit::default(),
            stop_signal: Signal::TERM,
            stop_timeout: Duration::from_secs(10),
            reload_signal: Signal::HUP,
            chroot: None,
            user: None,
            group: None,
            working_directory: None,
            environment: BTreeMap::new(),
            pid_file: None,
            output: Output::default(),
            autostart: true,
            instances: Vec::new(),
        };
        let mut has_exec = false;
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref();
            match name {
                "description" => raw.description = Some(self.string(value, name)?),
                "exec" => {
                    raw.exec = self.exec(value)?;
                    has_exec = true;
                }
                "expect" => raw.expect = self.choice(value, name)?,
                "restart" => raw.restart = self.choice(value, name)?,
                "restart-delay" => raw.restart_delay = self.duration(value, name)?,
                "start-limit" => raw.start_limit = self.start_limit(value)?,
                "stop-signal" => raw.stop_signal = self.signal(value, name)?,
                "stop-timeout" => raw.stop_timeout = self.duration(value, name)?,
                "reload-signal" => raw.reload_signal = self.signal(value, name)?,
                "chroot" => raw.chroot = Some(self.string(value, name)?),
                "user" => raw.user = Some(self.string(value, name)?),
                "group" => raw.group = Some(self.string(value, name)?),
                "working-directory" => raw.working_directory = Some(self.string(value, name)?),
                "environment" => raw.environment = self.environment(value)?,
                "pid-file" => raw.pid_file = Some(self.string(value, name)?),
                "output" => raw.output = self.choice(value, name)?,
                "autostart" => raw.autostart = self.boolean(value, name)?,
                "instances" => match kind {
                    FileKind::Template { .. } => raw.instances = self.instances(value)?,
                    FileKind::Plain { name: service } => {
                        return Err(self.error(
                            key.span(),
                            name,
                            ConfigErrorKind::InstancesOutsideTemplate {
                                name: service.to_string(),
                            },
                        ));
                    }
                },
                _ => return Err(self.unknown_key(key, "", TOP_LEVEL_KEYS)),
            }
        }
        if !has_exec {
            return Err(ConfigError {
                key: Some("exec".to_string()),
                ..ConfigError::whole_file(self.path, ConfigErrorKind::MissingExec)
            });
        }
        Ok(raw)
    }

    /// A string that may hold `%i`; NUL is refused here because no
    /// substitution can remove it.
    fn string(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Result<Located<String>, ConfigError> {
        match value.get_ref() {
            DeValue::String(text) if text.contains('\0') => {
                Err(self.error(value.span(), key, ConfigErrorKind::Nul))
            }
            DeValue::String(text) => Ok(Located {
                value: text.to_string(),
                at: self.position(value.span()),
            }),
            _ => Err(self.wrong_type(value, key, "a string")),
        }
    }

    fn exec(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<Located<String>>, ConfigError> {
        let elements = match value.get_ref() {
            DeValue::Array(elements) => elements,
            DeValue::String(line) => {
                let words: Vec<String> =
                    line.split_whitespace().map(|w| format!("{w:?}")).collect();
                let suggestion = if words.is_empty() {
                    "[\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]".to_string()
                } else {
                    format!("[{}]", words.join(", "))
                };
                return Err(self.error(
                    value.span(),
                    "exec",
                    ConfigErrorKind::ExecIsString { suggestion },
                ));
            }
            _ => return Err(self.wrong_type(value, "exec", "an array of strings (the argv)")),
        };
        if elements.is_empty() {
            return Err(self.error(value.span(), "exec", ConfigErrorKind::ExecEmpty));
        }
        elements
            .iter()
            .enumerate()
            .map(|(index, element)| match element.get_ref() {
                DeValue::String(_) => self.string(element, "exec"),
                other => Err(self.error(
                    element.span(),
                    "exec",
                    ConfigErrorKind::ExecArgumentType {
                        index,
                        found: describe(other),
                    },
                )),
            })
            .collect()
    }

    fn choice<T: Choice>(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<T, ConfigError> {
        let DeValue::String(text) = value.get_ref() else {
            return Err(self.wrong_type(value, key, "a string"));
        };
        T::ALL
            .iter()
            .copied()
            .find(|choice| choice.spelling() == text.as_ref())
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    key,
                    ConfigErrorKind::InvalidChoice {
                        value: text.to_string(),
                        choices: T::CHOICES,
                    },
                )
            })
    }

    fn boolean(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<bool, ConfigError> {
        match value.get_ref() {
            DeValue::Boolean(flag) => Ok(*flag),
            _ => Err(self.wrong_type(value, key, "true or false (without quotes)")),
        }
    }

    /// A duration string; a bare integer is read as one too, so `0` works
    /// and `10` gets the "add a unit" message instead of a type error.
    fn duration(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<Duration, ConfigError> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Integer(integer) => integer.to_string(),
            _ => return Err(self.wrong_type(value, key, "a duration such as \"10s\"")),
        };
        parse_duration(&text).map_err(|error| {
            self.error(value.span(), key, ConfigErrorKind::Duration { text, error })
        })
    }

    fn signal(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<Signal, ConfigError> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            // Decimal, so that 0x0f reads as 15 and a huge number is out of range.
            DeValue::Integer(integer) => integer_value(integer)
                .map_or_else(|| integer.as_str().to_string(), |number| number.to_string()),
            _ => {
                return Err(self.wrong_type(
                    value,
                    key,
                    "a signal name such as \"TERM\", or a number",
                ));
            }
        };
        Signal::from_str(&text)
            .map_err(|error| self.error(value.span(), key, ConfigErrorKind::Signal { text, error }))
    }

    fn start_limit(&self, value: &Spanned<DeValue<'_>>) -> Result<StartLimit, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.wrong_type(
                value,
                "start-limit",
                "a table such as { burst = 5, interval = \"10s\" }",
            ));
        };
        let mut limit = StartLimit::default();
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "burst" => limit.burst = self.burst(value)?,
                "interval" => {
                    limit.interval = self.duration(value, "start-limit.interval")?;
                    if limit.interval.is_zero() {
                        return Err(self.error(
                            value.span(),
                            "start-limit.interval",
                            ConfigErrorKind::ZeroInterval,
                        ));
                    }
                }
                _ => return Err(self.unknown_key(key, "start-limit.", START_LIMIT_KEYS)),
            }
        }
        Ok(limit)
    }

    fn burst(&self, value: &Spanned<DeValue<'_>>) -> Result<u32, ConfigError> {
        let DeValue::Integer(integer) = value.get_ref() else {
            return Err(self.wrong_type(
                value,
                "start-limit.burst",
                "a whole number (without quotes)",
            ));
        };
        integer_value(integer)
            .and_then(|number| u32::try_from(number).ok())
            .filter(|burst| *burst >= 1)
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    "start-limit.burst",
                    ConfigErrorKind::Burst {
                        value: integer.to_string(),
                    },
                )
            })
    }

    fn environment(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<BTreeMap<String, Located<String>>, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.wrong_type(
                value,
                "environment",
                "a table of strings such as { LANG = \"C\" }",
            ));
        };
        let mut environment = BTreeMap::new();
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref();
            if !is_environment_name(name) {
                return Err(self.error(
                    key.span(),
                    "environment",
                    ConfigErrorKind::EnvironmentName {
                        name: name.to_string(),
                    },
                ));
            }
            if name == crate::spawn::INVOCATION_VARIABLE {
                return Err(self.error(
                    key.span(),
                    "environment",
                    ConfigErrorKind::ReservedVariable {
                        name: crate::spawn::INVOCATION_VARIABLE,
                    },
                ));
            }
            let key_path = format!("environment.{name}");
            let located = match value.get_ref() {
                DeValue::String(_) => self.string(value, &key_path)?,
                other => {
                    return Err(self.error(
                        value.span(),
                        &key_path,
                        ConfigErrorKind::EnvironmentValue {
                            found: describe(other),
                        },
                    ));
                }
            };
            environment.insert(name.to_string(), located);
        }
        Ok(environment)
    }

    /// The listed names, unchecked: each bad one is its own error when the
    /// template is instantiated, so the good ones still load.
    fn instances(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<Located<String>>, ConfigError> {
        let DeValue::Array(elements) = value.get_ref() else {
            return Err(self.wrong_type(value, "instances", "an array of instance names"));
        };
        elements
            .iter()
            .map(|element| match element.get_ref() {
                DeValue::String(name) => Ok(Located {
                    value: name.to_string(),
                    at: self.position(element.span()),
                }),
                _ => Err(self.wrong_type(element, "instances", "an instance name (a string)")),
            })
            .collect()
    }
}

fn is_environment_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Which service a [`RawService`] is being built into.
#[derive(Clone, Copy)]
enum Identity<'a> {
    Plain {
        name: &'a str,
    },
    Instance {
        template: &'a str,
        instance: &'a str,
    },
}

/// Substitutes the instance and checks what substitution could affect.
fn build(
    raw: &RawService,
    source: &Path,
    identity: Identity<'_>,
) -> Result<ServiceSpec, ConfigError> {
    let error = |at: Position, key: &str, kind| ConfigError::at(source, at, key, kind);
    let (instance, plain_name) = match identity {
        Identity::Plain { name } => (None, name),
        Identity::Instance { instance, .. } => (Some(instance), ""),
    };
    let expand = |located: &Located<String>, key: &str| {
        expand_specifiers(&located.value, instance).ok_or_else(|| {
            error(
                located.at,
                key,
                ConfigErrorKind::InstanceSpecifierOutsideTemplate {
                    name: plain_name.to_string(),
                },
            )
        })
    };
    let absolute_path = |located: &Option<Located<String>>, key: &str| match located {
        None => Ok(None),
        Some(located) => {
            let path = expand(located, key)?;
            if path.starts_with('/') {
                Ok(Some(PathBuf::from(path)))
            } else {
                Err(error(
                    located.at,
                    key,
                    ConfigErrorKind::RelativePath { path },
                ))
            }
        }
    };
    let account = |located: &Option<Located<String>>, key: &str| match located {
        None => Ok(None),
        Some(located) => {
            let name = expand(located, key)?;
            if name.is_empty() {
                Err(error(located.at, key, ConfigErrorKind::Empty))
            } else if name.contains(':') {
                Err(error(located.at, key, ConfigErrorKind::Colon))
            } else {
                Ok(Some(name))
            }
        }
    };

    let description = match &raw.description {
        Some(description) => expand(description, "description")?,
        None => String::new(),
    };
    let exec = raw
        .exec
        .iter()
        .map(|argument| expand(argument, "exec"))
        .collect::<Result<Vec<_>, _>>()?;
    match (exec.first(), raw.exec.first()) {
        (Some(program), Some(located)) if !program.starts_with('/') => {
            return Err(error(
                located.at,
                "exec",
                ConfigErrorKind::ExecRelative {
                    program: program.clone(),
                    suggestion: absolute_suggestion(program),
                },
            ));
        }
        (Some(_), _) => {}
        // read_service refuses an empty exec; this keeps the invariant even
        // if that ever changes.
        (None, _) => {
            return Err(ConfigError {
                key: Some("exec".to_string()),
                ..ConfigError::whole_file(source, ConfigErrorKind::ExecEmpty)
            });
        }
    }
    let chroot = absolute_path(&raw.chroot, "chroot")?;
    let user = account(&raw.user, "user")?;
    let group = account(&raw.group, "group")?;
    let working_directory = absolute_path(&raw.working_directory, "working-directory")?;
    let environment = raw
        .environment
        .iter()
        .map(|(name, value)| Ok((name.clone(), expand(value, &format!("environment.{name}"))?)))
        .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
    let pid_file = absolute_path(&raw.pid_file, "pid-file")?;

    let (name, template, instance) = match identity {
        Identity::Plain { name } => (name.to_string(), None, None),
        Identity::Instance { template, instance } => (
            format!("{template}@{instance}"),
            Some(template.to_string()),
            Some(instance.to_string()),
        ),
    };
    Ok(ServiceSpec {
        name,
        template,
        instance,
        source: source.to_path_buf(),
        description,
        exec,
        expect: raw.expect,
        restart: raw.restart,
        restart_delay: raw.restart_delay,
        start_limit: raw.start_limit,
        stop_signal: raw.stop_signal,
        stop_timeout: raw.stop_timeout,
        reload_signal: raw.reload_signal,
        chroot,
        user,
        group,
        working_directory,
        environment,
        pid_file,
        output: raw.output,
        autostart: raw.autostart,
    })
}

/// Replaces `%i` with the instance and `%%` with `%`; any other `%` stays.
/// `None` when the text has `%i` but there is no instance (a plain service).
fn expand_specifiers(text: &str, instance: Option<&str>) -> Option<String> {
    let mut expanded = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('%')) => {
                chars.next();
                expanded.push('%');
            }
            ('%', Some('i')) => {
                chars.next();
                expanded.push_str(instance?);
            }
            _ => expanded.push(c),
        }
    }
    Some(expanded)
}

/// An example absolute path for a relative program, for the error message.
fn absolute_suggestion(program: &str) -> String {
    let file_name = program.rsplit('/').next().unwrap_or(program);
    let file_name = if file_name.is_empty() {
        "program"
    } else {
        file_name
    };
    format!("/usr/sbin/{file_name}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const DIR: &str = "/etc/adoptd/services";

    fn parse(stem: &str, text: &str) -> Result<Unit, ConfigError> {
        parse_str(stem, &Path::new(DIR).join(format!("{stem}.toml")), text)
    }

    fn service(text: &str) -> ServiceSpec {
        match parse("web", text) {
            Ok(Unit::Service(spec)) => spec,
            other => panic!("expected a service, got {other:?}"),
        }
    }

    fn template(stem: &str, text: &str) -> Template {
        match parse(stem, text) {
            Ok(Unit::Template(template)) => template,
            other => panic!("expected a template, got {other:?}"),
        }
    }

    fn parse_error(stem: &str, text: &str) -> ConfigError {
        match parse(stem, text) {
            Err(error) => error,
            Ok(unit) => panic!("expected an error, got {unit:?}"),
        }
    }

    /// The error's text, for a plain service named "web".
    fn message(text: &str) -> String {
        parse_error("web", text).to_string()
    }

    const EXEC: &str = "exec = [\"/usr/sbin/nginx\"]\n";

    /// A fresh directory under the system's temporary directory, removed
    /// when dropped.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(test: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "adoptd-config-{}-{test}-{unique}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            ScratchDir(path)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(services: &[ServiceSpec]) -> Vec<&str> {
        services.iter().map(|spec| spec.name.as_str()).collect()
    }

    // --- durations ---

    #[test]
    fn duration_accepts_numbers_with_units_combined() {
        let cases = [
            ("0", Duration::ZERO),
            ("000", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("7us", Duration::from_micros(7)),
            ("1m 30s", Duration::from_secs(90)),
            (" 10 s ", Duration::from_secs(10)),
            ("876000h", MAX_DURATION),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn duration_bare_number_needs_a_unit() {
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit {
                number: "10".into()
            })
        );
        assert_eq!(
            parse_duration("1m30").unwrap_err().to_string(),
            "30 has no unit (add one, e.g. \"30s\" or \"30ms\")"
        );
    }

    #[test]
    fn duration_unknown_unit_is_named() {
        assert_eq!(
            parse_duration("10 sekunden").unwrap_err().to_string(),
            "unknown unit \"sekunden\" (use ms, s, m, h)"
        );
        assert!(matches!(
            parse_duration("5d"),
            Err(DurationError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn duration_fraction_is_refused_with_a_rewrite() {
        for text in ["1.5s", "1,5s", ".5s"] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::Fraction),
                "{text:?}"
            );
        }
    }

    #[test]
    fn duration_overflow_is_an_error() {
        for text in [
            "18446744073709551616s",
            "18446744073709551615h",
            "18446744073709551615s18446744073709551615s",
            "876000h1us",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::TooLarge),
                "{text:?}"
            );
        }
    }

    #[test]
    fn duration_garbage_is_an_error() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("   "), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("ms"),
            Err(DurationError::MissingNumber { unit: "ms".into() })
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Unexpected { found: '-' })
        );
        assert_eq!(
            parse_duration("1s+"),
            Err(DurationError::Unexpected { found: '+' })
        );
        assert_eq!(
            parse_duration("1 2s"),
            Err(DurationError::MissingUnit { number: "1".into() })
        );
    }

    // --- signals ---

    #[test]
    fn signal_parses_names_numbers_and_realtime() {
        let rtmin = libc::SIGRTMIN();
        let cases = [
            ("TERM", libc::SIGTERM),
            ("SIGTERM", libc::SIGTERM),
            ("sigterm", libc::SIGTERM),
            ("15", libc::SIGTERM),
            ("KILL", libc::SIGKILL),
            ("usr1", libc::SIGUSR1),
            ("RTMIN", rtmin),
            ("RTMIN+3", rtmin + 3),
            ("SIGRTMIN+3", rtmin + 3),
            ("RTMAX", libc::SIGRTMAX()),
            ("RTMAX-1", libc::SIGRTMAX() - 1),
        ];
        for (text, number) in cases {
            assert_eq!(
                text.parse::<Signal>().map(Signal::number),
                Ok(number),
                "{text:?}"
            );
        }
        assert_eq!(Signal::TERM.name(), "TERM");
        assert_eq!(Signal::new(rtmin + 3).unwrap().name(), "RTMIN+3");
        assert_eq!(Signal::HUP.to_string(), "HUP");
    }

    #[test]
    fn signal_name_round_trips_for_every_number() {
        for number in 1..=libc::SIGRTMAX() {
            let signal = Signal::new(number).unwrap();
            assert_eq!(signal.name().parse(), Ok(signal), "{}", signal.name());
        }
    }

    #[test]
    fn signal_zero_and_out_of_range_are_refused() {
        assert_eq!(Signal::new(0), None);
        assert_eq!(Signal::new(-1), None);
        assert_eq!(Signal::new(libc::SIGRTMAX() + 1), None);
        for text in ["0", "-9", "65", "99999999999999999999"] {
            assert!(
                matches!(text.parse::<Signal>(), Err(SignalError::OutOfRange { .. })),
                "{text:?}"
            );
        }
        assert!(matches!(
            "RTMIN+99".parse::<Signal>(),
            Err(SignalError::RealtimeOutOfRange { .. })
        ));
        assert!(matches!(
            "RTMAX-99".parse::<Signal>(),
            Err(SignalError::RealtimeOutOfRange { .. })
        ));
    }

    #[test]
    fn signal_unknown_name_is_refused() {
        for text in ["", "TERMINATE", "SIG", "RTMIN3", "RTMIN+", "+15", "TERM "] {
            assert!(
                matches!(text.parse::<Signal>(), Err(SignalError::UnknownName { .. })),
                "{text:?}"
            );
        }
    }

    // --- names ---

    #[test]
    fn service_names_use_letters_digits_and_few_punctuation_marks() {
        for name in [
            "nginx",
            "a",
            "web-1.example:80_x",
            "apache2@chroot1",
            "t@a.b:c-d_e",
        ] {
            assert_eq!(validate_service_name(name), Ok(()), "{name:?}");
        }
        for (name, found) in [
            ("a b", ' '),
            ("web/x", '/'),
            ("caf\u{e9}", '\u{e9}'),
            ("a@b@c", '@'),
        ] {
            assert!(
                matches!(
                    validate_service_name(name),
                    Err(NameError::BadCharacter { found: f, .. }) if f == found
                ),
                "{name:?}"
            );
        }
        assert_eq!(validate_service_name(""), Err(NameError::Empty));
        assert_eq!(validate_service_name("@x"), Err(NameError::MissingTemplate));
        assert_eq!(
            validate_service_name("apache2@"),
            Err(NameError::MissingInstance {
                template: "apache2".into()
            })
        );
    }

    #[test]
    fn dot_and_dot_dot_are_not_names() {
        for name in [".", "..", "t@.", "t@..", "..@x"] {
            assert!(
                matches!(validate_service_name(name), Err(NameError::Dots { .. })),
                "{name:?}"
            );
        }
        assert_eq!(validate_service_name("t@.hidden"), Ok(()));
    }

    #[test]
    fn service_name_longer_than_128_bytes_is_refused() {
        assert_eq!(validate_service_name(&"a".repeat(128)), Ok(()));
        assert_eq!(
            validate_service_name(&"a".repeat(129)),
            Err(NameError::TooLong { len: 129 })
        );
        let full = format!("{}@{}", "t".repeat(64), "i".repeat(64));
        assert_eq!(
            validate_service_name(&full),
            Err(NameError::TooLong { len: 129 })
        );
    }

    #[test]
    fn split_name_separates_template_and_instance() {
        assert_eq!(split_name("nginx"), ("nginx", None));
        assert_eq!(split_name("apache2@chroot1"), ("apache2", Some("chroot1")));
        assert_eq!(split_name("apache2@"), ("apache2", Some("")));
        assert_eq!(split_name("a@b@c"), ("a", Some("b@c")));
    }

    // --- plain services ---

    #[test]
    fn minimal_service_gets_the_documented_defaults() {
        let spec = service(EXEC);
        assert_eq!(
            spec,
            ServiceSpec {
                name: "web".into(),
                template: None,
                instance: None,
                source: PathBuf::from("/etc/adoptd/services/web.toml"),
                description: String::new(),
                exec: vec!["/usr/sbin/nginx".into()],
                expect: Expect::Auto,
                restart: Restart::OnFailure,
                restart_delay: Duration::from_millis(100),
                start_limit: StartLimit {
                    burst: 5,
                    interval: Duration::from_secs(10)
                },
                stop_signal: Signal::TERM,
                stop_timeout: Duration::from_secs(10),
                reload_signal: Signal::HUP,
                chroot: None,
                user: None,
                group: None,
                working_directory: None,
                environment: BTreeMap::new(),
                pid_file: None,
                output: Output::Log,
                autostart: true,
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let spec = service(
            r#"
            description = "Web server"
            exec = ["/usr/sbin/nginx", "-g", "daemon off;"]
            expect = "daemon"
            restart = "always"
            restart-delay = "1s500ms"
            start-limit = { burst = 3, interval = "1m" }
            stop-signal = "QUIT"
            stop-timeout = "30s"
            reload-signal = "USR2"
            chroot = "/srv/web"
            user = "www-data"
            group = "www-data"
            working-directory = "/"
            environment = { LANG = "C", _X1 = "" }
            pid-file = "/run/nginx.pid"
            output = "null"
            autostart = false
            "#,
        );
        assert_eq!(spec.description, "Web server");
        assert_eq!(spec.exec, ["/usr/sbin/nginx", "-g", "daemon off;"]);
        assert_eq!(spec.expect, Expect::Daemon);
        assert_eq!(spec.restart, Restart::Always);
        assert_eq!(spec.restart_delay, Duration::from_millis(1500));
        assert_eq!(
            spec.start_limit,
            StartLimit {
                burst: 3,
                interval: Duration::from_secs(60)
            }
        );
        assert_eq!(spec.stop_signal, "QUIT".parse().unwrap());
        assert_eq!(spec.stop_timeout, Duration::from_secs(30));
        assert_eq!(spec.reload_signal, "USR2".parse().unwrap());
        assert_eq!(spec.chroot, Some(PathBuf::from("/srv/web")));
        assert_eq!(spec.user.as_deref(), Some("www-data"));
        assert_eq!(spec.group.as_deref(), Some("www-data"));
        assert_eq!(spec.working_directory, Some(PathBuf::from("/")));
        assert_eq!(spec.environment["LANG"], "C");
        assert_eq!(spec.environment["_X1"], "");
        assert_eq!(spec.pid_file, Some(PathBuf::from("/run/nginx.pid")));
        assert_eq!(spec.output, Output::Null);
        assert!(!spec.autostart);
    }

    #[test]
    fn enum_values_are_spelled_as_in_files() {
        for expect in <Expect as Choice>::ALL {
            let spec = service(&format!("{EXEC}expect = \"{}\"", expect.as_str()));
            assert_eq!(spec.expect, *expect);
        }
        for restart in <Restart as Choice>::ALL {
            let spec = service(&format!("{EXEC}restart = \"{}\"", restart.as_str()));
            assert_eq!(spec.restart, *restart);
        }
        for output in <Output as Choice>::ALL {
            let spec = service(&format!("{EXEC}output = \"{}\"", output.as_str()));
            assert_eq!(spec.output, *output);
        }
        assert_eq!(Expect::default(), Expect::Auto);
        assert_eq!(Restart::default(), Restart::OnFailure);
        assert_eq!(Output::default(), Output::Log);
    }

    #[test]
    fn invalid_enum_value_lists_the_choices() {
        assert_eq!(
            message(&format!("{EXEC}restart = \"sometimes\"")),
            "/etc/adoptd/services/web.toml:2: restart: invalid value \"sometimes\" (use no, on-failure or always)"
        );
        assert!(
            message(&format!("{EXEC}expect = \"forking\""))
                .contains("auto, foreground, fork, daemon or notify")
        );
        assert!(message(&format!("{EXEC}output = \"journal\"")).contains("log, null or inherit"));
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let error = parse_error("web", &format!("{EXEC}\nrestrat = \"always\"\n"));
        assert_eq!(
            error.to_string(),
            "/etc/adoptd/services/web.toml:3: restrat: unknown key (did you mean \"restart\"?)"
        );
        assert_eq!((error.line, error.column), (Some(3), Some(1)));
        assert_eq!(error.key.as_deref(), Some("restrat"));
    }

    #[test]
    fn unknown_key_suggests_the_dashed_spelling() {
        assert!(
            message(&format!("{EXEC}restart_delay = \"1s\""))
                .ends_with("restart_delay: unknown key (did you mean \"restart-delay\"?)")
        );
        assert!(message(&format!("{EXEC}Exec2 = 1")).contains("did you mean \"exec\"?"));
    }

    #[test]
    fn unknown_key_without_a_near_match_lists_the_keys() {
        let text = message(&format!("{EXEC}color = \"blue\""));
        assert!(
            text.contains("color: unknown key (the keys are description, exec, expect"),
            "{text}"
        );
    }

    #[test]
    fn unknown_key_inside_start_limit_is_refused() {
        let error = parse_error(
            "web",
            &format!("{EXEC}[start-limit]\nburst = 2\nbrust = 3\n"),
        );
        assert_eq!(error.key.as_deref(), Some("start-limit.brust"));
        assert_eq!(error.line, Some(4));
        assert!(error.to_string().ends_with("(did you mean \"burst\"?)"));
    }

    #[test]
    fn first_problem_in_file_order_is_reported() {
        let error = parse_error("web", "zzz = 1\nexec = \"bad\"\naaa = 2\n");
        assert_eq!(error.key.as_deref(), Some("zzz"));
    }

    #[test]
    fn toml_syntax_error_reports_line_and_column() {
        let error = parse_error("web", &format!("{EXEC}description = \"unterminated\n"));
        assert_eq!(error.line, Some(2));
        assert!(error.column.is_some());
        assert_eq!(error.key, None);
        assert!(
            error
                .to_string()
                .starts_with("/etc/adoptd/services/web.toml:2: invalid TOML: ")
        );
        assert!(!error.to_string().contains('\n'));
    }

    #[test]
    fn a_key_given_twice_is_a_syntax_error() {
        let error = parse_error("web", &format!("{EXEC}user = \"a\"\nuser = \"b\"\n"));
        assert_eq!(error.line, Some(3));
        assert!(error.to_string().contains("invalid TOML: duplicate key"));
    }

    #[test]
    fn missing_exec_is_refused() {
        assert_eq!(
            message("description = \"x\"\n"),
            "/etc/adoptd/services/web.toml: exec: missing: every service needs one, e.g. exec = [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]"
        );
        assert!(matches!(
            parse_error("web", "").kind,
            ConfigErrorKind::MissingExec
        ));
    }

    #[test]
    fn exec_as_a_string_says_it_is_an_argv_not_a_shell_line() {
        assert_eq!(
            message("exec = \"/usr/sbin/nginx -g x\"\n"),
            "/etc/adoptd/services/web.toml:1: exec: exec is an argv, not a shell line: write exec = [\"/usr/sbin/nginx\", \"-g\", \"x\"]"
        );
    }

    #[test]
    fn exec_must_not_be_empty() {
        assert!(matches!(
            parse_error("web", "exec = []").kind,
            ConfigErrorKind::ExecEmpty
        ));
    }

    #[test]
    fn relative_exec_suggests_an_absolute_path() {
        assert_eq!(
            message("description = \"x\"\nexec = [\"nginx\", \"-t\"]\n"),
            "/etc/adoptd/services/web.toml:2: exec: exec[0] must be an absolute path (\"nginx\" is relative; write e.g. \"/usr/sbin/nginx\")"
        );
        assert!(message("exec = [\"./bin/run\"]").contains("write e.g. \"/usr/sbin/run\""));
        assert!(matches!(
            parse_error("web", "exec = [\"\"]").kind,
            ConfigErrorKind::ExecRelative { .. }
        ));
    }

    #[test]
    fn exec_argument_errors_point_at_the_argument() {
        let error = parse_error("web", "exec = [\n  \"/bin/sleep\",\n  10,\n]\n");
        assert_eq!(error.line, Some(3));
        assert_eq!(
            error.to_string(),
            "/etc/adoptd/services/web.toml:3: exec: exec[1] must be a string, found an integer (quote it)"
        );
        let nul = parse_error("web", "exec = [\n\"/bin/echo\",\n\"a\\u0000b\"]");
        assert!(matches!(nul.kind, ConfigErrorKind::Nul));
        assert_eq!(nul.line, Some(3));
    }

    #[test]
    fn invalid_duration_reports_file_line_and_key() {
        let text = format!("{EXEC}description = \"web\"\n\nrestart-delay = \"10 sekunden\"\n");
        assert_eq!(
            message(&text),
            "/etc/adoptd/services/web.toml:4: restart-delay: invalid duration \"10 sekunden\": unknown unit \"sekunden\" (use ms, s, m, h)"
        );
    }

    #[test]
    fn integer_duration_zero_is_accepted_others_need_a_unit() {
        assert_eq!(
            service(&format!("{EXEC}restart-delay = 0")).restart_delay,
            Duration::ZERO
        );
        assert_eq!(
            message(&format!("{EXEC}stop-timeout = 10")),
            "/etc/adoptd/services/web.toml:2: stop-timeout: invalid duration \"10\": 10 has no unit (add one, e.g. \"10s\" or \"10ms\")"
        );
        assert!(
            message(&format!("{EXEC}stop-timeout = 1.5"))
                .contains("expected a duration such as \"10s\", found a float")
        );
    }

    #[test]
    fn start_limit_may_set_one_field_and_keeps_the_other_default() {
        let spec = service(&format!("{EXEC}[start-limit]\nburst = 1\n"));
        assert_eq!(spec.start_limit.burst, 1);
        assert_eq!(spec.start_limit.interval, Duration::from_secs(10));
        let spec = service(&format!("{EXEC}start-limit.interval = \"5s\"\n"));
        assert_eq!(spec.start_limit.burst, 5);
        assert_eq!(spec.start_limit.interval, Duration::from_secs(5));
    }

    #[test]
    fn start_limit_burst_must_be_at_least_one() {
        for burst in ["0", "-1", "4294967296", "99999999999999999999999"] {
            let error = parse_error("web", &format!("{EXEC}start-limit = {{ burst = {burst} }}"));
            assert!(
                matches!(error.kind, ConfigErrorKind::Burst { .. }),
                "{burst}"
            );
            assert_eq!(error.key.as_deref(), Some("start-limit.burst"));
        }
        assert_eq!(
            service(&format!("{EXEC}start-limit = {{ burst = 4294967295 }}"))
                .start_limit
                .burst,
            u32::MAX
        );
        assert!(
            message(&format!("{EXEC}start-limit = {{ burst = \"5\" }}"))
                .contains("expected a whole number")
        );
    }

    #[test]
    fn start_limit_interval_must_be_more_than_zero() {
        let error = parse_error(
            "web",
            &format!("{EXEC}start-limit = {{ interval = \"0s\" }}"),
        );
        assert!(matches!(error.kind, ConfigErrorKind::ZeroInterval));
        assert_eq!(error.key.as_deref(), Some("start-limit.interval"));
    }

    #[test]
    fn signals_in_files_accept_names_and_numbers() {
        let spec = service(&format!(
            "{EXEC}stop-signal = 9\nreload-signal = \"SIGUSR1\"\n"
        ));
        assert_eq!(spec.stop_signal, Signal::KILL);
        assert_eq!(spec.reload_signal.number(), libc::SIGUSR1);
        let spec = service(&format!(
            "{EXEC}stop-signal = \"STOP\"\nreload-signal = \"RTMIN+3\"\n"
        ));
        assert_eq!(spec.stop_signal.number(), libc::SIGSTOP);
        assert_eq!(spec.reload_signal.number(), libc::SIGRTMIN() + 3);
        assert_eq!(
            service(&format!("{EXEC}stop-signal = 0x0f")).stop_signal,
            Signal::TERM
        );
    }

    #[test]
    fn signal_zero_in_a_file_is_refused() {
        assert_eq!(
            message(&format!("{EXEC}stop-signal = 0")),
            format!(
                "/etc/adoptd/services/web.toml:2: stop-signal: invalid signal \"0\": 0 is not a signal number (use 1 to {})",
                libc::SIGRTMAX()
            )
        );
        assert!(
            message(&format!("{EXEC}reload-signal = \"TERMINATE\""))
                .contains("unknown signal name")
        );
        assert!(
            message(&format!("{EXEC}stop-signal = 99999999999999999999"))
                .contains("is not a signal number")
        );
    }

    #[test]
    fn relative_chroot_is_reported_at_its_line() {
        let error = parse_error(
            "web",
            &format!("{EXEC}user = \"www\"\n\nchroot = \"srv/web\"\n"),
        );
        assert_eq!(
            error.to_string(),
            "/etc/adoptd/services/web.toml:4: chroot: must be an absolute path (\"srv/web\" is relative)"
        );
        assert_eq!(error.column, Some(10));
    }

    #[test]
    fn working_directory_and_pid_file_must_be_absolute() {
        for key in ["working-directory", "pid-file", "chroot"] {
            let error = parse_error("web", &format!("{EXEC}{key} = \"x\""));
            assert!(
                matches!(error.kind, ConfigErrorKind::RelativePath { .. }),
                "{key}"
            );
            assert_eq!(error.key.as_deref(), Some(key));
            let error = parse_error("web", &format!("{EXEC}{key} = \"/a\\u0000b\""));
            assert!(matches!(error.kind, ConfigErrorKind::Nul), "{key}");
        }
    }

    #[test]
    fn user_and_group_refuse_colon_nul_and_empty() {
        for key in ["user", "group"] {
            assert!(matches!(
                parse_error("web", &format!("{EXEC}{key} = \"\"")).kind,
                ConfigErrorKind::Empty
            ));
            assert!(matches!(
                parse_error("web", &format!("{EXEC}{key} = \"www:www\"")).kind,
                ConfigErrorKind::Colon
            ));
            assert!(matches!(
                parse_error("web", &format!("{EXEC}{key} = \"w\\u0000\"")).kind,
                ConfigErrorKind::Nul
            ));
        }
        assert_eq!(
            service(&format!("{EXEC}user = \"1000\"")).user.as_deref(),
            Some("1000")
        );
    }

    #[test]
    fn environment_section_form_is_read() {
        let spec = service(&format!(
            "{EXEC}[environment]\nLANG = \"C.UTF-8\"\nPATH = \"/usr/bin:/bin\"\n"
        ));
        assert_eq!(spec.environment.len(), 2);
        assert_eq!(spec.environment["PATH"], "/usr/bin:/bin");
    }

    #[test]
    fn environment_names_must_be_valid() {
        for name in [
            "\"1X\"",
            "\"A-B\"",
            "\"A B\"",
            "\"\"",
            "\"A=B\"",
            "\"\u{e9}\"",
        ] {
            let error = parse_error(
                "web",
                &format!("{EXEC}[environment]\nOK = \"1\"\n{name} = \"x\"\n"),
            );
            assert!(
                matches!(error.kind, ConfigErrorKind::EnvironmentName { .. }),
                "{name}"
            );
            assert_eq!(error.line, Some(4));
        }
    }

    #[test]
    fn the_invocation_id_cannot_be_set_by_a_service_file() {
        assert_eq!(
            message(&format!(
                "{EXEC}environment = {{ LANG = \"C\", ADOPTD_INVOCATION_ID = \"x\" }}"
            )),
            "/etc/adoptd/services/web.toml:2: environment: ADOPTD_INVOCATION_ID is set by adoptd itself, to a new value for each start"
        );
    }

    #[test]
    fn environment_values_must_be_strings_without_nul() {
        assert_eq!(
            message(&format!("{EXEC}environment = {{ PORT = 8080 }}")),
            "/etc/adoptd/services/web.toml:2: environment.PORT: must be a string, found an integer (quote it)"
        );
        assert!(matches!(
            parse_error(
                "web",
                &format!("{EXEC}environment = {{ A = \"x\\u0000\" }}")
            )
            .kind,
            ConfigErrorKind::Nul
        ));
        assert!(matches!(
            parse_error("web", &format!("{EXEC}environment.A.B = \"x\"")).kind,
            ConfigErrorKind::EnvironmentValue { found: "a table" }
        ));
    }

    #[test]
    fn autostart_must_be_a_boolean() {
        assert_eq!(
            message(&format!("{EXEC}autostart = \"false\"")),
            "/etc/adoptd/services/web.toml:2: autostart: expected true or false (without quotes), found a string"
        );
    }

    #[test]
    fn wrong_types_are_refused_for_every_key() {
        let wrong_values = [
            "42",
            "true",
            "1.5",
            "1979-05-27",
            "[1]",
            "{ a = 1 }",
            "\"text\"",
        ];
        for key in TOP_LEVEL_KEYS {
            for value in wrong_values {
                let text = format!("{EXEC}{key} = {value}\n");
                let text = if *key == "exec" {
                    format!("{key} = {value}\n")
                } else {
                    text
                };
                let result = parse("web@", &text);
                let accepted = matches!(
                    (*key, value),
                    ("description" | "user" | "group", "\"text\"")
                        | ("stop-signal" | "reload-signal", "42")
                        | ("autostart", "true")
                );
                assert_eq!(result.is_ok(), accepted, "{key} = {value}: {result:?}");
                if let Err(error) = result {
                    assert!(error.key.is_some(), "{key} = {value}: {error}");
                    assert!(error.line.is_some(), "{key} = {value}: {error}");
                }
            }
        }
    }

    #[test]
    fn instances_in_a_plain_service_is_an_error() {
        assert_eq!(
            message(&format!("{EXEC}instances = [\"a\"]")),
            "/etc/adoptd/services/web.toml:2: instances: instances are only allowed in a template (rename the file to \"web@.toml\" to make it one)"
        );
    }

    #[test]
    fn instance_specifier_in_a_plain_service_is_an_error() {
        let error = parse_error(
            "web",
            "exec = [\"/usr/sbin/nginx\", \"-c\", \"/etc/%i.conf\"]",
        );
        assert_eq!(
            error.to_string(),
            "/etc/adoptd/services/web.toml:1: exec: %i is only meaningful in a template file NAME@.toml (rename the file to \"web@.toml\", or write %%i for a literal \"%i\")"
        );
        for key in [
            "description",
            "user",
            "group",
            "chroot",
            "working-directory",
            "pid-file",
        ] {
            let error = parse_error("web", &format!("{EXEC}{key} = \"/x/%i\""));
            assert!(
                matches!(
                    error.kind,
                    ConfigErrorKind::InstanceSpecifierOutsideTemplate { .. }
                ),
                "{key}"
            );
        }
        let error = parse_error("web", &format!("{EXEC}environment = {{ A = \"%i\" }}"));
        assert_eq!(error.key.as_deref(), Some("environment.A"));
    }

    #[test]
    fn double_percent_is_a_literal_percent_and_other_percents_stay() {
        let spec = service("exec = [\"/bin/date\", \"+%Y-%m-%d\", \"100%\", \"%%i\", \"%%%%\"]");
        assert_eq!(spec.exec, ["/bin/date", "+%Y-%m-%d", "100%", "%i", "%%"]);
    }

    // --- templates ---

    const APACHE: &str = r#"
description = "Apache in chroot %i"
exec = ["/usr/sbin/apache2", "-f", "/srv/%i/apache2.conf", "-k", "start"]
expect = "auto"
restart = "on-failure"
restart-delay = "100ms"
start-limit = { burst = 5, interval = "10s" }
stop-signal = "TERM"
stop-timeout = "10s"
reload-signal = "HUP"
chroot = "/srv/%i"
user = "www-%i"
group = "grp-%i"
working-directory = "/%i"
environment = { LANG = "C", SITE = "%i", LITERAL = "100%%" }
pid-file = "/run/apache2-%i.pid"
autostart = true
instances = ["chroot1", "chroot2"]
"#;

    #[test]
    fn design_example_template_parses() {
        let template = template("apache2@", APACHE);
        assert_eq!(template.name, "apache2");
        assert_eq!(
            template.source,
            Path::new("/etc/adoptd/services/apache2@.toml")
        );
        assert_eq!(template.instances, ["chroot1", "chroot2"]);
    }

    #[test]
    fn template_substitutes_instance_everywhere() {
        let spec = template("apache2@", APACHE)
            .instantiate("site.example")
            .unwrap();
        assert_eq!(spec.name, "apache2@site.example");
        assert_eq!(spec.template.as_deref(), Some("apache2"));
        assert_eq!(spec.instance.as_deref(), Some("site.example"));
        assert_eq!(spec.source, Path::new("/etc/adoptd/services/apache2@.toml"));
        assert_eq!(spec.description, "Apache in chroot site.example");
        assert_eq!(
            spec.exec,
            [
                "/usr/sbin/apache2",
                "-f",
                "/srv/site.example/apache2.conf",
                "-k",
                "start"
            ]
        );
        assert_eq!(spec.chroot, Some(PathBuf::from("/srv/site.example")));
        assert_eq!(spec.user.as_deref(), Some("www-site.example"));
        assert_eq!(spec.group.as_deref(), Some("grp-site.example"));
        assert_eq!(spec.working_directory, Some(PathBuf::from("/site.example")));
        assert_eq!(spec.environment["SITE"], "site.example");
        assert_eq!(spec.environment["LITERAL"], "100%");
        assert_eq!(
            spec.pid_file,
            Some(PathBuf::from("/run/apache2-site.example.pid"))
        );
    }

    #[test]
    fn template_without_instance_specifier_is_fine() {
        let spec = template("worker@", EXEC).instantiate("1").unwrap();
        assert_eq!(spec.name, "worker@1");
        assert_eq!(spec.exec, ["/usr/sbin/nginx"]);
    }

    #[test]
    fn template_instantiate_refuses_bad_instance_names() {
        let template = template("apache2@", APACHE);
        for instance in ["", "a b", "a/b", "..", ".", "x@y", "caf\u{e9}"] {
            let error = template.instantiate(instance).unwrap_err();
            assert!(
                matches!(error.kind, ConfigErrorKind::BadInstanceName { .. }),
                "{instance:?}: {error}"
            );
        }
        assert_eq!(
            template.instantiate("..").unwrap_err().to_string(),
            "/etc/adoptd/services/apache2@.toml: invalid instance name: \"..\" is not a name (\".\" and \"..\" could escape a path)"
        );
        let longest = "i".repeat(MAX_NAME_LEN - "apache2@".len());
        assert!(template.instantiate(&longest).is_ok());
        assert!(matches!(
            template
                .instantiate(&format!("{longest}i"))
                .unwrap_err()
                .kind,
            ConfigErrorKind::BadInstanceName {
                error: NameError::TooLong { .. },
                ..
            }
        ));
    }

    #[test]
    fn template_path_that_is_relative_for_every_instance_fails_when_the_file_loads() {
        let error = parse_error("site@", &format!("{EXEC}\nchroot = \"%i/root\"\n"));
        assert_eq!(
            error.to_string(),
            "/etc/adoptd/services/site@.toml:3: chroot: must be an absolute path (\"%i/root\" is relative)"
        );
        assert!(matches!(
            parse_error("site@", "exec = [\"%i\"]").kind,
            ConfigErrorKind::ExecRelative { .. }
        ));
    }

    #[test]
    fn template_instance_that_breaks_a_value_is_refused_for_that_instance() {
        let template = template("site@", &format!("{EXEC}user = \"%i\"\n"));
        assert!(template.instantiate("www").is_ok());
        let error = template.instantiate("a:b").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/adoptd/services/site@.toml:2: user: for instance \"a:b\": must not contain ':' (user and group are separate keys)"
        );
    }

    #[test]
    fn listed_instances_load_and_each_bad_one_is_its_own_error() {
        let template = template(
            "site@",
            "exec = [\"/bin/site\"]\nuser = \"%i\"\ninstances = [\n  \"a\",\n  \"b c\",\n  \"d:e\",\n  \"f\",\n]\n",
        );
        let (specs, errors) = template.instantiate_listed();
        assert_eq!(names(&specs), ["site@a", "site@f"]);
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].to_string(),
            "/etc/adoptd/services/site@.toml:5: instances: invalid instance name: \"b c\" contains ' '; names use only letters, digits and _ . : -"
        );
        assert_eq!(errors[1].line, Some(2));
        assert!(matches!(errors[1].kind, ConfigErrorKind::Instance { .. }));
    }

    #[test]
    fn duplicate_instance_is_an_error_and_the_first_is_kept() {
        let template = template(
            "site@",
            &format!("{EXEC}instances = [\"a\", \"b\",\n\"a\"]\n"),
        );
        let (specs, errors) = template.instantiate_listed();
        assert_eq!(names(&specs), ["site@a", "site@b"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "/etc/adoptd/services/site@.toml:3: instances: instance \"a\" is listed twice; the first is kept"
        );
    }

    #[test]
    fn template_with_autostart_false_still_lists_its_instances() {
        let template = template(
            "site@",
            &format!("{EXEC}autostart = false\ninstances = [\"a\"]\n"),
        );
        let (specs, errors) = template.instantiate_listed();
        assert!(errors.is_empty());
        assert_eq!(names(&specs), ["site@a"]);
        assert!(!specs[0].autostart);
    }

    #[test]
    fn instances_must_be_an_array_of_strings() {
        assert!(matches!(
            parse_error("site@", &format!("{EXEC}instances = \"a\"")).kind,
            ConfigErrorKind::WrongType { .. }
        ));
        let error = parse_error("site@", &format!("{EXEC}instances = [\"a\", 2]"));
        assert_eq!(error.key.as_deref(), Some("instances"));
        assert!(
            error
                .to_string()
                .contains("expected an instance name (a string), found an integer")
        );
    }

    // --- file names ---

    #[test]
    fn instance_file_is_not_a_thing() {
        assert_eq!(
            parse_error("x@y", EXEC).to_string(),
            "/etc/adoptd/services/x@y.toml: a file cannot define a single instance: name the template \"x@.toml\" and list \"y\" in its instances"
        );
    }

    #[test]
    fn bad_file_names_are_errors() {
        assert_eq!(
            parse_error("a b", EXEC).to_string(),
            "/etc/adoptd/services/a b.toml: bad file name \"a b.toml\": \"a b\" contains ' '; names use only letters, digits and _ . : -"
        );
        for stem in [
            "",
            "@",
            "..",
            "a@b@",
            &"a".repeat(129),
            &format!("{}@", "a".repeat(127)),
        ] {
            assert!(
                matches!(
                    parse_error(stem, EXEC).kind,
                    ConfigErrorKind::BadFileName { .. }
                ),
                "{stem:?}"
            );
        }
        assert!(parse(&"a".repeat(128), EXEC).is_ok());
        assert!(parse(&format!("{}@", "a".repeat(126)), EXEC).is_ok());
    }

    // --- directories and files ---

    #[test]
    fn load_dir_loads_services_and_templates_sorted_by_name() {
        let dir = ScratchDir::new("sorted");
        dir.write("zeta.toml", EXEC);
        dir.write("alpha.toml", EXEC);
        dir.write("site@.toml", &format!("{EXEC}instances = [\"b\", \"a\"]\n"));
        dir.write("lazy@.toml", EXEC);
        let loaded = load_dir(&dir.0);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(
            names(&loaded.services),
            ["alpha", "site@a", "site@b", "zeta"]
        );
        assert_eq!(
            loaded.templates.keys().collect::<Vec<_>>(),
            ["lazy", "site"]
        );
        assert_eq!(loaded.services[0].source, dir.0.join("alpha.toml"));
    }

    #[test]
    fn one_bad_file_does_not_stop_the_others() {
        let dir = ScratchDir::new("one-bad");
        dir.write("good.toml", EXEC);
        dir.write("bad.toml", &format!("{EXEC}restart-delay = \"soon\"\n"));
        dir.write("worse.toml", "\u{0}\u{1}binary = garbage[[[");
        dir.write(
            "site@.toml",
            &format!("{EXEC}instances = [\"ok\", \"not ok\"]\n"),
        );
        let loaded = load_dir(&dir.0);
        assert_eq!(names(&loaded.services), ["good", "site@ok"]);
        assert_eq!(loaded.errors.len(), 3, "{:?}", loaded.errors);
        assert_eq!(loaded.errors[0].path, dir.0.join("bad.toml"));
        assert_eq!(loaded.errors[0].line, Some(2));
        assert_eq!(loaded.errors[1].path, dir.0.join("site@.toml"));
        assert_eq!(loaded.errors[2].path, dir.0.join("worse.toml"));
    }

    #[test]
    fn load_dir_ignores_hidden_backup_other_files_and_subdirectories() {
        let dir = ScratchDir::new("ignored");
        dir.write("web.toml", EXEC);
        for name in [
            "web.toml~",
            ".web.toml.swp",
            ".hidden.toml",
            "README",
            "web.conf",
            "web.TOML",
        ] {
            dir.write(name, "garbage [[[");
        }
        fs::create_dir(dir.0.join("sub.toml")).unwrap();
        fs::create_dir(dir.0.join("nested")).unwrap();
        dir.write("nested/inner.toml", EXEC);
        let loaded = load_dir(&dir.0);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(names(&loaded.services), ["web"]);
    }

    #[test]
    fn load_dir_reports_badly_named_toml_files() {
        let dir = ScratchDir::new("bad-names");
        dir.write("a b.toml", EXEC);
        dir.write("x@y.toml", EXEC);
        dir.write("ok.toml", EXEC);
        let loaded = load_dir(&dir.0);
        assert_eq!(names(&loaded.services), ["ok"]);
        assert!(matches!(
            loaded.errors[0].kind,
            ConfigErrorKind::BadFileName { .. }
        ));
        assert!(matches!(
            loaded.errors[1].kind,
            ConfigErrorKind::InstanceFile { .. }
        ));
    }

    #[test]
    fn load_dir_reports_a_toml_file_whose_name_is_not_utf8() {
        let dir = ScratchDir::new("not-utf8-name");
        let name = OsStr::from_bytes(b"caf\xe9.toml");
        fs::write(dir.0.join(name), EXEC).unwrap();
        let loaded = load_dir(&dir.0);
        assert!(loaded.services.is_empty());
        assert!(matches!(
            loaded.errors[0].kind,
            ConfigErrorKind::BadFileName {
                reason: FileNameProblem::NotUtf8,
                ..
            }
        ));
    }

    #[test]
    fn load_dir_follows_symlinks_and_reports_dangling_ones() {
        let dir = ScratchDir::new("symlinks");
        let target = dir.write("target.conf", EXEC);
        std::os::unix::fs::symlink(&target, dir.0.join("linked.toml")).unwrap();
        std::os::unix::fs::symlink(dir.0.join("missing"), dir.0.join("dangling.toml")).unwrap();
        let loaded = load_dir(&dir.0);
        assert_eq!(names(&loaded.services), ["linked"]);
        assert_eq!(loaded.errors.len(), 1);
        assert!(matches!(loaded.errors[0].kind, ConfigErrorKind::Read(_)));
        assert!(
            loaded.errors[0]
                .to_string()
                .contains("dangling.toml: cannot read the file: ")
        );
    }

    #[test]
    fn unreadable_dir_gives_one_error() {
        let dir = ScratchDir::new("unreadable");
        let missing = dir.0.join("missing");
        let loaded = load_dir(&missing);
        assert!(loaded.services.is_empty() && loaded.templates.is_empty());
        assert_eq!(loaded.errors.len(), 1);
        assert_eq!(loaded.errors[0].path, missing);
        assert!(matches!(loaded.errors[0].kind, ConfigErrorKind::ReadDir(_)));
    }

    #[test]
    fn file_too_large_is_refused() {
        let dir = ScratchDir::new("large");
        let padding = "#".repeat(usize::try_from(MAX_FILE_SIZE).unwrap());
        let path = dir.write("big.toml", &format!("{EXEC}{padding}"));
        let error = load_file(&path).unwrap_err();
        assert!(matches!(error.kind, ConfigErrorKind::TooLarge { .. }));
        assert!(error.to_string().contains("file too large"));
    }

    #[test]
    fn non_utf8_file_is_refused_with_its_line() {
        let dir = ScratchDir::new("latin1");
        let path = dir.0.join("web.toml");
        fs::write(&path, b"exec = [\"/bin/x\"]\ndescription = \"caf\xe9\"\n").unwrap();
        let error = load_file(&path).unwrap_err();
        assert!(matches!(error.kind, ConfigErrorKind::NotUtf8));
        assert_eq!((error.line, error.column), (Some(2), Some(19)));
    }

    #[test]
    fn fifo_is_refused_not_waited_on() {
        let dir = ScratchDir::new("fifo");
        let path = dir.0.join("pipe.toml");
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c_path is a valid NUL-terminated string for the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            load_file(&path).unwrap_err().kind,
            ConfigErrorKind::NotAFile
        ));
        let loaded = load_dir(&dir.0);
        assert!(matches!(loaded.errors[0].kind, ConfigErrorKind::NotAFile));
    }

    #[test]
    fn load_file_refuses_a_directory_and_a_name_without_toml() {
        let dir = ScratchDir::new("load-file");
        fs::create_dir(dir.0.join("d.toml")).unwrap();
        assert!(matches!(
            load_file(&dir.0.join("d.toml")).unwrap_err().kind,
            ConfigErrorKind::NotAFile
        ));
        let path = dir.write("web.conf", EXEC);
        assert!(matches!(
            load_file(&path).unwrap_err().kind,
            ConfigErrorKind::BadFileName {
                reason: FileNameProblem::NotToml,
                ..
            }
        ));
        let path = dir.write("web@.toml", EXEC);
        assert!(matches!(load_file(&path), Ok(Unit::Template(_))));
    }

    // --- robustness ---

    #[test]
    fn nasty_inputs_return_errors_not_panics() {
        let deep_arrays = format!("exec = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_tables = format!(
            "environment = {}{}",
            "{a=".repeat(10_000),
            "}".repeat(10_000)
        );
        let deep_keys = format!("{}x = 1", "a.".repeat(10_000));
        let huge_key = format!("{} = 1", "k".repeat(100_000));
        let many_keys: String = (0..10_000).map(|i| format!("k{i} = {i}\n")).collect();
        let binary: String = (0u8..=255).map(char::from).collect();
        let inputs = [
            "",
            "\n\n\n",
            "=",
            "[[[",
            "\u{feff}",
            "exec = [\"/bin/x\"]\n[exec]",
            "exec = [\"/bin/x\"]\n[[instances]]\n",
            "exec = [\"/bin/x\"]\nstart-limit = []",
            "exec = [\"/bin/x\"]\n[start-limit.burst]\n",
            "exec = [\"/bin/x\"]\nstop-timeout = 9223372036854775807",
            "exec = [\"/bin/x\"]\nstop-timeout = -9223372036854775808",
            "exec = [\"/bin/x\"]\nstop-signal = -1",
            "exec = [\"/bin/x\"]\nstop-signal = 1e400",
            "exec = [\"/bin/x\"]\nrestart-delay = \"99999999999999999999999999h\"",
            "exec = [\"/bin/x\"]\nrestart-delay = \"\u{1f600}\"",
            "exec = [\"/bin/x\"]\nstart-limit = { burst = 1e10 }",
            "exec = [[\"/bin/x\"]]",
            "exec = [{}]",
            "exec = [\"%\"]",
            "exec = [\"/%\"]\ndescription = \"%\"\nchroot = \"%\"",
            "exec = \"\"",
            "exec = \"   \"",
            "\"\" = 1",
            "exec = [\"/bin/x\"]\nenvironment = { \"\" = \"\" }",
            &deep_arrays,
            &deep_tables,
            &deep_keys,
            &huge_key,
            &many_keys,
            &binary,
        ];
        for stem in ["web", "web@", "x@y", "", "@", "\u{0}"] {
            for input in inputs {
                if let Ok(Unit::Template(template)) = parse(stem, input) {
                    let _ = template.instantiate_listed();
                    for instance in ["", "%", "%i", "..", "a:b", &"x".repeat(1000)] {
                        let _ = template.instantiate(instance);
                    }
                }
            }
        }
        for input in inputs.iter().skip(1) {
            assert!(parse("web", input).is_err(), "{input:.80?}");
        }
    }

    #[test]
    fn errors_without_line_or_key_leave_those_parts_out() {
        let error = ConfigError::whole_file(Path::new("/d/x.toml"), ConfigErrorKind::NotAFile);
        assert_eq!(
            error.to_string(),
            "/d/x.toml: not a regular file (a service file must be a file or a symlink to one)"
        );
    }
}
