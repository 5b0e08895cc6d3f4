//! Starting a service's program: a new process, set up, exec.
//!
//! The child becomes a session leader (so a terminal can never reach it and
//! its session id names the service), enters the `chroot`, changes to the
//! working directory, drops to `user`/`group` with the user's
//! supplementary groups, gets a clean environment and signal mask, and
//! inherits no descriptor but its standard ones. Everything that can fail
//! for a reason a person can fix (an unknown user, a missing program) is
//! checked before the child is made, so the error names it; the child
//! only makes system calls (`child.rs`). What the child fails at (the
//! exec itself, a `chdir`, a `setuid`) comes back as [`SpawnError::Exec`]
//! with the system's reason, and the child is reaped here.
//!
//! The child shares adoptd's memory and descriptor table until it execs
//! (a vfork-like clone, `child.rs`), so a start costs the same whatever
//! adoptd's size: neither its page tables nor a table of a descriptor or
//! three per service are copied.
//!
//! Many starts at once ([`spawn_each`]) are made on a thread a core: each
//! spawn holds its thread until its child has exec'd, and that time is
//! the child's work, which another core can do meanwhile.
//!
//! The spawned process is held by a pidfd from the start: it is adoptd's
//! unreaped child, so the pid cannot have been recycled yet.
//!
//! Each start gets a fresh [`InvocationId`] in its environment; a
//! service's `environment` cannot override it.

use std::{
    collections::BTreeMap,
    ffi::{CString, OsStr, c_char},
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    sync::atomic::AtomicI32,
};

use adoptd_dbus::Signal;
use nix::unistd::{Gid, Group, Uid, User};

mod child;

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
    /// Its start time as `/proc/PID/stat` gives it, in clock ticks since
    /// boot, when the clone's own clock readings tell it exactly (see
    /// [`start_tick`]); `None` when they do not.
    pub start_time: Option<u64>,
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

/// How many spawns [`spawn_each`] runs at once, at most.
pub(crate) const MOST_AT_ONCE: usize = 4;

/// Fewer starts than this a thread are made on the calling thread alone
/// (a thread costs about as much as a start).
const STARTS_A_THREAD: usize = 8;

/// One start for [`spawn_each`]: what [`spawn`] takes.
pub struct Start<'a> {
    pub spec: &'a ServiceSpec,
    pub invocation: InvocationId,
    pub notify_socket: Option<&'a str>,
}

/// Makes each of `starts` as [`spawn`] does and returns the results in
/// their order. Many starts are made several at once, on as many threads
/// as the machine has cores (up to [`MOST_AT_ONCE`], the calling one among
/// them): a spawn holds its thread until its child has exec'd, which is
/// the child's work, so one core's children set up and exec while another
/// core's thread makes the next.
pub fn spawn_each(starts: &[Start<'_>]) -> Vec<Result<Spawned, SpawnError>> {
    let start = |start: &Start<'_>| spawn(start.spec, start.invocation, start.notify_socket);
    // A restart is one start: the cores are not even asked for.
    let threads = (starts.len() / STARTS_A_THREAD).min(MOST_AT_ONCE);
    let threads = if threads > 1 { threads.min(cores()) } else { 1 };
    if threads == 1 {
        return starts.iter().map(start).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut made = Vec::new();
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(one) = starts.get(index) else {
                return made;
            };
            made.push((index, start(one)));
        }
    };
    let mut results: Vec<Option<Result<Spawned, SpawnError>>> =
        std::iter::repeat_with(|| None).take(starts.len()).collect();
    std::thread::scope(|scope| {
        // A thread that cannot be made leaves its share to the others.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("adoptd-spawn".into())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mut made = work();
        for helper in helpers {
            made.extend(helper.join().unwrap_or_default());
        }
        for (index, result) in made {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(result);
            }
        }
    });
    results
        .into_iter()
        .zip(starts)
        .map(|(result, start)| {
            // Only a thread that panicked leaves a start without a result.
            result.unwrap_or_else(|| {
                Err(SpawnError::Exec {
                    program: start.spec.exec.first().cloned().unwrap_or_default(),
                    source: io::Error::other("the thread that started it failed"),
                })
            })
        })
        .collect()
}

