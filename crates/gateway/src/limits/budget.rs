//! The payload budget: every request-body byte the gateway holds is reserved here first.
//!
//! Four limits (`[limits]` in `docs/configuration.md`) apply at once: per call, per
//! service connection, per client (authenticated subject, else IP) and for the whole
//! gateway; a fifth, a mount's share (`max_inflight_bytes` of a `[[mount]]`), applies to
//! the requests of the mounts that declare one, so that one mount's traffic cannot fill
//! the budget every other mount needs. A [`Reservation`] belongs to one request of one
//! client on one mount and one connection; it
//! grows as bytes are read, shrinks as they leave, and is released when dropped, so no
//! exit path (error, timeout, client disconnect, panic unwinding) can leak bytes. All
//! counters change under one lock, so a reservation is all-or-nothing and the counters
//! never go below zero.
//!
//! A streamed body holds only the bytes actually in flight (read from the client, not yet
//! acknowledged by the service's credit; see `upstream/http.rs`), so an idle or trickling
//! upload holds next to nothing.
//!
//! The limits can change while the gateway runs ([`PayloadBudget::set_limits`], on a
//! configuration reload), the mounts' shares with them: they are read under the same
//! lock as the counters, so every
//! reservation is judged by one set of limits. Bytes already held stay held; a lower
//! limit only refuses the next growth. A request waiting for room listens to
//! [`PayloadBudget::released`], woken whenever bytes are given back. A WebSocket session
//! holds the same way only its bytes in flight towards the service, including the
//! message being assembled, so an idle one holds nothing (`upstream/websocket/flight.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use std::sync::atomic::AtomicU64;
use thiserror::Error;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::lock;
use crate::config::{MountConfig, PayloadLimits};

/// Which limit a reservation would have crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BudgetExceeded {
    #[error("request exceeds the per-call in-flight limit")]
    PerCall,
    #[error("service connection exceeds its in-flight limit")]
    PerConnection,
    #[error("gateway exceeds its aggregate in-flight limit")]
    Aggregate,
    #[error("client exceeds its in-flight limit")]
    PerClient,
    #[error("mount exceeds its in-flight share")]
    PerMount,
}

/// A gauge of bytes, which a reservation moves as it grows and shrinks.
pub(crate) type ByteGauge = Gauge<u64, AtomicU64>;

/// Each mount's share of the budget (its `max_inflight_bytes`), by mount prefix; a mount
/// without a share is absent.
pub type MountShares = HashMap<String, u64>;

/// The shares `mounts` declare.
pub(crate) fn mount_shares(mounts: &[MountConfig]) -> MountShares {
    let declared = mounts.iter().filter_map(|m| m.settings.max_inflight_bytes.map(|share| (m.prefix.clone(), share)));
    declared.collect()
}

/// How many of the largest holders the admin view lists.
const TOP_CLIENTS: usize = 10;

/// What one client holds, as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientHolding {
    /// The client key: authenticated subject, else IP address.
    pub client: String,
    pub bytes: u64,
}

/// A snapshot of the budget's counters, served by the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BudgetCounters {
    /// Bytes reserved across the gateway.
    pub aggregate_bytes: u64,
    /// Bytes reserved per service connection id (only connections holding bytes).
    pub per_connection_bytes: HashMap<u64, u64>,
    /// Open reservations per service connection id (only connections with one): how many
    /// requests and WebSockets draw on each connection's limit.
    pub per_connection_reservations: HashMap<u64, u64>,
    /// Bytes reserved per mount prefix (only mounts holding bytes): which mount's
    /// traffic fills the budget, to compare with the shares.
    pub per_mount_bytes: HashMap<String, u64>,
    /// Live reservations (requests holding or able to hold bytes).
    pub reservations: u64,
    /// The clients holding the most bytes, largest first (at most ten): who to look at
    /// when the budget is full.
    pub top_clients: Vec<ClientHolding>,
}

