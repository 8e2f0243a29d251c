// SPDX-License-Identifier: GPL-2.0

//! Buffer operations, and bringing the buffers back when the device lost them.
//!
//! A device that loses its buffers other than by a reset (a restarted device implementation)
//! says so with a new generation in its answers (`VIRTIO_BUFSHARE_F_GENERATION`); the command
//! queue counts the generations it saw as epochs
//! ([`Cmdq::epoch`](crate::cmdq::Cmdq::epoch)). Every buffer operation runs
//! through [`BufshareDevice::buffer_op`], which registers the lost buffers again, under the same
//! ids, before the operation starts, runs it once more if it failed because the device had lost
//! its buffer, and brings the buffers back before it returns if the operation's own answers
//! showed the loss. So the applications see no error, and consumers on the host get the
//! buffers back as soon as the driver learns of the loss.

use kernel::{
    prelude::*,
    sync::atomic::Relaxed,
    virtio::DmaTarget, //
};

use super::BufshareDevice;
use crate::cmdq::Wait;

/// How many times in a row the buffers are registered again for a device that keeps losing them
/// before the operation that found out goes on.
const MAX_RESTORES: u32 = 3;

/// A buffer operation under way: the device's shutdown waits for it to end, and the buffers are
/// not registered again meanwhile.
pub(super) struct Inflight<'a> {
    device: &'a BufshareDevice,
    /// How the device reaches memory.
    dma: Option<DmaTarget>,
}

impl Inflight<'_> {
    /// How the device reaches memory the operation describes to it.
    pub(super) fn dma(&self) -> Result<&DmaTarget> {
        self.dma.as_ref().ok_or(EOPNOTSUPP)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut buffers = self.device.buffers.lock();
        buffers.inflight -= 1;
        if buffers.inflight == 0 {
            self.device.idle.notify_all();
        }
    }
}

impl BufshareDevice {
    /// Runs the buffer operation `op`, the one way buffers are operated on.
    ///
    /// Fails with `ENODEV` once the device is gone, and `EOPNOTSUPP` if it cannot be given
    /// buffers. If the device lost its buffers since they were last registered, registers them
    /// again first; if `op` fails with `ENOENT` because the device lost them meanwhile, runs it
    /// once more, once they are back; if the answers to `op` showed a loss, brings them back
    /// before returning.
    pub(super) fn buffer_op<T>(&self, mut op: impl FnMut(&Inflight<'_>) -> Result<T>) -> Result<T> {
        let result = self.enter().and_then(|inflight| op(&inflight));
        let result = match result {
            Err(e) if e == ENOENT && self.lost_buffers() => {
                self.enter().and_then(|inflight| op(&inflight))
            }
            result => result,
        };
        self.restore_if_lost();
        result
    }

    /// Registers the buffers again now if the device lost them, rather than at the next buffer
    /// operation: for commands whose answers may show the loss.
    pub(super) fn restore_if_lost(&self) {
        if self.lost_buffers() {
            // `enter` registers them again. A device gone, or unable to hold buffers, has none.
            let _ = self.enter();
        }
    }

    /// Whether the device lost buffers that have not been registered again yet.
    fn lost_buffers(&self) -> bool {
        self.cmdq.epoch() != self.buffers.lock().restored
    }

    /// Starts a buffer operation, once the buffers the device lost are registered again.
    fn enter(&self) -> Result<Inflight<'_>> {
        let mut buffers = self.buffers.lock();
        let mut restores = 0;
        loop {
            if buffers.gone {
                return Err(ENODEV);
            }
            if !self.features.buffers {
                return Err(EOPNOTSUPP);
            }
            if buffers.restoring || buffers.suspended {
                self.restored.wait(&mut buffers);
                continue;
            }
            let epoch = self.cmdq.epoch();
            if epoch == buffers.restored {
                break;
            }
            if restores == MAX_RESTORES {
                if self.cmdq.log_limit().allow() {
                    dev_err!(
                        self.dev.as_ref(),
                        "device keeps losing its buffers; giving up registering them again\n"
                    );
                }
                buffers.restored = epoch;
                break;
            }
            restores += 1;

            // Alone with the device: the operations running finish first, none starts meanwhile.
            buffers.restoring = true;
            while buffers.inflight > 0 {
                self.idle.wait(&mut buffers);
            }
            buffers.inflight += 1;
            let inflight = Inflight {
                device: self,
                dma: None,
            };
            drop(buffers);
            self.restore(epoch);
            drop(inflight);
            buffers = self.buffers.lock();
            buffers.restoring = false;
            buffers.restored = epoch;
            self.restored.notify_all();
        }
        let dma = buffers.dma.clone().ok_or(EOPNOTSUPP)?;
        buffers.inflight += 1;
        Ok(Inflight {
            device: self,
            dma: Some(dma),
        })
    }

    /// Registers again every buffer the device had before it lost them, that is whose last
    /// registration was answered before `epoch`; called by [`BufshareDevice::enter`] while no
    /// other operation runs.
    ///
    /// A buffer the device refuses now stays registered with the driver, and so pinned, until its
    /// owner unregisters it; the device answers `S_NO_BUFFER` to the commands about it meanwhile.
    fn restore(&self, epoch: u64) {
        // The device that lost the buffers lost the attachments and imports too.
        self.end_imports(false);
        let mut lost = KVVec::new();
        {
            let buffers = self.buffers.lock();
            for buf in buffers.tree.values() {
                if buf.registered_since(epoch) {
                    // Registered since, with the device that lost the others.
                    continue;
                }
                if lost.push(buf.clone(), GFP_KERNEL).is_err() {
                    // Those left out fail with ENOENT, as refused ones do.
                    break;
                }
            }
        }
        let (mut registered, mut refused) = (0usize, 0usize);
        for buf in lost {
            let state = buf.state.lock();
            match self.send_registration(&buf, &state.props, Wait::Uninterruptible) {
                Ok(epoch) => {
                    buf.epoch.store(epoch, Relaxed);
                    registered += 1;
                }
                Err(e) => {
                    refused += 1;
                    if self.cmdq.log_limit().allow() {
                        dev_warn!(
                            self.dev.as_ref(),
                            "buffer {}: not registered again ({:?})\n",
                            buf.id,
                            e
                        );
                    }
                    if e == ETIMEDOUT || e == ENODEV {
                        break;
                    }
                    // It may hold a part of the buffer.
                    let _ = self.unregister_command(buf.id);
                }
            }
        }
        if self.cmdq.log_limit().allow() {
            dev_info!(
                self.dev.as_ref(),
                "device lost its buffers (generation {:#x}): {} registered again, {} not\n",
                self.cmdq.generation(),
                registered,
                refused
            );
        }
    }
}
