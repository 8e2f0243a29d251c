// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Fault injection: makes the device misbehave on purpose, to test how the
//! guest driver copes with a broken device.
//!
//! With `--fault-file PATH`, the backend reads PATH before each command
//! ([`FaultFile::read`]). The word it holds ([`Fault`]) says how the device
//! misbehaves on that command; `none`, an empty or missing file, an unknown
//! word or an unreadable file mean no fault at all.
//!
//! It reads PATH again when a device reset begins
//! ([`FaultFile::before_reset`]): while it holds `slow-reset`
//! ([`Fault::SlowReset`]), the reset waits [`SLOW_RESET_DELAY`] before it is
//! carried out, so that a driver's reset that does not wait for the device
//! shows. Every device reset is also written down in `PATH.events`
//! ([`events`]), when it begins and when it is done, so that a guest test
//! can tell when the device's reset happened.
//!
//! While it holds `slow-answer` ([`Fault::SlowAnswer`]), every chain is
//! served normally (the command is carried out, its answer written) but
//! returned to the driver, and the driver notified, only
//! [`SLOW_ANSWER_DELAY`] later ([`FaultFile::before_answer`]): the queue's
//! worker waits meanwhile, so that the commands of that queue are then served
//! one per [`SLOW_ANSWER_DELAY`]. A driver that stops waiting for an answer
//! (a signal) finds the command carried out all the same.
//!
//! The file may also hold `lose-buffers TOKEN` ([`Directive::Once`]):
//! once per TOKEN, before the next command, the device loses its buffers as
//! a restarted device implementation does ([`Fault::LoseBuffers`],
//! [`BufshareDevice::lose_buffers`]), and answers that command normally.
//! Or `drop-next TOKEN` ([`Directive::Once`]): once per TOKEN, the next
//! chain is left outstanding ([`Fault::DropNext`], as [`Fault::Drop`]), and
//! the later ones are served normally.
//! Or `bogus-events TOKEN` ([`Directive::Once`]): once per TOKEN,
//! before the next command, the device puts malformed and spurious events
//! ahead of its own on the event queue ([`Fault::BogusEvents`],
//! [`bogus_events`]), and serves that command normally.
//!
//! Except [`Fault::Drop`] and [`Fault::DropNext`], faults only change what is answered to a command
//! the device answers (and [`Fault::SlowAnswer`] when, [`Fault::Duplicate`]
//! and [`Fault::WrongId`] under which ids: [`Fault::used_ids`]): a chain with
//! broken descriptors, or with less room than a `virtio_bufshare_resp_hdr`,
//! is returned with a used length of 0 as always.
//!
//! [`Fault::Duplicate`] and [`Fault::WrongId`] break the virtqueue's rules
//! rather than the protocol's: the first puts a chain on the used ring twice,
//! the second returns it under an id that is not its head. A driver cannot
//! tell such a used element from a good one if the id is the head of another
//! chain it has outstanding; Linux's virtio core marks the queue broken when
//! it is not.
//!
//! Every fault but [`Fault::SlowReset`] (which is about resets) applies to
//! every command, the buffer commands included:
//! [`Fault::Short`], [`Fault::Truncated`], [`Fault::Overlong`] and
//! [`Fault::BadStatus`] and [`Fault::SlowAnswer`] carry the command out (a
//! REGISTER registers);
//! [`Fault::Invalid`], [`Fault::Unsupported`], [`Fault::DeviceError`] and
//! [`Fault::Drop`] do not, except that an ADD_RANGES refused with
//! `S_INVALID` drops its incomplete buffer, as a real `S_INVALID` does.
//!
//! A fault only decides: whether a chain is served at all
//! ([`Fault::drops_chain`]), whether the command is carried out or refused
//! ([`Fault::refusal`]), how the answer is rewritten ([`Fault::rewrite`]) and
//! which used length is reported ([`Fault::used_len`]), and whether the
//! answer is held back ([`Fault::holds_answer`]). The backend carries
//! the command out and writes the answer ([`crate::backend::answer`]).
//! Whatever the fault, an answer that holds a whole resp_hdr carries the
//! device's generation (with `VIRTIO_BUFSHARE_F_GENERATION`): the backend
//! writes it last, once the fault rewrote the answer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::mem::size_of;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::thread;
use std::time::Duration;

use bufshare_uapi::{
    VirtioBufshareCmdHdr, VirtioBufshareRespInfo, VIRTIO_BUFSHARE_CMD_GET_INFO,
    VIRTIO_BUFSHARE_NAME_LEN, VIRTIO_BUFSHARE_S_DEVICE_ERROR, VIRTIO_BUFSHARE_S_INVALID,
    VIRTIO_BUFSHARE_S_OK, VIRTIO_BUFSHARE_S_UNSUPPORTED,
};
use log::{debug, info, warn};
use thiserror::Error as ThisError;
use vm_memory::ByteValued;

use crate::device::{status_only, BufshareDevice, RESP_HDR_SIZE};
use crate::events::DeviceEvent;

pub mod events;

use events::{EventsFile, ResetEvent, EVENTS_SUFFIX};

/// Status of the answers of [`Fault::BadStatus`]: no status the protocol
/// defines.
pub const BAD_STATUS: u32 = 0x7777;
/// Version reported by GET_INFO under [`Fault::BadVersion`].
pub const BAD_VERSION: u32 = 99;
/// Bytes written under [`Fault::Short`]: less than a resp_hdr.
pub const SHORT_LEN: usize = 4;
/// How much [`Fault::Overlong`] adds to the writable room in the used length.
pub const OVERLONG_EXTRA: usize = 4096;
/// The first word of [`Directive::Once`].
pub const LOSE_BUFFERS: &str = "lose-buffers";
/// The first word of [`Directive::Once`].
pub const DROP_NEXT: &str = "drop-next";
/// The first word of [`Directive::Once`].
pub const BOGUS_EVENTS: &str = "bogus-events";
/// Bytes of the short event of [`Fault::BogusEvents`]: less than an event.
pub const SHORT_EVENT_LEN: usize = 40;
/// The event type of [`Fault::BogusEvents`] that the protocol does not define.
pub const BOGUS_EVENT_TYPE: u32 = 0x1fff;
/// The buffer id of the RELEASED and FREED events of [`Fault::BogusEvents`]
/// about a buffer the driver never registered.
pub const BOGUS_BUFFER_ID: u64 = u64::MAX - 1;
/// The application of the CONSUMERS event of [`Fault::BogusEvents`].
pub const BOGUS_APPLICATION: &str = "bogus-events-no-such-app";
/// How far beyond a buffer's last update the bogus RELEASED of
/// [`Fault::BogusEvents`] goes.
pub const BOGUS_SEQNO_AHEAD: u64 = 1000;
/// Most registered buffers [`Fault::BogusEvents`] makes events about.
pub const BOGUS_BUFFERS: usize = 8;
/// The import ids of the spurious IMPORT_* events of [`Fault::BogusEvents`]
/// count down from this one (ids the device never gave).
pub const BOGUS_IMPORT_ID: u64 = u64::MAX - 2;
/// The attachment of the IMPORT_* events of [`Fault::BogusEvents`] about an
/// attachment the driver never made.
pub const BOGUS_ATTACHMENT: u32 = 0xffff_fff0;
/// Most characters of the TOKEN of `lose-buffers TOKEN`.
pub const MAX_TOKEN_LEN: usize = 32;
/// How long a device reset waits under [`Fault::SlowReset`].
pub const SLOW_RESET_DELAY: Duration = Duration::from_secs(3);
/// How long an answer is held back under [`Fault::SlowAnswer`].
pub const SLOW_ANSWER_DELAY: Duration = Duration::from_secs(2);
/// The pattern the GET_INFO name is filled with under
/// [`Fault::GarbageName`]: control characters, DEL, bytes that are not UTF-8,
/// and never a NUL.
const GARBAGE: [u8; 6] = [0x01, 0x7f, 0xff, 0x80, b'A', 0x1b];