/// The cores adoptd may run on, asked once: the standard library reads
/// the affinity mask and the cgroup's quota each time.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Starts `spec`'s program as described in the module header, as the run
/// `invocation`; `notify_socket` becomes its `$NOTIFY_SOCKET`.
pub fn spawn(
    spec: &ServiceSpec,
    invocation: InvocationId,
    notify_socket: Option<&str>,
) -> Result<Spawned, SpawnError> {
    let program = spec.exec.first().map(String::as_str).unwrap_or_default();
    let root = spec.chroot().unwrap_or(Path::new("/"));
    check_exists("program", &inside(root, Path::new(program)))?;
    let working_directory = spec.working_directory().unwrap_or(Path::new("/"));
    // `/` outside a chroot is there: not looked at for each start.
    if spec.chroot().is_some() || spec.working_directory().is_some() {
        check_exists("working directory", &inside(root, working_directory))?;
    }
    let credentials = Credentials::resolve(spec.user(), spec.group())?;

    // The environment as the standard library's `Command` built it: one
    // value a name, the later setting winning, sorted by name.
    let mut environment: BTreeMap<&str, &OsStr> = BTreeMap::new();
    let invocation = invocation.to_string();
    environment.insert("PATH", OsStr::new(DEFAULT_PATH));
    if let Some(user) = &credentials.user {
        environment.insert("HOME", user.dir.as_os_str());
        environment.insert("USER", OsStr::new(&user.name));
        environment.insert("LOGNAME", OsStr::new(&user.name));
        environment.insert("SHELL", user.shell.as_os_str());
    }
    for (name, value) in spec.environment() {
        environment.insert(name, OsStr::new(value));
    }
    environment.insert(INVOCATION_VARIABLE, OsStr::new(&invocation));
    if let Some(address) = notify_socket {
        environment.insert("NOTIFY_SOCKET", OsStr::new(address));
    }
    let environment = environment
        .into_iter()
        .map(|(name, value)| {
            let mut pair = Vec::with_capacity(name.len() + 1 + value.len());
            pair.extend_from_slice(name.as_bytes());
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            c_string(pair, "environment")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let arguments = spec
        .exec
        .iter()
        .map(|argument| c_string(argument.clone().into_bytes(), "exec"))
        .collect::<Result<Vec<_>, _>>()?;
    let program_c = c_string(program.as_bytes().to_vec(), "exec")?;

    let (null_in, null_out) = null_descriptors()?;
    let mut output = None;
    let mut write_ends = None;
    let stdio = match spec.output {
        Output::Log => {
            // A pipe each, so every line is known to be stdout's or stderr's.
            let pipe =
                || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe);
            let (stdout, stdout_write) = pipe()?;
            let (stderr, stderr_write) = pipe()?;
            let fds = [
                Some(null_in.as_raw_fd()),
                Some(stdout_write.as_raw_fd()),
                Some(stderr_write.as_raw_fd()),
            ];
            output = Some(OutputPipes { stdout, stderr });
            write_ends = Some((stdout_write, stderr_write));
            fds
        }
        Output::Null => [
            Some(null_in.as_raw_fd()),
            Some(null_out.as_raw_fd()),
            Some(null_out.as_raw_fd()),
        ],
        Output::Inherit => [Some(null_in.as_raw_fd()), None, None],
    };

    let chroot = match spec.chroot() {
        Some(root) => Some(c_path(root)?),
        None => None,
    };
    let working_directory = c_path(working_directory)?;
    let ids = credentials.ids;
    let descriptor_limit = INHERITED_DESCRIPTOR_LIMIT
        .get()
        .map(|limit| libc::rlimit64 {
            rlim_cur: limit.current.unwrap_or(libc::RLIM64_INFINITY),
            rlim_max: limit.maximum.unwrap_or(libc::RLIM64_INFINITY),
        });
    let groups: Vec<libc::gid_t> = ids
        .as_ref()
        .map(|ids| ids.groups.iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    let argv = null_terminated(&arguments);
    let envp = null_terminated(&environment);
    let plan = child::Plan {
        program: &program_c,
        argv: &argv,
        envp: &envp,
        stdio,
        descriptor_limit,
        chroot: chroot.as_deref(),
        working_directory: &working_directory,
        gid: ids.as_ref().map(|ids| ids.gid.as_raw()),
        groups: &groups,
        uid: ids.as_ref().and_then(|ids| ids.uid).map(Uid::as_raw),
        error: AtomicI32::new(0),
    };
    let before = boot_clock_ns();
    let pid = child::clone_and_exec(&plan).map_err(|source| SpawnError::Exec {
        program: program.to_owned(),
        source,
    })?;
    let start_time = start_tick(before, boot_clock_ns(), ticks_per_second());
    // The child has its copies: the write ends are its alone now, so a
    // reader sees the end of the output when the service's last process
    // closes them.
    drop(write_ends);
    let pidfd = open_pidfd(pid)?;
    Ok(Spawned {
        pid,
        pidfd,
        start_time,
        output,
    })
}

/// The boot-time clock (CLOCK_BOOTTIME, in this time namespace), in
/// nanoseconds: the clock the kernel stamps a new process with.
fn boot_clock_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}

/// The clock ticks of `/proc/PID/stat`'s start time (USER_HZ), asked once.
fn ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(rustix::param::clock_ticks_per_second)
}

