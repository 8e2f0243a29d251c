// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The messages of the consumer protocol, version [`VERSION`], and their
//! encoding, as `Documentation/host/bufshare-consumer.rst` specifies them.
//!
//! A message is a [`Header`] ([`HEADER_SIZE`] bytes: type, number of file
//! descriptors, size of the body) and a body. [`Header::parse`] checks a
//! header before its body is read, so that no body larger than its type
//! allows is ever read; [`Message::decode`] checks a body and the file
//! descriptors that came with it, every field of it, and
//! [`Message::encode`] refuses to encode what would not decode.
//!
//! Messages are generic over the type of their file descriptors: decoded
//! messages own theirs ([`OwnedFd`]); the backend encodes messages that
//! borrow the descriptors it keeps.

use std::fmt;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use thiserror::Error as ThisError;

use crate::props::{field_text, is_name, name_field, Properties, PropsError, NAME_LEN};

/// The highest protocol version this crate speaks (it speaks every one
/// from 1 on: version 2 adds to version 1, see the protocol's
/// specification).
pub const VERSION: u32 = 3;
/// Size of a message header.
pub const HEADER_SIZE: usize = 8;
/// Length of the server name field of WELCOME.
pub const SERVER_NAME_LEN: usize = 32;
/// Largest body of any message.
pub const MAX_BODY: usize = 16 << 20;
/// Most file descriptors passed with one message.
pub const MAX_FDS: usize = 32;
/// Most applications in one HELLO.
pub const MAX_APPLICATIONS: usize = 64;
/// Most segments in one ADD.
pub const MAX_SEGMENTS: usize = 1 << 19;
/// Largest properties, in bytes.
pub const MAX_PROPS_SIZE: usize = 1 << 16;
/// Longest ERROR text, in bytes.
pub const MAX_ERROR_TEXT: usize = 1024;
/// The HELLO entry that subscribes to every application.
pub const ALL_APPLICATIONS: &str = "*";

/// Size of HELLO without its applications.
pub const HELLO_FIXED: usize = 16;
/// Size of WELCOME.
pub const WELCOME_SIZE: usize = 48;
/// Size of ERROR without its text.
pub const ERROR_FIXED: usize = 8;
/// Size of ADD without its properties and segments.
pub const ADD_FIXED: usize = 168;
/// Size of one segment of an ADD.
pub const SEGMENT_SIZE: usize = 24;
/// Size of UPDATE.
pub const UPDATE_SIZE: usize = 120;
/// Size of PROPERTIES without its properties.
pub const PROPERTIES_FIXED: usize = 80;
/// Size of REMOVE.
pub const REMOVE_SIZE: usize = 72;
/// Size of RESET.
pub const RESET_SIZE: usize = 72;
/// Size of RELEASE.
pub const RELEASE_SIZE: usize = 80;
/// Size of CLOSED.
pub const CLOSED_SIZE: usize = 72;

/// UPDATE flag: `offset` and `length` say which bytes changed.
pub const UPDATE_F_RANGE: u32 = 1 << 0;
/// UPDATE flag: `x`, `y`, `width` and `height` say which pixels changed.
pub const UPDATE_F_RECT: u32 = 1 << 1;

/// The type of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageType {
    /// Consumer to backend: version and applications.
    Hello = 0x0001,
    /// Backend to consumer: subscribed.
    Welcome = 0x0002,
    /// Backend to consumer: refused, or ended; the last message.
    Error = 0x0003,
    /// A buffer, with its memory.
    Add = 0x0100,
    /// A buffer's content changed.
    Update = 0x0101,
    /// A buffer's properties changed.
    Properties = 0x0102,
    /// A buffer is gone.
    Remove = 0x0103,
    /// All of a guest's buffers are gone.
    Reset = 0x0104,
    /// Consumer to backend (version 3): done with a buffer's updates.
    Release = 0x0200,
    /// Consumer to backend (version 3): closed a buffer's memory.
    Closed = 0x0201,
}

impl MessageType {
    /// Every type.
    pub const ALL: [MessageType; 10] = [
        MessageType::Hello,
        MessageType::Welcome,
        MessageType::Error,
        MessageType::Add,
        MessageType::Update,
        MessageType::Properties,
        MessageType::Remove,
        MessageType::Reset,
        MessageType::Release,
        MessageType::Closed,
    ];

    /// The type with this value.
    pub fn from_u16(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u16 == value)
    }

    /// Largest body of a message of this type.
    pub fn max_body(self) -> usize {
        match self {
            MessageType::Hello => HELLO_FIXED + NAME_LEN * MAX_APPLICATIONS,
            MessageType::Welcome => WELCOME_SIZE,
            MessageType::Error => ERROR_FIXED + MAX_ERROR_TEXT,
            MessageType::Add => ADD_FIXED + MAX_PROPS_SIZE + SEGMENT_SIZE * MAX_SEGMENTS,
            MessageType::Update => UPDATE_SIZE,
            MessageType::Properties => PROPERTIES_FIXED + MAX_PROPS_SIZE,
            MessageType::Remove => REMOVE_SIZE,
            MessageType::Reset => RESET_SIZE,
            MessageType::Release => RELEASE_SIZE,
            MessageType::Closed => CLOSED_SIZE,
        }
    }

    /// How many file descriptors a message of this type may carry.
    pub fn fds(self) -> RangeInclusive<usize> {
        match self {
            MessageType::Add => 1..=MAX_FDS,
            _ => 0..=0,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            MessageType::Hello => "HELLO",
            MessageType::Welcome => "WELCOME",
            MessageType::Error => "ERROR",
            MessageType::Add => "ADD",
            MessageType::Update => "UPDATE",
            MessageType::Properties => "PROPERTIES",
            MessageType::Remove => "REMOVE",
            MessageType::Reset => "RESET",
            MessageType::Release => "RELEASE",
            MessageType::Closed => "CLOSED",
        };
        f.write_str(name)
    }
}

