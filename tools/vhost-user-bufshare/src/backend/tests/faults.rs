// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Fault injection through the mock virtqueue.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use bufshare_uapi::VIRTIO_BUFSHARE_S_DEVICE_ERROR;
use tempfile::TempDir;

use super::*;
use crate::fault::{Fault, FaultFile};

/// Room given for the answers: more than a GET_INFO answer needs, so that
/// what lies past it can be checked.
const ROOM: u32 = INFO_SIZE + 16;

/// How long a device reset waits under `slow-reset` in these tests.
const RESET_DELAY: Duration = Duration::from_millis(300);

/// How long an answer is held back under `slow-answer` in these tests.
const ANSWER_DELAY: Duration = Duration::from_millis(400);

/// A [`Setup`] whose backend reads a fault file.
struct Faulty<'a> {
    s: Setup<'a>,
    path: PathBuf,
    _dir: TempDir,
    /// Next answer buffer.
    next_answer: u64,
}

impl<'a> Faulty<'a> {
    fn new(mem: &'a GuestMemoryMmap, event_idx: bool) -> Self {
        let mut s = Setup::new(mem, event_idx);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        let plain = VhostUserBufshareBackend::new(LIMITS).unwrap();
        let faults = FaultFile::new(&path)
            .with_reset_delay(RESET_DELAY)
            .with_answer_delay(ANSWER_DELAY);
        s.backend = std::mem::replace(&mut s.backend, plain).with_fault_file(faults);
        s.write(BUF, &get_info());
        s.write(BUF + 8, &cmd(0x42, 0));
        Self {
            s,
            path,
            _dir: dir,
            next_answer: BUF + 0x1000,
        }
    }

    fn set(&self, contents: &str) {
        std::fs::write(&self.path, contents).unwrap();
    }

    /// Sends `command` (written at `BUF + 0x400`) in a chain with `ROOM`
    /// writable bytes; returns the used length and the first 8 bytes of the
    /// answer, or `None` if the chain is not returned.
    fn send(&mut self, command: &[u8]) -> Option<(u32, Vec<u8>)> {
        self.s.write(BUF + 0x400, command);
        let used = self.s.used_idx();
        let answer = self.next_answer;
        self.next_answer += 0x100;
        self.s.add_chain(&[
            Desc(BUF + 0x400, command.len() as u32, false),
            Desc(answer, ROOM, true),
        ]);
        self.s.kick();
        (self.s.used_idx() != used).then(|| (self.s.used(used).1, self.s.read(answer, 8)))
    }

    /// Offers one chain with `command` (at `BUF`, or `BUF + 8`) and `ROOM`
    /// writable bytes; returns its head and answer address.
    fn offer(&mut self, command: u64) -> (u32, u64) {
        let head = u32::from(self.s.next_desc);
        let answer = self.next_answer;
        self.next_answer += 0x100;
        self.s
            .add_chain(&[Desc(command, 8, false), Desc(answer, ROOM, true)]);
        (head, answer)
    }

    /// Sends one command and expects it to be returned; returns the used
    /// length and the `ROOM` bytes of the answer buffer.
    fn run(&mut self, command: u64) -> (u32, Vec<u8>) {
        let used = self.s.used_idx();
        let (head, answer) = self.offer(command);
        self.s.kick();
        assert_eq!(self.s.used_idx(), used + 1);
        let (id, len) = self.s.used(used);
        assert_eq!(id, head);
        (len, self.s.read(answer, ROOM as usize))
    }
}

/// `bytes`, then POISON up to `ROOM` bytes.
fn poisoned(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(ROOM as usize, POISON);
    v
}

/// The answer of the `n`th GET_INFO with its bytes from `at` replaced.
fn info_with(n: u64, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut info = info_bytes(n);
    info[at..at + bytes.len()].copy_from_slice(bytes);
    info
}

