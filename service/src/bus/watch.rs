//! Waiting for a bus socket to appear, without waking up meanwhile.
//!
//! While the bus adoptd publishes on is not there (no dbus-daemon yet, as
//! at boot, or ever, as in a container), retrying on a timer would wake
//! adoptd up for nothing. When the bus address is a socket path that does
//! not exist, adoptd instead watches the closest existing directory on the
//! way to it with inotify and tries again when something is created there.

use std::{
    io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    str::FromStr,
};

use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use zbus::address::{Address, Transport, transport::UnixSocket};

/// The socket path of a `unix:path=…` D-Bus address (the first of a list
/// that has one), as zbus parses it: the path watched is the one zbus
/// connects to.
pub fn socket_path(addresses: &str) -> Option<PathBuf> {
    addresses.split(';').find_map(
        |address| match Address::from_str(address).ok()?.transport() {
            Transport::Unix(unix) => match unix.path() {
                UnixSocket::File(path) => Some(path.clone()),
                _ => None,
            },
            _ => None,
        },
    )
}

/// Resolves once `path` exists (at once if it does), or with an error when
/// it cannot be watched (the caller then falls back to a timer).
pub async fn until_exists(path: &Path) -> io::Result<()> {
    while !path.exists() {
        let directory = closest_existing_ancestor(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no directory to watch"))?;
        let watch = Watch::new(&directory)?;
        // Checked again now that the watch is in place: nothing is missed.
        if path.exists() {
            break;
        }
        watch.changed().await?;
    }
    Ok(())
}

fn closest_existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
}

/// An inotify watch on one directory for entries created or moved in.
struct Watch {
    fd: AsyncFd<OwnedFd>,
}

impl Watch {
    fn new(directory: &Path) -> io::Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        let events = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::DELETE_SELF
            | inotify::WatchFlags::MOVE_SELF;
        inotify::add_watch(&fd, directory, events)?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it from
        // now on: it stays open and the same until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Watch { fd })
    }

    /// Resolves at the next event in the directory.
    async fn changed(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        let mut buffer = [0u8; 1024];
        // Which event it was does not matter: the caller looks again.
        while rustix::io::read(self.fd.get_ref(), &mut buffer).is_ok_and(|n| n > 0) {}
        guard.clear_ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_are_found_in_addresses() {
        assert_eq!(
            socket_path("unix:path=/run/dbus/system_bus_socket"),
            Some(PathBuf::from("/run/dbus/system_bus_socket"))
        );
        assert_eq!(
            socket_path(
                "tcp:host=x,port=1;unix:guid=0123456789abcdef0123456789abcdef,path=/tmp/a-b"
            ),
            Some(PathBuf::from("/tmp/a-b"))
        );
        assert_eq!(socket_path("unix:abstract=/x"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_ends_when_the_socket_appears() {
        let dir = std::env::temp_dir().join(format!("adoptd-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("deeper/bus");
        let waiting = tokio::spawn({
            let socket = socket.clone();
            async move { until_exists(&socket).await }
        });
        tokio::task::yield_now().await;
        std::fs::create_dir_all(dir.join("deeper")).expect("deeper");
        std::fs::write(&socket, b"").expect("socket stand-in");
        tokio::time::timeout(std::time::Duration::from_secs(20), waiting)
            .await
            .expect("noticed within the timeout")
            .expect("task")
            .expect("watched");
        std::fs::remove_dir_all(&dir).ok();
    }
}
