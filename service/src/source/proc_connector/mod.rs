//! The `proc-connector` source: exact lineage from the kernel's process
//! connector, on stock kernels, with CAP_NET_ADMIN.
//!
//! The netlink process connector reports every fork and exit on the
//! system. The source keeps the lineage of every process descended from
//! adoptd's own children (a map child → parent and parent → children), so
//! when a tracked process exits it knows exactly which live processes are
//! being reparented to adoptd and who their previous parent was, and names
//! each adoptee's nearest ancestor among adoptd's children so the tracker
//! can tell which service it belongs to, even after `setsid`.
//!
//! Ordering: the kernel sends a fork event before the child runs, so the
//! lineage of every live tracked process is in the socket before it can
//! matter. A process's exit event comes after its children were handed
//! to adoptd and after it became waitable (`exit_notify`, then
//! `proc_exit_connector`, in `do_exit`): adoptd may reap it first. So the
//! socket is drained before the tracker decides, and a reaped process
//! whose exit event is not read yet is taken as exited at its reap, its
//! tracked children adopted then.
//!
//! Only fork and exit events are asked for: kernels since 6.6 filter the
//! others (exec, comm, uid, …) out before they are queued, so a machine
//! busy with execs neither wakes adoptd nor fills its socket. Older
//! kernels ignore a filtered subscription; the source then subscribes to
//! everything and skips the rest itself.
//!
//! A socket filter drops in the kernel what the source would skip. Where
//! adoptd may load an eBPF program (CAP_BPF or CAP_SYS_ADMIN, as root),
//! it is `tracked_set.rs`: the kernel keeps the set of adoptd's
//! descendants itself, adding each child at its fork event before the
//! child can run, and keeps only their forks and exits, so the machine's
//! own process churn never wakes adoptd. Otherwise it is the classic
//! filter of `filter.rs`, which drops threads' events and the other event
//! types but cannot tell a tracked pid from another: a set kept from here
//! would lag the events (a new child could fork before the set named
//! it), so every process's fork and exit then wakes the source.
//!
//! Loss: if the socket overflows (ENOBUFS), the source reads the queue dry,
//! rebuilds the lineage from /proc and reports adoptd's children it did not
//! know as adoptees, with the previous parent the old lineage knew, or else
//! without one, attributed as for `procfs`.
//!
//! Limits: the connector speaks in pids of the initial pid namespace and
//! requires CAP_NET_ADMIN there, so inside a container `--tracker auto`
//! passes over it. A tracked process that makes itself a child subreaper
//! keeps its orphans; they are not reported (they never reach adoptd).

use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
};

use rustix::net;

use self::tracked_set::TrackedSet;
use super::{AdoptionSource, SourceKind, clues_of, runs::Runs};

mod filter;
mod tracked_set;
use crate::{
    invocation::InvocationId,
    memory::Shrink,
    proc,
    tracker::{Clues, Event, ExitStatus, Pid, ServiceId},
};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_DONE: u16 = 3;
/// Where `proc_event`'s `what` is: after nlmsghdr and cn_msg.
const WHAT: usize = NLMSG_HDRLEN + CN_MSG_LEN;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
/// nlmsghdr, cn_msg, then proc_event's what, cpu and timestamp.
const EVENT_DATA: usize = NLMSG_HDRLEN + CN_MSG_LEN + 16;
/// The receive buffer asked of the kernel: a fork storm must not overflow.
const RECEIVE_BUFFER: usize = 8 << 20;

/// The connector socket and the lineage it maintains.
pub struct ProcConnector {
    socket: OwnedFd,
    me: Pid,
    /// adoptd's own live children.
    children: HashSet<Pid>,
    /// Every tracked process (adoptd's children and their descendants)
    /// → its parent.
    parent_of: HashMap<Pid, Pid>,
    /// Parent → its tracked children, for every tracked parent but adoptd
    /// itself: its own are `parent_of`'s entries that name it (and
    /// `children`). A storm hands adoptd thousands of orphans at once;
    /// a list of them would be searched at each of their reaps.
    children_of: HashMap<Pid, Vec<Pid>>,
    /// Tracked processes that exited but were not reaped by their parent
    /// before it died: zombies reparented to adoptd, which it reaps next.
    /// Pid → (previous parent, ancestor).
    zombies: HashMap<Pid, (Pid, Option<Pid>)>,
    /// Tracked processes that have exited (their parents may still reap
    /// them); forgotten when their parent goes.
    dead: HashSet<Pid>,
    buffer: Vec<u8>,
    /// Which run a child found after lost events comes from.
    runs: Runs,
    /// Processes adoptd spawned whose fork event is not read yet. Until it
    /// is, queued events about their pids are those of earlier processes
    /// that had the pid (a busy machine recycles pids faster than adoptd
    /// reads the socket), and are applied as such.
    births: HashSet<Pid>,
    /// Restored after a re-exec: the events of the exec's time went to no
    /// socket, so the next `collect` rebuilds the lineage from /proc.
    resync_pending: bool,
    /// Children of adoptd it never knew alive, seen as zombies (by a
    /// rebuild after lost events, or just before they are reaped): their
    /// previous parent where the old lineage knew it, and what their
    /// `/proc` entry still said (session, start time), until the reap is
    /// reported. Without them a hop that died while events were lost is a
    /// process of no service, and the lineage of its daemon breaks there.
    seen_dead: HashMap<Pid, (Option<Pid>, Clues)>,
    /// How many zombies were left after the last look for those reaped
    /// elsewhere (or fewer, as reaps take them): the next look comes once
    /// there are twice as many, so at most half of those kept are stale.
    zombies_looked_at: usize,
    /// How many dead processes were left after the last look for those
    /// their parents reaped (see `forget_reaped_dead`).
    dead_looked_at: usize,
    /// The kernel's set of the processes the filter keeps events of, where
    /// the eBPF filter is attached.
    tracked: Option<TrackedSet>,
}

