// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The lines `bufshare-watch` prints for each event, and writes to its log.
//!
//! One line per event, a keyword then `key=value` fields in a fixed order,
//! separated by single spaces; no value contains a space (see
//! [`sanitize`]). Numbers are decimal, CRC-32s 8 lowercase hex digits:
//!
//! ```text
//! WELCOME version=V memory=dmabuf|segments
//! ADD guest=G id=N app=A size=S seqno=Q memory=dmabuf|segments crc32=XXXXXXXX props=P
//! UPDATE guest=G id=N seqno=Q range=OFF+LEN|- rect=X,Y,WxH|- crc32=XXXXXXXX
//! PROPERTIES guest=G id=N props=P
//! REMOVE guest=G id=N
//! RESET guest=G reason=DEVICE_RESET|DISCONNECTED|OVERFLOW
//! ERROR code=PROTOCOL|VERSION|DENIED|OVERFLOW|BUSY|SHUTDOWN text=T
//! FRAME guest=G id=N seqno=Q file=PATH
//! VERIFY guest=G id=N seqno=Q ok
//! VERIFY guest=G id=N seqno=Q mismatch expected=X actual=Y
//! VERIFY guest=G id=N seqno=Q missing
//! ```
//!
//! `P` is the buffer's properties, `name=value` in the guest's order,
//! separated by commas, or `-` when there are none; white space and commas
//! in values are replaced by `_`, control characters (C0, DEL and C1, which
//! values may hold: U+0080 to U+009F) by their UTF-8 bytes as `\xNN`, a
//! backslash by `\\`, and bytes that are not UTF-8 by U+FFFD. In ERROR's
//! text and FRAME's path, white space is replaced by `_`. A CRC-32
//! that could not be computed (the buffer could not be mapped) is `-`.

use std::fmt::Write as _;
use std::path::Path;

use bufshare_consumer::{
    escape_controls, Add, ErrorCode, ErrorMessage, Properties, PropertiesChanged, Remove, Reset,
    ResetReason, Update, Welcome,
};

use crate::checksum::format_crc32;

/// `value` fit for a field, and for a terminal: control characters
/// escaped (C1 ones included, which a property value may hold, and which a
/// terminal would act on: [`escape_controls`]), then characters that are
/// white space or commas made `_` (a property value may hold both; names
/// never do).
pub fn sanitize(value: &str) -> String {
    let escaped = escape_controls(value.as_bytes(), b"");
    String::from_utf8_lossy(&escaped)
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == ',' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// `value` with its white space replaced by `_`.
pub fn no_white_space(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// The `props=` value: `name=value,...` in order, values sanitized and
/// bytes that are not UTF-8 replaced; `-` when there are none.
pub fn props(properties: &Properties) -> String {
    if properties.is_empty() {
        return "-".to_owned();
    }
    let mut out = String::new();
    for (i, prop) in properties.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&prop.name);
        out.push('=');
        out.push_str(&sanitize(&String::from_utf8_lossy(&prop.value)));
    }
    out
}

/// A CRC-32 field value: 8 lowercase hex digits, `-` if none.
fn crc(crc: Option<u32>) -> String {
    crc.map_or_else(|| "-".to_owned(), format_crc32)
}

/// The protocol's name of an ERROR code.
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Protocol => "PROTOCOL",
        ErrorCode::Version => "VERSION",
        ErrorCode::Denied => "DENIED",
        ErrorCode::Overflow => "OVERFLOW",
        ErrorCode::Busy => "BUSY",
        ErrorCode::Shutdown => "SHUTDOWN",
    }
}

/// The protocol's name of a RESET reason.
pub fn reset_reason_name(reason: ResetReason) -> &'static str {
    match reason {
        ResetReason::DeviceReset => "DEVICE_RESET",
        ResetReason::Disconnected => "DISCONNECTED",
        ResetReason::Overflow => "OVERFLOW",
    }
}

/// `WELCOME version=V memory=F`.
pub fn welcome(w: &Welcome) -> String {
    format!("WELCOME version={} memory={}", w.version, w.memory_form)
}

/// `ADD ...`, with the CRC-32 of the whole buffer.
pub fn add<F>(a: &Add<F>, crc32: Option<u32>) -> String {
    format!(
        "ADD guest={} id={} app={} size={} seqno={} memory={} crc32={} props={}",
        a.guest,
        a.buffer_id,
        a.application,
        a.size,
        a.seqno,
        a.memory.form(),
        crc(crc32),
        props(&a.properties)
    )
}

