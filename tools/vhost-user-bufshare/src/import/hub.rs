// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The import hub: every guest's attachments and imports (as an
//! importer), and a mirror of every guest's complete buffers (as an
//! exporter), shared by all the guests of the backend.
//!
//! As an exporter, a guest's buffer table tells the hub about its changes
//! ([`ImportHub::observer`], a [`TableObserver`]), with the table locked.
//! As an importer, the guest's device calls the commands
//! ([`ImportHub::attach`], [`ImportHub::detach`], [`ImportHub::info`],
//! [`ImportHub::release`], [`ImportHub::close`]) and ends everything on a
//! reset, lost buffers or a disconnection ([`ImportHub::end_importer`]).
//!
//! An import is *mapping* (its SHMEM_MAP jobs are queued on the
//! importer's [`Mapper`]), *live* (mapped, IMPORT_ADDED sent), *removed*
//! (IMPORT_REMOVED sent, revoked at a deadline), *revoking* (its unmap
//! queued) or *revoked*. One CLOSEd, or ended with its importer, waits in
//! `closing` for its unmap. Its range is reserved until CLOSE or the end
//! of its importer; the mapper runs jobs in order, so the unmapping of a
//! range comes before any later mapping over it.
//!
//! For the exporter, each import is a holder of its buffer
//! ([`IMPORT_HOLDER`]): handed the buffer when it is created, given each
//! update it is sent, releasing on RELEASE, CLOSE or the end of its
//! importer (and revocation), and closing its instance once the buffer is
//! unmapped from the importer (or its frontend is gone). Each attachment
//! is one consumer of its application ([`Holders::importer_attached`]).
//!
//! The importer's events wait in the hub ([`ImportHub::take_events`]),
//! merged as the device's pending events are; its device is woken through
//! its holders' wake-up ([`Holders::poke`]).
//!
//! Locks: the hub's is taken after a guest's state (the observer is
//! called with it held) and before the guests' [`Holders`] and a
//! [`Mapper`]'s queue; never while sending a map request.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bufshare_consumer::{Memory, ResetReason};
use bufshare_uapi::{
    VIRTIO_BUFSHARE_S_DENIED, VIRTIO_BUFSHARE_S_INVALID, VIRTIO_BUFSHARE_S_NO_BUFFER,
    VIRTIO_BUFSHARE_S_NO_SPACE,
};
use log::{debug, warn};
use vm_memory::GuestMemoryMmap;

use super::alloc::Allocator;
use super::{Access, ImportConfig, MAX_ATTACHMENTS, PAGE_SIZE};
use crate::buffers::{Buffer, TableObserver, UpdateInfo};
use crate::consumer::access::RamAccess;
use crate::consumer::export::{Export, Receiver};
use crate::events::{DeviceEvent, PendingEvents};
use crate::holders::{HolderId, Holders, IMPORT_HOLDER};
use crate::props::Properties;
use crate::shmem::{Completion, Done, Job, Mapper, Piece};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The holder id of import `import`.
pub fn holder(import: u64) -> HolderId {
    IMPORT_HOLDER | import
}

/// A live import, as [`ImportHub::snapshot`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveImport {
    /// The import's id.
    pub id: u64,
    /// Its attachment.
    pub attachment: u32,
    /// Where it is mapped.
    pub shm_offset: u64,
    /// Its size.
    pub size: u64,
    /// The last update sent for it.
    pub seqno: u64,
}

/// What IMPORT_INFO answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportInfo {
    /// The exporter's id of the buffer.
    pub buffer_id: u64,
    /// Where it is mapped.
    pub shm_offset: u64,
    /// Its size.
    pub size: u64,
    /// The last update sent for the import.
    pub seqno: u64,
    /// `VIRTIO_BUFSHARE_IMPORT_F_*`.
    pub flags: u32,
    /// The buffer's properties now (when it was removed, if it was).
    pub props: Properties,
}

/// Why an importer's imports end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Its device was reset.
    Reset,
    /// Its device lost its buffers.
    Lost,
    /// Its frontend is gone: nothing can be unmapped any more.
    Disconnected,
}

/// A complete buffer of an exporter.
#[derive(Debug)]
struct Exported {
    application: String,
    size: u64,
    seqno: u64,
    props: Properties,
    /// Its memory, or why it cannot be mapped.
    export: Result<Arc<Export>, String>,
}

