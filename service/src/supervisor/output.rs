//! A service's output, forwarded to adoptd's log line by line.

use std::os::fd::OwnedFd;

use tracing::{info, warn};

/// The longest line of a service's output kept whole; longer ones are cut.
pub(super) const MAX_LINE: usize = 4096;

/// Logs a service's output line by line until every writer has closed it.
pub(super) fn forward_output(name: &str, fd: OwnedFd) {
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(pipe) => pipe,
        Err(e) => {
            warn!(service = %name, "cannot read the service's output: {e}");
            return;
        }
    };
    let name = name.to_owned();
    // A task per running service, mostly waiting: what it keeps between
    // reads is small (the read buffer lives only while it reads, and the
    // line buffer only holds an unfinished line).
    tokio::spawn(async move {
        let pipe = pipe;
        let mut line = Vec::new();
        loop {
            if pipe.readable().await.is_err() {
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = match pipe.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            };
            for &byte in &chunk[..n] {
                if byte == b'\n' || line.len() >= MAX_LINE {
                    info!(target: "adoptd::output", service = %name, "{}", String::from_utf8_lossy(&line));
                    line.clear();
                    if byte == b'\n' {
                        continue;
                    }
                }
                line.push(byte);
            }
            if line.is_empty() && line.capacity() > 0 {
                line = Vec::new();
            }
        }
        if !line.is_empty() {
            info!(target: "adoptd::output", service = %name, "{}", String::from_utf8_lossy(&line));
        }
    });
}
