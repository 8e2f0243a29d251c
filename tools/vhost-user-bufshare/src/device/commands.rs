// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The buffer commands (with `VIRTIO_BUFSHARE_F_BUFFERS`): REGISTER,
//! ADD_RANGES, UPDATE, SET_PROPERTIES and UNREGISTER.
//!
//! The guest is not trusted: every field is checked before it is used, and
//! nothing is allocated from a guest value before that value is checked
//! against the device's limits. Each command answers a bare
//! `virtio_bufshare_resp_hdr`; `Err` holds the status of a refused one.
//!
//! For each command the fixed part is checked first (length, then the
//! buffer's existence, `S_NO_BUFFER`), then the rest (`S_INVALID`). Any
//! `S_INVALID` answer to an ADD_RANGES that names an incomplete buffer drops
//! that buffer, and so does a REGISTER whose ranges are refused (it never
//! enters the table).

use std::fmt;
use std::mem::size_of;

use bufshare_consumer::{ByteRange, Rect};
use bufshare_uapi::{
    VirtioBufshareCmdAddRanges, VirtioBufshareCmdRegister, VirtioBufshareCmdSetProperties,
    VirtioBufshareCmdUnregister, VirtioBufshareCmdUpdate, VirtioBufshareRange,
    VIRTIO_BUFSHARE_CMD_ADD_RANGES, VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD, VIRTIO_BUFSHARE_S_INVALID,
    VIRTIO_BUFSHARE_S_NO_BUFFER, VIRTIO_BUFSHARE_S_NO_SPACE, VIRTIO_BUFSHARE_UPDATE_F_RANGE,
    VIRTIO_BUFSHARE_UPDATE_F_RECT,
};
use log::debug;
use vm_memory::GuestMemoryMmap;

use super::{read_obj, BufshareDevice};
use crate::buffers::{resolve_range, Buffer, Segment, UpdateInfo};
use crate::props::{parse_application, parse_properties};

const RANGE_SIZE: u64 = size_of::<VirtioBufshareRange>() as u64;

/// Logs why a command is refused (rate-limited: the guest decides how
/// often), and returns `status`.
fn refuse(status: u32, why: fmt::Arguments<'_>) -> u32 {
    crate::guest_warn!("{why}");
    status
}

/// Refused as malformed.
fn invalid(why: fmt::Arguments<'_>) -> u32 {
    refuse(VIRTIO_BUFSHARE_S_INVALID, why)
}

/// Refused because no buffer has that id.
fn no_buffer(cmd: &str, id: u64) -> u32 {
    refuse(
        VIRTIO_BUFSHARE_S_NO_BUFFER,
        format_args!("{cmd}: no buffer {id}"),
    )
}

/// The fixed part of a command, `T`, at the start of `request`, and what
/// follows it.
fn fixed<'a, T: vm_memory::ByteValued + Default>(
    cmd: &str,
    request: &'a [u8],
) -> Result<(T, &'a [u8]), u32> {
    read_obj::<T>(request).ok_or_else(|| {
        invalid(format_args!(
            "{cmd}: {} bytes, shorter than its {} bytes",
            request.len(),
            size_of::<T>()
        ))
    })
}

/// Checks that the variable part of a command, `rest`, has exactly
/// `expected` bytes (computed in 64 bits from checked fields).
fn exact_len(cmd: &str, rest: &[u8], expected: u64) -> Result<(), u32> {
    if rest.len() as u64 != expected {
        return Err(invalid(format_args!(
            "{cmd}: {} bytes after the command, {expected} expected",
            rest.len()
        )));
    }
    Ok(())
}

/// Ranges checked and resolved: segments and the sum of their lengths.
struct Resolved {
    segments: Vec<Segment>,
    bytes: u64,
}

