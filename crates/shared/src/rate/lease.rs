//! One key's local token lease, as a state machine with no I/O and no clock of its own
//! (every step is given `now`), so that its rules are tested alone. The owner
//! (`super::RateInner`) runs the refills it asks for and reports their outcome.
//!
//! The rules, each chosen so that a replica never spends a token Redis did not grant:
//! - a request takes a leased token if there is one (no I/O); tokens unspent
//!   [`LEASE_TTL`] after the last refill are dropped, and the lease size halves;
//! - a lease of size 2 or more that falls below half is topped up in the background;
//!   a lease of size 1 never is (a small limit spends nothing ahead of demand);
//! - a refill that finds the lease emptied within [`FAST`] of the previous one doubles
//!   the size, up to the limit's maximum ([`max_lease`]);
//! - at most one refill per key is in flight; requests that find the lease empty wait
//!   for it, and after a grant of nothing the key answers `Limited` locally until the
//!   retry time Redis gave (no token can exist before then, on any replica).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long leased tokens stay spendable after the refill that brought them.
pub(super) const LEASE_TTL: Duration = Duration::from_secs(1);

/// A refill this soon after the previous one means demand outruns the lease: it doubles.
const FAST: Duration = Duration::from_millis(250);

/// The largest lease of a limit of `burst` tokens: a sixteenth of the burst, between 1
/// and 64. A limit whose burst is under 32 (10 per minute, say) leases one token at a
/// time, only on demand.
pub(super) fn max_lease(burst: u32) -> u32 {
    (burst / 16).clamp(1, 64)
}

/// What Redis granted to one refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grant {
    /// Tokens debited for this replica (0 to the amount asked).
    pub granted: u32,
    /// Time until one more token fits, after this grant.
    pub wait: Duration,
}

/// A refill the lease asks its owner to run.
#[derive(Debug)]
pub(super) struct Refill {
    /// Tokens to ask Redis for.
    pub amount: u32,
    /// Dropped when the refill has completed, which wakes the requests waiting for it.
    pub done: watch::Sender<()>,
}

/// What one request gets from the lease.
#[derive(Debug)]
pub(super) enum Turn {
    /// Admitted with a leased token; run the background refill, if any.
    Admit(Option<Refill>),
    /// Redis said no token fits before this long.
    Limited(Duration),
    /// The refill this request waited for failed, or the store is degraded.
    Unavailable,
    /// No token: run the refill, if any, and wait for `done` to change, then try again.
    Wait {
        /// The refill to start, unless one is already in flight.
        refill: Option<Refill>,
        /// Closed when the refill in flight completes.
        done: watch::Receiver<()>,
    },
}

/// One key's lease on one replica.
#[derive(Debug)]
pub(super) struct Lease {
    /// Tokens already debited in Redis and not yet spent: each admits one request here.
    tokens: u32,
    /// When unspent tokens are dropped (the last refill plus [`LEASE_TTL`]), bounding
    /// how long after its grant a token can be spent.
    expires: Instant,
    /// The amount a refill tops the lease up to; adapts to this key's local demand.
    size: u32,
    /// When the last refill brought tokens, to tell fast demand (see [`FAST`]).
    filled_at: Option<Instant>,
    /// While a refill is in flight, what its waiters watch; `None` otherwise.
    refill: Option<watch::Receiver<()>>,
    /// Until when Redis said no token fits: answered locally until then.
    limited_until: Option<Instant>,
    /// Whether the last refill failed, so its waiters answer `Unavailable`.
    failed: bool,
    /// The last request, for forgetting idle keys.
    seen: Instant,
}

impl Lease {
    /// An empty lease of size 1.
    pub(super) fn new(now: Instant) -> Self {
        Lease {
            tokens: 0,
            expires: now,
            size: 1,
            filled_at: None,
            refill: None,
            limited_until: None,
            failed: false,
            seen: now,
        }
    }

    /// One request's turn. `shared`: whether the store is up (no refill is started
    /// otherwise); `after_wait`: whether this request already waited for a refill.
    pub(super) fn take(&mut self, now: Instant, max: u32, shared: bool, after_wait: bool) -> Turn {
        self.seen = now;
        self.drop_expired(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            let low = self.size >= 2 && self.tokens * 2 < self.size;
            let refill = (low && shared && self.refill.is_none()).then(|| self.start_refill(now, max));
            return Turn::Admit(refill);
        }
        if let Some(until) = self.limited_until.filter(|until| *until > now) {
            return Turn::Limited(until - now);
        }
        if let Some(done) = &self.refill {
            return Turn::Wait { refill: None, done: done.clone() };
        }
        if !shared || (after_wait && self.failed) {
            return Turn::Unavailable;
        }
        let refill = self.start_refill(now, max);
        let done = refill.done.subscribe();
        Turn::Wait { refill: Some(refill), done }
    }

    /// Records a refill's outcome (`None`: it failed). The caller then drops the
    /// refill's `done`, waking its waiters.
    pub(super) fn complete(&mut self, now: Instant, outcome: Option<Grant>) {
        self.refill = None;
        let Some(grant) = outcome else {
            self.failed = true;
            return;
        };
        self.failed = false;
        if grant.granted > 0 {
            self.tokens += grant.granted;
            self.expires = now + LEASE_TTL;
            self.filled_at = Some(now);
        } else {
            self.limited_until = Some(now + grant.wait);
        }
    }

