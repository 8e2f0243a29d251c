// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The import hub between real devices on mock guest memory (sealed
//! memfds, as QEMU's memory-backend-memfd), with a mock frontend that maps
//! what SHMEM_MAP names into a region of its own, as QEMU does: what the
//! importer reads there is what the exporter's guest memory holds.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use bufshare_uapi::{
    unregister_bytes, update_command, RegisterCommand, VirtioBufshareCmdAttach,
    VirtioBufshareCmdDetach, VirtioBufshareCmdGetConsumers, VirtioBufshareCmdHdr,
    VirtioBufshareCmdImport, VirtioBufshareCmdRelease, VirtioBufshareRespAttach,
    VirtioBufshareRespConsumers, VirtioBufshareRespHdr, VirtioBufshareRespImportInfo,
    VIRTIO_BUFSHARE_CMD_ATTACH, VIRTIO_BUFSHARE_CMD_CLOSE, VIRTIO_BUFSHARE_CMD_DETACH,
    VIRTIO_BUFSHARE_CMD_GET_CONSUMERS, VIRTIO_BUFSHARE_CMD_IMPORT_INFO,
    VIRTIO_BUFSHARE_CMD_RELEASE, VIRTIO_BUFSHARE_F_BUFFERS, VIRTIO_BUFSHARE_F_EVENTS,
    VIRTIO_BUFSHARE_F_IMPORT, VIRTIO_BUFSHARE_S_OK, VIRTIO_BUFSHARE_S_UNSUPPORTED,
};
use vhost::vhost_user::message::VhostUserMMap;
use vm_memory::{ByteValued, Bytes, FileOffset, GuestAddress, GuestMemoryAtomic};

use super::*;
use crate::buffers::SharedState;
use crate::consumer::export::tests::memfd;
use crate::device::{BufshareDevice, ImportPort, Limits};
use crate::import::ImportRule;
use crate::shmem::ShmemChannel;

const PAGE: u64 = PAGE_SIZE;
const RAM: u64 = 0x10_0000;
const FEATURES: u64 =
    1 << VIRTIO_BUFSHARE_F_BUFFERS | 1 << VIRTIO_BUFSHARE_F_EVENTS | 1 << VIRTIO_BUFSHARE_F_IMPORT;

/// A shared memory region as QEMU makes it: reserved address space, into
/// which SHMEM_MAP maps the file given (`MAP_SHARED | MAP_FIXED`) and
/// SHMEM_UNMAP puts inaccessible memory back.
#[derive(Debug)]
struct Region {
    base: NonNull<u8>,
    size: usize,
    /// What is mapped: (offset, len).
    mapped: Mutex<Vec<(u64, u64)>>,
    /// Requests, in order: (map?, shm_offset, fd_offset, len).
    log: Mutex<Vec<(bool, u64, u64, u64)>>,
    /// Maps fail while set.
    refuse: Mutex<bool>,
}

// SAFETY: the region is only read and written through `read` and `write`,
// which check that what they touch is mapped; the pointer is never handed
// out.
unsafe impl Send for Region {}
// SAFETY: as for Send; `mapped` is behind a mutex.
unsafe impl Sync for Region {}

impl Region {
    fn new(size: u64) -> Arc<Self> {
        // SAFETY: a new anonymous mapping, at an address of the kernel's
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
        Arc::new(Self {
            base: NonNull::new(base.cast()).unwrap(),
            size: size as usize,
            mapped: Mutex::default(),
            log: Mutex::default(),
            refuse: Mutex::new(false),
        })
    }

