// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The device's command handling with consumers attached: a sequence of
//! commands (arbitrary bytes, or commands made with the `bufshare_uapi`
//! encoders from fuzzed fields), device resets, lost buffers, and
//! consumers that subscribe, lag, take their events and go, run against a
//! `BufshareDevice` over file-backed mock guest memory whose buffer table
//! tells a consumer `Hub`.
//!
//! The target keeps a model of what the guest registered, taken from the
//! bytes of the commands the device answered `S_OK` (REGISTER, ADD_RANGES,
//! UNREGISTER; an `S_INVALID` ADD_RANGES drops an incomplete buffer; a
//! reset or lost buffers drop them all), and checks after every step:
//!
//! * no panic; every answer fits in the room given, and is at least a
//!   header with a known status;
//! * the device's table holds exactly the model's buffers, with their
//!   sizes, range counts and completeness;
//! * each consumer, taking its events in order: gets an ADD only for a
//!   buffer it does not hold, of an application it subscribed to, that is
//!   registered and complete at that moment, of the size registered, whose
//!   memory (files and offsets) is exactly the guest memory of the ranges
//!   the guest registered, nothing more; gets UPDATE and PROPERTIES only
//!   for buffers it holds, their seqnos increasing; gets REMOVE only for a
//!   buffer it holds; an ERROR only for overflowing its queue;
//! * whenever the consumers have taken everything queued (a `Drain` step,
//!   and at the end), each holds exactly the complete buffers of its
//!   applications: every ADD was followed by a REMOVE or RESET once the
//!   guest unregistered the buffer or the device was reset.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use bufshare_consumer::ErrorCode;
use bufshare_fuzz::{
    TAG_COMMAND, TAG_DRAIN, TAG_FEATURES, TAG_LOSE_BUFFERS, TAG_RESET, TAG_SUBSCRIBE, TAG_TAKE,
    TAG_UNSUBSCRIBE,
};
use bufshare_uapi::{
    add_ranges_bytes, set_properties_bytes, unregister_bytes, update_command, RegisterCommand,
    VirtioBufshareCmdAddRanges as AddRanges, VirtioBufshareCmdHdr,
    VirtioBufshareCmdRegister as Register, VirtioBufshareCmdUnregister, VirtioBufshareCmdUpdate,
    VirtioBufshareRespInfo, VIRTIO_BUFSHARE_APP_LEN, VIRTIO_BUFSHARE_CMD_ADD_RANGES,
    VIRTIO_BUFSHARE_CMD_GET_INFO, VIRTIO_BUFSHARE_CMD_REGISTER, VIRTIO_BUFSHARE_CMD_UNREGISTER,
    VIRTIO_BUFSHARE_CMD_UPDATE, VIRTIO_BUFSHARE_F_BUFFERS, VIRTIO_BUFSHARE_F_GENERATION,
    VIRTIO_BUFSHARE_S_INVALID, VIRTIO_BUFSHARE_S_NO_SPACE, VIRTIO_BUFSHARE_S_OK,
};
use libfuzzer_sys::fuzz_target;
use vhost_user_bufshare::buffers::{SharedState, TableObserver};
use vhost_user_bufshare::consumer::access::{Applications, RamAccess};
use vhost_user_bufshare::consumer::export::Receiver;
use vhost_user_bufshare::consumer::hub::{ConsumerQueue, Hub, Item, Next};
use vhost_user_bufshare::device::{BufshareDevice, Limits, RESP_HDR_SIZE};
use vm_memory::{ByteValued, FileOffset, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

/// Small limits, so that every one of them is reached.
const LIMITS: Limits = Limits {
    max_ranges: 6,
    max_props_size: 64,
    max_buffers: 4,
    max_buffer_size: 0x1_0000,
};
const GUEST: &str = "g0";
const APPS: [&str; 3] = ["a", "b", "c"];
const GRAIN: u64 = 0x800;

/// Guest RAM: `(guest address, length, memory file, offset in the file)`.
/// Two adjacent regions in one file, a gap, a region at an offset of a
/// second file.
const REGIONS: [(u64, u64, usize, u64); 3] = [
    (0, 0x4000, 0, 0),
    (0x4000, 0x4000, 0, 0x4000),
    (0x1_0000, 0x4000, 1, 0x1000),
];
/// Where fuzzed ranges start: in the first region, across the first two,
/// in the third, in the gap.
const BASES: [u64; 4] = [0, 0x4000 - 2 * GRAIN, 0x1_0000, 0x8000];

struct Memory {
    mem: GuestMemoryMmap,
    /// (device, inode) of each memory file.
    files: [(u64, u64); 2],
}

fn memfd(size: u64) -> File {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name, no pointers kept.
    let fd = unsafe { libc::memfd_create(c"bufshare-fuzz".as_ptr(), flags) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a descriptor just made, owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).expect("memfd size");
    // Sealed as QEMU's memory-backend-memfd seals guest RAM.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // SAFETY: F_ADD_SEALS takes an int, on a descriptor we own.
    let rc = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) };
    assert_eq!(rc, 0, "F_ADD_SEALS");
    file
}

