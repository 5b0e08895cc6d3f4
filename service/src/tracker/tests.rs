//! The tracker's specification, as behaviours; no real processes.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const OK: ExitStatus = ExitStatus::Code(0);

/// A tracker with a clock that only moves when a test says so.
struct Harness {
    tracker: Tracker,
    now: Now,
}

impl Harness {
    fn new() -> Self {
        Harness {
            tracker: Tracker::new(),
            now: Now {
                monotonic: Duration::from_secs(1000),
                realtime_us: 1_700_000_000_000_000,
            },
        }
    }

    fn service(&mut self, policy: Policy) -> ServiceId {
        self.tracker.add_service(policy, self.now)
    }

    fn advance(&mut self, by: Duration) -> Outcome {
        self.now.monotonic += by;
        self.now.realtime_us += by.as_micros() as u64;
        self.tracker.tick(self.now)
    }

    /// Starts the service and reports its spawn as `pid`.
    fn start(&mut self, service: ServiceId, pid: Pid) -> Outcome {
        let out = self.command(service, Command::Start).unwrap();
        assert_eq!(out.actions, vec![Action::Spawn { service }]);
        // Pids stand in for start times: later pids started later.
        self.apply(&[Event::Spawned {
            service,
            pid,
            start_time: Some(u64::from(pid)),
        }])
    }

    fn command(&mut self, service: ServiceId, command: Command) -> Result<Outcome, CommandError> {
        self.tracker.command(self.now, service, command)
    }

    fn apply(&mut self, events: &[Event]) -> Outcome {
        self.tracker.apply(self.now, events)
    }

    fn status(&self, service: ServiceId) -> Status {
        self.tracker.status(service).unwrap()
    }

    /// A process of the service said `READY=1` (if `ready`) and `MAINPID=`.
    fn notify(&mut self, service: ServiceId, ready: bool, main_pid: Option<Pid>) -> Outcome {
        self.tracker.notified(
            self.now,
            service,
            Notification {
                ready,
                main_pid,
                descendant: None,
            },
        )
    }
}

fn policy(expect: Expect) -> Policy {
    Policy {
        expect,
        ..Policy::default()
    }
}

fn adopted(pid: Pid, previous_parent: Pid) -> Event {
    Event::Adopted {
        pid,
        previous_parent: Some(previous_parent),
        clues: Clues::default(),
    }
}

fn adopted_in_session(pid: Pid, session: Pid) -> Event {
    Event::Adopted {
        pid,
        previous_parent: None,
        clues: Clues {
            session: Some(session),
            start_time: None,
            ancestor: None,
            run_of: None,
            dying: false,
        },
    }
}

fn exited(pid: Pid, status: ExitStatus) -> Event {
    Event::Exited { pid, status }
}

fn signal(number: i32) -> Signal {
    Signal::new(number).unwrap_or_else(|| panic!("{number} is a signal"))
}

fn signals(out: &Outcome) -> Vec<(Pid, i32)> {
    out.actions
        .iter()
        .filter_map(|a| match *a {
            Action::Signal { pid, signal, .. } => Some((pid, signal.number())),
            Action::Spawn { .. } => None,
        })
        .collect()
}

fn handoffs(out: &Outcome) -> Vec<(Pid, Pid)> {
    out.notices
        .iter()
        .filter_map(|n| match *n {
            Notice::Adopted {
                pid, previous_pid, ..
            } => Some((pid, previous_pid)),
            _ => None,
        })
        .collect()
}

/// Runs an N-hop dance, one hop per moment: each hop forks and exits 0.
fn dance_one_hop_per_moment(h: &mut Harness, first: Pid, hops: u32) {
    for hop in 0..hops {
        let parent = first + hop;
        h.apply(&[adopted(parent + 1, parent), exited(parent, OK)]);
    }
}

#[test]
fn a_spawned_service_runs_with_its_first_process_as_main() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    let out = h.start(web, 100);
    let status = h.status(web);
    assert_eq!(status.state, State::Running);
    assert_eq!(status.main_pid, Some(100));
    assert_eq!(status.previous_pid, None);
    assert_eq!(status.main_pid_source, MainPidSource::Spawn);
    assert_eq!(out.notices.len(), 1, "one notice per service per batch");
}

#[test]
fn every_dance_of_one_to_four_forks_ends_at_the_settled_process() {
    for hops in 1..=4 {
        let mut h = Harness::new();
        let web = h.service(Policy::default());
        h.start(web, 100);
        dance_one_hop_per_moment(&mut h, 100, hops);
        let status = h.status(web);
        assert_eq!(status.main_pid, Some(100 + hops), "{hops} hops");
        assert_eq!(status.previous_pid, Some(100 + hops - 1));
        assert_eq!(status.handoffs, hops);
        assert_eq!(status.main_pid_source, MainPidSource::Adoption);
        assert_eq!(status.state, State::Running);
    }
}

#[test]
fn double_fork_in_one_moment_hands_off_twice_to_the_real_last_parent() {
    // The middle process forked and exited before its own parent was
    // reaped: both exits and both adoptions arrive together.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    let out = h.apply(&[
        exited(100, OK),
        exited(101, OK),
        adopted(101, 100),
        adopted(102, 101),
    ]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(102));
    assert_eq!(status.previous_pid, Some(101));
    assert_eq!(status.handoffs, 2);
    assert_eq!(handoffs(&out), vec![(101, 100), (102, 101)]);
}

#[test]
fn a_main_that_fails_after_forking_is_a_failure_not_a_handoff() {
    for status in [ExitStatus::Code(1), ExitStatus::Signal(9)] {
        let mut h = Harness::new();
        let web = h.service(Policy {
            restart: Restart::No,
            ..Policy::default()
        });
        h.start(web, 100);
        let out = h.apply(&[adopted(101, 100), exited(100, status)]);
        assert!(handoffs(&out).is_empty());
        assert_eq!(
            signals(&out),
            vec![(101, SIGTERM)],
            "the leftover is stopped"
        );
        assert_eq!(h.status(web).state, State::Stopping);
        assert_eq!(h.status(web).main_pid, None);
        assert_eq!(h.status(web).last_exit, Some(status));
        h.apply(&[exited(101, ExitStatus::Signal(SIGTERM))]);
        assert_eq!(h.status(web).state, State::Failed);
        let expected = match status {
            ExitStatus::Code(_) => RunResult::ExitCode,
            ExitStatus::Signal(_) => RunResult::Signal,
        };
        assert_eq!(h.status(web).result, expected);
    }
}

#[test]
fn an_adopted_zombie_is_never_an_heir() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    // 100 left an unreaped helper 101 and exited: both reaped together.
    let out = h.apply(&[exited(100, OK), adopted(101, 100), exited(101, OK)]);
    assert!(handoffs(&out).is_empty());
    assert_eq!(h.status(web).state, State::Stopped);
    assert_eq!(h.status(web).result, RunResult::Success);
    assert_eq!(h.status(web).main_pid, None);
}

#[test]
fn a_zombie_beside_the_real_child_does_not_disturb_the_handoff() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[
        adopted(101, 100),
        adopted(102, 100),
        exited(102, OK),
        exited(100, OK),
    ]);
    assert_eq!(h.status(web).main_pid, Some(101));
    assert_eq!(h.status(web).main_pid_source, MainPidSource::Adoption);
}

#[test]
fn several_adoptees_prefer_the_pid_file() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[
        adopted(101, 100),
        adopted(102, 100),
        exited(100, OK),
        Event::PidFile {
            service: web,
            pid: 102,
        },
    ]);
    assert_eq!(h.status(web).main_pid, Some(102));
    assert_eq!(h.status(web).main_pid_source, MainPidSource::PidFile);
}