    fn is_mapped(&self, offset: u64, len: u64) -> bool {
        lock(&self.mapped)
            .iter()
            .any(|&(o, l)| o <= offset && offset + len <= o + l)
    }

    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        assert!(self.is_mapped(offset, len as u64), "{offset:#x} not mapped");
        let mut out = vec![0; len];
        // SAFETY: the bytes are inside the region (checked when mapped)
        // and mapped from a memory file.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset as usize),
                out.as_mut_ptr(),
                len,
            );
        }
        out
    }

    fn write(&self, offset: u64, data: &[u8]) {
        assert!(self.is_mapped(offset, data.len() as u64));
        // SAFETY: as for read.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.base.as_ptr().add(offset as usize),
                data.len(),
            );
        }
    }

    fn log(&self) -> Vec<(bool, u64, u64, u64)> {
        lock(&self.log).clone()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in new(), used by nothing else.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

impl ShmemChannel for Region {
    fn map(&self, req: &VhostUserMMap, fd: BorrowedFd<'_>) -> io::Result<()> {
        let (shm, fd_offset, len) = (req.shm_offset, req.fd_offset, req.len);
        if *lock(&self.refuse) {
            return Err(io::Error::other("refused"));
        }
        if shm + len > self.size as u64
            || lock(&self.mapped)
                .iter()
                .any(|&(o, l)| o < shm + len && shm < o + l)
        {
            return Err(io::Error::other("outside the region, or over a mapping"));
        }
        // SAFETY: MAP_FIXED over our own reservation, inside it (checked).
        let p = unsafe {
            libc::mmap(
                self.base.as_ptr().add(shm as usize).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                fd_offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        lock(&self.mapped).push((shm, len));
        lock(&self.log).push((true, shm, fd_offset, len));
        Ok(())
    }

    fn unmap(&self, req: &VhostUserMMap) -> io::Result<()> {
        let (shm, len) = (req.shm_offset, req.len);
        lock(&self.log).push((false, shm, 0, len));
        let mut mapped = lock(&self.mapped);
        let Some(i) = mapped.iter().position(|&m| m == (shm, len)) else {
            return Err(io::Error::other("no such mapping"));
        };
        mapped.remove(i);
        // SAFETY: back to inaccessible memory, over our own mapping.
        let p = unsafe {
            libc::mmap(
                self.base.as_ptr().add(shm as usize).cast(),
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Ok(())
    }
}

/// A guest: its device, its memory and its import region.
struct Guest {
    dev: BufshareDevice,
    state: Arc<SharedState>,
    mem: GuestMemoryMmap,
    region: Arc<Region>,
    mapper: Arc<Mapper>,
}

struct Fixture {
    hub: Arc<ImportHub>,
    a: Guest,
    b: Guest,
    c: Guest,
}

fn config(shm_pages: u64, rules: &[&str]) -> ImportConfig {
    ImportConfig {
        shm_size: shm_pages * PAGE,
        rules: rules
            .iter()
            .map(|r| r.parse::<ImportRule>().unwrap())
            .collect(),
        grace: Duration::from_millis(100),
    }
}

impl Fixture {
    /// Guests a, b and c, b may import `frames` of a, a `ro` of b; each
    /// with an import region of `shm_pages` pages.
    fn new(shm_pages: u64) -> Self {
        Self::with_config(config(shm_pages, &["b:frames=a", "a:ro=b:ro"]))
    }

    fn with_config(config: ImportConfig) -> Self {
        let hub = ImportHub::new(config);
        let guest = |name: &str| {
            let state = Arc::new(SharedState::default());
            let mut dev = BufshareDevice::with_state(Limits::default(), Arc::clone(&state));
            let file = memfd(RAM, true);
            let mem = GuestMemoryMmap::from_ranges_with_files(&[(
                GuestAddress(0),
                RAM as usize,
                Some(FileOffset::new(file, 0)),
            )])
            .unwrap();
            dev.set_memory(GuestMemoryAtomic::new(mem.clone()));
            hub.add_guest(name, dev.holders());
            state.lock().observer = Some(hub.observer(name));
            let region = Region::new(hub.config().shm_size);
            let mapper = Mapper::new();
            mapper.set_channel(region.clone());
            hub.connect(name, &mapper);
            dev.set_import(ImportPort {
                hub: Arc::clone(&hub),
                guest: name.to_string(),
            });
            dev.set_driver_features(FEATURES);
            Guest {
                dev,
                state,
                mem,
                region,
                mapper,
            }
        };
        let (a, b, c) = (guest("a"), guest("b"), guest("c"));
        Self { hub, a, b, c }
    }
}

impl Guest {
    fn run(&mut self, request: &[u8]) -> Vec<u8> {
        self.dev.process(request, 65536).unwrap()
    }

    fn status(&mut self, request: &[u8]) -> u32 {
        status_of(&self.run(request))
    }

    fn ok(&mut self, request: &[u8]) {
        assert_eq!(self.status(request), VIRTIO_BUFSHARE_S_OK);
    }

    /// Registers buffer `id` of `application`, complete, at `addr`.
    fn register(&mut self, id: u64, application: &str, addr: u64, len: u64) {
        self.ok(&RegisterCommand::complete(id, application, &[(addr, len)])
            .props(b"width=64\0")
            .to_bytes());
    }

    fn update(&mut self, id: u64, seqno: u64) {
        self.ok(update_command(id, seqno, None, None).as_slice());
    }

    fn unregister(&mut self, id: u64) {
        self.ok(&unregister_bytes(id));
    }

    fn attach(&mut self, source: &str, application: &str) -> Result<u32, u32> {
        let mut cmd = VirtioBufshareCmdAttach {
            hdr: hdr(VIRTIO_BUFSHARE_CMD_ATTACH),
            ..Default::default()
        };
        cmd.source[..source.len()].copy_from_slice(source.as_bytes());
        cmd.application[..application.len()].copy_from_slice(application.as_bytes());
        let answer = self.run(cmd.as_slice());
        match status_of(&answer) {
            VIRTIO_BUFSHARE_S_OK => {
                assert_eq!(answer.len(), 16);
                let mut resp = VirtioBufshareRespAttach::default();
                resp.as_mut_slice().copy_from_slice(&answer);
                assert_eq!(resp.reserved.to_native(), 0);
                Ok(resp.attachment.to_native())
            }
            status => Err(status),
        }
    }

    fn detach(&mut self, attachment: u32) -> u32 {
        let cmd = VirtioBufshareCmdDetach {
            hdr: hdr(VIRTIO_BUFSHARE_CMD_DETACH),
            attachment: attachment.into(),
            reserved: 0.into(),
        };
        self.status(cmd.as_slice())
    }

    fn import_cmd(&mut self, cmd: u32, id: u64) -> Vec<u8> {
        let cmd = VirtioBufshareCmdImport {
            hdr: hdr(cmd),
            import_id: id.into(),
        };
        self.run(cmd.as_slice())
    }

    fn info(&mut self, id: u64) -> Result<(VirtioBufshareRespImportInfo, Vec<u8>), u32> {
        let answer = self.import_cmd(VIRTIO_BUFSHARE_CMD_IMPORT_INFO, id);
        if status_of(&answer) != VIRTIO_BUFSHARE_S_OK {
            return Err(status_of(&answer));
        }
        let (info, props) = answer.split_at(48);
        let mut resp = VirtioBufshareRespImportInfo::default();
        resp.as_mut_slice().copy_from_slice(info);
        assert_eq!(resp.props_size.to_native() as usize, props.len());
        Ok((resp, props.to_vec()))
    }

    fn close(&mut self, id: u64) -> u32 {
        status_of(&self.import_cmd(VIRTIO_BUFSHARE_CMD_CLOSE, id))
    }

    fn release(&mut self, id: u64, seqno: u64) -> u32 {
        let cmd = VirtioBufshareCmdRelease {
            hdr: hdr(VIRTIO_BUFSHARE_CMD_RELEASE),
            import_id: id.into(),
            seqno: seqno.into(),
        };
        self.status(cmd.as_slice())
    }

    fn consumers(&mut self, application: &str) -> u32 {
        let mut cmd = VirtioBufshareCmdGetConsumers {
            hdr: hdr(VIRTIO_BUFSHARE_CMD_GET_CONSUMERS),
            ..Default::default()
        };
        cmd.application[..application.len()].copy_from_slice(application.as_bytes());
        let answer = self.run(cmd.as_slice());
        let mut resp = VirtioBufshareRespConsumers::default();
        resp.as_mut_slice().copy_from_slice(&answer);
        resp.consumers.to_native()
    }

    /// Runs the maps and unmaps queued, then takes the device's events.
    fn events(&mut self) -> Vec<DeviceEvent> {
        self.mapper.run_all();
        self.dev.collect();
        let mut out = Vec::new();
        while let Some(event) = self.dev.pending().peek() {
            out.push(event);
            self.dev.next_event();
        }
        out
    }

    /// The events, without the CONSUMERS ones.
    fn events_but_consumers(&mut self) -> Vec<DeviceEvent> {
        self.events()
            .into_iter()
            .filter(|e| !matches!(e, DeviceEvent::Consumers { .. }))
            .collect()
    }
}

fn hdr(type_: u32) -> VirtioBufshareCmdHdr {
    VirtioBufshareCmdHdr {
        type_: type_.into(),
        flags: 0.into(),
    }
}

fn status_of(answer: &[u8]) -> u32 {
    let mut hdr = VirtioBufshareRespHdr::default();
    hdr.as_mut_slice().copy_from_slice(&answer[..8]);
    hdr.status.to_native()
}

fn added(import_id: u64, buffer_id: u64, seqno: u64, shm_offset: u64, size: u64) -> DeviceEvent {
    DeviceEvent::ImportAdded {
        import_id,
        attachment: 1,
        buffer_id,
        seqno,
        flags: 0,
        shm_offset,
        size,
    }
}

fn updated(import_id: u64, buffer_id: u64, seqno: u64) -> DeviceEvent {
    DeviceEvent::ImportUpdated {
        import_id,
        attachment: 1,
        buffer_id,
        seqno,
    }
}

fn removed(import_id: u64, buffer_id: u64) -> DeviceEvent {
    DeviceEvent::ImportRemoved {
        import_id,
        attachment: 1,
        buffer_id,
    }
}

fn consumers(count: u32) -> DeviceEvent {
    DeviceEvent::Consumers {
        application: "frames".into(),
        count,
    }
}

#[test]
fn who_may_attach() {
    let mut fx = Fixture::with_config(config(16, &["b:frames=a", "c:frames=a:ro"]));
    // Denied, whether the source exists or not.
    assert_eq!(
        fx.c.attach("a", "frames"),
        Err(VIRTIO_BUFSHARE_S_DENIED),
        "read-only"
    );
    assert_eq!(fx.b.attach("a", "other"), Err(VIRTIO_BUFSHARE_S_DENIED));
    assert_eq!(fx.b.attach("c", "frames"), Err(VIRTIO_BUFSHARE_S_DENIED));
    assert_eq!(
        fx.b.attach("nobody", "frames"),
        Err(VIRTIO_BUFSHARE_S_DENIED)
    );
    assert_eq!(fx.a.attach("b", "frames"), Err(VIRTIO_BUFSHARE_S_DENIED));
    // Invalid names.
    assert_eq!(fx.b.attach("", "frames"), Err(VIRTIO_BUFSHARE_S_INVALID));
    assert_eq!(fx.b.attach("a b", "frames"), Err(VIRTIO_BUFSHARE_S_INVALID));
    assert_eq!(fx.b.attach("a", ""), Err(VIRTIO_BUFSHARE_S_INVALID));
    assert_eq!(fx.b.attach("a", "fr/ames"), Err(VIRTIO_BUFSHARE_S_INVALID));
    let mut bad = VirtioBufshareCmdAttach {
        hdr: hdr(VIRTIO_BUFSHARE_CMD_ATTACH),
        ..Default::default()
    };
    bad.source[..3].copy_from_slice(b"a\0x");
    bad.application[..6].copy_from_slice(b"frames");
    assert_eq!(fx.b.status(bad.as_slice()), VIRTIO_BUFSHARE_S_INVALID);
    // Short, long.
    let good = {
        let mut c = bad;
        c.source = [0; 32];
        c.source[0] = b'a';
        c
    };
    assert_eq!(
        fx.b.status(&good.as_slice()[..103]),
        VIRTIO_BUFSHARE_S_INVALID
    );
    assert_eq!(
        fx.b.status(&[good.as_slice(), &[0]].concat()),
        VIRTIO_BUFSHARE_S_INVALID
    );
    // Allowed, once.
    assert_eq!(fx.b.status(good.as_slice()), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(
        fx.b.attach("a", "frames"),
        Err(VIRTIO_BUFSHARE_S_INVALID),
        "twice"
    );
    // The exporter sees one consumer.
    assert_eq!(fx.a.events(), [consumers(1)]);
    assert_eq!(fx.a.consumers("frames"), 1);
    assert_eq!(fx.b.detach(1), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(fx.b.detach(1), VIRTIO_BUFSHARE_S_INVALID, "detached");
    assert_eq!(fx.a.events(), [consumers(0)]);
    // Without the feature: unsupported.
    fx.b.dev
        .set_driver_features(FEATURES & !(1 << VIRTIO_BUFSHARE_F_IMPORT));
    assert_eq!(
        fx.b.attach("a", "frames"),
        Err(VIRTIO_BUFSHARE_S_UNSUPPORTED)
    );
    assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_UNSUPPORTED);
    // Nor without events.
    fx.b.dev
        .set_driver_features(FEATURES & !(1 << VIRTIO_BUFSHARE_F_EVENTS));
    assert_eq!(
        fx.b.attach("a", "frames"),
        Err(VIRTIO_BUFSHARE_S_UNSUPPORTED)
    );
}

#[test]
fn attachments_are_bounded() {
    let mut rules = Vec::new();
    for i in 0..=MAX_ATTACHMENTS {
        rules.push(format!("b:app{i}=a"));
    }
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut fx = Fixture::with_config(config(16, &rules));
    for i in 0..MAX_ATTACHMENTS {
        assert_eq!(fx.b.attach("a", &format!("app{i}")), Ok(i as u32 + 1));
    }
    assert_eq!(
        fx.b.attach("a", &format!("app{MAX_ATTACHMENTS}")),
        Err(VIRTIO_BUFSHARE_S_NO_SPACE)
    );
    // A number freed is used again.
    assert_eq!(fx.b.detach(3), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(fx.b.attach("a", &format!("app{MAX_ATTACHMENTS}")), Ok(3));
}

#[test]
fn the_same_memory_both_ways() {
    let mut fx = Fixture::new(16);
    // Registered before the attachment, and after; another application,
    // and an incomplete buffer, are not imported.
    fx.a.register(1, "frames", 0x3000, 2 * PAGE);
    fx.a.register(2, "other", 0x8000, PAGE);
    fx.a.ok(&RegisterCommand::new(3, "frames", 2 * PAGE, 2, &[(0x10000, PAGE)]).to_bytes());
    assert_eq!(fx.b.attach("a", "frames"), Ok(1));
    assert_eq!(fx.b.events(), [added(1, 1, 0, 0, 2 * PAGE)]);
    fx.a.register(4, "frames", 0x20000, PAGE);
    assert_eq!(fx.b.events(), [added(2, 4, 0, 2 * PAGE, PAGE)]);
    // The frontend mapped the exporter's memory file at the buffer's
    // offsets in it.
    assert_eq!(
        fx.b.region.log(),
        [(true, 0, 0x3000, 2 * PAGE), (true, 2 * PAGE, 0x20000, PAGE)]
    );
    // A writes, B reads; B writes, A reads.
    fx.a.mem
        .write_slice(b"from a", GuestAddress(0x3000 + 100))
        .unwrap();
    assert_eq!(fx.b.region.read(100, 6), b"from a");
    fx.b.region.write(2 * PAGE + 7, b"from b");
    let mut back = [0u8; 6];
    fx.a.mem
        .read_slice(&mut back, GuestAddress(0x20000 + 7))
        .unwrap();
    assert_eq!(&back, b"from b");
    // The incomplete buffer, once complete.
    fx.a.ok(&bufshare_uapi::add_ranges_bytes(3, 1, &[(0x30000, PAGE)]));
    assert_eq!(fx.b.events(), [added(3, 3, 0, 3 * PAGE, 2 * PAGE)]);
    assert_eq!(
        fx.b.region.log()[2..],
        [
            (true, 3 * PAGE, 0x10000, PAGE),
            (true, 4 * PAGE, 0x30000, PAGE)
        ]
    );
    // What IMPORT_INFO says, properties included.
    let (info, props) = fx.b.info(3).unwrap();
    assert_eq!(info.buffer_id.to_native(), 3);
    assert_eq!(info.shm_offset.to_native(), 3 * PAGE);
    assert_eq!(info.size.to_native(), 2 * PAGE);
    assert_eq!(info.seqno.to_native(), 0);
    assert_eq!(info.flags.to_native(), 0);
    assert_eq!(props, b"");
    let (_, props) = fx.b.info(1).unwrap();
    assert_eq!(props, b"width=64\0");
}

#[test]
fn info_answers_longer_than_128_bytes() {
    let mut fx = Fixture::new(16);
    let long = format!("name={}\0", "x".repeat(200));
    fx.a.ok(&RegisterCommand::complete(1, "frames", &[(0, PAGE)])
        .props(long.as_bytes())
        .to_bytes());
    fx.b.attach("a", "frames").unwrap();
    fx.b.events();
    let (info, props) = fx.b.info(1).unwrap();
    assert_eq!(props, long.as_bytes());
    assert_eq!(info.props_size.to_native() as usize, long.len());
    // New properties are the import's now.
    fx.a.ok(&bufshare_uapi::set_properties_bytes(1, b"height=2\0"));
    assert_eq!(fx.b.info(1).unwrap().1, b"height=2\0");
    // No room for it: S_INVALID, as for any answer.
    let answer = fx.b.dev.process(
        VirtioBufshareCmdImport {
            hdr: hdr(VIRTIO_BUFSHARE_CMD_IMPORT_INFO),
            import_id: 1.into(),
        }
        .as_slice(),
        50,
    );
    assert_eq!(status_of(&answer.unwrap()), VIRTIO_BUFSHARE_S_INVALID);
    // Unknown imports.
    assert_eq!(fx.b.info(2), Err(VIRTIO_BUFSHARE_S_NO_BUFFER));
    assert_eq!(fx.b.info(0), Err(VIRTIO_BUFSHARE_S_NO_BUFFER));
    assert_eq!(fx.c.info(1), Err(VIRTIO_BUFSHARE_S_NO_BUFFER), "not c's");
}

#[test]
fn updates_in_order_released_by_the_importer() {
    let mut fx = Fixture::new(16);
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0, PAGE);
    fx.a.update(1, 1);
    // Mapped after the update: ADDED carries it.
    assert_eq!(fx.b.events(), [added(1, 1, 1, 0, PAGE)]);
    assert_eq!(fx.a.events(), [consumers(1)], "update 1 held by the import");
    fx.a.update(1, 2);
    assert_eq!(fx.b.events(), [updated(1, 1, 2)]);
    fx.a.update(1, 3);
    fx.a.update(1, 4);
    // Pending ones merge into the latest.
    assert_eq!(fx.b.events(), [updated(1, 1, 4)]);
    assert_eq!(fx.a.events(), []);
    // Released in part, then all; not past what was sent.
    assert_eq!(fx.b.release(1, 5), VIRTIO_BUFSHARE_S_INVALID);
    assert_eq!(fx.b.release(1, 2), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(fx.a.events(), [DeviceEvent::Released { id: 1, seqno: 2 }]);
    assert_eq!(fx.b.release(1, 4), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(fx.a.events(), [DeviceEvent::Released { id: 1, seqno: 4 }]);
    assert_eq!(fx.b.info(1).unwrap().0.seqno.to_native(), 4);
    assert_eq!(fx.b.release(7, 1), VIRTIO_BUFSHARE_S_NO_BUFFER);
    // CLOSE releases what was not.
    fx.a.update(1, 5);
    assert_eq!(fx.b.events(), [updated(1, 1, 5)]);
    assert_eq!(fx.a.events(), []);
    assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(fx.a.events(), [DeviceEvent::Released { id: 1, seqno: 5 }]);
    assert_eq!(fx.b.release(1, 5), VIRTIO_BUFSHARE_S_NO_BUFFER, "closed");
    // Without an import, updates are released at once.
    fx.a.update(1, 6);
    assert_eq!(fx.a.events(), [DeviceEvent::Released { id: 1, seqno: 6 }]);
    assert_eq!(fx.b.events(), []);
}

#[test]
fn freed_once_the_importer_closed() {
    let mut fx = Fixture::new(16);
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0x5000, PAGE);
    assert_eq!(fx.b.events(), [added(1, 1, 0, 0, PAGE)]);
    fx.a.events();
    fx.a.unregister(1);
    assert_eq!(fx.b.events(), [removed(1, 1)]);
    assert_eq!(fx.a.events(), [], "no FREED: b maps it");
    // Still readable until CLOSE.
    fx.a.mem.write_slice(b"x", GuestAddress(0x5000)).unwrap();
    assert_eq!(fx.b.region.read(0, 1), b"x");
    assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_OK);
    // Unmapped first, then FREED.
    assert_eq!(fx.a.events(), []);
    fx.b.mapper.run_all();
    assert_eq!(fx.b.region.log().last(), Some(&(false, 0, 0, PAGE)));
    assert_eq!(fx.a.events(), [DeviceEvent::Freed(1)]);
    assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_NO_BUFFER);
    assert_eq!(fx.b.info(1), Err(VIRTIO_BUFSHARE_S_NO_BUFFER));
    assert_eq!(fx.hub.region_used("b"), 0);
    // The range serves again.
    fx.a.register(2, "frames", 0x6000, PAGE);
    assert_eq!(fx.b.events(), [added(2, 2, 0, 0, PAGE)]);
}

#[test]
fn revoked_after_the_grace_time() {
    let mut fx = Fixture::new(16);
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0, 2 * PAGE);
    fx.b.events();
    fx.a.events();
    fx.a.unregister(1);
    assert_eq!(fx.b.events(), [removed(1, 1)]);
    // Not yet.
    let next = fx.hub.revoke_due(Instant::now()).unwrap();
    fx.b.mapper.run_all();
    assert_eq!(fx.a.events(), []);
    assert!(fx.b.region.is_mapped(0, 2 * PAGE));
    // Past the deadline: unmapped, FREED; the range stays reserved.
    assert_eq!(fx.hub.revoke_due(next), None);
    assert_eq!(fx.a.events(), []);
    fx.b.mapper.run_all();
    assert!(!fx.b.region.is_mapped(0, 1));
    assert_eq!(fx.a.events(), [DeviceEvent::Freed(1)]);
    assert_eq!(fx.hub.region_used("b"), 2 * PAGE);
    assert!(fx.b.info(1).is_ok());
    fx.a.register(2, "frames", 0, PAGE);
    assert_eq!(fx.b.events(), [added(2, 2, 0, 2 * PAGE, PAGE)], "after it");
    // CLOSE frees the range, unmaps nothing more.
    let maps = fx.b.region.log().len();
    assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_OK);
    fx.b.events();
    assert_eq!(fx.b.region.log().len(), maps);
    assert_eq!(fx.hub.region_used("b"), PAGE);
}

#[test]
fn the_revoking_thread() {
    let mut fx = Fixture::new(16);
    let thread = fx.hub.start().unwrap();
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0, PAGE);
    fx.b.events();
    fx.a.events();
    fx.a.unregister(1);
    let start = Instant::now();
    loop {
        fx.b.mapper.run_all();
        if fx.a.events() == [DeviceEvent::Freed(1)] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not revoked");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "not before the grace time"
    );
    fx.hub.stop();
    thread.join().unwrap();
}

#[test]
fn the_region_full() {
    let mut fx = Fixture::new(4);
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0, 3 * PAGE);
    fx.a.register(2, "frames", 0x10000, 2 * PAGE);
    fx.a.register(3, "frames", 0x20000, PAGE);
    assert_eq!(
        fx.b.events(),
        [
            DeviceEvent::ImportNoSpace {
                attachment: 1,
                buffer_id: 2,
                size: 2 * PAGE
            },
            added(1, 1, 0, 0, 3 * PAGE),
            added(2, 3, 0, 3 * PAGE, PAGE),
        ]
    );
    // Room again: buffer 2 is not imported later; a new one is.
    assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_OK);
    fx.a.update(2, 1);
    fx.a.register(4, "frames", 0x30000, 3 * PAGE);
    assert_eq!(fx.b.events(), [added(3, 4, 0, 0, 3 * PAGE)]);
    // Updates of a buffer not imported are released at once.
    assert!(fx
        .a
        .events()
        .contains(&DeviceEvent::Released { id: 2, seqno: 1 }));
    // Unregistered and registered again, id 2 is another buffer, which
    // fits once there is room.
    assert_eq!(fx.b.close(2), VIRTIO_BUFSHARE_S_OK);
    fx.a.unregister(2);
    fx.a.register(2, "frames", 0x10000, PAGE);
    assert_eq!(fx.b.events(), [added(4, 2, 0, 3 * PAGE, PAGE)]);
}