/// Why a message is refused.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
pub enum WireError {
    /// A header with a type this version does not define.
    #[error("unknown message type {0:#06x}")]
    UnknownType(u16),
    /// A header announcing a body larger than the type allows.
    #[error("{kind} of {size} bytes, more than {max}")]
    TooLarge {
        /// The type.
        kind: MessageType,
        /// The size announced.
        size: usize,
        /// The most the type allows.
        max: usize,
    },
    /// A header announcing a number of file descriptors the type does not
    /// allow.
    #[error("{kind} with {nr_fds} file descriptors")]
    FdCount {
        /// The type.
        kind: MessageType,
        /// The number announced.
        nr_fds: usize,
    },
    /// Not as many file descriptors came with the message as its header
    /// says, or its body says.
    #[error("{kind}: {received} file descriptors, {expected} expected")]
    FdMismatch {
        /// The type.
        kind: MessageType,
        /// How many the message says.
        expected: usize,
        /// How many there are.
        received: usize,
    },
    /// A body whose size is not the one its fields make.
    #[error("{kind} of {size} bytes, {expected} expected")]
    Size {
        /// The type.
        kind: MessageType,
        /// The body's size.
        size: usize,
        /// What its fields make (or the least size of the type).
        expected: usize,
    },
    /// A reserved field, padding, or unused field that is not 0.
    #[error("{kind}: {field} is not 0")]
    NotZero {
        /// The type.
        kind: MessageType,
        /// Which field.
        field: &'static str,
    },
    /// A name field that is not a valid name.
    #[error("{kind}: bad {field} name")]
    BadName {
        /// The type.
        kind: MessageType,
        /// Which field.
        field: &'static str,
    },
    /// Text that is not UTF-8, has control characters, or is not padded
    /// with NUL bytes.
    #[error("{kind}: bad {field} text")]
    BadText {
        /// The type.
        kind: MessageType,
        /// Which field.
        field: &'static str,
    },
    /// Properties that break the rules.
    #[error("{kind}: {error}")]
    Properties {
        /// The type.
        kind: MessageType,
        /// What is wrong with them.
        error: PropsError,
    },
    /// A field with a value out of its range.
    #[error("{kind}: {field} {value} out of range")]
    OutOfRange {
        /// The type.
        kind: MessageType,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// An application named twice in a HELLO.
    #[error("HELLO: application {0:?} named twice")]
    Duplicate(String),
    /// A HELLO with `*` and other applications.
    #[error("HELLO: \"*\" with other applications")]
    Wildcard,
    /// A segment of an ADD that is not valid.
    #[error("ADD: segment {index}: {what}")]
    BadSegment {
        /// Which segment.
        index: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The segments of an ADD do not add up to its size.
    #[error("ADD: segments of {sum} bytes for a buffer of {size}")]
    SegmentsSize {
        /// The buffer's size.
        size: u64,
        /// What the segments add up to (saturated).
        sum: u64,
    },
    /// A file descriptor of an ADD that no segment uses.
    #[error("ADD: file descriptor {0} is not used")]
    UnusedFd(usize),
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The type.
    pub kind: MessageType,
    /// File descriptors passed with the message.
    pub nr_fds: usize,
    /// Bytes of body after the header.
    pub size: usize,
}

impl Header {
    /// Parses and checks a header: a known type, a size and a number of
    /// file descriptors the type allows.
    pub fn parse(bytes: &[u8; HEADER_SIZE]) -> Result<Self, WireError> {
        let kind = u16::from_le_bytes([bytes[0], bytes[1]]);
        let nr_fds = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
        let size = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let kind = MessageType::from_u16(kind).ok_or(WireError::UnknownType(kind))?;
        let max = kind.max_body();
        if size > max {
            return Err(WireError::TooLarge { kind, size, max });
        }
        if !kind.fds().contains(&nr_fds) {
            return Err(WireError::FdCount { kind, nr_fds });
        }
        Ok(Self { kind, nr_fds, size })
    }

    /// The header's bytes. The caller checked the values.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0; HEADER_SIZE];
        out[..2].copy_from_slice(&(self.kind as u16).to_le_bytes());
        out[2..4].copy_from_slice(&(self.nr_fds as u16).to_le_bytes());
        out[4..].copy_from_slice(&(self.size as u32).to_le_bytes());
        out
    }
}

/// How ADD messages hand memory over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MemoryForm {
    /// Dma-bufs made with udmabuf: one per buffer, or (version 2) several,
    /// with the segments of them the buffer is made of.
    DmaBuf = 1,
    /// The guest's memory files and the segments of them.
    Segments = 2,
}

