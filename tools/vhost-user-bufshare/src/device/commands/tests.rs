// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The buffer commands against mock guest memory: every success and every
//! rejection.

use bufshare_uapi::{
    add_ranges_bytes as add_ranges, set_properties_bytes as set_props,
    unregister_bytes as unregister, update_command, RegisterCommand, VirtioBufshareCmdHdr,
    VirtioBufshareRespHdr, VirtioBufshareRespInfo, VIRTIO_BUFSHARE_APP_LEN,
    VIRTIO_BUFSHARE_CMD_GET_INFO, VIRTIO_BUFSHARE_S_DEVICE_ERROR, VIRTIO_BUFSHARE_S_OK,
    VIRTIO_BUFSHARE_S_UNSUPPORTED,
};
use std::sync::Arc;

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryAtomic};

use super::*;
use crate::backend::answer;
use crate::buffers::Buffer;
use crate::device::Limits;
use crate::fault::Fault;

const OK: u32 = VIRTIO_BUFSHARE_S_OK;
const INVALID: u32 = VIRTIO_BUFSHARE_S_INVALID;
const NO_BUFFER: u32 = VIRTIO_BUFSHARE_S_NO_BUFFER;
const NO_SPACE: u32 = VIRTIO_BUFSHARE_S_NO_SPACE;
const UNSUPPORTED: u32 = VIRTIO_BUFSHARE_S_UNSUPPORTED;

const LIMITS: Limits = Limits {
    max_ranges: 4,
    max_props_size: 64,
    max_buffers: 3,
    max_buffer_size: 0x2_0000,
};

/// Guest RAM: two adjacent regions, a gap, a third region.
fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x1_0000), 0x1_0000),
        (GuestAddress(0x4_0000), 0x1_0000),
    ])
    .unwrap()
}

fn device_with(limits: Limits, mem: &GuestMemoryMmap) -> BufshareDevice {
    let mut dev = BufshareDevice::new(limits);
    dev.set_driver_features(1 << bufshare_uapi::VIRTIO_BUFSHARE_F_BUFFERS);
    dev.set_memory(GuestMemoryAtomic::new(mem.clone()));
    dev
}

fn device(mem: &GuestMemoryMmap) -> BufshareDevice {
    device_with(LIMITS, mem)
}

/// Runs `request`; returns the status of its bare answer.
fn run(dev: &mut BufshareDevice, request: &[u8]) -> u32 {
    let answer = dev.process(request, 8).unwrap();
    assert_eq!(answer.len(), 8);
    let (hdr, _) = read_obj::<VirtioBufshareRespHdr>(&answer).unwrap();
    assert_eq!(hdr.generation.to_native(), 0);
    hdr.status.to_native()
}

fn hdr(type_: u32) -> VirtioBufshareCmdHdr {
    VirtioBufshareCmdHdr {
        type_: type_.into(),
        flags: 0.into(),
    }
}

fn app(name: &[u8]) -> [u8; VIRTIO_BUFSHARE_APP_LEN] {
    let mut a = [0; VIRTIO_BUFSHARE_APP_LEN];
    a[..name.len()].copy_from_slice(name);
    a
}

/// A REGISTER of buffer `id` by `test-app`, of `num_ranges` ranges, of
/// which `ranges` come now; to be tweaked before
/// [`RegisterCommand::to_bytes`].
fn register(id: u64, size: u64, num_ranges: u32, ranges: &[(u64, u64)]) -> RegisterCommand {
    RegisterCommand::new(id, "test-app", size, num_ranges, ranges)
}

/// A REGISTER of a complete buffer of one range.
fn register_one(id: u64, addr: u64, len: u64) -> RegisterCommand {
    register(id, len, 1, &[(addr, len)])
}

/// An UPDATE of buffer `id` numbered `seqno`, of the whole buffer.
fn update_cmd(id: u64, seqno: u64) -> VirtioBufshareCmdUpdate {
    update_command(id, seqno, None, None)
}

fn range_update(id: u64, seqno: u64, offset: u64, length: u64) -> Vec<u8> {
    update_command(id, seqno, Some((offset, length)), None)
        .as_slice()
        .to_vec()
}

fn rect_update(id: u64, seqno: u64, (x, y, width, height): (u32, u32, u32, u32)) -> Vec<u8> {
    update_command(id, seqno, None, Some([x, y, width, height]))
        .as_slice()
        .to_vec()
}

fn buffer(dev: &BufshareDevice, id: u64) -> Option<Buffer> {
    dev.state().lock().buffers.get(id).cloned()
}

fn ids(dev: &BufshareDevice) -> Vec<u64> {
    dev.state().lock().buffers.iter().map(|b| b.id).collect()
}

