// SPDX-License-Identifier: GPL-2.0

//! Bringing buffers back when the device lost them.

use super::super::*;

impl super::Shared {
    /// Starts a buffer operation: fails with `ENODEV` once the device is gone, and returns the
    /// way the device reaches memory (`EOPNOTSUPP` if it cannot be given buffers).
    ///
    /// If the device lost its buffers since they were last registered, registers them again
    /// first (see [`Shared::recover`]).
    pub(crate) fn begin(&self) -> Result<(Op<'_>, DmaTarget)> {
        let mut table = self.table.lock();
        let mut recoveries = 0;
        loop {
            if table.gone {
                return Err(ENODEV);
            }
            if self.features & (1 << uapi::VIRTIO_BUFSHARE_F_BUFFERS) == 0 {
                return Err(EOPNOTSUPP);
            }
            if table.recovering {
                self.recovered.wait(&mut table);
                continue;
            }
            let losses = self.losses.load(Relaxed);
            if losses == table.synced {
                break;
            }
            if recoveries == MAX_RECOVERIES {
                dev_err!(
                    self.dev.as_ref(),
                    "device keeps losing its buffers; giving up registering them again\n"
                );
                table.synced = losses;
                break;
            }
            recoveries += 1;

            // Alone with the device: the operations running finish first, none starts meanwhile.
            table.recovering = true;
            while table.inflight > 0 {
                self.idle.wait(&mut table);
            }
            table.inflight += 1;
            let op = Op { shared: self };
            drop(table);
            self.recover(losses);
            drop(op);
            table = self.table.lock();
            table.recovering = false;
            table.synced = losses;
            self.recovered.notify_all();
        }
        let dma = table.dma.clone().ok_or(EOPNOTSUPP)?;
        table.inflight += 1;
        Ok((Op { shared: self }, dma))
    }

    /// Whether the device lost buffers that have not been registered again yet.
    pub(crate) fn lost_buffers(&self) -> bool {
        self.losses.load(Relaxed) != self.table.lock().synced
    }

    /// Registers the buffers again now if the device lost them, rather than at the next buffer
    /// operation: for the ioctl or release that met the loss, once it is done.
    pub(crate) fn recover_if_lost(&self) {
        if self.lost_buffers() {
            // `begin` registers them again. A device gone, or unable to hold buffers, has none.
            let _ = self.begin();
        }
    }

    /// Runs the buffer operation `op`, and once more if the device did not know the buffer
    /// because it had lost its buffers: the second run starts by registering them again.
    pub(crate) fn retry_lost<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        match op() {
            Err(e) if e == ENOENT && self.lost_buffers() => op(),
            result => result,
        }
    }

    /// Registers again every buffer the device had before it lost them, that is before `losses`
    /// (see [`Shared::losses`]); called by [`Shared::begin`] while no other operation runs.
    ///
    /// A buffer the device refuses now stays registered with the driver, and so pinned, until
    /// its owner unregisters it; the device answers `S_NO_BUFFER` to the commands about it
    /// meanwhile.
    pub(crate) fn recover(&self, losses: u64) {
        let mut lost = KVVec::new();
        {
            let table = self.table.lock();
            for buf in table.buffers.values() {
                if buf.epoch.load(Relaxed) >= losses {
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
                    dev_warn!(
                        self.dev.as_ref(),
                        "buffer {}: not registered again ({:?})\n",
                        buf.id,
                        e
                    );
                    if e == ETIMEDOUT || e == ENODEV {
                        break;
                    }
                    // It may hold a part of the buffer.
                    let _ = self.unregister_command(buf.id);
                }
            }
        }
        dev_info!(
            self.dev.as_ref(),
            "device lost its buffers (generation {:#x}): {} registered again, {} not\n",
            self.generation.load(Relaxed) & u64::from(u32::MAX),
            registered,
            refused
        );
    }
}
