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
        "VIRTIO_BUFSHARE_VQ_EVENT",
        "VIRTIO_BUFSHARE_NUM_VQS",
        "VIRTIO_BUFSHARE_NUM_VQS_EVENTS",
        "VIRTIO_BUFSHARE_VERSION",
        "VIRTIO_BUFSHARE_F_BUFFERS",
        "VIRTIO_BUFSHARE_F_GENERATION",
        "VIRTIO_BUFSHARE_F_EVENTS",
        "VIRTIO_BUFSHARE_CMD_GET_INFO",
        "VIRTIO_BUFSHARE_CMD_REGISTER",
        "VIRTIO_BUFSHARE_CMD_ADD_RANGES",
        "VIRTIO_BUFSHARE_CMD_UPDATE",
        "VIRTIO_BUFSHARE_CMD_SET_PROPERTIES",
        "VIRTIO_BUFSHARE_CMD_UNREGISTER",
        "VIRTIO_BUFSHARE_CMD_GET_CONSUMERS",
        "VIRTIO_BUFSHARE_S_OK",
        "VIRTIO_BUFSHARE_S_UNSUPPORTED",
        "VIRTIO_BUFSHARE_S_INVALID",
        "VIRTIO_BUFSHARE_S_DEVICE_ERROR",
        "VIRTIO_BUFSHARE_S_NO_BUFFER",
        "VIRTIO_BUFSHARE_S_NO_SPACE",
        "VIRTIO_BUFSHARE_NAME_LEN",
        "VIRTIO_BUFSHARE_APP_LEN",
        "VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD",
        "VIRTIO_BUFSHARE_PROP_NAME_MAX",
        "VIRTIO_BUFSHARE_UPDATE_F_RANGE",
        "VIRTIO_BUFSHARE_UPDATE_F_RECT",
        "VIRTIO_BUFSHARE_EVT_RELEASED",
        "VIRTIO_BUFSHARE_EVT_FREED",
        "VIRTIO_BUFSHARE_EVT_CONSUMERS",
        "VIRTIO_BUFSHARE_EVT_LOST",
        "VIRTIO_BUFSHARE_EVT_OVERFLOW",
        "BUFSHARE_IOCTL_BASE",
        "BUFSHARE_NAME_LEN",
        "BUFSHARE_APP_LEN",
        "BUFSHARE_UPDATE_RANGE",
        "BUFSHARE_UPDATE_RECT",
        "BUFSHARE_UPDATE_NOWAIT",
        "BUFSHARE_PROPS_MERGE",
        "BUFSHARE_KIND_MEMFD",
        "BUFSHARE_KIND_DMABUF",
        "BUFSHARE_IOC_GET_INFO",
        "BUFSHARE_IOC_REGISTER",
        "BUFSHARE_IOC_UPDATE",
        "BUFSHARE_IOC_SET_PROPERTIES",
        "BUFSHARE_IOC_UNREGISTER",
        "BUFSHARE_IOC_BUFFER_INFO",
        "BUFSHARE_BIND_UID",
        "BUFSHARE_BIND_GID",
        "BUFSHARE_IOC_BIND_APPLICATION",
        "BUFSHARE_IOC_GET_BINDING",
        "BUFSHARE_UNREGISTER_WAIT",
        "BUFSHARE_EVENT_RELEASED",
        "BUFSHARE_EVENT_FREED",
        "BUFSHARE_EVENT_CONSUMERS",
        "BUFSHARE_EVENT_LOST",
        "BUFSHARE_EVENT_OVERFLOW",
        "BUFSHARE_IOC_UNREGISTER_FLAGS",
        "BUFSHARE_IOC_GET_CONSUMERS",
        "VIRTIO_BUFSHARE_F_IMPORT",
        "VIRTIO_BUFSHARE_SHM_IMPORT",
        "VIRTIO_BUFSHARE_CMD_ATTACH",
        "VIRTIO_BUFSHARE_CMD_DETACH",
        "VIRTIO_BUFSHARE_CMD_IMPORT_INFO",
        "VIRTIO_BUFSHARE_CMD_RELEASE",
        "VIRTIO_BUFSHARE_CMD_CLOSE",
        "VIRTIO_BUFSHARE_S_DENIED",
        "VIRTIO_BUFSHARE_IMPORT_F_READ_ONLY",
        "VIRTIO_BUFSHARE_EVT_IMPORT_ADDED",
        "VIRTIO_BUFSHARE_EVT_IMPORT_UPDATED",
        "VIRTIO_BUFSHARE_EVT_IMPORT_REMOVED",
        "VIRTIO_BUFSHARE_EVT_IMPORT_NO_SPACE",
        "BUFSHARE_EVENT_IMPORT_ADDED",
        "BUFSHARE_EVENT_IMPORT_UPDATED",
        "BUFSHARE_EVENT_IMPORT_REMOVED",
        "BUFSHARE_EVENT_IMPORT_NO_SPACE",
        "BUFSHARE_EVENT_IMPORT_DETACHED",
        "BUFSHARE_IMPORT_READ_ONLY",
        "BUFSHARE_IOC_ATTACH",
        "BUFSHARE_IOC_DETACH",
        "BUFSHARE_IOC_IMPORT",
        "BUFSHARE_IOC_IMPORT_RELEASE",
        "BUFSHARE_IOC_IMPORT_CLOSE",
        "BUFSHARE_IOC_IMPORT_INFO",
    ];
    let structs = [
        "virtio_bufshare_config",
        "virtio_bufshare_cmd_hdr",
        "virtio_bufshare_resp_hdr",
        "virtio_bufshare_resp_info",
        "virtio_bufshare_range",
        "virtio_bufshare_cmd_register",
        "virtio_bufshare_cmd_add_ranges",
        "virtio_bufshare_cmd_update",
        "virtio_bufshare_cmd_set_properties",
        "virtio_bufshare_cmd_unregister",
        "virtio_bufshare_cmd_get_consumers",
        "virtio_bufshare_resp_consumers",
        "virtio_bufshare_event",
        "virtio_bufshare_cmd_attach",
        "virtio_bufshare_resp_attach",
        "virtio_bufshare_cmd_detach",
        "virtio_bufshare_cmd_import",
        "virtio_bufshare_resp_import_info",
        "virtio_bufshare_cmd_release",
        "virtio_bufshare_event_import",
        "bufshare_info",
        "bufshare_register",
        "bufshare_update",
        "bufshare_set_properties",
        "bufshare_buffer_info",
        "bufshare_app_binding",
        "bufshare_unregister",
        "bufshare_consumers",
        "bufshare_event",
        "bufshare_import_event",
        "bufshare_attach",
        "bufshare_import",
        "bufshare_import_release",
        "bufshare_import_info",
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
    // _IOR('\xb9', 0, 80 bytes) on x86_64: dir 2, size 80, type 0xb9, nr 0.
    assert_eq!(core::mem::size_of::<crate::BufshareInfo>(), 80);
    assert_eq!(crate::BUFSHARE_IOC_GET_INFO, 0x8050_b900);
}

