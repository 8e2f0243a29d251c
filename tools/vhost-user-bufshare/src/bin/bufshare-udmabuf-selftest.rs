// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! `bufshare-udmabuf-selftest`: the backend's dma-buf export path against
//! the real udmabuf driver, where there is one (the test guest has
//! `CONFIG_UDMABUF`). No argument; prints TAP (kselftest style) and exits 0
//! only if every test passed or was skipped.
//!
//! It builds, in this process, what the backend has when QEMU serves a
//! guest: guest RAM in memfds sealed as QEMU's `memory-backend-memfd` seals
//! them (`F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`), mapped as the
//! vhost-user memory regions are, two regions of one memfd and one of
//! another, adjacent in the guest; a device ([`BufshareDevice`]) whose
//! buffer table tells the consumer server, listening on a temporary unix
//! socket with `/dev/udmabuf`; and consumers ([`Client`]) of that socket.
//! Buffers are registered with the device's commands, as a driver would;
//! their ADD must carry a dma-buf whose mapping is the guest's memory, both
//! ways; several dma-bufs for a buffer of more pieces than udmabuf's
//! `list_limit` or larger than its `size_limit_mb`; and nothing at all for
//! a buffer udmabuf cannot take (pieces not page-aligned, memory not
//! sealed), unless the consumer is trusted with all of the guest's RAM
//! (`--trust-ram`: a second server, whose consumers are), which then gets
//! segments of its memory files, reopened, for pieces not page-aligned,
//! and still nothing for memory not sealed.
//!
//! Without `/dev/udmabuf`, every test is skipped.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bufshare_consumer::{
    Add, ByteRange, Client, Event, MappedBuffer, Memory, MemoryForm, ResetReason,
};
use bufshare_uapi::{
    add_ranges_bytes, unregister_bytes, update_command, RegisterCommand, VIRTIO_BUFSHARE_F_BUFFERS,
    VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD, VIRTIO_BUFSHARE_S_OK,
};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::{lseek, Whence};
use vm_memory::{ByteValued, Bytes, FileOffset, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use vhost_user_bufshare::buffers::SharedState;
use vhost_user_bufshare::consumer::access::{RamAccess, TrustRule};
use vhost_user_bufshare::consumer::export::Udmabuf;
use vhost_user_bufshare::consumer::{ConsumerConfig, ConsumerServer};
use vhost_user_bufshare::device::{BufshareDevice, Limits};

/// The guest's name, in the events.
const GUEST: &str = "selftest";
const MIB: u64 = 1 << 20;
/// How long a consumer waits for an event.
const TIMEOUT: Duration = Duration::from_secs(10);
/// udmabuf's default `list_limit`, where udmabuf is not used.
const DEFAULT_LIST_LIMIT: usize = 1024;
/// The largest `list_limit` the test goes beyond (a page of guest RAM
/// written per piece, two pieces apart).
const MAX_LIST_LIMIT: usize = 16384;
/// udmabuf's default `size_limit_mb`, in bytes, where udmabuf is not used.
const DEFAULT_SIZE_LIMIT: u64 = 64 * MIB;
/// The largest `size_limit_mb` the test goes beyond, in bytes.
const MAX_SIZE_LIMIT: u64 = 256 * MIB;

/// Why a test did not pass.
#[derive(Debug)]
enum Fail {
    /// It failed.
    Not(String),
    /// It could not be run here.
    Skip(String),
}

impl From<String> for Fail {
    fn from(message: String) -> Self {
        Fail::Not(message)
    }
}

type TestResult = Result<(), Fail>;

/// Which fixture a test runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Consumers trusted with nothing but their buffers: dma-bufs only.
    Plain,
    /// Consumers trusted with all of the guest's RAM (`--trust-ram`).
    Trusted,
}

type Test = (&'static str, Who, fn(&mut Fixture) -> TestResult);

/// Fails the test with a message unless `cond`.
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(Fail::Not(format!("line {}: {}", line!(), stringify!($cond))));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Fail::Not(format!("line {}: {}", line!(), format!($($fmt)+))));
        }
    };
}

/// `r`, or a failure saying `what` went wrong.
fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Bytes that differ from page to page and from seed to seed.
fn pattern(seed: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i ^ (seed << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect()
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(page)) if page > 0 => page as u64,
        _ => 4096,
    }
}

/// A memfd of `len` bytes as QEMU's memory-backend-memfd makes it: sealed
/// against growing and shrinking, seals sealed (`seal=on`, its default),
/// or with no seals at all (`seal=off`).
fn memfd(name: &str, len: u64, sealed: bool) -> Result<File, String> {
    let flags = if sealed {
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING
    } else {
        MFdFlags::MFD_CLOEXEC
    };
    let file = File::from(ctx(memfd_create(name, flags), "memfd_create")?);
    ctx(file.set_len(len), "ftruncate")?;
    if sealed {
        let seals = SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
        ctx(fcntl(&file, FcntlArg::F_ADD_SEALS(seals)), "F_ADD_SEALS")?;
    }
    Ok(file)
}