/// A child's start time in clock ticks since boot, from the boot clock
/// read just before its clone (`before`) and once the clone returned
/// (`after`): the kernel stamps the child with that clock in between, and
/// `/proc/PID/stat` gives the stamp in whole ticks, so when both readings
/// fall in one tick the stamp's tick is theirs. When they straddle a tick
/// (or the clock is odd) it is not known: `None`, and the caller reads
/// `/proc` as for any other process.
fn start_tick(before: u64, after: u64, ticks_per_second: u64) -> Option<u64> {
    let tick = 1_000_000_000u64.checked_div(ticks_per_second)?;
    let first = before / tick;
    (after >= before && after / tick == first).then_some(first)
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

/// `/dev/null` for reading and for writing, opened once for every spawn
/// (as the standard library's `Stdio::null()`: read-only for stdin,
/// write-only for the others).
fn null_descriptors() -> Result<&'static (OwnedFd, OwnedFd), SpawnError> {
    static NULL: std::sync::OnceLock<(OwnedFd, OwnedFd)> = std::sync::OnceLock::new();
    if let Some(null) = NULL.get() {
        return Ok(null);
    }
    let opened = (open_null(false)?, open_null(true)?);
    // Two first spawns at once: one pair is kept, the other closed.
    Ok(NULL.get_or_init(|| opened))
}

fn open_null(write: bool) -> Result<OwnedFd, SpawnError> {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|source| SpawnError::Missing {
            what: "device",
            path: PathBuf::from("/dev/null"),
            source,
        })
}

fn c_string(text: Vec<u8>, what: &str) -> Result<CString, SpawnError> {
    CString::new(text).map_err(|e| {
        let text = String::from_utf8_lossy(&e.into_vec()).into_owned();
        SpawnError::Nul(format!("{what} {text:?}"))
    })
}

/// The pointers of `strings`, then a null, as `execve` takes them.
fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

