// SPDX-License-Identifier: GPL-2.0

//! Importing the buffers of other guests (`VIRTIO_BUFSHARE_F_IMPORT`).
//!
//! An open file *attaches* to an application of another guest (ATTACH); the device then maps each
//! buffer that guest registers under the application into the device's import region, a virtio
//! shared memory region, and says where with an IMPORT_ADDED event. The driver checks the range
//! (inside the region, page-aligned, overlapping no range still in use) and passes the event on
//! to the file, which may take a dma-buf of the import (`BUFSHARE_IOC_IMPORT`): the region's pages
//! of the import, exported by [`IoMemExport`], which user space maps and other drivers attach to.
//!
//! The range of an import stays the driver's until it sends CLOSE, and it sends CLOSE only when
//! nothing of the guest reaches the range any more: never while the import's dma-buf lives. An
//! import without a dma-buf is closed when its application asks (`BUFSHARE_IOC_IMPORT_CLOSE`),
//! when the exporter's buffer is gone (IMPORT_REMOVED), and when its file is released; one with a
//! dma-buf is closed when the dma-buf is released after one of these.
//!
//! When the device is reset, lost its buffers or goes away, every attachment and import ends:
//! the dma-bufs are revoked (user mappings zapped, device mappings refused), and the ranges of
//! those still alive stay reserved ([`ImportState::stale`]) until they are released, so that no
//! later import is accepted over memory a stale dma-buf may still reach.

use kernel::{
    c_str,
    dma_buf::export::{
        IoMemExport,
        IoMemOwner,
        IoMemRevoke, //
    },
    fs::File,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
    uapi,
    virtio::ShmRegion,
};

use super::{
    events::import_record,
    BufshareDevice,
    Owner, //
};
use crate::{
    cmdq::Wait,
    commands::{
        Attach,
        Close,
        Detach,
        ImportEvent,
        ImportInfo,
        Release, //
    },
    props,
};

/// The length of a source name, with its NUL padding.
pub(crate) const SOURCE_LEN: usize = uapi::VIRTIO_BUFSHARE_NAME_LEN as usize;

/// Most attachments one open file has.
const ATTACHMENTS_PER_FILE: usize = 16;

/// Most IMPORT_* events kept while their attachment's ATTACH is being answered.
const PARKED_MAX: usize = 64;

const PAGE: u64 = kernel::page::PAGE_SIZE as u64;

/// Checks the import region the device offers: page-aligned, and a non-zero number of pages.
pub(crate) fn usable_region(region: Option<ShmRegion>) -> Option<ShmRegion> {
    region.filter(|r| {
        r.len != 0 && r.addr % PAGE == 0 && r.len % PAGE == 0 && r.addr.checked_add(r.len).is_some()
    })
}

/// An attachment of an open file.
struct Attachment {
    number: u32,
    owner: u64,
}

/// Who reaches an import's range.
enum Use {
    /// Nobody but the device: the driver may CLOSE it.
    Mapped,
    /// Its dma-buf, until released.
    Exported(IoMemRevoke),
}

/// An import the driver has not closed.
struct Import {
    id: u64,
    attachment: u32,
    /// The open file of the attachment.
    owner: u64,
    offset: u64,
    size: u64,
    buffer_id: u64,
    flags: u32,
    /// The last update the device sent.
    seqno: u64,
    /// The exporter's buffer is gone (IMPORT_REMOVED): closed once nobody reaches it.
    removed: bool,
    /// Its file was released or detached: closed once nobody reaches it.
    orphan: bool,
    used: Use,
}

impl Import {
    /// The pages of the region the import covers.
    fn span(&self) -> (u64, u64) {
        (self.offset, self.size.div_ceil(PAGE) * PAGE)
    }

    /// Whether the driver may close it now.
    fn closable(&self) -> bool {
        matches!(self.used, Use::Mapped)
    }
}

/// The range of a dma-buf revoked by a reset of the device, alive until released.
struct Stale {
    /// The round of imports it was made in ([`ImportState::round`]).
    round: u64,
    id: u64,
    offset: u64,
    span: u64,
}

/// The driver's imports and attachments.
pub(crate) struct ImportState {
    attachments: KVec<Attachment>,
    imports: KVec<Import>,
    stale: KVec<Stale>,
    /// ATTACH commands being answered: events of attachments the driver does not know yet wait
    /// in `parked` meanwhile.
    attaching: usize,
    parked: KVec<ImportEvent>,
    /// Counts the ends of all imports (resets, lost buffers): a dma-buf released after one
    /// belongs to an earlier round.
    round: u64,
    /// Set when the device went away: nothing is imported any more.
    gone: bool,
}

