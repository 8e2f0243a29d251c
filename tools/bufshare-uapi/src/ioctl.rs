// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Mirror of `include/uapi/linux/bufshare.h`: the ioctl interface of
//! `/dev/bufshare`, plus the `_IOC` encoding of `<asm-generic/ioctl.h>`.

// The encoding below is asm-generic's, used by x86, arm, arm64, riscv,
// loongarch and s390. These architectures lay the bits out differently.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
compile_error!("bufshare-uapi only implements the asm-generic ioctl number encoding");

/// Bits of the command number (`_IOC_NRBITS`).
pub const IOC_NRBITS: u32 = 8;
/// Bits of the type, or magic (`_IOC_TYPEBITS`).
pub const IOC_TYPEBITS: u32 = 8;
/// Bits of the argument size (`_IOC_SIZEBITS`).
pub const IOC_SIZEBITS: u32 = 14;
/// Bits of the direction (`_IOC_DIRBITS`).
pub const IOC_DIRBITS: u32 = 2;

/// `_IOC_NRSHIFT`.
pub const IOC_NRSHIFT: u32 = 0;
/// `_IOC_TYPESHIFT`.
pub const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
/// `_IOC_SIZESHIFT`.
pub const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
/// `_IOC_DIRSHIFT`.
pub const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// `_IOC_NONE`: no data transfer.
pub const IOC_NONE: u32 = 0;
/// `_IOC_WRITE`: userspace writes, the kernel reads.
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: the kernel writes, userspace reads.
pub const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`.
///
/// Panics (at compile time, in a const) if `dir` or `size` does not fit in
/// its bit field, like the kernel's `_IOC_TYPECHECK` refuses to build.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(dir < (1 << IOC_DIRBITS), "ioctl direction out of range");
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    (dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
}

/// `_IO(type, nr)`: no argument.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, T)` with `size` = `size_of::<T>()`: the kernel fills a `T`.
pub const fn ior(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size)
}

/// `_IOW(type, nr, T)` with `size` = `size_of::<T>()`: the kernel reads a `T`.
pub const fn iow(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_WRITE, ty, nr, size)
}

/// `_IOWR(type, nr, T)` with `size` = `size_of::<T>()`: both ways.
pub const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size)
}

/// The ioctl type (magic) of `/dev/bufshare`.
pub const BUFSHARE_IOCTL_BASE: u8 = 0xB9;

/// Length of the NUL-terminated name in [`BufshareInfo`].
pub const BUFSHARE_NAME_LEN: usize = 32;

uapi_struct! {
    /// `struct bufshare_info`: what [`BUFSHARE_IOC_GET_INFO`] returns.
    ///
    /// Every field but `features` comes from the device's answer to a
    /// GET_INFO command, sent when the ioctl is called.
    pub struct BufshareInfo {
        /// Protocol version of the device.
        pub version: u32,
        /// Device limit: memory ranges in one buffer.
        pub max_ranges: u32,
        /// Device limit: size of one buffer's properties.
        pub max_props_size: u32,
        /// Device limit: buffers registered at a time.
        pub max_buffers: u32,
        /// Device limit: size of one buffer.
        pub max_buffer_size: u64,
        /// Buffers registered on the device now.
        pub num_buffers: u64,
        /// Commands the device completed since its last reset.
        pub num_commands: u64,
        /// Negotiated virtio feature bits.
        pub features: u64,
        /// Device implementation name, NUL-terminated (C `char`).
        pub name: [u8; BUFSHARE_NAME_LEN],
    }
}

/// `BUFSHARE_IOC_GET_INFO`: `_IOR(BUFSHARE_IOCTL_BASE, 0x00, struct bufshare_info)`.
pub const BUFSHARE_IOC_GET_INFO: u32 = ior(
    BUFSHARE_IOCTL_BASE,
    0x00,
    core::mem::size_of::<BufshareInfo>(),
);

/// Length of an application name, with its terminating NUL.
pub const BUFSHARE_APP_LEN: usize = 64;

