// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The consumer socket: hands the guests' buffers to host programs, as file
//! descriptors, by application, with their updates, as
//! `Documentation/host/bufshare-consumer.rst` specifies.
//!
//! * [`access`]: who may subscribe to what;
//! * [`hub`]: the buffers handed over, and a bounded queue per consumer;
//! * [`export`]: a buffer's memory as file descriptors (memory files and
//!   segments, or a dma-buf made with udmabuf);
//! * here, the server: a thread accepts connections on a unix socket (mode
//!   0600 unless configured otherwise); each consumer gets a thread of its
//!   own, which checks its credentials (`SO_PEERCRED`) and its HELLO, then
//!   sends what its queue holds.

pub mod access;
pub mod export;
pub mod hub;
pub mod peer;

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bufshare_consumer::io::{recv_message, send_message};
use bufshare_consumer::wire::{Header, HEADER_SIZE};
use bufshare_consumer::{ErrorCode, ErrorMessage, MemoryForm, Message, Welcome, VERSION};
use log::{debug, error, info, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use thiserror::Error as ThisError;
use vmm_sys_util::eventfd::EventFd;

use self::access::AccessPolicy;
use self::export::{Receiver, Udmabuf};
use self::hub::{ConsumerQueue, GuestEvents, Hub, HubError, Next, DEFAULT_CLOSE_GRACE};
use self::peer::peer_pidfd;
use crate::device::device_name;
use crate::holders::HolderId;
use crate::socket::{self, ListenError, SocketThread};

/// Default number of events queued for a consumer.
pub const DEFAULT_QUEUE_LIMIT: usize = 1024;
/// Default number of consumers at a time.
pub const DEFAULT_MAX_CONSUMERS: usize = 16;
/// Default number of consumers of one uid at a time.
pub const DEFAULT_MAX_CONSUMERS_PER_UID: usize = 4;
/// How long a consumer has to send its HELLO, and to take each message.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long consumers have to take their SHUTDOWN when the server stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Errors of the consumer server.
#[derive(Debug, ThisError)]
pub enum Error {
    /// The socket could not be made.
    #[error("consumer socket: {0}")]
    Listen(#[from] ListenError),
    /// The thread or its events could not be made.
    #[error("cannot start the consumer server: {0}")]
    Start(io::Error),
    /// A guest could not be added.
    #[error("{0}")]
    Guest(#[from] HubError),
}

/// How the consumer socket is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Where the socket is.
    pub path: PathBuf,
    /// Its file mode.
    pub mode: u32,
    /// Who may subscribe to what.
    pub access: AccessPolicy,
    /// Events queued for a consumer before it overflows.
    pub queue_limit: usize,
    /// Consumers at a time, handshakes included.
    pub max_consumers: usize,
    /// Consumers of one uid at a time, handshakes included: so that no uid
    /// takes every slot, even with connections that say nothing.
    pub max_consumers_per_uid: usize,
    /// The udmabuf device to make dma-bufs with, if it works; `None`:
    /// hand memory over as segments.
    pub udmabuf: Option<PathBuf>,
    /// How long a consumer has to send its HELLO, and to take each message.
    pub client_timeout: Duration,
    /// How long a consumer of version 3 has to say CLOSED after a REMOVE
    /// (or RESET) of a buffer it holds, before it is disconnected.
    pub close_grace: Duration,
}

impl ConsumerConfig {
    /// The defaults, for a socket at `path`: mode 0600, only this process's
    /// uid allowed, /dev/udmabuf if it works.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: 0o600,
            access: AccessPolicy::for_this_process(Vec::new()),
            queue_limit: DEFAULT_QUEUE_LIMIT,
            max_consumers: DEFAULT_MAX_CONSUMERS,
            max_consumers_per_uid: DEFAULT_MAX_CONSUMERS_PER_UID,
            udmabuf: Some(PathBuf::from(Udmabuf::DEVICE)),
            client_timeout: CLIENT_TIMEOUT,
            close_grace: DEFAULT_CLOSE_GRACE,
        }
    }
}

/// A consumer's connection, seen from the accepting thread.
struct Connection {
    thread: JoinHandle<()>,
    /// To cut it short at shutdown.
    stream: UnixStream,
}

