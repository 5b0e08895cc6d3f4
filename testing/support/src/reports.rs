//! What dance processes report once they settle, over a datagram socket.

use std::{
    collections::HashMap,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{Scratch, TIMEOUT};

/// What a dance process reported when it settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub tag: String,
    pub pid: u32,
    pub last_parent: u32,
    pub hops: u32,
    pub sid: u32,
}

/// The datagram socket dance processes report to.
pub struct Reports {
    pub path: PathBuf,
    socket: UnixDatagram,
}

impl Reports {
    pub fn bind(scratch: &Scratch) -> Self {
        Self::bind_at(&scratch.file("reports.sock"))
    }

    pub fn bind_at(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bind report socket");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        // Services may run as another user.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).ok();
        Reports {
            path: path.to_owned(),
            socket,
        }
    }

    /// The next report, whoever sent it.
    pub fn next(&self) -> Report {
        let mut buffer = [0u8; 512];
        // A signal to the test process may interrupt the wait: wait again.
        let n = loop {
            match self.socket.recv(&mut buffer) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!(
                    "no dance report in time: {e}\n{}",
                    crate::adoptd::what_this_tests_adoptds_were_doing()
                ),
                Ok(n) => break n,
            }
        };
        parse_report(&String::from_utf8_lossy(&buffer[..n]))
    }

    /// The reports of `count` dancers, by tag, each within `timeout`
    /// rather than the common one: for dances that are work, not a wait
    /// (a storm of thousands of forks on a machine whose cores are busy).
    pub fn collect_within(&self, count: usize, timeout: Duration) -> HashMap<String, Report> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("set the reports' timeout");
        let reports = self.collect(count);
        self.socket
            .set_read_timeout(Some(TIMEOUT))
            .expect("set the reports' timeout back");
        reports
    }

    /// The reports of `count` dancers, by tag.
    pub fn collect(&self, count: usize) -> HashMap<String, Report> {
        (0..count)
            .map(|_| self.next())
            .map(|r| (r.tag.clone(), r))
            .collect()
    }
}

fn parse_report(text: &str) -> Report {
    let field = |key: &str| -> String {
        text.split(' ')
            .find_map(|t| t.strip_prefix(&format!("{key}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key} in report {text:?}"))
    };
    let number = |key: &str| field(key).parse::<u32>().expect("number in report");
    Report {
        tag: field("tag"),
        pid: number("pid"),
        last_parent: number("last_parent"),
        hops: number("hops"),
        sid: number("sid"),
    }
}
