// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Where a frame is in a buffer, from the buffer's properties, and its
//! conversion to 8-bit RGB or RGBA.

use thiserror::Error as ThisError;

use crate::format::{Format, FormatError};

/// Property names [`FrameSpec::from_props`] reads.
pub mod prop {
    /// Width in pixels, 1 or more.
    pub const WIDTH: &str = "width";
    /// Height in pixels, 1 or more.
    pub const HEIGHT: &str = "height";
    /// Bytes from the start of a row to the start of the next one; optional,
    /// `width` times the bytes per pixel by default.
    pub const STRIDE: &str = "stride";
    /// Pixel format ([`crate::format::Format::parse`]).
    pub const FORMAT: &str = "format";
    /// Byte of the buffer where the frame starts; optional, 0 by default.
    pub const OFFSET: &str = "offset";
}

/// Why a frame cannot be described or read.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
pub enum FrameError {
    /// A required property is missing.
    #[error("property {0:?} is missing")]
    Missing(&'static str),
    /// A property is not a decimal or `0x` hex number in range.
    #[error("property {name:?} is {value:?}, not a number of at most {bits} bits")]
    BadNumber {
        /// Property name.
        name: &'static str,
        /// Its value (bytes that are not UTF-8 replaced).
        value: String,
        /// Width of the number it should be.
        bits: u32,
    },
    /// `width`, `height` or `stride` is 0.
    #[error("property {0:?} is 0")]
    Zero(&'static str),
    /// The `format` property is not a supported format.
    #[error("property \"format\": {0}")]
    Format(#[from] FormatError),
    /// A row of `width` pixels is longer than `stride`.
    #[error("stride {stride} is less than {min} bytes ({width} pixels of {format})")]
    StrideTooSmall {
        /// The stride.
        stride: u32,
        /// Width in pixels.
        width: u32,
        /// The format.
        format: Format,
        /// Bytes of a row: width times bytes per pixel.
        min: u64,
    },
    /// A subsampled format (NV12) with an odd width or height.
    #[error("{format} needs an even width and height, not {width}x{height}")]
    OddSize {
        /// The format.
        format: Format,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The frame's size or end does not fit in 64 bits, or its pixels in
    /// memory.
    #[error("frame size overflows")]
    Overflow,
    /// The frame does not end inside the buffer.
    #[error("frame of {len} bytes at offset {offset} does not fit in a buffer of {size} bytes")]
    TooLarge {
        /// Start of the frame in the buffer.
        offset: u64,
        /// Length of the frame, padding included.
        len: u64,
        /// Size of the buffer.
        size: u64,
    },
}

/// A frame in a buffer: its geometry, format and place.
///
/// The frame is the `len()` bytes from `offset` ([`FrameSpec::frame_len`]):
/// `height` rows of `stride` bytes, then, for NV12, `height / 2` rows of
/// `stride` bytes of interleaved Cb, Cr. Bytes of a row past its pixels are
/// padding and ignored by [`convert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameSpec {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from the start of a row to the start of the next one.
    pub stride: u32,
    /// Pixel format.
    pub format: Format,
    /// Byte of the buffer where the frame starts.
    pub offset: u64,
}

/// Pixel layout of an [`Image`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColorType {
    /// 3 bytes a pixel: R, G, B.
    Rgb,
    /// 4 bytes a pixel: R, G, B, A (straight alpha: A as the buffer has it).
    Rgba,
}

impl ColorType {
    /// Bytes per pixel.
    pub const fn channels(self) -> usize {
        match self {
            ColorType::Rgb => 3,
            ColorType::Rgba => 4,
        }
    }
}

/// 8-bit pixels, rows top to bottom without padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Layout of a pixel.
    pub color: ColorType,
    /// `width * height * color.channels()` bytes.
    pub data: Vec<u8>,
}

/// Parses a number property: decimal, or hex after `0x`.
fn parse_number(name: &'static str, value: &[u8], bits: u32) -> Result<u64, FrameError> {
    let bad = || FrameError::BadNumber {
        name,
        value: String::from_utf8_lossy(value).into_owned(),
        bits,
    };
    let (digits, radix) = match value {
        [b'0', b'x' | b'X', hex @ ..] => (hex, 16),
        _ => (value, 10),
    };
    if digits.is_empty() || !digits.iter().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    // Only ASCII digits from here on.
    let digits = std::str::from_utf8(digits).map_err(|_| bad())?;
    let n = u64::from_str_radix(digits, radix).map_err(|_| bad())?;
    if bits < 64 && n >> bits != 0 {
        return Err(bad());
    }
    Ok(n)
}

fn parse_u32(name: &'static str, value: &[u8]) -> Result<u32, FrameError> {
    parse_number(name, value, 32).map(|n| n as u32)
}

impl FrameSpec {
    /// Reads the frame of a buffer of `size` bytes from its properties,
    /// looked up with `get` (for example `|name| props.get(name)`), and
    /// validates it ([`FrameSpec::validate`]).
    ///
    /// `width`, `height` and `format` are required; `stride` is `width`
    /// times the bytes per pixel and `offset` 0 when missing. Numbers are
    /// decimal, or hex after `0x`; `width`, `height` and `stride` have at
    /// most 32 bits, `offset` 64.
    pub fn from_props<'a>(
        get: impl Fn(&str) -> Option<&'a [u8]>,
        size: u64,
    ) -> Result<FrameSpec, FrameError> {
        let required = |name: &'static str| get(name).ok_or(FrameError::Missing(name));
        let width = parse_u32(prop::WIDTH, required(prop::WIDTH)?)?;
        let height = parse_u32(prop::HEIGHT, required(prop::HEIGHT)?)?;
        let format = Format::parse_bytes(required(prop::FORMAT)?)?;
        let stride = match get(prop::STRIDE) {
            Some(value) => parse_u32(prop::STRIDE, value)?,
            None => width
                .checked_mul(format.bytes_per_pixel())
                .ok_or(FrameError::Overflow)?,
        };
        let offset = match get(prop::OFFSET) {
            Some(value) => parse_number(prop::OFFSET, value, 64)?,
            None => 0,
        };
        let spec = FrameSpec {
            width,
            height,
            stride,
            format,
            offset,
        };
        spec.validate(size)?;
        Ok(spec)
    }