fn num_buffers_info(dev: &mut BufshareDevice) -> u64 {
    let answer = dev
        .process(hdr(VIRTIO_BUFSHARE_CMD_GET_INFO).as_slice(), 80)
        .unwrap();
    read_obj::<VirtioBufshareRespInfo>(&answer)
        .unwrap()
        .0
        .num_buffers
        .to_native()
}

#[test]
fn register_a_complete_buffer() {
    let mem = memory();
    let mut dev = device(&mem);
    let reg = register(7, 0x3000, 2, &[(0x5000, 0x1000), (0x4_0000, 0x2000)])
        .props(b"width=64\0height=32\0format=XR24\0");
    assert_eq!(run(&mut dev, &reg.to_bytes()), OK);
    let b = buffer(&dev, 7).unwrap();
    assert_eq!(b.application, "test-app");
    assert_eq!(b.size, 0x3000);
    assert_eq!((b.num_ranges, b.ranges, b.received), (2, 2, 0x3000));
    assert!(b.complete);
    assert_eq!(b.seqno, 0);
    let props: Vec<String> = b.props.iter().map(ToString::to_string).collect();
    assert_eq!(props, ["width=64", "height=32", "format=XR24"]);
    assert_eq!(
        b.segments,
        [
            Segment {
                offset: 0,
                addr: 0x5000,
                len: 0x1000
            },
            Segment {
                offset: 0x1000,
                addr: 0x4_0000,
                len: 0x2000
            },
        ]
    );
    assert_eq!(num_buffers_info(&mut dev), 1);
    assert_eq!(dev.num_buffers(), 1);
}

#[test]
fn register_then_add_ranges() {
    let mem = memory();
    let mut dev = device(&mem);
    // No range with the REGISTER at all.
    assert_eq!(run(&mut dev, &register(1, 0x300, 4, &[]).to_bytes()), OK);
    let b = buffer(&dev, 1).unwrap();
    assert!(!b.complete);
    assert_eq!(b.ranges, 0);
    assert_eq!(num_buffers_info(&mut dev), 1);

    assert_eq!(run(&mut dev, &add_ranges(1, 0, &[(0x100, 0x100)])), OK);
    assert_eq!(
        run(
            &mut dev,
            &add_ranges(1, 1, &[(0x1000, 0x80), (0x2000, 0x80)])
        ),
        OK
    );
    let b = buffer(&dev, 1).unwrap();
    assert!(!b.complete);
    assert_eq!((b.ranges, b.received), (3, 0x200));
    assert_eq!(run(&mut dev, &add_ranges(1, 3, &[(0x4_0000, 0x100)])), OK);
    let b = buffer(&dev, 1).unwrap();
    assert!(b.complete);
    assert_eq!(b.segments.len(), 4);
    assert_eq!(b.segments[3].offset, 0x200);

    // Part with the REGISTER, part after.
    let reg = register(2, 0x200, 2, &[(0, 0x100)]);
    assert_eq!(run(&mut dev, &reg.to_bytes()), OK);
    assert!(!buffer(&dev, 2).unwrap().complete);
    assert_eq!(run(&mut dev, &add_ranges(2, 1, &[(0, 0x100)])), OK);
    assert!(buffer(&dev, 2).unwrap().complete);
    assert_eq!(num_buffers_info(&mut dev), 2);
}

#[test]
fn ranges_may_span_adjacent_regions() {
    let mem = memory();
    let mut dev = device(&mem);
    assert_eq!(
        run(&mut dev, &register_one(1, 0xff00, 0x200).to_bytes()),
        OK
    );
    let b = buffer(&dev, 1).unwrap();
    assert_eq!(b.segments.len(), 2);
    assert_eq!((b.segments[1].addr, b.segments[1].len), (0x1_0000, 0x100));
    // The last byte of the second region, and the whole of it.
    assert_eq!(run(&mut dev, &register_one(2, 0x1_ffff, 1).to_bytes()), OK);
    assert_eq!(run(&mut dev, &register_one(3, 0, 0x2_0000).to_bytes()), OK);
}