    /// Whether the lease holds nothing worth keeping: no refill in flight, no spendable
    /// token, no limit in force, and no request for a lease TTL.
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        self.refill.is_none()
            && (self.tokens == 0 || now >= self.expires)
            && self.limited_until.is_none_or(|until| until <= now)
            && now.duration_since(self.seen) >= LEASE_TTL
    }

    /// Drops tokens past their TTL; the lease was too large for the demand, so halve it.
    fn drop_expired(&mut self, now: Instant) {
        if self.tokens > 0 && now >= self.expires {
            self.tokens = 0;
            self.size = (self.size / 2).max(1);
        }
    }

    /// Starts a refill topping the lease up to its size, doubled first if demand is fast.
    fn start_refill(&mut self, now: Instant, max: u32) -> Refill {
        if self.filled_at.is_some_and(|at| now.duration_since(at) < FAST) {
            self.size = self.size.saturating_mul(2);
        }
        self.size = self.size.min(max).max(1);
        let (done, watching) = watch::channel(());
        self.refill = Some(watching);
        // At least 1: called with no token, or with fewer than half the size.
        Refill { amount: self.size.saturating_sub(self.tokens).max(1), done }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(granted: u32) -> Option<Grant> {
        Some(Grant { granted, wait: Duration::from_secs(3) })
    }

    /// Takes a turn that must start a refill, and completes it with `granted`.
    fn refill(lease: &mut Lease, now: Instant, max: u32, granted: u32) -> u32 {
        let Turn::Wait { refill: Some(refill), .. } = lease.take(now, max, true, false) else {
            panic!("expected a refill")
        };
        lease.complete(now, grant(granted));
        refill.amount
    }

    #[test]
    fn max_lease_is_a_sixteenth_of_the_burst() {
        assert_eq!(max_lease(10), 1);
        assert_eq!(max_lease(31), 1);
        assert_eq!(max_lease(32), 2);
        assert_eq!(max_lease(100), 6);
        assert_eq!(max_lease(1_000_000), 64);
    }

    #[test]
    fn a_lease_of_one_never_refills_ahead_of_demand() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        assert_eq!(refill(&mut lease, now, 1, 1), 1);
        assert!(matches!(lease.take(now, 1, true, true), Turn::Admit(None)));
        // Fast demand cannot grow it past the maximum of 1.
        assert_eq!(refill(&mut lease, now, 1, 1), 1);
    }

    #[test]
    fn fast_demand_doubles_the_lease_up_to_its_maximum() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        let mut amounts = Vec::new();
        for _ in 0..5 {
            let amount = refill(&mut lease, now, 6, u32::MAX / 8);
            amounts.push(amount);
            lease.tokens = 0;
        }
        assert_eq!(amounts, [1, 2, 4, 6, 6]);
    }

    #[test]
    fn below_half_a_background_refill_tops_the_lease_up() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        lease.size = 4;
        assert_eq!(refill(&mut lease, now, 4, 4), 4);
        let later = now + FAST;
        assert!(matches!(lease.take(later, 4, true, false), Turn::Admit(None)));
        assert!(matches!(lease.take(later, 4, true, false), Turn::Admit(None)));
        let Turn::Admit(Some(background)) = lease.take(later, 4, true, false) else { panic!("expected a top-up") };
        assert_eq!(background.amount, 3);
        // One refill in flight at most: the last token goes, then requests wait for it.
        assert!(matches!(lease.take(later, 4, true, false), Turn::Admit(None)));
        assert!(matches!(lease.take(later, 4, true, false), Turn::Wait { refill: None, .. }));
        lease.complete(later, None);
        // None is started while the store is degraded.
        assert!(matches!(lease.take(later, 4, false, false), Turn::Unavailable));
    }

    #[test]
    fn unspent_tokens_expire_and_halve_the_lease() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        lease.size = 8;
        refill(&mut lease, now, 8, 8);
        let later = now + LEASE_TTL;
        assert!(lease.is_idle(later));
        assert!(matches!(lease.take(later, 8, true, false), Turn::Wait { refill: Some(Refill { amount: 4, .. }), .. }));
    }

    #[test]
    fn a_grant_of_nothing_limits_locally_until_the_retry_time() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        refill(&mut lease, now, 4, 0);
        let Turn::Limited(wait) = lease.take(now + Duration::from_secs(1), 4, true, false) else { panic!() };
        assert_eq!(wait, Duration::from_secs(2));
        assert!(!lease.is_idle(now + Duration::from_secs(2)));
        assert!(lease.is_idle(now + Duration::from_secs(3)));
        assert!(matches!(lease.take(now + Duration::from_secs(3), 4, true, false), Turn::Wait { .. }));
    }

    #[test]
    fn waiters_of_a_failed_refill_are_unavailable_and_new_requests_retry() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        let Turn::Wait { refill: Some(refill), done } = lease.take(now, 4, true, false) else { panic!() };
        lease.complete(now, None);
        drop(refill);
        assert!(done.has_changed().is_err(), "dropping the refill wakes its waiters");
        assert!(matches!(lease.take(now, 4, true, true), Turn::Unavailable));
        assert!(matches!(lease.take(now, 4, true, false), Turn::Wait { refill: Some(_), .. }));
    }
}