#[test]
fn every_fault_on_get_info() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    let bad_status = [0x77, 0x77, 0, 0];
    let garbage: Vec<u8> = [0x01, 0x7f, 0xff, 0x80, b'A', 0x1b]
        .into_iter()
        .cycle()
        .take(32)
        .collect();
    // (file contents, used length, bytes of the answer buffer); the n-th
    // command is answered with num_commands n (every answered one counts).
    let cases: Vec<(&str, u32, Vec<u8>)> = vec![
        ("none", INFO_SIZE, info_bytes(1)),
        ("short", 4, vec![0; 4]),
        ("truncated", 8, vec![0; 8]),
        ("overlong\n", ROOM + 4096, info_bytes(4)),
        ("bad-status", INFO_SIZE, info_with(5, 0, &bad_status)),
        ("invalid", 8, status_only(VIRTIO_BUFSHARE_S_INVALID)),
        ("unsupported", 8, status_only(VIRTIO_BUFSHARE_S_UNSUPPORTED)),
        (
            "device-error",
            8,
            status_only(VIRTIO_BUFSHARE_S_DEVICE_ERROR),
        ),
        ("bad-version", INFO_SIZE, info_with(9, 8, &[99, 0, 0, 0])),
        ("  garbage-name \n", INFO_SIZE, info_with(10, 48, &garbage)),
        // Back to normal, in every way the file can say so.
        ("none\n", INFO_SIZE, info_bytes(11)),
        ("", INFO_SIZE, info_bytes(12)),
        ("no-such-fault", INFO_SIZE, info_bytes(13)),
        (" \n", INFO_SIZE, info_bytes(14)),
    ];
    for (i, (contents, len, bytes)) in cases.iter().enumerate() {
        f.set(contents);
        let (got_len, got) = f.run(BUF);
        assert_eq!(got_len, *len, "{contents:?}");
        assert_eq!(got, poisoned(bytes), "{contents:?}");
        assert_eq!(f.s.notifications(), i as u64 + 1);
    }
    assert_eq!(f.s.backend.device().num_commands(), cases.len() as u64);

    // The file removed: normal.
    std::fs::remove_file(&f.path).unwrap();
    assert_eq!(f.run(BUF), (INFO_SIZE, poisoned(&info_bytes(15))));
}

#[test]
fn every_fault_on_another_command() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    let unsupported = status_only(VIRTIO_BUFSHARE_S_UNSUPPORTED);
    let cases: Vec<(&str, u32, Vec<u8>)> = vec![
        ("none", 8, unsupported.clone()),
        ("short", 4, unsupported[..4].to_vec()),
        ("truncated", 8, vec![0; 8]),
        ("overlong", ROOM + 4096, unsupported.clone()),
        ("bad-status", 8, status_only(0x7777)),
        ("invalid", 8, status_only(VIRTIO_BUFSHARE_S_INVALID)),
        ("unsupported", 8, unsupported.clone()),
        (
            "device-error",
            8,
            status_only(VIRTIO_BUFSHARE_S_DEVICE_ERROR),
        ),
        // Only GET_INFO answers have a version and a name.
        ("bad-version", 8, unsupported.clone()),
        ("garbage-name", 8, unsupported.clone()),
        ("none", 8, unsupported.clone()),
    ];
    for (contents, len, bytes) in &cases {
        f.set(contents);
        assert_eq!(f.run(BUF + 8), (*len, poisoned(bytes)), "{contents:?}");
    }
}

#[test]
fn no_room_for_a_header_is_len_0_whatever_the_fault() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    for fault in Fault::ALL {
        if fault.drops_chain() {
            continue;
        }
        if fault == Fault::LoseBuffers {
            f.set("lose-buffers t");
        } else {
            f.set(fault.name());
        }
        let used = f.s.used_idx();
        f.s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x1000, 7, true)]);
        f.s.kick();
        // Twice under duplicate.
        let returned = fault.used_ids(0, QSIZE).len() as u16;
        assert_eq!(f.s.used_idx(), used + returned, "{fault}");
        for i in 0..returned {
            assert_eq!(f.s.used(used + i).1, 0, "{fault}");
        }
        assert_eq!(f.s.read(BUF + 0x1000, 7), [POISON; 7]);
    }
    assert_eq!(f.s.backend.device().num_commands(), 0);
}