/// A private directory for the consumer socket, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// In `$TMPDIR` (or /tmp), else /dev/shm, else /run: the first where a
    /// unix socket can be made.
    fn new() -> Result<Self, String> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bufshare-udmabuf-selftest.{}.{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut errors = Vec::new();
        for base in [std::env::temp_dir(), "/dev/shm".into(), "/run".into()] {
            let dir = base.join(&name);
            let _ = fs::remove_dir_all(&dir);
            let made = fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .and_then(|()| UnixListener::bind(dir.join("probe.sock")).map(drop));
            match made {
                Ok(()) => return Ok(Self(dir)),
                Err(e) => {
                    errors.push(format!("{}: {e}", dir.display()));
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        Err(format!("no directory for a socket: {}", errors.join("; ")))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Where guest RAM is, in the guest and in the memfds.
#[derive(Clone, Copy, Debug)]
struct Layout {
    page: u64,
    /// Region 3, unsealed: at this address, 1 MiB.
    r3_base: u64,
}

impl Layout {
    /// Region 2, in `ram1`, starts here.
    const R2_BASE: u64 = 8 * MIB;

    /// The ranges of the buffer most tests share, out of order and across
    /// regions: 4 pages across regions 0 and 1 (two pieces of `ram0`, far
    /// apart in it), 2 pages across regions 1 and 2 (`ram0`, then
    /// `ram1`), 3 pages of region 0. Nine pages, five pieces.
    fn buffer(&self) -> Vec<(u64, u64)> {
        let p = self.page;
        vec![
            (4 * MIB - 2 * p, 4 * p),
            (8 * MIB - p, 2 * p),
            (16 * p, 3 * p),
        ]
    }

    /// `n` ranges of one page, a page apart, in region 2: `n` pieces that
    /// do not merge.
    fn scattered(&self, n: usize) -> Vec<(u64, u64)> {
        (0..n as u64)
            .map(|i| (Self::R2_BASE + 2 * i * self.page, self.page))
            .collect()
    }
}

/// The backend's side of one guest, and its consumer server.
struct Fixture {
    server: ConsumerServer,
    device: BufshareDevice,
    state: Arc<SharedState>,
    mem: GuestMemoryMmap,
    layout: Layout,
    /// The memfd of region 3, without seals.
    unsealed: Arc<File>,
    /// Whether the server hands dma-bufs over.
    dmabuf: bool,
    /// Whether it was given a udmabuf device.
    want_dmabuf: bool,
    /// The udmabuf device it was given.
    udmabuf: Option<PathBuf>,
    /// What the last test has to say, as TAP comments.
    notes: Vec<String>,
    /// udmabuf's `list_limit`, or its default.
    list_limit: usize,
    /// udmabuf's `size_limit_mb`, in bytes, or its default.
    size_limit: u64,
    /// Whether its consumers are trusted with all of the guest's RAM.
    trusted: bool,
    /// The buffers registered, to unregister after each test.
    registered: Vec<u64>,
    _dir: TempDir,
}

impl Fixture {
    /// Guest RAM, a device and a consumer server that makes dma-bufs with
    /// `udmabuf` if given and if it works, or hands segments over.
    ///
    /// Region 0: guest 0..4 MiB, at 4 MiB of `ram0`; region 1: guest
    /// 4..8 MiB, at 0 of `ram0` (QEMU splits one memfd into regions so);
    /// region 2: guest 8 MiB on, `ram1` (a second memory backend, another
    /// NUMA node); region 3, after a gap: 1 MiB of a memfd without seals.
    /// Its consumers are trusted with all of the guest's RAM, read-write,
    /// if `trusted`.
    fn new(udmabuf: Option<&Path>, trusted: bool) -> Result<Self, String> {
        let dir = TempDir::new()?;
        let mut config = ConsumerConfig {
            udmabuf: udmabuf.map(Path::to_path_buf),
            ..ConsumerConfig::new(dir.0.join("consumer.sock"))
        };
        if trusted {
            config.access.trust = vec![TrustRule::for_this_process(RamAccess::ReadWrite)];
        }
        let server = ctx(ConsumerServer::start(config), "consumer server")?;
        let dmabuf = server.memory_form() == MemoryForm::DmaBuf;
        let list_limit = server
            .hub()
            .udmabuf()
            .map_or(DEFAULT_LIST_LIMIT, Udmabuf::list_limit);
        let size_limit = server
            .hub()
            .udmabuf()
            .map_or(DEFAULT_SIZE_LIMIT, Udmabuf::size_limit);

        let page = page_size();
        let scattered = 2 * (list_limit.min(MAX_LIST_LIMIT) as u64 + 1) * page;
        // Room for a buffer just larger than size_limit (the memfd is
        // sparse: only what is written takes memory).
        let large = size_limit.min(MAX_SIZE_LIMIT) + 2 * page;
        let r2_len = scattered.max(large).max(16 * MIB).next_multiple_of(MIB);
        let layout = Layout {
            page,
            r3_base: Layout::R2_BASE + r2_len + 16 * MIB,
        };
        let ram0 = memfd("selftest-ram0", 8 * MIB, true)?;
        let ram1 = memfd("selftest-ram1", r2_len, true)?;
        let unsealed = memfd("selftest-unsealed", MIB, false)?;
        let region = |guest: u64, len: u64, file: &File, offset: u64| {
            Ok::<_, String>((
                GuestAddress(guest),
                len as usize,
                Some(FileOffset::new(ctx(file.try_clone(), "dup")?, offset)),
            ))
        };
        let mem = ctx(
            GuestMemoryMmap::from_ranges_with_files(&[
                region(0, 4 * MIB, &ram0, 4 * MIB)?,
                region(4 * MIB, 4 * MIB, &ram0, 0)?,
                region(Layout::R2_BASE, r2_len, &ram1, 0)?,
                region(layout.r3_base, MIB, &unsealed, 0)?,
            ]),
            "guest memory",
        )?;

        let state = Arc::new(SharedState::default());
        state.lock().observer = Some(ctx(server.guest(GUEST), "guest")?);
        let limits = Limits {
            max_ranges: Limits::default().max_ranges.max(list_limit as u32 + 1),
            ..Limits::default()
        };
        let mut device = BufshareDevice::with_state(limits, Arc::clone(&state));
        device.set_driver_features(1 << VIRTIO_BUFSHARE_F_BUFFERS);
        device.set_memory(GuestMemoryAtomic::new(mem.clone()));
        Ok(Self {
            server,
            device,
            state,
            mem,
            layout,
            unsealed: Arc::new(unsealed),
            dmabuf,
            want_dmabuf: udmabuf.is_some(),
            udmabuf: udmabuf.map(Path::to_path_buf),
            notes: Vec::new(),
            list_limit,
            size_limit,
            trusted,
            registered: Vec::new(),
            _dir: dir,
        })
    }

    /// Carries `command` out; it must succeed.
    fn run(&mut self, command: &[u8]) -> Result<(), String> {
        let answer = self
            .device
            .process(command, 64)
            .ok_or_else(|| "no answer".to_string())?;
        let status = u32::from_le_bytes([answer[0], answer[1], answer[2], answer[3]]);
        if status != VIRTIO_BUFSHARE_S_OK {
            return Err(format!("command {:#x}: status {status}", command[0]));
        }
        Ok(())
    }

    /// Registers buffer `id` of `app` over `ranges` (REGISTER, then
    /// ADD_RANGES for what one command cannot carry).
    fn register(&mut self, id: u64, app: &str, ranges: &[(u64, u64)]) -> Result<(), String> {
        let per_cmd = VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD as usize;
        let size = ranges.iter().map(|r| r.1).sum();
        let first = &ranges[..ranges.len().min(per_cmd)];
        let props = b"width=16\0format=XR24\0";
        let register = RegisterCommand::new(id, app, size, ranges.len() as u32, first);
        self.run(&register.props(props).to_bytes())?;
        self.registered.push(id);
        for (i, chunk) in ranges.chunks(per_cmd).enumerate().skip(1) {
            self.run(&add_ranges_bytes(id, (i * per_cmd) as u32, chunk))?;
        }
        Ok(())
    }

    /// Unregisters what the test registered, then waits (up to
    /// [`TIMEOUT`]) until the server has let go of the test's consumers: a
    /// consumer's connection slot comes back when the server's thread for it
    /// sees the connection close, which on a busy host can come after the
    /// next test's consumers subscribe, and be refused for the slots of its
    /// uid.
    fn cleanup(&mut self) {
        for id in std::mem::take(&mut self.registered) {
            let _ = self.device.process(&unregister_bytes(id), 64);
        }
        let start = Instant::now();
        while self.server.connections() != 0 && start.elapsed() < TIMEOUT {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes `data` into guest memory, at `ranges` one after the other.
    fn write_guest(&self, ranges: &[(u64, u64)], data: &[u8]) -> Result<(), String> {
        let mut at = 0;
        for &(addr, len) in ranges {
            let len = len as usize;
            ctx(
                self.mem
                    .write_slice(&data[at..at + len], GuestAddress(addr)),
                "guest memory",
            )?;
            at += len;
        }
        Ok(())
    }

    /// Reads guest memory at `ranges`, one after the other.
    fn read_guest(&self, ranges: &[(u64, u64)]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for &(addr, len) in ranges {
            let mut piece = vec![0; len as usize];
            ctx(
                self.mem.read_slice(&mut piece, GuestAddress(addr)),
                "guest memory",
            )?;
            out.extend(piece);
        }
        Ok(out)
    }

    /// A consumer, subscribed to `apps`.
    fn consumer(&self, apps: &[&str]) -> Result<Client, String> {
        let mut client = ctx(Client::connect(self.server.path()), "connect")?;
        ctx(client.set_read_timeout(Some(TIMEOUT)), "timeout")?;
        ctx(client.subscribe(apps), "subscribe")?;
        Ok(client)
    }

    /// Writes `seed`'s pattern into guest memory at `ranges`, registers
    /// buffer `id` of `app` there, and returns the ADD `client` gets for it,
    /// with the pattern.
    fn share(
        &mut self,
        client: &mut Client,
        id: u64,
        app: &str,
        ranges: &[(u64, u64)],
    ) -> Result<(Add, Vec<u8>), String> {
        let size = ranges.iter().map(|r| r.1).sum();
        let data = pattern(id, size);
        self.write_guest(ranges, &data)?;
        self.register(id, app, ranges)?;
        let add = expect_add(client)?;
        if (
            add.guest.as_str(),
            add.buffer_id,
            add.application.as_str(),
            add.size,
        ) != (GUEST, id, app, size)
        {
            return Err(format!(
                "ADD of guest {} buffer {} application {} size {}, not {GUEST} {id} {app} {size}",
                add.guest, add.buffer_id, add.application, add.size
            ));
        }
        Ok((add, data))
    }

    /// The dma-buf of `add`, if the server hands dma-bufs over (else
    /// `None`, and `add` must carry segments).
    fn dmabuf_of<'a>(&self, add: &'a Add) -> Result<Option<&'a OwnedFd>, String> {
        match (&add.memory, self.dmabuf) {
            (Memory::DmaBuf(fd), true) => Ok(Some(fd)),
            (Memory::Segments { .. }, false) => Ok(None),
            (Memory::Segments { segments, .. }, true) => Err(format!(
                "the ADD carries {} segments, not a dma-buf: udmabuf refused it",
                segments.len()
            )),
            (Memory::DmaBufs { dmabufs, .. }, true) => Err(format!(
                "the ADD carries {} dma-bufs, not one",
                dmabufs.len()
            )),
            (Memory::DmaBuf(_) | Memory::DmaBufs { .. }, false) => {
                Err("a dma-buf without udmabuf".into())
            }
        }
    }

    /// Registers buffer `id` of `app` at `ranges`, which `client` must not
    /// be given: then buffer `id + 1000` of one page, whose ADD must be the
    /// next event.
    fn not_given(
        &mut self,
        client: &mut Client,
        id: u64,
        app: &str,
        ranges: &[(u64, u64)],
    ) -> TestResult {
        self.register(id, app, ranges)?;
        let witness = [(16 * self.layout.page, self.layout.page)];
        self.register(id + 1000, app, &witness)?;
        let add = expect_add(client)?;
        check!(
            add.buffer_id == id + 1000,
            "buffer {} was handed over",
            add.buffer_id
        );
        Ok(())
    }
}

fn next_event(client: &mut Client) -> Result<Event, String> {
    ctx(client.next_event(), "waiting for an event")
}

fn expect_add(client: &mut Client) -> Result<Add, String> {
    match next_event(client)? {
        Event::Add(add) => Ok(add),
        other => Err(format!("not an ADD: {other:?}")),
    }
}

/// The whole buffer, read through `map`.
fn read_all(map: &MappedBuffer) -> Result<Vec<u8>, String> {
    let mut out = vec![0; map.len() as usize];
    ctx(map.read(0, &mut out), "reading the mapping")?;
    Ok(out)
}

/// The first offset where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("byte {i}: {:#04x}, not {:#04x}", a[i], b[i]),
        None => format!("{} bytes, not {}", a.len(), b.len()),
    }
}

/// (device, inode) of the file `fd` is open on.
fn file_id(fd: &OwnedFd) -> Result<(u64, u64), String> {
    let file = File::from(ctx(fd.try_clone(), "dup")?);
    let meta = ctx(file.metadata(), "fstat")?;
    Ok((meta.dev(), meta.ino()))
}

/// A field of `/proc/self/fdinfo/FD`.
fn fdinfo(fd: &OwnedFd, field: &str) -> Result<String, String> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = ctx(fs::read_to_string(&path), &path)?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
        .ok_or_else(|| format!("no {field} in {path}"))
}

// The tests.

fn udmabuf_opens(fx: &mut Fixture) -> TestResult {
    let Some(path) = fx.udmabuf.clone() else {
        return Err(Fail::Skip("no udmabuf device asked for".into()));
    };
    // What the backend does when it starts: open the device, and make a
    // dma-buf of a sealed memfd page.
    let udmabuf = ctx(Udmabuf::open(&path), &path.display().to_string())?;
    fx.notes.push(format!(
        "udmabuf: list_limit {}, size_limit {} MiB, page {} bytes",
        udmabuf.list_limit(),
        udmabuf.size_limit() >> 20,
        udmabuf.page_size()
    ));
    check!(fx.dmabuf, "the consumer server does not use udmabuf");
    Ok(())
}

fn welcome_says_dmabuf(fx: &mut Fixture) -> TestResult {
    let mut client = ctx(Client::connect(fx.server.path()), "connect")?;
    ctx(client.set_read_timeout(Some(TIMEOUT)), "timeout")?;
    let welcome = ctx(client.subscribe(&["welcome"]), "subscribe")?;
    let want = if fx.dmabuf {
        MemoryForm::DmaBuf
    } else {
        MemoryForm::Segments
    };
    check!(
        welcome.memory_form == want,
        "WELCOME says {}",
        welcome.memory_form
    );
    check!(
        welcome.version == bufshare_consumer::VERSION,
        "version {}",
        welcome.version
    );
    Ok(())
}

fn add_carries_one_dmabuf(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["add"])?;
    let ranges = fx.layout.buffer();
    let (add, _) = fx.share(&mut client, 3, "add", &ranges)?;
    let page = fx.layout.page;
    check!(add.size == 9 * page && add.seqno == 0);
    check!(add.properties.get_u64("width") == Some(16));
    check!(add.properties.get("format") == Some(&b"XR24"[..]));
    match fx.dmabuf_of(&add)? {
        Some(fd) => {
            // A dma-buf of udmabuf, of the buffer's size.
            let exporter = fdinfo(fd, "exp_name")?;
            check!(exporter == "udmabuf", "exporter {exporter:?}");
            let size = fdinfo(fd, "size")?;
            check!(size == add.size.to_string(), "fdinfo size {size}");
            let end = ctx(lseek(fd.as_fd(), 0, Whence::SeekEnd), "lseek")?;
            check!(end as u64 == add.size, "lseek to the end: {end}");
        }
        None => match &add.memory {
            Memory::Segments { files, segments } => {
                check!(files.len() == 2, "{} files", files.len());
                check!(segments.len() == 5, "{} segments", segments.len());
            }
            Memory::DmaBuf(_) | Memory::DmaBufs { .. } => unreachable!(),
        },
    }
    Ok(())
}