impl MemoryForm {
    fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(MemoryForm::DmaBuf),
            2 => Some(MemoryForm::Segments),
            _ => None,
        }
    }
}

impl fmt::Display for MemoryForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryForm::DmaBuf => "dmabuf",
            MemoryForm::Segments => "segments",
        })
    }
}

/// What an ERROR says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The consumer sent something malformed, or anything after HELLO.
    Protocol = 1,
    /// HELLO's version is not one the backend speaks.
    Version = 2,
    /// The consumer may not subscribe to what it asked for.
    Denied = 3,
    /// The consumer's queue overflowed.
    Overflow = 4,
    /// Too many consumers.
    Busy = 5,
    /// The backend is stopping.
    Shutdown = 6,
}

impl ErrorCode {
    fn from_u32(value: u32) -> Option<Self> {
        [
            ErrorCode::Protocol,
            ErrorCode::Version,
            ErrorCode::Denied,
            ErrorCode::Overflow,
            ErrorCode::Busy,
            ErrorCode::Shutdown,
        ]
        .into_iter()
        .find(|c| *c as u32 == value)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::Protocol => "protocol error",
            ErrorCode::Version => "unsupported version",
            ErrorCode::Denied => "denied",
            ErrorCode::Overflow => "queue overflow",
            ErrorCode::Busy => "busy",
            ErrorCode::Shutdown => "shutting down",
        })
    }
}

/// Why a guest's buffers all went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ResetReason {
    /// The guest's driver reset the device.
    DeviceReset = 1,
    /// The guest went away (VM stopped, or its connection to the backend
    /// ended).
    Disconnected = 2,
    /// The consumer's queue overflowed with the guest's events (version 2):
    /// the guest's buffers come again as ADDs.
    Overflow = 3,
}

impl ResetReason {
    fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(ResetReason::DeviceReset),
            2 => Some(ResetReason::Disconnected),
            3 => Some(ResetReason::Overflow),
            _ => None,
        }
    }

    /// The first protocol version that has this reason.
    pub fn since_version(self) -> u32 {
        match self {
            ResetReason::DeviceReset | ResetReason::Disconnected => 1,
            ResetReason::Overflow => 2,
        }
    }
}

/// HELLO: the consumer's version and applications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The highest version the consumer speaks.
    pub version: u32,
    /// The applications it subscribes to, or just [`ALL_APPLICATIONS`].
    pub applications: Vec<String>,
}

/// WELCOME: subscribed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The version the connection speaks.
    pub version: u32,
    /// How ADD messages hand memory over (each ADD says again).
    pub memory_form: MemoryForm,
    /// Events queued for the consumer before it overflows.
    pub queue_limit: u32,
    /// Name and version of the backend: printable ASCII, up to 31
    /// characters.
    pub server: String,
}

/// ERROR: refused, or ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMessage {
    /// What happened.
    pub code: ErrorCode,
    /// Details, for people: UTF-8 without control characters, at most
    /// [`MAX_ERROR_TEXT`] bytes.
    pub message: String,
}

impl ErrorMessage {
    /// An error with `message` made fit: control characters become spaces
    /// and the text is cut to [`MAX_ERROR_TEXT`] bytes.
    pub fn new(code: ErrorCode, message: impl AsRef<str>) -> Self {
        let mut text = String::new();
        for c in message.as_ref().chars() {
            let c = if c.is_control() { ' ' } else { c };
            if text.len() + c.len_utf8() > MAX_ERROR_TEXT {
                break;
            }
            text.push(c);
        }
        Self {
            code,
            message: text,
        }
    }
}

impl fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// A piece of a buffer in one of the files an ADD passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Which file: an index among the ADD's files.
    pub file: u32,
    /// Offset in the file.
    pub offset: u64,
    /// Length, 1 or more.
    pub len: u64,
}

/// The memory of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Memory<F = OwnedFd> {
    /// A dma-buf of the buffer's size: byte 0 is the buffer's byte 0.
    DmaBuf(F),
    /// Several dma-bufs (version 2): the buffer is the concatenation of
    /// `segments`, in order, of them (a buffer too large or too scattered
    /// for one).
    DmaBufs {
        /// The dma-bufs, each used by a segment at least.
        dmabufs: Vec<F>,
        /// The segments.
        segments: Vec<Segment>,
    },
    /// The concatenation of `segments`, in order, of `files`.
    Segments {
        /// The files, each used by a segment at least.
        files: Vec<F>,
        /// The segments.
        segments: Vec<Segment>,
    },
}

impl<F> Memory<F> {
    /// The form.
    pub fn form(&self) -> MemoryForm {
        match self {
            Memory::DmaBuf(_) | Memory::DmaBufs { .. } => MemoryForm::DmaBuf,
            Memory::Segments { .. } => MemoryForm::Segments,
        }
    }

    /// The same memory with each descriptor passed through `f`.
    pub fn map_fds<G>(self, mut f: impl FnMut(F) -> G) -> Memory<G> {
        match self {
            Memory::DmaBuf(fd) => Memory::DmaBuf(f(fd)),
            Memory::DmaBufs { dmabufs, segments } => Memory::DmaBufs {
                dmabufs: dmabufs.into_iter().map(f).collect(),
                segments,
            },
            Memory::Segments { files, segments } => Memory::Segments {
                files: files.into_iter().map(f).collect(),
                segments,
            },
        }
    }

