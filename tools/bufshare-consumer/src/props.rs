// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Names and properties, as the guest gave them to the device and the
//! backend passes them on.
//!
//! Their rules are [`bufshare_uapi::props`]'s, re-exported here: a name
//! (application, guest or property) is 1 to [`NAME_MAX`] characters out of
//! `[A-Za-z0-9_.-]`; properties are NUL-terminated `name=value` strings,
//! each name at most once, values without control characters. On the wire
//! of the consumer protocol, a name is a [`NAME_LEN`]-byte field padded with
//! NUL bytes.

use std::fmt;

pub use bufshare_uapi::props::{is_name, is_name_char, is_value_byte, PropsError, NAME_MAX};

/// Length of a name field on the wire: the longest name and a NUL.
pub const NAME_LEN: usize = NAME_MAX + 1;

/// One property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Its name, out of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Its value: bytes that are not control characters, not necessarily
    /// UTF-8.
    pub value: Vec<u8>,
}

impl fmt::Display for Property {
    /// `name=value`, fit for a terminal: the value's control characters
    /// escaped ([`escape_controls`]), then its bytes that are not UTF-8
    /// replaced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = escape_controls(&self.value, b"");
        write!(f, "{}={}", self.name, String::from_utf8_lossy(&value))
    }
}

/// `text` made fit to print on a terminal, which would act on control
/// characters rather than show them: every control character, as the
/// bytes that encode it (`\xNN` each), and `\` (as `\\`, so that the
/// result reads back unambiguously). Control characters are C0 (below
/// 0x20) but the bytes of `keep` (say TAB and newline, where they are
/// structure), DEL (0x7f), and C1: U+0080 to U+009F encoded in UTF-8
/// (`\xc2\x80` to `\xc2\x9f`), and the raw bytes 0x80 to 0x9f outside a
/// UTF-8 sequence, which 8-bit terminals take as C1 controls (0x9b is
/// CSI). Everything else, the rest of UTF-8 and other bytes that are not
/// UTF-8, is kept as it is.
///
/// Property values may hold C1 controls (the device's rule only forbids
/// C0 and DEL); the host tools print them through this.
pub fn escape_controls(text: &[u8], keep: &[u8]) -> Vec<u8> {
    fn hex(out: &mut Vec<u8>, byte: u8) {
        out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
    }
    let mut out = Vec::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut buf = [0; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            if c == '\\' {
                out.extend_from_slice(b"\\\\");
            } else if c.is_control() && !(c.is_ascii() && keep.contains(&(c as u8))) {
                bytes.iter().for_each(|&b| hex(&mut out, b));
            } else {
                out.extend_from_slice(bytes);
            }
        }
        for &b in chunk.invalid() {
            if b <= 0x9f {
                hex(&mut out, b);
            } else {
                out.push(b);
            }
        }
    }
    out
}

/// The properties of a buffer, in the guest's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties(Vec<Property>);

