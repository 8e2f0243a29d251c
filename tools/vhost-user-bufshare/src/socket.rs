// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The unix sockets the backend serves host programs on (inspect,
//! consumers): made with their mode from the start, each served by a thread
//! of its own.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use log::{debug, error};
use thiserror::Error as ThisError;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why a socket could not be made.
#[derive(Debug, ThisError)]
pub enum ListenError {
    /// Something is at the path, and not a socket.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// The socket could not be made.
    #[error("cannot listen on {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// Binds a non-blocking listening socket at `path` with `mode` (a stale
/// socket there is replaced; any other file is an error).
///
/// The socket is made under a temporary name in the same directory, given
/// its mode and then renamed to `path`, so that it is never reachable with
/// other modes.
pub fn listen(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
    let err = |e| ListenError::Io(path.to_path_buf(), e);
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(ListenError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let name = path.file_name().ok_or_else(|| {
        err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // A leftover of an earlier run with the same pid.
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    let made = fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = made {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(listener)
}

/// A listening socket served by a thread of its own. Dropping it stops the
/// thread (through an eventfd the thread polls), waits for it and removes
/// the socket.
pub struct SocketThread {
    what: &'static str,
    path: PathBuf,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl SocketThread {
    /// Serves `listener`, bound at `path`, with `serve(listener, stop)` on a
    /// thread named `thread_name`; `what` names the server in log messages.
    pub fn spawn<F>(
        what: &'static str,
        thread_name: &str,
        path: &Path,
        listener: UnixListener,
        serve: F,
    ) -> io::Result<Self>
    where
        F: FnOnce(&UnixListener, &EventFd) + Send + 'static,
    {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let thread_stop = stop.try_clone()?;
        let thread = thread::Builder::new()
            .name(String::from(thread_name))
            .spawn(move || serve(&listener, &thread_stop))?;
        Ok(Self {
            what,
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketThread {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            error!("cannot stop the {} server: {e}", self.what);
            return;
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                error!("the {} server panicked", self.what);
            }
        }
        if let Err(e) = fs::remove_file(&self.path) {
            debug!("cannot remove {}: {e}", self.path.display());
        }
    }
}
