// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The daemon over a real vhost-user socket, driven by the `vhost` crate's
//! frontend in the role QEMU plays: negotiation, configuration space, shared
//! guest memory, the command queue, queue restart, reconnection and
//! shutdown. The last tests run the program itself and stop it with signals.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::os::unix::fs::PermissionsExt;

use bufshare_consumer::{
    Client, Error as ConsumerError, ErrorCode, Event, MappedBuffer, MemoryForm, ResetReason,
};
use bufshare_uapi::{unregister_bytes, RegisterCommand};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_user_bufshare::consumer::access::{RamAccess, TrustRule};
use vhost_user_bufshare::consumer::ConsumerConfig;
use vhost_user_bufshare::daemon::{serve, Config, GuestConfig, Shutdown};
use vhost_user_bufshare::device::Limits;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const TIMEOUT: Duration = Duration::from_secs(10);
const MEM_SIZE: usize = 0x10_0000;
const QSIZE: u16 = 256;
const BUF: u64 = 0x4_0000;
/// Where the driver puts the rings.
const DESC_TABLE: u64 = 0;
const AVAIL_RING: u64 = 0x1000;
const USED_RING: u64 = 0x2000;
const INFO_SIZE: u32 = 80;
/// A buffer's two ranges, out of order in guest memory: 0x80 bytes at
/// 0x8_1000, then 0x80 at 0x8_0000.
const TWO_RANGES: [(u64, u64); 2] = [(0x8_1000, 0x80), (0x8_0000, 0x80)];

fn limits() -> Limits {
    Limits {
        max_ranges: 11,
        max_props_size: 22,
        max_buffers: 33,
        max_buffer_size: 44,
    }
}

fn config(path: &Path, once: bool) -> Config {
    Config {
        limits: limits(),
        once,
        ..Config::new(vec![GuestConfig::new("vm", path)])
    }
}

const GET_INFO: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];

/// Runs the daemon in a thread.
fn spawn_daemon(config: Config, shutdown: Arc<Shutdown>) -> JoinHandle<()> {
    thread::spawn(move || serve(&config, &shutdown).unwrap())
}

fn join_within(handle: JoinHandle<()>, what: &str) {
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(start.elapsed() < TIMEOUT, "{what} did not end");
        thread::sleep(Duration::from_millis(5));
    }
    handle.join().unwrap();
}

