// SPDX-License-Identifier: GPL-2.0

//! Virtio buffer sharing driver.
//!
//! Binds the virtio buffer sharing device (`VIRTIO_ID_DMABUF`), through which guest applications
//! share buffers in guest memory with programs on the host. Applications talk to the driver
//! through the misc device `/dev/bufshare`: they register a memfd or a dma-buf they already have,
//! with properties, and the driver describes its memory to the device, range by range, so that
//! the host reads and writes it in place. Commands go on the device's one virtqueue; the driver
//! checks every answer.
//!
//! A buffer belongs to the open file that registered it. Closing the file, however the process
//! ends, unregisters every buffer it still has.
//!
//! See `Documentation/virtio/virtio-bufshare.rst` for the device and
//! `Documentation/userspace-api/bufshare.rst` for the ioctls.

use core::{
    mem::{
        offset_of,
        size_of, //
    },
    ptr::NonNull,
};
use kernel::{
    c_str,
    device::Core,
    dma::DataDirection,
    dma_buf::{
        DmaBuf,
        MappedAttachment, //
    },
    fs::File,
    ioctl::{
        _IOR,
        _IOW,
        _IOWR, //
    },
    memfd::{
        self,
        DmaMappedFolios,
        PinnedFolios, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    new_condvar, new_mutex, new_spinlock_irq,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    seq_file::SeqFile,
    seq_print,
    sync::{
        aref::ARef,
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
        CondVar,
        CondVarTimeoutResult,
        Mutex,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    time::msecs_to_jiffies,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    types::Opaque,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
    virtio::{
        self,
        DmaTarget, //
    },
};

mod buffer;
mod cmdq;
mod commands;
mod device;
mod driver;
mod file;
mod props;

use buffer::*;
use cmdq::*;
use commands::*;
use device::*;
use driver::*;
use file::*;
use props::{
    application,
    read_props, //
};

/// How long a caller waits for the device to complete a command.
pub(crate) const COMMAND_TIMEOUT_MS: u32 = 10_000;
/// Set in [`Shared::generation`] once the device's generation is known.
pub(crate) const GENERATION_KNOWN: u64 = 1 << 32;
/// How many times in a row the driver registers its buffers again for a device that keeps losing
/// them before it lets the operation that found out go on.
pub(crate) const MAX_RECOVERIES: u32 = 3;

/// Room for the largest answer the driver expects.
pub(crate) const RESP_MAX: usize = 128;

pub(crate) const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

pub(crate) const APP_LEN: usize = uapi::VIRTIO_BUFSHARE_APP_LEN as usize;
pub(crate) const PROP_NAME_MAX: usize = uapi::VIRTIO_BUFSHARE_PROP_NAME_MAX as usize;
pub(crate) const RANGES_PER_CMD: usize = uapi::VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD as usize;
pub(crate) const RANGE_SIZE: usize = size_of::<uapi::virtio_bufshare_range>();
pub(crate) const RESP_HDR_LEN: usize = size_of::<uapi::virtio_bufshare_resp_hdr>();

kernel::module_virtio_driver! {
    type: BufshareDriver,
    name: "virtio_bufshare",
    authors: ["virtio-bufshare developers"],
    description: "Virtio buffer sharing driver",
    license: "GPL",
    imports_ns: ["DMA_BUF"],
    params: {
        max_buffers_per_file: u32 {
            default: 1024,
            description: "Most buffers one open file may register",
        },
        max_bytes_per_file: u64 {
            default: 1 << 30,
            description: "Most bytes of buffers one open file may register",
        },
        max_buffers: u32 {
            default: 4096,
            description: "Most buffers on one device (the device's own limit applies too)",
        },
        max_props_size: u32 {
            default: 4096,
            description: "Most bytes of properties per buffer (the device's own limit applies too)",
        },
    },
}