/// Every malformed REGISTER is `S_INVALID` and registers nothing.
#[test]
fn register_rejections() {
    let mem = memory();
    let many = Limits {
        max_ranges: 2000,
        ..LIMITS
    };
    let good = register_one(5, 0x1000, 0x100);
    let mut cases: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut push = |what: &'static str, reg: RegisterCommand| cases.push((what, reg.to_bytes()));

    let mut r = good.clone();
    r.cmd.reserved = 1.into();
    push("reserved", r);
    let mut r = good.clone();
    r.cmd.hdr.flags = 1.into();
    push("hdr.flags", r);
    push("id 0", register_one(0, 0x1000, 0x100));
    push("size 0", register(5, 0, 1, &[(0x1000, 0x100)]));
    push(
        "size above the limit",
        register(5, LIMITS.max_buffer_size + 1, 1, &[]),
    );
    push("no ranges", register(5, 0x100, 0, &[]));
    push(
        "more ranges than the limit",
        register(5, 0x500, 5, &[(0, 0x100)]),
    );
    push(
        "nr_ranges above num_ranges",
        register(5, 0x200, 1, &[(0, 0x100), (0, 0x100)]),
    );
    let mut r = good.clone();
    r.cmd.nr_ranges = 0.into();
    push("nr_ranges says 0, one range follows", r);
    let mut r = good.clone();
    r.cmd.nr_ranges = 2.into();
    push("nr_ranges says 2, one range follows", r);
    push(
        "props_size above the limit",
        register_one(5, 0x1000, 0x100).props(&[b'a'; 65]),
    );
    let mut r = good.clone().props(b"a=1\0");
    r.padding = Some(vec![0, 0, 0, 1]);
    push("padding not 0", r);
    let mut r = good.clone().props(b"a=1\0");
    r.padding = Some(vec![]);
    push("no padding", r);
    let mut r = good.clone().props(b"a=1\0");
    r.padding = Some(vec![0; 12]);
    push("too much padding", r);
    let mut r = good.clone().props(b"a=1\0");
    r.cmd.props_size = 5.into();
    push("props_size not what follows", r);
    push("props unterminated", good.clone().props(b"a=1"));
    push("props without =", good.clone().props(b"a\0"));
    push("props duplicate", good.clone().props(b"a=1\0a=2\0"));
    push("props bad name", good.clone().props(b"a b=1\0"));
    push("props control char", good.clone().props(b"a=\x01\0"));
    push("props empty string", good.clone().props(b"\0"));
    for (what, name) in [
        ("application empty", app(b"")),
        ("application bad char", app(b"my app")),
        ("application slash", app(b"a/b")),
        ("application unterminated", [b'a'; VIRTIO_BUFSHARE_APP_LEN]),
        ("application garbage after NUL", {
            let mut a = app(b"app");
            a[40] = b'x';
            a
        }),
    ] {
        let mut r = good.clone();
        r.cmd.application = name;
        push(what, r);
    }
    push("range of length 0", register(5, 0x100, 2, &[(0, 0)]));
    push(
        "range overflows",
        register(5, 0x100, 2, &[(u64::MAX - 7, 0x10)]),
    );
    push("range outside RAM", register_one(5, 0x8_0000, 0x100));
    push("range into the gap", register_one(5, 0x1_ff00, 0x200));
    push(
        "range past the end of RAM",
        register_one(5, 0x4_ff00, 0x200),
    );
    push(
        "ranges add up to less",
        register(5, 0x300, 2, &[(0, 0x100), (0, 0x100)]),
    );
    push(
        "ranges add up to more",
        register(5, 0x100, 2, &[(0, 0x100), (0, 0x100)]),
    );
    push(
        "first ranges already past the size",
        register(5, 0x100, 3, &[(0, 0x80), (0, 0x81)]),
    );
    let mut short = good.to_bytes();
    short.pop();
    cases.push(("one byte short", short));
    let mut long = good.to_bytes();
    long.push(0);
    cases.push(("one byte too many", long));
    cases.push(("only the header", good.to_bytes()[..8].to_vec()));
    cases.push(("struct cut", good.to_bytes()[..103].to_vec()));

    for (what, bytes) in &cases {
        let mut dev = device(&mem);
        assert_eq!(run(&mut dev, bytes), INVALID, "{what}");
        assert!(ids(&dev).is_empty(), "{what}");
        assert_eq!(num_buffers_info(&mut dev), 0, "{what}");
    }

    // More than 1024 ranges in one command.
    let mut dev = device_with(many, &mem);
    let ranges = vec![(0, 1); 1025];
    let reg = register(5, 2000, 2000, &ranges);
    assert_eq!(run(&mut dev, &reg.to_bytes()), INVALID);
    let reg = register(5, 2000, 2000, &ranges[..1024]);
    assert_eq!(run(&mut dev, &reg.to_bytes()), OK);

    // Without guest memory, no range is RAM.
    let mut dev = BufshareDevice::new(LIMITS);
    dev.set_driver_features(1);
    assert_eq!(run(&mut dev, &good.to_bytes()), INVALID);
    assert_eq!(run(&mut dev, &register(5, 0x100, 1, &[]).to_bytes()), OK);
}

