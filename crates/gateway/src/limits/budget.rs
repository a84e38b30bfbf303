//! The payload budget: every request-body byte the gateway holds is reserved here first.
//!
//! Three limits (`[limits]` in `docs/configuration.md`) apply at once: per call, per service connection, and for
//! the whole gateway. A [`Reservation`] belongs to one request on one connection; it grows
//! as bytes are read and is released when dropped, so no exit path (error, timeout,
//! client disconnect, panic unwinding) can leak bytes. All three counters change under
//! one lock, so a reservation is all-or-nothing and the counters never go below zero.
//!
//! Streaming requests reserve their whole flow-control window at admission (see
//! `upstream/mod.rs`): they fail fast with 503 instead of being cut off mid-transfer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use thiserror::Error;
use tokio::sync::Notify;

use super::lock;
use crate::config::PayloadLimits;

/// Which limit a reservation would have crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BudgetExceeded {
    #[error("request exceeds the per-call in-flight limit")]
    PerCall,
    #[error("service connection exceeds its in-flight limit")]
    PerConnection,
    #[error("gateway exceeds its aggregate in-flight limit")]
    Aggregate,
}

/// A snapshot of the budget's counters, served by the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BudgetCounters {
    /// Bytes reserved across the gateway.
    pub aggregate_bytes: u64,
    /// Bytes reserved per service connection id (only connections holding bytes).
    pub per_connection_bytes: HashMap<u64, u64>,
    /// Live reservations (requests holding or able to hold bytes).
    pub reservations: u64,
}

#[derive(Debug, Default)]
struct Counters {
    aggregate: u64,
    per_connection: HashMap<u64, u64>,
    reservations: u64,
}

/// Tracks reserved bytes against [`PayloadLimits`]. Shared as `Arc<PayloadBudget>`.
#[derive(Debug)]
pub struct PayloadBudget {
    limits: PayloadLimits,
    /// One lock for all counters: reservations are rare enough (one per chunk) that
    /// consistency across the three limits is worth more than lock-free counters.
    counters: Mutex<Counters>,
    /// Woken whenever the budget becomes idle (no bytes, no reservations).
    idle: Notify,
}

impl PayloadBudget {
    /// A budget enforcing `limits`.
    pub(crate) fn new(limits: PayloadLimits) -> Arc<Self> {
        Arc::new(PayloadBudget { limits, counters: Mutex::new(Counters::default()), idle: Notify::new() })
    }

    /// Opens an empty reservation for request traffic on `connection`, held to the
    /// budget's per-call limit.
    #[cfg(test)]
    pub(crate) fn open(self: &Arc<Self>, connection: u64) -> Reservation {
        self.open_with_call_limit(connection, self.limits.max_request_bytes_per_call)
    }

    /// Like [`PayloadBudget::open`] with another per-call limit (a mount's override).
    pub(crate) fn open_with_call_limit(self: &Arc<Self>, connection: u64, per_call: u64) -> Reservation {
        self.lock().reservations += 1;
        Reservation { budget: Arc::clone(self), connection, bytes: 0, per_call }
    }

    /// Current counters.
    pub fn counters(&self) -> BudgetCounters {
        let c = self.lock();
        BudgetCounters {
            aggregate_bytes: c.aggregate,
            per_connection_bytes: c.per_connection.clone(),
            reservations: c.reservations,
        }
    }

    /// Resolves once nothing is reserved and no reservation is open: shutdown and tests
    /// use it to see that every request released what it held.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_idle() {
                return;
            }
            notified.await;
        }
    }

    fn is_idle(&self) -> bool {
        let c = self.lock();
        c.aggregate == 0 && c.reservations == 0
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A poisoned lock only means another thread panicked between two plain integer
        // updates, which leave the counters consistent; keep serving.
        lock(&self.counters)
    }

    fn grow(&self, connection: u64, held: u64, bytes: u64, per_call: u64) -> Result<(), BudgetExceeded> {
        let mut c = self.lock();
        let conn = c.per_connection.get(&connection).copied().unwrap_or(0);
        if held.saturating_add(bytes) > per_call {
            return Err(BudgetExceeded::PerCall);
        }
        if conn.saturating_add(bytes) > self.limits.max_request_bytes_per_connection {
            return Err(BudgetExceeded::PerConnection);
        }
        if c.aggregate.saturating_add(bytes) > self.limits.max_aggregate_inflight_bytes {
            return Err(BudgetExceeded::Aggregate);
        }
        c.aggregate += bytes;
        c.per_connection.insert(connection, conn + bytes);
        Ok(())
    }

    fn shrink(&self, connection: u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut c = self.lock();
        c.aggregate = c.aggregate.saturating_sub(bytes);
        if let Some(conn) = c.per_connection.get_mut(&connection) {
            *conn = conn.saturating_sub(bytes);
            if *conn == 0 {
                c.per_connection.remove(&connection);
            }
        }
    }
}