impl Properties {
    /// Parses and validates the wire form
    /// ([`bufshare_uapi::props::parse`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, PropsError> {
        let props = bufshare_uapi::props::parse(bytes)?;
        Ok(Self(
            props
                .into_iter()
                .map(|(name, value)| Property {
                    name: name.to_string(),
                    value: value.to_vec(),
                })
                .collect(),
        ))
    }

    /// Properties from `(name, value)` pairs, validated.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, PropsError>
    where
        N: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut bytes = Vec::new();
        for (name, value) in pairs {
            bytes.extend_from_slice(name.as_ref().as_bytes());
            bytes.push(b'=');
            bytes.extend_from_slice(value.as_ref());
            bytes.push(0);
        }
        Self::parse(&bytes)
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        for prop in &self.0 {
            out.extend_from_slice(prop.name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(&prop.value);
            out.push(0);
        }
        out
    }

    /// Length of the wire form, in bytes.
    pub fn wire_len(&self) -> usize {
        self.0
            .iter()
            .map(|p| p.name.len() + p.value.len() + 2)
            .sum()
    }

    /// The properties, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Property> {
        self.0.iter()
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the property `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_slice())
    }

    /// The value of the property `name`, if there is one and it is a
    /// decimal integer that fits in a `u64`.
    pub fn get_u64(&self, name: &str) -> Option<u64> {
        let value = self.get(name)?;
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(value).ok()?.parse().ok()
    }
}

/// Encodes a name into its wire field. The caller checked it with
/// [`is_name`] (or it is the HELLO wildcard).
pub(crate) fn name_field(name: &str) -> [u8; NAME_LEN] {
    let mut field = [0; NAME_LEN];
    let len = name.len().min(NAME_LEN);
    field[..len].copy_from_slice(&name.as_bytes()[..len]);
    field
}

/// Decodes a name field: the text before the first NUL, if every byte
/// after it is NUL too. The text is not checked.
pub(crate) fn field_text(field: &[u8]) -> Option<&str> {
    let nul = field.iter().position(|&b| b == 0)?;
    if field[nul..].iter().any(|&b| b != 0) {
        return None;
    }
    std::str::from_utf8(&field[..nul]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let f = name_field("abc");
        assert_eq!(&f[..4], b"abc\0");
        assert_eq!(field_text(&f), Some("abc"));
        assert_eq!(field_text(&[0; NAME_LEN]), Some(""));
        assert_eq!(field_text(&[b'a'; NAME_LEN]), None);
        let mut garbage = name_field("abc");
        garbage[10] = 1;
        assert_eq!(field_text(&garbage), None);
        let mut utf = [0u8; 8];
        utf[0] = 0xff;
        assert_eq!(field_text(&utf), None);
    }

    #[test]
    fn controls_are_escaped() {
        let escape = |text: &[u8]| String::from_utf8(escape_controls(text, b"\t\n")).unwrap();
        // C1 in UTF-8 (CSI, NEL), raw C1 bytes, C0 and DEL.
        assert_eq!(
            escape("a\u{9b}31m\u{85}b".as_bytes()),
            "a\\xc2\\x9b31m\\xc2\\x85b"
        );
        assert_eq!(escape(b"\x9b2J\x80\x9f"), "\\x9b2J\\x80\\x9f");
        assert_eq!(escape(b"\x1b[2J\x7f\r\0"), "\\x1b[2J\\x7f\\x0d\\x00");
        // What is kept: structure, text, other bytes, and the backslash
        // made unambiguous.
        assert_eq!(escape(b"id=1\n\tv=x\n"), "id=1\n\tv=x\n");
        assert_eq!(escape("é€ \u{a0}~".as_bytes()), "é€ \u{a0}~");
        assert_eq!(escape(b"a\\x9b"), "a\\\\x9b");
        assert_eq!(escape_controls(b"\xa0\xff\xc3", b""), b"\xa0\xff\xc3");
        assert_eq!(escape_controls(b"\t", b""), b"\\x09");
        // A C1 byte that ends a truncated UTF-8 sequence.
        assert_eq!(escape_controls(b"\xe2\x82", b""), b"\xe2\\x82");
        // Property values may hold C1 controls; printing them escapes them.
        let props = Properties::parse("t=\u{9b}1m\0".as_bytes()).unwrap();
        assert_eq!(props.iter().next().unwrap().to_string(), "t=\\xc2\\x9b1m");
    }

    #[test]
    fn round_trip() {
        let bytes = b"width=640\0height=480\0empty=\0v= ~\x80\xff\0eq=a=b\0";
        let props = Properties::parse(bytes).unwrap();
        assert_eq!(props.len(), 5);
        assert_eq!(props.to_bytes(), bytes);
        assert_eq!(props.wire_len(), bytes.len());
        assert_eq!(props.get("height"), Some(&b"480"[..]));
        assert_eq!(props.get_u64("width"), Some(640));
        assert_eq!(props.get_u64("v"), None);
        assert_eq!(props.get_u64("empty"), None);
        assert_eq!(props.get("missing"), None);
        assert_eq!(
            props.iter().nth(3).unwrap().to_string(),
            "v= ~\\x80\u{fffd}"
        );
        assert!(Properties::parse(b"").unwrap().is_empty());
        let pairs = Properties::from_pairs([("a", &b"1"[..]), ("b", b"")]).unwrap();
        assert_eq!(pairs.to_bytes(), b"a=1\0b=\0");
        assert_eq!(
            Properties::from_pairs([("a b", "1")]),
            Err(PropsError::BadName(0))
        );
        // The rules are bufshare_uapi::props's, tested there.
        assert_eq!(
            Properties::parse(b"a=1\0a=2\0"),
            Err(PropsError::Duplicate("a".into()))
        );
        assert_eq!(NAME_LEN, NAME_MAX + 1);
    }
}