impl ImportState {
    pub(crate) fn new() -> Self {
        ImportState {
            attachments: KVec::new(),
            imports: KVec::new(),
            stale: KVec::new(),
            attaching: 0,
            parked: KVec::new(),
            round: 0,
            gone: false,
        }
    }

    fn attachment(&self, number: u32) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.number == number)
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.imports.iter().position(|i| i.id == id)
    }

    /// Whether `offset..offset + span` overlaps a range the driver did not give back.
    fn overlaps(&self, offset: u64, span: u64) -> bool {
        let end = offset + span;
        let hits = |(o, s): (u64, u64)| o < end && offset < o + s;
        self.imports.iter().any(|i| hits(i.span()))
            || self.stale.iter().any(|s| hits((s.offset, s.span)))
    }
}

/// The owner of an import's dma-buf: told when it is released.
struct ExportOwner {
    device: Arc<BufshareDevice>,
    id: u64,
    round: u64,
}

impl IoMemOwner for ExportOwner {
    fn released(&self) {
        self.device.import_released(self.id, self.round);
    }
}

/// Reads a source name: 1 to 31 characters of `[A-Za-z0-9_.-]`, NUL-terminated and NUL-padded.
fn source_name(raw: &[u8; SOURCE_LEN]) -> Result<[u8; SOURCE_LEN]> {
    let len = raw.iter().position(|&c| c == 0).ok_or(EINVAL)?;
    if len == 0
        || !raw[..len]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Err(EINVAL);
    }
    let mut name = [0; SOURCE_LEN];
    name[..len].copy_from_slice(&raw[..len]);
    Ok(name)
}

impl BufshareDevice {
    /// Whether the device maps the buffers of other guests.
    fn import_region(&self) -> Result<ShmRegion> {
        self.import_region.ok_or(EOPNOTSUPP)
    }

    /// `BUFSHARE_IOC_ATTACH`: imports the buffers `req.source` registers under
    /// `req.application`, for `owner`; fills in the attachment's number.
    pub(crate) fn attach(&self, owner: &Owner, req: &mut uapi::bufshare_attach) -> Result {
        if req.flags != 0 {
            return Err(EINVAL);
        }
        let source = source_name(&req.source)?;
        let application = props::application(&req.application)?;
        self.import_region()?;
        {
            let mut state = self.imports.lock();
            if state.gone {
                return Err(ENODEV);
            }
            let mine = state
                .attachments
                .iter()
                .filter(|a| a.owner == owner.id)
                .count();
            if mine >= ATTACHMENTS_PER_FILE {
                return Err(ENOSPC);
            }
            state.attaching += 1;
        }
        // Uninterruptible: an ATTACH the device carried out but the driver did not see answered
        // would import buffers for nobody.
        let answer = self.cmdq.send(
            &Attach {
                source: &source,
                application: &application,
            },
            Wait::Uninterruptible,
        );
        let result = {
            let mut state = self.imports.lock();
            state.attaching -= 1;
            match answer {
                Ok(answer) => {
                    let number = u32::from_le(answer.reply.0.attachment);
                    if state.attachment(number).is_some() || state.gone {
                        // A device that hands out a number in use is not to be trusted with the
                        // events of either.
                        Err(EIO)
                    } else {
                        state
                            .attachments
                            .push(
                                Attachment {
                                    number,
                                    owner: owner.id,
                                },
                                GFP_KERNEL,
                            )
                            .map(|()| number)
                            .map_err(Error::from)
                    }
                }
                Err(e) => Err(e),
            }
        };
        self.replay_parked();
        req.attachment = result?;
        Ok(())
    }

    /// `BUFSHARE_IOC_DETACH`: ends `owner`'s attachment `number`. Its imports stay until closed.
    pub(crate) fn detach(&self, owner: &Owner, number: u32) -> Result {
        self.import_region()?;
        {
            let mut state = self.imports.lock();
            let i = state
                .attachments
                .iter()
                .position(|a| a.number == number && a.owner == owner.id)
                .ok_or(ENOENT)?;
            state.attachments.remove(i)?;
        }
        self.cmdq
            .send(&Detach { attachment: number }, Wait::Uninterruptible)
            .map(|_| ())
    }

