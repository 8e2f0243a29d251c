// SPDX-License-Identifier: GPL-2.0

//! Commands as the device reads them.

use super::*;

/// A command as the device reads it: a header, then the command's fields, little-endian.
pub(crate) struct Wire(pub(crate) KVec<u8>);

impl Wire {
    pub(crate) fn new(cmd_type: u32, capacity: usize) -> Result<Self> {
        let hdr_len = size_of::<uapi::virtio_bufshare_cmd_hdr>();
        let mut wire = Wire(KVec::with_capacity(hdr_len + capacity, GFP_KERNEL)?);
        wire.u32(cmd_type)?;
        // flags: none are defined.
        wire.u32(0)?;
        Ok(wire)
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result {
        Ok(self.0.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?)
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result {
        Ok(self.0.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?)
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result {
        Ok(self.0.extend_from_slice(b, GFP_KERNEL)?)
    }

    /// Pads with zeroes to a multiple of 8 bytes, counting from the end of the header.
    pub(crate) fn pad8(&mut self) -> Result {
        while self.0.len() % 8 != 0 {
            self.0.push(0, GFP_KERNEL)?;
        }
        Ok(())
    }

    pub(crate) fn ranges(&mut self, ranges: &[Range]) -> Result {
        for r in ranges {
            self.u64(r.addr)?;
            self.u64(r.len)?;
        }
        Ok(())
    }
}

/// Reads the little-endian `u32` at `off` in `buf`.
pub(crate) fn le32(buf: &[u8], off: usize) -> Option<u32> {
    let bytes = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads the little-endian `u64` at `off` in `buf`.
pub(crate) fn le64(buf: &[u8], off: usize) -> Option<u64> {
    let bytes = buf.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}
