// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The rules of names and buffer properties; the guest crate, the backend
//! and the consumer library all check them here.
//!
//! * A name (of a property, an application, a guest) is 1 to [`NAME_MAX`]
//!   characters out of `[A-Za-z0-9_.-]` ([`is_name`]).
//! * Properties are a sequence of NUL-terminated `name=value` strings
//!   ([`split`]): a name as above, at most once; a value of bytes that are
//!   not control characters, below 0x20 or 0x7f ([`is_value`]). No bytes at
//!   all means no properties. [`parse`] checks all of it.

use std::collections::HashSet;
use std::fmt;

use crate::wire::VIRTIO_BUFSHARE_PROP_NAME_MAX;

/// Longest name, in characters.
pub const NAME_MAX: usize = VIRTIO_BUFSHARE_PROP_NAME_MAX;

/// Whether `c` may be part of a name: `[A-Za-z0-9_.-]`.
pub fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

/// Whether `name` is a valid property, application or guest name: 1 to
/// [`NAME_MAX`] characters out of `[A-Za-z0-9_.-]`.
pub fn is_name(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len()) && name.bytes().all(is_name_char)
}

/// Whether `c` may be part of a property value: not a control character
/// (below 0x20, or 0x7f).
pub fn is_value_byte(c: u8) -> bool {
    c >= 0x20 && c != 0x7f
}

/// Whether `value` may be a property value: no byte is a control
/// character. It need not be UTF-8.
pub fn is_value(value: &[u8]) -> bool {
    value.iter().all(|&c| is_value_byte(c))
}

/// Why properties are refused. The offsets are those of the first byte of
/// the string at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropsError {
    /// The last string has no terminating NUL.
    Unterminated(usize),
    /// A string without `=`.
    NoEquals(usize),
    /// A name that is empty, too long or has a character out of the set.
    BadName(usize),
    /// A value with a control character.
    BadValue(usize),
    /// The same name twice.
    Duplicate(String),
}

impl fmt::Display for PropsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropsError::Unterminated(at) => {
                write!(f, "property at byte {at} is not NUL-terminated")
            }
            PropsError::NoEquals(at) => write!(f, "property at byte {at} has no '='"),
            PropsError::BadName(at) => write!(f, "property at byte {at} has a bad name"),
            PropsError::BadValue(at) => write!(
                f,
                "property at byte {at} has a control character in its value"
            ),
            PropsError::Duplicate(name) => {
                write!(f, "property {name:?} appears more than once")
            }
        }
    }
}

impl std::error::Error for PropsError {}

/// One `name=value` string of properties, split at its first `=` and not
/// checked any further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawProperty<'a> {
    /// Offset of its first byte in the properties.
    pub at: usize,
    /// The bytes before the first `=`.
    pub name: &'a [u8],
    /// The bytes after the first `=`.
    pub value: &'a [u8],
}

/// The strings of the properties in `bytes`, in order, split at their first
/// `=`: a string without its NUL ([`PropsError::Unterminated`]) or without
/// `=` ([`PropsError::NoEquals`]) is an error, which ends the sequence.
pub fn split(bytes: &[u8]) -> impl Iterator<Item = Result<RawProperty<'_>, PropsError>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let at = start;
        // Nothing comes after an error.
        start = bytes.len();
        let rest = &bytes[at..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Some(Err(PropsError::Unterminated(at)));
        };
        let string = &rest[..nul];
        let Some(eq) = string.iter().position(|&b| b == b'=') else {
            return Some(Err(PropsError::NoEquals(at)));
        };
        start = at + nul + 1;
        Some(Ok(RawProperty {
            at,
            name: &string[..eq],
            value: &string[eq + 1..],
        }))
    })
}

