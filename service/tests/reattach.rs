//! adoptd killed with SIGKILL (a crash) and started again with the same
//! configuration and state directory: it re-attaches the services that
//! still run instead of starting them twice, publishes them with their old
//! values, stops the old daemons when told, and notices their death and
//! restarts them by their policy, under every adoption source this
//! machine supports.
//!
//! A crashed adoptd's services are reparented to the nearest subreaper
//! above it: the test process makes itself one ([`Orphans`]), so nothing
//! reaches the machine's init, and kills and reaps every process it
//! caught when the test ends, passed or failed. The tests of this file
//! run one at a time, as they share that subreaper.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{Mutex, MutexGuard},
};

use adoptd_dbus::{BUS_NAME, MainPidSource, State};
use adoptd_test_support::{bus::TestBus, *};

/// One test at a time: they share the test process as their subreaper.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The test process as the subreaper of everything a test starts, and the
/// clean-up of it all when the test ends, however it ends.
struct Orphans {
    _turn: MutexGuard<'static, ()>,
}

impl Orphans {
    fn catch() -> Self {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: prctl with integer arguments only.
        let made = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(made, 0, "cannot make the test a child subreaper");
        Orphans { _turn: turn }
    }
}

impl Drop for Orphans {
    fn drop(&mut self) {
        // Every process left is the test's: adoptd, its services, the
        // orphans of crashed adoptds, the bus. Killed by pidfd, then reaped.
        for _ in 0..3 {
            let left = descendants(std::process::id());
            if left.is_empty() {
                break;
            }
            for process in &left {
                process.kill();
            }
            reap_all();
        }
        reap_all();
    }
}

/// Reaps every child of the test process that has ended, without waiting.
fn reap_all() {
    loop {
        // SAFETY: waitpid with a null status pointer.
        let reaped = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if reaped <= 0 {
            break;
        }
    }
}

/// The live processes that carry an invocation id of adoptd's (the
/// services' processes), among the test's descendants.
fn service_processes() -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    let mut queue = vec![std::process::id()];
    while let Some(parent) = queue.pop() {
        for (child, zombie) in children_of(parent) {
            queue.push(child);
            if zombie {
                continue;
            }
            let environment = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
            if environment
                .split(|&b| b == 0)
                .any(|entry| entry.starts_with(b"ADOPTD_INVOCATION_ID="))
            {
                pids.insert(child);
            }
        }
    }
    pids
}

/// How many live processes run `program` (by command name).
fn running(program: &str) -> usize {
    service_processes()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == program)
        })
        .count()
}

fn reattached_timestamp(bus: &TestBus, service: &str) -> u64 {
    let text = bus.busctl(&[
        "get-property",
        BUS_NAME,
        &adoptd_dbus::service_path(service).to_string(),
        adoptd_dbus::SERVICE_INTERFACE,
        "ReattachedTimestamp",
    ]);
    // "t 1700000000000000"
    text.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ReattachedTimestamp of {service}: {text:?}"))
}

/// Waits until adoptd's record names `main_pid` as service `name`'s main
/// process. adoptd writes it at the end of the turn that changed the
/// service, just after the bus may have shown the change: a test that
/// kills adoptd at once must wait for it, as a crash in that turn loses
/// the change.
fn wait_recorded(scratch: &Scratch, name: &str, main_pid: u32) {
    let runs = scratch.runtime_dir().join("runs");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&runs)
        .expect("the record's directory");
    let file = runs.join(format!("{}.json", adoptd_dbus::escape_label(name)));
    let named = format!("\"main_pid\":{main_pid},");
    wait_for_file(&file, |text| text.contains(&named).then_some(()));
}

/// adoptd with `tracker` on `bus`, and a watch on it.
fn supervise(scratch: &Scratch, bus: &TestBus, tracker: &str) -> (Adoptd, Watch) {
    let adoptd = Adoptd::start(scratch, &["--address", &bus.address, "--tracker", tracker]);
    let watch = adoptd.watch(&bus.address);
    (adoptd, watch)
}

/// Sends SIGUSR2 to adoptd and waits until its new image owns the name.
fn reexecute(address: &str, adoptd: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            let connection = zbus::connection::Builder::address(address)
                .build()
                .await
                .expect("connect");
            let daemon = zbus::fdo::DBusProxy::new(&connection)
                .await
                .expect("bus proxy");
            let name = zbus::names::BusName::try_from(BUS_NAME).expect("name");
            let old_owner = daemon.get_name_owner(name).await.expect("owner");
            let mut owners = daemon
                .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
                .await
                .expect("NameOwnerChanged");
            signal(adoptd, libc::SIGUSR2);
            while let Some(change) = futures_util::StreamExt::next(&mut owners).await {
                let args = change.args().expect("NameOwnerChanged args");
                if args
                    .new_owner()
                    .as_ref()
                    .is_some_and(|owner| owner.as_str() != old_owner.as_str())
                {
                    break;
                }
            }
        })
        .await
        .expect("the re-exec within the timeout");
    });
}