/// Connects to the daemon, waiting for its socket to appear.
fn connect(path: &Path) -> Frontend {
    let start = Instant::now();
    loop {
        match Frontend::connect(path, 1) {
            Ok(frontend) => return frontend,
            Err(e) => assert!(start.elapsed() < TIMEOUT, "cannot connect: {e}"),
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Feature bit VIRTIO_BUFSHARE_F_GENERATION.
const F_GENERATION: u64 = 1 << 1;

/// Negotiates like QEMU does, for a driver that acks every feature;
/// returns the features offered.
fn negotiate(frontend: &mut Frontend) -> (u64, VhostUserProtocolFeatures) {
    // The driver here sets up the command queue only: it does not ack
    // VIRTIO_BUFSHARE_F_EVENTS, as the driver of today.
    negotiate_acking(frontend, !(1 << 2))
}

/// Negotiates like QEMU does, for a driver that acks the features in
/// `mask` it is offered; returns the features offered.
fn negotiate_acking(frontend: &mut Frontend, mask: u64) -> (u64, VhostUserProtocolFeatures) {
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    frontend.set_features(features & mask).unwrap();
    let protocol = frontend.get_protocol_features().unwrap();
    frontend.set_protocol_features(protocol).unwrap();
    (features, protocol)
}

fn read_config(frontend: &mut Frontend) -> Vec<u8> {
    let (_, payload) = frontend
        .get_config(0, 24, VhostUserConfigFlags::empty(), &[0; 24])
        .unwrap();
    payload
}

/// The guest: memory shared with the daemon through a file, and the rings.
struct Guest {
    _file: File,
    mem: GuestMemoryMmap,
    kick: EventFd,
    call: EventFd,
    used_seen: u16,
    next_desc: u16,
    /// The generation of the answers: learned from the first one of 8
    /// bytes or more, then checked against every other one.
    generation: Option<u32>,
}

impl Guest {
    fn new() -> Self {
        // A memfd sealed as QEMU's memory-backend-memfd seals guest RAM:
        // consumers get nothing else.
        let file = File::from(
            memfd_create(
                "guest-ram",
                MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
            )
            .unwrap(),
        );
        file.set_len(MEM_SIZE as u64).unwrap();
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .unwrap();
        let mem = GuestMemoryMmap::from_ranges_with_files(&[(
            GuestAddress(0),
            MEM_SIZE,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        Self {
            _file: file,
            mem,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            used_seen: 0,
            next_desc: 0,
            generation: None,
        }
    }

    /// The generation of the answers so far.
    fn generation(&self) -> u32 {
        self.generation.expect("no answer yet")
    }

    /// A bare answer with `status`, with the generation of the answers.
    fn hdr(&self, status: u32) -> Vec<u8> {
        [status.to_le_bytes(), self.generation().to_le_bytes()].concat()
    }

    /// Forgets the generation: the next answer may have another one, which
    /// is returned.
    fn new_generation(&mut self) -> u32 {
        let old = self.generation.take();
        self.get_info();
        assert_ne!(self.generation, old, "the generation did not change");
        self.generation()
    }

    fn host_addr(&self, gpa: u64) -> u64 {
        self.mem.get_host_address(GuestAddress(gpa)).unwrap() as u64
    }

    fn write_u16(&self, addr: u64, value: u16) {
        self.mem
            .write_obj(value.to_le(), GuestAddress(addr))
            .unwrap();
    }

    fn read_u16(&self, addr: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }

    /// Writes the bytes 0 to 255 into [`TWO_RANGES`], one range after the
    /// other; returns them.
    fn write_pattern(&self) -> Vec<u8> {
        let pattern: Vec<u8> = (0..=255).collect();
        let mut rest = &pattern[..];
        for (addr, len) in TWO_RANGES {
            let (piece, more) = rest.split_at(len as usize);
            self.mem.write_slice(piece, GuestAddress(addr)).unwrap();
            rest = more;
        }
        pattern
    }

    /// Zeroes the rings, as a freshly reset driver would have them.
    fn clear_rings(&mut self) {
        self.mem
            .write_slice(&vec![0; BUF as usize], GuestAddress(0))
            .unwrap();
        self.used_seen = 0;
        self.next_desc = 0;
    }

    /// Gives the daemon the memory and starts the command queue.
    fn start_queue(&self, frontend: &mut Frontend, set_mem_table: bool) {
        if set_mem_table {
            let region = self.mem.iter().next().unwrap();
            let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
            frontend.set_mem_table(&[info]).unwrap();
        }
        frontend.set_vring_num(0, QSIZE).unwrap();
        frontend
            .set_vring_addr(
                0,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: self.host_addr(DESC_TABLE),
                    used_ring_addr: self.host_addr(USED_RING),
                    avail_ring_addr: self.host_addr(AVAIL_RING),
                    log_addr: None,
                },
            )
            .unwrap();
        frontend.set_vring_base(0, 0).unwrap();
        frontend.set_vring_call(0, &self.call).unwrap();
        frontend.set_vring_kick(0, &self.kick).unwrap();
        frontend.set_vring_enable(0, true).unwrap();
    }

    /// Sends one command and waits for its answer; returns the used length
    /// and the answer's bytes.
    fn command(&mut self, command: &[u8], room: u32) -> (u32, Vec<u8>) {
        let first = self.offer(command, room);
        self.wait_answer(first)
    }

    /// Offers a chain with `command` and `room` bytes for the answer, and
    /// kicks; returns its head.
    fn offer(&mut self, command: &[u8], room: u32) -> u16 {
        let answer_addr = BUF + 0x1000;
        self.mem.write_slice(command, GuestAddress(BUF)).unwrap();
        let first = self.next_desc;
        let descs = [
            SplitDescriptor::new(
                BUF,
                command.len() as u32,
                VRING_DESC_F_NEXT as u16,
                first + 1,
            ),
            SplitDescriptor::new(answer_addr, room, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, desc) in descs.into_iter().enumerate() {
            let addr = DESC_TABLE + 16 * (u64::from(first) + i as u64);
            self.mem
                .write_obj(RawDescriptor::from(desc), GuestAddress(addr))
                .unwrap();
        }
        self.next_desc += 2;
        // EVENT_IDX is negotiated: ask to be notified for this very chain
        // (used_event, after the available ring).
        self.write_u16(AVAIL_RING + 4 + 2 * u64::from(QSIZE), self.used_seen);
        // Offer the chain: ring entry, then index.
        let avail_idx = self.read_u16(AVAIL_RING + 2);
        let slot = u64::from(avail_idx % QSIZE);
        self.write_u16(AVAIL_RING + 4 + 2 * slot, first);
        self.write_u16(AVAIL_RING + 2, avail_idx.wrapping_add(1));
        self.kick.write(1).unwrap();
        first
    }

    /// Waits for the next used element, which must be chain `first`;
    /// returns its used length and the answer's bytes.
    fn wait_answer(&mut self, first: u16) -> (u32, Vec<u8>) {
        let answer_addr = BUF + 0x1000;
        let start = Instant::now();
        while self.call.read().is_err() {
            assert!(start.elapsed() < TIMEOUT, "no answer from the daemon");
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(self.read_u16(USED_RING + 2), self.used_seen + 1);
        let elem_addr = USED_RING + 4 + 8 * u64::from(self.used_seen % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(elem_addr)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(elem_addr + 4)).unwrap();
        self.used_seen += 1;
        assert_eq!(u32::from_le(id), u32::from(first));
        let len = u32::from_le(len);
        let mut answer = vec![0; len as usize];
        self.mem
            .read_slice(&mut answer, GuestAddress(answer_addr))
            .unwrap();
        if let Some(field) = answer.get(4..8) {
            let generation = u32::from_le_bytes(field.try_into().unwrap());
            let known = *self.generation.get_or_insert(generation);
            assert_eq!(generation, known, "the generation changed");
        }
        (len, answer)
    }

    /// Waits until the daemon has taken every chain offered from the
    /// available ring: with EVENT_IDX, it then asks to be kicked for the
    /// next one (avail_event, after the used ring).
    fn wait_taken(&self) {
        let avail_idx = self.read_u16(AVAIL_RING + 2);
        let start = Instant::now();
        while self.read_u16(USED_RING + 4 + 8 * u64::from(QSIZE)) != avail_idx {
            assert!(
                start.elapsed() < TIMEOUT,
                "the daemon does not take the chain"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the driver was notified.
    fn notified(&self) -> bool {
        self.call.read().is_ok()
    }

    fn used_idx(&self) -> u16 {
        self.read_u16(USED_RING + 2)
    }

    fn get_info(&mut self) -> Vec<u8> {
        let (len, answer) = self.command(&[1, 0, 0, 0, 0, 0, 0, 0], INFO_SIZE);
        assert_eq!(len, INFO_SIZE);
        answer
    }
}

fn num_commands(info: &[u8]) -> u64 {
    u64::from_le_bytes(info[40..48].try_into().unwrap())
}

fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("bufshare.sock")
}

#[test]
fn serves_a_frontend_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    // A stale socket file is replaced.
    std::fs::write(&path, b"stale").unwrap();
    let daemon = spawn_daemon(config(&path, true), Shutdown::new().unwrap());

    let mut frontend = connect(&path);
    let (features, protocol) = negotiate(&mut frontend);
    assert_eq!(
        features,
        (1 << 32) | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 0) | (1 << 1) | (1 << 2)
    );
    assert!(protocol.contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ));
    assert_eq!(frontend.get_queue_num().unwrap(), 2);
    assert_eq!(
        read_config(&mut frontend),
        [11, 0, 0, 0, 22, 0, 0, 0, 33, 0, 0, 0, 0, 0, 0, 0, 44, 0, 0, 0, 0, 0, 0, 0]
    );

    let mut guest = Guest::new();
    guest.start_queue(&mut frontend, true);
    let info = guest.get_info();
    // S_OK, the generation (VIRTIO_BUFSHARE_F_GENERATION acked), version 1.
    assert_ne!(guest.generation(), 0);
    assert_eq!(&info[..8], guest.hdr(0));
    assert_eq!(&info[8..12], &[1, 0, 0, 0]);
    assert_eq!(&info[12..24], &[11, 0, 0, 0, 22, 0, 0, 0, 33, 0, 0, 0]);
    assert_eq!(num_commands(&info), 1);
    assert!(info[48..].starts_with(b"vhost-user-bufshare "));

    // An unknown command, a too small answer buffer.
    assert_eq!(
        guest.command(&[9, 0, 0, 0, 0, 0, 0, 0], 80),
        (8, guest.hdr(1))
    );
    assert_eq!(guest.command(&[1, 0, 0, 0, 0, 0, 0, 0], 4), (0, vec![]));
    assert_eq!(num_commands(&guest.get_info()), 3);

    // The driver resets the device: QEMU stops the queue, then starts it
    // again from scratch. The generation stays (the guest checks it).
    frontend.get_vring_base(0).unwrap();
    guest.clear_rings();
    guest.start_queue(&mut frontend, true);
    assert_eq!(num_commands(&guest.get_info()), 1);
    assert_eq!(num_commands(&guest.get_info()), 2);

    // RESET_DEVICE, for frontends that send it.
    frontend.reset_device().unwrap();
    frontend.get_vring_base(0).unwrap();
    frontend.set_features(features).unwrap();
    guest.clear_rings();
    guest.start_queue(&mut frontend, false);
    assert_eq!(num_commands(&guest.get_info()), 1);

    drop(frontend);
    join_within(daemon, "the daemon, with --once,");
    assert!(!path.exists(), "the socket file is left behind");
}

#[test]
fn fault_injection() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let fault_file = dir.path().join("fault");
    let daemon = spawn_daemon(
        Config {
            fault_file: Some(fault_file.clone()),
            ..config(&path, true)
        },
        Shutdown::new().unwrap(),
    );
    let set = |word: &str| std::fs::write(&fault_file, word).unwrap();

    let mut frontend = connect(&path);
    negotiate(&mut frontend);
    let mut guest = Guest::new();
    guest.start_queue(&mut frontend, true);
    // No file yet.
    assert_eq!(num_commands(&guest.get_info()), 1);

    set("bad-version\n");
    let (len, info) = guest.command(&GET_INFO, INFO_SIZE);
    assert_eq!(len, INFO_SIZE);
    assert_eq!(info[..8], guest.hdr(0));
    assert_eq!(info[8..12], [99, 0, 0, 0]);
    set("overlong");
    assert_eq!(guest.command(&GET_INFO, INFO_SIZE).0, INFO_SIZE + 4096);
    set("truncated");
    assert_eq!(guest.command(&GET_INFO, INFO_SIZE), (8, guest.hdr(0)));
    set("none");
    assert_eq!(num_commands(&guest.get_info()), 5);

    // The device loses its buffers (it has none) once per token: a new
    // generation, and the command answered normally, counted.
    let first = guest.generation();
    set("lose-buffers t1\n");
    let second = guest.new_generation();
    assert_ne!(second, first);
    assert_eq!(num_commands(&guest.get_info()), 7);
    set("lose-buffers t2");
    assert_ne!(guest.new_generation(), second);
    set("none");
    assert_eq!(num_commands(&guest.get_info()), 9);
    let commands = 9;

    // A dropped chain is neither returned nor notified...
    set("drop");
    guest.offer(&GET_INFO, INFO_SIZE);
    guest.wait_taken();
    thread::sleep(Duration::from_millis(50));
    assert!(!guest.notified());
    assert_eq!(u64::from(guest.used_idx()), commands);
    // ... and the next ones are served.
    set("none\n");
    assert_eq!(num_commands(&guest.get_info()), commands + 1);

    // drop-next: the next chain only, once per TOKEN; the file still
    // holds it when the next ones are served.
    set("drop-next n1");
    guest.offer(&GET_INFO, INFO_SIZE);
    guest.wait_taken();
    thread::sleep(Duration::from_millis(50));
    assert!(!guest.notified());
    assert_eq!(u64::from(guest.used_idx()), commands + 1);
    assert_eq!(num_commands(&guest.get_info()), commands + 2);
    assert_eq!(num_commands(&guest.get_info()), commands + 3);
    let commands = commands + 2;

    // Dropped again; the driver gives up and resets the device.
    set("drop");
    guest.offer(&GET_INFO, INFO_SIZE);
    guest.wait_taken();
    thread::sleep(Duration::from_millis(50));
    assert!(!guest.notified());
    assert_eq!(u64::from(guest.used_idx()), commands + 1);
    set("none");
    frontend.get_vring_base(0).unwrap();
    guest.clear_rings();
    guest.start_queue(&mut frontend, true);
    assert_eq!(num_commands(&guest.get_info()), 1);
    assert_eq!(num_commands(&guest.get_info()), 2);

    drop(frontend);
    join_within(daemon, "the daemon, with --once,");
}

/// The lines of the events file of the fault file `fault_file`, as
/// (word, CLOCK_REALTIME ns).
fn reset_events(fault_file: &Path) -> Vec<(String, u128)> {
    let mut path = fault_file.as_os_str().to_owned();
    path.push(".events");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (word, ns) = line.split_once(' ').expect("WORD NS");
            (word.to_owned(), ns.parse().expect("NS"))
        })
        .collect()
}

fn realtime_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn slow_reset_and_the_events_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let fault_file = dir.path().join("fault");
    let daemon = spawn_daemon(
        Config {
            fault_file: Some(fault_file.clone()),
            ..config(&path, true)
        },
        Shutdown::new().unwrap(),
    );
    let mut frontend = connect(&path);
    negotiate(&mut frontend);
    let mut guest = Guest::new();
    guest.start_queue(&mut frontend, true);
    assert_eq!(num_commands(&guest.get_info()), 1);
    assert_eq!(reset_events(&fault_file), []);

    // The driver resets the device: QEMU stops the queue. Written down,
    // at once.
    let before = realtime_ns();
    frontend.get_vring_base(0).unwrap();
    let events = reset_events(&fault_file);
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].0.as_str(), events[1].0.as_str()),
        ("reset-start", "reset-done")
    );
    assert!(before <= events[0].1 && events[0].1 <= events[1].1);
    assert!(events[1].1 <= realtime_ns());
    guest.clear_rings();
    guest.start_queue(&mut frontend, true);
    assert_eq!(num_commands(&guest.get_info()), 1);

    // slow-reset, written with no command after it: the reset reads it,
    // and GET_VRING_BASE is answered 3 seconds later.
    std::fs::write(&fault_file, "slow-reset\n").unwrap();
    let start = Instant::now();
    frontend.get_vring_base(0).unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(3), "{took:?}");
    let events = reset_events(&fault_file);
    assert_eq!(events.len(), 4);
    assert_eq!(
        (events[2].0.as_str(), events[3].0.as_str()),
        ("reset-start", "reset-done")
    );
    let gap = events[3].1 - events[2].1;
    assert!(gap >= 3_000_000_000, "{gap} ns");

    // RESET_DEVICE too.
    let start = Instant::now();
    frontend.reset_device().unwrap();
    // Its reply waits for the reset: the next message is answered after.
    frontend.get_features().unwrap();
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert_eq!(reset_events(&fault_file).len(), 6);

    std::fs::write(&fault_file, "none").unwrap();
    drop(frontend);
    join_within(daemon, "the daemon, with --once,");
}

