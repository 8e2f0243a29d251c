// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The inspect socket: lets host tools (`bufshare-inspect`) list the
//! registered buffers of every guest and read or write their bytes straight
//! in guest memory, with no command from the driver.
//!
//! A unix stream socket, mode 0600, served by a thread of its own, one
//! client at a time, one request per connection. The protocol:
//!
//! ```text
//! request:  [guest=NAME ]list\n
//!           [guest=NAME ]read ID OFFSET LEN\n
//!           [guest=NAME ]write ID OFFSET LEN\n  (then, after "ready\n", LEN raw bytes)
//!           guests\n
//! answer:   ok N\n then N bytes        (list, guests: the listing; read: the
//!                                       bytes; write: N = 0)
//!           ready\n                    (write only: send the bytes now)
//!           error MESSAGE\n            (then the connection is closed)
//! ```
//!
//! A request without `guest=NAME` is about the only guest when the backend
//! serves one; when it serves several, `list` lists every guest's buffers,
//! each buffer's line starting with `guest=NAME `, and `read` and `write`
//! are refused. `guests` lists the guests, one line each:
//! `guest=NAME connected=<0|1> buffers=<n>`.
//!
//! Numbers are decimal. A request line has at most [`MAX_REQUEST_LINE`]
//! bytes; a client has [`CLIENT_TIMEOUT`] for each read or write. Bytes are
//! copied in pieces of [`CHUNK`] bytes, the buffer table being locked for
//! each piece only: a buffer that goes away in the middle of a `read` makes
//! the server close the connection before `N` bytes (the client reports the
//! short answer), one that goes away in the middle of a `write` gets an
//! `error` answer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bufshare_consumer::props::is_name;
use log::{debug, info};
use thiserror::Error as ThisError;
use vmm_sys_util::eventfd::EventFd;

use crate::buffers::SharedState;
use crate::socket::{self, ListenError, SocketThread};

/// Longest request line, newline included.
pub const MAX_REQUEST_LINE: usize = 256;
/// Longest answer line a client accepts, newline included.
pub const MAX_ANSWER_LINE: usize = 4096;
/// Bytes copied per lock of the buffer table.
pub const CHUNK: usize = 1 << 20;
/// How long the server waits for a client to send or take bytes.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the inspect server.
#[derive(Debug, ThisError)]
pub enum Error {
    /// Something is at the path, and not a socket.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// The socket could not be made.
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, io::Error),
    /// The thread or its events could not be made.
    #[error("cannot start the inspect server: {0}")]
    Start(io::Error),
    /// The guests do not hold together.
    #[error("{0}")]
    Guests(String),
}

/// What a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `list`.
    List,
    /// `guests`.
    Guests,
    /// `holders`.
    Holders,
    /// `read ID OFFSET LEN`.
    Read {
        /// The buffer.
        id: u64,
        /// Where in it.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// `write ID OFFSET LEN`.
    Write {
        /// The buffer.
        id: u64,
        /// Where in it.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

/// A request of a client: a command, about a guest or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The guest, if named (`guest=NAME`).
    pub guest: Option<String>,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// `command`, about the only guest (or, for `list`, every guest).
    pub fn new(command: Command) -> Self {
        Self {
            guest: None,
            command,
        }
    }

    /// Parses a request line, without its newline.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let line = std::str::from_utf8(line).map_err(|_| "request is not text".to_string())?;
        let mut words: Vec<&str> = line.split(' ').collect();
        let guest = match words.first().and_then(|w| w.strip_prefix("guest=")) {
            Some(name) if is_name(name) => {
                let name = name.to_string();
                words.remove(0);
                Some(name)
            }
            Some(name) => return Err(format!("bad guest name {name:?}")),
            None => None,
        };
        let number = |word: &str| -> Result<u64, String> {
            if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad number {word:?}"));
            }
            word.parse().map_err(|_| format!("number {word} too large"))
        };
        let command = match words[..] {
            ["list"] => Command::List,
            ["guests"] if guest.is_none() => Command::Guests,
            ["holders"] => Command::Holders,
            ["read", id, offset, len] => Command::Read {
                id: number(id)?,
                offset: number(offset)?,
                len: number(len)?,
            },
            ["write", id, offset, len] => Command::Write {
                id: number(id)?,
                offset: number(offset)?,
                len: number(len)?,
            },
            _ => return Err(format!("bad request {line:?}")),
        };
        Ok(Self { guest, command })
    }

    /// The request line, newline included.
    pub fn line(&self) -> String {
        let command = match self.command {
            Command::List => "list".to_string(),
            Command::Guests => "guests".to_string(),
            Command::Holders => "holders".to_string(),
            Command::Read { id, offset, len } => format!("read {id} {offset} {len}"),
            Command::Write { id, offset, len } => format!("write {id} {offset} {len}"),
        };
        match &self.guest {
            Some(guest) => format!("guest={guest} {command}\n"),
            None => format!("{command}\n"),
        }
    }
}

