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
pub const BUFSHARE_IOCTL_BASE: u8 = 0xB5;

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