#[test]
fn drop_then_none_serves_the_next_chains() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    assert_eq!(f.run(BUF).0, INFO_SIZE);

    // Three chains dropped, in one batch and then alone.
    f.set("drop\n");
    let (_, a) = f.offer(BUF);
    let (_, b) = f.offer(BUF + 8);
    f.s.kick();
    let (_, c) = f.offer(BUF);
    f.s.kick();
    assert_eq!(f.s.used_idx(), 1, "dropped chains are not returned");
    assert_eq!(f.s.notifications(), 1, "nor notified");
    for answer in [a, b, c] {
        assert_eq!(f.s.read(answer, ROOM as usize), [POISON; ROOM as usize]);
    }
    // Dropped commands are not carried out.
    assert_eq!(f.s.backend.device().num_commands(), 1);
    // A kick with nothing new changes nothing.
    f.s.kick();
    assert_eq!(f.s.used_idx(), 1);

    // The next chains, after the dropped ones in the available ring, are
    // served.
    f.set("none");
    let (len, answer) = f.run(BUF);
    assert_eq!((len, answer), (INFO_SIZE, poisoned(&info_bytes(2))));
    assert_eq!(f.s.notifications(), 2);
    assert_eq!(f.run(BUF + 8).0, 8);
    // Chains of 2 descriptors: heads 0, then 2, 4, 6 (dropped), 8, 10.
    assert_eq!(f.s.used(1).0, 8, "the chain after the 3 dropped ones");
    assert_eq!(f.s.used(2).0, 10);
}

#[test]
fn drop_next_drops_one_chain_per_token() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    assert_eq!(f.run(BUF).0, INFO_SIZE);

    // Three chains in one batch: the first one is left outstanding, the
    // others served.
    f.set("drop-next a\n");
    let (dropped, a) = f.offer(BUF);
    let (second, _) = f.offer(BUF + 8);
    let (third, _) = f.offer(BUF);
    f.s.kick();
    assert_eq!(f.s.used_idx(), 3);
    assert_eq!(f.s.used(1), (second, 8));
    assert_eq!(f.s.used(2), (third, INFO_SIZE));
    assert_eq!(f.s.read(a, ROOM as usize), [POISON; ROOM as usize]);
    assert_eq!(f.s.backend.device().num_commands(), 3);

    // The same TOKEN, however written, drops nothing more.
    for contents in ["drop-next a", " drop-next\ta \n", "none", "drop-next a"] {
        f.set(contents);
        assert_eq!(f.run(BUF).0, INFO_SIZE, "{contents:?}");
    }
    // Malformed: no fault.
    for contents in ["drop-next", "drop-next a b", "drop-next a/b"] {
        f.set(contents);
        assert_eq!(f.run(BUF).0, INFO_SIZE, "{contents:?}");
    }
    // Another one: one more, alone in its kick, neither returned nor
    // notified.
    f.set("drop-next b");
    let notified = f.s.notifications();
    let used = f.s.used_idx();
    let (head, _) = f.offer(BUF);
    f.s.kick();
    assert_eq!(f.s.used_idx(), used);
    assert_eq!(f.s.notifications(), notified);
    let (len, answer) = f.run(BUF);
    assert_eq!(len, INFO_SIZE);
    assert_eq!(answer[..INFO_SIZE as usize], info_bytes(11));
    assert_ne!(f.s.used(used).0, head);
    // lose-buffers keeps a TOKEN of its own.
    f.set("lose-buffers b");
    assert_eq!(f.run(BUF).0, INFO_SIZE);
    f.set("drop-next b");
    assert_eq!(f.run(BUF).0, INFO_SIZE);
    assert_ne!(f.s.used(f.s.used_idx() - 1).0, dropped);
}

#[test]
fn drop_with_event_idx() {
    let mem = memory();
    let mut f = Faulty::new(&mem, true);
    f.s.set_used_event(0);
    f.set("drop");
    f.offer(BUF);
    f.s.kick();
    assert_eq!(f.s.used_idx(), 0);
    assert_eq!(f.s.notifications(), 0);
    // The device has taken the chain and waits for the next one.
    assert_eq!(f.s.avail_event(), 1);

    f.set("none");
    assert_eq!(f.run(BUF), (INFO_SIZE, poisoned(&info_bytes(1))));
    assert_eq!(f.s.notifications(), 1);
    assert_eq!(f.s.avail_event(), 2);
}

#[test]
fn drop_then_device_reset() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.run(BUF);
    f.set("drop");
    f.offer(BUF);
    f.offer(BUF);
    f.s.kick();
    assert_eq!(f.s.used_idx(), 1);

    // The driver gives up and resets the device: the frontend stops the
    // queue (GET_VRING_BASE) and sets it up again from scratch.
    f.set("none");
    f.s.vring.set_queue_ready(false);
    f.s.backend.stop_vring(0).unwrap();
    f.s.write(0, &vec![0; BUF as usize]);
    f.s.vring.set_queue_next_avail(0);
    f.s.vring.set_queue_next_used(0);
    f.s.vring.set_queue_ready(true);
    f.s.next_desc = 0;

    assert_eq!(f.run(BUF), (INFO_SIZE, poisoned(&info_bytes(1))));
    assert_eq!(f.s.used(0).0, 0);
    assert_eq!(f.run(BUF), (INFO_SIZE, poisoned(&info_bytes(2))));
}

