//! Request rate limits per client key, one limiter per mount that sets one, with GCRA
//! (the `governor` crate): a smooth rate with a burst of one period's count, not a fixed
//! window that lets twice the rate through at a window's edge.
//!
//! The client key is the authenticated subject when there is one, else the client IP.
//! Over the limit: 429 with `Retry-After` (whole seconds, at least 1). Keys not seen for
//! a while are forgotten by [`RequestRate::forget_idle`], which the sweeper calls.
//!
//! With `[shared]`, the limit is one for all replicas: a [`SharedRate`] decides (GCRA in
//! Redis, with local token leases, see `weir_shared`), and the local limiter still counts
//! every request, so that when Redis cannot be reached (`on_failure = "local"`) it
//! decides from the client's recent history instead of from nothing. With
//! `on_failure = "deny"` a request that Redis cannot decide gets 503 instead.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use thiserror::Error;
use weir_shared::{RateDecision, SharedError, SharedRate};

use super::shared::SharedLimits;
use crate::config::{OnSharedFailure, Rate};
use crate::response::error::GatewayError;

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

impl RateLimited {
    fn after(wait: Duration) -> Self {
        RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    }
}

/// One mount's request limiter, keyed by client.
pub(crate) struct RequestRate {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// With `[shared]`: the limit all replicas enforce together, and what to do while
    /// Redis cannot say.
    shared: Option<(SharedRate, OnSharedFailure)>,
}

impl std::fmt::Debug for RequestRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRate")
            .field("keys", &self.limiter.len())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl RequestRate {
    /// A limiter allowing `rate` on `mount`, shared through `shared` when given, or
    /// `None` when the rate allows nothing to be limited (a zero count or period).
    pub(crate) fn new(rate: Rate, mount: &str, shared: Option<&SharedLimits>) -> Result<Option<Self>, SharedError> {
        let Some(quota) = quota(rate) else { return Ok(None) };
        let shared = match shared {
            Some(limits) => {
                Some((SharedRate::new(limits.store.clone(), mount, rate.count, rate.per)?, limits.on_failure))
            }
            None => None,
        };
        Ok(Some(RequestRate { limiter: RateLimiter::keyed(quota), clock: DefaultClock::default(), shared }))
    }

    /// Counts one request of client `key`; 429 when over its rate, 503 when the shared
    /// limit cannot be reached and the mount denies then.
    pub(crate) async fn check(&self, key: String) -> Result<(), GatewayError> {
        let local = self.check_local(&key);
        let Some((shared, on_failure)) = &self.shared else {
            return Ok(local?);
        };
        match shared.check(&key).await {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => Err(RateLimited::after(retry_after).into()),
            RateDecision::Unavailable => match on_failure {
                OnSharedFailure::Local => Ok(local?),
                OnSharedFailure::Deny => {
                    Err(GatewayError::Overloaded("the shared rate limit cannot be checked (Redis unreachable)".into()))
                }
            },
        }
    }

    fn check_local(&self, key: &String) -> Result<(), RateLimited> {
        self.limiter.check_key(key).map_err(|not_until| RateLimited::after(not_until.wait_time_from(self.clock.now())))
    }

    /// Drops state of keys whose limit has fully recovered (and the shared limit's idle
    /// leases).
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        if let Some((shared, _)) = &self.shared {
            shared.forget_idle();
        }
    }
}
