// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The events the device has for the driver (with
//! `VIRTIO_BUFSHARE_F_EVENTS`) and has not written into the event queue
//! yet, merged as the device specification allows: one RELEASED (the
//! highest seqno) and one FREED per buffer, one CONSUMERS per application
//! (the latest count), one LOST, and one OVERFLOW in place of the
//! CONSUMERS events beyond [`MAX_PENDING_CONSUMERS`]; with
//! `VIRTIO_BUFSHARE_F_IMPORT`, one IMPORT_ADDED, one IMPORT_UPDATED (the
//! latest seqno) and one IMPORT_REMOVED per import, and one
//! IMPORT_NO_SPACE per buffer of an attachment's source.
//!
//! Events go out in the order they were first made pending; a merged
//! event keeps its place.

use std::collections::{HashMap, HashSet, VecDeque};

use bufshare_uapi::{
    VirtioBufshareEvent, VirtioBufshareEventImport, VIRTIO_BUFSHARE_APP_LEN,
    VIRTIO_BUFSHARE_EVT_CONSUMERS, VIRTIO_BUFSHARE_EVT_FREED, VIRTIO_BUFSHARE_EVT_IMPORT_ADDED,
    VIRTIO_BUFSHARE_EVT_IMPORT_NO_SPACE, VIRTIO_BUFSHARE_EVT_IMPORT_REMOVED,
    VIRTIO_BUFSHARE_EVT_IMPORT_UPDATED, VIRTIO_BUFSHARE_EVT_LOST, VIRTIO_BUFSHARE_EVT_OVERFLOW,
    VIRTIO_BUFSHARE_EVT_RELEASED,
};
use vm_memory::ByteValued;

/// Most CONSUMERS events pending; more are replaced by one OVERFLOW.
pub const MAX_PENDING_CONSUMERS: usize = 64;

/// An event for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Every host party given update `seqno` (or a later one) of buffer
    /// `id` is done with it.
    Released {
        /// The buffer.
        id: u64,
        /// The update.
        seqno: u64,
    },
    /// No host party holds the memory of the unregistered buffer `id`.
    Freed(u64),
    /// `count` consumers are attached to `application`.
    Consumers {
        /// The application.
        application: String,
        /// How many consumers.
        count: u32,
    },
    /// The device lost its buffers.
    Lost,
    /// CONSUMERS events were dropped.
    Overflow,
    /// IMPORT_ADDED: buffer `buffer_id` of the attachment's source is
    /// mapped at `shm_offset`.
    ImportAdded {
        /// The import.
        import_id: u64,
        /// Its attachment.
        attachment: u32,
        /// The exporter's id of the buffer.
        buffer_id: u64,
        /// The exporter's last update.
        seqno: u64,
        /// `VIRTIO_BUFSHARE_IMPORT_F_*`.
        flags: u32,
        /// Where it is mapped in the import region.
        shm_offset: u64,
        /// The buffer's size.
        size: u64,
    },
    /// IMPORT_UPDATED: the exporter updated the buffer of an import.
    ImportUpdated {
        /// The import.
        import_id: u64,
        /// Its attachment.
        attachment: u32,
        /// The exporter's id of the buffer.
        buffer_id: u64,
        /// The update.
        seqno: u64,
    },
    /// IMPORT_REMOVED: the exporter's buffer is gone.
    ImportRemoved {
        /// The import.
        import_id: u64,
        /// Its attachment.
        attachment: u32,
        /// The exporter's id of the buffer.
        buffer_id: u64,
    },
    /// IMPORT_NO_SPACE: a buffer of the attachment's source was not
    /// imported.
    ImportNoSpace {
        /// The attachment.
        attachment: u32,
        /// The exporter's id of the buffer.
        buffer_id: u64,
        /// Its size.
        size: u64,
    },
}

impl DeviceEvent {
    /// The event's 96 bytes as the driver reads them, with `generation`.
    pub fn to_bytes(&self, generation: u32) -> Vec<u8> {
        match self.to_import_wire(generation) {
            Some(event) => event.as_slice().to_vec(),
            None => self.to_wire(generation).as_slice().to_vec(),
        }
    }

    /// The import, if it is an IMPORT_* event about one.
    pub fn import_id(&self) -> Option<u64> {
        match self {
            DeviceEvent::ImportAdded { import_id, .. }
            | DeviceEvent::ImportUpdated { import_id, .. }
            | DeviceEvent::ImportRemoved { import_id, .. } => Some(*import_id),
            _ => None,
        }
    }