/// `adoptctl status NAME` on `bus`, where adoptctl is built.
fn adoptctl_status(bus: &TestBus, name: &str) -> Option<String> {
    let adoptctl = adoptctl_binary()?;
    let output = std::process::Command::new(adoptctl)
        .args(["--address", &bus.address, "status", name])
        .env("NO_COLOR", "1")
        .output()
        .expect("run adoptctl");
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn after_a_crash_the_services_are_reattached_not_started_twice() {
    let Some(memcached) = installed("memcached") else {
        eprintln!("skipped: memcached is not installed");
        return;
    };
    if !is_root() {
        eprintln!("skipped: memcached -u nobody needs root");
        return;
    }
    let _orphans = Orphans::catch();
    for tracker in trackers() {
        let scratch = Scratch::new("reattach");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "dancer",
            "restart-delay = \"0\"\n",
            &["fork", "setsid", "fork", "workers:2", "serve"],
        );
        let pid_file = memcached_service(&scratch, &memcached, "restart-delay = \"0\"\n");
        let (adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let dancer = watch.wait_main_pid("dancer", reports.next().pid);
        let memcached_main = wait_for_pid_file(&pid_file);
        let old_memcached = watch.wait_main_pid("memcached", memcached_main);
        let processes = service_processes();
        assert_eq!(running("memcached"), 1, "{tracker}");
        wait_recorded(&scratch, "dancer", dancer.main_pid);
        wait_recorded(&scratch, "memcached", memcached_main);

        adoptd.kill();
        // The services outlived adoptd.
        assert_eq!(service_processes(), processes, "{tracker}: after the crash");

        let (mut adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        for (name, before) in [("dancer", &dancer), ("memcached", &old_memcached)] {
            let now = watch.read(name);
            assert_eq!(&now, before, "{tracker}: {name} as published");
            assert!(reattached_timestamp(&bus, name) > 0, "{tracker}: {name}");
        }
        assert_eq!(
            service_processes(),
            processes,
            "{tracker}: a daemon was started twice"
        );
        assert_eq!(running("memcached"), 1, "{tracker}");
        assert!(
            adoptd
                .log
                .iter()
                .all(|l| !l.message.starts_with("started ")),
            "{tracker}: something was started"
        );
        if let Some(status) = adoptctl_status(&bus, "memcached") {
            assert!(
                status.contains("Re-attached: after adoptd restarted, since"),
                "{tracker}: {status}"
            );
        }

        // The death of an old daemon is noticed and restarted by policy.
        std::fs::remove_file(&pid_file).ok();
        signal(memcached_main, libc::SIGKILL);
        let restarted = wait_for_pid_file(&pid_file);
        let status = watch.wait_main_pid("memcached", restarted);
        assert_eq!(
            status.restarts,
            old_memcached.restarts + 1,
            "{tracker}: {status:?}"
        );
        assert_eq!(reattached_timestamp(&bus, "memcached"), 0, "{tracker}");
        assert_eq!(running("memcached"), 1, "{tracker}: after the restart");

        // A stop stops the old daemon, and its workers with it.
        let dancers: Vec<u32> = processes
            .iter()
            .copied()
            .filter(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "dance")
            })
            .collect();
        assert!(dancers.contains(&dancer.main_pid), "{tracker}: {dancers:?}");
        watch.stop(&["dancer"]);
        watch.wait_state("dancer", State::Stopped);
        for pid in dancers {
            assert_ends(pid, "a process of the re-attached dancer after its stop");
        }
        adoptd.wait_for("the old daemon's end", |l| {
            l.is("status", "dancer") && l.get("state") == Some("stopped")
        });

        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
        assert_ends(restarted, "memcached after adoptd stopped");
        reap_all();
    }
}

/// The live processes named `comm` among the test's descendants.
fn named(comm: &str) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    let mut queue = vec![std::process::id()];
    while let Some(parent) = queue.pop() {
        for (child, zombie) in children_of(parent) {
            queue.push(child);
            let name = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if !zombie && name.trim() == comm {
                pids.insert(child);
            }
        }
    }
    pids
}