/// How the device misbehaves on a command. What each fault does, and the
/// word that selects it, is in [`Fault::CATALOGUE`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `none`: no fault, the device behaves.
    #[default]
    None,
    /// `short`: the answer cut short.
    Short,
    /// `truncated`: a bare resp_hdr with `S_OK`.
    Truncated,
    /// `overlong`: a used length longer than the room.
    Overlong,
    /// `bad-status`: a status the protocol does not define.
    BadStatus,
    /// `invalid`: refused with `S_INVALID`.
    Invalid,
    /// `unsupported`: refused with `S_UNSUPPORTED`.
    Unsupported,
    /// `device-error`: refused with `S_DEVICE_ERROR`.
    DeviceError,
    /// `bad-version`: GET_INFO with a bad version.
    BadVersion,
    /// `garbage-name`: GET_INFO with a name that is not text.
    GarbageName,
    /// `drop`: the chain left outstanding.
    Drop,
    /// `drop-next TOKEN` ([`Directive::Once`]): the chain left
    /// outstanding, once per TOKEN.
    DropNext,
    /// `lose-buffers TOKEN` ([`Directive::Once`]): the buffers lost
    /// before the chain is served ([`Fault::before_chain`]).
    LoseBuffers,
    /// `slow-reset`: device resets delayed ([`FaultFile::before_reset`]);
    /// commands are served normally.
    SlowReset,
    /// `slow-answer`: commands carried out, their answers returned late
    /// ([`FaultFile::before_answer`]).
    SlowAnswer,
    /// `duplicate`: commands carried out and answered normally, their chain
    /// put on the used ring twice ([`Fault::used_ids`]).
    Duplicate,
    /// `wrong-id`: commands carried out and answered normally, their chain
    /// returned under the id of the descriptor after its head
    /// ([`Fault::used_ids`]).
    WrongId,
    /// `bogus-events TOKEN` ([`Directive::Once`]): malformed and
    /// spurious events ([`bogus_events`]) put on the event queue before the
    /// chain is served ([`Fault::before_chain`]).
    BogusEvents,
}

/// An entry of [`Fault::CATALOGUE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultEntry {
    /// The fault.
    pub fault: Fault,
    /// The word that selects it in the fault file ([`Fault::name`]).
    pub word: &'static str,
    /// Whether the word is followed by a TOKEN ([`Directive::Once`]):
    /// then it is no fault on its own ([`Fault::from_str`]).
    pub token: bool,
    /// What the driver gets, for `--help` ([`file_help`]).
    pub what: &'static str,
}

impl Fault {
    /// The catalogue of faults: every fault, in the order of the enum,
    /// with its word and what it does. [`Fault::ALL`], [`Fault::name`],
    /// [`Fault::from_str`] and the `--help` text ([`file_help`]) are made
    /// from it.
    pub const CATALOGUE: [FaultEntry; 18] = [
        FaultEntry {
            fault: Fault::None,
            word: "none",
            token: false,
            what: "normal answers (so do a missing or empty file, an unknown word and a \
                   read error)",
        },
        FaultEntry {
            fault: Fault::Short,
            word: "short",
            token: false,
            what: "the first 4 bytes of the normal answer, used length 4 (less than a \
                   resp_hdr)",
        },
        FaultEntry {
            fault: Fault::Truncated,
            word: "truncated",
            token: false,
            what: "the command is carried out, but the answer is a bare resp_hdr with \
                   status S_OK, used length 8, even for GET_INFO",
        },
        FaultEntry {
            fault: Fault::Overlong,
            word: "overlong",
            token: false,
            what: "the normal answer, with a used length of the chain's writable room \
                   plus 4096",
        },
        FaultEntry {
            fault: Fault::BadStatus,
            word: "bad-status",
            token: false,
            what: "the normal answer with status 0x7777",
        },
        FaultEntry {
            fault: Fault::Invalid,
            word: "invalid",
            token: false,
            what: "the command is not carried out; a bare resp_hdr with status \
                   S_INVALID, used length 8 (as for a real S_INVALID, an ADD_RANGES \
                   refused so drops its incomplete buffer)",
        },
        FaultEntry {
            fault: Fault::Unsupported,
            word: "unsupported",
            token: false,
            what: "the command is not carried out; a bare resp_hdr with status \
                   S_UNSUPPORTED, used length 8",
        },
        FaultEntry {
            fault: Fault::DeviceError,
            word: "device-error",
            token: false,
            what: "the command is not carried out; a bare resp_hdr with status \
                   S_DEVICE_ERROR, used length 8",
        },
        FaultEntry {
            fault: Fault::BadVersion,
            word: "bad-version",
            token: false,
            what: "GET_INFO answers version 99 (other commands: normal)",
        },
        FaultEntry {
            fault: Fault::GarbageName,
            word: "garbage-name",
            token: false,
            what: "GET_INFO answers a name of 32 non-text bytes (01 7f ff 80 41 1b ...) \
                   with no NUL (other commands: normal)",
        },
        FaultEntry {
            fault: Fault::Drop,
            word: "drop",
            token: false,
            what: "the command is not carried out and its chain is never returned nor \
                   notified: it stays outstanding until the driver resets the device; \
                   the chains after it are served as the file then says",
        },
        FaultEntry {
            fault: Fault::DropNext,
            word: DROP_NEXT,
            token: true,
            what: "once per TOKEN (as for lose-buffers), the next chain is left \
                   outstanding as with drop; the chains after it, while the file holds \
                   that TOKEN, are served normally. Only the last TOKEN acted on is \
                   remembered (per connection, apart from lose-buffers' own)",
        },
        FaultEntry {
            fault: Fault::LoseBuffers,
            word: LOSE_BUFFERS,
            token: true,
            what: "once per TOKEN (1 to 32 characters out of [A-Za-z0-9_.-]), before \
                   the next command, the device drops every buffer (consumers \
                   get RESET DISCONNECTED) and takes a new generation, as a restarted \
                   backend would; that command, and the next ones while the file holds \
                   that TOKEN, are served normally. Only the last TOKEN acted on is \
                   remembered (per connection)",
        },
        FaultEntry {
            fault: Fault::SlowReset,
            word: "slow-reset",
            token: false,
            what: "a device reset (the frontend stopping the queue, as QEMU does when \
                   the driver resets the device, or RESET_DEVICE) waits 3 seconds \
                   before it is carried out, if the file holds this word when the \
                   reset begins (it is read then); commands are served normally",
        },
        FaultEntry {
            fault: Fault::SlowAnswer,
            word: "slow-answer",
            token: false,
            what: "the command is carried out and answered normally (its effects, e.g. \
                   an UPDATE's sequence number, are the device's at once), but its \
                   chain is returned, and the driver notified, only 2 seconds later; \
                   the queue waits meanwhile, so its commands are served one per 2 \
                   seconds (and a device reset waits for the answer held)",
        },
        FaultEntry {
            fault: Fault::Duplicate,
            word: "duplicate",
            token: false,
            what: "the command is carried out and answered normally, but its chain is \
                   put on the used ring twice, one element after the other, with the \
                   same id and used length (the driver's virtio core takes the second \
                   for a used id that is not a head, and marks the queue broken)",
        },
        FaultEntry {
            fault: Fault::WrongId,
            word: "wrong-id",
            token: false,
            what: "the command is carried out and answered normally, but the used \
                   element that returns it carries the id of the descriptor after its \
                   head (head + 1, modulo the queue size) instead of the head's: the \
                   chain itself is never returned, and the id is no head the driver \
                   has outstanding unless another chain starts there",
        },
        FaultEntry {
            fault: Fault::BogusEvents,
            word: BOGUS_EVENTS,
            token: true,
            what: "once per TOKEN (as for lose-buffers), before the next command, with \
                   VIRTIO_BUFSHARE_F_EVENTS, these go on the event queue ahead of the \
                   device's own events: a short event (the first 40 bytes of a FREED), \
                   an event of type 0x1fff, RELEASED and FREED for buffer id 2^64 - 2 \
                   (never registered), CONSUMERS for application \
                   bogus-events-no-such-app, and for each registered buffer (at most \
                   8) RELEASED with a seqno 1000 beyond its last update and FREED \
                   although it is still registered; with VIRTIO_BUFSHARE_F_IMPORT, \
                   IMPORT_ADDED for attachment 0xfffffff0 (never made), of size 0, \
                   beyond the import region, not page-aligned, over a live import's \
                   range and under a live import's id, IMPORT_UPDATED of a live \
                   import that does not move on and of an import never made, \
                   IMPORT_REMOVED of an import never made and IMPORT_NO_SPACE for \
                   the attachment never made; the command is served normally. \
                   Only the last TOKEN acted on is remembered (per connection)",
        },
    ];

