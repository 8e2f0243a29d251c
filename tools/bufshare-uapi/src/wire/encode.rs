// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The bytes of commands, for the programs that play the driver's part:
//! the backend's tests and self-tests.

use vm_memory::ByteValued;

use super::{
    VirtioBufshareCmdAddRanges, VirtioBufshareCmdHdr, VirtioBufshareCmdRegister,
    VirtioBufshareRange, VIRTIO_BUFSHARE_APP_LEN, VIRTIO_BUFSHARE_CMD_ADD_RANGES,
    VIRTIO_BUFSHARE_CMD_REGISTER,
};

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
        hdr: VirtioBufshareCmdHdr {
            type_: VIRTIO_BUFSHARE_CMD_ADD_RANGES.into(),
            flags: 0.into(),
        },
        buffer_id: id.into(),
        first: first.into(),
        nr_ranges: u32::try_from(ranges.len()).unwrap_or(u32::MAX).into(),
    };
    [cmd.as_slice(), &ranges_bytes(ranges)].concat()
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
                hdr: VirtioBufshareCmdHdr {
                    type_: VIRTIO_BUFSHARE_CMD_REGISTER.into(),
                    flags: 0.into(),
                },
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

    #[test]
    fn register_bytes() {
        let bytes = RegisterCommand::complete(7, "app", &[(0x1000, 0x10), (0x3000, 0x20)])
            .props(b"a=1\0")
            .to_bytes();
        let mut expected = Vec::new();
        for word in [0x100u32, 0] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.extend_from_slice(&0x30u64.to_le_bytes());
        for word in [2u32, 2, 4, 0] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        let mut app = [0u8; 64];
        app[..3].copy_from_slice(b"app");
        expected.extend_from_slice(&app);
        expected.extend_from_slice(b"a=1\0\0\0\0\0");
        for word in [0x1000u64, 0x10, 0x3000, 0x20] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
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
        let mut expected = Vec::new();
        for word in [0x101u32, 0] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        expected.extend_from_slice(&9u64.to_le_bytes());
        for word in [3u32, 1] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        for word in [0x2000u64, 0x40] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        assert_eq!(add_ranges_bytes(9, 3, &[(0x2000, 0x40)]), expected);
    }
}
