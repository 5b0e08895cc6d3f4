//! The connector's filter over the tracked processes: an eBPF socket
//! filter with a set of pids in a kernel map, attached with
//! `SO_ATTACH_BPF` where adoptd may load one (CAP_BPF or CAP_SYS_ADMIN).
//!
//! The program keeps the fork of a process whose parent is in the set, and
//! puts the child in the set as it keeps the event; it keeps the exit of a
//! process in the set, and takes it out. Everything else is dropped in the
//! kernel: the machine's own process churn (a build, cron, CGI) neither
//! wakes adoptd nor takes room in its queue. adoptd's own pid is put in
//! the set first, so the set holds exactly adoptd's descendants, which is
//! what the source's lineage follows.
//!
//! Exact, with no race: the kernel sends a fork's event (and runs this
//! filter) inside `copy_process()`, before the new child may run, so no
//! child of a tracked process can fork before it is in the set; and the
//! filter runs before the socket's queue is checked, so the set stays
//! whole through an overflow. Only a rebuild after a re-exec (a new
//! socket, a new set) fills it from /proc ([`TrackedSet::insert`]).
//!
//! Bounded: the set holds [`CAPACITY`] pids, allocated as they come. If it
//! is ever full, the program marks it so and from then on keeps every
//! process's fork and exit, as the classic filter does: the source then
//! sees everything again, so nothing is lost, only the saving.
//!
//! A thread-group leader that ends before its other threads leaves the set
//! as the connector reports it (the source treats that exit as the
//! process's, as it always did); forks of the remaining threads are then
//! not kept.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::{EVENT_DATA, PROC_EVENT_EXIT, PROC_EVENT_FORK, WHAT};
use crate::tracker::Pid;

/// How many processes the set holds.
pub(super) const CAPACITY: u32 = 1 << 16;

/// The kernel's set of tracked processes, and the flag that says it
/// overflowed.
#[derive(Debug)]
pub(super) struct TrackedSet {
    pids: OwnedFd,
    full: OwnedFd,
}

impl TrackedSet {
    /// Makes the set with `me` in it and attaches the program to `socket`.
    pub(super) fn attach(socket: &OwnedFd, me: Pid) -> io::Result<Self> {
        let pids = map_create(MAP_TYPE_HASH, CAPACITY, MAP_F_NO_PREALLOC)?;
        let full = map_create(MAP_TYPE_ARRAY, 1, 0)?;
        let set = TrackedSet { pids, full };
        set.insert(me)?;
        let program = prog_load(&program(set.pids.as_raw_fd(), set.full.as_raw_fd()))?;
        let fd = program.as_raw_fd();
        // SAFETY: `fd` is a valid descriptor, alive for the call; the
        // kernel reads an int from the pointer and size given.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                std::ptr::from_ref(&fd).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        // The socket holds the program now.
        drop(program);
        Ok(set)
    }

    /// Puts `pid` in the set.
    pub(super) fn insert(&self, pid: Pid) -> io::Result<()> {
        let value: u32 = 1;
        map_update(&self.pids, &pid.to_ne_bytes(), &value.to_ne_bytes())
    }

    /// Whether the set overflowed, so the filter keeps every event.
    pub(super) fn overflowed(&self) -> bool {
        let mut value = [0u8; 4];
        map_lookup(&self.full, &0u32.to_ne_bytes(), &mut value).is_ok()
            && u32::from_ne_bytes(value) != 0
    }

    /// Whether `pid` is in the set.
    #[cfg(test)]
    pub(super) fn contains(&self, pid: Pid) -> bool {
        let mut value = [0u8; 4];
        map_lookup(&self.pids, &pid.to_ne_bytes(), &mut value).is_ok()
    }
}

// The kernel's ABI (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const MAP_TYPE_HASH: u32 = 1;
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_F_NO_PREALLOC: u32 = 1;
const PROG_TYPE_SOCKET_FILTER: u32 = 1;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_MAP_UPDATE: i32 = 2;
const HELPER_MAP_DELETE: i32 = 3;
const HELPER_SKB_LOAD_BYTES: i32 = 26;

/// `union bpf_attr`, as the words the commands used here read; the rest
/// must be zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }

    fn u32_at(mut self, offset: usize, value: u32) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn u64_at(mut self, offset: usize, value: u64) -> Self {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }
}

