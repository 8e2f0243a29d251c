// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! A blocking consumer: connect, subscribe, then take events one by one.
//!
//! ```no_run
//! use bufshare_consumer::{Client, Event};
//!
//! let mut client = Client::connect("/run/bufshare/consumer.sock")?;
//! let welcome = client.subscribe(&["camera"])?;
//! println!("memory as {}", welcome.memory_form);
//! loop {
//!     match client.next_event()? {
//!         Event::Add(add) => println!("{} {}: {} bytes", add.guest, add.buffer_id, add.size),
//!         Event::Remove(remove) => println!("{} {} gone", remove.guest, remove.buffer_id),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok::<(), bufshare_consumer::Error>(())
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::debug;
use thiserror::Error as ThisError;

use std::collections::HashMap;
use std::sync::Arc;

use crate::answers::{Answerer, BufferMapping, FrameGuard, Holding, Instance};
use crate::io::{recv_message, send_message, RecvError};
use crate::map::MappedBuffer;
use crate::wire::{
    Add, ErrorMessage, Event, Hello, Memory, Message, MessageType, Update, Welcome, WireError,
    VERSION,
};

/// Errors of a [`Client`].
#[derive(Debug, ThisError)]
pub enum Error {
    /// The socket could not be reached.
    #[error("cannot connect to {0}: {1}")]
    Connect(PathBuf, io::Error),
    /// Talking to the backend failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// What the backend sent could not be received or is malformed.
    #[error("{0}")]
    Recv(#[from] RecvError),
    /// The subscription cannot be encoded (a bad application name).
    #[error("bad subscription: {0}")]
    Subscription(WireError),
    /// The backend refused the subscription.
    #[error("refused: {0}")]
    Refused(ErrorMessage),
    /// The backend ended the connection with an error (queue overflow,
    /// shutdown).
    #[error("ended by the backend: {0}")]
    Ended(ErrorMessage),
    /// The backend closed the connection.
    #[error("connection closed by the backend")]
    Closed,
    /// The backend sent a message that has no place here.
    #[error("unexpected {0} from the backend")]
    Unexpected(MessageType),
    /// The backend answered with a version this crate does not speak.
    #[error("the backend speaks version {0}, not 1 to {VERSION}")]
    Version(u32),
    /// The backend sent what the connection's version does not have.
    #[error("{0}, which version {1} does not have")]
    NotInVersion(&'static str, u32),
    /// [`Client::next_event`] before [`Client::subscribe`].
    #[error("not subscribed")]
    NotSubscribed,
    /// [`Client::subscribe`] twice.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// An earlier error left the connection unusable.
    #[error("the connection failed earlier")]
    Broken,
}

impl Error {
    /// Whether the error leaves the connection usable: only a read timeout
    /// before a message does.
    fn is_recoverable(&self) -> bool {
        matches!(self, Error::Recv(RecvError::Timeout))
    }
}

/// A connection to the backend's consumer socket.
///
/// With a backend of version 3, the client tells the backend when the
/// consumer is done with buffers (see [`crate::answers`]): map buffers with
/// [`Client::map`] (or hold their descriptors with [`Client::hold`]), and
/// CLOSED goes once a removed buffer's mappings are dropped; release
/// updates with [`Client::release`] or [`Client::frame`].
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    welcome: Option<Welcome>,
    broken: bool,
    answerer: Answerer,
    /// The buffers given (ADD) and not removed, by guest and id.
    instances: HashMap<(String, u64), Vec<Arc<Instance>>>,
}

impl Client {
    /// Connects to the consumer socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let stream =
            UnixStream::connect(path).map_err(|e| Error::Connect(path.to_path_buf(), e))?;
        Ok(Self::from_stream(stream))
    }

    /// A client on a connected stream.
    pub fn from_stream(stream: UnixStream) -> Self {
        Self {
            stream,
            welcome: None,
            broken: false,
            answerer: Answerer::default(),
            instances: HashMap::new(),
        }
    }