    /// `BUFSHARE_IOC_IMPORT`: a dma-buf of `owner`'s import `req.import_id`, with what the driver
    /// knows of the import filled in.
    pub(crate) fn import(
        self: &Arc<Self>,
        owner: &Owner,
        req: &mut uapi::bufshare_import,
    ) -> Result<ARef<File>> {
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        let region = self.import_region()?;
        let mut state = self.imports.lock();
        let round = state.round;
        let i = state.index(req.import_id).ok_or(ENOENT)?;
        let import = &mut state.imports[i];
        if import.owner != owner.id || import.orphan {
            return Err(ENOENT);
        }
        if import.removed {
            return Err(ENODEV);
        }
        if !import.closable() {
            return Err(EBUSY);
        }
        let (offset, span) = import.span();
        let owner_of_dmabuf = Arc::new(
            ExportOwner {
                device: self.clone(),
                id: import.id,
                round,
            },
            GFP_KERNEL,
        )?;
        let writable = import.flags & uapi::VIRTIO_BUFSHARE_IMPORT_F_READ_ONLY == 0;
        // SAFETY: The range lies in the import region (checked when the import was added), which
        // is I/O memory of the device, and no other import overlaps it. The driver does not CLOSE
        // the import, so the device maps nothing else there, until the dma-buf is released; when
        // the device is reset, the dma-buf is revoked and its range kept from other imports until
        // it is released.
        let (dmabuf, revoke) = unsafe {
            IoMemExport::new(
                region.addr + offset,
                usize::try_from(span)?,
                writable,
                c_str!("virtio_bufshare"),
                &<crate::LocalModule as kernel::ModuleMetadata>::THIS_MODULE,
                owner_of_dmabuf,
            )
        }?;
        import.used = Use::Exported(revoke);
        req.size = import.size;
        req.buffer_id = import.buffer_id;
        req.seqno = import.seqno;
        req.attachment = import.attachment;
        req.flags = user_flags(import.flags);
        drop(state);
        Ok(dmabuf.into_file())
    }

    /// `BUFSHARE_IOC_IMPORT_INFO`: asks the device about `owner`'s import `req.import_id`, and
    /// fills `req` in; returns the properties of the import's buffer, for the caller to copy out
    /// (no lock is held then).
    ///
    /// The answer must agree with what the device said when it added the import (its buffer, its
    /// range, its flags) and give no update older than the last one it had sent when it was
    /// asked: `EIO` otherwise.
    pub(crate) fn import_info(
        &self,
        owner: &Owner,
        req: &mut uapi::bufshare_import_info,
    ) -> Result<KVec<u8>> {
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        self.import_region()?;
        let id = req.import_id;
        let known = |state: &ImportState| -> Result<(u64, u64, u64, u32, u64, u32)> {
            let i = state.index(id).ok_or(ENOENT)?;
            let import = &state.imports[i];
            if import.owner != owner.id || import.orphan {
                return Err(ENOENT);
            }
            Ok((
                import.buffer_id,
                import.offset,
                import.size,
                import.flags,
                import.seqno,
                import.attachment,
            ))
        };
        // The device's answer gives an update no older than those it sent before it was asked;
        // events handled while it was answered may carry later ones.
        let (.., seqno_before, _) = known(&self.imports.lock())?;
        let answer = self
            .cmdq
            .send(&ImportInfo { import_id: id }, Wait::Interruptible)?
            .reply;
        let (buffer_id, offset, size, flags, _, attachment) = known(&self.imports.lock())?;
        let hdr = &answer.hdr;
        let their_seqno = u64::from_le(hdr.seqno);
        if u64::from_le(hdr.buffer_id) != buffer_id
            || u64::from_le(hdr.shm_offset) != offset
            || u64::from_le(hdr.size) != size
            || u32::from_le(hdr.flags) != flags
            || their_seqno < seqno_before
        {
            if self.cmdq.log_limit().allow() {
                dev_err!(
                    self.dev.as_ref(),
                    "IMPORT_INFO of import {} disagrees with its IMPORT_ADDED: buffer {}/{}, offset {}/{}, size {}/{}, flags {}/{}, update {} before {}\n",
                    id,
                    u64::from_le(hdr.buffer_id),
                    buffer_id,
                    u64::from_le(hdr.shm_offset),
                    offset,
                    u64::from_le(hdr.size),
                    size,
                    u32::from_le(hdr.flags),
                    flags,
                    their_seqno,
                    seqno_before
                );
            }
            return Err(EIO);
        }
        props::check(&answer.props).map_err(|_| EIO)?;
        req.flags = user_flags(flags);
        req.size = size;
        req.buffer_id = buffer_id;
        req.seqno = their_seqno;
        req.attachment = attachment;
        Ok(answer.props)
    }

