// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The consumer server through a real unix socket, against a device whose
//! guest memory is in memfds: file descriptors passed, the buffers' bytes
//! read and written through them; access refused; bad consumers; overflow;
//! consumers, the server and the guest going away.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Instant;

use bufshare_consumer::wire::{HEADER_SIZE, MAX_APPLICATIONS};
use bufshare_consumer::{
    ByteRange, Client, Error as ClientError, Event, MappedBuffer, Memory, Rect, ResetReason,
    ALL_APPLICATIONS, VERSION,
};
use bufshare_uapi::{
    add_ranges_bytes as add_ranges, set_properties_bytes as set_properties,
    unregister_bytes as unregister, update_command, RegisterCommand, VIRTIO_BUFSHARE_F_BUFFERS,
    VIRTIO_BUFSHARE_S_OK,
};
use nix::fcntl::{fcntl, FcntlArg};
use vm_memory::{ByteValued, Bytes, FileOffset, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use super::access::{AllowRule, RamAccess, TrustRule};
use super::export::tests::memfd as memfd_sealed;
use super::*;
use crate::buffers::SharedState;
use crate::device::{BufshareDevice, Limits};

const TIMEOUT: Duration = Duration::from_secs(20);
const MIB: u64 = 0x10_0000;

/// A sealed memfd of `len` bytes, as QEMU's memory-backend-memfd makes.
fn memfd(len: u64) -> File {
    memfd_sealed(len, true)
}

/// Guest RAM: 0..1 MiB at 1 MiB of `ram0`, 1..2 MiB at 0 of `ram0` (so
/// the two are adjacent in the guest but not in the file), 16..17 MiB in
/// `ram1`; `ram1` unsealed if `ram1_sealed` is false.
fn memory_with(ram1_sealed: bool) -> (GuestMemoryMmap, File, File) {
    let ram0 = memfd(2 * MIB);
    let ram1 = memfd_sealed(MIB, ram1_sealed);
    let region = |guest: u64, file: &File, offset: u64| {
        (
            GuestAddress(guest),
            MIB as usize,
            Some(FileOffset::new(file.try_clone().unwrap(), offset)),
        )
    };
    let mem = GuestMemoryMmap::from_ranges_with_files(&[
        region(0, &ram0, MIB),
        region(MIB, &ram0, 0),
        region(16 * MIB, &ram1, 0),
    ])
    .unwrap();
    (mem, ram0, ram1)
}

fn memory() -> (GuestMemoryMmap, File, File) {
    memory_with(true)
}

/// REGISTER of buffer `id` of `num_ranges` ranges, `ranges` of them now.
fn register(
    id: u64,
    app: &str,
    num_ranges: u32,
    ranges: &[(u64, u64)],
    size: u64,
    props: &[u8],
) -> Vec<u8> {
    RegisterCommand::new(id, app, size, num_ranges, ranges)
        .props(props)
        .to_bytes()
}

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn gid() -> u32 {
    nix::unistd::getegid().as_raw()
}

/// A device whose buffer table the consumer server sees, as guest "vm0".
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    mem: GuestMemoryMmap,
    ram0: File,
    state: Arc<SharedState>,
    device: BufshareDevice,
    server: Option<ConsumerServer>,
}

impl Fixture {
    fn new(configure: impl FnOnce(&mut ConsumerConfig)) -> Self {
        Self::with_memory(configure, memory())
    }

    fn with_memory(
        configure: impl FnOnce(&mut ConsumerConfig),
        (mem, ram0, _ram1): (GuestMemoryMmap, File, File),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumer.sock");
        let mut config = ConsumerConfig::new(&path);
        // This host has no udmabuf; make sure of it. Buffers go as
        // segments: to consumers trusted with all of the guest's RAM.
        config.udmabuf = None;
        config.access.trust = vec![TrustRule::for_this_process(RamAccess::ReadWrite)];
        configure(&mut config);
        let server = ConsumerServer::start(config).unwrap();
        let state = Arc::new(SharedState::default());
        let events = server.guest("vm0").unwrap();
        state.lock().holders = Arc::clone(events.holders());
        state.lock().observer = Some(events);
        let mut device = BufshareDevice::with_state(Limits::default(), Arc::clone(&state));
        device.set_driver_features(1 << VIRTIO_BUFSHARE_F_BUFFERS);
        device.set_memory(GuestMemoryAtomic::new(mem.clone()));
        Self {
            _dir: dir,
            path,
            mem,
            ram0,
            state,
            device,
            server: Some(server),
        }
    }