fn dmabuf_shows_guest_bytes(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["bytes"])?;
    let ranges = fx.layout.buffer();
    let (add, data) = fx.share(&mut client, 4, "bytes", &ranges)?;
    fx.dmabuf_of(&add)?;
    let map = ctx(MappedBuffer::new(&add, false), "mmap")?;
    let got = read_all(&map)?;
    check!(got == data, "{}", first_difference(&got, &data));
    Ok(())
}

fn guest_writes_show_through_dmabuf(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["guest-writes"])?;
    let ranges = fx.layout.buffer();
    let (add, data) = fx.share(&mut client, 5, "guest-writes", &ranges)?;
    fx.dmabuf_of(&add)?;
    let map = ctx(MappedBuffer::new(&add, false), "mmap")?;
    // Mapped and read (its pages faulted in) first...
    check!(read_all(&map)? == data);
    // ... then the guest writes, twice, and the mapping shows it.
    for seed in [0x55, 0x66] {
        let new = pattern(seed, add.size);
        fx.write_guest(&ranges, &new)?;
        let got = read_all(&map)?;
        check!(got == new, "{}", first_difference(&got, &new));
    }
    // A few bytes across each piece boundary.
    let p = fx.layout.page;
    for at in [2 * p, 4 * p, 5 * p, 6 * p] {
        let mut expected = read_all(&map)?;
        expected[(at - 3) as usize..(at + 3) as usize].copy_from_slice(b"ABCDEF");
        fx.write_guest(&ranges, &expected)?;
        let mut got = [0; 6];
        ctx(map.read(at - 3, &mut got), "reading the mapping")?;
        check!(&got == b"ABCDEF", "at {at:#x}: {got:?}");
    }
    Ok(())
}

