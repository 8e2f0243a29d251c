// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! Guest applications' side of virtio-bufshare: a safe interface to the
//! ioctls of `/dev/bufshare` (`include/uapi/linux/bufshare.h`).
//!
//! ```no_run
//! use bufshare::{Device, Memfd, Properties, Update};
//! use std::os::fd::AsFd;
//!
//! # fn main() -> bufshare::Result<()> {
//! let dev = Device::open()?;
//! let memfd = Memfd::create_sealed("frame", 64 * 64 * 4)?;
//! let mut map = memfd.map()?;
//! map.as_mut_slice().fill(0x80);
//! let props = Properties::new().with("width", "64")?.with("height", "64")?;
//! let buf = dev.register(memfd.as_fd(), 0, memfd.len(), "framebuffer", &props)?;
//! buf.update(Update::rect(0, 0, 64, 64))?;
//! println!("{:?}", buf.info()?);
//! buf.unregister()?;
//! # Ok(())
//! # }
//! ```

mod device;
mod error;
mod import;
mod memfd;
mod props;
pub mod uapi;

pub use device::{Buffer, BufferInfo, Device, DeviceInfo, Event, Kind, Rect, Update, DEFAULT_PATH};
pub use error::{Error, Result};
pub use import::{Import, ImportInfo, ImportMapping};
pub use memfd::{Mapping, Memfd, SIZE_SEALS};
pub use props::{is_valid_name, is_valid_value, Properties, NAME_MAX};