/// Checks and resolves the ranges in `bytes` (a whole number of them, at
/// most [`VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD`]) of a buffer of `size` bytes
/// that has `received` bytes of ranges already; `last` says whether they end
/// the buffer, whose ranges must then add up to `size`.
fn resolve_ranges(
    cmd: &str,
    mem: Option<&GuestMemoryMmap>,
    bytes: &[u8],
    size: u64,
    received: u64,
    last: bool,
) -> Result<Resolved, u32> {
    let mut segments = Vec::new();
    let mut total = received;
    for (i, chunk) in bytes.chunks_exact(RANGE_SIZE as usize).enumerate() {
        // chunks_exact gives whole ranges: the default is never used.
        let range = read_obj::<VirtioBufshareRange>(chunk)
            .map(|(range, _)| range)
            .unwrap_or_default();
        let (addr, len) = (range.addr.to_native(), range.len.to_native());
        total = match total.checked_add(len) {
            Some(total) if total <= size => total,
            _ => {
                return Err(invalid(format_args!(
                    "{cmd}: range {i} ({len:#x} bytes) goes past the buffer's {size} bytes"
                )))
            }
        };
        let Some(mem) = mem else {
            return Err(invalid(format_args!("{cmd}: no guest memory yet")));
        };
        let offset = total - len;
        let more = resolve_range(mem, offset, addr, len)
            .map_err(|e| invalid(format_args!("{cmd}: range {i}: {e}")))?;
        segments.extend(more);
    }
    if last && total != size {
        return Err(invalid(format_args!(
            "{cmd}: the ranges add up to {total} bytes, not {size}"
        )));
    }
    Ok(Resolved {
        segments,
        bytes: total - received,
    })
}

impl BufshareDevice {
    /// REGISTER: a new buffer, with its first ranges.
    pub(super) fn register(&mut self, request: &[u8]) -> Result<(), u32> {
        const CMD: &str = "REGISTER";
        let (cmd, rest) = fixed::<VirtioBufshareCmdRegister>(CMD, request)?;
        let id = cmd.buffer_id.to_native();
        let size = cmd.size.to_native();
        let num_ranges = cmd.num_ranges.to_native();
        let nr_ranges = cmd.nr_ranges.to_native();
        let props_size = cmd.props_size.to_native();
        let limits = self.limits;

        if cmd.reserved.to_native() != 0 {
            return Err(invalid(format_args!("{CMD} {id}: reserved field not 0")));
        }
        if id == 0 {
            return Err(invalid(format_args!("{CMD}: buffer id 0")));
        }
        if self.state.lock().buffers.contains(id) {
            return Err(invalid(format_args!(
                "{CMD}: buffer {id} already registered"
            )));
        }
        if size == 0 || size > limits.max_buffer_size {
            return Err(invalid(format_args!(
                "{CMD} {id}: size {size} not in 1..={}",
                limits.max_buffer_size
            )));
        }
        if num_ranges == 0 || num_ranges > limits.max_ranges {
            return Err(invalid(format_args!(
                "{CMD} {id}: {num_ranges} ranges, not in 1..={}",
                limits.max_ranges
            )));
        }
        if nr_ranges > num_ranges || nr_ranges > VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD {
            return Err(invalid(format_args!(
                "{CMD} {id}: {nr_ranges} ranges in the command, of {num_ranges}"
            )));
        }
        if props_size > limits.max_props_size {
            return Err(invalid(format_args!(
                "{CMD} {id}: {props_size} bytes of properties, more than {}",
                limits.max_props_size
            )));
        }
        let padded = u64::from(props_size).next_multiple_of(8);
        exact_len(CMD, rest, padded + u64::from(nr_ranges) * RANGE_SIZE)?;
        // Lengths checked: these fit in `rest`.
        let (props, rest) = rest.split_at(props_size as usize);
        let (padding, ranges) = rest.split_at((padded - u64::from(props_size)) as usize);
        if padding.iter().any(|&b| b != 0) {
            return Err(invalid(format_args!(
                "{CMD} {id}: padding after the properties not 0"
            )));
        }
        let props = parse_properties(props, limits.max_props_size as usize)
            .map_err(|e| invalid(format_args!("{CMD} {id}: {e}")))?;
        let application = parse_application(&cmd.application)
            .map_err(|e| invalid(format_args!("{CMD} {id}: {e}")))?;

        let mut state = self.state.lock();
        if state.buffers.len() >= limits.max_buffers as usize {
            return Err(refuse(
                VIRTIO_BUFSHARE_S_NO_SPACE,
                format_args!(
                    "{CMD} {id}: already {} buffers registered",
                    state.buffers.len()
                ),
            ));
        }
        let mem = state.memory();
        let last = nr_ranges == num_ranges;
        // Refused ranges: the buffer never enters the table.
        let resolved = resolve_ranges(CMD, mem.as_deref(), ranges, size, 0, last)?;
        let mut buffer = Buffer::new(id, application, size, num_ranges, props);
        buffer.push_ranges(resolved.segments, nr_ranges, resolved.bytes);
        debug!(
            "{CMD} {id}: {size} bytes, {nr_ranges}/{num_ranges} ranges, application {}",
            buffer.application
        );
        state.buffers.insert(buffer);
        state.announce_added(id);
        Ok(())
    }

