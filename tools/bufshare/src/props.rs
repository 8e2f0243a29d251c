// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! Buffer properties: the NUL-separated `name=value` blob of the UAPI.

pub use bufshare_uapi::props::NAME_MAX;
use bufshare_uapi::props::{self as rules, is_name, is_value, PropsError};

use crate::error::{Error, Result};

/// Whether `name` is 1 to 63 characters out of `[A-Za-z0-9_.-]`: the rule
/// for property names and application names alike
/// ([`bufshare_uapi::props::is_name`]).
pub fn is_valid_name(name: &str) -> bool {
    is_name(name)
}

/// Whether `value` may be a property value: no byte below 0x20 nor 0x7f
/// ([`bufshare_uapi::props::is_value`]).
pub fn is_valid_value(value: &str) -> bool {
    is_value(value.as_bytes())
}

/// A buffer's properties: `name=value` pairs, names unique, in the order
/// they were first set.
///
/// Values are text: the kernel allows any bytes but control characters;
/// this type holds UTF-8 only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<(String, String)>,
}

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing its value if it is there.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> Result<&mut Self> {
        let value = value.into();
        if !is_valid_name(name) {
            return Err(Error::InvalidName(name.to_owned()));
        }
        if !is_valid_value(&value) {
            return Err(Error::InvalidValue(name.to_owned()));
        }
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.entries.push((name.to_owned(), value)),
        }
        Ok(self)
    }

    /// [`Properties::set`], by value: `Properties::new().with("a", "1")?`.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Result<Self> {
        self.set(name, value)?;
        Ok(self)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` as an unsigned integer (decimal).
    pub fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(i).1)
    }

    /// How many properties there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Adds every property of `other` (replacing those of the same name):
    /// what the kernel does with `BUFSHARE_PROPS_MERGE`.
    pub fn merge(&mut self, other: &Properties) {
        for (n, v) in &other.entries {
            match self.entries.iter_mut().find(|(m, _)| m == n) {
                Some((_, w)) => w.clone_from(v),
                None => self.entries.push((n.clone(), v.clone())),
            }
        }
    }

    /// The size of [`Properties::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum()
    }

    /// The UAPI blob: every `name=value` followed by a NUL.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for (n, v) in &self.entries {
            out.extend_from_slice(n.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    /// Parses a UAPI blob (empty: no properties), checking it as the
    /// kernel does, and refusing values that are not UTF-8. The blob must
    /// end with a NUL before anything else is looked at; then each string
    /// in turn must have a `=`, a UTF-8 name and value, a name not seen
    /// before, and a valid name and value ([`Properties::set`]).
    pub fn parse(blob: &[u8]) -> Result<Self> {
        let mut props = Properties::new();
        if !blob.is_empty() && !blob.ends_with(&[0]) {
            return Err(Error::Malformed("the last string is not NUL-terminated"));
        }
        for raw in rules::split(blob) {
            let raw = raw.map_err(|e| match e {
                PropsError::NoEquals(_) => Error::Malformed("a string has no '='"),
                _ => Error::Malformed("the last string is not NUL-terminated"),
            })?;
            let name = std::str::from_utf8(raw.name)
                .map_err(|_| Error::Malformed("a name is not UTF-8"))?;
            let value = std::str::from_utf8(raw.value)
                .map_err(|_| Error::Malformed("a value is not UTF-8"))?;
            if props.get(name).is_some() {
                return Err(Error::DuplicateName(name.to_owned()));
            }
            props.set(name, value)?;
        }
        Ok(props)
    }
}

