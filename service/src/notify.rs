//! The sd_notify socket: how services with `expect = "notify"` say they
//! are ready.
//!
//! One datagram socket in the abstract namespace
//! (`@adoptd/notify/<32 hex digits>`), so that a service in a chroot
//! reaches it too, given to those services as `$NOTIFY_SOCKET`. The socket
//! has SO_PASSCRED: the kernel stamps every message with the sender's pid,
//! and a process cannot speak as another. The supervisor turns that pid
//! into a service (the sender, or its nearest ancestor adoptd tracks), so
//! a message only ever concerns the sender's own service, whoever can reach
//! the socket.
//!
//! Of the protocol's assignments, `READY=1` and `MAINPID=` are acted on and
//! `STATUS=` is logged; others (`RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`,
//! …) are accepted and ignored. Descriptors passed along (`FDSTORE=1`) do
//! not fit the control buffer, so the kernel closes them.

use std::{
    io::{self, IoSliceMut},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};

use crate::{invocation::InvocationId, tracker::Pid};

/// The largest message read; longer ones are cut and ignored.
const MESSAGE_LIMIT: usize = 4096;

/// The socket services notify.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    /// `$NOTIFY_SOCKET` for the services.
    address: String,
}

/// One message, as far as adoptd acts on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The sender's pid, from its credentials.
    pub sender: Pid,
    pub ready: bool,
    pub main_pid: Option<Pid>,
    pub status: Option<String>,
}

impl NotifySocket {
    /// Binds a fresh socket in the abstract namespace.
    pub fn open() -> io::Result<Self> {
        let name = format!("adoptd/notify/{}", InvocationId::new());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
        socket.set_nonblocking(true)?;
        setsockopt(&socket, sockopt::PassCred, &true).map_err(io::Error::from)?;
        Ok(NotifySocket {
            socket,
            address: format!("@{name}"),
        })
    }

    /// The socket a re-exec passed on ([`crate::reexec`]): the services
    /// keep the address they were given, and messages sent during the exec
    /// wait in it.
    pub fn inherit(socket: std::os::fd::OwnedFd, address: String) -> io::Result<Self> {
        let socket = UnixDatagram::from(socket);
        socket.set_nonblocking(true)?;
        Ok(NotifySocket { socket, address })
    }

    /// The value of `$NOTIFY_SOCKET`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Reads every queued message; messages without credentials or cut
    /// short are dropped.
    pub fn read_all(&self, messages: &mut Vec<Message>) -> io::Result<()> {
        let mut buffer = [0u8; MESSAGE_LIMIT];
        loop {
            let mut control = nix::cmsg_space!(libc::ucred);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let received = recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let received = match received {
                Ok(received) => received,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if received.flags.contains(MsgFlags::MSG_TRUNC) {
                tracing::warn!("ignoring a notification longer than {MESSAGE_LIMIT} bytes");
                continue;
            }
            let sender = received.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|cmsg| match cmsg {
                    ControlMessageOwned::ScmCredentials(credentials) => {
                        Pid::try_from(credentials.pid()).ok()
                    }
                    _ => None,
                })
            });
            let length = received.bytes;
            let Some(sender) = sender.filter(|&pid| pid > 0) else {
                continue;
            };
            messages.push(parse(sender, &buffer[..length]));
        }
    }
}

impl AsRawFd for NotifySocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for NotifySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Reads the assignments adoptd acts on; anything else is ignored.
fn parse(sender: Pid, text: &[u8]) -> Message {
    let mut message = Message {
        sender,
        ..Message::default()
    };
    for line in text.split(|&b| b == b'\n') {
        let Some((key, value)) = std::str::from_utf8(line)
            .ok()
            .and_then(|line| line.split_once('='))
        else {
            continue;
        };
        match key {
            "READY" => message.ready |= value == "1",
            "MAINPID" => message.main_pid = value.parse().ok().filter(|&pid: &Pid| pid > 0),
            "STATUS" => message.status = Some(value.chars().take(256).collect()),
            _ => {}
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_mainpid_are_read_and_the_rest_ignored() {
        let message = parse(7, b"STATUS=warming up\nREADY=1\nMAINPID=42\nWATCHDOG=1\n");
        assert_eq!(
            message,
            Message {
                sender: 7,
                ready: true,
                main_pid: Some(42),
                status: Some("warming up".to_owned()),
            }
        );
    }

    #[test]
    fn bad_values_are_ignored() {
        for text in [
            &b"READY=0\nMAINPID=0"[..],
            b"READY\nMAINPID=-3",
            b"MAINPID=x\xff",
            b"\xff\xfe",
            b"",
        ] {
            let message = parse(7, text);
            assert!(!message.ready, "{text:?}");
            assert_eq!(message.main_pid, None, "{text:?}");
        }
    }

    #[test]
    fn a_message_arrives_with_the_senders_pid() {
        let socket = NotifySocket::open().expect("socket");
        let name = socket.address().strip_prefix('@').expect("abstract");
        let sender = UnixDatagram::unbound().expect("sender");
        let target = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        sender
            .send_to_addr(b"READY=1\nMAINPID=12\n", &target)
            .expect("send");
        let mut messages = Vec::new();
        socket.read_all(&mut messages).expect("read");
        assert_eq!(
            messages,
            vec![Message {
                sender: std::process::id(),
                ready: true,
                main_pid: Some(12),
                status: None,
            }]
        );
    }

    #[test]
    fn an_oversized_message_is_dropped() {
        let socket = NotifySocket::open().expect("socket");
        let name = socket.address().strip_prefix('@').expect("abstract");
        let sender = UnixDatagram::unbound().expect("sender");
        let target = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let mut big = b"READY=1\n".to_vec();
        big.resize(MESSAGE_LIMIT + 100, b'x');
        sender.send_to_addr(&big, &target).expect("send");
        let mut messages = Vec::new();
        socket.read_all(&mut messages).expect("read");
        assert!(messages.is_empty());
    }
}