fn dmabuf_writes_show_in_guest(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["host-writes"])?;
    let ranges = fx.layout.buffer();
    let (add, data) = fx.share(&mut client, 6, "host-writes", &ranges)?;
    fx.dmabuf_of(&add)?;
    let map = ctx(MappedBuffer::new(&add, true), "mmap")?;
    check!(read_all(&map)? == data);
    // The page before the third range is not the buffer's.
    let p = fx.layout.page;
    let outside = [(ranges[2].0 - p, p)];
    let before = fx.read_guest(&outside)?;
    let new = pattern(0x77, add.size);
    ctx(map.write(0, &new), "writing the mapping")?;
    // In guest memory, at the buffer's ranges...
    let got = fx.read_guest(&ranges)?;
    check!(got == new, "guest memory: {}", first_difference(&got, &new));
    // ... and as the backend sees the buffer (its segments, the inspect
    // socket's way).
    let mut seen = vec![0; new.len()];
    ctx(fx.state.lock().read(6, 0, &mut seen), "the backend's read")?;
    check!(seen == new, "backend: {}", first_difference(&seen, &new));
    // Nothing outside the buffer changed.
    check!(
        fx.read_guest(&outside)? == before,
        "a page outside the buffer changed"
    );
    Ok(())
}

fn consumers_share_one_dmabuf(fx: &mut Fixture) -> TestResult {
    let mut first = fx.consumer(&["shared"])?;
    let ranges = fx.layout.buffer();
    let (add1, _) = fx.share(&mut first, 7, "shared", &ranges)?;
    // A consumer that comes later gets the buffer on subscription.
    let mut late = fx.consumer(&["shared"])?;
    let add2 = expect_add(&mut late)?;
    check!(add2.buffer_id == 7 && add2.application == "shared");
    match (fx.dmabuf_of(&add1)?, fx.dmabuf_of(&add2)?) {
        (Some(a), Some(b)) => {
            // One dma-buf, made once, handed to both.
            check!(file_id(a)? == file_id(b)?, "two different dma-bufs");
        }
        (None, None) => {}
        _ => return Err(Fail::Not("two forms".into())),
    }
    // What one writes, the other reads.
    let map1 = ctx(MappedBuffer::new(&add1, false), "mmap")?;
    let map2 = ctx(MappedBuffer::new(&add2, true), "mmap")?;
    let new = pattern(0x88, add1.size);
    ctx(map2.write(0, &new), "writing the mapping")?;
    check!(read_all(&map1)? == new);
    Ok(())
}