#[derive(Debug)]
struct Counters {
    /// Under the counters' lock so that a reload's new limits and the counts they judge
    /// are always read together.
    limits: PayloadLimits,
    /// Beside `limits` for the same reason: a reload replaces both at once.
    shares: MountShares,
    aggregate: u64,
    per_connection: HashMap<u64, u64>,
    /// Open reservations per connection; only connections with one, like `per_client`.
    per_connection_reservations: HashMap<u64, u64>,
    /// Only clients holding bytes: the map stays as small as the set of active holders.
    per_client: HashMap<String, u64>,
    /// Only mounts holding bytes, like `per_client`.
    per_mount: HashMap<String, u64>,
    reservations: u64,
}

/// Tracks reserved bytes against [`PayloadLimits`]. Shared as `Arc<PayloadBudget>`.
#[derive(Debug)]
pub struct PayloadBudget {
    /// One lock for all counters: reservations are rare enough (one per chunk) that
    /// consistency across the three limits is worth more than lock-free counters.
    counters: Mutex<Counters>,
    /// Woken whenever the budget becomes idle (no bytes, no reservations).
    idle: Notify,
    /// Woken whenever bytes are given back: requests waiting for room retry then.
    released: Notify,
}

impl PayloadBudget {
    /// A budget enforcing `limits` and the mounts' `shares`.
    pub(crate) fn new(limits: PayloadLimits, shares: MountShares) -> Arc<Self> {
        let counters = Counters {
            limits,
            shares,
            aggregate: 0,
            per_connection: HashMap::new(),
            per_connection_reservations: HashMap::new(),
            per_client: HashMap::new(),
            per_mount: HashMap::new(),
            reservations: 0,
        };
        Arc::new(PayloadBudget { counters: Mutex::new(counters), idle: Notify::new(), released: Notify::new() })
    }

    /// Replaces the limits and the mounts' shares (a configuration reload). Held bytes
    /// stay held; requests waiting for room retry at once, since a higher limit may have
    /// made some.
    pub(crate) fn set_limits(&self, limits: PayloadLimits, shares: MountShares) {
        {
            let mut c = self.lock();
            c.limits = limits;
            c.shares = shares;
        }
        self.released.notify_waiters();
    }

    /// The limits in force.
    pub fn limits(&self) -> PayloadLimits {
        self.lock().limits
    }

    /// Opens an empty reservation for request traffic of `client` on `connection`, on
    /// the mount at `/`, held to the budget's per-call limit.
    #[cfg(test)]
    pub(crate) fn open(self: &Arc<Self>, connection: u64, client: Option<&str>) -> Reservation {
        let per_call = self.limits().max_request_bytes_per_call;
        self.open_with_call_limit(connection, client, "/", per_call)
    }

    /// Like [`PayloadBudget::open`] on the mount at `mount` (its prefix) with another
    /// per-call limit (the mount's override). A reservation without a client counts under
    /// no per-client limit.
    pub(crate) fn open_with_call_limit(
        self: &Arc<Self>,
        connection: u64,
        client: Option<&str>,
        mount: &str,
        per_call: u64,
    ) -> Reservation {
        {
            let mut c = self.lock();
            c.reservations += 1;
            *c.per_connection_reservations.entry(connection).or_insert(0) += 1;
        }
        let client = client.map(str::to_owned);
        let mount = mount.to_owned();
        Reservation { budget: Arc::clone(self), connection, client, mount, bytes: 0, per_call, route_bytes: None }
    }

