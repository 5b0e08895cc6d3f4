//! `--private-bus`: a D-Bus broker inside adoptd, for this adoptd alone.
//!
//! The broker is busd's, run as a library on a thread of its own (busd
//! runs on its own runtime, zruntime, which that thread drives). It is not
//! a `dbus-daemon` child because adoptd's reaper collects every child it
//! has: a helper started behind the supervisor's back would be reaped and
//! counted as an orphan, and `Command::spawn` waiting for a failed exec
//! would race the reaper. A thread also works where no D-Bus package is
//! installed at all, which is the point of a zero-setup bus.
//!
//! The socket sits in a directory that only adoptd's user may enter
//! (mode 0700), so the bus needs no policy: whoever can connect is that
//! user or root.

use std::{
    io,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::{error, info};

/// Why the private bus could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PrivateBusError {
    #[error("no place for the private bus socket: XDG_RUNTIME_DIR is not set to an absolute path")]
    NoRuntimeDir,
    #[error("cannot prepare the directory {}", .0.display())]
    Directory(PathBuf, #[source] io::Error),
    #[error(
        "{} belongs to uid {owner}, not to adoptd's uid {uid}: refusing to put the bus there",
        path.display()
    )]
    ForeignDirectory { path: PathBuf, owner: u32, uid: u32 },
    #[error("another bus is already listening on {}", .0.display())]
    InUse(PathBuf),
    #[error("cannot remove the stale socket {}", .0.display())]
    Stale(PathBuf, #[source] io::Error),
    #[error("cannot start the bus thread")]
    Thread(#[source] io::Error),
    #[error("the bus did not start: {0}")]
    Bus(String),
}

/// A running private bus.
#[derive(Debug)]
pub struct PrivateBus {
    /// Its D-Bus address, `unix:path=…`.
    pub address: String,
    /// Its socket.
    pub socket: PathBuf,
}

/// Starts the private bus at its well-known place for this user and
/// returns once it accepts connections.
pub async fn start() -> Result<PrivateBus, PrivateBusError> {
    let uid = nix::unistd::geteuid().as_raw();
    let socket = adoptd_dbus::private_bus_socket(uid).ok_or(PrivateBusError::NoRuntimeDir)?;
    start_at(&socket, uid).await
}

/// Starts a private bus on `socket`, whose directory is made (or checked
/// to be) `uid`'s own, mode 0700.
pub async fn start_at(socket: &Path, uid: u32) -> Result<PrivateBus, PrivateBusError> {
    if let Some(directory) = socket.parent() {
        private_directory(directory, uid)?;
    }
    remove_stale_socket(socket)?;
    let address = adoptd_dbus::private_bus_address(socket);
    let (ready, started) = tokio::sync::oneshot::channel();
    let thread_address = address.clone();
    std::thread::Builder::new()
        .name("private-bus".to_owned())
        .spawn(move || serve(&thread_address, ready))
        .map_err(PrivateBusError::Thread)?;
    match started.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(PrivateBusError::Bus(e)),
        Err(_) => return Err(PrivateBusError::Bus("the bus thread ended".to_owned())),
    }
    info!(address = %address, "private bus listening");
    Ok(PrivateBus {
        address,
        socket: socket.to_owned(),
    })
}

/// The bus thread: runs the broker for as long as adoptd lives. A broker
/// that fails is started again on the same socket, and adoptd's bus task
/// reconnects to it as to any bus that went away.
fn serve(address: &str, ready: tokio::sync::oneshot::Sender<Result<(), String>>) {
    let mut ready = Some(ready);
    loop {
        let result = zruntime::block_on(async {
            let mut bus = match busd::bus::Bus::for_address(Some(address)).await {
                Ok(bus) => bus,
                Err(e) => return Err(format!("{e:#}")),
            };
            if let Some(ready) = ready.take() {
                ready.send(Ok(())).ok();
            }
            let outcome = bus.run().await;
            bus.cleanup().await.ok();
            outcome.map_err(|e| format!("{e:#}"))
        });
        let message = match result {
            Ok(()) => "the private bus stopped".to_owned(),
            Err(e) => e,
        };
        if let Some(ready) = ready.take() {
            ready.send(Err(message)).ok();
            return;
        }
        error!("the private bus failed: {message}; starting it again");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Makes `directory` (and its parents) and leaves it `uid`'s own, mode
/// 0700; refuses one that belongs to someone else.
fn private_directory(directory: &Path, uid: u32) -> Result<(), PrivateBusError> {
    let failed = |e| PrivateBusError::Directory(directory.to_owned(), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .map_err(failed)?;
    let metadata = std::fs::symlink_metadata(directory).map_err(failed)?;
    if !metadata.is_dir() {
        return Err(failed(io::Error::other("it is not a directory")));
    }
    if metadata.uid() != uid {
        return Err(PrivateBusError::ForeignDirectory {
            path: directory.to_owned(),
            owner: metadata.uid(),
            uid,
        });
    }
    if metadata.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
            .map_err(failed)?;
    }
    Ok(())
}

/// A socket left by an adoptd that died is removed; one that answers
/// belongs to a live bus and is left alone.
fn remove_stale_socket(socket: &Path) -> Result<(), PrivateBusError> {
    if std::fs::symlink_metadata(socket).is_err() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(PrivateBusError::InUse(socket.to_owned()));
    }
    std::fs::remove_file(socket).map_err(|e| PrivateBusError::Stale(socket.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("adoptd-private-bus-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        path
    }

    #[test]
    fn the_socket_directory_is_made_private() {
        let base = scratch("mode");
        let directory = base.join("adoptd");
        let uid = nix::unistd::geteuid().as_raw();
        private_directory(&directory, uid).unwrap();
        let mode = std::fs::metadata(&directory).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_directory(&directory, uid).unwrap();
        let mode = std::fs::metadata(&directory).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let base = scratch("foreign");
        let uid = nix::unistd::geteuid().as_raw();
        std::fs::create_dir_all(&base).unwrap();
        let error = private_directory(&base, uid + 1).unwrap_err();
        assert!(matches!(error, PrivateBusError::ForeignDirectory { .. }));
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn a_dead_socket_is_removed_and_a_live_one_kept() {
        let base = scratch("stale");
        std::fs::create_dir_all(&base).unwrap();
        let socket = base.join("bus");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(matches!(
            remove_stale_socket(&socket),
            Err(PrivateBusError::InUse(_))
        ));
        drop(listener);
        remove_stale_socket(&socket).unwrap();
        assert!(!socket.exists());
        std::fs::remove_dir_all(&base).ok();
    }
}
