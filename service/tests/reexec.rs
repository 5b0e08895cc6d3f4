//! adoptd re-executing itself in place (`Reexecute()`, SIGUSR2) while it
//! supervises real processes that daemonized: the pid, every service's
//! published values and every service process stay, and supervision goes
//! on as before, under every adoption source this machine supports.
//!
//! Each test runs a dbus-daemon of its own (the private bus would go with
//! the exec) and watches adoptd's signals there.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use adoptd_dbus::{BUS_NAME, MANAGER_PATH, ManagerProxy, State};
use adoptd_test_support::{bus::TestBus, *};
use futures_util::StreamExt as _;
use zbus::{MatchRule, MessageStream, fdo::DBusProxy, names::BusName};

/// The services every test runs, by name: a double-forking dance, a
/// foreground process, and a process that hands off only when the test
/// writes to its FIFO.
fn services(scratch: &Scratch, reports: &Reports) -> Vec<&'static str> {
    dance_service(
        scratch,
        reports,
        "dancer",
        "",
        &["fork", "setsid", "fork", "workers:2", "serve"],
    );
    scratch.service(
        "sleeper",
        "exec = [\"/bin/sleep\", \"86400\"]\nrestart-delay = \"0\"\n",
    );
    let fifo = scratch.file("go");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    scratch.service(
        "launcher",
        &format!(
            "exec = [\"/bin/sh\", \"-c\", \"read go < {}; /bin/sleep 86400 & exit 0\"]\n",
            fifo.display()
        ),
    );
    let said = scratch.file("say");
    let made = std::process::Command::new("mkfifo")
        .arg(&said)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", said.display());
    scratch.service(
        "talker",
        &format!(
            "exec = [\"/bin/sh\", \"-c\", \"echo hello; read x < {}; echo again; exec /bin/sleep 86400\"]\n",
            said.display()
        ),
    );
    vec!["dancer", "sleeper", "launcher", "talker"]
}

/// The talker's latest output lines, as `GetOutput` gives them.
fn talker_output(bus: &TestBus) -> String {
    bus.busctl(&[
        "call",
        BUS_NAME,
        "/org/adoptd1/service/talker",
        "org.adoptd1.Service",
        "GetOutput",
        "u",
        "10",
    ])
}

/// Lets the launcher hand off: its shell reads a line, starts `sleep` in
/// the background and exits 0.
fn let_launcher_hand_off(scratch: &Scratch) {
    std::fs::write(scratch.file("go"), "go\n").expect("write the FIFO");
}

/// adoptd with `tracker` on `bus`, and a watch on it.
fn supervise(scratch: &Scratch, bus: &TestBus, tracker: &str) -> (Adoptd, Watch) {
    let adoptd = Adoptd::start(scratch, &["--address", &bus.address, "--tracker", tracker]);
    let watch = adoptd.watch(&bus.address);
    (adoptd, watch)
}

/// What a re-exec looked like from a client.
struct Reexec {
    /// `PropertiesChanged` signals of adoptd's objects seen from the call
    /// until the new image answered its first call: path and body.
    properties_changed: Vec<String>,
}

/// Calls `Reexecute()` (or sends SIGUSR2 to `by_signal`), waits until a
/// new owner has the name, then makes one round trip to it: every signal
/// the new image sent before it answered has arrived by then.
fn reexecute(address: &str, by_signal: Option<u32>) -> Reexec {
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
            let daemon = DBusProxy::new(&connection).await.expect("bus proxy");
            let name = BusName::try_from(BUS_NAME).expect("name");
            let old_owner = daemon.get_name_owner(name.clone()).await.expect("owner");
            let mut owners = daemon
                .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
                .await
                .expect("NameOwnerChanged");
            let rule = MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface("org.freedesktop.DBus.Properties")
                .member("PropertiesChanged")
                .path_namespace(MANAGER_PATH)
                .build()
                .expect("a match rule");
            let queue = std::num::NonZeroUsize::new(1024);
            let mut changes = MessageStream::for_match_rule(rule, &connection, queue)
                .await
                .expect("subscribe");
            match by_signal {
                Some(pid) => signal(pid, libc::SIGUSR2),
                None => ManagerProxy::new(&connection)
                    .await
                    .expect("manager")
                    .reexecute()
                    .await
                    .expect("Reexecute"),
            }
            while let Some(change) = owners.next().await {
                let args = change.args().expect("NameOwnerChanged args");
                if args
                    .new_owner()
                    .as_ref()
                    .is_some_and(|owner| owner.as_str() != old_owner.as_str())
                {
                    break;
                }
            }
            ManagerProxy::new(&connection)
                .await
                .expect("manager")
                .list_services()
                .await
                .expect("ListServices of the new image");
            let mut properties_changed = Vec::new();
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_millis(0), changes.next()).await
            {
                properties_changed.push(format!(
                    "{:?} {:?}",
                    message.header().path(),
                    zbus::fdo::PropertiesChanged::from_message(message.clone())
                        .and_then(|signal| Some(format!("{:?}", signal.args().ok()?)))
                ));
            }
            Reexec { properties_changed }
        })
        .await
        .expect("the re-exec within the timeout")
    })
}