    /// The attachment, if it is an IMPORT_* event.
    pub fn attachment(&self) -> Option<u32> {
        match self {
            DeviceEvent::ImportAdded { attachment, .. }
            | DeviceEvent::ImportUpdated { attachment, .. }
            | DeviceEvent::ImportRemoved { attachment, .. }
            | DeviceEvent::ImportNoSpace { attachment, .. } => Some(*attachment),
            _ => None,
        }
    }

    /// An IMPORT_* event as the driver reads it; `None` for the others.
    fn to_import_wire(&self, generation: u32) -> Option<VirtioBufshareEventImport> {
        let mut event = VirtioBufshareEventImport {
            generation: generation.into(),
            ..Default::default()
        };
        let type_ = match *self {
            DeviceEvent::ImportAdded {
                import_id,
                attachment,
                buffer_id,
                seqno,
                flags,
                shm_offset,
                size,
            } => {
                event.import_id = import_id.into();
                event.attachment = attachment.into();
                event.buffer_id = buffer_id.into();
                event.seqno = seqno.into();
                event.flags = flags.into();
                event.shm_offset = shm_offset.into();
                event.size = size.into();
                VIRTIO_BUFSHARE_EVT_IMPORT_ADDED
            }
            DeviceEvent::ImportUpdated {
                import_id,
                attachment,
                buffer_id,
                seqno,
            } => {
                event.import_id = import_id.into();
                event.attachment = attachment.into();
                event.buffer_id = buffer_id.into();
                event.seqno = seqno.into();
                VIRTIO_BUFSHARE_EVT_IMPORT_UPDATED
            }
            DeviceEvent::ImportRemoved {
                import_id,
                attachment,
                buffer_id,
            } => {
                event.import_id = import_id.into();
                event.attachment = attachment.into();
                event.buffer_id = buffer_id.into();
                VIRTIO_BUFSHARE_EVT_IMPORT_REMOVED
            }
            DeviceEvent::ImportNoSpace {
                attachment,
                buffer_id,
                size,
            } => {
                event.attachment = attachment.into();
                event.buffer_id = buffer_id.into();
                event.size = size.into();
                VIRTIO_BUFSHARE_EVT_IMPORT_NO_SPACE
            }
            _ => return None,
        };
        event.type_ = type_.into();
        Some(event)
    }

    /// The event as the driver reads it, with `generation`, for the events
    /// of `struct virtio_bufshare_event`; an IMPORT_* event has its own
    /// layout ([`DeviceEvent::to_bytes`]) and comes out as type 0 here.
    pub fn to_wire(&self, generation: u32) -> VirtioBufshareEvent {
        let mut event = VirtioBufshareEvent {
            generation: generation.into(),
            ..Default::default()
        };
        let type_ = match self {
            DeviceEvent::Released { id, seqno } => {
                event.buffer_id = (*id).into();
                event.seqno = (*seqno).into();
                VIRTIO_BUFSHARE_EVT_RELEASED
            }
            DeviceEvent::Freed(id) => {
                event.buffer_id = (*id).into();
                VIRTIO_BUFSHARE_EVT_FREED
            }
            DeviceEvent::Consumers { application, count } => {
                event.consumers = (*count).into();
                // Application names are 1 to 63 characters: a NUL is left.
                let len = application.len().min(VIRTIO_BUFSHARE_APP_LEN - 1);
                event.application[..len].copy_from_slice(&application.as_bytes()[..len]);
                VIRTIO_BUFSHARE_EVT_CONSUMERS
            }
            DeviceEvent::Lost => VIRTIO_BUFSHARE_EVT_LOST,
            DeviceEvent::Overflow => VIRTIO_BUFSHARE_EVT_OVERFLOW,
            DeviceEvent::ImportAdded { .. }
            | DeviceEvent::ImportUpdated { .. }
            | DeviceEvent::ImportRemoved { .. }
            | DeviceEvent::ImportNoSpace { .. } => 0,
        };
        event.type_ = type_.into();
        event
    }
}

/// Where a pending event is kept, which is what merges.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Released(u64),
    Freed(u64),
    Consumers(String),
    Lost,
    Overflow,
    ImportAdded(u64),
    ImportUpdated(u64),
    ImportRemoved(u64),
    /// Attachment, buffer.
    ImportNoSpace(u32, u64),
}