    /// `BUFSHARE_IOC_IMPORT_RELEASE`: `owner` is done with update `seqno` of import `id`.
    pub(crate) fn import_release(&self, owner: &Owner, id: u64, seqno: u64) -> Result {
        self.import_region()?;
        {
            let state = self.imports.lock();
            let i = state.index(id).ok_or(ENOENT)?;
            let import = &state.imports[i];
            if import.owner != owner.id || import.orphan {
                return Err(ENOENT);
            }
            if seqno == 0 || seqno > import.seqno {
                return Err(EINVAL);
            }
        }
        self.cmdq
            .send(
                &Release {
                    import_id: id,
                    seqno,
                },
                Wait::Interruptible,
            )
            .map(|_| ())
    }

    /// `BUFSHARE_IOC_IMPORT_CLOSE`: gives `owner`'s import `id`, which has no dma-buf, back to the
    /// device.
    pub(crate) fn import_close(&self, owner: &Owner, id: u64) -> Result {
        self.import_region()?;
        {
            let mut state = self.imports.lock();
            let i = state.index(id).ok_or(ENOENT)?;
            let import = &state.imports[i];
            if import.owner != owner.id || import.orphan {
                return Err(ENOENT);
            }
            if !import.closable() {
                return Err(EBUSY);
            }
            state.imports.remove(i)?;
        }
        self.close_import(id);
        Ok(())
    }

    /// Tells the device that nothing of the guest reaches import `id` any more.
    fn close_import(&self, id: u64) {
        if let Err(e) = self
            .cmdq
            .send(&Close { import_id: id }, Wait::Uninterruptible)
        {
            if e != ENODEV && self.cmdq.log_limit().allow() {
                dev_warn!(
                    self.dev.as_ref(),
                    "CLOSE of import {} failed ({:?})\n",
                    id,
                    e
                );
            }
        }
    }

    /// The dma-buf of import `id`, made in round `round`, was released.
    fn import_released(&self, id: u64, round: u64) {
        let close = {
            let mut state = self.imports.lock();
            if round != state.round {
                // Revoked by a reset: its range is free for imports again.
                state.stale.retain(|s| !(s.round == round && s.id == id));
                return;
            }
            let Some(i) = state.index(id) else {
                return;
            };
            let import = &mut state.imports[i];
            import.used = Use::Mapped;
            if !import.removed && !import.orphan {
                // Its file may take another dma-buf of it.
                return;
            }
            let _ = state.imports.remove(i);
            true
        };
        if close {
            self.close_import(id);
        }
    }

    /// The open file `owner` is released: ends its attachments, closes its imports that have no
    /// dma-buf, and has the others closed when their dma-buf is released.
    pub(super) fn release_imports(&self, owner: u64) {
        if self.import_region.is_none() {
            return;
        }
        let mut detach = KVec::new();
        let mut close = KVec::new();
        {
            let mut state = self.imports.lock();
            // Without memory, those left out are detached and closed by the device's reset.
            for a in state.attachments.iter().filter(|a| a.owner == owner) {
                let _ = detach.push(a.number, GFP_KERNEL);
            }
            state.attachments.retain(|a| a.owner != owner);
            for import in state.imports.iter_mut().filter(|i| i.owner == owner) {
                import.orphan = true;
                if import.closable() {
                    let _ = close.push(import.id, GFP_KERNEL);
                }
            }
            state
                .imports
                .retain(|i| !(i.owner == owner && i.closable()));
        }
        for number in detach.iter() {
            // A device going away detaches everything.
            let _ = self.cmdq.send(
                &Detach {
                    attachment: *number,
                },
                Wait::Uninterruptible,
            );
        }
        for id in close.iter() {
            self.close_import(*id);
        }
    }

