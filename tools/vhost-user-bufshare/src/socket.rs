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
/// The socket is made in a private directory (mode 0700) made beside
/// `path`, given its mode there and then renamed to `path`, so that it is
/// never reachable with other modes. The directory is used through a
/// descriptor (`/proc/self/fd/N`), never by its path: whoever else may
/// write in `path`'s directory can rename it or put symbolic links in its
/// place, but cannot make the backend chmod anything but its own socket
/// (which a chmod of a temporary name by path allowed).
pub fn listen(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
    listen_with(path, mode, |_| {})
}

/// [`listen`], calling `after_bind` with the directory of `path` once the
/// socket is bound, before it is given its mode (for tests, which play
/// someone else there).
fn listen_with(
    path: &Path,
    mode: u32,
    after_bind: impl FnOnce(&Path),
) -> Result<UnixListener, ListenError> {
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
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let (dir_path, dir) = private_dir(parent, name).map_err(err)?;
    // The socket's name in the directory, and its path through the
    // directory's descriptor (short, whatever `path`'s length).
    const INNER: &str = "s";
    let inner = PathBuf::from(format!("/proc/self/fd/{}/{INNER}", dir.as_raw_fd()));
    let made = UnixListener::bind(&inner).and_then(|listener| {
        after_bind(parent);
        // `inner` is in the private directory: nobody else can have put
        // anything in its place.
        fs::set_permissions(&inner, fs::Permissions::from_mode(mode))?;
        nix::fcntl::renameat(&dir, INNER, nix::fcntl::AT_FDCWD, path)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    if made.is_err() {
        let _ = nix::unistd::unlinkat(&dir, INNER, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    // Empty now. Should someone have put something else at its path, that
    // is theirs, not removed (it is not empty) and it does not matter.
    if let Err(e) = fs::remove_dir(&dir_path) {
        debug!("cannot remove {}: {e}", dir_path.display());
    }
    made.map_err(err)
}

/// Makes a directory of mode 0700 in `parent`, of a name of its own made of
/// `name`, and opens it (not through a symbolic link); returns its path
/// and the open directory, checked to be this process's and private.
fn private_dir(parent: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, fs::File)> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);

    for _ in 0..16 {
        let mut dir_name = std::ffi::OsString::from(".");
        dir_name.push(name);
        dir_name.push(format!(
            ".{}.{}.d",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let dir_path = parent.join(dir_name);
        match fs::DirBuilder::new().mode(0o700).create(&dir_path) {
            Ok(()) => {}
            // A leftover of an earlier run, or someone else's: another name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&dir_path)?;
        let meta = dir.metadata()?;
        if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not private", dir_path.display()),
            ));
        }
        return Ok((dir_path, dir));
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a private directory",
    ))
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
    fn listen_gives_the_mode_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A path longer than sun_path (108 bytes) is fine: the socket is
        // bound through a short one.
        let long = "d".repeat(100);
        std::fs::create_dir(dir.path().join(&long)).unwrap();
        for (path, mode) in [
            (dir.path().join("a.sock"), 0o600),
            (dir.path().join(&long).join("b.sock"), 0o660),
        ] {
            let _listener = listen(&path, mode).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.permissions().mode() & 0o777, mode);
            if path.as_os_str().len() < 108 {
                UnixStream::connect(&path).unwrap();
            }
            let parent = path.parent().unwrap();
            let names: Vec<_> = std::fs::read_dir(parent)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().starts_with('.'))
                .collect();
            assert!(names.is_empty(), "{names:?}");
        }
        // Something else at the path: refused.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            listen(&file, 0o600),
            Err(ListenError::NotASocket(_))
        ));
    }

    #[test]
    fn nobody_else_makes_it_chmod_something_else() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "").unwrap();
        std::fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        // Someone who may write in the directory, once the socket is bound:
        // every temporary entry there is moved away and replaced by a
        // symbolic link to the victim (for a directory, a directory of
        // such links).
        let listener = listen_with(&path, 0o666, |parent| {
            for entry in std::fs::read_dir(parent).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name();
                if !name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let old = entry.path();
                let mut moved = name.clone();
                moved.push(".moved");
                std::fs::rename(&old, parent.join(moved)).unwrap();
                if entry.file_type().unwrap().is_dir() {
                    std::fs::create_dir(&old).unwrap();
                    symlink(&victim, old.join("s")).unwrap();
                } else {
                    symlink(&victim, &old).unwrap();
                }
            }
        })
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&victim), 0o600, "the victim was chmodded");
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        assert_eq!(mode(&path), 0o666);
        drop(listener);
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
