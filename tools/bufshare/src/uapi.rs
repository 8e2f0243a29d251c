// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! The ioctl interface of `/dev/bufshare` (`include/uapi/linux/bufshare.h`),
//! under this crate's short names: re-exports of the `bufshare-uapi` crate,
//! whose tests check every struct layout and ioctl number against the C
//! header.

// The ioctls' argument structs.
pub use bufshare_uapi::{
    BufshareBufferInfo as BufferInfo, BufshareConsumers as Consumers, BufshareEvent as Event,
    BufshareInfo as Info, BufshareRegister as Register, BufshareSetProperties as SetProperties,
    BufshareUnregister as Unregister, BufshareUpdate as Update,
};

// Those of importing other guests' buffers.
pub use bufshare_uapi::{
    BufshareAttach as Attach, BufshareImport as Import, BufshareImportEvent as ImportEvent,
    BufshareImportInfo as ImportInfo, BufshareImportRelease as ImportRelease,
    BUFSHARE_IMPORT_READ_ONLY as IMPORT_READ_ONLY,
};

// Their lengths and flags.
pub use bufshare_uapi::{
    BUFSHARE_APP_LEN as APP_LEN, BUFSHARE_KIND_DMABUF as KIND_DMABUF,
    BUFSHARE_KIND_MEMFD as KIND_MEMFD, BUFSHARE_NAME_LEN as NAME_LEN,
    BUFSHARE_PROPS_MERGE as PROPS_MERGE, BUFSHARE_UNREGISTER_WAIT as UNREGISTER_WAIT,
    BUFSHARE_UPDATE_NOWAIT as UPDATE_NOWAIT, BUFSHARE_UPDATE_RANGE as UPDATE_RANGE,
    BUFSHARE_UPDATE_RECT as UPDATE_RECT,
};

// The event types.
pub use bufshare_uapi::{
    BUFSHARE_EVENT_CONSUMERS as EVENT_CONSUMERS, BUFSHARE_EVENT_FREED as EVENT_FREED,
    BUFSHARE_EVENT_LOST as EVENT_LOST, BUFSHARE_EVENT_OVERFLOW as EVENT_OVERFLOW,
    BUFSHARE_EVENT_RELEASED as EVENT_RELEASED,
};
pub use bufshare_uapi::{
    BUFSHARE_EVENT_IMPORT_ADDED as EVENT_IMPORT_ADDED,
    BUFSHARE_EVENT_IMPORT_DETACHED as EVENT_IMPORT_DETACHED,
    BUFSHARE_EVENT_IMPORT_NO_SPACE as EVENT_IMPORT_NO_SPACE,
    BUFSHARE_EVENT_IMPORT_REMOVED as EVENT_IMPORT_REMOVED,
    BUFSHARE_EVENT_IMPORT_UPDATED as EVENT_IMPORT_UPDATED,
};

// The ioctl numbers.
pub use bufshare_uapi::{
    BUFSHARE_IOC_ATTACH as IOC_ATTACH, BUFSHARE_IOC_DETACH as IOC_DETACH,
    BUFSHARE_IOC_IMPORT as IOC_IMPORT, BUFSHARE_IOC_IMPORT_CLOSE as IOC_IMPORT_CLOSE,
    BUFSHARE_IOC_IMPORT_INFO as IOC_IMPORT_INFO, BUFSHARE_IOC_IMPORT_RELEASE as IOC_IMPORT_RELEASE,
};
pub use bufshare_uapi::{
    BUFSHARE_IOC_BUFFER_INFO as IOC_BUFFER_INFO, BUFSHARE_IOC_GET_CONSUMERS as IOC_GET_CONSUMERS,
    BUFSHARE_IOC_GET_INFO as IOC_GET_INFO, BUFSHARE_IOC_REGISTER as IOC_REGISTER,
    BUFSHARE_IOC_SET_PROPERTIES as IOC_SET_PROPERTIES, BUFSHARE_IOC_UNREGISTER as IOC_UNREGISTER,
    BUFSHARE_IOC_UNREGISTER_FLAGS as IOC_UNREGISTER_FLAGS, BUFSHARE_IOC_UPDATE as IOC_UPDATE,
};

/// `BUFSHARE_IOCTL_BASE`, as the `u32` this module always gave it
/// (`bufshare-uapi` has it as the `u8` of `_IOC`'s type field).
pub const IOCTL_BASE: u32 = bufshare_uapi::BUFSHARE_IOCTL_BASE as u32;
