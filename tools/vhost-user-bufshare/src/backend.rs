// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The vhost-user glue: features, configuration space, and the command
//! virtqueue, whose descriptor chains are read and written here and whose
//! commands are carried out by [`BufshareDevice`], possibly misbehaving as a
//! [`FaultFile`] says.

use std::io::{self, Read, Write};
use std::sync::Arc;

use std::collections::VecDeque;

use bufshare_uapi::{
    VirtioBufshareEvent, VIRTIO_BUFSHARE_F_BUFFERS, VIRTIO_BUFSHARE_F_EVENTS,
    VIRTIO_BUFSHARE_F_GENERATION, VIRTIO_BUFSHARE_F_IMPORT, VIRTIO_BUFSHARE_NUM_VQS_EVENTS,
    VIRTIO_BUFSHARE_VQ_CMD, VIRTIO_BUFSHARE_VQ_EVENT,
};
use log::{debug, error, info, warn};
use thiserror::Error as ThisError;
use vhost::vhost_user::message::{
    VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserVirtioFeatures,
};
use vhost::vhost_user::Backend;
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::buffers::SharedState;
use crate::device::{BufshareDevice, ImportPort, Limits};
use crate::fault::{Fault, FaultFile};
use crate::import::hub::ImportHub;
use crate::shmem::Mapper;
use crate::{guest_error, guest_warn};

/// Largest size of the command virtqueue.
pub const QUEUE_SIZE: usize = 256;
/// Number of virtqueues: the command queue, and the event queue, which a
/// driver that does not ack `VIRTIO_BUFSHARE_F_EVENTS` never sets up.
pub const NUM_QUEUES: usize = VIRTIO_BUFSHARE_NUM_VQS_EVENTS;
/// The event of the worker thread's epoll that says the holders of the
/// buffers have news for the device ([`crate::holders::Holders::wake_fd`]):
/// the first after the queues' and the exit event's.
pub const HOLDERS_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// Size of an event.
const EVENT_SIZE: usize = std::mem::size_of::<VirtioBufshareEvent>();

type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap>;
type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap>>;

/// Errors of the backend.
#[derive(Debug, ThisError)]
pub enum Error {
    /// The exit event of the worker thread could not be made.
    #[error("cannot create the exit event: {0}")]
    ExitEvent(io::Error),
    /// An event on something that is not the command queue.
    #[error("unexpected event {0}")]
    UnknownEvent(u16),
    /// The queue was kicked before the guest memory was known.
    #[error("no guest memory yet")]
    NoMemory,
    /// The available ring could not be read.
    #[error("cannot read the available ring: {0}")]
    AvailRing(virtio_queue::Error),
    /// Notifications could not be turned on or off.
    #[error("cannot change queue notifications: {0}")]
    Notification(virtio_queue::Error),
    /// The frontend tried to write the read-only configuration space.
    #[error("the configuration space is read-only")]
    ReadOnlyConfig,
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::other(e)
    }
}

/// The vhost-user backend of one virtio-bufshare device.
pub struct VhostUserBufshareBackend {
    device: BufshareDevice,
    event_idx: bool,
    mem: Option<GuestMemory>,
    /// Fault injection, if asked for.
    faults: Option<FaultFile>,
    exit_consumer: EventConsumer,
    exit_notifier: EventNotifier,
    /// Chains taken from the command queue and not served yet: a LOST
    /// event must reach the driver first. Each with its fault, already
    /// read.
    stalled: VecDeque<(Chain, Fault)>,
    /// Without events: UNREGISTER commands carried out, whose answer waits
    /// for the buffer's holders to let go, with the buffer's id.
    held: Vec<(Chain, u64)>,
    /// Whether the device offers `VIRTIO_BUFSHARE_F_EVENTS` (and has the
    /// event queue); see [`VhostUserBufshareBackend::without_events`].
    offers_events: bool,
    /// With imports ([`VhostUserBufshareBackend::with_imports`]): the
    /// connection's mapper, and the size of the import region.
    shmem: Option<(Arc<Mapper>, u64)>,
}

impl VhostUserBufshareBackend {
    /// A backend for a device with these limits.
    pub fn new(limits: Limits) -> Result<Self, Error> {
        Self::with_state(limits, Arc::default())
    }

