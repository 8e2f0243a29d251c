// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The bytes of commands, for the programs that play the driver's part:
//! the backend's tests and self-tests.

use vm_memory::ByteValued;

use super::{
    VirtioBufshareCmdAddRanges, VirtioBufshareCmdHdr, VirtioBufshareCmdRegister,
    VirtioBufshareCmdSetProperties, VirtioBufshareCmdUnregister, VirtioBufshareCmdUpdate,
    VirtioBufshareRange, VIRTIO_BUFSHARE_APP_LEN, VIRTIO_BUFSHARE_CMD_ADD_RANGES,
    VIRTIO_BUFSHARE_CMD_REGISTER, VIRTIO_BUFSHARE_CMD_SET_PROPERTIES,
    VIRTIO_BUFSHARE_CMD_UNREGISTER, VIRTIO_BUFSHARE_CMD_UPDATE, VIRTIO_BUFSHARE_UPDATE_F_RANGE,
    VIRTIO_BUFSHARE_UPDATE_F_RECT,
};

/// The header of a command of type `type_`, without flags.
fn hdr(type_: u32) -> VirtioBufshareCmdHdr {
    VirtioBufshareCmdHdr {
        type_: type_.into(),
        flags: 0.into(),
    }
}

/// The bytes of `ranges`, `(addr, len)` pairs, as the
/// [`VirtioBufshareRange`]s that follow a REGISTER or an ADD_RANGES.
pub fn ranges_bytes(ranges: &[(u64, u64)]) -> Vec<u8> {
    ranges
        .iter()
        .flat_map(|&(addr, len)| {
            VirtioBufshareRange {
                addr: addr.into(),
                len: len.into(),
            }
            .as_slice()
            .to_vec()
        })
        .collect()
}

/// The bytes of an ADD_RANGES of buffer `id`: `ranges`, the first of which
/// is the buffer's range number `first`.
pub fn add_ranges_bytes(id: u64, first: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
    let cmd = VirtioBufshareCmdAddRanges {
        hdr: hdr(VIRTIO_BUFSHARE_CMD_ADD_RANGES),
        buffer_id: id.into(),
        first: first.into(),
        nr_ranges: u32::try_from(ranges.len()).unwrap_or(u32::MAX).into(),
    };
    [cmd.as_slice(), &ranges_bytes(ranges)].concat()
}

/// An UPDATE of buffer `id` numbered `seqno`, naming the bytes that changed
/// (`range`: `(offset, length)`) and the pixels (`rect`: `[x, y, width,
/// height]`) if given; without either, the whole buffer changed. The
/// command is its bytes ([`ByteValued::as_slice`]); its fields are public,
/// for the tests that make it malformed.
pub fn update_command(
    id: u64,
    seqno: u64,
    range: Option<(u64, u64)>,
    rect: Option<[u32; 4]>,
) -> VirtioBufshareCmdUpdate {
    let mut cmd = VirtioBufshareCmdUpdate {
        hdr: hdr(VIRTIO_BUFSHARE_CMD_UPDATE),
        buffer_id: id.into(),
        seqno: seqno.into(),
        ..Default::default()
    };
    let mut flags = 0;
    if let Some((offset, length)) = range {
        flags |= VIRTIO_BUFSHARE_UPDATE_F_RANGE;
        cmd.offset = offset.into();
        cmd.length = length.into();
    }
    if let Some([x, y, width, height]) = rect {
        flags |= VIRTIO_BUFSHARE_UPDATE_F_RECT;
        cmd.x = x.into();
        cmd.y = y.into();
        cmd.width = width.into();
        cmd.height = height.into();
    }
    cmd.flags = flags.into();
    cmd
}

/// The bytes of a SET_PROPERTIES of buffer `id`: its properties become
/// `props`.
pub fn set_properties_bytes(id: u64, props: &[u8]) -> Vec<u8> {
    let cmd = VirtioBufshareCmdSetProperties {
        hdr: hdr(VIRTIO_BUFSHARE_CMD_SET_PROPERTIES),
        buffer_id: id.into(),
        props_size: u32::try_from(props.len()).unwrap_or(u32::MAX).into(),
        reserved: 0.into(),
    };
    [cmd.as_slice(), props].concat()
}

/// The bytes of an UNREGISTER of buffer `id`.
pub fn unregister_bytes(id: u64) -> Vec<u8> {
    VirtioBufshareCmdUnregister {
        hdr: hdr(VIRTIO_BUFSHARE_CMD_UNREGISTER),
        buffer_id: id.into(),
    }
    .as_slice()
    .to_vec()
}

/// A REGISTER command, to be turned into bytes ([`RegisterCommand::to_bytes`]),
/// possibly after making it malformed on purpose.
#[derive(Clone, Debug)]
pub struct RegisterCommand {
    /// The fixed part, every field of which [`RegisterCommand::new`] and
    /// [`RegisterCommand::props`] set as the protocol wants.
    pub cmd: VirtioBufshareCmdRegister,
    /// The properties.
    pub props: Vec<u8>,
    /// The bytes between the properties and the ranges; `None`: the zero
    /// padding to a multiple of 8 bytes that the protocol wants.
    pub padding: Option<Vec<u8>>,
    /// The ranges that come with the command, `(addr, len)`.
    pub ranges: Vec<(u64, u64)>,
}