/// Bytes held by one request. Dropping it releases them.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<PayloadBudget>,
    connection: u64,
    bytes: u64,
    /// This request's per-call limit.
    per_call: u64,
}

impl Reservation {
    /// Reserves `bytes` more, or nothing if any limit would be crossed.
    pub(crate) fn try_grow(&mut self, bytes: u64) -> Result<(), BudgetExceeded> {
        self.budget.grow(self.connection, self.bytes, bytes, self.per_call)?;
        self.bytes += bytes;
        Ok(())
    }

    #[cfg(test)]
    /// Releases `bytes` (at most what is held) while keeping the reservation open.
    pub(crate) fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.budget.shrink(self.connection, bytes);
        self.bytes -= bytes;
    }

    #[cfg(test)]
    /// Bytes currently held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.shrink(self.connection, self.bytes);
        let idle = {
            let mut c = self.budget.lock();
            c.reservations = c.reservations.saturating_sub(1);
            c.aggregate == 0 && c.reservations == 0
        };
        if idle {
            self.budget.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(call: u64, conn: u64, all: u64) -> PayloadLimits {
        PayloadLimits {
            max_request_bytes_per_call: call,
            max_request_bytes_per_connection: conn,
            max_aggregate_inflight_bytes: all,
        }
    }

    #[test]
    fn each_limit_refuses_the_byte_that_crosses_it() {
        let budget = PayloadBudget::new(limits(10, 15, 20));
        let mut a = budget.open(1);
        a.try_grow(10).unwrap();
        assert_eq!(a.try_grow(1), Err(BudgetExceeded::PerCall));
        let mut b = budget.open(1);
        b.try_grow(5).unwrap();
        assert_eq!(b.try_grow(1), Err(BudgetExceeded::PerConnection));
        let mut c = budget.open(2);
        c.try_grow(5).unwrap();
        assert_eq!(c.try_grow(1), Err(BudgetExceeded::Aggregate));
        assert_eq!(budget.counters().aggregate_bytes, 20);
        drop((a, b, c));
        assert_eq!(budget.counters(), BudgetCounters::default());
    }

    #[test]
    fn release_never_goes_below_zero() {
        let budget = PayloadBudget::new(limits(10, 10, 10));
        let mut a = budget.open(1);
        a.try_grow(4).unwrap();
        a.release(100);
        assert_eq!(a.bytes(), 0);
        assert_eq!(budget.counters().aggregate_bytes, 0);
    }

    proptest! {
        #[test]
        fn concurrent_reserve_and_release_keep_counters_consistent(
            ops in proptest::collection::vec(
                proptest::collection::vec((0u64..3, 1u64..400, any::<bool>()), 1..40), 1..6)
        ) {
            let budget = PayloadBudget::new(limits(1000, 1500, 2500));
            std::thread::scope(|scope| {
                for thread_ops in &ops {
                    let budget = Arc::clone(&budget);
                    scope.spawn(move || {
                        let mut held: Vec<Reservation> = Vec::new();
                        for &(conn, bytes, release) in thread_ops {
                            let mut r = budget.open(conn);
                            if r.try_grow(bytes).is_ok() {
                                let c = budget.counters();
                                assert!(c.aggregate_bytes <= 2500);
                                assert!(c.per_connection_bytes.values().all(|v| *v <= 1500));
                            }
                            if release { r.release(bytes / 2); }
                            held.push(r);
                        }
                    });
                }
            });
            prop_assert_eq!(budget.counters(), BudgetCounters::default());
        }
    }
}
