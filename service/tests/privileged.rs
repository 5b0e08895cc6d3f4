//! What adoptd does to a process before exec, and adoptd as PID 1: the
//! paths that run as root. Tests that need root say so and pass vacuously
//! only when they print why (CI runs them as root).

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use std::process::Command;

use adoptd_dbus::State;
use adoptd_test_support::*;

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in status"))
        .trim()
        .to_owned()
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped: needs root");
    true
}

#[test]
fn a_service_starts_with_a_clean_signal_mask_and_environment() {
    let scratch = Scratch::new("mask");
    scratch.service(
        "plain",
        "exec = [\"/bin/sleep\", \"1000\"]\nexpect = \"foreground\"\nenvironment = { GREETING = \"hello\" }\n",
    );
    // A soft descriptor limit below the hard one, for adoptd to raise
    // (this test binary's other tests need far fewer).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill in.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = limit.rlim_max.min(512);
    // SAFETY: lowering our own soft limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let mut adoptd = Adoptd::start(&scratch, &[]);
    // The invocation id is said in the log only.
    let started = adoptd.wait_for("the spawn", |l| {
        l.message.starts_with("started") && l.get("service") == Some("plain")
    });
    let pid = started.pid("pid");
    let invocation = started.get("invocation").expect("invocation id").to_owned();
    assert_eq!(invocation.len(), 32, "{invocation}");
    assert_eq!(status_field(pid, "SigBlk"), "0000000000000000");
    assert_eq!(status_field(pid, "SigIgn"), "0000000000000000");
    // adoptd says `started` once the exec is past its point of no
    // return; the kernel fills in the new program's environment a moment
    // later (as it did when the exec-status pipe closed).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let environ = loop {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        if !environ.is_empty() || std::time::Instant::now() > deadline {
            break environ;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let mut environ: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    environ.sort();
    assert_eq!(
        environ,
        vec![
            format!("ADOPTD_INVOCATION_ID={invocation}"),
            "GREETING=hello".to_owned(),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ]
    );
    // adoptd raises its own descriptor limit; the service gets back the
    // one adoptd was started with.
    let open_files = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .expect("limits")
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files")
            .to_owned()
    };
    assert_eq!(open_files(&pid.to_string()), open_files("self"));
    if limit.rlim_max > 512 {
        assert_ne!(open_files(&adoptd.pid().to_string()), open_files("self"));
    }
    // The dynamic loader of the new program holds a descriptor of its own
    // for a moment after exec: counted once sleep(1) sleeps.
    wait_until_sleeping(pid);
    let descriptors: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(Result::ok)
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    assert_eq!(
        descriptors.len(),
        3,
        "only stdin, stdout and stderr: {descriptors:?}"
    );
    let sid = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = sid.rsplit_once(") ").expect("stat").1.split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "a session leader");
}

/// Waits until `pid` is blocked in clock_nanosleep or nanosleep, the one
/// system call sleep(1) makes once it has started. The kernel sends no
/// event for that, so this polls, with the common timeout.
fn wait_until_sleeping(pid: u32) {
    let sleeping = [libc::SYS_clock_nanosleep, libc::SYS_nanosleep].map(|n| n.to_string());
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).expect("syscall");
        if sleeping
            .iter()
            .any(|n| syscall.split(' ').next() == Some(n.as_str()))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never went to sleep: {syscall}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn chroot_user_group_and_working_directory_are_applied() {
    if skip_unless_root("chroot_user_group_and_working_directory_are_applied") {
        return;
    }
    let scratch = Scratch::new("chroot");
    let root = scratch.file("root");
    install_with_libraries("/bin/sleep", &root);
    std::fs::create_dir_all(root.join("srv")).expect("mkdir");
    scratch.service(
        "jailed",
        &format!(
            "exec = [\"/bin/sleep\", \"1000\"]\nexpect = \"foreground\"\nchroot = {:?}\nuser = \"nobody\"\nworking-directory = \"/srv\"\n",
            root.to_str().expect("utf-8")
        ),
    );
    let (_adoptd, mut watch) = Adoptd::start_watched(&scratch, &[]);
    let pid = watch.wait_state("jailed", State::Running).main_pid;
    let link = |name: &str| std::fs::read_link(format!("/proc/{pid}/{name}")).expect("link");
    assert_eq!(link("root"), root);
    assert_eq!(link("cwd"), root.join("srv"));
    let nobody = nix_user("nobody");
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{0}\t{0}\t{0}\t{0}", nobody.0)
    );
    assert_eq!(
        status_field(pid, "Gid"),
        format!("{0}\t{0}\t{0}\t{0}", nobody.1)
    );
    assert!(
        !status_field(pid, "Groups")
            .split_whitespace()
            .any(|g| g == "0"),
        "no root group left"
    );
}

