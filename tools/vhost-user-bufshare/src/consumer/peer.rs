// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The process of a consumer: a pidfd of the peer of its connection, to
//! know when it exited. A consumer that disconnected may still hold the
//! descriptors it was given; only its exit ends that.
//!
//! `SO_PEERPIDFD` (Linux 6.5) gives the pidfd of the process that
//! connected, race-free. Older kernels (Debian 12's 6.1) do not have it:
//! there the pid of `SO_PEERCRED` is opened with `pidfd_open()`, which
//! names the wrong process only if the consumer exited and its pid was
//! reused between its `connect()` and the backend's `accept()` (then its
//! buffers are freed when that other process exits: late, never early,
//! unless it exits first).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// `SO_PEERPIDFD`, the same on every architecture that has it.
const SO_PEERPIDFD: libc::c_int = 77;

/// A pidfd of the process at the other end of `stream`, whose pid
/// `SO_PEERCRED` said is `pid`.
pub fn peer_pidfd(stream: BorrowedFd<'_>, pid: libc::pid_t) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of the sizes given; the
    // kernel writes at most `len` bytes into `fd`.
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if ret == 0 && fd >= 0 {
        // SAFETY: the kernel made `fd` for this process, and nothing else
        // owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    pidfd_open(pid)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; no memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel made `fd` for this process, and nothing else owns
    // it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why [`wait_exit`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The process exited.
    Exited,
    /// `stop` became readable first.
    Stopped,
}

/// Waits until the process of `pidfd` exits, or `stop` is readable.
pub fn wait_exit(pidfd: &impl AsFd, stop: BorrowedFd<'_>) -> io::Result<Waited> {
    loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if !fds[0].revents().unwrap_or(PollFlags::empty()).is_empty() {
            return Ok(Waited::Exited);
        }
        if !fds[1].revents().unwrap_or(PollFlags::empty()).is_empty() {
            return Ok(Waited::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use nix::sys::eventfd::{EfdFlags, EventFd};

    #[test]
    fn a_child_exits() {
        let stop = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        let mut child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as libc::pid_t).unwrap();
        let start = Instant::now();
        assert_eq!(wait_exit(&pidfd, stop.as_fd()).unwrap(), Waited::Exited);
        assert!(start.elapsed() >= Duration::from_millis(250));
        child.wait().unwrap();
        // Stopped first.
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as libc::pid_t).unwrap();
        stop.write(1).unwrap();
        assert_eq!(wait_exit(&pidfd, stop.as_fd()).unwrap(), Waited::Stopped);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(pidfd_open(0).is_err());
    }

    #[test]
    fn the_peer_of_a_socket() {
        // This process at both ends: its pidfd never becomes readable.
        let (a, _b) = UnixStream::pair().unwrap();
        let pidfd = peer_pidfd(a.as_fd(), std::process::id() as libc::pid_t).unwrap();
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 0);
    }
}
