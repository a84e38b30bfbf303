//! Shared counts: one cap across replicas, slots freed on release or drop, and a
//! crashed replica's slots counting for at most the ttl.

use std::time::{Duration, Instant};

use weir_shared::{CountRefusal, SharedConfig, SharedCount, SharedStore};

use crate::common::{config, fresh_prefix, redis_url, replicas, within};

/// Awaits `count`'s live slots of `key` reaching `expected` (Redis offers no event for
/// a release done in a background task, so this polls, bounded by `within`).
async fn live_becomes(count: &SharedCount, key: &str, expected: u32) {
    within(async {
        while count.live(key).await.unwrap() != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_cap_holds_across_replicas_and_frees_on_release_and_drop() {
    let stores = replicas(3).await;
    let ttl = Duration::from_secs(6);
    let counts: Vec<SharedCount> =
        stores.iter().map(|store| SharedCount::new(store.clone(), "ws", ttl).unwrap()).collect();
    let mut slots = Vec::new();
    for count in &counts {
        slots.push(within(count.try_acquire("alice", 3)).await.expect("under the cap"));
    }
    assert_eq!(within(counts[0].try_acquire("alice", 3)).await.unwrap_err(), CountRefusal::Full);
    assert_eq!(within(counts[1].try_acquire("alice", 3)).await.unwrap_err(), CountRefusal::Full);
    assert_eq!(counts[0].live("alice").await.unwrap(), 3);
    assert!(within(counts[0].try_acquire("bob", 3)).await.is_ok(), "keys are independent");

    within(slots.pop().unwrap().release()).await.unwrap();
    assert_eq!(counts[0].live("alice").await.unwrap(), 2);
    slots.push(within(counts[0].try_acquire("alice", 3)).await.expect("a released slot is free"));
    assert_eq!(within(counts[2].try_acquire("alice", 3)).await.unwrap_err(), CountRefusal::Full);

    drop(slots.remove(1));
    live_becomes(&counts[0], "alice", 2).await;
    assert_eq!(counts[1].held(), 0);
    assert!(within(counts[2].try_acquire("alice", 3)).await.is_ok(), "a dropped slot is free");
    assert_eq!(within(counts[2].try_acquire("alice", 0)).await.unwrap_err(), CountRefusal::Full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replicas_slots_stop_counting_after_the_ttl() {
    let ttl = Duration::from_millis(600);
    let prefix = fresh_prefix();
    let settings = |replica| SharedConfig {
        command_timeout: Duration::from_millis(200),
        ..config(&redis_url(), &prefix, replica)
    };
    let survivor = SharedStore::connect(settings(0)).await.unwrap();
    let count = SharedCount::new(survivor, "ws", ttl).unwrap();
    let kept = within(count.try_acquire("carol", 3)).await.unwrap();

    // The crashed replica: its runtime, and with it its renewal task and connection,
    // ends with its slots still held.
    let started = Instant::now();
    let crashed = settings(1);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = SharedStore::connect(crashed).await.unwrap();
            let count = SharedCount::new(store, "ws", ttl).unwrap();
            for _ in 0..2 {
                std::mem::forget(count.try_acquire("carol", 3).await.unwrap());
            }
        });
    })
    .join()
    .unwrap();
    assert_eq!(within(count.try_acquire("carol", 3)).await.unwrap_err(), CountRefusal::Full);

    live_becomes(&count, "carol", 1).await;
    let gone_after = started.elapsed();
    assert!(gone_after >= ttl - Duration::from_millis(20), "the crashed slots counted for {gone_after:?}");
    assert!(gone_after < ttl * 3, "the crashed slots counted for {gone_after:?}");
    // The survivor's slot, acquired first and now older than the ttl, still counts: it
    // was renewed (unrenewed, it would have gone before the crashed ones).
    assert_eq!(count.live("carol").await.unwrap(), 1);
    let again = within(count.try_acquire("carol", 3)).await.expect("room again");
    drop((kept, again));
}

#[tokio::test]
async fn a_ttl_too_short_for_the_command_timeout_is_refused() {
    let stores = replicas(1).await;
    assert!(SharedCount::new(stores[0].clone(), "ws", Duration::from_secs(1)).is_err());
}
