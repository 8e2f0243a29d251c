// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Messages over a unix stream socket, with their file descriptors.
//!
//! A message's descriptors go with its first byte, in one `SCM_RIGHTS`
//! ancillary message ([`send_message`]). The receiver reads a message
//! exactly, header then body, never past its end, so that the descriptors
//! it gets while reading a message are that message's
//! ([`recv_message`]): the kernel never hands the descriptors of two
//! `sendmsg()` calls to one `recvmsg()`, and never those of a message whose
//! first byte it does not return.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use thiserror::Error as ThisError;

use crate::wire::{Header, Message, WireError, HEADER_SIZE};

/// Most descriptors the kernel passes with one `sendmsg()` (`SCM_MAX_FD`):
/// the room [`recv_message`] gives, so that none is lost unclosed.
pub const SCM_MAX_FD: usize = 253;

/// Why a message could not be received.
#[derive(Debug, ThisError)]
pub enum RecvError {
    /// Nothing arrived before the socket's read timeout; the stream is
    /// intact.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The message is malformed.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// Ancillary data was truncated: descriptors were lost.
    #[error("file descriptors were lost (ancillary data truncated)")]
    Truncated,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Eof,
}

/// Sends `bytes` (one whole message) with `fds`, passed with its first
/// byte. Never raises `SIGPIPE`. A socket write timeout that expires makes
/// it fail, possibly after part of the message was sent.
pub fn send_message(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let mut sent = 0;
    while sent < bytes.len() {
        let iov = [io::IoSlice::new(&bytes[sent..])];
        // The descriptors go with the first call that sends something.
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
            &rights
        } else {
            &[]
        };
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Fills `buf` from the socket, collecting the descriptors that come with
/// the bytes into `fds`; stops early at the end of the stream. Returns how
/// many bytes it read, or the error and how many it had read.
fn recv_exact(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, (usize, RecvError)> {
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut got = 0;
    while got < buf.len() {
        let mut iov = [io::IoSliceMut::new(&mut buf[got..])];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) if got == 0 && fds.is_empty() => {
                return Err((0, RecvError::Timeout));
            }
            Err(e) => return Err((got, RecvError::Io(e.into()))),
        };
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    for fd in raw {
                        // SAFETY: the kernel just installed `fd` in this
                        // process for this message; nothing else owns it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        if truncated {
            return Err((got, RecvError::Truncated));
        }
        if msg.bytes == 0 {
            break;
        }
        got += msg.bytes;
    }
    Ok(got)
}

