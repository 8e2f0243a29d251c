// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The consumer protocol's decoder (`bufshare_consumer::wire`), on
//! arbitrary bytes: a header, then a body.
//!
//! Checked: no panic; a body whose size differs from the header's is
//! refused; a message that decodes encodes (with descriptors standing in
//! for the numbered ones) back to the very same bytes, so that the decoder
//! takes only what the encoder makes (no ignored bytes, reserved fields
//! or padding that could carry something), and what it encodes decodes to
//! the same message again.

#![no_main]

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use bufshare_consumer::wire::{parse, Header, WireError, HEADER_SIZE};
use libfuzzer_sys::fuzz_target;

/// A descriptor to stand for the numbered ones of a decoded ADD.
fn stand_in() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| File::open("/dev/null").expect("/dev/null"))
}

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<HEADER_SIZE>() else {
        return;
    };
    let Ok(header) = Header::parse(head) else {
        return;
    };
    assert_eq!(&header.to_bytes(), head, "header round trip");
    if body.len() != header.size {
        let refused = parse(&header, body);
        assert!(
            matches!(refused, Err(WireError::Size { size, expected, .. })
                if size == body.len() && expected == header.size),
            "a body of {} bytes, not {}: {refused:?}",
            body.len(),
            header.size
        );
        return;
    }
    let Ok(message) = parse(&header, body) else {
        return;
    };
    assert_eq!(message.kind(), header.kind);
    let fds = message.fds();
    assert!(fds.len() <= header.nr_fds);
    let mut numbers: Vec<usize> = fds.into_iter().copied().collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert!(
        numbers.iter().all(|&i| i < header.nr_fds),
        "descriptor numbers in range"
    );

    let numbered = format!("{message:?}");
    let message = message.map_fds(|_| stand_in().as_fd());
    let encoded = message.encode().expect("a decoded message encodes");
    assert_eq!(
        encoded.bytes, data,
        "decoded {numbered}: re-encoded differently"
    );
    assert_eq!(encoded.fds.len(), header.nr_fds);
});
