//! adoptd against real processes that really fork and daemonize.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

mod common;

use common::*;

/// A dance service file: `steps` performed by the dance helper.
fn dance_service(scratch: &Scratch, reports: &Reports, name: &str, extra: &str, steps: &[&str]) {
    scratch.service(
        name,
        &format!(
            "exec = {}\nrestart = \"no\"\n{extra}\n",
            dance_exec(reports, name, steps)
        ),
    );
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
    for &(n, expect) in cases {
        let scratch = Scratch::new("hops");
        let reports = Reports::bind(&scratch);
        let name = format!("hops{n}-{expect}");
        dance_service(
            &scratch,
            &reports,
            &name,
            &format!("expect = \"{expect}\""),
            &hops(n),
        );
        let mut adoptd = Adoptd::start(&scratch, &[]);
        let settled = reports.next();
        assert_eq!(settled.hops as usize, n);
        let status = adoptd.wait_main_pid(&name, settled.pid);
        assert_eq!(
            status.pid("previous_pid"),
            settled.last_parent,
            "{name}: {}",
            status.text
        );
        assert_eq!(
            status.get("handoffs"),
            Some(n.to_string().as_str()),
            "{name}"
        );
        let (exit, log) = adoptd.stop();
        assert!(exit.success());
        assert!(
            log.iter()
                .any(|l| l.is("main process exited", &name) && l.pid("pid") == settled.pid)
        );
        assert_ends(settled.pid, "the daemon after adoptd stopped");
    }
}

#[test]
fn a_main_process_that_fails_after_forking_is_a_failure_and_its_child_is_stopped() {
    for (step, field, value) in [
        ("fork-exit:3", "code", "3"),
        ("fork-kill:SEGV", "signal", "11"),
    ] {
        let scratch = Scratch::new("fail");
        let reports = Reports::bind(&scratch);
        dance_service(&scratch, &reports, "failing", "", &[step, "serve"]);
        let mut adoptd = Adoptd::start(&scratch, &[]);
        // The child may be stopped before it can report: learn it from the log.
        let child = adoptd.wait_for("the adoption of the child", |l| {
            l.message == "adopted" && l.get("dead") == Some("false")
        });
        let exited = adoptd.wait_for("the failing exit", |l| {
            l.is("main process exited", "failing")
        });
        assert_eq!(exited.get(field), Some(value), "{}", exited.text);
        adoptd.wait_status("failing", "failed", |l| l.get("state") == Some("failed"));
        assert_ends(child.pid("pid"), "the child of the failed main process");
        assert!(
            adoptd.seen("hand-off", "failing").is_empty(),
            "a failure is not a hand-off"
        );
    }
}

#[test]
fn workers_and_orphaned_grandchildren_do_not_take_the_main_pid() {
    let scratch = Scratch::new("workers");
    let reports = Reports::bind(&scratch);
    dance_service(
        &scratch,
        &reports,
        "web",
        "",
        &["fork", "setsid", "workers:3", "orphan", "zombie", "serve"],
    );
    let mut adoptd = Adoptd::start(&scratch, &[]);
    let settled = reports.next();
    adoptd.wait_main_pid("web", settled.pid);
    let (_, log) = adoptd.stop();
    let handoffs: Vec<_> = log.iter().filter(|l| l.is("hand-off", "web")).collect();
    assert_eq!(handoffs.len(), 1, "only the daemonizing fork: {handoffs:?}");
    let exited = log
        .iter()
        .find(|l| l.is("main process exited", "web"))
        .expect("the main process exited at stop");
    assert_eq!(exited.pid("pid"), settled.pid);
}

#[test]
fn a_launcher_hands_off_to_the_daemon_it_waited_for() {
    // As `apache2ctl start`: the launcher waits while its child forks the
    // daemon and exits; then the launcher exits 0.
    let scratch = Scratch::new("launch");
    let reports = Reports::bind(&scratch);
    dance_service(
        &scratch,
        &reports,
        "apache",
        "",
        &["launch", "fork", "setsid", "serve"],
    );
    let mut adoptd = Adoptd::start(&scratch, &[]);
    let started = adoptd.wait_for("the spawn", |l| {
        l.message.starts_with("started") && l.get("service") == Some("apache")
    });
    let launcher = started.pid("pid");
    let settled = reports.next();
    let status = adoptd.wait_main_pid("apache", settled.pid);
    assert_eq!(status.pid("previous_pid"), launcher);
}

#[test]
fn a_killed_daemon_is_restarted_and_no_worker_of_it_is_left() {
    let scratch = Scratch::new("restart");
    let reports = Reports::bind(&scratch);
    scratch.service(
        "web",
        &format!(
            "exec = {}\nrestart-delay = \"0\"\n",
            dance_exec(&reports, "web", &["fork", "setsid", "workers:3", "serve"])
        ),
    );
    let mut adoptd = Adoptd::start(&scratch, &[]);
    let first = reports.next();
    adoptd.wait_main_pid("web", first.pid);
    let workers: Vec<u32> = children_of(first.pid)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(workers.len(), 3, "three workers");
    signal(first.pid, libc::SIGKILL);
    let second = reports.next();
    assert_ne!(second.pid, first.pid);
    let status = adoptd.wait_main_pid("web", second.pid);
    assert_eq!(status.get("restarts"), Some("1"));
    for worker in workers {
        assert!(
            !is_alive(worker),
            "worker {worker} of the killed daemon survived the restart"
        );
    }
}

#[test]
fn no_zombie_stays_under_adoptd() {
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
    let mut adoptd = Adoptd::start(&scratch, &[]);
    let settled = reports.next();
    adoptd.wait_main_pid("z", settled.pid);
    let children = children_of(adoptd.pid());
    assert_eq!(
        children,
        vec![(settled.pid, false)],
        "only the daemon, alive"
    );
}
