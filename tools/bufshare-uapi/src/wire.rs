// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Mirror of `include/uapi/linux/virtio_bufshare.h`: the wire protocol
//! between the driver and the device. Everything is little-endian and of
//! fixed size.
//!
//! [`RegisterCommand`], [`add_ranges_bytes`], [`ranges_bytes`],
//! [`update_command`], [`set_properties_bytes`] and [`unregister_bytes`]
//! make the bytes of commands, for programs that play the driver's part
//! (tests).

use vm_memory::{Le32, Le64};

mod encode;

pub use encode::{
    add_ranges_bytes, ranges_bytes, set_properties_bytes, unregister_bytes, update_command,
    RegisterCommand,
};

/// The device id, reserved in virtio_ids.h as `VIRTIO_ID_DMABUF`.
pub const VIRTIO_BUFSHARE_DEVICE_ID: u32 = 37;

/// Index of the command queue: the driver's commands and the device's
/// answers.
pub const VIRTIO_BUFSHARE_VQ_CMD: u16 = 0;
/// With [`VIRTIO_BUFSHARE_F_EVENTS`], index of the event queue: the
/// device's events.
pub const VIRTIO_BUFSHARE_VQ_EVENT: u16 = 1;
/// Number of virtqueues of a device without [`VIRTIO_BUFSHARE_F_EVENTS`].
pub const VIRTIO_BUFSHARE_NUM_VQS: usize = 1;
/// Number of virtqueues of a device with [`VIRTIO_BUFSHARE_F_EVENTS`].
pub const VIRTIO_BUFSHARE_NUM_VQS_EVENTS: usize = 2;

/// Protocol version the device reports in GET_INFO.
pub const VIRTIO_BUFSHARE_VERSION: u32 = 1;

/// Feature bit: the device keeps buffers, it accepts the REGISTER,
/// ADD_RANGES, UPDATE, SET_PROPERTIES and UNREGISTER commands.
pub const VIRTIO_BUFSHARE_F_BUFFERS: u32 = 0;
/// Feature bit: every answer carries the device's generation
/// ([`VirtioBufshareRespHdr::generation`]), which changes when the device
/// lost its buffers other than by a reset (a restarted device
/// implementation); the driver then registers its buffers again.
pub const VIRTIO_BUFSHARE_F_GENERATION: u32 = 1;
/// Feature bit: the device has an event queue, on which it says when host
/// parties are done with a buffer's memory (RELEASED, FREED), when
/// consumers come and go (CONSUMERS) and when it lost its buffers (LOST);
/// it accepts GET_CONSUMERS, and it answers UNREGISTER at once and sends
/// FREED once no host party holds the buffer's memory any more.
pub const VIRTIO_BUFSHARE_F_EVENTS: u32 = 2;
/// Feature: the device has an import region (shared memory region
/// [`VIRTIO_BUFSHARE_SHM_IMPORT`]) into which it maps the buffers of other
/// guests; it accepts ATTACH, DETACH, IMPORT_INFO, RELEASE and CLOSE and
/// sends the IMPORT_* events. Requires [`VIRTIO_BUFSHARE_F_EVENTS`].
pub const VIRTIO_BUFSHARE_F_IMPORT: u32 = 3;
/// The shmid of the import region.
pub const VIRTIO_BUFSHARE_SHM_IMPORT: u8 = 0;