#[test]
fn several_adoptees_without_pid_file_prefer_the_session_leader_and_say_it_is_a_guess() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    let leader = |pid| Event::Adopted {
        pid,
        previous_parent: Some(100),
        clues: Clues {
            session: Some(pid),
            start_time: Some(5),
            ancestor: None,
            run_of: None,
            dying: false,
        },
    };
    let follower = |pid| Event::Adopted {
        pid,
        previous_parent: Some(100),
        clues: Clues {
            session: Some(100),
            start_time: Some(1),
            ancestor: None,
            run_of: None,
            dying: false,
        },
    };
    h.apply(&[follower(101), leader(102), follower(103), exited(100, OK)]);
    assert_eq!(h.status(web).main_pid, Some(102));
    assert_eq!(h.status(web).main_pid_source, MainPidSource::Guess);
}

#[test]
fn several_adoptees_with_no_other_clue_choose_the_oldest() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    let aged = |pid, start_time| Event::Adopted {
        pid,
        previous_parent: Some(100),
        clues: Clues {
            session: Some(100),
            start_time: Some(start_time),
            ancestor: None,
            run_of: None,
            dying: false,
        },
    };
    h.apply(&[aged(101, 9), aged(102, 3), aged(103, 7), exited(100, OK)]);
    assert_eq!(h.status(web).main_pid, Some(102));
    assert_eq!(h.status(web).main_pid_source, MainPidSource::Guess);
}

#[test]
fn a_launcher_hands_off_to_the_daemon_orphaned_while_it_waited() {
    // `apache2ctl start`: the launcher 100 waits for 101, which forks the
    // daemon 102 and exits; 102 is orphaned while 100 lives.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[Event::Forked {
        parent: 100,
        child: 101,
    }]);
    h.apply(&[
        Event::Forked {
            parent: 101,
            child: 102,
        },
        adopted(102, 101),
    ]);
    assert_eq!(
        h.status(web).main_pid,
        Some(100),
        "no hand-off while the launcher waits"
    );
    h.apply(&[exited(100, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(102));
    assert_eq!(status.previous_pid, Some(100));
    assert_eq!(status.main_pid_source, MainPidSource::Adoption);
}

#[test]
fn a_launcher_seen_only_through_procfs_hands_off_to_the_daemon() {
    // procfs learns of the daemon only when the launcher is reaped, and
    // cannot tell its previous parent: the only exit of the moment is it.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[exited(100, OK), seen_young(102, 102)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(102));
    assert_eq!(status.previous_pid, Some(100));
}

#[test]
fn a_process_older_than_the_run_is_never_claimed_by_coincidence() {
    // As PID 1, adoptd may adopt a process that came from elsewhere: it
    // started before the service, so it cannot be the service's.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[exited(100, OK), seen_young(50, 50)]);
    assert_eq!(h.status(web).main_pid, None);
    assert_eq!(h.tracker.service_of(50), None);
}

#[test]
fn a_recycled_pid_that_closes_a_loop_of_adoptions_is_not_followed_forever() {
    // 100 hands off to 101; 100 is recycled as a child of 101, and both
    // exit in one moment. Each is now the other's previous parent: the
    // search for an heir must not go round that loop.
    let mut h = Harness::new();
    let web = started(&mut h);
    h.apply(&[adopted(101, 100), exited(100, OK)]);
    assert_eq!(h.status(web).main_pid, Some(101));
    h.apply(&[adopted(100, 101), exited(100, OK), exited(101, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, None);
    assert_eq!(status.state, State::Stopped);
    assert!(h.tracker.members(web).is_empty());
}

#[test]
fn a_chain_of_hops_too_long_to_follow_in_one_moment_ends_in_a_flagged_guess() {
    // Every hop forks and exits within one reap batch, five thousand deep
    // (deeper than a thread's stack allows without a bound): the search
    // stops following and says its choice is a guess.
    let mut h = Harness::new();
    let web = started(&mut h);
    let mut events: Vec<Event> = (101..=5100).map(|pid| adopted(pid, pid - 1)).collect();
    events.extend((100..5100).map(|pid| exited(pid, OK)));
    h.apply(&events);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(5100));
    assert_eq!(status.main_pid_source, MainPidSource::Guess);
    assert_eq!(status.state, State::Running);
}

#[test]
fn a_chain_of_hops_within_the_bound_is_followed_exactly_in_one_moment() {
    let mut h = Harness::new();
    let web = started(&mut h);
    let mut events: Vec<Event> = (101..=150).map(|pid| adopted(pid, pid - 1)).collect();
    events.extend((100..150).map(|pid| exited(pid, OK)));
    h.apply(&events);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(150));
    assert_eq!(status.previous_pid, Some(149));
    assert_eq!(status.handoffs, 50);
    assert_eq!(status.main_pid_source, MainPidSource::Adoption);
}

/// What procfs reports of a live newcomer: its session and start time
/// (pids stand in for start times).
fn seen_young(pid: Pid, session: Pid) -> Event {
    Event::Adopted {
        pid,
        previous_parent: None,
        clues: Clues {
            session: Some(session),
            start_time: Some(u64::from(pid)),
            ancestor: None,
            run_of: None,
            dying: false,
        },
    }
}

#[test]
fn orphaned_workers_join_the_service_and_keep_its_main_pid() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[adopted_in_session(150, 100), adopted_in_session(151, 100)]);
    assert_eq!(h.status(web).main_pid, Some(100));
    assert_eq!(h.tracker.members(web), vec![100, 150, 151]);
}

#[test]
fn a_killed_daemon_is_restarted_after_its_workers_are_gone() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart_delay: Duration::from_millis(100),
        ..Policy::default()
    });
    h.start(web, 100);
    dance_one_hop_per_moment(&mut h, 100, 1);
    // The master 101 is killed; its workers are orphaned to adoptd.
    let out = h.apply(&[
        exited(101, ExitStatus::Signal(9)),
        adopted(102, 101),
        adopted(103, 101),
    ]);
    assert_eq!(signals(&out), vec![(102, SIGTERM), (103, SIGTERM)]);
    assert_eq!(h.status(web).state, State::Stopping);
    let out = h.apply(&[exited(102, ExitStatus::Signal(SIGTERM)), exited(103, OK)]);
    assert!(out.actions.is_empty(), "the restart waits for its delay");
    assert_eq!(h.status(web).state, State::Restarting);
    assert_eq!(
        h.tracker.next_deadline(),
        Some(h.now.monotonic + Duration::from_millis(100))
    );
    let out = h.advance(Duration::from_millis(100));
    assert_eq!(out.actions, vec![Action::Spawn { service: web }]);
    h.apply(&[Event::Spawned {
        service: web,
        pid: 200,
        start_time: None,
    }]);
    let status = h.status(web);
    assert_eq!(status.state, State::Running);
    assert_eq!(status.main_pid, Some(200));
    assert_eq!(status.restarts, 1);
    assert_eq!(status.handoffs, 0, "hand-offs count since the last start");
}

#[test]
fn leftovers_that_ignore_the_stop_signal_are_killed_at_the_stop_timeout() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart: Restart::No,
        stop_timeout: Duration::from_secs(3),
        ..Policy::default()
    });
    h.start(web, 100);
    h.apply(&[adopted_in_session(150, 100)]);
    h.apply(&[exited(100, ExitStatus::Code(3))]);
    assert_eq!(h.status(web).state, State::Stopping);
    assert!(h.advance(Duration::from_secs(2)).actions.is_empty());
    let out = h.advance(Duration::from_secs(1));
    assert_eq!(signals(&out), vec![(150, SIGKILL)]);
    h.apply(&[exited(150, ExitStatus::Signal(SIGKILL))]);
    assert_eq!(h.status(web).state, State::Failed);
    assert_eq!(h.status(web).result, RunResult::ExitCode);
}

#[test]
fn restart_always_restarts_after_a_clean_exit_too() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart: Restart::Always,
        restart_delay: Duration::ZERO,
        ..Policy::default()
    });
    h.start(web, 100);
    let out = h.apply(&[exited(100, OK)]);
    assert_eq!(out.actions, vec![Action::Spawn { service: web }]);
    assert_eq!(h.status(web).state, State::Restarting);
}

#[test]
fn restart_on_failure_leaves_a_clean_exit_stopped() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    let out = h.apply(&[exited(100, OK)]);
    assert!(out.actions.is_empty());
    assert_eq!(h.status(web).state, State::Stopped);
    assert_eq!(h.status(web).result, RunResult::Success);
    assert_eq!(h.status(web).last_exit, Some(OK));
}

