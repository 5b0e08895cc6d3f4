//! Starting a service's program: fork, set up the process, exec.
//!
//! The child becomes a session leader (so a terminal can never reach it and
//! its session id names the service), enters the `chroot`, changes to the
//! working directory, drops to `user`/`group` with the user's
//! supplementary groups, gets a clean environment and signal mask, and
//! inherits no descriptor but its standard ones. Everything that can fail
//! for a reason a person can fix (an unknown user, a missing program) is
//! checked before the fork, so the error names it; the code that runs
//! between fork and exec only makes system calls.
//!
//! The spawned process is held by a pidfd from the start: it is adoptd's
//! unreaped child, so the pid cannot have been recycled yet.
//!
//! Each start gets a fresh [`InvocationId`] in its environment; a
//! service's `environment` cannot override it.

use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{ffi::OsStrExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use adoptd_dbus::Signal;
use nix::unistd::{Gid, Group, Uid, User};

use crate::{
    config::{DEFAULT_PATH, Output, ServiceSpec},
    invocation::{INVOCATION_VARIABLE, InvocationId},
    tracker::Pid,
};

/// The descriptor limit adoptd was started with, which its services get
/// back (see [`raise_descriptor_limit`]).
static INHERITED_DESCRIPTOR_LIMIT: std::sync::OnceLock<rustix::process::Rlimit> =
    std::sync::OnceLock::new();

/// Raises adoptd's own limit on open descriptors, which it needs three of
/// per running service (a pidfd and two output pipes): the soft limit to the
/// hard one and, where adoptd may (as root), both to half a million or the
/// kernel's `nr_open`, whichever is less. Services are started with the
/// limits adoptd was given, as programs that still use `select(2)` expect.
/// Returns the soft limit now in force.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const WANTED: u64 = 1 << 19;
    let inherited = getrlimit(Resource::Nofile);
    let _ = INHERITED_DESCRIPTOR_LIMIT.set(inherited);
    let nr_open = crate::proc::nr_open().unwrap_or(WANTED);
    let hard = inherited.maximum;
    let raised = hard.map_or(WANTED, |hard| hard.max(WANTED.min(nr_open)));
    let attempts = [raised].into_iter().chain(hard);
    for limit in attempts {
        let wanted = Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            return Some(limit);
        }
    }
    inherited.current
}

/// A started service process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    /// The read ends of the process's stdout and stderr, with
    /// `output = "log"`.
    pub output: Option<OutputPipes>,
}

/// The read ends of a started process's stdout and stderr.
#[derive(Debug)]
pub struct OutputPipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Why a service's program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("group {0:?} does not exist")]
    UnknownGroup(String),
    #[error("cannot look up user or group {name:?}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what} {path} does not exist or is not accessible")]
    Missing {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} contains a NUL byte")]
    Nul(String),
    #[error("cannot create the output pipe")]
    Pipe(#[source] nix::Error),
    #[error("cannot execute {program}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open a pidfd for the new process {pid}")]
    Pidfd {
        pid: Pid,
        #[source]
        source: io::Error,
    },
}

/// Starts `spec`'s program as described in the module header, as the run
/// `invocation`; `notify_socket` becomes its `$NOTIFY_SOCKET`.
pub fn spawn(
    spec: &ServiceSpec,
    invocation: InvocationId,
    notify_socket: Option<&str>,
) -> Result<Spawned, SpawnError> {
    let program = spec.exec.first().map(String::as_str).unwrap_or_default();
    let root = spec.chroot.clone().unwrap_or_else(|| PathBuf::from("/"));
    check_exists("program", &inside(&root, Path::new(program)))?;
    let working_directory = spec
        .working_directory
        .clone()
        .unwrap_or_else(|| PathBuf::from("/"));
    check_exists("working directory", &inside(&root, &working_directory))?;
    let credentials = Credentials::resolve(spec.user.as_deref(), spec.group.as_deref())?;

    let mut command = Command::new(program);
    command.args(spec.exec.iter().skip(1));
    command.env_clear();
    command.env("PATH", DEFAULT_PATH);
    if let Some(user) = &credentials.user {
        command.env("HOME", &user.dir);
        command.env("USER", &user.name);
        command.env("LOGNAME", &user.name);
        command.env("SHELL", &user.shell);
    }
    command.envs(&spec.environment);
    command.env(INVOCATION_VARIABLE, invocation.to_string());
    if let Some(address) = notify_socket {
        command.env("NOTIFY_SOCKET", address);
    }
    command.stdin(Stdio::null());

    let mut output = None;
    match spec.output {
        Output::Log => {
            // A pipe each, so every line is known to be stdout's or stderr's.
            let pipe =
                || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe);
            let (stdout, stdout_write) = pipe()?;
            let (stderr, stderr_write) = pipe()?;
            command.stdout(Stdio::from(stdout_write));
            command.stderr(Stdio::from(stderr_write));
            output = Some(OutputPipes { stdout, stderr });
        }
        Output::Null => {
            command.stdout(Stdio::null());
            command.stderr(Stdio::null());
        }
        Output::Inherit => {}
    }

    let chroot = match &spec.chroot {
        Some(root) => Some(c_path(root)?),
        None => None,
    };
    let working_directory = c_path(&working_directory)?;
    let ids = credentials.ids;
    let descriptor_limit = INHERITED_DESCRIPTOR_LIMIT.get().copied();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            reset_signals()?;
            if let Some(limit) = &descriptor_limit {
                rustix::process::setrlimit(rustix::process::Resource::Nofile, *limit)?;
            }
            nix::unistd::setsid()?;
            if let Some(root) = &chroot {
                nix::unistd::chroot(root.as_c_str())?;
            }
            nix::unistd::chdir(working_directory.as_c_str())?;
            if let Some(ids) = &ids {
                nix::unistd::setgroups(&ids.groups)?;
                nix::unistd::setgid(ids.gid)?;
                if let Some(uid) = ids.uid {
                    nix::unistd::setuid(uid)?;
                }
            }
            close_other_descriptors();
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| SpawnError::Exec {
        program: program.to_owned(),
        source,
    })?;
    let pid = child.id();
    // Dropping `Child` neither waits for nor kills the process: the reaper
    // collects it.
    drop(child);
    let pidfd = open_pidfd(pid)?;
    Ok(Spawned { pid, pidfd, output })
}

