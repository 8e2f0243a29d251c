// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Mirror of `include/uapi/linux/virtio_bufshare.h`: the wire protocol
//! between the driver and the device. Everything is little-endian and of
//! fixed size.

use vm_memory::{Le32, Le64};

/// The device id, reserved in virtio_ids.h as `VIRTIO_ID_DMABUF`.
pub const VIRTIO_BUFSHARE_DEVICE_ID: u32 = 37;

/// Index of the one virtqueue: the driver's commands and the device's answers.
pub const VIRTIO_BUFSHARE_VQ_CMD: u16 = 0;
/// Number of virtqueues.
pub const VIRTIO_BUFSHARE_NUM_VQS: usize = 1;

/// Protocol version the device reports in GET_INFO.
pub const VIRTIO_BUFSHARE_VERSION: u32 = 1;

/// Command `GET_INFO` (`virtio_bufshare_cmd_hdr.type`).
pub const VIRTIO_BUFSHARE_CMD_GET_INFO: u32 = 0x0001;

/// Status: success.
pub const VIRTIO_BUFSHARE_S_OK: u32 = 0x0000;
/// Status: the command is not known to the device.
pub const VIRTIO_BUFSHARE_S_UNSUPPORTED: u32 = 0x0001;
/// Status: the command is malformed (bad size, bad flags, bad field).
pub const VIRTIO_BUFSHARE_S_INVALID: u32 = 0x0002;
/// Status: the device failed to carry the command out.
pub const VIRTIO_BUFSHARE_S_DEVICE_ERROR: u32 = 0x0003;

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
        /// Reserved, zero.
        pub reserved: Le32,
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

impl VirtioBufshareRespHdr {
    /// A header with `status` and a zero reserved field.
    pub fn with_status(status: u32) -> Self {
        Self {
            status: status.into(),
            reserved: 0.into(),
        }
    }
}