/// What a re-exec carries across of [`ProcConnector`]: all but the socket,
/// which the new image opens anew.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    children: HashSet<Pid>,
    parent_of: HashMap<Pid, Pid>,
    children_of: HashMap<Pid, Vec<Pid>>,
    zombies: HashMap<Pid, (Pid, Option<Pid>)>,
    dead: HashSet<Pid>,
    runs: Runs,
    births: HashSet<Pid>,
}

impl ProcConnector {
    /// Subscribes to process events; fails without CAP_NET_ADMIN, outside
    /// the initial pid namespace, or on a kernel without the connector.
    pub fn open() -> io::Result<Self> {
        if !proc::in_initial_pid_namespace() {
            return Err(io::Error::other(
                "adoptd runs in a pid namespace, where the process connector's pids do not apply",
            ));
        }
        // Checked first: without it the kernel ignores the subscription in
        // silence, which would cost a wait to find out.
        if !proc::has_net_admin() {
            return Err(io::Error::other(
                "adoptd does not have CAP_NET_ADMIN, which the process connector needs",
            ));
        }
        let socket = net::socket_with(
            net::AddressFamily::NETLINK,
            net::SocketType::DGRAM,
            net::SocketFlags::CLOEXEC | net::SocketFlags::NONBLOCK,
            Some(net::netlink::CONNECTOR),
        )?;
        set_receive_buffer(&socket);
        // Before the subscription, so that no event the source would skip
        // is ever queued. Without a filter the source still works: it
        // skips them itself, at the cost of a wake-up each.
        let me = std::process::id();
        let tracked = match TrackedSet::attach(&socket, me) {
            Ok(set) => Some(set),
            Err(e) => {
                tracing::info!(
                    "cannot load the eBPF filter of tracked processes ({e}): every process's \
                     fork and exit on this machine will wake adoptd"
                );
                if let Err(e) = filter::attach(&socket) {
                    tracing::warn!(
                        "cannot filter the process connector's events in the kernel: {e}"
                    );
                }
                None
            }
        };
        net::bind(
            &socket,
            &net::netlink::SocketAddrNetlink::new(0, CN_IDX_PROC),
        )?;
        send_listen(&socket, Some(PROC_EVENT_FORK | PROC_EVENT_EXIT))?;
        let mut source = ProcConnector {
            socket,
            me,
            children: HashSet::new(),
            parent_of: HashMap::new(),
            children_of: HashMap::new(),
            zombies: HashMap::new(),
            dead: HashSet::new(),
            buffer: vec![0; 64 * 1024],
            runs: Runs::default(),
            births: HashSet::new(),
            resync_pending: false,
            seen_dead: HashMap::new(),
            zombies_looked_at: 0,
            dead_looked_at: 0,
            tracked,
        };
        // The kernel silently ignores an unprivileged listen request, and a
        // kernel before 6.6 a filtered one: prove that events arrive by
        // watching one fork of our own.
        if source.prove_events_arrive().is_err() {
            send_listen(&source.socket, None)?;
            source.prove_events_arrive()?;
        }
        Ok(source)
    }

    /// Forks a child that exits at once and waits for its fork event.
    fn prove_events_arrive(&mut self) -> io::Result<()> {
        // SAFETY: the child only calls _exit.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child == 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        // Reap it here: the reaper is not running yet at start-up.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
        let child = child.unsigned_abs();
        let second = rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        loop {
            let mut poll = [rustix::event::PollFd::new(
                &self.socket,
                rustix::event::PollFlags::IN,
            )];
            let ready = rustix::event::poll(&mut poll, Some(&second)).unwrap_or(0);
            if ready == 0 {
                return Err(io::Error::other(
                    "no process events arrive (CAP_NET_ADMIN in the initial namespaces is needed)",
                ));
            }
            let mut seen = false;
            self.read_events(&mut |event| {
                if let ConnectorEvent::Fork { child: c, .. } = event {
                    seen |= c == child;
                }
            })?;
            if seen {
                self.parent_of.clear();
                self.children_of.clear();
                return Ok(());
            }
        }
    }

