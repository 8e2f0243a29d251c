// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The virtio-bufshare device model, free of any transport: it turns the
//! bytes of one command into the bytes of its answer, and serves the
//! configuration space.
//!
//! The vhost-user glue ([`crate::backend`]) copies a command out of guest
//! memory, makes its answer in the room the driver gave for it
//! ([`crate::backend::answer`]) and copies the answer back. Making it has
//! [`BufshareDevice::process`] carry the command out (or
//! [`BufshareDevice::refuse`] refuse it, as a fault may say), lets the fault
//! rewrite the answer, and lastly has [`BufshareDevice::stamp`] write the
//! device's generation into it. New commands are added to
//! [`BufshareDevice::execute`]; the buffer commands are in
//! `device/commands.rs`.
//!
//! The generation ([`BufshareDevice::generation`], with
//! `VIRTIO_BUFSHARE_F_GENERATION`) is taken at random when a device is made,
//! that is for each vhost-user connection, so that a restarted backend, or a
//! new connection, very likely has another one than the device the driver
//! knew. A device reset keeps it; [`BufshareDevice::lose_buffers`] (fault
//! injection, `lose-buffers`) takes a new one.
//!
//! The buffers live in a [`SharedState`], shared with the inspect socket
//! ([`crate::inspect`]), together with the guest memory their ranges are
//! resolved against.

use std::fs::File;
use std::io::Read;
use std::mem::{offset_of, size_of};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::{BTreeSet, HashMap, VecDeque};

use bufshare_uapi::{
    VirtioBufshareCmdGetConsumers, VirtioBufshareCmdHdr, VirtioBufshareCmdRegister,
    VirtioBufshareCmdSetProperties, VirtioBufshareCmdUpdate, VirtioBufshareConfig,
    VirtioBufshareRange, VirtioBufshareRespConsumers, VirtioBufshareRespHdr,
    VirtioBufshareRespInfo, VIRTIO_BUFSHARE_CMD_ADD_RANGES, VIRTIO_BUFSHARE_CMD_GET_CONSUMERS,
    VIRTIO_BUFSHARE_CMD_GET_INFO, VIRTIO_BUFSHARE_CMD_REGISTER, VIRTIO_BUFSHARE_CMD_SET_PROPERTIES,
    VIRTIO_BUFSHARE_CMD_UNREGISTER, VIRTIO_BUFSHARE_CMD_UPDATE, VIRTIO_BUFSHARE_F_BUFFERS,
    VIRTIO_BUFSHARE_F_EVENTS, VIRTIO_BUFSHARE_F_GENERATION, VIRTIO_BUFSHARE_F_IMPORT,
    VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD, VIRTIO_BUFSHARE_NAME_LEN, VIRTIO_BUFSHARE_S_INVALID,
    VIRTIO_BUFSHARE_S_OK, VIRTIO_BUFSHARE_S_UNSUPPORTED, VIRTIO_BUFSHARE_VERSION,
};
use log::{debug, info, warn};

use crate::guest_warn;
use vm_memory::{ByteValued, GuestMemoryAtomic, GuestMemoryMmap};

use crate::buffers::{ResetReason, SharedState};
use crate::events::{DeviceEvent, PendingEvents};
use crate::holders::Holders;
use crate::import::hub::{End, ImportHub};

mod commands;
mod import;

/// The import hub a device's guest imports through, and the guest's name
/// there.
#[derive(Clone, Debug)]
pub struct ImportPort {
    /// The hub.
    pub hub: Arc<ImportHub>,
    /// The guest.
    pub guest: String,
}

/// Size of `struct virtio_bufshare_cmd_hdr`.
pub const CMD_HDR_SIZE: usize = size_of::<VirtioBufshareCmdHdr>();
/// Size of `struct virtio_bufshare_resp_hdr`: the least room a driver must
/// give for an answer.
pub const RESP_HDR_SIZE: usize = size_of::<VirtioBufshareRespHdr>();
/// Offset of `generation` in `struct virtio_bufshare_resp_hdr`.
const GENERATION_OFFSET: usize = offset_of!(VirtioBufshareRespHdr, generation);
/// Most updates of a buffer the device remembers while they are not
/// released; older ones are then released with a later one.
pub const MAX_UNRELEASED_UPDATES: usize = 256;
/// Why consumers are told that a guest's buffers are gone when the device
/// loses them ([`BufshareDevice::lose_buffers`]): what they would be told if
/// the frontend lost its connection to the backend and made a new one, as
/// it does to a restarted backend (the driver did not reset the device).
pub const LOST_BUFFERS_REASON: ResetReason = ResetReason::Disconnected;

/// Largest legal command for a device with `limits`, in bytes: a REGISTER
/// with the largest properties and the most ranges one command may carry.
/// Longer commands are refused with `S_INVALID` without being read in full.
pub fn max_command_size(limits: &Limits) -> usize {
    let props = u64::from(limits.max_props_size).next_multiple_of(8);
    let ranges = u64::from(limits.max_ranges.min(VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD))
        * size_of::<VirtioBufshareRange>() as u64;
    let register = size_of::<VirtioBufshareCmdRegister>() as u64 + props + ranges;
    let set_properties =
        size_of::<VirtioBufshareCmdSetProperties>() as u64 + u64::from(limits.max_props_size);
    let longest = register
        .max(set_properties)
        .max(size_of::<VirtioBufshareCmdUpdate>() as u64);
    usize::try_from(longest).unwrap_or(usize::MAX)
}

