//! The hand-off rule proved on random choreographies, not examples.
//!
//! A small model of the kernel's process semantics (fork, setsid, exit with
//! a status, children reparented to the subreaper before their parent is
//! waitable, zombies that wait for their parent, reaping) runs a random
//! daemonization dance under a random schedule: any order of the exits
//! (parent first, child first, mixed), cut into moments at random, the
//! events of each moment shuffled. The tracker, fed what an exact source
//! (`adoptsig`, `proc-connector`) reports of that schedule, must give the
//! dance's truth on every one: the same state, result, main and previous
//! pid, and hand-off count.

use std::{collections::BTreeMap, time::Duration};

use proptest::prelude::*;

use super::*;

mod procfs;

/// adoptd itself, the subreaper.
const ADOPTD: Pid = 1;

/// One process of a choreography.
#[derive(Clone, Debug)]
struct Proc {
    parent: Pid,
    session: Pid,
    /// How it ends; `None` for the daemon that stays.
    exit: Option<ExitStatus>,
}

/// A dance: the spawned process and its hops, each forking helpers that
/// exit at once (never reaped by their parent) and then the next hop.
#[derive(Clone, Debug)]
struct Dance {
    procs: BTreeMap<Pid, Proc>,
    /// The main line: the spawned process, then each hop.
    line: Vec<Pid>,
}

/// What the rule says of a dance, whatever the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Truth {
    Running {
        main: Pid,
        previous: Option<Pid>,
        handoffs: u32,
    },
    Exited,
    Failed(ExitStatus),
}

impl Dance {
    fn truth(&self) -> Truth {
        let hops = &self.line[..self.line.len() - 1];
        if let Some(status) = hops
            .iter()
            .filter_map(|pid| self.procs[pid].exit)
            .find(|status| !status.is_success())
        {
            return Truth::Failed(status);
        }
        let last = self.line[self.line.len() - 1];
        match self.procs[&last].exit {
            None => Truth::Running {
                main: last,
                previous: hops.last().copied(),
                handoffs: u32::try_from(hops.len()).unwrap_or(u32::MAX),
            },
            Some(status) if status.is_success() => Truth::Exited,
            Some(status) => Truth::Failed(status),
        }
    }
}

/// A hop's plan: helpers before its fork, a setsid, how it exits.
#[derive(Clone, Debug)]
struct HopPlan {
    helpers: u8,
    setsid: bool,
    status: ExitStatus,
}

fn status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        6 => Just(ExitStatus::Code(0)),
        1 => (1..=255i32).prop_map(ExitStatus::Code),
        1 => prop_oneof![Just(6), Just(9), Just(11), Just(15)].prop_map(ExitStatus::Signal),
    ]
}

fn hop_plan() -> impl Strategy<Value = HopPlan> {
    (0..3u8, any::<bool>(), status()).prop_map(|(helpers, setsid, status)| HopPlan {
        helpers,
        setsid,
        status,
    })
}

fn dance() -> impl Strategy<Value = Dance> {
    (
        proptest::collection::vec(hop_plan(), 0..5),
        proptest::option::weighted(0.25, status()),
        0..3u8,
    )
        .prop_map(|(plans, last_exit, last_helpers)| {
            let mut procs = BTreeMap::new();
            let mut next: Pid = 100;
            let mut current = next;
            procs.insert(
                current,
                Proc {
                    parent: ADOPTD,
                    session: current,
                    exit: None,
                },
            );
            let mut line = vec![current];
            let mut fork = |procs: &mut BTreeMap<Pid, Proc>, parent: Pid, exit| {
                next += 1;
                let session = procs[&parent].session;
                procs.insert(
                    next,
                    Proc {
                        parent,
                        session,
                        exit,
                    },
                );
                next
            };
            for plan in plans {
                if plan.setsid
                    && let Some(p) = procs.get_mut(&current)
                {
                    p.session = current;
                }
                for _ in 0..plan.helpers {
                    fork(&mut procs, current, Some(ExitStatus::Code(0)));
                }
                let child = fork(&mut procs, current, None);
                if let Some(p) = procs.get_mut(&current) {
                    p.exit = Some(plan.status);
                }
                current = child;
                line.push(current);
            }
            for _ in 0..last_helpers {
                fork(&mut procs, current, Some(ExitStatus::Code(0)));
            }
            if let Some(p) = procs.get_mut(&current) {
                p.exit = last_exit;
            }
            Dance { procs, line }
        })
}