/// Command `GET_INFO` (`virtio_bufshare_cmd_hdr.type`).
pub const VIRTIO_BUFSHARE_CMD_GET_INFO: u32 = 0x0001;
/// Command `REGISTER` (with [`VIRTIO_BUFSHARE_F_BUFFERS`]).
pub const VIRTIO_BUFSHARE_CMD_REGISTER: u32 = 0x0100;
/// Command `ADD_RANGES` (with [`VIRTIO_BUFSHARE_F_BUFFERS`]).
pub const VIRTIO_BUFSHARE_CMD_ADD_RANGES: u32 = 0x0101;
/// Command `UPDATE` (with [`VIRTIO_BUFSHARE_F_BUFFERS`]).
pub const VIRTIO_BUFSHARE_CMD_UPDATE: u32 = 0x0102;
/// Command `SET_PROPERTIES` (with [`VIRTIO_BUFSHARE_F_BUFFERS`]).
pub const VIRTIO_BUFSHARE_CMD_SET_PROPERTIES: u32 = 0x0103;
/// Command `UNREGISTER` (with [`VIRTIO_BUFSHARE_F_BUFFERS`]).
pub const VIRTIO_BUFSHARE_CMD_UNREGISTER: u32 = 0x0104;
/// Command `GET_CONSUMERS` (with [`VIRTIO_BUFSHARE_F_EVENTS`]).
pub const VIRTIO_BUFSHARE_CMD_GET_CONSUMERS: u32 = 0x0105;
/// Command: import the buffers of an application of another guest.
pub const VIRTIO_BUFSHARE_CMD_ATTACH: u32 = 0x0200;
/// Command: no more imports for an attachment.
pub const VIRTIO_BUFSHARE_CMD_DETACH: u32 = 0x0201;
/// Command: an import's range, state and properties.
pub const VIRTIO_BUFSHARE_CMD_IMPORT_INFO: u32 = 0x0202;
/// Command: the driver is done with an update of an import.
pub const VIRTIO_BUFSHARE_CMD_RELEASE: u32 = 0x0203;
/// Command: the driver no longer reaches an import's range.
pub const VIRTIO_BUFSHARE_CMD_CLOSE: u32 = 0x0204;

/// Status: success.
pub const VIRTIO_BUFSHARE_S_OK: u32 = 0x0000;
/// Status: the command is not known to the device.
pub const VIRTIO_BUFSHARE_S_UNSUPPORTED: u32 = 0x0001;
/// Status: the command is malformed (bad size, bad flags, bad field).
pub const VIRTIO_BUFSHARE_S_INVALID: u32 = 0x0002;
/// Status: the device failed to carry the command out.
pub const VIRTIO_BUFSHARE_S_DEVICE_ERROR: u32 = 0x0003;
/// Status: no buffer with that id is registered.
pub const VIRTIO_BUFSHARE_S_NO_BUFFER: u32 = 0x0004;
/// Status: a limit of the device (buffers, bytes) is reached.
pub const VIRTIO_BUFSHARE_S_NO_SPACE: u32 = 0x0005;
/// Status: the device's configuration does not allow it (ATTACH).
pub const VIRTIO_BUFSHARE_S_DENIED: u32 = 0x0006;

/// Length of the NUL-padded device name in [`VirtioBufshareRespInfo`].
pub const VIRTIO_BUFSHARE_NAME_LEN: usize = 32;