    /// Every attachment and import ended: the device was reset, lost its buffers or went away
    /// (`gone`). Revokes the dma-bufs, keeps the ranges of those alive from later imports, and
    /// tells the files whose attachments ended.
    pub(super) fn end_imports(&self, gone: bool) {
        if self.import_region.is_none() {
            return;
        }
        let (attachments, imports) = {
            let mut state = self.imports.lock();
            state.gone |= gone;
            let attachments = core::mem::take(&mut state.attachments);
            let imports = core::mem::take(&mut state.imports);
            state.parked.clear();
            let round = state.round;
            state.round += 1;
            for import in imports.iter() {
                if let Use::Exported(revoke) = &import.used {
                    revoke.revoke();
                    let (offset, span) = import.span();
                    // Without memory, the range is not kept: nothing else would make it safe,
                    // so the dma-buf stays revoked, which is what keeps its memory out of reach.
                    let _ = state.stale.push(
                        Stale {
                            round,
                            id: import.id,
                            offset,
                            span,
                        },
                        GFP_KERNEL,
                    );
                }
            }
            (attachments, imports)
        };
        drop(imports);
        for a in attachments.iter() {
            if let Some(owner) = self.owner(a.owner) {
                let rec = uapi::bufshare_import_event {
                    type_: uapi::BUFSHARE_EVENT_IMPORT_DETACHED,
                    attachment: a.number,
                    ..Default::default()
                };
                owner.events.send(import_record(rec));
            }
        }
    }

    /// Handles an IMPORT_* event of the device.
    pub(super) fn handle_import(&self, event: ImportEvent) {
        if self.import_region.is_none() {
            self.ignore_import("the feature was not negotiated");
            return;
        }
        let attachment = event.attachment();
        {
            let mut state = self.imports.lock();
            if state.gone {
                return;
            }
            let known = state.attachment(attachment).is_some()
                || state.imports.iter().any(|i| i.attachment == attachment);
            if !known && state.attaching > 0 && state.parked.len() < PARKED_MAX {
                // Its ATTACH is being answered: handled once the answer is taken.
                if state.parked.push(event, GFP_KERNEL).is_ok() {
                    return;
                }
            }
        }
        match event {
            ImportEvent::Added {
                import_id,
                attachment,
                seqno,
                flags,
                offset,
                size,
                buffer_id,
            } => self.import_added(Import {
                id: import_id,
                attachment,
                owner: 0,
                offset,
                size,
                buffer_id,
                flags,
                seqno,
                removed: false,
                orphan: false,
                used: Use::Mapped,
            }),
            ImportEvent::Updated {
                import_id,
                attachment,
                seqno,
            } => self.import_updated(import_id, attachment, seqno),
            ImportEvent::Removed {
                import_id,
                attachment,
            } => self.import_removed(import_id, attachment),
            ImportEvent::NoSpace {
                attachment,
                size,
                buffer_id,
            } => {
                let owner = self.imports.lock().attachment(attachment).map(|a| a.owner);
                match owner.and_then(|o| self.owner(o)) {
                    Some(owner) => {
                        let rec = uapi::bufshare_import_event {
                            type_: uapi::BUFSHARE_EVENT_IMPORT_NO_SPACE,
                            attachment,
                            size,
                            buffer_id,
                            ..Default::default()
                        };
                        owner.events.send(import_record(rec));
                    }
                    None => self.ignore_import("no such attachment"),
                }
            }
        }
    }

    /// Handles the events that waited for the answer to an ATTACH, once no ATTACH is being
    /// answered any more.
    fn replay_parked(&self) {
        let parked = {
            let mut state = self.imports.lock();
            if state.attaching > 0 {
                return;
            }
            core::mem::take(&mut state.parked)
        };
        for event in parked.into_iter() {
            self.handle_import(event);
        }
    }

    /// IMPORT_ADDED: checks the range, and hands the import to its attachment's file. An import
    /// the driver cannot take is closed at once, unless its id is one in use (closing it would
    /// close the other).
    fn import_added(&self, mut import: Import) {
        let id = import.id;
        let checked = {
            let mut state = self.imports.lock();
            let region_len = self.import_region.map_or(0, |r| r.len);
            let span = import.size.checked_next_multiple_of(PAGE);
            let owner = state.attachment(import.attachment).map(|a| a.owner);
            if state.index(id).is_some() {
                Err(("its id is in use", false))
            } else if let Some(owner) = owner {
                match span {
                    Some(span)
                        if import.offset % PAGE == 0
                            && import
                                .offset
                                .checked_add(span)
                                .is_some_and(|e| e <= region_len) =>
                    {
                        if state.overlaps(import.offset, span) {
                            Err(("its range overlaps another", true))
                        } else {
                            import.owner = owner;
                            let rec = added_record(&import);
                            match state.imports.push(import, GFP_KERNEL) {
                                Ok(()) => Ok((owner, rec)),
                                Err(_) => Err(("out of memory", true)),
                            }
                        }
                    }
                    _ => Err(("its range is not in the import region", true)),
                }
            } else {
                Err(("no such attachment", true))
            }
        };
        match checked {
            Ok((owner, rec)) => {
                if let Some(owner) = self.owner(owner) {
                    owner.events.send(rec);
                }
            }
            Err((why, close)) => {
                if self.cmdq.log_limit().allow() {
                    dev_warn!(
                        self.dev.as_ref(),
                        "ignored IMPORT_ADDED of import {}: {}\n",
                        id,
                        why
                    );
                }
                if close {
                    self.close_import(id);
                }
            }
        }
    }