/// Opens a pidfd for `pid`, which must be adoptd's unreaped child.
pub fn open_pidfd(pid: Pid) -> Result<OwnedFd, SpawnError> {
    let raw = rustix::process::Pid::from_raw(pid as i32).ok_or(SpawnError::Pidfd {
        pid,
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).map_err(|e| {
        SpawnError::Pidfd {
            pid,
            source: e.into(),
        }
    })
}

/// Sends `signal` through a pidfd: it reaches the process the pidfd was
/// opened for, or nobody.
pub fn send_signal(pidfd: &OwnedFd, signal: Signal) -> io::Result<()> {
    // SAFETY: the syscall takes a descriptor, a signal number, a null
    // siginfo and no flags; the kernel validates the signal number.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal.number(),
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The user and group a service runs as, resolved before the fork.
struct Credentials {
    user: Option<User>,
    ids: Option<Ids>,
}

#[derive(Clone)]
struct Ids {
    uid: Option<Uid>,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Credentials {
    fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Self, SpawnError> {
        let user = match user {
            Some(name) => Some(
                User::from_name(name)
                    .map_err(|e| lookup_failed(name, e))?
                    .ok_or_else(|| SpawnError::UnknownUser(name.to_owned()))?,
            ),
            None => None,
        };
        let group = match group {
            Some(name) => Some(
                Group::from_name(name)
                    .map_err(|e| lookup_failed(name, e))?
                    .ok_or_else(|| SpawnError::UnknownGroup(name.to_owned()))?,
            ),
            None => None,
        };
        let ids = match (&user, &group) {
            (None, None) => None,
            (Some(user), group) => {
                let gid = group.as_ref().map_or(user.gid, |g| g.gid);
                let name = CString::new(user.name.as_bytes())
                    .map_err(|_| SpawnError::Nul(format!("user {:?}", user.name)))?;
                let mut groups = nix::unistd::getgrouplist(&name, user.gid)
                    .map_err(|e| lookup_failed(&user.name, e))?;
                if !groups.contains(&gid) {
                    groups.push(gid);
                }
                Some(Ids {
                    uid: Some(user.uid),
                    gid,
                    groups,
                })
            }
            (None, Some(group)) => Some(Ids {
                uid: None,
                gid: group.gid,
                groups: vec![group.gid],
            }),
        };
        Ok(Credentials { user, ids })
    }
}

fn lookup_failed(name: &str, source: nix::Error) -> SpawnError {
    SpawnError::Lookup {
        name: name.to_owned(),
        source,
    }
}

/// `path` as seen from inside `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn check_exists(what: &'static str, path: &Path) -> Result<(), SpawnError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| SpawnError::Missing {
            what,
            path: path.to_owned(),
            source,
        })
}

fn c_path(path: &Path) -> Result<CString, SpawnError> {
    let bytes: &OsStr = path.as_os_str();
    CString::new(bytes.as_bytes()).map_err(|_| SpawnError::Nul(path.display().to_string()))
}

/// Unblocks every signal (adoptd blocks the ones it reads from its
/// signalfd, and a blocked mask survives exec) and gives every signal its
/// default action: an ignored signal stays ignored across exec, and the
/// Rust runtime ignores SIGPIPE.
fn reset_signals() -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    // The raw system call, because the C library refuses the signals it
    // reserves for itself. An all-zero kernel sigaction is SIG_DFL with no
    // flags and an empty mask, whatever the architecture's layout.
    let default_action = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a zeroed kernel sigaction of at least
        // the kernel's size and writes nothing (null old action).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default_action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            );
        }
    }
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec, so the program
/// inherits none of adoptd's. Best effort: kernels before 5.11 lack the
/// flag, and adoptd opens everything close-on-exec anyway.
fn close_other_descriptors() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes flags.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
    }
}
