//! Messages between replicas, across a lost subscription, and the membership list.

use std::time::Duration;

use weir_shared::SharedStore;

use crate::common::{config, fresh_prefix, redis_addr, redis_url, replicas, within};
use crate::proxy::{Mode, Proxy};

#[tokio::test]
async fn a_message_published_by_one_replica_reaches_the_others() {
    let stores = replicas(3).await;
    let mut first = within(stores[0].subscribe("routes")).await.unwrap();
    let mut second = within(stores[1].subscribe("routes")).await.unwrap();
    assert_eq!(within(stores[2].publish("routes", "orders@2")).await.unwrap(), 2);
    assert_eq!(within(first.recv()).await.as_deref(), Some("orders@2"));
    assert_eq!(within(second.recv()).await.as_deref(), Some("orders@2"));
    // Another channel is not heard.
    assert_eq!(within(stores[2].publish("other", "x")).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_comes_back_after_its_connection_is_lost() {
    let proxy = Proxy::start(redis_addr()).await;
    let prefix = fresh_prefix();
    let listener = SharedStore::connect(config(&proxy.url(), &prefix, 0)).await.unwrap();
    let publisher = SharedStore::connect(config(&redis_url(), &prefix, 1)).await.unwrap();
    let mut subscription = within(listener.subscribe("events")).await.unwrap();

    proxy.set(Mode::Refuse);
    // The subscription is gone once nobody receives (Redis has no event for it).
    within(async {
        while publisher.publish("events", "while cut").await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    proxy.set(Mode::Pass);
    within(async {
        while publisher.publish("events", "back").await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // A message sent in the instant of the cut may still have passed.
    within(async { while subscription.recv().await.as_deref() != Some("back") {} }).await;
}

#[tokio::test]
async fn members_are_listed_until_withdrawn_or_expired() {
    let stores = replicas(2).await;
    let ttl = Duration::from_secs(30);
    within(stores[0].announce("orders", "replica0", ttl)).await.unwrap();
    within(stores[1].announce("orders", "replica1", ttl)).await.unwrap();
    within(stores[1].announce("orders", "replica1", ttl)).await.unwrap();
    let mut members = within(stores[0].members("orders")).await.unwrap();
    members.sort();
    assert_eq!(members, ["replica0", "replica1"]);

    within(stores[0].withdraw("orders", "replica0")).await.unwrap();
    assert_eq!(within(stores[1].members("orders")).await.unwrap(), ["replica1"]);

    within(stores[0].announce("brief", "replica0", Duration::from_millis(50))).await.unwrap();
    within(async {
        while !stores[1].members("brief").await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