    /// Bytes of the frame from `offset`, padding included: `stride *
    /// height`, plus `stride * height / 2` for NV12's CbCr plane.
    pub fn frame_len(&self) -> Result<u64, FrameError> {
        let plane = u64::from(self.stride)
            .checked_mul(u64::from(self.height))
            .ok_or(FrameError::Overflow)?;
        match self.format {
            Format::Nv12 => plane.checked_add(plane / 2).ok_or(FrameError::Overflow),
            _ => Ok(plane),
        }
    }

    /// Checks that the frame can be read from a buffer of `size` bytes:
    /// width, height and stride not 0, even width and height for NV12,
    /// a stride that holds a row, no overflow, and the frame's
    /// [`frame_len`](FrameSpec::frame_len) bytes from `offset` inside the
    /// buffer. Returns the frame's length.
    pub fn validate(&self, size: u64) -> Result<u64, FrameError> {
        if self.width == 0 {
            return Err(FrameError::Zero(prop::WIDTH));
        }
        if self.height == 0 {
            return Err(FrameError::Zero(prop::HEIGHT));
        }
        if self.stride == 0 {
            return Err(FrameError::Zero(prop::STRIDE));
        }
        if self.format == Format::Nv12
            && (!self.width.is_multiple_of(2) || !self.height.is_multiple_of(2))
        {
            return Err(FrameError::OddSize {
                format: self.format,
                width: self.width,
                height: self.height,
            });
        }
        let min = u64::from(self.width) * u64::from(self.format.bytes_per_pixel());
        if u64::from(self.stride) < min {
            return Err(FrameError::StrideTooSmall {
                stride: self.stride,
                width: self.width,
                format: self.format,
                min,
            });
        }
        let len = self.frame_len()?;
        let end = self.offset.checked_add(len).ok_or(FrameError::Overflow)?;
        if end > size {
            return Err(FrameError::TooLarge {
                offset: self.offset,
                len,
                size,
            });
        }
        Ok(len)
    }

