// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The `crc32` property: CRC-32 of a frame's bytes, for `--verify`.
//!
//! See the crate documentation for what the guest computes.

use thiserror::Error as ThisError;

use crate::frame::{FrameError, FrameSpec};

/// Name of the property holding the frame's CRC-32.
pub const PROP_CRC32: &str = "crc32";

/// Why a frame fails verification.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
pub enum VerifyError {
    /// The buffer has no `crc32` property.
    #[error("property \"crc32\" is missing")]
    Missing,
    /// The `crc32` property is not 8 lowercase hex digits.
    #[error("property \"crc32\" is {0:?}, not 8 lowercase hex digits")]
    Malformed(String),
    /// The frame cannot be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame's CRC-32 is not the property's.
    #[error("CRC-32 mismatch: property says {expected:08x}, frame has {actual:08x}")]
    Mismatch {
        /// The property's value.
        expected: u32,
        /// The frame's CRC-32.
        actual: u32,
    },
}

/// CRC-32 of `bytes`: IEEE 802.3 (reflected polynomial 0xedb88320, initial
/// value and final XOR 0xffffffff), as zlib's `crc32(0, bytes, len)`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The property form of a CRC-32: 8 lowercase hex digits.
pub fn format_crc32(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Parses a `crc32` property value: exactly 8 lowercase hex digits.
pub fn parse_crc32(value: &[u8]) -> Result<u32, VerifyError> {
    let malformed = || VerifyError::Malformed(String::from_utf8_lossy(value).into_owned());
    if value.len() != 8 || !value.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(malformed());
    }
    let digits = std::str::from_utf8(value).map_err(|_| malformed())?;
    u32::from_str_radix(digits, 16).map_err(|_| malformed())
}

/// Checks the frame `spec` describes in `buffer` (the whole buffer) against
/// `expected`, the value of the buffer's `crc32` property if it has one.
/// Returns the CRC-32 when they match.
pub fn verify(
    spec: &FrameSpec,
    buffer: &[u8],
    expected: Option<&[u8]>,
) -> Result<u32, VerifyError> {
    let expected = parse_crc32(expected.ok_or(VerifyError::Missing)?)?;
    let actual = crc32(spec.frame_bytes(buffer)?);
    if actual != expected {
        return Err(VerifyError::Mismatch { expected, actual });
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"a"), 0xe8b7_be43);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414f_a339
        );
        assert_eq!(crc32(&[0; 32]), 0x190a_55ad);
        assert_eq!(crc32(&[0xff; 32]), 0xff6c_ab0b);
        assert_eq!(format_crc32(crc32(b"123456789")), "cbf43926");
        assert_eq!(format_crc32(0x1), "00000001");
    }

    #[test]
    fn parse() {
        assert_eq!(parse_crc32(b"cbf43926"), Ok(0xcbf4_3926));
        assert_eq!(parse_crc32(b"00000000"), Ok(0));
        assert_eq!(parse_crc32(b"ffffffff"), Ok(u32::MAX));
        for bad in [
            &b""[..],
            b"cbf4392",
            b"0cbf43926",
            b"CBF43926",
            b"0xcbf439",
            b"cbf4392g",
            b" cbf4392",
            b"cbf4392\xff",
        ] {
            assert_eq!(
                parse_crc32(bad),
                Err(VerifyError::Malformed(
                    String::from_utf8_lossy(bad).into_owned()
                ))
            );
        }
    }

    #[test]
    fn verify_frame() {
        // 2x2 XRGB8888 at offset 4 with a stride of 12: the frame is the 24
        // bytes from 4, padding included; bytes outside do not count.
        let mut buffer: Vec<u8> = (0..40).collect();
        let spec = FrameSpec {
            width: 2,
            height: 2,
            stride: 12,
            format: Format::Xrgb8888,
            offset: 4,
        };
        let crc = crc32(&buffer[4..28]);
        let prop = format_crc32(crc);
        assert_eq!(verify(&spec, &buffer, Some(prop.as_bytes())), Ok(crc));
        buffer[0] = 0xaa;
        buffer[28] = 0xaa;
        assert_eq!(verify(&spec, &buffer, Some(prop.as_bytes())), Ok(crc));
        // Padding counts.
        buffer[4 + 8] ^= 1;
        assert_eq!(
            verify(&spec, &buffer, Some(prop.as_bytes())),
            Err(VerifyError::Mismatch {
                expected: crc,
                actual: crc32(&buffer[4..28])
            })
        );
        assert_eq!(verify(&spec, &buffer, None), Err(VerifyError::Missing));
        assert_eq!(
            verify(&spec, &buffer, Some(b"xyz")),
            Err(VerifyError::Malformed("xyz".into()))
        );
        assert_eq!(
            verify(&spec, &buffer[..27], Some(prop.as_bytes())),
            Err(VerifyError::Frame(FrameError::TooLarge {
                offset: 4,
                len: 24,
                size: 27
            }))
        );
        assert_eq!(
            VerifyError::Mismatch {
                expected: 0xcbf4_3926,
                actual: 1
            }
            .to_string(),
            "CRC-32 mismatch: property says cbf43926, frame has 00000001"
        );
    }
}