#[test]
fn too_many_starts_within_the_interval_hit_the_start_limit() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart_delay: Duration::ZERO,
        start_limit: StartLimit {
            burst: 3,
            interval: Duration::from_secs(10),
        },
        ..Policy::default()
    });
    h.start(web, 100);
    for pid in 100..102 {
        let out = h.apply(&[exited(pid, ExitStatus::Code(1))]);
        assert_eq!(out.actions, vec![Action::Spawn { service: web }]);
        h.apply(&[Event::Spawned {
            service: web,
            pid: pid + 1,
            start_time: None,
        }]);
    }
    let out = h.apply(&[exited(102, ExitStatus::Code(1))]);
    assert!(out.actions.is_empty());
    assert_eq!(h.status(web).state, State::Failed);
    assert_eq!(h.status(web).result, RunResult::StartLimitHit);
    assert_eq!(h.status(web).restarts, 2);
    // An operator's start resets the limit.
    h.start(web, 300);
    assert_eq!(h.status(web).state, State::Running);
}

#[test]
fn starts_spread_wider_than_the_interval_never_hit_the_limit() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart_delay: Duration::from_secs(4),
        start_limit: StartLimit {
            burst: 2,
            interval: Duration::from_secs(5),
        },
        ..Policy::default()
    });
    h.start(web, 100);
    for pid in 100..110 {
        h.apply(&[exited(pid, ExitStatus::Code(1))]);
        let out = h.advance(Duration::from_secs(4));
        assert_eq!(
            out.actions,
            vec![Action::Spawn { service: web }],
            "start of {}",
            pid + 1
        );
        h.apply(&[Event::Spawned {
            service: web,
            pid: pid + 1,
            start_time: None,
        }]);
    }
    assert_eq!(h.status(web).restarts, 10);
}

#[test]
fn expect_fork_follows_exactly_one_handoff() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Fork));
    h.start(web, 100);
    assert_eq!(h.status(web).state, State::Starting);
    h.apply(&[adopted(101, 100), exited(100, OK)]);
    assert_eq!(h.status(web).state, State::Running);
    assert_eq!(h.status(web).main_pid, Some(101));
    // A second fork-and-exit is not followed: the service exited.
    let out = h.apply(&[adopted(102, 101), exited(101, OK)]);
    assert!(handoffs(&out).is_empty());
    assert_eq!(signals(&out), vec![(102, SIGTERM)]);
    assert_eq!(h.status(web).main_pid, None);
}

#[test]
fn expect_fork_does_not_walk_through_a_quick_second_hop() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Fork));
    h.start(web, 100);
    h.apply(&[
        adopted(101, 100),
        exited(100, OK),
        exited(101, OK),
        adopted(102, 101),
    ]);
    assert_eq!(h.status(web).main_pid, None);
    assert_ne!(h.status(web).state, State::Running);
}

#[test]
fn expect_daemon_runs_after_the_second_handoff() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Daemon));
    h.start(web, 100);
    dance_one_hop_per_moment(&mut h, 100, 1);
    assert_eq!(h.status(web).state, State::Starting);
    dance_one_hop_per_moment(&mut h, 101, 1);
    assert_eq!(h.status(web).state, State::Running);
    assert_eq!(h.status(web).main_pid, Some(102));
    assert_eq!(h.status(web).previous_pid, Some(101));
}

#[test]
fn expect_foreground_never_hands_off() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Foreground));
    h.start(web, 100);
    let out = h.apply(&[adopted(101, 100), exited(100, OK)]);
    assert!(handoffs(&out).is_empty());
    assert_eq!(signals(&out), vec![(101, SIGTERM)]);
}

#[test]
fn auto_follows_a_master_that_hands_over_long_after_start() {
    // nginx's binary upgrade: the new master is the old one's child, the old
    // master quits cleanly and the new one is adopted.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    dance_one_hop_per_moment(&mut h, 100, 1);
    h.advance(Duration::from_secs(3600));
    h.apply(&[adopted(500, 101), exited(101, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(500));
    assert_eq!(status.previous_pid, Some(101));
    assert_eq!(status.handoffs, 2);
}

#[test]
fn an_operator_stop_signals_the_main_process_and_never_restarts() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart: Restart::Always,
        ..Policy::default()
    });
    h.start(web, 100);
    h.apply(&[adopted_in_session(150, 100)]);
    let out = h.command(web, Command::Stop).unwrap();
    assert_eq!(signals(&out), vec![(100, SIGTERM)]);
    assert_eq!(h.status(web).state, State::Stopping);
    let out = h.apply(&[exited(100, ExitStatus::Signal(SIGTERM))]);
    assert_eq!(signals(&out), vec![(150, SIGTERM)], "then what is left");
    h.apply(&[exited(150, OK)]);
    let status = h.status(web);
    assert_eq!(status.state, State::Stopped);
    assert_eq!(status.result, RunResult::Success);
    assert_eq!(status.last_exit, Some(ExitStatus::Signal(SIGTERM)));
    assert_eq!(h.tracker.next_deadline(), None);
}

#[test]
fn an_operator_stop_that_needs_sigkill_is_a_timeout() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.command(web, Command::Stop).unwrap();
    let out = h.advance(Duration::from_secs(10));
    assert_eq!(signals(&out), vec![(100, SIGKILL)]);
    h.apply(&[exited(100, ExitStatus::Signal(SIGKILL))]);
    assert_eq!(h.status(web).state, State::Stopped);
    assert_eq!(h.status(web).result, RunResult::Timeout);
}

#[test]
fn stop_during_a_restart_delay_cancels_the_restart() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[exited(100, ExitStatus::Code(1))]);
    assert_eq!(h.status(web).state, State::Restarting);
    h.command(web, Command::Stop).unwrap();
    assert_eq!(h.status(web).state, State::Stopped);
    assert!(h.advance(Duration::from_secs(60)).actions.is_empty());
}

#[test]
fn restart_stops_then_starts_again() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.command(web, Command::Restart).unwrap();
    let out = h.apply(&[exited(100, ExitStatus::Signal(SIGTERM))]);
    assert_eq!(out.actions, vec![Action::Spawn { service: web }]);
    h.apply(&[Event::Spawned {
        service: web,
        pid: 200,
        start_time: None,
    }]);
    assert_eq!(h.status(web).state, State::Running);
    assert_eq!(
        h.status(web).restarts,
        0,
        "an operator's restart is not counted"
    );
}

#[test]
fn commands_that_make_no_sense_are_refused() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    assert_eq!(h.command(web, Command::Stop), Err(CommandError::NotRunning));
    assert_eq!(
        h.command(web, Command::Kill(signal(1))),
        Err(CommandError::NotRunning)
    );
    assert_eq!(
        h.command(web, Command::Reload),
        Err(CommandError::NotRunning)
    );
    h.start(web, 100);
    assert_eq!(
        h.command(web, Command::Start),
        Err(CommandError::AlreadyRunning)
    );
    let unknown = ServiceId(99);
    assert_eq!(
        h.command(unknown, Command::Start),
        Err(CommandError::NotRunning)
    );
}

#[test]
fn kill_and_reload_signal_the_main_process() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        reload_signal: signal(10),
        ..Policy::default()
    });
    h.start(web, 100);
    dance_one_hop_per_moment(&mut h, 100, 1);
    assert_eq!(
        signals(&h.command(web, Command::Kill(signal(2))).unwrap()),
        vec![(101, 2)]
    );
    assert_eq!(
        signals(&h.command(web, Command::Reload).unwrap()),
        vec![(101, 10)]
    );
}

#[test]
fn a_failed_exec_is_a_failure_with_exit_code_127() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart: Restart::No,
        ..Policy::default()
    });
    h.command(web, Command::Start).unwrap();
    h.apply(&[Event::SpawnFailed { service: web }]);
    assert_eq!(h.status(web).state, State::Failed);
    assert_eq!(
        h.status(web).last_exit,
        Some(ExitStatus::Code(EXIT_CODE_EXEC_FAILED))
    );
}