#[test]
fn an_unknown_user_is_a_clear_failure_and_others_still_start() {
    let scratch = Scratch::new("nouser");
    scratch.service(
        "ghost",
        "exec = [\"/bin/sleep\", \"1000\"]\nuser = \"no-such-user-here\"\nrestart = \"no\"\n",
    );
    scratch.service("fine", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let (mut adoptd, mut watch) = Adoptd::start_watched(&scratch, &[]);
    // Why a start failed is said in the log only.
    let error = adoptd.wait_for("the spawn error", |l| {
        l.text.contains("cannot start") && l.get("service") == Some("ghost")
    });
    assert!(
        error
            .text
            .contains("user \\\"no-such-user-here\\\" does not exist")
            || error.text.contains("no-such-user-here"),
        "{}",
        error.text
    );
    watch.wait_state("ghost", State::Failed);
    watch.wait_state("fine", State::Running);
}

#[test]
fn as_pid_1_of_a_pid_namespace_it_reaps_processes_of_no_service() {
    if skip_unless_root("as_pid_1_of_a_pid_namespace_it_reaps_processes_of_no_service") {
        return;
    }
    let scratch = Scratch::new("pid1");
    let reports = Reports::bind(&scratch);
    scratch.service(
        "web",
        &format!(
            "exec = {}\n",
            dance_exec(&reports, "web", &["fork", "setsid", "fork", "serve"])
        ),
    );
    let mut command = Command::new("unshare");
    command
        // Never the real adoptd's records of its runs (/run/adoptd).
        .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, scratch.runtime_dir())
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .arg(env!("CARGO_BIN_EXE_adoptd"))
        .arg("--config-dir")
        .arg(scratch.services());
    // Read in the log: a client outside the PID namespace gets no
    // connection to the private bus of an adoptd inside it (the bus closes
    // it at once), and a system bus's policy is not this test's subject.
    let mut adoptd = Adoptd::spawn(command);
    let start = adoptd.wait_for("start-up", |l| l.message == "adoptd starting");
    assert_eq!(start.get("role"), Some("init"));
    // The dance reports its pid as seen inside the namespace, as adoptd does.
    let settled = reports.next();
    adoptd.wait_main_pid("web", settled.pid);
    // A process enters the namespace from outside and leaves a child
    // behind: the child is reparented to PID 1 and belongs to no service.
    let init = namespace_init(adoptd.pid());
    let status = Command::new("nsenter")
        .args([
            "--target",
            &init.to_string(),
            "--pid",
            "--",
            "/bin/sh",
            "-c",
            "/bin/true & exit 0",
        ])
        .status()
        .expect("nsenter");
    assert!(status.success());
    adoptd.wait_next("the orphan to be reaped", |l| {
        l.message == "reaped a process of no service"
    });
    let (exit, log) = adoptd.stop_through(init);
    assert!(
        exit.success(),
        "a container's init exits 0 after stopping everything"
    );
    assert!(
        log.iter()
            .any(|l| l.is("main process exited", "web") && l.pid("pid") == settled.pid)
    );
}

/// The pid (outside) of the namespace's init, the child of `unshare`.
fn namespace_init(unshare: u32) -> u32 {
    children_of(unshare)
        .first()
        .expect("adoptd under unshare")
        .0
}

fn nix_user(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name))
                .then(|| (f[2].parse().expect("uid"), f[3].parse().expect("gid")))
        })
        .expect("user exists")
}

/// Copies a program and the shared libraries `ldd` lists into `root`.
fn install_with_libraries(program: &str, root: &std::path::Path) {
    let mut files = vec![program.to_owned()];
    let ldd = Command::new("ldd").arg(program).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.to_owned());
        }
    }
    for file in files {
        let target = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&file, &target).unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
}

#[test]
fn a_log_reader_that_goes_away_does_not_bring_adoptd_down() {
    // As PID 1, the console can go away; a panic there is a kernel panic.
    let scratch = Scratch::new("epipe");
    let reports = Reports::bind(&scratch);
    scratch.service(
        "web",
        &format!(
            "exec = {}\n",
            dance_exec(&reports, "web", &["fork", "setsid", "serve"])
        ),
    );
    let mut adoptd = std::process::Command::new(env!("CARGO_BIN_EXE_adoptd"))
        .arg("--config-dir")
        .arg(scratch.services())
        // Never the real adoptd's records of its runs (/run/adoptd).
        .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, scratch.runtime_dir())
        .env("ADOPTD_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start adoptd");
    let settled = reports.next();
    // Nobody reads adoptd's output any more.
    drop(adoptd.stdout.take());
    drop(adoptd.stderr.take());
    signal(adoptd.id(), libc::SIGTERM);
    let pidfd = Pidfd::open(adoptd.id()).expect("pidfd");
    assert!(pidfd.wait_exit(TIMEOUT), "adoptd did not exit");
    let status = adoptd.wait().expect("wait");
    assert!(status.success(), "adoptd ended with {status}");
    assert_ends(settled.pid, "the service, stopped before adoptd exited");
}