#[test]
fn listens_again_after_a_disconnection() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let shutdown = Shutdown::new().unwrap();
    let daemon = spawn_daemon(config(&path, false), Arc::clone(&shutdown));

    let mut generations = Vec::new();
    for round in 0..4 {
        let mut frontend = connect(&path);
        // The last driver does not ack VIRTIO_BUFSHARE_F_GENERATION.
        negotiate_acking(&mut frontend, if round == 3 { !F_GENERATION } else { !0 });
        assert_eq!(read_config(&mut frontend)[..4], [11, 0, 0, 0]);
        let mut guest = Guest::new();
        guest.start_queue(&mut frontend, true);
        // A new connection is a new device, with a generation of its own.
        assert_eq!(num_commands(&guest.get_info()), 1);
        assert_eq!(num_commands(&guest.get_info()), 2);
        if round == 3 {
            assert_eq!(guest.generation(), 0);
        } else {
            assert_ne!(guest.generation(), 0);
            assert!(
                !generations.contains(&guest.generation()),
                "{generations:x?}"
            );
            generations.push(guest.generation());
        }
        if round == 1 {
            // Someone removes the socket file: it is made again.
            std::fs::remove_file(&path).unwrap();
        }
    }

    // Shut down in the middle of a connection.
    let mut frontend = connect(&path);
    negotiate(&mut frontend);
    shutdown.request();
    join_within(daemon, "the daemon");
    assert!(!path.exists());
    assert!(frontend.get_features().is_err());
}