#[derive(Debug)]
struct Attachment {
    source: String,
    application: String,
    /// Buffers not imported for want of room (never imported later).
    skipped: BTreeSet<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Map jobs queued; `gone` once the exporter's buffer went meanwhile.
    Mapping { gone: bool },
    /// Mapped, IMPORT_ADDED sent.
    Live,
    /// IMPORT_REMOVED sent; revoked at this deadline.
    Removed(Instant),
    /// Its unmap is queued.
    Revoking,
    /// Unmapped, its range still reserved.
    Revoked,
}

#[derive(Debug)]
struct Import {
    attachment: u32,
    source: String,
    buffer_id: u64,
    shm_offset: u64,
    size: u64,
    /// The ranges mapped, as mapped.
    ranges: Vec<(u64, u64)>,
    /// The last update sent (in IMPORT_ADDED or IMPORT_UPDATED).
    seqno: u64,
    props: Properties,
    state: State,
}

/// An import out of the driver's hands, waiting for its unmap.
#[derive(Debug)]
struct Closing {
    source: String,
    buffer_id: u64,
}

#[derive(Debug)]
struct Guest {
    holders: Arc<Holders>,
    /// Its complete buffers, as an exporter.
    buffers: BTreeMap<u64, Exported>,
    /// Whether its driver negotiated `VIRTIO_BUFSHARE_F_IMPORT`.
    enabled: bool,
    /// Changes with each connection: a completion of an older one is
    /// ignored.
    epoch: u64,
    mapper: Option<Arc<Mapper>>,
    attachments: BTreeMap<u32, Attachment>,
    imports: BTreeMap<u64, Import>,
    closing: BTreeMap<u64, Closing>,
    alloc: Allocator,
    inbox: PendingEvents,
}

#[derive(Debug, Default)]
struct Inner {
    guests: BTreeMap<String, Guest>,
    next_import: u64,
    stopped: bool,
}

/// The import hub; see the module.
#[derive(Debug)]
pub struct ImportHub {
    config: ImportConfig,
    inner: Mutex<Inner>,
    /// Wakes the revoking thread up when a deadline is set, or to stop.
    timer: Condvar,
}

