//! adoptd against real processes that really fork and daemonize: the
//! shared suite, run against every adoption source this machine supports
//! (see `adoptd_test_support::trackers`). Every source must agree with the
//! truth the dance helper reports; where `procfs` cannot be exact it must
//! say so (`MainPIDSource` = `guess`), never be silently wrong.
//!
//! What adoptd knows is read where its clients read it: on its bus. Each
//! test runs adoptd on a private bus of its own (no dbus-daemon needed)
//! and watches its `PropertiesChanged`, `Adopted` and `Exited` signals.
//! The log is read only for what the bus does not carry, said where.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use adoptd_dbus::{MainPidSource, ServiceResult, State};
use adoptd_test_support::*;

/// The service-file line of a service that the test starts itself, once
/// its watch is on the bus, so that the watch sees every status and signal
/// of the service's life.
const STARTED_BY_THE_TEST: &str = "autostart = false";

/// adoptd with the adoption source `tracker` on a bus of its own, and a
/// watch on it that was there before `services` started.
fn supervise(scratch: &Scratch, tracker: &str, services: &[&str]) -> (Adoptd, Watch) {
    let (adoptd, watch) = Adoptd::start_watched(scratch, &["--tracker", tracker]);
    watch.start(services);
    (adoptd, watch)
}

/// The steps of an N-hop daemonization: fork N times, setsid after the
/// first hop as daemon(3) does, then serve.
fn hops(n: usize) -> Vec<&'static str> {
    let mut steps = Vec::new();
    for hop in 0..n {
        steps.push("fork");
        if hop == 0 {
            steps.push("setsid");
        }
    }
    steps.push("serve");
    steps
}

/// The first `Exited` signal of `service`, once it comes: the pid, exit
/// code and signal of the main process that ended.
fn main_process_exit(watch: &mut Watch, service: &str) -> (u32, i32, i32) {
    let exited = watch.wait_signal(
        &format!("{service}: Exited"),
        |signal| matches!(signal, Signal::Exited { service: s, .. } if s == service),
    );
    match exited {
        Signal::Exited {
            pid, code, signal, ..
        } => (pid, code, signal),
        _ => unreachable!("only Exited matches"),
    }
}

#[test]
fn forking_one_to_four_times_ends_at_the_settled_process_and_its_last_parent() {
    let cases: &[(usize, &str)] = &[
        (1, "auto"),
        (2, "auto"),
        (3, "auto"),
        (4, "auto"),
        (1, "fork"),
        (2, "daemon"),
    ];
    for tracker in trackers() {
        for &(n, expect) in cases {
            let scratch = Scratch::new("hops");
            let reports = Reports::bind(&scratch);
            let name = format!("hops{n}-{expect}");
            dance_service(
                &scratch,
                &reports,
                &name,
                &format!("expect = \"{expect}\"\n{STARTED_BY_THE_TEST}"),
                &hops(n),
            );
            let (adoptd, mut watch) = supervise(&scratch, &tracker, &[&name]);
            let settled = reports.next();
            assert_eq!(settled.hops as usize, n);
            let status = watch.wait_main_pid(&name, settled.pid);
            let context = format!("{tracker}, {name}: {status:?}");
            if !watch.guessed(&name) {
                assert_eq!(status.previous_pid, settled.last_parent, "{context}");
                assert_eq!(status.handoffs as usize, n, "{context}");
            }
            watch.stop(&[&name]);
            let (pid, _, _) = main_process_exit(&mut watch, &name);
            assert_eq!(pid, settled.pid, "{context}");
            assert_ends(settled.pid, "the daemon after its stop");
            let (exit, _) = adoptd.stop();
            assert!(exit.success());
        }
    }
}