/// The name reported by GET_INFO.
pub fn device_name() -> String {
    format!("vhost-user-bufshare {}", env!("CARGO_PKG_VERSION"))
}

/// The device's limits, as shown in the configuration space and by GET_INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest number of memory ranges in one buffer.
    pub max_ranges: u32,
    /// Largest size, in bytes, of one buffer's properties.
    pub max_props_size: u32,
    /// Largest number of buffers registered at a time.
    pub max_buffers: u32,
    /// Largest size, in bytes, of one buffer.
    pub max_buffer_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ranges: 65536,
            max_props_size: 4096,
            max_buffers: 4096,
            max_buffer_size: 1 << 30,
        }
    }
}

/// State of one virtio-bufshare device.
#[derive(Debug)]
pub struct BufshareDevice {
    limits: Limits,
    /// Commands answered since the last reset.
    num_commands: u64,
    name: [u8; VIRTIO_BUFSHARE_NAME_LEN],
    /// Whether the driver acked `VIRTIO_BUFSHARE_F_BUFFERS`.
    buffers_enabled: bool,
    /// Whether the driver acked `VIRTIO_BUFSHARE_F_GENERATION`.
    generation_enabled: bool,
    /// Whether the driver acked `VIRTIO_BUFSHARE_F_EVENTS`.
    events_enabled: bool,
    /// The device's generation: random, never 0; kept across resets.
    generation: u32,
    /// The buffers and the guest memory.
    state: Arc<SharedState>,
    /// Events not written into the event queue yet.
    pending: PendingEvents,
    /// With events: the updates of each buffer not released yet, oldest
    /// first, at most [`MAX_UNRELEASED_UPDATES`].
    unreleased: HashMap<u64, VecDeque<u64>>,
    /// Buffers whose updates may be released now.
    release_check: BTreeSet<u64>,
    /// Without events: the UNREGISTER just carried out, whose answer must
    /// wait for the buffer's holders ([`BufshareDevice::take_held`]).
    held: Option<u64>,
    /// Events made by fault injection ([`crate::fault::Fault::BogusEvents`]),
    /// as written into the event queue, to go ahead of the pending ones.
    raw_events: VecDeque<Vec<u8>>,
    /// Where the guest imports other guests' buffers, if it may.
    imports: Option<ImportPort>,
    /// Whether the driver acked `VIRTIO_BUFSHARE_F_IMPORT` (and
    /// `VIRTIO_BUFSHARE_F_EVENTS`).
    import_enabled: bool,
}

impl BufshareDevice {
    /// A device, just reset, with these limits, and a state of its own.
    pub fn new(limits: Limits) -> Self {
        Self::with_state(limits, Arc::default())
    }

    /// A device, just reset, with these limits, keeping its buffers and
    /// guest memory in `state` (whose buffers are dropped), and a random
    /// generation of its own.
    pub fn with_state(limits: Limits, state: Arc<SharedState>) -> Self {
        state.lock().drop_all(ResetReason::Disconnected);
        let mut name = [0u8; VIRTIO_BUFSHARE_NAME_LEN];
        let full = device_name();
        // Keep at least one NUL at the end.
        let len = full.len().min(VIRTIO_BUFSHARE_NAME_LEN - 1);
        name[..len].copy_from_slice(&full.as_bytes()[..len]);
        Self {
            limits,
            num_commands: 0,
            name,
            buffers_enabled: false,
            generation_enabled: false,
            events_enabled: false,
            generation: next_generation(0, random_u32),
            state,
            pending: PendingEvents::default(),
            unreleased: HashMap::new(),
            release_check: BTreeSet::new(),
            held: None,
            raw_events: VecDeque::new(),
            imports: None,
            import_enabled: false,
        }
    }

    /// Lets the guest import through `port` (the device then offers
    /// `VIRTIO_BUFSHARE_F_IMPORT`, [`crate::backend`]).
    pub fn set_import(&mut self, port: ImportPort) {
        self.imports = Some(port);
    }

    /// Where the guest imports, if it may.
    pub fn import_port(&self) -> Option<&ImportPort> {
        self.imports.as_ref()
    }

    /// Who holds the memory of the buffers.
    pub fn holders(&self) -> Arc<Holders> {
        Arc::clone(&self.state.lock().holders)
    }

    /// Whether the driver acked `VIRTIO_BUFSHARE_F_EVENTS`.
    pub fn events_enabled(&self) -> bool {
        self.events_enabled
    }

    /// Whether the driver acked `VIRTIO_BUFSHARE_F_IMPORT` (and the guest
    /// may import).
    pub fn import_enabled(&self) -> bool {
        self.import_enabled
    }