#[test]
fn overlong_used_length_follows_the_writable_room() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.set("overlong");
    f.s.add_chain(&[
        Desc(BUF, 8, false),
        Desc(BUF + 0x1000, 40, true),
        Desc(BUF + 0x2000, 60, true),
    ]);
    f.s.kick();
    assert_eq!(f.s.used(0).1, 100 + 4096);
    let mut got = f.s.read(BUF + 0x1000, 40);
    got.extend(f.s.read(BUF + 0x2000, 40));
    assert_eq!(got, info_bytes(1));
    assert_eq!(f.s.read(BUF + 0x2000 + 40, 20), [POISON; 20]);
}

#[test]
fn faults_on_buffer_commands() {
    use super::buffers::{register, DATA};
    use bufshare_uapi::{unregister_bytes as unregister, VIRTIO_BUFSHARE_S_NO_BUFFER};

    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.s.backend.acked_features(1);
    let registered = |f: &Faulty| f.s.backend.device().num_buffers();
    let reg = register(1, &[(DATA, 16)]);
    let poison4 = [POISON; 4];

    // Not carried out.
    f.set("drop");
    assert_eq!(f.send(&reg), None);
    for (word, status) in [
        ("invalid", VIRTIO_BUFSHARE_S_INVALID),
        ("unsupported", VIRTIO_BUFSHARE_S_UNSUPPORTED),
        ("device-error", VIRTIO_BUFSHARE_S_DEVICE_ERROR),
    ] {
        f.set(word);
        assert_eq!(f.send(&reg), Some((8, status_only(status))), "{word}");
    }
    assert_eq!(registered(&f), 0);

    // Carried out, answered wrong.
    f.set("short");
    let short = [&0u32.to_le_bytes()[..], &poison4].concat();
    assert_eq!(f.send(&reg), Some((4, short)));
    assert_eq!(registered(&f), 1);
    f.set("bad-status");
    assert_eq!(f.send(&unregister(1)), Some((8, status_only(0x7777))));
    assert_eq!(registered(&f), 0);
    f.set("truncated");
    assert_eq!(f.send(&unregister(1)), Some((8, status_only(0))));
    f.set("overlong");
    assert_eq!(f.send(&reg), Some((ROOM + 4096, status_only(0))));
    assert_eq!(registered(&f), 1);
    // GET_INFO only faults answer normally.
    for word in ["bad-version", "garbage-name", "none"] {
        f.set(word);
        assert_eq!(
            f.send(&unregister(9)),
            Some((8, status_only(VIRTIO_BUFSHARE_S_NO_BUFFER))),
            "{word}"
        );
    }
    assert_eq!(registered(&f), 1);
}