/// Every service's status as the bus answers it now.
fn statuses(watch: &Watch, names: &[&str]) -> BTreeMap<String, Status> {
    names
        .iter()
        .map(|name| ((*name).to_owned(), watch.read(name)))
        .collect()
}

/// Every process under adoptd now, by pid.
fn processes_under(adoptd: &Adoptd) -> Vec<u32> {
    let mut pids: Vec<u32> = tree_of(adoptd.pid());
    pids.sort_unstable();
    pids
}

fn tree_of(pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for (child, _) in children_of(pid) {
        pids.push(child);
        pids.extend(tree_of(child));
    }
    pids
}

/// The pid `pid` has in its own (innermost) pid namespace.
fn innermost_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

fn started_lines(adoptd: &Adoptd) -> usize {
    adoptd
        .log
        .iter()
        .filter(|line| line.message.starts_with("started "))
        .count()
}

fn wait_restored(adoptd: &mut Adoptd) {
    adoptd.wait_next("the new image to restore", |line| {
        line.message == "restored the state of the previous image"
    });
}

#[test]
fn a_reexec_keeps_the_pid_every_process_and_every_published_value() {
    for tracker in trackers() {
        let scratch = Scratch::new("reexec-keeps");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let reports = Reports::bind(&scratch);
        let names = services(&scratch, &reports);
        let (mut adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let settled = reports.next();
        watch.wait_main_pid("dancer", settled.pid);
        watch.wait_state("sleeper", State::Running);
        // One restart before, so that a counter that is not zero is kept.
        let sleeper = watch.read("sleeper").main_pid;
        signal(sleeper, libc::SIGKILL);
        watch.wait_status("sleeper", "restarted", |s| {
            s.state == State::Running && s.restarts == 1
        });
        let before = statuses(&watch, &names);
        let pid = adoptd.pid();
        let processes = processes_under(&adoptd);
        adoptd.wait_for("the restart's start", |l| {
            l.message.starts_with("started /bin/sleep")
                && l.get("pid") != Some(&sleeper.to_string())
        });
        let started = started_lines(&adoptd);
        adoptd.wait_for("the talker's first line", |l| {
            l.message == "hello" && l.get("service") == Some("talker")
        });
        let output = talker_output(&bus);
        assert!(output.contains("hello"), "{output}");

        let reexec = reexecute(&bus.address, None);
        wait_restored(&mut adoptd);

        assert_eq!(talker_output(&bus), output, "{tracker}: kept output");
        // Its pipe was passed on: what it says now is read by the new image.
        std::fs::write(scratch.file("say"), "x\n").expect("write the FIFO");
        adoptd.wait_next("the talker's line after the re-exec", |l| {
            l.message == "again" && l.get("service") == Some("talker")
        });
        assert_eq!(
            reexec.properties_changed,
            [] as [String; 0],
            "{tracker}: signals of no change"
        );
        assert_eq!(adoptd.pid(), pid);
        assert!(is_alive(pid), "{tracker}: adoptd is gone");
        assert_eq!(statuses(&watch, &names), before, "{tracker}");
        assert_eq!(processes_under(&adoptd), processes, "{tracker}: processes");
        assert_eq!(
            started_lines(&adoptd),
            started,
            "{tracker}: a service was started"
        );

        // Supervision goes on: a crash is restarted, a hand-off followed.
        let sleeper = before["sleeper"].main_pid;
        signal(sleeper, libc::SIGKILL);
        let restarted = watch.wait_status("sleeper", "restarted again", |s| {
            s.state == State::Running && s.restarts == 2
        });
        assert_ne!(restarted.main_pid, sleeper, "{tracker}");
        let launcher = before["launcher"].main_pid;
        let_launcher_hand_off(&scratch);
        let handed = watch.wait_status("launcher", "handed off", |s| s.previous_pid == launcher);
        assert_eq!(handed.state, State::Running, "{tracker}: {handed:?}");
        assert_eq!(handed.handoffs, 1, "{tracker}: {handed:?}");
        assert!(is_alive(handed.main_pid), "{tracker}: {handed:?}");
        let dancer = before["dancer"].main_pid;
        watch.stop(&["dancer"]);
        watch.wait_state("dancer", State::Stopped);
        assert_ends(dancer, "the dancer after its stop");
        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
    }
}

#[test]
fn exits_and_hand_offs_during_the_exec_are_decided_by_the_new_image() {
    for tracker in trackers() {
        let scratch = Scratch::new("reexec-during");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let reports = Reports::bind(&scratch);
        let names = services(&scratch, &reports);
        let (mut adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        watch.wait_main_pid("dancer", reports.next().pid);
        let sleeper = watch.wait_state("sleeper", State::Running).main_pid;
        let launcher = watch.wait_state("launcher", State::Running).main_pid;
        let before = statuses(&watch, &names);

        // Both land just before, during or just after the exec: the
        // outcome is the same whichever image sees them.
        signal(sleeper, libc::SIGKILL);
        let_launcher_hand_off(&scratch);
        reexecute(&bus.address, Some(adoptd.pid()));
        wait_restored(&mut adoptd);

        let restarted = watch.wait_status("sleeper", "restarted", |s| {
            s.state == State::Running && s.restarts == 1 && s.main_pid != sleeper
        });
        assert!(is_alive(restarted.main_pid), "{tracker}: {restarted:?}");
        let handed = watch.wait_status("launcher", "handed off", |s| s.previous_pid == launcher);
        assert_eq!(handed.state, State::Running, "{tracker}: {handed:?}");
        assert_eq!(handed.handoffs, 1, "{tracker}: {handed:?}");
        assert_eq!(watch.read("dancer"), before["dancer"], "{tracker}");
        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
    }
}

#[test]
fn a_worker_named_by_mainpid_is_still_followed_after_a_reexec() {
    // Not adoptd's child: its end comes through its pidfd, which crosses
    // the exec and is waited on again by the new image.
    for tracker in trackers() {
        let scratch = Scratch::new("reexec-worker");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "worker",
            "expect = \"notify\"",
            &["launch", "notify", "serve"],
        );
        let (mut adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let worker = reports.next();
        watch.wait_main_pid("worker", worker.pid);
        reexecute(&bus.address, None);
        wait_restored(&mut adoptd);
        assert_eq!(watch.read("worker").main_pid, worker.pid, "{tracker}");
        signal(worker.pid, libc::SIGKILL);
        let failed = watch.wait_ended("worker", State::Failed);
        assert_eq!(failed.exit_signal, libc::SIGKILL, "{tracker}: {failed:?}");
        assert_ends(worker.last_parent, "the launcher, cleaned up");
        let (status, _) = adoptd.stop();
        assert!(status.success(), "{tracker}: {status:?}");
    }
}

#[test]
fn reexecute_needs_the_right_to_manage() {
    let scratch = Scratch::new("reexec-denied");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    if !is_root() {
        eprintln!("skipped: needs root to call as another user");
        return;
    }
    let (adoptd, _watch) = supervise(&scratch, &bus, "procfs");
    let output = bus.busctl_output(
        &[
            "call",
            BUS_NAME,
            MANAGER_PATH,
            "org.adoptd1.Manager",
            "Reexecute",
        ],
        Some("nobody"),
    );
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Only root"), "{stderr}");
    assert!(is_alive(adoptd.pid()));
    let (status, log) = adoptd.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        !log.iter().any(|l| l.message.starts_with("re-executing")),
        "re-executed for nobody"
    );
}

#[test]
fn as_pid_1_of_a_pid_namespace_a_reexec_keeps_its_services() {
    if !is_root() || installed("unshare").is_none() {
        eprintln!("skipped: needs root and unshare");
        return;
    }
    let scratch = Scratch::new("reexec-pid1");
    let reports = Reports::bind(&scratch);
    dance_service(
        &scratch,
        &reports,
        "dancer",
        "",
        &["fork", "setsid", "fork", "serve"],
    );
    scratch.service(
        "sleeper",
        "exec = [\"/bin/sleep\", \"86400\"]\nrestart-delay = \"0\"\n",
    );
    let mut command = std::process::Command::new("unshare");
    command
        // Never the real adoptd's records of its runs (/run/adoptd).
        .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, scratch.runtime_dir())
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .arg(adoptd_binary())
        .arg("--config-dir")
        .arg(scratch.services());
    // Read in the log: a client outside the namespace cannot reach a bus
    // inside it.
    let mut adoptd = Adoptd::spawn(command);
    let settled = reports.next();
    let before = adoptd.wait_main_pid("dancer", settled.pid);
    let init = children_of(adoptd.pid())
        .first()
        .expect("adoptd under unshare")
        .0;
    // Found by its pid inside the namespace, which the log gives: its
    // command line is adoptd's until its exec, which nobody waits for.
    let inner = adoptd
        .wait_status("sleeper", "running", |l| l.get("state") == Some("running"))
        .pid("main_pid");
    let sleeper = children_of(init)
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|&pid| innermost_pid(pid) == Some(inner))
        .expect("the sleeper under adoptd");
    let processes = tree_of(init);

    signal(init, libc::SIGUSR2);
    let start = adoptd.wait_next("the new image", |l| l.message == "adoptd starting");
    assert_eq!(start.get("role"), Some("init"));
    wait_restored(&mut adoptd);
    assert_eq!(tree_of(init), processes, "processes after the re-exec");

    signal(sleeper, libc::SIGKILL);
    let restarted = adoptd.wait_next("the sleeper's restart", |l| {
        l.is("status", "sleeper")
            && l.get("restarts") == Some("1")
            && l.get("state") == Some("running")
    });
    assert!(restarted.pid("main_pid") > 0);
    let (exit, log) = adoptd.stop_through(init);
    assert!(exit.success(), "{exit:?}");
    let dancer_ended = log
        .iter()
        .find(|l| l.is("main process exited", "dancer"))
        .expect("the dancer's end");
    assert_eq!(dancer_ended.pid("pid"), before.pid("main_pid"));
}

