// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! DRM pixel formats: fourcc codes as `include/uapi/drm/drm_fourcc.h`
//! defines them, and the layouts this tool converts.

use std::fmt;

use thiserror::Error as ThisError;

/// `fourcc_code(a, b, c, d)` of `drm_fourcc.h`: `a | b << 8 | c << 16 | d << 24`.
pub const fn fourcc_code(a: u8, b: u8, c: u8, d: u8) -> u32 {
    (a as u32) | (b as u32) << 8 | (c as u32) << 16 | (d as u32) << 24
}

/// `DRM_FORMAT_XRGB8888`, `'XR24'`.
pub const DRM_FORMAT_XRGB8888: u32 = fourcc_code(b'X', b'R', b'2', b'4');
/// `DRM_FORMAT_ARGB8888`, `'AR24'`.
pub const DRM_FORMAT_ARGB8888: u32 = fourcc_code(b'A', b'R', b'2', b'4');
/// `DRM_FORMAT_RGB565`, `'RG16'`.
pub const DRM_FORMAT_RGB565: u32 = fourcc_code(b'R', b'G', b'1', b'6');
/// `DRM_FORMAT_NV12`, `'NV12'`.
pub const DRM_FORMAT_NV12: u32 = fourcc_code(b'N', b'V', b'1', b'2');

/// A pixel format this tool can convert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `[31:0] x:R:G:B 8:8:8:8` little endian: bytes B, G, R, X.
    Xrgb8888,
    /// `[31:0] A:R:G:B 8:8:8:8` little endian: bytes B, G, R, A.
    Argb8888,
    /// `[15:0] R:G:B 5:6:5` little endian.
    Rgb565,
    /// 2 planes: `height` rows of Y (1 byte a pixel), then `height / 2` rows
    /// of interleaved Cb, Cr (1 pair for 2x2 pixels), both with the same
    /// stride. BT.601, limited range.
    Nv12,
}

/// Why a format value is refused.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
pub enum FormatError {
    /// The value is empty.
    #[error("empty format")]
    Empty,
    /// Neither a number, a fourcc nor a known name.
    #[error("format {0:?} is not a number, a 4-character code or a known format name")]
    Invalid(String),
    /// A valid code of a format this tool does not handle.
    #[error("unsupported format {}", FourCc(*.0))]
    Unsupported(u32),
}

impl Format {
    /// Every supported format.
    pub const ALL: [Format; 4] = [
        Format::Xrgb8888,
        Format::Argb8888,
        Format::Rgb565,
        Format::Nv12,
    ];

    /// The DRM fourcc code.
    pub const fn fourcc(self) -> u32 {
        match self {
            Format::Xrgb8888 => DRM_FORMAT_XRGB8888,
            Format::Argb8888 => DRM_FORMAT_ARGB8888,
            Format::Rgb565 => DRM_FORMAT_RGB565,
            Format::Nv12 => DRM_FORMAT_NV12,
        }
    }

    /// The format of a DRM fourcc code.
    pub fn from_fourcc(code: u32) -> Result<Format, FormatError> {
        Format::ALL
            .into_iter()
            .find(|f| f.fourcc() == code)
            .ok_or(FormatError::Unsupported(code))
    }