#[test]
fn processes_of_no_service_are_counted_as_orphans() {
    let mut h = Harness::new();
    let out = h.apply(&[exited(7, OK), exited(8, ExitStatus::Signal(9))]);
    assert_eq!(h.tracker.orphans_reaped(), 2);
    assert_eq!(out.notices.len(), 2);
}

#[test]
fn a_handoff_is_one_notice_listing_every_changed_property() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    let out = h.apply(&[adopted(101, 100), exited(100, OK)]);
    let changed: Vec<_> = out
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::Changed { changes, .. } => Some(*changes),
            _ => None,
        })
        .collect();
    assert_eq!(changed.len(), 1);
    let changes = changed[0];
    for what in [Changes::MAIN_PID, Changes::PREVIOUS_PID, Changes::HANDOFFS] {
        assert!(changes.contains(what));
    }
    assert!(!changes.contains(Changes::STATE), "still running");
}

#[test]
fn services_do_not_steal_each_others_adoptees() {
    let mut h = Harness::new();
    let a = h.service(Policy::default());
    let b = h.service(Policy::default());
    h.start(a, 100);
    h.start(b, 200);
    h.apply(&[
        adopted(101, 100),
        exited(100, OK),
        adopted(201, 200),
        exited(200, OK),
    ]);
    assert_eq!(h.status(a).main_pid, Some(101));
    assert_eq!(h.status(b).main_pid, Some(201));
}

#[test]
fn a_late_leftover_of_a_finished_run_is_killed() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart: Restart::No,
        ..Policy::default()
    });
    h.start(web, 100);
    h.apply(&[exited(100, ExitStatus::Code(1))]);
    assert_eq!(h.status(web).state, State::Failed);
    let out = h.apply(&[adopted_in_session(150, 100)]);
    assert_eq!(signals(&out), vec![(150, SIGKILL)]);
}

// ----- every interleaving of one moment ---------------------------------

/// Applies the same moment in every order and checks that the results are
/// identical to the first.
fn assert_order_does_not_matter(setup: impl Fn(&mut Harness) -> ServiceId, moment: &[Event]) {
    let run = |events: &[Event]| {
        let mut h = Harness::new();
        let service = setup(&mut h);
        let out = h.apply(events);
        (out, h.status(service), h.tracker.members(service))
    };
    let expected = run(moment);
    permutations(moment, &mut |order| {
        assert_eq!(run(order), expected, "order {order:?}");
    });
}

fn permutations(events: &[Event], check: &mut impl FnMut(&[Event])) {
    fn go(events: &mut Vec<Event>, k: usize, check: &mut impl FnMut(&[Event])) {
        if k == events.len() {
            check(events);
            return;
        }
        for i in k..events.len() {
            events.swap(k, i);
            go(events, k + 1, check);
            events.swap(k, i);
        }
    }
    go(&mut events.to_vec(), 0, check);
}

fn started(h: &mut Harness) -> ServiceId {
    let web = h.service(Policy::default());
    h.start(web, 100);
    web
}

#[test]
fn exited_before_adopted_and_adopted_before_exited_agree() {
    assert_order_does_not_matter(started, &[adopted(101, 100), exited(100, OK)]);
}

#[test]
fn every_order_of_a_quick_double_fork_agrees() {
    assert_order_does_not_matter(
        started,
        &[
            adopted(101, 100),
            exited(100, OK),
            adopted(102, 101),
            exited(101, OK),
        ],
    );
}

#[test]
fn every_order_of_a_fork_with_zombies_and_workers_agrees() {
    assert_order_does_not_matter(
        started,
        &[
            adopted(101, 100),
            adopted(102, 100),
            exited(102, OK),
            adopted_in_session(103, 100),
            exited(100, OK),
            exited(77, OK),
        ],
    );
}

#[test]
fn every_order_of_a_procfs_moment_agrees() {
    assert_order_does_not_matter(
        started,
        &[
            exited(100, OK),
            adopted_in_session(101, 101),
            Event::Adopted {
                pid: 102,
                previous_parent: None,
                clues: Clues::default(),
            },
            exited(102, OK),
            adopted_in_session(103, 101),
        ],
    );
}

/// One random moment of a service whose main process is 100: some children
/// of the main process (each alive, a zombie, or dead after forking
/// grandchildren of its own), workers found by session, unrelated orphans,
/// and the main process's own exit.
fn moment() -> impl Strategy<Value = Vec<Event>> {
    let status = prop_oneof![
        4 => Just(OK),
        1 => Just(ExitStatus::Code(1)),
        1 => Just(ExitStatus::Signal(9)),
    ];
    let child = (0..3u8, status.clone(), 0..3u32, any::<bool>());
    (
        proptest::option::of(status),
        proptest::collection::vec(child, 0..4),
        0..3u32,
        0..2u32,
        any::<bool>(),
    )
        .prop_map(|(main_exit, children, workers, orphans, source_knows)| {
            let mut events = Vec::new();
            let adopt = |pid: Pid, parent: Pid, session: Pid| Event::Adopted {
                pid,
                previous_parent: source_knows.then_some(parent),
                clues: Clues {
                    session: Some(session),
                    start_time: Some(u64::from(pid)),
                    ancestor: None,
                    run_of: None,
                    dying: false,
                },
            };
            if let Some(status) = main_exit {
                events.push(exited(100, status));
            }
            for (i, (fate, status, grandchildren, leader)) in children.into_iter().enumerate() {
                let pid = 110 + 10 * i as Pid;
                let session = if leader { pid } else { 100 };
                events.push(adopt(pid, 100, session));
                match fate {
                    0 => {}
                    1 => events.push(exited(pid, status)),
                    _ => {
                        events.push(exited(pid, status));
                        for g in 0..grandchildren {
                            events.push(adopt(pid + 1 + g, pid, session));
                        }
                    }
                }
            }
            for w in 0..workers {
                events.push(adopt(300 + w, 100, 100));
            }
            for o in 0..orphans {
                events.push(exited(900 + o, OK));
            }
            events
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_order_of_one_moment_gives_the_same_result(
        (events, shuffled) in moment().prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle()))
    ) {
        let run = |events: &[Event]| {
            let mut h = Harness::new();
            let service = started(&mut h);
            let out = h.apply(events);
            (out, h.status(service), h.tracker.members(service), h.tracker.orphans_reaped())
        };
        prop_assert_eq!(run(&events), run(&shuffled));
    }

    #[test]
    fn the_main_pid_is_always_a_live_member_and_never_an_exited_process(events in moment()) {
        let mut h = Harness::new();
        let service = started(&mut h);
        h.apply(&events);
        let status = h.status(service);
        if let Some(main) = status.main_pid {
            prop_assert!(h.tracker.members(service).contains(&main));
            prop_assert!(!events.contains(&exited(main, OK)));
        }
        let failed = events.iter().any(|e| matches!(e, Event::Exited { pid: 100, status } if !status.is_success()));
        if failed {
            prop_assert_eq!(status.main_pid, None, "a failing main is never followed");
        }
    }
}

#[test]
fn stopping_several_services_at_once_gives_each_its_own_timeout() {
    let mut h = Harness::new();
    let a = h.service(Policy::default());
    let b = h.service(Policy {
        stop_timeout: Duration::from_secs(5),
        ..Policy::default()
    });
    h.start(a, 100);
    h.start(b, 200);
    h.command(a, Command::Stop).unwrap();
    h.command(b, Command::Stop).unwrap();
    let out = h.apply(&[
        exited(200, ExitStatus::Signal(SIGTERM)),
        adopted_in_session(201, 200),
    ]);
    assert_eq!(signals(&out), vec![(201, SIGTERM)]);
    assert!(h.advance(Duration::from_secs(4)).actions.is_empty());
    assert_eq!(
        signals(&h.advance(Duration::from_secs(1))),
        vec![(201, SIGKILL)]
    );
    assert!(
        h.advance(Duration::from_secs(4)).actions.is_empty(),
        "a has 10 s"
    );
    assert_eq!(
        signals(&h.advance(Duration::from_secs(1))),
        vec![(100, SIGKILL)]
    );
}