    /// Takes the id of the buffer whose UNREGISTER was just carried out
    /// and must not be answered before its holders let go (without
    /// events); the answer is then made by [`BufshareDevice::held_answer`].
    pub fn take_held(&mut self) -> Option<u64> {
        self.held.take()
    }

    /// The answer to a held UNREGISTER, stamped now.
    pub fn held_answer(&self) -> Vec<u8> {
        let mut answer = status_only(VIRTIO_BUFSHARE_S_OK);
        self.stamp(&mut answer);
        answer
    }

    /// Takes what the holders noted ([`Holders::take_notes`]): with
    /// events, makes the events of it pending (FREED, RELEASED,
    /// CONSUMERS); returns the buffers freed, whose held UNREGISTER can be
    /// answered now (without events).
    pub fn collect(&mut self) -> Vec<u64> {
        let holders = self.holders();
        let notes = holders.take_notes();
        if !self.events_enabled {
            return notes.freed;
        }
        if let Some(port) = &self.imports {
            for event in port.hub.take_events(&port.guest) {
                self.pending.push(event);
            }
        }
        for id in &notes.freed {
            self.pending.freed(*id);
        }
        for (application, count) in &notes.consumers {
            self.pending.consumers(application, *count);
        }
        self.release_check.extend(notes.released);
        for id in std::mem::take(&mut self.release_check) {
            let bound = holders.release_bound(id);
            let Some(updates) = self.unreleased.get_mut(&id) else {
                continue;
            };
            let mut released = None;
            while updates.front().is_some_and(|&seqno| seqno <= bound) {
                released = updates.pop_front();
            }
            if updates.is_empty() {
                self.unreleased.remove(&id);
            }
            if let Some(seqno) = released {
                self.pending.released(id, seqno);
            }
        }
        Vec::new()
    }

    /// The pending events.
    pub fn pending(&self) -> &PendingEvents {
        &self.pending
    }

    /// Whether an event waits to be written into the event queue: a pending
    /// one, or one of fault injection.
    pub fn has_events(&self) -> bool {
        !self.raw_events.is_empty() || !self.pending.is_empty()
    }

    /// Has `events`, made by fault injection, written into the event queue
    /// as they are (each its whole used length), ahead of the pending ones.
    pub fn queue_raw_events(&mut self, events: Vec<Vec<u8>>) {
        self.raw_events.extend(events);
    }

    /// The generation events carry: the device's with
    /// `VIRTIO_BUFSHARE_F_GENERATION`, else 0.
    pub fn wire_generation(&self) -> u32 {
        if self.generation_enabled {
            self.generation
        } else {
            0
        }
    }

