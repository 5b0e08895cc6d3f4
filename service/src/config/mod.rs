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
//! - `output_buffer` is at most [`MAX_OUTPUT_BUFFER`];
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
//!
//! The parts: [`names`] (service, template and instance names), [`duration`]
//! (time spans), [`size`] (byte counts), [`error`] (every refusal and its message), `document` (the
//! walk of one file's TOML, keeping positions), `build` (a parsed file into
//! a [`ServiceSpec`], substituting `%i`) and `load` (the directory and its
//! files).

// ConfigError's public fields are the interface others code against, which
// makes it larger than clippy likes in a Result; errors are rare and off
// every hot path, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::tracker::Policy;

mod build;
mod document;
pub mod duration;
pub mod error;
mod load;
pub mod names;
pub mod size;
#[cfg(test)]
mod tests;

use build::{Identity, build};
use document::{Position, RawService};
pub use duration::{DurationError, parse_duration};
pub use error::{ConfigError, ConfigErrorKind, FileNameProblem};
pub use load::{digest, file_digest, load_dir, load_file, parse_str};
use names::validate_instance_name;
pub use names::{NameError, split_name, validate_service_name};
pub use size::{SizeError, parse_size};

/// Files larger than this are refused unread: a service file is a few lines,
/// and the cap keeps a stray log file named `x.toml` from filling memory.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The longest full service name (`name` or `template@instance`), in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// How much of a service's latest output adoptd keeps in memory unless its
/// file says otherwise (`output-buffer`).
pub const DEFAULT_OUTPUT_BUFFER: usize = 64 * 1024;

/// The largest `output-buffer` accepted: a typo must not let one service
/// take the machine's memory.
pub const MAX_OUTPUT_BUFFER: usize = 64 * 1024 * 1024;

/// The longest duration accepted (876000h, 100 years). Longer ones are
/// refused so that adding one to an `Instant` can never overflow and panic.
pub const MAX_DURATION: Duration = Duration::from_secs(876_000 * 3600);

/// The PATH a service gets unless its environment sets one; also where
/// the hint for a relative `exec` looks.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One service, ready to run: a plain service, or one instance of a
/// template with `%i` substituted.
///
/// What most services leave unset (the instance, a chroot, a user, an
/// environment, …) is kept in one box, [`Uncommon`], made only for the
/// services that set any of it: a service that sets none costs a pointer
/// for all of it. It is read through the accessors below, and written
/// (before the spec is shared) through [`ServiceSpec::uncommon_mut`]. The
/// serialized form (a re-exec's state) is the flat one of every field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "FlatSpec", into = "FlatSpec")]
pub struct ServiceSpec {
    /// `"nginx"`, or `"apache2@chroot1"` for an instance.
    pub name: String,
    /// The file the service came from (the template's file for an instance).
    pub source: PathBuf,
    /// The [`digest`] of that file's text as loaded.
    pub digest: u64,
    /// Free text; empty when the file has none.
    pub description: String,
    /// The argv: never empty, `exec[0]` an absolute path. No shell.
    pub exec: Vec<String>,
    /// How it is followed, restarted and stopped.
    pub policy: Policy,
    pub output: Output,
    /// Bytes of the latest output kept for `GetOutput`, with
    /// `output = "log"`; 0 keeps none.
    pub output_buffer: usize,
    /// Whether the service starts when adoptd starts. For an instance it is
    /// the template's `autostart`, which decides whether the instances the
    /// template lists start with adoptd.
    pub autostart: bool,
    /// `None` when every field of it is unset.
    uncommon: Option<Box<Uncommon>>,
}

/// The part of a [`ServiceSpec`] that most services leave unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uncommon {
    /// The template's name (`"apache2"`) for an instance, `None` otherwise.
    pub template: Option<String>,
    /// The instance name (`"chroot1"`) for an instance, `None` otherwise.
    pub instance: Option<String>,
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
}

impl Uncommon {
    /// Boxed, or `None` when nothing of it is set.
    fn boxed(self) -> Option<Box<Uncommon>> {
        (self != Uncommon::default()).then(|| Box::new(self))
    }
}

/// An empty environment, for the services that set none.
static NO_ENVIRONMENT: BTreeMap<String, String> = BTreeMap::new();

