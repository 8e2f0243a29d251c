// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Buffer commands through the mock virtqueue, and what resets do to them.

use bufshare_uapi::{
    unregister_bytes as unregister, RegisterCommand, VIRTIO_BUFSHARE_F_BUFFERS,
    VIRTIO_BUFSHARE_S_NO_BUFFER, VIRTIO_BUFSHARE_S_OK,
};

use super::*;

/// Where the buffers' bytes are, in guest memory.
pub(super) const DATA: u64 = 0x8_0000;

fn acked(mem: &GuestMemoryMmap) -> Setup<'_> {
    let mut s = Setup::new(mem, false);
    s.backend
        .acked_features((1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BUFSHARE_F_BUFFERS));
    s
}

/// A REGISTER of buffer `id`, complete, made of `ranges`, with properties.
pub(super) fn register(id: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
    RegisterCommand::complete(id, "test", ranges)
        .props(b"width=4\0height=2\0")
        .to_bytes()
}

/// Sends `command` (split in pieces of at most 40 bytes) and returns its
/// status.
fn send(s: &mut Setup, command: &[u8]) -> u32 {
    let mut descs = Vec::new();
    for (i, piece) in command.chunks(40).enumerate() {
        let addr = BUF + 0x100 * i as u64;
        s.write(addr, piece);
        descs.push(Desc(addr, piece.len() as u32, false));
    }
    let answer = BUF + 0x8000;
    descs.push(Desc(answer, 8, true));
    let used = s.used_idx();
    s.add_chain(&descs);
    s.kick();
    assert_eq!(s.used_idx(), used + 1);
    assert_eq!(s.used(used).1, 8);
    u32::from_le_bytes(s.read(answer, 4).try_into().unwrap())
}

fn num_buffers(s: &mut Setup) -> u64 {
    let answer = BUF + 0x9000;
    s.write(BUF, &get_info());
    s.add_chain(&[Desc(BUF, 8, false), Desc(answer, INFO_SIZE, true)]);
    s.kick();
    u64::from_le_bytes(s.read(answer + 32, 8).try_into().unwrap())
}

#[test]
fn register_and_unregister_through_the_queue() {
    let mem = memory();
    let mut s = acked(&mem);
    let ranges = [(DATA + 0x1000, 4), (DATA, 4)];
    assert_eq!(send(&mut s, &register(3, &ranges)), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(num_buffers(&mut s), 1);

    // The guest writes the buffer; the host sees it with no command...
    s.write(DATA + 0x1000, b"abcd");
    s.write(DATA, b"efgh");
    let state = Arc::clone(s.backend.device().state());
    let mut got = [0; 8];
    state.lock().read(3, 0, &mut got).unwrap();
    assert_eq!(&got, b"abcdefgh");
    // ... and the other way round.
    state.lock().write(3, 2, b"XYZW").unwrap();
    assert_eq!(s.read(DATA + 0x1000, 4), b"abXY");
    assert_eq!(s.read(DATA, 4), b"ZWgh");
    let listing = state.lock().buffers.describe();
    assert_eq!(
        listing,
        b"id=3 application=test size=8 ranges=2 complete=1 seqno=0\n\twidth=4\n\theight=2\n"
    );

    assert_eq!(send(&mut s, &unregister(3)), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(send(&mut s, &unregister(3)), VIRTIO_BUFSHARE_S_NO_BUFFER);
    assert_eq!(num_buffers(&mut s), 0);
    assert!(state.lock().read(3, 0, &mut got).is_err());
}

#[test]
fn ranges_outside_guest_memory_are_invalid() {
    let mem = memory();
    let mut s = acked(&mem);
    for ranges in [
        &[(MEM_SIZE - 2, 4)][..],
        &[(MEM_SIZE, 1)],
        &[(u64::MAX, 1)],
        &[(DATA, 4), (0x1_0000_0000, 4)],
    ] {
        assert_eq!(
            send(&mut s, &register(1, ranges)),
            VIRTIO_BUFSHARE_S_INVALID,
            "{ranges:?}"
        );
    }
    assert_eq!(num_buffers(&mut s), 0);
}

#[test]
fn without_the_feature_buffer_commands_are_unsupported() {
    let mem = memory();
    let mut s = Setup::new(&mem, false);
    assert_eq!(
        send(&mut s, &register(1, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_UNSUPPORTED
    );
    s.backend.acked_features(1 << VIRTIO_F_VERSION_1);
    assert_eq!(
        send(&mut s, &register(1, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_UNSUPPORTED
    );
    s.backend.acked_features(1 << VIRTIO_BUFSHARE_F_BUFFERS);
    assert_eq!(
        send(&mut s, &register(1, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_OK
    );
}

#[test]
fn resets_drop_the_buffers() {
    let mem = memory();
    let mut s = acked(&mem);
    assert_eq!(
        send(&mut s, &register(1, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_OK
    );
    assert_eq!(
        send(&mut s, &register(2, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_OK
    );
    assert_eq!(num_buffers(&mut s), 2);
    s.backend.reset_device();
    assert_eq!(num_buffers(&mut s), 0);

    assert_eq!(
        send(&mut s, &register(1, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_OK
    );
    assert_eq!(num_buffers(&mut s), 1);
    // The frontend stopping the queue (GET_VRING_BASE) resets too; the
    // feature stays acked.
    s.backend.stop_vring(0).unwrap();
    assert!(s.backend.device().state().lock().buffers.is_empty());
    assert_eq!(num_buffers(&mut s), 0);
    assert_eq!(
        send(&mut s, &register(1, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_OK
    );
}

#[test]
fn a_backend_on_a_shared_state_starts_empty() {
    let mem = memory();
    let mut s = acked(&mem);
    assert_eq!(
        send(&mut s, &register(1, &[(DATA, 4)])),
        VIRTIO_BUFSHARE_S_OK
    );
    let state = Arc::clone(s.backend.device().state());
    assert_eq!(state.lock().buffers.len(), 1);
    let backend = VhostUserBufshareBackend::with_state(LIMITS, Arc::clone(&state)).unwrap();
    assert_eq!(backend.device().num_buffers(), 0);
    assert!(state.lock().buffers.is_empty());
}
