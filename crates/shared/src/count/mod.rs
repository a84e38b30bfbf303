//! A cap on concurrent things per key across replicas, such as WebSocket sessions per
//! user. Each live thing holds a [`CountSlot`]: a member `<replica>:<slot id>` of the
//! sorted set `<prefix>:count:<name>:<key>`, scored with its expiry (ms of Redis time).
//! Acquiring is one script (`store/expiring.lua`): drop expired members, add this one if
//! fewer than `max` remain, move the key's expiry to its last member's.
//!
//! A slot is released when dropped (a `ZREM` in a spawned task, best effort) or by
//! [`CountSlot::release`], awaited. Every `ttl / 3` one task per count renews all the
//! slots this replica holds, in one script call per 256 slots, so a live slot never
//! expires while Redis answers, and a crashed replica's slots stop counting at most
//! `ttl` after its last renewal. The same bound covers a slot whose release was lost
//! (Redis down at the time, or an acquire that timed out after Redis added it). A slot
//! that expired anyway (Redis away for longer than `ttl`) is not revived, since another
//! replica may hold its place: it is logged and no longer counts.
//!
//! The renewal is this crate's own because it is what makes a replica's crash bounded:
//! Redis has no per-member expiry, and a key-level TTL would also drop other replicas'
//! slots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::{lock, SharedError, SharedStore};

/// Slots renewed by one script call: bounds how long one call holds Redis.
const RENEW_BATCH: usize = 256;

/// Why no slot was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CountRefusal {
    /// The key already has `max` live slots across the replicas.
    #[error("the shared count is full")]
    Full,
    /// The shared state could not say (store degraded, or Redis slow or failing).
    #[error("the shared count is unavailable")]
    Unavailable,
}

/// One shared cap, named `name`, whose slots expire `ttl` after their last renewal.
/// Cheap to clone.
#[derive(Clone)]
pub struct SharedCount {
    /// Shared with the slots and (weakly) with the renewal task.
    inner: Arc<CountInner>,
}

struct CountInner {
    /// Where the slots are.
    store: SharedStore,
    /// The count's name, in its keys.
    name: String,
    /// How long a slot counts after its last renewal.
    ttl: Duration,
    /// The slots this replica holds, by slot id: `(Redis key, member)`, for the renewal.
    live: Mutex<HashMap<u64, (String, String)>>,
    /// The runtime that releases a slot dropped outside of it.
    runtime: tokio::runtime::Handle,
}

/// One acquired slot; released when dropped.
#[derive(Debug)]
pub struct CountSlot {
    /// The count the slot belongs to, kept alive (and renewed) while the slot is.
    inner: Arc<CountInner>,
    /// The slot's number in `CountInner::live`.
    id: u64,
}

impl SharedCount {
    /// A count named `name` whose slots expire `ttl` after their last renewal; `ttl / 3`
    /// must leave a renewal its `command_timeout`. Starts the renewal task, on the Tokio
    /// runtime it is called in (an error outside of one).
    pub fn new(store: SharedStore, name: &str, ttl: Duration) -> Result<SharedCount, SharedError> {
        let invalid = |field, reason: &str| Err(SharedError::Config { field, reason: reason.into() });
        if ttl / 3 < store.config().command_timeout {
            return invalid("ttl", "must be at least 3 × command_timeout");
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return invalid("runtime", "a shared count is made within a Tokio runtime");
        };
        let inner =
            Arc::new(CountInner { store, name: name.to_string(), ttl, live: Mutex::new(HashMap::new()), runtime });
        inner.runtime.spawn(renew(Arc::downgrade(&inner)));
        Ok(SharedCount { inner })
    }

    /// A slot for `key` if it has fewer than `max` live slots across the replicas.
    pub async fn try_acquire(&self, key: &str, max: u32) -> Result<CountSlot, CountRefusal> {
        if max == 0 {
            return Err(CountRefusal::Full);
        }
        let inner = &self.inner;
        let id = inner.store.next_slot_id();
        let redis_key = inner.key(key);
        let member = format!("{}:{id}", inner.store.config().replica);
        match inner.store.add_expiring(&redis_key, &member, inner.ttl, max).await {
            Ok(true) => {
                lock(&inner.live).insert(id, (redis_key, member));
                Ok(CountSlot { inner: Arc::clone(inner), id })
            }
            Ok(false) => Err(CountRefusal::Full),
            Err(_) => Err(CountRefusal::Unavailable),
        }
    }

    /// The live slots of `key` across the replicas.
    pub async fn live(&self, key: &str) -> Result<u32, SharedError> {
        let members = self.inner.store.live_expiring(&self.inner.key(key)).await?;
        Ok(u32::try_from(members.len()).unwrap_or(u32::MAX))
    }

    /// Slots this replica holds.
    pub fn held(&self) -> usize {
        lock(&self.inner.live).len()
    }
}

impl CountInner {
    /// `<prefix>:count:<name>:<key>`.
    fn key(&self, key: &str) -> String {
        self.store.key(&["count", &self.name, key])
    }
}

impl CountSlot {
    /// Releases the slot now, awaiting Redis (at most `command_timeout`); if that fails
    /// the slot stops counting `ttl` after its last renewal.
    pub async fn release(self) -> Result<(), SharedError> {
        let Some((key, member)) = lock(&self.inner.live).remove(&self.id) else { return Ok(()) };
        self.inner.store.remove_expiring(&key, &member).await
    }
}

impl Drop for CountSlot {
    fn drop(&mut self) {
        // Already gone after `release` (or after expiring during an outage).
        let Some((key, member)) = lock(&self.inner.live).remove(&self.id) else { return };
        let store = self.inner.store.clone();
        self.inner.runtime.spawn(async move {
            if let Err(error) = store.remove_expiring(&key, &member).await {
                debug!(%error, key, "shared count: release failed, the slot expires with its ttl");
            }
        });
    }
}

impl std::fmt::Debug for CountInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountInner").field("name", &self.name).field("ttl", &self.ttl).finish()
    }
}

impl std::fmt::Debug for SharedCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// Renews the count's slots every `ttl / 3` until the count and all its slots are gone.
async fn renew(count: Weak<CountInner>) {
    let Some(period) = count.upgrade().map(|count| count.ttl / 3) else { return };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(count) = count.upgrade() else { return };
        let slots: Vec<(u64, (String, String))> =
            lock(&count.live).iter().map(|(id, slot)| (*id, slot.clone())).collect();
        for batch in slots.chunks(RENEW_BATCH) {
            let pairs: Vec<(String, String)> = batch.iter().map(|(_, slot)| slot.clone()).collect();
            match count.store.renew_expiring(&pairs, count.ttl).await {
                Ok(lost) => count.forget_lost(batch, &lost),
                // Degraded: the store logged it; the next tick tries again.
                Err(_) => break,
            }
        }
    }
}

impl CountInner {
    /// Stops renewing the slots at `lost` positions of `batch`: they were gone from Redis.
    /// Those released meanwhile (already out of `live`) are no news; the others expired.
    fn forget_lost(&self, batch: &[(u64, (String, String))], lost: &[usize]) {
        let mut live = lock(&self.live);
        let expired =
            lost.iter().filter_map(|index| batch.get(*index)).filter(|(id, _)| live.remove(id).is_some()).count();
        if expired > 0 {
            warn!(count = self.name, expired, "shared count: slots expired during an outage no longer count");
        }
    }
}