uapi_struct! {
    /// `struct bufshare_register`: [`BUFSHARE_IOC_REGISTER`], share a buffer.
    ///
    /// `fd` is a memfd (sealed with `F_SEAL_SHRINK`, not write-sealed) or a
    /// dma-buf; `offset` and `length`, multiples of the page size, say which
    /// part of it is shared. On success `id` holds the buffer's id.
    pub struct BufshareRegister {
        /// The memfd or dma-buf.
        pub fd: i32,
        /// Must be 0.
        pub flags: u32,
        /// Start of the shared part of `fd`.
        pub offset: u64,
        /// Length of the shared part of `fd`.
        pub length: u64,
        /// User pointer to `props_size` bytes of properties.
        pub props: u64,
        /// Size of the properties.
        pub props_size: u32,
        /// Must be 0.
        pub reserved: u32,
        /// Whose buffer it is: 1 to 63 characters out of `[A-Za-z0-9_.-]`,
        /// NUL-terminated (C `char`).
        pub application: [u8; BUFSHARE_APP_LEN],
        /// Out: the buffer's id.
        pub id: u64,
    }
}

/// `bufshare_update.flags`: `offset`, `length` valid.
pub const BUFSHARE_UPDATE_RANGE: u32 = 1 << 0;
/// `bufshare_update.flags`: `x`, `y`, `width`, `height` valid.
pub const BUFSHARE_UPDATE_RECT: u32 = 1 << 1;
/// `bufshare_update.flags`: return once the update is queued, without
/// waiting for the device's answer.
pub const BUFSHARE_UPDATE_NOWAIT: u32 = 1 << 16;

uapi_struct! {
    /// `struct bufshare_update`: [`BUFSHARE_IOC_UPDATE`], the buffer's
    /// content changed.
    pub struct BufshareUpdate {
        /// The buffer.
        pub id: u64,
        /// 0 (numbered by the driver) or larger than the last one; out: the
        /// number sent.
        pub seqno: u64,
        /// `BUFSHARE_UPDATE_*`.
        pub flags: u32,
        /// Must be 0.
        pub reserved: u32,
        /// With [`BUFSHARE_UPDATE_RANGE`]: first byte changed.
        pub offset: u64,
        /// With [`BUFSHARE_UPDATE_RANGE`]: number of bytes changed.
        pub length: u64,
        /// With [`BUFSHARE_UPDATE_RECT`]: the changed rectangle.
        pub x: u32,
        /// See `x`.
        pub y: u32,
        /// See `x`.
        pub width: u32,
        /// See `x`.
        pub height: u32,
    }
}

/// `bufshare_set_properties.flags`: keep the properties not named in
/// `props` (default: replace them all).
pub const BUFSHARE_PROPS_MERGE: u32 = 1 << 0;

uapi_struct! {
    /// `struct bufshare_set_properties`: [`BUFSHARE_IOC_SET_PROPERTIES`],
    /// replace the buffer's properties, or merge into them.
    pub struct BufshareSetProperties {
        /// The buffer.
        pub id: u64,
        /// User pointer to `props_size` bytes of properties.
        pub props: u64,
        /// Size of the properties.
        pub props_size: u32,
        /// [`BUFSHARE_PROPS_MERGE`] or 0.
        pub flags: u32,
    }
}

/// `bufshare_buffer_info.kind`: a memfd.
pub const BUFSHARE_KIND_MEMFD: u32 = 1;
/// `bufshare_buffer_info.kind`: a dma-buf.
pub const BUFSHARE_KIND_DMABUF: u32 = 2;

uapi_struct! {
    /// `struct bufshare_buffer_info`: [`BUFSHARE_IOC_BUFFER_INFO`], the state
    /// of a buffer of this open file.
    pub struct BufshareBufferInfo {
        /// In: the buffer.
        pub id: u64,
        /// In: user pointer to room for the properties, or 0.
        pub props: u64,
        /// In: room at `props`; out: size of the properties.
        pub props_size: u32,
        /// Out: `BUFSHARE_KIND_*`.
        pub kind: u32,
        /// Out: size of the buffer.
        pub size: u64,
        /// Out: the last update's number (0 before the first).
        pub seqno: u64,
        /// Out: number of ranges the device got.
        pub nr_ranges: u32,
        /// Must be 0.
        pub reserved: u32,
        /// Out: the application name, NUL-terminated (C `char`).
        pub application: [u8; BUFSHARE_APP_LEN],
    }
}

/// `bufshare_app_binding.flags`: the user `uid` may register under the name.
pub const BUFSHARE_BIND_UID: u32 = 1 << 0;
/// `bufshare_app_binding.flags`: the members of the group `gid` may.
pub const BUFSHARE_BIND_GID: u32 = 1 << 1;