    fn run(&mut self, command: &[u8]) {
        let answer = self.device.process(command, 8).unwrap();
        assert_eq!(
            u32::from_le_bytes(answer[..4].try_into().unwrap()),
            VIRTIO_BUFSHARE_S_OK
        );
    }

    fn client(&self) -> Client {
        let client = Client::connect(&self.path).unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        client
    }

    fn subscribed(&self, apps: &[&str]) -> Client {
        let mut client = self.client();
        client.subscribe(apps).unwrap();
        client
    }

    fn hub(&self) -> &Arc<Hub> {
        self.server.as_ref().unwrap().hub()
    }

    /// Waits until the hub has `n` consumers.
    fn wait_consumers(&self, n: usize) {
        let start = Instant::now();
        while self.hub().consumers() != n {
            assert!(
                start.elapsed() < TIMEOUT,
                "{} consumers",
                self.hub().consumers()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn next(client: &mut Client) -> Event {
    client.next_event().unwrap()
}

fn expect_add(client: &mut Client) -> bufshare_consumer::Add {
    match next(client) {
        Event::Add(add) => add,
        other => panic!("not an ADD: {other:?}"),
    }
}

fn ino(fd: &OwnedFd) -> u64 {
    File::from(fd.try_clone().unwrap())
        .metadata()
        .unwrap()
        .ino()
}

#[test]
fn round_trip() {
    let mut fx = Fixture::new(|_| {});
    // Buffer 1, before anyone connects: 0x2000 bytes across the two
    // regions of ram0 (adjacent in the guest, not in the file), then 0x1000
    // bytes of ram1.
    let pattern: Vec<u8> = (0..0x3000u32).map(|i| (i * 13 % 251) as u8).collect();
    fx.mem
        .write_slice(&pattern[..0x2000], GuestAddress(MIB - 0x1000))
        .unwrap();
    fx.mem
        .write_slice(&pattern[0x2000..], GuestAddress(16 * MIB + 0x3000))
        .unwrap();
    fx.run(&register(
        1,
        "camera",
        2,
        &[(MIB - 0x1000, 0x2000), (16 * MIB + 0x3000, 0x1000)],
        0x3000,
        b"width=64\0height=48\0",
    ));

    let mut client = fx.client();
    let welcome = client.subscribe(&["camera", "weston"]).unwrap();
    assert_eq!(welcome.memory_form, MemoryForm::Segments);
    assert_eq!(welcome.version, VERSION);
    assert_eq!(welcome.queue_limit, 1024);
    assert_eq!(welcome.server, device_name());

    // What existed comes first.
    let add = expect_add(&mut client);
    assert_eq!(
        (add.guest.as_str(), add.buffer_id, add.application.as_str()),
        ("vm0", 1, "camera")
    );
    assert_eq!((add.size, add.seqno), (0x3000, 0));
    assert_eq!(add.properties.get_u64("width"), Some(64));
    assert_eq!(add.properties.get_u64("height"), Some(48));
    match &add.memory {
        Memory::Segments { files, segments } => {
            // ram0 once for its two regions, then ram1.
            assert_eq!(files.len(), 2);
            assert_eq!(ino(&files[0]), fx.ram0.metadata().unwrap().ino());
            assert_eq!(
                segments
                    .iter()
                    .map(|s| (s.file, s.offset, s.len))
                    .collect::<Vec<_>>(),
                [
                    (0, 2 * MIB - 0x1000, 0x1000),
                    (0, 0, 0x1000),
                    (1, 0x3000, 0x1000)
                ]
            );
        }
        Memory::DmaBuf(_) | Memory::DmaBufs { .. } => panic!("a dma-buf"),
    }
    // The bytes, through the descriptors.
    let map = MappedBuffer::new(&add, true).unwrap();
    let mut got = vec![0; 0x3000];
    map.read(0, &mut got).unwrap();
    assert_eq!(got, pattern);
    // Both ways, with no copy: the guest writes, the consumer sees; the
    // consumer writes, the guest sees.
    // Across the two regions (offset 0x1000 of the buffer), then across
    // the two files (0x2000).
    fx.mem.write_slice(b"guest", GuestAddress(MIB - 2)).unwrap();
    let mut five = [0; 5];
    map.read(0xffe, &mut five).unwrap();
    assert_eq!(&five, b"guest");
    map.write(0x1ffe, b"host!").unwrap();
    fx.state.lock().read(1, 0x1ffe, &mut five).unwrap();
    assert_eq!(&five, b"host!");

    // Live: an incomplete buffer is handed over once complete.
    fx.run(&register(2, "camera", 2, &[(0x1000, 0x1000)], 0x2000, b""));
    fx.run(&register(3, "other", 1, &[(0x8000, 0x1000)], 0x1000, b""));
    fx.run(&add_ranges(2, 1, &[(0x4000, 0x1000)]));
    let add2 = expect_add(&mut client);
    assert_eq!((add2.buffer_id, add2.size), (2, 0x2000));
    assert!(add2.properties.is_empty());

    fx.run(update_command(1, 7, Some((0x10, 0x20)), None).as_slice());
    fx.run(update_command(3, 1, None, None).as_slice());
    fx.run(update_command(2, 1, None, Some([1, 2, 3, 4])).as_slice());
    fx.run(&set_properties(1, b"width=32\0"));
    fx.run(&unregister(2));
    fx.run(&unregister(3));
    match next(&mut client) {
        Event::Update(u) => {
            assert_eq!((u.guest.as_str(), u.buffer_id, u.seqno), ("vm0", 1, 7));
            assert_eq!(
                u.range,
                Some(ByteRange {
                    offset: 0x10,
                    len: 0x20
                })
            );
            assert_eq!(u.rect, None);
        }
        other => panic!("{other:?}"),
    }
    match next(&mut client) {
        Event::Update(u) => {
            assert_eq!((u.buffer_id, u.seqno, u.range), (2, 1, None));
            assert_eq!(
                u.rect,
                Some(Rect {
                    x: 1,
                    y: 2,
                    width: 3,
                    height: 4
                })
            );
        }
        other => panic!("{other:?}"),
    }
    match next(&mut client) {
        Event::Properties(p) => {
            assert_eq!((p.guest.as_str(), p.buffer_id), ("vm0", 1));
            assert_eq!(p.properties.to_bytes(), b"width=32\0");
        }
        other => panic!("{other:?}"),
    }
    match next(&mut client) {
        Event::Remove(r) => assert_eq!((r.guest.as_str(), r.buffer_id), ("vm0", 2)),
        other => panic!("{other:?}"),
    }
    // The device resets: what the consumer holds goes.
    fx.device.reset();
    match next(&mut client) {
        Event::Reset(r) => {
            assert_eq!(r.guest, "vm0");
            assert_eq!(r.reason, ResetReason::DeviceReset);
        }
        other => panic!("{other:?}"),
    }
    // Nothing else came (buffer 3 is "other").
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(matches!(
        client.next_event(),
        Err(ClientError::Recv(bufshare_consumer::io::RecvError::Timeout))
    ));
}

#[test]
fn the_guest_goes_away() {
    let mut fx = Fixture::new(|_| {});
    let mut client = fx.subscribed(&[ALL_APPLICATIONS]);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    expect_add(&mut client);
    // The frontend disconnects: the daemon drops everything.
    fx.state.lock().drop_all(ResetReason::Disconnected);
    match next(&mut client) {
        Event::Reset(r) => assert_eq!(r.reason, ResetReason::Disconnected),
        other => panic!("{other:?}"),
    }
    // A new frontend, the same guest: buffers again.
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    assert_eq!(expect_add(&mut client).buffer_id, 1);
    // The guest is removed from the server altogether.
    fx.state.lock().observer = None;
    assert!(matches!(next(&mut client), Event::Reset(_)));
    fx.run(&register(2, "a", 1, &[(0x1000, 0x1000)], 0x1000, b""));
    let mut later = fx.subscribed(&[ALL_APPLICATIONS]);
    later
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(later.next_event().is_err());
}

#[test]
fn the_device_loses_its_buffers() {
    let mut fx = Fixture::new(|_| {});
    let mut client = fx.subscribed(&[ALL_APPLICATIONS]);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    expect_add(&mut client);
    // As on a backend restart (fault injection: lose-buffers): RESET, with
    // the reason of a frontend that lost its connection.
    assert_eq!(fx.device.lose_buffers(), 1);
    match next(&mut client) {
        Event::Reset(r) => {
            assert_eq!(r.guest, "vm0");
            assert_eq!(r.reason, ResetReason::Disconnected);
            assert_eq!(r.reason, crate::device::LOST_BUFFERS_REASON);
        }
        other => panic!("{other:?}"),
    }
    // The guest registers its buffer again.
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    assert_eq!(expect_add(&mut client).buffer_id, 1);
}

#[test]
fn socket_modes() {
    let fx = Fixture::new(|_| {});
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fx.path), 0o600);
    let fx = Fixture::new(|c| c.mode = 0o660);
    assert_eq!(mode(&fx.path), 0o660);
    let path = fx.path.clone();
    drop(fx);
    assert!(!path.exists(), "the socket is left behind");
}

#[test]
fn access_is_checked() {
    // The backend as another uid; this one may only have "camera".
    let policy = AccessPolicy {
        owner: uid().wrapping_add(1),
        rules: vec![
            AllowRule {
                uid: Some(uid()),
                gid: None,
                applications: access::Applications::Only(["camera".to_string()].into()),
            },
            // A rule for another gid does not count.
            format!("{}:{}=*", uid(), gid().wrapping_add(1))
                .parse()
                .unwrap(),
        ],
        trust: vec![TrustRule::for_this_process(RamAccess::ReadWrite)],
    };
    let fx = Fixture::new(|c| c.access = policy);
    for apps in [&["camera", "weston"][..], &["weston"], &[ALL_APPLICATIONS]] {
        let mut client = fx.client();
        match client.subscribe(apps) {
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.code, ErrorCode::Denied);
                assert!(e
                    .message
                    .starts_with(&format!("uid {} gid {} may not", uid(), gid())));
            }
            other => panic!("{apps:?}: {other:?}"),
        }
    }
    let _client = fx.subscribed(&["camera"]);
    fx.wait_consumers(1);

