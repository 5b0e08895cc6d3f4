//! The supervisor's loop never waits while a signal it has read asks for
//! something. A signal read from the signalfd wakes nothing again, and a
//! batch reads the signalfd in each of its rounds: a SIGHUP (or SIGTERM,
//! or the SIGCHLD of a child that died meanwhile) read inside one batch
//! must still be acted on, whichever batch read it, however the rounds
//! fell.
//!
//! The real loop runs here, in-process, over a real signalfd, with an
//! adoption source that raises the signals itself at chosen moments of a
//! batch: what a loaded machine does now and then (children dying while
//! adoptd looks, round after round, and a SIGHUP at the end), here on
//! every run. Nothing else in this binary has children: the supervisor
//! reaps every child of its process.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use std::{future::Future, io, pin::pin, sync::Arc};

use adoptd::{
    invocation::InvocationId,
    output::Outputs,
    reaper::{self, Signals},
    source::{AdoptionSource, SourceKind},
    supervisor::{Supervisor, Update},
    tracker::{Event, ExitStatus, Pid, ServiceId},
};
use adoptd_test_support::{Scratch, TIMEOUT};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};

/// However many rounds a batch takes before a SIGHUP comes, the reload
/// happens. `children_dying` is how many looks of the source in a row
/// find a child that died meanwhile (each raises SIGCHLD, so the batch
/// takes another round, until its rounds run out and the next batch
/// answers the last one); the look after them finds the SIGHUP. Three
/// batches' worth of rounds puts the SIGHUP in every round of a batch,
/// first or re-armed.
#[test]
fn a_sighup_is_acted_on_whichever_round_of_which_batch_reads_it() {
    let runtime = runtime();
    for children_dying in 0..=24 {
        let seen = runtime.block_on(run_until(children_dying, Some(libc::SIGHUP), |seen| {
            seen.reloaded
        }));
        assert!(
            seen.reloaded,
            "after {children_dying} looks that each found a child dying, the SIGHUP read next was never acted on (no reload within {TIMEOUT:?})"
        );
    }
}

/// However many rounds a batch takes, the SIGCHLD its last round read is
/// answered: reaped, and looked after, by another round or batch. (A
/// SIGCHLD once read never wakes the loop again; its child would stay a
/// zombie, and its adoptions unknown, until something else happened.)
#[test]
fn a_sigchld_is_answered_whichever_round_of_which_batch_reads_it() {
    let runtime = runtime();
    for children_dying in 0..=24 {
        // The SIGCHLD of look `children_dying` is read in the round of the
        // look after it; the look after that one answers it. (With none,
        // the first look answers the first wake-up.)
        let answered = if children_dying == 0 {
            1
        } else {
            children_dying + 2
        };
        let seen = runtime.block_on(run_until(children_dying, None, |seen| {
            seen.looks >= answered
        }));
        assert!(
            seen.looks >= answered,
            "after {children_dying} looks that each found a child dying, the last SIGCHLD was never answered ({} looks within {TIMEOUT:?})",
            seen.looks
        );
    }
}

/// Blocks the handled signals on this thread, as `main` does before its
/// runtime, and gives the current-thread runtime the supervisor runs on.
fn runtime() -> tokio::runtime::Runtime {
    reaper::block_signals().expect("block the handled signals");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// What the test saw of a supervisor.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// How many times the source was asked to look.
    looks: usize,
    /// The supervisor re-read its configuration.
    reloaded: bool,
}