    /// How long [`Client::subscribe`] and [`Client::next_event`] wait for a
    /// message (`None`: forever, the default). A wait that ends before a
    /// message begins returns [`RecvError::Timeout`] and leaves the
    /// connection usable; one that ends in the middle of a message breaks
    /// it.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Subscribes to the buffers of `applications` (names, or just
    /// [`crate::ALL_APPLICATIONS`]), speaking version [`VERSION`]; returns
    /// the backend's WELCOME.
    pub fn subscribe<S: AsRef<str>>(&mut self, applications: &[S]) -> Result<&Welcome, Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        if self.welcome.is_some() {
            return Err(Error::AlreadySubscribed);
        }
        let hello: Message = Message::Hello(Hello {
            version: VERSION,
            applications: applications
                .iter()
                .map(|a| a.as_ref().to_string())
                .collect(),
        });
        let encoded = hello.encode().map_err(Error::Subscription)?;
        let result = match send_message(self.stream.as_fd(), &encoded.bytes, &[]) {
            Ok(()) => self.recv(),
            // The backend may have refused the connection before reading
            // the HELLO, and closed it: its ERROR is waiting.
            Err(e) => match self.recv() {
                Ok(Message::Error(error)) => Ok(Message::Error(error)),
                _ => Err(Error::Io(e)),
            },
        };
        let welcome = match result {
            Ok(Message::Welcome(welcome)) => welcome,
            Ok(Message::Error(error)) => return Err(self.fail(Error::Refused(error))),
            Ok(other) => return Err(self.fail(Error::Unexpected(other.kind()))),
            Err(e) => return Err(self.fail(e)),
        };
        if !(1..=VERSION).contains(&welcome.version) {
            return Err(self.fail(Error::Version(welcome.version)));
        }
        debug!(
            "subscribed to {}: memory as {}, queue of {}",
            welcome.server, welcome.memory_form, welcome.queue_limit
        );
        if welcome.version >= 3 {
            let stream = self.stream.try_clone().map_err(|e| self.fail(e.into()))?;
            self.answerer = Answerer::new(stream);
        }
        Ok(self.welcome.insert(welcome))
    }

    /// The backend's WELCOME, once subscribed.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// Waits for the next event. An ERROR from the backend is
    /// [`Error::Ended`]; the end of the stream is [`Error::Closed`]. After
    /// any error but a timeout, the connection is unusable.
    pub fn next_event(&mut self) -> Result<Event, Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        if self.welcome.is_none() {
            return Err(Error::NotSubscribed);
        }
        let version = self.welcome.as_ref().map_or(VERSION, |w| w.version);
        match self.recv() {
            Ok(Message::Event(event)) => match newer_than(&event, version) {
                Some(what) => Err(self.fail(Error::NotInVersion(what, version))),
                None => {
                    self.track(&event);
                    Ok(event)
                }
            },
            Ok(Message::Error(error)) => Err(self.fail(Error::Ended(error))),
            Ok(other) => Err(self.fail(Error::Unexpected(other.kind()))),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Keeps the instances of buffers as ADD, REMOVE and RESET come.
    fn track(&mut self, event: &Event) {
        match event {
            Event::Add(add) => {
                let instance = Instance::new(&add.guest, add.buffer_id, self.answerer.clone());
                self.instances
                    .entry((add.guest.clone(), add.buffer_id))
                    .or_default()
                    .push(instance);
            }
            Event::Remove(remove) => {
                let key = (remove.guest.clone(), remove.buffer_id);
                for instance in self.instances.remove(&key).unwrap_or_default() {
                    instance.end();
                }
            }
            Event::Reset(reset) => {
                let keys: Vec<(String, u64)> = self
                    .instances
                    .keys()
                    .filter(|(guest, _)| *guest == reset.guest)
                    .cloned()
                    .collect();
                for key in keys {
                    for instance in self.instances.remove(&key).unwrap_or_default() {
                        instance.end();
                    }
                }
            }
            Event::Update(_) | Event::Properties(_) => {}
        }
    }

    /// A [`Holding`] of the latest ADD of `add`'s buffer: while it lives,
    /// the backend is not told CLOSED for it. For a consumer that keeps
    /// the ADD's descriptors itself; [`Client::map`] takes one for its
    /// mapping. Without one, CLOSED goes as soon as REMOVE is read: the
    /// ADD must have been dropped by then.
    pub fn hold<F>(&self, add: &Add<F>) -> Option<Holding> {
        self.instances
            .get(&(add.guest.clone(), add.buffer_id))
            .and_then(|instances| instances.last())
            .map(Instance::hold)
    }

    /// Maps `add`'s buffer (read-only unless `writable`) and holds it:
    /// dropping the mapping after the buffer's REMOVE tells the backend
    /// CLOSED. The ADD's descriptors may be dropped at once.
    pub fn map<F: AsFd>(&self, add: &Add<F>, writable: bool) -> io::Result<BufferMapping> {
        let holding = self.hold(add).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "buffer {} of guest {}: no ADD of it is held",
                    add.buffer_id, add.guest
                ),
            )
        })?;
        let map = MappedBuffer::new(add, writable)?;
        Ok(BufferMapping::new(map, holding))
    }

    /// Tells the backend that the consumer is done with every update of
    /// buffer `buffer_id` of `guest` up to `seqno` (RELEASE); nothing with
    /// a backend before version 3.
    pub fn release(&self, guest: &str, buffer_id: u64, seqno: u64) -> Result<(), Error> {
        Ok(self.answerer.release(guest, buffer_id, seqno)?)
    }

    /// A guard of `update` that releases it when dropped.
    pub fn frame(&self, update: &Update) -> FrameGuard {
        FrameGuard::new(
            self.answerer.clone(),
            &update.guest,
            update.buffer_id,
            update.seqno,
        )
    }

    /// What sends RELEASE and CLOSED, for other threads.
    pub fn answerer(&self) -> &Answerer {
        &self.answerer
    }

    fn recv(&mut self) -> Result<Message, Error> {
        recv_message(self.stream.as_fd())?.ok_or(Error::Closed)
    }

    fn fail(&mut self, e: Error) -> Error {
        if !e.is_recoverable() {
            self.broken = true;
        }
        e
    }
}