fn seen_by_procfs(pid: Pid, session: Option<Pid>) -> Event {
    Event::Adopted {
        pid,
        previous_parent: None,
        clues: Clues {
            session,
            start_time: None,
            ancestor: None,
            run_of: None,
            dying: false,
        },
    }
}

#[test]
fn procfs_follows_a_quick_double_fork_through_the_unseen_hop_and_says_it_guessed() {
    // The middle hop 101 called setsid, forked 102 and died unseen.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[
        exited(100, OK),
        seen_by_procfs(101, None),
        exited(101, OK),
        seen_by_procfs(102, Some(101)),
    ]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(102));
    assert_eq!(status.previous_pid, Some(101));
    assert_eq!(status.handoffs, 2);
    assert_eq!(status.main_pid_source, MainPidSource::Guess);
}

#[test]
fn procfs_keeps_two_services_apart_when_both_dance_in_one_moment() {
    let mut h = Harness::new();
    let a = h.service(Policy::default());
    let b = h.service(Policy::default());
    h.start(a, 100);
    h.start(b, 200);
    h.apply(&[
        exited(100, OK),
        seen_by_procfs(101, None),
        exited(101, OK),
        seen_by_procfs(102, Some(101)),
        exited(200, OK),
        seen_by_procfs(201, Some(200)),
    ]);
    assert_eq!(h.status(a).main_pid, Some(102));
    assert_eq!(h.status(b).main_pid, Some(201));
    // 101 died unseen and was placed by its closest exit: it could have
    // been b's hop too, so b's previous pid is only a guess, and says so.
    assert_eq!(h.status(b).main_pid_source, MainPidSource::Guess);
}

#[test]
fn procfs_places_a_newcomer_by_the_run_its_environment_names() {
    // Both services' first processes exit in one moment; the heirs left
    // their sessions, and pid order would put 150 in b. Its environment
    // names a's run.
    let mut h = Harness::new();
    let a = h.service(Policy::default());
    let b = h.service(Policy::default());
    h.start(a, 100);
    h.start(b, 120);
    let heir_of_a = Event::Adopted {
        pid: 150,
        previous_parent: None,
        clues: Clues {
            session: Some(150),
            start_time: Some(150),
            ancestor: None,
            run_of: Some(a),
            dying: false,
        },
    };
    h.apply(&[exited(100, OK), exited(120, OK), heir_of_a]);
    assert_eq!(h.status(a).main_pid, Some(150));
    assert_eq!(h.status(a).previous_pid, Some(100));
    assert_eq!(h.status(b).main_pid, None);
    assert_eq!(h.tracker.service_of(150), Some(a));
}

#[test]
fn a_run_named_by_a_newcomer_that_does_not_exist_is_ignored() {
    let mut h = Harness::new();
    let web = started(&mut h);
    let stranger = Event::Adopted {
        pid: 150,
        previous_parent: None,
        clues: Clues {
            run_of: Some(ServiceId(7)),
            ..Clues::default()
        },
    };
    h.apply(&[stranger]);
    assert_eq!(h.tracker.service_of(150), None);
    assert_eq!(h.status(web).main_pid, Some(100));
}