    /// A backend for a device with these limits, keeping its buffers and
    /// guest memory in `state`, which the inspect socket may share (its
    /// buffers are dropped: a new backend is a new device).
    pub fn with_state(limits: Limits, state: Arc<SharedState>) -> Result<Self, Error> {
        let (exit_consumer, exit_notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK).map_err(Error::ExitEvent)?;
        Ok(Self {
            device: BufshareDevice::with_state(limits, state),
            event_idx: false,
            mem: None,
            faults: None,
            exit_consumer,
            exit_notifier,
            stalled: VecDeque::new(),
            held: Vec::new(),
            offers_events: true,
            shmem: None,
        })
    }

    /// Lets the guest `guest` import other guests' buffers through `hub`,
    /// if its configuration gives guests an import region: the device
    /// offers `VIRTIO_BUFSHARE_F_IMPORT` (with events), the region
    /// (GET_SHMEM_CONFIG), and maps into it from a thread of its own.
    pub fn with_imports(mut self, hub: &Arc<ImportHub>, guest: &str) -> io::Result<Self> {
        let size = hub.config().shm_size;
        if size == 0 {
            return Ok(self);
        }
        let mapper = Mapper::new();
        mapper.await_memory_tables();
        mapper.start(guest)?;
        hub.connect(guest, &mapper);
        self.device.set_import(ImportPort {
            hub: Arc::clone(hub),
            guest: guest.to_string(),
        });
        info!("guest {guest}: import region of {size} bytes");
        self.shmem = Some((mapper, size));
        Ok(self)
    }

    /// Whether the device offers `VIRTIO_BUFSHARE_F_IMPORT`.
    fn offers_import(&self) -> bool {
        self.offers_events && self.shmem.is_some()
    }

    /// Makes the device one without `VIRTIO_BUFSHARE_F_EVENTS`: it does not
    /// offer the feature and has the command queue only, so that its
    /// UNREGISTER answers wait for the buffers' holders whatever the driver
    /// would have liked (a device of before the event queue).
    pub fn without_events(mut self) -> Self {
        info!("VIRTIO_BUFSHARE_F_EVENTS not offered: one queue, UNREGISTER answers wait");
        self.offers_events = false;
        self
    }

    /// Makes the device misbehave on each command as `faults` says then.
    pub fn with_fault_file(mut self, faults: FaultFile) -> Self {
        info!("fault injection from {}", faults.path().display());
        self.faults = Some(faults);
        self
    }

    /// The device model.
    pub fn device(&self) -> &BufshareDevice {
        &self.device
    }

    /// Serves every available descriptor chain of the command queue, then
    /// notifies the driver if it asked to be; then passes on what the
    /// holders of the buffers said ([`VhostUserBufshareBackend::deliver`]).
    pub fn process_queue(&mut self, vrings: &[VringRwLock]) -> Result<(), Error> {
        let Some(vring) = vrings.get(usize::from(VIRTIO_BUFSHARE_VQ_CMD)) else {
            return Ok(());
        };
        let result = self.process_commands(vring, vrings);
        self.deliver(vrings);
        result
    }

    fn process_commands(
        &mut self,
        vring: &VringRwLock,
        vrings: &[VringRwLock],
    ) -> Result<(), Error> {
        if !self.event_idx {
            self.process_available(vring, vrings)?;
            return Ok(());
        }
        // With EVENT_IDX, serve with notifications off, then turn them back
        // on and look again, in case the driver added chains meanwhile.
        let mut idle_rounds = 0;
        loop {
            vring.disable_notification().map_err(Error::Notification)?;
            let served = self.process_available(vring, vrings)?;
            let more = vring.enable_notification().map_err(Error::Notification)?;
            if !more {
                return Ok(());
            }
            // A ring that says it has chains but yields none is broken:
            // retry once (a chain may have just come), then give up.
            idle_rounds = if served == 0 { idle_rounds + 1 } else { 0 };
            if idle_rounds > 1 {
                guest_error!("the available ring announces chains that cannot be read");
                return Ok(());
            }
        }
    }