/// A schedule: the order of the exits, where the moments end, and how
/// each moment's events are shuffled.
#[derive(Clone, Debug)]
struct Schedule {
    /// Sort keys for the exits.
    order: Vec<u32>,
    /// After which exits adoptd wakes up.
    cuts: Vec<bool>,
    /// Seeds for shuffling each moment.
    shuffles: Vec<u64>,
    /// Which exits linger inside `exit` over the next look (the `procfs`
    /// model: memory gone, children not yet handed on).
    lingers: Vec<bool>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        proptest::collection::vec(any::<u32>(), 16),
        proptest::collection::vec(any::<bool>(), 16),
        proptest::collection::vec(any::<u64>(), 16),
        proptest::collection::vec(any::<bool>(), 16),
    )
        .prop_map(|(order, cuts, shuffles, lingers)| Schedule {
            order,
            cuts,
            shuffles,
            lingers,
        })
}

/// The kernel, as far as adoptd can see it.
struct Kernel {
    procs: BTreeMap<Pid, Proc>,
    /// Exited, not yet reaped, with how.
    zombies: BTreeMap<Pid, ExitStatus>,
    /// Adoption notices not yet reported.
    notices: Vec<Event>,
}

impl Kernel {
    fn new(dance: &Dance) -> Self {
        Kernel {
            procs: dance.procs.clone(),
            zombies: BTreeMap::new(),
            notices: Vec::new(),
        }
    }

    /// `pid` exits: its children, live or dead, are reparented to adoptd
    /// (and a notice queued for each) before it becomes a zombie.
    fn exit(&mut self, pid: Pid, status: ExitStatus) {
        let children: Vec<Pid> = self
            .procs
            .iter()
            .filter(|(_, p)| p.parent == pid)
            .map(|(&child, _)| child)
            .collect();
        for child in children {
            if let Some(p) = self.procs.get_mut(&child) {
                p.parent = ADOPTD;
            }
            self.notices.push(Event::Adopted {
                pid: child,
                previous_parent: Some(pid),
                clues: Clues {
                    session: self.procs.get(&child).map(|p| p.session),
                    start_time: Some(u64::from(child)),
                    ancestor: None,
                    run_of: None,
                    dying: false,
                },
            });
        }
        self.zombies.insert(pid, status);
    }

    /// adoptd wakes up: every notice, and every zombie that is its child.
    fn moment(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.notices);
        let mine: Vec<Pid> = self
            .zombies
            .keys()
            .copied()
            .filter(|pid| self.procs.get(pid).is_some_and(|p| p.parent == ADOPTD))
            .collect();
        for pid in mine {
            self.procs.remove(&pid);
            if let Some(status) = self.zombies.remove(&pid) {
                events.push(Event::Exited { pid, status });
            }
        }
        events
    }

    /// adoptd's signals are obeyed at once: the default action of each
    /// ends the process.
    fn obey(&mut self, signalled: &mut Vec<(Pid, i32)>) {
        for (target, signal) in std::mem::take(signalled) {
            if self.alive(target) {
                self.exit(target, ExitStatus::Signal(signal));
            }
        }
    }

    fn alive(&self, pid: Pid) -> bool {
        self.procs.contains_key(&pid) && !self.zombies.contains_key(&pid)
    }
}

fn shuffle(events: &mut [Event], mut seed: u64) {
    for i in (1..events.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        events.swap(i, j);
    }
}