uapi_struct! {
    /// `struct bufshare_app_binding`: [`BUFSHARE_IOC_BIND_APPLICATION`] and
    /// [`BUFSHARE_IOC_GET_BINDING`], who may register buffers under an
    /// application name.
    pub struct BufshareAppBinding {
        /// The application name, NUL-terminated (C `char`).
        pub application: [u8; BUFSHARE_APP_LEN],
        /// `BUFSHARE_BIND_*`; neither removes the name's binding.
        pub flags: u32,
        /// With `BUFSHARE_BIND_UID`: the user, in the caller's namespace.
        pub uid: u32,
        /// With `BUFSHARE_BIND_GID`: the group, in the caller's namespace.
        pub gid: u32,
        /// Must be 0.
        pub reserved: u32,
    }
}

/// `BUFSHARE_IOC_REGISTER`: `_IOWR(BUFSHARE_IOCTL_BASE, 0x01, struct bufshare_register)`.
pub const BUFSHARE_IOC_REGISTER: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x01,
    core::mem::size_of::<BufshareRegister>(),
);

/// `BUFSHARE_IOC_UPDATE`: `_IOWR(BUFSHARE_IOCTL_BASE, 0x02, struct bufshare_update)`.
pub const BUFSHARE_IOC_UPDATE: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x02,
    core::mem::size_of::<BufshareUpdate>(),
);

/// `BUFSHARE_IOC_SET_PROPERTIES`:
/// `_IOW(BUFSHARE_IOCTL_BASE, 0x03, struct bufshare_set_properties)`.
pub const BUFSHARE_IOC_SET_PROPERTIES: u32 = iow(
    BUFSHARE_IOCTL_BASE,
    0x03,
    core::mem::size_of::<BufshareSetProperties>(),
);

/// `BUFSHARE_IOC_UNREGISTER`: `_IOW(BUFSHARE_IOCTL_BASE, 0x04, __u64)`; the
/// argument points to the buffer's id.
pub const BUFSHARE_IOC_UNREGISTER: u32 =
    iow(BUFSHARE_IOCTL_BASE, 0x04, core::mem::size_of::<u64>());

/// `BUFSHARE_IOC_BUFFER_INFO`:
/// `_IOWR(BUFSHARE_IOCTL_BASE, 0x05, struct bufshare_buffer_info)`.
pub const BUFSHARE_IOC_BUFFER_INFO: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x05,
    core::mem::size_of::<BufshareBufferInfo>(),
);

/// `BUFSHARE_IOC_BIND_APPLICATION`:
/// `_IOW(BUFSHARE_IOCTL_BASE, 0x06, struct bufshare_app_binding)`; needs
/// `CAP_SYS_ADMIN`.
pub const BUFSHARE_IOC_BIND_APPLICATION: u32 = iow(
    BUFSHARE_IOCTL_BASE,
    0x06,
    core::mem::size_of::<BufshareAppBinding>(),
);

/// `BUFSHARE_IOC_GET_BINDING`:
/// `_IOWR(BUFSHARE_IOCTL_BASE, 0x07, struct bufshare_app_binding)`.
pub const BUFSHARE_IOC_GET_BINDING: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x07,
    core::mem::size_of::<BufshareAppBinding>(),
);

/// `bufshare_unregister.flags`: wait until no host party holds the buffer's
/// memory any more.
pub const BUFSHARE_UNREGISTER_WAIT: u32 = 1 << 0;

uapi_struct! {
    /// `struct bufshare_unregister`: [`BUFSHARE_IOC_UNREGISTER_FLAGS`].
    pub struct BufshareUnregister {
        /// The buffer's id.
        pub id: u64,
        /// `BUFSHARE_UNREGISTER_*`.
        pub flags: u32,
        /// Must be 0.
        pub reserved: u32,
    }
}

uapi_struct! {
    /// `struct bufshare_consumers`: [`BUFSHARE_IOC_GET_CONSUMERS`], how many
    /// host consumers an application has.
    pub struct BufshareConsumers {
        /// In: the application name, NUL-terminated (C `char`).
        pub application: [u8; BUFSHARE_APP_LEN],
        /// Out: the number of consumers attached to it.
        pub consumers: u32,
        /// Must be 0.
        pub flags: u32,
    }
}