/// Receives one message, checked, with its descriptors; `None` at the end
/// of the stream, before a message.
pub fn recv_message(sock: BorrowedFd<'_>) -> Result<Option<Message>, RecvError> {
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER_SIZE];
    match recv_exact(sock, &mut header, &mut fds) {
        Ok(0) if fds.is_empty() => return Ok(None),
        Ok(HEADER_SIZE) => {}
        Ok(_) => return Err(RecvError::Eof),
        Err((_, e)) => return Err(e),
    }
    let header = Header::parse(&header)?;
    let mut body = vec![0; header.size];
    match recv_exact(sock, &mut body, &mut fds) {
        Ok(n) if n == header.size => {}
        Ok(_) => return Err(RecvError::Eof),
        Err((_, RecvError::Timeout)) => {
            return Err(RecvError::Io(io::ErrorKind::TimedOut.into()));
        }
        Err((_, e)) => return Err(e),
    }
    Ok(Some(Message::decode(&header, &body, fds)?))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::props::Properties;
    use crate::test_support::{ino, memfd};
    use crate::wire::{Add, Event, Memory, Remove, Segment};

    fn add(files: Vec<OwnedFd>, nr_segments: u32) -> Message {
        let n = files.len() as u32;
        Message::Event(Event::Add(Add {
            guest: "g".into(),
            buffer_id: 1,
            application: "app".into(),
            size: u64::from(nr_segments) * 4096,
            seqno: 0,
            properties: Properties::default(),
            memory: Memory::Segments {
                files,
                segments: (0..nr_segments)
                    .map(|i| Segment {
                        file: i % n,
                        offset: u64::from(i) * 8192,
                        len: 4096,
                    })
                    .collect(),
            },
        }))
    }

    fn remove(id: u64) -> Message {
        Message::Event(Event::Remove(Remove {
            guest: "g".into(),
            buffer_id: id,
        }))
    }

    fn send(sock: &UnixStream, message: &Message) {
        let encoded = message.encode().unwrap();
        send_message(sock.as_fd(), &encoded.bytes, &encoded.fds).unwrap();
    }

    fn inos(message: &Message) -> Vec<u64> {
        message.fds().into_iter().map(ino).collect()
    }

    #[test]
    fn messages_keep_their_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let sent = [
            add(vec![memfd(), memfd(), memfd()], 3),
            remove(1),
            add(vec![memfd()], 1),
            add(vec![memfd(), memfd()], 2),
            remove(2),
        ];
        // Back to back, before the receiver reads anything.
        for m in &sent {
            send(&a, m);
        }
        for m in &sent {
            let got = recv_message(b.as_fd()).unwrap().unwrap();
            assert_eq!(got.kind(), m.kind());
            assert_eq!(inos(&got), inos(m));
        }
        drop(a);
        assert!(recv_message(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn large_message_with_descriptors() {
        // Larger than the socket's buffer: sent in pieces, the descriptors
        // with the first.
        let (a, b) = UnixStream::pair().unwrap();
        let big = add(vec![memfd(), memfd()], 200_000);
        let expected = inos(&big);
        let sender = thread::spawn(move || {
            send(&a, &big);
            send(&a, &remove(7));
            send(&a, &add(vec![memfd()], 1));
        });
        let got = recv_message(b.as_fd()).unwrap().unwrap();
        assert_eq!(inos(&got), expected);
        let Message::Event(Event::Add(add)) = got else {
            panic!("not an ADD")
        };
        assert_eq!(add.size, 200_000 * 4096);
        assert!(matches!(
            recv_message(b.as_fd()).unwrap().unwrap(),
            Message::Event(Event::Remove(_))
        ));
        assert_eq!(recv_message(b.as_fd()).unwrap().unwrap().fds().len(), 1);
        sender.join().unwrap();
    }

    #[test]
    fn stray_and_missing_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        // A REMOVE with a descriptor attached.
        let m = remove(1);
        let encoded = m.encode().unwrap();
        let fd = memfd();
        send_message(a.as_fd(), &encoded.bytes, &[fd.as_fd()]).unwrap();
        assert!(matches!(
            recv_message(b.as_fd()),
            Err(RecvError::Wire(WireError::FdMismatch { received: 1, .. }))
        ));
        // An ADD announcing two, with one.
        let m = add(vec![memfd(), memfd()], 2);
        let encoded = m.encode().unwrap();
        send_message(a.as_fd(), &encoded.bytes, &encoded.fds[..1]).unwrap();
        assert!(matches!(
            recv_message(b.as_fd()),
            Err(RecvError::Wire(WireError::FdMismatch {
                expected: 2,
                received: 1,
                ..
            }))
        ));
    }

    #[test]
    fn cut_short() {
        let m = remove(1);
        let bytes = m.encode().unwrap().bytes;
        for cut in [1, HEADER_SIZE - 1, HEADER_SIZE, bytes.len() - 1] {
            let (mut a, b) = UnixStream::pair().unwrap();
            a.write_all(&bytes[..cut]).unwrap();
            drop(a);
            assert!(
                matches!(recv_message(b.as_fd()), Err(RecvError::Eof)),
                "{cut}"
            );
        }
    }

    #[test]
    fn bad_header_is_refused_before_the_body() {
        let (mut a, b) = UnixStream::pair().unwrap();
        // A REMOVE announcing a body of 4 GiB.
        a.write_all(&[0x03, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            recv_message(b.as_fd()),
            Err(RecvError::Wire(WireError::TooLarge { .. }))
        ));
        a.write_all(&[0x77, 0x77, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(matches!(
            recv_message(b.as_fd()),
            Err(RecvError::Wire(WireError::UnknownType(0x7777)))
        ));
    }

    #[test]
    fn timeouts() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        assert!(matches!(recv_message(b.as_fd()), Err(RecvError::Timeout)));
        // In the middle of a message, it is an error.
        let bytes = remove(1).encode().unwrap().bytes;
        (&a).write_all(&bytes[..10]).unwrap();
        assert!(matches!(recv_message(b.as_fd()), Err(RecvError::Io(_))));
    }

    #[test]
    fn sending_to_a_closed_socket_fails() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let bytes = remove(1).encode().unwrap().bytes;
        let e = send_message(a.as_fd(), &bytes, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
