//! The Lua scripts alone, called directly on Redis: what they grant, the expiries they
//! set, the waits they report.

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script};

use crate::common::{fresh_prefix, redis_url};

const GCRA: &str = include_str!("../../src/rate/gcra.lua");
const EXPIRING: &str = include_str!("../../src/store/expiring.lua");

/// µs per token of the limits below: 1 s.
const T: u64 = 1_000_000;

async fn connection() -> MultiplexedConnection {
    let client = redis::Client::open(redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Asks the GCRA script for `k` tokens of `key` under a burst of `burst` tokens of `T`.
async fn take(connection: &mut MultiplexedConnection, key: &str, burst: u64, k: u32) -> (u32, u64) {
    Script::new(GCRA).key(key).arg(T).arg(burst * T).arg(k).invoke_async(connection).await.unwrap()
}

async fn pttl(connection: &mut MultiplexedConnection, key: &str) -> i64 {
    connection.pttl(key).await.unwrap()
}

#[tokio::test]
async fn gcra_grants_what_fits_sets_the_expiry_and_reports_the_wait() {
    let mut connection = connection().await;
    let key = format!("{}:rate:script:k", fresh_prefix());

    assert_eq!(take(&mut connection, &key, 5, 3).await, (3, 0), "3 of a burst of 5 fit");
    let expiry = pttl(&mut connection, &key).await;
    assert!((2_900..=3_000).contains(&expiry), "the key expires at its TAT, 3 s: {expiry} ms");

    let (granted, wait) = take(&mut connection, &key, 5, 3).await;
    assert_eq!(granted, 2, "a partial grant: only 2 more fit");
    assert!((T - 100_000..=T).contains(&wait), "the next token in about 1 s: {wait} µs");
    let expiry = pttl(&mut connection, &key).await;
    assert!((4_900..=5_000).contains(&expiry), "{expiry} ms");

    let (granted, retry) = take(&mut connection, &key, 5, 1).await;
    assert_eq!(granted, 0);
    assert!(retry > 0 && retry <= wait, "Retry-After: {retry} µs");
    assert!(pttl(&mut connection, &key).await <= expiry, "a refusal does not move the TAT");
}

#[tokio::test]
async fn gcra_treats_a_past_tat_as_now() {
    let mut connection = connection().await;
    let key = format!("{}:rate:script:past", fresh_prefix());
    let _: () = connection.set(&key, "1000").await.unwrap();
    assert_eq!(take(&mut connection, &key, 4, 9).await.0, 4, "a full burst after idleness, no more");
}

#[tokio::test]
async fn expiring_caps_renews_and_never_revives() {
    let mut connection = connection().await;
    let key = format!("{}:count:script:k", fresh_prefix());
    let script = Script::new(EXPIRING);
    let add = |member: &'static str| {
        let mut invocation = script.key(&key);
        invocation.arg("add").arg(member).arg(60_000).arg(2);
        invocation
    };
    assert_eq!(add("a").invoke_async::<u32>(&mut connection).await.unwrap(), 1);
    assert_eq!(add("b").invoke_async::<u32>(&mut connection).await.unwrap(), 1);
    assert_eq!(add("c").invoke_async::<u32>(&mut connection).await.unwrap(), 0, "full at 2");
    assert_eq!(add("a").invoke_async::<u32>(&mut connection).await.unwrap(), 1, "a member renews when full");
    let expiry = pttl(&mut connection, &key).await;
    assert!((59_000..=60_000).contains(&expiry), "the key expires with its last member: {expiry} ms");

    // "b" expired long ago (score 1): not renewed, removed, and its place is free.
    let _: () = connection.zadd(&key, "b", 1).await.unwrap();
    let lost: Vec<u32> = script
        .key(&key)
        .key(&key)
        .arg("renew")
        .arg(60_000)
        .arg("a")
        .arg("b")
        .invoke_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(lost, [2]);
    let live: Vec<String> = script.key(&key).arg("live").invoke_async(&mut connection).await.unwrap();
    assert_eq!(live, ["a"]);
    assert_eq!(add("c").invoke_async::<u32>(&mut connection).await.unwrap(), 1);
}