    /// Every fault, [`Fault::None`] first: those of [`Fault::CATALOGUE`].
    pub const ALL: [Fault; 18] = {
        let mut all = [Fault::None; 18];
        let mut i = 0;
        while i < all.len() {
            all[i] = Fault::CATALOGUE[i].fault;
            i += 1;
        }
        all
    };

    /// The fault's entry in [`Fault::CATALOGUE`].
    pub fn entry(self) -> &'static FaultEntry {
        &Self::CATALOGUE[self as usize]
    }

    /// The word that selects this fault ([`Fault::LoseBuffers`] and
    /// [`Fault::DropNext`]: the first of two, [`LOSE_BUFFERS`] and
    /// [`DROP_NEXT`]).
    pub fn name(self) -> &'static str {
        self.entry().word
    }

    /// Does to `device` what the fault does before its chain is served,
    /// whatever becomes of the chain then (even one that cannot be
    /// answered): [`Fault::LoseBuffers`] loses its buffers;
    /// [`Fault::BogusEvents`] queues [`bogus_events`]; the others nothing.
    pub fn before_chain(self, device: &mut BufshareDevice) {
        match self {
            Fault::LoseBuffers => {
                device.lose_buffers();
            }
            Fault::BogusEvents => device.queue_raw_events(bogus_events(device)),
            _ => {}
        }
    }

    /// Whether the chain, once served, must be held back
    /// ([`FaultFile::before_answer`]) before it is returned: [`Fault::SlowAnswer`].
    pub fn holds_answer(self) -> bool {
        self == Fault::SlowAnswer
    }

    /// The ids under which a chain with head `head`, served, is put on the
    /// used ring of a queue of `size` descriptors: its head once, normally;
    /// twice under [`Fault::Duplicate`]; `head + 1` (modulo `size`) under
    /// [`Fault::WrongId`].
    pub fn used_ids(self, head: u16, size: u16) -> Vec<u16> {
        match self {
            Fault::Duplicate => vec![head, head],
            Fault::WrongId => {
                let next = head.wrapping_add(1);
                vec![if size == 0 || next >= size { 0 } else { next }]
            }
            _ => vec![head],
        }
    }

    /// Whether the chain must be left outstanding: neither carried out nor
    /// returned.
    pub fn drops_chain(self) -> bool {
        matches!(self, Fault::Drop | Fault::DropNext)
    }

    /// The status the command is refused with, without being carried out
    /// ([`BufshareDevice::refuse`]), if the fault refuses commands:
    /// [`Fault::Invalid`], [`Fault::Unsupported`] and [`Fault::DeviceError`].
    /// The others have the command carried out ([`BufshareDevice::process`]),
    /// except [`Fault::Drop`], whose chain is not served at all.
    pub fn refusal(self) -> Option<u32> {
        match self {
            Fault::Invalid => Some(VIRTIO_BUFSHARE_S_INVALID),
            Fault::Unsupported => Some(VIRTIO_BUFSHARE_S_UNSUPPORTED),
            Fault::DeviceError => Some(VIRTIO_BUFSHARE_S_DEVICE_ERROR),
            _ => None,
        }
    }

    /// The used length to report for a chain with `writable` device-writable
    /// bytes, of which `written` were written.
    pub fn used_len(self, written: usize, writable: usize) -> u32 {
        let len = match self {
            Fault::Overlong => writable.saturating_add(OVERLONG_EXTRA),
            _ => written,
        };
        u32::try_from(len).unwrap_or(u32::MAX)
    }

    /// Rewrites `answer`, the device's answer to `request` (a resp_hdr at
    /// least, never longer than the room for it: the rewritten answer is
    /// not longer). Refusals ([`Fault::refusal`]) are left as they are. The
    /// generation is written afterwards, whatever the rewrite.
    pub fn rewrite(self, request: &[u8], mut answer: Vec<u8>) -> Vec<u8> {
        match self {
            Fault::Short => answer.truncate(SHORT_LEN),
            Fault::Truncated => answer = status_only(VIRTIO_BUFSHARE_S_OK),
            Fault::BadStatus => answer[..4].copy_from_slice(&BAD_STATUS.to_le_bytes()),
            Fault::BadVersion => {
                if let Some(mut info) = info_answer(request, &answer) {
                    info.version = BAD_VERSION.into();
                    answer = info.as_slice().to_vec();
                }
            }
            Fault::GarbageName => {
                if let Some(mut info) = info_answer(request, &answer) {
                    let garbage = GARBAGE.iter().cycle();
                    for (byte, &g) in info.name.iter_mut().zip(garbage) {
                        *byte = g;
                    }
                    answer = info.as_slice().to_vec();
                }
            }
            Fault::None
            | Fault::Overlong
            | Fault::Invalid
            | Fault::Unsupported
            | Fault::DeviceError
            | Fault::Drop
            | Fault::DropNext
            | Fault::LoseBuffers
            | Fault::SlowReset
            | Fault::SlowAnswer
            | Fault::Duplicate
            | Fault::WrongId
            | Fault::BogusEvents => {}
        }
        answer
    }
}

/// The events of [`Fault::BogusEvents`], as written into the event queue
/// (each its whole used length), with `device`'s generation: none without
/// `VIRTIO_BUFSHARE_F_EVENTS`.
pub fn bogus_events(device: &BufshareDevice) -> Vec<Vec<u8>> {
    if !device.events_enabled() {
        return Vec::new();
    }
    let generation = device.wire_generation();
    let wire = |event: DeviceEvent| event.to_wire(generation).as_slice().to_vec();
    let live: Vec<(u64, u64)> = {
        let state = device.state().lock();
        state
            .buffers
            .iter()
            .take(BOGUS_BUFFERS)
            .map(|b| (b.id, b.seqno))
            .collect()
    };
    let first = live.first().map_or(BOGUS_BUFFER_ID, |&(id, _)| id);
    let mut short = wire(DeviceEvent::Freed(first));
    short.truncate(SHORT_EVENT_LEN);
    let mut unknown = DeviceEvent::Freed(first).to_wire(generation);
    unknown.type_ = BOGUS_EVENT_TYPE.into();
    let mut events = vec![
        short,
        unknown.as_slice().to_vec(),
        wire(DeviceEvent::Released {
            id: BOGUS_BUFFER_ID,
            seqno: 1,
        }),
        wire(DeviceEvent::Freed(BOGUS_BUFFER_ID)),
        wire(DeviceEvent::Consumers {
            application: BOGUS_APPLICATION.to_string(),
            count: 7,
        }),
    ];
    for (id, seqno) in live {
        events.push(wire(DeviceEvent::Released {
            id,
            seqno: seqno.saturating_add(BOGUS_SEQNO_AHEAD),
        }));
        events.push(wire(DeviceEvent::Freed(id)));
    }
    events.extend(bogus_import_events(device));
    info!("{} bogus events queued (fault injection)", events.len());
    events
}

/// The IMPORT_* events of [`Fault::BogusEvents`], with
/// `VIRTIO_BUFSHARE_F_IMPORT`: IMPORT_ADDED for an attachment the driver
/// never made, of size 0 (malformed), beyond the import region, not
/// page-aligned, over the range of a live import, and under a live import's
/// id; IMPORT_UPDATED of a live import that does not move on, and of an
/// import never made; IMPORT_REMOVED of an import never made; and
/// IMPORT_NO_SPACE for an attachment never made. A driver ignores them
/// all, and closes the imports it never had.
pub fn bogus_import_events(device: &BufshareDevice) -> Vec<Vec<u8>> {
    let Some(port) = device.import_port().filter(|_| device.import_enabled()) else {
        return Vec::new();
    };
    let generation = device.wire_generation();
    let (attachments, imports) = port.hub.snapshot(&port.guest);
    let region = port.hub.region_size();
    let page = 4096;
    let mut next_id = BOGUS_IMPORT_ID;
    let mut fresh_id = || {
        let id = next_id;
        next_id -= 1;
        id
    };
    let added = |import_id, attachment, shm_offset, size| DeviceEvent::ImportAdded {
        import_id,
        attachment,
        buffer_id: BOGUS_BUFFER_ID,
        seqno: 0,
        flags: 0,
        shm_offset,
        size,
    };
    let mut events = vec![
        added(fresh_id(), BOGUS_ATTACHMENT, 0, page),
        added(fresh_id(), BOGUS_ATTACHMENT, 0, 0),
        DeviceEvent::ImportUpdated {
            import_id: BOGUS_IMPORT_ID,
            attachment: BOGUS_ATTACHMENT,
            buffer_id: BOGUS_BUFFER_ID,
            seqno: 1,
        },
        DeviceEvent::ImportRemoved {
            import_id: BOGUS_IMPORT_ID,
            attachment: BOGUS_ATTACHMENT,
            buffer_id: BOGUS_BUFFER_ID,
        },
        DeviceEvent::ImportNoSpace {
            attachment: BOGUS_ATTACHMENT,
            buffer_id: BOGUS_BUFFER_ID,
            size: page,
        },
    ];
    if let Some(&attachment) = attachments.first() {
        events.push(added(fresh_id(), attachment, region, page));
        events.push(added(fresh_id(), attachment, page / 2, page));
    }
    for live in imports.iter().take(BOGUS_BUFFERS) {
        events.push(added(
            fresh_id(),
            live.attachment,
            live.shm_offset,
            live.size,
        ));
        events.push(added(
            live.id,
            live.attachment,
            region.saturating_sub(page),
            page,
        ));
        events.push(DeviceEvent::ImportUpdated {
            import_id: live.id,
            attachment: live.attachment,
            buffer_id: BOGUS_BUFFER_ID,
            seqno: live.seqno,
        });
    }
    events.iter().map(|e| e.to_bytes(generation)).collect()
}