fn update_and_remove_reach_consumers(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["events"])?;
    let ranges = fx.layout.buffer();
    fx.share(&mut client, 8, "events", &ranges)?;
    let p = fx.layout.page;
    fx.run(update_command(8, 1, Some((p, 2 * p)), None).as_slice())?;
    match next_event(&mut client)? {
        Event::Update(update) => {
            check!(update.guest == GUEST && update.buffer_id == 8 && update.seqno == 1);
            check!(
                update.range
                    == Some(ByteRange {
                        offset: p,
                        len: 2 * p
                    }),
                "{:?}",
                update.range
            );
        }
        other => return Err(Fail::Not(format!("not an UPDATE: {other:?}"))),
    }
    fx.run(&unregister_bytes(8))?;
    fx.registered.retain(|&id| id != 8);
    match next_event(&mut client)? {
        Event::Remove(remove) => check!(remove.guest == GUEST && remove.buffer_id == 8),
        other => return Err(Fail::Not(format!("not a REMOVE: {other:?}"))),
    }
    Ok(())
}

/// Checks that `add` carries `n` segments (if given), and that they show
/// `data`, both ways.
fn check_segments(
    fx: &Fixture,
    add: &Add,
    data: &[u8],
    ranges: &[(u64, u64)],
    n: Option<usize>,
) -> TestResult {
    match &add.memory {
        Memory::Segments { segments, .. } => {
            if let Some(n) = n {
                check!(segments.len() == n, "{} segments, not {n}", segments.len());
            }
        }
        Memory::DmaBuf(_) | Memory::DmaBufs { .. } => {
            return Err(Fail::Not("dma-bufs, not segments".into()))
        }
    }
    let map = ctx(MappedBuffer::new(add, true), "mmap")?;
    let got = read_all(&map)?;
    check!(got == data, "{}", first_difference(&got, data));
    let new = pattern(0x99, add.size);
    ctx(map.write(0, &new), "writing the mapping")?;
    let got = fx.read_guest(ranges)?;
    check!(got == new, "guest memory: {}", first_difference(&got, &new));
    Ok(())
}

