//! A request rate limit shared by all replicas: GCRA, with the burst of one period's
//! count (as the gateway's local limiter), keyed by (limit name, client key).
//!
//! **Where the state is.** The GCRA state of a key, its theoretical arrival time (TAT),
//! lives in Redis under `<prefix>:rate:<name>:<key>`, and only one Lua script
//! (`gcra.lua`) reads or writes it: atomically, on Redis's own `TIME` (the one clock of
//! all replicas), granting `g` of the `k` tokens asked (0 ≤ g ≤ k, partial grants) and
//! setting the key to expire when its TAT is reached, so idle keys vanish.
//!
//! **Leases.** A round trip per request would put Redis on every request's path, so
//! each replica holds, per key, a lease of tokens already debited in Redis
//! (`lease.rs`): a request that finds a token is admitted with no I/O; a lease that
//! falls below half is topped up in the background, one refill in flight per key; only
//! a request that finds the lease empty waits for a refill, at most `command_timeout`.
//! The lease size adapts to the key's local demand: it starts at 1, doubles when a
//! refill finds the lease emptied within 250 ms of the previous one, halves when tokens
//! expire unspent, and never exceeds `max_lease = clamp(burst / 16, 1, 64)`, so a limit
//! with a burst under 32 (10 per minute, say) leases one token at a time, on demand
//! only. Tokens unspent one second ([`LEASE_TTL`](lease::LEASE_TTL)) after the lease's
//! last refill are dropped.
//!
//! **Bounds.** Every admission spends a token Redis granted before it, so the replicas
//! together never admit more than the GCRA grants: from a key's first request to any
//! time `t`, at most the burst plus one token per emission interval elapsed. They may
//! admit fewer: by the tokens leased and never spent, at most `max_lease` per replica
//! per lease TTL, plus the tokens of a refill that timed out after Redis debited them.
//! A leased token is spent within one lease TTL of its lease's last refill, so a window
//! that starts while leases are held may also see those earlier grants spent, at most
//! `max_lease` per replica. After Redis refuses a refill, the key answers `Limited`
//! locally, with no I/O, until the retry time Redis gave: Redis grants no token to
//! anyone before then.
//!
//! Written here rather than with a crate: the local limiter (`governor`) keeps its
//! state in the process, while this GCRA has to run inside Redis to be one for all
//! replicas, and the leases are what keeps Redis off most requests' path.
//!
//! **When Redis is away**, `check` answers [`RateDecision::Unavailable`] as soon as the
//! lease is empty (tokens already leased are still spent: they were debited); the caller
//! falls back to its local limiter or denies.

mod lease;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::Script;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{lock, SharedError, SharedStore};
use lease::{Grant, Lease, Refill, Turn};

/// The GCRA script (EVALSHA, loaded again on NOSCRIPT).
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

/// The longest period a limit may have: microseconds of it must stay exact in Lua's
/// doubles (2^53 µs is 285 years).
const MAX_PER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the limit.
    Allowed,
    /// Over the limit; a token fits again after `retry_after`.
    Limited {
        /// Time until the next token, from Redis's GCRA state.
        retry_after: Duration,
    },
    /// The shared state could not say in time (store degraded, or Redis slow or
    /// failing): the caller falls back to its local limiter or denies.
    Unavailable,
}

/// One shared rate limit: `count` per `per`, bursting to `count`, per client key.
/// Cheap to clone.
#[derive(Clone)]
pub struct SharedRate {
    /// Shared with the refills in flight.
    inner: Arc<RateInner>,
}

struct RateInner {
    /// Where the GCRA state is.
    store: SharedStore,
    /// The limit's name, in its keys.
    name: String,
    /// GCRA's emission interval T in µs, rounded up so the rate errs low.
    interval_us: u64,
    /// GCRA's tolerance, burst × T µs: exactly `count` tokens at once.
    tolerance_us: u64,
    /// The largest lease per key (see the module's doc).
    max_lease: u32,
    /// This replica's leases, by client key; bounded by `forget_idle`.
    leases: Mutex<HashMap<String, Lease>>,
}