/// What the server's threads share.
struct Shared {
    hub: Arc<Hub>,
    access: AccessPolicy,
    max_consumers: usize,
    max_consumers_per_uid: usize,
    client_timeout: Duration,
    /// Connections open, handshakes included.
    active: AtomicUsize,
    /// Connections open by uid, handshakes included.
    by_uid: Mutex<HashMap<u32, usize>>,
    /// Readable once the server stops: ends the waits for consumers'
    /// processes.
    stopping: nix::sys::eventfd::EventFd,
    /// The consumers gone holding buffers.
    reaper: Reaper,
}

impl Shared {
    /// Takes a connection slot for `uid`, if there is one for it; it is
    /// given back by [`Shared::release`].
    fn take_slot(&self, uid: u32) -> Result<(), String> {
        let mut by_uid = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        let mine = by_uid.entry(uid).or_default();
        if *mine >= self.max_consumers_per_uid {
            return Err(format!(
                "uid {uid} has {} consumers connected already, as many as one uid may",
                self.max_consumers_per_uid
            ));
        }
        if self.active.load(Ordering::SeqCst) >= self.max_consumers {
            return Err(format!(
                "{} consumers already connected",
                self.max_consumers
            ));
        }
        *mine += 1;
        self.active.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Gives back a slot of `uid`.
    fn release(&self, uid: u32) {
        let mut by_uid = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mine) = by_uid.get_mut(&uid) {
            *mine -= 1;
            if *mine == 0 {
                by_uid.remove(&uid);
            }
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running consumer server; dropping it ends every consumer (with ERROR
/// SHUTDOWN), stops its threads and removes the socket.
pub struct ConsumerServer {
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    server: SocketThread,
    /// Dropped last: once every consumer's thread is done.
    _reaper: ReaperThread,
}

/// A consumer that disconnected holding buffers, waiting for its process
/// to exit.
struct Waiting {
    pidfd: OwnedFd,
    id: HolderId,
    who: String,
}

/// The consumers waiting for their processes to exit, and the wake-up of
/// the thread that waits for them ([`reap`]).
struct Reaper {
    waiting: Mutex<Vec<Waiting>>,
    wake: nix::sys::eventfd::EventFd,
}

impl Reaper {
    fn add(&self, waiting: Waiting) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(waiting);
        if let Err(e) = self.wake.write(1) {
            error!("cannot wake the consumer reaper up: {e}");
        }
    }

    /// Number of consumers waited for.
    fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The thread that waits for the processes of consumers gone holding
/// buffers; stopped and joined when dropped.
struct ReaperThread {
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for ReaperThread {
    fn drop(&mut self) {
        let _ = self.shared.stopping.write(1);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                error!("the consumer reaper panicked");
            }
        }
    }
}

/// Until the server stops: waits for the processes of the consumers in
/// `shared.reaper`; as each exits, what it held is let go.
fn reap(shared: &Shared) {
    let lock = || {
        shared
            .reaper
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    };
    loop {
        // Copies of the pidfds: consumers' threads add to the list while
        // this waits.
        let watched: Vec<(OwnedFd, HolderId)> = lock()
            .iter()
            .filter_map(|w| match w.pidfd.try_clone() {
                Ok(fd) => Some((fd, w.id)),
                Err(e) => {
                    error!("consumer reaper: {}: {e}", w.who);
                    None
                }
            })
            .collect();
        let mut fds = vec![
            PollFd::new(shared.stopping.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.reaper.wake.as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            watched
                .iter()
                .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                error!("consumer reaper: {e}");
                return;
            }
        }
        let ready = |fd: &PollFd<'_>| !fd.revents().unwrap_or(PollFlags::empty()).is_empty();
        if ready(&fds[0]) {
            return;
        }
        if ready(&fds[1]) {
            let _ = shared.reaper.wake.read();
        }
        let exited: Vec<HolderId> = fds[2..]
            .iter()
            .zip(&watched)
            .filter(|(fd, _)| ready(fd))
            .map(|(_, (_, id))| *id)
            .collect();
        if exited.is_empty() {
            continue;
        }
        let gone: Vec<Waiting> = {
            let mut waiting = lock();
            let (gone, kept) = waiting.drain(..).partition(|w| exited.contains(&w.id));
            *waiting = kept;
            gone
        };
        for w in gone {
            info!("consumer {}: process exited: what it held is let go", w.who);
            shared.hub.gone(w.id);
        }
    }
}

impl ConsumerServer {
    /// Listens on `config.path` and serves consumers from threads of their
    /// own. The memory form is decided here: dma-bufs if `config.udmabuf`
    /// opens and makes one, segments otherwise.
    pub fn start(config: ConsumerConfig) -> Result<Self, Error> {
        let udmabuf = config
            .udmabuf
            .as_deref()
            .and_then(|path| match Udmabuf::open(path) {
                Ok(udmabuf) => Some(udmabuf),
                Err(e) => {
                    info!(
                        "{}: {e}: memory goes as segments, to consumers trusted \
                         with all of the guests' RAM (--trust-ram) only",
                        path.display()
                    );
                    None
                }
            });
        if udmabuf.is_some() {
            // A descriptor per dma-buf, kept as long as its buffer (up to
            // 32 for a buffer, max_buffers buffers per guest): far beyond
            // the usual soft limit of 1024.
            match raise_nofile_limit() {
                Ok((old, new)) if old != new => {
                    info!("dma-buf mode: RLIMIT_NOFILE soft limit raised from {old} to {new}");
                }
                Ok((_, limit)) => info!("dma-buf mode: RLIMIT_NOFILE soft limit is {limit}"),
                Err(e) => warn!("dma-buf mode: cannot raise RLIMIT_NOFILE: {e}"),
            }
        }
        let hub = Arc::new(
            Hub::new(config.queue_limit.max(1), udmabuf).with_close_grace(config.close_grace),
        );
        let listener = socket::listen(&config.path, config.mode)?;
        let shared = Arc::new(Shared {
            hub: Arc::clone(&hub),
            access: config.access,
            max_consumers: config.max_consumers.max(1),
            max_consumers_per_uid: config.max_consumers_per_uid.max(1),
            client_timeout: config.client_timeout,
            active: AtomicUsize::new(0),
            by_uid: Mutex::new(HashMap::new()),
            stopping: nix::sys::eventfd::EventFd::from_flags(
                nix::sys::eventfd::EfdFlags::EFD_NONBLOCK
                    | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
            )
            .map_err(|e| Error::Start(e.into()))?,
            reaper: Reaper {
                waiting: Mutex::new(Vec::new()),
                wake: nix::sys::eventfd::EventFd::from_flags(
                    nix::sys::eventfd::EfdFlags::EFD_NONBLOCK
                        | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
                )
                .map_err(|e| Error::Start(e.into()))?,
            },
        });
        let thread_shared = Arc::clone(&shared);
        let server = SocketThread::spawn(
            "consumer",
            "consumers",
            &config.path,
            listener,
            move |listener, stop| accept_loop(listener, stop, &thread_shared),
        )
        .map_err(Error::Start)?;
        info!(
            "consumer socket on {}, memory as {}",
            config.path.display(),
            hub.memory_form()
        );
        let reaper_shared = Arc::clone(&shared);
        let reaper = thread::Builder::new()
            .name(String::from("consumer-reaper"))
            .spawn(move || reap(&reaper_shared))
            .map_err(Error::Start)?;
        let reaper = ReaperThread {
            thread: Some(reaper),
            shared: Arc::clone(&shared),
        };
        Ok(Self {
            hub,
            shared,
            server,
            _reaper: reaper,
        })
    }

    /// Consumers gone holding buffers, whose processes have not exited.
    pub fn waiting_for_exit(&self) -> usize {
        self.shared.reaper.len()
    }

    /// Adds a guest; its buffer table tells the returned observer.
    pub fn guest(&self, name: &str) -> Result<Arc<GuestEvents>, Error> {
        Ok(self.hub.add_guest(name)?)
    }

    /// How memory goes over.
    pub fn memory_form(&self) -> MemoryForm {
        self.hub.memory_form()
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.server.path()
    }

    /// Connections open, handshakes included.
    pub fn connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

/// The accepting thread: until `stop`, accepts consumers and starts a
/// thread for each; then ends them all.
fn accept_loop(listener: &UnixListener, stop: &EventFd, shared: &Arc<Shared>) {
    let mut connections: Vec<Connection> = Vec::new();
    socket::accept_loop("consumer", listener, stop, |stream| {
        connections.retain(|c| !c.thread.is_finished());
        if let Some(c) = start_connection(stream, shared) {
            connections.push(c);
        }
    });
    finish(connections, shared);
}

/// Ends every consumer: each gets what is queued for it, then ERROR
/// SHUTDOWN, and [`SHUTDOWN_GRACE`] to take them; then the connections are
/// cut.
fn finish(connections: Vec<Connection>, shared: &Shared) {
    if let Err(e) = shared.stopping.write(1) {
        error!("cannot end the waits for consumers' processes: {e}");
    }
    shared.hub.finish_all(&ErrorMessage::new(
        ErrorCode::Shutdown,
        "the backend is stopping",
    ));
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while Instant::now() < deadline && connections.iter().any(|c| !c.thread.is_finished()) {
        thread::sleep(Duration::from_millis(5));
    }
    for c in connections {
        if !c.thread.is_finished() {
            // Unblocks a thread stuck sending, or waiting for a HELLO.
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        if c.thread.join().is_err() {
            error!("a consumer's thread panicked");
        }
    }
}

/// Refuses a connection at once, from the accepting thread (which waits
/// a second at most for it).
fn refuse_now(stream: &UnixStream, refusal: ErrorMessage) {
    warn!("consumer refused: {refusal}");
    let _ = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(1))));
    send_error(stream, refusal);
}

/// Starts serving a consumer, unless its uid may subscribe to nothing
/// (DENIED at once, taking no slot) or there are too many: of its uid
/// (`max_consumers_per_uid`), or in all (BUSY).
fn start_connection(stream: UnixStream, shared: &Arc<Shared>) -> Option<Connection> {
    let creds = match getsockopt(&stream, PeerCredentials) {
        Ok(creds) => creds,
        Err(e) => {
            warn!("consumer refused: no credentials: {e}");
            return None;
        }
    };
    let (uid, gid) = (creds.uid(), creds.gid());
    if shared.access.allowed(uid, gid).is_none() {
        refuse_now(&stream, denied_everything(uid, gid));
        return None;
    }
    if let Err(why) = shared.take_slot(uid) {
        refuse_now(&stream, ErrorMessage::new(ErrorCode::Busy, why));
        return None;
    }
    let handle = match stream.try_clone() {
        Ok(handle) => handle,
        Err(e) => {
            warn!("consumer refused: {e}");
            shared.release(uid);
            return None;
        }
    };
    let thread_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(String::from("consumer"))
        .spawn(move || {
            serve_consumer(&stream, &thread_shared);
            // The slot first: a consumer that saw the end and connects
            // again at once finds it free.
            thread_shared.release(uid);
            // Closed now, though the accepting thread holds a handle.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        });
    match spawned {
        Ok(thread) => Some(Connection {
            thread,
            stream: handle,
        }),
        Err(e) => {
            shared.release(uid);
            error!("cannot start a consumer's thread: {e}");
            None
        }
    }
}

/// ERROR DENIED for a process that may subscribe to nothing.
fn denied_everything(uid: u32, gid: u32) -> ErrorMessage {
    ErrorMessage::new(
        ErrorCode::Denied,
        format!("uid {uid} gid {gid} may not subscribe to any application"),
    )
}

/// Sends `error`, the last message of a connection.
fn send_error(stream: &UnixStream, error: ErrorMessage) {
    let message: Message = Message::Error(error);
    match message.encode() {
        Ok(encoded) => {
            if let Err(e) = send_message(stream.as_fd(), &encoded.bytes, &[]) {
                debug!("cannot send an error to a consumer: {e}");
            }
        }
        Err(e) => error!("cannot encode an error: {e}"),
    }
}

/// Raises the soft limit of open descriptors (`RLIMIT_NOFILE`) to the hard
/// limit: the soft limit before and after.
pub fn raise_nofile_limit() -> nix::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, getrlimit(Resource::RLIMIT_NOFILE)?.0))
}

/// A consumer refused because buffers can only go to it as segments (the
/// host has no udmabuf), and it is not trusted with all of the guests' RAM.
#[derive(Debug, ThisError)]
#[error(
    "uid {uid} gid {gid}: this host has no udmabuf, so buffers go as segments, \
     all of the guests' RAM, which only consumers trusted with it get (--trust-ram)"
)]
pub struct NotTrustedWithRam {
    /// The consumer's uid.
    pub uid: u32,
    /// The consumer's gid.
    pub gid: u32,
}