#[test]
fn nginx_which_writes_its_title_over_its_environment_is_reattached_with_its_workers() {
    // nginx's master and workers no longer show the invocation id in
    // /proc/PID/environ (the title is written over it): the master is
    // known by its pid and exact start time, its workers by lineage.
    let Some(nginx) = installed("nginx") else {
        eprintln!("skipped: nginx is not installed");
        return;
    };
    if !is_root() {
        eprintln!("skipped: nginx needs root here");
        return;
    }
    let _orphans = Orphans::catch();
    for tracker in trackers() {
        let scratch = Scratch::new("reattach-nginx");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let pid_file = nginx_service(&scratch, &nginx);
        let (adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let master = wait_for_pid_file(&pid_file);
        let before = watch.wait_main_pid("nginx", master);
        let error_log = scratch.file("error.log");
        wait_for_file(&error_log, |text| {
            (text.matches("start worker process ").count() >= 2).then_some(())
        });
        let processes = named("nginx");
        assert_eq!(processes.len(), 3, "{tracker}: a master and two workers");
        wait_recorded(&scratch, "nginx", master);

        adoptd.kill();
        let (adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        assert_eq!(watch.read("nginx"), before, "{tracker}: as published");
        assert!(reattached_timestamp(&bus, "nginx") > 0, "{tracker}");
        assert_eq!(named("nginx"), processes, "{tracker}: nginx started twice");
        assert!(
            adoptd
                .log
                .iter()
                .all(|l| !l.message.starts_with("started ")),
            "{tracker}: something was started"
        );

        // A stop is nginx's graceful stop, for the master and its workers.
        watch.stop(&["nginx"]);
        watch.wait_state("nginx", State::Stopped);
        for pid in processes {
            assert_ends(pid, "a process of the re-attached nginx after its stop");
        }
        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
        reap_all();
    }
}

#[test]
fn a_reattached_daemon_that_forks_and_exits_is_followed_to_its_child() {
    // The re-attached main process hands off after the re-attach (as a
    // daemon re-executing itself does): its child is orphaned to the
    // reaper above the crashed adoptd, not to this one, and must still be
    // taken as the heir, not stopped as a leftover of a run that ended.
    let _orphans = Orphans::catch();
    for tracker in trackers() {
        let scratch = Scratch::new("reattach-handoff");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "dancer",
            "",
            &["fork", "setsid", "report", "await:USR1", "fork", "serve"],
        );
        let (adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let before = watch.wait_main_pid("dancer", reports.next().pid);
        wait_recorded(&scratch, "dancer", before.main_pid);
        adoptd.kill();

        let (adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        assert_eq!(watch.read("dancer"), before, "{tracker}: as published");
        assert!(reattached_timestamp(&bus, "dancer") > 0, "{tracker}");
        signal(before.main_pid, libc::SIGUSR1);
        let daemon = reports.next();
        assert_eq!(daemon.last_parent, before.main_pid);
        let context = format!("{tracker}: a hand-off after the re-attach");
        let after = watch.wait_main_pid("dancer", daemon.pid);
        assert_eq!(after.state, State::Running, "{context}: {after:?}");
        if after.main_pid_source != MainPidSource::Guess {
            assert_eq!(after.previous_pid, before.main_pid, "{context}");
            assert_eq!(after.handoffs, before.handoffs + 1, "{context}");
        }
        assert!(is_alive(daemon.pid), "{context}: the daemon was stopped");
        assert_eq!(
            service_processes(),
            BTreeSet::from([daemon.pid]),
            "{context}"
        );
        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
        assert_ends(daemon.pid, "the daemon after adoptd stopped");
        reap_all();
    }
}

#[test]
fn the_end_of_a_reattached_daemon_is_noticed_even_after_a_reexec() {
    // A plain foreground process, re-attached and kept across a re-exec:
    // ended from outside, it is restarted by its policy (always), and a
    // stop of adoptd stops the new run.
    let _orphans = Orphans::catch();
    for tracker in trackers() {
        let scratch = Scratch::new("reattach-exit");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        scratch.service(
            "sleeper",
            "exec = [\"/bin/sleep\", \"86400\"]\nrestart = \"always\"\nrestart-delay = \"0\"\n",
        );
        let (adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let old = watch.wait_state("sleeper", State::Running);
        wait_recorded(&scratch, "sleeper", old.main_pid);
        adoptd.kill();

        let (mut adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        assert_eq!(watch.read("sleeper"), old, "{tracker}");
        // A re-exec keeps the re-attached run as it is, pidfd and all.
        let reattached_at = reattached_timestamp(&bus, "sleeper");
        reexecute(&bus.address, adoptd.pid());
        adoptd.wait_for("the new image to restore", |line| {
            line.message == "restored the state of the previous image"
        });
        assert_eq!(
            reattached_timestamp(&bus, "sleeper"),
            reattached_at,
            "{tracker}"
        );
        signal(old.main_pid, libc::SIGTERM);
        let restarted = watch.wait_status("sleeper", "restarted", |s| {
            s.state == State::Running && s.main_pid != old.main_pid && s.main_pid != 0
        });
        assert_eq!(restarted.restarts, old.restarts + 1, "{tracker}");
        assert_eq!(
            service_processes(),
            BTreeSet::from([restarted.main_pid]),
            "{tracker}"
        );
        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
        assert_ends(restarted.main_pid, "the sleeper after adoptd stopped");
        reap_all();
    }
}

#[test]
fn a_record_that_does_not_read_starts_the_services_as_usual() {
    let _orphans = Orphans::catch();
    let scratch = Scratch::new("reattach-garbage");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    scratch.service("sleeper", "exec = [\"/bin/sleep\", \"86400\"]\n");
    write_record(&scratch.runtime_dir(), "sleeper", b"\x00 not a record {");
    let (mut adoptd, mut watch) = supervise(&scratch, &bus, "procfs");
    watch.wait_state("sleeper", State::Running);
    adoptd.wait_for("the refusal", |l| {
        l.text.contains("is not a record adoptd can read")
    });
    assert_eq!(reattached_timestamp(&bus, "sleeper"), 0);
    let record = scratch.runtime_dir().join("runs");
    let sleeper = adoptd_dbus::escape_label("sleeper");
    assert!(
        record.join(format!("{sleeper}.json")).exists(),
        "no file of a running service"
    );
    let (status, _) = adoptd.stop();
    assert!(status.success(), "{status:?}");
    let left: Vec<_> = std::fs::read_dir(&record)
        .expect("the record")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .collect();
    assert!(left.is_empty(), "files of stopped services: {left:?}");
}

/// Writes service `name`'s file of the record in `directory`.
fn write_record(directory: &Path, name: &str, bytes: &[u8]) {
    let runs = directory.join("runs");
    std::fs::create_dir_all(&runs).expect("mkdir");
    std::fs::write(runs.join(format!("{name}.json")), bytes).expect("write the record");
}

#[test]
fn leftovers_of_a_daemon_that_died_meanwhile_are_killed_before_it_starts_again() {
    let _orphans = Orphans::catch();
    for tracker in trackers() {
        let scratch = Scratch::new("reattach-leftovers");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "dancer",
            "",
            &["fork", "setsid", "fork", "workers:2", "serve"],
        );
        let (adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let main = watch.wait_main_pid("dancer", reports.next().pid).main_pid;
        let workers: Vec<u32> = service_processes()
            .into_iter()
            .filter(|&pid| pid != main)
            .collect();
        assert_eq!(workers.len(), 2, "{tracker}: {workers:?}");
        wait_recorded(&scratch, "dancer", main);

        adoptd.kill();
        // The daemon dies while no adoptd watches; its workers live on.
        signal(main, libc::SIGKILL);
        assert_ends(main, "the dancer's main process");

        let (mut adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let started = reports.next();
        watch.wait_main_pid("dancer", started.pid);
        adoptd.wait_for("the leftovers' end", |l| {
            l.is(
                "the main process of an earlier adoptd's run is gone: killing what is left of the run",
                "dancer",
            )
        });
        for worker in workers {
            assert!(
                !is_alive(worker),
                "{tracker}: leftover worker {worker} lives"
            );
        }
        assert_eq!(reattached_timestamp(&bus, "dancer"), 0, "{tracker}");
        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
        reap_all();
    }
}

#[test]
fn a_run_that_ended_while_no_adoptd_watched_is_started_again_by_its_policy() {
    // Not started by itself: an operator started it, and its policy, not
    // its autostart, brings it back.
    let _orphans = Orphans::catch();
    let scratch = Scratch::new("reattach-ended");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    scratch.service(
        "sleeper",
        "exec = [\"/bin/sleep\", \"86400\"]\nautostart = false\nrestart = \"on-failure\"\n",
    );
    let (adoptd, mut watch) = supervise(&scratch, &bus, "procfs");
    watch.start(&["sleeper"]);
    let old = watch.wait_state("sleeper", State::Running).main_pid;
    wait_recorded(&scratch, "sleeper", old);
    adoptd.kill();
    signal(old, libc::SIGKILL);
    assert_ends(old, "the sleeper");

    let (adoptd, mut watch) = supervise(&scratch, &bus, "procfs");
    let new = watch.wait_status("sleeper", "started again", |s| {
        s.state == State::Running && s.main_pid != old && s.main_pid != 0
    });
    assert!(is_alive(new.main_pid), "{new:?}");
    let (status, _) = adoptd.stop();
    assert!(status.success(), "{status:?}");
}