impl ImportHub {
    /// A hub for `config`, with no guest yet.
    pub fn new(config: ImportConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            inner: Mutex::new(Inner {
                next_import: 1,
                ..Inner::default()
            }),
            timer: Condvar::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ImportConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Adds guest `name`, whose buffers' holders are `holders`.
    pub fn add_guest(&self, name: &str, holders: Arc<Holders>) {
        self.lock().guests.insert(
            name.to_string(),
            Guest {
                holders,
                buffers: BTreeMap::new(),
                enabled: false,
                epoch: 0,
                mapper: None,
                attachments: BTreeMap::new(),
                imports: BTreeMap::new(),
                closing: BTreeMap::new(),
                alloc: Allocator::new(self.config.shm_size),
                inbox: PendingEvents::default(),
            },
        );
    }

    /// What guest `name`'s buffer table is to tell the hub.
    pub fn observer(self: &Arc<Self>, name: &str) -> Arc<dyn TableObserver> {
        Arc::new(ExporterEvents {
            hub: Arc::clone(self),
            guest: name.to_string(),
        })
    }

    /// A new connection of guest `name`: its maps go to `mapper` from now
    /// on, whose completions come back here.
    pub fn connect(self: &Arc<Self>, name: &str, mapper: &Arc<Mapper>) {
        let mut inner = self.lock();
        let Some(guest) = inner.guests.get_mut(name) else {
            return;
        };
        guest.epoch += 1;
        guest.mapper = Some(Arc::clone(mapper));
        mapper.set_completion(Arc::new(Link {
            hub: Arc::downgrade(self),
            guest: name.to_string(),
            epoch: guest.epoch,
        }));
    }

    /// Whether guest `name`'s driver negotiated
    /// `VIRTIO_BUFSHARE_F_IMPORT`.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        if let Some(guest) = self.lock().guests.get_mut(name) {
            guest.enabled = enabled;
        }
    }

    /// Takes the events waiting for guest `name`'s driver.
    pub fn take_events(&self, name: &str) -> Vec<DeviceEvent> {
        self.lock()
            .guests
            .get_mut(name)
            .map(|g| g.inbox.take_all())
            .unwrap_or_default()
    }

    /// ATTACH: guest `name` imports `application` of `source`; the
    /// attachment's number, or the status of the refusal.
    ///
    /// `S_INVALID` for names that are not names or an attachment that
    /// exists; `S_DENIED` when no rule allows it, or only read-only ones
    /// (QEMU 11.1 cannot map read-only); `S_NO_SPACE` past
    /// [`MAX_ATTACHMENTS`].
    pub fn attach(&self, name: &str, source: &str, application: &str) -> Result<u32, u32> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(guest) = inner.guests.get_mut(name) else {
            return Err(VIRTIO_BUFSHARE_S_DENIED);
        };
        if guest
            .attachments
            .values()
            .any(|a| a.source == source && a.application == application)
        {
            crate::guest_warn!("ATTACH {source}/{application}: attached already");
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        }
        match self.config.access(name, source, application) {
            Some(Access::ReadWrite) => {}
            Some(Access::ReadOnly) => {
                crate::guest_warn!(
                    "ATTACH {source}/{application}: denied: read-only imports cannot be mapped \
                     read-only by this frontend"
                );
                return Err(VIRTIO_BUFSHARE_S_DENIED);
            }
            None => {
                crate::guest_warn!("ATTACH {source}/{application}: denied by the configuration");
                return Err(VIRTIO_BUFSHARE_S_DENIED);
            }
        }
        if guest.attachments.len() >= MAX_ATTACHMENTS {
            crate::guest_warn!("ATTACH {source}/{application}: {MAX_ATTACHMENTS} attachments");
            return Err(VIRTIO_BUFSHARE_S_NO_SPACE);
        }
        let number = (1..)
            .find(|n| !guest.attachments.contains_key(n))
            .unwrap_or(0);
        guest.attachments.insert(
            number,
            Attachment {
                source: source.to_string(),
                application: application.to_string(),
                skipped: BTreeSet::new(),
            },
        );
        crate::guest_info!("guest {name}: attachment {number} to {source}/{application}");
        // The buffers of the application the source has now.
        let Some(exporter) = inner.guests.get(source) else {
            return Ok(number);
        };
        exporter.holders.importer_attached(application);
        let ids: Vec<u64> = exporter
            .buffers
            .iter()
            .filter(|(_, b)| b.application == application)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            inner.import(name, number, source, id);
        }
        Ok(number)
    }

    /// DETACH of `attachment` by guest `name`, whose pending events are
    /// `pending`: the attachment's events pending are dropped but
    /// IMPORT_REMOVED; its imports whose IMPORT_ADDED was still pending
    /// end without a word (the driver never heard of them); the others
    /// are removed (IMPORT_REMOVED, revoked after the grace time).
    pub fn detach(
        &self,
        name: &str,
        attachment: u32,
        pending: &mut PendingEvents,
    ) -> Result<(), u32> {
        let mut inner = self.lock();
        let Some(guest) = inner.guests.get_mut(name) else {
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        };
        let Some(att) = guest.attachments.remove(&attachment) else {
            crate::guest_warn!("DETACH {attachment}: no such attachment");
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        };
        for event in guest.inbox.take_all() {
            pending.push(event);
        }
        let unheard: Vec<u64> = pending
            .imports()
            .filter_map(|e| match e {
                DeviceEvent::ImportAdded {
                    import_id,
                    attachment: a,
                    ..
                } if *a == attachment => Some(*import_id),
                _ => None,
            })
            .collect();
        pending.drop_imports(|e| {
            e.attachment() == Some(attachment) && !matches!(e, DeviceEvent::ImportRemoved { .. })
        });
        crate::guest_info!(
            "guest {name}: attachment {attachment} to {}/{} detached",
            att.source,
            att.application
        );
        let ids: Vec<u64> = guest
            .imports
            .iter()
            .filter(|(_, i)| i.attachment == attachment)
            .map(|(id, _)| *id)
            .collect();
        let now = Instant::now();
        for id in ids {
            if unheard.contains(&id) {
                inner.withdraw(name, id);
            } else {
                inner.remove_import(name, id, now + self.config.grace);
            }
        }
        if let Some(exporter) = inner.guests.get(&att.source) {
            exporter.holders.importer_detached(&att.application);
        }
        drop(inner);
        self.timer.notify_all();
        Ok(())
    }

    /// IMPORT_INFO of import `id` of guest `name`.
    pub fn info(&self, name: &str, id: u64) -> Result<ImportInfo, u32> {
        let inner = self.lock();
        let import = inner
            .guests
            .get(name)
            .and_then(|g| g.imports.get(&id))
            .filter(|i| !matches!(i.state, State::Mapping { .. }))
            .ok_or(VIRTIO_BUFSHARE_S_NO_BUFFER)?;
        Ok(ImportInfo {
            buffer_id: import.buffer_id,
            shm_offset: import.shm_offset,
            size: import.size,
            seqno: import.seqno,
            flags: 0,
            props: import.props.clone(),
        })
    }

    /// RELEASE of updates up to `seqno` of import `id` by guest `name`.
    pub fn release(&self, name: &str, id: u64, seqno: u64) -> Result<(), u32> {
        let inner = self.lock();
        let guest = inner.guests.get(name).ok_or(VIRTIO_BUFSHARE_S_NO_BUFFER)?;
        let import = guest
            .imports
            .get(&id)
            .filter(|i| !matches!(i.state, State::Mapping { .. }))
            .ok_or(VIRTIO_BUFSHARE_S_NO_BUFFER)?;
        if seqno > import.seqno {
            crate::guest_warn!(
                "RELEASE {id}: seqno {seqno}, the last sent is {}",
                import.seqno
            );
            return Err(VIRTIO_BUFSHARE_S_INVALID);
        }
        if let Some(exporter) = inner.guests.get(&import.source) {
            exporter
                .holders
                .release(import.buffer_id, holder(id), seqno);
        }
        Ok(())
    }

    /// CLOSE of import `id` by guest `name`, whose pending events are
    /// `pending` (those of the import are dropped): it is unmapped (unless
    /// it was revoked), its range free for another import.
    pub fn close(&self, name: &str, id: u64, pending: &mut PendingEvents) -> Result<(), u32> {
        let mut inner = self.lock();
        let guest = inner
            .guests
            .get_mut(name)
            .ok_or(VIRTIO_BUFSHARE_S_NO_BUFFER)?;
        if !guest
            .imports
            .get(&id)
            .is_some_and(|i| !matches!(i.state, State::Mapping { .. }))
        {
            crate::guest_warn!("CLOSE {id}: no such import");
            return Err(VIRTIO_BUFSHARE_S_NO_BUFFER);
        }
        for event in guest.inbox.take_all() {
            pending.push(event);
        }
        pending.drop_imports(|e| e.import_id() == Some(id));
        debug!("guest {name}: import {id} closed");
        inner.withdraw(name, id);
        Ok(())
    }

    /// Ends every attachment and import of guest `name` (its device was
    /// reset, lost its buffers, or its frontend is gone); their events
    /// waiting are dropped. Their ranges are unmapped before the region
    /// is used again; with [`End::Disconnected`], nothing can be, and the
    /// exporters' buffers are let go at once.
    pub fn end_importer(&self, name: &str, why: End) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(guest) = inner.guests.get_mut(name) else {
            return;
        };
        let attachments = std::mem::take(&mut guest.attachments);
        let ids: Vec<u64> = guest.imports.keys().copied().collect();
        guest.inbox.clear();
        if !ids.is_empty() || !attachments.is_empty() {
            crate::guest_info!(
                "guest {name}: {} attachments and {} imports end ({why:?})",
                attachments.len(),
                ids.len()
            );
        }
        for id in ids {
            inner.withdraw(name, id);
        }
        let Some(guest) = inner.guests.get_mut(name) else {
            return;
        };
        guest.alloc.clear();
        if why == End::Disconnected {
            guest.enabled = false;
            guest.epoch += 1;
            if let Some(mapper) = guest.mapper.take() {
                mapper.stop();
            }
            let closing = std::mem::take(&mut guest.closing);
            for (id, c) in closing {
                if let Some(exporter) = inner.guests.get(&c.source) {
                    exporter.holders.closed(c.buffer_id, holder(id));
                }
            }
        }
        for att in attachments.values() {
            if let Some(exporter) = inner.guests.get(&att.source) {
                exporter.holders.importer_detached(&att.application);
            }
        }
    }

    /// Revokes the imports whose grace time ended by `now`; returns the
    /// next deadline, if any.
    pub fn revoke_due(&self, now: Instant) -> Option<Instant> {
        let mut inner = self.lock();
        let mut next: Option<Instant> = None;
        for (name, guest) in &mut inner.guests {
            for (id, import) in &mut guest.imports {
                let State::Removed(deadline) = import.state else {
                    continue;
                };
                if deadline > now {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    continue;
                }
                crate::guest_info!("guest {name}: import {id} not closed in time: revoked");
                import.state = State::Revoking;
                match &guest.mapper {
                    Some(mapper) => mapper.push(Job::Unmap {
                        import: *id,
                        ranges: import.ranges.clone(),
                    }),
                    None => warn!("guest {name}: import {id}: no mapper to unmap it"),
                }
            }
        }
        next
    }

    /// Starts the thread that revokes imports at their deadline, until
    /// [`ImportHub::stop`].
    pub fn start(self: &Arc<Self>) -> io::Result<JoinHandle<()>> {
        let hub = Arc::clone(self);
        thread::Builder::new()
            .name(String::from("import-revoke"))
            .spawn(move || loop {
                let next = hub.revoke_due(Instant::now());
                let inner = hub.lock();
                if inner.stopped {
                    return;
                }
                let wait = next.map_or(Duration::from_secs(3600), |n| {
                    n.saturating_duration_since(Instant::now())
                });
                drop(
                    hub.timer
                        .wait_timeout(inner, wait)
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                );
            })
    }

    /// Stops the thread of [`ImportHub::start`].
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.timer.notify_all();
    }

    /// A job of guest `name`'s mapper of connection `epoch` is done.
    fn completed(&self, name: &str, epoch: u64, done: Done) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(guest) = inner.guests.get_mut(name) else {
            return;
        };
        if guest.epoch != epoch {
            debug!("guest {name}: {done:?} of an older connection ignored");
            return;
        }
        match done {
            Done::Mapped { import: id, result } => inner.mapped(name, id, result),
            Done::Unmapped { import: id } => inner.unmapped(name, id),
        }
    }

    /// The imports of guest `name`: (import, attachment, buffer, offset,
    /// state), for tests and logs.
    pub fn describe(&self, name: &str) -> Vec<String> {
        let inner = self.lock();
        let Some(guest) = inner.guests.get(name) else {
            return Vec::new();
        };
        guest
            .imports
            .iter()
            .map(|(id, i)| {
                format!(
                    "import={id} attachment={} source={} buffer={} offset={:#x} size={} state={:?}",
                    i.attachment, i.source, i.buffer_id, i.shm_offset, i.size, i.state
                )
            })
            .collect()
    }

    /// Guest `name`'s attachments, and its live imports: what fault
    /// injection makes spurious events about.
    pub fn snapshot(&self, name: &str) -> (Vec<u32>, Vec<LiveImport>) {
        let inner = self.lock();
        let Some(guest) = inner.guests.get(name) else {
            return (Vec::new(), Vec::new());
        };
        let attachments = guest.attachments.keys().copied().collect();
        let imports = guest
            .imports
            .iter()
            .filter(|(_, i)| i.state == State::Live)
            .map(|(id, i)| LiveImport {
                id: *id,
                attachment: i.attachment,
                shm_offset: i.shm_offset,
                size: i.size,
                seqno: i.seqno,
            })
            .collect();
        (attachments, imports)
    }

    /// The size of each guest's import region.
    pub fn region_size(&self) -> u64 {
        self.config.shm_size
    }

    /// Bytes of guest `name`'s import region reserved.
    pub fn region_used(&self, name: &str) -> u64 {
        self.lock().guests.get(name).map_or(0, |g| g.alloc.used())
    }
}