    /// A wait for bytes to be given back. Enable it before trying to reserve, so that a
    /// release between the attempt and the wait is not missed.
    pub(crate) fn released(&self) -> Notified<'_> {
        self.released.notified()
    }

    /// Current counters.
    pub fn counters(&self) -> BudgetCounters {
        let c = self.lock();
        let mut top_clients: Vec<ClientHolding> = c
            .per_client
            .iter()
            .map(|(client, bytes)| ClientHolding { client: client.clone(), bytes: *bytes })
            .collect();
        top_clients.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.client.cmp(&b.client)));
        top_clients.truncate(TOP_CLIENTS);
        BudgetCounters {
            aggregate_bytes: c.aggregate,
            per_connection_bytes: c.per_connection.clone(),
            per_connection_reservations: c.per_connection_reservations.clone(),
            per_mount_bytes: c.per_mount.clone(),
            reservations: c.reservations,
            top_clients,
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

    fn grow(&self, holder: &Reservation, bytes: u64) -> Result<(), BudgetExceeded> {
        let mut c = self.lock();
        let conn = c.per_connection.get(&holder.connection).copied().unwrap_or(0);
        if holder.bytes.saturating_add(bytes) > holder.per_call {
            return Err(BudgetExceeded::PerCall);
        }
        let client = holder.client.as_ref().map(|key| (key, c.per_client.get(key).copied().unwrap_or(0)));
        if client.is_some_and(|(_, held)| held.saturating_add(bytes) > c.limits.max_inflight_bytes_per_client) {
            return Err(BudgetExceeded::PerClient);
        }
        let mount = c.per_mount.get(&holder.mount).copied().unwrap_or(0);
        if c.shares.get(&holder.mount).is_some_and(|share| mount.saturating_add(bytes) > *share) {
            return Err(BudgetExceeded::PerMount);
        }
        if conn.saturating_add(bytes) > c.limits.max_request_bytes_per_connection {
            return Err(BudgetExceeded::PerConnection);
        }
        if c.aggregate.saturating_add(bytes) > c.limits.max_aggregate_inflight_bytes {
            return Err(BudgetExceeded::Aggregate);
        }
        c.aggregate += bytes;
        c.per_connection.insert(holder.connection, conn + bytes);
        if let Some((key, held)) = client {
            c.per_client.insert(key.clone(), held + bytes);
        }
        c.per_mount.insert(holder.mount.clone(), mount + bytes);
        Ok(())
    }

    /// Grows `holder` by as much of `bytes` as every limit has room for (at least one
    /// byte), or refuses with the first limit that has none. The room is read and taken
    /// under two locks: a holder that takes it in between makes this refuse, as if it had
    /// come first.
    fn grow_at_most(&self, holder: &Reservation, bytes: u64) -> Result<u64, BudgetExceeded> {
        let rooms = {
            let c = self.lock();
            let limits = &c.limits;
            let conn = c.per_connection.get(&holder.connection).copied().unwrap_or(0);
            let client = holder.client.as_ref().map(|key| c.per_client.get(key).copied().unwrap_or(0));
            let mount = c.per_mount.get(&holder.mount).copied().unwrap_or(0);
            [
                (BudgetExceeded::PerCall, holder.per_call.saturating_sub(holder.bytes)),
                (
                    BudgetExceeded::PerClient,
                    client.map_or(u64::MAX, |held| limits.max_inflight_bytes_per_client.saturating_sub(held)),
                ),
                (BudgetExceeded::PerMount, c.shares.get(&holder.mount).map_or(u64::MAX, |s| s.saturating_sub(mount))),
                (BudgetExceeded::PerConnection, limits.max_request_bytes_per_connection.saturating_sub(conn)),
                (BudgetExceeded::Aggregate, limits.max_aggregate_inflight_bytes.saturating_sub(c.aggregate)),
            ]
        };
        if let Some((full, _)) = rooms.iter().find(|(_, room)| *room == 0) {
            return Err(*full);
        }
        let granted = rooms.iter().fold(bytes, |granted, (_, room)| granted.min(*room));
        self.grow(holder, granted)?;
        Ok(granted)
    }

    fn shrink(&self, holder: &Reservation, bytes: u64) {
        if bytes == 0 {
            return;
        }
        {
            let mut c = self.lock();
            c.aggregate = c.aggregate.saturating_sub(bytes);
            release_from(&mut c.per_connection, &holder.connection, bytes);
            if let Some(key) = &holder.client {
                release_from(&mut c.per_client, key, bytes);
            }
            release_from(&mut c.per_mount, &holder.mount, bytes);
        }
        self.released.notify_waiters();
    }
}

/// Takes `bytes` off `key`'s count, forgetting the key at zero.
fn release_from<K: Eq + std::hash::Hash>(counts: &mut HashMap<K, u64>, key: &K, bytes: u64) {
    if let Some(held) = counts.get_mut(key) {
        *held = held.saturating_sub(bytes);
        if *held == 0 {
            counts.remove(key);
        }
    }
}

