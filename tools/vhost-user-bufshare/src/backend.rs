// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The vhost-user glue: features, configuration space, and the command
//! virtqueue, whose descriptor chains are read and written here and whose
//! commands are carried out by [`BufshareDevice`], possibly misbehaving as a
//! [`FaultFile`] says.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bufshare_uapi::{
    VIRTIO_BUFSHARE_F_BUFFERS, VIRTIO_BUFSHARE_F_GENERATION, VIRTIO_BUFSHARE_NUM_VQS,
    VIRTIO_BUFSHARE_VQ_CMD,
};
use log::{debug, error, info, warn};
use thiserror::Error as ThisError;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
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
use crate::device::{BufshareDevice, Limits};
use crate::fault::{Fault, FaultFile};
use crate::{guest_error, guest_warn};

/// Largest size of the command virtqueue.
pub const QUEUE_SIZE: usize = 256;
/// Number of virtqueues.
pub const NUM_QUEUES: usize = VIRTIO_BUFSHARE_NUM_VQS;

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
        })
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
    /// notifies the driver if it asked to be.
    pub fn process_queue(&mut self, vring: &VringRwLock) -> Result<(), Error> {
        if !self.event_idx {
            self.process_available(vring)?;
            return Ok(());
        }
        // With EVENT_IDX, serve with notifications off, then turn them back
        // on and look again, in case the driver added chains meanwhile.
        let mut idle_rounds = 0;
        loop {
            vring.disable_notification().map_err(Error::Notification)?;
            let served = self.process_available(vring)?;
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
    fn process_available(&mut self, vring: &VringRwLock) -> Result<usize, Error> {
        let mem = self.mem.as_ref().ok_or(Error::NoMemory)?.memory();
        let chains: Vec<Chain> = vring
            .get_mut()
            .get_queue_mut()
            .iter(mem.clone())
            .map_err(Error::AvailRing)?
            .collect();
        if chains.is_empty() {
            return Ok(0);
        }

        // Chains returned and not notified yet.
        let mut unnotified = 0;
        for chain in &chains {
            let head = chain.head_index();
            let fault = self.fault();
            // Whatever becomes of the chain: a lose-buffers TOKEN is acted
            // on once, when it is read.
            fault.before_chain(&mut self.device);
            if fault.drops_chain() {
                info!("chain {head} left outstanding (fault injection)");
                continue;
            }
            let len = self.process_chain(&mem, chain, fault);
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
        Ok(chains.len())
    }

    /// Resets the device, as the frontend asked. With a fault file: once it
    /// said whether the reset is slow ([`FaultFile::before_reset`]), and
    /// written down in its events file when it begins and when it is done.
    fn reset(&mut self) {
        if let Some(faults) = self.faults.as_mut() {
            faults.before_reset();
        }
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
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_BUFSHARE_F_BUFFERS)
            | (1 << VIRTIO_BUFSHARE_F_GENERATION)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&mut self, features: u64) {
        debug!("driver acked features {features:#x}");
        self.device.set_driver_features(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // CONFIG: QEMU's generic vhost-user device only asks for the
        // configuration space (GET_CONFIG) when the backend offers it.
        // RESET_DEVICE: QEMU tells about device resets.
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::RESET_DEVICE
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
        if device_event != VIRTIO_BUFSHARE_VQ_CMD {
            return Err(Error::UnknownEvent(device_event).into());
        }
        if evset != EventSet::IN {
            warn!("unexpected events {evset:?} on the command queue");
        }
        let vring = &vrings[usize::from(VIRTIO_BUFSHARE_VQ_CMD)];
        // Errors of a broken ring are the driver's: log them and keep the
        // worker thread alive, so that a device reset can repair things.
        if let Err(e) = self.process_queue(vring) {
            guest_error!("command queue: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
