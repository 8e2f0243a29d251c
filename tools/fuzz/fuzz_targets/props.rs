// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The property parser, on arbitrary bytes: `bufshare_uapi::props` (what
//! the guest crate, the backend and the consumer library check),
//! `bufshare_consumer::Properties` and the backend's `parse_properties`.
//!
//! Checked: no panic; the three agree; what parses is made of valid names
//! and values, no name twice, and encodes back to the very same bytes; what
//! does not parse is refused at the start of a string, and everything
//! before that string parses; `split` ends at the first error.

#![no_main]

use bufshare_consumer::Properties;
use bufshare_uapi::props::{is_name, is_value, parse, split, PropsError};
use libfuzzer_sys::fuzz_target;
use vhost_user_bufshare::props::{parse_properties, PropsError as DeviceError};

/// Offset of the string at fault, if the error has one.
fn offset(e: &PropsError) -> Option<usize> {
    match e {
        PropsError::Unterminated(at)
        | PropsError::NoEquals(at)
        | PropsError::BadName(at)
        | PropsError::BadValue(at) => Some(*at),
        PropsError::Duplicate(_) => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // The strings as split: each starts where the one before ended, and the
    // sequence stops at its first error.
    let mut next = 0;
    let mut raws = Vec::new();
    let mut split_error = None;
    for raw in split(data) {
        assert!(split_error.is_none(), "split went on after an error");
        match raw {
            Ok(raw) => {
                assert_eq!(raw.at, next, "strings follow each other");
                let len = raw.name.len() + 1 + raw.value.len();
                assert_eq!(&data[raw.at..raw.at + raw.name.len()], raw.name);
                assert_eq!(data[raw.at + raw.name.len()], b'=');
                assert!(!raw.name.contains(&b'='), "split at the first '='");
                assert_eq!(data[raw.at + len], 0, "NUL-terminated");
                next = raw.at + len + 1;
                raws.push(raw);
            }
            Err(e) => {
                assert_eq!(
                    offset(&e),
                    Some(next),
                    "split error where the string starts"
                );
                split_error = Some(e);
            }
        }
    }

    let parsed = parse(data);
    let consumer = Properties::parse(data);
    for max in [0, data.len().saturating_sub(1), data.len(), usize::MAX] {
        let device = parse_properties(data, max);
        match (&parsed, &device) {
            (_, Err(DeviceError::TooLarge { size, max: m })) => {
                assert!(data.len() > max && *size == data.len() && *m == max);
            }
            (Ok(_), Ok(props)) => assert_eq!(Ok(props), consumer.as_ref()),
            (Err(e), Err(d)) => assert_eq!(DeviceError::from(e.clone()), *d),
            _ => panic!("uapi {parsed:?} and device {device:?} disagree"),
        }
        if data.len() > max {
            assert!(device.is_err(), "more than max accepted");
        }
    }

    match parsed {
        Ok(props) => {
            assert!(split_error.is_none());
            assert_eq!(props.len(), raws.len());
            let consumer = consumer.expect("consumer library agrees");
            assert_eq!(consumer.len(), props.len());
            assert_eq!(consumer.wire_len(), data.len());
            // Round trip, both ways.
            assert_eq!(consumer.to_bytes(), data);
            let again = Properties::from_pairs(props.iter().map(|&(n, v)| (n, v)))
                .expect("parsed properties are valid pairs");
            assert_eq!(again, consumer);
            for (i, &(name, value)) in props.iter().enumerate() {
                assert!(is_name(name) && is_value(value));
                assert_eq!(name.as_bytes(), raws[i].name);
                assert_eq!(value, raws[i].value);
                assert!(props[..i].iter().all(|&(n, _)| n != name), "{name} twice");
                assert_eq!(consumer.get(name), Some(value));
            }
        }
        Err(e) => {
            assert_eq!(consumer.as_ref().err(), Some(&e), "consumer library agrees");
            match offset(&e) {
                Some(at) => {
                    // Everything before the string at fault parses.
                    assert!(at < data.len());
                    assert!(at == 0 || data[at - 1] == 0);
                    assert!(parse(&data[..at]).is_ok(), "prefix before {at} parses");
                }
                None => {
                    // A duplicate: both copies are valid, so the error is
                    // not a split error and the name is a valid name.
                    let PropsError::Duplicate(name) = &e else {
                        unreachable!()
                    };
                    assert!(is_name(name));
                    assert!(raws.iter().filter(|r| r.name == name.as_bytes()).count() >= 2);
                }
            }
        }
    }
});