fn c_path(path: &Path) -> Result<CString, SpawnError> {
    let bytes: &OsStr = path.as_os_str();
    CString::new(bytes.as_bytes()).map_err(|_| SpawnError::Nul(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::{io::Read, path::Path};

    use super::*;

    fn spec(exec: &[&str]) -> ServiceSpec {
        let mut spec = ServiceSpec::refused("probe", Path::new("/probe.toml"));
        spec.exec = exec.iter().map(|&a| a.to_owned()).collect();
        let uncommon = spec.uncommon_mut();
        uncommon.environment.insert("LANG".into(), "C".into());
        uncommon.working_directory = Some(PathBuf::from("/tmp"));
        spec
    }

    fn wait(pid: Pid) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on this test's own child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        status
    }

    #[test]
    fn the_start_time_told_by_the_clone_is_the_one_proc_gives() {
        let spec = spec(&["/bin/true"]);
        let mut told = 0;
        for _ in 0..50 {
            let spawned = spawn(&spec, InvocationId::new(), None).expect("spawn /bin/true");
            // Read before the wait: a zombie's stat still holds it.
            let stat = crate::proc::read_stat(spawned.pid).expect("its stat");
            if let Some(start_time) = spawned.start_time {
                assert_eq!(start_time, stat.start_time);
                told += 1;
            }
            assert_eq!(wait(spawned.pid), 0);
        }
        // Each clone's readings straddle a tick (10 ms) only when it
        // takes about that long: not 50 times in a row.
        assert!(told > 0, "no start time was told by the clone");
    }

    #[test]
    fn a_start_time_is_told_only_when_both_readings_fall_in_one_tick() {
        let tick = 10_000_000;
        assert_eq!(start_tick(5 * tick, 5 * tick + 1, 100), Some(5));
        assert_eq!(start_tick(5 * tick + 1, 6 * tick - 1, 100), Some(5));
        assert_eq!(start_tick(6 * tick - 1, 6 * tick, 100), None);
        assert_eq!(
            start_tick(5 * tick + 2, 5 * tick + 1, 100),
            None,
            "a clock that went back"
        );
        assert_eq!(start_tick(5 * tick, 5 * tick, 0), None, "no tick rate");
    }

    /// What a pipe's read end gives until its writers are gone.
    fn read_to_end(pipe: OwnedFd) -> String {
        let mut text = String::new();
        std::fs::File::from(pipe).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn the_program_gets_its_environment_directory_session_and_standard_descriptors() {
        let script = "echo \"$LANG|$PATH|$ADOPTD_INVOCATION_ID|$(pwd)\"; \
                      cut -d' ' -f6 /proc/$$/stat; ls /proc/self/fd; echo oops >&2";
        let spawned = spawn(&spec(&["/bin/sh", "-c", script]), InvocationId::new(), None)
            .expect("spawn /bin/sh");
        let output = spawned.output.expect("pipes");
        let stdout = read_to_end(output.stdout);
        let stderr = read_to_end(output.stderr);
        assert_eq!(wait(spawned.pid), 0);
        let mut lines = stdout.lines();
        let first: Vec<&str> = lines.next().unwrap().split('|').collect();
        assert_eq!(first[0], "C");
        assert_eq!(first[1], DEFAULT_PATH);
        assert!(!first[2].is_empty());
        assert_eq!(first[3], "/tmp");
        // Its own session.
        assert_eq!(lines.next().unwrap().trim(), spawned.pid.to_string());
        // ls's own directory descriptor aside, only 0, 1 and 2.
        let descriptors: Vec<&str> = lines.collect();
        assert!(descriptors.len() <= 4, "{descriptors:?}");
        assert_eq!(descriptors[..3], ["0", "1", "2"]);
        assert_eq!(stderr, "oops\n");
    }

    #[test]
    fn starts_made_at_once_each_get_their_own_pipes_and_no_other_descriptor() {
        let script = "echo \"$ADOPTD_INVOCATION_ID\"; ls /proc/self/fd";
        let spec = spec(&["/bin/sh", "-c", script]);
        let starts: Vec<Start<'_>> = (0..64)
            .map(|_| Start {
                spec: &spec,
                invocation: InvocationId::new(),
                notify_socket: None,
            })
            .collect();
        let results = spawn_each(&starts);
        assert_eq!(results.len(), starts.len());
        let mut pids = std::collections::HashSet::new();
        for (start, result) in starts.iter().zip(results) {
            let spawned = result.expect("spawn /bin/sh");
            assert!(pids.insert(spawned.pid), "pid {} twice", spawned.pid);
            let output = spawned.output.expect("pipes");
            drop(output.stderr);
            let stdout = read_to_end(output.stdout);
            assert_eq!(wait(spawned.pid), 0);
            let mut lines = stdout.lines();
            assert_eq!(lines.next(), Some(start.invocation.to_string().as_str()));
            // ls's own directory descriptor aside, only 0, 1 and 2: no
            // other start's pipe.
            let descriptors: Vec<&str> = lines.collect();
            assert!(descriptors.len() <= 4, "{descriptors:?}");
            assert_eq!(descriptors[..3], ["0", "1", "2"]);
        }
    }

    #[test]
    fn a_refused_exec_is_an_exec_error_with_the_system_s_reason() {
        // Exists, so it passes the checks before the clone; not executable.
        let error = spawn(&spec(&["/etc/passwd"]), InvocationId::new(), None)
            .expect_err("/etc/passwd is no program");
        match &error {
            SpawnError::Exec { program, source } => {
                assert_eq!(program, "/etc/passwd");
                assert_eq!(source.raw_os_error(), Some(libc::EACCES));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_step_before_the_exec_that_fails_is_an_exec_error_too() {
        let mut spec = spec(&["/bin/true"]);
        // A file, so the check that it exists passes and chdir refuses it.
        spec.uncommon_mut().working_directory = Some(PathBuf::from("/etc/passwd"));
        let error = spawn(&spec, InvocationId::new(), None).expect_err("chdir into a file");
        match &error {
            SpawnError::Exec { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR));
            }
            other => panic!("{other:?}"),
        }
    }
}
