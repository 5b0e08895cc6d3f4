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

/// A small deterministic random source, so a failing seed can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A random dance of 1 to 4 hops, each parent first or child first, some
/// failing, with zombie helpers and a setsid here and there; the daemon
/// serves or exits. Returns the steps and the codes the run may fail
/// with, in the order of the main line (none: it must run).
fn random_dance(random: &mut Lcg) -> (Vec<String>, Vec<u8>) {
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..1 + random.below(4) {
        if random.below(4) == 0 {
            steps.push("zombie".to_owned());
        }
        let late = random.below(2) == 0;
        let code = if random.below(6) == 0 {
            10 + random.below(100) as u8
        } else {
            0
        };
        let step = match (late, code) {
            (false, 0) => "fork".to_owned(),
            (true, 0) => "fork-late".to_owned(),
            (false, code) => format!("fork-exit:{code}"),
            (true, code) => format!("fork-late-exit:{code}"),
        };
        if code != 0 {
            failures.push(code);
        }
        steps.push(step);
        if random.below(3) == 0 {
            steps.push("setsid".to_owned());
        }
    }
    if random.below(6) == 0 {
        let code = 10 + random.below(100) as u8;
        failures.push(code);
        steps.push(format!("exit:{code}"));
    } else {
        steps.push("serve".to_owned());
    }
    (steps, failures)
}

#[test]
fn random_dances_in_any_order_get_the_verdict_of_their_choreography() {
    // Seeds 1 to 4 unless ADOPTD_TEST_SEED names one to replay.
    let seeds: Vec<u64> = match std::env::var("ADOPTD_TEST_SEED") {
        Ok(seed) => vec![seed.parse().expect("ADOPTD_TEST_SEED is a number")],
        Err(_) => (1..=4).collect(),
    };
    for tracker in trackers() {
        for &seed in &seeds {
            let mut random = Lcg(seed);
            let scratch = Scratch::new("random-order");
            let reports = Reports::bind(&scratch);
            // A failing dance's daemon may still report before it is
            // stopped: its reports go elsewhere.
            let unread = Reports::bind_at(&scratch.file("failing.sock"));
            let mut dances = Vec::new();
            for i in 0..6 {
                let (steps, failures) = random_dance(&mut random);
                let name = format!("r{i}");
                let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
                let to = if failures.is_empty() {
                    &reports
                } else {
                    &unread
                };
                dance_service(&scratch, to, &name, "", &steps);
                dances.push((name, steps.join(" "), failures));
            }
            let mut adoptd = Adoptd::start_tracker(&scratch, &tracker, &[]);
            for (name, steps, failures) in &dances {
                let context = format!("{tracker}, seed {seed}, {name} = {steps}");
                let Some(&first) = failures.first() else {
                    continue;
                };
                let exited = wait_failed(&mut adoptd, name);
                let code: u8 = exited
                    .get("code")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or_else(|| panic!("{context}: {}", exited.text));
                if tracker == "procfs" {
                    // Exact where /proc can tell; a failure of the line
                    // in any case, never a clean end.
                    assert!(failures.contains(&code), "{context}: {}", exited.text);
                } else {
                    assert_eq!(code, first, "{context}: {}", exited.text);
                }
            }
            let running = dances.iter().filter(|(_, _, f)| f.is_empty()).count();
            let truth = reports.collect(running);
            for (name, steps, failures) in &dances {
                if !failures.is_empty() {
                    continue;
                }
                let context = format!("{tracker}, seed {seed}, {name} = {steps}");
                let settled = &truth[name];
                if let Some(status) = adoptd.wait_settled(name, settled, &tracker, &context)
                    && status.get("source") != Some("guess")
                {
                    assert_eq!(status.pid("previous_pid"), settled.last_parent, "{context}");
                    assert_eq!(
                        status.get("handoffs"),
                        Some(settled.hops.to_string().as_str()),
                        "{context}"
                    );
                }
            }
            let (exit, _) = adoptd.stop();
            assert!(exit.success());
        }
    }
}