#[test]
fn shutdown_while_waiting_for_a_frontend() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let shutdown = Shutdown::new().unwrap();
    let daemon = spawn_daemon(config(&path, false), Arc::clone(&shutdown));
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(5));
    }
    shutdown.request();
    join_within(daemon, "the daemon");
    assert!(!path.exists());
}

#[test]
fn cannot_listen_is_an_error() {
    let path = PathBuf::from("/nonexistent-dir/bufshare.sock");
    let shutdown = Shutdown::new().unwrap();
    assert!(serve(&config(&path, true), &shutdown).is_err());
}

/// The program, run with `args`, with a socket in `dir`.
fn spawn_program(dir: &tempfile::TempDir, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vhost-user-bufshare"))
        .arg("--socket-path")
        .arg(socket_path(dir))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_within(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > TIMEOUT {
            child.kill().unwrap();
            panic!("the program did not exit");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn program_exits_cleanly_on_sigterm_and_sigint() {
    for sig in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_program(&dir, &[]);
        let path = socket_path(&dir);

        // While connected...
        let mut frontend = connect(&path);
        negotiate(&mut frontend);
        assert_eq!(read_config(&mut frontend).len(), 24);
        signal(&child, sig);
        let status = wait_within(&mut child);
        assert!(status.success(), "SIG{sig} while connected: {status}");
        assert!(!path.exists());

        // ... and while waiting for a frontend.
        let mut child = spawn_program(&dir, &[]);
        let start = Instant::now();
        while !path.exists() {
            assert!(start.elapsed() < TIMEOUT);
            thread::sleep(Duration::from_millis(5));
        }
        signal(&child, sig);
        let status = wait_within(&mut child);
        assert!(status.success(), "SIG{sig} while waiting: {status}");
        assert!(!path.exists());
    }
}

#[test]
fn program_with_once_exits_after_the_first_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_program(&dir, &["--once", "--max-ranges", "5"]);
    let mut frontend = connect(&socket_path(&dir));
    negotiate(&mut frontend);
    assert_eq!(read_config(&mut frontend)[..4], [5, 0, 0, 0]);
    drop(frontend);
    let status = wait_within(&mut child);
    assert!(status.success(), "{status}");
}

/// A REGISTER of buffer `id`, complete, made of `ranges`, with properties.
fn register(id: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
    RegisterCommand::complete(id, "e2e-tests", ranges)
        .props(b"width=8\0height=4\0")
        .to_bytes()
}

/// Runs `bufshare-inspect --socket SOCKET args...` with `stdin`.
fn inspect(socket: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_bufshare-inspect"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn inspect_socket_sees_guest_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let inspect_path = dir.path().join("inspect.sock");
    let daemon = spawn_daemon(
        Config {
            inspect_socket: Some(inspect_path.clone()),
            limits: Limits::default(),
            ..config(&path, true)
        },
        Shutdown::new().unwrap(),
    );
    let mut frontend = connect(&path);
    let (features, _) = negotiate(&mut frontend);
    assert_ne!(features & 1, 0, "VIRTIO_BUFSHARE_F_BUFFERS");
    let mut guest = Guest::new();
    guest.start_queue(&mut frontend, true);

    // Buffer 5: 0x80 bytes at 0x8_1000 then 0x80 at 0x8_0000.
    let (len, answer) = guest.command(&register(5, &TWO_RANGES), 8);
    assert_eq!((len, answer), (8, guest.hdr(0)));
    let info = guest.get_info();
    assert_eq!(u64::from_le_bytes(info[32..40].try_into().unwrap()), 1);

    let out = inspect(&inspect_path, &["list"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        b"id=5 application=e2e-tests size=256 ranges=2 complete=1 seqno=0\n\
          \twidth=8\n\theight=4\n"
    );

    // The guest writes, the host reads: no command in between.
    let pattern = guest.write_pattern();
    let out = inspect(&inspect_path, &["read", "5", "0", "256"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, pattern);
    let out = inspect(&inspect_path, &["read", "5", "0x7e", "4"], b"");
    assert_eq!(out.stdout, [0x7e, 0x7f, 0x80, 0x81]);

    // The host writes, the guest reads.
    let out = inspect(&inspect_path, &["write", "5", "126"], b"WXYZ");
    assert!(out.status.success(), "{out:?}");
    let mut got = [0; 2];
    guest
        .mem
        .read_slice(&mut got, GuestAddress(0x8_107e))
        .unwrap();
    assert_eq!(&got, b"WX");
    guest
        .mem
        .read_slice(&mut got, GuestAddress(0x8_0000))
        .unwrap();
    assert_eq!(&got, b"YZ");

    // Errors: stderr and exit status 1.
    for (args, stdin) in [
        (&["read", "6", "0", "1"][..], &b""[..]),
        (&["read", "5", "255", "2"], b""),
        (&["write", "5", "255"], b"ab"),
        (&["write", "9", "0"], b"a"),
    ] {
        let out = inspect(&inspect_path, args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }

    // A device reset drops the buffers.
    frontend.get_vring_base(0).unwrap();
    let out = inspect(&inspect_path, &["list"], b"");
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    guest.clear_rings();
    guest.start_queue(&mut frontend, true);
    guest.command(&register(5, &[(0x8_1000, 0x80)]), 8);
    assert!(!inspect(&inspect_path, &["list"], b"").stdout.is_empty());

    // So does the frontend going away; then the daemon (--once) ends and
    // removes the inspect socket.
    drop(frontend);
    join_within(daemon, "the daemon, with --once,");
    assert!(!inspect_path.exists());
    let out = inspect(&inspect_path, &["list"], b"");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn program_serves_the_inspect_socket() {
    let dir = tempfile::tempdir().unwrap();
    let inspect_path = dir.path().join("inspect.sock");
    let mut child = spawn_program(&dir, &["--inspect-socket", inspect_path.to_str().unwrap()]);
    let start = Instant::now();
    while !inspect_path.exists() {
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(5));
    }
    let out = inspect(&inspect_path, &["list"], b"");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    signal(&child, "TERM");
    assert!(wait_within(&mut child).success());
    assert!(!inspect_path.exists());
}

/// A consumer of the daemon's consumer socket at `path`, once it is there.
fn consumer(path: &Path, apps: &[&str]) -> Client {
    let start = Instant::now();
    let mut client = loop {
        match Client::connect(path) {
            Ok(client) => break client,
            Err(e) => assert!(start.elapsed() < TIMEOUT, "{e}"),
        }
        thread::sleep(Duration::from_millis(5));
    };
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.subscribe(apps).unwrap();
    client
}

/// A consumer socket without udmabuf (this host has none): buffers go as
/// segments, to consumers trusted with all of the guests' RAM, as this
/// process's uid is here.
fn consumer_config(path: &Path) -> ConsumerConfig {
    let mut config = ConsumerConfig {
        udmabuf: None,
        ..ConsumerConfig::new(path)
    };
    config.access.trust = vec![TrustRule::for_this_process(RamAccess::ReadWrite)];
    config
}

#[test]
fn consumers_get_the_guests_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let consumer_path = dir.path().join("consumer.sock");
    let shutdown = Shutdown::new().unwrap();
    let daemon = spawn_daemon(
        Config {
            consumer: Some(consumer_config(&consumer_path)),
            limits: Limits::default(),
            ..config(&path, false)
        },
        Arc::clone(&shutdown),
    );
    // Connected before the guest is: it will see it come and go.
    let mut client = consumer(&consumer_path, &["e2e-tests"]);
    // The reason of the next event, a RESET of guest "vm".
    let reset_reason = |client: &mut Client| {
        let reset = expect_reset(client);
        assert_eq!(reset.guest, "vm");
        reset.reason
    };

    let mut frontend = connect(&path);
    negotiate(&mut frontend);
    let mut guest = Guest::new();
    guest.start_queue(&mut frontend, true);
    let pattern = guest.write_pattern();
    let (_, answer) = guest.command(&register(5, &TWO_RANGES), 8);
    assert_eq!(answer, guest.hdr(0));

    // The buffer, its memory passed as the guest's memory file.
    let add = expect_add(&mut client);
    assert_eq!(
        (
            add.guest.as_str(),
            add.buffer_id,
            add.application.as_str(),
            add.size
        ),
        ("vm", 5, "e2e-tests", 256)
    );
    assert_eq!(add.properties.get_u64("width"), Some(8));
    assert_eq!(add.memory.form(), MemoryForm::Segments);
    let map = MappedBuffer::new(&add, true).unwrap();
    let mut got = vec![0; 256];
    map.read(0, &mut got).unwrap();
    assert_eq!(got, pattern);
    map.write(0x7f, b"AB").unwrap();
    let mut two = [0; 1];
    guest
        .mem
        .read_slice(&mut two, GuestAddress(0x8_0000))
        .unwrap();
    assert_eq!(&two, b"B");

    // The driver resets the device.
    frontend.get_vring_base(0).unwrap();
    assert_eq!(reset_reason(&mut client), ResetReason::DeviceReset);
    guest.clear_rings();
    guest.start_queue(&mut frontend, true);
    guest.command(&register(5, &[(0x8_0000, 0x100)]), 8);
    assert_eq!(expect_add(&mut client).size, 0x100);

    // QEMU goes away, and comes back: the device with it.
    drop(frontend);
    assert_eq!(reset_reason(&mut client), ResetReason::Disconnected);
    let mut frontend = connect(&path);
    negotiate(&mut frontend);
    let mut guest = Guest::new();
    guest.start_queue(&mut frontend, true);
    guest.command(&register(6, &[(0x8_0000, 0x10)]), 8);
    assert_eq!(expect_add(&mut client).buffer_id, 6);
    // A consumer connecting now gets what exists.
    let mut late = consumer(&consumer_path, &["*"]);
    assert_eq!(expect_add(&mut late).buffer_id, 6);

    // The daemon stops: consumers are told that the guest went, then
    // that the daemon did.
    shutdown.request();
    join_within(daemon, "the daemon");
    for client in [&mut client, &mut late] {
        assert_eq!(reset_reason(client), ResetReason::Disconnected);
        match client.next_event() {
            Err(ConsumerError::Ended(e)) => assert_eq!(e.code, ErrorCode::Shutdown),
            other => panic!("{other:?}"),
        }
    }
    assert!(!consumer_path.exists());
    drop(frontend);
}

#[test]
fn properties_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let consumer_path = dir.path().join("consumer.sock");
    // With consumers or without: the device would read commands of up to
    // 4 GiB.
    for consumer in [Some(consumer_config(&consumer_path)), None] {
        for max_props_size in [65537, u32::MAX] {
            let config = Config {
                consumer: consumer.clone(),
                limits: Limits {
                    max_props_size,
                    ..Limits::default()
                },
                ..config(&path, true)
            };
            let e = serve(&config, &Shutdown::new().unwrap()).unwrap_err();
            assert!(e.to_string().contains("--max-props-size"), "{e}");
            assert!(!consumer_path.exists());
            assert!(!path.exists());
        }
    }
}

#[test]
fn program_serves_the_consumer_socket() {
    let dir = tempfile::tempdir().unwrap();
    let consumer_path = dir.path().join("consumer.sock");
    let mut child = spawn_program(
        &dir,
        &[
            "--consumer-socket",
            consumer_path.to_str().unwrap(),
            "--guest-name",
            "desktop",
            "--trust-ram",
            &format!("{}=ro", nix::unistd::geteuid()),
        ],
    );
    let mut client = consumer(&consumer_path, &["*"]);
    assert_eq!(
        client.welcome().unwrap().version,
        bufshare_consumer::VERSION
    );
    let mode = std::fs::metadata(&consumer_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    signal(&child, "TERM");
    assert!(wait_within(&mut child).success());
    match client.next_event() {
        Err(ConsumerError::Ended(e)) => assert_eq!(e.code, ErrorCode::Shutdown),
        other => panic!("{other:?}"),
    }
    assert!(!consumer_path.exists());
}

fn expect_add(client: &mut Client) -> bufshare_consumer::Add {
    match client.next_event().unwrap() {
        Event::Add(add) => add,
        other => panic!("not an ADD: {other:?}"),
    }
}

fn expect_reset(client: &mut Client) -> bufshare_consumer::Reset {
    match client.next_event().unwrap() {
        Event::Reset(reset) => reset,
        other => panic!("not a RESET: {other:?}"),
    }
}

/// Waits until `path` exists.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < TIMEOUT, "no {}", path.display());
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn several_guests_in_one_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("vm0.sock"), dir.path().join("vm1.sock")];
    let consumer_path = dir.path().join("consumer.sock");
    let inspect_path = dir.path().join("inspect.sock");
    let shutdown = Shutdown::new().unwrap();
    let daemon = spawn_daemon(
        Config {
            limits: Limits::default(),
            consumer: Some(consumer_config(&consumer_path)),
            inspect_socket: Some(inspect_path.clone()),
            ..Config::new(vec![
                GuestConfig::new("vm0", &paths[0]),
                GuestConfig::new("vm1", &paths[1]),
            ])
        },
        Arc::clone(&shutdown),
    );
    let mut client = consumer(&consumer_path, &["e2e-tests"]);

    // Two frontends, one per socket, each with its own memory; both
    // register a buffer 5, with different bytes.
    let mut frontends = [connect(&paths[0]), connect(&paths[1])];
    let mut guests = [Guest::new(), Guest::new()];
    for (i, (frontend, guest)) in frontends.iter_mut().zip(&mut guests).enumerate() {
        negotiate(frontend);
        guest.start_queue(frontend, true);
        guest
            .mem
            .write_slice(&[i as u8 + 1; 0x100], GuestAddress(0x8_0000))
            .unwrap();
        let (_, answer) = guest.command(&register(5, &[(0x8_0000, 0x100)]), 8);
        assert_eq!(answer, guest.hdr(0));
    }
    // Each ADD says whose it is, and maps that guest's memory.
    let mut adds = [expect_add(&mut client), expect_add(&mut client)];
    adds.sort_by(|a, b| a.guest.cmp(&b.guest));
    for (i, add) in adds.iter().enumerate() {
        assert_eq!(add.guest, format!("vm{i}"));
        assert_eq!((add.buffer_id, add.size), (5, 0x100));
        let mut got = [0; 0x100];
        MappedBuffer::new(add, false)
            .unwrap()
            .read(0, &mut got)
            .unwrap();
        assert_eq!(got, [i as u8 + 1; 0x100]);
    }

    // The inspect socket sees both.
    let out = inspect(&inspect_path, &["list"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "guest=vm0 id=5 application=e2e-tests size=256 ranges=1 complete=1 seqno=0\n\
         \twidth=8\n\theight=4\n\
         guest=vm1 id=5 application=e2e-tests size=256 ranges=1 complete=1 seqno=0\n\
         \twidth=8\n\theight=4\n"
    );
    let out = inspect(
        &inspect_path,
        &["--guest", "vm1", "read", "5", "0", "2"],
        b"",
    );
    assert_eq!(out.stdout, [2, 2]);
    let out = inspect(&inspect_path, &["write", "--guest", "vm0", "5", "0"], b"AB");
    assert!(out.status.success(), "{out:?}");
    let mut got = [0; 2];
    guests[0]
        .mem
        .read_slice(&mut got, GuestAddress(0x8_0000))
        .unwrap();
    assert_eq!(&got, b"AB");
    let out = inspect(&inspect_path, &["read", "5", "0", "2"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name one"));
    let out = inspect(&inspect_path, &["guests"], b"");
    assert_eq!(
        out.stdout,
        b"guest=vm0 connected=1 buffers=1\nguest=vm1 connected=1 buffers=1\n"
    );

    // vm1's QEMU goes away: RESET for vm1 only.
    let [frontend0, frontend1] = frontends;
    drop(frontend1);
    let reset = expect_reset(&mut client);
    assert_eq!(
        (reset.guest.as_str(), reset.reason),
        ("vm1", ResetReason::Disconnected)
    );
    let out = inspect(&inspect_path, &["guests"], b"");
    assert_eq!(
        out.stdout,
        b"guest=vm0 connected=1 buffers=1\nguest=vm1 connected=0 buffers=0\n"
    );
    // vm0 goes on, its buffer still there.
    assert_eq!(num_commands(&guests[0].get_info()), 2);

    // vm1's QEMU comes back, on the same socket.
    let mut frontend1 = connect(&paths[1]);
    negotiate(&mut frontend1);
    guests[1] = Guest::new();
    guests[1].start_queue(&mut frontend1, true);
    assert_eq!(num_commands(&guests[1].get_info()), 1);
    guests[1].command(&register(7, &[(0x8_0000, 0x10)]), 8);
    let add = expect_add(&mut client);
    assert_eq!((add.guest.as_str(), add.buffer_id), ("vm1", 7));
    // vm0 was never reset: its buffer 5 is still there to unregister. The
    // answer waits for the consumer, which says CLOSED as it reads the
    // REMOVE (it does not hold the buffer: its ADD is not held).
    drop(adds);
    let first = guests[0].offer(&unregister_bytes(5), 8);
    match client.next_event().unwrap() {
        Event::Remove(remove) => {
            assert_eq!((remove.guest.as_str(), remove.buffer_id), ("vm0", 5));
        }
        other => panic!("not a REMOVE: {other:?}"),
    }
    let answer = guests[0].wait_answer(first);
    assert_eq!(answer, (8, guests[0].hdr(0)));

    // The daemon stops: both sockets go, the consumer hears of vm1 (whose
    // buffer it holds), then of the shutdown.
    shutdown.request();
    join_within(daemon, "the daemon");
    let reset = expect_reset(&mut client);
    assert_eq!(
        (reset.guest.as_str(), reset.reason),
        ("vm1", ResetReason::Disconnected)
    );
    match client.next_event() {
        Err(ConsumerError::Ended(e)) => assert_eq!(e.code, ErrorCode::Shutdown),
        other => panic!("{other:?}"),
    }
    for path in paths.iter().chain([&consumer_path, &inspect_path]) {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    drop((frontend0, frontend1));
}

#[test]
fn several_guests_once() {
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("a.sock"), dir.path().join("b.sock")];
    let daemon = spawn_daemon(
        Config {
            once: true,
            ..Config::new(vec![
                GuestConfig::new("a", &paths[0]),
                GuestConfig::new("b", &paths[1]),
            ])
        },
        Shutdown::new().unwrap(),
    );
    let mut a = connect(&paths[0]);
    negotiate(&mut a);
    drop(a);
    // a's socket goes; b is still served.
    let start = Instant::now();
    while paths[0].exists() {
        assert!(start.elapsed() < TIMEOUT, "a's socket is left behind");
        thread::sleep(Duration::from_millis(5));
    }
    let mut b = connect(&paths[1]);
    negotiate(&mut b);
    assert_eq!(read_config(&mut b)[..4], [0, 0, 1, 0]);
    assert!(!daemon.is_finished());
    drop(b);
    join_within(daemon, "the daemon, with --once,");
    assert!(!paths[1].exists());
}

#[test]
fn guests_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let shutdown = Shutdown::new().unwrap();
    for guests in [
        vec![],
        vec![
            GuestConfig::new("a", path("a.sock")),
            GuestConfig::new("a", path("b.sock")),
        ],
        vec![
            GuestConfig::new("a", path("a.sock")),
            GuestConfig::new("b", path("a.sock")),
        ],
        vec![GuestConfig::new("a b", path("a.sock"))],
    ] {
        let e = serve(&Config::new(guests.clone()), &shutdown).unwrap_err();
        assert!(
            matches!(e, vhost_user_bufshare::daemon::Error::Config(_)),
            "{guests:?}: {e}"
        );
    }
    // A socket that cannot be made: nothing is served, and the other
    // guest's socket is not left behind.
    let config = Config {
        inspect_socket: Some(path("inspect.sock")),
        ..Config::new(vec![
            GuestConfig::new("a", path("a.sock")),
            GuestConfig::new("b", "/nonexistent-dir/b.sock"),
        ])
    };
    assert!(serve(&config, &shutdown).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn program_serves_several_guests() {
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("vm0.sock"), dir.path().join("vm1.sock")];
    let inspect_path = dir.path().join("inspect.sock");
    let guest = |name: &str, path: &Path| format!("{name}={}", path.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vhost-user-bufshare"))
        .args(["--guest", &guest("vm0", &paths[0])])
        .args(["--guest", &guest("vm1", &paths[1])])
        .arg("--inspect-socket")
        .arg(&inspect_path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&inspect_path);
    let mut frontend = connect(&paths[1]);
    negotiate(&mut frontend);
    let mut g = Guest::new();
    g.start_queue(&mut frontend, true);
    assert_eq!(num_commands(&g.get_info()), 1);
    wait_for(&paths[0]);
    let out = inspect(&inspect_path, &["guests"], b"");
    assert_eq!(
        out.stdout,
        b"guest=vm0 connected=0 buffers=0\nguest=vm1 connected=1 buffers=0\n"
    );
    signal(&child, "TERM");
    assert!(wait_within(&mut child).success());
    for path in paths.iter().chain([&inspect_path]) {
        assert!(!path.exists(), "{} left behind", path.display());
    }

    // Two guests of one name: refused at once.
    let status = Command::new(env!("CARGO_BIN_EXE_vhost-user-bufshare"))
        .args(["--guest", &guest("vm0", &paths[0])])
        .args(["--guest", &guest("vm0", &paths[1])])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(!paths[0].exists());
}

/// The frontend's side of the backend channel, as QEMU 11.1 serves it for
/// a device with a shared memory region: SHMEM_MAP maps the descriptor
/// into the region (reserved address space here), and the memory map
/// having changed, sends SET_MEM_TABLE on the main channel and waits for
/// it to be handled, before it acks the map.
struct FakeQemu {
    /// The main channel (taken away to disconnect).
    frontend: std::sync::Mutex<Option<Frontend>>,
    mem: GuestMemoryMmap,
    base: usize,
    size: u64,
    /// (map?, shm_offset, fd_offset, len), in order.
    log: std::sync::Mutex<Vec<(bool, u64, u64, u64)>>,
}

impl FakeQemu {
    fn new(frontend: Frontend, mem: GuestMemoryMmap, size: u64) -> Self {
        // SAFETY: a new anonymous mapping at an address of the kernel's
        // choice: it touches no memory of ours.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        Self {
            frontend: std::sync::Mutex::new(Some(frontend)),
            mem,
            base: base as usize,
            size,
            log: std::sync::Mutex::default(),
        }
    }

    fn log(&self) -> Vec<(bool, u64, u64, u64)> {
        self.log.lock().unwrap().clone()
    }

    /// Bytes of the region, which must be mapped.
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        assert!(self
            .log()
            .iter()
            .any(|&(map, o, _, l)| map && o <= offset && offset + len as u64 <= o + l));
        let mut out = vec![0; len];
        // SAFETY: inside the region, where a memory file is mapped.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.base + offset as usize) as *const u8,
                out.as_mut_ptr(),
                len,
            )
        };
        out
    }

    fn write(&self, offset: u64, data: &[u8]) {
        assert!(!self.read(offset, data.len()).is_empty());
        // SAFETY: as for read.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (self.base + offset as usize) as *mut u8,
                data.len(),
            )
        };
    }
}

