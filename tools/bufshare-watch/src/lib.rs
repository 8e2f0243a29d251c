// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The frame handling of `bufshare-watch`, a host tool that shows the events
//! of the virtio-bufshare backend's consumer socket
//! (`Documentation/host/bufshare-consumer.rst`) and dumps the guests'
//! framebuffers as PNG files.
//!
//! # Frames
//!
//! A buffer holds a frame when its properties say where and how
//! ([`FrameSpec::from_props`]):
//!
//! | property | value | |
//! |----------|-------|-|
//! | `width`  | pixels, 1 or more | required |
//! | `height` | pixels, 1 or more | required |
//! | `format` | DRM format: `XRGB8888`, `ARGB8888`, `RGB565`, `NV12`; or its fourcc (`XR24`, `AR24`, `RG16`, `NV12`); or the fourcc code as a decimal or `0x` hex number | required |
//! | `stride` | bytes from a row to the next, at least `width` times the bytes per pixel | default: exactly that |
//! | `offset` | byte of the buffer where the frame starts | default: 0 |
//! | `crc32`  | CRC-32 of the frame, 8 lowercase hex digits | for `--verify` |
//!
//! Numbers are decimal, or hex after `0x`. Pixel layouts are DRM's
//! (`include/uapi/drm/drm_fourcc.h`), little endian: XRGB8888 is the bytes
//! B, G, R, X; ARGB8888 B, G, R, A; RGB565 a 16-bit `R:G:B 5:6:5`; NV12 a
//! plane of `height` rows of Y, then `height / 2` rows of Cb, Cr pairs (one
//! for each 2x2 pixels), with the same stride, BT.601 limited range; its
//! width and height must be even.
//!
//! The frame is the `stride * height` bytes from `offset` (plus `stride *
//! height / 2` for NV12's CbCr plane), padding at the ends of rows included;
//! all of them must be inside the buffer.
//!
//! # Checksum
//!
//! With `--verify`, a frame's bytes are checked against the buffer's `crc32`
//! property: CRC-32 IEEE 802.3 (reflected polynomial 0xedb88320, initial
//! value and final XOR 0xffffffff: zlib's `crc32()`, Python's
//! `zlib.crc32()`) of exactly the frame's bytes as defined above, padding
//! included, written as 8 lowercase hex digits (`"123456789"` gives
//! `cbf43926`). In a guest program, with zlib:
//!
//! ```c
//! size_t len = (size_t)stride * height;          /* * 3 / 2 for NV12 */
//! uLong crc = crc32(0L, (const Bytef *)buf + offset, len);
//! snprintf(value, sizeof(value), "%08lx", crc);  /* then crc32=<value> */
//! ```
//!
//! # Events
//!
//! [`watch::run`] connects to the consumer socket, subscribes, and prints
//! a line per event ([`lines`]); on UPDATE it dumps and verifies the frames
//! of buffers whose properties describe one.
//!
//! # Use
//!
//! ```no_run
//! # fn f(get: impl Fn(&str) -> Option<&'static [u8]>, buffer: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use bufshare_watch::{checksum, dump, FrameSpec};
//!
//! let spec = FrameSpec::from_props(&get, buffer.len() as u64)?;
//! checksum::verify(&spec, buffer, get(checksum::PROP_CRC32))?;
//! let path = dump::dump("/tmp/frames".as_ref(), "guest", 1, 7, &spec, buffer)?;
//! # Ok(()) }
//! ```

pub mod checksum;
pub mod dump;
pub mod format;
pub mod frame;
pub mod lines;
pub mod watch;

pub use format::Format;
pub use frame::{convert, ColorType, FrameError, FrameSpec, Image};
