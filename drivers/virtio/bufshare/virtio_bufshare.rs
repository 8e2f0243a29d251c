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
//! With `VIRTIO_BUFSHARE_F_EVENTS` the device has a second queue, on which it says when the host
//! is done with an update (RELEASED) and with an unregistered buffer's memory (FREED), when
//! consumers come and go, and when it lost its buffers. The driver keeps an unregistered
//! buffer's memory pinned and mapped until FREED, and queues the events for the open files,
//! which read them (and poll for them).
//!
//! See `Documentation/driver-api/virtio/virtio_bufshare.rst` for the device and
//! `Documentation/userspace-api/bufshare.rst` for the ioctls.
//!
//! # Modules
//!
//! - `driver`: probe, and the misc device that comes with a bound device.
//! - `file`: an open `/dev/bufshare`, one function per ioctl.
//! - `device`: the device's buffers and the operations on them; `device::recovery` runs them,
//!   and brings the buffers back when the device lost them; `device::events` handles the
//!   device's events and queues them for the open files.
//! - `cmdq`: the command queue: sending commands, waiting for and checking their answers.
//! - `commands`: one type per command and answer of the wire protocol.
//! - `buffer`: a buffer and its memory; `props`: properties and application names.
//!
//! # Locking
//!
//! Locks are taken in this order, and none is held across a copy to or from user space:
//!
//! 1. `Owner::usage` (a mutex, one per open file): held by a registration from the check of the
//!    file's limits until the buffer counts against them.
//! 2. `Buffer::state` (a mutex, one per buffer): held across the command that changes the buffer
//!    (UPDATE, SET_PROPERTIES, a registration), so that such commands reach the device in order.
//! 3. `Cmdq::vqs` (a spinlock, taken with interrupts off, as the interrupt handler takes it):
//!    held to queue a command, kick the device and take answers off the ring. Callers wait for
//!    their answer on a condition variable that releases it.
//!
//! `BufshareDevice::buffers` (a mutex) guards the buffer tree, the buffers being drained and the
//! count of buffer operations in flight; it is only held for short spells, never across a command
//! and never together with the locks above but `Owner::usage`, which may be held when it is
//! taken.
//!
//! `BufshareDevice::owners` (a mutex, the open files) may be held when an open file's event queue
//! (`FileEvents::queue`, a mutex) is taken; neither is held together with any other lock, and
//! the queue is let go before its records are copied to user space. Events are handled by a work
//! item, which the device's shutdown flushes once no event can come.

mod apps;
mod buffer;
mod cmdq;
mod commands;
mod device;
mod driver;
mod file;
mod props;

kernel::module_virtio_driver! {
    type: driver::BufshareDriver,
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
        bound_applications_only: bool {
            default: false,
            description: "Refuse registrations under application names that are bound to nobody",
        },
        events: bool {
            default: true,
            description: "Use the device's event queue if it has one (VIRTIO_BUFSHARE_F_EVENTS)",
        },
    },
}
