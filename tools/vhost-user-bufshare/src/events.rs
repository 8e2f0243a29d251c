// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The events the device has for the driver (with
//! `VIRTIO_BUFSHARE_F_EVENTS`) and has not written into the event queue
//! yet, merged as the device specification allows: one RELEASED (the
//! highest seqno) and one FREED per buffer, one CONSUMERS per application
//! (the latest count), one LOST, and one OVERFLOW in place of the
//! CONSUMERS events beyond [`MAX_PENDING_CONSUMERS`].
//!
//! Events go out in the order they were first made pending; a merged
//! event keeps its place.

use std::collections::{HashMap, HashSet, VecDeque};

use bufshare_uapi::{
    VirtioBufshareEvent, VIRTIO_BUFSHARE_APP_LEN, VIRTIO_BUFSHARE_EVT_CONSUMERS,
    VIRTIO_BUFSHARE_EVT_FREED, VIRTIO_BUFSHARE_EVT_LOST, VIRTIO_BUFSHARE_EVT_OVERFLOW,
    VIRTIO_BUFSHARE_EVT_RELEASED,
};

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
}

impl DeviceEvent {
    /// The event as the driver reads it, with `generation`.
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
}

/// The pending events; see the module.
#[derive(Debug, Default)]
pub struct PendingEvents {
    order: VecDeque<Key>,
    released: HashMap<u64, u64>,
    consumers: HashMap<String, u32>,
    keys: HashSet<Key>,
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

    /// The device lost its buffers: their pending RELEASED and FREED
    /// events are dropped, and one LOST is pending.
    pub fn lost(&mut self) {
        self.drop_buffer_events();
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
