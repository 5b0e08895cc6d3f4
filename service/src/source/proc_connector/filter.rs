//! The socket filter of the connector: a classic BPF program, attached
//! with `SO_ATTACH_FILTER`, that lets into the socket only the events the
//! source reads, so that the others neither wake adoptd nor take room in
//! its queue.
//!
//! The program keeps exactly what [`super::parse_event`] keeps: the fork
//! of a process (not of a thread: `child_pid == child_tgid`) and the exit
//! of a process (`pid == tgid`, the thread group's leader). Everything
//! else (exec, uid, comm, … on kernels that do not filter the event types
//! themselves, and every thread's creation and end on all kernels) is
//! dropped in the kernel. Nothing it drops could change what the source
//! reports, so lineage stays exact; an overflow is still reported, as
//! only kept events are queued.
//!
//! Offsets are those of a netlink message of the connector: `nlmsghdr`
//! (16 bytes), `cn_msg` (20), then `proc_event`: `what` at 36, the event's
//! data from 52. A classic BPF load reads network byte order, so constants
//! are compared in that order; two fields are compared with each other as
//! loaded, which needs no order.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};

use super::{EVENT_DATA, PROC_EVENT_EXIT, PROC_EVENT_FORK, WHAT};

/// Attaches [`program`] to `socket`.
pub(super) fn attach(socket: &OwnedFd) -> io::Result<()> {
    let mut program = program();
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(io::Error::other)?,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, alive for the call (the kernel
    // copies the instructions), and its size is passed with it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&fprog).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sock_fprog>())
                .map_err(io::Error::other)?,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keep the whole message.
const KEEP: u32 = u32::MAX;
/// Drop it.
const DROP: u32 = 0;

/// The program: see the module's header.
pub(super) fn program() -> Vec<libc::sock_filter> {
    let load = |offset: usize| statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    // A constant as a load from the message sees it.
    let loaded = |value: u32| u32::from_be_bytes(value.to_ne_bytes());
    let pid = |index: usize| EVENT_DATA + 4 * index;
    vec![
        /* 0 */ load(WHAT),
        /* 1 */ jump_if_equal(loaded(PROC_EVENT_FORK), 1, 0), // → 3
        /* 2 */ jump_if_equal(loaded(PROC_EVENT_EXIT), 5, 11), // → 8, else → 14
        // fork: child_pid (data 2) == child_tgid (data 3)
        /* 3 */ load(pid(2)),
        /* 4 */ statement(libc::BPF_ST, 0),
        /* 5 */ load(pid(3)),
        /* 6 */ statement(libc::BPF_LDX | libc::BPF_MEM, 0),
        /* 7 */
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_X, 0, 5, 6), // → 13, else → 14
        // exit: process_pid (data 0) == process_tgid (data 1)
        /* 8 */ load(pid(0)),
        /* 9 */ statement(libc::BPF_ST, 0),
        /* 10 */ load(pid(1)),
        /* 11 */ statement(libc::BPF_LDX | libc::BPF_MEM, 0),
        /* 12 */
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_X, 0, 0, 1), // → 13, else → 14
        /* 13 */ statement(libc::BPF_RET | libc::BPF_K, KEEP as usize),
        /* 14 */ statement(libc::BPF_RET | libc::BPF_K, DROP as usize),
    ]
}

fn statement(code: u32, k: usize) -> libc::sock_filter {
    libc::sock_filter {
        // Every opcode of classic BPF fits 16 bits.
        code: code as u16,
        jt: 0,
        jf: 0,
        k: k as u32,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, k, jt, jf)
}

/// Runs a classic BPF program on `packet` as the kernel would, for the
/// instructions [`program`] uses; the length it keeps.
#[cfg(test)]
pub(super) fn run(program: &[libc::sock_filter], packet: &[u8]) -> u32 {
    let (mut a, mut x, mut memory) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0;
    while let Some(instruction) = program.get(pc) {
        let code = u32::from(instruction.code);
        let k = instruction.k;
        pc += 1;
        if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
            let offset = k as usize;
            let Some(bytes) = packet.get(offset..offset + 4) else {
                // Out of the packet: the kernel drops it.
                return 0;
            };
            a = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        } else if code == libc::BPF_ST {
            memory[k as usize] = a;
        } else if code == libc::BPF_LDX | libc::BPF_MEM {
            x = memory[k as usize];
        } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K
            || code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_X
        {
            let other = if code & libc::BPF_X != 0 { x } else { k };
            let skip = if a == other {
                instruction.jt
            } else {
                instruction.jf
            };
            pc += usize::from(skip);
        } else if code == libc::BPF_RET | libc::BPF_K {
            return k;
        } else {
            panic!("an instruction the interpreter does not know: {code:#x}");
        }
    }
    panic!("the program ran off its end");
}