/// Why a handshake failed.
enum Refusal {
    /// Tell the consumer.
    Send(ErrorMessage),
    /// The consumer is gone; nothing to say.
    Gone(io::Error),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        Refusal::Gone(e)
    }
}

fn protocol(message: impl AsRef<str>) -> Refusal {
    Refusal::Send(ErrorMessage::new(ErrorCode::Protocol, message))
}

/// Serves one consumer: handshake, then events until it goes, overflows,
/// or the server stops; then, if it still holds buffers, waits for its
/// process to exit before they count as let go.
fn serve_consumer(stream: &UnixStream, shared: &Shared) {
    let creds = match getsockopt(stream, PeerCredentials) {
        Ok(creds) => creds,
        Err(e) => {
            warn!("consumer refused: no credentials: {e}");
            return;
        }
    };
    let (uid, gid) = (creds.uid(), creds.gid());
    let who = format!("pid {} uid {uid} gid {gid}", creds.pid());
    // Taken before anything is handed over: the process may exit at any
    // time after.
    let pidfd = peer_pidfd(stream.as_fd(), creds.pid());
    if let Err(e) = &pidfd {
        debug!("consumer {who}: no pidfd ({e}): its process is gone");
    }
    match handshake(stream, shared, &who, uid, gid) {
        Ok(queue) => {
            info!("consumer {who} subscribed to {}", queue.applications());
            send_events(stream, shared, &queue);
            shared.hub.unsubscribe(&queue);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let id = queue.id();
            match pidfd {
                Ok(pidfd) if shared.hub.holds_anything(id) => {
                    info!(
                        "consumer {who} gone, holding buffers: they are let go when its \
                         process exits"
                    );
                    shared.reaper.add(Waiting {
                        pidfd,
                        id,
                        who: who.clone(),
                    });
                }
                _ => {
                    info!("consumer {who} gone");
                    shared.hub.gone(id);
                }
            }
        }
        Err(Refusal::Send(error)) => {
            warn!("consumer {who} refused: {error}");
            send_error(stream, error);
        }
        Err(Refusal::Gone(e)) => debug!("consumer {who} gone during its handshake: {e}"),
    }
}