impl Key {
    fn is_import(&self) -> bool {
        matches!(
            self,
            Key::ImportAdded(_)
                | Key::ImportUpdated(_)
                | Key::ImportRemoved(_)
                | Key::ImportNoSpace(..)
        )
    }
}

/// The pending events; see the module.
#[derive(Debug, Default)]
pub struct PendingEvents {
    order: VecDeque<Key>,
    released: HashMap<u64, u64>,
    consumers: HashMap<String, u32>,
    keys: HashSet<Key>,
    /// The IMPORT_* events, by key (an IMPORT_UPDATED carrying the latest
    /// seqno).
    imports: HashMap<Key, DeviceEvent>,
}

impl PendingEvents {
    fn push_key(&mut self, key: Key) {
        if self.keys.insert(key.clone()) {
            self.order.push_back(key);
        }
    }

    /// Buffer `id` is released up to `seqno` (merged with a pending
    /// RELEASED of it: the higher seqno).
    pub fn released(&mut self, id: u64, seqno: u64) {
        let pending = self.released.entry(id).or_insert(seqno);
        *pending = (*pending).max(seqno);
        self.push_key(Key::Released(id));
    }

    /// Buffer `id` is freed.
    pub fn freed(&mut self, id: u64) {
        self.push_key(Key::Freed(id));
    }

    /// `count` consumers are attached to `application` now; beyond
    /// [`MAX_PENDING_CONSUMERS`] applications, the pending CONSUMERS
    /// events are replaced by one OVERFLOW.
    pub fn consumers(&mut self, application: &str, count: u32) {
        let key = Key::Consumers(application.to_string());
        if !self.keys.contains(&key) && self.consumers.len() >= MAX_PENDING_CONSUMERS {
            self.consumers.clear();
            self.keys.retain(|k| !matches!(k, Key::Consumers(_)));
            self.order.retain(|k| !matches!(k, Key::Consumers(_)));
            self.push_key(Key::Overflow);
            return;
        }
        self.consumers.insert(application.to_string(), count);
        self.push_key(key);
    }

    /// An IMPORT_* event (merged with a pending one of the same import and
    /// type, or of the same attachment and buffer for IMPORT_NO_SPACE: the
    /// latest wins); other events go where their type says.
    pub fn push(&mut self, event: DeviceEvent) {
        let key = match &event {
            DeviceEvent::ImportAdded { import_id, .. } => Key::ImportAdded(*import_id),
            DeviceEvent::ImportUpdated { import_id, .. } => Key::ImportUpdated(*import_id),
            DeviceEvent::ImportRemoved { import_id, .. } => Key::ImportRemoved(*import_id),
            DeviceEvent::ImportNoSpace {
                attachment,
                buffer_id,
                ..
            } => Key::ImportNoSpace(*attachment, *buffer_id),
            DeviceEvent::Released { id, seqno } => return self.released(*id, *seqno),
            DeviceEvent::Freed(id) => return self.freed(*id),
            DeviceEvent::Consumers { application, count } => {
                return self.consumers(application, *count)
            }
            DeviceEvent::Lost => return self.lost(),
            DeviceEvent::Overflow => return self.push_key(Key::Overflow),
        };
        self.imports.insert(key.clone(), event);
        self.push_key(key);
    }