    /// Reads every queued event, until the queue is empty; says whether
    /// the kernel reported lost events (ENOBUFS) on the way.
    ///
    /// The kernel reports an overflow once, then drops silently until the
    /// queue has been read empty. So reading goes on past the report to
    /// the empty queue: every drop before that point is covered by the
    /// rebuild from /proc that follows, and any drop after it is reported
    /// anew.
    fn read_events(&mut self, handle: &mut dyn FnMut(ConnectorEvent)) -> io::Result<bool> {
        let mut lost = false;
        loop {
            let n = match net::recv(&self.socket, &mut self.buffer[..], net::RecvFlags::empty()) {
                // Truncated datagrams cannot happen: the buffer holds the
                // largest the connector sends.
                Ok((n, _)) => n,
                Err(rustix::io::Errno::AGAIN) => return Ok(lost),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::NOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let mut message = &self.buffer[..n];
            // One datagram may carry several netlink messages.
            while message.len() >= NLMSG_HDRLEN {
                let length = u32_at(message, 0).unwrap_or(0) as usize;
                if length < NLMSG_HDRLEN || length > message.len() {
                    break;
                }
                if let Some(event) = parse_event(&message[..length]) {
                    handle(event);
                }
                message = &message[align4(length).min(message.len())..];
            }
        }
    }

    fn track(&mut self, parent: Pid, child: Pid) {
        self.parent_of.insert(child, parent);
        if parent != self.me {
            self.children_of.entry(parent).or_default().push(child);
        }
    }

    fn untrack(&mut self, pid: Pid) {
        if let Some(parent) = self.parent_of.remove(&pid)
            && let Some(siblings) = self.children_of.get_mut(&parent)
        {
            siblings.retain(|&s| s != pid);
            if siblings.is_empty() {
                self.children_of.remove(&parent);
            }
        }
    }

    /// Forgets the dead processes that their parents have reaped since
    /// (the connector does not report reaping), so that a long-lived
    /// process that forks and reaps helpers costs no memory. Run at
    /// forks, amortized as the look at the zombies is: only once there are
    /// twice as many dead as the last look left, so a fork costs a few
    /// reads of /proc at most. (A look at every dead child of the forking
    /// parent at each fork read /proc up to 64 times a fork in a storm,
    /// most of adoptd's time in it.)
    fn forget_reaped_dead(&mut self) {
        self.dead_looked_at = self.dead_looked_at.min(self.dead.len());
        if self.dead.len() <= 2 * self.dead_looked_at.max(32) {
            return;
        }
        // Still dead and unreaped only while /proc shows a zombie of the
        // same parent: a pid the storm's wrap handed to a live process, or
        // to another parent's, was reaped, and kept would stay for ever.
        let reaped: Vec<Pid> = self
            .dead
            .iter()
            .copied()
            .filter(|pid| {
                let parent = self.parent_of.get(pid).copied();
                !proc::read_stat(*pid)
                    .is_some_and(|stat| stat.zombie && Some(stat.parent) == parent)
            })
            .collect();
        for pid in reaped {
            self.dead.remove(&pid);
            self.untrack(pid);
        }
        self.dead_looked_at = self.dead.len();
    }

    /// The nearest ancestor of `pid` that is adoptd's child.
    ///
    /// Recycled pids whose reuse the lineage learnt only in part (events
    /// lost in a storm) can close a loop of parents; the walk notices it
    /// (Brent's cycle detection) within a few laps of the loop, instead of
    /// walking as many steps as the lineage has entries, which at every
    /// exit of a 10,000-process storm made a moment quadratic.
    fn ancestor(&self, pid: Pid) -> Option<Pid> {
        let mut current = pid;
        let (mut marker, mut lap, mut steps) = (pid, 1usize, 0usize);
        loop {
            let parent = *self.parent_of.get(&current)?;
            if parent == self.me {
                return Some(current);
            }
            current = parent;
            if current == marker {
                return None;
            }
            steps += 1;
            if steps == lap {
                (marker, lap, steps) = (current, lap * 2, 0);
            }
        }
    }

    /// A tracked process exited: its children are reparented to adoptd.
    /// The live ones are adopted now; the dead ones (zombies its parent had
    /// not reaped) are remembered and reported when adoptd reaps them.
    fn exited(&mut self, pid: Pid, events: &mut Vec<Event>) {
        if !self.parent_of.contains_key(&pid) {
            return;
        }
        let ancestor = self.ancestor(pid);
        let orphans = self.children_of.remove(&pid).unwrap_or_default();
        for orphan in orphans {
            let orphan_ancestor = ancestor.filter(|&a| a != pid).or(Some(pid));
            if self.dead.remove(&orphan) {
                self.parent_of.remove(&orphan);
                self.zombies.insert(orphan, (pid, orphan_ancestor));
                continue;
            }
            self.parent_of.insert(orphan, self.me);
            self.children.insert(orphan);
            let stat = proc::read_stat(orphan);
            events.push(Event::Adopted {
                pid: orphan,
                previous_parent: Some(pid),
                clues: Clues {
                    session: stat.map(|s| s.session),
                    start_time: stat.map(|s| s.start_time),
                    ancestor: orphan_ancestor,
                    run_of: None,
                    dying: false,
                },
            });
        }
        // adoptd's own children stay tracked until reaped; others stay
        // known as dead until their parent reaps them or dies.
        if !self.children.contains(&pid) {
            self.dead.insert(pid);
        }
    }

    /// Applies connector events, in the order the kernel queued them.
    fn apply(&mut self, queued: &[ConnectorEvent], events: &mut Vec<Event>) {
        for &event in queued {
            match event {
                ConnectorEvent::Fork { parent, child } => {
                    // A new process with a pid the lineage still holds: the
                    // old one was reaped unseen; what is known of it is
                    // stale and must not be taken for the newcomer's.
                    if self.parent_of.contains_key(&child) && !self.children.contains(&child) {
                        self.dead.remove(&child);
                        self.untrack(child);
                    }
                    self.zombies.remove(&child);
                    if parent == self.me && self.births.remove(&child) {
                        self.children.insert(child);
                    }
                    if parent == self.me || self.parent_of.contains_key(&parent) {
                        self.forget_reaped_dead();
                        if !self.parent_of.contains_key(&child) {
                            self.track(parent, child);
                        }
                    }
                }
                ConnectorEvent::Exit { pid } => self.exited(pid, events),
            }
        }
    }

    /// After lost events: rebuild the lineage from /proc, and report
    /// adoptd's children that were adopted unseen.
    fn resync(&mut self, events: &mut Vec<Event>) -> io::Result<()> {
        // Spawned processes whose fork event went with the loss.
        self.children.extend(self.births.drain());
        let mut by_parent: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for (pid, parent) in proc::parents()? {
            by_parent.entry(parent).or_default().push(pid);
        }
        // What the lineage knew before the loss says where adoptd's new
        // children came from, when only their parent's exit was lost.
        let origins: HashMap<Pid, (Option<Pid>, Option<Pid>)> = by_parent
            .get(&self.me)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|child| !self.children.contains(child))
            .map(|&child| {
                let previous = self
                    .parent_of
                    .get(&child)
                    .copied()
                    .filter(|&p| p != self.me);
                let ancestor = previous.and_then(|p| self.ancestor(p).or(Some(p)));
                (child, (previous, ancestor))
            })
            .collect();
        self.parent_of.clear();
        self.children_of.clear();
        let mut queue = vec![self.me];
        while let Some(parent) = queue.pop() {
            for &child in by_parent
                .get(&parent)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                self.track(parent, child);
                queue.push(child);
            }
        }
        self.fill_tracked_set()?;
        let mine: Vec<Pid> = by_parent.get(&self.me).cloned().unwrap_or_default();
        for child in mine {
            if self.children.contains(&child) {
                continue;
            }
            let stat = proc::read_stat(child);
            let (previous_parent, ancestor) = origins.get(&child).copied().unwrap_or_default();
            let mut clues = stat.map(clues_of).unwrap_or_default();
            clues.ancestor = ancestor;
            if stat.is_some_and(|s| s.zombie) {
                // Not a live adoptee: reported as adopted and dead when
                // it is reaped, with what is known of it now.
                self.seen_dead.insert(child, (previous_parent, clues));
                continue;
            }
            self.children.insert(child);
            if previous_parent.is_none() && ancestor.is_none() {
                clues.run_of = self.runs.service_named_by_environment(child);
            }
            events.push(Event::Adopted {
                pid: child,
                previous_parent,
                clues,
            });
        }
        Ok(())
    }

    /// Puts every tracked process in the kernel's set, after the lineage
    /// was rebuilt from /proc: a new set (after a re-exec) names only
    /// adoptd, and a process a tracked one forked between the walk of
    /// /proc and its parent's entering the set had its fork event dropped,
    /// so /proc is walked again until it shows no such process.
    fn fill_tracked_set(&mut self) -> io::Result<()> {
        let Some(set) = self.tracked.take() else {
            return Ok(());
        };
        let filled = self.fill(&set);
        self.tracked = Some(set);
        filled
    }

    fn fill(&mut self, set: &TrackedSet) -> io::Result<()> {
        if set.overflowed() {
            tracing::warn!(
                "the kernel's set of tracked processes is full: every process's fork and exit \
                 now wakes adoptd"
            );
        }
        let mut newcomers: Vec<Pid> = self.parent_of.keys().copied().collect();
        for _ in 0..8 {
            if newcomers.is_empty() {
                break;
            }
            for &pid in &newcomers {
                if let Err(e) = set.insert(pid) {
                    tracing::warn!("cannot put process {pid} in the kernel's tracked set: {e}");
                    return Ok(());
                }
            }
            newcomers.clear();
            for (pid, parent) in proc::parents()? {
                if parent != self.me
                    && self.parent_of.contains_key(&parent)
                    && !self.parent_of.contains_key(&pid)
                {
                    self.track(parent, pid);
                    newcomers.push(pid);
                }
            }
        }
        Ok(())
    }

    /// Forgets the zombies that will never reach adoptd: gone (reaped by
    /// someone else, such as a tracked subreaper) or now another
    /// process's child. A zombie adoptd will reap stays, however long its
    /// turn takes: its previous parent may be a grandchild of adoptd that
    /// died long before adoptd's own child did, and its exit event may
    /// come before the kernel has handed the zombie over (its parent then
    /// still is the previous one). Forgetting it sooner would cost the
    /// lineage the hop, and a failure at its end its service.
    fn forget_zombies_reaped_elsewhere(&mut self) {
        let me = self.me;
        self.zombies.retain(|&pid, (previous, _)| {
            proc::read_stat(pid).is_some_and(|stat| stat.parent == me || stat.parent == *previous)
        });
    }
}