fn memory() -> &'static Memory {
    static MEM: OnceLock<Memory> = OnceLock::new();
    MEM.get_or_init(|| {
        let files = [memfd(0x8000), memfd(0x5000)];
        let ranges: Vec<_> = REGIONS
            .iter()
            .map(|&(addr, len, file, offset)| {
                let fo = FileOffset::new(files[file].try_clone().expect("dup"), offset);
                (GuestAddress(addr), len as usize, Some(fo))
            })
            .collect();
        let ids = files.each_ref().map(|f| {
            let m = f.metadata().expect("fstat");
            (m.dev(), m.ino())
        });
        Memory {
            mem: GuestMemoryMmap::from_ranges_with_files(&ranges).expect("guest memory"),
            files: ids,
        }
    })
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Range {
    base: u8,
    start: u8,
    grains: u8,
    /// Off the grain by this many bytes (mostly 0).
    skew: i8,
}

impl Range {
    fn get(self) -> (u64, u64) {
        let skew = if self.skew.unsigned_abs() > 100 {
            i64::from(self.skew % 3)
        } else {
            0
        };
        let addr = BASES[usize::from(self.base) % BASES.len()] + u64::from(self.start % 8) * GRAIN;
        let addr = addr.wrapping_add_signed(skew);
        (addr, u64::from(self.grains % 9) * GRAIN)
    }
}

#[derive(Arbitrary, Debug)]
enum Props {
    None,
    Raw(Vec<u8>),
    Size(u8, u8),
    Width(u8),
}