/// `UPDATE ...`, with the CRC-32 of the whole buffer.
pub fn update(u: &Update, crc32: Option<u32>) -> String {
    let mut line = format!(
        "UPDATE guest={} id={} seqno={}",
        u.guest, u.buffer_id, u.seqno
    );
    match u.range {
        Some(r) => write!(line, " range={}+{}", r.offset, r.len),
        None => write!(line, " range=-"),
    }
    .expect("writing to a String");
    match u.rect {
        Some(r) => write!(line, " rect={},{},{}x{}", r.x, r.y, r.width, r.height),
        None => write!(line, " rect=-"),
    }
    .expect("writing to a String");
    write!(line, " crc32={}", crc(crc32)).expect("writing to a String");
    line
}

/// `PROPERTIES guest=G id=N props=P`.
pub fn properties(p: &PropertiesChanged) -> String {
    format!(
        "PROPERTIES guest={} id={} props={}",
        p.guest,
        p.buffer_id,
        props(&p.properties)
    )
}

/// `REMOVE guest=G id=N`.
pub fn remove(r: &Remove) -> String {
    format!("REMOVE guest={} id={}", r.guest, r.buffer_id)
}

/// `RESET guest=G reason=R`.
pub fn reset(r: &Reset) -> String {
    format!(
        "RESET guest={} reason={}",
        r.guest,
        reset_reason_name(r.reason)
    )
}

/// `ERROR code=C text=T`, white space in the text replaced by `_`.
pub fn error(e: &ErrorMessage) -> String {
    format!(
        "ERROR code={} text={}",
        error_code_name(e.code),
        no_white_space(&e.message)
    )
}

/// `FRAME guest=G id=N seqno=Q file=PATH` (white space in the path
/// replaced by `_`: give `--dump` a directory without any).
pub fn frame(guest: &str, id: u64, seqno: u64, path: &Path) -> String {
    format!(
        "FRAME guest={guest} id={id} seqno={seqno} file={}",
        no_white_space(&path.to_string_lossy())
    )
}

/// The outcome of a `--verify` check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The frame's CRC-32 is the `crc32` property's.
    Ok,
    /// It is not; `expected` is the property's value (as the guest wrote
    /// it, if it is not 8 lowercase hex digits).
    Mismatch {
        /// The property's value.
        expected: String,
        /// The frame's CRC-32.
        actual: u32,
    },
    /// The buffer has no `crc32` property.
    Missing,
}

