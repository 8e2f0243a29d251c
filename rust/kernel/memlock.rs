// SPDX-License-Identifier: GPL-2.0

//! Charging long-term pinned memory to `RLIMIT_MEMLOCK`.
//!
//! Memory a driver pins for an unbounded time on behalf of user space is charged to the
//! `locked_vm` of the user who pinned it, and may not take that count past the pinning task's
//! `RLIMIT_MEMLOCK`, unless the task has `CAP_IPC_LOCK`: what io_uring does for its registered
//! buffers. The charge is per user, so that a process cannot escape it by opening a device again
//! or by forking.
//!
//! C headers: [`include/linux/sched/user.h`](srctree/include/linux/sched/user.h),
//! [`include/linux/sched/signal.h`](srctree/include/linux/sched/signal.h)

use crate::{
    bindings,
    error::{code::ENOMEM, Result},
    sync::atomic::{Atomic, Full, Relaxed},
};
use core::ptr::NonNull;

/// Pages charged to a user's `locked_vm`, given back when dropped.
///
/// # Invariants
///
/// `user` points to a valid `struct user_struct` on which this object holds a reference (taken
/// with `get_uid`), and `pages` of its `locked_vm` were added by this object.
pub struct MemlockCharge {
    user: NonNull<bindings::user_struct>,
    pages: usize,
}

// SAFETY: A `user_struct` reference may be dropped from any thread, and `locked_vm` is atomic.
unsafe impl Send for MemlockCharge {}
// SAFETY: `MemlockCharge` has no `&self` methods that change it.
unsafe impl Sync for MemlockCharge {}

impl MemlockCharge {
    /// Charges `pages` pages to the current task's user, within the task's `RLIMIT_MEMLOCK`.
    ///
    /// Nothing is charged if the task has `CAP_IPC_LOCK` (the returned charge is then of 0
    /// pages). Fails with `ENOMEM` if the charge would take the user's `locked_vm` past the
    /// limit.
    pub fn charge_current(pages: usize) -> Result<Self> {
        // SAFETY: `capable` may be called from any task context.
        let unlimited = unsafe { bindings::capable(bindings::CAP_IPC_LOCK as i32) };
        // SAFETY: `rlimit` reads the current task's limits, which may be done from any task
        // context.
        let limit = unsafe { bindings::rlimit(bindings::RLIMIT_MEMLOCK) } >> bindings::PAGE_SHIFT;

        // SAFETY: The current task has credentials, whose user `get_current_user` takes a
        // reference on; it never returns NULL.
        let user = unsafe { NonNull::new_unchecked(bindings::get_current_user()) };
        let mut charge = MemlockCharge { user, pages: 0 };
        if unlimited || pages == 0 {
            // INVARIANT: 0 pages were added.
            return Ok(charge);
        }

        let locked = charge.locked_vm();
        let mut cur = locked.load(Relaxed);
        loop {
            let new = match cur.checked_add(pages) {
                Some(new) if new <= limit => new,
                // `charge` gives its reference back, and nothing was added.
                _ => return Err(ENOMEM),
            };
            match locked.cmpxchg(cur, new, Full) {
                Ok(_) => {
                    // INVARIANT: `pages` were added.
                    charge.pages = pages;
                    return Ok(charge);
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// Returns the number of pages charged.
    pub fn pages(&self) -> usize {
        self.pages
    }

    fn locked_vm(&self) -> &Atomic<usize> {
        // SAFETY: By the type invariants `user` is valid for as long as `self` is; `locked_vm`
        // is an `atomic_long_t`, whose counter has the size and alignment of `usize` and is only
        // accessed atomically.
        unsafe {
            Atomic::from_ptr(
                core::ptr::addr_of_mut!((*self.user.as_ptr()).locked_vm.counter).cast::<usize>(),
            )
        }
    }
}

impl Drop for MemlockCharge {
    fn drop(&mut self) {
        if self.pages > 0 {
            // By the type invariants, `pages` were added by this object: the count does not
            // wrap.
            self.locked_vm().fetch_sub(self.pages, Full);
        }
        // SAFETY: By the type invariants this object holds a reference on `user`.
        unsafe { bindings::free_uid(self.user.as_ptr()) };
    }
}