#[test]
fn a_main_process_that_fails_after_forking_is_a_failure_and_its_child_is_stopped() {
    for tracker in trackers() {
        for (step, exit_code, exit_signal, result) in [
            ("fork-exit:3", 3, -1, ServiceResult::ExitCode),
            ("fork-kill:SEGV", -1, 11, ServiceResult::Signal),
        ] {
            let scratch = Scratch::new("fail");
            let reports = Reports::bind(&scratch);
            dance_service(
                &scratch,
                &reports,
                "failing",
                STARTED_BY_THE_TEST,
                &[step, "serve"],
            );
            let (mut adoptd, mut watch) = supervise(&scratch, &tracker, &["failing"]);
            // The child may be stopped before it can report, and an
            // adoption that is no hand-off is not on the bus: learn the
            // child from the log.
            let child = adoptd.wait_for("the adoption of the child", |l| {
                l.message == "adopted" && l.get("dead") == Some("false")
            });
            let (_, code, signal) = main_process_exit(&mut watch, "failing");
            let context = format!("{tracker}, {step}");
            if exit_code >= 0 {
                assert_eq!(code, exit_code, "{context}");
            } else {
                assert_eq!(signal, exit_signal, "{context}");
            }
            let failed = watch.wait_state("failing", State::Failed);
            assert_eq!(
                (failed.exit_code, failed.exit_signal, failed.result),
                (exit_code, exit_signal, result),
                "{context}"
            );
            assert_ends(child.pid("pid"), "the child of the failed main process");
            assert!(
                watch.adoptions("failing").is_empty(),
                "{context}: a failure is not a hand-off"
            );
            assert_eq!(failed.handoffs, 0, "{context}");
        }
    }
}

#[test]
fn workers_and_orphaned_grandchildren_do_not_take_the_main_pid() {
    for tracker in trackers() {
        let scratch = Scratch::new("workers");
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "web",
            STARTED_BY_THE_TEST,
            &["fork", "setsid", "workers:3", "orphan", "zombie", "serve"],
        );
        let (_adoptd, mut watch) = supervise(&scratch, &tracker, &["web"]);
        let settled = reports.next();
        watch.wait_main_pid("web", settled.pid);
        // Not at the stop either, when the daemon exits and its workers
        // are still there.
        watch.stop(&["web"]);
        let (pid, _, _) = main_process_exit(&mut watch, "web");
        assert_eq!(pid, settled.pid, "{tracker}");
        watch.wait_ended("web", State::Stopped);
        let adoptions = watch.adoptions("web");
        assert_eq!(
            adoptions.len(),
            1,
            "{tracker}: only the daemonizing fork: {adoptions:?}"
        );
    }
}

#[test]
fn a_launcher_hands_off_to_the_daemon_it_waited_for() {
    // As `apache2ctl start`: the launcher waits while its child forks the
    // daemon and exits; then the launcher exits 0.
    for tracker in trackers() {
        let scratch = Scratch::new("launch");
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "apache",
            STARTED_BY_THE_TEST,
            &["launch", "fork", "setsid", "serve"],
        );
        let (_adoptd, mut watch) = supervise(&scratch, &tracker, &["apache"]);
        let spawned = watch.wait_status("apache", "the spawn", |status| {
            status.main_pid != 0 && status.main_pid_source == MainPidSource::Spawn
        });
        let launcher = spawned.main_pid;
        let settled = reports.next();
        let status = watch.wait_main_pid("apache", settled.pid);
        assert_eq!(status.previous_pid, launcher, "{tracker}: {status:?}");
    }
}

#[test]
fn a_killed_daemon_is_restarted_and_no_worker_of_it_is_left() {
    for tracker in trackers() {
        let scratch = Scratch::new("restart");
        let reports = Reports::bind(&scratch);
        scratch.service(
            "web",
            &format!(
                "exec = {}\nrestart-delay = \"0\"\n",
                dance_exec(&reports, "web", &["fork", "setsid", "workers:3", "serve"])
            ),
        );
        let (_adoptd, mut watch) = Adoptd::start_watched(&scratch, &["--tracker", &tracker]);
        let first = reports.next();
        watch.wait_main_pid("web", first.pid);
        let workers: Vec<u32> = children_of(first.pid)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(workers.len(), 3, "three workers");
        signal(first.pid, libc::SIGKILL);
        let second = reports.next();
        assert_ne!(second.pid, first.pid);
        let status = watch.wait_main_pid("web", second.pid);
        assert_eq!(status.restarts, 1, "{tracker}");
        for worker in workers {
            assert!(
                !is_alive(worker),
                "{tracker}: worker {worker} of the killed daemon survived the restart"
            );
        }
    }
}