    // Nothing at all: refused before the HELLO is read.
    let policy = AccessPolicy {
        owner: uid().wrapping_add(1),
        rules: vec![format!("{}=*", uid().wrapping_add(2)).parse().unwrap()],
        trust: Vec::new(),
    };
    let fx = Fixture::new(|c| c.access = policy);
    let mut client = fx.client();
    match client.subscribe(&["camera"]) {
        Err(ClientError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::Denied);
            assert!(e.message.contains("may not subscribe to any application"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.hub().consumers(), 0);
}

/// Sends `bytes` on a fresh connection; returns the ERROR that comes back.
fn refusal(fx: &Fixture, bytes: &[u8]) -> ErrorMessage {
    let stream = UnixStream::connect(&fx.path).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    send_message(stream.as_fd(), bytes, &[]).unwrap();
    match bufshare_consumer::io::recv_message(stream.as_fd()) {
        Ok(Some(Message::Error(e))) => {
            // And then the end (reset, if the server left bytes unread).
            assert!(matches!(
                bufshare_consumer::io::recv_message(stream.as_fd()),
                Ok(None) | Err(bufshare_consumer::io::RecvError::Io(_))
            ));
            e
        }
        other => panic!("{other:?}"),
    }
}

fn hello_bytes(version: u32, apps: &[&str]) -> Vec<u8> {
    let hello: Message = Message::Hello(bufshare_consumer::wire::Hello {
        version,
        applications: apps.iter().map(|a| a.to_string()).collect(),
    });
    hello.encode().unwrap().bytes
}

#[test]
fn bad_consumers() {
    let fx = Fixture::new(|c| c.client_timeout = Duration::from_secs(1));
    let protocol = |bytes: &[u8]| {
        let e = refusal(&fx, bytes);
        assert_eq!(e.code, ErrorCode::Protocol, "{e}");
        e.message
    };
    // Not a message.
    let m = protocol(&[0xff; HEADER_SIZE]);
    assert!(m.contains("unknown message type"), "{m}");
    // Something else than HELLO first.
    let remove: Message = Message::Event(Event::Remove(bufshare_consumer::Remove {
        guest: "vm0".into(),
        buffer_id: 1,
    }));
    assert!(protocol(&remove.encode().unwrap().bytes).contains("REMOVE before HELLO"));
    // A HELLO announcing descriptors, or too large.
    let mut hello = hello_bytes(1, &["a"]);
    hello[2] = 1;
    assert!(protocol(&hello).contains("file descriptors"));
    let mut hello = hello_bytes(1, &["a"]);
    hello[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(protocol(&hello).contains("more than"));
    // A malformed HELLO.
    let mut hello = hello_bytes(1, &["a"]);
    hello[HEADER_SIZE + 4] = 1;
    assert!(protocol(&hello).contains("flags is not 0"));
    // Too many applications.
    let mut hello = hello_bytes(1, &["a"]);
    hello[HEADER_SIZE + 8] = (MAX_APPLICATIONS + 1) as u8;
    assert!(protocol(&hello).contains("out of range"));
    // A HELLO cut short, then nothing: timed out.
    let hello = hello_bytes(1, &["a"]);
    assert!(protocol(&hello[..HEADER_SIZE + 3]).contains("no HELLO"));
    assert!(protocol(&[]).contains("no HELLO"));
    // Or sent a byte at a time, too slowly: the time is for all of it.
    let stream = UnixStream::connect(&fx.path).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let start = Instant::now();
    for byte in &hello {
        if (&stream).write_all(&[*byte]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    match bufshare_consumer::io::recv_message(stream.as_fd()) {
        Ok(Some(Message::Error(e))) => assert!(e.message.contains("no HELLO"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    // Version 0.
    let e = refusal(&fx, &hello_bytes(0, &["a"]));
    assert_eq!(e.code, ErrorCode::Version);

    // Descriptors sent with a HELLO are dropped by the kernel; the HELLO
    // counts.
    let stream = UnixStream::connect(&fx.path).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let extra = memfd(0x1000);
    send_message(stream.as_fd(), &hello_bytes(1, &["a"]), &[extra.as_fd()]).unwrap();
    assert!(matches!(
        bufshare_consumer::io::recv_message(stream.as_fd()),
        Ok(Some(Message::Welcome(_)))
    ));
    fx.wait_consumers(1);
    // Anything after HELLO ends the connection.
    (&stream).write_all(b"x").unwrap();
    match bufshare_consumer::io::recv_message(stream.as_fd()) {
        Ok(Some(Message::Error(e))) => {
            assert_eq!(e.code, ErrorCode::Protocol);
            assert!(e.message.contains("after HELLO"));
        }
        other => panic!("{other:?}"),
    }
    fx.wait_consumers(0);

    // A version higher than the backend's: the backend's.
    let stream = UnixStream::connect(&fx.path).unwrap();
    send_message(stream.as_fd(), &hello_bytes(7, &["a"]), &[]).unwrap();
    match bufshare_consumer::io::recv_message(stream.as_fd()) {
        Ok(Some(Message::Welcome(w))) => assert_eq!(w.version, VERSION),
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_udmabuf_untrusted_consumers_are_refused() {
    // Segments would give them all of the guest's RAM: only consumers
    // the configuration trusts with it get them, the owner included.
    let fx = Fixture::new(|c| c.access.trust.clear());
    let mut client = fx.client();
    match client.subscribe(&["a"]) {
        Err(ClientError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::Denied);
            assert!(e.message.contains("--trust-ram"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Trusted read-only: the memory files, reopened read-only.
    let mut fx = Fixture::new(|c| {
        c.access.trust = vec![TrustRule::for_this_process(RamAccess::ReadOnly)];
    });
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let mut client = fx.subscribed(&["a"]);
    let add = expect_add(&mut client);
    let Memory::Segments { files, .. } = &add.memory else {
        panic!("{:?}", add.memory);
    };
    let flags = fcntl(&files[0], FcntlArg::F_GETFL).unwrap();
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
    let file = File::from(files[0].try_clone().unwrap());
    assert!(file.set_len(0).is_err());
    assert!(MappedBuffer::new(&add, true).is_err());
    assert!(MappedBuffer::new(&add, false).is_ok());
}

#[test]
fn unsealed_memory_is_handed_to_nobody() {
    // ram1 is not sealed: whoever had its descriptor could truncate guest
    // RAM. A trusted consumer is not told of a buffer in it, nor of its
    // UPDATE or REMOVE; it gets the buffers it may have.
    let mut fx = Fixture::with_memory(|_| {}, memory_with(false));
    let mut client = fx.subscribed(&["a"]);
    fx.wait_consumers(1);
    fx.run(&register(1, "a", 1, &[(16 * MIB, 0x1000)], 0x1000, b""));
    fx.run(update_command(1, 1, None, None).as_slice());
    fx.run(&unregister(1));
    fx.run(&register(2, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let add = expect_add(&mut client);
    assert_eq!(add.buffer_id, 2);
    fx.run(update_command(2, 1, None, None).as_slice());
    match next(&mut client) {
        Event::Update(u) => assert_eq!(u.buffer_id, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refused_consumer_gives_its_slot_back_before_it_sees_the_end() {
    // One slot per uid: a consumer that saw the end of its refused
    // connection and connects again at once must find the slot free, as
    // must a consumer that reconnects after a crash; it was given back only
    // after the end was sent, and a busy host let the next connection find
    // it taken (BUSY).
    let fx = Fixture::new(|c| c.max_consumers_per_uid = 1);
    for i in 0..200 {
        let e = refusal(&fx, &hello_bytes(0, &["a"]));
        assert_eq!(e.code, ErrorCode::Version, "connection {i}: {e}");
    }
}

#[test]
fn too_many_consumers_of_one_uid() {
    // 4 slots, 2 per uid: connections of one uid that say nothing do not
    // take them all.
    let fx = Fixture::new(|c| {
        c.max_consumers = 4;
        c.max_consumers_per_uid = 2;
    });
    let silent: Vec<_> = (0..2)
        .map(|_| UnixStream::connect(&fx.path).unwrap())
        .collect();
    let server = fx.server.as_ref().unwrap();
    let start = Instant::now();
    while server.connections() < 2 {
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(5));
    }
    let mut third = fx.client();
    match third.subscribe(&["a"]) {
        Err(ClientError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert!(e.message.contains("as many as one uid may"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.connections(), 2, "the refused one took no slot");
    drop(silent);
    let start = Instant::now();
    while server.connections() != 0 {
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(5));
    }
    let _a = fx.subscribed(&["a"]);
    let _b = fx.subscribed(&["a"]);
}

#[test]
fn too_many_consumers() {
    let fx = Fixture::new(|c| c.max_consumers = 2);
    let first = fx.subscribed(&["a"]);
    // One still in its handshake counts too.
    let second = UnixStream::connect(&fx.path).unwrap();
    let server = fx.server.as_ref().unwrap();
    let start = Instant::now();
    while server.connections() < 2 {
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(5));
    }
    let mut third = fx.client();
    match third.subscribe(&["a"]) {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::Busy),
        other => panic!("{other:?}"),
    }
    drop(first);
    drop(second);
    // Room again, once they are gone.
    let start = Instant::now();
    loop {
        let mut client = fx.client();
        match client.subscribe(&["a"]) {
            Ok(_) => break,
            Err(ClientError::Refused(e)) if e.code == ErrorCode::Busy => {}
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_slow_consumer_is_resynchronised_without_stalling_the_guest() {
    let mut fx = Fixture::new(|c| c.queue_limit = 4);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let mut slow = fx.subscribed(&["a"]);
    let mut fast = fx.subscribed(&["a"]);
    let (seen, seqnos) = std::sync::mpsc::channel();
    let fast_reader = thread::spawn(move || {
        assert_eq!(expect_add(&mut fast).buffer_id, 1);
        for _ in 0..3000 {
            match next(&mut fast) {
                Event::Update(u) => seen.send(u.seqno).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        fast
    });
    // The slow one reads nothing: its socket fills, then its queue. The
    // guest's commands are served all the same, and the other consumer
    // (kept in step, so that it never overflows) gets every event.
    for seqno in 1..=3000 {
        fx.run(update_command(1, seqno, None, None).as_slice());
        assert_eq!(seqnos.recv_timeout(TIMEOUT), Ok(seqno));
    }
    let _fast = fast_reader.join().unwrap();

    // What the slow one gets: the ADD, updates in order, then, where its
    // queue overflowed, RESET OVERFLOW and the buffer again as it was then,
    // and so on; it is never disconnected, and it ends with the last
    // UPDATE. The first ADD is the buffer as it was when that ADD was
    // queued again: if the queue overflowed before its sender wrote it,
    // the ADD was withdrawn and queued anew, with no RESET, as the
    // consumer held nothing yet.
    let first = expect_add(&mut slow);
    assert_eq!(first.buffer_id, 1);
    let mut last = first.seqno;
    let mut resyncs = 0;
    while last < 3000 {
        match next(&mut slow) {
            Event::Update(u) => {
                assert_eq!(u.seqno, last + 1);
                last = u.seqno;
            }
            Event::Reset(r) => {
                assert_eq!(r.reason, ResetReason::Overflow);
                let add = expect_add(&mut slow);
                assert_eq!(add.buffer_id, 1);
                assert!(add.seqno > last, "{} after {last}", add.seqno);
                last = add.seqno;
                resyncs += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(resyncs >= 1);
    assert!(fx.state.lock().buffers.contains(1));
}

#[test]
fn consumers_come_and_go() {
    let mut fx = Fixture::new(|_| {});
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let mut client = fx.subscribed(&["a"]);
    expect_add(&mut client);
    fx.wait_consumers(1);
    drop(client);
    // The server notices; the guest keeps its buffer.
    fx.wait_consumers(0);
    fx.run(update_command(1, 1, None, None).as_slice());
    assert!(fx.state.lock().buffers.contains(1));
    let mut client = fx.subscribed(&["a"]);
    let add = expect_add(&mut client);
    assert_eq!((add.buffer_id, add.seqno), (1, 1));
}

#[test]
fn the_server_stops() {
    let mut fx = Fixture::new(|_| {});
    let mut client = fx.subscribed(&["a"]);
    // One that never sends its HELLO does not hold the server up.
    let _silent = UnixStream::connect(&fx.path).unwrap();
    fx.wait_consumers(1);
    let path = fx.path.clone();
    let start = Instant::now();
    fx.state.lock().observer = None;
    drop(fx.server.take());
    assert!(start.elapsed() < Duration::from_secs(5));
    match client.next_event() {
        Err(ClientError::Ended(e)) => assert_eq!(e.code, ErrorCode::Shutdown),
        other => panic!("{other:?}"),
    }
    assert!(!path.exists());
    assert!(Client::connect(&path).is_err());
}

#[test]
fn without_working_udmabuf_memory_goes_as_segments() {
    let file = tempfile::NamedTempFile::new().unwrap();
    for udmabuf in [
        Some(file.path().to_path_buf()),
        Some(PathBuf::from("/nonexistent/udmabuf")),
        None,
    ] {
        let mut fx = Fixture::new(|c| c.udmabuf = udmabuf.clone());
        assert_eq!(
            fx.server.as_ref().unwrap().memory_form(),
            MemoryForm::Segments
        );
        let mut client = fx.client();
        assert_eq!(
            client.subscribe(&["a"]).unwrap().memory_form,
            MemoryForm::Segments
        );
        fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
        assert_eq!(expect_add(&mut client).memory.form(), MemoryForm::Segments);
    }
}

#[test]
fn a_second_guest_name_is_refused() {
    let fx = Fixture::new(|_| {});
    let server = fx.server.as_ref().unwrap();
    assert!(matches!(
        server.guest("vm0"),
        Err(Error::Guest(HubError::Duplicate(_)))
    ));
    let vm1 = server.guest("vm1").unwrap();
    assert_eq!(vm1.name(), "vm1");
    assert_eq!(server.path(), fx.path);
}

#[test]
fn a_file_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"x").unwrap();
    let mut config = ConsumerConfig::new(&path);
    config.udmabuf = None;
    assert!(matches!(
        ConsumerServer::start(config),
        Err(Error::Listen(ListenError::NotASocket(_)))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"x");
}

#[test]
fn nofile_soft_limit_raised_to_the_hard_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // One below the hard limit, so that there is something to raise
    // (harmless to the other tests, unless the hard limit is small).
    if hard > 4096 {
        setrlimit(Resource::RLIMIT_NOFILE, hard - 1, hard).unwrap();
        assert_eq!(raise_nofile_limit().unwrap(), (hard - 1, hard));
    }
    assert_eq!(raise_nofile_limit().unwrap().1, hard);
    assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
}

mod holding;