/// A guest whose buffers the inspect socket serves.
#[derive(Clone, Debug)]
pub struct InspectGuest {
    /// Its name.
    pub name: String,
    /// Its buffers and guest memory.
    pub state: Arc<SharedState>,
}

impl InspectGuest {
    /// The guest `name`, whose buffers and guest memory are in `state`.
    pub fn new(name: impl Into<String>, state: Arc<SharedState>) -> Self {
        Self {
            name: name.into(),
            state,
        }
    }
}

/// The guests served, by name.
#[derive(Debug)]
struct Guests(Vec<InspectGuest>);

impl Guests {
    /// The guest a request names, or the only one.
    fn pick(&self, name: Option<&str>) -> Result<&SharedState, String> {
        match name {
            Some(name) => self
                .0
                .iter()
                .find(|g| g.name == name)
                .map(|g| &*g.state)
                .ok_or_else(|| format!("no guest {name}")),
            None => match &self.0[..] {
                [only] => Ok(&only.state),
                guests => Err(format!(
                    "the backend serves {} guests ({}): name one",
                    guests.len(),
                    self.names()
                )),
            },
        }
    }

    fn names(&self) -> String {
        self.0
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What `list` answers: the buffers of the guest named, or of the only
    /// one; with no guest named and several guests, those of every guest,
    /// each buffer's line starting with `guest=NAME `.
    fn list(&self, name: Option<&str>) -> Result<Vec<u8>, String> {
        self.per_guest(name, |state| state.lock().buffers.describe())
    }

    /// What `holders` answers: the buffers host parties hold, or that wait
    /// for them after UNREGISTER ([`crate::holders::Holders::describe`]),
    /// of the guest named or the only one; else of every guest, each line
    /// starting with `guest=NAME `.
    fn holders(&self, name: Option<&str>) -> Result<Vec<u8>, String> {
        self.per_guest(name, |state| {
            let holders = std::sync::Arc::clone(&state.lock().holders);
            holders.describe()
        })
    }

    /// `describe` of the guest named, or the only one; else of every
    /// guest, each line not starting with a TAB prefixed `guest=NAME `.
    fn per_guest(
        &self,
        name: Option<&str>,
        describe: impl Fn(&SharedState) -> Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        if name.is_some() || self.0.len() == 1 {
            return Ok(describe(self.pick(name)?));
        }
        let mut out = Vec::new();
        for guest in &self.0 {
            let listing = describe(&guest.state);
            for line in listing.split_inclusive(|&b| b == b'\n') {
                if line.first() != Some(&b'\t') {
                    out.extend_from_slice(format!("guest={} ", guest.name).as_bytes());
                }
                out.extend_from_slice(line);
            }
        }
        Ok(out)
    }

    /// What `guests` answers: `guest=NAME connected=<0|1> buffers=<n>` per
    /// guest.
    fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for guest in &self.0 {
            let state = guest.state.lock();
            // Writing to a Vec cannot fail.
            let _ = writeln!(
                out,
                "guest={} connected={} buffers={}",
                guest.name,
                u8::from(state.connected),
                state.buffers.len()
            );
        }
        out
    }
}

/// Reads one line of at most `max` bytes (newline included) from `reader`;
/// returns it without its newline.
fn read_line(reader: &mut impl BufRead, max: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(max as u64)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        let what = if line.len() >= max {
            "line too long"
        } else {
            "connection closed in the middle of a line"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, what));
    }
    line.pop();
    Ok(line)
}

/// A running inspect server; dropping it stops the thread and removes the
/// socket.
pub struct InspectServer {
    server: SocketThread,
}

impl InspectServer {
    /// Listens on `path` (a stale socket there is replaced) and serves
    /// the buffers of `guests` from a thread of its own.
    ///
    /// The socket is made under a temporary name, set to mode 0600 and then
    /// renamed to `path`, so that it is never reachable with other modes.
    pub fn start(path: &Path, mut guests: Vec<InspectGuest>) -> Result<Self, Error> {
        if guests.is_empty() {
            return Err(Error::Guests("no guest".into()));
        }
        guests.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = guests.windows(2).find(|pair| pair[0].name == pair[1].name) {
            return Err(Error::Guests(format!("two guests named {}", pair[0].name)));
        }
        let guests = Guests(guests);
        let listener = listen(path)?;
        let server = SocketThread::spawn("inspect", "inspect", path, listener, move |l, stop| {
            serve(l, stop, &guests)
        })
        .map_err(Error::Start)?;
        info!("inspect socket on {}", path.display());
        Ok(Self { server })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.server.path()
    }
}