/// Two pages from 0x100 before the end of region 0, into region 1.
fn unaligned(fx: &Fixture) -> [(u64, u64); 1] {
    let p = fx.layout.page;
    [(4 * MIB - p + 0x100, 2 * p)]
}

fn unaligned_buffer_is_not_given(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["unaligned"])?;
    let ranges = unaligned(fx);
    if !fx.dmabuf {
        // The same fixture as the trusted tests, without udmabuf.
        let (add, data) = fx.share(&mut client, 9, "unaligned", &ranges)?;
        return check_segments(fx, &add, &data, &ranges, Some(2));
    }
    // udmabuf cannot take it, and this consumer may have nothing else.
    fx.not_given(&mut client, 9, "unaligned", &ranges)
}

fn unaligned_buffer_goes_as_segments_if_trusted(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["unaligned"])?;
    let ranges = unaligned(fx);
    let (add, data) = fx.share(&mut client, 19, "unaligned", &ranges)?;
    // The memory files, reopened: never the frontend's descriptors.
    if let Memory::Segments { files, .. } = &add.memory {
        for fd in files {
            let flags = ctx(fcntl(fd, FcntlArg::F_GETFL), "F_GETFL")?;
            check!(flags & libc::O_ACCMODE == libc::O_RDWR, "flags {flags:#x}");
        }
    }
    check_segments(fx, &add, &data, &ranges, Some(2))
}

fn list_limit_pieces_go_as_one_dmabuf(fx: &mut Fixture) -> TestResult {
    if fx.list_limit > MAX_LIST_LIMIT {
        return Err(Fail::Skip(format!(
            "list_limit {} is too large",
            fx.list_limit
        )));
    }
    let mut client = fx.consumer(&["at-limit"])?;
    let ranges = fx.layout.scattered(fx.list_limit);
    let (add, data) = fx.share(&mut client, 10, "at-limit", &ranges)?;
    if fx.dmabuf_of(&add)?.is_none() {
        return check_segments(fx, &add, &data, &ranges, Some(fx.list_limit));
    }
    let map = ctx(MappedBuffer::new(&add, false), "mmap")?;
    let got = read_all(&map)?;
    check!(got == data, "{}", first_difference(&got, &data));
    Ok(())
}

/// Checks that `add` carries `n` dma-bufs (or segments, without udmabuf),
/// of udmabuf, each of at most `list_limit` pages and `size_limit` bytes,
/// that show `data`, both ways.
fn check_dmabufs(
    fx: &Fixture,
    add: &Add,
    data: &[u8],
    ranges: &[(u64, u64)],
    n: usize,
) -> TestResult {
    if !fx.dmabuf {
        return check_segments(fx, add, data, ranges, None);
    }
    let Memory::DmaBufs { dmabufs, segments } = &add.memory else {
        return Err(Fail::Not(format!("not several dma-bufs: {:?}", add.memory)));
    };
    check!(dmabufs.len() == n, "{} dma-bufs, not {n}", dmabufs.len());
    check!(segments.len() == n, "{} segments, not {n}", segments.len());
    for (fd, seg) in dmabufs.iter().zip(segments) {
        let exporter = fdinfo(fd, "exp_name")?;
        check!(exporter == "udmabuf", "exporter {exporter:?}");
        check!(seg.offset == 0, "a segment at {}", seg.offset);
        check!(fdinfo(fd, "size")? == seg.len.to_string());
        check!(seg.len <= fx.size_limit, "a dma-buf of {} bytes", seg.len);
    }
    let map = ctx(MappedBuffer::new(add, true), "mmap")?;
    let got = read_all(&map)?;
    check!(got == data, "{}", first_difference(&got, data));
    let new = pattern(0xaa, add.size);
    ctx(map.write(0, &new), "writing the mapping")?;
    let got = fx.read_guest(ranges)?;
    check!(got == new, "guest memory: {}", first_difference(&got, &new));
    Ok(())
}

fn beyond_list_limit_goes_as_two_dmabufs(fx: &mut Fixture) -> TestResult {
    if fx.list_limit > MAX_LIST_LIMIT {
        return Err(Fail::Skip(format!(
            "list_limit {} is too large",
            fx.list_limit
        )));
    }
    let mut client = fx.consumer(&["beyond-limit"])?;
    let n = fx.list_limit + 1;
    let ranges = fx.layout.scattered(n);
    let (add, data) = fx.share(&mut client, 11, "beyond-limit", &ranges)?;
    check_dmabufs(fx, &add, &data, &ranges, 2)
}

