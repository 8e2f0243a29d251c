// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The backend against mock guest memory and a mock split virtqueue.

use std::fs::File;
use std::mem::size_of;

use bufshare_uapi::{
    VirtioBufshareRespInfo, VIRTIO_BUFSHARE_CMD_GET_INFO, VIRTIO_BUFSHARE_S_INVALID,
    VIRTIO_BUFSHARE_S_UNSUPPORTED,
};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::*;

const MEM_SIZE: u64 = 0x10_0000;
const QSIZE: u16 = 256;
/// Where the tests put their buffers, after the rings.
const BUF: u64 = 0x4_0000;
const INFO_SIZE: u32 = size_of::<VirtioBufshareRespInfo>() as u32;
/// What the writable buffers hold before the device writes.
const POISON: u8 = 0xa5;

const LIMITS: Limits = Limits {
    max_ranges: 0x1122_3344,
    max_props_size: 0x5566_7788,
    max_buffers: 0x99aa_bbcc,
    max_buffer_size: 0x0102_0304_0506_0708,
};

/// A descriptor of a test chain: guest address, length, device-writable.
#[derive(Clone, Copy)]
struct Desc(u64, u32, bool);

struct Setup<'a> {
    mem: &'a GuestMemoryMmap,
    queue: MockSplitQueue<'a, GuestMemoryMmap>,
    vring: VringRwLock,
    backend: VhostUserBufshareBackend,
    /// Receives 8 bytes per notification of the driver.
    calls: File,
    /// Next free descriptor table index.
    next_desc: u16,
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

impl<'a> Setup<'a> {
    fn new(mem: &'a GuestMemoryMmap, event_idx: bool) -> Self {
        let queue = MockSplitQueue::new(mem, QSIZE);
        let vring = VringRwLock::new(GuestMemoryAtomic::new(mem.clone()), QSIZE).unwrap();
        vring.set_queue_size(QSIZE);
        vring
            .set_queue_info(
                queue.desc_table_addr().0,
                queue.avail_addr().0,
                queue.used_addr().0,
            )
            .unwrap();
        vring.set_queue_event_idx(event_idx);
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        let calls = tempfile::tempfile().unwrap();
        vring.set_call(Some(calls.try_clone().unwrap()));

        let mut backend = VhostUserBufshareBackend::new(LIMITS).unwrap();
        backend
            .update_memory(GuestMemoryAtomic::new(mem.clone()))
            .unwrap();
        backend.set_event_idx(event_idx);
        Self {
            mem,
            queue,
            vring,
            backend,
            calls,
            next_desc: 0,
        }
    }

    /// Makes `descs` one chain in the descriptor table and offers it.
    fn add_chain(&mut self, descs: &[Desc]) {
        let first = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &Desc(addr, len, writable))| {
                let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
                let last = i + 1 == descs.len();
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let next = if last { 0 } else { first + i as u16 + 1 };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        self.queue.add_desc_chains(&raw, first).unwrap();
        self.next_desc += descs.len() as u16;
        self.poison(descs);
    }