/// Reads exactly `buf.len()` bytes by `deadline`.
fn read_exact(
    stream: &UnixStream,
    buf: &mut [u8],
    deadline: Instant,
    what: &str,
) -> Result<(), Refusal> {
    let late = || protocol(format!("no {what} within the time allowed"));
    let mut got = 0;
    while got < buf.len() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(late)?;
        stream.set_read_timeout(Some(left))?;
        match (&*stream).read(&mut buf[got..]) {
            Ok(0) => return Err(Refusal::Gone(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late());
            }
            Err(e) => return Err(Refusal::Gone(e)),
        }
    }
    Ok(())
}

/// Checks the consumer's credentials and HELLO; subscribes it and sends
/// WELCOME.
fn handshake(
    stream: &UnixStream,
    shared: &Shared,
    who: &str,
    uid: u32,
    gid: u32,
) -> Result<Arc<ConsumerQueue>, Refusal> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + shared.client_timeout;
    stream.set_write_timeout(Some(shared.client_timeout))?;
    if shared.access.allowed(uid, gid).is_none() {
        return Err(Refusal::Send(denied_everything(uid, gid)));
    }
    // Read without ancillary data: descriptors sent along are closed by
    // the kernel.
    let mut header = [0u8; HEADER_SIZE];
    read_exact(stream, &mut header, deadline, "HELLO")?;
    let header = Header::parse(&header).map_err(|e| protocol(e.to_string()))?;
    if header.kind != bufshare_consumer::wire::MessageType::Hello {
        return Err(protocol(format!("{} before HELLO", header.kind)));
    }
    let mut body = vec![0u8; header.size];
    read_exact(stream, &mut body, deadline, "HELLO")?;
    let hello = match Message::decode(&header, &body, Vec::new()) {
        Ok(Message::Hello(hello)) => hello,
        Ok(other) => return Err(protocol(format!("{} before HELLO", other.kind()))),
        Err(e) => return Err(protocol(e.to_string())),
    };
    if hello.version == 0 {
        return Err(Refusal::Send(ErrorMessage::new(
            ErrorCode::Version,
            format!("version 0: this backend speaks version {VERSION}"),
        )));
    }
    let applications = shared
        .access
        .check(uid, gid, &hello.applications)
        .map_err(|e| Refusal::Send(ErrorMessage::new(ErrorCode::Denied, e)))?;
    let receiver = Receiver {
        version: hello.version.min(VERSION),
        ram: shared.access.ram_access(uid, gid),
    };
    if shared.hub.udmabuf().is_none() && receiver.ram.is_none() {
        return Err(Refusal::Send(ErrorMessage::new(
            ErrorCode::Denied,
            NotTrustedWithRam { uid, gid }.to_string(),
        )));
    }
    let version = receiver.version;
    let queue = shared
        .hub
        .subscribe(who.to_string(), applications, receiver)?;
    let welcome: Message = Message::Welcome(Welcome {
        version,
        memory_form: shared.hub.memory_form(),
        queue_limit: u32::try_from(shared.hub.queue_limit()).unwrap_or(u32::MAX),
        server: device_name(),
    });
    let sent = welcome
        .encode()
        .map_err(io::Error::other)
        .and_then(|encoded| send_message(stream.as_fd(), &encoded.bytes, &[]));
    if let Err(e) = sent {
        shared.hub.unsubscribe(&queue);
        return Err(Refusal::Gone(e));
    }
    Ok(queue)
}