#[test]
fn no_zombie_stays_under_adoptd() {
    for tracker in trackers() {
        let scratch = Scratch::new("zombies");
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "z",
            "",
            &[
                "zombie", "zombie", "fork", "zombie", "setsid", "fork", "zombie", "serve",
            ],
        );
        let (adoptd, mut watch) = Adoptd::start_watched(&scratch, &["--tracker", &tracker]);
        let settled = reports.next();
        watch.wait_main_pid("z", settled.pid);
        let children = children_of(adoptd.pid());
        assert_eq!(
            children,
            vec![(settled.pid, false)],
            "{tracker}: only the daemon, alive"
        );
    }
}

/// A random daemonization: 1 to 4 hops, each maybe leaving zombies or
/// orphans behind, setsid somewhere, workers at the end.
fn random_dance(random: &mut Lcg) -> (Vec<String>, usize) {
    let hops = 1 + random.below(4) as usize;
    let mut steps = Vec::new();
    for _ in 0..hops {
        if random.below(3) == 0 {
            steps.push("zombie".to_owned());
        }
        if random.below(4) == 0 {
            steps.push("orphan".to_owned());
        }
        steps.push("fork".to_owned());
        if random.below(2) == 0 {
            steps.push("setsid".to_owned());
        }
    }
    if random.below(2) == 0 {
        steps.push(format!("workers:{}", 1 + random.below(3)));
    }
    steps.push("serve".to_owned());
    (steps, hops)
}

#[test]
fn random_dances_of_several_services_at_once_end_at_their_settled_processes() {
    // Seeds 1 to 6 unless ADOPTD_TEST_SEED names one to replay.
    let seeds: Vec<u64> = match std::env::var("ADOPTD_TEST_SEED") {
        Ok(seed) => vec![seed.parse().expect("ADOPTD_TEST_SEED is a number")],
        Err(_) => (1..=6).collect(),
    };
    for tracker in trackers() {
        // Eight services dance in the same instant: procfs tells their
        // heirs apart by the invocation id in their environment, and may
        // only guess (and say so) the hops that died unseen.
        let services = 8;
        for &seed in &seeds {
            let mut random = Lcg(seed);
            let scratch = Scratch::new("random");
            let reports = Reports::bind(&scratch);
            let mut dances = Vec::new();
            for i in 0..services {
                let (steps, hops) = random_dance(&mut random);
                let name = format!("d{i}");
                let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
                dance_service(&scratch, &reports, &name, STARTED_BY_THE_TEST, &steps);
                dances.push((name, steps.join(" "), hops));
            }
            let names: Vec<&str> = dances.iter().map(|(name, _, _)| name.as_str()).collect();
            let (adoptd, mut watch) = supervise(&scratch, &tracker, &names);
            let truth = reports.collect(services);
            for (name, steps, hops) in &dances {
                let settled = &truth[name];
                let context = format!("{tracker}, seed {seed}, {name} = {steps}");
                assert_eq!(settled.hops as usize, *hops, "{context}");
                let Some(status) = watch.wait_settled(name, settled, &tracker, &context) else {
                    continue;
                };
                if !watch.guessed(name) {
                    assert_eq!(
                        status.previous_pid, settled.last_parent,
                        "{context}: {status:?}"
                    );
                }
            }
            let (exit, _) = adoptd.stop();
            assert!(exit.success());
        }
    }
}

#[test]
fn a_notify_service_runs_once_its_settled_process_says_ready_and_not_before() {
    for tracker in trackers() {
        let scratch = Scratch::new("notify");
        let reports = Reports::bind(&scratch);
        let notify = format!("expect = \"notify\"\n{STARTED_BY_THE_TEST}");
        dance_service(
            &scratch,
            &reports,
            "ready",
            &notify,
            &["fork", "setsid", "fork", "sleep:100", "notify", "serve"],
        );
        dance_service(
            &scratch,
            &reports,
            "silent",
            &notify,
            &["fork", "setsid", "fork", "serve"],
        );
        let (adoptd, mut watch) = supervise(&scratch, &tracker, &["ready", "silent"]);
        let truth = reports.collect(2);

        let ready = &truth["ready"];
        let running = watch.wait_state("ready", State::Running);
        assert_eq!(running.main_pid, ready.pid, "{tracker}: {running:?}");
        for status in watch.statuses("ready") {
            if status.state == State::Running {
                assert_eq!(
                    status.main_pid, ready.pid,
                    "{tracker}: running before ready: {status:?}"
                );
            }
        }

        // Followed to its settled process all the same, but never running,
        // not even after a reload.
        let silent = &truth["silent"];
        watch.wait_status("silent", &tracker, |status| status.main_pid == silent.pid);
        watch.reload();
        let now = watch.read("silent");
        assert_eq!(now.state, State::Starting, "{tracker}: {now:?}");
        watch.catch_up();
        for status in watch.statuses("silent") {
            assert_ne!(status.state, State::Running, "{tracker}: {status:?}");
        }
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
    }
}