    /// Offers one descriptor pointing at an indirect table holding `descs`,
    /// the table being written at `table`.
    fn add_indirect_chain(&mut self, table: u64, descs: &[Desc]) {
        for (i, &Desc(addr, len, writable)) in descs.iter().enumerate() {
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            let last = i + 1 == descs.len();
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { i as u16 + 1 };
            let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            self.mem
                .write_obj(desc, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let head = SplitDescriptor::new(
            table,
            16 * descs.len() as u32,
            VRING_DESC_F_INDIRECT as u16,
            0,
        );
        self.queue
            .add_desc_chains(&[RawDescriptor::from(head)], self.next_desc)
            .unwrap();
        self.next_desc += 1;
        self.poison(descs);
    }

    /// Fills the in-memory writable buffers with POISON.
    fn poison(&self, descs: &[Desc]) {
        for &Desc(addr, len, writable) in descs {
            if writable && addr + u64::from(len) <= MEM_SIZE {
                let poison = vec![POISON; len as usize];
                self.mem.write_slice(&poison, GuestAddress(addr)).unwrap();
            }
        }
    }

    fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    /// The driver kicks the queue.
    fn kick(&mut self) {
        self.backend
            .handle_event(0, EventSet::IN, std::slice::from_ref(&self.vring), 0)
            .unwrap();
    }

    fn used_idx(&self) -> u16 {
        self.queue.used().idx().load()
    }

    /// The `i`th used element: (descriptor head, length).
    fn used(&self, i: u16) -> (u32, u32) {
        let elem = self.queue.used().ring().ref_at(i.into()).unwrap().load();
        (elem.id(), elem.len())
    }

    fn notifications(&self) -> u64 {
        self.calls.metadata().unwrap().len() / 8
    }

    /// Sets `used_event`, the used index at which the driver wants to be
    /// notified (with EVENT_IDX).
    fn set_used_event(&self, idx: u16) {
        let addr = self.queue.avail_addr().0 + 4 + 2 * u64::from(QSIZE);
        self.mem.write_obj(idx.to_le(), GuestAddress(addr)).unwrap();
    }

    /// Reads `avail_event`, the available index at which the device wants
    /// to be kicked (with EVENT_IDX).
    fn avail_event(&self) -> u16 {
        let addr = self.queue.used_addr().0 + 4 + 8 * u64::from(QSIZE);
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }
}

fn cmd(cmd: u32, flags: u32) -> Vec<u8> {
    let mut bytes = cmd.to_le_bytes().to_vec();
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes
}

fn get_info() -> Vec<u8> {
    cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0)
}

fn status_only(status: u32) -> Vec<u8> {
    let mut bytes = status.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 4]);
    bytes
}

/// The exact bytes of a GET_INFO answer, written out by hand.
fn info_bytes(num_commands: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0, 0, 0, 0]); // hdr.status = S_OK
    b.extend_from_slice(&[0, 0, 0, 0]); // hdr.generation
    b.extend_from_slice(&[1, 0, 0, 0]); // version
    b.extend_from_slice(&[0x44, 0x33, 0x22, 0x11]); // max_ranges
    b.extend_from_slice(&[0x88, 0x77, 0x66, 0x55]); // max_props_size
    b.extend_from_slice(&[0xcc, 0xbb, 0xaa, 0x99]); // max_buffers
    b.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]); // max_buffer_size
    b.extend_from_slice(&[0; 8]); // num_buffers
    b.extend_from_slice(&num_commands.to_le_bytes());
    let mut name = format!("vhost-user-bufshare {}", env!("CARGO_PKG_VERSION")).into_bytes();
    name.resize(32, 0);
    b.extend_from_slice(&name);
    assert_eq!(b.len(), INFO_SIZE as usize);
    b
}

/// Number of commands reported by the GET_INFO answer at `addr`.
fn num_commands(s: &Setup, addr: u64) -> u64 {
    let bytes = s.read(addr, INFO_SIZE as usize);
    u64::from_le_bytes(bytes[40..48].try_into().unwrap())
}

#[test]
fn get_info_byte_exact() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    s.write(BUF, &get_info());
    s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x100, INFO_SIZE + 16, true)]);
    s.kick();

    assert_eq!(s.used_idx(), 1);
    assert_eq!(s.used(0), (0, INFO_SIZE));
    let mut expected = info_bytes(1);
    expected.extend_from_slice(&[POISON; 16]); // untouched past the answer
    assert_eq!(s.read(BUF + 0x100, INFO_SIZE as usize + 16), expected);
    assert_eq!(s.notifications(), 1);
    assert_eq!(s.backend.device().num_commands(), 1);
}

