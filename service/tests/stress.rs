//! adoptd under a storm: one service creates 20,000 short-lived processes,
//! half of them orphans that adoptd must adopt and reap, while other
//! services daemonize hop after hop next to it. Run against every adoption
//! source this machine supports (see `adoptd_test_support::trackers`).
//!
//! What must hold: every dancing service ends at its settled process (or,
//! under `procfs`, says `source=guess` where it could not know); the storm
//! service never loses its main process; no zombie stays under adoptd; and
//! adoptd's memory comes back to what it was before the storm.
//!
//! These tests read adoptd's log, not a bus: a private bus would run its
//! broker inside adoptd and count in the memory measured, and the barrier
//! (see [`barrier`]) is the reaping that SIGHUP triggers, which no bus
//! message marks.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use adoptd_test_support::*;

/// Children the storm forks; each leaves one orphan, so the storm creates
/// twice as many processes, and adoptd reaps this many orphans.
/// `ADOPTD_TEST_STORM` sets another number.
const STORM: u32 = 10_000;

/// How many services daemonize during the storm.
const DANCERS: usize = 4;

/// Hops of each dancer after its double fork, spread over the storm.
const LATE_HOPS: usize = 8;

/// How much more resident memory adoptd may hold after the storm than
/// before it. The storm passes through adoptd as 10,000 adoptions and
/// exits, yet nothing of it should stay: per-process state is dropped at
/// reaping, sparse tables are shrunk and the allocator is asked to return
/// its free pages. What may stay is fragmentation: pages that still hold a
/// few live chunks. The baseline is taken after a first storm of the same
/// size (the warm-up), so the second storm finds the room the first one
/// left and only a leak, which grows with every storm, shows. 1 MiB
/// catches a leak of 100 bytes per orphan (10,000 orphans = 1 MB).
const MEMORY_MARGIN_KB: u64 = 1024;

/// How many more storms may come, each growing adoptd's memory by more
/// than the margin, before that growth is called a leak.
const MORE_STORMS: usize = 3;