    /// The name without `DRM_FORMAT_`, e.g. `XRGB8888`.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Xrgb8888 => "XRGB8888",
            Format::Argb8888 => "ARGB8888",
            Format::Rgb565 => "RGB565",
            Format::Nv12 => "NV12",
        }
    }

    /// Bytes per pixel of the first plane (Y for NV12).
    pub const fn bytes_per_pixel(self) -> u32 {
        match self {
            Format::Xrgb8888 | Format::Argb8888 => 4,
            Format::Rgb565 => 2,
            Format::Nv12 => 1,
        }
    }

    /// Whether the format has an alpha channel (converted to RGBA).
    pub const fn has_alpha(self) -> bool {
        matches!(self, Format::Argb8888)
    }

    /// Parses a `format` property value:
    ///
    /// * a decimal number (`875713112`) or a `0x` hex number
    ///   (`0x34325258`): the fourcc code;
    /// * 4 characters (`XR24`): the code's bytes, first character in the
    ///   low byte, case-sensitive as in `drm_fourcc.h`;
    /// * a format name as in `DRM_FORMAT_<name>` (`XRGB8888`), with or
    ///   without the prefix, case-insensitive.
    ///
    /// A 4-digit value is read as a decimal number.
    pub fn parse(value: &str) -> Result<Format, FormatError> {
        if value.is_empty() {
            return Err(FormatError::Empty);
        }
        let invalid = || FormatError::Invalid(value.to_owned());
        if let Some(hex) = value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"))
        {
            if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            let code = u32::from_str_radix(hex, 16).map_err(|_| invalid())?;
            return Format::from_fourcc(code);
        }
        if value.bytes().all(|c| c.is_ascii_digit()) {
            let code = value.parse::<u32>().map_err(|_| invalid())?;
            return Format::from_fourcc(code);
        }
        let name = value
            .strip_prefix("DRM_FORMAT_")
            .or_else(|| value.strip_prefix("drm_format_"))
            .unwrap_or(value);
        if let Some(f) = Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
        {
            return Ok(f);
        }
        if let [a, b, c, d] = *value.as_bytes() {
            return Format::from_fourcc(fourcc_code(a, b, c, d));
        }
        Err(invalid())
    }

    /// Parses a `format` property value given as bytes (see [`Format::parse`]).
    pub fn parse_bytes(value: &[u8]) -> Result<Format, FormatError> {
        match std::str::from_utf8(value) {
            Ok(s) => Format::parse(s),
            Err(_) => Err(FormatError::Invalid(
                String::from_utf8_lossy(value).into_owned(),
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::parse(s)
    }
}

/// Displays a fourcc code as `'XR24' (0x34325258)`, or only the number when
/// its bytes are not printable ASCII.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FourCc(pub u32);

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.to_le_bytes();
        if bytes.iter().all(|c| (0x20..0x7f).contains(c)) {
            let s: String = bytes.iter().map(|&c| char::from(c)).collect();
            write!(f, "'{s}' ({:#010x})", self.0)
        } else {
            write!(f, "{:#010x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_drm_fourcc_h() {
        // Values of the macros in include/uapi/drm/drm_fourcc.h.
        assert_eq!(DRM_FORMAT_XRGB8888, 0x3432_5258);
        assert_eq!(DRM_FORMAT_ARGB8888, 0x3432_5241);
        assert_eq!(DRM_FORMAT_RGB565, 0x3631_4752);
        assert_eq!(DRM_FORMAT_NV12, 0x3231_564e);
        for f in Format::ALL {
            assert_eq!(Format::from_fourcc(f.fourcc()), Ok(f));
        }
    }

    #[test]
    fn parse_decimal_and_hex() {
        assert_eq!(Format::parse("875713112"), Ok(Format::Xrgb8888));
        assert_eq!(Format::parse("0x34325258"), Ok(Format::Xrgb8888));
        assert_eq!(Format::parse("0X34325241"), Ok(Format::Argb8888));
        assert_eq!(
            Format::parse("0x3631474e"),
            Err(FormatError::Unsupported(0x3631_474e))
        );
        assert_eq!(Format::parse("0x36314752"), Ok(Format::Rgb565));
        assert_eq!(Format::parse("842094158"), Ok(Format::Nv12));
        assert_eq!(Format::parse("0"), Err(FormatError::Unsupported(0)));
        // A 4-digit value is a number, not a fourcc.
        assert_eq!(Format::parse("1234"), Err(FormatError::Unsupported(1234)));
    }

    #[test]
    fn parse_fourcc_strings() {
        assert_eq!(Format::parse("XR24"), Ok(Format::Xrgb8888));
        assert_eq!(Format::parse("AR24"), Ok(Format::Argb8888));
        assert_eq!(Format::parse("RG16"), Ok(Format::Rgb565));
        assert_eq!(Format::parse("NV12"), Ok(Format::Nv12));
        // Fourccs are case-sensitive: 'xr24' is another code.
        assert_eq!(
            Format::parse("xr24"),
            Err(FormatError::Unsupported(fourcc_code(
                b'x', b'r', b'2', b'4'
            )))
        );
        assert_eq!(
            Format::parse("YUYV"),
            Err(FormatError::Unsupported(fourcc_code(
                b'Y', b'U', b'Y', b'V'
            )))
        );
    }

    #[test]
    fn parse_names() {
        assert_eq!(Format::parse("XRGB8888"), Ok(Format::Xrgb8888));
        assert_eq!(Format::parse("argb8888"), Ok(Format::Argb8888));
        assert_eq!(Format::parse("DRM_FORMAT_RGB565"), Ok(Format::Rgb565));
        assert_eq!(Format::parse("nv12"), Ok(Format::Nv12));
        assert_eq!("XRGB8888".parse::<Format>(), Ok(Format::Xrgb8888));
        assert_eq!(Format::parse_bytes(b"XR24"), Ok(Format::Xrgb8888));
    }

    #[test]
    fn parse_invalid() {
        assert_eq!(Format::parse(""), Err(FormatError::Empty));
        for bad in [
            "0x",
            "0xZZ",
            "0x+1",
            "0x123456789",
            "99999999999",
            "XR2",
            "BGR888X",
            " XR24",
            "-1",
            "12a",
        ] {
            assert_eq!(
                Format::parse(bad),
                Err(FormatError::Invalid(bad.to_owned()))
            );
        }
        assert_eq!(
            Format::parse_bytes(b"\xffR24"),
            Err(FormatError::Invalid("\u{fffd}R24".to_owned()))
        );
    }

    #[test]
    fn display() {
        assert_eq!(Format::Xrgb8888.to_string(), "XRGB8888");
        assert_eq!(FourCc(DRM_FORMAT_NV12).to_string(), "'NV12' (0x3231564e)");
        assert_eq!(FourCc(1).to_string(), "0x00000001");
        assert_eq!(
            FormatError::Unsupported(fourcc_code(b'Y', b'U', b'Y', b'V')).to_string(),
            "unsupported format 'YUYV' (0x56595559)"
        );
    }
}