#[test]
fn command_and_answer_split_across_descriptors() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    let command = get_info();
    s.write(BUF, &command[..3]);
    s.write(BUF + 0x40, &command[3..]);
    s.add_chain(&[
        Desc(BUF, 3, false),
        Desc(BUF + 0x40, 5, false),
        Desc(BUF + 0x100, 5, true),
        Desc(BUF + 0x200, 30, true),
        Desc(BUF + 0x300, 100, true),
    ]);
    s.kick();

    assert_eq!(s.used(0), (0, INFO_SIZE));
    let expected = info_bytes(1);
    let mut got = s.read(BUF + 0x100, 5);
    got.extend(s.read(BUF + 0x200, 30));
    got.extend(s.read(BUF + 0x300, 45));
    assert_eq!(got, expected);
    assert_eq!(s.read(BUF + 0x300 + 45, 55), vec![POISON; 55]);
}

#[test]
fn indirect_descriptor_chain() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    let command = get_info();
    s.write(BUF, &command[..6]);
    s.write(BUF + 0x80, &command[6..]);
    s.add_indirect_chain(
        0x8_0000,
        &[
            Desc(BUF, 6, false),
            Desc(BUF + 0x80, 2, false),
            Desc(BUF + 0x100, 8, true),
            Desc(BUF + 0x200, INFO_SIZE, true),
        ],
    );
    s.kick();

    assert_eq!(s.used_idx(), 1);
    assert_eq!(s.used(0), (0, INFO_SIZE));
    let mut got = s.read(BUF + 0x100, 8);
    got.extend(s.read(BUF + 0x200, INFO_SIZE as usize - 8));
    assert_eq!(got, info_bytes(1));
}

/// Runs one command with `room` writable bytes; returns the used length and
/// the first `room` bytes of the writable buffer.
fn run_one(command: &[u8], room: u32) -> (u32, Vec<u8>) {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    let mut descs = Vec::new();
    if !command.is_empty() {
        s.write(BUF, command);
        descs.push(Desc(BUF, command.len() as u32, false));
    }
    descs.push(Desc(BUF + 0x1000, room, true));
    s.add_chain(&descs);
    s.kick();
    assert_eq!(s.used_idx(), 1, "the chain must be returned");
    assert_eq!(s.notifications(), 1);
    let (head, len) = s.used(0);
    assert_eq!(head, 0);
    (len, s.read(BUF + 0x1000, room as usize))
}

fn assert_status_only(command: &[u8], status: u32) {
    let (len, bytes) = run_one(command, INFO_SIZE);
    assert_eq!(len, 8);
    assert_eq!(bytes[..8], status_only(status));
    assert!(bytes[8..].iter().all(|&b| b == POISON));
}

#[test]
fn short_command_is_invalid() {
    assert_status_only(&[], VIRTIO_BUFSHARE_S_INVALID);
    assert_status_only(&get_info()[..7], VIRTIO_BUFSHARE_S_INVALID);
    assert_status_only(&[1], VIRTIO_BUFSHARE_S_INVALID);
}

#[test]
fn nonzero_flags_are_invalid() {
    assert_status_only(
        &cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 1),
        VIRTIO_BUFSHARE_S_INVALID,
    );
    assert_status_only(&cmd(0x1234, 4), VIRTIO_BUFSHARE_S_INVALID);
}

#[test]
fn trailing_bytes_are_invalid() {
    let mut command = get_info();
    command.extend_from_slice(&[0; 4]);
    assert_status_only(&command, VIRTIO_BUFSHARE_S_INVALID);
}

#[test]
fn unknown_command_is_unsupported() {
    assert_status_only(&cmd(0, 0), VIRTIO_BUFSHARE_S_UNSUPPORTED);
    assert_status_only(&cmd(0x0002, 0), VIRTIO_BUFSHARE_S_UNSUPPORTED);
    assert_status_only(&cmd(0xffff_ffff, 0), VIRTIO_BUFSHARE_S_UNSUPPORTED);
}