#[test]
fn a_source_that_knows_lineage_attributes_an_orphan_by_its_ancestor() {
    // The process connector saw 100 → 101 → 102; 101 (not adoptd's child)
    // died while the launcher 100 waited.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[Event::Adopted {
        pid: 102,
        previous_parent: Some(101),
        clues: Clues {
            session: Some(102),
            start_time: None,
            ancestor: Some(100),
            run_of: None,
            dying: false,
        },
    }]);
    assert_eq!(h.status(web).main_pid, Some(100));
    h.apply(&[exited(100, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(102));
    assert_eq!(status.previous_pid, Some(100));
    assert_eq!(status.main_pid_source, MainPidSource::Adoption);
}

#[test]
fn a_wrong_guess_among_siblings_is_corrected_when_it_ends() {
    // 101 left a helper 102 that was still exiting when 101 died beside
    // the real daemon 103: both adopted from 101, the oldest guessed.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    dance_one_hop_per_moment(&mut h, 100, 1);
    h.apply(&[adopted(102, 101), adopted(103, 101), exited(101, OK)]);
    assert_eq!(h.status(web).main_pid, Some(102));
    assert_eq!(h.status(web).main_pid_source, MainPidSource::Guess);
    let out = h.apply(&[exited(102, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(103));
    assert_eq!(status.previous_pid, Some(101));
    assert_eq!(status.handoffs, 2, "the same hand-off, corrected");
    assert_eq!(status.state, State::Running);
    assert_eq!(handoffs(&out), vec![(103, 101)]);
}

#[test]
fn a_wrong_guess_gives_way_to_the_contender_that_danced_on() {
    // 101 died leaving the helper 102 (still exiting) and the real hop 103:
    // the oldest, 102, is guessed. 103 goes on: an orphaned grandchild 106
    // and its heir 107; then the helper ends. 107 is the main process.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    dance_one_hop_per_moment(&mut h, 100, 1);
    h.apply(&[adopted(102, 101), adopted(103, 101), exited(101, OK)]);
    assert_eq!(h.status(web).main_pid, Some(102));
    assert_eq!(h.status(web).main_pid_source, MainPidSource::Guess);
    h.apply(&[adopted(106, 105)]);
    h.apply(&[adopted(107, 103), exited(103, OK)]);
    assert_eq!(
        h.status(web).main_pid,
        Some(102),
        "no decision while the guess lives"
    );
    let out = h.apply(&[exited(102, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(107));
    assert_eq!(status.previous_pid, Some(103));
    assert_eq!(status.handoffs, 3);
    // The real line from where the guess was made, hop by hop.
    assert_eq!(handoffs(&out), vec![(103, 101), (107, 103)]);
}

fn adopted_under(pid: Pid, previous_parent: Pid, ancestor: Pid) -> Event {
    Event::Adopted {
        pid,
        previous_parent: Some(previous_parent),
        clues: Clues {
            session: None,
            start_time: None,
            ancestor: Some(ancestor),
            run_of: None,
            dying: false,
        },
    }
}

#[test]
fn a_dance_that_went_on_while_the_main_process_waited_is_followed_hop_by_hop() {
    // The main process 100 forked 101 and did not reap it; 101 forked 102
    // and died (a zombie of 100's); 102 and 103 danced on as adoptees.
    // Only when 100 exits is the zombie 101 reaped, with 100's exit.
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[adopted_under(102, 101, 100)]);
    h.apply(&[adopted_under(103, 102, 100), exited(102, OK)]);
    h.apply(&[adopted_under(104, 103, 100), exited(103, OK)]);
    assert_eq!(
        h.status(web).main_pid,
        Some(100),
        "nothing decided while 100 lives"
    );
    let out = h.apply(&[adopted(101, 100), exited(101, OK), exited(100, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(104));
    assert_eq!(status.previous_pid, Some(103));
    assert_eq!(status.handoffs, 4);
    assert_eq!(status.main_pid_source, MainPidSource::Adoption);
    assert_eq!(
        handoffs(&out),
        vec![(101, 100), (102, 101), (103, 102), (104, 103)]
    );
}

#[test]
fn hops_that_came_and_went_in_one_moment_keep_the_chain_whole() {
    let mut h = Harness::new();
    let web = h.service(Policy::default());
    h.start(web, 100);
    h.apply(&[
        adopted_under(102, 101, 100),
        exited(102, OK),
        adopted(103, 102),
        exited(103, OK),
        adopted(104, 103),
    ]);
    h.apply(&[adopted(101, 100), exited(101, OK), exited(100, OK)]);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(104));
    assert_eq!(status.previous_pid, Some(103));
    assert_eq!(status.handoffs, 4);
}

#[test]
fn a_failure_below_a_hop_not_yet_reaped_gives_way_to_the_failed_hop_above_it() {
    // 100 → 103 (killed by SIGABRT) → 105 → 107 → 108 (exits 1) → 110.
    // 107 ends while its parent 105 lives: a zombie that is not adoptd's,
    // so the first moment cannot tie 108's failure to 103's.
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart: Restart::No,
        ..Policy::default()
    });
    h.start(web, 100);
    let out = h.apply(&[
        adopted(105, 103),
        exited(103, ExitStatus::Signal(6)),
        adopted(110, 108),
        adopted_under(108, 107, 105),
        exited(108, ExitStatus::Code(1)),
        adopted(103, 100),
        exited(100, OK),
    ]);
    assert_eq!(h.status(web).state, State::Stopping);
    let mut cleaned = signals(&out);
    cleaned.sort_unstable();
    assert_eq!(cleaned, vec![(105, SIGTERM), (110, SIGTERM)]);
    // The clean-up hands 107 over: the chain is whole, 103 came first.
    h.apply(&[
        adopted(107, 105),
        exited(107, OK),
        exited(105, ExitStatus::Signal(SIGTERM)),
        exited(110, ExitStatus::Signal(SIGTERM)),
    ]);
    let status = h.status(web);
    assert_eq!(status.state, State::Failed);
    assert_eq!(status.last_exit, Some(ExitStatus::Signal(6)));
    assert_eq!(status.result, RunResult::Signal);
}

/// Any event at all, with pids from a small range so that they collide.
fn any_event(services: u32) -> impl Strategy<Value = Event> {
    let pid = 1..40u32;
    let status = prop_oneof![
        Just(OK),
        (1..3i32).prop_map(ExitStatus::Code),
        prop_oneof![Just(9), Just(15)].prop_map(ExitStatus::Signal),
    ];
    let service = (0..services).prop_map(ServiceId);
    prop_oneof![
        (service.clone(), pid.clone()).prop_map(|(service, pid)| Event::Spawned {
            service,
            pid,
            start_time: Some(u64::from(pid)),
        }),
        service
            .clone()
            .prop_map(|service| Event::SpawnFailed { service }),
        (pid.clone(), pid.clone()).prop_map(|(parent, child)| Event::Forked { parent, child }),
        (
            pid.clone(),
            proptest::option::of(pid.clone()),
            proptest::option::of(pid.clone()),
            proptest::option::of(pid.clone())
        )
            .prop_map(|(pid, previous_parent, session, ancestor)| Event::Adopted {
                pid,
                previous_parent,
                clues: Clues {
                    session,
                    start_time: Some(u64::from(pid)),
                    ancestor,
                    run_of: None,
                    dying: false,
                },
            }),
        (pid.clone(), status).prop_map(|(pid, status)| Event::Exited { pid, status }),
        (service, pid).prop_map(|(service, pid)| Event::PidFile { service, pid }),
    ]
}

/// A step of an arbitrary history: a moment, a command or time passing.
#[derive(Clone, Debug)]
enum Step {
    Moment(Vec<Event>),
    Command(u32, Command),
    Notify(u32, Notification),
    Wait(u64),
}

fn any_step(services: u32) -> impl Strategy<Value = Step> {
    let command = prop_oneof![
        Just(Command::Start),
        Just(Command::Stop),
        Just(Command::Restart),
        Just(Command::Reload),
        (1..=libc::SIGRTMAX())
            .prop_filter_map("a signal", Signal::new)
            .prop_map(Command::Kill),
    ];
    prop_oneof![
        4 => proptest::collection::vec(any_event(services + 1), 0..6).prop_map(Step::Moment),
        2 => ((0..services + 1), command).prop_map(|(s, c)| Step::Command(s, c)),
        1 => ((0..services + 1), any::<bool>(), proptest::option::of(1..40u32))
            .prop_map(|(s, ready, main_pid)| Step::Notify(s, Notification { ready, main_pid, descendant: None })),
        1 => (0..20_000u64).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Nonsense in any order (unknown services, pids reused, exits of
    /// processes never seen, commands at odd moments) never panics, and the
    /// tracker's invariants hold after every step.
    #[test]
    fn any_history_keeps_the_invariants(steps in proptest::collection::vec(any_step(3), 1..40)) {
        let mut h = Harness::new();
        let services: Vec<ServiceId> = (0..3)
            .map(|i| h.service(Policy {
                restart: [Restart::No, Restart::OnFailure, Restart::Always][i],
                expect: [Expect::Auto, Expect::Notify, Expect::Auto][i],
                restart_delay: Duration::from_millis(10 * i as u64),
                ..Policy::default()
            }))
            .collect();
        for step in steps {
            let out = match step {
                Step::Moment(events) => h.apply(&events),
                Step::Command(service, command) => h
                    .tracker
                    .command(h.now, ServiceId(service), command)
                    .unwrap_or_default(),
                Step::Notify(service, notification) => {
                    h.tracker.notified(h.now, ServiceId(service), notification)
                }
                Step::Wait(millis) => h.advance(Duration::from_millis(millis)),
            };
            for action in &out.actions {
                if let Action::Signal { service, pid, .. } = *action {
                    prop_assert_eq!(h.tracker.service_of(pid), Some(service), "signals only its own members");
                }
            }
            let mut seen = std::collections::HashSet::new();
            for &service in &services {
                let status = h.status(service);
                let members = h.tracker.members(service);
                for pid in &members {
                    prop_assert!(seen.insert(*pid), "pid {} in two services", pid);
                }
                if let Some(main) = status.main_pid {
                    prop_assert!(members.contains(&main), "the main pid is a member");
                }
                if matches!(status.state, State::Stopped | State::Failed) {
                    prop_assert_eq!(status.main_pid, None);
                }
            }
        }
    }
}

#[test]
fn a_notify_service_is_starting_until_it_says_ready() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Notify));
    h.start(web, 100);
    assert_eq!(h.status(web).state, State::Starting);
    // It daemonizes first: still not ready.
    h.apply(&[adopted(101, 100), exited(100, OK)]);
    assert_eq!(h.status(web).state, State::Starting);
    assert_eq!(h.status(web).main_pid, Some(101));
    let out = h.notify(web, true, None);
    assert_eq!(h.status(web).state, State::Running);
    assert!(
        out.notices
            .iter()
            .any(|n| matches!(n, Notice::Changed { service, .. } if *service == web)),
        "{out:?}"
    );
}

#[test]
fn mainpid_names_another_process_of_the_service_as_main() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Notify));
    h.start(web, 100);
    h.apply(&[adopted_in_session(150, 100)]);
    let out = h.notify(web, true, Some(150));
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(150));
    assert_eq!(status.previous_pid, Some(100));
    assert_eq!(status.main_pid_source, MainPidSource::Notify);
    assert_eq!(status.state, State::Running);
    assert_eq!(handoffs(&out), vec![(150, 100)]);
}

/// `MAINPID=` naming a worker the tracker never saw (not adoptd's child),
/// vouched for by the supervisor as a live descendant of the service.
fn notify_worker(h: &mut Harness, service: ServiceId, worker: Pid) -> Outcome {
    h.tracker.notified(
        h.now,
        service,
        Notification {
            ready: true,
            main_pid: Some(worker),
            descendant: Some(Clues {
                session: Some(100),
                start_time: Some(u64::from(worker)),
                ancestor: None,
                run_of: None,
                dying: false,
            }),
        },
    )
}

#[test]
fn mainpid_naming_a_worker_that_is_not_adoptds_child_makes_it_main() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Notify));
    h.start(web, 100);
    let out = notify_worker(&mut h, web, 101);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(101));
    assert_eq!(status.previous_pid, Some(100));
    assert_eq!(status.main_pid_source, MainPidSource::Notify);
    assert_eq!(status.state, State::Running);
    assert_eq!(handoffs(&out), vec![(101, 100)]);
    assert_eq!(h.tracker.service_of(101), Some(web));
}