impl Inner {
    /// Imports buffer `id` of `source` for attachment `attachment` of
    /// `name`: reserves a range and queues its map, or says
    /// IMPORT_NO_SPACE.
    fn import(&mut self, name: &str, attachment: u32, source: &str, id: u64) {
        let Some(exporter) = self.guests.get(source) else {
            return;
        };
        let Some(buffer) = exporter.buffers.get(&id) else {
            return;
        };
        let exporter_holders = Arc::clone(&exporter.holders);
        let pieces = pieces_of(buffer);
        let (size, props) = (buffer.size, buffer.props.clone());
        let import_id = self.next_import;
        let Some(guest) = self.guests.get_mut(name) else {
            return;
        };
        if guest
            .attachments
            .get(&attachment)
            .is_none_or(|att| att.skipped.contains(&id))
        {
            return;
        }
        let planned = pieces.and_then(|pieces| {
            let mapper = guest
                .mapper
                .clone()
                .ok_or_else(|| String::from("no frontend"))?;
            let offset = guest
                .alloc
                .allocate(size)
                .ok_or_else(|| format!("no room for {size} bytes in the import region"))?;
            Ok((pieces, offset, mapper))
        });
        let (mut pieces, offset, mapper) = match planned {
            Ok(planned) => planned,
            Err(why) => {
                crate::guest_info!("guest {name}: {source} buffer {id} not imported: {why}");
                no_space(guest, attachment, id, size);
                return;
            }
        };
        self.next_import += 1;
        let mut at = offset;
        for piece in &mut pieces {
            piece.shm_offset = at;
            at += piece.len;
        }
        let ranges = pieces.iter().map(|p| (p.shm_offset, p.len)).collect();
        guest.imports.insert(
            import_id,
            Import {
                attachment,
                source: source.to_string(),
                buffer_id: id,
                shm_offset: offset,
                size,
                ranges,
                seqno: 0,
                props,
                state: State::Mapping { gone: false },
            },
        );
        exporter_holders.handed(id, holder(import_id));
        debug!("guest {name}: import {import_id} of {source} buffer {id} at {offset:#x}");
        mapper.push(Job::Map {
            import: import_id,
            pieces,
        });
    }