    /// Drops the pending IMPORT_* events for which `drop` is true.
    pub fn drop_imports(&mut self, mut drop: impl FnMut(&DeviceEvent) -> bool) {
        let gone: Vec<Key> = self
            .imports
            .iter()
            .filter(|(_, event)| drop(event))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            self.imports.remove(key);
            self.keys.remove(key);
        }
        if !gone.is_empty() {
            self.order.retain(|k| !gone.contains(k));
        }
    }

    /// The pending IMPORT_* events, in order.
    pub fn imports(&self) -> impl Iterator<Item = &DeviceEvent> {
        self.order.iter().filter_map(|k| self.imports.get(k))
    }

    /// Takes every pending event, in order (to move them into another
    /// [`PendingEvents`] with [`PendingEvents::push`]).
    pub fn take_all(&mut self) -> Vec<DeviceEvent> {
        std::iter::from_fn(|| self.pop()).collect()
    }

    /// The device lost its buffers: their pending RELEASED and FREED
    /// events are dropped, and so are the IMPORT_* events (the driver's
    /// attachments and imports end with them); one LOST is pending.
    pub fn lost(&mut self) {
        self.drop_buffer_events();
        self.drop_imports(|_| true);
        self.push_key(Key::Lost);
    }

    /// Drops the pending RELEASED and FREED events.
    fn drop_buffer_events(&mut self) {
        self.released.clear();
        self.keys
            .retain(|k| !matches!(k, Key::Released(_) | Key::Freed(_)));
        self.order
            .retain(|k| !matches!(k, Key::Released(_) | Key::Freed(_)));
    }

    /// Drops every pending event (a device reset).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether LOST is pending.
    pub fn lost_pending(&self) -> bool {
        self.keys.contains(&Key::Lost)
    }

    /// Number of events pending.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The first pending event, without taking it.
    pub fn peek(&self) -> Option<DeviceEvent> {
        self.order.front().map(|key| self.event(key))
    }

    /// Takes the first pending event.
    pub fn pop(&mut self) -> Option<DeviceEvent> {
        let key = self.order.pop_front()?;
        let event = self.event(&key);
        self.keys.remove(&key);
        match &key {
            Key::Released(id) => {
                self.released.remove(id);
            }
            Key::Consumers(app) => {
                self.consumers.remove(app);
            }
            key if key.is_import() => {
                self.imports.remove(key);
            }
            _ => {}
        }
        Some(event)
    }

    fn event(&self, key: &Key) -> DeviceEvent {
        match key {
            Key::Released(id) => DeviceEvent::Released {
                id: *id,
                seqno: self.released.get(id).copied().unwrap_or(0),
            },
            Key::Freed(id) => DeviceEvent::Freed(*id),
            Key::Consumers(app) => DeviceEvent::Consumers {
                application: app.clone(),
                count: self.consumers.get(app).copied().unwrap_or(0),
            },
            Key::Lost => DeviceEvent::Lost,
            Key::Overflow => DeviceEvent::Overflow,
            key => self
                .imports
                .get(key)
                .cloned()
                .unwrap_or(DeviceEvent::Overflow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::ByteValued;

    fn drain(p: &mut PendingEvents) -> Vec<DeviceEvent> {
        std::iter::from_fn(|| p.pop()).collect()
    }

    #[test]
    fn merged_per_buffer_in_first_order() {
        let mut p = PendingEvents::default();
        p.released(1, 3);
        p.freed(2);
        p.released(1, 7);
        p.released(1, 5);
        p.freed(2);
        p.released(3, 1);
        assert_eq!(p.len(), 3);
        assert_eq!(
            drain(&mut p),
            [
                DeviceEvent::Released { id: 1, seqno: 7 },
                DeviceEvent::Freed(2),
                DeviceEvent::Released { id: 3, seqno: 1 },
            ]
        );
        // Taken: a new one starts over.
        p.released(1, 2);
        assert_eq!(p.pop(), Some(DeviceEvent::Released { id: 1, seqno: 2 }));
    }

    #[test]
    fn consumers_merge_then_overflow() {
        let mut p = PendingEvents::default();
        p.consumers("a", 1);
        p.freed(9);
        p.consumers("a", 2);
        assert_eq!(p.len(), 2);
        for i in 1..MAX_PENDING_CONSUMERS {
            p.consumers(&format!("app{i}"), 1);
        }
        assert_eq!(p.len(), MAX_PENDING_CONSUMERS + 1);
        // An existing one still merges.
        p.consumers("a", 0);
        assert_eq!(p.len(), MAX_PENDING_CONSUMERS + 1);
        // One more application: OVERFLOW in place of them all.
        p.consumers("more", 1);
        assert_eq!(
            drain(&mut p),
            [DeviceEvent::Freed(9), DeviceEvent::Overflow]
        );
        p.consumers("x", 4);
        p.consumers("y", 4);
        p.consumers("x", 5);
        assert_eq!(
            drain(&mut p),
            [
                DeviceEvent::Consumers {
                    application: "x".into(),
                    count: 5
                },
                DeviceEvent::Consumers {
                    application: "y".into(),
                    count: 4
                },
            ]
        );
    }

    #[test]
    fn lost_drops_buffer_events_once() {
        let mut p = PendingEvents::default();
        p.released(1, 3);
        p.consumers("a", 1);
        p.freed(2);
        p.lost();
        p.lost();
        assert!(p.lost_pending());
        assert_eq!(
            drain(&mut p),
            [
                DeviceEvent::Consumers {
                    application: "a".into(),
                    count: 1
                },
                DeviceEvent::Lost,
            ]
        );
        p.freed(1);
        p.lost();
        p.clear();
        assert!(p.is_empty());
        assert!(!p.lost_pending());
    }

    #[test]
    fn import_events_merge_per_import() {
        let mut p = PendingEvents::default();
        let added = DeviceEvent::ImportAdded {
            import_id: 1,
            attachment: 2,
            buffer_id: 3,
            seqno: 4,
            flags: 0,
            shm_offset: 0x1000,
            size: 0x2000,
        };
        let updated = |seqno| DeviceEvent::ImportUpdated {
            import_id: 1,
            attachment: 2,
            buffer_id: 3,
            seqno,
        };
        let no_space = DeviceEvent::ImportNoSpace {
            attachment: 2,
            buffer_id: 9,
            size: 1 << 20,
        };
        p.push(added.clone());
        p.push(updated(5));
        p.freed(7);
        p.push(updated(6));
        p.push(no_space.clone());
        p.push(no_space.clone());
        assert_eq!(p.len(), 4);
        assert_eq!(p.imports().count(), 3);
        assert_eq!(
            drain(&mut p),
            [added.clone(), updated(6), DeviceEvent::Freed(7), no_space]
        );
        // Dropped by attachment; LOST drops them all.
        p.push(added.clone());
        p.push(DeviceEvent::ImportRemoved {
            import_id: 8,
            attachment: 3,
            buffer_id: 1,
        });
        p.drop_imports(|e| e.attachment() == Some(2));
        assert_eq!(p.len(), 1);
        p.push(added);
        p.lost();
        assert_eq!(drain(&mut p), [DeviceEvent::Lost]);
    }

    #[test]
    fn import_wire_format() {
        let bytes = DeviceEvent::ImportAdded {
            import_id: 0x11,
            attachment: 0x22,
            buffer_id: 0x33,
            seqno: 0x44,
            flags: 1,
            shm_offset: 0x5000,
            size: 0x6000,
        }
        .to_bytes(0x77);
        assert_eq!(bytes.len(), 96);
        assert_eq!(&bytes[..8], &[0x10, 0x10, 0, 0, 0x77, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &0x11u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &0x44u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &0x22u32.to_le_bytes());
        assert_eq!(&bytes[28..32], &1u32.to_le_bytes());
        assert_eq!(&bytes[32..40], &0x5000u64.to_le_bytes());
        assert_eq!(&bytes[40..48], &0x6000u64.to_le_bytes());
        assert_eq!(&bytes[48..56], &0x33u64.to_le_bytes());
        assert!(bytes[56..].iter().all(|&b| b == 0));
        let bytes = DeviceEvent::ImportNoSpace {
            attachment: 5,
            buffer_id: 6,
            size: 7,
        }
        .to_bytes(0);
        assert_eq!(&bytes[..4], &0x1013u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &[0; 8], "no import");
        assert_eq!(&bytes[40..48], &7u64.to_le_bytes());
        // The others as before.
        assert_eq!(
            DeviceEvent::Freed(4).to_bytes(7),
            DeviceEvent::Freed(4).to_wire(7).as_slice()
        );
    }

    #[test]
    fn wire_format() {
        let e = DeviceEvent::Released {
            id: 0x11,
            seqno: 0x22,
        }
        .to_wire(0x33);
        let bytes = e.as_slice();
        assert_eq!(bytes.len(), 96);
        assert_eq!(&bytes[..8], &[0, 0x10, 0, 0, 0x33, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &0x11u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &0x22u64.to_le_bytes());
        assert!(bytes[24..].iter().all(|&b| b == 0));
        let e = DeviceEvent::Consumers {
            application: "cam".into(),
            count: 2,
        }
        .to_wire(0);
        let bytes = e.as_slice();
        assert_eq!(&bytes[..4], &0x1002u32.to_le_bytes());
        assert_eq!(&bytes[24..28], &2u32.to_le_bytes());
        assert_eq!(&bytes[32..35], b"cam");
        assert!(bytes[35..].iter().all(|&b| b == 0));
        assert_eq!(DeviceEvent::Lost.to_wire(7).type_.to_native(), 0x1003);
        assert_eq!(DeviceEvent::Freed(4).to_wire(7).buffer_id.to_native(), 4);
        assert_eq!(DeviceEvent::Overflow.to_wire(7).type_.to_native(), 0x1004);
    }
}