#[test]
fn a_worker_main_killed_fails_the_service_and_its_launcher_is_stopped() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart: Restart::No,
        ..policy(Expect::Notify)
    });
    h.start(web, 100);
    notify_worker(&mut h, web, 101);
    // Its exit comes from its pidfd; its parent, the launcher, lives on.
    let out = h.apply(&[exited(101, ExitStatus::Signal(SIGKILL))]);
    assert_eq!(signals(&out), vec![(100, SIGTERM)]);
    let out = h.apply(&[exited(100, ExitStatus::Code(137))]);
    assert!(signals(&out).is_empty(), "{out:?}");
    let status = h.status(web);
    assert_eq!(status.state, State::Failed);
    assert_eq!(status.result, RunResult::Signal);
    assert_eq!(status.last_exit, Some(ExitStatus::Signal(SIGKILL)));
    assert_eq!(status.main_pid, None);
}

#[test]
fn mainpid_of_an_unknown_process_without_the_supervisors_word_is_ignored() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Notify));
    h.start(web, 100);
    h.notify(web, true, Some(101));
    assert_eq!(h.status(web).main_pid, Some(100));
    assert_eq!(h.tracker.service_of(101), None);
}

#[test]
fn mainpid_naming_a_stranger_or_another_service_is_ignored() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Notify));
    let db = h.service(Policy::default());
    h.start(web, 100);
    h.start(db, 200);
    for stranger in [200, 999] {
        h.notify(web, false, Some(stranger));
        assert_eq!(h.status(web).main_pid, Some(100));
        assert_eq!(h.status(web).state, State::Starting);
    }
}

#[test]
fn services_that_do_not_expect_notify_ignore_notifications() {
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Daemon));
    h.start(web, 100);
    h.apply(&[adopted_in_session(150, 100)]);
    h.notify(web, true, Some(150));
    assert_eq!(h.status(web).state, State::Starting);
    assert_eq!(h.status(web).main_pid, Some(100));
}

#[test]
fn a_restarted_notify_service_must_say_ready_again() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        expect: Expect::Notify,
        restart_delay: Duration::from_millis(100),
        ..Policy::default()
    });
    h.start(web, 100);
    h.notify(web, true, None);
    assert_eq!(h.status(web).state, State::Running);
    h.apply(&[exited(100, ExitStatus::Signal(9))]);
    let out = h.advance(Duration::from_millis(100));
    assert_eq!(out.actions, vec![Action::Spawn { service: web }]);
    h.apply(&[Event::Spawned {
        service: web,
        pid: 300,
        start_time: Some(300),
    }]);
    assert_eq!(h.status(web).state, State::Starting);
}

#[test]
fn a_program_that_cannot_start_is_retried_at_the_next_turn_not_at_once() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        restart_delay: Duration::ZERO,
        restart: Restart::Always,
        start_limit: StartLimit {
            burst: 1_000_000,
            interval: Duration::from_secs(1),
        },
        ..Policy::default()
    });
    h.command(web, Command::Start).unwrap();
    let out = h.apply(&[Event::SpawnFailed { service: web }]);
    assert!(out.actions.is_empty(), "{out:?}");
    assert_eq!(h.status(web).state, State::Restarting);
    assert_eq!(h.tracker.next_deadline(), Some(h.now.monotonic));
    let out = h.advance(Duration::ZERO);
    assert_eq!(out.actions, vec![Action::Spawn { service: web }]);
}

#[test]
fn a_notify_service_that_never_gets_ready_is_stopped_at_its_start_timeout() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        expect: Expect::Notify,
        restart: Restart::No,
        start_timeout: Duration::from_secs(5),
        ..Policy::default()
    });
    h.start(web, 100);
    assert!(signals(&h.advance(Duration::from_millis(4_999))).is_empty());
    assert_eq!(h.status(web).state, State::Starting);
    let out = h.advance(Duration::from_millis(1));
    assert_eq!(signals(&out), vec![(100, SIGTERM)]);
    assert_eq!(h.status(web).state, State::Stopping);
    h.apply(&[exited(100, ExitStatus::Signal(SIGTERM))]);
    let status = h.status(web);
    assert_eq!(status.state, State::Failed);
    assert_eq!(status.result, RunResult::Timeout);
}

#[test]
fn a_start_timeout_is_a_failure_that_restart_on_failure_restarts() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        expect: Expect::Fork,
        start_timeout: Duration::from_secs(5),
        restart_delay: Duration::ZERO,
        ..Policy::default()
    });
    h.start(web, 100);
    h.advance(Duration::from_secs(5));
    let out = h.apply(&[exited(100, ExitStatus::Signal(SIGTERM))]);
    assert!(
        out.actions.contains(&Action::Spawn { service: web }),
        "{out:?}"
    );
    assert_eq!(h.status(web).restarts, 1);
}

#[test]
fn ready_in_time_cancels_the_start_timeout() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        expect: Expect::Notify,
        start_timeout: Duration::from_secs(5),
        ..Policy::default()
    });
    h.start(web, 100);
    h.notify(web, true, None);
    assert_eq!(h.status(web).state, State::Running);
    assert_eq!(h.tracker.next_deadline(), None);
    assert!(signals(&h.advance(Duration::from_secs(60))).is_empty());
    assert_eq!(h.status(web).state, State::Running);
}

#[test]
fn a_new_run_starts_with_a_clean_result() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        expect: Expect::Foreground,
        restart_delay: Duration::ZERO,
        ..Policy::default()
    });
    h.start(web, 100);
    let out = h.apply(&[exited(100, ExitStatus::Code(3))]);
    assert!(out.actions.contains(&Action::Spawn { service: web }));
    assert_eq!(h.status(web).result, RunResult::ExitCode);
    h.apply(&[Event::Spawned {
        service: web,
        pid: 101,
        start_time: Some(101),
    }]);
    let status = h.status(web);
    assert_eq!(status.state, State::Running);
    assert_eq!(status.result, RunResult::Success);
    assert_eq!(status.last_exit, Some(ExitStatus::Code(3)));
}

#[test]
fn reset_failed_makes_a_failed_service_stopped_with_its_start_limit_cleared() {
    let mut h = Harness::new();
    let web = h.service(Policy {
        expect: Expect::Foreground,
        restart: Restart::No,
        ..Policy::default()
    });
    h.start(web, 100);
    h.apply(&[exited(100, ExitStatus::Code(1))]);
    assert_eq!(h.status(web).state, State::Failed);
    h.command(web, Command::ResetFailed).unwrap();
    let status = h.status(web);
    assert_eq!(status.state, State::Stopped);
    assert_eq!(status.result, RunResult::Success);
    assert_eq!(status.last_exit, Some(ExitStatus::Code(1)));
    // Not failed: nothing happens, and that is no error.
    h.start(web, 101);
    assert_eq!(h.command(web, Command::ResetFailed), Ok(Outcome::default()));
    assert_eq!(h.status(web).state, State::Running);
}

#[test]
fn a_daemon_orphaned_before_its_session_leader_was_reaped_counts_both_hops() {
    // procfs, `fork setsid fork serve` child first: the daemon 102 is seen
    // orphaned while the spawned 100 lives; its parent 101, which started
    // the session, is seen only later, as a zombie reaped with 100.
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Daemon));
    h.start(web, 100);
    let seen = |pid: Pid, run_of: Option<ServiceId>| Event::Adopted {
        pid,
        previous_parent: None,
        clues: Clues {
            session: Some(101),
            start_time: Some(u64::from(pid)),
            ancestor: None,
            run_of,
            dying: false,
        },
    };
    // Out of its run's session, its environment names the run.
    h.apply(&[seen(102, Some(web))]);
    assert_eq!(h.status(web).state, State::Starting);
    h.apply(&[exited(100, OK), seen(101, None), exited(101, OK)]);
    let status = h.status(web);
    assert_eq!(status.state, State::Running, "{status:?}");
    assert_eq!(status.main_pid, Some(102));
    assert_eq!(status.previous_pid, Some(101));
    assert_eq!(status.handoffs, 2);
    assert_eq!(status.main_pid_source, MainPidSource::Adoption);
}