uapi_struct! {
    /// `struct virtio_bufshare_config`: the device configuration space.
    pub struct VirtioBufshareConfig {
        /// Largest number of memory ranges in one buffer.
        pub max_ranges: Le32,
        /// Largest size, in bytes, of one buffer's properties.
        pub max_props_size: Le32,
        /// Largest number of buffers registered at a time.
        pub max_buffers: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
        /// Largest size, in bytes, of one buffer.
        pub max_buffer_size: Le64,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_hdr`: every command starts with this
    /// header, in device-readable buffers.
    pub struct VirtioBufshareCmdHdr {
        /// Command, `VIRTIO_BUFSHARE_CMD_*` (C field `type`).
        pub type_: Le32,
        /// No flags are defined: the driver must set 0.
        pub flags: Le32,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_resp_hdr`: every answer starts with this
    /// header, in device-writable buffers.
    pub struct VirtioBufshareRespHdr {
        /// `VIRTIO_BUFSHARE_S_*`.
        pub status: Le32,
        /// With [`VIRTIO_BUFSHARE_F_GENERATION`], the generation of the
        /// device that carried the command out; 0 otherwise.
        pub generation: Le32,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_resp_info`: the answer to
    /// [`VIRTIO_BUFSHARE_CMD_GET_INFO`], whose command is a bare
    /// [`VirtioBufshareCmdHdr`].
    pub struct VirtioBufshareRespInfo {
        /// The answer's header.
        pub hdr: VirtioBufshareRespHdr,
        /// [`VIRTIO_BUFSHARE_VERSION`].
        pub version: Le32,
        /// The same limits as the configuration space.
        pub max_ranges: Le32,
        /// See [`VirtioBufshareConfig::max_props_size`].
        pub max_props_size: Le32,
        /// See [`VirtioBufshareConfig::max_buffers`].
        pub max_buffers: Le32,
        /// See [`VirtioBufshareConfig::max_buffer_size`].
        pub max_buffer_size: Le64,
        /// Buffers registered on this device now.
        pub num_buffers: Le64,
        /// Commands the device has completed since its last reset.
        pub num_commands: Le64,
        /// Implementation name and version, NUL-padded.
        pub name: [u8; VIRTIO_BUFSHARE_NAME_LEN],
    }
}

/// Length of the NUL-padded application name of a buffer.
pub const VIRTIO_BUFSHARE_APP_LEN: usize = 64;

/// Most ranges carried by one REGISTER or ADD_RANGES command.
pub const VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD: u32 = 1024;

/// Longest name of a property (properties are NUL-terminated `name=value`
/// strings; a name is 1 to 63 characters out of `[A-Za-z0-9_.-]`).
pub const VIRTIO_BUFSHARE_PROP_NAME_MAX: usize = 63;

uapi_struct! {
    /// `struct virtio_bufshare_range`: one range of guest memory.
    pub struct VirtioBufshareRange {
        /// Guest physical address (with `VIRTIO_F_ACCESS_PLATFORM`, an
        /// address the platform translates).
        pub addr: Le64,
        /// Length in bytes, non-zero.
        pub len: Le64,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_register`: a new buffer of `size` bytes,
    /// made of `num_ranges` ranges, of which `nr_ranges` come with this
    /// command. Followed by `props_size` bytes of properties, zero padding to
    /// a multiple of 8 bytes, then `nr_ranges` [`VirtioBufshareRange`].
    pub struct VirtioBufshareCmdRegister {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_REGISTER`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// Chosen by the driver; never used twice between two resets.
        pub buffer_id: Le64,
        /// Size of the buffer, in bytes: the sum of its ranges' lengths.
        pub size: Le64,
        /// Number of ranges of the whole buffer.
        pub num_ranges: Le32,
        /// Number of ranges that follow this command.
        pub nr_ranges: Le32,
        /// Size of the properties that follow this command.
        pub props_size: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
        /// Whose buffer it is: 1 to 63 characters out of `[A-Za-z0-9_.-]`,
        /// NUL-padded.
        pub application: [u8; VIRTIO_BUFSHARE_APP_LEN],
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_add_ranges`: more ranges of an incomplete
    /// buffer, starting with range number `first`. Followed by `nr_ranges`
    /// [`VirtioBufshareRange`].
    pub struct VirtioBufshareCmdAddRanges {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_ADD_RANGES`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The buffer.
        pub buffer_id: Le64,
        /// Number of the first range: the number of ranges received so far.
        pub first: Le32,
        /// Number of ranges that follow.
        pub nr_ranges: Le32,
    }
}

/// `virtio_bufshare_cmd_update.flags`: `offset` and `length` say which bytes
/// changed.
pub const VIRTIO_BUFSHARE_UPDATE_F_RANGE: u32 = 1 << 0;
/// `virtio_bufshare_cmd_update.flags`: `x`, `y`, `width` and `height` say
/// which pixels changed.
pub const VIRTIO_BUFSHARE_UPDATE_F_RECT: u32 = 1 << 1;

uapi_struct! {
    /// `struct virtio_bufshare_cmd_update`: the content of a complete buffer
    /// changed. Without flags the whole buffer changed.
    pub struct VirtioBufshareCmdUpdate {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_UPDATE`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The buffer.
        pub buffer_id: Le64,
        /// Larger than that of any earlier UPDATE of the buffer.
        pub seqno: Le64,
        /// `VIRTIO_BUFSHARE_UPDATE_F_*`.
        pub flags: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
        /// With [`VIRTIO_BUFSHARE_UPDATE_F_RANGE`]: first byte changed.
        pub offset: Le64,
        /// With [`VIRTIO_BUFSHARE_UPDATE_F_RANGE`]: number of bytes changed.
        pub length: Le64,
        /// With [`VIRTIO_BUFSHARE_UPDATE_F_RECT`]: the changed rectangle.
        pub x: Le32,
        /// See `x`.
        pub y: Le32,
        /// See `x`.
        pub width: Le32,
        /// See `x`.
        pub height: Le32,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_set_properties`: replaces all free-form
    /// properties of a buffer with the `props_size` bytes that follow.
    pub struct VirtioBufshareCmdSetProperties {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_SET_PROPERTIES`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The buffer.
        pub buffer_id: Le64,
        /// Size of the properties that follow.
        pub props_size: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_unregister`: the buffer, complete or not,
    /// is gone.
    pub struct VirtioBufshareCmdUnregister {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_UNREGISTER`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The buffer.
        pub buffer_id: Le64,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_get_consumers`: how many consumers are
    /// attached to an application now. The answer is a
    /// [`VirtioBufshareRespConsumers`].
    pub struct VirtioBufshareCmdGetConsumers {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_GET_CONSUMERS`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The application, NUL-padded.
        pub application: [u8; VIRTIO_BUFSHARE_APP_LEN],
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_resp_consumers`: the answer to
    /// [`VIRTIO_BUFSHARE_CMD_GET_CONSUMERS`].
    pub struct VirtioBufshareRespConsumers {
        /// The answer's header.
        pub hdr: VirtioBufshareRespHdr,
        /// Consumers attached to the application.
        pub consumers: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
    }
}

/// Event: every host party given update `seqno` (or a later one) of
/// `buffer_id` is done with it.
pub const VIRTIO_BUFSHARE_EVT_RELEASED: u32 = 0x1000;
/// Event: after UNREGISTER of `buffer_id`, no host party holds its memory
/// any more.
pub const VIRTIO_BUFSHARE_EVT_FREED: u32 = 0x1001;
/// Event: the number of consumers attached to `application` is now
/// `consumers`.
pub const VIRTIO_BUFSHARE_EVT_CONSUMERS: u32 = 0x1002;
/// Event: the device lost its buffers; `generation` is its new generation.
pub const VIRTIO_BUFSHARE_EVT_LOST: u32 = 0x1003;
/// Event: the device dropped CONSUMERS events: ask GET_CONSUMERS again.
pub const VIRTIO_BUFSHARE_EVT_OVERFLOW: u32 = 0x1004;
/// Event ([`VirtioBufshareEventImport`]): `buffer_id` of the attachment's
/// source is mapped at `shm_offset`, `size` bytes.
pub const VIRTIO_BUFSHARE_EVT_IMPORT_ADDED: u32 = 0x1010;
/// Event: the exporter updated an import (`seqno`).
pub const VIRTIO_BUFSHARE_EVT_IMPORT_UPDATED: u32 = 0x1011;
/// Event: the exporter's buffer is gone: stop using the import, CLOSE it.
pub const VIRTIO_BUFSHARE_EVT_IMPORT_REMOVED: u32 = 0x1012;
/// Event: `buffer_id` (`size` bytes) was not imported: the region is full.
pub const VIRTIO_BUFSHARE_EVT_IMPORT_NO_SPACE: u32 = 0x1013;

/// Import flag: the import is mapped read-only.
pub const VIRTIO_BUFSHARE_IMPORT_F_READ_ONLY: u32 = 1 << 0;

uapi_struct! {
    /// `struct virtio_bufshare_cmd_attach`: import the buffers that guest
    /// `source` registers under `application`.
    pub struct VirtioBufshareCmdAttach {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_ATTACH`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The exporting guest, as the device names it, NUL-padded.
        pub source: [u8; VIRTIO_BUFSHARE_NAME_LEN],
        /// The application, NUL-padded.
        pub application: [u8; VIRTIO_BUFSHARE_APP_LEN],
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_resp_attach`: the answer to
    /// [`VIRTIO_BUFSHARE_CMD_ATTACH`].
    pub struct VirtioBufshareRespAttach {
        /// The answer's header.
        pub hdr: VirtioBufshareRespHdr,
        /// The attachment's number.
        pub attachment: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_detach`: no more imports for an
    /// attachment.
    pub struct VirtioBufshareCmdDetach {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_DETACH`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The attachment.
        pub attachment: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_import`: IMPORT_INFO and CLOSE.
    pub struct VirtioBufshareCmdImport {
        /// The command's header.
        pub hdr: VirtioBufshareCmdHdr,
        /// The import.
        pub import_id: Le64,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_resp_import_info`: the answer to
    /// [`VIRTIO_BUFSHARE_CMD_IMPORT_INFO`], followed by `props_size` bytes
    /// of properties.
    pub struct VirtioBufshareRespImportInfo {
        /// The answer's header.
        pub hdr: VirtioBufshareRespHdr,
        /// The exporter's id of the buffer.
        pub buffer_id: Le64,
        /// Where the buffer is mapped in the import region.
        pub shm_offset: Le64,
        /// The buffer's size.
        pub size: Le64,
        /// The last update the device sent for the import.
        pub seqno: Le64,
        /// `VIRTIO_BUFSHARE_IMPORT_F_*`.
        pub flags: Le32,
        /// Bytes of properties that follow.
        pub props_size: Le32,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_cmd_release`: the driver is done with update
    /// `seqno` of an import.
    pub struct VirtioBufshareCmdRelease {
        /// The command's header ([`VIRTIO_BUFSHARE_CMD_RELEASE`]).
        pub hdr: VirtioBufshareCmdHdr,
        /// The import.
        pub import_id: Le64,
        /// The update.
        pub seqno: Le64,
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_event`: what the device writes into each
    /// buffer of the event queue it uses. Fields an event type does not use
    /// are 0.
    pub struct VirtioBufshareEvent {
        /// `VIRTIO_BUFSHARE_EVT_*` (C field `type`).
        pub type_: Le32,
        /// With [`VIRTIO_BUFSHARE_F_GENERATION`]: the device's generation.
        pub generation: Le32,
        /// RELEASED, FREED: the buffer.
        pub buffer_id: Le64,
        /// RELEASED: the update.
        pub seqno: Le64,
        /// CONSUMERS: the number of consumers.
        pub consumers: Le32,
        /// Reserved, zero.
        pub reserved: Le32,
        /// CONSUMERS: the application, NUL-padded.
        pub application: [u8; VIRTIO_BUFSHARE_APP_LEN],
    }
}

uapi_struct! {
    /// `struct virtio_bufshare_event_import`: the IMPORT_* events, in the
    /// same 96 bytes as [`VirtioBufshareEvent`].
    pub struct VirtioBufshareEventImport {
        /// `VIRTIO_BUFSHARE_EVT_IMPORT_*` (C field `type`).
        pub type_: Le32,
        /// With [`VIRTIO_BUFSHARE_F_GENERATION`]: the device's generation.
        pub generation: Le32,
        /// The import.
        pub import_id: Le64,
        /// ADDED, UPDATED: the exporter's update.
        pub seqno: Le64,
        /// The attachment.
        pub attachment: Le32,
        /// ADDED: `VIRTIO_BUFSHARE_IMPORT_F_*`.
        pub flags: Le32,
        /// ADDED: where the buffer is mapped in the import region.
        pub shm_offset: Le64,
        /// ADDED, NO_SPACE: the buffer's size.
        pub size: Le64,
        /// The exporter's id of the buffer.
        pub buffer_id: Le64,
        /// Reserved, zero.
        pub reserved: [u8; 40],
    }
}

impl VirtioBufshareRespHdr {
    /// A header with `status` and a zero generation.
    pub fn with_status(status: u32) -> Self {
        Self {
            status: status.into(),
            generation: 0.into(),
        }
    }
}