    /// The descriptors, in order.
    pub fn fds(&self) -> Vec<&F> {
        match self {
            Memory::DmaBuf(fd) => vec![fd],
            Memory::DmaBufs { dmabufs: fds, .. } | Memory::Segments { files: fds, .. } => {
                fds.iter().collect()
            }
        }
    }

    /// The descriptors and the segments of them, in the form of
    /// [`Memory::Segments`] (a single dma-buf being one segment of all of
    /// it, of `size` bytes).
    pub fn as_segments(&self, size: u64) -> (Vec<&F>, Vec<Segment>) {
        match self {
            Memory::DmaBuf(fd) => (
                vec![fd],
                vec![Segment {
                    file: 0,
                    offset: 0,
                    len: size,
                }],
            ),
            Memory::DmaBufs {
                dmabufs: fds,
                segments,
            }
            | Memory::Segments {
                files: fds,
                segments,
            } => (fds.iter().collect(), segments.clone()),
        }
    }
}

/// ADD: a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Add<F = OwnedFd> {
    /// Whose guest.
    pub guest: String,
    /// Its id, unique in the guest.
    pub buffer_id: u64,
    /// Its application.
    pub application: String,
    /// Its size, in bytes.
    pub size: u64,
    /// The sequence number of its last update, 0 if none.
    pub seqno: u64,
    /// Its properties.
    pub properties: Properties,
    /// Its memory.
    pub memory: Memory<F>,
}

/// Bytes of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// Offset of the first.
    pub offset: u64,
    /// How many, 1 or more.
    pub len: u64,
}

/// Pixels of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width, 1 or more.
    pub width: u32,
    /// Height, 1 or more.
    pub height: u32,
}

/// UPDATE: a buffer's content changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// Whose guest.
    pub guest: String,
    /// The buffer.
    pub buffer_id: u64,
    /// The guest's number for the change, larger than the earlier ones.
    pub seqno: u64,
    /// The bytes that changed, if the guest said.
    pub range: Option<ByteRange>,
    /// The pixels that changed, if the guest said.
    pub rect: Option<Rect>,
}

/// PROPERTIES: a buffer's properties are now these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertiesChanged {
    /// Whose guest.
    pub guest: String,
    /// The buffer.
    pub buffer_id: u64,
    /// All of its properties.
    pub properties: Properties,
}

/// REMOVE: a buffer is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remove {
    /// Whose guest.
    pub guest: String,
    /// The buffer.
    pub buffer_id: u64,
}

/// RESET: every buffer of a guest is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The guest.
    pub guest: String,
    /// Why.
    pub reason: ResetReason,
}

/// An event.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<F = OwnedFd> {
    /// A buffer, with its memory.
    Add(Add<F>),
    /// A buffer's content changed.
    Update(Update),
    /// A buffer's properties changed.
    Properties(PropertiesChanged),
    /// A buffer is gone.
    Remove(Remove),
    /// All of a guest's buffers are gone.
    Reset(Reset),
}

impl<F> Event<F> {
    /// The guest it comes from.
    pub fn guest(&self) -> &str {
        match self {
            Event::Add(e) => &e.guest,
            Event::Update(e) => &e.guest,
            Event::Properties(e) => &e.guest,
            Event::Remove(e) => &e.guest,
            Event::Reset(e) => &e.guest,
        }
    }

    /// The buffer it is about, if one.
    pub fn buffer_id(&self) -> Option<u64> {
        match self {
            Event::Add(e) => Some(e.buffer_id),
            Event::Update(e) => Some(e.buffer_id),
            Event::Properties(e) => Some(e.buffer_id),
            Event::Remove(e) => Some(e.buffer_id),
            Event::Reset(_) => None,
        }
    }

    /// The same event with each descriptor passed through `f`.
    pub fn map_fds<G>(self, f: impl FnMut(F) -> G) -> Event<G> {
        match self {
            Event::Add(add) => Event::Add(Add {
                guest: add.guest,
                buffer_id: add.buffer_id,
                application: add.application,
                size: add.size,
                seqno: add.seqno,
                properties: add.properties,
                memory: add.memory.map_fds(f),
            }),
            Event::Update(e) => Event::Update(e),
            Event::Properties(e) => Event::Properties(e),
            Event::Remove(e) => Event::Remove(e),
            Event::Reset(e) => Event::Reset(e),
        }
    }
}

/// RELEASE (version 3, consumer to backend): the consumer is done with
/// every update of the buffer up to `seqno`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The guest.
    pub guest: String,
    /// The buffer.
    pub buffer_id: u64,
    /// The last update it is done with.
    pub seqno: u64,
}

/// CLOSED (version 3, consumer to backend): after the buffer's REMOVE (or
/// its guest's RESET), the consumer closed every descriptor and mapping
/// of one ADD of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The guest.
    pub guest: String,
    /// The buffer.
    pub buffer_id: u64,
}

/// Any message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<F = OwnedFd> {
    /// HELLO.
    Hello(Hello),
    /// WELCOME.
    Welcome(Welcome),
    /// ERROR.
    Error(ErrorMessage),
    /// ADD, UPDATE, PROPERTIES, REMOVE or RESET.
    Event(Event<F>),
    /// RELEASE.
    Release(Release),
    /// CLOSED.
    Closed(Closed),
}