/// Runs the dance under the schedule; returns the tracker's view once the
/// dance is over, after the clean-up's signals have been obeyed.
fn run(dance: &Dance, schedule: &Schedule, stop_at: Option<usize>) -> (Status, Vec<Pid>) {
    let mut tracker = Tracker::new();
    let mut now = Now {
        monotonic: Duration::from_secs(1),
        realtime_us: 1,
    };
    let policy = Policy {
        restart: Restart::No,
        ..Policy::default()
    };
    let id = tracker.add_service(policy, now);
    let mut kernel = Kernel::new(dance);
    let mut signalled: Vec<(Pid, i32)> = Vec::new();
    let take = |out: Outcome, signalled: &mut Vec<(Pid, i32)>| {
        for action in out.actions {
            if let Action::Signal { pid, signal, .. } = action {
                signalled.push((pid, signal.number()));
            }
        }
    };
    let out = tracker.command(now, id, Command::Start).unwrap_or_default();
    take(out, &mut signalled);
    let root = dance.line[0];
    let out = tracker.apply(
        now,
        &[Event::Spawned {
            service: id,
            pid: root,
            start_time: Some(u64::from(root)),
        }],
    );
    take(out, &mut signalled);
    let mut exits: Vec<(u32, Pid, ExitStatus)> = dance
        .procs
        .iter()
        .filter_map(|(&pid, p)| p.exit.map(|status| (pid, status)))
        .enumerate()
        .map(|(i, (pid, status))| (schedule.order[i % schedule.order.len()], pid, status))
        .collect();
    exits.sort_unstable_by_key(|&(key, pid, _)| (key, pid));
    let mut moment = 0;
    let deliver = |kernel: &mut Kernel,
                   tracker: &mut Tracker,
                   now: &mut Now,
                   moment: &mut usize,
                   signalled: &mut Vec<(Pid, i32)>| {
        let mut events = kernel.moment();
        shuffle(
            &mut events,
            schedule.shuffles[*moment % schedule.shuffles.len()],
        );
        if stop_at == Some(*moment) {
            let out = tracker.command(*now, id, Command::Stop).unwrap_or_default();
            take(out, signalled);
        }
        *moment += 1;
        now.monotonic += Duration::from_millis(1);
        if std::env::var_os("ADOPTD_MODEL_TRACE").is_some() {
            eprintln!("moment {moment}: {events:?}");
        }
        if !events.is_empty() {
            let out = tracker.apply(*now, &events);
            take(out, signalled);
        }
    };
    for (i, &(_, pid, status)) in exits.iter().enumerate() {
        if kernel.alive(pid) {
            kernel.exit(pid, status);
        }
        if schedule.cuts[i % schedule.cuts.len()] {
            deliver(
                &mut kernel,
                &mut tracker,
                &mut now,
                &mut moment,
                &mut signalled,
            );
        }
        kernel.obey(&mut signalled);
    }
    // Until nothing changes: the last moment, then the clean-up's signals.
    for _ in 0..8 {
        deliver(
            &mut kernel,
            &mut tracker,
            &mut now,
            &mut moment,
            &mut signalled,
        );
        kernel.obey(&mut signalled);
    }
    let live: Vec<Pid> = kernel
        .procs
        .keys()
        .copied()
        .filter(|&pid| kernel.alive(pid))
        .collect();
    let status = tracker
        .status(id)
        .unwrap_or_else(|| Service::new(policy, now).status());
    (status, live)
}

fn check(dance: &Dance, status: &Status, live: &[Pid]) -> Result<(), TestCaseError> {
    match dance.truth() {
        Truth::Running {
            main,
            previous,
            handoffs,
        } => {
            prop_assert_eq!(status.state, State::Running);
            prop_assert_eq!(status.main_pid, Some(main));
            prop_assert_eq!(status.previous_pid, previous);
            prop_assert_eq!(status.handoffs, handoffs);
            let source = if handoffs == 0 {
                MainPidSource::Spawn
            } else {
                MainPidSource::Adoption
            };
            prop_assert_eq!(status.main_pid_source, source);
        }
        Truth::Exited => {
            prop_assert_eq!(status.state, State::Stopped);
            prop_assert_eq!(status.result, RunResult::Success);
            prop_assert!(live.is_empty(), "left alive: {live:?}");
        }
        Truth::Failed(exit) => {
            prop_assert_eq!(status.state, State::Failed);
            prop_assert_eq!(status.last_exit, Some(exit));
            let result = match exit {
                ExitStatus::Code(_) => RunResult::ExitCode,
                ExitStatus::Signal(_) => RunResult::Signal,
            };
            prop_assert_eq!(status.result, result);
            prop_assert!(live.is_empty(), "left alive: {live:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_schedule_of_a_dance_gives_its_truth(dance in dance(), schedule in schedule()) {
        let (status, live) = run(&dance, &schedule, None);
        check(&dance, &status, &live)?;
    }

    #[test]
    fn a_stop_at_any_moment_of_a_dance_leaves_nothing_running(
        dance in dance(),
        schedule in schedule(),
        stop_at in 0..6usize,
    ) {
        let (status, live) = run(&dance, &schedule, Some(stop_at));
        // A stop that came before the dance was over ends it, whatever
        // was still to hand off: nothing of it lives on.
        if status.state != State::Running {
            prop_assert!(live.is_empty(), "left alive: {live:?}");
            prop_assert!(
                matches!(status.state, State::Stopped | State::Failed),
                "state {:?}", status.state
            );
        }
    }
}