/// Binds the socket at `path` with mode 0600.
fn listen(path: &Path) -> Result<UnixListener, Error> {
    crate::socket::listen(path, 0o600).map_err(|e| match e {
        ListenError::NotASocket(path) => Error::NotASocket(path),
        ListenError::Io(path, e) => Error::Listen(path, e),
    })
}

/// The server's thread: serves clients one after the other until `stop`.
fn serve(listener: &UnixListener, stop: &EventFd, guests: &Guests) {
    socket::accept_loop("inspect", listener, stop, |stream| {
        if let Err(e) = serve_client(stream, guests) {
            debug!("inspect client: {e}");
        }
    });
}

/// Serves one client's request.
fn serve_client(stream: UnixStream, guests: &Guests) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let line = match read_line(&mut input, MAX_REQUEST_LINE) {
        Ok(line) => line,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return send_error(&mut out, &e.to_string());
        }
        Err(e) => return Err(e),
    };
    let request = match Request::parse(&line) {
        Ok(request) => request,
        Err(e) => return send_error(&mut out, &e),
    };
    debug!("inspect: {}", request.line().trim_end());
    let guest = request.guest.as_deref();
    let listing = match request.command {
        Command::List => Some(guests.list(guest)),
        Command::Guests => Some(Ok(guests.describe())),
        Command::Holders => Some(guests.holders(guest)),
        Command::Read { .. } | Command::Write { .. } => None,
    };
    if let Some(listing) = listing {
        return match listing {
            Ok(listing) => {
                writeln!(out, "ok {}", listing.len())?;
                out.write_all(&listing)
            }
            Err(e) => send_error(&mut out, &e),
        };
    }
    let state = match guests.pick(guest) {
        Ok(state) => state,
        Err(e) => return send_error(&mut out, &e),
    };
    match request.command {
        Command::Read { id, offset, len } => {
            if let Err(e) = state.lock().check_access(id, offset, len) {
                return send_error(&mut out, &e.to_string());
            }
            writeln!(out, "ok {len}")?;
            let mut buf = vec![0; CHUNK.min(len as usize)];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK as u64) as usize;
                // A failure here (the buffer went away) ends the answer
                // early: the client sees it short.
                state
                    .lock()
                    .read(id, offset + done, &mut buf[..n])
                    .map_err(io::Error::other)?;
                out.write_all(&buf[..n])?;
                done += n as u64;
            }
            Ok(())
        }
        Command::Write { id, offset, len } => {
            if let Err(e) = state.lock().check_access(id, offset, len) {
                return send_error(&mut out, &e.to_string());
            }
            out.write_all(b"ready\n")?;
            let mut buf = vec![0; CHUNK.min(len as usize)];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK as u64) as usize;
                input.read_exact(&mut buf[..n])?;
                if let Err(e) = state.lock().write(id, offset + done, &buf[..n]) {
                    return send_error(&mut out, &e.to_string());
                }
                done += n as u64;
            }
            out.write_all(b"ok 0\n")
        }
        Command::List | Command::Guests | Command::Holders => Ok(()),
    }
}

fn send_error(out: &mut UnixStream, message: &str) -> io::Result<()> {
    // One line, whatever the message.
    let message = message.replace(['\n', '\r'], " ");
    writeln!(out, "error {message}")
}

/// Errors of a client.
#[derive(Debug, ThisError)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot connect to {0}: {1}")]
    Connect(PathBuf, io::Error),
    /// Talking to the server failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server refused the request.
    #[error("{0}")]
    Refused(String),
    /// The server said something that makes no sense.
    #[error("bad answer from the server: {0}")]
    Protocol(String),
}

/// A client of the inspect socket at a path.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
    guest: Option<String>,
    timeout: Option<Duration>,
}

/// How a client waits for the server at most, by default.
pub const CLIENT_WAIT: Duration = Duration::from_secs(60);