/// `bufshare_event.type`: the host is done with updates up to `seqno` of
/// buffer `id`.
pub const BUFSHARE_EVENT_RELEASED: u32 = 1;
/// `bufshare_event.type`: no host party holds the unregistered buffer `id`'s
/// memory any more.
pub const BUFSHARE_EVENT_FREED: u32 = 2;
/// `bufshare_event.type`: `consumers` consumers are attached to `application`.
pub const BUFSHARE_EVENT_CONSUMERS: u32 = 3;
/// `bufshare_event.type`: the host lost its buffers; the driver gives them
/// back.
pub const BUFSHARE_EVENT_LOST: u32 = 4;
/// `bufshare_event.type`: `seqno` events were dropped.
pub const BUFSHARE_EVENT_OVERFLOW: u32 = 5;

uapi_struct! {
    /// `struct bufshare_event`: one event, as read() returns them.
    pub struct BufshareEvent {
        /// `BUFSHARE_EVENT_*`.
        pub type_: u32,
        /// CONSUMERS: the number of consumers.
        pub consumers: u32,
        /// RELEASED, FREED: the buffer's id.
        pub id: u64,
        /// RELEASED: the update's number; OVERFLOW: the events dropped.
        pub seqno: u64,
        /// CONSUMERS: the application, NUL-terminated (C `char`).
        pub application: [u8; BUFSHARE_APP_LEN],
    }
}

/// `BUFSHARE_IOC_UNREGISTER_FLAGS`:
/// `_IOW(BUFSHARE_IOCTL_BASE, 0x08, struct bufshare_unregister)`.
pub const BUFSHARE_IOC_UNREGISTER_FLAGS: u32 = iow(
    BUFSHARE_IOCTL_BASE,
    0x08,
    core::mem::size_of::<BufshareUnregister>(),
);

/// `BUFSHARE_IOC_GET_CONSUMERS`:
/// `_IOWR(BUFSHARE_IOCTL_BASE, 0x09, struct bufshare_consumers)`.
pub const BUFSHARE_IOC_GET_CONSUMERS: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x09,
    core::mem::size_of::<BufshareConsumers>(),
);

/// `bufshare_import_event.type`: buffer `buffer_id` of the attachment's
/// source is imported as `import_id`.
pub const BUFSHARE_EVENT_IMPORT_ADDED: u32 = 16;
/// `bufshare_import_event.type`: the exporter updated import `import_id`.
pub const BUFSHARE_EVENT_IMPORT_UPDATED: u32 = 17;
/// `bufshare_import_event.type`: the exporter's buffer is gone.
pub const BUFSHARE_EVENT_IMPORT_REMOVED: u32 = 18;
/// `bufshare_import_event.type`: buffer `buffer_id` was not imported: no room.
pub const BUFSHARE_EVENT_IMPORT_NO_SPACE: u32 = 19;
/// `bufshare_import_event.type`: the attachment ended (device reset, lost
/// buffers).
pub const BUFSHARE_EVENT_IMPORT_DETACHED: u32 = 20;

/// `bufshare_import_event.flags`, `bufshare_import.flags`: the import may
/// be read, not written.
pub const BUFSHARE_IMPORT_READ_ONLY: u32 = 1 << 0;

uapi_struct! {
    /// `struct bufshare_import_event`: an event about an import, read in
    /// the place of a [`BufshareEvent`] (the same size, `type_` first).
    pub struct BufshareImportEvent {
        /// `BUFSHARE_EVENT_IMPORT_*`.
        pub type_: u32,
        /// The attachment's number.
        pub attachment: u32,
        /// The import's id.
        pub import_id: u64,
        /// ADDED, UPDATED: the exporter's last update.
        pub seqno: u64,
        /// ADDED, NO_SPACE: the buffer's size.
        pub size: u64,
        /// ADDED, NO_SPACE: the exporter's id of the buffer.
        pub buffer_id: u64,
        /// ADDED: `BUFSHARE_IMPORT_*`.
        pub flags: u32,
        /// 0.
        pub reserved: [u32; 11],
    }
}