/// The GET_INFO answer in `answer`, if `request` is a GET_INFO that
/// succeeded.
fn info_answer(request: &[u8], answer: &[u8]) -> Option<VirtioBufshareRespInfo> {
    let mut hdr = VirtioBufshareCmdHdr::default();
    hdr.as_mut_slice()
        .copy_from_slice(request.get(..size_of::<VirtioBufshareCmdHdr>())?);
    let mut info = VirtioBufshareRespInfo::default();
    if hdr.type_.to_native() != VIRTIO_BUFSHARE_CMD_GET_INFO
        || answer.len() != info.as_slice().len()
    {
        return None;
    }
    info.as_mut_slice().copy_from_slice(answer);
    (info.hdr.status.to_native() == VIRTIO_BUFSHARE_S_OK).then_some(info)
}

// The catalogue is in the order of the enum: [`Fault::entry`] indexes it.
const _: () = {
    let mut i = 0;
    while i < Fault::CATALOGUE.len() {
        assert!(Fault::CATALOGUE[i].fault as usize == i);
        i += 1;
    }
};
const _: () = assert!(SHORT_LEN < RESP_HDR_SIZE);
const _: () = assert!(GARBAGE.len() <= VIRTIO_BUFSHARE_NAME_LEN);

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A word that names no fault.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
#[error("unknown fault {0:?}")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    /// Parses a fault's word; whitespace around it is ignored, and nothing
    /// at all means [`Fault::None`]. [`Fault::LoseBuffers`] and
    /// [`Fault::DropNext`] are no words on their own (they need a TOKEN:
    /// [`Directive`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.trim();
        if word.is_empty() {
            return Ok(Fault::None);
        }
        Fault::CATALOGUE
            .iter()
            .find(|entry| !entry.token && entry.word == word)
            .map(|entry| entry.fault)
            .ok_or_else(|| UnknownFault(word.to_owned()))
    }
}

/// Width of the lines of [`file_help`].
const HELP_WIDTH: usize = 72;

/// The long help of `--fault-file`: how the file is read, every word of
/// [`Fault::CATALOGUE`] with what it does, and what holds whatever the
/// fault. Wrapped, as clap prints it as it is.
pub fn file_help() -> String {
    let mut help = String::new();
    wrap(
        &mut help,
        "Before each command, and when a device reset begins, read PATH and \
         misbehave as the word in it says (with several guests: every guest's \
         device reads the same PATH). An \
         unknown word is warned about once; whitespace around the word is \
         ignored. The words:",
        "",
        "",
    );
    help.push('\n');
    for entry in &Fault::CATALOGUE {
        let token = if entry.token { " TOKEN" } else { "" };
        let text = format!("{}{token}: {}.", entry.word, entry.what);
        wrap(&mut help, &text, "- ", "  ");
    }
    let not_carried_out: Vec<&str> = Fault::CATALOGUE
        .iter()
        .filter(|e| e.fault.refusal().is_some() || e.fault.drops_chain())
        .map(|e| e.word)
        .collect();
    let (last, others) = not_carried_out.split_last().expect("refusals");
    let dropping: Vec<&str> = Fault::CATALOGUE
        .iter()
        .filter(|e| e.fault.drops_chain())
        .map(|e| e.word)
        .collect();
    help.push('\n');
    wrap(
        &mut help,
        &format!(
            "Every fault but {} applies to every command; {} and {last} do not carry the \
             command out, the others do (a REGISTER registers). Chains with broken \
             descriptors or less than 8 writable bytes are returned with used \
             length 0 whatever the fault, except {}. With \
             VIRTIO_BUFSHARE_F_GENERATION, every answer of 8 bytes or more carries \
             the device's generation, whatever the fault. Every device reset \
             appends a line to PATH{EVENTS_SUFFIX} (made if missing): `reset-start \
             NS` when it begins, `reset-done NS` once it is carried out, NS being \
             CLOCK_REALTIME in nanoseconds; each line is written with a single \
             write() in append mode.",
            Fault::SlowReset.name(),
            others.join(", "),
            dropping.join(" and "),
        ),
        "",
        "",
    );
    help.truncate(help.trim_end().len());
    help
}

/// Appends `text` to `out` in lines of at most [`HELP_WIDTH`] characters
/// (a longer word alone on its line), the first one starting with `first`,
/// the others with `rest`.
fn wrap(out: &mut String, text: &str, first: &str, rest: &str) {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > HELP_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

/// What the fault file says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Directive {
    /// A word: this fault on every command while the file holds it
    /// ([`Fault::None`]: no fault).
    Fault(Fault),
    /// `WORD TOKEN`, for a fault whose [`FaultEntry::token`] is set
    /// (`lose-buffers`, `drop-next`, `bogus-events`): that fault once, on the
    /// next command, unless TOKEN is the last TOKEN of that fault acted on
    /// ([`FaultFile::read`]).
    Once(Fault, String),
}

impl Default for Directive {
    /// No fault.
    fn default() -> Self {
        Directive::Fault(Fault::None)
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Directive::Fault(fault) => fault.fmt(f),
            Directive::Once(fault, token) => write!(f, "{} {token}", fault.name()),
        }
    }
}

/// Whether `token` may follow `lose-buffers` or `drop-next`: 1 to [`MAX_TOKEN_LEN`]
/// characters out of `[A-Za-z0-9_.-]`.
pub fn is_token(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len())
        && token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl FromStr for Directive {
    type Err = UnknownFault;

    /// Parses the contents of the fault file, whitespace around them
    /// ignored: a fault's word ([`Fault::from_str`]; nothing at all means
    /// no fault), or `lose-buffers` or `drop-next`, one or more spaces or
    /// tabs, and a TOKEN ([`is_token`]). Anything else is an unknown fault:
    /// one of those alone, with a bad or long TOKEN, more than one TOKEN, or
    /// its words on two lines.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        for entry in Fault::CATALOGUE.iter().filter(|e| e.token) {
            if let Some(rest) = text.strip_prefix(entry.word) {
                let token = rest.trim_start_matches([' ', '\t']);
                if token.len() < rest.len() && is_token(token) {
                    return Ok(Directive::Once(entry.fault, token.to_owned()));
                }
                return Err(UnknownFault(text.to_owned()));
            }
        }
        text.parse().map(Directive::Fault)
    }
}

/// The file that says which fault is in force.
///
/// It lives as long as the device it is read for (the backend of one
/// vhost-user connection), and remembers for that long the last TOKEN of
/// `lose-buffers TOKEN` acted on: only that one, so that `lose-buffers a`,
/// then `b`, then `a` again lose the buffers three times.
#[derive(Debug)]
pub struct FaultFile {
    path: PathBuf,
    /// What the file said last, to log changes.
    current: Directive,
    /// The TOKEN of the last [`Directive::Once`] acted on, per fault.
    acted: HashMap<Fault, String>,
    /// Unknown words, and errors reading the file, already warned about.
    warned: HashSet<String>,
    /// How long a device reset waits under [`Fault::SlowReset`].
    reset_delay: Duration,
    /// How long an answer is held back under [`Fault::SlowAnswer`].
    answer_delay: Duration,
    /// Where device resets are written down.
    events: EventsFile,
}