/// Runs a supervisor over a [`Scripted`] source (`children_dying`
/// SIGCHLDs, then `then`) until `done` holds of what was seen, or
/// [`TIMEOUT`] passed; then stops it.
async fn run_until(
    children_dying: usize,
    then: Option<libc::c_int>,
    done: impl Fn(Seen) -> bool,
) -> Seen {
    let scratch = Scratch::new("wakeups");
    let services = scratch.path.join("services");
    std::fs::write(
        services.join("quiet.toml"),
        "exec = [\"/bin/true\"]\nautostart = false\n",
    )
    .expect("write quiet.toml");
    let signals = Signals::open().expect("open a signalfd");
    // SAFETY: `Signals` owns its signalfd and never closes or replaces it
    // while it lives.
    let signals =
        unsafe { AsyncFd::register_with_interest(signals, tokio::io::Interest::READABLE) }
            .expect("watch the signalfd");
    let (updates, mut published) = mpsc::unbounded_channel();
    let (_requests, receiver) = mpsc::channel(1);
    let (looked, mut looks) = watch::channel(0);
    let source = Scripted {
        children_dying,
        then,
        looks: 0,
        another_round: false,
        looked,
    };
    let supervisor = Supervisor::new(
        services,
        Box::new(source),
        signals,
        updates,
        Arc::new(Outputs::default()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The first wake-up, as a child's death gives it.
    raise(libc::SIGCHLD);
    let observe = async move {
        let mut seen = Seen::default();
        tokio::time::timeout(TIMEOUT, async {
            while !done(seen) {
                tokio::select! {
                    handed = published.recv() => match handed {
                        Some(updates) => {
                            seen.reloaded |= updates.iter().any(|update| {
                                matches!(update, Update::ServiceAdded { spec, .. } if spec.name == "quiet")
                            });
                        }
                        None => return,
                    },
                    changed = looks.changed() => match changed {
                        Ok(()) => seen.looks = *looks.borrow_and_update(),
                        Err(_) => return,
                    },
                }
            }
        })
        .await
        .ok();
        stop.send(()).ok();
        seen
    };
    let run = supervisor.run(receiver, async {
        stopped.await.ok();
    });
    let (ran, seen) = tokio::join!(bounded(run), observe);
    ran.expect("the supervisor's loop ends without an error once told to stop");
    seen
}

/// The supervisor's loop, which must end once told to stop, bounded so a
/// stuck loop fails the test rather than hangs it.
async fn bounded(run: impl Future<Output = io::Result<()>>) -> io::Result<()> {
    match tokio::time::timeout(2 * TIMEOUT, pin!(run)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::other("the loop did not stop when told to")),
    }
}

/// An adoption source that knows of no adoption but raises, at each look,
/// what the test wants the batch to find: SIGCHLD for the first
/// `children_dying` looks, then `then`, each time asking for another round
/// so that the batch reads it.
struct Scripted {
    children_dying: usize,
    then: Option<libc::c_int>,
    looks: usize,
    another_round: bool,
    looked: watch::Sender<usize>,
}

impl AdoptionSource for Scripted {
    fn kind(&self) -> SourceKind {
        SourceKind::Procfs
    }

    fn spawned(&mut self, _pid: Pid, _service: ServiceId, _invocation: InvocationId) {}

    fn needs_another_round(&self) -> bool {
        self.another_round
    }

    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn restore(&mut self, _saved: serde_json::Value) -> Result<(), serde_json::Error> {
        Ok(())
    }

    fn collect(
        &mut self,
        _reaped: &[(Pid, ExitStatus)],
        _events: &mut Vec<Event>,
    ) -> io::Result<()> {
        // As procfs does when a child died while it looked: the zombie it
        // saw is reaped, and its SIGCHLD read, in another round.
        self.looks += 1;
        self.another_round = false;
        if self.looks <= self.children_dying {
            raise(libc::SIGCHLD);
            self.another_round = true;
        } else if self.looks == self.children_dying + 1
            && let Some(signal) = self.then
        {
            raise(signal);
            self.another_round = true;
        }
        self.looked.send_replace(self.looks);
        Ok(())
    }
}

/// Sends `signal` to this thread, where it is blocked and waits for the
/// signalfd (never to the process: another thread of the test harness
/// would take it).
fn raise(signal: libc::c_int) {
    // SAFETY: raise(3) sends to the calling thread and touches no memory.
    let sent = unsafe { libc::raise(signal) };
    assert_eq!(sent, 0, "raise signal {signal}");
}