    /// Takes the next event, as the driver is to read it: one of fault
    /// injection first, then the first pending one.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        if let Some(raw) = self.raw_events.pop_front() {
            return Some(raw);
        }
        let generation = self.wire_generation();
        let event = self.pending.pop()?;
        if let DeviceEvent::Lost = event {
            info!("LOST event sent");
        }
        Some(event.to_bytes(generation))
    }

    /// The state shared with the inspect socket.
    pub fn state(&self) -> &Arc<SharedState> {
        &self.state
    }

    /// The guest memory the buffers' ranges are in, from now on.
    pub fn set_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) {
        self.state.lock().mem = Some(mem);
    }

    /// The features the driver acked: without
    /// `VIRTIO_BUFSHARE_F_BUFFERS`, the buffer commands are unsupported;
    /// with `VIRTIO_BUFSHARE_F_GENERATION`, the answers carry the
    /// generation ([`BufshareDevice::stamp`]).
    pub fn set_driver_features(&mut self, features: u64) {
        self.buffers_enabled = features & (1 << VIRTIO_BUFSHARE_F_BUFFERS) != 0;
        self.generation_enabled = features & (1 << VIRTIO_BUFSHARE_F_GENERATION) != 0;
        self.events_enabled = features & (1 << VIRTIO_BUFSHARE_F_EVENTS) != 0;
        let import = self.events_enabled && features & (1 << VIRTIO_BUFSHARE_F_IMPORT) != 0;
        self.import_enabled = import && self.imports.is_some();
        if let Some(port) = &self.imports {
            port.hub.set_enabled(&port.guest, self.import_enabled);
        }
    }

    /// The device's generation: taken at random (never 0) when the device
    /// is made, kept across resets, changed only by
    /// [`BufshareDevice::lose_buffers`]. The answers carry it once the
    /// driver acked `VIRTIO_BUFSHARE_F_GENERATION`.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Writes the generation into the `virtio_bufshare_resp_hdr` at the
    /// start of `answer`: the device's if the driver acked
    /// `VIRTIO_BUFSHARE_F_GENERATION`, 0 otherwise. An answer shorter than a
    /// resp_hdr is left as it is.
    ///
    /// This comes last, once the answer is made and any fault rewrote it
    /// ([`crate::backend::answer`]): [`BufshareDevice::process`] and
    /// [`BufshareDevice::refuse`] answer with generation 0.
    pub fn stamp(&self, answer: &mut [u8]) {
        let generation = if self.generation_enabled {
            self.generation
        } else {
            0
        };
        if let Some(field) = answer.get_mut(GENERATION_OFFSET..RESP_HDR_SIZE) {
            field.copy_from_slice(&generation.to_le_bytes());
        }
    }

    /// Loses every buffer without a reset, as a device implementation that
    /// restarts does (fault injection: `lose-buffers`, [`crate::fault`]):
    /// drops them as a reset does, the consumers being told RESET
    /// [`LOST_BUFFERS_REASON`], and takes a new generation, other than the
    /// one before. Nothing else changes: the counter of commands, the
    /// features and the guest memory stay. Returns how many buffers there
    /// were.
    pub fn lose_buffers(&mut self) -> usize {
        let dropped = self.state.lock().drop_all(LOST_BUFFERS_REASON);
        self.forget_buffers();
        if let Some(port) = &self.imports {
            port.hub.end_importer(&port.guest, End::Lost);
        }
        if self.events_enabled {
            self.pending.lost();
        }
        let old = self.generation;
        self.generation = next_generation(old, random_u32);
        info!(
            "buffers lost without a reset (fault injection): {dropped} dropped, \
             generation {old:#010x} -> {:#010x}",
            self.generation
        );
        dropped
    }

    /// Number of buffers registered, complete or not.
    pub fn num_buffers(&self) -> usize {
        self.state.lock().buffers.len()
    }

    /// Largest legal command, in bytes ([`max_command_size`]).
    pub fn max_command_size(&self) -> usize {
        max_command_size(&self.limits)
    }

    /// The device's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Commands completed since the last reset.
    pub fn num_commands(&self) -> u64 {
        self.num_commands
    }

    /// Device reset: forget everything the driver did, buffers included.
    /// The generation stays: the driver knows that it reset the device.
    pub fn reset(&mut self) {
        self.num_commands = 0;
        let dropped = self.state.lock().drop_all(ResetReason::DeviceReset);
        self.forget_buffers();
        if let Some(port) = &self.imports {
            port.hub.end_importer(&port.guest, End::Reset);
        }
        self.pending.clear();
        self.raw_events.clear();
        if dropped != 0 {
            info!("device reset: {dropped} buffers dropped");
        }
    }

    /// Forgets what was kept about the buffers (they are dropped): their
    /// unreleased updates, whether they drain, a held UNREGISTER.
    fn forget_buffers(&mut self) {
        self.unreleased.clear();
        self.release_check.clear();
        self.held = None;
        self.holders().forget_buffers();
    }

    /// With events: update `seqno` of buffer `id` was accepted; it is
    /// released once its holders released it ([`BufshareDevice::collect`]).
    pub(crate) fn note_update(&mut self, id: u64, seqno: u64) {
        if !self.events_enabled {
            return;
        }
        let updates = self.unreleased.entry(id).or_default();
        if updates.len() >= MAX_UNRELEASED_UPDATES {
            updates.pop_front();
        }
        updates.push_back(seqno);
        self.release_check.insert(id);
    }

    /// Buffer `id` was unregistered: with events, FREED is pending if
    /// nothing holds it, else it comes when the holders let go; without,
    /// the answer is held while something holds it.
    pub(crate) fn note_unregistered(&mut self, id: u64, free: bool) {
        self.unreleased.remove(&id);
        self.release_check.remove(&id);
        if self.events_enabled {
            if free {
                self.pending.freed(id);
            }
        } else if !free {
            self.held = Some(id);
        }
    }

    /// The configuration space.
    pub fn config_space(&self) -> VirtioBufshareConfig {
        VirtioBufshareConfig {
            max_ranges: self.limits.max_ranges.into(),
            max_props_size: self.limits.max_props_size.into(),
            max_buffers: self.limits.max_buffers.into(),
            reserved: 0.into(),
            max_buffer_size: self.limits.max_buffer_size.into(),
        }
    }

    /// Reads `size` bytes of the configuration space at `offset`. Bytes past
    /// its end read as zero, so the answer always has `size` bytes, which is
    /// what a vhost-user GET_CONFIG reply must have; `size` is capped at
    /// [`vhost::vhost_user::message::VHOST_USER_CONFIG_SIZE`], the most a
    /// frontend may ask for.
    pub fn read_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let max = vhost::vhost_user::message::VHOST_USER_CONFIG_SIZE as usize;
        let size = (size as usize).min(max);
        let mut out = vec![0u8; size];
        let config = self.config_space();
        let bytes = config.as_slice();
        let start = offset as usize;
        if start < bytes.len() {
            let end = bytes.len().min(start.saturating_add(size));
            out[..end - start].copy_from_slice(&bytes[start..end]);
        }
        out
    }

    /// Carries out one command.
    ///
    /// `request` holds the device-readable part of the descriptor chain (or
    /// its first [`BufshareDevice::max_command_size`]` + 1` bytes), `writable`
    /// is the room the
    /// driver gave for the answer. Returns the answer to write back, never
    /// longer than `writable`, or `None` if `writable` cannot even hold a
    /// `virtio_bufshare_resp_hdr`: then nothing can be answered.
    ///
    /// Every answered command counts as completed, whatever its status. An
    /// ADD_RANGES answered `S_INVALID` drops the incomplete buffer it names.
    pub fn process(&mut self, request: &[u8], writable: usize) -> Option<Vec<u8>> {
        if !self.begin(request, writable) {
            return None;
        }
        let answer = match self.execute(request) {
            Ok(answer) => answer,
            Err(status) => {
                if status == VIRTIO_BUFSHARE_S_INVALID {
                    self.drop_incomplete(request);
                }
                status_only(status)
            }
        };
        if answer.len() > writable {
            guest_warn!(
                "answer of {} bytes does not fit in {writable} writable bytes",
                answer.len()
            );
            return Some(status_only(VIRTIO_BUFSHARE_S_INVALID));
        }
        Some(answer)
    }

    /// Answers one command with a bare header with `status`, without
    /// carrying it out (for fault injection, [`crate::fault`]). Like
    /// [`BufshareDevice::process`], returns `None` if `writable` cannot hold
    /// the answer, and counts the command otherwise. The generation is
    /// left 0, as for [`BufshareDevice::process`].
    ///
    /// As for any `S_INVALID` answer to an ADD_RANGES, an incomplete buffer
    /// the command names is dropped if `status` is `S_INVALID`.
    pub fn refuse(&mut self, request: &[u8], writable: usize, status: u32) -> Option<Vec<u8>> {
        if !self.begin(request, writable) {
            return None;
        }
        if status == VIRTIO_BUFSHARE_S_INVALID {
            self.drop_incomplete(request);
        }
        Some(status_only(status))
    }

    /// Whether a command can be answered in `writable` bytes; counts it if
    /// so.
    fn begin(&mut self, request: &[u8], writable: usize) -> bool {
        if writable < RESP_HDR_SIZE {
            guest_warn!(
                "command of {} bytes dropped: {writable} writable bytes cannot hold an answer",
                request.len()
            );
            return false;
        }
        // The counter includes the command being answered.
        self.num_commands = self.num_commands.wrapping_add(1);
        true
    }

    /// Decodes and runs one command; `Err` is the status of a failed one,
    /// which is answered with a bare header.
    fn execute(&mut self, request: &[u8]) -> Result<Vec<u8>, u32> {
        let max = self.max_command_size();
        if request.len() > max {
            guest_warn!("command longer than {max} bytes");
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        }
        let Some((hdr, payload)) = read_obj::<VirtioBufshareCmdHdr>(request) else {
            guest_warn!(
                "command of {} bytes is shorter than its header",
                request.len()
            );
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        };
        let (cmd, flags) = (hdr.type_.to_native(), hdr.flags.to_native());
        if flags != 0 {
            guest_warn!("command {cmd:#x} with flags {flags:#x}");
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        }
        let buffer_cmd = matches!(
            cmd,
            VIRTIO_BUFSHARE_CMD_REGISTER
                | VIRTIO_BUFSHARE_CMD_ADD_RANGES
                | VIRTIO_BUFSHARE_CMD_UPDATE
                | VIRTIO_BUFSHARE_CMD_SET_PROPERTIES
                | VIRTIO_BUFSHARE_CMD_UNREGISTER
        );
        if buffer_cmd && !self.buffers_enabled {
            guest_warn!("buffer command {cmd:#x} without VIRTIO_BUFSHARE_F_BUFFERS");
            return Err(VIRTIO_BUFSHARE_S_UNSUPPORTED);
        }
        if let Some(answer) = self.execute_import(cmd, request) {
            return answer;
        }
        let ok = |()| status_only(VIRTIO_BUFSHARE_S_OK);
        match cmd {
            VIRTIO_BUFSHARE_CMD_GET_INFO => self.get_info(payload),
            VIRTIO_BUFSHARE_CMD_REGISTER => self.register(request).map(ok),
            VIRTIO_BUFSHARE_CMD_ADD_RANGES => self.add_ranges(request).map(ok),
            VIRTIO_BUFSHARE_CMD_UPDATE => self.update(request).map(ok),
            VIRTIO_BUFSHARE_CMD_SET_PROPERTIES => self.set_properties(request).map(ok),
            VIRTIO_BUFSHARE_CMD_UNREGISTER => self.unregister(request).map(ok),
            VIRTIO_BUFSHARE_CMD_GET_CONSUMERS if self.events_enabled => self.get_consumers(payload),
            VIRTIO_BUFSHARE_CMD_GET_CONSUMERS => {
                guest_warn!("GET_CONSUMERS without VIRTIO_BUFSHARE_F_EVENTS");
                Err(VIRTIO_BUFSHARE_S_UNSUPPORTED)
            }
            _ => {
                guest_warn!("unknown command {cmd:#x}");
                Err(VIRTIO_BUFSHARE_S_UNSUPPORTED)
            }
        }
    }

    fn get_info(&self, payload: &[u8]) -> Result<Vec<u8>, u32> {
        if !payload.is_empty() {
            guest_warn!("GET_INFO with {} trailing bytes", payload.len());
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        }
        let info = VirtioBufshareRespInfo {
            hdr: VirtioBufshareRespHdr::with_status(VIRTIO_BUFSHARE_S_OK),
            version: VIRTIO_BUFSHARE_VERSION.into(),
            max_ranges: self.limits.max_ranges.into(),
            max_props_size: self.limits.max_props_size.into(),
            max_buffers: self.limits.max_buffers.into(),
            max_buffer_size: self.limits.max_buffer_size.into(),
            num_buffers: (self.num_buffers() as u64).into(),
            num_commands: self.num_commands.into(),
            name: self.name,
        };
        debug!("GET_INFO: {} commands so far", self.num_commands);
        Ok(info.as_slice().to_vec())
    }
}

