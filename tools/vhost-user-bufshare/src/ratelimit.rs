// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Rate-limited logging of what guests make the backend log.
//!
//! A guest decides how often its commands are refused, its chains broken,
//! its buffers not handed over: logged each time, at warning level, a
//! guest could fill the host's logs (and spend the backend's time writing
//! them). [`guest_log`] (through the [`guest_warn!`] and [`guest_error!`]
//! macros) logs at most [`BURST`] messages per [`INTERVAL`] on each
//! thread, the rest at debug level only; the first message of the next
//! interval says how many were held back. Each guest's commands are carried
//! out on a thread of its own (its vhost-user connection's), so each guest
//! has a budget of its own, and one guest's flood does not silence
//! another's.
//!
//! [`crate::guest_warn!`]: crate::guest_warn
//! [`crate::guest_error!`]: crate::guest_error

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

use log::{debug, log, warn, Level};

/// Messages logged per interval, per thread.
pub const BURST: u32 = 10;
/// The interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What [`RateLimit::check`] says of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it, saying first that `held_back` messages were not logged
    /// since the last one that was (if any).
    Log {
        /// Messages held back before it.
        held_back: u64,
    },
    /// Hold it back.
    HoldBack,
}

/// At most `burst` messages in each interval of `interval`, the intervals
/// starting with the first message after the last one ended.
#[derive(Clone, Debug)]
pub struct RateLimit {
    burst: u32,
    interval: Duration,
    /// Start of the current interval, if any.
    start: Option<Instant>,
    /// Messages logged in it.
    logged: u32,
    /// Messages held back since the last one logged.
    held_back: u64,
    /// Every message logged, and held back (for tests and statistics).
    total_logged: u64,
    total_held_back: u64,
}

impl RateLimit {
    /// A limit of `burst` messages per `interval`.
    pub const fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst,
            interval,
            start: None,
            logged: 0,
            held_back: 0,
            total_logged: 0,
            total_held_back: 0,
        }
    }

    /// Whether a message that comes at `now` is logged.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let expired = self
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            self.start = Some(now);
            self.logged = 0;
        }
        if self.logged < self.burst {
            self.logged += 1;
            self.total_logged += 1;
            let held_back = std::mem::take(&mut self.held_back);
            Verdict::Log { held_back }
        } else {
            self.held_back += 1;
            self.total_held_back += 1;
            Verdict::HoldBack
        }
    }

    /// Messages logged and held back so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.total_logged, self.total_held_back)
    }
}

thread_local! {
    static GUEST: RefCell<RateLimit> = const { RefCell::new(RateLimit::new(BURST, INTERVAL)) };
}

/// Logs `message`, which a guest caused, at `level`, within this thread's
/// [`RateLimit`] of [`BURST`] per [`INTERVAL`]; beyond it, at debug level.
pub fn guest_log(level: Level, message: fmt::Arguments<'_>) {
    match GUEST.with(|limit| limit.borrow_mut().check(Instant::now())) {
        Verdict::Log { held_back } => {
            if held_back != 0 {
                warn!(
                    "{held_back} more messages caused by the guest were not logged \
                     (at most {BURST} every {} s; RUST_LOG=debug shows them)",
                    INTERVAL.as_secs()
                );
            }
            log!(level, "{message}");
        }
        Verdict::HoldBack => debug!("{message}"),
    }
}

/// The messages this thread's guest logging logged and held back so far.
pub fn guest_totals() -> (u64, u64) {
    GUEST.with(|limit| limit.borrow().totals())
}

/// `info!` for what a guest caused, rate-limited ([`guest_log`]).
#[macro_export]
macro_rules! guest_info {
    ($($arg:tt)+) => {
        $crate::ratelimit::guest_log(::log::Level::Info, ::std::format_args!($($arg)+))
    };
}

/// `warn!` for what a guest caused, rate-limited ([`guest_log`]).
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => {
        $crate::ratelimit::guest_log(::log::Level::Warn, ::std::format_args!($($arg)+))
    };
}

/// `error!` for what a guest caused, rate-limited ([`guest_log`]).
#[macro_export]
macro_rules! guest_error {
    ($($arg:tt)+) => {
        $crate::ratelimit::guest_log(::log::Level::Error, ::std::format_args!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_held_back_then_counted() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut limit = RateLimit::new(3, s(10));
        for _ in 0..3 {
            assert_eq!(limit.check(t0), Verdict::Log { held_back: 0 });
        }
        for _ in 0..5 {
            assert_eq!(limit.check(t0 + s(9)), Verdict::HoldBack);
        }
        // The next interval: the first one says how many were held back.
        assert_eq!(limit.check(t0 + s(10)), Verdict::Log { held_back: 5 });
        assert_eq!(limit.check(t0 + s(10)), Verdict::Log { held_back: 0 });
        assert_eq!(limit.check(t0 + s(11)), Verdict::Log { held_back: 0 });
        assert_eq!(limit.check(t0 + s(12)), Verdict::HoldBack);
        // An interval starts with the first message after the last ended.
        assert_eq!(limit.check(t0 + s(100)), Verdict::Log { held_back: 1 });
        assert_eq!(limit.totals(), (7, 6));
        // A clock that goes back does not break it.
        assert_eq!(limit.check(t0), Verdict::Log { held_back: 0 });
    }

    #[test]
    fn guest_messages_per_thread() {
        for i in 0..1000 {
            guest_warn!("refused {i}");
        }
        assert_eq!(guest_totals(), (u64::from(BURST), 1000 - u64::from(BURST)));
        // Another thread, another guest: a budget of its own.
        std::thread::spawn(|| {
            guest_error!("broken");
            assert_eq!(guest_totals(), (1, 0));
        })
        .join()
        .unwrap();
    }
}