    /// The pieces of import `id` of `name` are mapped, or not.
    fn mapped(&mut self, name: &str, id: u64, result: Result<(), String>) {
        let Some(guest) = self.guests.get_mut(name) else {
            return;
        };
        let Some(import) = guest.imports.get(&id) else {
            // Ended meanwhile: its unmap is queued.
            return;
        };
        let State::Mapping { gone } = import.state else {
            return;
        };
        if let Err(why) = result {
            warn!(
                "guest {name}: import {id} of {} buffer {}: {why}",
                import.source, import.buffer_id
            );
            let Some(import) = guest.imports.remove(&id) else {
                return;
            };
            guest.alloc.free(import.shm_offset);
            if !gone {
                no_space(guest, import.attachment, import.buffer_id, import.size);
            }
            if let Some(exporter) = self.guests.get(&import.source) {
                exporter.holders.closed(import.buffer_id, holder(id));
            }
            return;
        }
        if gone {
            self.withdraw(name, id);
            return;
        }
        let (source, buffer_id) = (import.source.clone(), import.buffer_id);
        let seqno = self
            .guests
            .get(&source)
            .and_then(|e| e.buffers.get(&buffer_id))
            .map_or(0, |b| b.seqno);
        if seqno != 0 {
            if let Some(exporter) = self.guests.get(&source) {
                exporter.holders.given(buffer_id, holder(id), seqno);
            }
        }
        let Some(guest) = self.guests.get_mut(name) else {
            return;
        };
        let Some(import) = guest.imports.get_mut(&id) else {
            return;
        };
        import.state = State::Live;
        import.seqno = seqno;
        guest.inbox.push(DeviceEvent::ImportAdded {
            import_id: id,
            attachment: import.attachment,
            buffer_id,
            seqno,
            flags: 0,
            shm_offset: import.shm_offset,
            size: import.size,
        });
        guest.holders.poke();
    }