    /// ADD_RANGES: more ranges of an incomplete buffer. On `S_INVALID`,
    /// [`BufshareDevice::process`] drops the buffer
    /// ([`BufshareDevice::drop_incomplete`]).
    pub(super) fn add_ranges(&mut self, request: &[u8]) -> Result<(), u32> {
        const CMD: &str = "ADD_RANGES";
        let (cmd, ranges) = fixed::<VirtioBufshareCmdAddRanges>(CMD, request)?;
        let id = cmd.buffer_id.to_native();
        let first = cmd.first.to_native();
        let nr_ranges = cmd.nr_ranges.to_native();

        let mut state = self.state.lock();
        let mem = state.memory();
        let Some(buffer) = state.buffers.get_mut(id) else {
            return Err(no_buffer(CMD, id));
        };
        if buffer.complete {
            return Err(invalid(format_args!("{CMD}: buffer {id} is complete")));
        }
        if first != buffer.ranges {
            return Err(invalid(format_args!(
                "{CMD} {id}: first range {first}, {} expected",
                buffer.ranges
            )));
        }
        if nr_ranges == 0 || nr_ranges > VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD {
            return Err(invalid(format_args!(
                "{CMD} {id}: {nr_ranges} ranges, not in 1..={VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD}"
            )));
        }
        let end = u64::from(first) + u64::from(nr_ranges);
        if end > u64::from(buffer.num_ranges) {
            return Err(invalid(format_args!(
                "{CMD} {id}: ranges {first}..{end} of {}",
                buffer.num_ranges
            )));
        }
        exact_len(CMD, ranges, u64::from(nr_ranges) * RANGE_SIZE)?;
        let last = end == u64::from(buffer.num_ranges);
        let resolved = resolve_ranges(
            CMD,
            mem.as_deref(),
            ranges,
            buffer.size,
            buffer.received,
            last,
        )?;
        buffer.push_ranges(resolved.segments, nr_ranges, resolved.bytes);
        debug!("{CMD} {id}: {}/{} ranges", buffer.ranges, buffer.num_ranges);
        state.announce_added(id);
        Ok(())
    }

    /// Drops the incomplete buffer that `request` names if it is an
    /// ADD_RANGES (long enough to name one): what an `S_INVALID` answer to
    /// it means.
    pub(super) fn drop_incomplete(&mut self, request: &[u8]) {
        // The header and the buffer id, as UNREGISTER has them.
        let Some((cmd, _)) = read_obj::<VirtioBufshareCmdUnregister>(request) else {
            return;
        };
        if cmd.hdr.type_.to_native() != VIRTIO_BUFSHARE_CMD_ADD_RANGES {
            return;
        }
        let id = cmd.buffer_id.to_native();
        if self.state.lock().buffers.remove_incomplete(id) {
            crate::guest_warn!("ADD_RANGES {id}: incomplete buffer dropped");
        }
    }