/// Most bytes read from the fault file; longer contents are an unknown
/// word.
const MAX_FILE_LEN: usize = 64;
/// Most unknown words remembered, so that a file that keeps changing cannot
/// make the set grow without end; past that, they are logged at debug level.
const MAX_WARNED: usize = 64;

impl FaultFile {
    /// The fault file at `path`, which need not exist yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            events: EventsFile::for_fault_file(&path),
            path,
            current: Directive::default(),
            acted: HashMap::new(),
            warned: HashSet::new(),
            reset_delay: SLOW_RESET_DELAY,
            answer_delay: SLOW_ANSWER_DELAY,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the fault in force for the next command. Never fails: a
    /// missing or unreadable file or an unknown word means [`Fault::None`].
    ///
    /// `lose-buffers TOKEN` is [`Fault::LoseBuffers`] if TOKEN is not the
    /// last one acted on (which it then is), [`Fault::None`] otherwise: the
    /// buffers are lost once per TOKEN written, however many commands
    /// follow while the file holds it. So are the other
    /// [`Directive::Once`] faults, each with a last TOKEN of its own.
    pub fn read(&mut self) -> Fault {
        self.reload();
        match &self.current {
            Directive::Fault(fault) => *fault,
            Directive::Once(fault, token) if self.acted.get(fault) == Some(token) => Fault::None,
            Directive::Once(fault, token) => {
                self.acted.insert(*fault, token.clone());
                *fault
            }
        }
    }

    /// Called when a device reset begins, before it is carried out: writes
    /// `reset-start` to the events file, reads the fault file now and, if it
    /// holds `slow-reset` ([`Fault::SlowReset`]), waits
    /// [`FaultFile::reset_delay`] ([`SLOW_RESET_DELAY`] unless changed). A
    /// TOKEN the file holds is not acted on: that is for the next command
    /// ([`FaultFile::read`]).
    pub fn before_reset(&mut self) {
        self.events.append(ResetEvent::Start);
        self.reload();
        if self.current == Directive::Fault(Fault::SlowReset) {
            info!(
                "device reset delayed by {} ms (fault injection)",
                self.reset_delay.as_millis()
            );
            thread::sleep(self.reset_delay);
        }
    }

    /// Called once a chain read under `fault` ([`FaultFile::read`]) is
    /// served, before it is returned: under [`Fault::SlowAnswer`], waits
    /// [`FaultFile::answer_delay`] ([`SLOW_ANSWER_DELAY`] unless changed) and
    /// returns true; under the others, returns false at once. The file is
    /// not read again: the fault read for the chain decides.
    pub fn before_answer(&self, fault: Fault, head: u16) -> bool {
        if !fault.holds_answer() {
            return false;
        }
        info!(
            "chain {head}: answer held back {} ms (fault injection)",
            self.answer_delay.as_millis()
        );
        thread::sleep(self.answer_delay);
        true
    }

    /// Called once a device reset is complete: writes `reset-done` to the
    /// events file.
    pub fn after_reset(&self) {
        self.events.append(ResetEvent::Done);
    }

    /// The events file, where device resets are written down.
    pub fn events(&self) -> &EventsFile {
        &self.events
    }

    /// How long a device reset waits under [`Fault::SlowReset`].
    pub fn reset_delay(&self) -> Duration {
        self.reset_delay
    }

    /// Makes device resets wait `delay` under [`Fault::SlowReset`] instead
    /// of [`SLOW_RESET_DELAY`] (for tests, which would rather not wait).
    pub fn with_reset_delay(mut self, delay: Duration) -> Self {
        self.reset_delay = delay;
        self
    }

    /// How long an answer is held back under [`Fault::SlowAnswer`].
    pub fn answer_delay(&self) -> Duration {
        self.answer_delay
    }

    /// Makes answers wait `delay` under [`Fault::SlowAnswer`] instead of
    /// [`SLOW_ANSWER_DELAY`] (for tests, which would rather not wait).
    pub fn with_answer_delay(mut self, delay: Duration) -> Self {
        self.answer_delay = delay;
        self
    }