impl AdoptionSource for ProcConnector {
    fn kind(&self) -> SourceKind {
        SourceKind::ProcConnector
    }

    fn shrink_if_sparse(&mut self) -> bool {
        self.children.shrink_if_sparse()
            | self.parent_of.shrink_if_sparse()
            | self.children_of.shrink_if_sparse()
            | self.zombies.shrink_if_sparse()
            | self.dead.shrink_if_sparse()
            | self.seen_dead.shrink_if_sparse()
    }

    fn looks_before_reaping(&self) -> bool {
        true
    }

    fn look_before_reaping(&mut self, pid: Pid) {
        // A child adoptd does not know, dead: only after lost events, or
        // a process that entered from outside. Its session still says
        // which service it came from.
        if !self.children.contains(&pid)
            && !self.births.contains(&pid)
            && !self.zombies.contains_key(&pid)
            && !self.seen_dead.contains_key(&pid)
            && let Some(stat) = proc::read_stat(pid)
        {
            self.seen_dead.insert(pid, (None, clues_of(stat)));
        }
    }

    fn spawned(&mut self, pid: Pid, service: ServiceId, invocation: InvocationId) {
        self.runs.started(pid, service, invocation);
        // Tracked from its fork event on (see `births`).
        self.births.insert(pid);
    }