    /// UPDATE: the content of a complete buffer changed.
    pub(super) fn update(&mut self, request: &[u8]) -> Result<(), u32> {
        const CMD: &str = "UPDATE";
        let (cmd, rest) = fixed::<VirtioBufshareCmdUpdate>(CMD, request)?;
        exact_len(CMD, rest, 0)?;
        let id = cmd.buffer_id.to_native();
        let seqno = cmd.seqno.to_native();
        let flags = cmd.flags.to_native();

        let mut state = self.state.lock();
        let Some(buffer) = state.buffers.get_mut(id) else {
            return Err(no_buffer(CMD, id));
        };
        if !buffer.complete {
            return Err(invalid(format_args!("{CMD}: buffer {id} is incomplete")));
        }
        if cmd.reserved.to_native() != 0 {
            return Err(invalid(format_args!("{CMD} {id}: reserved field not 0")));
        }
        let known = VIRTIO_BUFSHARE_UPDATE_F_RANGE | VIRTIO_BUFSHARE_UPDATE_F_RECT;
        if flags & !known != 0 {
            return Err(invalid(format_args!("{CMD} {id}: flags {flags:#x}")));
        }
        if seqno <= buffer.seqno {
            return Err(invalid(format_args!(
                "{CMD} {id}: seqno {seqno} after {}",
                buffer.seqno
            )));
        }
        let mut info = UpdateInfo {
            seqno,
            range: None,
            rect: None,
        };
        if flags & VIRTIO_BUFSHARE_UPDATE_F_RANGE != 0 {
            let (offset, length) = (cmd.offset.to_native(), cmd.length.to_native());
            let inside = offset
                .checked_add(length)
                .is_some_and(|end| end <= buffer.size);
            if length == 0 || !inside {
                return Err(invalid(format_args!(
                    "{CMD} {id}: range {offset}+{length} not in the buffer's {} bytes",
                    buffer.size
                )));
            }
            info.range = Some(ByteRange {
                offset,
                len: length,
            });
        }
        if flags & VIRTIO_BUFSHARE_UPDATE_F_RECT != 0 {
            let (x, y) = (cmd.x.to_native(), cmd.y.to_native());
            let (width, height) = (cmd.width.to_native(), cmd.height.to_native());
            let (Some(right), Some(bottom)) = (x.checked_add(width), y.checked_add(height)) else {
                return Err(invalid(format_args!(
                    "{CMD} {id}: rectangle {width}x{height}+{x}+{y} overflows"
                )));
            };
            if width == 0 || height == 0 {
                return Err(invalid(format_args!(
                    "{CMD} {id}: empty rectangle {width}x{height}"
                )));
            }
            let props = &buffer.props;
            if let (Some(w), Some(h)) = (props.get_u64("width"), props.get_u64("height")) {
                if u64::from(right) > w || u64::from(bottom) > h {
                    return Err(invalid(format_args!(
                        "{CMD} {id}: rectangle {width}x{height}+{x}+{y} not in {w}x{h}"
                    )));
                }
            }
            info.rect = Some(Rect {
                x,
                y,
                width,
                height,
            });
        }
        buffer.seqno = seqno;
        debug!("{CMD} {id}: seqno {seqno}");
        state.announce_update(id, &info);
        drop(state);
        self.note_update(id, seqno);
        Ok(())
    }

    /// SET_PROPERTIES: replaces the properties of a buffer.
    pub(super) fn set_properties(&mut self, request: &[u8]) -> Result<(), u32> {
        const CMD: &str = "SET_PROPERTIES";
        let (cmd, props) = fixed::<VirtioBufshareCmdSetProperties>(CMD, request)?;
        let id = cmd.buffer_id.to_native();
        let props_size = cmd.props_size.to_native();
        let max = self.limits.max_props_size;

        let mut state = self.state.lock();
        let Some(buffer) = state.buffers.get_mut(id) else {
            return Err(no_buffer(CMD, id));
        };
        if cmd.reserved.to_native() != 0 {
            return Err(invalid(format_args!("{CMD} {id}: reserved field not 0")));
        }
        if props_size > max {
            return Err(invalid(format_args!(
                "{CMD} {id}: {props_size} bytes of properties, more than {max}"
            )));
        }
        exact_len(CMD, props, u64::from(props_size))?;
        buffer.props = parse_properties(props, max as usize)
            .map_err(|e| invalid(format_args!("{CMD} {id}: {e}")))?;
        debug!("{CMD} {id}: {} properties", buffer.props.len());
        state.announce_properties(id);
        Ok(())
    }

    /// UNREGISTER: the buffer, complete or not, is gone.
    pub(super) fn unregister(&mut self, request: &[u8]) -> Result<(), u32> {
        const CMD: &str = "UNREGISTER";
        let (cmd, rest) = fixed::<VirtioBufshareCmdUnregister>(CMD, request)?;
        exact_len(CMD, rest, 0)?;
        let id = cmd.buffer_id.to_native();
        let mut state = self.state.lock();
        if state.remove(id).is_none() {
            return Err(no_buffer(CMD, id));
        }
        // The consumers were told (REMOVE): who holds it now holds it
        // until it lets go.
        let free = state.holders.unregistered(id);
        drop(state);
        debug!("{CMD} {id}{}", if free { "" } else { ": still held" });
        self.note_unregistered(id, free);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