fn beyond_size_limit_goes_as_two_dmabufs(fx: &mut Fixture) -> TestResult {
    if fx.size_limit > MAX_SIZE_LIMIT {
        return Err(Fail::Skip(format!(
            "size_limit_mb {} is too large",
            fx.size_limit >> 20
        )));
    }
    let mut client = fx.consumer(&["beyond-size"])?;
    // One range, two pages more than udmabuf takes in one dma-buf.
    let ranges = [(Layout::R2_BASE, fx.size_limit + 2 * fx.layout.page)];
    let (add, data) = fx.share(&mut client, 14, "beyond-size", &ranges)?;
    check_dmabufs(fx, &add, &data, &ranges, 2)
}

fn unsealed_memory_goes_to_nobody(fx: &mut Fixture) -> TestResult {
    if let Some(udmabuf) = fx.server.hub().udmabuf() {
        // udmabuf itself refuses a memfd without F_SEAL_SHRINK.
        let segment = bufshare_consumer::Segment {
            file: 0,
            offset: 0,
            len: fx.layout.page,
        };
        match udmabuf.create(&[Arc::clone(&fx.unsealed)], &[segment]) {
            Err(e) => check!(
                e.raw_os_error() == Some(libc::EINVAL),
                "UDMABUF_CREATE_LIST of an unsealed memfd: {e}"
            ),
            Ok(_) => return Err(Fail::Not("udmabuf took an unsealed memfd".into())),
        }
    }
    // Neither as a dma-buf, nor as segments, even to a trusted consumer:
    // whoever has its descriptor could truncate guest RAM.
    let mut client = fx.consumer(&["unsealed"])?;
    let ranges = [(fx.layout.r3_base + fx.layout.page, 2 * fx.layout.page)];
    let id = if fx.trusted { 22 } else { 12 };
    fx.not_given(&mut client, id, "unsealed", &ranges)
}

fn device_reset_sends_reset(fx: &mut Fixture) -> TestResult {
    let mut client = fx.consumer(&["reset"])?;
    let ranges = fx.layout.buffer();
    let (add, _) = fx.share(&mut client, 13, "reset", &ranges)?;
    fx.dmabuf_of(&add)?;
    fx.device.reset();
    fx.registered.clear();
    match next_event(&mut client)? {
        Event::Reset(reset) => {
            check!(reset.guest == GUEST && reset.reason == ResetReason::DeviceReset)
        }
        other => return Err(Fail::Not(format!("not a RESET: {other:?}"))),
    }
    check!(fx.device.num_buffers() == 0);
    Ok(())
}

fn tests() -> Vec<Test> {
    use Who::{Plain, Trusted};
    vec![
        ("udmabuf_opens", Plain, udmabuf_opens),
        ("welcome_says_dmabuf", Plain, welcome_says_dmabuf),
        ("add_carries_one_dmabuf", Plain, add_carries_one_dmabuf),
        ("dmabuf_shows_guest_bytes", Plain, dmabuf_shows_guest_bytes),
        (
            "guest_writes_show_through_dmabuf",
            Plain,
            guest_writes_show_through_dmabuf,
        ),
        (
            "dmabuf_writes_show_in_guest",
            Plain,
            dmabuf_writes_show_in_guest,
        ),
        (
            "consumers_share_one_dmabuf",
            Plain,
            consumers_share_one_dmabuf,
        ),
        (
            "update_and_remove_reach_consumers",
            Plain,
            update_and_remove_reach_consumers,
        ),
        (
            "unaligned_buffer_is_not_given",
            Plain,
            unaligned_buffer_is_not_given,
        ),
        (
            "unaligned_buffer_goes_as_segments_if_trusted",
            Trusted,
            unaligned_buffer_goes_as_segments_if_trusted,
        ),
        (
            "list_limit_pieces_go_as_one_dmabuf",
            Plain,
            list_limit_pieces_go_as_one_dmabuf,
        ),
        (
            "beyond_list_limit_goes_as_two_dmabufs",
            Plain,
            beyond_list_limit_goes_as_two_dmabufs,
        ),
        (
            "beyond_size_limit_goes_as_two_dmabufs",
            Plain,
            beyond_size_limit_goes_as_two_dmabufs,
        ),
        (
            "unsealed_memory_goes_to_nobody",
            Plain,
            unsealed_memory_goes_to_nobody,
        ),
        (
            "unsealed_memory_goes_to_nobody_trusted",
            Trusted,
            unsealed_memory_goes_to_nobody,
        ),
        ("device_reset_sends_reset", Plain, device_reset_sends_reset),
    ]
}

/// The two fixtures: consumers of `plain` are trusted with nothing, those
/// of `trusted` with all of the guest's RAM. Without udmabuf, `plain` is
/// `None`: its consumers would get nothing at all, and the tests run with
/// `trusted`, which gets segments.
struct Fixtures {
    plain: Option<Fixture>,
    trusted: Fixture,
}

impl Fixtures {
    fn new(udmabuf: Option<&Path>) -> Result<Self, String> {
        let trusted = Fixture::new(udmabuf, true)?;
        let plain = if trusted.dmabuf {
            Some(Fixture::new(udmabuf, false)?)
        } else {
            None
        };
        Ok(Self { plain, trusted })
    }

    fn get(&mut self, who: Who) -> &mut Fixture {
        match (who, &mut self.plain) {
            (Who::Plain, Some(plain)) => plain,
            _ => &mut self.trusted,
        }
    }
}