/// An encoded message: its bytes (header included), and the descriptors
/// to pass with its first byte.
#[derive(Debug)]
pub struct Encoded<'a> {
    /// Header and body.
    pub bytes: Vec<u8>,
    /// The descriptors, in order.
    pub fds: Vec<BorrowedFd<'a>>,
}

impl<F> Message<F> {
    /// Its type.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Welcome(_) => MessageType::Welcome,
            Message::Error(_) => MessageType::Error,
            Message::Event(Event::Add(_)) => MessageType::Add,
            Message::Event(Event::Update(_)) => MessageType::Update,
            Message::Event(Event::Properties(_)) => MessageType::Properties,
            Message::Event(Event::Remove(_)) => MessageType::Remove,
            Message::Event(Event::Reset(_)) => MessageType::Reset,
            Message::Release(_) => MessageType::Release,
            Message::Closed(_) => MessageType::Closed,
        }
    }

    /// The same message with each descriptor passed through `f`.
    pub fn map_fds<G>(self, f: impl FnMut(F) -> G) -> Message<G> {
        match self {
            Message::Hello(m) => Message::Hello(m),
            Message::Welcome(m) => Message::Welcome(m),
            Message::Error(m) => Message::Error(m),
            Message::Event(e) => Message::Event(e.map_fds(f)),
            Message::Release(m) => Message::Release(m),
            Message::Closed(m) => Message::Closed(m),
        }
    }

    /// Its descriptors, in order.
    pub fn fds(&self) -> Vec<&F> {
        match self {
            Message::Event(Event::Add(add)) => add.memory.fds(),
            _ => Vec::new(),
        }
    }

    /// The body, and the number of descriptors. Not checked.
    fn body(&self) -> (Vec<u8>, usize) {
        let mut out = Out::default();
        let mut nr_fds = 0;
        match self {
            Message::Hello(m) => {
                out.u32(m.version);
                out.u32(0);
                out.u32(m.applications.len() as u32);
                out.u32(0);
                for app in &m.applications {
                    out.name(app);
                }
            }
            Message::Welcome(m) => {
                out.u32(m.version);
                out.u32(m.memory_form as u32);
                out.u32(m.queue_limit);
                out.u32(0);
                let mut server = [0u8; SERVER_NAME_LEN];
                let len = m.server.len().min(SERVER_NAME_LEN);
                server[..len].copy_from_slice(&m.server.as_bytes()[..len]);
                out.bytes(&server);
            }
            Message::Error(m) => {
                out.u32(m.code as u32);
                out.u32(m.message.len() as u32);
                out.bytes(m.message.as_bytes());
            }
            Message::Event(Event::Add(m)) => {
                let props = m.properties.to_bytes();
                out.name(&m.guest);
                out.u64(m.buffer_id);
                out.name(&m.application);
                out.u64(m.size);
                out.u64(m.seqno);
                out.u32(m.memory.form() as u32);
                let segments: &[Segment] = match &m.memory {
                    Memory::DmaBuf(_) => {
                        nr_fds = 1;
                        &[]
                    }
                    Memory::DmaBufs {
                        dmabufs: fds,
                        segments,
                    }
                    | Memory::Segments {
                        files: fds,
                        segments,
                    } => {
                        nr_fds = fds.len();
                        segments
                    }
                };
                out.u32(segments.len() as u32);
                out.u32(props.len() as u32);
                out.u32(0);
                out.bytes(&props);
                out.pad8();
                for seg in segments {
                    out.u32(seg.file);
                    out.u32(0);
                    out.u64(seg.offset);
                    out.u64(seg.len);
                }
            }
            Message::Event(Event::Update(m)) => {
                let mut flags = 0;
                let range = m.range.inspect(|_| flags |= UPDATE_F_RANGE);
                let rect = m.rect.inspect(|_| flags |= UPDATE_F_RECT);
                let range = range.unwrap_or(ByteRange { offset: 0, len: 0 });
                let rect = rect.unwrap_or(Rect {
                    x: 0,
                    y: 0,
                    width: 0,
                    height: 0,
                });
                out.name(&m.guest);
                out.u64(m.buffer_id);
                out.u64(m.seqno);
                out.u32(flags);
                out.u32(0);
                out.u64(range.offset);
                out.u64(range.len);
                out.u32(rect.x);
                out.u32(rect.y);
                out.u32(rect.width);
                out.u32(rect.height);
            }
            Message::Event(Event::Properties(m)) => {
                let props = m.properties.to_bytes();
                out.name(&m.guest);
                out.u64(m.buffer_id);
                out.u32(props.len() as u32);
                out.u32(0);
                out.bytes(&props);
            }
            Message::Event(Event::Remove(m)) => {
                out.name(&m.guest);
                out.u64(m.buffer_id);
            }
            Message::Event(Event::Reset(m)) => {
                out.name(&m.guest);
                out.u32(m.reason as u32);
                out.u32(0);
            }
            Message::Release(m) => {
                out.name(&m.guest);
                out.u64(m.buffer_id);
                out.u64(m.seqno);
            }
            Message::Closed(m) => {
                out.name(&m.guest);
                out.u64(m.buffer_id);
            }
        }
        (out.0, nr_fds)
    }
}