/// Sends what `queue` holds as it comes, until the consumer goes, the queue
/// ends (overflow, shutdown), a send fails or times out, or (version 3)
/// the consumer does not say CLOSED in time. Takes what a consumer of
/// version 3 says (RELEASE, CLOSED) between sends and while waiting.
fn send_events(stream: &UnixStream, shared: &Shared, queue: &ConsumerQueue) {
    let who = queue.who();
    // Reads only happen once poll() says there is something.
    if let Err(e) = stream.set_read_timeout(None) {
        warn!("consumer {who}: {e}");
        return;
    }
    loop {
        match queue.pop() {
            Next::Item(item) => {
                let message = match item.to_message(shared.hub.udmabuf(), queue.receiver()) {
                    Ok(message) => message,
                    Err(why) => {
                        // Only an ADD can fail: the consumer is told
                        // nothing of that buffer.
                        crate::guest_warn!(
                            "guest {} buffer {}: not handed to consumer {who}: {why}",
                            item.guest(),
                            item.id().unwrap_or(0)
                        );
                        if let Some(id) = item.id() {
                            queue.undeliverable(item.guest(), id);
                        }
                        continue;
                    }
                };
                let encoded = match message.encode() {
                    Ok(encoded) => encoded,
                    Err(e) => {
                        error!("consumer {who}: cannot encode {}: {e}", message.kind());
                        return;
                    }
                };
                if let Err(e) = send_message(stream.as_fd(), &encoded.bytes, &encoded.fds) {
                    warn!("consumer {who}: cannot send {}: {e}", message.kind());
                    return;
                }
                if !take_input(stream, shared, queue, Some(Duration::ZERO)) {
                    return;
                }
            }
            Next::End(error) => {
                send_error(stream, error);
                return;
            }
            Next::Done => return,
            Next::Idle => {
                if !wait(stream, shared, queue) {
                    return;
                }
            }
        }
    }
}