/// What became of the tests.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    pass: usize,
    fail: usize,
    skip: usize,
}

/// Prints the TAP lines of one test.
fn report(out: &mut impl Write, totals: &mut Totals, n: usize, name: &str, result: TestResult) {
    let _ = match result {
        Ok(()) => {
            totals.pass += 1;
            writeln!(out, "ok {n} - {name}")
        }
        Err(Fail::Skip(why)) => {
            totals.skip += 1;
            writeln!(out, "ok {n} - {name} # SKIP {why}")
        }
        Err(Fail::Not(why)) => {
            totals.fail += 1;
            writeln!(out, "# {name}: {why}").and_then(|()| writeln!(out, "not ok {n} - {name}"))
        }
    };
}

/// Runs `tests` against `fixture` (or reports each as `fixture` says),
/// printing TAP to `out`.
fn run(out: &mut impl Write, tests: &[Test], fixture: Result<Fixtures, Fail>) -> Totals {
    let mut totals = Totals::default();
    let _ = writeln!(out, "TAP version 13").and_then(|()| writeln!(out, "1..{}", tests.len()));
    let mut fx = match fixture {
        Ok(fx) => fx,
        Err(why) => {
            let why = match why {
                Fail::Skip(why) => Fail::Skip(why),
                Fail::Not(why) => {
                    let _ = writeln!(out, "# setting up: {why}");
                    Fail::Not(String::from("no fixture"))
                }
            };
            for (i, (name, _, _)) in tests.iter().enumerate() {
                let result = match &why {
                    Fail::Skip(why) => Err(Fail::Skip(why.clone())),
                    Fail::Not(why) => Err(Fail::Not(why.clone())),
                };
                report(out, &mut totals, i + 1, name, result);
            }
            return totals;
        }
    };
    let broken = fx.trusted.want_dmabuf && !fx.trusted.dmabuf;
    for (i, (name, who, test)) in tests.iter().enumerate() {
        let fx = fx.get(*who);
        let result = if broken && i > 0 {
            Err(Fail::Skip(format!(
                "udmabuf does not work here (see {})",
                tests[0].0
            )))
        } else {
            // A panic fails the test, not the run.
            panic::catch_unwind(AssertUnwindSafe(|| test(fx)))
                .unwrap_or_else(|_| Err(Fail::Not("panicked".into())))
        };
        fx.cleanup();
        for note in std::mem::take(&mut fx.notes) {
            let _ = writeln!(out, "# {note}");
        }
        report(out, &mut totals, i + 1, name, result);
        let _ = out.flush();
    }
    totals
}

fn main() -> ExitCode {
    // The backend's logs, as TAP comments.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stdout)
        .format(|buf, record| writeln!(buf, "# {}: {}", record.level(), record.args()))
        .try_init();
    let device = Path::new(Udmabuf::DEVICE);
    let fixture = if device.exists() {
        Fixtures::new(Some(device)).map_err(Fail::Not)
    } else {
        Err(Fail::Skip(format!("{} is absent", device.display())))
    };
    let tests = tests();
    let mut stdout = io::stdout();
    let totals = run(&mut stdout, &tests, fixture);
    println!(
        "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:0",
        totals.pass, totals.fail, totals.skip
    );
    if totals.fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without udmabuf (this host has none), the tests that are not about
    /// dma-bufs run, and pass: the fixture, the consumers, the bytes both
    /// ways, the segments.
    #[test]
    fn with_segments_the_tests_pass() {
        let mut out = Vec::new();
        let totals = run(&mut out, &tests(), Fixtures::new(None).map_err(Fail::Not));
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            totals,
            Totals {
                pass: tests().len() - 1,
                fail: 0,
                skip: 1
            },
            "{out}"
        );
        assert!(out.starts_with("TAP version 13\n1..16\n"), "{out}");
        assert!(
            out.contains("ok 1 - udmabuf_opens # SKIP no udmabuf device asked for\n"),
            "{out}"
        );
        assert!(
            out.contains("\nok 16 - device_reset_sends_reset\n"),
            "{out}"
        );
    }

    #[test]
    fn without_udmabuf_every_test_is_skipped() {
        let mut out = Vec::new();
        let totals = run(
            &mut out,
            &tests(),
            Err(Fail::Skip("/dev/udmabuf is absent".into())),
        );
        assert_eq!(
            totals,
            Totals {
                pass: 0,
                fail: 0,
                skip: 16
            }
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("\nok 2 - welcome_says_dmabuf # SKIP /dev/udmabuf is absent\n"));
    }

    #[test]
    fn a_udmabuf_that_does_not_work_fails() {
        let file = std::env::temp_dir().join(format!("not-udmabuf.{}", std::process::id()));
        fs::write(&file, b"").unwrap();
        let mut out = Vec::new();
        let totals = run(
            &mut out,
            &tests(),
            Fixtures::new(Some(&file)).map_err(Fail::Not),
        );
        fs::remove_file(&file).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            totals,
            Totals {
                pass: 0,
                fail: 1,
                skip: 15
            },
            "{out}"
        );
        assert!(out.contains("\nnot ok 1 - udmabuf_opens\n"), "{out}");
    }

    #[test]
    fn patterns_differ() {
        let page = 4096;
        let a = pattern(1, 3 * page);
        assert_ne!(a[..page as usize], a[page as usize..2 * page as usize]);
        assert_ne!(pattern(1, 64), pattern(2, 64));
    }
}