#[test]
fn too_small_for_the_info_gets_a_bare_invalid_header() {
    for room in [8, 9, 40, INFO_SIZE - 1] {
        let (len, bytes) = run_one(&get_info(), room);
        assert_eq!(len, 8, "room {room}");
        assert_eq!(bytes[..8], status_only(VIRTIO_BUFSHARE_S_INVALID));
        assert!(bytes[8..].iter().all(|&b| b == POISON));
    }
    let (len, bytes) = run_one(&get_info(), INFO_SIZE);
    assert_eq!(len, INFO_SIZE);
    assert_eq!(bytes, info_bytes(1));
}

#[test]
fn too_small_for_a_header_is_used_with_len_0() {
    for room in 0..8 {
        let (len, bytes) = run_one(&get_info(), room);
        assert_eq!(len, 0, "room {room}");
        assert!(bytes.iter().all(|&b| b == POISON));
    }
}

#[test]
fn no_writable_descriptor_is_used_with_len_0() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    s.write(BUF, &get_info());
    s.add_chain(&[Desc(BUF, 8, false)]);
    s.kick();
    assert_eq!(s.used_idx(), 1);
    assert_eq!(s.used(0), (0, 0));
    assert_eq!(s.backend.device().num_commands(), 0);
}

#[test]
fn descriptors_outside_guest_memory() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    s.write(BUF, &get_info());
    let good_answer = Desc(BUF + 0x100, INFO_SIZE, true);
    // Readable descriptor far away, or straddling the end of memory.
    s.add_chain(&[Desc(0x4000_0000, 8, false), good_answer]);
    s.add_chain(&[Desc(MEM_SIZE - 4, 8, false), good_answer]);
    // Writable descriptor far away, or straddling the end of memory.
    s.add_chain(&[Desc(BUF, 8, false), Desc(0x4000_0000, INFO_SIZE, true)]);
    s.add_chain(&[Desc(BUF, 8, false), Desc(MEM_SIZE - 8, INFO_SIZE, true)]);
    // Address overflow.
    s.add_chain(&[Desc(u64::MAX - 3, 8, false), good_answer]);
    // An indirect table outside memory.
    let head = SplitDescriptor::new(0x4000_0000, 32, VRING_DESC_F_INDIRECT as u16, 0);
    s.queue
        .add_desc_chains(&[RawDescriptor::from(head)], s.next_desc)
        .unwrap();
    s.next_desc += 1;
    // Then a good command: the queue must not be stuck.
    let last_head = s.next_desc;
    s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x200, INFO_SIZE, true)]);
    s.kick();

    assert_eq!(s.used_idx(), 7);
    for i in 0..6 {
        assert_eq!(s.used(i).1, 0, "chain {i}");
    }
    assert_eq!(s.used(6), (u32::from(last_head), INFO_SIZE));
    assert_eq!(s.read(BUF + 0x200, INFO_SIZE as usize), info_bytes(1));
    assert_eq!(s.notifications(), 1);
}

#[test]
fn bad_head_index_does_not_stick_the_queue() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    s.write(BUF, &get_info());
    // An available entry naming a descriptor past the table.
    let avail = s.queue.avail();
    avail.ring().ref_at(0).unwrap().store(QSIZE + 3);
    avail.idx().store(1);
    // A descriptor that loops to itself.
    let looping = SplitDescriptor::new(BUF, 8, VRING_DESC_F_NEXT as u16, 0);
    s.queue
        .add_desc_chains(&[RawDescriptor::from(looping)], 0)
        .unwrap();
    s.next_desc = 1;
    s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x200, INFO_SIZE, true)]);
    s.kick();

    // The bad head cannot be returned; the other two are.
    assert_eq!(s.used_idx(), 2);
    assert_eq!(s.used(0), (0, 0));
    assert_eq!(s.used(1), (1, INFO_SIZE));
}

