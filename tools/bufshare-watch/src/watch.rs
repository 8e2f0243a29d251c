// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The event loop of `bufshare-watch`: connect to the consumer socket,
//! subscribe, then print a line per event ([`crate::lines`]), keep each
//! buffer mapped, and dump and verify the frames of framebuffer-like
//! buffers on UPDATE.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bufshare_consumer::io::RecvError;
use bufshare_consumer::{
    Add, BufferMapping, Client, Error as ClientError, ErrorCode, ErrorMessage, Event, MappedBuffer,
    Properties, PropertiesChanged, Remove, Reset, Update, ALL_APPLICATIONS,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::checksum::{self, format_crc32, VerifyError, PROP_CRC32};
use crate::dump;
use crate::frame::{prop, FrameError, FrameSpec};
use crate::lines::{self, Verdict};

/// What to watch and what to do with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The backend's consumer socket.
    pub socket: PathBuf,
    /// The applications to subscribe to; all of them when empty (or when
    /// one is [`ALL_APPLICATIONS`]).
    pub apps: Vec<String>,
    /// Where to dump the frames of framebuffer-like buffers on UPDATE.
    pub dump: Option<PathBuf>,
    /// Check the frames against their `crc32` property on UPDATE.
    pub verify: bool,
    /// Stop after this many frames (UPDATEs of framebuffer-like buffers).
    pub frames: Option<u64>,
    /// Stop after this many seconds.
    pub seconds: Option<u64>,
    /// Write the event lines to this file too (truncated first).
    pub log: Option<PathBuf>,
    /// Print nothing but errors: no event lines on stdout, no progress nor
    /// summary on stderr (the log is still written).
    pub quiet: bool,
    /// Keep a buffer mapped this long after its REMOVE (or its guest's
    /// RESET) before closing it, which tells the backend CLOSED.
    pub hold_after_remove: Option<Duration>,
    /// Never tell the backend RELEASE.
    pub no_release: bool,
    /// Stop reading the socket after this many events (keeping every
    /// mapping), until stopped.
    pub stop_reading: Option<u64>,
}

/// How a run ended: the process's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Stopped normally: the backend closed the connection, `--frames` or
    /// `--seconds` was reached, a signal came, or stdout was closed.
    Ok = 0,
    /// As [`Exit::Ok`], but `--verify` saw a mismatch.
    Mismatch = 1,
    /// The backend refused the subscription: ERROR DENIED, VERSION or
    /// PROTOCOL.
    Refused = 2,
    /// The backend ended the connection with any other ERROR: OVERFLOW,
    /// SHUTDOWN, BUSY.
    Ended = 3,
    /// Something failed: the socket could not be reached, the backend sent
    /// something malformed, the log or a dump could not be written.
    Failed = 4,
}

impl Exit {
    /// The exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status after an ERROR from the backend.
    pub fn for_error(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::Denied | ErrorCode::Version | ErrorCode::Protocol => Exit::Refused,
            ErrorCode::Overflow | ErrorCode::Shutdown | ErrorCode::Busy => Exit::Ended,
        }
    }
}

/// Frames seen, dumped and verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// UPDATEs of framebuffer-like buffers.
    pub frames: u64,
    /// Frames written as PNG.
    pub dumped: u64,
    /// Frames whose CRC-32 matched their `crc32` property.
    pub verified: u64,
    /// Frames whose CRC-32 did not (or whose property is malformed).
    pub mismatched: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames: {} dumped, {} verified, {} mismatched",
            self.dumped, self.verified, self.mismatched
        )
    }
}

/// Why the loop stops.
enum Stop {
    /// Normally (see [`Exit::Ok`]).
    Normal,
    /// After an ERROR from the backend.
    Error(ErrorCode),
    /// On a failure, with its message.
    Failed(String),
}

impl<E: fmt::Display> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.to_string())
    }
}

/// A line could not be written.
enum LineError {
    /// stdout was closed (a pipe whose reader went away): stop quietly.
    StdoutClosed,
    /// Writing failed.
    Failed(String),
}

