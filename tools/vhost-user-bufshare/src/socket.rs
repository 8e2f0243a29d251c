// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The unix sockets the backend serves host programs on (inspect,
//! consumers): made with their mode from the start, each served by a thread
//! of its own, which accepts connections until told to stop
//! ([`accept_loop`]). The vhost-user sockets are waited on the same way
//! ([`ListenPoll`]).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, error, warn};
use thiserror::Error as ThisError;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
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

/// What a [`ListenPoll`] woke up for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// A connection is waiting on the listening socket.
    Connection,
    /// The stop event was signalled.
    Stop,
}

/// An epoll over a listening socket and a stop event: what a thread that
/// serves connections until told to stop waits on.
pub struct ListenPoll {
    epoll: Epoll,
}

impl ListenPoll {
    const LISTENER: u64 = 0;
    const STOP: u64 = 1;

    /// Watches `listener` and `stop` for reading.
    pub fn new(listener: &impl AsRawFd, stop: &impl AsRawFd) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (listener.as_raw_fd(), Self::LISTENER),
            (stop.as_raw_fd(), Self::STOP),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(Self { epoll })
    }

    /// Waits until a connection comes or the stop event is signalled; the
    /// stop event wins if both happened. A wait interrupted by a signal
    /// goes on.
    pub fn wait(&self) -> io::Result<Wakeup> {
        let mut events = [EpollEvent::default(); 2];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let events = &events[..n];
            if events.iter().any(|e| e.data() == Self::STOP) {
                return Ok(Wakeup::Stop);
            }
            if events.iter().any(|e| e.data() == Self::LISTENER) {
                return Ok(Wakeup::Connection);
            }
        }
    }
}

/// Accepts the connections that come on `listener` (non-blocking) and hands
/// each to `serve`, until `stop` is signalled or waiting fails. Failures are
/// logged as those of the `what` server; after a failed accept, it waits a
/// little, so as not to spin on a lasting error.
pub fn accept_loop(
    what: &str,
    listener: &UnixListener,
    stop: &EventFd,
    mut serve: impl FnMut(UnixStream),
) {
    let poll = match ListenPoll::new(listener, stop) {
        Ok(poll) => poll,
        Err(e) => {
            error!("{what} server: {e}");
            return;
        }
    };
    loop {
        match poll.wait() {
            Ok(Wakeup::Connection) => {}
            Ok(Wakeup::Stop) => return,
            Err(e) => {
                error!("{what} server: {e}");
                return;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => serve(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                warn!("{what} server: cannot accept: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A socket listening at `path` in a directory that lives as long as
    /// it, and a stop event.
    fn listening() -> (tempfile::TempDir, PathBuf, UnixListener, EventFd) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = listen(&path, 0o600).unwrap();
        let stop = EventFd::new(EFD_NONBLOCK).unwrap();
        (dir, path, listener, stop)
    }

    #[test]
    fn listen_poll_wakes_up_for_a_connection_or_stop() {
        let (_dir, path, listener, stop) = listening();
        let poll = ListenPoll::new(&listener, &stop).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        assert_eq!(poll.wait().unwrap(), Wakeup::Connection);
        // Stop wins over the connection still waiting.
        stop.write(1).unwrap();
        assert_eq!(poll.wait().unwrap(), Wakeup::Stop);
    }

    #[test]
    fn accept_loop_serves_until_stopped() {
        let (_dir, path, listener, stop) = listening();
        let thread_stop = stop.try_clone().unwrap();
        let (served, accepted) = mpsc::channel();
        let thread = thread::spawn(move || {
            accept_loop("test", &listener, &thread_stop, |stream| {
                served.send(stream).unwrap();
            });
        });
        let clients: Vec<_> = (0..3)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        for _ in &clients {
            accepted.recv().unwrap();
        }
        stop.write(1).unwrap();
        thread.join().unwrap();
        assert!(accepted.try_recv().is_err());
    }
}