#[test]
fn what_cannot_be_mapped_is_refused_cleanly() {
    let mut fx = Fixture::new(16);
    fx.b.attach("a", "frames").unwrap();
    // Not whole pages.
    fx.a.register(1, "frames", 0x100, PAGE);
    fx.a.register(2, "frames", 0x1000, 100);
    // The frontend refuses.
    *lock(&fx.b.region.refuse) = true;
    fx.a.register(3, "frames", 0x4000, PAGE);
    let no_space = |buffer_id, size| DeviceEvent::ImportNoSpace {
        attachment: 1,
        buffer_id,
        size,
    };
    assert_eq!(
        fx.b.events(),
        [no_space(1, PAGE), no_space(2, 100), no_space(3, PAGE)]
    );
    assert_eq!(fx.hub.region_used("b"), 0);
    *lock(&fx.b.region.refuse) = false;
    fx.a.register(4, "frames", 0x4000, PAGE);
    assert_eq!(fx.b.events(), [added(2, 4, 0, 0, PAGE)]);
    // Buffer 3 was let go: FREED at once.
    fx.a.events();
    fx.a.unregister(3);
    assert_eq!(fx.a.events(), [DeviceEvent::Freed(3)]);
}

#[test]
fn detach_ends_the_attachment_s_events() {
    let mut fx = Fixture::new(16);
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0, PAGE);
    assert_eq!(fx.b.events(), [added(1, 1, 0, 0, PAGE)]);
    // Buffer 2's ADDED is pending when the driver detaches: it never
    // hears of import 2, which goes without a word.
    fx.a.register(2, "frames", 0x1000, PAGE);
    fx.a.update(1, 1);
    fx.b.mapper.run_all();
    fx.b.dev.collect();
    assert_eq!(fx.b.detach(1), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(fx.b.events(), [removed(1, 1)]);
    assert_eq!(fx.b.info(2), Err(VIRTIO_BUFSHARE_S_NO_BUFFER));
    // Import 1 stays mapped until closed, and gets no more updates.
    assert!(fx.b.region.is_mapped(0, PAGE));
    fx.a.update(1, 2);
    fx.a.register(3, "frames", 0x2000, PAGE);
    assert_eq!(fx.b.events(), []);
    assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_OK);
    fx.b.events();
    assert_eq!(fx.hub.region_used("b"), 0);
    fx.a.unregister(1);
    fx.a.unregister(2);
    let events = fx.a.events_but_consumers();
    assert!(events.contains(&DeviceEvent::Freed(1)), "{events:?}");
    assert!(events.contains(&DeviceEvent::Freed(2)), "{events:?}");
}