    /// The frame's bytes in `buffer` (the whole buffer, from its byte 0),
    /// padding included: what the `crc32` property covers.
    pub fn frame_bytes<'a>(&self, buffer: &'a [u8]) -> Result<&'a [u8], FrameError> {
        let len = self.validate(buffer.len() as u64)?;
        // Both fit in usize: the frame ends inside `buffer`.
        let start = self.offset as usize;
        Ok(&buffer[start..start + len as usize])
    }

    /// Layout of the converted pixels.
    pub const fn color_type(&self) -> ColorType {
        if self.format.has_alpha() {
            ColorType::Rgba
        } else {
            ColorType::Rgb
        }
    }
}

/// Converts the frame `spec` describes in `buffer` (the whole buffer, from
/// its byte 0) to 8-bit RGB, or RGBA for formats with alpha.
///
/// RGB565 is widened by repeating the high bits (`0x1f` gives 255); NV12 is
/// BT.601 limited range (Y 16 to 235, Cb and Cr 16 to 240), each 2x2 block
/// of pixels sharing a Cb, Cr pair.
pub fn convert(spec: &FrameSpec, buffer: &[u8]) -> Result<Image, FrameError> {
    let frame = spec.frame_bytes(buffer)?;
    let color = spec.color_type();
    let width = spec.width as usize;
    let height = spec.height as usize;
    let stride = spec.stride as usize;
    let out_len = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(color.channels()))
        .ok_or(FrameError::Overflow)?;
    let mut data = Vec::with_capacity(out_len);
    let rows = frame.chunks_exact(stride).take(height);
    match spec.format {
        Format::Xrgb8888 => {
            for row in rows {
                for px in row[..width * 4].chunks_exact(4) {
                    data.extend_from_slice(&[px[2], px[1], px[0]]);
                }
            }
        }
        Format::Argb8888 => {
            for row in rows {
                for px in row[..width * 4].chunks_exact(4) {
                    data.extend_from_slice(&[px[2], px[1], px[0], px[3]]);
                }
            }
        }
        Format::Rgb565 => {
            for row in rows {
                for px in row[..width * 2].chunks_exact(2) {
                    let v = u16::from_le_bytes([px[0], px[1]]);
                    let r = (v >> 11) as u8 & 0x1f;
                    let g = (v >> 5) as u8 & 0x3f;
                    let b = v as u8 & 0x1f;
                    data.extend_from_slice(&[r << 3 | r >> 2, g << 2 | g >> 4, b << 3 | b >> 2]);
                }
            }
        }
        Format::Nv12 => {
            let (luma, chroma) = frame.split_at(stride * height);
            for (y, row) in luma.chunks_exact(stride).enumerate() {
                let cbcr = &chroma[(y / 2) * stride..][..width];
                for (x, &l) in row[..width].iter().enumerate() {
                    let pair = x & !1;
                    data.extend_from_slice(&yuv_to_rgb(l, cbcr[pair], cbcr[pair + 1]));
                }
            }
        }
    }
    debug_assert_eq!(data.len(), out_len);
    Ok(Image {
        width: spec.width,
        height: spec.height,
        color,
        data,
    })
}