#[test]
fn lose_buffers_once_per_token() {
    use super::buffers::{register, DATA};
    use bufshare_uapi::{
        update_command, VIRTIO_BUFSHARE_F_BUFFERS, VIRTIO_BUFSHARE_F_GENERATION,
        VIRTIO_BUFSHARE_S_NO_BUFFER, VIRTIO_BUFSHARE_S_OK,
    };
    use vm_memory::ByteValued;

    const OK: u32 = VIRTIO_BUFSHARE_S_OK;
    const NO_BUFFER: u32 = VIRTIO_BUFSHARE_S_NO_BUFFER;
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.s.backend
        .acked_features((1 << VIRTIO_BUFSHARE_F_BUFFERS) | (1 << VIRTIO_BUFSHARE_F_GENERATION));
    // Sends `command`; returns (status, generation) of its answer.
    let send = |f: &mut Faulty, command: &[u8]| {
        let (len, hdr) = f.send(command).expect("the chain is returned");
        assert_eq!(len, 8);
        (
            u32::from_le_bytes(hdr[..4].try_into().unwrap()),
            u32::from_le_bytes(hdr[4..].try_into().unwrap()),
        )
    };
    // An UPDATE of buffer `id`, with a seqno greater than any before.
    let seqno = std::cell::Cell::new(0u64);
    let update = |id: u64| {
        seqno.set(seqno.get() + 1);
        update_command(id, seqno.get(), None, None)
            .as_slice()
            .to_vec()
    };
    let registered = |f: &Faulty| f.s.backend.device().num_buffers();
    let reg = register(1, &[(DATA, 16)]);

    let g0 = f.s.backend.device().generation();
    assert_ne!(g0, 0);
    assert_eq!(send(&mut f, &reg), (OK, g0));
    assert_eq!(send(&mut f, &update(1)), (OK, g0));

    // Lost before the next command, which is then carried out normally.
    f.set("lose-buffers a\n");
    let (status, g1) = send(&mut f, &update(1));
    assert_eq!(status, NO_BUFFER);
    assert_ne!(g1, g0);
    assert_ne!(g1, 0);
    assert_eq!(registered(&f), 0);
    assert_eq!(f.s.backend.device().generation(), g1);
    // Losing them counts nothing: 3 commands so far.
    assert_eq!(f.s.backend.device().num_commands(), 3);

    // The same token: nothing more, whatever the file holds in between.
    assert_eq!(send(&mut f, &reg), (OK, g1));
    assert_eq!(send(&mut f, &update(1)), (OK, g1));
    for contents in [
        "lose-buffers a",
        " lose-buffers\ta \n",
        "none",
        "lose-buffers a",
    ] {
        f.set(contents);
        assert_eq!(send(&mut f, &update(1)), (OK, g1), "{contents:?}");
    }
    assert_eq!(registered(&f), 1);
    // Malformed: no fault at all.
    for contents in [
        "lose-buffers",
        "lose-buffers a b",
        "lose-buffers b/c",
        "lose-buffers\nb",
        "lose-buffersb",
        "lose-buffers 123456789012345678901234567890123",
    ] {
        f.set(contents);
        assert_eq!(send(&mut f, &update(1)), (OK, g1), "{contents:?}");
    }
    assert_eq!(registered(&f), 1);

    // Another token: lost again.
    f.set("lose-buffers b");
    let (status, g2) = send(&mut f, &update(1));
    assert_eq!(status, NO_BUFFER);
    assert_ne!(g2, g1);
    assert_eq!(registered(&f), 0);
    assert_eq!(send(&mut f, &reg), (OK, g2));
    // Only the last token is remembered: `a` again loses them again.
    f.set("lose-buffers a");
    let (status, g3) = send(&mut f, &update(1));
    assert_eq!((status, registered(&f)), (NO_BUFFER, 0));
    assert_ne!(g3, g2);

    // A device reset drops the buffers but keeps the generation.
    assert_eq!(send(&mut f, &reg), (OK, g3));
    f.s.backend.reset_device();
    assert_eq!(registered(&f), 0);
    assert_eq!(send(&mut f, &update(1)), (NO_BUFFER, g3));
}

#[test]
fn lose_buffers_even_for_a_chain_that_cannot_be_answered() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.s.backend.acked_features(1 << 1);
    let g0 = f.s.backend.device().generation();
    f.set("lose-buffers x");
    // No room for an answer: used length 0, but the token is acted on.
    f.s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x1000, 7, true)]);
    f.s.kick();
    assert_eq!(f.s.used(0).1, 0);
    let g1 = f.s.backend.device().generation();
    assert_ne!(g1, g0);
    let (len, answer) = f.run(BUF);
    assert_eq!(len, INFO_SIZE);
    assert_eq!(answer[4..8], g1.to_le_bytes());
    assert_eq!(f.s.backend.device().num_commands(), 1);
}

/// Resets the device through `reset` in another thread, checking on the
/// way that buffer 1 is still registered `RESET_DELAY / 2` in if `slow`;
/// returns how long the reset took.
fn timed_reset(f: &mut Faulty, slow: bool, reset: fn(&mut VhostUserBufshareBackend)) -> Duration {
    let state = Arc::clone(f.s.backend.device().state());
    let backend = &mut f.s.backend;
    thread::scope(|scope| {
        let start = Instant::now();
        let resetting = scope.spawn(move || reset(backend));
        if slow {
            thread::sleep(RESET_DELAY / 2);
            assert!(
                state.lock().buffers.contains(1),
                "the reset is carried out after the delay"
            );
        }
        resetting.join().unwrap();
        assert_eq!(state.lock().buffers.len(), 0);
        start.elapsed()
    })
}

