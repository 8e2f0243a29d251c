// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Buffer properties and application names, as the driver sends them.
//!
//! * Properties are `props_size` bytes: a sequence of NUL-terminated
//!   `name=value` strings, each ending with a NUL inside the bytes. A name is
//!   1 to [`VIRTIO_BUFSHARE_PROP_NAME_MAX`] characters out of
//!   `[A-Za-z0-9_.-]` and appears at most once; a value is 0 or more bytes,
//!   none of them a control character (below 0x20, or 0x7f). No bytes at all
//!   means no properties.
//! * An application name is [`VIRTIO_BUFSHARE_APP_LEN`] bytes: 1 to 63
//!   characters out of `[A-Za-z0-9_.-]`, then NUL padding (every byte after
//!   the first NUL is 0).

pub use bufshare_consumer::props::{Properties, Property};
use bufshare_uapi::props::{is_name, is_name_char, PropsError as MalformedProps};
use bufshare_uapi::VIRTIO_BUFSHARE_APP_LEN;
#[cfg(test)]
use bufshare_uapi::VIRTIO_BUFSHARE_PROP_NAME_MAX;
use thiserror::Error as ThisError;

/// Why properties are refused.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
pub enum PropsError {
    /// More bytes than the device's `max_props_size`.
    #[error("{size} bytes of properties, more than the limit of {max}")]
    TooLarge {
        /// Size of the properties.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The last string has no terminating NUL.
    #[error("property at byte {0} is not NUL-terminated")]
    Unterminated(usize),
    /// A string without `=`.
    #[error("property at byte {0} has no '='")]
    NoEquals(usize),
    /// A name that is empty, too long or has a character out of the set.
    #[error("property at byte {0} has a bad name")]
    BadName(usize),
    /// A value with a control character.
    #[error("property at byte {0} has a control character in its value")]
    BadValue(usize),
    /// The same name twice.
    #[error("property {0:?} appears more than once")]
    Duplicate(String),
}

impl From<MalformedProps> for PropsError {
    fn from(e: MalformedProps) -> Self {
        match e {
            MalformedProps::Unterminated(at) => PropsError::Unterminated(at),
            MalformedProps::NoEquals(at) => PropsError::NoEquals(at),
            MalformedProps::BadName(at) => PropsError::BadName(at),
            MalformedProps::BadValue(at) => PropsError::BadValue(at),
            MalformedProps::Duplicate(name) => PropsError::Duplicate(name),
        }
    }
}

/// Why an application name is refused.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
pub enum AppError {
    /// No character before the first NUL.
    #[error("empty application name")]
    Empty,
    /// No NUL at all: 64 characters.
    #[error("application name not NUL-terminated")]
    Unterminated,
    /// A character out of `[A-Za-z0-9_.-]`.
    #[error("application name has a character out of [A-Za-z0-9_.-]")]
    BadChar,
    /// Something else than NUL after the first NUL.
    #[error("application name has non-zero bytes after its NUL")]
    Garbage,
}

/// Whether `name` is a valid property name.
pub fn is_prop_name(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok_and(is_name)
}

/// Parses and validates the properties in `bytes`, refusing more than `max`
/// of them. The rules are [`bufshare_uapi::props`]'s, which the consumer
/// library checks too when it receives the same properties.
pub fn parse_properties(bytes: &[u8], max: usize) -> Result<Properties, PropsError> {
    if bytes.len() > max {
        return Err(PropsError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    Properties::parse(bytes).map_err(PropsError::from)
}

/// Validates an application name; returns it without its padding.
pub fn parse_application(bytes: &[u8; VIRTIO_BUFSHARE_APP_LEN]) -> Result<String, AppError> {
    let nul = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(AppError::Unterminated)?;
    let (name, padding) = bytes.split_at(nul);
    if name.is_empty() {
        return Err(AppError::Empty);
    }
    if !name.iter().all(|&c| is_name_char(c)) {
        return Err(AppError::BadChar);
    }
    if padding.iter().any(|&b| b != 0) {
        return Err(AppError::Garbage);
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Properties, PropsError> {
        parse_properties(bytes, 4096)
    }

    fn pairs(props: &Properties) -> Vec<(&str, &[u8])> {
        props
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_slice()))
            .collect()
    }

    #[test]
    fn empty_is_no_properties() {
        let props = parse(b"").unwrap();
        assert!(props.is_empty());
        assert_eq!(props.len(), 0);
        assert_eq!(props.get("width"), None);
        assert_eq!(parse_properties(b"", 0), Ok(Properties::default()));
    }

    #[test]
    fn good_properties_keep_their_order() {
        let props = parse(b"width=640\0height=480\0format=XR24\0empty=\0eq=a=b\0").unwrap();
        assert_eq!(
            pairs(&props),
            [
                ("width", &b"640"[..]),
                ("height", b"480"),
                ("format", b"XR24"),
                ("empty", b""),
                ("eq", b"a=b"),
            ]
        );
        assert_eq!(props.len(), 5);
        assert_eq!(props.get("format"), Some(&b"XR24"[..]));
        assert_eq!(props.get("Format"), None);
        assert_eq!(props.iter().next().unwrap().to_string(), "width=640");
        assert_eq!(
            props.to_bytes(),
            b"width=640\0height=480\0format=XR24\0empty=\0eq=a=b\0"
        );
        assert!(Properties::default().to_bytes().is_empty());
    }

    #[test]
    fn names() {
        let long = "n".repeat(VIRTIO_BUFSHARE_PROP_NAME_MAX);
        let ok = format!("{long}=1\0A-Z_a.z-09=x\0");
        assert_eq!(parse(ok.as_bytes()).unwrap().len(), 2);
        let too_long = format!("{long}n=1\0");
        assert_eq!(parse(too_long.as_bytes()), Err(PropsError::BadName(0)));
        for bad in [
            &b"=v\0"[..],
            b"a b=v\0",
            b"a/b=v\0",
            b"\xc3\xa9=v\0",
            b"a\x01=v\0",
        ] {
            assert_eq!(parse(bad), Err(PropsError::BadName(0)), "{bad:?}");
        }
        assert_eq!(parse(b"a=1\0b c=2\0"), Err(PropsError::BadName(4)));
        assert!(is_prop_name(b"x"));
        assert!(!is_prop_name(b""));
    }

    #[test]
    fn values() {
        // Anything but control characters, even bytes that are not UTF-8.
        let props = parse(b"a= ~\x80\xff\0").unwrap();
        assert_eq!(props.get("a"), Some(&b" ~\x80\xff"[..]));
        assert_eq!(
            props.iter().next().unwrap().to_string(),
            "a= ~\\x80\u{fffd}",
            "a raw C1 byte escaped, other bytes that are not UTF-8 replaced"
        );
        for bad in [&b"a=\x1f\0"[..], b"a=\x7f\0", b"a=x\ny\0", b"a=\t\0"] {
            assert_eq!(parse(bad), Err(PropsError::BadValue(0)), "{bad:?}");
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(b"a=1"), Err(PropsError::Unterminated(0)));
        assert_eq!(parse(b"a=1\0b=2"), Err(PropsError::Unterminated(4)));
        assert_eq!(parse(b"\0"), Err(PropsError::NoEquals(0)));
        assert_eq!(parse(b"a=1\0\0"), Err(PropsError::NoEquals(4)));
        assert_eq!(parse(b"abc\0"), Err(PropsError::NoEquals(0)));
        assert_eq!(parse(b"a=1\0\0\0\0"), Err(PropsError::NoEquals(4)));
        assert_eq!(
            parse(b"a=1\0b=2\0a=3\0"),
            Err(PropsError::Duplicate("a".into()))
        );
        // Names are case-sensitive.
        assert_eq!(parse(b"a=1\0A=2\0").unwrap().len(), 2);
    }

    #[test]
    fn size_limit() {
        let bytes = b"a=12\0";
        assert!(parse_properties(bytes, 5).is_ok());
        assert_eq!(
            parse_properties(bytes, 4),
            Err(PropsError::TooLarge { size: 5, max: 4 })
        );
    }

    #[test]
    fn integers() {
        let props = parse(
            b"width=640\0height=0480\0neg=-1\0hex=0x10\0sp= 1\0big=18446744073709551616\0\
              max=18446744073709551615\0e=\0plus=+1\0",
        )
        .unwrap();
        assert_eq!(props.get_u64("width"), Some(640));
        assert_eq!(props.get_u64("height"), Some(480));
        assert_eq!(props.get_u64("max"), Some(u64::MAX));
        for name in ["neg", "hex", "sp", "big", "e", "plus", "missing"] {
            assert_eq!(props.get_u64(name), None, "{name}");
        }
    }

    fn app(s: &[u8]) -> [u8; VIRTIO_BUFSHARE_APP_LEN] {
        let mut a = [0; VIRTIO_BUFSHARE_APP_LEN];
        a[..s.len()].copy_from_slice(s);
        a
    }

    #[test]
    fn applications() {
        assert_eq!(parse_application(&app(b"weston")).unwrap(), "weston");
        assert_eq!(parse_application(&app(b"A.b-c_9")).unwrap(), "A.b-c_9");
        let longest = [b'x'; 63];
        assert_eq!(parse_application(&app(&longest)).unwrap(), "x".repeat(63));
        assert_eq!(
            parse_application(&[b'x'; VIRTIO_BUFSHARE_APP_LEN]),
            Err(AppError::Unterminated)
        );
        assert_eq!(parse_application(&app(b"")), Err(AppError::Empty));
        for bad in [&b"a b"[..], b"a/b", b"a=b", b"\xff", b"a\n"] {
            assert_eq!(
                parse_application(&app(bad)),
                Err(AppError::BadChar),
                "{bad:?}"
            );
        }
        let mut garbage = app(b"app");
        garbage[10] = b'x';
        assert_eq!(parse_application(&garbage), Err(AppError::Garbage));
        let mut last = app(b"app");
        last[63] = 1;
        assert_eq!(parse_application(&last), Err(AppError::Garbage));
    }
}
