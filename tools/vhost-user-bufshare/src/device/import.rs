// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The import commands (with `VIRTIO_BUFSHARE_F_IMPORT`): ATTACH, DETACH,
//! IMPORT_INFO, RELEASE and CLOSE. The device checks their form; the
//! import hub ([`crate::import::hub::ImportHub`]) carries them out.

use std::mem::size_of;

use bufshare_consumer::props::is_name;
use bufshare_uapi::{
    VirtioBufshareCmdAttach, VirtioBufshareCmdDetach, VirtioBufshareCmdImport,
    VirtioBufshareCmdRelease, VirtioBufshareRespAttach, VirtioBufshareRespHdr,
    VirtioBufshareRespImportInfo, VIRTIO_BUFSHARE_NAME_LEN, VIRTIO_BUFSHARE_S_INVALID,
    VIRTIO_BUFSHARE_S_OK, VIRTIO_BUFSHARE_S_UNSUPPORTED,
};
use log::debug;
use vm_memory::ByteValued;

use super::{read_obj, status_only, BufshareDevice};
use crate::guest_warn;
use crate::props::parse_application;

/// The command `T` that `request` is, all of it, or `S_INVALID`.
fn exact<T: ByteValued + Default>(cmd: &str, request: &[u8]) -> Result<T, u32> {
    match read_obj::<T>(request) {
        Some((obj, [])) => Ok(obj),
        _ => {
            guest_warn!(
                "{cmd}: {} bytes, {} expected",
                request.len(),
                size_of::<T>()
            );
            Err(VIRTIO_BUFSHARE_S_INVALID)
        }
    }
}

/// A device name (`source`): 1 to 31 characters out of
/// `[A-Za-z0-9_.-]`, then NUL bytes.
fn parse_source(bytes: &[u8; VIRTIO_BUFSHARE_NAME_LEN]) -> Option<String> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    let (name, padding) = bytes.split_at(nul);
    let name = std::str::from_utf8(name).ok()?;
    (is_name(name) && padding.iter().all(|&b| b == 0)).then(|| name.to_string())
}

impl BufshareDevice {
    /// Runs an import command; `None` if `cmd` is not one.
    pub(super) fn execute_import(
        &mut self,
        cmd: u32,
        request: &[u8],
    ) -> Option<Result<Vec<u8>, u32>> {
        use bufshare_uapi::{
            VIRTIO_BUFSHARE_CMD_ATTACH as ATTACH, VIRTIO_BUFSHARE_CMD_CLOSE as CLOSE,
            VIRTIO_BUFSHARE_CMD_DETACH as DETACH, VIRTIO_BUFSHARE_CMD_IMPORT_INFO as INFO,
            VIRTIO_BUFSHARE_CMD_RELEASE as RELEASE,
        };
        if !matches!(cmd, ATTACH | DETACH | INFO | RELEASE | CLOSE) {
            return None;
        }
        let Some(port) = self.imports.clone().filter(|_| self.import_enabled) else {
            guest_warn!("import command {cmd:#x} without VIRTIO_BUFSHARE_F_IMPORT");
            return Some(Err(VIRTIO_BUFSHARE_S_UNSUPPORTED));
        };
        let (hub, guest) = (&port.hub, port.guest.as_str());
        let ok = |()| status_only(VIRTIO_BUFSHARE_S_OK);
        Some(match cmd {
            ATTACH => exact::<VirtioBufshareCmdAttach>("ATTACH", request).and_then(|c| {
                let source = parse_source(&c.source).ok_or_else(|| {
                    guest_warn!("ATTACH: the source is not a device name");
                    VIRTIO_BUFSHARE_S_INVALID
                })?;
                let application = parse_application(&c.application).map_err(|e| {
                    guest_warn!("ATTACH: {e}");
                    VIRTIO_BUFSHARE_S_INVALID
                })?;
                let attachment = hub.attach(guest, &source, &application)?;
                debug!("ATTACH {source}/{application}: {attachment}");
                let answer = VirtioBufshareRespAttach {
                    hdr: VirtioBufshareRespHdr::with_status(VIRTIO_BUFSHARE_S_OK),
                    attachment: attachment.into(),
                    reserved: 0.into(),
                };
                Ok(answer.as_slice().to_vec())
            }),
            DETACH => exact::<VirtioBufshareCmdDetach>("DETACH", request).and_then(|c| {
                if c.reserved.to_native() != 0 {
                    guest_warn!("DETACH: reserved field not 0");
                    return Err(VIRTIO_BUFSHARE_S_INVALID);
                }
                hub.detach(guest, c.attachment.to_native(), &mut self.pending)
                    .map(ok)
            }),
            INFO => exact::<VirtioBufshareCmdImport>("IMPORT_INFO", request).and_then(|c| {
                let info = hub.info(guest, c.import_id.to_native())?;
                let props = info.props.to_bytes();
                let answer = VirtioBufshareRespImportInfo {
                    hdr: VirtioBufshareRespHdr::with_status(VIRTIO_BUFSHARE_S_OK),
                    buffer_id: info.buffer_id.into(),
                    shm_offset: info.shm_offset.into(),
                    size: info.size.into(),
                    seqno: info.seqno.into(),
                    flags: info.flags.into(),
                    props_size: (props.len() as u32).into(),
                };
                Ok([answer.as_slice(), &props].concat())
            }),
            RELEASE => exact::<VirtioBufshareCmdRelease>("RELEASE", request).and_then(|c| {
                hub.release(guest, c.import_id.to_native(), c.seqno.to_native())
                    .map(ok)
            }),
            _ => exact::<VirtioBufshareCmdImport>("CLOSE", request).and_then(|c| {
                hub.close(guest, c.import_id.to_native(), &mut self.pending)
                    .map(ok)
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_specification_s() {
        let sizes = [
            size_of::<VirtioBufshareCmdAttach>(),
            size_of::<VirtioBufshareCmdDetach>(),
            size_of::<VirtioBufshareCmdImport>(),
            size_of::<VirtioBufshareCmdRelease>(),
            size_of::<VirtioBufshareRespImportInfo>(),
            size_of::<VirtioBufshareRespAttach>(),
        ];
        assert_eq!(sizes, [104, 16, 16, 24, 48, 16]);
    }

    #[test]
    fn source_names() {
        let name = |s: &[u8]| {
            let mut bytes = [0u8; VIRTIO_BUFSHARE_NAME_LEN];
            bytes[..s.len()].copy_from_slice(s);
            parse_source(&bytes)
        };
        assert_eq!(name(b"vm-a.1_x"), Some("vm-a.1_x".into()));
        assert_eq!(name(b""), None);
        assert_eq!(name(b"a b"), None);
        assert_eq!(name(b"a\0b"), None);
        assert_eq!(name(&[b'x'; 31]), Some("x".repeat(31)));
        assert_eq!(name(&[b'x'; 32]), None, "no NUL");
        assert_eq!(name(b"\xc3\xa9"), None);
    }
}