/// One storm at a time: two at once only slow each other past their
/// timeouts on a two-core machine, and blur the memory figures.
static ONE_STORM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_storm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A storm test that failed poisons the lock; the next may still run.
    ONE_STORM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_storm_of_orphans_next_to_dancing_services_loses_no_main_pid_no_zombie_and_no_memory() {
    let _storm = one_storm_at_a_time();
    let storm_size: u32 = std::env::var("ADOPTD_TEST_STORM")
        .map(|n| n.parse().expect("ADOPTD_TEST_STORM is a number"))
        .unwrap_or(STORM);
    for tracker in trackers() {
        let started = std::time::Instant::now();
        let scratch = Scratch::new("stress");
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "warm-up",
            "",
            &[&format!("storm:{storm_size}"), "serve"],
        );
        // The storm reports once its last orphan ended: that is work for
        // the machine (about 1 s per 1,000 under the process connector with
        // both cores busy, more than 5 s per 1,000 seen with them three
        // times over-subscribed), not a wait for an event.
        let storm_time = TIMEOUT + Duration::from_millis(10 * u64::from(storm_size));
        let mut adoptd = Adoptd::start_tracker(&scratch, &tracker, &[]);
        let warm_up = reports
            .collect_within(1, storm_time)
            .remove("warm-up")
            .expect("the warm-up's report");
        barrier_within(&mut adoptd, storm_time);
        let baseline = Memory::of(adoptd.pid());

        // The storm and the dancers come in with one reload, so they start
        // together.
        let storm_step = format!("storm:{storm_size}");
        dance_service(&scratch, &reports, "storm", "", &[&storm_step, "serve"]);
        let dancers: Vec<(String, Vec<String>)> = (0..DANCERS)
            .map(|i| (format!("dancer{i}"), dancer_steps(i)))
            .collect();
        for (name, steps) in &dancers {
            let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
            dance_service(&scratch, &reports, name, "", &steps);
        }
        signal(adoptd.pid(), libc::SIGHUP);
        let truth = reports.collect_within(1 + DANCERS, storm_time);

        for (name, steps) in &dancers {
            let settled = &truth[name];
            let context = format!("{tracker}, {name} = {}", steps.join(" "));
            assert_eq!(settled.hops as usize, 2 + LATE_HOPS, "{context}");
            adoptd.wait_settled(name, settled, &tracker, &context);
        }

        // The storm is over (it reports after its last orphan ended) and
        // every exit of it has been reaped by the time the barrier passes.
        let storm = &truth["storm"];
        barrier_within(&mut adoptd, storm_time);
        let storm_status = adoptd.wait_main_pid("storm", storm.pid);
        assert_eq!(storm_status.get("handoffs"), Some("0"), "{tracker}");
        for line in adoptd.seen("status", "storm") {
            if line.get("state") == Some("starting") {
                continue;
            }
            assert_eq!(line.pid("main_pid"), storm.pid, "{tracker}: {}", line.text);
        }
        assert!(
            adoptd.seen("hand-off", "storm").is_empty()
                && adoptd.seen("main process exited", "storm").is_empty(),
            "{tracker}: the storm service lost its main process"
        );

        assert_no_zombie_stays(&mut adoptd, &tracker);
        let mut expected: BTreeSet<u32> = truth.values().map(|r| r.pid).collect();
        expected.insert(warm_up.pid);
        let children: BTreeSet<u32> = children_of(adoptd.pid())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(
            children, expected,
            "{tracker}: adoptd's children are the main processes and nothing else"
        );

        let mut after = Memory::of(adoptd.pid());
        eprintln!(
            "{tracker}: {storm_size} storm children and orphans in {:.1} s; adoptd before: {baseline}; after: {after}",
            started.elapsed().as_secs_f64()
        );
        if after.rss_kb > baseline.rss_kb + MEMORY_MARGIN_KB {
            // On a loaded machine a storm comes in bigger moments, and the
            // allocator keeps room up to a new high-water mark, which a
            // storm with a bigger moment may raise again: a leak grows
            // with every storm, that room stops growing. So more storms
            // come, until one does not grow it.
            let mut history = vec![baseline.to_string(), after.to_string()];
            let mut grew_each_time = true;
            for storm in 0..MORE_STORMS {
                let before = after;
                let name = format!("again{storm}");
                dance_service(&scratch, &reports, &name, "", &[&storm_step, "serve"]);
                signal(adoptd.pid(), libc::SIGHUP);
                reports.collect_within(1, storm_time);
                barrier_within(&mut adoptd, storm_time);
                after = Memory::of(adoptd.pid());
                eprintln!("{tracker}: after another storm: {after}");
                history.push(after.to_string());
                if after.rss_kb <= before.rss_kb + MEMORY_MARGIN_KB {
                    grew_each_time = false;
                    break;
                }
            }
            assert!(
                !grew_each_time,
                "{tracker}: adoptd's memory grows with each storm: {}",
                history.join(", then ")
            );
        }

        let (exit, _) = adoptd.stop();
        assert!(exit.success(), "{tracker}: adoptd ended {exit:?}");
    }
}

/// A double fork as daemon(3) does, then more hops, a little apart, so that
/// some of them land in the middle of the storm.
fn dancer_steps(i: usize) -> Vec<String> {
    let mut steps: Vec<String> = ["fork", "setsid", "fork"].map(String::from).into();
    for _ in 0..LATE_HOPS {
        steps.push(format!("sleep:{}", 40 + 13 * i));
        steps.push("fork".to_owned());
    }
    steps.push("serve".to_owned());
    steps
}

/// Returns once adoptd has reaped every process that had ended when it was
/// called: SIGHUP wakes the supervisor, which reaps a whole batch (every
/// zombie there is) before it acts on the signal and reloads. Waits for
/// the end of the reload, so that service files written afterwards are
/// read by the next reload only.
fn barrier(adoptd: &mut Adoptd) {
    barrier_within(adoptd, TIMEOUT);
}

