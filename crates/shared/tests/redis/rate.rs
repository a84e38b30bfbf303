//! Shared rate limits across replicas: never more than the GCRA allows, at most the
//! unspent leases fewer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_shared::{RateDecision, SharedRate};

use crate::common::{replicas, within};

/// The hammered limit: 100 per 10 s, a token every 100 ms, burst 100.
const COUNT: u32 = 100;
const PER: Duration = Duration::from_secs(10);
const INTERVAL: Duration = Duration::from_millis(100);

/// Tallies of decisions.
#[derive(Default)]
struct Tally {
    /// `Allowed` answers.
    allowed: AtomicU32,
    /// `Limited` answers, each checked to carry a retry time within one interval.
    limited: AtomicU32,
    /// `Unavailable` answers.
    unavailable: AtomicU32,
}

/// 20 clients per replica, each checking `key` every 5 ms (some 4,000 requests a second
/// per replica) until `run` has passed since `start`.
async fn hammer(rates: &[SharedRate], start: Instant, run: Duration) -> Tally {
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for rate in rates {
        for _ in 0..20 {
            let (rate, tally) = (rate.clone(), Arc::clone(&tally));
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < run {
                    let counter = match rate.check("client").await {
                        RateDecision::Allowed => &tally.allowed,
                        RateDecision::Limited { retry_after } => {
                            assert!(retry_after > Duration::ZERO && retry_after <= INTERVAL, "{retry_after:?}");
                            &tally.limited
                        }
                        RateDecision::Unavailable => &tally.unavailable,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
    }
    for task in tasks {
        within(task).await.unwrap();
    }
    Arc::into_inner(tally).expect("every task has ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hammering_one_key_admit_the_limit_less_at_most_their_leases() {
    // The burst, then 15 more emission intervals.
    const RUN: Duration = Duration::from_millis(1500);
    let stores = replicas(3).await;
    let rates: Vec<SharedRate> =
        stores.iter().map(|store| SharedRate::new(store.clone(), "hammer", COUNT, PER).unwrap()).collect();
    let max_lease = rates[0].max_lease();
    assert_eq!(max_lease, 6);

    let start = Instant::now();
    let tally = hammer(&rates, start, RUN).await;
    let elapsed = start.elapsed();
    assert!(elapsed < PER, "the test must run well within one period");

    let allowed = tally.allowed.into_inner();
    // Never more than the GCRA grants: the burst, then a token per interval elapsed
    // (plus one for an interval begun).
    let granted = COUNT + (elapsed.as_micros() / INTERVAL.as_micros()) as u32 + 1;
    assert!(allowed <= granted, "{allowed} admitted, at most {granted} granted");
    // At most the unspent leases fewer (and a token or two not yet asked for at the end).
    let demanded = COUNT + (RUN.as_micros() / INTERVAL.as_micros()) as u32;
    let floor = demanded - max_lease * 3 - 2;
    assert!(allowed >= floor, "{allowed} admitted, at least {floor} expected");
    assert_eq!(tally.unavailable.into_inner(), 0);
    assert!(tally.limited.into_inner() > 0);
    for store in &stores {
        assert!(store.health().is_shared());
        assert_eq!(store.stats().degraded_transitions, 0);
    }
}

#[tokio::test]
async fn a_small_limit_alternated_across_replicas_admits_exactly_its_count() {
    let stores = replicas(3).await;
    let rates: Vec<SharedRate> = stores
        .iter()
        .map(|store| SharedRate::new(store.clone(), "small", 5, Duration::from_secs(60)).unwrap())
        .collect();
    assert_eq!(rates[0].max_lease(), 1);
    let mut decisions = Vec::new();
    for round in 0..15 {
        decisions.push(within(rates[round % 3].check("user")).await);
    }
    assert!(decisions[..5].iter().all(|decision| *decision == RateDecision::Allowed), "{decisions:?}");
    for decision in &decisions[5..] {
        let RateDecision::Limited { retry_after } = decision else { panic!("{decisions:?}") };
        assert!(*retry_after > Duration::ZERO && *retry_after <= Duration::from_secs(12), "{retry_after:?}");
    }
    // Keys are independent, and so are limits of another name.
    assert_eq!(within(rates[1].check("other user")).await, RateDecision::Allowed);
    let other = SharedRate::new(stores[2].clone(), "another limit", 5, Duration::from_secs(60)).unwrap();
    assert_eq!(within(other.check("user")).await, RateDecision::Allowed);
}

#[tokio::test]
async fn local_state_is_kept_while_in_use() {
    let stores = replicas(1).await;
    let rate = SharedRate::new(stores[0].clone(), "state", 1000, Duration::from_secs(1)).unwrap();
    for key in ["a", "b", "c"] {
        assert_eq!(within(rate.check(key)).await, RateDecision::Allowed);
    }
    assert_eq!(rate.tracked_keys(), 3);
    assert_eq!(rate.forget_idle(), 0, "keys seen just now are not idle");
    assert_eq!(rate.tracked_keys(), 3);
}

#[tokio::test]
async fn limits_that_cannot_be_enforced_are_refused() {
    let stores = replicas(1).await;
    assert!(SharedRate::new(stores[0].clone(), "zero", 0, Duration::from_secs(1)).is_err());
    assert!(SharedRate::new(stores[0].clone(), "zero", 1, Duration::ZERO).is_err());
}
