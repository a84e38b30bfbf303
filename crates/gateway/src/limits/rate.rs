//! Request rate limits per mount and client key, with GCRA (the `governor` crate): a
//! smooth rate with a burst of one period's count, not a fixed window that lets twice
//! the rate through at a window's edge.
//!
//! The client key is the authenticated subject when there is one, else the client IP.
//! Over the limit: 429 with `Retry-After` (whole seconds, at least 1). Keys not seen for
//! a while are forgotten by [`RateLimits::forget_idle`], which the sweeper calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::request::authenticate::Identity;
use crate::response::error::GatewayError;
use crate::request::mount::{Mount, MountTable, Rate};

/// A GCRA quota allowing `rate.count` per `rate.per`, bursting up to `rate.count`.
pub fn quota(rate: Rate) -> Option<Quota> {
    let count = NonZeroU32::new(rate.count)?;
    let period = rate.per.checked_div(rate.count)?;
    Some(Quota::with_period(period)?.allow_burst(count))
}

/// The request limiters of every mount that has one, by mount prefix.
pub struct RateLimits {
    limiters: HashMap<String, DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").field("mounts", &self.limiters.keys().collect::<Vec<_>>()).finish()
    }
}

impl RateLimits {
    /// Limiters for the mounts whose settings ask for one.
    pub fn new(mounts: &MountTable) -> Self {
        let limiters = mounts
            .iter()
            .filter_map(|m| {
                let quota = quota(m.config.settings.rate_limit_requests?)?;
                Some((m.config.prefix.clone(), RateLimiter::keyed(quota)))
            })
            .collect();
        RateLimits { limiters, clock: DefaultClock::default() }
    }

    /// Counts one request of this client on `mount`; 429 when over its rate.
    pub fn check_request(&self, mount: &Mount, identity: &Identity, client: SocketAddr) -> Result<(), GatewayError> {
        let Some(limiter) = self.limiters.get(&mount.config.prefix) else { return Ok(()) };
        let key = identity.subject.clone().unwrap_or_else(|| client.ip().to_string());
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            GatewayError::TooManyRequests { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }

    /// Drops state of keys whose limit has fully recovered.
    pub fn forget_idle(&self) {
        for limiter in self.limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