#[test]
fn the_exporter_unregisters_resets_or_loses_its_buffers() {
    for how in ["reset", "lose", "disconnect"] {
        let mut fx = Fixture::new(16);
        fx.b.attach("a", "frames").unwrap();
        fx.a.register(1, "frames", 0, PAGE);
        fx.a.register(2, "frames", 0x1000, PAGE);
        fx.b.events();
        match how {
            "reset" => fx.a.dev.reset(),
            "lose" => {
                fx.a.dev.lose_buffers();
            }
            _ => {
                fx.a.state.lock().drop_all(ResetReason::Disconnected);
            }
        }
        assert_eq!(fx.b.events(), [removed(1, 1), removed(2, 2)], "{how}");
        // No more updates; the attachment goes on: a buffer registered
        // again is imported.
        fx.a.register(1, "frames", 0x3000, PAGE);
        assert_eq!(fx.b.events(), [added(3, 1, 0, 2 * PAGE, PAGE)], "{how}");
        assert_eq!(fx.b.close(1), VIRTIO_BUFSHARE_S_OK);
        assert_eq!(fx.b.close(2), VIRTIO_BUFSHARE_S_OK);
        fx.b.events();
        assert_eq!(fx.hub.region_used("b"), PAGE);
    }
}

#[test]
fn the_importer_resets_loses_its_buffers_or_goes() {
    for how in ["reset", "lose", "disconnect"] {
        let mut fx = Fixture::new(16);
        fx.b.attach("a", "frames").unwrap();
        fx.a.register(1, "frames", 0, PAGE);
        fx.a.register(2, "frames", 0x1000, 2 * PAGE);
        fx.b.events();
        assert_eq!(fx.a.events(), [consumers(1)]);
        fx.a.update(1, 1);
        fx.a.unregister(2);
        fx.b.events();
        assert_eq!(fx.a.events(), [], "{how}");
        let maps = fx.b.region.log().len();
        match how {
            "reset" => fx.b.dev.reset(),
            "lose" => {
                fx.b.dev.lose_buffers();
            }
            _ => fx.hub.end_importer("b", End::Disconnected),
        }
        // Its attachments end: a sees one consumer less.
        let events = fx.a.events();
        assert!(events.contains(&consumers(0)), "{how}: {events:?}");
        if how == "disconnect" {
            // Nothing to unmap: let go at once.
            assert!(events.contains(&DeviceEvent::Freed(2)), "{how}: {events:?}");
            assert!(events.contains(&DeviceEvent::Released { id: 1, seqno: 1 }));
            assert_eq!(fx.b.region.log().len(), maps);
            continue;
        }
        // Released at once; freed once unmapped, which comes first in the
        // importer's mapper.
        assert_eq!(
            events,
            [consumers(0), DeviceEvent::Released { id: 1, seqno: 1 }],
            "{how}"
        );
        assert_eq!(fx.hub.region_used("b"), 0);
        assert_eq!(fx.b.info(1), Err(VIRTIO_BUFSHARE_S_NO_BUFFER));
        fx.b.mapper.run_all();
        assert_eq!(
            fx.b.region.log()[maps..],
            [(false, 0, 0, PAGE), (false, PAGE, 0, 2 * PAGE)],
            "{how}"
        );
        assert_eq!(fx.a.events(), [DeviceEvent::Freed(2)], "{how}");
        let lost: &[DeviceEvent] = if how == "lose" {
            &[DeviceEvent::Lost]
        } else {
            &[]
        };
        assert_eq!(fx.b.events(), lost, "{how}");
        // Attached again: mapped again, after the unmaps.
        assert_eq!(fx.b.attach("a", "frames"), Ok(1));
        assert_eq!(fx.b.events(), [added(3, 1, 1, 0, PAGE)], "{how}");
    }
}