#[test]
fn register_duplicate_id() {
    let mem = memory();
    let mut dev = device(&mem);
    assert_eq!(run(&mut dev, &register_one(9, 0, 0x100).to_bytes()), OK);
    assert_eq!(
        run(&mut dev, &register_one(9, 0x100, 0x200).to_bytes()),
        INVALID
    );
    // The first one is untouched.
    assert_eq!(buffer(&dev, 9).unwrap().size, 0x100);
    // Incomplete ones count too, and are kept.
    assert_eq!(run(&mut dev, &register(10, 0x100, 2, &[]).to_bytes()), OK);
    assert_eq!(
        run(&mut dev, &register(10, 0x100, 2, &[]).to_bytes()),
        INVALID
    );
    assert_eq!(ids(&dev), [9, 10]);
    // Once unregistered, the id may come again.
    assert_eq!(run(&mut dev, &unregister(9)), OK);
    assert_eq!(run(&mut dev, &register_one(9, 0x100, 0x200).to_bytes()), OK);
}

#[test]
fn register_beyond_max_buffers() {
    let mem = memory();
    let mut dev = device(&mem);
    for id in 1..=3 {
        assert_eq!(run(&mut dev, &register(id, 0x100, 2, &[]).to_bytes()), OK);
    }
    assert_eq!(
        run(&mut dev, &register_one(4, 0, 0x100).to_bytes()),
        NO_SPACE
    );
    // Malformed is still malformed.
    assert_eq!(
        run(&mut dev, &register_one(0, 0, 0x100).to_bytes()),
        INVALID
    );
    assert_eq!(run(&mut dev, &unregister(2)), OK);
    assert_eq!(run(&mut dev, &register_one(4, 0, 0x100).to_bytes()), OK);
    assert_eq!(ids(&dev), [1, 3, 4]);
    assert_eq!(num_buffers_info(&mut dev), 3);
}

/// An incomplete buffer 1 of 3 ranges, 0x300 bytes, with its first range.
fn with_incomplete(mem: &GuestMemoryMmap) -> BufshareDevice {
    let mut dev = device(mem);
    assert_eq!(
        run(&mut dev, &register(1, 0x300, 3, &[(0, 0x100)]).to_bytes()),
        OK
    );
    dev
}

#[test]
fn add_ranges_rejections_drop_the_buffer() {
    let mem = memory();
    let mut flagged = add_ranges(1, 1, &[(0, 0x100)]);
    flagged[4] = 1;
    let mut short = add_ranges(1, 1, &[(0, 0x100)]);
    short.pop();
    let mut long = add_ranges(1, 1, &[(0, 0x100)]);
    long.push(0);
    let mut nr_lies = add_ranges(1, 1, &[(0, 0x100)]);
    nr_lies[20] = 2;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("first behind", add_ranges(1, 0, &[(0, 0x100)])),
        ("first ahead", add_ranges(1, 2, &[(0, 0x100)])),
        ("no ranges", add_ranges(1, 1, &[])),
        (
            "past num_ranges",
            add_ranges(1, 1, &[(0, 0x80), (0, 0x80), (0, 0x80)]),
        ),
        ("hdr.flags", flagged),
        ("one byte short", short),
        ("one byte too many", long),
        ("nr_ranges not what follows", nr_lies),
        (
            "fixed part cut after the id",
            add_ranges(1, 1, &[])[..16].to_vec(),
        ),
        ("range of length 0", add_ranges(1, 1, &[(0, 0)])),
        ("range overflows", add_ranges(1, 1, &[(u64::MAX, 2)])),
        ("range outside RAM", add_ranges(1, 1, &[(0x3_0000, 0x100)])),
        (
            "range across the gap",
            add_ranges(1, 1, &[(0x1_ff00, 0x200)]),
        ),
        ("past the size", add_ranges(1, 1, &[(0, 0x201)])),
        (
            "last ranges add up to less",
            add_ranges(1, 1, &[(0, 0x100), (0, 0xff)]),
        ),
        (
            "last ranges add up to more",
            add_ranges(1, 1, &[(0, 0x100), (0, 0x101)]),
        ),
    ];
    for (what, bytes) in &cases {
        let mut dev = with_incomplete(&mem);
        assert_eq!(run(&mut dev, bytes), INVALID, "{what}");
        assert!(ids(&dev).is_empty(), "{what}: the buffer must be dropped");
        assert_eq!(num_buffers_info(&mut dev), 0, "{what}");
        // Gone: a later ADD_RANGES finds nothing.
        assert_eq!(run(&mut dev, &add_ranges(1, 1, &[(0, 0x100)])), NO_BUFFER);
    }
}