    fn save(&self) -> serde_json::Value {
        let saved = Saved {
            children: self.children.clone(),
            parent_of: self.parent_of.clone(),
            children_of: self.children_of.clone(),
            zombies: self.zombies.clone(),
            dead: self.dead.clone(),
            runs: Runs::default(),
            births: self.births.clone(),
        };
        let mut value = serde_json::to_value(saved).unwrap_or_default();
        // `Runs` is not `Clone` (it keeps a buffer): written in place.
        if let (Some(object), Ok(runs)) = (value.as_object_mut(), serde_json::to_value(&self.runs))
        {
            object.insert("runs".to_owned(), runs);
        }
        value
    }

    /// The lineage as the old image knew it: the rebuild from /proc at the
    /// next `collect` then tells where each child adopted during the exec
    /// came from, when its parent was tracked.
    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        let saved: Saved = serde_json::from_value(saved)?;
        self.children = saved.children;
        self.parent_of = saved.parent_of;
        self.children_of = saved.children_of;
        self.zombies = saved.zombies;
        self.dead = saved.dead;
        self.runs = saved.runs;
        self.births = saved.births;
        self.resync_pending = true;
        // The new socket's set names only adoptd: what the old image
        // tracked is kept from now on, not only from the rebuild.
        if let Some(set) = &self.tracked {
            for &pid in self
                .parent_of
                .keys()
                .chain(&self.children)
                .chain(&self.births)
            {
                if let Err(e) = set.insert(pid) {
                    tracing::warn!("cannot put process {pid} in the kernel's tracked set: {e}");
                    break;
                }
            }
        }
        Ok(())
    }

    fn wakeup_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn collect(&mut self, reaped: &[(Pid, ExitStatus)], events: &mut Vec<Event>) -> io::Result<()> {
        let mut queued = Vec::new();
        let lost = self.read_events(&mut |event| queued.push(event))?;
        self.apply(&queued, events);
        let restored = std::mem::take(&mut self.resync_pending);
        if lost {
            tracing::warn!("process events were lost; rebuilding the process tree from /proc");
        } else if restored {
            tracing::info!("re-executed: rebuilding the process tree from /proc");
        }
        if lost || restored {
            self.resync(events)?;
        }
        self.reaped(reaped, events);
        Ok(())
    }
}

