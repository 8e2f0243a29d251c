// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The consumer side of the virtio-bufshare host socket: how host programs
//! receive the buffers that guests share, as file descriptors, from the
//! `vhost-user-bufshare` backend.
//!
//! The protocol is specified in `Documentation/host/bufshare-consumer.rst`.
//!
//! * [`wire`]: the messages, their encoding and their checks (which the
//!   backend uses too);
//! * [`io`]: sending and receiving messages with their file descriptors
//!   over a unix stream socket;
//! * [`Client`]: a blocking consumer: connect, subscribe, take events;
//! * [`MappedBuffer`]: a buffer's bytes, through the descriptors of its ADD.

pub mod answers;
pub mod client;
pub mod io;
pub mod map;
pub mod props;
pub mod wire;

#[cfg(test)]
mod test_support;

pub use answers::{Answerer, BufferMapping, FrameGuard, Holding};
pub use client::{Client, Error};
pub use map::MappedBuffer;
pub use props::{escape_controls, Properties, Property, PropsError};
pub use wire::{
    Add, ByteRange, Closed, ErrorCode, ErrorMessage, Event, Memory, MemoryForm, Message,
    PropertiesChanged, Rect, Release, Remove, Reset, ResetReason, Segment, Update, Welcome,
    WireError, ALL_APPLICATIONS, VERSION,
};