/// Waits until the queue may have something, taking what the consumer
/// says meanwhile; `false` if it went away, sent what it may not, or is
/// disconnected for not saying CLOSED in time.
fn wait(stream: &UnixStream, shared: &Shared, queue: &ConsumerQueue) -> bool {
    loop {
        let mut fds = [PollFd::new(queue.wake_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                error!("consumer {}: {e}", queue.who());
                return false;
            }
        }
        if fds[0]
            .revents()
            .unwrap_or(PollFlags::empty())
            .contains(PollFlags::POLLIN)
        {
            queue.clear_wake();
            return true;
        }
        if !take_input(stream, shared, queue, None) {
            return false;
        }
    }
}

/// Waits (at most `timeout`; `None`: until the queue's wake-up, the
/// consumer's next message or its next CLOSED deadline) and takes one
/// message of the consumer if it sent one; `false` if the connection is
/// to end.
fn take_input(
    stream: &UnixStream,
    shared: &Shared,
    queue: &ConsumerQueue,
    timeout: Option<Duration>,
) -> bool {
    let who = queue.who();
    let deadline = queue.next_deadline();
    let wait = match (timeout, deadline) {
        (Some(t), _) => Some(t),
        (None, Some(at)) => Some(at.saturating_duration_since(Instant::now())),
        (None, None) => None,
    };
    let poll_timeout = match wait {
        Some(d) if d.is_zero() => PollTimeout::ZERO,
        // Rounded up: a deadline is never polled for too early.
        Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as i32)
            .unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    let mut fds = [
        PollFd::new(stream.as_fd(), PollFlags::POLLIN),
        PollFd::new(queue.wake_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut fds, poll_timeout) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return true,
        Err(e) => {
            error!("consumer {who}: {e}");
            return false;
        }
    }
    if let Some((guest, id)) = queue.overdue(Instant::now()) {
        warn!(
            "consumer {who}: buffer {id} of guest {guest} not CLOSED within {:?} of its \
             REMOVE: disconnected; what it holds is let go when its process exits",
            shared.hub.close_grace()
        );
        return false;
    }
    if fds[0].revents().unwrap_or(PollFlags::empty()).is_empty() {
        return true;
    }
    if !queue.answers() {
        let mut byte = [0u8; 1];
        return match (&*stream).read(&mut byte) {
            Ok(0) => false,
            Ok(_) => {
                warn!("consumer {who} sent something after its HELLO");
                send_error(
                    stream,
                    ErrorMessage::new(
                        ErrorCode::Protocol,
                        "consumers of version 1 and 2 send nothing after HELLO",
                    ),
                );
                false
            }
            Err(e) => {
                debug!("consumer {who}: {e}");
                false
            }
        };
    }
    // A message is coming: it has the time to take a message to arrive
    // whole.
    if let Err(e) = stream.set_read_timeout(Some(shared.client_timeout)) {
        warn!("consumer {who}: {e}");
        return false;
    }
    let received = recv_message(stream.as_fd());
    let _ = stream.set_read_timeout(None);
    match received {
        Ok(Some(Message::Release(release))) => {
            debug!(
                "consumer {who}: RELEASE {} {} {}",
                release.guest, release.buffer_id, release.seqno
            );
            queue.release(&release.guest, release.buffer_id, release.seqno);
            true
        }
        Ok(Some(Message::Closed(closed))) => {
            if queue.closed(&closed.guest, closed.buffer_id) {
                debug!(
                    "consumer {who}: CLOSED {} {}",
                    closed.guest, closed.buffer_id
                );
            } else {
                debug!(
                    "consumer {who}: CLOSED {} {}, which it does not hold: ignored",
                    closed.guest, closed.buffer_id
                );
            }
            true
        }
        Ok(Some(other)) => {
            warn!("consumer {who} sent {}", other.kind());
            send_error(
                stream,
                ErrorMessage::new(
                    ErrorCode::Protocol,
                    format!("{} from a consumer: only RELEASE and CLOSED", other.kind()),
                ),
            );
            false
        }
        Ok(None) => false,
        Err(e) => {
            warn!("consumer {who}: {e}");
            send_error(
                stream,
                ErrorMessage::new(ErrorCode::Protocol, e.to_string()),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests;