impl ServiceSpec {
    /// A spec from all of its parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        source: PathBuf,
        digest: u64,
        description: String,
        exec: Vec<String>,
        policy: Policy,
        output: Output,
        output_buffer: usize,
        autostart: bool,
        uncommon: Uncommon,
    ) -> Self {
        ServiceSpec {
            name,
            source,
            digest,
            description,
            exec,
            policy,
            output,
            output_buffer,
            autostart,
            uncommon: uncommon.boxed(),
        }
    }

    /// The stand-in for a service whose file was refused before any
    /// version of it loaded: it names the service and its file, so the
    /// refusal can be shown, and is never started (its `exec` is empty,
    /// the one exception to the invariants above).
    pub fn refused(name: &str, source: &Path) -> Self {
        let (template, instance) = split_name(name);
        let uncommon = Uncommon {
            template: instance.map(|_| template.to_owned()),
            instance: instance.map(str::to_owned),
            ..Uncommon::default()
        };
        ServiceSpec::new(
            name.to_owned(),
            source.to_path_buf(),
            0,
            String::new(),
            Vec::new(),
            Policy::default(),
            Output::default(),
            DEFAULT_OUTPUT_BUFFER,
            false,
            uncommon,
        )
    }

    /// The template's name (`"apache2"`) for an instance, `None` otherwise.
    pub fn template(&self) -> Option<&str> {
        self.uncommon.as_ref()?.template.as_deref()
    }

    /// The instance name (`"chroot1"`) for an instance, `None` otherwise.
    pub fn instance(&self) -> Option<&str> {
        self.uncommon.as_ref()?.instance.as_deref()
    }

    /// The chroot, absolute.
    pub fn chroot(&self) -> Option<&Path> {
        self.uncommon.as_ref()?.chroot.as_deref()
    }

    /// The user name or number, resolved when the service is spawned.
    pub fn user(&self) -> Option<&str> {
        self.uncommon.as_ref()?.user.as_deref()
    }

    /// The group name or number, resolved when the service is spawned.
    pub fn group(&self) -> Option<&str> {
        self.uncommon.as_ref()?.group.as_deref()
    }

    /// The working directory, absolute.
    pub fn working_directory(&self) -> Option<&Path> {
        self.uncommon.as_ref()?.working_directory.as_deref()
    }

    /// The environment the file sets.
    pub fn environment(&self) -> &BTreeMap<String, String> {
        self.uncommon
            .as_ref()
            .map_or(&NO_ENVIRONMENT, |uncommon| &uncommon.environment)
    }

    /// The pid file, absolute: a cross-check of the main process.
    pub fn pid_file(&self) -> Option<&Path> {
        self.uncommon.as_ref()?.pid_file.as_deref()
    }

    /// The uncommon part, to change it (made when there was none).
    pub fn uncommon_mut(&mut self) -> &mut Uncommon {
        self.uncommon.get_or_insert_with(Box::default)
    }
}

/// A [`ServiceSpec`] as it is serialized: every field flat, as the spec
/// was before its uncommon part had a box, so that a re-exec between the
/// two reads the other's state.
#[derive(serde::Serialize, serde::Deserialize)]
struct FlatSpec {
    name: String,
    template: Option<String>,
    instance: Option<String>,
    source: PathBuf,
    digest: u64,
    description: String,
    exec: Vec<String>,
    policy: Policy,
    chroot: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
    working_directory: Option<PathBuf>,
    environment: BTreeMap<String, String>,
    pid_file: Option<PathBuf>,
    output: Output,
    output_buffer: usize,
    autostart: bool,
}

impl From<FlatSpec> for ServiceSpec {
    fn from(flat: FlatSpec) -> Self {
        let uncommon = Uncommon {
            template: flat.template,
            instance: flat.instance,
            chroot: flat.chroot,
            user: flat.user,
            group: flat.group,
            working_directory: flat.working_directory,
            environment: flat.environment,
            pid_file: flat.pid_file,
        };
        ServiceSpec::new(
            flat.name,
            flat.source,
            flat.digest,
            flat.description,
            flat.exec,
            flat.policy,
            flat.output,
            flat.output_buffer,
            flat.autostart,
            uncommon,
        )
    }
}

impl From<ServiceSpec> for FlatSpec {
    fn from(spec: ServiceSpec) -> Self {
        let uncommon = spec.uncommon.map(|boxed| *boxed).unwrap_or_default();
        FlatSpec {
            name: spec.name,
            template: uncommon.template,
            instance: uncommon.instance,
            source: spec.source,
            digest: spec.digest,
            description: spec.description,
            exec: spec.exec,
            policy: spec.policy,
            chroot: uncommon.chroot,
            user: uncommon.user,
            group: uncommon.group,
            working_directory: uncommon.working_directory,
            environment: uncommon.environment,
            pid_file: uncommon.pid_file,
            output: spec.output,
            output_buffer: spec.output_buffer,
            autostart: spec.autostart,
        }
    }
}

/// Where the service's stdout and stderr go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
// A unit lives only while its file is loaded: its size costs nothing.
#[allow(clippy::large_enum_variant)]
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