    /// Reads the file into [`FaultFile::current`], logging changes.
    fn reload(&mut self) {
        let directive = match self.contents() {
            Ok(bytes) => self.parse(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Directive::default(),
            Err(e) => {
                let what = format!("cannot read the fault file {}: {e}", self.path.display());
                if self.warned.len() < MAX_WARNED && self.warned.insert(what.clone()) {
                    warn!("{what}: no fault");
                } else {
                    debug!("{what}: no fault");
                }
                Directive::default()
            }
        };
        if directive != self.current {
            info!("fault injection: {directive} (was {})", self.current);
            self.current = directive;
        }
    }

    /// The file's first [`MAX_FILE_LEN`]` + 1` bytes.
    ///
    /// The device's thread reads it before every command: it must never
    /// wait. So it is opened without blocking (a FIFO with no writer, which
    /// would block an open, is then opened at once) and only read if it is
    /// a regular file; and it is not opened through a symbolic link, which
    /// could take it anywhere (a device, a FIFO after the check).
    fn contents(&self) -> io::Result<Vec<u8>> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&self.path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn parse(&mut self, bytes: &[u8]) -> Directive {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_FILE_LEN)]);
        let parsed = if bytes.len() > MAX_FILE_LEN {
            Err(UnknownFault(format!("{}...", text.trim_start())))
        } else {
            text.parse()
        };
        parsed.unwrap_or_else(|UnknownFault(word)| {
            let token_word = Fault::CATALOGUE
                .iter()
                .find(|e| e.token && word.starts_with(e.word));
            let hint = if let Some(entry) = token_word {
                format!(
                    " ({} takes one TOKEN of 1 to {MAX_TOKEN_LEN} characters \
                     out of [A-Za-z0-9_.-])",
                    entry.word
                )
            } else {
                String::new()
            };
            if self.warned.contains(&word) {
                // Already said.
            } else if self.warned.len() < MAX_WARNED {
                warn!(
                    "fault file {}: unknown fault {word:?}, ignored{hint}",
                    self.path.display()
                );
                self.warned.insert(word);
            } else {
                debug!(
                    "fault file {}: unknown fault {word:?}, ignored{hint}",
                    self.path.display()
                );
            }
            Directive::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::answer;
    use crate::device::Limits;

    #[test]
    fn words() {
        for fault in Fault::ALL {
            assert_eq!(fault.to_string(), fault.name());
            if fault.entry().token {
                continue;
            }
            assert_eq!(fault.name().parse(), Ok(fault));
            assert_eq!(format!(" \t{fault}\n").parse(), Ok(fault));
            assert_eq!(
                fault.name().parse::<Directive>(),
                Ok(Directive::Fault(fault))
            );
        }
        let names: HashSet<_> = Fault::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Fault::ALL.len());
        assert_eq!("".parse(), Ok(Fault::None));
        assert_eq!(" \n\n".parse(), Ok(Fault::None));
        assert_eq!("bad-status\r\n".parse(), Ok(Fault::BadStatus));
        for bad in [
            "nope",
            "Short",
            "short short",
            "bad_status",
            "drop!",
            "none\0",
            "lose-buffers",
            "lose-buffers a",
        ] {
            assert_eq!(
                bad.parse::<Fault>(),
                Err(UnknownFault(bad.trim().to_owned()))
            );
        }
    }

    #[test]
    fn catalogue() {
        for (i, entry) in Fault::CATALOGUE.iter().enumerate() {
            assert_eq!(Fault::ALL[i], entry.fault);
            assert_eq!(entry.fault.entry(), entry);
            assert_eq!(
                entry.token,
                matches!(
                    entry.fault,
                    Fault::LoseBuffers | Fault::DropNext | Fault::BogusEvents
                )
            );
        }
        // The numbers in the text are the constants'.
        let what = |fault: Fault| fault.entry().what;
        assert!(what(Fault::Short).contains(&format!("first {SHORT_LEN} bytes")));
        assert!(what(Fault::Overlong).contains(&format!("plus {OVERLONG_EXTRA}")));
        assert!(what(Fault::BadStatus).contains(&format!("status {BAD_STATUS:#x}")));
        assert!(what(Fault::BadVersion).contains(&format!("version {BAD_VERSION}")));
        assert!(what(Fault::GarbageName).contains(&format!("{VIRTIO_BUFSHARE_NAME_LEN} non-text")));
        assert!(what(Fault::LoseBuffers).contains(&format!("1 to {MAX_TOKEN_LEN} characters")));
        assert!(what(Fault::SlowReset)
            .contains(&format!("waits {} seconds", SLOW_RESET_DELAY.as_secs())));
        assert!(what(Fault::SlowAnswer).contains(&format!(
            "only {} seconds later",
            SLOW_ANSWER_DELAY.as_secs()
        )));
        assert!(what(Fault::SlowAnswer)
            .contains(&format!("one per {} seconds", SLOW_ANSWER_DELAY.as_secs())));

        let help = file_help();
        for entry in &Fault::CATALOGUE {
            assert!(
                help.contains(&format!("\n- {}", entry.word)),
                "{}",
                entry.word
            );
        }
        assert!(help.contains("\n- lose-buffers TOKEN: once per TOKEN"));
        let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains("invalid, unsupported, device-error, drop and drop-next do not carry")
        );
        assert!(words.contains("whatever the fault, except drop and drop-next."));
        assert!(help.contains("\n- drop-next TOKEN: once per TOKEN"));
        assert!(words.contains("- slow-answer: the command is carried out and answered normally"));
        assert!(words.contains("returned, and the driver notified, only 2 seconds later"));
        assert!(words.contains("Every fault but slow-reset applies to every command"));
        assert!(words.contains(
            "appends a line to PATH.events (made if missing): `reset-start NS` when it \
             begins, `reset-done NS` once it is carried out, NS being CLOCK_REALTIME in \
             nanoseconds"
        ));
        assert!(words.starts_with("Before each command, and when a device reset begins, read"));
        assert!(help.lines().all(|line| line.len() <= HELP_WIDTH), "{help}");
        assert!(!help.ends_with('\n'));
    }

    #[test]
    fn lose_buffers_directives() {
        let lose = |token: &str| Ok(Directive::Once(Fault::LoseBuffers, token.to_owned()));
        let max = "x".repeat(MAX_TOKEN_LEN);
        for (text, token) in [
            ("lose-buffers a", "a"),
            ("lose-buffers a\n", "a"),
            ("  lose-buffers \t  Run_1.2-b \r\n\n", "Run_1.2-b"),
            ("lose-buffers\t0", "0"),
            ("lose-buffers ...", "..."),
            (&format!("lose-buffers {max}"), &max),
        ] {
            assert_eq!(text.parse::<Directive>(), lose(token), "{text:?}");
        }
        for bad in [
            "lose-buffers",
            "lose-buffers ",
            "lose-buffers\n",
            "lose-buffersa",
            "lose-buffers_a",
            "lose-buffers\na",
            "lose-buffers \na",
            "lose-buffers a b",
            "lose-buffers a\nb",
            "lose-buffers a/b",
            "lose-buffers a\0",
            "lose-buffers é",
            "lose-buffers  a,b",
            "Lose-buffers a",
            "LOSE-BUFFERS a",
            "lose_buffers a",
            "x lose-buffers a",
            "short a",
            &format!("lose-buffers {max}x"),
        ] {
            assert_eq!(
                bad.parse::<Directive>(),
                Err(UnknownFault(bad.trim().to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!("".parse(), Ok(Directive::Fault(Fault::None)));
        assert_eq!(
            Directive::Once(Fault::LoseBuffers, "t".into()).to_string(),
            "lose-buffers t"
        );
        assert_eq!(Directive::default().to_string(), "none");
        assert!(is_token("A-z_0.9"));
        assert!(!is_token(""));
        assert!(!is_token(" a"));
    }

    #[test]
    fn lose_buffers_once_per_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        let mut file = FaultFile::new(&path);
        let mut read = |contents: &str| {
            std::fs::write(&path, contents).unwrap();
            file.read()
        };
        assert_eq!(read("lose-buffers a"), Fault::LoseBuffers);
        // The same token, however written and whatever came between.
        assert_eq!(read("lose-buffers a"), Fault::None);
        assert_eq!(read(" lose-buffers\ta\n"), Fault::None);
        assert_eq!(read("short"), Fault::Short);
        assert_eq!(read("none"), Fault::None);
        assert_eq!(read("lose-buffers a b"), Fault::None);
        assert_eq!(read("lose-buffers a"), Fault::None);
        // Another one, once.
        assert_eq!(read("lose-buffers b\n"), Fault::LoseBuffers);
        assert_eq!(read("lose-buffers b"), Fault::None);
        assert_eq!(read("lose-buffers B"), Fault::LoseBuffers);
        // Only the last one is remembered.
        assert_eq!(read("lose-buffers a"), Fault::LoseBuffers);
        assert_eq!(read("lose-buffers a"), Fault::None);
        // Malformed ones are unknown words: no fault, warned about once.
        for bad in ["lose-buffers", "lose-buffers c/d", "lose-buffers\nc"] {
            assert_eq!(read(bad), Fault::None, "{bad:?}");
            assert_eq!(read(bad), Fault::None, "{bad:?}");
        }
        assert!(file.warned.contains("lose-buffers c/d"));
        // A new file (a new connection) remembers nothing.
        std::fs::write(&path, "lose-buffers a").unwrap();
        let mut file = FaultFile::new(&path);
        assert_eq!(file.read(), Fault::LoseBuffers);
        assert_eq!(file.read(), Fault::None);
    }

    #[test]
    fn slow_reset_is_read_when_the_reset_begins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        assert_eq!(FaultFile::new(&path).reset_delay(), SLOW_RESET_DELAY);
        assert_eq!(SLOW_RESET_DELAY, Duration::from_secs(3));
        let delay = Duration::from_millis(200);
        let mut file = FaultFile::new(&path).with_reset_delay(delay);
        let mut reset = |contents: Option<&str>| {
            if let Some(contents) = contents {
                std::fs::write(&path, contents).unwrap();
            }
            let start = std::time::Instant::now();
            file.before_reset();
            start.elapsed() >= delay
        };
        // Missing, then other words: at once.
        assert!(!reset(None));
        for word in [
            "none",
            "drop",
            "slow-reset x",
            "slow_reset",
            "lose-buffers a",
        ] {
            assert!(!reset(Some(word)), "{word}");
        }
        for word in ["slow-reset", " slow-reset\n"] {
            assert!(reset(Some(word)), "{word}");
        }
        // A TOKEN read at a reset is still acted on by the next command.
        assert!(!reset(Some("lose-buffers a")));
        assert_eq!(file.read(), Fault::LoseBuffers);
        assert_eq!(file.read(), Fault::None);
        // Each reset was written down when it began, none done (that is
        // the backend's, once the device is reset).
        let events = std::fs::read_to_string(file.events().path()).unwrap();
        assert_eq!(events.lines().count(), 9);
        assert!(events.lines().all(|l| l.starts_with("reset-start ")));
        file.after_reset();
        let events = std::fs::read_to_string(file.events().path()).unwrap();
        assert!(events.lines().last().unwrap().starts_with("reset-done "));
        // On a command, slow-reset is no fault.
        std::fs::write(&path, "slow-reset").unwrap();
        assert_eq!(file.read(), Fault::SlowReset);
        assert_eq!(Fault::SlowReset.refusal(), None);
        assert!(!Fault::SlowReset.drops_chain());
        assert_eq!(
            Fault::SlowReset.rewrite(&GET_INFO, normal(&GET_INFO)),
            normal(&GET_INFO)
        );
    }

    #[test]
    fn slow_answer_is_read_for_each_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        assert_eq!(FaultFile::new(&path).answer_delay(), SLOW_ANSWER_DELAY);
        assert_eq!(SLOW_ANSWER_DELAY, Duration::from_secs(2));
        let delay = Duration::from_millis(200);
        let mut file = FaultFile::new(&path).with_answer_delay(delay);
        assert_eq!(file.answer_delay(), delay);
        assert_eq!(file.reset_delay(), SLOW_RESET_DELAY, "apart from resets'");

        for (contents, fault) in [
            ("slow-answer", Fault::SlowAnswer),
            (" slow-answer\n", Fault::SlowAnswer),
            ("slow-answer x", Fault::None),
            ("slow_answer", Fault::None),
            ("slow-reset", Fault::SlowReset),
        ] {
            std::fs::write(&path, contents).unwrap();
            assert_eq!(file.read(), fault, "{contents:?}");
        }
        assert_eq!("slow-answer".parse(), Ok(Fault::SlowAnswer));
        assert_eq!(Fault::SlowAnswer.to_string(), "slow-answer");

        // Only slow-answer holds answers back, and for the delay.
        for fault in Fault::ALL {
            assert_eq!(fault.holds_answer(), fault == Fault::SlowAnswer);
            let start = std::time::Instant::now();
            assert_eq!(file.before_answer(fault, 0), fault.holds_answer());
            assert_eq!(start.elapsed() >= delay, fault.holds_answer(), "{fault}");
        }
        // Its command is carried out, and answered normally.
        assert_eq!(Fault::SlowAnswer.refusal(), None);
        assert!(!Fault::SlowAnswer.drops_chain());
        assert_eq!(Fault::SlowAnswer.used_len(80, 4096), 80);
        assert_eq!(
            faulty(Fault::SlowAnswer, &GET_INFO, 4096),
            (Some(normal(&GET_INFO)), 1)
        );
        // A reset is not slowed.
        std::fs::write(&path, "slow-answer").unwrap();
        let start = std::time::Instant::now();
        file.before_reset();
        assert!(start.elapsed() < SLOW_RESET_DELAY);
    }

    #[test]
    fn file_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        let mut file = FaultFile::new(&path);
        assert_eq!(file.path(), path);
        // Missing.
        assert_eq!(file.read(), Fault::None);
        let cases: &[(&[u8], Fault)] = &[
            (b"", Fault::None),
            (b"none", Fault::None),
            (b"short", Fault::Short),
            (b"none\n", Fault::None),
            (b"  drop \n", Fault::Drop),
            (b"garbage-name\n\n", Fault::GarbageName),
            (b"overlong", Fault::Overlong),
            (b"what?\n", Fault::None),
            (b"device-error", Fault::DeviceError),
            (b"\xff\xfe", Fault::None),
            (&[b' '; MAX_FILE_LEN + 10], Fault::None),
            (b"truncated", Fault::Truncated),
            (b"duplicate\n", Fault::Duplicate),
            (b"wrong-id", Fault::WrongId),
        ];
        for (contents, fault) in cases {
            std::fs::write(&path, contents).unwrap();
            assert_eq!(file.read(), *fault, "{contents:?}");
            assert_eq!(file.read(), *fault, "{contents:?} again");
        }
        // A long file is an unknown word, even if it starts with one.
        let mut long = b"short".to_vec();
        long.resize(MAX_FILE_LEN + 1, b' ');
        std::fs::write(&path, &long).unwrap();
        assert_eq!(file.read(), Fault::None);
        long.truncate(MAX_FILE_LEN);
        std::fs::write(&path, &long).unwrap();
        assert_eq!(file.read(), Fault::Short);

        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.read(), Fault::None);
        // Unreadable: a directory.
        std::fs::create_dir(&path).unwrap();
        assert_eq!(file.read(), Fault::None);
    }

    #[test]
    fn neither_waits_nor_follows_links() {
        use std::os::unix::fs::symlink;
        use std::sync::mpsc;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        // A FIFO that nobody writes: opening it for reading used to block
        // the device's thread for good. Read in a thread, to see it end.
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let fifo = path.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut file = FaultFile::new(&fifo);
            tx.send((file.read(), file.warned.len())).unwrap();
        });
        let (fault, warned) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("reading a FIFO blocks");
        assert_eq!((fault, warned), (Fault::None, 1));

        // A symbolic link to a file that says "drop": not followed.
        std::fs::remove_file(&path).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "drop").unwrap();
        symlink(&target, &path).unwrap();
        let mut file = FaultFile::new(&path);
        assert_eq!(file.read(), Fault::None);
        assert_eq!(file.read(), Fault::None);
        assert_eq!(file.warned.len(), 1, "warned about once");
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&target, &path).unwrap();
        assert_eq!(file.read(), Fault::Drop);
    }

    #[test]
    fn unknown_words_are_remembered_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        let mut file = FaultFile::new(&path);
        for word in ["foo", "foo\n", " foo", "bar", "foo", "none", "bar"] {
            std::fs::write(&path, word).unwrap();
            file.read();
        }
        let mut warned: Vec<_> = file.warned.iter().cloned().collect();
        warned.sort();
        assert_eq!(warned, ["bar", "foo"]);
        // Bounded.
        for i in 0..2 * MAX_WARNED {
            std::fs::write(&path, format!("word{i}")).unwrap();
            assert_eq!(file.read(), Fault::None);
        }
        assert_eq!(file.warned.len(), MAX_WARNED);
    }

    const INFO_SIZE: usize = size_of::<VirtioBufshareRespInfo>();
    const GET_INFO: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];
    const UNKNOWN: [u8; 8] = [0x42, 0, 0, 0, 0, 0, 0, 0];

    fn normal(request: &[u8]) -> Vec<u8> {
        BufshareDevice::new(Limits::default())
            .process(request, 4096)
            .unwrap()
    }

    fn faulty(fault: Fault, request: &[u8], writable: usize) -> (Option<Vec<u8>>, u64) {
        let mut dev = BufshareDevice::new(Limits::default());
        let answer = answer(&mut dev, fault, request, writable);
        (answer, dev.num_commands())
    }

    fn info(answer: &[u8]) -> VirtioBufshareRespInfo {
        let mut info = VirtioBufshareRespInfo::default();
        info.as_mut_slice().copy_from_slice(answer);
        info
    }

    #[test]
    fn none_is_normal() {
        for request in [&GET_INFO[..], &UNKNOWN, &[]] {
            assert_eq!(
                faulty(Fault::None, request, 4096),
                (Some(normal(request)), 1)
            );
        }
        assert_eq!(normal(&GET_INFO).len(), INFO_SIZE);
        assert_eq!(Fault::None.used_len(80, 4096), 80);
    }

    #[test]
    fn short_and_truncated() {
        let (answer, count) = faulty(Fault::Short, &GET_INFO, 4096);
        assert_eq!(answer.unwrap(), &normal(&GET_INFO)[..4]);
        assert_eq!(count, 1);
        let (answer, _) = faulty(Fault::Short, &UNKNOWN, 4096);
        assert_eq!(answer.unwrap(), VIRTIO_BUFSHARE_S_UNSUPPORTED.to_le_bytes());

        for request in [&GET_INFO, &UNKNOWN] {
            let (answer, count) = faulty(Fault::Truncated, request, 4096);
            assert_eq!(answer.unwrap(), [0; 8]);
            assert_eq!(count, 1);
        }
        for fault in [Fault::Short, Fault::Truncated] {
            assert_eq!(fault.used_len(4, 4096), 4);
            assert_eq!(fault.used_len(8, 4096), 8);
        }
    }

    #[test]
    fn overlong() {
        assert_eq!(
            faulty(Fault::Overlong, &GET_INFO, 4096),
            (Some(normal(&GET_INFO)), 1)
        );
        assert_eq!(Fault::Overlong.used_len(80, 80), 80 + 4096);
        assert_eq!(Fault::Overlong.used_len(8, 100), 4196);
        assert_eq!(Fault::Overlong.used_len(8, u32::MAX as usize), u32::MAX);
        assert_eq!(Fault::Overlong.used_len(8, usize::MAX), u32::MAX);
    }

    #[test]
    fn bad_status() {
        for request in [&GET_INFO, &UNKNOWN] {
            let (answer, _) = faulty(Fault::BadStatus, request, 4096);
            let answer = answer.unwrap();
            let expected = normal(request);
            assert_eq!(answer.len(), expected.len());
            assert_eq!(answer[..4], [0x77, 0x77, 0, 0]);
            assert_eq!(answer[4..], expected[4..]);
        }
    }

    #[test]
    fn error_statuses() {
        for (fault, status) in [
            (Fault::Invalid, VIRTIO_BUFSHARE_S_INVALID),
            (Fault::Unsupported, VIRTIO_BUFSHARE_S_UNSUPPORTED),
            (Fault::DeviceError, VIRTIO_BUFSHARE_S_DEVICE_ERROR),
        ] {
            for request in [&GET_INFO, &UNKNOWN] {
                let (answer, count) = faulty(fault, request, 4096);
                assert_eq!(answer.unwrap(), status_only(status));
                assert_eq!(count, 1, "answered commands count");
            }
            // No room for a header: no answer, as normally.
            assert_eq!(faulty(fault, &GET_INFO, 7), (None, 0));
        }
    }

    #[test]
    fn bad_version_and_garbage_name() {
        let expected = info(&normal(&GET_INFO));

        let (answer, _) = faulty(Fault::BadVersion, &GET_INFO, 4096);
        let got = info(&answer.unwrap());
        assert_eq!(got.version.to_native(), 99);
        assert_eq!(
            VirtioBufshareRespInfo {
                version: expected.version,
                ..got
            },
            expected
        );

        let (answer, _) = faulty(Fault::GarbageName, &GET_INFO, 4096);
        let got = info(&answer.unwrap());
        assert!(!got.name.contains(&0));
        assert!(std::str::from_utf8(&got.name).is_err());
        assert_eq!(
            got.name[..8],
            [0x01, 0x7f, 0xff, 0x80, b'A', 0x1b, 0x01, 0x7f]
        );
        assert_eq!(
            VirtioBufshareRespInfo {
                name: expected.name,
                ..got
            },
            expected
        );

        // Other commands, and GET_INFO that fails, are answered normally.
        for fault in [Fault::BadVersion, Fault::GarbageName] {
            assert_eq!(faulty(fault, &UNKNOWN, 4096).0.unwrap(), normal(&UNKNOWN));
            let mut trailing = GET_INFO.to_vec();
            trailing.push(0);
            assert_eq!(
                faulty(fault, &trailing, 4096).0.unwrap(),
                status_only(VIRTIO_BUFSHARE_S_INVALID)
            );
            assert_eq!(
                faulty(fault, &GET_INFO, INFO_SIZE - 1).0.unwrap(),
                status_only(VIRTIO_BUFSHARE_S_INVALID)
            );
        }
    }

    #[test]
    fn room_is_respected() {
        for fault in Fault::ALL {
            if fault.drops_chain() {
                continue;
            }
            for room in 0..RESP_HDR_SIZE {
                assert_eq!(faulty(fault, &GET_INFO, room), (None, 0), "{fault}");
            }
            for room in [RESP_HDR_SIZE, INFO_SIZE - 1, INFO_SIZE] {
                let answer = faulty(fault, &GET_INFO, room).0.unwrap();
                assert!(answer.len() <= room, "{fault} {room}");
            }
        }
    }

    #[test]
    fn drop_drops() {
        for fault in Fault::ALL {
            assert_eq!(
                fault.drops_chain(),
                matches!(fault, Fault::Drop | Fault::DropNext)
            );
        }
    }

    #[test]
    fn drop_next_directives() {
        let drop = |token: &str| Ok(Directive::Once(Fault::DropNext, token.to_owned()));
        for (text, token) in [
            ("drop-next a", "a"),
            ("  drop-next \t Run_1.2-b \r\n", "Run_1.2-b"),
            ("drop-next\t0", "0"),
        ] {
            assert_eq!(text.parse::<Directive>(), drop(token), "{text:?}");
        }
        for bad in [
            "drop-next",
            "drop-next ",
            "drop-nexta",
            "drop-next a b",
            "drop-next\na",
            "drop-next a/b",
            "drop next a",
            "drop a",
            &format!("drop-next {}", "x".repeat(MAX_TOKEN_LEN + 1)),
        ] {
            assert_eq!(
                bad.parse::<Directive>(),
                Err(UnknownFault(bad.trim().to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            "drop-next".parse::<Fault>(),
            Err(UnknownFault("drop-next".into()))
        );
        // Plain drop is still a word.
        assert_eq!("drop".parse(), Ok(Directive::Fault(Fault::Drop)));
        assert_eq!(
            Directive::Once(Fault::DropNext, "t".into()).to_string(),
            "drop-next t"
        );
    }

    #[test]
    fn bogus_events_once_per_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        let mut file = FaultFile::new(&path);
        let mut read = |contents: &str| {
            std::fs::write(&path, contents).unwrap();
            file.read()
        };
        assert_eq!(
            "bogus-events x".parse(),
            Ok(Directive::Once(Fault::BogusEvents, "x".into()))
        );
        assert_eq!(
            "bogus-events".parse::<Directive>(),
            Err(UnknownFault("bogus-events".into()))
        );
        assert_eq!(
            Directive::Once(Fault::BogusEvents, "t".into()).to_string(),
            "bogus-events t"
        );
        assert_eq!(read("bogus-events a"), Fault::BogusEvents);
        assert_eq!(read("bogus-events a"), Fault::None);
        assert_eq!(read("drop-next a"), Fault::DropNext);
        assert_eq!(read("bogus-events a"), Fault::None);
        assert_eq!(read("bogus-events b"), Fault::BogusEvents);
    }

    #[test]
    fn drop_next_once_per_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        let mut file = FaultFile::new(&path);
        let mut read = |contents: &str| {
            std::fs::write(&path, contents).unwrap();
            file.read()
        };
        assert_eq!(read("drop-next a"), Fault::DropNext);
        assert_eq!(read("drop-next a\n"), Fault::None);
        assert_eq!(read("drop"), Fault::Drop);
        assert_eq!(read("drop-next a"), Fault::None);
        assert_eq!(read("drop-next b"), Fault::DropNext);
        assert_eq!(read("drop-next b"), Fault::None);
        // Only the last one is remembered, apart from lose-buffers' own.
        assert_eq!(read("lose-buffers b"), Fault::LoseBuffers);
        assert_eq!(read("drop-next b"), Fault::None);
        assert_eq!(read("drop-next a"), Fault::DropNext);
        assert_eq!(read("lose-buffers b"), Fault::None);
        // Malformed: no fault, and the hint names the right word.
        assert_eq!(read("drop-next a/b"), Fault::None);
        assert!(file.warned.contains("drop-next a/b"));
        // A reset reads the file but acts on no TOKEN.
        std::fs::write(&path, "drop-next c").unwrap();
        file.before_reset();
        assert_eq!(file.read(), Fault::DropNext);
        assert_eq!(file.read(), Fault::None);
    }

    /// A device whose driver acked `VIRTIO_BUFSHARE_F_GENERATION`.
    fn with_generation() -> BufshareDevice {
        let mut dev = BufshareDevice::new(Limits::default());
        dev.set_driver_features(1 << bufshare_uapi::VIRTIO_BUFSHARE_F_GENERATION);
        dev
    }

    #[test]
    fn every_answer_carries_the_generation() {
        let mut dev = with_generation();
        let generation = dev.generation().to_le_bytes();
        for fault in Fault::ALL {
            if fault.drops_chain() {
                continue;
            }
            for request in [&GET_INFO, &UNKNOWN] {
                for room in [RESP_HDR_SIZE, INFO_SIZE] {
                    let answer = answer(&mut dev, fault, request, room).unwrap();
                    assert!(answer.len() <= room, "{fault}");
                    if fault == Fault::Short {
                        assert_eq!(answer.len(), SHORT_LEN);
                    } else {
                        assert_eq!(answer[4..8], generation, "{fault} {room}");
                    }
                }
            }
        }
        // Without the feature: 0, as before it existed.
        dev.set_driver_features(1 << bufshare_uapi::VIRTIO_BUFSHARE_F_BUFFERS);
        for fault in Fault::ALL {
            if !fault.drops_chain() && fault != Fault::Short {
                let answer = answer(&mut dev, fault, &GET_INFO, INFO_SIZE).unwrap();
                assert_eq!(answer[4..8], [0; 4], "{fault}");
            }
        }
    }

    #[test]
    fn lose_buffers_before_the_chain() {
        let mut dev = with_generation();
        let generation = dev.generation();
        for fault in Fault::ALL {
            if fault != Fault::LoseBuffers {
                fault.before_chain(&mut dev);
                assert_eq!(dev.generation(), generation, "{fault}");
            }
        }
        Fault::LoseBuffers.before_chain(&mut dev);
        assert_ne!(dev.generation(), generation);
        assert_ne!(dev.generation(), 0);
        assert_eq!(dev.num_commands(), 0, "losing buffers counts no command");
        // The command itself is answered normally, with the new generation.
        let answer = answer(&mut dev, Fault::LoseBuffers, &GET_INFO, INFO_SIZE).unwrap();
        let mut expected = info(&normal(&GET_INFO));
        expected.hdr.generation = dev.generation().into();
        assert_eq!(info(&answer), expected);
    }
}
