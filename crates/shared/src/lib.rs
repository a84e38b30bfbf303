//! State that the replicas of one gateway share through one Redis: request rate limits
//! ([`SharedRate`]), caps on concurrent things such as WebSocket sessions per user
//! ([`SharedCount`]), messages between replicas and a membership list (on
//! [`SharedStore`]). The gateway keeps its local limits; this crate is what lets N
//! replicas enforce one limit together instead of N times the limit.
//!
//! One [`SharedStore`] per process owns the connection and the health state, and every
//! command goes through it: bounded by `command_timeout`, and not attempted at all while
//! Redis is known to be unreachable ([`Health::Degraded`]), so a dead or silent Redis
//! costs a request no more than one timeout, once, and then nothing but the fallback its
//! caller chose. Whatever must agree across replicas is decided inside one Lua script per
//! operation, with Redis's own `TIME` as the single clock; a replica's clock only ages
//! its local leases.
//!
//! Keys and channels, all under the configured prefix:
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>:rate:<name>:<key>` | string | a rate limit's theoretical arrival time (µs of Redis time), expiring when idle |
//! | `<prefix>:count:<name>:<key>` | sorted set | the live slots of one capped key, member `<replica>:<slot id>`, score its expiry (ms) |
//! | `<prefix>:members:<set>` | sorted set | a membership list, member as announced, score its expiry (ms) |
//! | `<prefix>:<suffix>` | channel | messages between replicas |
//!
//! One Redis server (or a primary behind a stable address), not Redis Cluster: a count
//! renewal touches many keys in one script.

mod config;
mod count;
mod error;
mod rate;
mod store;

pub use config::SharedConfig;
pub use count::{CountRefusal, CountSlot, SharedCount};
pub use error::SharedError;
pub use rate::{RateDecision, SharedRate};
pub use store::{Health, SharedStore, StoreStats, Subscription};

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking over a poisoned one: every map this crate locks is left
/// consistent by each critical section (no section can panic half-way through an update).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
