//! sd_notify's `MAINPID=` naming a process that is not adoptd's child: a
//! worker that the service's launcher forked and waits for. adoptd follows
//! it by pidfd, under every source this machine supports, to its end; read
//! on a real dbus-daemon with the project's policy.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use adoptd_dbus::{MainPidSource, ServiceResult, State};
use adoptd_test_support::{bus::TestBus, *};

/// A launcher that forks the worker and waits for it; the worker says
/// `READY=1` and `MAINPID=` its own pid, then serves.
const LAUNCHED_WORKER: &[&str] = &["launch", "notify", "serve"];

/// adoptd with `tracker` on `bus`, the launched worker service, and the
/// worker's report once it serves and adoptd has made it the main process.
fn worker_running(scratch: &Scratch, bus: &TestBus, tracker: &str) -> (Adoptd, Watch, Report) {
    let reports = Reports::bind(scratch);
    dance_service(
        scratch,
        &reports,
        "worker",
        "expect = \"notify\"\nautostart = false",
        LAUNCHED_WORKER,
    );
    let adoptd = Adoptd::start(scratch, &["--address", &bus.address, "--tracker", tracker]);
    let mut watch = adoptd.watch(&bus.address);
    watch.start(&["worker"]);
    let worker = reports.next();
    let running = watch.wait_status("worker", "running on its worker", |status| {
        status.state == State::Running && status.main_pid == worker.pid
    });
    assert_eq!(running.main_pid_source, MainPidSource::Notify, "{tracker}");
    assert_eq!(running.previous_pid, worker.last_parent, "{tracker}");
    (adoptd, watch, worker)
}

#[test]
fn mainpid_naming_a_worker_makes_it_the_main_process_and_its_death_fails_the_service() {
    for tracker in trackers() {
        let scratch = Scratch::new("notify-worker-killed");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let (adoptd, mut watch, worker) = worker_running(&scratch, &bus, &tracker);
        // Its parent, the launcher, reaps it: adoptd learns the end from
        // the worker's pidfd, with its status.
        signal(worker.pid, libc::SIGKILL);
        let failed = watch.wait_ended("worker", State::Failed);
        assert_eq!(
            failed.result,
            ServiceResult::Signal,
            "{tracker}: {failed:?}"
        );
        assert_eq!(failed.exit_signal, libc::SIGKILL, "{tracker}: {failed:?}");
        assert_eq!(failed.main_pid, 0, "{tracker}: {failed:?}");
        let exits: Vec<u32> = watch
            .seen
            .iter()
            .filter_map(|signal| match signal {
                Signal::Exited { service, pid, .. } if service == "worker" => Some(*pid),
                _ => None,
            })
            .collect();
        assert_eq!(exits, vec![worker.pid], "{tracker}");
        assert_ends(worker.last_parent, "the launcher, cleaned up");
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
    }
}

#[test]
fn a_stop_reaches_a_worker_named_by_mainpid_and_ends_cleanly() {
    for tracker in trackers() {
        let scratch = Scratch::new("notify-worker-stopped");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let (adoptd, mut watch, worker) = worker_running(&scratch, &bus, &tracker);
        watch.stop(&["worker"]);
        let stopped = watch.wait_ended("worker", State::Stopped);
        assert_eq!(
            stopped.result,
            ServiceResult::Success,
            "{tracker}: {stopped:?}"
        );
        assert_eq!(stopped.exit_code, 0, "{tracker}: {stopped:?}");
        assert_ends(worker.pid, "the worker, stopped");
        assert_ends(worker.last_parent, "the launcher, after its worker");
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
    }
}