    /// Serves the chains available now; returns how many were taken from
    /// the ring, including those a [`Fault::Drop`] or [`Fault::DropNext`]
    /// leaves outstanding.
    ///
    /// The driver is notified (if it asked to be) once they are returned,
    /// and at once after each chain a [`Fault::SlowAnswer`] held back: that
    /// answer is late enough.
    fn process_available(
        &mut self,
        vring: &VringRwLock,
        vrings: &[VringRwLock],
    ) -> Result<usize, Error> {
        let mem = self.mem.as_ref().ok_or(Error::NoMemory)?.memory();
        // Those stalled first, with their faults; then those available.
        let mut chains: Vec<(Chain, Option<Fault>)> = self
            .stalled
            .drain(..)
            .map(|(chain, fault)| (chain, Some(fault)))
            .collect();
        let stalled = chains.len();
        if self.device.pending().lost_pending() {
            // Still no room for LOST: nothing more is carried out.
            self.write_events(vrings);
        }
        if !self.device.pending().lost_pending() || stalled == 0 {
            chains.extend(
                vring
                    .get_mut()
                    .get_queue_mut()
                    .iter(mem.clone())
                    .map_err(Error::AvailRing)?
                    .map(|chain| (chain, None)),
            );
        }
        if chains.is_empty() {
            return Ok(0);
        }
        let taken = chains.len() - stalled;

        // Chains returned and not notified yet.
        let mut unnotified = 0;
        let mut chains = chains.into_iter();
        while let Some((chain, fault)) = chains.next() {
            let head = chain.head_index();
            let fault = match fault {
                Some(fault) => fault,
                None => {
                    let fault = self.fault();
                    // Whatever becomes of the chain: a lose-buffers TOKEN is
                    // acted on once, when it is read.
                    fault.before_chain(&mut self.device);
                    fault
                }
            };
            if self.device.pending().lost_pending() {
                // LOST reaches the driver before any further command is
                // carried out: written now, or the commands wait for room.
                self.write_events(vrings);
                if self.device.pending().lost_pending() {
                    info!("no room for LOST on the event queue: commands wait");
                    self.stalled.push_back((chain, fault));
                    self.stalled.extend(chains.map(|(c, f)| {
                        let f = f.unwrap_or_else(|| {
                            let f = self.faults.as_mut().map_or(Fault::None, FaultFile::read);
                            f.before_chain(&mut self.device);
                            f
                        });
                        (c, f)
                    }));
                    break;
                }
            }
            if fault.drops_chain() {
                info!("chain {head} left outstanding (fault injection)");
                continue;
            }
            let len = self.process_chain(&mem, &chain, fault);
            if let Some(id) = self.device.take_held() {
                info!("UNREGISTER {id}: answered once its holders let go");
                self.held.push((chain, id));
                continue;
            }
            // The command is carried out: under slow-answer, its answer
            // waits here before it is returned.
            let held = self
                .faults
                .as_ref()
                .is_some_and(|faults| faults.before_answer(fault, head));
            // Normally under its head, once; duplicate and wrong-id say otherwise.
            let ids = fault.used_ids(head, vring.get_ref().get_queue().size());
            if ids != [head] {
                info!("chain {head}: returned as used ids {ids:?} (fault injection)");
            }
            for id in ids {
                if let Err(e) = vring.add_used(id, len) {
                    guest_error!("cannot return descriptor chain {head} to the driver: {e}");
                }
            }
            unnotified += 1;
            if held {
                notify(vring);
                unnotified = 0;
            }
        }
        if unnotified > 0 {
            notify(vring);
        }
        Ok(taken)
    }

    /// Passes on what the holders of the buffers said: answers the held
    /// UNREGISTER commands of the buffers freed, and with events writes
    /// the pending events into the event queue, as far as it has room; if
    /// that makes room for a LOST that commands waited for, serves them.
    pub fn deliver(&mut self, vrings: &[VringRwLock]) {
        let freed = self.device.collect();
        if !freed.is_empty() && !self.held.is_empty() {
            self.answer_held(&freed, vrings);
        }
        let lost = self.device.pending().lost_pending();
        self.write_events(vrings);
        if lost && !self.device.pending().lost_pending() && !self.stalled.is_empty() {
            if let Some(vring) = vrings.get(usize::from(VIRTIO_BUFSHARE_VQ_CMD)) {
                if let Err(e) = self.process_commands(vring, vrings) {
                    guest_error!("command queue: {e}");
                }
                // The commands may have made more events.
                self.device.collect();
                self.write_events(vrings);
            }
        }
    }