#[test]
fn add_ranges_other_rejections() {
    let mem = memory();
    let mut dev = with_incomplete(&mem);
    assert_eq!(run(&mut dev, &register_one(2, 0, 0x100).to_bytes()), OK);
    // Unknown buffer.
    assert_eq!(run(&mut dev, &add_ranges(3, 0, &[(0, 0x100)])), NO_BUFFER);
    // A complete buffer: refused, but kept.
    assert_eq!(run(&mut dev, &add_ranges(2, 1, &[(0, 0x100)])), INVALID);
    assert!(buffer(&dev, 2).unwrap().complete);
    // Too short to name a buffer: refused, nothing dropped.
    assert_eq!(run(&mut dev, &add_ranges(1, 1, &[])[..15]), INVALID);
    assert_eq!(ids(&dev), [1, 2]);
    // More than 1024 ranges at once.
    let many = Limits {
        max_ranges: 2000,
        ..LIMITS
    };
    let mut dev = device_with(many, &mem);
    assert_eq!(run(&mut dev, &register(1, 2000, 2000, &[]).to_bytes()), OK);
    assert_eq!(
        run(&mut dev, &add_ranges(1, 0, &vec![(0, 1); 1025])),
        INVALID
    );
    assert!(ids(&dev).is_empty());
    assert_eq!(run(&mut dev, &register(1, 2000, 2000, &[]).to_bytes()), OK);
    assert_eq!(run(&mut dev, &add_ranges(1, 0, &vec![(0, 1); 1024])), OK);
    assert_eq!(run(&mut dev, &add_ranges(1, 1024, &vec![(0, 1); 976])), OK);
    assert!(buffer(&dev, 1).unwrap().complete);
}

#[test]
fn the_largest_buffer_of_the_default_limits() {
    // 256 MiB of 4 KiB pages: 65536 ranges, one REGISTER and 63 ADD_RANGES
    // of 1024. The pages may repeat: nothing forbids it.
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let mut dev = device_with(Limits::default(), &mem);
    let pages: Vec<(u64, u64)> = (0..1024).map(|i| ((i % 256) * 0x1000, 0x1000)).collect();
    let reg = register(1, 256 << 20, 65536, &pages);
    assert!(reg.to_bytes().len() <= dev.max_command_size());
    assert_eq!(run(&mut dev, &reg.to_bytes()), OK);
    for i in 1..64 {
        assert_eq!(run(&mut dev, &add_ranges(1, i * 1024, &pages)), OK, "{i}");
    }
    let b = buffer(&dev, 1).unwrap();
    assert!(b.complete);
    assert_eq!(
        (b.ranges, b.received, b.segments.len()),
        (65536, 256 << 20, 65536)
    );
    // One more page would be too many.
    assert_eq!(
        run(
            &mut dev,
            &register(2, (256 << 20) + 4096, 65537, &[]).to_bytes()
        ),
        INVALID
    );
}

#[test]
fn command_longer_than_the_largest_legal_one() {
    let mem = memory();
    let mut dev = device(&mem);
    let max = dev.max_command_size();
    // REGISTER: 104 bytes, 64 of properties, 4 ranges.
    assert_eq!(max, 104 + 64 + 64);
    let mut bytes = register_one(1, 0, 0x100).to_bytes();
    bytes.resize(max + 1, 0);
    assert_eq!(run(&mut dev, &bytes), INVALID);
    assert!(ids(&dev).is_empty());
}

/// A device with complete buffer 1 of 0x1000 bytes, with properties.
fn with_complete(mem: &GuestMemoryMmap, props: &[u8]) -> BufshareDevice {
    let mut dev = device(mem);
    let reg = register_one(1, 0, 0x1000).props(props);
    assert_eq!(run(&mut dev, &reg.to_bytes()), OK);
    dev
}

fn seqno(dev: &BufshareDevice, id: u64) -> u64 {
    buffer(dev, id).unwrap().seqno
}

#[test]
fn updates() {
    let mem = memory();
    let mut dev = with_complete(&mem, b"width=64\0height=32\0");
    // Without flags: the whole buffer.
    assert_eq!(run(&mut dev, update_cmd(1, 1).as_slice()), OK);
    assert_eq!(seqno(&dev, 1), 1);
    assert_eq!(run(&mut dev, &range_update(1, 5, 0, 0x1000)), OK);
    assert_eq!(run(&mut dev, &range_update(1, 6, 0xfff, 1)), OK);
    assert_eq!(run(&mut dev, &rect_update(1, 7, (0, 0, 64, 32))), OK);
    assert_eq!(run(&mut dev, &rect_update(1, 8, (63, 31, 1, 1))), OK);
    let mut both = update_cmd(1, u64::MAX);
    both.flags = (VIRTIO_BUFSHARE_UPDATE_F_RANGE | VIRTIO_BUFSHARE_UPDATE_F_RECT).into();
    both.length = 1.into();
    both.width = 1.into();
    both.height = 1.into();
    assert_eq!(run(&mut dev, both.as_slice()), OK);
    assert_eq!(seqno(&dev, 1), u64::MAX);
    // Nothing can follow u64::MAX.
    assert_eq!(run(&mut dev, update_cmd(1, u64::MAX).as_slice()), INVALID);
}

