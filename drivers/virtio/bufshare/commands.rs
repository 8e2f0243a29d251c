// SPDX-License-Identifier: GPL-2.0

//! The commands the driver sends to the device, and the device's answers.
//!
//! Each command is a type implementing [`Command`]: it fills in the command's UAPI structure
//! (`include/uapi/linux/virtio_bufshare.h`) by field name, and writes what follows it (properties,
//! ranges). [`Cmdq::send`](crate::cmdq::Cmdq::send) lays both out for the device and reads the
//! answer as the command's [`Reply`] type.

use core::mem::size_of;
use kernel::{
    prelude::*,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uapi,
};

use crate::buffer::Range;

/// Most ranges one REGISTER or ADD_RANGES command carries.
pub(crate) const RANGES_PER_CMD: usize = uapi::VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD as usize;

/// Declares a transparent wrapper of a UAPI structure of the wire protocol, which the driver
/// writes for the device or reads from it whole.
macro_rules! wire_struct {
    ($(#[$meta:meta])* $name:ident, $raw:ty) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Default)]
        pub(crate) struct $name(pub(crate) $raw);

        // SAFETY: The structure is made of little-endian integers (and arrays of them) only, laid
        // out without padding: the UAPI header keeps every field naturally aligned and the size a
        // multiple of 8, and `tools/bufshare-uapi` checks the layout against the header. So every
        // byte is initialised and any bytes make a valid value.
        unsafe impl AsBytes for $name {}

        // SAFETY: As above.
        unsafe impl FromBytes for $name {}
    };
}

wire_struct!(
    /// `struct virtio_bufshare_cmd_hdr`: GET_INFO is just this.
    CmdHdr,
    uapi::virtio_bufshare_cmd_hdr
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_register`.
    RegisterCmd,
    uapi::virtio_bufshare_cmd_register
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_add_ranges`.
    AddRangesCmd,
    uapi::virtio_bufshare_cmd_add_ranges
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_update`.
    UpdateCmd,
    uapi::virtio_bufshare_cmd_update
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_set_properties`.
    SetPropertiesCmd,
    uapi::virtio_bufshare_cmd_set_properties
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_unregister`.
    UnregisterCmd,
    uapi::virtio_bufshare_cmd_unregister
);
wire_struct!(
    /// `struct virtio_bufshare_resp_hdr`: every answer starts with it.
    RespHdr,
    uapi::virtio_bufshare_resp_hdr
);
wire_struct!(
    /// `struct virtio_bufshare_resp_info`: the answer to GET_INFO.
    InfoReply,
    uapi::virtio_bufshare_resp_info
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_get_consumers`.
    GetConsumersCmd,
    uapi::virtio_bufshare_cmd_get_consumers
);
wire_struct!(
    /// `struct virtio_bufshare_resp_consumers`: the answer to GET_CONSUMERS.
    ConsumersReply,
    uapi::virtio_bufshare_resp_consumers
);
wire_struct!(
    /// `struct virtio_bufshare_event`: what the device writes into a buffer of the event queue.
    WireEvent,
    uapi::virtio_bufshare_event
);
wire_struct!(
    /// `struct virtio_bufshare_event_import`: an IMPORT_* event, in the same bytes.
    WireImportEvent,
    uapi::virtio_bufshare_event_import
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_attach`.
    AttachCmd,
    uapi::virtio_bufshare_cmd_attach
);
wire_struct!(
    /// `struct virtio_bufshare_resp_attach`: the answer to ATTACH.
    AttachReply,
    uapi::virtio_bufshare_resp_attach
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_detach`.
    DetachCmd,
    uapi::virtio_bufshare_cmd_detach
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_import`: CLOSE.
    ImportCmd,
    uapi::virtio_bufshare_cmd_import
);
wire_struct!(
    /// `struct virtio_bufshare_resp_import_info`: the answer to IMPORT_INFO, before the
    /// properties.
    ImportInfoReplyHdr,
    uapi::virtio_bufshare_resp_import_info
);
wire_struct!(
    /// `struct virtio_bufshare_cmd_release`.
    ReleaseCmd,
    uapi::virtio_bufshare_cmd_release
);
wire_struct!(
    /// `struct virtio_bufshare_range`.
    WireRange,
    uapi::virtio_bufshare_range
);

/// The header of a command of type `type_`.
fn hdr(type_: u32) -> uapi::virtio_bufshare_cmd_hdr {
    uapi::virtio_bufshare_cmd_hdr {
        type_: type_.to_le(),
        // No flags are defined.
        flags: 0,
    }
}

/// A command to the device.
pub(crate) trait Command {
    /// The fixed part: the command's UAPI structure, which starts with its header.
    type Fixed: AsBytes;

    /// The answer the device gives when it carried the command out.
    type Reply: Reply;

    /// Fills in the fixed part.
    fn fixed(&self) -> Self::Fixed;

    /// The size of what follows the fixed part.
    fn payload_len(&self) -> usize {
        0
    }

    /// Appends what follows the fixed part: exactly [`Command::payload_len`] bytes.
    fn write_payload(&self, _out: &mut KVec<u8>) -> Result {
        Ok(())
    }
}

/// An answer of the device, read once its status said OK.
pub(crate) trait Reply: Sized {
    /// Its size: an answer of any other size is refused. For answers of a variable size, the
    /// largest, which is the room the device is given.
    const LEN: usize;

    /// Whether an answer of `len` bytes may be this reply.
    fn fits(len: usize) -> bool {
        len == Self::LEN
    }

    /// Reads it from `bytes`, whose length [`Reply::fits`].
    fn read(bytes: &[u8]) -> Result<Self>;
}

/// The answer of commands that answer with a bare header.
pub(crate) struct NoReply;

impl Reply for NoReply {
    const LEN: usize = size_of::<RespHdr>();

    fn read(_bytes: &[u8]) -> Result<Self> {
        Ok(NoReply)
    }
}

impl Reply for InfoReply {
    const LEN: usize = size_of::<InfoReply>();

    fn read(bytes: &[u8]) -> Result<Self> {
        InfoReply::from_bytes_copy(bytes).ok_or(EIO)
    }
}

impl Reply for ConsumersReply {
    const LEN: usize = size_of::<ConsumersReply>();

    fn read(bytes: &[u8]) -> Result<Self> {
        ConsumersReply::from_bytes_copy(bytes).ok_or(EIO)
    }
}

impl Reply for AttachReply {
    const LEN: usize = size_of::<AttachReply>();

    fn read(bytes: &[u8]) -> Result<Self> {
        AttachReply::from_bytes_copy(bytes).ok_or(EIO)
    }
}

/// Most bytes of properties an IMPORT_INFO answer may carry.
pub(crate) const IMPORT_PROPS_MAX: usize = 4096;

/// The answer to IMPORT_INFO: the import and the properties its buffer has now.
pub(crate) struct ImportInfoReply {
    pub(crate) hdr: uapi::virtio_bufshare_resp_import_info,
    pub(crate) props: KVec<u8>,
}

impl Reply for ImportInfoReply {
    const LEN: usize = size_of::<ImportInfoReplyHdr>() + IMPORT_PROPS_MAX;

    fn fits(len: usize) -> bool {
        (size_of::<ImportInfoReplyHdr>()..=Self::LEN).contains(&len)
    }

    /// The properties must be exactly what follows the fixed part.
    fn read(bytes: &[u8]) -> Result<Self> {
        let fixed = size_of::<ImportInfoReplyHdr>();
        let hdr = ImportInfoReplyHdr::from_bytes_copy(bytes.get(..fixed).ok_or(EIO)?)
            .ok_or(EIO)?
            .0;
        let props = &bytes[fixed..];
        if u32::from_le(hdr.props_size) as usize != props.len() {
            return Err(EIO);
        }
        let mut out = KVec::with_capacity(props.len(), GFP_KERNEL)?;
        out.extend_from_slice(props, GFP_KERNEL)?;
        Ok(ImportInfoReply { hdr, props: out })
    }
}

/// Appends `ranges` as the device reads them.
fn write_ranges(out: &mut KVec<u8>, ranges: &[Range]) -> Result {
    for r in ranges {
        let range = WireRange(uapi::virtio_bufshare_range {
            addr: r.addr.to_le(),
            len: r.len.to_le(),
        });
        out.extend_from_slice(range.as_bytes(), GFP_KERNEL)?;
    }
    Ok(())
}

/// Appends zeroes up to a multiple of 8 bytes.
fn pad8(out: &mut KVec<u8>) -> Result {
    while out.len() % 8 != 0 {
        out.push(0, GFP_KERNEL)?;
    }
    Ok(())
}

/// The properties as the device reads them: their size checked to fit its `u32`.
fn props_size(props: &[u8]) -> u32 {
    // Properties are checked against the device's limit, a `u32`, before they get here.
    u32::try_from(props.len()).unwrap_or(u32::MAX)
}

/// The number of ranges as the device reads it.
fn nr(ranges: &[Range]) -> u32 {
    // At most `RANGES_PER_CMD` per command.
    u32::try_from(ranges.len()).unwrap_or(u32::MAX)
}

/// GET_INFO: the device's version, limits and counters.
pub(crate) struct GetInfo;

impl Command for GetInfo {
    type Fixed = CmdHdr;
    type Reply = InfoReply;

    fn fixed(&self) -> CmdHdr {
        CmdHdr(hdr(uapi::VIRTIO_BUFSHARE_CMD_GET_INFO))
    }
}

/// REGISTER: a new buffer, with its first ranges (at most [`RANGES_PER_CMD`]).
pub(crate) struct Register<'a> {
    pub(crate) id: u64,
    pub(crate) size: u64,
    /// How many ranges the buffer has in all.
    pub(crate) num_ranges: u32,
    pub(crate) application: &'a [u8; uapi::VIRTIO_BUFSHARE_APP_LEN as usize],
    pub(crate) props: &'a [u8],
    /// The ranges this command carries.
    pub(crate) ranges: &'a [Range],
}

impl Command for Register<'_> {
    type Fixed = RegisterCmd;
    type Reply = NoReply;

    fn fixed(&self) -> RegisterCmd {
        RegisterCmd(uapi::virtio_bufshare_cmd_register {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_REGISTER),
            buffer_id: self.id.to_le(),
            size: self.size.to_le(),
            num_ranges: self.num_ranges.to_le(),
            nr_ranges: nr(self.ranges).to_le(),
            props_size: props_size(self.props).to_le(),
            reserved: 0,
            application: *self.application,
        })
    }

    fn payload_len(&self) -> usize {
        self.props.len().next_multiple_of(8) + self.ranges.len() * size_of::<WireRange>()
    }

    fn write_payload(&self, out: &mut KVec<u8>) -> Result {
        out.extend_from_slice(self.props, GFP_KERNEL)?;
        // The fixed part is a multiple of 8 bytes long: pad the properties.
        pad8(out)?;
        write_ranges(out, self.ranges)
    }
}

/// ADD_RANGES: more ranges of a buffer being registered.
pub(crate) struct AddRanges<'a> {
    pub(crate) id: u64,
    /// The number of the first range this command carries.
    pub(crate) first: u32,
    pub(crate) ranges: &'a [Range],
}

impl Command for AddRanges<'_> {
    type Fixed = AddRangesCmd;
    type Reply = NoReply;

    fn fixed(&self) -> AddRangesCmd {
        AddRangesCmd(uapi::virtio_bufshare_cmd_add_ranges {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_ADD_RANGES),
            buffer_id: self.id.to_le(),
            first: self.first.to_le(),
            nr_ranges: nr(self.ranges).to_le(),
        })
    }

    fn payload_len(&self) -> usize {
        self.ranges.len() * size_of::<WireRange>()
    }

    fn write_payload(&self, out: &mut KVec<u8>) -> Result {
        write_ranges(out, self.ranges)
    }
}

/// The flags of UPDATE that go to the device, as the ioctl has them (`_UPDATE_FLAGS_MATCH`).
pub(crate) const DEVICE_UPDATE_FLAGS: u32 =
    uapi::BUFSHARE_UPDATE_RANGE | uapi::BUFSHARE_UPDATE_RECT;

// The update flags of the ioctl are those of the device.
const _UPDATE_FLAGS_MATCH: () = assert!(
    uapi::BUFSHARE_UPDATE_RANGE == uapi::VIRTIO_BUFSHARE_UPDATE_F_RANGE
        && uapi::BUFSHARE_UPDATE_RECT == uapi::VIRTIO_BUFSHARE_UPDATE_F_RECT
);

/// UPDATE: the content of a buffer changed.
pub(crate) struct Update<'a> {
    pub(crate) id: u64,
    pub(crate) seqno: u64,
    /// What changed, as the application said (flags, range, rectangle).
    pub(crate) what: &'a uapi::bufshare_update,
}

impl Command for Update<'_> {
    type Fixed = UpdateCmd;
    type Reply = NoReply;

    fn fixed(&self) -> UpdateCmd {
        let w = self.what;
        UpdateCmd(uapi::virtio_bufshare_cmd_update {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_UPDATE),
            buffer_id: self.id.to_le(),
            seqno: self.seqno.to_le(),
            // Not the driver's own (`BUFSHARE_UPDATE_NOWAIT`).
            flags: (w.flags & DEVICE_UPDATE_FLAGS).to_le(),
            reserved: 0,
            offset: w.offset.to_le(),
            length: w.length.to_le(),
            x: w.x.to_le(),
            y: w.y.to_le(),
            width: w.width.to_le(),
            height: w.height.to_le(),
        })
    }
}

/// SET_PROPERTIES: the buffer's properties, all of them.
pub(crate) struct SetProperties<'a> {
    pub(crate) id: u64,
    pub(crate) props: &'a [u8],
}

impl Command for SetProperties<'_> {
    type Fixed = SetPropertiesCmd;
    type Reply = NoReply;

    fn fixed(&self) -> SetPropertiesCmd {
        SetPropertiesCmd(uapi::virtio_bufshare_cmd_set_properties {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_SET_PROPERTIES),
            buffer_id: self.id.to_le(),
            props_size: props_size(self.props).to_le(),
            reserved: 0,
        })
    }

    fn payload_len(&self) -> usize {
        self.props.len()
    }

    fn write_payload(&self, out: &mut KVec<u8>) -> Result {
        out.extend_from_slice(self.props, GFP_KERNEL)?;
        Ok(())
    }
}

/// UNREGISTER: the buffer is gone.
pub(crate) struct Unregister {
    pub(crate) id: u64,
}

impl Command for Unregister {
    type Fixed = UnregisterCmd;
    type Reply = NoReply;

    fn fixed(&self) -> UnregisterCmd {
        UnregisterCmd(uapi::virtio_bufshare_cmd_unregister {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_UNREGISTER),
            buffer_id: self.id.to_le(),
        })
    }
}

/// GET_CONSUMERS: how many consumers an application has.
pub(crate) struct GetConsumers<'a> {
    pub(crate) application: &'a [u8; uapi::VIRTIO_BUFSHARE_APP_LEN as usize],
}

impl Command for GetConsumers<'_> {
    type Fixed = GetConsumersCmd;
    type Reply = ConsumersReply;

    fn fixed(&self) -> GetConsumersCmd {
        GetConsumersCmd(uapi::virtio_bufshare_cmd_get_consumers {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_GET_CONSUMERS),
            application: *self.application,
        })
    }
}

/// ATTACH: import the buffers `source` registers under `application`.
pub(crate) struct Attach<'a> {
    pub(crate) source: &'a [u8; uapi::VIRTIO_BUFSHARE_NAME_LEN as usize],
    pub(crate) application: &'a [u8; uapi::VIRTIO_BUFSHARE_APP_LEN as usize],
}

impl Command for Attach<'_> {
    type Fixed = AttachCmd;
    type Reply = AttachReply;

    fn fixed(&self) -> AttachCmd {
        AttachCmd(uapi::virtio_bufshare_cmd_attach {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_ATTACH),
            source: *self.source,
            application: *self.application,
        })
    }
}

/// DETACH: no more imports for an attachment.
pub(crate) struct Detach {
    pub(crate) attachment: u32,
}

impl Command for Detach {
    type Fixed = DetachCmd;
    type Reply = NoReply;

    fn fixed(&self) -> DetachCmd {
        DetachCmd(uapi::virtio_bufshare_cmd_detach {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_DETACH),
            attachment: self.attachment.to_le(),
            reserved: 0,
        })
    }
}

/// IMPORT_INFO: an import's range, state and properties.
pub(crate) struct ImportInfo {
    pub(crate) import_id: u64,
}

impl Command for ImportInfo {
    type Fixed = ImportCmd;
    type Reply = ImportInfoReply;

    fn fixed(&self) -> ImportCmd {
        ImportCmd(uapi::virtio_bufshare_cmd_import {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_IMPORT_INFO),
            import_id: self.import_id.to_le(),
        })
    }
}

/// CLOSE: the driver no longer reaches an import's range.
pub(crate) struct Close {
    pub(crate) import_id: u64,
}

impl Command for Close {
    type Fixed = ImportCmd;
    type Reply = NoReply;

    fn fixed(&self) -> ImportCmd {
        ImportCmd(uapi::virtio_bufshare_cmd_import {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_CLOSE),
            import_id: self.import_id.to_le(),
        })
    }
}

/// RELEASE: the driver is done with update `seqno` of an import, and those before.
pub(crate) struct Release {
    pub(crate) import_id: u64,
    pub(crate) seqno: u64,
}

impl Command for Release {
    type Fixed = ReleaseCmd;
    type Reply = NoReply;

    fn fixed(&self) -> ReleaseCmd {
        ReleaseCmd(uapi::virtio_bufshare_cmd_release {
            hdr: hdr(uapi::VIRTIO_BUFSHARE_CMD_RELEASE),
            import_id: self.import_id.to_le(),
            seqno: self.seqno.to_le(),
        })
    }
}

/// An IMPORT_* event, checked.
#[derive(Clone, Copy)]
pub(crate) enum ImportEvent {
    /// Buffer `buffer_id` of the attachment's source is mapped at `offset` of the import region,
    /// `size` bytes, as import `import_id`; `seqno` is its last update.
    Added {
        import_id: u64,
        attachment: u32,
        seqno: u64,
        flags: u32,
        offset: u64,
        size: u64,
        buffer_id: u64,
    },
    /// The exporter updated import `import_id` (update `seqno`).
    Updated {
        import_id: u64,
        attachment: u32,
        seqno: u64,
    },
    /// The exporter's buffer is gone: the driver is to CLOSE import `import_id`.
    Removed { import_id: u64, attachment: u32 },
    /// Buffer `buffer_id` (`size` bytes) of the attachment's source was not imported: no room.
    NoSpace {
        attachment: u32,
        size: u64,
        buffer_id: u64,
    },
}

impl ImportEvent {
    /// The attachment the event is about.
    pub(crate) fn attachment(&self) -> u32 {
        match *self {
            ImportEvent::Added { attachment, .. }
            | ImportEvent::Updated { attachment, .. }
            | ImportEvent::Removed { attachment, .. }
            | ImportEvent::NoSpace { attachment, .. } => attachment,
        }
    }

    /// Reads an IMPORT_* event of type `type_`: the fields its type does not use are 0, flags
    /// known, sizes not 0. `EIO` otherwise.
    fn read(bytes: &[u8], type_: u32) -> Result<Self> {
        let e = WireImportEvent::from_bytes_copy(bytes).ok_or(EIO)?.0;
        let import_id = u64::from_le(e.import_id);
        let attachment = u32::from_le(e.attachment);
        let seqno = u64::from_le(e.seqno);
        let flags = u32::from_le(e.flags);
        let offset = u64::from_le(e.shm_offset);
        let size = u64::from_le(e.size);
        let buffer_id = u64::from_le(e.buffer_id);
        if e.reserved.iter().any(|&b| b != 0) {
            return Err(EIO);
        }
        let event = match type_ {
            uapi::VIRTIO_BUFSHARE_EVT_IMPORT_ADDED
                if import_id != 0
                    && size != 0
                    && flags & !uapi::VIRTIO_BUFSHARE_IMPORT_F_READ_ONLY == 0 =>
            {
                ImportEvent::Added {
                    import_id,
                    attachment,
                    seqno,
                    flags,
                    offset,
                    size,
                    buffer_id,
                }
            }
            uapi::VIRTIO_BUFSHARE_EVT_IMPORT_UPDATED
                if import_id != 0 && flags == 0 && offset == 0 && size == 0 =>
            {
                ImportEvent::Updated {
                    import_id,
                    attachment,
                    seqno,
                }
            }
            uapi::VIRTIO_BUFSHARE_EVT_IMPORT_REMOVED
                if import_id != 0 && seqno == 0 && flags == 0 && offset == 0 && size == 0 =>
            {
                ImportEvent::Removed {
                    import_id,
                    attachment,
                }
            }
            uapi::VIRTIO_BUFSHARE_EVT_IMPORT_NO_SPACE
                if import_id == 0 && seqno == 0 && flags == 0 && offset == 0 && size != 0 =>
            {
                ImportEvent::NoSpace {
                    attachment,
                    size,
                    buffer_id,
                }
            }
            _ => return Err(EIO),
        };
        Ok(event)
    }
}

/// The size of an event on the event queue.
pub(crate) const EVENT_LEN: usize = size_of::<WireEvent>();

/// An event of the device, checked.
#[derive(Clone, Copy)]
pub(crate) enum Event {
    /// Every host party given update `seqno` of buffer `id`, or a later one, is done with it.
    Released { id: u64, seqno: u64 },
    /// No host party holds the memory of the unregistered buffer `id` any more.
    Freed { id: u64 },
    /// `consumers` consumers are attached to `application` now.
    Consumers {
        application: [u8; uapi::VIRTIO_BUFSHARE_APP_LEN as usize],
        consumers: u32,
    },
    /// The device lost its buffers; `generation` is its new generation.
    Lost { generation: u32 },
    /// The device dropped CONSUMERS events.
    Overflow,
    /// An event about imports (`VIRTIO_BUFSHARE_F_IMPORT`).
    Import(ImportEvent),
}

impl Event {
    /// Reads an event the device wrote: exactly [`EVENT_LEN`] bytes of a known type, with the
    /// fields its type does not use 0, and a valid application name where it has one. `EIO`
    /// otherwise.
    pub(crate) fn read(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != EVENT_LEN {
            return Err(EIO);
        }
        let e = WireEvent::from_bytes_copy(bytes).ok_or(EIO)?.0;
        let type_ = u32::from_le(e.type_);
        if (uapi::VIRTIO_BUFSHARE_EVT_IMPORT_ADDED..=uapi::VIRTIO_BUFSHARE_EVT_IMPORT_NO_SPACE)
            .contains(&type_)
        {
            return ImportEvent::read(bytes, type_).map(Event::Import);
        }
        let (id, seqno) = (u64::from_le(e.buffer_id), u64::from_le(e.seqno));
        let consumers = u32::from_le(e.consumers);
        let no_app = e.application.iter().all(|&c| c == 0);
        let event = match type_ {
            uapi::VIRTIO_BUFSHARE_EVT_RELEASED if consumers == 0 && no_app => {
                Event::Released { id, seqno }
            }
            uapi::VIRTIO_BUFSHARE_EVT_FREED if seqno == 0 && consumers == 0 && no_app => {
                Event::Freed { id }
            }
            uapi::VIRTIO_BUFSHARE_EVT_CONSUMERS if id == 0 && seqno == 0 => {
                // A valid name, NUL-padded to the end.
                let app = crate::props::application(&e.application).map_err(|_| EIO)?;
                if app != e.application {
                    return Err(EIO);
                }
                Event::Consumers {
                    application: e.application,
                    consumers,
                }
            }
            uapi::VIRTIO_BUFSHARE_EVT_LOST if id == 0 && seqno == 0 && consumers == 0 && no_app => {
                Event::Lost {
                    generation: u32::from_le(e.generation),
                }
            }
            uapi::VIRTIO_BUFSHARE_EVT_OVERFLOW
                if id == 0 && seqno == 0 && consumers == 0 && no_app =>
            {
                Event::Overflow
            }
            _ => return Err(EIO),
        };
        if e.reserved != 0 {
            return Err(EIO);
        }
        Ok(event)
    }
}

/// Lays `cmd` out as the device reads it.
pub(crate) fn encode<C: Command>(cmd: &C) -> Result<KVec<u8>> {
    let len = size_of::<C::Fixed>() + cmd.payload_len();
    let mut out = KVec::with_capacity(len, GFP_KERNEL)?;
    out.extend_from_slice(cmd.fixed().as_bytes(), GFP_KERNEL)?;
    cmd.write_payload(&mut out)?;
    if out.len() != len {
        return Err(EINVAL);
    }
    Ok(out)
}