    /// Answers the held UNREGISTER commands of the buffers `freed`, with
    /// the generation of now.
    fn answer_held(&mut self, freed: &[u64], vrings: &[VringRwLock]) {
        let Some(vring) = vrings.get(usize::from(VIRTIO_BUFSHARE_VQ_CMD)) else {
            return;
        };
        let Some(mem) = self.mem.as_ref().map(GuestAddressSpace::memory) else {
            return;
        };
        let mut answered = 0;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, id)| freed.contains(id));
        self.held = later;
        for (chain, id) in now {
            let head = chain.head_index();
            let answer = self.device.held_answer();
            let len = match Writer::new(&*mem, chain) {
                Ok(mut writer) => match writer.write_all(&answer) {
                    Ok(()) => writer.bytes_written() as u32,
                    Err(e) => {
                        guest_error!("chain {head}: cannot write the answer: {e}");
                        0
                    }
                },
                Err(e) => {
                    guest_error!("chain {head}: bad device-writable descriptors: {e}");
                    0
                }
            };
            info!("UNREGISTER {id}: no holder left, answered");
            if let Err(e) = vring.add_used(head, len) {
                guest_error!("cannot return descriptor chain {head} to the driver: {e}");
            }
            answered += 1;
        }
        if answered > 0 {
            notify(vring);
        }
    }

    /// Writes pending events into the buffers of the event queue, as long
    /// as there are both; skips (used with length 0) buffers too small for
    /// an event. Nothing without events, or before the queue is ready.
    ///
    /// The driver's kicks of the event queue matter only when events wait
    /// for a buffer: with EVENT_IDX the driver kicks once its available
    /// index passes `avail_event`, which is moved only then, so that the
    /// driver kicks for the next buffer it gives and for no other.
    fn write_events(&mut self, vrings: &[VringRwLock]) {
        if !self.device.events_enabled() || !self.device.has_events() {
            return;
        }
        let Some(vring) = vrings.get(usize::from(VIRTIO_BUFSHARE_VQ_EVENT)) else {
            return;
        };
        if !vring.get_ref().get_queue().ready() {
            return;
        }
        let Some(mem) = self.mem.as_ref().map(GuestAddressSpace::memory) else {
            return;
        };
        let mut used = 0;
        let mut asked = 0;
        while self.device.has_events() {
            // Popped apart: the vring's lock is let go before the match.
            let popped = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.clone());
            let chain = match popped {
                Some(chain) => {
                    asked = 0;
                    chain
                }
                // Out of buffers: ask for a kick at the next one, and look
                // again in case it came meanwhile (twice in a row at most:
                // a ring that announces buffers it does not yield is
                // broken).
                None if asked < 2 => {
                    asked += 1;
                    match vring.enable_notification() {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) => {
                            guest_error!("event queue: cannot ask for notifications: {e}");
                            break;
                        }
                    }
                }
                None => break,
            };
            let head = chain.head_index();
            let mut writer = match Writer::new(&*mem, chain) {
                Ok(writer) => writer,
                Err(e) => {
                    guest_error!("event chain {head}: bad device-writable descriptors: {e}");
                    add_used(vring, head, 0);
                    used += 1;
                    continue;
                }
            };
            if writer.available_bytes() < EVENT_SIZE {
                guest_warn!(
                    "event chain {head}: {} bytes, too small for an event: skipped",
                    writer.available_bytes()
                );
                add_used(vring, head, 0);
                used += 1;
                continue;
            }
            let Some(event) = self.device.next_event() else {
                break;
            };
            let len = match writer.write_all(&event) {
                Ok(()) => writer.bytes_written() as u32,
                Err(e) => {
                    guest_error!("event chain {head}: cannot write the event: {e}");
                    0
                }
            };
            add_used(vring, head, len);
            used += 1;
        }
        if used > 0 {
            notify(vring);
        }
    }

    /// Resets the device, as the frontend asked. With a fault file: once it
    /// said whether the reset is slow ([`FaultFile::before_reset`]), and
    /// written down in its events file when it begins and when it is done.
    /// The frontend stopped the device: no map request goes until it gives
    /// a memory table again ([`Mapper::set_running`]).
    fn reset(&mut self) {
        if let Some((mapper, _)) = &self.shmem {
            mapper.set_running(false);
        }
        if let Some(faults) = self.faults.as_mut() {
            faults.before_reset();
        }
        // Commands not answered are dropped.
        self.stalled.clear();
        self.held.clear();
        self.device.reset();
        if let Some(faults) = &self.faults {
            faults.after_reset();
        }
    }

    /// The fault in force for the next command.
    fn fault(&mut self) -> Fault {
        self.faults.as_mut().map_or(Fault::None, FaultFile::read)
    }

    /// Serves one chain under `fault` (normally [`Fault::None`]): reads the
    /// command, makes its answer ([`answer`]) and writes it. Returns the
    /// used length to report, as the fault says: normally the number of
    /// bytes written.
    fn process_chain(&mut self, mem: &GuestMemoryMmap, chain: &Chain, fault: Fault) -> u32 {
        let head = chain.head_index();
        let mut reader = match Reader::new(mem, chain.clone()) {
            Ok(reader) => reader,
            Err(e) => {
                guest_error!("chain {head}: bad device-readable descriptors: {e}");
                return 0;
            }
        };
        let mut writer = match Writer::new(mem, chain.clone()) {
            Ok(writer) => writer,
            Err(e) => {
                guest_error!("chain {head}: bad device-writable descriptors: {e}");
                return 0;
            }
        };

        // Read no more than the longest legal command (plus one byte, so
        // that a longer one is seen as such).
        let len = reader
            .available_bytes()
            .min(self.device.max_command_size().saturating_add(1));
        let mut request = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut request) {
            guest_error!("chain {head}: cannot read the command: {e}");
            return 0;
        }

        let writable = writer.available_bytes();
        let Some(answer) = answer(&mut self.device, fault, &request, writable) else {
            guest_error!(
                "chain {head}: only {writable} device-writable bytes, no room for an answer"
            );
            return 0;
        };
        if let Err(e) = writer.write_all(&answer) {
            guest_error!("chain {head}: cannot write the answer: {e}");
        }
        fault.used_len(writer.bytes_written(), writable)
    }
}