/// Bytes held by one request. Dropping it releases them.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<PayloadBudget>,
    connection: u64,
    /// The client key the bytes count under (subject, else IP); `None`: no per-client
    /// limit.
    client: Option<String>,
    /// The prefix of the request's mount: the bytes count under its share, if it has one.
    mount: String,
    bytes: u64,
    /// This request's per-call limit.
    per_call: u64,
    /// The bytes in flight on the request's route, for the metrics: follows `bytes`.
    route_bytes: Option<ByteGauge>,
}

impl Reservation {
    /// Reserves `bytes` more, or nothing if any limit would be crossed.
    pub(crate) fn try_grow(&mut self, bytes: u64) -> Result<(), BudgetExceeded> {
        self.budget.grow(self, bytes)?;
        self.count(bytes);
        Ok(())
    }

    /// Counts `bytes` also into `route_bytes`, the gauge of bytes in flight on the
    /// request's route, from now until they are released.
    pub(crate) fn counting_into(mut self, route_bytes: ByteGauge) -> Self {
        route_bytes.inc_by(self.bytes);
        self.route_bytes = Some(route_bytes);
        self
    }

    /// `bytes` more are held.
    fn count(&mut self, bytes: u64) {
        self.bytes += bytes;
        if let Some(gauge) = &self.route_bytes {
            gauge.inc_by(bytes);
        }
    }

    /// `bytes` fewer are held.
    fn uncount(&mut self, bytes: u64) {
        self.bytes -= bytes;
        if let Some(gauge) = &self.route_bytes {
            gauge.dec_by(bytes);
        }
    }

    /// Reserves as much of `bytes` as fits under every limit, at least one byte, and says
    /// how much; refuses (reserving nothing) when a limit is already full. A reader that
    /// may take any amount up to `bytes` (a WebSocket session, see
    /// `upstream/websocket/flight.rs`) uses it to read no more than there is room for.
    pub(crate) fn try_grow_at_most(&mut self, bytes: u64) -> Result<u64, BudgetExceeded> {
        let granted = self.budget.grow_at_most(self, bytes)?;
        self.count(granted);
        Ok(granted)
    }

