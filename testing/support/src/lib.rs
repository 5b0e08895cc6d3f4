//! Test support shared by every crate of the workspace: a real adoptd
//! binary on a scratch configuration directory ([`Adoptd`], [`Scratch`]),
//! the dance helper and its reports ([`dance_service`], [`Reports`]),
//! process helpers held by pidfd ([`descendants`], [`Pidfd`]), a test
//! D-Bus daemon and busctl ([`bus`]), and adoptd as its bus shows it,
//! read from its signals ([`Watch`]).
//!
//! Every wait has a timeout and waits on an event (a log line, a D-Bus
//! signal, a datagram, a pidfd becoming readable); nothing sleeps and hopes. No test touches
//! the places a real adoptd uses: configuration, runtime directory and bus
//! socket all live in a [`Scratch`] directory.

// A failed expectation in test support is a test failure, said with a
// reason.
#![allow(clippy::expect_used)]

mod adoptd;
pub mod bus;
mod files;
mod process;
mod reports;
pub mod watch;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use adoptd::{Adoptd, LogLine};
pub use files::{wait_for_file, wait_for_pid_file};
pub use process::{Held, Pidfd, assert_ends, children_of, descendants, is_alive, signal};
pub use reports::{Report, Reports};
pub use watch::{Signal, Status, Watch, wait_for_adoptd};

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch directory, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
    _directory: tempfile::TempDir,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let directory = tempfile::Builder::new()
            .prefix(&format!("adoptd-test-{name}-"))
            .tempdir()
            .expect("create scratch dir");
        let path = directory.path().to_owned();
        // Services and buses of some tests run as another user, and reach
        // their sockets in here.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("open the scratch directory");
        std::fs::create_dir(path.join("services")).expect("create the services directory");
        Scratch {
            path,
            _directory: directory,
        }
    }

    pub fn services(&self) -> PathBuf {
        self.path.join("services")
    }

    /// Writes a service file `NAME.toml` (or `NAME@.toml`).
    pub fn service(&self, file_name: &str, text: &str) {
        std::fs::write(self.services().join(format!("{file_name}.toml")), text)
            .expect("write service file");
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// adoptd's runtime directory in this test (`$ADOPTD_RUNTIME_DIR`),
    /// never the real adoptd's.
    pub fn runtime_dir(&self) -> PathBuf {
        self.path.join("adoptd-runtime")
    }
}

/// The adoptd binary, built by `cargo test --workspace`.
pub fn adoptd_binary() -> PathBuf {
    workspace_binary("adoptd", "adoptd")
}

/// The adoptctl binary, where it is built (`cargo test --workspace`
/// builds it; a test run of the adoptd crate alone may not).
pub fn adoptctl_binary() -> Option<PathBuf> {
    Some(binary_path("adoptctl")).filter(|path| path.exists())
}

/// The dance helper binary, built by `cargo test --workspace`.
pub fn dance() -> PathBuf {
    workspace_binary("dance", "dance")
}

/// A binary of the workspace, beside the test executable.
///
/// `env!("CARGO_BIN_EXE_…")` names only the binaries of the crate whose
/// tests are being built; this works from every crate: cargo puts test
/// executables in `deps/` of the directory that holds the binaries.
fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let path = binary_path(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p {package}`)",
        path.display()
    );
    path
}

/// Where the workspace's binary `name` is built.
fn binary_path(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test executable's path");
    let mut directory = test.parent().expect("the test's directory");
    if directory.ends_with("deps") {
        directory = directory.parent().expect("the binaries' directory");
    }
    directory.join(name)
}

/// A TOML array of strings.
pub fn argv(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `exec` of a dance service that reports to `reports`.
pub fn dance_exec(reports: &Reports, tag: &str, steps: &[&str]) -> String {
    let dance = dance();
    let socket = reports.path.to_string_lossy().into_owned();
    let mut args = vec![
        dance.to_str().expect("utf-8 path"),
        "--report",
        &socket,
        "--tag",
        tag,
    ];
    args.extend_from_slice(steps);
    argv(&args)
}

/// Writes a service `name` that runs the dance helper's `steps`, reports
/// to `reports`, is never restarted, and has `extra` service-file lines.
pub fn dance_service(
    scratch: &Scratch,
    reports: &Reports,
    name: &str,
    extra: &str,
    steps: &[&str],
) {
    scratch.service(
        name,
        &format!(
            "exec = {}\nrestart = \"no\"\n{extra}\n",
            dance_exec(reports, name, steps)
        ),
    );
}

/// The adoption sources the shared suite runs against on this machine:
/// `$ADOPTD_TEST_TRACKER` alone if set and not empty, else `procfs` and,
/// as root in the initial pid namespace, `proc-connector`.
pub fn trackers() -> Vec<String> {
    if let Ok(tracker) = std::env::var("ADOPTD_TEST_TRACKER")
        && !tracker.is_empty()
    {
        return vec![tracker];
    }
    let mut trackers = vec!["procfs".to_owned()];
    let initial_namespace = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == 0xEFFF_FFFC)
        .unwrap_or(false);
    if is_root() && initial_namespace {
        trackers.push("proc-connector".to_owned());
    }
    trackers
}

/// True when the tests run as root (chroot, users, PID namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A TCP port on loopback nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of an installed program, or `None` (the test then says it
/// skips).
pub fn installed(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.exists())
}

/// A small deterministic random source, so that a failing seed can be
/// replayed (`ADOPTD_TEST_SEED`).
pub struct Lcg(pub u64);

impl Lcg {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A service `nginx`: Debian's nginx with a master and two workers,
/// daemonized, on a free loopback port, with its files in the scratch
/// directory; stopped by SIGQUIT (its graceful stop), never waiting to
/// restart. Returns its pid file.
pub fn nginx_service(scratch: &Scratch, nginx: &Path) -> PathBuf {
    let d = scratch.path.display();
    let port = free_port();
    let config = format!(
        "daemon on;\nmaster_process on;\nworker_processes 2;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log notice;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
    );
    let config_path = scratch.file("nginx.conf");
    std::fs::write(&config_path, config).expect("nginx.conf");
    scratch.service(
        "nginx",
        &format!(
            "exec = {}\nrestart-delay = \"0\"\nstop-signal = \"QUIT\"\npid-file = {:?}\n",
            argv(&[
                nginx.to_str().expect("utf-8"),
                "-c",
                config_path.to_str().expect("utf-8"),
                "-p",
                scratch.path.to_str().expect("utf-8"),
            ]),
            scratch.file("nginx.pid").to_str().expect("utf-8"),
        ),
    );
    scratch.file("nginx.pid")
}

/// A service `memcached` running `memcached -d` as nobody on a free
/// loopback port (`extra`: more lines of its file); returns its pid file,
/// in a directory nobody may write, as memcached writes it after dropping
/// to nobody.
pub fn memcached_service(scratch: &Scratch, memcached: &Path, extra: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let run = scratch.file("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::set_permissions(&scratch.path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pid_file = run.join("memcached.pid");
    let port = free_port().to_string();
    scratch.service(
        "memcached",
        &format!(
            "exec = {}\n{extra}",
            argv(&[
                memcached.to_str().expect("utf-8"),
                "-d",
                "-u",
                "nobody",
                "-l",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "0",
                "-P",
                pid_file.to_str().expect("utf-8"),
            ])
        ),
    );
    pid_file
}
