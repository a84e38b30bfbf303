//! Request rate limits per client key, one limiter per mount that sets one, with GCRA
//! (the `governor` crate): a smooth rate with a burst of one period's count, not a fixed
//! window that lets twice the rate through at a window's edge.
//!
//! The client key is the authenticated subject when there is one, else the client IP.
//! Over the limit: 429 with `Retry-After` (whole seconds, at least 1). Keys not seen for
//! a while are forgotten by [`RequestRate::forget_idle`], which the sweeper calls.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use thiserror::Error;

use crate::config::Rate;

/// A GCRA quota allowing `rate.count` per `rate.per`, bursting up to `rate.count`.
pub(crate) fn quota(rate: Rate) -> Option<Quota> {
    let count = NonZeroU32::new(rate.count)?;
    let period = rate.per.checked_div(rate.count)?;
    Some(Quota::with_period(period)?.allow_burst(count))
}

/// A client over its request rate (429 with `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("rate limit exceeded")]
pub(crate) struct RateLimited {
    /// Whole seconds until a request would be allowed, at least 1.
    pub retry_after_secs: u64,
}

/// One mount's request limiter, keyed by client.
pub(crate) struct RequestRate {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RequestRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRate").field("keys", &self.limiter.len()).finish()
    }
}

impl RequestRate {
    /// A limiter allowing `rate`, or `None` when the rate allows nothing to be limited
    /// (a zero count or period).
    pub(crate) fn new(rate: Rate) -> Option<Self> {
        Some(RequestRate { limiter: RateLimiter::keyed(quota(rate)?), clock: DefaultClock::default() })
    }

    /// Counts one request of client `key`; 429 when over its rate.
    pub(crate) fn check(&self, key: String) -> Result<(), RateLimited> {
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }

    /// Drops state of keys whose limit has fully recovered.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