impl BufshareDevice {
    fn get_consumers(&self, payload: &[u8]) -> Result<Vec<u8>, u32> {
        let want = size_of::<VirtioBufshareCmdGetConsumers>() - CMD_HDR_SIZE;
        if payload.len() != want {
            guest_warn!("GET_CONSUMERS of {} bytes", payload.len() + CMD_HDR_SIZE);
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        }
        let mut name = [0u8; bufshare_uapi::VIRTIO_BUFSHARE_APP_LEN];
        name.copy_from_slice(payload);
        let application = crate::props::parse_application(&name).map_err(|e| {
            guest_warn!("GET_CONSUMERS: {e}");
            VIRTIO_BUFSHARE_S_INVALID
        })?;
        let consumers = self.holders().consumers(&application);
        let answer = VirtioBufshareRespConsumers {
            hdr: VirtioBufshareRespHdr::with_status(VIRTIO_BUFSHARE_S_OK),
            consumers: consumers.into(),
            reserved: 0.into(),
        };
        debug!("GET_CONSUMERS {application}: {consumers}");
        Ok(answer.as_slice().to_vec())
    }
}

/// A new generation after `old`: a value of `random`, neither 0 nor `old`.
/// Should `random` keep giving those (it never does, unless broken), the
/// one after `old`, skipping 0.
fn next_generation(old: u32, mut random: impl FnMut() -> u32) -> u32 {
    for _ in 0..4 {
        let generation = random();
        if generation != 0 && generation != old {
            return generation;
        }
    }
    old.checked_add(1).unwrap_or(1)
}