    /// The ranges of import `id` of `name` are unmapped.
    fn unmapped(&mut self, name: &str, id: u64) {
        let Some(guest) = self.guests.get_mut(name) else {
            return;
        };
        let (source, buffer_id) = if let Some(c) = guest.closing.remove(&id) {
            (c.source, c.buffer_id)
        } else if let Some(import) = guest
            .imports
            .get_mut(&id)
            .filter(|i| i.state == State::Revoking)
        {
            import.state = State::Revoked;
            (import.source.clone(), import.buffer_id)
        } else {
            return;
        };
        if let Some(exporter) = self.guests.get(&source) {
            exporter.holders.ungive(buffer_id, holder(id));
            exporter.holders.closed(buffer_id, holder(id));
        }
    }

    /// Takes import `id` out of `name`'s hands (CLOSE, DETACH before its
    /// IMPORT_ADDED was read, the end of its importer, or a mapping done
    /// after its buffer went): its updates are released, its range freed,
    /// its unmap queued (the exporter's buffer is let go once done).
    fn withdraw(&mut self, name: &str, id: u64) {
        let Some(guest) = self.guests.get_mut(name) else {
            return;
        };
        let Some(import) = guest.imports.remove(&id) else {
            return;
        };
        guest.alloc.free(import.shm_offset);
        let closing = Closing {
            source: import.source.clone(),
            buffer_id: import.buffer_id,
        };
        match import.state {
            State::Revoked => {
                // Unmapped and let go already.
                return;
            }
            State::Revoking => {
                // Its unmap is queued already.
                guest.closing.insert(id, closing);
                return;
            }
            State::Mapping { .. } | State::Live | State::Removed(_) => {}
        }
        match &guest.mapper {
            Some(mapper) => {
                mapper.push(Job::Unmap {
                    import: id,
                    ranges: import.ranges,
                });
                guest.closing.insert(id, closing);
            }
            None => {
                // No frontend: nothing to unmap.
                if let Some(exporter) = self.guests.get(&import.source) {
                    exporter.holders.closed(import.buffer_id, holder(id));
                }
                return;
            }
        }
        if let Some(exporter) = self.guests.get(&import.source) {
            exporter.holders.ungive(import.buffer_id, holder(id));
        }
    }