#[test]
fn buffer_ioctl_numbers() {
    // On x86_64: dir (1 write, 3 read/write) << 30 | size << 16 | 0xb9 << 8 | nr.
    use core::mem::size_of;
    assert_eq!(size_of::<crate::BufshareRegister>(), 112);
    assert_eq!(crate::BUFSHARE_IOC_REGISTER, 0xc070_b901);
    assert_eq!(size_of::<crate::BufshareUpdate>(), 56);
    assert_eq!(crate::BUFSHARE_IOC_UPDATE, 0xc038_b902);
    assert_eq!(size_of::<crate::BufshareSetProperties>(), 24);
    assert_eq!(crate::BUFSHARE_IOC_SET_PROPERTIES, 0x4018_b903);
    assert_eq!(crate::BUFSHARE_IOC_UNREGISTER, 0x4008_b904);
    assert_eq!(size_of::<crate::BufshareBufferInfo>(), 112);
    assert_eq!(crate::BUFSHARE_IOC_BUFFER_INFO, 0xc070_b905);
    assert_eq!(size_of::<crate::BufshareAppBinding>(), 80);
    assert_eq!(crate::BUFSHARE_IOC_BIND_APPLICATION, 0x4050_b906);
    assert_eq!(crate::BUFSHARE_IOC_GET_BINDING, 0xc050_b907);
}

#[test]
fn wire_command_sizes() {
    use core::mem::size_of;
    assert_eq!(size_of::<crate::VirtioBufshareRange>(), 16);
    assert_eq!(size_of::<crate::VirtioBufshareCmdRegister>(), 104);
    assert_eq!(size_of::<crate::VirtioBufshareCmdAddRanges>(), 24);
    assert_eq!(size_of::<crate::VirtioBufshareCmdUpdate>(), 64);
    assert_eq!(size_of::<crate::VirtioBufshareCmdSetProperties>(), 24);
    assert_eq!(size_of::<crate::VirtioBufshareCmdUnregister>(), 16);
    assert_eq!(size_of::<crate::VirtioBufshareCmdGetConsumers>(), 72);
    assert_eq!(size_of::<crate::VirtioBufshareRespConsumers>(), 16);
    assert_eq!(size_of::<crate::VirtioBufshareEvent>(), 96);
}

#[test]
fn default_is_all_zeroes() {
    use vm_memory::ByteValued;
    let register = crate::VirtioBufshareCmdRegister::default();
    assert!(register.as_slice().iter().all(|&b| b == 0));
    let info = crate::BufshareBufferInfo::default();
    assert!(info.as_slice().iter().all(|&b| b == 0));
}
