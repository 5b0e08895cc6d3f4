//! The same dance gets the same verdict whichever process the kernel lets
//! finish first: real processes, with the order forced by the dance
//! helper (`fork-late` makes a hop's child end before its parent), run
//! against every adoption source this machine supports.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

mod common;

use common::*;

/// Waits until the service is failed; returns the "main process exited"
/// line that ended it.
fn wait_failed(adoptd: &mut Adoptd, service: &str) -> LogLine {
    adoptd.wait_status(service, "failed", |l| l.get("state") == Some("failed"));
    adoptd
        .seen("main process exited", service)
        .pop()
        .expect("a failed run says how its main process ended")
}

#[test]
fn a_clean_dance_finished_child_first_counts_every_hop() {
    for tracker in trackers() {
        let scratch = Scratch::new("child-first");
        let reports = Reports::bind(&scratch);
        let steps = [
            "fork-late",
            "setsid",
            "fork-late",
            "fork-late",
            "fork",
            "serve",
        ];
        dance_service(&scratch, &reports, "late", "", &steps);
        let mut adoptd = Adoptd::start_tracker(&scratch, &tracker, &[]);
        let settled = reports.next();
        assert_eq!(settled.hops, 4);
        let context = format!("{tracker}, child first");
        if let Some(status) = adoptd.wait_settled("late", &settled, &tracker, &context)
            && status.get("source") != Some("guess")
        {
            assert_eq!(status.pid("previous_pid"), settled.last_parent, "{context}");
            assert_eq!(status.get("handoffs"), Some("4"), "{context}");
        }
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
        assert_ends(settled.pid, "the daemon after adoptd stopped");
    }
}

#[test]
fn a_failed_intermediate_fails_the_run_whichever_ends_first() {
    for tracker in trackers() {
        for first in ["fork", "fork-late"] {
            let scratch = Scratch::new("failed-hop");
            let reports = Reports::bind(&scratch);
            let steps = [first, "fork-exit:71", "serve"];
            dance_service(&scratch, &reports, "hop", "", &steps);
            let mut adoptd = Adoptd::start_tracker(&scratch, &tracker, &[]);
            let context = format!("{tracker}, {first} fork-exit:71 serve");
            let exited = wait_failed(&mut adoptd, "hop");
            assert_eq!(exited.get("code"), Some("71"), "{context}: {}", exited.text);
            // The daemon may be stopped before it could report: no process
            // of the dance is left under adoptd.
            assert!(children_of(adoptd.pid()).is_empty(), "{context}");
            let last = adoptd.seen("status", "hop").pop().expect("a status line");
            assert_eq!(last.get("result"), Some("exit-code"), "{context}");
            let (exit, _) = adoptd.stop();
            assert!(exit.success());
        }
    }
}

#[test]
fn a_child_that_dies_before_its_parent_exits_cleanly_fails_the_run() {
    // memcached -d on a port in use: the parent exits 0 at once, the child
    // that would carry on cannot bind and exits 71.
    for tracker in trackers() {
        for first in ["fork", "fork-late"] {
            let scratch = Scratch::new("dead-child");
            let reports = Reports::bind(&scratch);
            dance_service(&scratch, &reports, "memcached", "", &[first, "exit:71"]);
            let mut adoptd = Adoptd::start_tracker(&scratch, &tracker, &[]);
            let context = format!("{tracker}, {first} exit:71");
            let exited = wait_failed(&mut adoptd, "memcached");
            assert_eq!(exited.get("code"), Some("71"), "{context}: {}", exited.text);
            let (exit, _) = adoptd.stop();
            assert!(exit.success());
        }
    }
}

#[test]
fn leftover_workers_that_obey_the_stop_signal_are_gone_at_once() {
    // The daemon dies; its workers obey SIGTERM: the service is failed as
    // soon as they are gone, long before its stop timeout of a minute.
    for tracker in trackers() {
        let scratch = Scratch::new("leftovers");
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "workers",
            "stop-timeout = \"60s\"",
            &["fork", "workers:3", "report", "sleep:200", "exit:3"],
        );
        let mut adoptd = Adoptd::start_tracker(&scratch, &tracker, &[]);
        let settled = reports.next();
        let exited = wait_failed(&mut adoptd, "workers");
        assert_eq!(exited.get("code"), Some("3"), "{tracker}: {}", exited.text);
        assert_ends(settled.pid, "the failed daemon");
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
    }
}
