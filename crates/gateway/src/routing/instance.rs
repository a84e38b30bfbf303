//! One connected service instance as the routing table sees it: who it is, the handle to
//! reach it, and its live load and health.
//!
//! An [`Instance`] is shared (`Arc`) between the authoritative table, every published
//! routing snapshot and every request routed to it. What changes often (the in-flight
//! count, the reported status, the time of the last heartbeat, degradation by silence) is
//! held in atomics, so heartbeats and calls never republish the routing snapshot. Times
//! are kept as offsets from the instance's registration `Instant`, which fits in an
//! `AtomicU64`; all times come from the caller, which keeps the table testable.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use semver::Version;
use serde::Serialize;
use weir_proto::HealthStatus;

/// Who an instance says it is in its Hello.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceIdentity {
    pub service: String,
    pub version: Version,
    pub region: String,
    pub instance_id: String,
}

/// An instance's health as routing uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceHealth {
    /// Takes requests.
    Healthy,
    /// Reported degraded, or silent for longer than `degraded_after`: takes requests only
    /// when no healthy instance of the chosen version is left.
    Degraded,
    /// Finishing its in-flight requests: takes no new ones.
    Draining,
}

/// A registered service connection.
pub struct Instance<L> {
    /// The connection id the caller registered it under.
    pub conn_id: u64,
    pub identity: InstanceIdentity,
    /// The caller's handle to the connection (requests are sent through it).
    pub link: L,
    /// Calls routed here and not finished yet (counted by [`InFlightGuard`]).
    in_flight: AtomicU32,
    /// The last status a heartbeat reported, as `HealthStatus as u8`.
    reported: AtomicU8,
    /// Set by a sweep when the instance was silent too long; cleared by a heartbeat.
    silent: AtomicBool,
    /// Set by a sweep while writes to the instance's connection are stuck (it stopped
    /// reading); heartbeats do not clear it, since such a peer may still send them.
    write_stalled: AtomicBool,
    /// Time of the last heartbeat (or of registration), in nanoseconds after `registered_at`.
    last_heard_nanos: AtomicU64,
    registered_at: Instant,
}

impl<L> Instance<L> {
    pub(crate) fn new(conn_id: u64, identity: InstanceIdentity, link: L, now: Instant) -> Self {
        Instance {
            conn_id,
            identity,
            link,
            in_flight: AtomicU32::new(0),
            reported: AtomicU8::new(HealthStatus::Healthy as u8),
            silent: AtomicBool::new(false),
            write_stalled: AtomicBool::new(false),
            last_heard_nanos: AtomicU64::new(0),
            registered_at: now,
        }
    }

    /// Counts a call until the returned guard is dropped. Call it as soon as a request is
    /// routed here, so that least-in-flight selection sees the load.
    pub fn begin_call(self: &Arc<Self>) -> InFlightGuard<L> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { instance: Arc::clone(self) }
    }

    /// Calls routed here and not finished yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Health as routing uses it: a reported `Draining` wins, then a reported `Degraded`,
    /// degradation by silence or by stuck writes, else healthy.
    pub fn status(&self) -> InstanceHealth {
        let reported = self.reported.load(Ordering::Relaxed);
        if reported == HealthStatus::Draining as u8 {
            InstanceHealth::Draining
        } else if reported == HealthStatus::Degraded as u8
            || self.silent.load(Ordering::Relaxed)
            || self.write_stalled.load(Ordering::Relaxed)
        {
            InstanceHealth::Degraded
        } else {
            InstanceHealth::Healthy
        }
    }

    /// Records a heartbeat: its status becomes the reported one and silence is forgiven.
    pub(crate) fn record_heartbeat(&self, status: HealthStatus, now: Instant) {
        self.reported.store(status as u8, Ordering::Relaxed);
        let nanos = now.saturating_duration_since(self.registered_at).as_nanos();
        self.last_heard_nanos.store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.silent.store(false, Ordering::Relaxed);
    }

    /// How long the instance has been silent at `now` (zero if `now` is earlier).
    pub(crate) fn silence(&self, now: Instant) -> Duration {
        let last_heard = Duration::from_nanos(self.last_heard_nanos.load(Ordering::Relaxed));
        now.saturating_duration_since(self.registered_at).saturating_sub(last_heard)
    }

    /// Marks the instance degraded while writes to it are stuck, or clears that mark.
    pub(crate) fn set_write_stalled(&self, stalled: bool) {
        self.write_stalled.store(stalled, Ordering::Relaxed);
    }

    /// Marks the instance degraded by silence, until its next heartbeat.
    pub(crate) fn mark_silent(&self) {
        self.silent.store(true, Ordering::Relaxed);
    }
}

impl<L> fmt::Debug for Instance<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("conn_id", &self.conn_id)
            .field("identity", &self.identity)
            .field("in_flight", &self.in_flight())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// One call in flight on an instance; dropping it ends the call.
#[must_use = "the call counts as in flight only while the guard lives"]
pub struct InFlightGuard<L> {
    instance: Arc<Instance<L>>,
}

impl<L> InFlightGuard<L> {
    /// The instance the call runs on.
    pub fn instance(&self) -> &Arc<Instance<L>> {
        &self.instance
    }
}

impl<L> Drop for InFlightGuard<L> {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<L> fmt::Debug for InFlightGuard<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard").field("conn_id", &self.instance.conn_id).finish()
    }
}
