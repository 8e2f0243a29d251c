// SPDX-License-Identifier: GPL-2.0

//! Rate limits, for log lines that users or devices can trigger at will.
//!
//! A [`RateLimit`] lets at most `burst` events through per interval, as the C `__ratelimit()`
//! does for `printk_ratelimited()` and `dev_warn_ratelimited()`; once an interval ends, the
//! number of events held back in it is logged.
//!
//! C header: [`include/linux/ratelimit.h`](srctree/include/linux/ratelimit.h)

use crate::{
    bindings,
    prelude::*,
    time::{
        msecs_to_jiffies,
        Jiffies, //
    },
    types::Opaque,
};

/// The interval of [`RateLimit::new_default`], as `DEFAULT_RATELIMIT_INTERVAL`.
pub const DEFAULT_INTERVAL_MS: u32 = 5_000;

/// The burst of [`RateLimit::new_default`], as `DEFAULT_RATELIMIT_BURST`.
pub const DEFAULT_BURST: u32 = 10;

/// A rate limit: at most a burst of events per interval.
///
/// # Invariants
///
/// `state` is an initialised `struct ratelimit_state`, and `name` names it in the lines that
/// count what it held back.
///
/// # Examples
///
/// ```
/// use kernel::{c_str, prelude::*, ratelimit::RateLimit};
///
/// let limit = KBox::pin_init(RateLimit::new(c_str!("example"), 1_000, 2), GFP_KERNEL)?;
/// let through = (0..5).filter(|_| limit.allow()).count();
/// assert_eq!(through, 2);
/// # Ok::<(), Error>(())
/// ```
#[pin_data]
pub struct RateLimit {
    #[pin]
    state: Opaque<bindings::ratelimit_state>,
    name: &'static CStr,
}

impl RateLimit {
    /// A rate limit of `burst` events per `interval_ms` milliseconds, named `name` in the lines
    /// that count the events it held back.
    pub fn new(name: &'static CStr, interval_ms: u32, burst: u32) -> impl PinInit<Self> {
        let interval: Jiffies = msecs_to_jiffies(interval_ms);
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; `ratelimit_state_init` initialises all of it.
            state <- Opaque::ffi_init(move |slot: *mut bindings::ratelimit_state| unsafe {
                bindings::ratelimit_state_init(
                    slot,
                    i32::try_from(interval).unwrap_or(i32::MAX),
                    i32::try_from(burst).unwrap_or(i32::MAX),
                )
            }),
            name,
        })
    }

    /// The kernel's default rate limit: [`DEFAULT_BURST`] events per [`DEFAULT_INTERVAL_MS`].
    pub fn new_default(name: &'static CStr) -> impl PinInit<Self> {
        Self::new(name, DEFAULT_INTERVAL_MS, DEFAULT_BURST)
    }

    /// Counts an event; returns whether it is let through.
    ///
    /// Takes a raw spinlock with interrupts off, and never sleeps: it can be called in any
    /// context.
    pub fn allow(&self) -> bool {
        // SAFETY: By the type invariants `state` is initialised, and `name` is a C string that
        // lives forever.
        unsafe { bindings::___ratelimit(self.state.get(), self.name.as_char_ptr()) != 0 }
    }
}

// SAFETY: The state is only changed by `___ratelimit`, under its own lock.
unsafe impl Send for RateLimit {}

// SAFETY: As above: `allow` can be called from several threads at once.
unsafe impl Sync for RateLimit {}