/// A tracker written and read back, as a re-exec does, goes on exactly as
/// the original: same status now, same answer to the next moment.
#[test]
fn a_tracker_read_back_from_its_json_decides_as_the_original() {
    let mut h = Harness::new();
    let id = h.service(Policy {
        restart_delay: Duration::from_millis(250),
        ..policy(Expect::Daemon)
    });
    h.start(id, 100);
    h.apply(&[
        adopted(101, 100),
        Event::Exited {
            pid: 100,
            status: OK,
        },
    ]);
    let json = serde_json::to_string(&h.tracker).unwrap();
    let mut copy: Tracker = serde_json::from_str(&json).unwrap();
    assert_eq!(copy.status(id), h.tracker.status(id));
    let moment = [
        adopted(102, 101),
        Event::Exited {
            pid: 101,
            status: OK,
        },
    ];
    assert_eq!(copy.apply(h.now, &moment), h.apply(&moment));
    let crash = [Event::Exited {
        pid: 102,
        status: ExitStatus::Signal(SIGKILL),
    }];
    assert_eq!(copy.apply(h.now, &crash), h.apply(&crash));
    // The restart delay is a pending deadline: kept.
    assert_eq!(copy.next_deadline(), h.tracker.next_deadline());
    assert!(h.tracker.next_deadline().is_some());
}

mod reattach {
    //! A run an earlier adoptd left, taken over after a crash.

    use super::*;

    fn left_run() -> Reattach {
        Reattach {
            main_pid: 300,
            previous_pid: Some(200),
            main_pid_source: MainPidSource::Adoption,
            handoffs: 2,
            restarts: 3,
            state_changed_at_us: 1_600_000_000_000_000,
            last_exit: None,
            result: RunResult::Success,
            run_start_time: Some(100),
            members: vec![(300, Some(300)), (301, Some(301))],
        }
    }

    #[test]
    fn a_reattached_run_is_running_with_its_old_values_and_nothing_spawned() {
        let mut h = Harness::new();
        let id = h.service(Policy::default());
        let out = h.tracker.reattach(h.now, id, &left_run());
        assert!(out.actions.is_empty(), "{out:?}");
        let status = h.status(id);
        assert_eq!(status.state, State::Running);
        assert_eq!(status.main_pid, Some(300));
        assert_eq!(status.previous_pid, Some(200));
        assert_eq!(status.main_pid_source, MainPidSource::Adoption);
        assert_eq!((status.handoffs, status.restarts), (2, 3));
        assert_eq!(status.state_changed_at.realtime_us, 1_600_000_000_000_000);
        assert_eq!(status.reattached_at_us, Some(h.now.realtime_us));
        assert_eq!(h.tracker.members(id), vec![300, 301]);
        let Some(Notice::Changed { changes, .. }) = out.notices.first() else {
            panic!("no change published: {out:?}");
        };
        assert!(changes.contains(Changes::REATTACHED));
        assert!(h.command(id, Command::Start).is_err(), "started twice");
    }

    #[test]
    fn the_failure_of_a_reattached_main_process_restarts_it_after_its_leftovers() {
        let mut h = Harness::new();
        let id = h.service(Policy {
            restart: Restart::OnFailure,
            restart_delay: Duration::ZERO,
            ..Policy::default()
        });
        h.tracker.reattach(h.now, id, &left_run());
        let out = h.apply(&[exited(300, ExitStatus::Signal(SIGKILL))]);
        assert_eq!(signals(&out), vec![(301, SIGTERM)]);
        let out = h.apply(&[exited(301, ExitStatus::Signal(SIGTERM))]);
        assert_eq!(out.actions, vec![Action::Spawn { service: id }]);
        h.apply(&[Event::Spawned {
            service: id,
            pid: 400,
            start_time: Some(400),
        }]);
        let status = h.status(id);
        assert_eq!((status.main_pid, status.restarts), (Some(400), 4));
        assert_eq!(status.reattached_at_us, None, "a new run is adoptd's own");
    }

    #[test]
    fn a_stop_signals_the_reattached_main_process() {
        let mut h = Harness::new();
        let id = h.service(Policy::default());
        h.tracker.reattach(h.now, id, &left_run());
        let out = h.command(id, Command::Stop).unwrap();
        assert_eq!(signals(&out), vec![(300, SIGTERM)]);
    }

    #[test]
    fn a_service_that_runs_already_is_not_reattached() {
        let mut h = Harness::new();
        let id = h.service(Policy::default());
        h.start(id, 50);
        let out = h.tracker.reattach(h.now, id, &left_run());
        assert!(out.notices.is_empty() && out.actions.is_empty(), "{out:?}");
        assert_eq!(h.status(id).main_pid, Some(50));
    }
}

fn seen_by_procfs_as(pid: Pid, session: Pid, run_of: Option<ServiceId>) -> Event {
    Event::Adopted {
        pid,
        previous_parent: None,
        clues: Clues {
            session: Some(session),
            // Forked in the clock tick the run began in, as a quick dance is.
            start_time: Some(100),
            ancestor: None,
            run_of,
            dying: false,
        },
    }
}

#[test]
fn procfs_counts_the_hop_that_ended_before_its_parent_was_reaped() {
    // expect = "daemon", with a helper beside each hop: 100 forks 101
    // (exits at once) and 102, and exits; 102 calls setsid, forks 103
    // (exits at once) and 104, the daemon, and exits. 102 ends while 100
    // still lives: its children come to adoptd first, 100, 101 and 102
    // in the next moment. Seen as procfs sees it (on a loaded machine).
    let mut h = Harness::new();
    let web = h.service(policy(Expect::Daemon));
    h.start(web, 100);
    h.apply(&[
        exited(103, OK),
        seen_by_procfs_as(103, 102, None),
        seen_by_procfs_as(104, 102, Some(web)),
    ]);
    h.apply(&[
        exited(100, OK),
        exited(101, OK),
        exited(102, OK),
        seen_by_procfs_as(101, 100, None),
        seen_by_procfs_as(102, 102, None),
    ]);
    let status = h.status(web);
    assert_eq!(status.state, State::Running, "{status:?}");
    assert_eq!(status.main_pid, Some(104));
    assert_eq!(status.handoffs, 2);
    // Which of 102 and 103 forked 104 procfs cannot tell: both are of
    // 102's session, and both died before 104 was seen. It says so.
    assert_eq!(status.main_pid_source, MainPidSource::Guess);
    assert!(matches!(status.previous_pid, Some(102 | 103)), "{status:?}");
}

fn seen_dying_by_procfs(pid: Pid, session: Pid) -> Event {
    match seen_by_procfs_as(pid, session, None) {
        Event::Adopted {
            pid,
            previous_parent,
            mut clues,
        } => {
            clues.dying = true;
            // Forked after both runs began.
            clues.start_time = Some(u64::from(pid));
            Event::Adopted {
                pid,
                previous_parent,
                clues,
            }
        }
        other => other,
    }
}

#[test]
fn procfs_never_places_a_hop_caught_inside_exit_by_a_guess() {
    // Two services daemonize at once: db (100) forked 104, which called
    // setsid and is inside `exit` when procfs looks, its environment gone;
    // web (102) forked 105, its daemon. The exit closest before 104 is
    // web's: a guess would make db's hop a member of web.
    let mut h = Harness::new();
    let db = h.service(policy(Expect::Auto));
    let web = h.service(policy(Expect::Auto));
    h.start(db, 100);
    h.start(web, 102);
    let out = h.apply(&[
        exited(100, OK),
        exited(102, OK),
        seen_dying_by_procfs(104, 104),
        seen_by_procfs_as(105, 105, Some(web)),
    ]);
    assert!(signals(&out).is_empty(), "{out:?}");
    assert_eq!(h.tracker.service_of(104), None);
    let status = h.status(web);
    assert_eq!(status.main_pid, Some(105), "{status:?}");
    // 105 may be the child of 104 for all procfs knows, and says so.
    assert_eq!(status.main_pid_source, MainPidSource::Guess, "{status:?}");
    // Its exit, with its session, is tried again; web keeps its daemon.
    let out = h.apply(&[exited(104, ExitStatus::Code(1))]);
    assert!(signals(&out).is_empty(), "{out:?}");
    assert_eq!(h.tracker.service_of(104), None);
    let status = h.status(web);
    assert_eq!(
        (status.state, status.main_pid),
        (State::Running, Some(105)),
        "{status:?}"
    );
}