impl ProcConnector {
    /// Takes in what adoptd reaped. A process still tracked had its exit
    /// event not read yet: the kernel hands a process's children over and
    /// makes it waitable (`exit_notify`) before it sends that event
    /// (`proc_exit_connector`), and the exiting process may be preempted
    /// in between by adoptd, which its SIGCHLD just woke. The reap proves
    /// the exit, so its tracked children are adopted now; the event, when
    /// it comes, finds it untracked and changes nothing.
    fn reaped(&mut self, reaped: &[(Pid, ExitStatus)], events: &mut Vec<Event>) {
        for &(pid, _) in reaped {
            if self.parent_of.contains_key(&pid) {
                self.exited(pid, events);
            }
            // A spawned process is adoptd's child even if its fork event
            // was lost with others.
            if !self.children.remove(&pid) && !self.births.remove(&pid) {
                // A zombie reparented with its parent's death, or (without
                // an explanation) a process that entered from outside or
                // was adopted while events were lost.
                let (seen_parent, mut clues) = self.seen_dead.remove(&pid).unwrap_or_default();
                let previous_parent = match self.zombies.remove(&pid) {
                    Some((parent, ancestor)) => {
                        clues.ancestor = ancestor;
                        Some(parent)
                    }
                    None => seen_parent,
                };
                events.push(Event::Adopted {
                    pid,
                    previous_parent,
                    clues,
                });
            }
            self.untrack(pid);
            self.dead.remove(&pid);
            // Its tracked children were handled at its exit event.
            self.children_of.remove(&pid);
        }
        // Amortized: a storm's moment holds thousands of zombies over many
        // rounds, and a look at each of them every round made it quadratic.
        self.zombies_looked_at = self.zombies_looked_at.min(self.zombies.len());
        if !reaped.is_empty() && self.zombies.len() > 2 * self.zombies_looked_at.max(32) {
            self.forget_zombies_reaped_elsewhere();
            self.zombies_looked_at = self.zombies.len();
        }
    }
}

/// What the source needs from a connector message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectorEvent {
    /// A new process (thread creations are left out).
    Fork { parent: Pid, child: Pid },
    /// A whole process ended (the exit of its thread-group leader).
    Exit { pid: Pid },
}