/// What of `event` is newer than `version`, if anything.
fn newer_than<F>(event: &Event<F>, version: u32) -> Option<&'static str> {
    match event {
        Event::Add(add) if matches!(add.memory, Memory::DmaBufs { .. }) && version < 2 => {
            Some("an ADD of several dma-bufs")
        }
        Event::Reset(reset) if reset.reason.since_version() > version => {
            Some("a RESET for an overflow")
        }
        _ => None,
    }
}

impl AsFd for Client {
    /// The socket, to wait for events with `poll()`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::io::recv_message;
    use crate::wire::{ErrorCode, MemoryForm, Remove, Reset, ResetReason};

    fn welcome(version: u32) -> Message {
        Message::Welcome(Welcome {
            version,
            memory_form: MemoryForm::Segments,
            queue_limit: 8,
            server: "test".into(),
        })
    }

    fn send(sock: &UnixStream, message: &Message) {
        let encoded = message.encode().unwrap();
        send_message(sock.as_fd(), &encoded.bytes, &encoded.fds).unwrap();
    }

    /// A client and the other end, on which `server` runs in a thread: it
    /// gets the HELLO and sends `answers`.
    fn serve(answers: Vec<Message>) -> (Client, thread::JoinHandle<Hello>) {
        let (a, b) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            let Some(Message::Hello(hello)) = recv_message(b.as_fd()).unwrap() else {
                panic!("no HELLO");
            };
            for answer in &answers {
                send(&b, answer);
            }
            hello
        });
        (Client::from_stream(a), server)
    }

    fn remove() -> Message {
        Message::Event(Event::Remove(Remove {
            guest: "g".into(),
            buffer_id: 3,
        }))
    }

    #[test]
    fn subscribe_and_events() {
        let end = Message::Error(ErrorMessage::new(ErrorCode::Overflow, "too slow"));
        let reset = Message::Event(Event::Reset(Reset {
            guest: "g".into(),
            reason: ResetReason::Disconnected,
        }));
        let (mut client, server) = serve(vec![welcome(1), remove(), reset, end]);
        assert!(matches!(client.next_event(), Err(Error::NotSubscribed)));
        let welcome = client.subscribe(&["a", "b"]).unwrap();
        assert_eq!(welcome.queue_limit, 8);
        assert_eq!(client.welcome().unwrap().server, "test");
        let hello = server.join().unwrap();
        assert_eq!(hello.version, VERSION);
        assert_eq!(hello.applications, ["a", "b"]);
        assert!(matches!(
            client.subscribe(&["a"]),
            Err(Error::AlreadySubscribed)
        ));
        assert!(matches!(
            client.next_event().unwrap(),
            Event::Remove(Remove { buffer_id: 3, .. })
        ));
        assert!(matches!(client.next_event().unwrap(), Event::Reset(_)));
        match client.next_event() {
            Err(Error::Ended(e)) => assert_eq!(e.code, ErrorCode::Overflow),
            other => panic!("{other:?}"),
        }
        assert!(matches!(client.next_event(), Err(Error::Broken)));
    }

    #[test]
    fn refused() {
        let denied = Message::Error(ErrorMessage::new(ErrorCode::Denied, "no camera for you"));
        let (mut client, _server) = serve(vec![denied]);
        match client.subscribe(&["camera"]) {
            Err(Error::Refused(e)) => {
                assert_eq!(e.code, ErrorCode::Denied);
                assert_eq!(e.to_string(), "denied: no camera for you");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(client.subscribe(&["camera"]), Err(Error::Broken)));
    }

    #[test]
    fn refused_before_the_hello() {
        // The backend refuses at once and closes: the HELLO cannot be
        // sent, but the ERROR is there to read.
        let (a, b) = UnixStream::pair().unwrap();
        send(
            &b,
            &Message::Error(ErrorMessage::new(ErrorCode::Busy, "16 consumers")),
        );
        drop(b);
        let mut client = Client::from_stream(a);
        match client.subscribe(&["a"]) {
            Err(Error::Refused(e)) => assert_eq!(e.code, ErrorCode::Busy),
            other => panic!("{other:?}"),
        }
        // Closed without a word: the send error.
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut client = Client::from_stream(a);
        assert!(matches!(client.subscribe(&["a"]), Err(Error::Io(_))));
    }

    #[test]
    fn versions() {
        let overflow = || {
            Message::Event(Event::Reset(Reset {
                guest: "g".into(),
                reason: ResetReason::Overflow,
            }))
        };
        // Version 2: RESET OVERFLOW is known.
        let (mut client, _server) = serve(vec![welcome(2), overflow()]);
        assert_eq!(client.subscribe(&["a"]).unwrap().version, 2);
        assert!(matches!(client.next_event().unwrap(), Event::Reset(_)));
        // A version 1 backend: spoken too, but without it.
        let (mut client, _server) = serve(vec![welcome(1), remove(), overflow()]);
        assert_eq!(client.subscribe(&["a"]).unwrap().version, 1);
        assert!(matches!(client.next_event().unwrap(), Event::Remove(_)));
        assert!(matches!(
            client.next_event(),
            Err(Error::NotInVersion(_, 1))
        ));
        assert!(matches!(client.next_event(), Err(Error::Broken)));
        // Nor an ADD of several dma-bufs.
        let add = |fds: Vec<std::os::fd::OwnedFd>| {
            Message::Event(Event::Add(crate::wire::Add {
                guest: "g".into(),
                buffer_id: 1,
                application: "a".into(),
                size: 2,
                seqno: 0,
                properties: Default::default(),
                memory: Memory::DmaBufs {
                    segments: (0..fds.len() as u32)
                        .map(|file| crate::wire::Segment {
                            file,
                            offset: 0,
                            len: 1,
                        })
                        .collect(),
                    dmabufs: fds,
                },
            }))
        };
        let memfd = crate::test_support::memfd;
        let (mut client, _server) = serve(vec![welcome(1), add(vec![memfd(), memfd()])]);
        client.subscribe(&["a"]).unwrap();
        assert!(matches!(
            client.next_event(),
            Err(Error::NotInVersion(_, 1))
        ));
        let (mut client, _server) = serve(vec![welcome(2), add(vec![memfd(), memfd()])]);
        client.subscribe(&["a"]).unwrap();
        assert!(matches!(client.next_event().unwrap(), Event::Add(_)));
    }

    #[test]
    fn bad_answers() {
        let (mut client, _server) = serve(vec![welcome(VERSION + 1)]);
        assert!(matches!(client.subscribe(&["a"]), Err(Error::Version(4))));
        let (mut client, _server) = serve(vec![remove()]);
        assert!(matches!(
            client.subscribe(&["a"]),
            Err(Error::Unexpected(MessageType::Remove))
        ));
        let (mut client, _server) = serve(vec![]);
        assert!(matches!(client.subscribe(&["a"]), Err(Error::Closed)));
        let (mut client, _server) = serve(vec![welcome(1), welcome(1)]);
        client.subscribe(&["a"]).unwrap();
        assert!(matches!(
            client.next_event(),
            Err(Error::Unexpected(MessageType::Welcome))
        ));
        let (mut client, server) = serve(vec![welcome(1)]);
        client.subscribe(&["a"]).unwrap();
        server.join().unwrap();
        assert!(matches!(client.next_event(), Err(Error::Closed)));
    }

    #[test]
    fn bad_subscription_is_not_sent() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut client = Client::from_stream(a);
        assert!(matches!(
            client.subscribe(&["bad name"]),
            Err(Error::Subscription(_))
        ));
        let none: [&str; 0] = [];
        assert!(matches!(
            client.subscribe(&none),
            Err(Error::Subscription(_))
        ));
        assert!(client.as_raw_fd() >= 0);
    }

    #[test]
    fn timeout_keeps_the_connection() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Client::from_stream(a);
        let server = thread::spawn(move || {
            recv_message(b.as_fd()).unwrap();
            send(&b, &welcome(1));
            b
        });
        client.subscribe(&[crate::ALL_APPLICATIONS]).unwrap();
        let b = server.join().unwrap();
        // Set only now: the handshake must not race the timeout on a
        // loaded machine.
        client
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        assert!(matches!(
            client.next_event(),
            Err(Error::Recv(RecvError::Timeout))
        ));
        send(&b, &remove());
        assert!(matches!(client.next_event(), Ok(Event::Remove(_))));
    }

    #[test]
    fn connect_failure() {
        let e = Client::connect("/nonexistent/bufshare.sock").unwrap_err();
        assert!(matches!(e, Error::Connect(..)));
        assert!(e.to_string().contains("/nonexistent/bufshare.sock"));
    }

    /// An ADD of buffer `id` of guest "g": one page of a memfd.
    fn page_add(id: u64) -> Message {
        let fd = crate::test_support::memfd();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        Message::Event(Event::Add(crate::wire::Add {
            guest: "g".into(),
            buffer_id: id,
            application: "a".into(),
            size: 4096,
            seqno: 0,
            properties: Default::default(),
            memory: Memory::Segments {
                files: vec![fd],
                segments: vec![crate::wire::Segment {
                    file: 0,
                    offset: 0,
                    len: 4096,
                }],
            },
        }))
    }

    fn remove_of(id: u64) -> Message {
        Message::Event(Event::Remove(Remove {
            guest: "g".into(),
            buffer_id: id,
        }))
    }

    /// What the consumer sent after its HELLO, read by the other end
    /// within 200 ms, as text.
    fn answers(server: &UnixStream) -> Vec<String> {
        server
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut out = Vec::new();
        while let Ok(Some(m)) = recv_message(server.as_fd()) {
            out.push(format!("{m:?}"));
        }
        out
    }

    fn said(messages: Vec<Message>) -> Vec<String> {
        messages.iter().map(|m| format!("{m:?}")).collect()
    }

    fn closed_of(id: u64) -> Message {
        Message::Closed(crate::wire::Closed {
            guest: "g".into(),
            buffer_id: id,
        })
    }

    #[test]
    fn closed_when_the_last_mapping_of_a_removed_buffer_goes() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Client::from_stream(a);
        send(&b, &welcome(3));
        for message in [page_add(1), page_add(2), page_add(3)] {
            send(&b, &message);
        }
        client.subscribe(&["a"]).unwrap();
        assert!(matches!(
            recv_message(b.as_fd()).unwrap(),
            Some(Message::Hello(_))
        ));
        let Event::Add(add1) = client.next_event().unwrap() else {
            panic!("no ADD")
        };
        let map1 = client.map(&add1, false).unwrap();
        drop(add1);
        let Event::Add(add2) = client.next_event().unwrap() else {
            panic!("no ADD")
        };
        let map2 = client.map(&add2, false).unwrap();
        let second = client.map(&add2, false).unwrap();
        drop(add2);
        // Taken and dropped before its REMOVE: CLOSED when REMOVE is read.
        let Event::Add(add3) = client.next_event().unwrap() else {
            panic!("no ADD")
        };
        drop(client.map(&add3, false).unwrap());
        drop(add3);
        assert!(answers(&b).is_empty(), "nothing removed yet");
        send(&b, &remove_of(1));
        send(&b, &remove_of(2));
        send(&b, &remove_of(3));
        for _ in 0..3 {
            assert!(matches!(client.next_event().unwrap(), Event::Remove(_)));
        }
        assert_eq!(answers(&b), said(vec![closed_of(3)]));
        assert!(map1.holding().removed());
        drop(map1);
        assert_eq!(answers(&b), said(vec![closed_of(1)]));
        drop(map2);
        assert!(answers(&b).is_empty(), "one mapping of buffer 2 left");
        drop(second);
        assert_eq!(answers(&b), said(vec![closed_of(2)]));
    }

    #[test]
    fn reset_ends_every_buffer_of_the_guest_and_frames_release() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Client::from_stream(a);
        send(&b, &welcome(3));
        send(&b, &page_add(5));
        client.subscribe(&["a"]).unwrap();
        recv_message(b.as_fd()).unwrap();
        let Event::Add(add) = client.next_event().unwrap() else {
            panic!("no ADD")
        };
        let map = client.map(&add, true).unwrap();
        let update = Update {
            guest: "g".into(),
            buffer_id: 5,
            seqno: 9,
            range: None,
            rect: None,
        };
        let frame = client.frame(&update);
        assert_eq!(frame.seqno(), 9);
        drop(frame);
        client.release("g", 5, 10).unwrap();
        client.frame(&update).forget();
        let release = |seqno| {
            Message::Release(crate::wire::Release {
                guest: "g".into(),
                buffer_id: 5,
                seqno,
            })
        };
        assert_eq!(answers(&b), said(vec![release(9), release(10)]));
        send(
            &b,
            &Message::Event(Event::Reset(Reset {
                guest: "g".into(),
                reason: ResetReason::DeviceReset,
            })),
        );
        assert!(matches!(client.next_event().unwrap(), Event::Reset(_)));
        assert!(answers(&b).is_empty());
        drop(map);
        assert_eq!(answers(&b), said(vec![closed_of(5)]));
    }

    #[test]
    fn nothing_is_said_before_version_3() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Client::from_stream(a);
        send(&b, &welcome(2));
        send(&b, &page_add(1));
        send(&b, &remove_of(1));
        client.subscribe(&["a"]).unwrap();
        recv_message(b.as_fd()).unwrap();
        let Event::Add(add) = client.next_event().unwrap() else {
            panic!("no ADD")
        };
        let map = client.map(&add, false).unwrap();
        assert!(!client.answerer().enabled());
        client.next_event().unwrap();
        drop(map);
        client.release("g", 1, 1).unwrap();
        assert!(answers(&b).is_empty());
    }
}
