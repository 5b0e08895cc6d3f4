//! A `dbus-daemon` of a benchmark's own, for the benchmarks that
//! measure adoptd on a bus it does not run itself.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

/// A `dbus-daemon --session` of the benchmark's own, listening in
/// `directory`; killed when dropped.
pub struct Bus {
    child: Child,
    pub address: String,
}

impl Bus {
    pub fn start(directory: &Path) -> Self {
        let mut child = Command::new("dbus-daemon")
            .arg("--session")
            .arg("--nofork")
            .arg("--print-address")
            .arg(format!(
                "--address=unix:path={}",
                directory.join("bus").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon (Debian package dbus-daemon)");
        let stdout = child.stdout.take().expect("dbus-daemon's stdout");
        let mut address = String::new();
        BufReader::new(stdout)
            .read_line(&mut address)
            .expect("dbus-daemon's address");
        let address = address.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon did not start: {address:?}"
        );
        Bus { child, address }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