/// `VERIFY guest=G id=N seqno=Q ok|mismatch expected=X actual=Y|missing`.
pub fn verify(guest: &str, id: u64, seqno: u64, verdict: &Verdict) -> String {
    let outcome = match verdict {
        Verdict::Ok => "ok".to_owned(),
        Verdict::Mismatch { expected, actual } => {
            let expected = if expected.is_empty() {
                "-".to_owned()
            } else {
                sanitize(expected)
            };
            format!(
                "mismatch expected={expected} actual={}",
                format_crc32(*actual)
            )
        }
        Verdict::Missing => "missing".to_owned(),
    };
    format!("VERIFY guest={guest} id={id} seqno={seqno} {outcome}")
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use bufshare_consumer::{ByteRange, Memory, MemoryForm, Rect, Segment};

    use super::*;

    fn props_of(bytes: &[u8]) -> Properties {
        Properties::parse(bytes).unwrap()
    }

    #[test]
    fn property_lists() {
        assert_eq!(props(&Properties::default()), "-");
        assert_eq!(
            props(&props_of(
                b"width=640\0name=a b,c\0empty=\0eq=a=b\0bin=\xff~\0"
            )),
            "width=640,name=a_b_c,empty=,eq=a=b,bin=\u{fffd}~"
        );
        assert_eq!(sanitize("a\u{a0}b\u{2003}c"), "a_b_c");
        // C1 controls (CSI, NEL) reach no terminal.
        assert_eq!(
            props(&props_of("t=\u{9b}2J\u{85}x\\\0".as_bytes())),
            "t=\\xc2\\x9b2J\\xc2\\x85x\\\\"
        );
        assert_eq!(
            verify(
                "g",
                1,
                2,
                &Verdict::Mismatch {
                    expected: "\u{9b}0m".into(),
                    actual: 0
                }
            ),
            "VERIFY guest=g id=1 seqno=2 mismatch expected=\\xc2\\x9b0m actual=00000000"
        );
    }

    #[test]
    fn event_lines() {
        let welcome_msg = Welcome {
            version: 1,
            memory_form: MemoryForm::DmaBuf,
            queue_limit: 8,
            server: "x".into(),
        };
        assert_eq!(welcome(&welcome_msg), "WELCOME version=1 memory=dmabuf");
        let add_msg: Add<OwnedFd> = Add {
            guest: "vm0".into(),
            buffer_id: 7,
            application: "weston".into(),
            size: 4096,
            seqno: 3,
            properties: props_of(b"a=1\0b=x y\0"),
            memory: Memory::Segments {
                files: Vec::new(),
                segments: vec![Segment {
                    file: 0,
                    offset: 0,
                    len: 4096,
                }],
            },
        };
        assert_eq!(
            add(&add_msg, Some(0xabc)),
            "ADD guest=vm0 id=7 app=weston size=4096 seqno=3 memory=segments crc32=00000abc props=a=1,b=x_y"
        );
        assert!(add(&add_msg, None).contains(" crc32=- "));
        let mut up = Update {
            guest: "vm0".into(),
            buffer_id: 7,
            seqno: 4,
            range: None,
            rect: None,
        };
        assert_eq!(
            update(&up, Some(u32::MAX)),
            "UPDATE guest=vm0 id=7 seqno=4 range=- rect=- crc32=ffffffff"
        );
        up.range = Some(ByteRange {
            offset: 16,
            len: 32,
        });
        up.rect = Some(Rect {
            x: 1,
            y: 2,
            width: 3,
            height: 4,
        });
        assert_eq!(
            update(&up, Some(0)),
            "UPDATE guest=vm0 id=7 seqno=4 range=16+32 rect=1,2,3x4 crc32=00000000"
        );
        let pc = PropertiesChanged {
            guest: "vm0".into(),
            buffer_id: 7,
            properties: Properties::default(),
        };
        assert_eq!(properties(&pc), "PROPERTIES guest=vm0 id=7 props=-");
        assert_eq!(
            remove(&Remove {
                guest: "g".into(),
                buffer_id: 1
            }),
            "REMOVE guest=g id=1"
        );
        assert_eq!(
            reset(&Reset {
                guest: "g".into(),
                reason: ResetReason::DeviceReset
            }),
            "RESET guest=g reason=DEVICE_RESET"
        );
        assert_eq!(
            error(&ErrorMessage::new(ErrorCode::Denied, "no camera for you")),
            "ERROR code=DENIED text=no_camera_for_you"
        );
        assert_eq!(
            error(&ErrorMessage::new(ErrorCode::Shutdown, "")),
            "ERROR code=SHUTDOWN text="
        );
        assert_eq!(
            frame("g", 1, 2, Path::new("/d/g-1-2.png")),
            "FRAME guest=g id=1 seqno=2 file=/d/g-1-2.png"
        );
        assert_eq!(
            frame("g", 1, 2, Path::new("/a b,c/g-1-2.png")),
            "FRAME guest=g id=1 seqno=2 file=/a_b,c/g-1-2.png"
        );
    }

    #[test]
    fn verify_lines() {
        assert_eq!(
            verify("g", 1, 2, &Verdict::Ok),
            "VERIFY guest=g id=1 seqno=2 ok"
        );
        assert_eq!(
            verify("g", 1, 2, &Verdict::Missing),
            "VERIFY guest=g id=1 seqno=2 missing"
        );
        let mismatch = Verdict::Mismatch {
            expected: "cbf43926".into(),
            actual: 1,
        };
        assert_eq!(
            verify("g", 1, 2, &mismatch),
            "VERIFY guest=g id=1 seqno=2 mismatch expected=cbf43926 actual=00000001"
        );
        let malformed = Verdict::Mismatch {
            expected: "not hex".into(),
            actual: 1,
        };
        assert!(verify("g", 1, 2, &malformed).ends_with("expected=not_hex actual=00000001"));
        let empty = Verdict::Mismatch {
            expected: String::new(),
            actual: 1,
        };
        assert!(verify("g", 1, 2, &empty).ends_with("expected=- actual=00000001"));
    }
}