/// nginx (a master and two workers) and memcached, daemonized: a re-exec
/// changes nothing, then nginx's binary upgrade (a hand-off) and a SIGKILL
/// of memcached are followed as before.
#[test]
fn real_daemons_are_kept_across_a_reexec_and_followed_after_it() {
    let (Some(nginx), Some(memcached)) = (installed("nginx"), installed("memcached")) else {
        eprintln!("skipped: nginx or memcached is not installed");
        return;
    };
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    for tracker in trackers() {
        let scratch = Scratch::new("reexec-daemons");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let nginx_pid_file = nginx_service(&scratch, &nginx);
        let memcached_pid_file = memcached_service(&scratch, &memcached, "restart-delay = \"0\"\n");
        let (mut adoptd, mut watch) = supervise(&scratch, &bus, &tracker);
        let master = wait_for_pid_file(&nginx_pid_file);
        watch.wait_main_pid("nginx", master);
        let error_log = scratch.file("error.log");
        wait_for_file(&error_log, |text| {
            (text.matches("start worker process ").count() >= 2).then_some(())
        });
        let memcached_main = wait_for_pid_file(&memcached_pid_file);
        watch.wait_main_pid("memcached", memcached_main);
        let names = ["nginx", "memcached"];
        let before = statuses(&watch, &names);
        let processes = processes_under(&adoptd);
        // Every start is in the log read so far.
        adoptd.wait_main_pid("nginx", master);
        adoptd.wait_main_pid("memcached", memcached_main);
        let started = started_lines(&adoptd);

        let reexec = reexecute(&bus.address, None);
        wait_restored(&mut adoptd);
        assert_eq!(reexec.properties_changed, [] as [String; 0], "{tracker}");
        assert_eq!(statuses(&watch, &names), before, "{tracker}");
        assert_eq!(processes_under(&adoptd), processes, "{tracker}");
        assert_eq!(started_lines(&adoptd), started, "{tracker}");

        // nginx's binary upgrade: the new master is the old one's heir.
        signal(master, libc::SIGUSR2);
        wait_for_pid_file(&scratch.file("nginx.pid.oldbin"));
        let new_master = wait_for_file(&nginx_pid_file, |text| {
            text.trim().parse::<u32>().ok().filter(|&pid| pid != master)
        });
        signal(master, libc::SIGQUIT);
        let status = watch.wait_main_pid("nginx", new_master);
        assert_eq!(status.previous_pid, master, "{tracker}: {status:?}");
        assert_eq!(status.handoffs, before["nginx"].handoffs + 1, "{tracker}");

        std::fs::remove_file(&memcached_pid_file).ok();
        signal(memcached_main, libc::SIGKILL);
        let restarted = wait_for_pid_file(&memcached_pid_file);
        let status = watch.wait_main_pid("memcached", restarted);
        assert_eq!(status.restarts, 1, "{tracker}: {status:?}");
        let (exit, _) = adoptd.stop();
        assert!(exit.success(), "{tracker}: {exit:?}");
        assert_ends(new_master, "nginx after adoptd stopped");
        assert_ends(restarted, "memcached after adoptd stopped");
    }
}