impl<F: AsFd> Message<F> {
    /// Encodes the message, header included, after checking that it
    /// decodes: everything [`Message::decode`] refuses is refused here too.
    pub fn encode(&self) -> Result<Encoded<'_>, WireError> {
        let kind = self.kind();
        let (body, nr_fds) = self.body();
        let max = kind.max_body();
        if body.len() > max {
            return Err(WireError::TooLarge {
                kind,
                size: body.len(),
                max,
            });
        }
        if !kind.fds().contains(&nr_fds) {
            return Err(WireError::FdCount { kind, nr_fds });
        }
        let header = Header {
            kind,
            nr_fds,
            size: body.len(),
        };
        parse(&header, &body)?;
        let mut bytes = Vec::with_capacity(HEADER_SIZE + body.len());
        bytes.extend_from_slice(&header.to_bytes());
        bytes.extend_from_slice(&body);
        let fds = self.fds().into_iter().map(AsFd::as_fd).collect();
        Ok(Encoded { bytes, fds })
    }
}

impl Message {
    /// Decodes and checks the body of a message whose header is `header`
    /// (checked by [`Header::parse`]), with the descriptors that came with
    /// it, which it keeps (or closes, if it is refused).
    pub fn decode(header: &Header, body: &[u8], fds: Vec<OwnedFd>) -> Result<Self, WireError> {
        if fds.len() != header.nr_fds {
            return Err(WireError::FdMismatch {
                kind: header.kind,
                expected: header.nr_fds,
                received: fds.len(),
            });
        }
        let message = parse(header, body)?;
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        // `parse` numbered each descriptor once, below `nr_fds`.
        Ok(message.map_fds(|i| fds[i].take().expect("each descriptor used once")))
    }
}

/// Decodes and checks a body; descriptors are numbered in order of
/// appearance (each once, all of them below `header.nr_fds`).
///
/// The body must have the size its header says; then each type has a
/// decoder of its own, which checks the body's size against its fields
/// before it reads them.
pub fn parse(header: &Header, body: &[u8]) -> Result<Message<usize>, WireError> {
    let kind = header.kind;
    if body.len() != header.size {
        return Err(WireError::Size {
            kind,
            size: body.len(),
            expected: header.size,
        });
    }
    let mut b = In::new(kind, body);
    Ok(match kind {
        MessageType::Hello => Message::Hello(Hello::decode(&mut b)?),
        MessageType::Welcome => Message::Welcome(Welcome::decode(&mut b)?),
        MessageType::Error => Message::Error(ErrorMessage::decode(&mut b)?),
        MessageType::Add => Message::Event(Event::Add(Add::decode(&mut b, header.nr_fds)?)),
        MessageType::Update => Message::Event(Event::Update(Update::decode(&mut b)?)),
        MessageType::Properties => {
            Message::Event(Event::Properties(PropertiesChanged::decode(&mut b)?))
        }
        MessageType::Remove => Message::Event(Event::Remove(Remove::decode(&mut b)?)),
        MessageType::Reset => Message::Event(Event::Reset(Reset::decode(&mut b)?)),
        MessageType::Release => Message::Release(Release::decode(&mut b)?),
        MessageType::Closed => Message::Closed(Closed::decode(&mut b)?),
    })
}

impl Hello {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.fixed(HELLO_FIXED)?;
        let version = b.u32();
        b.zero_u32("flags")?;
        let n = b.u32();
        b.zero_u32("reserved")?;
        if n == 0 || n as usize > MAX_APPLICATIONS {
            return Err(b.range("nr_applications", n.into()));
        }
        b.total(HELLO_FIXED as u64 + NAME_LEN as u64 * u64::from(n))?;
        // Any version is well-formed: the backend answers an unsupported
        // one with ERROR VERSION.
        let mut applications: Vec<String> = Vec::new();
        for _ in 0..n {
            let field = b.take(NAME_LEN);
            let name = field_text(field)
                .filter(|n| is_name(n) || *n == ALL_APPLICATIONS)
                .ok_or(WireError::BadName {
                    kind: b.kind,
                    field: "application",
                })?;
            if applications.iter().any(|a| a == name) {
                return Err(WireError::Duplicate(name.to_string()));
            }
            applications.push(name.to_string());
        }
        if applications.len() > 1 && applications.iter().any(|a| a == ALL_APPLICATIONS) {
            return Err(WireError::Wildcard);
        }
        Ok(Self {
            version,
            applications,
        })
    }
}

impl Welcome {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.exact(WELCOME_SIZE)?;
        let version = b.u32();
        if version == 0 {
            return Err(b.range("version", 0));
        }
        let form = b.u32();
        let memory_form = MemoryForm::from_u32(form).ok_or(b.range("memory_form", form.into()))?;
        let queue_limit = b.u32();
        if queue_limit == 0 {
            return Err(b.range("queue_limit", 0));
        }
        b.zero_u32("reserved")?;
        let server = field_text(b.take(SERVER_NAME_LEN))
            .filter(|s| s.bytes().all(|c| (0x20..0x7f).contains(&c)))
            .ok_or(WireError::BadText {
                kind: b.kind,
                field: "server",
            })?
            .to_string();
        Ok(Self {
            version,
            memory_form,
            queue_limit,
            server,
        })
    }
}

