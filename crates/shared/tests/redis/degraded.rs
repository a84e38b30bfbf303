//! Degraded mode, with Redis cut off by a proxy (Redis itself untouched): no call waits
//! much beyond the command timeout, the store degrades once, fails fast meanwhile, and
//! is shared again soon after Redis answers.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use weir_shared::{RateDecision, SharedConfig, SharedError, SharedRate, SharedStore};

use crate::common::{config, fresh_prefix, redis_addr, redis_url, within};
use crate::proxy::{Mode, Proxy};

const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);

/// What a loaded two-core machine may add to a timeout.
const SLACK: Duration = Duration::from_millis(250);

/// A store reaching Redis through `proxy`.
async fn store_behind(proxy: &Proxy) -> SharedStore {
    let config = SharedConfig {
        command_timeout: COMMAND_TIMEOUT,
        connect_timeout: Duration::from_millis(500),
        ..config(&proxy.url(), &fresh_prefix(), 0)
    };
    SharedStore::connect(config).await.unwrap()
}

/// Runs 8 checks at once; each one's decision and how long it took.
async fn checks(rate: &SharedRate) -> Vec<(RateDecision, Duration)> {
    join_all((0..8).map(|_| async {
        let start = Instant::now();
        (rate.check("client").await, start.elapsed())
    }))
    .await
}

/// Cuts Redis off in `mode`, checks the store degrades once and fails fast, then
/// resumes and checks it recovers.
async fn cut_and_resume(mode: Mode) {
    let proxy = Proxy::start(redis_addr()).await;
    let store = store_behind(&proxy).await;
    // Burst 20: a lease of one token, so every check asks Redis.
    let rate = SharedRate::new(store.clone(), "cut", 20, Duration::from_secs(1)).unwrap();
    assert_eq!(within(rate.check("client")).await, RateDecision::Allowed);

    proxy.set(mode);
    for (decision, took) in checks(&rate).await {
        assert_eq!(decision, RateDecision::Unavailable);
        assert!(took <= COMMAND_TIMEOUT + SLACK, "a check waited {took:?}");
    }
    // The refill's own timeout, which degrades the store, may end just after its waiters'.
    let mut health = store.watch_health();
    within(health.wait_for(|health| !health.is_shared())).await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.degraded_transitions, 1);
    assert!(stats.command_failures >= 1);

    // Degraded: nothing is attempted, so nothing waits.
    for (decision, took) in checks(&rate).await {
        assert_eq!(decision, RateDecision::Unavailable);
        assert!(took < Duration::from_millis(50), "a check waited {took:?} on a degraded store");
    }
    assert_eq!(store.publish("channel", "lost").await, Err(SharedError::Unavailable));
    assert_eq!(store.stats().commands_skipped, stats.commands_skipped + 1);

    proxy.set(Mode::Pass);
    let recovered = tokio::time::timeout(Duration::from_secs(3), health.wait_for(|health| health.is_shared())).await;
    assert!(recovered.is_ok(), "the store did not recover within 3 s");
    assert_eq!(within(rate.check("client")).await, RateDecision::Allowed);
    assert_eq!(store.stats().degraded_transitions, 1, "one transition for the whole outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_redis_degrades_once_and_recovers() {
    cut_and_resume(Mode::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_costs_a_call_at_most_the_command_timeout() {
    cut_and_resume(Mode::Blackhole).await;
}

#[tokio::test]
async fn leased_tokens_are_spent_while_degraded() {
    let proxy = Proxy::start(redis_addr()).await;
    let store = store_behind(&proxy).await;
    // Burst 64: leases of up to 4 tokens, grown by a few fast checks.
    let rate = SharedRate::new(store.clone(), "leased", 64, Duration::from_secs(60)).unwrap();
    for _ in 0..8 {
        assert_eq!(within(rate.check("client")).await, RateDecision::Allowed);
    }
    proxy.set(Mode::Refuse);
    // What the lease holds was debited: it is spent, and then no more.
    let mut allowed = 0;
    let last = loop {
        match within(rate.check("client")).await {
            RateDecision::Allowed => allowed += 1,
            other => break other,
        }
        assert!(allowed <= rate.max_lease(), "more admitted than a lease holds");
    };
    assert_eq!(last, RateDecision::Unavailable);
}

#[tokio::test]
async fn the_store_refuses_to_start_without_redis_and_never_shows_the_password() {
    let proxy = Proxy::start(redis_addr()).await;
    let with_password = |url: &str| SharedConfig {
        url: url.replace("redis://", "redis://:hunter2@"),
        connect_timeout: Duration::from_millis(300),
        ..config(url, &fresh_prefix(), 0)
    };

    proxy.set(Mode::Refuse);
    let refused = SharedStore::connect(with_password(&proxy.url())).await.unwrap_err();
    assert!(matches!(refused, SharedError::Connect { .. }), "{refused}");

    proxy.set(Mode::Blackhole);
    let start = Instant::now();
    let silent = SharedStore::connect(with_password(&proxy.url())).await.unwrap_err();
    assert!(matches!(silent, SharedError::Unreachable { .. }), "{silent}");
    assert!(start.elapsed() <= Duration::from_millis(300) + SLACK);

    // Redis answers, but refuses the password (the test Redis has none).
    proxy.set(Mode::Pass);
    let denied = SharedStore::connect(with_password(&proxy.url())).await.unwrap_err();
    for error in [refused, silent, denied] {
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(":***@"), "{text}");
    }
}

#[tokio::test]
async fn a_rediss_url_speaks_tls_through_ring() {
    // The test Redis speaks plain TCP: the TLS handshake fails (Redis waits for a command
    // that never ends), as an error, so rustls had its provider (it panics without one)
    // and sent its ClientHello.
    let url = redis_url().replace("redis://", "rediss://");
    let config = SharedConfig { connect_timeout: Duration::from_millis(300), ..config(&url, &fresh_prefix(), 0) };
    let error = SharedStore::connect(config).await.unwrap_err();
    assert!(matches!(error, SharedError::Connect { .. } | SharedError::Unreachable { .. }), "{error}");
}