#[test]
fn many_commands_and_the_counter() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    s.write(BUF, &get_info());
    s.write(BUF + 8, &cmd(0x42, 0));
    for i in 0..10u64 {
        let command = if i % 3 == 2 { BUF + 8 } else { BUF };
        s.add_chain(&[
            Desc(command, 8, false),
            Desc(BUF + 0x100 * (i + 1), INFO_SIZE, true),
        ]);
    }
    s.kick();
    assert_eq!(s.used_idx(), 10);
    assert_eq!(s.notifications(), 1, "one notification for the batch");
    for i in 0..10u64 {
        let (_, len) = s.used(i as u16);
        if i % 3 == 2 {
            assert_eq!(len, 8);
        } else {
            assert_eq!(len, INFO_SIZE);
            assert_eq!(num_commands(&s, BUF + 0x100 * (i + 1)), i + 1);
        }
    }
    assert_eq!(s.backend.device().num_commands(), 10);
}

#[test]
fn counter_resets_with_the_device() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    s.write(BUF, &get_info());
    let mut answer = BUF + 0x100;
    let mut run = |s: &mut Setup| {
        answer += 0x100;
        s.add_chain(&[Desc(BUF, 8, false), Desc(answer, INFO_SIZE, true)]);
        s.kick();
        num_commands(s, answer)
    };
    assert_eq!(run(&mut s), 1);
    assert_eq!(run(&mut s), 2);
    assert_eq!(run(&mut s), 3);
    s.backend.reset_device();
    assert_eq!(s.backend.device().num_commands(), 0);
    assert_eq!(run(&mut s), 1);
    assert_eq!(run(&mut s), 2);
    // The frontend stopping the queue (GET_VRING_BASE) resets it too.
    s.backend.stop_vring(0).unwrap();
    assert_eq!(s.backend.device().num_commands(), 0);
    assert_eq!(run(&mut s), 1);
}

#[test]
fn event_idx_suppresses_notifications() {
    let mem = memory();
    let mut s = Setup::new(&mem, true);
    s.write(BUF, &get_info());

    // The driver wants to hear when used index 3 is passed (used_event = 2).
    s.set_used_event(2);
    for _ in 0..2 {
        s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x100, INFO_SIZE, true)]);
    }
    s.kick();
    assert_eq!(s.used_idx(), 2);
    assert_eq!(s.notifications(), 0);
    // The device asks to be kicked for the next chain.
    assert_eq!(s.avail_event(), 2);

    s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x100, INFO_SIZE, true)]);
    s.kick();
    assert_eq!(s.used_idx(), 3);
    assert_eq!(s.notifications(), 1);
    assert_eq!(s.avail_event(), 3);

    // used_event still 2: no notification for the next ones.
    s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x100, INFO_SIZE, true)]);
    s.kick();
    assert_eq!(s.used_idx(), 4);
    assert_eq!(s.notifications(), 1);
}

#[test]
fn without_event_idx_every_batch_is_notified() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    s.write(BUF, &get_info());
    s.set_used_event(100);
    for round in 1..=3 {
        s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x100, INFO_SIZE, true)]);
        s.kick();
        assert_eq!(s.notifications(), round);
    }
    // A kick with nothing new notifies nobody.
    s.kick();
    assert_eq!(s.notifications(), 3);
}

#[test]
fn kick_before_memory_is_harmless() {
    let mem = memory();
    let s = Setup::new(&mem, false);
    let mut backend = VhostUserBufshareBackend::new(LIMITS).unwrap();
    backend
        .handle_event(0, EventSet::IN, std::slice::from_ref(&s.vring), 0)
        .unwrap();
    // The event queue, and the holders' wake-up: nothing to do yet, and
    // no error, which would end the worker thread.
    for event in [1, HOLDERS_EVENT] {
        backend
            .handle_event(event, EventSet::IN, std::slice::from_ref(&s.vring), 0)
            .unwrap();
    }
    assert!(backend
        .handle_event(
            HOLDERS_EVENT + 1,
            EventSet::IN,
            std::slice::from_ref(&s.vring),
            0
        )
        .is_err());
}