impl ErrorMessage {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.fixed(ERROR_FIXED)?;
        let code = b.u32();
        let length = b.u32();
        if length as usize > MAX_ERROR_TEXT {
            return Err(b.range("length", length.into()));
        }
        b.total(ERROR_FIXED as u64 + u64::from(length))?;
        let code = ErrorCode::from_u32(code).ok_or(b.range("code", code.into()))?;
        let message = std::str::from_utf8(b.take(length as usize))
            .ok()
            .filter(|s| !s.chars().any(char::is_control))
            .ok_or(WireError::BadText {
                kind: b.kind,
                field: "message",
            })?
            .to_string();
        Ok(Self { code, message })
    }
}

impl Add<usize> {
    /// Decodes an ADD that came with `nr_fds` descriptors.
    fn decode(b: &mut In<'_>, nr_fds: usize) -> Result<Self, WireError> {
        b.fixed(ADD_FIXED)?;
        let guest = b.name("guest")?;
        let buffer_id = b.u64();
        let application = b.name("application")?;
        let size = b.u64();
        let seqno = b.u64();
        let form = b.u32();
        let nr_segments = b.u32();
        let props_size = b.u32();
        b.zero_u32("reserved")?;
        let props_size = b.props_size(props_size)?;
        let memory_form = MemoryForm::from_u32(form).ok_or(b.range("memory_form", form.into()))?;
        // DMABUF: 0 segments (one dma-buf), or (version 2) segments of
        // several; SEGMENTS: segments.
        let segments_ok = match memory_form {
            MemoryForm::DmaBuf => (0..=MAX_SEGMENTS).contains(&(nr_segments as usize)),
            MemoryForm::Segments => (1..=MAX_SEGMENTS).contains(&(nr_segments as usize)),
        };
        if !segments_ok {
            return Err(b.range("nr_segments", nr_segments.into()));
        }
        let padded = props_size.next_multiple_of(8);
        b.total((ADD_FIXED + padded) as u64 + SEGMENT_SIZE as u64 * u64::from(nr_segments))?;
        if size == 0 {
            return Err(b.range("size", 0));
        }
        let properties = b.props(props_size)?;
        if b.take(padded - props_size).iter().any(|&c| c != 0) {
            return Err(WireError::NotZero {
                kind: b.kind,
                field: "padding",
            });
        }
        let memory = match memory_form {
            MemoryForm::DmaBuf if nr_segments != 0 => Memory::DmaBufs {
                segments: b.segments(nr_segments as usize, nr_fds, size)?,
                dmabufs: (0..nr_fds).collect(),
            },
            MemoryForm::DmaBuf => {
                if nr_fds != 1 {
                    return Err(WireError::FdMismatch {
                        kind: b.kind,
                        expected: 1,
                        received: nr_fds,
                    });
                }
                Memory::DmaBuf(0)
            }
            MemoryForm::Segments => Memory::Segments {
                segments: b.segments(nr_segments as usize, nr_fds, size)?,
                files: (0..nr_fds).collect(),
            },
        };
        Ok(Self {
            guest,
            buffer_id,
            application,
            size,
            seqno,
            properties,
            memory,
        })
    }
}

impl Update {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.exact(UPDATE_SIZE)?;
        let guest = b.name("guest")?;
        let buffer_id = b.u64();
        let seqno = b.u64();
        let flags = b.u32();
        b.zero_u32("reserved")?;
        let (offset, len) = (b.u64(), b.u64());
        let (x, y, width, height) = (b.u32(), b.u32(), b.u32(), b.u32());
        if seqno == 0 {
            return Err(b.range("seqno", 0));
        }
        if flags & !(UPDATE_F_RANGE | UPDATE_F_RECT) != 0 {
            return Err(b.range("flags", flags.into()));
        }
        let range = if flags & UPDATE_F_RANGE != 0 {
            if len == 0 {
                return Err(b.range("length", 0));
            }
            if offset.checked_add(len).is_none() {
                return Err(b.range("offset", offset));
            }
            Some(ByteRange { offset, len })
        } else if offset != 0 || len != 0 {
            return Err(WireError::NotZero {
                kind: b.kind,
                field: "range without RANGE",
            });
        } else {
            None
        };
        let rect = if flags & UPDATE_F_RECT != 0 {
            if width == 0 || height == 0 {
                return Err(b.range("width or height", 0));
            }
            if x.checked_add(width).is_none() || y.checked_add(height).is_none() {
                return Err(b.range("rectangle", u64::from(x.max(y))));
            }
            Some(Rect {
                x,
                y,
                width,
                height,
            })
        } else if x != 0 || y != 0 || width != 0 || height != 0 {
            return Err(WireError::NotZero {
                kind: b.kind,
                field: "rectangle without RECT",
            });
        } else {
            None
        };
        Ok(Self {
            guest,
            buffer_id,
            seqno,
            range,
            rect,
        })
    }
}