#[test]
fn slow_reset_delays_device_resets() {
    use super::buffers::{register, DATA};
    use bufshare_uapi::VIRTIO_BUFSHARE_F_BUFFERS;

    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.s.backend.acked_features(1 << VIRTIO_BUFSHARE_F_BUFFERS);
    let reg = register(1, &[(DATA, 16)]);
    let resets: [fn(&mut VhostUserBufshareBackend); 2] =
        [|b| b.reset_device(), |b| b.stop_vring(0).unwrap()];
    for reset in resets {
        // Commands are served normally under slow-reset.
        f.set("slow-reset\n");
        assert_eq!(f.send(&reg), Some((8, status_only(0))));
        assert_eq!(f.run(BUF).0, INFO_SIZE);
        let took = timed_reset(&mut f, true, reset);
        assert!(took >= RESET_DELAY, "{took:?}");

        // Not any more: at once.
        f.set("none");
        assert_eq!(f.send(&reg), Some((8, status_only(0))));
        let took = timed_reset(&mut f, false, reset);
        assert!(took < RESET_DELAY, "{took:?}");
    }
}

#[test]
fn slow_reset_is_read_when_the_reset_begins() {
    use super::buffers::{register, DATA};
    use bufshare_uapi::VIRTIO_BUFSHARE_F_BUFFERS;

    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.s.backend.acked_features(1 << VIRTIO_BUFSHARE_F_BUFFERS);
    let reg = register(1, &[(DATA, 16)]);
    // The last command read "none": the reset reads the file again.
    assert_eq!(f.send(&reg), Some((8, status_only(0))));
    f.set("slow-reset");
    let took = timed_reset(&mut f, true, |b| b.reset_device());
    assert!(took >= RESET_DELAY, "{took:?}");
    // And the other way round.
    assert_eq!(f.send(&reg), Some((8, status_only(0))));
    f.set("none");
    let took = timed_reset(&mut f, false, |b| b.stop_vring(0).unwrap());
    assert!(took < RESET_DELAY, "{took:?}");
}

/// The events of the events file of `f`, as (word, ns).
fn reset_events(f: &Faulty) -> Vec<(String, u128)> {
    let mut path = f.path.clone().into_os_string();
    path.push(".events");
    crate::fault::events::parse_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

#[test]
fn resets_are_written_down() {
    use crate::fault::events::realtime_ns;

    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    // Commands are not.
    f.set("none");
    f.run(BUF);
    assert_eq!(reset_events(&f), []);

    let before = realtime_ns();
    f.s.backend.reset_device();
    f.set("slow-reset");
    f.s.backend.stop_vring(0).unwrap();
    f.set("none");
    f.s.backend.stop_vring(0).unwrap();
    let after = realtime_ns();

    let events = reset_events(&f);
    let words: Vec<&str> = events.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        words,
        [
            "reset-start",
            "reset-done",
            "reset-start",
            "reset-done",
            "reset-start",
            "reset-done"
        ]
    );
    let times: Vec<u128> = events.iter().map(|&(_, ns)| ns).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(before <= times[0] && times[5] <= after);
    // The slow one took the delay between its start and its end.
    assert!(times[3] - times[2] >= RESET_DELAY.as_nanos(), "{times:?}");
    assert!(times[1] - times[0] < RESET_DELAY.as_nanos(), "{times:?}");
}

/// What a test sees of a [`Faulty`] while its backend serves a kick in
/// another thread ([`kick_aside`]): the used index and the notifications so
/// far, and the sequence number of buffer 1 on the device.
struct Watch<'a> {
    mem: &'a GuestMemoryMmap,
    used_idx: GuestAddress,
    used_event: GuestAddress,
    calls: &'a File,
    state: Arc<crate::buffers::SharedState>,
}

impl Watch<'_> {
    /// (used index, notifications, seqno of buffer 1).
    fn now(&self) -> (u16, u64, u64) {
        let used = u16::from_le(self.mem.read_obj(self.used_idx).unwrap());
        let seqno = self.state.lock().buffers.get(1).map_or(0, |b| b.seqno);
        (used, self.calls.metadata().unwrap().len() / 8, seqno)
    }

    /// Sets `used_event`, as [`Setup::set_used_event`].
    fn set_used_event(&self, idx: u16) {
        self.mem.write_obj(idx.to_le(), self.used_event).unwrap();
    }
}