uapi_struct! {
    /// `struct bufshare_attach`: [`BUFSHARE_IOC_ATTACH`], import the buffers
    /// a guest registers under an application.
    pub struct BufshareAttach {
        /// The exporting guest, as the host names it, NUL-terminated.
        pub source: [u8; BUFSHARE_NAME_LEN],
        /// The application, NUL-terminated.
        pub application: [u8; BUFSHARE_APP_LEN],
        /// Out: the attachment's number.
        pub attachment: u32,
        /// Must be 0.
        pub flags: u32,
    }
}

uapi_struct! {
    /// `struct bufshare_import`: [`BUFSHARE_IOC_IMPORT`], a dma-buf of an
    /// import.
    pub struct BufshareImport {
        /// In: the import's id.
        pub import_id: u64,
        /// Out: the buffer's size.
        pub size: u64,
        /// Out: the exporter's id of the buffer.
        pub buffer_id: u64,
        /// Out: the exporter's last update.
        pub seqno: u64,
        /// Out: the attachment's number.
        pub attachment: u32,
        /// Out: `BUFSHARE_IMPORT_*`.
        pub flags: u32,
        /// Out: the dma-buf's descriptor (close-on-exec).
        pub fd: i32,
        /// Must be 0.
        pub reserved: u32,
    }
}

uapi_struct! {
    /// `struct bufshare_import_release`: [`BUFSHARE_IOC_IMPORT_RELEASE`].
    pub struct BufshareImportRelease {
        /// The import's id.
        pub import_id: u64,
        /// The update the caller is done with (and those before).
        pub seqno: u64,
    }
}

/// `BUFSHARE_IOC_ATTACH`: `_IOWR(BUFSHARE_IOCTL_BASE, 0x0a, struct bufshare_attach)`.
pub const BUFSHARE_IOC_ATTACH: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x0a,
    core::mem::size_of::<BufshareAttach>(),
);

/// `BUFSHARE_IOC_DETACH`: `_IOW(BUFSHARE_IOCTL_BASE, 0x0b, __u32)`; the
/// argument points to the attachment's number.
pub const BUFSHARE_IOC_DETACH: u32 = iow(BUFSHARE_IOCTL_BASE, 0x0b, core::mem::size_of::<u32>());

/// `BUFSHARE_IOC_IMPORT`: `_IOWR(BUFSHARE_IOCTL_BASE, 0x0c, struct bufshare_import)`.
pub const BUFSHARE_IOC_IMPORT: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x0c,
    core::mem::size_of::<BufshareImport>(),
);

/// `BUFSHARE_IOC_IMPORT_RELEASE`:
/// `_IOW(BUFSHARE_IOCTL_BASE, 0x0d, struct bufshare_import_release)`.
pub const BUFSHARE_IOC_IMPORT_RELEASE: u32 = iow(
    BUFSHARE_IOCTL_BASE,
    0x0d,
    core::mem::size_of::<BufshareImportRelease>(),
);

/// `BUFSHARE_IOC_IMPORT_CLOSE`: `_IOW(BUFSHARE_IOCTL_BASE, 0x0e, __u64)`; the
/// argument points to the import's id.
pub const BUFSHARE_IOC_IMPORT_CLOSE: u32 =
    iow(BUFSHARE_IOCTL_BASE, 0x0e, core::mem::size_of::<u64>());

uapi_struct! {
    /// `struct bufshare_import_info`: [`BUFSHARE_IOC_IMPORT_INFO`], what the
    /// device says of an import now, with its buffer's properties.
    pub struct BufshareImportInfo {
        /// In: the import's id.
        pub import_id: u64,
        /// In: where the properties go, or 0.
        pub props: u64,
        /// In: the room at `props`; out: the properties' size.
        pub props_size: u32,
        /// Out: `BUFSHARE_IMPORT_*`.
        pub flags: u32,
        /// Out: the buffer's size.
        pub size: u64,
        /// Out: the exporter's id of the buffer.
        pub buffer_id: u64,
        /// Out: the exporter's last update given to the import.
        pub seqno: u64,
        /// Out: the attachment's number.
        pub attachment: u32,
        /// Must be 0.
        pub reserved: u32,
    }
}

/// `BUFSHARE_IOC_IMPORT_INFO`:
/// `_IOWR(BUFSHARE_IOCTL_BASE, 0x0f, struct bufshare_import_info)`.
pub const BUFSHARE_IOC_IMPORT_INFO: u32 = iowr(
    BUFSHARE_IOCTL_BASE,
    0x0f,
    core::mem::size_of::<BufshareImportInfo>(),
);