#[test]
fn features_and_config() {
    let backend = VhostUserBufshareBackend::new(LIMITS).unwrap();
    let features = backend.features();
    for bit in [32, 28, 29, 30, 0, 1] {
        assert_ne!(features & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(
        features,
        (1 << 32) | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 0) | (1 << 1) | (1 << 2),
        "VERSION_1, INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES, BUFFERS, GENERATION, \
         EVENTS and nothing else"
    );
    let protocol = backend.protocol_features();
    assert!(protocol.contains(VhostUserProtocolFeatures::CONFIG));
    assert!(protocol.contains(VhostUserProtocolFeatures::MQ));
    assert_eq!(backend.num_queues(), 2);
    assert_eq!(backend.max_queue_size(), 256);

    let config = backend.get_config(0, 24);
    assert_eq!(
        config,
        [
            0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, 0xcc, 0xbb, 0xaa, 0x99, 0, 0, 0, 0, 8,
            7, 6, 5, 4, 3, 2, 1
        ]
    );
    assert_eq!(backend.get_config(4, 4), [0x88, 0x77, 0x66, 0x55]);
    assert_eq!(backend.get_config(20, 8), [4, 3, 2, 1, 0, 0, 0, 0]);
    assert_eq!(backend.get_config(100, 4), [0, 0, 0, 0]);
    assert!(backend.get_config(0, 0).is_empty());
}

#[test]
fn import_is_offered_with_a_region_and_events() {
    use crate::import::{hub::ImportHub, ImportConfig};
    const IMPORT: u64 = 1 << 3;
    let import_protocol = VhostUserProtocolFeatures::SHMEM
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::BACKEND_SEND_FD
        | VhostUserProtocolFeatures::REPLY_ACK;
    let hub = |shm_size| {
        let hub = ImportHub::new(ImportConfig {
            shm_size,
            ..ImportConfig::default()
        });
        hub.add_guest("vm", Arc::default());
        hub
    };
    let plain = VhostUserBufshareBackend::new(LIMITS).unwrap();
    // No region: nothing of it.
    let none = VhostUserBufshareBackend::new(LIMITS)
        .unwrap()
        .with_imports(&hub(0), "vm")
        .unwrap();
    // A region, events: offered.
    let some = VhostUserBufshareBackend::new(LIMITS)
        .unwrap()
        .with_imports(&hub(1 << 20), "vm")
        .unwrap();
    // A region, no events: not offered.
    let no_events = VhostUserBufshareBackend::new(LIMITS)
        .unwrap()
        .with_imports(&hub(1 << 20), "vm")
        .unwrap()
        .without_events();
    for backend in [&plain, &none, &no_events] {
        assert_eq!(backend.features() & IMPORT, 0);
        assert!(!backend.protocol_features().intersects(import_protocol));
        assert!(backend.get_shmem_config().is_err());
    }
    assert_eq!(some.features(), plain.features() | IMPORT);
    assert_eq!(
        some.protocol_features(),
        plain.protocol_features() | import_protocol
    );
    assert!(!some
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
    let shmem = some.get_shmem_config().unwrap();
    assert_eq!(shmem.nregions, 1);
    assert_eq!(shmem.memory_sizes[0], 1 << 20);
    assert_eq!(shmem.memory_sizes[1], 0);
}

#[test]
fn config_is_read_only() {
    let mut backend = VhostUserBufshareBackend::new(LIMITS).unwrap();
    assert!(backend.set_config(0, &[1, 2, 3, 4]).is_err());
    assert_eq!(backend.get_config(0, 4), [0x44, 0x33, 0x22, 0x11]);
}

mod faults;

mod buffers;

mod events;
