//! What heartbeats report: the status the program set, the requests in flight, and the
//! error rate over the last [`ERROR_WINDOW`] answered requests.
//!
//! One [`Health`] is shared by the sessions of one [`crate::Service::serve`] call, or by
//! every session of one [`crate::Service::run`] loop, so a status set before a reconnect
//! is still reported after it. Status changes are published on a watch channel that each
//! session's loop turns into an immediate heartbeat.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use weir_proto::{HealthStatus, Heartbeat};

/// How many recent outcomes the error rate is computed over.
pub const ERROR_WINDOW: usize = 100;

/// Shared load and health figures of a service instance.
#[derive(Debug)]
pub(crate) struct Health {
    status: watch::Sender<HealthStatus>,
    in_flight: AtomicU32,
    recent: Mutex<Outcomes>,
}

/// A ring of the last outcomes: `true` for a failure.
#[derive(Debug, Default)]
struct Outcomes {
    ring: VecDeque<bool>,
    failures: usize,
}

impl Outcomes {
    fn push(&mut self, failed: bool) {
        if self.ring.len() == ERROR_WINDOW && self.ring.pop_front() == Some(true) {
            self.failures -= 1;
        }
        self.ring.push_back(failed);
        self.failures += usize::from(failed);
    }

    fn rate(&self) -> f32 {
        if self.ring.is_empty() {
            return 0.0;
        }
        // Both at most ERROR_WINDOW: exact as f32; the quotient is in [0, 1].
        self.failures as f32 / self.ring.len() as f32
    }
}

impl Health {
    pub(crate) fn new() -> Arc<Self> {
        let (status, _) = watch::channel(HealthStatus::Healthy);
        Arc::new(Health { status, in_flight: AtomicU32::new(0), recent: Mutex::new(Outcomes::default()) })
    }

    pub(crate) fn status(&self) -> HealthStatus {
        *self.status.borrow()
    }

    /// Sets the status; every session sends a heartbeat with it at once.
    pub(crate) fn set_status(&self, status: HealthStatus) {
        self.status.send_replace(status);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<HealthStatus> {
        self.status.subscribe()
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn error_rate(&self) -> f32 {
        self.recent().rate()
    }

    /// The heartbeat reporting the current figures.
    pub(crate) fn heartbeat(&self) -> Heartbeat {
        Heartbeat::new(self.status(), self.in_flight(), self.error_rate())
    }

    /// Counts a request in flight until the returned guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { health: Arc::clone(self) }
    }

    fn recent(&self) -> MutexGuard<'_, Outcomes> {
        // Plain counters updated without panicking code in between: a poisoned lock
        // still holds a consistent ring.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request in flight; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct InFlight {
    health: Arc<Health>,
}

impl InFlight {
    /// Records how the request ended: `failed` for a 5xx answer or a failed handler.
    pub(crate) fn record(&self, failed: bool) {
        self.health.recent().push(failed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.health.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_covers_the_last_hundred() {
        let health = Health::new();
        assert_eq!(health.error_rate(), 0.0);
        let guard = health.enter();
        assert_eq!(health.in_flight(), 1);
        for _ in 0..50 {
            guard.record(true);
        }
        assert_eq!(health.error_rate(), 1.0);
        for _ in 0..50 {
            guard.record(false);
        }
        assert_eq!(health.error_rate(), 0.5);
        for _ in 0..100 {
            guard.record(false);
        }
        assert_eq!(health.error_rate(), 0.0);
        drop(guard);
        assert_eq!(health.in_flight(), 0);
    }

    #[test]
    fn heartbeat_carries_the_status() {
        let health = Health::new();
        health.set_status(HealthStatus::Draining);
        assert_eq!(health.heartbeat().status, HealthStatus::Draining);
    }
}