/// 32 random bits from `/dev/urandom`; should it fail (logged), from the
/// clock and the process id, which still differ from a predecessor's with
/// high probability.
fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    match File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u32::from_ne_bytes(bytes),
        Err(e) => {
            warn!("no random generation (/dev/urandom: {e}): one of the clock");
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            (nanos as u32) ^ ((nanos >> 32) as u32) ^ std::process::id().rotate_left(16)
        }
    }
}

/// An answer made of a bare header with `status`.
pub(crate) fn status_only(status: u32) -> Vec<u8> {
    VirtioBufshareRespHdr::with_status(status)
        .as_slice()
        .to_vec()
}

/// Copies a `T` from the start of `bytes` (which need not be aligned) and
/// returns it with the bytes that follow it, or `None` if `bytes` is short.
fn read_obj<T: ByteValued + Default>(bytes: &[u8]) -> Option<(T, &[u8])> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    let (head, rest) = bytes.split_at(size_of::<T>());
    let mut obj = T::default();
    obj.as_mut_slice().copy_from_slice(head);
    Some((obj, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bufshare_uapi::VIRTIO_BUFSHARE_S_DEVICE_ERROR;

    #[test]
    fn largest_command() {
        // REGISTER: 104 bytes, 4096 of properties, 1024 ranges.
        assert_eq!(max_command_size(&Limits::default()), 104 + 4096 + 16384);
        let small = Limits {
            max_ranges: 3,
            max_props_size: 9,
            ..Limits::default()
        };
        assert_eq!(max_command_size(&small), 104 + 16 + 48);
        let none = Limits {
            max_ranges: 1,
            max_props_size: 1,
            ..Limits::default()
        };
        assert_eq!(max_command_size(&none), 104 + 8 + 16);
        let huge = Limits {
            max_ranges: u32::MAX,
            max_props_size: u32::MAX,
            ..Limits::default()
        };
        assert_eq!(max_command_size(&huge), 104 + (1 << 32) + 16384);
    }

    fn cmd(cmd: u32, flags: u32) -> Vec<u8> {
        VirtioBufshareCmdHdr {
            type_: cmd.into(),
            flags: flags.into(),
        }
        .as_slice()
        .to_vec()
    }

    fn status_of(answer: &[u8]) -> u32 {
        read_obj::<VirtioBufshareRespHdr>(answer)
            .unwrap()
            .0
            .status
            .to_native()
    }

    const INFO_SIZE: usize = size_of::<VirtioBufshareRespInfo>();

    #[test]
    fn get_info_answer() {
        let limits = Limits {
            max_ranges: 7,
            max_props_size: 8,
            max_buffers: 9,
            max_buffer_size: 0x1_0000_0000,
        };
        let mut dev = BufshareDevice::new(limits);
        let answer = dev
            .process(&cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0), INFO_SIZE)
            .unwrap();
        let (info, rest) = read_obj::<VirtioBufshareRespInfo>(&answer).unwrap();
        assert!(rest.is_empty());
        assert_eq!(info.hdr.status.to_native(), VIRTIO_BUFSHARE_S_OK);
        assert_eq!(info.hdr.generation.to_native(), 0);
        assert_eq!(info.version.to_native(), VIRTIO_BUFSHARE_VERSION);
        assert_eq!(info.max_ranges.to_native(), 7);
        assert_eq!(info.max_props_size.to_native(), 8);
        assert_eq!(info.max_buffers.to_native(), 9);
        assert_eq!(info.max_buffer_size.to_native(), 0x1_0000_0000);
        assert_eq!(info.num_buffers.to_native(), 0);
        assert_eq!(info.num_commands.to_native(), 1);
        let name = format!("vhost-user-bufshare {}", env!("CARGO_PKG_VERSION"));
        assert_eq!(&info.name[..name.len()], name.as_bytes());
        assert!(info.name[name.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn more_room_than_needed_is_fine() {
        let mut dev = BufshareDevice::new(Limits::default());
        let answer = dev
            .process(&cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0), 4096)
            .unwrap();
        assert_eq!(answer.len(), INFO_SIZE);
    }

    #[test]
    fn malformed_commands() {
        let mut dev = BufshareDevice::new(Limits::default());
        let get_info = cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0);
        let mut trailing = get_info.clone();
        trailing.push(0);
        let cases: &[(&[u8], u32)] = &[
            (&[], VIRTIO_BUFSHARE_S_INVALID),
            (&get_info[..CMD_HDR_SIZE - 1], VIRTIO_BUFSHARE_S_INVALID),
            (
                &cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 1),
                VIRTIO_BUFSHARE_S_INVALID,
            ),
            (
                &cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0x8000_0000),
                VIRTIO_BUFSHARE_S_INVALID,
            ),
            (&trailing, VIRTIO_BUFSHARE_S_INVALID),
            (&cmd(0, 0), VIRTIO_BUFSHARE_S_UNSUPPORTED),
            (&cmd(0x2, 0), VIRTIO_BUFSHARE_S_UNSUPPORTED),
            (&cmd(u32::MAX, 0), VIRTIO_BUFSHARE_S_UNSUPPORTED),
            (
                &vec![0u8; max_command_size(&Limits::default()) + 1],
                VIRTIO_BUFSHARE_S_INVALID,
            ),
        ];
        for (i, (request, status)) in cases.iter().enumerate() {
            let answer = dev.process(request, INFO_SIZE).unwrap();
            assert_eq!(answer.len(), RESP_HDR_SIZE, "case {i}");
            assert_eq!(status_of(&answer), *status, "case {i}");
            assert_ne!(status_of(&answer), VIRTIO_BUFSHARE_S_DEVICE_ERROR);
        }
        assert_eq!(dev.num_commands(), cases.len() as u64);
    }

    #[test]
    fn refusals_are_logged_within_a_rate_limit() {
        use crate::ratelimit::{guest_totals, BURST};

        let mut dev = BufshareDevice::new(Limits::default());
        let before = guest_totals();
        for i in 0..1000u32 {
            let answer = dev.process(&cmd(0x1000 + i, 0), INFO_SIZE).unwrap();
            assert_eq!(status_of(&answer), VIRTIO_BUFSHARE_S_UNSUPPORTED);
            dev.process(&cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 1), INFO_SIZE)
                .unwrap();
        }
        let (logged, held_back) = guest_totals();
        assert!(logged - before.0 <= u64::from(BURST), "{logged} logged");
        assert!(held_back - before.1 >= 2000 - u64::from(BURST));
    }

    #[test]
    fn answer_too_big_for_the_room() {
        let mut dev = BufshareDevice::new(Limits::default());
        for room in [RESP_HDR_SIZE, RESP_HDR_SIZE + 1, INFO_SIZE - 1] {
            let answer = dev
                .process(&cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0), room)
                .unwrap();
            assert_eq!(answer, status_only(VIRTIO_BUFSHARE_S_INVALID));
        }
    }

    #[test]
    fn no_room_for_a_header() {
        let mut dev = BufshareDevice::new(Limits::default());
        for room in 0..RESP_HDR_SIZE {
            assert_eq!(
                dev.process(&cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0), room),
                None
            );
        }
        assert_eq!(dev.num_commands(), 0);
    }

    #[test]
    fn counter_and_reset() {
        let mut dev = BufshareDevice::new(Limits::default());
        let get_info = cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0);
        let count = |dev: &mut BufshareDevice| {
            let answer = dev.process(&get_info, INFO_SIZE).unwrap();
            read_obj::<VirtioBufshareRespInfo>(&answer)
                .unwrap()
                .0
                .num_commands
                .to_native()
        };
        assert_eq!(count(&mut dev), 1);
        dev.process(&cmd(0x77, 0), INFO_SIZE).unwrap();
        assert_eq!(count(&mut dev), 3);
        dev.reset();
        assert_eq!(dev.num_commands(), 0);
        assert_eq!(count(&mut dev), 1);
    }

    #[test]
    fn generation_only_with_the_feature() {
        let mut dev = BufshareDevice::new(Limits::default());
        let generation = dev.generation();
        assert_ne!(generation, 0);
        let stamped = |dev: &mut BufshareDevice, request: &[u8]| {
            let mut answer = dev.process(request, INFO_SIZE).unwrap();
            assert_eq!(answer[4..8], [0; 4], "process leaves it 0");
            dev.stamp(&mut answer);
            u32::from_le_bytes(answer[4..8].try_into().unwrap())
        };
        let get_info = cmd(VIRTIO_BUFSHARE_CMD_GET_INFO, 0);
        let unknown = cmd(0x77, 0);
        // Not acked: 0.
        assert_eq!(stamped(&mut dev, &get_info), 0);
        dev.set_driver_features(1 << VIRTIO_BUFSHARE_F_BUFFERS);
        assert_eq!(stamped(&mut dev, &unknown), 0);
        // Acked: the same in every answer, a reset or not.
        dev.set_driver_features(1 << VIRTIO_BUFSHARE_F_GENERATION);
        for request in [&get_info, &unknown, &get_info[..4], &vec![0; 200_000]] {
            assert_eq!(stamped(&mut dev, request), generation);
        }
        dev.reset();
        assert_eq!(dev.generation(), generation);
        assert_eq!(stamped(&mut dev, &get_info), generation);
        let mut refused = dev
            .refuse(&get_info, RESP_HDR_SIZE, VIRTIO_BUFSHARE_S_DEVICE_ERROR)
            .unwrap();
        dev.stamp(&mut refused);
        assert_eq!(refused[4..], generation.to_le_bytes());
        // Shorter than a header: left as it is.
        let mut short = vec![1, 2, 3, 4, 5, 6, 7];
        dev.stamp(&mut short);
        assert_eq!(short, [1, 2, 3, 4, 5, 6, 7]);
        // Not acked any more: 0 again, even over something else.
        dev.set_driver_features(0);
        let mut answer = vec![0xff; 12];
        dev.stamp(&mut answer);
        assert_eq!(
            answer,
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(dev.generation(), generation);
    }

    #[test]
    fn each_device_its_own_generation() {
        // Two random 32-bit values: equal once in 2^32 runs.
        let a = BufshareDevice::new(Limits::default());
        let b = BufshareDevice::new(Limits::default());
        assert_ne!(a.generation(), b.generation());
        assert_ne!(a.generation(), 0);
        assert_ne!(b.generation(), 0);
        // A device on the state of another is a new device too.
        let c = BufshareDevice::with_state(Limits::default(), Arc::clone(a.state()));
        assert_ne!(c.generation(), a.generation());
    }

    #[test]
    fn lose_buffers_changes_the_generation() {
        let mut dev = BufshareDevice::new(Limits::default());
        dev.set_driver_features(1 << VIRTIO_BUFSHARE_F_GENERATION);
        dev.process(&cmd(0x77, 0), INFO_SIZE).unwrap();
        for _ in 0..8 {
            let old = dev.generation();
            assert_eq!(dev.lose_buffers(), 0);
            assert_ne!(dev.generation(), old);
            assert_ne!(dev.generation(), 0);
        }
        assert_eq!(dev.num_commands(), 1, "losing buffers counts nothing");
    }

    #[test]
    fn next_generation_is_neither_0_nor_the_old_one() {
        assert_eq!(next_generation(5, || 9), 9);
        assert_eq!(next_generation(0, || 9), 9);
        // Values to skip.
        let mut values = [0, 5, 0, 7].into_iter();
        assert_eq!(next_generation(5, || values.next().unwrap()), 7);
        // A source stuck on them.
        assert_eq!(next_generation(5, || 5), 6);
        assert_eq!(next_generation(5, || 0), 6);
        assert_eq!(next_generation(0, || 0), 1);
        assert_eq!(next_generation(u32::MAX, || u32::MAX), 1);
        // The real source.
        assert!((0..64).map(|_| random_u32()).any(|r| r != random_u32()));
    }

    #[test]
    fn config_space_reads() {
        let limits = Limits {
            max_ranges: 0x0403_0201,
            max_props_size: 0x0807_0605,
            max_buffers: 0x0c0b_0a09,
            max_buffer_size: 0x1817_1615_1413_1211,
        };
        let dev = BufshareDevice::new(limits);
        let mut full = Vec::new();
        full.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0]);
        full.extend_from_slice(&[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(full.len(), size_of::<VirtioBufshareConfig>());
        assert_eq!(dev.read_config(0, 24), full);

        // Every window, including ones reaching past the end.
        for offset in 0..40u32 {
            for size in 0..40u32 {
                let got = dev.read_config(offset, size);
                assert_eq!(got.len(), size as usize);
                for (i, byte) in got.iter().enumerate() {
                    let at = offset as usize + i;
                    assert_eq!(*byte, full.get(at).copied().unwrap_or(0), "{offset}+{i}");
                }
            }
        }
        // Extreme values never panic.
        assert_eq!(dev.read_config(u32::MAX, 4), vec![0; 4]);
        assert_eq!(dev.read_config(20, u32::MAX).len(), 4096);
        assert_eq!(&dev.read_config(20, u32::MAX)[..4], &full[20..]);
        assert!(dev.read_config(u32::MAX, 0).is_empty());
    }
}