fn parse_event(message: &[u8]) -> Option<ConnectorEvent> {
    let what = u32_at(message, WHAT)?;
    let data = |index: usize| u32_at(message, EVENT_DATA + 4 * index);
    match what {
        PROC_EVENT_FORK => {
            // parent_pid, parent_tgid, child_pid, child_tgid
            let (parent, child_pid, child) = (data(1)?, data(2)?, data(3)?);
            (child_pid == child).then_some(ConnectorEvent::Fork { parent, child })
        }
        PROC_EVENT_EXIT => {
            // process_pid, process_tgid, exit_code, exit_signal, parent…
            let (pid, tgid) = (data(0)?, data(1)?);
            (pid == tgid).then_some(ConnectorEvent::Exit { pid })
        }
        _ => None,
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset + 4)?;
    Some(u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

/// Subscribes to process events: only `events` (a `PROC_EVENT_*` mask,
/// as `struct proc_input` of kernels since 6.6), or all of them.
fn send_listen(socket: &OwnedFd, events: Option<u32>) -> io::Result<()> {
    let payload: u16 = if events.is_some() { 8 } else { 4 };
    let mut message = Vec::with_capacity(NLMSG_HDRLEN + CN_MSG_LEN + 8);
    let total = (NLMSG_HDRLEN + CN_MSG_LEN) as u32 + u32::from(payload);
    message.extend_from_slice(&total.to_ne_bytes());
    message.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    message.extend_from_slice(&0u16.to_ne_bytes()); // flags
    message.extend_from_slice(&0u32.to_ne_bytes()); // seq
    message.extend_from_slice(&std::process::id().to_ne_bytes());
    message.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    message.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes()); // seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // ack
    message.extend_from_slice(&payload.to_ne_bytes()); // len
    message.extend_from_slice(&0u16.to_ne_bytes()); // flags
    message.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    if let Some(events) = events {
        message.extend_from_slice(&events.to_ne_bytes());
    }
    net::send(socket, &message, net::SendFlags::empty())?;
    Ok(())
}

/// A receive buffer large enough for a storm: beyond the system's limit
/// where adoptd may (as root), else as large as the limit allows.
fn set_receive_buffer(socket: &OwnedFd) {
    if net::sockopt::set_socket_recv_buffer_size_force(socket, RECEIVE_BUFFER).is_err() {
        let _ = net::sockopt::set_socket_recv_buffer_size(socket, RECEIVE_BUFFER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, data: [u32; 6]) -> Vec<u8> {
        let mut bytes = vec![0u8; EVENT_DATA];
        bytes[NLMSG_HDRLEN + CN_MSG_LEN..NLMSG_HDRLEN + CN_MSG_LEN + 4]
            .copy_from_slice(&what.to_ne_bytes());
        for value in data {
            bytes.extend_from_slice(&value.to_ne_bytes());
        }
        bytes
    }

    #[test]
    fn the_socket_filter_keeps_exactly_what_the_source_reads() {
        let program = filter::program();
        const EXEC: u32 = 0x0000_0002;
        let cases = [
            (PROC_EVENT_FORK, [10, 10, 11, 11, 0, 0]), // a process forks
            (PROC_EVENT_FORK, [10, 10, 12, 10, 0, 0]), // a thread is made
            (PROC_EVENT_FORK, [12, 10, 13, 13, 0, 0]), // a thread forks
            (PROC_EVENT_EXIT, [11, 11, 0, 9, 10, 10]), // a process ends
            (PROC_EVENT_EXIT, [12, 10, 0, 0, 10, 10]), // a thread ends
            (EXEC, [11, 11, 0, 0, 0, 0]),              // an exec
            (0, [0, 0, 0, 0, 0, 0]),                   // the listen's ack
        ];
        for (what, data) in cases {
            let packet = message(what, data);
            let kept = filter::run(&program, &packet) != 0;
            assert_eq!(
                kept,
                parse_event(&packet).is_some(),
                "event {what:#x} {data:?}"
            );
        }
        // A message too short for the fields it would compare is dropped.
        let mut short = message(PROC_EVENT_FORK, [10, 10, 11, 11, 0, 0]);
        short.truncate(EVENT_DATA + 8);
        assert_eq!(filter::run(&program, &short), 0);
    }

    /// A source with no socket, fed events by hand, for adoptd as `me`.
    fn detached(me: Pid) -> ProcConnector {
        let socket = OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        ProcConnector {
            socket,
            me,
            children: HashSet::new(),
            parent_of: HashMap::new(),
            children_of: HashMap::new(),
            zombies: HashMap::new(),
            dead: HashSet::new(),
            buffer: Vec::new(),
            runs: Runs::default(),
            births: HashSet::new(),
            resync_pending: false,
            seen_dead: HashMap::new(),
            zombies_looked_at: 0,
            dead_looked_at: 0,
            tracked: None,
        }
    }

    fn service() -> ServiceId {
        crate::tracker::Tracker::new().add_service(
            crate::tracker::Policy::default(),
            crate::tracker::Now {
                monotonic: std::time::Duration::ZERO,
                realtime_us: 0,
            },
        )
    }

    fn adoptions(events: &[Event]) -> Vec<(Pid, Option<Pid>)> {
        events
            .iter()
            .filter_map(|e| match *e {
                Event::Adopted {
                    pid,
                    previous_parent,
                    ..
                } => Some((pid, previous_parent)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn events_of_an_earlier_process_with_a_spawned_pid_are_not_the_new_ones() {
        // Pid 500 belonged to a stranger that forked 501 and exited; its
        // events were still queued when adoptd spawned a service as 500.
        let mut source = detached(1);
        source.spawned(500, service(), InvocationId::new());
        let mut events = Vec::new();
        source.apply(
            &[
                ConnectorEvent::Fork {
                    parent: 500,
                    child: 501,
                },
                ConnectorEvent::Exit { pid: 500 },
                ConnectorEvent::Fork {
                    parent: 1,
                    child: 500,
                },
                ConnectorEvent::Exit { pid: 500 },
            ],
            &mut events,
        );
        assert_eq!(adoptions(&events), vec![]);
        assert!(source.children.contains(&500));
        assert!(!source.parent_of.contains_key(&501));
    }

    /// adoptd (pid 1) spawned 600, which forked 601: the source once
    /// both fork events are read.
    fn spawned_600_that_forked_601() -> ProcConnector {
        let mut source = detached(1);
        source.spawned(600, service(), InvocationId::new());
        let mut events = Vec::new();
        source.apply(
            &[
                ConnectorEvent::Fork {
                    parent: 1,
                    child: 600,
                },
                ConnectorEvent::Fork {
                    parent: 600,
                    child: 601,
                },
            ],
            &mut events,
        );
        assert_eq!(events, vec![]);
        source
    }

    #[test]
    fn a_spawned_process_that_forks_and_exits_hands_its_child_to_adoptd() {
        let mut source = spawned_600_that_forked_601();
        let mut events = Vec::new();
        source.apply(&[ConnectorEvent::Exit { pid: 600 }], &mut events);
        assert_eq!(adoptions(&events), vec![(601, Some(600))]);
        assert!(source.children.contains(&601));
    }

    #[test]
    fn a_process_reaped_before_its_exit_event_hands_its_child_to_adoptd() {
        // 600 exited; adoptd, woken by the SIGCHLD, reaped it before the
        // kernel sent its exit event.
        let mut source = spawned_600_that_forked_601();
        let mut events = Vec::new();
        source.reaped(&[(600, ExitStatus::Code(0))], &mut events);
        assert_eq!(adoptions(&events), vec![(601, Some(600))]);
        assert!(source.children.contains(&601));
        // The exit event, read at the next batch, changes nothing.
        let mut later = Vec::new();
        source.apply(&[ConnectorEvent::Exit { pid: 600 }], &mut later);
        assert_eq!(later, vec![]);
        assert_eq!(source.parent_of.get(&601), Some(&1));
        // Nor does a reap after the event was read.
        source.apply(
            &[
                ConnectorEvent::Fork {
                    parent: 601,
                    child: 602,
                },
                ConnectorEvent::Exit { pid: 601 },
            ],
            &mut later,
        );
        source.reaped(&[(601, ExitStatus::Code(0))], &mut later);
        assert_eq!(adoptions(&later), vec![(602, Some(601))]);
    }

    /// A child of this test process that has exited and waits to be
    /// reaped.
    fn real_zombie() -> Pid {
        // SAFETY: the child only calls _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", io::Error::last_os_error());
        if child == 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        let pid = child.unsigned_abs();
        // SAFETY: siginfo_t is plain data, valid when zeroed.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for the child to be waitable, without reaping it.
        let waited =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        assert_eq!(waited, 0, "waitid: {}", io::Error::last_os_error());
        pid
    }

    fn reap(pid: Pid) {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    }

    #[test]
    fn the_nearest_child_of_adoptd_is_found_and_a_loop_of_recycled_parents_ends() {
        let me = 1;
        let mut source = detached(me);
        source.track(me, 10);
        source.track(10, 11);
        source.track(11, 12);
        assert_eq!(source.ancestor(12), Some(10));
        // 20 and 21 name each other (recycled pids), below a long tail.
        source.track(20, 21);
        source.track(21, 20);
        for pid in 22..5000 {
            source.track(pid - 1, pid);
        }
        assert_eq!(source.ancestor(4999), None);
        assert_eq!(source.ancestor(20), None);
    }

    #[test]
    fn a_zombie_handed_down_from_a_grandchild_waits_for_its_reap() {
        // A service's grandchild 701 dies after its child had: the zombie
        // is adoptd's to reap, whenever its turn comes, and its previous
        // parent must still be known then, though 701 was never adoptd's
        // child. A zombie someone else reaped is forgotten.
        let me = std::process::id();
        let zombie = real_zombie();
        let reaped_elsewhere = real_zombie();
        reap(reaped_elsewhere);
        let mut source = detached(me);
        source.spawned(700, service(), InvocationId::new());
        let mut events = Vec::new();
        source.apply(
            &[
                ConnectorEvent::Fork {
                    parent: me,
                    child: 700,
                },
                ConnectorEvent::Fork {
                    parent: 700,
                    child: 701,
                },
                ConnectorEvent::Fork {
                    parent: 701,
                    child: zombie,
                },
                ConnectorEvent::Fork {
                    parent: 701,
                    child: reaped_elsewhere,
                },
                ConnectorEvent::Exit { pid: zombie },
                ConnectorEvent::Exit {
                    pid: reaped_elsewhere,
                },
                ConnectorEvent::Exit { pid: 701 },
            ],
            &mut events,
        );
        // What a round that reaped something else does.
        source.forget_zombies_reaped_elsewhere();
        reap(zombie);
        assert_eq!(source.zombies.get(&zombie), Some(&(701, Some(700))));
        assert!(!source.zombies.contains_key(&reaped_elsewhere));
    }

    #[test]
    fn a_process_fork_is_an_event_and_a_thread_is_not() {
        assert_eq!(
            parse_event(&message(PROC_EVENT_FORK, [10, 10, 11, 11, 0, 0])),
            Some(ConnectorEvent::Fork {
                parent: 10,
                child: 11
            })
        );
        assert_eq!(
            parse_event(&message(PROC_EVENT_FORK, [10, 10, 12, 11, 0, 0])),
            None
        );
    }

    #[test]
    fn only_a_leader_exit_ends_a_process() {
        assert_eq!(
            parse_event(&message(PROC_EVENT_EXIT, [11, 11, 0, 17, 1, 1])),
            Some(ConnectorEvent::Exit { pid: 11 })
        );
        assert_eq!(
            parse_event(&message(PROC_EVENT_EXIT, [12, 11, 0, 17, 1, 1])),
            None
        );
    }

    #[test]
    fn short_or_unknown_messages_are_ignored() {
        assert_eq!(parse_event(&[0u8; 10]), None);
        assert_eq!(parse_event(&message(0x80, [1, 1, 1, 1, 0, 0])), None);
    }
}