#[test]
fn both_sides_lose_their_buffers_through_the_fault() {
    // Lost buffers on both sides at once: nothing is left mapped, and
    // nothing of a goes FREED (a lost them).
    let mut fx = Fixture::new(16);
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0, PAGE);
    fx.b.events();
    fx.a.events();
    fx.a.unregister(1);
    fx.a.dev.lose_buffers();
    fx.b.dev.lose_buffers();
    assert_eq!(fx.b.events(), [DeviceEvent::Lost]);
    assert!(fx.b.region.log().last().is_some_and(|l| !l.0));
    assert!(!fx.b.region.is_mapped(0, 1));
    assert_eq!(fx.a.events_but_consumers(), [DeviceEvent::Lost]);
}

#[test]
fn mappings_of_an_older_connection_are_ignored() {
    let mut fx = Fixture::new(16);
    fx.b.attach("a", "frames").unwrap();
    fx.a.register(1, "frames", 0, PAGE);
    // The frontend goes before the map ran; a new one comes.
    let old = Arc::clone(&fx.b.mapper);
    fx.hub.end_importer("b", End::Disconnected);
    let mapper = Mapper::new();
    mapper.set_channel(fx.b.region.clone());
    fx.hub.connect("b", &mapper);
    fx.b.mapper = mapper;
    old.run_all();
    assert_eq!(old.queued(), 0);
    fx.b.dev.set_driver_features(FEATURES);
    assert_eq!(fx.b.events(), []);
    assert_eq!(fx.b.attach("a", "frames"), Ok(1));
    assert_eq!(fx.b.events(), [added(2, 1, 0, 0, PAGE)]);
}