    /// IMPORT_UPDATED: goes to the import's file, if the update is newer than the last.
    fn import_updated(&self, id: u64, attachment: u32, seqno: u64) {
        let to = {
            let mut state = self.imports.lock();
            match state.index(id) {
                Some(i) => {
                    let import = &mut state.imports[i];
                    if import.attachment != attachment || import.removed || seqno <= import.seqno {
                        None
                    } else {
                        import.seqno = seqno;
                        Some(import.owner)
                    }
                }
                None => None,
            }
        };
        let Some(owner) = to else {
            if self.cmdq.log_limit().allow() {
                dev_warn!(
                    self.dev.as_ref(),
                    "ignored IMPORT_UPDATED {} of import {}\n",
                    seqno,
                    id
                );
            }
            return;
        };
        if let Some(owner) = self.owner(owner) {
            let rec = uapi::bufshare_import_event {
                type_: uapi::BUFSHARE_EVENT_IMPORT_UPDATED,
                attachment,
                import_id: id,
                seqno,
                ..Default::default()
            };
            owner.events.send(import_record(rec));
        }
    }

    /// IMPORT_REMOVED: tells the import's file, and closes the import now if it has no dma-buf.
    fn import_removed(&self, id: u64, attachment: u32) {
        let found = {
            let mut state = self.imports.lock();
            match state.index(id) {
                Some(i) if state.imports[i].attachment == attachment => {
                    let import = &mut state.imports[i];
                    import.removed = true;
                    let owner = import.owner;
                    let close = import.closable();
                    if close {
                        let _ = state.imports.remove(i);
                    }
                    Some((owner, close))
                }
                _ => None,
            }
        };
        let Some((owner, close)) = found else {
            if self.cmdq.log_limit().allow() {
                dev_warn!(
                    self.dev.as_ref(),
                    "ignored IMPORT_REMOVED of import {}: no such import\n",
                    id
                );
            }
            return;
        };
        if close {
            self.close_import(id);
        }
        if let Some(owner) = self.owner(owner) {
            let rec = uapi::bufshare_import_event {
                type_: uapi::BUFSHARE_EVENT_IMPORT_REMOVED,
                attachment,
                import_id: id,
                ..Default::default()
            };
            owner.events.send(import_record(rec));
        }
    }

    /// Logs an IMPORT_* event the driver ignores.
    fn ignore_import(&self, why: &str) {
        if self.cmdq.log_limit().allow() {
            dev_warn!(self.dev.as_ref(), "ignored import event: {}\n", why);
        }
    }

    /// The attachments and imports of `owner`, for its fdinfo: (attachments, imports, with a
    /// dma-buf).
    pub(super) fn import_counts(&self, owner: u64) -> (usize, usize, usize) {
        let state = self.imports.lock();
        let attachments = state
            .attachments
            .iter()
            .filter(|a| a.owner == owner)
            .count();
        let imports = state.imports.iter().filter(|i| i.owner == owner);
        let exported = imports.clone().filter(|i| !i.closable()).count();
        (attachments, imports.count(), exported)
    }
}

/// The IMPORT_ADDED record of `import`.
fn added_record(import: &Import) -> super::Record {
    let rec = uapi::bufshare_import_event {
        type_: uapi::BUFSHARE_EVENT_IMPORT_ADDED,
        attachment: import.attachment,
        import_id: import.id,
        seqno: import.seqno,
        size: import.size,
        buffer_id: import.buffer_id,
        flags: user_flags(import.flags),
        ..Default::default()
    };
    import_record(rec)
}

/// The `BUFSHARE_IMPORT_*` flags of an import whose device flags are `flags`.
fn user_flags(flags: u32) -> u32 {
    if flags & uapi::VIRTIO_BUFSHARE_IMPORT_F_READ_ONLY != 0 {
        uapi::BUFSHARE_IMPORT_READ_ONLY
    } else {
        0
    }
}