impl Props {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Props::None => Vec::new(),
            Props::Raw(b) => b.clone(),
            Props::Size(w, h) => format!("width={w}\0height={h}\0").into_bytes(),
            Props::Width(w) => format!("width={w}\0format=XR24\0").into_bytes(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Size {
    /// The sum of the ranges in the command.
    Ranges,
    /// That many grains.
    Grains(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Any bytes, `room` bytes for the answer.
    Raw {
        bytes: Vec<u8>,
        room: u8,
    },
    Register {
        id: u8,
        app: u8,
        size: Size,
        /// Ranges in all, beyond those in the command.
        more: u8,
        ranges: Vec<Range>,
        props: Props,
    },
    AddRanges {
        id: u8,
        /// The next range if `None`.
        first: Option<u8>,
        ranges: Vec<Range>,
    },
    Update {
        id: u8,
        /// The next seqno if `None`.
        seqno: Option<u8>,
        range: Option<(u16, u16)>,
        rect: Option<[u8; 4]>,
    },
    SetProperties {
        id: u8,
        props: Props,
    },
    Unregister {
        id: u8,
    },
    GetInfo,
    Reset,
    LoseBuffers,
    Features(u8),
    Subscribe(u8),
    Unsubscribe(u8),
    /// Consumer `consumer` takes up to `count` events.
    Take {
        consumer: u8,
        count: u8,
    },
    Drain,
}

/// A buffer as the guest registered it.
#[derive(Debug)]
struct Registered {
    application: String,
    size: u64,
    num_ranges: u32,
    ranges: Vec<(u64, u64)>,
    seqno: u64,
}

impl Registered {
    fn complete(&self) -> bool {
        self.ranges.len() as u64 == u64::from(self.num_ranges)
    }
}

struct Consumer {
    queue: Arc<ConsumerQueue>,
    applications: Applications,
    /// The buffers whose ADD it took, and the last seqno it saw of each.
    held: BTreeMap<u64, u64>,
}

struct Harness {
    dev: BufshareDevice,
    hub: Arc<Hub>,
    model: BTreeMap<u64, Registered>,
    consumers: Vec<Consumer>,
    features: u64,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The `(addr, len)` ranges at `at` in `b` (checked by the device).
fn ranges_at(b: &[u8], at: usize, count: u32) -> Vec<(u64, u64)> {
    (0..count as usize)
        .map(|i| {
            let at = at + i * 16;
            (le64(b, at).unwrap(), le64(b, at + 8).unwrap())
        })
        .collect()
}

/// Guest ranges, adjacent ones merged, empty ones dropped.
fn merged(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (addr, len) in ranges {
        if len == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.0 + last.1 == addr => last.1 += len,
            _ => out.push((addr, len)),
        }
    }
    out
}

/// The guest memory of `len` bytes at `offset` in memory file `file`:
/// panics on any byte that is not guest RAM.
fn guest_ranges(file: usize, offset: u64, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut at, end) = (offset, offset.checked_add(len).expect("segment overflows"));
    while at < end {
        let &(addr, rlen, _, start) = REGIONS
            .iter()
            .find(|&&(_, rlen, f, start)| f == file && start <= at && at < start + rlen)
            .unwrap_or_else(|| panic!("file {file} byte {at:#x} given out is not guest RAM"));
        let n = (start + rlen - at).min(end - at);
        out.push((addr + (at - start), n));
        at += n;
    }
    out
}

fn status(answer: &[u8]) -> u32 {
    le32(answer, 0).expect("a header")
}

impl Harness {
    fn new(queue_limit: usize) -> Self {
        let hub = Arc::new(Hub::new(queue_limit, None));
        let state = Arc::new(SharedState::default());
        let observer: Arc<dyn TableObserver> = hub.add_guest(GUEST).expect("guest");
        state.lock().observer = Some(observer);
        let mut dev = BufshareDevice::with_state(LIMITS, state);
        dev.set_memory(GuestMemoryAtomic::new(memory().mem.clone()));
        let features = (1 << VIRTIO_BUFSHARE_F_BUFFERS) | (1 << VIRTIO_BUFSHARE_F_GENERATION);
        dev.set_driver_features(features);
        Self {
            dev,
            hub,
            model: BTreeMap::new(),
            consumers: Vec::new(),
            features,
        }
    }

    /// Sends `request` with `room` bytes for the answer, checks the answer
    /// and brings the model up to date.
    fn command(&mut self, request: &[u8], room: usize) {
        let Some(mut answer) = self.dev.process(request, room) else {
            assert!(room < RESP_HDR_SIZE, "no answer with {room} bytes of room");
            return;
        };
        assert!(answer.len() >= RESP_HDR_SIZE && answer.len() <= room);
        self.dev.stamp(&mut answer);
        let st = status(&answer);
        assert!(st <= VIRTIO_BUFSHARE_S_NO_SPACE, "status {st:#x}");
        if self.features & (1 << VIRTIO_BUFSHARE_F_GENERATION) != 0 {
            assert_eq!(le32(&answer, 4), Some(self.dev.generation()));
        }
        let cmd = le32(request, 0).unwrap_or(u32::MAX);
        if answer.len() > RESP_HDR_SIZE {
            assert_eq!(cmd, VIRTIO_BUFSHARE_CMD_GET_INFO);
            assert_eq!(answer.len(), size_of::<VirtioBufshareRespInfo>());
            let num_buffers =
                le64(&answer, offset_of!(VirtioBufshareRespInfo, num_buffers)).unwrap();
            assert_eq!(num_buffers, self.model.len() as u64, "GET_INFO num_buffers");
        }
        if st == VIRTIO_BUFSHARE_S_OK {
            let buffers = self.features & (1 << VIRTIO_BUFSHARE_F_BUFFERS) != 0;
            assert!(
                buffers || cmd == VIRTIO_BUFSHARE_CMD_GET_INFO,
                "buffer command {cmd:#x} carried out without the feature"
            );
            let id = le64(request, offset_of!(VirtioBufshareCmdUnregister, buffer_id)).unwrap_or(0);
            match cmd {
                VIRTIO_BUFSHARE_CMD_REGISTER => {
                    let size = le64(request, offset_of!(Register, size)).unwrap();
                    let num_ranges = le32(request, offset_of!(Register, num_ranges)).unwrap();
                    let nr_ranges = le32(request, offset_of!(Register, nr_ranges)).unwrap();
                    let props_size = le32(request, offset_of!(Register, props_size)).unwrap();
                    let props_size = props_size as usize;
                    let app_at = offset_of!(Register, application);
                    let app = &request[app_at..app_at + VIRTIO_BUFSHARE_APP_LEN];
                    let app = &app[..app.iter().position(|&b| b == 0).unwrap()];
                    let at = size_of::<Register>() + props_size.next_multiple_of(8);
                    assert!(id != 0 && size != 0 && num_ranges != 0);
                    assert!(size <= LIMITS.max_buffer_size && num_ranges <= LIMITS.max_ranges);
                    assert!(
                        self.model.len() < LIMITS.max_buffers as usize,
                        "REGISTER beyond max_buffers"
                    );
                    let ranges = ranges_at(request, at, nr_ranges);
                    let old = self.model.insert(
                        id,
                        Registered {
                            application: String::from_utf8(app.to_vec()).unwrap(),
                            size,
                            num_ranges,
                            ranges,
                            seqno: 0,
                        },
                    );
                    assert!(old.is_none(), "buffer {id} registered twice");
                }
                VIRTIO_BUFSHARE_CMD_ADD_RANGES => {
                    let first = le32(request, offset_of!(AddRanges, first)).unwrap();
                    let nr_ranges = le32(request, offset_of!(AddRanges, nr_ranges)).unwrap();
                    let at = size_of::<AddRanges>();
                    let b = self.model.get_mut(&id).expect("ADD_RANGES of no buffer");
                    assert!(!b.complete(), "ADD_RANGES to a complete buffer");
                    assert_eq!(first as usize, b.ranges.len(), "ADD_RANGES out of order");
                    b.ranges.extend(ranges_at(request, at, nr_ranges));
                    assert!(b.ranges.len() as u64 <= u64::from(b.num_ranges));
                }
                VIRTIO_BUFSHARE_CMD_UPDATE => {
                    let seqno = le64(request, offset_of!(VirtioBufshareCmdUpdate, seqno)).unwrap();
                    let b = self.model.get_mut(&id).expect("UPDATE of no buffer");
                    assert!(b.complete(), "UPDATE of an incomplete buffer");
                    assert!(seqno > b.seqno, "UPDATE seqno {seqno} after {}", b.seqno);
                    b.seqno = seqno;
                }
                VIRTIO_BUFSHARE_CMD_UNREGISTER => {
                    assert!(self.model.remove(&id).is_some(), "UNREGISTER of no buffer");
                }
                _ => {}
            }
        } else if st == VIRTIO_BUFSHARE_S_INVALID
            && cmd == VIRTIO_BUFSHARE_CMD_ADD_RANGES
            && request.len() >= 16
        {
            // An S_INVALID ADD_RANGES drops the incomplete buffer it names.
            let id = le64(request, offset_of!(VirtioBufshareCmdUnregister, buffer_id)).unwrap();
            if self.model.get(&id).is_some_and(|b| !b.complete()) {
                self.model.remove(&id);
            }
        }
        self.check_table();
    }

    /// The device's table holds the model's buffers.
    fn check_table(&self) {
        let state = self.dev.state().lock();
        let ids: BTreeSet<u64> = state.buffers.iter().map(|b| b.id).collect();
        let model: BTreeSet<u64> = self.model.keys().copied().collect();
        assert_eq!(ids, model, "device table and guest model differ");
        for b in state.buffers.iter() {
            let m = &self.model[&b.id];
            assert_eq!(b.size, m.size);
            assert_eq!(b.application, m.application);
            assert_eq!(b.num_ranges, m.num_ranges);
            assert_eq!(b.ranges as usize, m.ranges.len());
            assert_eq!(b.complete, m.complete());
            assert_eq!(b.seqno, m.seqno);
            let received: u64 = m.ranges.iter().map(|r| r.1).sum();
            assert_eq!(b.received, received);
            assert!(received <= b.size);
            if b.complete {
                assert_eq!(received, b.size, "complete buffer of the wrong size");
            }
            let segments = merged(b.segments.iter().map(|s| (s.addr, s.len)));
            assert_eq!(segments, merged(m.ranges.iter().copied()));
        }
    }

    fn reset_model(&mut self) {
        self.model.clear();
        self.check_table();
    }

    /// Consumer `i` takes up to `count` events; returns whether it is still
    /// connected.
    fn take(&mut self, i: usize, count: usize) -> bool {
        let memory = memory();
        let c = &mut self.consumers[i];
        for _ in 0..count {
            match c.queue.pop() {
                Next::Idle => return true,
                Next::Done => panic!("consumer taken from after its end"),
                Next::End(error) => {
                    assert_eq!(error.code, ErrorCode::Overflow, "consumer ended: {error}");
                    assert!(matches!(c.queue.pop(), Next::Done));
                    return false;
                }
                Next::Item(item) => {
                    assert_eq!(&**item.guest(), GUEST);
                    match item {
                        Item::Add {
                            id,
                            application,
                            size,
                            seqno,
                            export,
                            ..
                        } => {
                            assert!(!c.held.contains_key(&id), "ADD of held buffer {id}");
                            assert!(c.applications.contains(&application));
                            let b = self
                                .model
                                .get(&id)
                                .unwrap_or_else(|| panic!("ADD of buffer {id}, not registered"));
                            assert!(b.complete(), "ADD of incomplete buffer {id}");
                            assert_eq!(*application, *b.application);
                            assert_eq!(size, b.size);
                            assert!(seqno <= b.seqno);
                            let files: Vec<usize> = export
                                .files()
                                .iter()
                                .map(|f| {
                                    let m = f.metadata().unwrap();
                                    memory
                                        .files
                                        .iter()
                                        .position(|&id| id == (m.dev(), m.ino()))
                                        .expect("a file that is not guest memory")
                                })
                                .collect();
                            let given = merged(export.segments().iter().flat_map(|s| {
                                guest_ranges(files[s.file as usize], s.offset, s.len)
                            }));
                            assert_eq!(
                                given,
                                merged(b.ranges.iter().copied()),
                                "buffer {id}: consumer given other memory than registered"
                            );
                            c.held.insert(id, seqno);
                        }
                        Item::Update { id, info, .. } => {
                            let last = c
                                .held
                                .get_mut(&id)
                                .unwrap_or_else(|| panic!("UPDATE of buffer {id}, not held"));
                            assert!(info.seqno > *last, "seqno {} after {last}", info.seqno);
                            *last = info.seqno;
                        }
                        Item::Properties { id, .. } => {
                            assert!(c.held.contains_key(&id), "PROPERTIES of {id}, not held");
                        }
                        Item::Remove { id, .. } => {
                            assert!(c.held.remove(&id).is_some(), "REMOVE of {id}, not held");
                        }
                        Item::Reset { .. } => c.held.clear(),
                    }
                }
            }
        }
        true
    }

    /// Consumer `i` takes everything; gone if it overflowed.
    fn take_all(&mut self, i: usize) -> bool {
        self.take(i, usize::MAX)
    }

    /// Every consumer takes everything; then each holds exactly the
    /// complete buffers of its applications.
    fn drain(&mut self) {
        let mut i = 0;
        while i < self.consumers.len() {
            if self.take_all(i) {
                i += 1;
                continue;
            }
            let c = self.consumers.remove(i);
            self.hub.unsubscribe(&c.queue);
        }
        for c in &self.consumers {
            let expected: BTreeSet<u64> = self
                .model
                .iter()
                .filter(|(_, b)| b.complete() && c.applications.contains(&b.application))
                .map(|(&id, _)| id)
                .collect();
            let held: BTreeSet<u64> = c.held.keys().copied().collect();
            assert_eq!(
                held, expected,
                "consumer holds other buffers than the guest's"
            );
        }
    }

    fn step(&mut self, op: &Op) {
        let room = size_of::<VirtioBufshareRespInfo>();
        let id = |id: &u8| u64::from(*id % 6);
        match op {
            Op::Raw { bytes, room } => self.command(bytes, usize::from(*room)),
            Op::Register {
                id: i,
                app,
                size,
                more,
                ranges,
                props,
            } => {
                let ranges: Vec<_> = ranges.iter().take(8).map(|r| r.get()).collect();
                let sum: u64 = ranges.iter().map(|r| r.1).sum();
                let size = match size {
                    Size::Ranges => sum,
                    Size::Grains(g) => u64::from(*g) * GRAIN,
                    Size::Raw(s) => *s,
                };
                let num = ranges.len() as u32 + u32::from(*more % 4);
                let app = APPS.get(usize::from(*app)).copied().unwrap_or("bad app");
                let cmd =
                    RegisterCommand::new(id(i), app, size, num, &ranges).props(&props.bytes());
                self.command(&cmd.to_bytes(), room);
            }
            Op::AddRanges {
                id: i,
                first,
                ranges,
            } => {
                let ranges: Vec<_> = ranges.iter().take(8).map(|r| r.get()).collect();
                let next = self.model.get(&id(i)).map_or(0, |b| b.ranges.len() as u32);
                let first = first.map_or(next, u32::from);
                self.command(&add_ranges_bytes(id(i), first, &ranges), room);
            }
            Op::Update {
                id: i,
                seqno,
                range,
                rect,
            } => {
                let next = self.model.get(&id(i)).map_or(1, |b| b.seqno + 1);
                let seqno = seqno.map_or(next, u64::from);
                let range = range.map(|(o, l)| (u64::from(o), u64::from(l)));
                let rect = rect.map(|r| r.map(u32::from));
                let cmd = update_command(id(i), seqno, range, rect);
                self.command(cmd.as_slice(), room);
            }
            Op::SetProperties { id: i, props } => {
                self.command(&set_properties_bytes(id(i), &props.bytes()), room)
            }
            Op::Unregister { id: i } => self.command(&unregister_bytes(id(i)), room),
            Op::GetInfo => {
                let cmd = VirtioBufshareCmdHdr {
                    type_: VIRTIO_BUFSHARE_CMD_GET_INFO.into(),
                    flags: 0.into(),
                };
                self.command(cmd.as_slice(), room);
            }
            Op::Reset => {
                self.dev.reset();
                self.reset_model();
            }
            Op::LoseBuffers => {
                let old = self.dev.generation();
                assert_eq!(self.dev.lose_buffers(), self.model.len());
                assert_ne!(self.dev.generation(), old);
                self.reset_model();
            }
            Op::Features(f) => {
                self.features = u64::from(*f & 3);
                self.dev.set_driver_features(self.features);
            }
            Op::Subscribe(which) => {
                if self.consumers.len() >= 4 {
                    return;
                }
                let applications = match which % 4 {
                    0 => Applications::All,
                    n => Applications::Only(
                        APPS[..usize::from(n)]
                            .iter()
                            .map(|a| a.to_string())
                            .collect(),
                    ),
                };
                let queue = self
                    .hub
                    .subscribe(
                        "fuzz".into(),
                        applications.clone(),
                        Receiver {
                            version: bufshare_consumer::VERSION,
                            ram: Some(RamAccess::ReadWrite),
                        },
                    )
                    .expect("subscribe");
                self.consumers.push(Consumer {
                    queue,
                    applications,
                    held: BTreeMap::new(),
                });
            }
            Op::Unsubscribe(i) => {
                if !self.consumers.is_empty() {
                    let c = self
                        .consumers
                        .remove(usize::from(*i) % self.consumers.len());
                    self.hub.unsubscribe(&c.queue);
                }
            }
            Op::Take { consumer, count } => {
                if !self.consumers.is_empty() {
                    let i = usize::from(*consumer) % self.consumers.len();
                    if !self.take(i, usize::from(*count)) {
                        let c = self.consumers.remove(i);
                        self.hub.unsubscribe(&c.queue);
                    }
                }
            }
            Op::Drain => self.drain(),
        }
    }
}

/// The next step of the input (see `bufshare_fuzz`), if any.
fn next_op(u: &mut Unstructured<'_>) -> Option<Op> {
    fn byte(u: &mut Unstructured<'_>) -> u8 {
        u.arbitrary().unwrap_or(0)
    }
    let tag = byte(u);
    Some(match tag {
        TAG_COMMAND => {
            let room = byte(u);
            let len = u16::from_le_bytes([byte(u), byte(u)]);
            let bytes = u.bytes(usize::from(len).min(u.len())).ok()?.to_vec();
            Op::Raw { bytes, room }
        }
        TAG_RESET => Op::Reset,
        TAG_LOSE_BUFFERS => Op::LoseBuffers,
        TAG_FEATURES => Op::Features(byte(u)),
        TAG_SUBSCRIBE => Op::Subscribe(byte(u)),
        TAG_UNSUBSCRIBE => Op::Unsubscribe(byte(u)),
        TAG_TAKE => Op::Take {
            consumer: byte(u),
            count: byte(u),
        },
        TAG_DRAIN => Op::Drain,
        _ => Op::arbitrary(u).ok()?,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(limit) = u.arbitrary::<u8>() else {
        return;
    };
    let mut h = Harness::new(usize::from(limit % 16) + 1);
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        let Some(op) = next_op(&mut u) else {
            break;
        };
        h.step(&op);
    }
    h.drain();
});