/// Checks the properties in `bytes` against every rule; returns their
/// names and values, in order. Each string is checked in turn: its NUL and
/// `=`, its name ([`is_name`]), its value ([`is_value`]), and that its name
/// did not come before.
///
/// It takes time linear in the size of `bytes`: names already seen are
/// looked up in a hash set (a guest's 64 KiB of short names would take
/// seconds to compare pairwise, for each consumer they go to).
pub fn parse(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>, PropsError> {
    let mut props: Vec<(&str, &[u8])> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for raw in split(bytes) {
        let raw = raw?;
        let name = std::str::from_utf8(raw.name)
            .ok()
            .filter(|name| is_name(name))
            .ok_or(PropsError::BadName(raw.at))?;
        if !is_value(raw.value) {
            return Err(PropsError::BadValue(raw.at));
        }
        if !seen.insert(name) {
            return Err(PropsError::Duplicate(name.to_owned()));
        }
        props.push((name, raw.value));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_name("weston"));
        assert!(is_name("A-Z.a_z0-9"));
        assert!(is_name("A.b-c_9"));
        assert!(is_name(&"n".repeat(NAME_MAX)));
        assert!(!is_name(&"n".repeat(NAME_MAX + 1)));
        for bad in ["", "a b", "a=b", "a/b", "*", "é", "a\0", "a\n"] {
            assert!(!is_name(bad), "{bad:?}");
        }
        assert!(is_name_char(b'-') && !is_name_char(b'='));
    }

    #[test]
    fn values() {
        assert!(is_value(b""));
        assert!(is_value(b" ~=\x80\xff"));
        for bad in [&b"\x1f"[..], b"\x7f", b"a\tb", b"\n", b"\0"] {
            assert!(!is_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn splits() {
        let raw =
            |at, name: &'static [u8], value: &'static [u8]| Ok(RawProperty { at, name, value });
        let strings: Vec<_> = split(b"a=1\0=\0b c==x\0").collect();
        assert_eq!(
            strings,
            [raw(0, b"a", b"1"), raw(4, b"", b""), raw(6, b"b c", b"=x")]
        );
        assert_eq!(split(b"").count(), 0);
        let strings: Vec<_> = split(b"a=1\0b\0c=2\0").collect();
        assert_eq!(strings, [raw(0, b"a", b"1"), Err(PropsError::NoEquals(4))]);
        let strings: Vec<_> = split(b"a=1\0b=2").collect();
        assert_eq!(
            strings,
            [raw(0, b"a", b"1"), Err(PropsError::Unterminated(4))]
        );
    }

    /// `size` bytes of properties with names as short as they can be, all
    /// different, and empty values; the last name is `dup` if given.
    fn many_short_names(size: usize, dup: Option<&str>) -> Vec<u8> {
        let mut bytes = Vec::new();
        let chars: Vec<u8> = (0..=255u8).filter(|&c| is_name_char(c)).collect();
        let mut n = 0usize;
        while bytes.len() + 8 <= size {
            let mut name = Vec::new();
            let mut i = n;
            loop {
                name.push(chars[i % chars.len()]);
                i /= chars.len();
                if i == 0 {
                    break;
                }
            }
            bytes.extend_from_slice(&name);
            bytes.extend_from_slice(b"=\0");
            n += 1;
        }
        if let Some(dup) = dup {
            bytes.extend_from_slice(dup.as_bytes());
            bytes.extend_from_slice(b"=\0");
        }
        bytes
    }

    #[test]
    fn duplicates_are_found_in_linear_time() {
        // 64 KiB of 4-byte strings: some 16000 names. Compared pairwise,
        // that is 130 million comparisons, 157 ms per parse.
        let bytes = many_short_names(64 << 10, None);
        assert!(parse(&bytes).unwrap().len() > 13_000);
        let start = std::time::Instant::now();
        for _ in 0..10 {
            assert!(parse(&bytes).is_ok());
        }
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_millis(300), "{took:?}");
        // The duplicate is still found, last.
        let bytes = many_short_names(64 << 10, Some("a"));
        assert_eq!(parse(&bytes), Err(PropsError::Duplicate("a".into())));
    }

    #[test]
    fn parses() {
        assert_eq!(
            parse(b"width=640\0e=\0v= ~\x80\xff\0eq=a=b\0"),
            Ok(vec![
                ("width", &b"640"[..]),
                ("e", b""),
                ("v", b" ~\x80\xff"),
                ("eq", b"a=b"),
            ])
        );
        assert_eq!(parse(b""), Ok(vec![]));
        let long = format!("{}=1\0", "n".repeat(NAME_MAX + 1));
        let cases: &[(&[u8], PropsError)] = &[
            (b"a=1", PropsError::Unterminated(0)),
            (b"a=1\0b=2", PropsError::Unterminated(4)),
            (b"\0", PropsError::NoEquals(0)),
            (b"abc\0", PropsError::NoEquals(0)),
            (b"=v\0", PropsError::BadName(0)),
            (b"a b=v\0", PropsError::BadName(0)),
            (b"\xc3\xa9=v\0", PropsError::BadName(0)),
            (b"a=1\0b\x01=2\0", PropsError::BadName(4)),
            (long.as_bytes(), PropsError::BadName(0)),
            (b"a=\x1f\0", PropsError::BadValue(0)),
            (b"a=\x7f\0", PropsError::BadValue(0)),
            (b"a=1\0a=2\0", PropsError::Duplicate("a".into())),
            // In the order of the strings, and of the checks of each.
            (b"a=1\0a=\x01\0", PropsError::BadValue(4)),
            (b"a b=\x01\0", PropsError::BadName(0)),
            (b"a=\x01\0b", PropsError::BadValue(0)),
        ];
        for (bytes, error) in cases {
            assert_eq!(parse(bytes).as_ref(), Err(error), "{bytes:?}");
        }
        assert_eq!(
            PropsError::Duplicate("a".into()).to_string(),
            "property \"a\" appears more than once"
        );
        assert_eq!(
            PropsError::BadValue(3).to_string(),
            "property at byte 3 has a control character in its value"
        );
    }
}
