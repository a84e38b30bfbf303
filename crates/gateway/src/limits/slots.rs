//! Counting limits on concurrent things per key: client connections per IP address,
//! WebSockets per user. A [`Permit`] holds one slot and frees it when dropped, so no
//! exit path can leak a slot, however a connection or a WebSocket ends. The maximum can
//! change while slots are held ([`KeyedLimiter::set_max`], on a reload): the holders keep
//! their slots and count against the new maximum, which applies to the next acquire.

use super::lock;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// At most `max` concurrent holders per key.
#[derive(Debug)]
pub(crate) struct KeyedLimiter<K: Hash + Eq + Clone> {
    /// Atomic so a reload can change it without forgetting the slots held.
    max: AtomicU32,
    counts: Mutex<HashMap<K, u32>>,
}

/// One slot of a [`KeyedLimiter`], released on drop.
#[derive(Debug)]
pub(crate) struct Permit<K: Hash + Eq + Clone> {
    limiter: Arc<KeyedLimiter<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter allowing `max` holders per key.
    pub(crate) fn new(max: u32) -> Arc<Self> {
        Arc::new(KeyedLimiter { max: AtomicU32::new(max), counts: Mutex::new(HashMap::new()) })
    }

    /// From now on at most `max` holders per key; slots held now stay held (a key over
    /// the new maximum gets no slot until enough are freed).
    pub(crate) fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A slot for `key`, or `None` when it already has `max`.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: K) -> Option<Permit<K>> {
        let mut counts = self.lock();
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.max.load(Ordering::Relaxed) {
            return None;
        }
        *count += 1;
        Some(Permit { limiter: Arc::clone(self), key })
    }

    /// Current holders of `key`.
    pub(crate) fn count(&self, key: &K) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, u32>> {
        // Plain counters: a poisoned map is still consistent.
        lock(&self.counts)
    }
}

impl<K: Hash + Eq + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut counts = self.limiter.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_past_the_maximum_is_refused_and_drops_free_slots() {
        let limiter = KeyedLimiter::new(2);
        let a = limiter.try_acquire("ip").unwrap();
        let _b = limiter.try_acquire("ip").unwrap();
        assert!(limiter.try_acquire("ip").is_none());
        assert!(limiter.try_acquire("other").is_some());
        drop(a);
        assert!(limiter.try_acquire("ip").is_some());
    }

    #[test]
    fn a_lowered_maximum_counts_the_slots_already_held() {
        let limiter = KeyedLimiter::new(3);
        let held: Vec<_> = (0..3).map(|_| limiter.try_acquire("user").unwrap()).collect();
        limiter.set_max(2);
        assert!(limiter.try_acquire("user").is_none(), "three held, two allowed");
        drop(held);
        let _a = limiter.try_acquire("user").unwrap();
        let _b = limiter.try_acquire("user").unwrap();
        assert!(limiter.try_acquire("user").is_none());
        limiter.set_max(4);
        assert!(limiter.try_acquire("user").is_some(), "a raised maximum applies at once");
    }
}