#[test]
fn a_program_that_cannot_start_restarting_without_delay_leaves_adoptd_responsive() {
    let scratch = Scratch::new("unstartable");
    scratch.service(
        "missing",
        "exec = [\"/nonexistent/program\"]\nrestart = \"always\"\nrestart-delay = \"0\"\n\
         start-limit = { burst = 1000000, interval = \"1s\" }\n",
    );
    let (adoptd, mut watch) = Adoptd::start_watched(&scratch, &[]);
    watch.wait_status("missing", "failed starts", |status| status.restarts >= 2);
    // The bus answers between two attempts.
    watch.read("missing");
    // SIGTERM is heard between two attempts too.
    let (exit, log) = adoptd.stop();
    assert!(exit.success());
    // Why a start failed (the program cannot be executed) is said in the
    // log only.
    assert!(log.iter().any(|l| l.message.starts_with("cannot start")));
}

#[test]
fn a_program_the_system_refuses_to_execute_fails_with_exit_code_127_and_says_why() {
    let scratch = Scratch::new("unexecutable");
    // It exists, so the checks before the child is made pass; without an
    // execute bit, execve itself refuses it (even for root) in the child.
    let program = scratch.file("plain-text");
    std::fs::write(&program, "not a program\n").expect("write the file");
    scratch.service(
        "text",
        &format!(
            "exec = [{:?}]\nrestart = \"no\"\n{STARTED_BY_THE_TEST}\n",
            program.display().to_string()
        ),
    );
    let (adoptd, mut watch) = Adoptd::start_watched(&scratch, &[]);
    watch.start(&["text"]);
    let status = watch.wait_ended("text", State::Failed);
    assert_eq!((status.exit_code, status.exit_signal), (127, -1));
    assert_eq!(status.result, ServiceResult::ExitCode);
    let (exit, log) = adoptd.stop();
    assert!(exit.success());
    let said = log
        .iter()
        .find(|l| l.message.starts_with("cannot start"))
        .expect("a line that says why the start failed");
    assert!(
        said.message.contains("cannot execute") && said.message.contains("Permission denied"),
        "{}",
        said.message
    );
}

#[test]
fn reload_adds_new_services_keeps_stopped_ones_stopped_and_removes_deleted_ones() {
    let scratch = Scratch::new("reload");
    scratch.service("done", "exec = [\"/bin/true\"]\nexpect = \"foreground\"\n");
    scratch.service("deleted", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let (adoptd, mut watch) = Adoptd::start_watched(&scratch, &[]);
    let done = watch.wait_status("done", "stopped after its run", |status| {
        status.state == State::Stopped && status.exit_code == 0
    });
    let deleted = watch.wait_state("deleted", State::Running);
    let deleted_pid = deleted.main_pid;

    std::fs::remove_file(scratch.services().join("deleted.toml")).expect("remove");
    scratch.service("added", "exec = [\"/bin/sleep\", \"1000\"]\n");
    signal(adoptd.pid(), libc::SIGHUP);
    // The reload starts the new service once it has noticed the deleted
    // file.
    watch.wait_state("added", State::Running);
    // A service whose file is gone is not restarted when it fails.
    signal(deleted_pid, libc::SIGKILL);
    watch.wait_signal(
        "the removal of deleted",
        |signal| matches!(signal, Signal::Removed { service } if service == "deleted"),
    );
    assert_eq!(
        watch.status("done"),
        Some(done),
        "a stopped service is not started again by a reload"
    );
    for status in watch.statuses("deleted") {
        assert_eq!(status.restarts, 0, "a deleted service is not restarted");
        assert!(
            status.state != State::Running || status.main_pid == deleted_pid,
            "a deleted service is not restarted: {status:?}"
        );
    }
    let (exit, _) = adoptd.stop();
    assert!(exit.success());
}