/// A small deterministic generator (xorshift64*), for the sequences below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The imports of b the hub describes: (import, buffer, offset, size,
/// whether the hub has it mapped: live or removed, whether it holds the
/// buffer: not revoked).
fn imports_of_b(fx: &Fixture) -> Vec<(u64, u64, u64, u64, bool, bool)> {
    fx.hub
        .describe("b")
        .iter()
        .map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(&format!("{name}=")))
                    .unwrap()
                    .to_string()
            };
            let num = |name: &str| {
                let v = field(name);
                match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
                    None => v.parse().unwrap(),
                }
            };
            let state = field("state");
            let mapped = state == "Live" || state.starts_with("Removed");
            let holds = state != "Revoked";
            (
                num("import"),
                num("buffer"),
                num("offset"),
                num("size"),
                mapped,
                holds,
            )
        })
        .collect()
}

#[test]
fn random_sequences_keep_the_promises() {
    // What the sequences did, all seeds together: ADDED, UPDATED, FREED,
    // NO_SPACE, REMOVED.
    let mut seen = [0u32; 5];
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut fx = Fixture::new(8);
        // a's buffers: id -> (address, registered now); ids never reused.
        let mut buffers: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
        // Unregistered, FREED expected once no import maps them.
        let mut draining: BTreeSet<u64> = BTreeSet::new();
        let mut next_id = 1;
        let mut seqnos: BTreeMap<u64, u64> = BTreeMap::new();
        // Imports b heard of (ADDED), and the last seqno sent for each.
        let mut known: BTreeMap<u64, u64> = BTreeMap::new();
        for step in 0..120 {
            let what = rng.below(14);
            match what {
                0..=2 => {
                    let id = next_id;
                    next_id += 1;
                    let pages = 1 + rng.below(3);
                    let addr = (id % 40) * 4 * PAGE + if rng.below(8) == 0 { 0x100 } else { 0 };
                    let app = if rng.below(5) == 0 { "other" } else { "frames" };
                    fx.a.register(id, app, addr, pages * PAGE);
                    fx.a.mem.write_obj(id, GuestAddress(addr)).unwrap();
                    buffers.insert(id, (addr, true));
                }
                3 | 4 => {
                    let live: Vec<u64> = buffers
                        .iter()
                        .filter(|(_, b)| b.1)
                        .map(|(id, _)| *id)
                        .collect();
                    if let Some(&id) = live.get(rng.below(live.len().max(1) as u64) as usize) {
                        let seqno = seqnos.entry(id).or_default();
                        *seqno += 1;
                        fx.a.update(id, *seqno);
                    }
                }
                5 => {
                    let live: Vec<u64> = buffers
                        .iter()
                        .filter(|(_, b)| b.1)
                        .map(|(id, _)| *id)
                        .collect();
                    if let Some(&id) = live.get(rng.below(live.len().max(1) as u64) as usize) {
                        fx.a.unregister(id);
                        buffers.get_mut(&id).unwrap().1 = false;
                        draining.insert(id);
                    }
                }
                6 => {
                    // a resets or loses its buffers: no FREED for them.
                    if rng.below(2) == 0 {
                        fx.a.dev.reset();
                    } else {
                        fx.a.dev.lose_buffers();
                    }
                    for b in buffers.values_mut() {
                        b.1 = false;
                    }
                    draining.clear();
                }
                7 => {
                    let _ = fx.b.attach("a", "frames");
                }
                8 => {
                    let _ = fx.b.detach(1);
                }
                9 | 10 => {
                    let ids: Vec<u64> = known.keys().copied().collect();
                    if let Some(&id) = ids.get(rng.below(ids.len().max(1) as u64) as usize) {
                        if rng.below(2) == 0 {
                            assert_eq!(fx.b.close(id), VIRTIO_BUFSHARE_S_OK, "seed {seed}");
                            known.remove(&id);
                        } else {
                            let sent = known[&id];
                            assert_eq!(fx.b.release(id, sent), VIRTIO_BUFSHARE_S_OK);
                            assert_eq!(
                                fx.b.release(id, sent + 1),
                                VIRTIO_BUFSHARE_S_INVALID,
                                "seed {seed}"
                            );
                        }
                    }
                }
                11 => {
                    if rng.below(2) == 0 {
                        fx.b.dev.reset();
                    } else {
                        fx.b.dev.lose_buffers();
                    }
                    known.clear();
                }
                12 => {
                    fx.hub.revoke_due(Instant::now() + Duration::from_secs(60));
                }
                _ => {}
            }
            // b's events: what it hears of, checked as a driver would.
            fx.b.mapper.run_all();
            for event in fx.b.events() {
                match event {
                    DeviceEvent::ImportAdded {
                        import_id,
                        seqno,
                        shm_offset,
                        size,
                        ..
                    } => {
                        assert!(shm_offset + size <= 8 * PAGE, "seed {seed}");
                        assert!(known.insert(import_id, seqno).is_none(), "seed {seed}");
                        seen[0] += 1;
                    }
                    DeviceEvent::ImportUpdated {
                        import_id, seqno, ..
                    } => {
                        let sent = known.get_mut(&import_id).expect("UPDATED after ADDED");
                        assert!(seqno > *sent, "seed {seed}: updates in order");
                        *sent = seqno;
                        seen[1] += 1;
                    }
                    DeviceEvent::ImportNoSpace { .. } => seen[3] += 1,
                    DeviceEvent::ImportRemoved { .. } => seen[4] += 1,
                    _ => {}
                }
            }
            // What is mapped is exactly what the hub has mapped, without
            // overlaps, and shows the exporter's bytes.
            let imports = imports_of_b(&fx);
            let mut mapped: Vec<(u64, u64)> = lock(&fx.b.region.mapped).clone();
            mapped.sort_unstable();
            let mut expected: Vec<(u64, u64)> = imports
                .iter()
                .filter(|i| i.4)
                .map(|i| (i.2, i.3.next_multiple_of(PAGE)))
                .collect();
            expected.sort_unstable();
            assert_eq!(mapped, expected, "seed {seed} step {step} ({what})");
            for w in mapped.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "seed {seed}: overlap");
            }
            for &(_, buffer, offset, _, is_mapped, _) in &imports {
                if is_mapped {
                    let id = u64::from_le_bytes(fx.b.region.read(offset, 8).try_into().unwrap());
                    assert_eq!(id, buffer, "seed {seed}: the exporter's bytes");
                }
            }
            // FREED exactly for the unregistered buffers no import maps.
            let held: BTreeSet<u64> = imports.iter().filter(|i| i.5).map(|i| i.1).collect();
            let freed: BTreeSet<u64> =
                fx.a.events()
                    .into_iter()
                    .filter_map(|e| match e {
                        DeviceEvent::Freed(id) => Some(id),
                        _ => None,
                    })
                    .collect();
            for id in &freed {
                seen[2] += 1;
                assert!(draining.remove(id), "seed {seed}: FREED {id} not draining");
                assert!(!held.contains(id), "seed {seed}: FREED {id} while imported");
            }
            for id in &draining {
                assert!(
                    held.contains(id),
                    "seed {seed} step {step}: {id} unregistered, not imported, not freed"
                );
            }
        }
    }
    let [added, updated, freed, no_space, removed] = seen;
    assert!(
        added > 100 && updated > 50 && freed > 20 && no_space > 10 && removed > 20,
        "the sequences did too little: {seen:?}"
    );
}
