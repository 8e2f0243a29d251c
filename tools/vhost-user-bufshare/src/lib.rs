// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! vhost-user backend of the virtio-bufshare device.
//!
//! * [`device`]: the device model, which turns commands into answers;
//! * [`buffers`]: the buffers the driver registered, resolved to guest
//!   memory, and [`props`]: their properties and application names;
//! * [`inspect`]: the inspect socket, through which host tools see the
//!   buffers (and the client `bufshare-inspect` uses);
//! * [`consumer`]: the consumer socket, which hands the buffers to host
//!   programs as file descriptors, with their updates;
//! * [`backend`]: the vhost-user glue around it (features, configuration
//!   space, the command virtqueue);
//! * [`daemon`]: the serving loop of the `vhost-user-bufshare` program;
//! * [`import`]: guest-to-guest import (`VIRTIO_BUFSHARE_F_IMPORT`): who
//!   may import what, and the attachments and imports of every guest, and
//!   [`shmem`]: the SHMEM_MAP and SHMEM_UNMAP requests that map the
//!   exporters' memory into the importers' shared memory regions;
//! * [`fault`]: fault injection, to test the guest driver against a device
//!   that misbehaves;
//! * [`ratelimit`]: what guests make the backend log, rate-limited.

pub mod backend;
pub mod buffers;
pub mod consumer;
pub mod daemon;
pub mod device;
pub mod events;
pub mod fault;
pub mod holders;
pub mod import;
pub mod inspect;
pub mod props;
pub mod ratelimit;
pub mod shmem;
pub mod socket;