impl SharedRate {
    /// A limit of `count` requests per `per` (burst `count`) named `name`; fails on a
    /// zero count or period, or a period over a year.
    pub fn new(store: SharedStore, name: &str, count: u32, per: Duration) -> Result<SharedRate, SharedError> {
        let invalid = |field, reason: &str| Err(SharedError::Config { field, reason: reason.into() });
        if count == 0 {
            return invalid("count", "must be more than zero");
        }
        if per.is_zero() || per > MAX_PER {
            return invalid("per", "must be more than zero and at most a year");
        }
        // Both fit: `per` is at most a year of µs, under 2^45.
        let per_us = per.as_micros() as u64;
        let interval_us = per_us.div_ceil(u64::from(count)).max(1);
        let inner = RateInner {
            store,
            name: name.to_string(),
            interval_us,
            tolerance_us: interval_us * u64::from(count),
            max_lease: lease::max_lease(count),
            leases: Mutex::new(HashMap::new()),
        };
        Ok(SharedRate { inner: Arc::new(inner) })
    }

    /// The largest lease a replica holds per key.
    pub fn max_lease(&self) -> u32 {
        self.inner.max_lease
    }

    /// Counts one request of client `key`. Waits, at most `command_timeout`, only when
    /// this replica holds no token for `key`.
    pub async fn check(&self, key: &str) -> RateDecision {
        let deadline = Instant::now() + self.inner.store.config().command_timeout;
        let mut after_wait = false;
        loop {
            let mut done = match self.inner.turn(key, after_wait) {
                Ok(decision) => return decision,
                Err(done) => done,
            };
            // Err from `changed` is the awaited end: the refill dropped its sender.
            if tokio::time::timeout_at(deadline, done.changed()).await.is_err() {
                return RateDecision::Unavailable;
            }
            after_wait = true;
        }
    }

    /// Drops the leases of keys not seen for a lease TTL that hold nothing in force;
    /// the number dropped. The gateway's sweeper calls it to bound this replica's state.
    pub fn forget_idle(&self) -> usize {
        let now = Instant::now();
        let mut leases = lock(&self.inner.leases);
        let before = leases.len();
        leases.retain(|_, lease| !lease.is_idle(now));
        before - leases.len()
    }

    /// Keys this replica holds a lease for.
    pub fn tracked_keys(&self) -> usize {
        lock(&self.inner.leases).len()
    }
}

impl RateInner {
    /// One turn at `key`'s lease: the decision, or what to wait for before the next turn.
    fn turn(self: &Arc<Self>, key: &str, after_wait: bool) -> Result<RateDecision, watch::Receiver<()>> {
        let now = Instant::now();
        let shared = self.store.health().is_shared();
        let turn = {
            let mut leases = lock(&self.leases);
            // The key is copied only the first time it is seen, not on every request.
            if !leases.contains_key(key) {
                leases.insert(key.to_owned(), Lease::new(now));
            }
            let lease = leases.get_mut(key).expect("inserted just above, under the same lock");
            lease.take(now, self.max_lease, shared, after_wait)
        };
        match turn {
            Turn::Admit(refill) => {
                self.start(key, refill);
                Ok(RateDecision::Allowed)
            }
            Turn::Limited(retry_after) => Ok(RateDecision::Limited { retry_after }),
            Turn::Unavailable => Ok(RateDecision::Unavailable),
            Turn::Wait { refill, done } => {
                self.start(key, refill);
                Err(done)
            }
        }
    }

    /// Runs `refill` in a task of its own, so that it completes (and its tokens reach
    /// the lease) even if the request that started it goes away.
    fn start(self: &Arc<Self>, key: &str, refill: Option<Refill>) {
        if let Some(refill) = refill {
            tokio::spawn(Arc::clone(self).refill(key.to_string(), refill));
        }
    }

    /// Asks Redis for the refill's tokens and puts the outcome in the lease.
    async fn refill(self: Arc<Self>, key: String, refill: Refill) {
        let outcome = self.take_tokens(&key, refill.amount).await.ok();
        if let Some(lease) = lock(&self.leases).get_mut(&key) {
            lease.complete(Instant::now(), outcome);
        }
        // Wakes the waiters, after the lease has the outcome.
        drop(refill.done);
    }

    /// Debits up to `amount` tokens of `key` in Redis.
    async fn take_tokens(&self, key: &str, amount: u32) -> Result<Grant, SharedError> {
        let redis_key = self.store.key(&["rate", &self.name, key]);
        self.store
            .run(|mut connection| async move {
                let (granted, wait_us): (u32, u64) = GCRA
                    .key(&redis_key)
                    .arg(self.interval_us)
                    .arg(self.tolerance_us)
                    .arg(amount)
                    .invoke_async(&mut connection)
                    .await?;
                Ok(Grant { granted: granted.min(amount), wait: Duration::from_micros(wait_us) })
            })
            .await
    }
}

impl std::fmt::Debug for SharedRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        f.debug_struct("SharedRate").field("name", &inner.name).field("interval_us", &inner.interval_us).finish()
    }
}