impl Client {
    /// A client of the socket at `path`, about the only guest of the
    /// backend (or, for [`Client::list`], every guest).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            guest: None,
            timeout: Some(CLIENT_WAIT),
        }
    }

    /// The same client, about the guest `guest` (`None`: the only one).
    pub fn with_guest(mut self, guest: Option<String>) -> Self {
        self.guest = guest;
        self
    }

    fn request(&self, command: Command) -> Request {
        Request {
            guest: self.guest.clone(),
            command,
        }
    }

    fn connect(
        &self,
        request: &Request,
    ) -> Result<(UnixStream, BufReader<UnixStream>), ClientError> {
        let stream = UnixStream::connect(&self.path)
            .map_err(|e| ClientError::Connect(self.path.clone(), e))?;
        stream.set_read_timeout(self.timeout)?;
        stream.set_write_timeout(self.timeout)?;
        let mut out = stream.try_clone()?;
        out.write_all(request.line().as_bytes())?;
        Ok((out, BufReader::new(stream)))
    }

    /// Reads an answer line: `ok N` gives N, `ready` gives `None`.
    fn answer(input: &mut impl BufRead) -> Result<Option<u64>, ClientError> {
        let line =
            read_line(input, MAX_ANSWER_LINE).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let line = String::from_utf8_lossy(&line);
        if let Some(message) = line.strip_prefix("error ") {
            return Err(ClientError::Refused(message.to_string()));
        }
        if line == "ready" {
            return Ok(None);
        }
        line.strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| ClientError::Protocol(format!("{line:?}")))
    }

    /// Copies exactly `n` bytes of the answer to `out`.
    fn copy_answer(input: &mut impl Read, n: u64, out: &mut impl Write) -> Result<(), ClientError> {
        let copied = io::copy(&mut input.take(n), out)?;
        if copied != n {
            return Err(ClientError::Protocol(format!(
                "connection closed after {copied} of {n} bytes"
            )));
        }
        Ok(())
    }

    /// The answer to `request`: `ok N` and N bytes.
    fn listing(&self, request: &Request) -> Result<Vec<u8>, ClientError> {
        let (_out, mut input) = self.connect(request)?;
        let n = Self::answer(&mut input)?.ok_or_else(|| ClientError::Protocol("ready".into()))?;
        let mut listing = Vec::new();
        Self::copy_answer(&mut input, n, &mut listing)?;
        Ok(listing)
    }

    /// The listing of the buffers: for each, a line
    /// `id=<n> application=<s> size=<n> ranges=<n> complete=<0|1> seqno=<n>`
    /// then a TAB and `name=value` per property. Without a guest named, of
    /// a backend of several guests: every guest's buffers, their lines
    /// starting with `guest=NAME `.
    pub fn list(&self) -> Result<Vec<u8>, ClientError> {
        self.listing(&self.request(Command::List))
    }

    /// The buffers host parties hold, or that wait for them after
    /// UNREGISTER: a line `id=<n> holders=<n> instances=<n> draining=<0|1>`
    /// each (with `guest=NAME ` first, as for [`Client::list`]).
    pub fn holders(&self) -> Result<Vec<u8>, ClientError> {
        self.listing(&self.request(Command::Holders))
    }

    /// The guests: a line `guest=NAME connected=<0|1> buffers=<n>` each.
    pub fn guests(&self) -> Result<Vec<u8>, ClientError> {
        self.listing(&Request::new(Command::Guests))
    }

    /// Copies `len` bytes at `offset` of buffer `id` to `out`.
    pub fn read(
        &self,
        id: u64,
        offset: u64,
        len: u64,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let (_out, mut input) = self.connect(&self.request(Command::Read { id, offset, len }))?;
        match Self::answer(&mut input)? {
            Some(n) if n == len => Self::copy_answer(&mut input, n, out),
            other => Err(ClientError::Protocol(format!("{other:?} for {len} bytes"))),
        }
    }

    /// Writes `data` at `offset` of buffer `id`.
    pub fn write(&self, id: u64, offset: u64, data: &[u8]) -> Result<(), ClientError> {
        let len = data.len() as u64;
        let (mut out, mut input) =
            self.connect(&self.request(Command::Write { id, offset, len }))?;
        if Self::answer(&mut input)?.is_some() {
            return Err(ClientError::Protocol("no ready".into()));
        }
        // The server may refuse in the middle: then its answer says why.
        let sent = out.write_all(data);
        match (Self::answer(&mut input), sent) {
            (Ok(Some(0)), Ok(())) => Ok(()),
            (Err(e @ ClientError::Refused(_)), _) => Err(e),
            (_, Err(e)) => Err(e.into()),
            (Ok(other), Ok(())) => Err(ClientError::Protocol(format!("{other:?}"))),
            (Err(e), Ok(())) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