/// The barrier after a storm: adoptd answers the SIGHUP once it has
/// decided the storm's moments, thousands of reaps that are work for a
/// loaded machine, not a wait (`within`, as the storm's own allowance).
fn barrier_within(adoptd: &mut Adoptd, within: Duration) {
    signal(adoptd.pid(), libc::SIGHUP);
    // The reload's own lines: the start-up's "loaded" may still be unread.
    adoptd.wait_next_within("the reload after SIGHUP", within, |l| {
        l.message.starts_with("reloading ")
    });
    adoptd.wait_next("the end of the reload after SIGHUP", |l| {
        l.message.starts_with("loaded ")
    });
}

/// No child of adoptd stays a zombie. One that has just ended may be a
/// zombie for an instant; it must be gone after the next batch.
fn assert_no_zombie_stays(adoptd: &mut Adoptd, tracker: &str) {
    let zombies: Vec<u32> = children_of(adoptd.pid())
        .into_iter()
        .filter(|&(_, zombie)| zombie)
        .map(|(pid, _)| pid)
        .collect();
    if zombies.is_empty() {
        return;
    }
    barrier(adoptd);
    let children: Vec<(u32, bool)> = children_of(adoptd.pid());
    let stayed: Vec<u32> = zombies
        .into_iter()
        .filter(|pid| children.iter().any(|(child, _)| child == pid))
        .collect();
    assert!(
        stayed.is_empty(),
        "{tracker}: zombies stayed under adoptd: {stayed:?}"
    );
}

/// A process's memory, from `/proc/PID/smaps_rollup`, in kB.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss_kb: u64,
    anonymous_kb: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .expect("read smaps_rollup");
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in smaps_rollup:\n{text}"))
        };
        Memory {
            rss_kb: field("Rss"),
            anonymous_kb: field("Anonymous"),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Rss {} kB, Anonymous {} kB",
            self.rss_kb, self.anonymous_kb
        )
    }
}

#[test]
fn a_frozen_adoptd_rebuilds_after_a_storm_and_stops_no_healthy_daemon() {
    // adoptd is stopped (SIGSTOP) while a storm runs and services dance:
    // the kernel drops what adoptd cannot read, pids are handed out again
    // meanwhile. Once it runs again it must rebuild what it knows without
    // declaring a healthy service ended or killing its daemon.
    let _storm = one_storm_at_a_time();
    for tracker in trackers() {
        let scratch = Scratch::new("frozen");
        let reports = Reports::bind(&scratch);
        dance_service(&scratch, &reports, "storm", "", &["storm:10000", "serve"]);
        let dancers: Vec<String> = (0..6).map(|i| format!("frozen{i}")).collect();
        for (i, name) in dancers.iter().enumerate() {
            let pause = format!("sleep:{}", 300 + 150 * i);
            dance_service(
                &scratch,
                &reports,
                name,
                "",
                &[
                    "fork", "setsid", "fork", &pause, "fork", &pause, "fork", "serve",
                ],
            );
        }
        let mut adoptd = Adoptd::start_tracker(&scratch, &tracker, &[]);
        adoptd.wait_for("the storm's first adoption", |l| {
            l.message == "adopted" && l.get("dead") == Some("true")
        });
        signal(adoptd.pid(), libc::SIGSTOP);
        std::thread::sleep(std::time::Duration::from_secs(3));
        signal(adoptd.pid(), libc::SIGCONT);
        // As above: the storm's 10,000 forks are work, not a wait.
        let storm_time = TIMEOUT + Duration::from_secs(100);
        let truth = reports.collect_within(1 + dancers.len(), storm_time);
        for name in &dancers {
            let context = format!("{tracker}, {name} after the freeze");
            adoptd.wait_settled(name, &truth[name], &tracker, &context);
        }
        barrier_within(&mut adoptd, storm_time);
        for name in &dancers {
            assert!(
                adoptd.seen("main process exited", name).is_empty(),
                "{tracker}: {name} was declared ended"
            );
            assert!(
                is_alive(truth[name].pid),
                "{tracker}: {name}'s daemon was stopped"
            );
        }
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
    }
}
