// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! The ioctl interface of `/dev/bufshare`, mirrored from
//! `include/uapi/linux/bufshare.h`. Sizes and offsets are checked at
//! compile time against the header's layout.

use std::mem::{offset_of, size_of};

/// `BUFSHARE_NAME_LEN`: length of the device name in [`Info`].
pub const NAME_LEN: usize = 32;
/// `BUFSHARE_APP_LEN`: length of an application name, with its NUL.
pub const APP_LEN: usize = 64;

/// `BUFSHARE_UPDATE_RANGE`: `offset` and `length` are valid.
pub const UPDATE_RANGE: u32 = 1 << 0;
/// `BUFSHARE_UPDATE_RECT`: `x`, `y`, `width` and `height` are valid.
pub const UPDATE_RECT: u32 = 1 << 1;
/// `BUFSHARE_PROPS_MERGE`: keep the properties not named.
pub const PROPS_MERGE: u32 = 1 << 0;
/// `BUFSHARE_KIND_MEMFD`.
pub const KIND_MEMFD: u32 = 1;
/// `BUFSHARE_KIND_DMABUF`.
pub const KIND_DMABUF: u32 = 2;

/// `struct bufshare_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Info {
    pub version: u32,
    pub max_ranges: u32,
    pub max_props_size: u32,
    pub max_buffers: u32,
    pub max_buffer_size: u64,
    pub num_buffers: u64,
    pub num_commands: u64,
    pub features: u64,
    pub name: [u8; NAME_LEN],
}

/// `struct bufshare_register`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Register {
    pub fd: i32,
    pub flags: u32,
    pub offset: u64,
    pub length: u64,
    pub props: u64,
    pub props_size: u32,
    pub reserved: u32,
    pub application: [u8; APP_LEN],
    pub id: u64,
}

/// `struct bufshare_update`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Update {
    pub id: u64,
    pub seqno: u64,
    pub flags: u32,
    pub reserved: u32,
    pub offset: u64,
    pub length: u64,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// `struct bufshare_set_properties`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SetProperties {
    pub id: u64,
    pub props: u64,
    pub props_size: u32,
    pub flags: u32,
}

/// `struct bufshare_buffer_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BufferInfo {
    pub id: u64,
    pub props: u64,
    pub props_size: u32,
    pub kind: u32,
    pub size: u64,
    pub seqno: u64,
    pub nr_ranges: u32,
    pub reserved: u32,
    pub application: [u8; APP_LEN],
}

const _: () = {
    assert!(size_of::<Info>() == 80);
    assert!(offset_of!(Info, max_buffer_size) == 16);
    assert!(offset_of!(Info, features) == 40);
    assert!(offset_of!(Info, name) == 48);

    assert!(size_of::<Register>() == 112);
    assert!(offset_of!(Register, offset) == 8);
    assert!(offset_of!(Register, props) == 24);
    assert!(offset_of!(Register, props_size) == 32);
    assert!(offset_of!(Register, application) == 40);
    assert!(offset_of!(Register, id) == 104);

    assert!(size_of::<Update>() == 56);
    assert!(offset_of!(Update, flags) == 16);
    assert!(offset_of!(Update, offset) == 24);
    assert!(offset_of!(Update, x) == 40);
    assert!(offset_of!(Update, height) == 52);

    assert!(size_of::<SetProperties>() == 24);
    assert!(offset_of!(SetProperties, props_size) == 16);
    assert!(offset_of!(SetProperties, flags) == 20);

    assert!(size_of::<BufferInfo>() == 112);
    assert!(offset_of!(BufferInfo, props_size) == 16);
    assert!(offset_of!(BufferInfo, kind) == 20);
    assert!(offset_of!(BufferInfo, size) == 24);
    assert!(offset_of!(BufferInfo, seqno) == 32);
    assert!(offset_of!(BufferInfo, nr_ranges) == 40);
    assert!(offset_of!(BufferInfo, application) == 48);
};

/// `BUFSHARE_IOCTL_BASE`.
pub const IOCTL_BASE: u32 = 0xB5;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// The kernel's `_IOC(dir, type, nr, size)` (x86 and most others).
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (IOCTL_BASE << 8) | nr
}

/// `BUFSHARE_IOC_GET_INFO`: `_IOR(BASE, 0x00, struct bufshare_info)`.
pub const IOC_GET_INFO: u32 = ioc(IOC_READ, 0x00, size_of::<Info>());
/// `BUFSHARE_IOC_REGISTER`: `_IOWR(BASE, 0x01, struct bufshare_register)`.
pub const IOC_REGISTER: u32 = ioc(IOC_READ | IOC_WRITE, 0x01, size_of::<Register>());
/// `BUFSHARE_IOC_UPDATE`: `_IOWR(BASE, 0x02, struct bufshare_update)`.
pub const IOC_UPDATE: u32 = ioc(IOC_READ | IOC_WRITE, 0x02, size_of::<Update>());
/// `BUFSHARE_IOC_SET_PROPERTIES`: `_IOW(BASE, 0x03, struct bufshare_set_properties)`.
pub const IOC_SET_PROPERTIES: u32 = ioc(IOC_WRITE, 0x03, size_of::<SetProperties>());
/// `BUFSHARE_IOC_UNREGISTER`: `_IOW(BASE, 0x04, __u64)`.
pub const IOC_UNREGISTER: u32 = ioc(IOC_WRITE, 0x04, size_of::<u64>());
/// `BUFSHARE_IOC_BUFFER_INFO`: `_IOWR(BASE, 0x05, struct bufshare_buffer_info)`.
pub const IOC_BUFFER_INFO: u32 = ioc(IOC_READ | IOC_WRITE, 0x05, size_of::<BufferInfo>());

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers the C macros give (computed by hand from `_IOC`).
    #[test]
    fn ioctl_numbers() {
        assert_eq!(IOC_GET_INFO, 0x8050_b500);
        assert_eq!(IOC_REGISTER, 0xc070_b501);
        assert_eq!(IOC_UPDATE, 0xc038_b502);
        assert_eq!(IOC_SET_PROPERTIES, 0x4018_b503);
        assert_eq!(IOC_UNREGISTER, 0x4008_b504);
        assert_eq!(IOC_BUFFER_INFO, 0xc070_b505);
    }
}
