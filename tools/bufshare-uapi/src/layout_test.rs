// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Compares the mirror with the C headers, as compiled by the C compiler.
//! The comparisons are generated from the headers by `build.rs`.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/layout_generated.rs"));
}

use generated::{layout, C_COMPILE_ERROR, MACROS, STRUCTS, UNSUPPORTED};

#[test]
fn headers_compile_in_c() {
    assert_eq!(C_COMPILE_ERROR, None, "the generated C layout file failed");
}

#[test]
fn headers_fully_understood() {
    assert!(
        UNSUPPORTED.is_empty(),
        "build.rs does not understand these header constructs, so the mirror \
         cannot be checked against them; mirror them and teach build.rs: {UNSUPPORTED:#?}"
    );
}

#[test]
fn layout_matches_c() {
    let values = layout();
    assert!(!values.is_empty());
    let mismatches: Vec<String> = values
        .iter()
        .filter(|(_, c, rust)| c != rust)
        .map(|(what, c, rust)| format!("{what}: C says {c:#x}, the Rust mirror {rust:#x}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "the Rust mirror differs from the headers:\n{}",
        mismatches.join("\n")
    );
}

/// The other direction: every item of the mirror was found in the headers,
/// so the header parser cannot silently skip one.
#[test]
fn every_mirror_item_is_checked() {
    let macros = [
        "VIRTIO_BUFSHARE_DEVICE_ID",
        "VIRTIO_BUFSHARE_VQ_CMD",
        "VIRTIO_BUFSHARE_NUM_VQS",
        "VIRTIO_BUFSHARE_VERSION",
        "VIRTIO_BUFSHARE_CMD_GET_INFO",
        "VIRTIO_BUFSHARE_S_OK",
        "VIRTIO_BUFSHARE_S_UNSUPPORTED",
        "VIRTIO_BUFSHARE_S_INVALID",
        "VIRTIO_BUFSHARE_S_DEVICE_ERROR",
        "VIRTIO_BUFSHARE_NAME_LEN",
        "BUFSHARE_IOCTL_BASE",
        "BUFSHARE_NAME_LEN",
        "BUFSHARE_IOC_GET_INFO",
    ];
    let structs = [
        "virtio_bufshare_config",
        "virtio_bufshare_cmd_hdr",
        "virtio_bufshare_resp_hdr",
        "virtio_bufshare_resp_info",
        "bufshare_info",
    ];
    for m in macros {
        assert!(MACROS.contains(&m), "macro {m} not found in the headers");
    }
    for s in structs {
        assert!(STRUCTS.contains(&s), "struct {s} not found in the headers");
    }
    assert_eq!(MACROS.len(), macros.len(), "headers: {MACROS:?}");
    assert_eq!(STRUCTS.len(), structs.len(), "headers: {STRUCTS:?}");
}

#[test]
fn get_info_ioctl_number() {
    // _IOR('\xb5', 0, 80 bytes) on x86_64: dir 2, size 80, type 0xb5, nr 0.
    assert_eq!(core::mem::size_of::<crate::BufshareInfo>(), 80);
    assert_eq!(crate::BUFSHARE_IOC_GET_INFO, 0x8050_b500);
}
