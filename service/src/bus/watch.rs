//! Waiting for a bus socket to appear, without waking up meanwhile.
//!
//! While the bus adoptd publishes on is not there (no dbus-daemon yet, as
//! at boot, or ever, as in a container), retrying on a timer would wake
//! adoptd up for nothing. When the bus address is a socket path that does
//! not exist, adoptd instead watches the closest existing directory on the
//! way to it with inotify and tries again when something is created there.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use tokio::io::unix::AsyncFd;

/// The socket path of a `unix:path=…` D-Bus address, if it is one.
pub fn socket_path(address: &str) -> Option<PathBuf> {
    address.split(';').find_map(|transport| {
        let options = transport.strip_prefix("unix:")?;
        options
            .split(',')
            .find_map(|kv| kv.strip_prefix("path="))
            .map(|path| PathBuf::from(unescape(path)))
    })
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

/// D-Bus addresses escape bytes as %xx.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An inotify watch on one directory for entries created or moved in.
struct Watch {
    fd: AsyncFd<OwnedFd>,
}

impl Watch {
    fn new(directory: &Path) -> io::Result<Self> {
        // SAFETY: inotify_init1 returns a new descriptor or -1.
        let raw: RawFd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = CString::new(directory.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
        // SAFETY: a valid inotify descriptor and C string.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), name.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
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
        // SAFETY: the buffer is valid for its length; events are drained.
        unsafe {
            libc::read(
                self.fd.get_ref().as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
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
            socket_path("tcp:host=x,port=1;unix:guid=1,path=/tmp/a%20b"),
            Some(PathBuf::from("/tmp/a b"))
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