    /// The exporter's buffer of import `id` of `name` is gone (or its
    /// attachment): IMPORT_REMOVED, revoked at `deadline` unless CLOSEd.
    fn remove_import(&mut self, name: &str, id: u64, deadline: Instant) {
        let Some(guest) = self.guests.get_mut(name) else {
            return;
        };
        let Some(import) = guest.imports.get_mut(&id) else {
            return;
        };
        match import.state {
            State::Mapping { .. } => import.state = State::Mapping { gone: true },
            State::Live => {
                import.state = State::Removed(deadline);
                guest.inbox.push(DeviceEvent::ImportRemoved {
                    import_id: id,
                    attachment: import.attachment,
                    buffer_id: import.buffer_id,
                });
                guest.holders.poke();
            }
            State::Removed(_) | State::Revoking | State::Revoked => {}
        }
    }

    /// The imports of buffer `buffer_id` of `source`, by importer.
    fn imports_of(&self, source: &str, buffer_id: u64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (name, guest) in &self.guests {
            for (id, import) in &guest.imports {
                if import.source == source && import.buffer_id == buffer_id {
                    out.push((name.clone(), *id));
                }
            }
        }
        out
    }
}

/// Says IMPORT_NO_SPACE to `guest` for buffer `id` (`size` bytes) of
/// `attachment`'s source, which is never imported later for it.
fn no_space(guest: &mut Guest, attachment: u32, id: u64, size: u64) {
    if let Some(att) = guest.attachments.get_mut(&attachment) {
        att.skipped.insert(id);
        guest.inbox.push(DeviceEvent::ImportNoSpace {
            attachment,
            buffer_id: id,
            size,
        });
        guest.holders.poke();
    }
}

/// The pieces of memory files `buffer` is made of, with their lengths
/// and file offsets (`shm_offset` left 0); refused unless each is whole
/// pages, since a range of the region maps nothing but the buffer.
fn pieces_of(buffer: &Exported) -> Result<Vec<Piece>, String> {
    let export = buffer.export.as_ref().map_err(Clone::clone)?;
    let to = Receiver {
        version: 3,
        ram: Some(RamAccess::ReadWrite),
    };
    let memory = export.memory(None, &to).map_err(|e| e.to_string())?;
    let Memory::Segments { files, segments } = memory else {
        return Err(String::from("no memory segments"));
    };
    segments
        .iter()
        .map(|s| {
            if !s.offset.is_multiple_of(PAGE_SIZE) || !s.len.is_multiple_of(PAGE_SIZE) {
                return Err(format!(
                    "a piece of {:#x} bytes at {:#x} of its file is not whole pages",
                    s.len, s.offset
                ));
            }
            let fd = files
                .get(s.file as usize)
                .ok_or_else(|| String::from("no file"))?
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("cannot duplicate a memory file: {e}"))?;
            Ok(Piece {
                fd,
                fd_offset: s.offset,
                shm_offset: 0,
                len: s.len,
            })
        })
        .collect()
}

/// Reports the jobs of one connection of a guest back to the hub.
struct Link {
    hub: Weak<ImportHub>,
    guest: String,
    epoch: u64,
}

impl Completion for Link {
    fn done(&self, done: Done) {
        if let Some(hub) = self.hub.upgrade() {
            hub.completed(&self.guest, self.epoch, done);
        }
    }
}

/// A guest's buffer table, as the import hub hears it.
#[derive(Debug)]
struct ExporterEvents {
    hub: Arc<ImportHub>,
    guest: String,
}