impl FakeQemu {
    /// Sends the guest's memory table again, as QEMU does when its memory
    /// map changed (here before the ack, in QEMU right after it).
    fn new_table(&self) -> std::io::Result<()> {
        let region = self.mem.iter().next().unwrap();
        let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
        if let Some(frontend) = self.frontend.lock().unwrap().as_mut() {
            frontend
                .set_mem_table(&[info])
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

impl vhost::vhost_user::VhostUserFrontendReqHandler for FakeQemu {
    fn shmem_map(
        &self,
        req: &vhost::vhost_user::message::VhostUserMMap,
        fd: &dyn std::os::fd::AsRawFd,
    ) -> vhost::vhost_user::HandlerResult<u64> {
        let (shm, fd_offset, len) = (req.shm_offset, req.fd_offset, req.len);
        assert_eq!(req.shmid, 0);
        assert!(shm + len <= self.size);
        // SAFETY: MAP_FIXED over our own reservation, inside it.
        let p = unsafe {
            libc::mmap(
                (self.base + shm as usize) as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                fd_offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        self.log.lock().unwrap().push((true, shm, fd_offset, len));
        self.new_table()?;
        Ok(0)
    }

    fn shmem_unmap(
        &self,
        req: &vhost::vhost_user::message::VhostUserMMap,
    ) -> vhost::vhost_user::HandlerResult<u64> {
        self.log
            .lock()
            .unwrap()
            .push((false, req.shm_offset, 0, req.len));
        self.new_table()?;
        Ok(0)
    }
}

impl Drop for FakeQemu {
    fn drop(&mut self) {
        // SAFETY: the reservation made in new(), used by nothing else.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size as usize) };
    }
}

fn import_cmd(type_: u32, id: u64) -> Vec<u8> {
    [
        type_.to_le_bytes().as_slice(),
        &[0; 4],
        id.to_le_bytes().as_slice(),
    ]
    .concat()
}

#[test]
fn a_guest_maps_another_guest_s_buffer() {
    use vhost::vhost_user::FrontendReqHandler;
    use vhost_user_bufshare::import::ImportConfig;

    const SHM: u64 = 16 * 4096;
    let dir = tempfile::tempdir().unwrap();
    let (path_a, path_b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let config = Config {
        once: true,
        import: ImportConfig {
            shm_size: SHM,
            rules: vec!["b:frames=a".parse().unwrap()],
            ..ImportConfig::default()
        },
        ..Config::new(vec![
            GuestConfig::new("a", &path_a),
            GuestConfig::new("b", &path_b),
        ])
    };
    let daemon = spawn_daemon(config, Shutdown::new().unwrap());

    // A registers a framebuffer of two pages.
    let mut front_a = connect(&path_a);
    negotiate(&mut front_a);
    let mut a = Guest::new();
    a.start_queue(&mut front_a, true);
    let register = RegisterCommand::complete(1, "frames", &[(0x8_0000, 0x2000)]).to_bytes();
    assert_eq!(a.command(&register, 8), (8, a.hdr(0)));
    a.mem
        .write_slice(b"written by a", GuestAddress(0x8_0010))
        .unwrap();

    // B acks everything: events and import; it has the region.
    let mut front_b = connect(&path_b);
    let (features, protocol) = negotiate_acking(&mut front_b, !0);
    assert_ne!(features & (1 << 3), 0, "VIRTIO_BUFSHARE_F_IMPORT");
    assert!(protocol.contains(
        VhostUserProtocolFeatures::SHMEM
            | VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::REPLY_ACK
    ));
    assert!(!protocol.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
    let shmem = front_b.get_shmem_config().unwrap();
    assert_eq!(shmem.nregions, 1);
    assert_eq!(shmem.memory_sizes[0], SHM);
    let mut b = Guest::new();
    let qemu = Arc::new(FakeQemu::new(front_b.clone(), b.mem.clone(), SHM));
    let mut handler = FrontendReqHandler::new(Arc::clone(&qemu)).unwrap();
    handler.set_reply_ack_flag(true);
    front_b
        .set_backend_request_fd(&handler.get_tx_raw_fd())
        .unwrap();
    // The handler keeps both ends of the channel's socket pair: its thread
    // reads until the test program exits.
    thread::spawn(move || while handler.handle_request().is_ok() {});
    b.start_queue(&mut front_b, true);

    // ATTACH: attachment 1; import 1 is mapped at 0.
    let mut attach = vec![0, 2, 0, 0, 0, 0, 0, 0];
    let mut source = [0u8; 32];
    source[0] = b'a';
    let mut app = [0u8; 64];
    app[..6].copy_from_slice(b"frames");
    attach.extend_from_slice(&source);
    attach.extend_from_slice(&app);
    let (len, answer) = b.command(&attach, 16);
    assert_eq!(len, 16);
    assert_eq!(&answer[..8], b.hdr(0));
    assert_eq!(&answer[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);
    let start = Instant::now();
    let info = loop {
        let (_, answer) = b.command(&import_cmd(0x202, 1), 256);
        if answer[..4] == [0; 4] {
            break answer;
        }
        assert_eq!(answer[..4], [4, 0, 0, 0], "S_NO_BUFFER while mapping");
        assert!(start.elapsed() < TIMEOUT, "never mapped");
        thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(&info[8..16], &1u64.to_le_bytes(), "buffer_id");
    assert_eq!(&info[16..24], &0u64.to_le_bytes(), "shm_offset");
    assert_eq!(&info[24..32], &0x2000u64.to_le_bytes(), "size");
    assert_eq!(qemu.log(), [(true, 0, 0x8_0000, 0x2000)]);

    // The same memory, both ways.
    assert_eq!(qemu.read(0x10, 12), b"written by a");
    qemu.write(0x1ff0, b"written by b");
    let mut back = [0u8; 12];
    a.mem.read_slice(&mut back, GuestAddress(0x8_1ff0)).unwrap();
    assert_eq!(&back, b"written by b");

    // A unregisters, B closes: unmapped.
    assert_eq!(a.command(&unregister_bytes(1), 8), (8, a.hdr(0)));
    assert_eq!(b.command(&import_cmd(0x204, 1), 8), (8, b.hdr(0)));
    let start = Instant::now();
    while qemu.log().len() < 2 {
        assert!(start.elapsed() < TIMEOUT, "never unmapped");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(qemu.log()[1], (false, 0, 0, 0x2000));
    assert_eq!(b.command(&import_cmd(0x204, 1), 8), (8, b.hdr(4)), "closed");

    drop(front_a);
    drop(front_b);
    qemu.frontend.lock().unwrap().take();
    join_within(daemon, "the daemon");
}