/// Kicks the queue of `f` in another thread and, meanwhile, calls `watch`
/// in this one; returns how long the kick took to be served.
fn kick_aside(f: &mut Faulty, watch: impl FnOnce(&Watch)) -> Duration {
    let w = Watch {
        mem: f.s.mem,
        used_idx: GuestAddress(f.s.queue.used_addr().0 + 2),
        used_event: GuestAddress(f.s.queue.avail_addr().0 + 4 + 2 * u64::from(QSIZE)),
        calls: &f.s.calls,
        state: Arc::clone(f.s.backend.device().state()),
    };
    let backend = &mut f.s.backend;
    let vring = &f.s.vring;
    thread::scope(|scope| {
        let start = Instant::now();
        let serving = scope.spawn(move || {
            backend
                .handle_event(0, EventSet::IN, std::slice::from_ref(vring), 0)
                .unwrap();
        });
        watch(&w);
        serving.join().unwrap();
        start.elapsed()
    })
}

/// An UPDATE of buffer 1 with `seqno`.
fn update(seqno: u64) -> Vec<u8> {
    use vm_memory::ByteValued;
    bufshare_uapi::update_command(1, seqno, None, None)
        .as_slice()
        .to_vec()
}

/// A [`Faulty`] with buffer 1 registered.
fn with_buffer(mem: &GuestMemoryMmap, event_idx: bool) -> Faulty<'_> {
    use super::buffers::{register, DATA};
    use bufshare_uapi::VIRTIO_BUFSHARE_F_BUFFERS;

    let mut f = Faulty::new(mem, event_idx);
    f.s.backend.acked_features(1 << VIRTIO_BUFSHARE_F_BUFFERS);
    assert_eq!(
        f.send(&register(1, &[(DATA, 16)])),
        Some((8, status_only(0)))
    );
    f
}

#[test]
fn slow_answer_carries_the_command_out_and_answers_late() {
    let mem = memory();
    let mut f = with_buffer(&mem, false);
    assert_eq!(f.send(&update(1)), Some((8, status_only(0))));
    let (used, notified) = (f.s.used_idx(), f.s.notifications());

    f.set("slow-answer\n");
    let command = update(2);
    f.s.write(BUF + 0x400, &command);
    let answer = f.next_answer;
    f.next_answer += 0x100;
    f.s.add_chain(&[
        Desc(BUF + 0x400, command.len() as u32, false),
        Desc(answer, ROOM, true),
    ]);
    let took = kick_aside(&mut f, |w| {
        thread::sleep(ANSWER_DELAY / 2);
        // Carried out, not answered yet: seqno 2 is the device's, the chain
        // neither returned nor notified.
        assert_eq!(w.now(), (used, notified, 2), "half way");
    });
    assert!(took >= ANSWER_DELAY, "{took:?}");
    // Then answered, normally, and notified.
    assert_eq!(f.s.used_idx(), used + 1);
    assert_eq!(f.s.used(used), (u32::from(f.s.next_desc) - 2, 8));
    assert_eq!(f.s.read(answer, ROOM as usize), poisoned(&status_only(0)));
    assert_eq!(f.s.notifications(), notified + 1);
    assert_eq!(f.s.backend.device().num_commands(), 3);

    // The next UPDATE must follow it: seqno 2 again is stale, 3 is fine.
    f.set("none");
    let start = Instant::now();
    assert_eq!(
        f.send(&update(2)),
        Some((8, status_only(bufshare_uapi::VIRTIO_BUFSHARE_S_INVALID)))
    );
    assert_eq!(f.send(&update(3)), Some((8, status_only(0))));
    assert!(start.elapsed() < ANSWER_DELAY, "none answers at once");
}

#[test]
fn slow_answer_serves_a_batch_one_chain_per_delay() {
    for event_idx in [false, true] {
        let mem = memory();
        let mut f = with_buffer(&mem, event_idx);
        let (used, notified) = (f.s.used_idx(), f.s.notifications());
        if event_idx {
            // The driver wants the next answer notified (and the one after
            // it, below).
            f.s.set_used_event(used);
        }

        f.set("slow-answer");
        let len = update(1).len() as u32;
        f.s.write(BUF + 0x400, &update(1));
        f.s.write(BUF + 0x500, &update(2));
        let first = f.next_answer;
        f.next_answer += 0x200;
        f.s.add_chain(&[Desc(BUF + 0x400, len, false), Desc(first, ROOM, true)]);
        f.s.add_chain(&[
            Desc(BUF + 0x500, len, false),
            Desc(first + 0x100, ROOM, true),
        ]);
        let took = kick_aside(&mut f, |w| {
            thread::sleep(ANSWER_DELAY / 2);
            assert_eq!(w.now(), (used, notified, 1), "half way through the first");
            thread::sleep(ANSWER_DELAY);
            // The first returned and notified on its own; the second
            // carried out, held back.
            let now = w.now();
            assert_eq!(now, (used + 1, notified + 1, 2), "event_idx {event_idx}");
            if event_idx {
                w.set_used_event(used + 1);
            }
        });
        assert!(took >= 2 * ANSWER_DELAY, "{took:?}");
        assert_eq!(f.s.used_idx(), used + 2);
        assert_eq!(f.s.notifications(), notified + 2, "event_idx {event_idx}");
        for i in 0..2 {
            assert_eq!(f.s.used(used + i).1, 8);
            let answer = first + 0x100 * u64::from(i);
            assert_eq!(f.s.read(answer, 8), status_only(0));
        }
    }
}