impl RegisterCommand {
    /// A REGISTER of buffer `id` of `application` (its first
    /// [`VIRTIO_BUFSHARE_APP_LEN`] bytes, NUL-padded), of `size` bytes in
    /// `num_ranges` ranges, of which `ranges` come with the command; no
    /// properties.
    pub fn new(
        id: u64,
        application: &str,
        size: u64,
        num_ranges: u32,
        ranges: &[(u64, u64)],
    ) -> Self {
        let mut app = [0; VIRTIO_BUFSHARE_APP_LEN];
        let len = application.len().min(VIRTIO_BUFSHARE_APP_LEN);
        app[..len].copy_from_slice(&application.as_bytes()[..len]);
        let nr_ranges = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
        Self {
            cmd: VirtioBufshareCmdRegister {
                hdr: hdr(VIRTIO_BUFSHARE_CMD_REGISTER),
                buffer_id: id.into(),
                size: size.into(),
                num_ranges: num_ranges.into(),
                nr_ranges: nr_ranges.into(),
                props_size: 0.into(),
                reserved: 0.into(),
                application: app,
            },
            props: Vec::new(),
            padding: None,
            ranges: ranges.to_vec(),
        }
    }

    /// A REGISTER of a complete buffer of `ranges`, all of them in the
    /// command: its size is the sum of their lengths.
    pub fn complete(id: u64, application: &str, ranges: &[(u64, u64)]) -> Self {
        let size = ranges.iter().map(|&(_, len)| len).sum();
        let num_ranges = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
        Self::new(id, application, size, num_ranges, ranges)
    }

    /// The same command with the properties `props` (and their size).
    pub fn props(mut self, props: &[u8]) -> Self {
        self.props = props.to_vec();
        self.cmd.props_size = u32::try_from(props.len()).unwrap_or(u32::MAX).into();
        self
    }

    /// The command's bytes: the fixed part, the properties, the padding and
    /// the ranges.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.cmd.as_slice().to_vec();
        out.extend_from_slice(&self.props);
        match &self.padding {
            Some(padding) => out.extend_from_slice(padding),
            None => out.resize(
                out.len() + self.props.len().next_multiple_of(8) - self.props.len(),
                0,
            ),
        }
        out.extend(ranges_bytes(&self.ranges));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The little-endian bytes of 32-bit fields.
    fn le32(fields: &[u32]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    /// The little-endian bytes of 64-bit fields.
    fn le64(fields: &[u64]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    /// The bytes every buffer command starts with: the header of a command
    /// of type `type_`, then the buffer's id.
    fn start(type_: u32, id: u64) -> Vec<u8> {
        [le32(&[type_, 0]), le64(&[id])].concat()
    }

    #[test]
    fn register_bytes() {
        let bytes = RegisterCommand::complete(7, "app", &[(0x1000, 0x10), (0x3000, 0x20)])
            .props(b"a=1\0")
            .to_bytes();
        let mut app = [0u8; 64];
        app[..3].copy_from_slice(b"app");
        let expected = [
            start(0x100, 7),
            le64(&[0x30]),
            le32(&[2, 2, 4, 0]),
            app.to_vec(),
            b"a=1\0\0\0\0\0".to_vec(),
            le64(&[0x1000, 0x10, 0x3000, 0x20]),
        ]
        .concat();
        assert_eq!(bytes, expected);

        let mut cmd = RegisterCommand::new(1, &"x".repeat(70), 0x100, 3, &[]).props(b"b=2\0");
        assert_eq!(cmd.cmd.application, [b'x'; 64]);
        assert_eq!(cmd.cmd.num_ranges.to_native(), 3);
        assert_eq!(cmd.cmd.nr_ranges.to_native(), 0);
        assert_eq!(cmd.to_bytes().len(), 104 + 8);
        cmd.padding = Some(vec![1]);
        assert_eq!(cmd.to_bytes()[104..], *b"b=2\0\x01");
    }

    #[test]
    fn add_ranges() {
        let expected = [start(0x101, 9), le32(&[3, 1]), le64(&[0x2000, 0x40])].concat();
        assert_eq!(add_ranges_bytes(9, 3, &[(0x2000, 0x40)]), expected);
    }

    #[test]
    fn update() {
        let header = [start(0x102, 4), le64(&[9])].concat();
        let both = update_command(4, 9, Some((0x10, 0x20)), Some([1, 2, 3, 4]));
        let range = update_command(4, 9, Some((0x10, 0x20)), None);
        let rect = update_command(4, 9, None, Some([1, 2, 3, 4]));
        let whole = update_command(4, 9, None, None);
        for (cmd, flags, range, rect) in [
            (both, 3, [0x10, 0x20], [1, 2, 3, 4]),
            (range, 1, [0x10, 0x20], [0; 4]),
            (rect, 2, [0; 2], [1, 2, 3, 4]),
            (whole, 0, [0; 2], [0; 4]),
        ] {
            let expected = [header.clone(), le32(&[flags, 0]), le64(&range), le32(&rect)].concat();
            assert_eq!(cmd.as_slice(), expected, "flags {flags}");
        }
    }

    #[test]
    fn set_properties_and_unregister() {
        let expected = [start(0x103, 5), le32(&[4, 0]), b"a=1\0".to_vec()].concat();
        assert_eq!(set_properties_bytes(5, b"a=1\0"), expected);
        assert_eq!(unregister_bytes(6), start(0x104, 6));
    }
}
