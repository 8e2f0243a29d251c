// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! What a consumer of protocol version 3 tells the backend: RELEASE (done
//! with a buffer's updates up to a seqno) and CLOSED (every descriptor
//! and mapping of one ADD of a buffer is closed, after its REMOVE or its
//! guest's RESET). The guest learns from them when the host is done with
//! its memory.
//!
//! [`crate::Client`] does the bookkeeping: each ADD it receives is an
//! *instance* of the buffer; [`crate::Client::map`] and
//! [`crate::Client::hold`] hand out [`Holding`]s of it, and CLOSED goes
//! once the buffer was removed (REMOVE, RESET) and no [`Holding`] of the
//! instance is left: at once, if none was taken. [`FrameGuard`] sends
//! RELEASE when it is dropped. All of it is a no-op on a connection of
//! version 1 or 2, whose backend takes REMOVE as the end of the consumer's
//! use.

use std::io;
use std::ops::Deref;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use log::debug;

use crate::io::send_message;
use crate::map::MappedBuffer;
use crate::wire::{Closed, Message, Release};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends RELEASE and CLOSED on a connection, from any thread; a no-op on
/// a connection that does not speak version 3.
#[derive(Clone, Debug, Default)]
pub struct Answerer {
    stream: Option<Arc<Mutex<UnixStream>>>,
}

impl Answerer {
    /// Sends on `stream` (a clone of the connection's socket).
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self {
            stream: Some(Arc::new(Mutex::new(stream))),
        }
    }

    /// Whether messages go out (version 3).
    pub fn enabled(&self) -> bool {
        self.stream.is_some()
    }

    fn send(&self, message: &Message) -> io::Result<()> {
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        let encoded = message.encode().map_err(io::Error::other)?;
        // One message at a time on the socket.
        let stream = lock(stream);
        send_message(stream.as_fd(), &encoded.bytes, &[])
    }

    /// RELEASE: done with every update of buffer `buffer_id` of `guest`
    /// up to `seqno`.
    pub fn release(&self, guest: &str, buffer_id: u64, seqno: u64) -> io::Result<()> {
        self.send(&Message::Release(Release {
            guest: guest.to_string(),
            buffer_id,
            seqno,
        }))
    }

    /// CLOSED: every descriptor and mapping of one ADD of buffer
    /// `buffer_id` of `guest` is closed.
    pub fn closed(&self, guest: &str, buffer_id: u64) -> io::Result<()> {
        self.send(&Message::Closed(Closed {
            guest: guest.to_string(),
            buffer_id,
        }))
    }
}

#[derive(Debug, Default)]
struct InstanceState {
    /// Holdings alive.
    holdings: usize,
    /// REMOVE or RESET came.
    ended: bool,
    /// CLOSED went.
    sent: bool,
}

/// One ADD of a buffer, as the consumer holds it.
#[derive(Debug)]
pub(crate) struct Instance {
    guest: String,
    buffer_id: u64,
    answerer: Answerer,
    state: Mutex<InstanceState>,
}

impl Instance {
    pub(crate) fn new(guest: &str, buffer_id: u64, answerer: Answerer) -> Arc<Self> {
        Arc::new(Self {
            guest: guest.to_string(),
            buffer_id,
            answerer,
            state: Mutex::default(),
        })
    }

    pub(crate) fn guest(&self) -> &str {
        &self.guest
    }

    pub(crate) fn buffer_id(&self) -> u64 {
        self.buffer_id
    }

    /// Sends CLOSED if the buffer ended, nothing holds it and it was not
    /// sent yet (with the state locked).
    fn settle(&self, st: &mut InstanceState) {
        if st.ended && st.holdings == 0 && !st.sent {
            st.sent = true;
            if let Err(e) = self.answerer.closed(&self.guest, self.buffer_id) {
                debug!(
                    "cannot send CLOSED for buffer {} of guest {}: {e}",
                    self.buffer_id, self.guest
                );
            }
        }
    }

    /// The buffer was removed (REMOVE, RESET).
    pub(crate) fn end(&self) {
        let mut st = lock(&self.state);
        st.ended = true;
        self.settle(&mut st);
    }

    /// A new holding of it.
    pub(crate) fn hold(self: &Arc<Self>) -> Holding {
        lock(&self.state).holdings += 1;
        Holding {
            instance: Arc::clone(self),
        }
    }
}

/// Holds one ADD's memory: while a [`Holding`] of it lives, CLOSED is not
/// sent for it. Dropping the last one after the buffer's REMOVE (or its
/// guest's RESET) sends CLOSED.
#[derive(Debug)]
pub struct Holding {
    instance: Arc<Instance>,
}

impl Holding {
    /// The guest of the buffer.
    pub fn guest(&self) -> &str {
        self.instance.guest()
    }

    /// The buffer.
    pub fn buffer_id(&self) -> u64 {
        self.instance.buffer_id()
    }

    /// Whether the buffer was removed (REMOVE or RESET read).
    pub fn removed(&self) -> bool {
        lock(&self.instance.state).ended
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut st = lock(&self.instance.state);
        st.holdings -= 1;
        self.instance.settle(&mut st);
    }
}

/// A buffer's mapping ([`MappedBuffer`]) with a [`Holding`] of its ADD:
/// dropping it after the buffer's REMOVE sends CLOSED. Its descriptors
/// were closed when it was made: the mapping keeps the memory.
#[derive(Debug)]
pub struct BufferMapping {
    // Unmapped before the holding goes.
    map: MappedBuffer,
    holding: Holding,
}

impl BufferMapping {
    pub(crate) fn new(map: MappedBuffer, holding: Holding) -> Self {
        Self { map, holding }
    }

    /// Its holding.
    pub fn holding(&self) -> &Holding {
        &self.holding
    }
}

impl Deref for BufferMapping {
    type Target = MappedBuffer;

    fn deref(&self) -> &MappedBuffer {
        &self.map
    }
}

/// An update of a buffer being used: dropping it (or [`FrameGuard::release`])
/// sends RELEASE for it.
#[derive(Debug)]
pub struct FrameGuard {
    answerer: Answerer,
    guest: String,
    buffer_id: u64,
    seqno: u64,
    released: bool,
}

impl FrameGuard {
    pub(crate) fn new(answerer: Answerer, guest: &str, buffer_id: u64, seqno: u64) -> Self {
        Self {
            answerer,
            guest: guest.to_string(),
            buffer_id,
            seqno,
            released: false,
        }
    }

    /// The update's seqno.
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    /// Sends RELEASE now.
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        self.answerer
            .release(&self.guest, self.buffer_id, self.seqno)
    }

    /// Forgets the update without releasing it (the backend then waits
    /// for a later RELEASE of the buffer, or for the connection's end).
    pub fn forget(mut self) {
        self.released = true;
    }
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self
                .answerer
                .release(&self.guest, self.buffer_id, self.seqno)
            {
                debug!(
                    "cannot send RELEASE for buffer {} of guest {}: {e}",
                    self.buffer_id, self.guest
                );
            }
        }
    }
}