    /// Reserves `bytes` more, waiting while a shared limit (client, connection, gateway)
    /// is full until someone gives bytes back, at most until `deadline`. The per-call
    /// limit is refused at once: only this request could free it.
    pub(crate) async fn grow_until(&mut self, bytes: u64, deadline: Instant) -> Result<(), BudgetExceeded> {
        let budget = Arc::clone(&self.budget);
        loop {
            let released = budget.released();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_grow(bytes) {
                Err(shared) if shared != BudgetExceeded::PerCall => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(shared);
                    }
                }
                outcome => return outcome,
            }
        }
    }

    /// Gives back what is held above `bytes`, keeping the reservation open.
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        let excess = self.bytes.saturating_sub(bytes);
        self.budget.shrink(self, excess);
        self.uncount(excess);
    }

    /// The budget this reservation draws on.
    pub(crate) fn budget(&self) -> &Arc<PayloadBudget> {
        &self.budget
    }

    #[cfg(test)]
    /// Releases `bytes` (at most what is held) while keeping the reservation open.
    pub(crate) fn release(&mut self, bytes: u64) {
        self.shrink_to(self.bytes.saturating_sub(bytes));
    }

    /// Bytes currently held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.shrink(self, self.bytes);
        self.uncount(self.bytes);
        let idle = {
            let mut c = self.budget.lock();
            c.reservations = c.reservations.saturating_sub(1);
            release_from(&mut c.per_connection_reservations, &self.connection, 1);
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
            max_inflight_bytes_per_client: all,
        }
    }

    #[test]
    fn each_limit_refuses_the_byte_that_crosses_it() {
        let budget = PayloadBudget::new(limits(10, 15, 20), MountShares::new());
        let mut a = budget.open(1, None);
        a.try_grow(10).unwrap();
        assert_eq!(a.try_grow(1), Err(BudgetExceeded::PerCall));
        let mut b = budget.open(1, None);
        b.try_grow(5).unwrap();
        assert_eq!(b.try_grow(1), Err(BudgetExceeded::PerConnection));
        let mut c = budget.open(2, None);
        c.try_grow(5).unwrap();
        assert_eq!(c.try_grow(1), Err(BudgetExceeded::Aggregate));
        assert_eq!(budget.counters().aggregate_bytes, 20);
        drop((a, b, c));
        assert_eq!(budget.counters(), BudgetCounters::default());
    }

    #[test]
    fn one_client_cannot_cross_its_limit_and_the_admin_view_ranks_holders() {
        let budget = PayloadBudget::new(
            PayloadLimits { max_inflight_bytes_per_client: 10, ..limits(10, 100, 100) },
            MountShares::new(),
        );
        let mut a = budget.open(1, Some("10.0.0.1"));
        let mut b = budget.open(2, Some("10.0.0.1"));
        a.try_grow(6).unwrap();
        assert_eq!(b.try_grow(5), Err(BudgetExceeded::PerClient), "across requests and connections");
        b.try_grow(4).unwrap();
        let mut other = budget.open(1, Some("10.0.0.2"));
        other.try_grow(3).unwrap();
        let mut anonymous = budget.open(1, None);
        anonymous.try_grow(10).unwrap();
        let top = budget.counters().top_clients;
        assert_eq!(
            top,
            vec![
                ClientHolding { client: "10.0.0.1".into(), bytes: 10 },
                ClientHolding { client: "10.0.0.2".into(), bytes: 3 },
            ]
        );
        a.shrink_to(2);
        b.try_grow(4).unwrap();
        drop((a, b, other, anonymous));
        assert_eq!(budget.counters(), BudgetCounters::default());
    }

    #[test]
    fn growing_at_most_takes_what_every_limit_has_room_for() {
        let budget = PayloadBudget::new(
            PayloadLimits { max_inflight_bytes_per_client: 12, ..limits(10, 15, 20) },
            MountShares::new(),
        );
        let mut a = budget.open(1, Some("c"));
        assert_eq!(a.try_grow_at_most(100), Ok(10), "the per-call limit");
        assert_eq!(a.try_grow_at_most(1), Err(BudgetExceeded::PerCall));
        let mut b = budget.open(1, Some("c"));
        assert_eq!(b.try_grow_at_most(100), Ok(2), "the client's limit");
        assert_eq!(b.try_grow_at_most(1), Err(BudgetExceeded::PerClient));
        let mut other = budget.open(1, Some("d"));
        assert_eq!(other.try_grow_at_most(100), Ok(3), "the connection's limit");
        let mut elsewhere = budget.open(2, None);
        assert_eq!(elsewhere.try_grow_at_most(100), Ok(5), "the gateway's limit");
        assert_eq!(elsewhere.try_grow_at_most(1), Err(BudgetExceeded::Aggregate));
        assert_eq!(budget.counters().aggregate_bytes, 20);
        drop((a, b, other, elsewhere));
        assert_eq!(budget.counters(), BudgetCounters::default());
    }

    fn shares(of: &[(&str, u64)]) -> MountShares {
        of.iter().map(|(prefix, share)| (prefix.to_string(), *share)).collect()
    }

    #[test]
    fn a_mount_cannot_cross_its_share_and_other_mounts_keep_the_rest() {
        let budget = PayloadBudget::new(limits(100, 1000, 1000), shares(&[("/stream", 10)]));
        let mut a = budget.open_with_call_limit(1, Some("c"), "/stream", 100);
        let mut b = budget.open_with_call_limit(2, Some("d"), "/stream", 100);
        a.try_grow(6).unwrap();
        assert_eq!(b.try_grow(5), Err(BudgetExceeded::PerMount), "across clients and connections");
        assert_eq!(b.bytes(), 0, "all or nothing");
        b.try_grow(4).unwrap();
        assert_eq!(b.try_grow_at_most(1), Err(BudgetExceeded::PerMount));
        let mut api = budget.open_with_call_limit(1, Some("c"), "/api", 100);
        api.try_grow(50).unwrap();
        let counters = budget.counters();
        assert_eq!(counters.per_mount_bytes, HashMap::from([("/stream".into(), 10), ("/api".into(), 50)]));
        drop(a);
        assert_eq!(b.try_grow_at_most(100), Ok(6), "released on drop: the share has room again");
        drop((b, api));
        assert_eq!(budget.counters(), BudgetCounters::default());
    }

    #[test]
    fn new_limits_and_shares_apply_to_the_next_growth_and_held_bytes_stay_held() {
        let budget = PayloadBudget::new(limits(100, 1000, 1000), shares(&[("/s", 10)]));
        let mut held = budget.open_with_call_limit(1, None, "/s", 100);
        held.try_grow(8).unwrap();
        budget.set_limits(limits(100, 1000, 1000), shares(&[("/s", 4)]));
        assert_eq!(held.bytes(), 8, "a lower share takes nothing back");
        assert_eq!(held.try_grow(1), Err(BudgetExceeded::PerMount));
        budget.set_limits(limits(100, 1000, 9), MountShares::new());
        assert_eq!(budget.limits(), limits(100, 1000, 9));
        held.try_grow(1).unwrap();
        assert_eq!(held.try_grow(1), Err(BudgetExceeded::Aggregate), "the share is gone, the new aggregate holds");
        drop(held);
        assert_eq!(budget.counters(), BudgetCounters::default());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_waiting_for_its_mount_share_proceeds_when_a_reload_raises_it() {
        let budget = PayloadBudget::new(limits(100, 1000, 1000), shares(&[("/s", 10)]));
        let mut full = budget.open_with_call_limit(1, None, "/s", 100);
        full.try_grow(10).unwrap();
        let mut waiting = budget.open_with_call_limit(2, None, "/s", 100);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let grown = tokio::spawn(async move { waiting.grow_until(5, deadline).await.map(|()| waiting) });
        budget.set_limits(limits(100, 1000, 1000), shares(&[("/s", 20)]));
        let waiting = grown.await.unwrap().expect("room made by the reload");
        assert_eq!(budget.counters().per_mount_bytes["/s"], 15);
        drop((full, waiting));
        assert_eq!(budget.counters(), BudgetCounters::default());
    }

    #[test]
    fn release_never_goes_below_zero() {
        let budget = PayloadBudget::new(limits(10, 10, 10), MountShares::new());
        let mut a = budget.open(1, None);
        a.try_grow(4).unwrap();
        a.release(100);
        assert_eq!(a.bytes(), 0);
        assert_eq!(budget.counters().aggregate_bytes, 0);
    }

    #[test]
    fn reservations_are_counted_per_connection_and_bytes_per_route() {
        let budget = PayloadBudget::new(limits(100, 100, 100), MountShares::new());
        let route = ByteGauge::default();
        let mut a = budget.open(1, None).counting_into(route.clone());
        let mut b = budget.open(1, None).counting_into(route.clone());
        let c = budget.open(2, None);
        a.try_grow(10).unwrap();
        b.try_grow_at_most(5).unwrap();
        let counters = budget.counters();
        assert_eq!(counters.per_connection_reservations, HashMap::from([(1, 2), (2, 1)]));
        assert_eq!(route.get(), 15);
        a.shrink_to(4);
        assert_eq!(route.get(), 9);
        drop((a, c));
        assert_eq!(route.get(), 5);
        assert_eq!(budget.counters().per_connection_reservations, HashMap::from([(1, 1)]));
        drop(b);
        assert_eq!(route.get(), 0);
        assert!(budget.counters().per_connection_reservations.is_empty());
    }

    proptest! {
        #[test]
        fn concurrent_reserve_and_release_keep_counters_consistent(
            ops in proptest::collection::vec(
                proptest::collection::vec((0u64..3, 1u64..400, any::<bool>()), 1..40), 1..6)
        ) {
            let budget = PayloadBudget::new(limits(1000, 1500, 2500), MountShares::new());
            std::thread::scope(|scope| {
                for thread_ops in &ops {
                    let budget = Arc::clone(&budget);
                    scope.spawn(move || {
                        let mut held: Vec<Reservation> = Vec::new();
                        for &(conn, bytes, release) in thread_ops {
                            let mut r = budget.open(conn, Some(if conn % 2 == 0 { "a" } else { "b" }));
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