impl Drop for VhostUserBufshareBackend {
    fn drop(&mut self) {
        if let Some((mapper, _)) = &self.shmem {
            mapper.stop();
        }
    }
}

/// Makes the answer to `request` under `fault`, in `writable` bytes: the
/// device carries the command out (or refuses it, if the fault says so:
/// [`Fault::refusal`]), the fault rewrites the answer ([`Fault::rewrite`]),
/// and lastly the device's generation is written into it
/// ([`BufshareDevice::stamp`]), whatever the fault did.
///
/// Returns `None` if `writable` cannot hold a resp_hdr: then nothing can be
/// answered. The answer is never longer than `writable`. [`Fault::Drop`] and
/// [`Fault::DropNext`] are not for this: their chain is not served at all
/// ([`Fault::drops_chain`]).
pub fn answer(
    device: &mut BufshareDevice,
    fault: Fault,
    request: &[u8],
    writable: usize,
) -> Option<Vec<u8>> {
    let answer = match fault.refusal() {
        Some(status) => device.refuse(request, writable, status)?,
        None => device.process(request, writable)?,
    };
    let mut answer = fault.rewrite(request, answer);
    device.stamp(&mut answer);
    Some(answer)
}

fn add_used(vring: &VringRwLock, head: u16, len: u32) {
    if let Err(e) = vring.add_used(head, len) {
        guest_error!("cannot return descriptor chain {head} to the driver: {e}");
    }
}

/// Notifies the driver of the chains returned, if it asked to be.
fn notify(vring: &VringRwLock) {
    match vring.needs_notification() {
        Ok(false) => {}
        Ok(true) => signal(vring),
        Err(e) => {
            guest_error!("cannot read used_event, notifying anyway: {e}");
            signal(vring);
        }
    }
}

fn signal(vring: &VringRwLock) {
    if let Err(e) = vring.signal_used_queue() {
        error!("cannot notify the driver: {e}");
    }
}