#[test]
fn update_rejections() {
    let mem = memory();
    let mut dev = with_complete(&mem, b"width=64\0height=32\0");
    assert_eq!(run(&mut dev, update_cmd(1, 10).as_slice()), OK);
    let mut reserved = update_cmd(1, 11);
    reserved.reserved = 1.into();
    let mut flags = update_cmd(1, 11);
    flags.flags = 4.into();
    let mut hdr_flags = update_cmd(1, 11);
    hdr_flags.hdr.flags = 1.into();
    let mut long = update_cmd(1, 11).as_slice().to_vec();
    long.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("seqno equal", update_cmd(1, 10).as_slice().to_vec()),
        ("seqno lower", update_cmd(1, 9).as_slice().to_vec()),
        ("seqno 0", update_cmd(1, 0).as_slice().to_vec()),
        ("reserved", reserved.as_slice().to_vec()),
        ("unknown flag", flags.as_slice().to_vec()),
        ("hdr.flags", hdr_flags.as_slice().to_vec()),
        (
            "one byte short",
            update_cmd(1, 11).as_slice()[..63].to_vec(),
        ),
        ("one byte too many", long),
        ("range of 0 bytes", range_update(1, 11, 0, 0)),
        ("range past the end", range_update(1, 11, 0xfff, 2)),
        ("range starting at the end", range_update(1, 11, 0x1000, 1)),
        ("range overflows", range_update(1, 11, u64::MAX, 2)),
        ("rect width 0", rect_update(1, 11, (0, 0, 0, 1))),
        ("rect height 0", rect_update(1, 11, (0, 0, 1, 0))),
        ("rect x overflows", rect_update(1, 11, (u32::MAX, 0, 1, 1))),
        ("rect y overflows", rect_update(1, 11, (0, u32::MAX, 1, 1))),
        ("rect wider than width", rect_update(1, 11, (0, 0, 65, 1))),
        ("rect right of width", rect_update(1, 11, (64, 0, 1, 1))),
        ("rect taller than height", rect_update(1, 11, (0, 0, 1, 33))),
        ("rect below height", rect_update(1, 11, (0, 32, 1, 1))),
    ];
    for (what, bytes) in &cases {
        assert_eq!(run(&mut dev, bytes), INVALID, "{what}");
        assert_eq!(seqno(&dev, 1), 10, "{what}");
    }
    assert_eq!(run(&mut dev, update_cmd(2, 11).as_slice()), NO_BUFFER);
    // Incomplete buffers cannot be updated.
    assert_eq!(run(&mut dev, &register(2, 0x100, 2, &[]).to_bytes()), OK);
    assert_eq!(run(&mut dev, update_cmd(2, 1).as_slice()), INVALID);
    assert_eq!(ids(&dev), [1, 2]);
    assert_eq!(run(&mut dev, update_cmd(1, 11).as_slice()), OK);
}

#[test]
fn rect_limits_need_both_integer_properties() {
    let mem = memory();
    let far = (1000, 1000, 10, 10);
    for props in [
        &b""[..],
        b"width=64\0",
        b"height=32\0",
        b"width=64\0height=big\0",
        b"width=0x40\0height=32\0",
        b"width=\0height=32\0",
    ] {
        let mut dev = with_complete(&mem, props);
        assert_eq!(run(&mut dev, &rect_update(1, 1, far)), OK, "{props:?}");
    }
    let mut dev = with_complete(&mem, b"height=1010\0width=1010\0");
    assert_eq!(run(&mut dev, &rect_update(1, 1, far)), OK);
    assert_eq!(
        run(&mut dev, &rect_update(1, 2, (1000, 1000, 11, 10))),
        INVALID
    );
    // The properties as they are now count.
    assert_eq!(run(&mut dev, &set_props(1, b"width=5\0height=5\0")), OK);
    assert_eq!(run(&mut dev, &rect_update(1, 3, far)), INVALID);
    assert_eq!(run(&mut dev, &rect_update(1, 3, (0, 0, 5, 5))), OK);
}