/// BT.601 limited range Y, Cb, Cr to R, G, B, in the usual 8-bit fixed
/// point (coefficients times 256).
fn yuv_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let d = i32::from(cb) - 128;
    let e = i32::from(cr) - 128;
    let clamp = |v: i32| (v >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e + 128),
        clamp(c - 100 * d - 208 * e + 128),
        clamp(c + 516 * d + 128),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn spec_of(pairs: &[(&str, &str)], size: u64) -> Result<FrameSpec, FrameError> {
        let p = props(pairs);
        FrameSpec::from_props(|n| p.get(n).map(Vec::as_slice), size)
    }

    fn spec(width: u32, height: u32, stride: u32, format: Format) -> FrameSpec {
        FrameSpec {
            width,
            height,
            stride,
            format,
            offset: 0,
        }
    }

    #[test]
    fn from_props_full_and_defaults() {
        let s = spec_of(
            &[
                ("width", "640"),
                ("height", "480"),
                ("format", "XRGB8888"),
                ("name", "ignored"),
            ],
            640 * 480 * 4,
        )
        .unwrap();
        assert_eq!(s, spec(640, 480, 2560, Format::Xrgb8888));

        let s = spec_of(
            &[
                ("width", "0x10"),
                ("height", "8"),
                ("stride", "64"),
                ("format", "NV12"),
                ("offset", "4096"),
            ],
            4096 + 64 * 12,
        )
        .unwrap();
        assert_eq!(
            s,
            FrameSpec {
                offset: 4096,
                ..spec(16, 8, 64, Format::Nv12)
            }
        );
        assert_eq!(s.frame_len(), Ok(64 * 12));

        let s = spec_of(&[("width", "3"), ("height", "1"), ("format", "RG16")], 6).unwrap();
        assert_eq!(s.stride, 6);
    }

    #[test]
    fn missing_properties() {
        let all = [("width", "4"), ("height", "4"), ("format", "XR24")];
        for skip in 0..all.len() {
            let pairs: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, &p)| p)
                .collect();
            assert_eq!(
                spec_of(&pairs, 1 << 20),
                Err(FrameError::Missing(all[skip].0))
            );
        }
    }

    #[test]
    fn bad_numbers() {
        let base = [("width", "4"), ("height", "4"), ("format", "XR24")];
        let cases = [
            ("width", "", 32),
            ("width", "-4", 32),
            ("width", "4px", 32),
            ("width", " 4", 32),
            ("height", "0x", 32),
            ("height", "0xg", 32),
            ("height", "4294967296", 32),
            ("height", "0x100000000", 32),
            ("stride", "1e3", 32),
            ("offset", "18446744073709551616", 64),
            ("offset", "+1", 64),
        ];
        for (name, value, bits) in cases {
            let mut pairs = base.to_vec();
            pairs.retain(|p| p.0 != name);
            pairs.push((name, value));
            assert_eq!(
                spec_of(&pairs, 1 << 20),
                Err(FrameError::BadNumber {
                    name: match name {
                        "width" => prop::WIDTH,
                        "height" => prop::HEIGHT,
                        "stride" => prop::STRIDE,
                        _ => prop::OFFSET,
                    },
                    value: value.to_owned(),
                    bits,
                }),
                "{name}={value}"
            );
        }
        // Not UTF-8.
        let mut p = props(&base);
        p.insert("width".into(), b"\xff".to_vec());
        assert_eq!(
            FrameSpec::from_props(|n| p.get(n).map(Vec::as_slice), 1 << 20),
            Err(FrameError::BadNumber {
                name: prop::WIDTH,
                value: "\u{fffd}".into(),
                bits: 32
            })
        );
        // The largest values are numbers.
        assert_eq!(parse_u32("width", b"4294967295"), Ok(u32::MAX));
        assert_eq!(parse_u32("width", b"0xFFFFffff"), Ok(u32::MAX));
        assert_eq!(
            parse_number("offset", b"18446744073709551615", 64),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn bad_format() {
        assert_eq!(
            spec_of(
                &[("width", "4"), ("height", "4"), ("format", "YUYV")],
                1 << 20
            ),
            Err(FrameError::Format(FormatError::Unsupported(0x5659_5559)))
        );
        assert_eq!(
            spec_of(&[("width", "4"), ("height", "4"), ("format", "")], 1 << 20),
            Err(FrameError::Format(FormatError::Empty))
        );
    }

    #[test]
    fn zero_sizes() {
        let size = 1 << 20;
        let base = [
            ("width", "4"),
            ("height", "4"),
            ("format", "XR24"),
            ("stride", "16"),
        ];
        for name in ["width", "height", "stride"] {
            let mut pairs = base.to_vec();
            pairs.retain(|p| p.0 != name);
            pairs.push((name, "0"));
            let want = FrameError::Zero(match name {
                "width" => prop::WIDTH,
                "height" => prop::HEIGHT,
                _ => prop::STRIDE,
            });
            assert_eq!(spec_of(&pairs, size), Err(want));
        }
    }

    #[test]
    fn stride_too_small() {
        for (format, bpp) in [
            (Format::Xrgb8888, 4),
            (Format::Argb8888, 4),
            (Format::Rgb565, 2),
            (Format::Nv12, 1),
        ] {
            let s = spec(10, 10, 10 * bpp - 1, format);
            assert_eq!(
                s.validate(1 << 20),
                Err(FrameError::StrideTooSmall {
                    stride: 10 * bpp - 1,
                    width: 10,
                    format,
                    min: u64::from(10 * bpp),
                })
            );
            // The smallest stride is enough.
            let luma = u64::from(10 * 10 * bpp);
            let len = if format == Format::Nv12 {
                luma * 3 / 2
            } else {
                luma
            };
            assert_eq!(spec(10, 10, 10 * bpp, format).validate(1 << 20), Ok(len));
        }
        // A width whose row does not fit in 32 bits: no stride holds it.
        let s = spec(u32::MAX, 1, u32::MAX, Format::Xrgb8888);
        assert!(matches!(
            s.validate(u64::MAX),
            Err(FrameError::StrideTooSmall { min, .. }) if min == u64::from(u32::MAX) * 4
        ));
        // And without a stride property, no default either.
        assert_eq!(
            spec_of(
                &[("width", "1073741824"), ("height", "1"), ("format", "XR24")],
                u64::MAX
            ),
            Err(FrameError::Overflow)
        );
    }

    #[test]
    fn odd_nv12() {
        for (w, h) in [(3, 2), (2, 3), (1, 1)] {
            assert_eq!(
                spec(w, h, 4, Format::Nv12).validate(1 << 20),
                Err(FrameError::OddSize {
                    format: Format::Nv12,
                    width: w,
                    height: h
                })
            );
        }
        // Other formats take odd sizes.
        assert_eq!(spec(3, 3, 12, Format::Xrgb8888).validate(36), Ok(36));
    }

    #[test]
    fn overflow() {
        // NV12's 1.5 * stride * height exceeds 64 bits.
        let s = spec(u32::MAX - 1, u32::MAX - 1, u32::MAX, Format::Nv12);
        assert_eq!(s.validate(u64::MAX), Err(FrameError::Overflow));
        // So does offset + length.
        let s = FrameSpec {
            offset: u64::MAX - 3,
            ..spec(1, 1, 4, Format::Xrgb8888)
        };
        assert_eq!(s.validate(u64::MAX), Err(FrameError::Overflow));
        assert_eq!(
            spec_of(
                &[
                    ("width", "1"),
                    ("height", "1"),
                    ("format", "XR24"),
                    ("offset", "0xffffffffffffffff")
                ],
                u64::MAX
            ),
            Err(FrameError::Overflow)
        );
        // The largest packed frame does not overflow.
        let s = spec(u32::MAX / 4, u32::MAX, u32::MAX, Format::Xrgb8888);
        assert_eq!(
            s.validate(u64::MAX),
            Ok(u64::from(u32::MAX) * u64::from(u32::MAX))
        );
    }

    #[test]
    fn too_large() {
        // Exactly fits, then one byte short.
        let s = spec(4, 4, 16, Format::Xrgb8888);
        assert_eq!(s.validate(64), Ok(64));
        assert_eq!(
            s.validate(63),
            Err(FrameError::TooLarge {
                offset: 0,
                len: 64,
                size: 63
            })
        );
        // The offset counts.
        let s = FrameSpec { offset: 1, ..s };
        assert_eq!(
            s.validate(64),
            Err(FrameError::TooLarge {
                offset: 1,
                len: 64,
                size: 64
            })
        );
        // NV12's CbCr plane counts: the Y plane alone fits.
        let s = spec(4, 4, 4, Format::Nv12);
        assert_eq!(s.validate(24), Ok(24));
        assert_eq!(
            s.validate(16),
            Err(FrameError::TooLarge {
                offset: 0,
                len: 24,
                size: 16
            })
        );
        assert_eq!(
            spec_of(&[("width", "4"), ("height", "4"), ("format", "NV12")], 23),
            Err(FrameError::TooLarge {
                offset: 0,
                len: 24,
                size: 23
            })
        );
        // convert() checks the bytes it is given.
        let s = spec(2, 2, 8, Format::Xrgb8888);
        assert_eq!(
            convert(&s, &[0; 15]),
            Err(FrameError::TooLarge {
                offset: 0,
                len: 16,
                size: 15
            })
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            FrameError::Missing("width").to_string(),
            "property \"width\" is missing"
        );
        assert_eq!(
            FrameError::StrideTooSmall {
                stride: 7,
                width: 2,
                format: Format::Xrgb8888,
                min: 8
            }
            .to_string(),
            "stride 7 is less than 8 bytes (2 pixels of XRGB8888)"
        );
        assert_eq!(
            FrameError::Format(FormatError::Unsupported(0x5659_5559)).to_string(),
            "property \"format\": unsupported format 'YUYV' (0x56595559)"
        );
    }

    /// XRGB8888 bytes of a pixel: B, G, R, X.
    fn xrgb(r: u8, g: u8, b: u8) -> [u8; 4] {
        (u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b) | 0xff00_0000).to_le_bytes()
    }

    #[test]
    fn convert_xrgb8888() {
        // 2x2 with 4 bytes of padding a row (garbage that must not show).
        let mut buf = Vec::new();
        buf.extend(xrgb(255, 0, 0));
        buf.extend(xrgb(0, 255, 0));
        buf.extend([0xaa; 4]);
        buf.extend(xrgb(0, 0, 255));
        buf.extend([0x10, 0x20, 0x30, 0x00]); // B=0x10 G=0x20 R=0x30, X ignored.
        buf.extend([0xaa; 4]);
        assert_eq!(&buf[..4], &[0, 0, 255, 255]);
        let img = convert(&spec(2, 2, 12, Format::Xrgb8888), &buf).unwrap();
        assert_eq!(img.color, ColorType::Rgb);
        assert_eq!((img.width, img.height), (2, 2));
        assert_eq!(
            img.data,
            [255, 0, 0, 0, 255, 0, 0, 0, 255, 0x30, 0x20, 0x10]
        );
    }

    #[test]
    fn convert_argb8888() {
        let px = |a: u32, r: u32, g: u32, b: u32| (a << 24 | r << 16 | g << 8 | b).to_le_bytes();
        let mut buf = Vec::new();
        buf.extend(px(0xff, 0xff, 0, 0));
        buf.extend(px(0x80, 0, 0xff, 0));
        buf.extend(px(0x00, 0, 0, 0xff));
        buf.extend(px(0xff, 0xff, 0xff, 0xff));
        let img = convert(&spec(2, 2, 8, Format::Argb8888), &buf).unwrap();
        assert_eq!(img.color, ColorType::Rgba);
        assert_eq!(
            img.data,
            [255, 0, 0, 255, 0, 255, 0, 0x80, 0, 0, 255, 0, 255, 255, 255, 255]
        );
    }

    #[test]
    fn convert_rgb565() {
        let px = |v: u16| v.to_le_bytes();
        // 3x2 with a stride of 8 (2 bytes of padding).
        let mut buf = Vec::new();
        buf.extend(px(0xf800)); // red
        buf.extend(px(0x07e0)); // green
        buf.extend(px(0x001f)); // blue
        buf.extend([0x55, 0x55]);
        buf.extend(px(0xffff)); // white
        buf.extend(px(0x0000)); // black
        buf.extend(px(0x8410)); // r=16 g=32 b=16: mid gray
        buf.extend([0x55, 0x55]);
        assert_eq!(&buf[..2], &[0x00, 0xf8]);
        let img = convert(&spec(3, 2, 8, Format::Rgb565), &buf).unwrap();
        assert_eq!(img.color, ColorType::Rgb);
        assert_eq!(
            img.data,
            [
                255, 0, 0, 0, 255, 0, 0, 0, 255, //
                255, 255, 255, 0, 0, 0, 132, 130, 132
            ]
        );
    }

    /// An NV12 frame of w x h with every Y `y` and every CbCr pair (cb,
    /// cr), with `pad` bytes of padding a row.
    fn nv12_flat(w: usize, h: usize, pad: usize, y: u8, cb: u8, cr: u8) -> Vec<u8> {
        let stride = w + pad;
        let mut buf = Vec::new();
        for _ in 0..h {
            buf.extend(std::iter::repeat_n(y, w));
            buf.extend(std::iter::repeat_n(0xee, pad));
        }
        for _ in 0..h / 2 {
            for _ in 0..w / 2 {
                buf.extend([cb, cr]);
            }
            buf.extend(std::iter::repeat_n(0xee, pad));
        }
        assert_eq!(buf.len(), stride * h * 3 / 2);
        buf
    }

    #[test]
    fn convert_nv12_flat_colors() {
        let s = spec(4, 2, 6, Format::Nv12);
        // (Y, Cb, Cr) of BT.601 limited range colors and their RGB.
        let cases = [
            ((126, 128, 128), [128, 128, 128]), // mid gray
            ((16, 128, 128), [0, 0, 0]),        // black
            ((235, 128, 128), [255, 255, 255]), // white
            ((81, 90, 240), [255, 0, 0]),       // red
            ((145, 54, 34), [0, 255, 1]),       // green (B 1: 8-bit rounding)
            ((41, 240, 110), [0, 0, 255]),      // blue
        ];
        for ((y, cb, cr), rgb) in cases {
            let img = convert(&s, &nv12_flat(4, 2, 2, y, cb, cr)).unwrap();
            assert_eq!(img.color, ColorType::Rgb);
            let want: Vec<u8> = rgb.iter().copied().cycle().take(4 * 2 * 3).collect();
            assert_eq!(img.data, want, "Y={y} Cb={cb} Cr={cr}");
        }
    }

    #[test]
    fn convert_nv12_subsampling() {
        // 4x4: every pixel its own Y, each 2x2 block its own CbCr.
        let (w, h, stride) = (4usize, 4usize, 8usize);
        let mut buf = vec![0xee; stride * h * 3 / 2];
        for y in 0..h {
            for x in 0..w {
                buf[y * stride + x] = 16 + (y * w + x) as u8 * 10;
            }
        }
        let blocks = [(90u8, 240u8), (54, 34), (240, 110), (128, 128)];
        for by in 0..2 {
            for bx in 0..2 {
                let (cb, cr) = blocks[by * 2 + bx];
                buf[stride * h + by * stride + bx * 2] = cb;
                buf[stride * h + by * stride + bx * 2 + 1] = cr;
            }
        }
        let img = convert(&spec(4, 4, 8, Format::Nv12), &buf).unwrap();
        for y in 0..h {
            for x in 0..w {
                let (cb, cr) = blocks[(y / 2) * 2 + x / 2];
                let want = yuv_to_rgb(buf[y * stride + x], cb, cr);
                assert_eq!(&img.data[(y * w + x) * 3..][..3], &want, "({x}, {y})");
            }
        }
    }

    #[test]
    fn convert_with_offset() {
        let mut buf = vec![0x77; 100];
        buf.extend(xrgb(1, 2, 3));
        let s = FrameSpec {
            offset: 100,
            ..spec(1, 1, 4, Format::Xrgb8888)
        };
        assert_eq!(convert(&s, &buf).unwrap().data, [1, 2, 3]);
        assert_eq!(s.frame_bytes(&buf).unwrap(), &xrgb(1, 2, 3));
    }

    #[test]
    fn yuv_extremes_clamp() {
        assert_eq!(yuv_to_rgb(0, 0, 0), [0, 135, 0]);
        assert_eq!(yuv_to_rgb(255, 255, 255), [255, 125, 255]);
    }
}