impl VhostUserBackendMut for VhostUserBufshareBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        if self.offers_events {
            NUM_QUEUES
        } else {
            NUM_QUEUES - 1
        }
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let events = if self.offers_events {
            1 << VIRTIO_BUFSHARE_F_EVENTS
        } else {
            0
        };
        let import = if self.offers_import() {
            1 << VIRTIO_BUFSHARE_F_IMPORT
        } else {
            0
        };
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_BUFSHARE_F_BUFFERS)
            | (1 << VIRTIO_BUFSHARE_F_GENERATION)
            | events
            | import
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&mut self, features: u64) {
        debug!("driver acked features {features:#x}");
        // A feature not offered is not had, whatever the frontend says.
        self.device.set_driver_features(features & self.features());
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // CONFIG: QEMU's generic vhost-user device only asks for the
        // configuration space (GET_CONFIG) when the backend offers it.
        // RESET_DEVICE: QEMU tells about device resets.
        // With imports: the backend channel (BACKEND_REQ), on which it
        // sends SHMEM_MAP with a descriptor (BACKEND_SEND_FD) and waits for
        // the frontend's ack (REPLY_ACK), and the shared memory regions
        // (SHMEM: GET_SHMEM_CONFIG). Not CONFIGURE_MEM_SLOTS: QEMU 11.1.3
        // crashed at a reset with it.
        let base = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::RESET_DEVICE;
        if self.offers_import() {
            base | VhostUserProtocolFeatures::BACKEND_REQ
                | VhostUserProtocolFeatures::BACKEND_SEND_FD
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::SHMEM
        } else {
            base
        }
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        match &self.shmem {
            Some((_, size)) if self.offers_import() => Ok(VhostUserShMemConfig::new(1, &[*size])),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no shared memory region",
            )),
        }
    }

    fn set_backend_req_fd(&mut self, backend: Backend) {
        match &self.shmem {
            Some((mapper, _)) => {
                info!("backend channel set up: imports can be mapped");
                mapper.set_channel(Arc::new(backend));
            }
            None => debug!("backend channel set up, unused"),
        }
    }

    fn reset_device(&mut self) {
        info!("RESET_DEVICE: device reset");
        self.reset();
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        self.device.read_config(offset, size)
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> io::Result<()> {
        guest_warn!(
            "refused a write of {} bytes at {offset} to the configuration space",
            buf.len()
        );
        Err(Error::ReadOnlyConfig.into())
    }

    fn update_memory(&mut self, mem: GuestMemory) -> io::Result<()> {
        if let Some((mapper, _)) = &self.shmem {
            // QEMU commits each map and unmap with a new table, and gives
            // one when it starts the device (which it stopped otherwise):
            // maps may go from now on.
            mapper.memory_table_changed();
            mapper.set_running(true);
        }
        self.device.set_memory(mem.clone());
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match (
            self.exit_consumer.try_clone(),
            self.exit_notifier.try_clone(),
        ) {
            (Ok(consumer), Ok(notifier)) => Some((consumer, notifier)),
            (Err(e), _) | (_, Err(e)) => {
                error!("cannot clone the exit event: {e}");
                None
            }
        }
    }

    fn stop_vring(&mut self, queue_index: u32) -> io::Result<()> {
        // GET_VRING_BASE: the frontend stops the queue, as QEMU does when
        // the driver resets the device (and when the VM stops). The queue is
        // set up again from scratch afterwards: start over from a reset
        // device, since QEMU does not send RESET_DEVICE to a stopped device.
        info!("queue {queue_index} stopped: device reset");
        self.reset();
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            warn!("unexpected events {evset:?} on event {device_event}");
        }
        match device_event {
            VIRTIO_BUFSHARE_VQ_CMD => {
                // Errors of a broken ring are the driver's: log them and
                // keep the worker thread alive, so that a device reset can
                // repair things.
                if let Err(e) = self.process_queue(vrings) {
                    guest_error!("command queue: {e}");
                }
            }
            // The driver gave buffers for events; or the holders have
            // news.
            // The notes are taken even without guest memory yet (the
            // wake-up is level-triggered): what needs memory waits.
            VIRTIO_BUFSHARE_VQ_EVENT | HOLDERS_EVENT => self.deliver(vrings),
            _ => return Err(Error::UnknownEvent(device_event).into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