#[test]
fn set_properties() {
    let mem = memory();
    let mut dev = with_complete(&mem, b"a=1\0b=2\0");
    assert_eq!(run(&mut dev, &set_props(1, b"c=3\0a=4\0")), OK);
    let b = buffer(&dev, 1).unwrap();
    let props: Vec<String> = b.props.iter().map(ToString::to_string).collect();
    assert_eq!(props, ["c=3", "a=4"]);
    // None at all.
    assert_eq!(run(&mut dev, &set_props(1, b"")), OK);
    assert!(buffer(&dev, 1).unwrap().props.is_empty());
    // The largest allowed.
    let mut largest = b"x=".to_vec();
    largest.resize(63, b'y');
    largest.push(0);
    assert_eq!(run(&mut dev, &set_props(1, &largest)), OK);
    // Incomplete buffers too.
    assert_eq!(run(&mut dev, &register(2, 0x100, 2, &[]).to_bytes()), OK);
    assert_eq!(run(&mut dev, &set_props(2, b"k=v\0")), OK);
    assert_eq!(buffer(&dev, 2).unwrap().props.get("k"), Some(&b"v"[..]));
}

#[test]
fn set_properties_rejections() {
    let mem = memory();
    let mut dev = with_complete(&mem, b"a=1\0");
    let mut reserved = set_props(1, b"b=2\0");
    reserved[20] = 1;
    let mut size_lies = set_props(1, b"b=2\0");
    size_lies[16] = 3;
    let mut long = set_props(1, b"b=2\0");
    long.push(0);
    let mut hdr_flags = set_props(1, b"b=2\0");
    hdr_flags[4] = 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved", reserved),
        ("props_size not what follows", size_lies),
        ("one byte too many", long),
        ("hdr.flags", hdr_flags),
        ("too large", set_props(1, &[b'a'; 65])),
        ("unterminated", set_props(1, b"b=2")),
        ("no =", set_props(1, b"b\0")),
        ("duplicate", set_props(1, b"b=2\0b=3\0")),
        ("bad name", set_props(1, b"b!=2\0")),
        (
            "long name",
            set_props(1, format!("{}=1\0", "n".repeat(64)).as_bytes()),
        ),
        ("control char", set_props(1, b"b=\x7f\0")),
        ("cut", set_props(1, b"")[..23].to_vec()),
    ];
    for (what, bytes) in &cases {
        assert_eq!(run(&mut dev, bytes), INVALID, "{what}");
        // Unchanged.
        assert_eq!(
            buffer(&dev, 1).unwrap().props.get("a"),
            Some(&b"1"[..]),
            "{what}"
        );
        assert_eq!(buffer(&dev, 1).unwrap().props.len(), 1, "{what}");
    }
    assert_eq!(run(&mut dev, &set_props(2, b"b=2\0")), NO_BUFFER);
}

#[test]
fn unregister_buffers() {
    let mem = memory();
    let mut dev = with_complete(&mem, b"");
    assert_eq!(run(&mut dev, &register(2, 0x100, 2, &[]).to_bytes()), OK);
    assert_eq!(num_buffers_info(&mut dev), 2);
    // Incomplete.
    assert_eq!(run(&mut dev, &unregister(2)), OK);
    assert_eq!(run(&mut dev, &unregister(2)), NO_BUFFER);
    let mut long = unregister(1);
    long.push(0);
    assert_eq!(run(&mut dev, &long), INVALID);
    assert_eq!(run(&mut dev, &unregister(1)[..15]), INVALID);
    assert_eq!(run(&mut dev, &unregister(0)), NO_BUFFER);
    assert_eq!(ids(&dev), [1]);
    // Complete.
    assert_eq!(run(&mut dev, &unregister(1)), OK);
    assert_eq!(num_buffers_info(&mut dev), 0);
    // Its id is free again.
    assert_eq!(run(&mut dev, &register_one(1, 0, 0x10).to_bytes()), OK);
}

#[test]
fn buffer_commands_need_the_feature() {
    let mem = memory();
    let mut dev = BufshareDevice::new(LIMITS);
    dev.set_memory(GuestMemoryAtomic::new(mem.clone()));
    let commands = [
        register_one(1, 0, 0x100).to_bytes(),
        add_ranges(1, 0, &[(0, 0x100)]),
        update_cmd(1, 1).as_slice().to_vec(),
        set_props(1, b""),
        unregister(1),
    ];
    for command in &commands {
        assert_eq!(run(&mut dev, command), UNSUPPORTED);
    }
    assert!(ids(&dev).is_empty());
    dev.set_driver_features(1);
    assert_eq!(run(&mut dev, &commands[0]), OK);
    // Other feature bits alone do not enable them.
    dev.set_driver_features(!1);
    assert_eq!(run(&mut dev, &commands[4]), UNSUPPORTED);
}