#[test]
fn duplicate_puts_the_chain_on_the_used_ring_twice() {
    for event_idx in [false, true] {
        let mem = memory();
        let mut f = Faulty::new(&mem, event_idx);
        assert_eq!(f.run(BUF), (INFO_SIZE, poisoned(&info_bytes(1))));
        let notified = f.s.notifications();

        f.set("duplicate\n");
        let used = f.s.used_idx();
        if event_idx {
            f.s.set_used_event(used);
        }
        let (head, answer) = f.offer(BUF);
        f.s.kick();
        // Carried out and answered once, returned twice, notified once.
        assert_eq!(f.s.used_idx(), used + 2, "event_idx {event_idx}");
        assert_eq!(f.s.used(used), (head, INFO_SIZE));
        assert_eq!(f.s.used(used + 1), (head, INFO_SIZE));
        assert_eq!(f.s.read(answer, ROOM as usize), poisoned(&info_bytes(2)));
        assert_eq!(f.s.backend.device().num_commands(), 2);
        assert_eq!(f.s.notifications(), notified + 1);

        // Back to normal: once.
        f.set("none");
        let used = f.s.used_idx();
        let (head, _) = f.offer(BUF);
        f.s.kick();
        assert_eq!(f.s.used_idx(), used + 1);
        assert_eq!(f.s.used(used), (head, INFO_SIZE));
    }
}

#[test]
fn duplicate_even_for_a_chain_that_cannot_be_answered() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    f.set("duplicate");
    f.s.add_chain(&[Desc(BUF, 8, false), Desc(BUF + 0x1000, 7, true)]);
    f.s.kick();
    assert_eq!(f.s.used_idx(), 2);
    assert_eq!(f.s.used(0), (0, 0));
    assert_eq!(f.s.used(1), (0, 0));
    assert_eq!(f.s.backend.device().num_commands(), 0);
}

#[test]
fn wrong_id_returns_the_chain_under_the_next_descriptor() {
    let mem = memory();
    let mut f = Faulty::new(&mem, false);
    assert_eq!(f.run(BUF), (INFO_SIZE, poisoned(&info_bytes(1))));

    f.set("wrong-id");
    let used = f.s.used_idx();
    let (head, answer) = f.offer(BUF);
    f.s.kick();
    // Carried out and answered, returned once, under head + 1: the second
    // descriptor of its own chain, no head.
    assert_eq!(f.s.used_idx(), used + 1);
    assert_eq!(f.s.used(used), (head + 1, INFO_SIZE));
    assert_eq!(f.s.read(answer, ROOM as usize), poisoned(&info_bytes(2)));
    assert_eq!(f.s.notifications(), 2);

    f.set("none");
    assert_eq!(f.run(BUF), (INFO_SIZE, poisoned(&info_bytes(3))));
}

#[test]
fn used_ids_of_every_fault() {
    for fault in Fault::ALL {
        let expected = match fault {
            Fault::Duplicate => vec![7, 7],
            Fault::WrongId => vec![8],
            _ => vec![7],
        };
        assert_eq!(fault.used_ids(7, QSIZE), expected, "{fault}");
    }
    // The last descriptor's next one is the first.
    assert_eq!(Fault::WrongId.used_ids(QSIZE - 1, QSIZE), [0]);
    assert_eq!(Fault::WrongId.used_ids(u16::MAX, 0), [0]);
    assert_eq!(Fault::Duplicate.used_ids(QSIZE - 1, QSIZE), [QSIZE - 1; 2]);
}