/// A new binary that cannot read the state (here: one that finds format
/// 99, as a later version might write) starts no second copy of a service
/// whose process still runs, and lets it start once that process is gone.
#[test]
fn an_unreadable_state_never_starts_a_second_copy() {
    let scratch = Scratch::new("reexec-unreadable");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    scratch.service(
        "sleeper",
        "exec = [\"/bin/sleep\", \"86400\"]\nrestart = \"no\"\n",
    );
    // adoptd re-executes the path it was started from: it starts from a
    // link of its binary, replaced before the re-exec (as an upgrade
    // would) by a script that rewrites the state's format and runs adoptd.
    let program = scratch.file("adoptd");
    if std::fs::hard_link(adoptd_binary(), &program).is_err() {
        std::fs::copy(adoptd_binary(), &program).expect("copy adoptd");
    }
    let state = scratch.file("state-99.json");
    let upgrade = scratch.file("adoptd.new");
    std::fs::write(
        &upgrade,
        format!(
            "#!/bin/sh
sed 's/\"format\":1,/\"format\":99,/' < /proc/self/fd/$ADOPTD_STATE_FD > {state}\n\
             exec 9< {state}\nADOPTD_STATE_FD=9 exec {adoptd} \"$@\"\n",
            state = state.display(),
            adoptd = adoptd_binary().display(),
        ),
    )
    .expect("write the new program");
    std::fs::set_permissions(
        &upgrade,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the new program");
    let mut command = std::process::Command::new(&program);
    command
        .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, scratch.runtime_dir())
        .args(["--config-dir"])
        .arg(scratch.services())
        .args(["--address", &bus.address, "--tracker", "procfs"]);
    let mut adoptd = Adoptd::spawn(command);
    let mut watch = adoptd.watch(&bus.address);
    let sleeper = watch.wait_state("sleeper", State::Running).main_pid;
    let processes = descendants(adoptd.pid());

    std::fs::rename(&upgrade, &program).expect("install the new program");
    reexecute(&bus.address, None);
    let refusal = adoptd.wait_next("the refusal of the state", |l| {
        l.message
            .starts_with("cannot restore the state the previous image left")
    });
    assert!(refusal.text.contains("format 99"), "{}", refusal.text);
    adoptd.wait_for("the hold-back", |l| l.message.contains("is not started"));
    assert!(is_alive(sleeper), "the sleeper was stopped");
    let started: Vec<_> = adoptd
        .log
        .iter()
        .filter(|l| l.message.starts_with("started "))
        .collect();
    assert_eq!(
        started.len(),
        1,
        "a second sleeper was started: {started:?}"
    );
    let refused = bus.busctl_output(
        &[
            "call",
            BUS_NAME,
            MANAGER_PATH,
            "org.adoptd1.Manager",
            "StartService",
            "s",
            "sleeper",
        ],
        None,
    );
    assert!(!refused.status.success(), "{refused:?}");

    // Once its process is gone, it may start again.
    signal(sleeper, libc::SIGKILL);
    adoptd.wait_next("the release", |l| {
        l.message
            .starts_with("no process from before the re-exec is left")
    });
    watch.start(&["sleeper"]);
    let again = watch.wait_status("sleeper", "started again", |s| {
        s.state == State::Running && s.main_pid != sleeper
    });
    assert!(is_alive(again.main_pid), "{again:?}");
    let (status, _) = adoptd.stop();
    assert!(status.success(), "{status:?}");
    for process in processes {
        process.kill();
    }
}