#[test]
fn reset_drops_every_buffer() {
    let mem = memory();
    let mut dev = with_complete(&mem, b"a=1\0");
    assert_eq!(run(&mut dev, &register(2, 0x100, 2, &[]).to_bytes()), OK);
    assert_eq!(num_buffers_info(&mut dev), 2);
    dev.reset();
    assert!(ids(&dev).is_empty());
    assert_eq!(num_buffers_info(&mut dev), 0);
    // Ids may be used again after a reset.
    assert_eq!(run(&mut dev, &register_one(1, 0, 0x10).to_bytes()), OK);
    assert_eq!(run(&mut dev, update_cmd(1, 1).as_slice()), OK);
    // A new device on the same state starts empty too.
    let state = Arc::clone(dev.state());
    let dev = BufshareDevice::with_state(LIMITS, state);
    assert_eq!(dev.num_buffers(), 0);
}

#[test]
fn faults_on_buffer_commands() {
    let mem = memory();
    let reg = register_one(1, 0, 0x100).to_bytes();
    // Refusals do not carry the command out.
    for (fault, status) in [
        (Fault::Invalid, INVALID),
        (Fault::Unsupported, UNSUPPORTED),
        (Fault::DeviceError, VIRTIO_BUFSHARE_S_DEVICE_ERROR),
    ] {
        let mut dev = device(&mem);
        let answer = answer(&mut dev, fault, &reg, 8).unwrap();
        assert_eq!(answer, crate::device::status_only(status));
        assert!(ids(&dev).is_empty(), "{fault}");
    }
    // The others carry it out.
    for fault in [
        Fault::Short,
        Fault::Truncated,
        Fault::Overlong,
        Fault::BadStatus,
    ] {
        let mut dev = device(&mem);
        answer(&mut dev, fault, &reg, 8).unwrap();
        assert_eq!(ids(&dev), [1], "{fault}");
    }
    // An ADD_RANGES refused with S_INVALID drops its incomplete buffer, as
    // any S_INVALID answer to it does; other refusals keep it.
    let add = add_ranges(1, 1, &[(0, 0x100)]);
    for (fault, kept) in [
        (Fault::Invalid, false),
        (Fault::Unsupported, true),
        (Fault::DeviceError, true),
    ] {
        let mut dev = with_incomplete(&mem);
        answer(&mut dev, fault, &add, 8).unwrap();
        assert_eq!(!ids(&dev).is_empty(), kept, "{fault}");
    }
    // Other commands are not affected by that.
    let mut dev = with_complete(&mem, b"");
    answer(&mut dev, Fault::Invalid, &unregister(1), 8).unwrap();
    answer(&mut dev, Fault::Invalid, &add_ranges(1, 1, &[(0, 1)]), 8).unwrap();
    assert_eq!(ids(&dev), [1]);
}

#[test]
fn zero_copy_view_of_guest_memory() {
    let mem = memory();
    let mut dev = device(&mem);
    let reg = register(1, 0x20, 2, &[(0x1_fff0, 0x10), (0x100, 0x10)]);
    assert_eq!(run(&mut dev, &reg.to_bytes()), OK);
    // The guest writes; the host sees it with no command.
    mem.write_slice(b"0123456789abcdef", GuestAddress(0x1_fff0))
        .unwrap();
    mem.write_slice(b"ghijklmnopqrstuv", GuestAddress(0x100))
        .unwrap();
    let mut got = [0; 0x20];
    dev.state().lock().read(1, 0, &mut got).unwrap();
    assert_eq!(&got, b"0123456789abcdefghijklmnopqrstuv");
    // The host writes; the guest sees it.
    dev.state().lock().write(1, 0xe, b"XYZW").unwrap();
    let mut raw = [0; 2];
    mem.read_slice(&mut raw, GuestAddress(0x1_fffe)).unwrap();
    assert_eq!(&raw, b"XY");
    mem.read_slice(&mut raw, GuestAddress(0x100)).unwrap();
    assert_eq!(&raw, b"ZW");
}

#[test]
fn losing_buffers_is_not_a_reset() {
    let mem = memory();
    let mut dev = with_complete(&mem, b"a=1\0");
    assert_eq!(run(&mut dev, &register(2, 0x100, 2, &[]).to_bytes()), OK);
    let generation = dev.generation();
    let commands = dev.num_commands();
    assert_eq!(dev.lose_buffers(), 2);
    assert!(ids(&dev).is_empty());
    assert_ne!(dev.generation(), generation);
    // Nothing else changed: the counter, the features, the memory.
    assert_eq!(dev.num_commands(), commands);
    assert_eq!(run(&mut dev, update_cmd(1, 1).as_slice()), NO_BUFFER);
    assert_eq!(run(&mut dev, &register_one(1, 0, 0x10).to_bytes()), OK);
    assert_eq!(run(&mut dev, update_cmd(1, 1).as_slice()), OK);
    assert_eq!(num_buffers_info(&mut dev), 1);
    assert_eq!(dev.num_commands(), commands + 4);
}
