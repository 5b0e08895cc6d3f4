//! The `execve` of a re-exec: the program, the descriptors kept open, the
//! snapshot's memfd.
//!
//! Which program: the path adoptd was started from, as the kernel
//! resolved it at start-up ([`Program::current`] reads `/proc/self/exe`
//! then). Executing that path again picks up a binary upgraded in place,
//! which is what a re-exec is for; should the path be gone (the package was
//! removed, not replaced), `/proc/self/exe` runs the image already in
//! memory instead. The arguments are the same as at start-up, so the new
//! image supervises the same directory on the same bus with the same
//! source.

use std::{
    ffi::{CString, OsString},
    io::{Seek as _, Write as _},
    os::{
        fd::{AsRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::PathBuf,
};

use super::{ReexecError, STATE_FD_VARIABLE};

/// What to execute: the program adoptd was started as, with its arguments.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<OsString>,
}

impl Program {
    /// This process's program and arguments, read at start-up (before an
    /// upgrade can replace the file).
    pub fn current() -> Self {
        Program {
            path: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            args: std::env::args_os().collect(),
        }
    }

    /// The path to execute now: the start-up path while it is an
    /// executable file, else the running image.
    pub fn path_now(&self) -> PathBuf {
        let executable = nix::unistd::access(&self.path, nix::unistd::AccessFlags::X_OK).is_ok()
            && self.path.is_file();
        if executable {
            self.path.clone()
        } else {
            PathBuf::from("/proc/self/exe")
        }
    }
}

/// Writes `snapshot` to a memfd, keeps it and `keep` open across the exec,
/// and executes `program`. Returns only if that failed, with the old image
/// as it was: every descriptor close-on-exec again, the memfd closed.
pub fn exec(program: &Program, snapshot: &[u8], keep: &[RawFd]) -> ReexecError {
    let memfd = match write_memfd(snapshot) {
        Ok(memfd) => memfd,
        Err(error) => return error,
    };
    let mut kept = Vec::with_capacity(keep.len() + 1);
    for &fd in keep.iter().chain([&memfd.as_raw_fd()]) {
        if let Err(source) = set_cloexec(fd, false) {
            restore_cloexec(&kept);
            return ReexecError::Keep { fd, source };
        }
        kept.push(fd);
    }
    let error = execute(program, memfd.as_raw_fd());
    restore_cloexec(&kept);
    drop(memfd);
    error
}

/// Whether `fd` is an open descriptor of this process.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Sets or clears close-on-exec on `fd`.
pub fn set_cloexec(fd: RawFd, cloexec: bool) -> std::io::Result<()> {
    let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD only changes the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn restore_cloexec(fds: &[RawFd]) {
    for &fd in fds {
        set_cloexec(fd, true).ok();
    }
}

fn write_memfd(snapshot: &[u8]) -> Result<OwnedFd, ReexecError> {
    let memfd = rustix::fs::memfd_create("adoptd-state", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| ReexecError::Write(e.into()))?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(snapshot).map_err(ReexecError::Write)?;
    file.rewind().map_err(ReexecError::Write)?;
    Ok(OwnedFd::from(file))
}

/// `execve` with the original arguments and this environment, plus the
/// variable that names the state.
fn execute(program: &Program, state_fd: RawFd) -> ReexecError {
    let path = program.path_now();
    let failed = |source: std::io::Error| ReexecError::Exec {
        program: path.display().to_string(),
        source,
    };
    let to_c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| failed(std::io::Error::other("a NUL byte in an argument")))
    };
    let c_path = match to_c(path.as_os_str().as_bytes()) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut args = Vec::with_capacity(program.args.len());
    for arg in &program.args {
        match to_c(arg.as_bytes()) {
            Ok(c) => args.push(c),
            Err(e) => return e,
        }
    }
    let mut environment: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key.as_bytes() != STATE_FD_VARIABLE.as_bytes())
        .filter_map(|(key, value)| {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    match CString::new(format!("{STATE_FD_VARIABLE}={state_fd}")) {
        Ok(entry) => environment.push(entry),
        Err(_) => return failed(std::io::Error::other("a NUL byte in the state variable")),
    }
    match nix::unistd::execve(&c_path, &args, &environment) {
        Err(errno) => failed(errno.into()),
        Ok(never) => match never {},
    }
}