impl PropertiesChanged {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.fixed(PROPERTIES_FIXED)?;
        let guest = b.name("guest")?;
        let buffer_id = b.u64();
        let props_size = b.u32();
        b.zero_u32("reserved")?;
        let props_size = b.props_size(props_size)?;
        b.total((PROPERTIES_FIXED + props_size) as u64)?;
        let properties = b.props(props_size)?;
        Ok(Self {
            guest,
            buffer_id,
            properties,
        })
    }
}

impl Remove {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.exact(REMOVE_SIZE)?;
        let guest = b.name("guest")?;
        let buffer_id = b.u64();
        Ok(Self { guest, buffer_id })
    }
}

impl Release {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.exact(RELEASE_SIZE)?;
        let guest = b.name("guest")?;
        let buffer_id = b.u64();
        let seqno = b.u64();
        Ok(Self {
            guest,
            buffer_id,
            seqno,
        })
    }
}

impl Closed {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.exact(CLOSED_SIZE)?;
        let guest = b.name("guest")?;
        let buffer_id = b.u64();
        Ok(Self { guest, buffer_id })
    }
}

impl Reset {
    fn decode(b: &mut In<'_>) -> Result<Self, WireError> {
        b.exact(RESET_SIZE)?;
        let guest = b.name("guest")?;
        let reason = b.u32();
        b.zero_u32("reserved")?;
        let reason = ResetReason::from_u32(reason).ok_or(b.range("reason", reason.into()))?;
        Ok(Self { guest, reason })
    }
}

/// A body being encoded.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    fn name(&mut self, name: &str) {
        // A name longer than the field is cut, and then refused by the
        // check that follows encoding (no NUL).
        self.0.extend_from_slice(&name_field(name));
    }

    fn pad8(&mut self) {
        let padded = self.0.len().next_multiple_of(8);
        self.0.resize(padded, 0);
    }
}

/// A body being decoded. Every read is within the bytes: [`In::fixed`] and
/// [`In::total`] check the size before the fields are read.
struct In<'a> {
    kind: MessageType,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> In<'a> {
    fn new(kind: MessageType, bytes: &'a [u8]) -> Self {
        Self { kind, bytes, at: 0 }
    }

    /// Checks that the body holds at least the fixed part.
    fn fixed(&self, size: usize) -> Result<(), WireError> {
        if self.bytes.len() < size {
            return Err(WireError::Size {
                kind: self.kind,
                size: self.bytes.len(),
                expected: size,
            });
        }
        Ok(())
    }

    /// Checks that the body is exactly `size` bytes: that of a message
    /// with no part of variable size.
    fn exact(&self, size: usize) -> Result<(), WireError> {
        self.total(size as u64)
    }

    /// Checks that the body is exactly `expected` bytes.
    fn total(&self, expected: u64) -> Result<(), WireError> {
        if self.bytes.len() as u64 != expected {
            return Err(WireError::Size {
                kind: self.kind,
                size: self.bytes.len(),
                expected: usize::try_from(expected).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        out
    }

    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn u64(&mut self) -> u64 {
        let mut v = [0; 8];
        v.copy_from_slice(self.take(8));
        u64::from_le_bytes(v)
    }

    fn zero_u32(&mut self, field: &'static str) -> Result<(), WireError> {
        if self.u32() != 0 {
            return Err(WireError::NotZero {
                kind: self.kind,
                field,
            });
        }
        Ok(())
    }

    fn range(&self, field: &'static str, value: u64) -> WireError {
        WireError::OutOfRange {
            kind: self.kind,
            field,
            value,
        }
    }

    fn name(&mut self, field: &'static str) -> Result<String, WireError> {
        let kind = self.kind;
        field_text(self.take(NAME_LEN))
            .filter(|n| is_name(n))
            .map(str::to_string)
            .ok_or(WireError::BadName { kind, field })
    }

    /// Checks the size of the properties that follow, read before.
    fn props_size(&self, size: u32) -> Result<usize, WireError> {
        if size as usize > MAX_PROPS_SIZE {
            return Err(self.range("props_size", size.into()));
        }
        Ok(size as usize)
    }

    fn props(&mut self, size: usize) -> Result<Properties, WireError> {
        let kind = self.kind;
        Properties::parse(self.take(size)).map_err(|error| WireError::Properties { kind, error })
    }

    fn segments(&mut self, n: usize, nr_fds: usize, size: u64) -> Result<Vec<Segment>, WireError> {
        let mut segments = Vec::with_capacity(n);
        let mut used = vec![false; nr_fds];
        let mut sum = 0u64;
        for index in 0..n {
            let bad = |what| WireError::BadSegment { index, what };
            let file = self.u32();
            let reserved = self.u32();
            let offset = self.u64();
            let len = self.u64();
            if reserved != 0 {
                return Err(bad("reserved is not 0"));
            }
            if file as usize >= nr_fds {
                return Err(bad("file out of range"));
            }
            if len == 0 {
                return Err(bad("empty"));
            }
            if offset.checked_add(len).is_none() {
                return Err(bad("offset + length overflows"));
            }
            used[file as usize] = true;
            sum = sum.saturating_add(len);
            segments.push(Segment { file, offset, len });
        }
        if sum != size {
            return Err(WireError::SegmentsSize { size, sum });
        }
        if let Some(unused) = used.iter().position(|u| !u) {
            return Err(WireError::UnusedFd(unused));
        }
        Ok(segments)
    }
}

#[cfg(test)]
mod tests;