impl From<LineError> for Stop {
    fn from(e: LineError) -> Self {
        match e {
            LineError::StdoutClosed => Stop::Normal,
            LineError::Failed(message) => Stop::Failed(message),
        }
    }
}

/// Where lines, progress and messages go.
struct Output {
    quiet: bool,
    log: Option<(PathBuf, File)>,
    progress: bool,
    stdout_tty: bool,
    stderr_tty: bool,
    progress_shown: Option<Counts>,
}

impl Output {
    fn new(options: &Options) -> Result<Self, Stop> {
        let log = match &options.log {
            Some(path) => {
                let file = File::create(path)
                    .map_err(|e| Stop::Failed(format!("{}: {e}", path.display())))?;
                Some((path.clone(), file))
            }
            None => None,
        };
        Ok(Self {
            quiet: options.quiet,
            log,
            progress: !options.quiet && (options.dump.is_some() || options.verify),
            stdout_tty: io::stdout().is_terminal(),
            stderr_tty: io::stderr().is_terminal(),
            progress_shown: None,
        })
    }

    /// Takes the progress line off the terminal.
    fn clear_progress(&mut self, before_stdout: bool) {
        if self.progress_shown.is_none() {
            return;
        }
        let mut stderr = io::stderr().lock();
        if self.stderr_tty {
            if before_stdout && !self.stdout_tty {
                return;
            }
            let _ = write!(stderr, "\r\x1b[K");
        } else if before_stdout {
            return;
        } else {
            let _ = writeln!(stderr);
        }
        self.progress_shown = None;
    }

    /// Writes an event line to stdout (unless quiet) and the log, flushed.
    fn line(&mut self, line: &str) -> Result<(), LineError> {
        if !self.quiet {
            self.clear_progress(true);
            let mut stdout = io::stdout().lock();
            match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(LineError::StdoutClosed)
                }
                Err(e) => return Err(LineError::Failed(format!("stdout: {e}"))),
            }
        }
        if let Some((path, file)) = &mut self.log {
            // One write per line, unbuffered: a reader following the file
            // sees whole lines as soon as they are handled.
            file.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| LineError::Failed(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// A warning on stderr, unless quiet.
    fn warn(&mut self, message: fmt::Arguments<'_>) {
        if !self.quiet {
            self.clear_progress(false);
            eprintln!("bufshare-watch: {message}");
        }
    }

    /// An error on stderr, even when quiet.
    fn error(&mut self, message: &str) {
        self.clear_progress(false);
        eprintln!("bufshare-watch: {message}");
    }

    /// Shows the progress line, if it changed.
    fn progress(&mut self, counts: Counts) {
        if !self.progress || counts.frames == 0 || self.progress_shown == Some(counts) {
            return;
        }
        let mut stderr = io::stderr().lock();
        let clear = if self.stderr_tty { "\x1b[K" } else { "" };
        let _ = write!(stderr, "\r{counts}{clear}");
        let _ = stderr.flush();
        self.progress_shown = Some(counts);
    }

    /// The final summary line, unless quiet.
    fn summary(&mut self, counts: Counts) {
        if self.quiet {
            return;
        }
        let mut stderr = io::stderr().lock();
        if self.progress_shown.take().is_some() {
            let clear = if self.stderr_tty { "\x1b[K" } else { "" };
            let _ = write!(stderr, "\r{clear}");
        }
        let _ = writeln!(stderr, "{counts}");
    }
}

/// What is kept of a buffer.
struct Buffer {
    /// Its memory (`None` if it could not be mapped); unmapping it after
    /// the buffer's REMOVE tells the backend CLOSED.
    map: Option<BufferMapping>,
    /// Its size.
    size: u64,
    /// Its properties, as the last ADD or PROPERTIES gave them.
    properties: Properties,
    /// Its frame, when its properties describe one.
    spec: Option<FrameSpec>,
}

/// Bytes read at a time to compute a CRC-32 without a copy of the buffer.
const CHUNK: usize = 1 << 20;

/// CRC-32 of a whole buffer, read in chunks.
fn crc_streamed(map: &MappedBuffer) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut chunk = vec![0; CHUNK.min(usize::try_from(map.len()).unwrap_or(CHUNK))];
    let mut at = 0;
    while at < map.len() {
        let n = chunk
            .len()
            .min(usize::try_from(map.len() - at).unwrap_or(CHUNK));
        map.read(at, &mut chunk[..n])?;
        hasher.update(&chunk[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize())
}

/// Copies a whole buffer into `out`.
fn read_all(map: &MappedBuffer, out: &mut Vec<u8>) -> io::Result<()> {
    let len = usize::try_from(map.len())
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "buffer too large"))?;
    if out.len() != len {
        out.clear();
        out.try_reserve_exact(len)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        out.resize(len, 0);
    }
    map.read(0, out)
}