impl ExporterEvents {
    /// Buffer `id` of the guest is gone: its imports are removed, and the
    /// attachments forget that it had no room (a buffer registered again
    /// under its id is another buffer).
    fn gone(&self, inner: &mut Inner, id: u64, deadline: Instant) {
        for (name, import) in inner.imports_of(&self.guest, id) {
            inner.remove_import(&name, import, deadline);
        }
        for guest in inner.guests.values_mut() {
            for att in guest.attachments.values_mut() {
                if att.source == self.guest {
                    att.skipped.remove(&id);
                }
            }
        }
    }
}

impl TableObserver for ExporterEvents {
    fn added(&self, buffer: &Buffer, mem: Option<&GuestMemoryMmap>) {
        let export = Export::new(buffer, mem)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let mut inner = self.hub.lock();
        let Some(exporter) = inner.guests.get_mut(&self.guest) else {
            return;
        };
        exporter.buffers.insert(
            buffer.id,
            Exported {
                application: buffer.application.clone(),
                size: buffer.size,
                seqno: buffer.seqno,
                props: buffer.props.clone(),
                export,
            },
        );
        let mut targets = Vec::new();
        for (name, guest) in &inner.guests {
            if !guest.enabled {
                continue;
            }
            for (number, att) in &guest.attachments {
                if att.source == self.guest && att.application == buffer.application {
                    targets.push((name.clone(), *number));
                }
            }
        }
        for (name, number) in targets {
            inner.import(&name, number, &self.guest, buffer.id);
        }
    }

    fn updated(&self, buffer: &Buffer, update: &UpdateInfo) {
        let mut inner = self.hub.lock();
        let inner = &mut *inner;
        let Some(exporter) = inner.guests.get_mut(&self.guest) else {
            return;
        };
        if let Some(b) = exporter.buffers.get_mut(&buffer.id) {
            b.seqno = update.seqno;
        }
        let holders = Arc::clone(&exporter.holders);
        for (name, id) in inner.imports_of(&self.guest, buffer.id) {
            let Some(guest) = inner.guests.get_mut(&name) else {
                continue;
            };
            let Some(import) = guest.imports.get_mut(&id) else {
                continue;
            };
            if import.state != State::Live {
                continue;
            }
            import.seqno = update.seqno;
            holders.given(buffer.id, holder(id), update.seqno);
            guest.inbox.push(DeviceEvent::ImportUpdated {
                import_id: id,
                attachment: import.attachment,
                buffer_id: buffer.id,
                seqno: update.seqno,
            });
            guest.holders.poke();
        }
    }

    fn properties(&self, buffer: &Buffer) {
        let mut inner = self.hub.lock();
        if let Some(b) = inner
            .guests
            .get_mut(&self.guest)
            .and_then(|e| e.buffers.get_mut(&buffer.id))
        {
            b.props = buffer.props.clone();
        }
        for (name, id) in inner.imports_of(&self.guest, buffer.id) {
            if let Some(import) = inner
                .guests
                .get_mut(&name)
                .and_then(|g| g.imports.get_mut(&id))
            {
                if matches!(import.state, State::Mapping { .. } | State::Live) {
                    import.props = buffer.props.clone();
                }
            }
        }
    }

    fn removed(&self, buffer: &Buffer) {
        let deadline = Instant::now() + self.hub.config.grace;
        let mut inner = self.hub.lock();
        if let Some(exporter) = inner.guests.get_mut(&self.guest) {
            exporter.buffers.remove(&buffer.id);
        }
        self.gone(&mut inner, buffer.id, deadline);
        drop(inner);
        self.hub.timer.notify_all();
    }

    fn reset(&self, reason: ResetReason) {
        let deadline = Instant::now() + self.hub.config.grace;
        let mut inner = self.hub.lock();
        let ids: Vec<u64> = match inner.guests.get_mut(&self.guest) {
            Some(exporter) => std::mem::take(&mut exporter.buffers).into_keys().collect(),
            None => return,
        };
        let mut all: Vec<u64> = ids;
        // Imports of buffers that went before they were mirrored too.
        for guest in inner.guests.values() {
            all.extend(
                guest
                    .imports
                    .values()
                    .filter(|i| i.source == self.guest)
                    .map(|i| i.buffer_id),
            );
        }
        all.sort_unstable();
        all.dedup();
        if !all.is_empty() {
            debug!("guest {}: buffers dropped ({reason:?})", self.guest);
        }
        for id in all {
            self.gone(&mut inner, id, deadline);
        }
        drop(inner);
        self.hub.timer.notify_all();
    }
}

#[cfg(test)]
mod tests;