impl<'a> TryFrom<&[(&'a str, &'a str)]> for Properties {
    type Error = Error;

    /// From pairs; a name given twice is an error.
    fn try_from(pairs: &[(&'a str, &'a str)]) -> Result<Self> {
        let mut props = Properties::new();
        for &(n, v) in pairs {
            if props.get(n).is_some() {
                return Err(Error::DuplicateName(n.to_owned()));
            }
            props.set(n, v)?;
        }
        Ok(props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty() {
        let p = Properties::new();
        assert!(p.is_empty());
        assert_eq!(p.to_bytes(), b"");
        assert_eq!(p.encoded_len(), 0);
        assert_eq!(Properties::parse(b"").unwrap(), p);
    }

    #[test]
    fn build_and_encode() {
        let p = Properties::new()
            .with("width", "640")
            .unwrap()
            .with("height", "480")
            .unwrap()
            .with("label", "")
            .unwrap();
        assert_eq!(p.to_bytes(), b"width=640\0height=480\0label=\0");
        assert_eq!(p.encoded_len(), p.to_bytes().len());
        assert_eq!(p.get("height"), Some("480"));
        assert_eq!(p.get_u64("width"), Some(640));
        assert_eq!(p.get_u64("label"), None);
        assert_eq!(p.get("nope"), None);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn set_replaces_in_place() {
        let mut p = Properties::new();
        p.set("a", "1").unwrap().set("b", "2").unwrap();
        p.set("a", "3").unwrap();
        assert_eq!(p.to_bytes(), b"a=3\0b=2\0");
        assert_eq!(p.remove("a").as_deref(), Some("3"));
        assert_eq!(p.remove("a"), None);
        assert_eq!(p.to_bytes(), b"b=2\0");
    }

    #[test]
    fn round_trip() {
        let p = Properties::try_from(
            &[
                ("format", "875713112"),
                ("x.y-z_0", "a value = with = signs"),
            ][..],
        )
        .unwrap();
        assert_eq!(Properties::parse(&p.to_bytes()).unwrap(), p);
        let v: Vec<_> = p.iter().collect();
        assert_eq!(v[1], ("x.y-z_0", "a value = with = signs"));
    }

    #[test]
    fn names() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name("A-Z.a_z0-9"));
        assert!(is_valid_name(&"n".repeat(63)));
        assert!(!is_valid_name(&"n".repeat(64)));
        assert!(!is_valid_name(""));
        for bad in ["a b", "a=b", "a/b", "é", "a\0", "a\n"] {
            assert!(!is_valid_name(bad), "{bad:?}");
            assert!(matches!(
                Properties::new().set(bad, "v"),
                Err(Error::InvalidName(_))
            ));
        }
    }

    #[test]
    fn values() {
        assert!(is_valid_value(""));
        assert!(is_valid_value("any text, even = and é ~"));
        for bad in ["a\tb", "\n", "\0", "x\x7f", "\x1f"] {
            assert!(!is_valid_value(bad), "{bad:?}");
            let e = Properties::new().set("n", bad).unwrap_err();
            assert!(matches!(e, Error::InvalidValue(_)));
            assert_eq!(e.errno(), libc::EINVAL);
        }
    }

    #[test]
    fn parse_rejects() {
        let cases: &[&[u8]] = &[
            b"a=1",        // no NUL at the end
            b"\0",         // empty string, no '='
            b"a\0",        // no '='
            b"=1\0",       // empty name
            b"a=1\0\0",    // empty string after
            b"a b=1\0",    // bad name
            b"a=\x01\0",   // control character
            b"a=1\0a=2\0", // duplicate
            b"a=\xff\0",   // not UTF-8
        ];
        for c in cases {
            assert!(Properties::parse(c).is_err(), "{c:?}");
        }
        assert!(matches!(
            Properties::parse(b"a=1\0a=2\0"),
            Err(Error::DuplicateName(n)) if n == "a"
        ));
        assert!(Properties::try_from(&[("a", "1"), ("a", "2")][..]).is_err());
    }

    #[test]
    fn parse_accepts() {
        let p = Properties::parse(b"a=1\0b=\0c==\0").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some(""));
        assert_eq!(p.get("c"), Some("="));
    }

    #[test]
    fn merge_like_the_kernel() {
        let mut p = Properties::try_from(&[("a", "1"), ("b", "2")][..]).unwrap();
        let q = Properties::try_from(&[("b", "3"), ("c", "4")][..]).unwrap();
        p.merge(&q);
        assert_eq!(p.to_bytes(), b"a=1\0b=3\0c=4\0");
    }
}