/// The subscription: the applications named, each once, or all of them.
pub fn subscription(apps: &[String]) -> Vec<String> {
    if apps.is_empty() || apps.iter().any(|a| a == ALL_APPLICATIONS) {
        return vec![ALL_APPLICATIONS.to_owned()];
    }
    let mut out: Vec<String> = Vec::new();
    for app in apps {
        if !out.contains(app) {
            out.push(app.clone());
        }
    }
    out
}

/// Reads the frame a buffer's properties describe. `Err` only for
/// properties that look like a frame (one of `width`, `height`, `format`)
/// but do not make one.
fn frame_spec(properties: &Properties, size: u64) -> Result<Option<FrameSpec>, FrameError> {
    match FrameSpec::from_props(|name| properties.get(name), size) {
        Ok(spec) => Ok(Some(spec)),
        Err(FrameError::Missing(_))
            if [prop::WIDTH, prop::HEIGHT, prop::FORMAT]
                .iter()
                .all(|name| properties.get(name).is_none()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The state of a run.
struct Watcher<'a> {
    options: &'a Options,
    out: Output,
    buffers: HashMap<(String, u64), Buffer>,
    counts: Counts,
    /// A copy of the buffer being dumped or verified.
    scratch: Vec<u8>,
    /// Buffers removed and kept mapped (`--hold-after-remove`), until when.
    held: Vec<(Instant, Buffer)>,
    /// Events handled.
    events: u64,
}

impl Watcher<'_> {
    fn spec_of(
        &mut self,
        guest: &str,
        id: u64,
        properties: &Properties,
        size: u64,
    ) -> Option<FrameSpec> {
        match frame_spec(properties, size) {
            Ok(spec) => spec,
            Err(e) => {
                self.out
                    .warn(format_args!("guest {guest} buffer {id}: not a frame: {e}"));
                None
            }
        }
    }

    fn crc_of(&mut self, guest: &str, id: u64, map: Option<&BufferMapping>) -> Option<u32> {
        let map: Option<&MappedBuffer> = map.map(|m| &**m);
        match crc_streamed(map?) {
            Ok(crc) => Some(crc),
            Err(e) => {
                self.out
                    .warn(format_args!("guest {guest} buffer {id}: cannot read: {e}"));
                None
            }
        }
    }

    fn handle(&mut self, client: &Client, event: Event) -> Result<(), Stop> {
        self.events += 1;
        match event {
            Event::Add(add) => self.add(client, add),
            Event::Update(update) => {
                self.update(&update)?;
                // Dumped and verified: done with it.
                if !self.options.no_release {
                    if let Err(e) = client.release(&update.guest, update.buffer_id, update.seqno) {
                        self.out.warn(format_args!("cannot send RELEASE: {e}"));
                    }
                }
                Ok(())
            }
            Event::Properties(change) => self.properties(change),
            Event::Remove(remove) => self.remove(&remove),
            Event::Reset(reset) => self.reset(&reset),
        }
    }

    /// Keeps `buffer`, removed, mapped for `--hold-after-remove`; else
    /// unmaps it now.
    fn let_go(&mut self, buffer: Buffer) {
        if let Some(hold) = self.options.hold_after_remove {
            self.held.push((Instant::now() + hold, buffer));
        }
    }

    /// Unmaps the buffers held long enough; when the next is due.
    fn unmap_due(&mut self) -> Option<Instant> {
        let now = Instant::now();
        self.held.retain(|(until, _)| *until > now);
        self.held.iter().map(|(until, _)| *until).min()
    }

    fn add(&mut self, client: &Client, add: Add) -> Result<(), Stop> {
        let (guest, id) = (add.guest.as_str(), add.buffer_id);
        let map = match client.map(&add, false) {
            Ok(map) => Some(map),
            Err(e) => {
                self.out
                    .warn(format_args!("guest {guest} buffer {id}: cannot map: {e}"));
                None
            }
        };
        let crc = self.crc_of(guest, id, map.as_ref());
        self.out.line(&lines::add(&add, crc))?;
        let spec = self.spec_of(guest, id, &add.properties, add.size);
        // The descriptors are closed here: the mappings keep the memory.
        let Add {
            guest,
            buffer_id,
            size,
            properties,
            ..
        } = add;
        self.buffers.insert(
            (guest, buffer_id),
            Buffer {
                map,
                size,
                properties,
                spec,
            },
        );
        Ok(())
    }

    fn update(&mut self, update: &Update) -> Result<(), Stop> {
        let (guest, id, seqno) = (update.guest.as_str(), update.buffer_id, update.seqno);
        let key = (update.guest.clone(), id);
        let Some(buffer) = self.buffers.get(&key) else {
            self.out.warn(format_args!(
                "UPDATE of unknown buffer {id} of guest {guest}"
            ));
            self.out.line(&lines::update(update, None))?;
            return Ok(());
        };
        let spec = buffer.spec;
        let wanted = self.options.dump.is_some() || self.options.verify;
        let (Some(spec), Some(map), true) = (spec, buffer.map.as_deref(), wanted) else {
            let crc = match buffer.map.as_deref() {
                Some(map) => crc_streamed(map).ok(),
                None => None,
            };
            self.out.line(&lines::update(update, crc))?;
            if spec.is_some() {
                self.counts.frames += 1;
            }
            return Ok(());
        };
        // One copy of the buffer, for the CRC-32, the PNG and the check, so
        // that they agree even if the guest writes meanwhile.
        if let Err(e) = read_all(map, &mut self.scratch) {
            self.out
                .warn(format_args!("guest {guest} buffer {id}: cannot read: {e}"));
            self.out.line(&lines::update(update, None))?;
            return Ok(());
        }
        let crc = checksum::crc32(&self.scratch);
        self.out.line(&lines::update(update, Some(crc)))?;
        self.counts.frames += 1;
        if let Some(dir) = &self.options.dump {
            let path = dump::dump(dir, guest, id, seqno, &spec, &self.scratch)?;
            self.counts.dumped += 1;
            self.out.line(&lines::frame(guest, id, seqno, &path))?;
        }
        if self.options.verify {
            let expected = buffer.properties.get(PROP_CRC32);
            let verdict = match checksum::verify(&spec, &self.scratch, expected) {
                Ok(_) => Verdict::Ok,
                Err(VerifyError::Missing) => Verdict::Missing,
                Err(VerifyError::Mismatch { expected, actual }) => Verdict::Mismatch {
                    expected: format_crc32(expected),
                    actual,
                },
                Err(VerifyError::Malformed(expected)) => Verdict::Mismatch {
                    expected,
                    actual: checksum::crc32(spec.frame_bytes(&self.scratch)?),
                },
                Err(VerifyError::Frame(e)) => return Err(e.into()),
            };
            match verdict {
                Verdict::Ok => self.counts.verified += 1,
                Verdict::Mismatch { .. } => self.counts.mismatched += 1,
                Verdict::Missing => {}
            }
            self.out.line(&lines::verify(guest, id, seqno, &verdict))?;
        }
        Ok(())
    }

    fn properties(&mut self, change: PropertiesChanged) -> Result<(), Stop> {
        self.out.line(&lines::properties(&change))?;
        let PropertiesChanged {
            guest,
            buffer_id,
            properties,
        } = change;
        let key = (guest, buffer_id);
        let Some(size) = self.buffers.get(&key).map(|b| b.size) else {
            self.out.warn(format_args!(
                "PROPERTIES of unknown buffer {buffer_id} of guest {}",
                key.0
            ));
            return Ok(());
        };
        let spec = self.spec_of(&key.0, buffer_id, &properties, size);
        if let Some(buffer) = self.buffers.get_mut(&key) {
            buffer.properties = properties;
            buffer.spec = spec;
        }
        Ok(())
    }

    fn remove(&mut self, remove: &Remove) -> Result<(), Stop> {
        // Unmapped before the line is out (unless held).
        match self
            .buffers
            .remove(&(remove.guest.clone(), remove.buffer_id))
        {
            Some(buffer) => self.let_go(buffer),
            None => self.out.warn(format_args!(
                "REMOVE of unknown buffer {} of guest {}",
                remove.buffer_id, remove.guest
            )),
        }
        self.out.line(&lines::remove(remove))?;
        Ok(())
    }

    fn reset(&mut self, reset: &Reset) -> Result<(), Stop> {
        let keys: Vec<(String, u64)> = self
            .buffers
            .keys()
            .filter(|(guest, _)| *guest == reset.guest)
            .cloned()
            .collect();
        for key in keys {
            if let Some(buffer) = self.buffers.remove(&key) {
                self.let_go(buffer);
            }
        }
        self.out.line(&lines::reset(reset))?;
        Ok(())
    }

    fn ended(&mut self, error: &ErrorMessage) -> Stop {
        match self.out.line(&lines::error(error)) {
            Ok(()) | Err(LineError::StdoutClosed) => Stop::Error(error.code),
            Err(e) => e.into(),
        }
    }

    /// Connects, subscribes and handles events until something stops it.
    fn watch(&mut self, stop: Option<BorrowedFd<'_>>, deadline: Option<Instant>) -> Stop {
        let mut client = match Client::connect(&self.options.socket) {
            Ok(client) => client,
            Err(e) => return e.into(),
        };
        // Wait for the WELCOME no longer than --seconds allow; a backend
        // answers at once.
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let answer_timeout = remaining
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(30));
        if let Err(e) = client.set_read_timeout(Some(answer_timeout.max(Duration::from_millis(1))))
        {
            return e.into();
        }
        let welcome = match client.subscribe(&subscription(&self.options.apps)) {
            Ok(welcome) => welcome.clone(),
            Err(ClientError::Refused(error)) => return self.ended(&error),
            Err(ClientError::Recv(RecvError::Timeout))
                if deadline.is_some_and(|d| Instant::now() >= d) =>
            {
                return Stop::Normal
            }
            Err(ClientError::Recv(RecvError::Timeout)) => {
                return Stop::Failed("no answer from the backend".into())
            }
            Err(e) => return e.into(),
        };
        if let Err(e) = self.out.line(&lines::welcome(&welcome)) {
            return e.into();
        }
        // Events are read once poll() says one is there: the timeout only
        // bounds a backend that stops in the middle of a message.
        if let Err(e) = client.set_read_timeout(Some(Duration::from_secs(10))) {
            return e.into();
        }
        loop {
            if self.options.frames.is_some_and(|n| self.counts.frames >= n) {
                return Stop::Normal;
            }
            // The earliest of --seconds and the next unmapping.
            let next_unmap = self.unmap_due();
            let wake = match (deadline, next_unmap) {
                (Some(d), Some(u)) => Some(d.min(u)),
                (d, u) => d.or(u),
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Stop::Normal;
            }
            let timeout = match wake {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Rounded up, not to wake up before the deadline.
                    let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            // --stop-reading: the socket is no longer read.
            let reading = self.options.stop_reading.is_none_or(|n| self.events < n);
            let mut fds = Vec::new();
            if let Some(stop) = stop {
                fds.push(PollFd::new(stop, PollFlags::POLLIN));
            }
            if reading {
                fds.push(PollFd::new(client.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Stop::Failed(format!("poll: {e}")),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            if stop.is_some() && ready(&fds[0]) {
                return Stop::Normal;
            }
            if !reading || !fds.last().is_some_and(ready) {
                continue;
            }
            drop(fds);
            let result = match client.next_event() {
                Ok(event) => self.handle(&client, event),
                Err(ClientError::Recv(RecvError::Timeout)) => Ok(()),
                Err(ClientError::Ended(error)) => return self.ended(&error),
                Err(ClientError::Closed) => return Stop::Normal,
                Err(e) => return e.into(),
            };
            if let Err(stop) = result {
                return stop;
            }
            self.out.progress(self.counts);
        }
    }
}

/// Runs `bufshare-watch` with `options` until the backend closes the
/// connection, `--frames` or `--seconds` is reached, or `stop` (a signalfd,
/// for example) becomes readable. Writes the event lines, messages, and
/// progress and summary; returns the exit status.
pub fn run(options: &Options, stop: Option<BorrowedFd<'_>>) -> Exit {
    let deadline = options
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut out = match Output::new(options) {
        Ok(out) => out,
        Err(stop) => return fail_early(stop),
    };
    if let Some(dir) = &options.dump {
        if let Err(e) = fs::create_dir_all(dir) {
            out.error(&format!("{}: {e}", dir.display()));
            return Exit::Failed;
        }
    }
    let mut watcher = Watcher {
        options,
        out,
        buffers: HashMap::new(),
        counts: Counts::default(),
        scratch: Vec::new(),
        held: Vec::new(),
        events: 0,
    };
    let stopped = watcher.watch(stop, deadline);
    // Unmapped before the summary.
    watcher.buffers.clear();
    watcher.held.clear();
    let exit = match stopped {
        Stop::Normal if watcher.counts.mismatched > 0 => Exit::Mismatch,
        Stop::Normal => Exit::Ok,
        Stop::Error(code) => Exit::for_error(code),
        Stop::Failed(message) => {
            watcher.out.error(&message);
            Exit::Failed
        }
    };
    watcher.out.summary(watcher.counts);
    exit
}

fn fail_early(stop: Stop) -> Exit {
    if let Stop::Failed(message) = stop {
        eprintln!("bufshare-watch: {message}");
    }
    Exit::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions() {
        let s =
            |apps: &[&str]| subscription(&apps.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]), ["*"]);
        assert_eq!(s(&["a", "*"]), ["*"]);
        assert_eq!(s(&["b", "a", "b"]), ["b", "a"]);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Exit::for_error(ErrorCode::Denied), Exit::Refused);
        assert_eq!(Exit::for_error(ErrorCode::Version), Exit::Refused);
        assert_eq!(Exit::for_error(ErrorCode::Protocol), Exit::Refused);
        assert_eq!(Exit::for_error(ErrorCode::Overflow), Exit::Ended);
        assert_eq!(Exit::for_error(ErrorCode::Shutdown), Exit::Ended);
        assert_eq!(Exit::for_error(ErrorCode::Busy), Exit::Ended);
        assert_eq!(
            [
                Exit::Ok,
                Exit::Mismatch,
                Exit::Refused,
                Exit::Ended,
                Exit::Failed
            ]
            .map(Exit::code),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn frame_specs() {
        let p = |b: &[u8]| Properties::parse(b).unwrap();
        assert_eq!(frame_spec(&p(b"name=x\0"), 64), Ok(None));
        assert!(frame_spec(&p(b"width=4\0height=4\0format=XR24\0"), 64)
            .unwrap()
            .is_some());
        assert_eq!(
            frame_spec(&p(b"width=4\0height=4\0"), 64),
            Err(FrameError::Missing("format"))
        );
        assert!(matches!(
            frame_spec(&p(b"width=4\0height=4\0format=XR24\0"), 63),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn summary_format() {
        let counts = Counts {
            frames: 50,
            dumped: 42,
            verified: 41,
            mismatched: 1,
        };
        assert_eq!(
            counts.to_string(),
            "frames: 42 dumped, 41 verified, 1 mismatched"
        );
    }
}