/// The `bpf(2)` system call; a new descriptor where the command makes one.
fn bpf(command: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed `union bpf_attr` of the size passed, with
    // the command's fields set; pointers in it name live buffers.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<Attr>(),
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_create(map_type: u32, entries: u32, flags: u32) -> io::Result<OwnedFd> {
    // map_type, key_size, value_size, max_entries, map_flags
    let mut attr = Attr::new()
        .u32_at(0, map_type)
        .u32_at(4, 4)
        .u32_at(8, 4)
        .u32_at(12, entries)
        .u32_at(16, flags);
    owned(bpf(BPF_MAP_CREATE, &mut attr)?)
}

fn map_update(map: &OwnedFd, key: &[u8; 4], value: &[u8; 4]) -> io::Result<()> {
    // map_fd, key, value, flags (BPF_ANY)
    let fd = u32::try_from(map.as_raw_fd()).map_err(io::Error::other)?;
    let mut attr = Attr::new()
        .u32_at(0, fd)
        .u64_at(8, key.as_ptr() as u64)
        .u64_at(16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn map_lookup(map: &OwnedFd, key: &[u8; 4], value: &mut [u8; 4]) -> io::Result<()> {
    let fd = u32::try_from(map.as_raw_fd()).map_err(io::Error::other)?;
    let mut attr = Attr::new()
        .u32_at(0, fd)
        .u64_at(8, key.as_ptr() as u64)
        .u64_at(16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

fn prog_load(program: &[Instruction]) -> io::Result<OwnedFd> {
    let license = c"MIT";
    let count = u32::try_from(program.len()).map_err(io::Error::other)?;
    // prog_type, insn_cnt, insns, license
    let mut attr = Attr::new()
        .u32_at(0, PROG_TYPE_SOCKET_FILTER)
        .u32_at(4, count)
        .u64_at(8, program.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64);
    owned(bpf(BPF_PROG_LOAD, &mut attr)?)
}

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Instruction {
    code: u8,
    /// Destination register in the low four bits, source in the high.
    registers: u8,
    offset: i16,
    immediate: i32,
}

// Registers: r0 return value, r1–r5 arguments (clobbered by calls),
// r6–r9 kept across calls, r10 the frame pointer.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const FP: u8 = 10;

fn op(code: u8, dst: u8, src: u8, offset: i16, immediate: i32) -> Instruction {
    Instruction {
        code,
        registers: dst | (src << 4),
        offset,
        immediate,
    }
}

fn mov(dst: u8, src: u8) -> Instruction {
    op(0xbf, dst, src, 0, 0)
}

/// A 32-bit move of a constant: the upper half becomes zero.
fn mov32_imm(dst: u8, immediate: u32) -> Instruction {
    op(0xb4, dst, 0, 0, immediate as i32)
}

fn add_imm(dst: u8, immediate: i32) -> Instruction {
    op(0x07, dst, 0, 0, immediate)
}

/// `dst = *(u32 *)(src + offset)`.
fn load32(dst: u8, src: u8, offset: i16) -> Instruction {
    op(0x61, dst, src, offset, 0)
}

/// `*(u32 *)(dst + offset) = immediate`.
fn store32_imm(dst: u8, offset: i16, immediate: i32) -> Instruction {
    op(0x62, dst, 0, offset, immediate)
}

fn call(helper: i32) -> Instruction {
    op(0x85, 0, 0, 0, helper)
}

fn exit() -> Instruction {
    op(0x95, 0, 0, 0, 0)
}

/// The two instructions that load a map's address.
fn load_map(dst: u8, map: libc::c_int) -> [Instruction; 2] {
    [op(0x18, dst, PSEUDO_MAP_FD, 0, map), op(0, 0, 0, 0, 0)]
}

/// A jump, to a label resolved once the program is laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Fork,
    Exit,
    Keep,
    Drop,
}

enum Step {
    Do(Instruction),
    /// `if dst == src goto` (`0x1d`), `!=` (`0x5d`), `== imm` (`0x15`),
    /// `!= imm` (`0x55`), `goto` (`0x05`).
    Jump(u8, u8, u8, i32, Label),
    Mark(Label),
}

/// Where the event is copied on the stack: 32 bytes from `what` on.
const COPY: i16 = -32;
const AT_WHAT: i16 = COPY;
/// The event's data words: fork (parent pid, parent tgid, child pid,
/// child tgid), exit (pid, tgid, …).
const AT_DATA: i16 = COPY + (EVENT_DATA - WHAT) as i16;
const KEY_ZERO: i16 = -36;
const VALUE_ONE: i16 = -40;

/// The program: see the module's header.
fn program(pids: libc::c_int, full: libc::c_int) -> Vec<Instruction> {
    use Label::*;
    use Step::{Do, Jump, Mark};
    let data = |index: i16| AT_DATA + 4 * index;
    let mut steps: Vec<Step> = vec![
        Do(mov(R6, R1)),
        // skb_load_bytes(skb, WHAT, fp + COPY, 32)
        Do(mov(R1, R6)),
        Do(mov32_imm(R2, WHAT as u32)),
        Do(mov(R3, FP)),
        Do(add_imm(R3, i32::from(COPY))),
        Do(mov32_imm(R4, (-COPY) as u32)),
        Do(call(HELPER_SKB_LOAD_BYTES)),
        // Too short to be an event.
        Jump(0x55, R0, 0, 0, Drop),
        Do(load32(R8, FP, AT_WHAT)),
        // r7 = the overflow flag.
        Do(store32_imm(FP, KEY_ZERO, 0)),
    ];
    steps.extend(load_map(R1, full).map(Do));
    steps.extend([
        Do(mov(R2, FP)),
        Do(add_imm(R2, i32::from(KEY_ZERO))),
        Do(call(HELPER_MAP_LOOKUP)),
        Jump(0x15, R0, 0, 0, Drop),
        Do(mov(R7, R0)),
        Do(store32_imm(FP, VALUE_ONE, 1)),
        Do(mov32_imm(R9, PROC_EVENT_FORK)),
        Jump(0x1d, R8, R9, 0, Fork),
        Do(mov32_imm(R9, PROC_EVENT_EXIT)),
        Jump(0x1d, R8, R9, 0, Exit),
        Jump(0x05, 0, 0, 0, Drop),
        // A fork: of a process, not a thread (child pid == child tgid).
        Mark(Fork),
    ]);
    steps.extend(a_process_while_the_set_holds(data(2), data(3)));
    // Its parent (tgid) tracked?
    steps.extend(load_map(R1, pids).map(Do));
    steps.extend([
        Do(mov(R2, FP)),
        Do(add_imm(R2, i32::from(data(1)))),
        Do(call(HELPER_MAP_LOOKUP)),
        Jump(0x15, R0, 0, 0, Drop),
    ]);
    // The child joins the set.
    steps.extend(load_map(R1, pids).map(Do));
    steps.extend([
        Do(mov(R2, FP)),
        Do(add_imm(R2, i32::from(data(3)))),
        Do(mov(R3, FP)),
        Do(add_imm(R3, i32::from(VALUE_ONE))),
        Do(mov32_imm(R4, 0)),
        Do(call(HELPER_MAP_UPDATE)),
        Jump(0x15, R0, 0, 0, Keep),
        // The set is full: keep everything from now on.
        Do(store32_imm(R7, 0, 1)),
        Jump(0x05, 0, 0, 0, Keep),
        // An exit: of a whole process (pid == tgid), tracked.
        Mark(Exit),
    ]);
    steps.extend(a_process_while_the_set_holds(data(0), data(1)));
    // Taken out of the set; kept if it was in it.
    steps.extend(load_map(R1, pids).map(Do));
    steps.extend([
        Do(mov(R2, FP)),
        Do(add_imm(R2, i32::from(data(1)))),
        Do(call(HELPER_MAP_DELETE)),
        Jump(0x15, R0, 0, 0, Keep),
        Jump(0x05, 0, 0, 0, Drop),
        // The whole message, or nothing.
        Mark(Keep),
        Do(mov32_imm(R0, u32::MAX)),
        Do(exit()),
        Mark(Drop),
        Do(mov32_imm(R0, 0)),
        Do(exit()),
    ]);
    assemble(&steps)
}

/// Drops the event unless the words at `pid` and `tgid` are equal (a
/// process, not a thread), and keeps it whole if the set is full (the
/// flag's address in r7): what a fork and an exit both check first.
fn a_process_while_the_set_holds(pid: i16, tgid: i16) -> [Step; 5] {
    [
        Step::Do(load32(R1, FP, pid)),
        Step::Do(load32(R2, FP, tgid)),
        Step::Jump(0x5d, R1, R2, 0, Label::Drop),
        Step::Do(load32(R1, R7, 0)),
        Step::Jump(0x55, R1, 0, 0, Label::Keep),
    ]
}

/// Lays the steps out, resolving each jump to its label.
fn assemble(steps: &[Step]) -> Vec<Instruction> {
    let mut at = Vec::new();
    let mut index = 0usize;
    for step in steps {
        match step {
            Step::Mark(label) => at.push((*label, index)),
            _ => index += 1,
        }
    }
    let target = |label: Label| at.iter().find(|&&(l, _)| l == label).map_or(0, |&(_, i)| i);
    let mut program = Vec::with_capacity(index);
    for step in steps {
        match *step {
            Step::Do(instruction) => program.push(instruction),
            Step::Jump(code, dst, src, immediate, label) => {
                let here = program.len() as i64;
                let offset = target(label) as i64 - here - 1;
                program.push(op(
                    code,
                    dst,
                    src,
                    i16::try_from(offset).unwrap_or(i16::MAX),
                    immediate,
                ));
            }
            Step::Mark(_) => {}
        }
    }
    program
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use rustix::net;

    use super::{
        super::{
            CN_IDX_PROC, ConnectorEvent, NLMSG_HDRLEN, align4, parse_event, send_listen, u32_at,
        },
        *,
    };

    /// A connector socket with the program attached, tracking `root`;
    /// `None` where adoptd's privileges are missing (the test then says
    /// it skips).
    fn connector(root: Pid) -> Option<(OwnedFd, TrackedSet)> {
        let socket = net::socket_with(
            net::AddressFamily::NETLINK,
            net::SocketType::DGRAM,
            net::SocketFlags::CLOEXEC,
            Some(net::netlink::CONNECTOR),
        )
        .ok()?;
        let set = match TrackedSet::attach(&socket, root) {
            Ok(set) => set,
            Err(e) => {
                eprintln!("skipped: cannot load the eBPF filter here: {e}");
                return None;
            }
        };
        net::bind(
            &socket,
            &net::netlink::SocketAddrNetlink::new(0, CN_IDX_PROC),
        )
        .ok()?;
        // Every event type, so the program's own choice is what is seen.
        send_listen(&socket, None).ok()?;
        Some((socket, set))
    }

    /// Reads events until `until` says so; panics after a minute.
    fn read_until(
        socket: &OwnedFd,
        seen: &mut Vec<ConnectorEvent>,
        until: impl Fn(&[ConnectorEvent]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buffer = vec![0u8; 64 * 1024];
        while !until(seen) {
            assert!(Instant::now() < deadline, "events seen: {seen:?}");
            let timeout = rustix::event::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            let mut poll = [rustix::event::PollFd::new(
                socket,
                rustix::event::PollFlags::IN,
            )];
            if rustix::event::poll(&mut poll, Some(&timeout)).unwrap_or(0) == 0 {
                continue;
            }
            let Ok((n, _)) = net::recv(socket, &mut buffer[..], net::RecvFlags::DONTWAIT) else {
                continue;
            };
            let mut message = &buffer[..n];
            while message.len() >= NLMSG_HDRLEN {
                let length = u32_at(message, 0).unwrap_or(0) as usize;
                if length < NLMSG_HDRLEN || length > message.len() {
                    break;
                }
                seen.extend(parse_event(&message[..length]));
                message = &message[align4(length).min(message.len())..];
            }
        }
    }

    #[test]
    fn the_kernel_keeps_the_events_of_tracked_processes_and_drops_the_others() {
        // `tracked` forks a child when told, and waits for it; the test's
        // own children are not in the set.
        let mut tracked = Command::new("/bin/sh")
            .args(["-c", "read line; /bin/true; read line"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh");
        let root = tracked.id();
        let Some((socket, set)) = connector(root) else {
            let _ = tracked.kill();
            let _ = tracked.wait();
            return;
        };
        let stranger = Command::new("/bin/true").spawn().expect("true");
        let stranger_pid = stranger.id();
        let _ = { stranger }.wait();
        let mut stdin = tracked.stdin.take().expect("stdin");
        let _ = stdin.write_all(b"go\n");
        let mut seen = Vec::new();
        // The tracked process's child: its fork and its exit.
        read_until(&socket, &mut seen, |seen| {
            seen.iter().any(|e| {
                matches!(*e, ConnectorEvent::Exit { pid }
                    if seen.contains(&ConnectorEvent::Fork { parent: root, child: pid }))
            })
        });
        let _ = stdin.write_all(b"done\n");
        drop(stdin);
        let _ = tracked.wait();
        read_until(&socket, &mut seen, |seen| {
            seen.contains(&ConnectorEvent::Exit { pid: root })
        });
        let strangers: Vec<&ConnectorEvent> = seen
            .iter()
            .filter(|e| match **e {
                ConnectorEvent::Fork { parent, child } => parent != root && child == stranger_pid,
                ConnectorEvent::Exit { pid } => pid == stranger_pid,
            })
            .collect();
        assert!(strangers.is_empty(), "events of a stranger: {strangers:?}");
        let children: Vec<Pid> = seen
            .iter()
            .filter_map(|e| match *e {
                ConnectorEvent::Fork { parent, child } if parent == root => Some(child),
                _ => None,
            })
            .collect();
        assert_eq!(children.len(), 1, "events: {seen:?}");
        // In the set from its fork to its exit; the root left at its own.
        assert!(!set.contains(children[0]));
        assert!(!set.contains(root));
        assert!(!set.overflowed());
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let program = program(3, 4);
        for (i, instruction) in program.iter().enumerate() {
            if matches!(instruction.code, 0x05 | 0x15 | 0x1d | 0x55 | 0x5d) {
                let target = i as i64 + 1 + i64::from(instruction.offset);
                assert!(
                    (0..program.len() as i64).contains(&target),
                    "jump at {i} to {target}"
                );
            }
        }
        assert_eq!(program.last().map(|i| i.code), Some(0x95));
    }
}
