//! The admin surface across replicas (`[shared]`): `DELETE /requests/{replica}/{id}`
//! cancels a request on whichever replica runs it, and each entry of `/requests` names
//! its replica, so the id an operator copies from any replica's list works on any other;
//! `/routes` names, for each instance, the replicas it is registered with.
//!
//! Registrations are announced, not looked up per request: every [`ANNOUNCE_EVERY`] each
//! replica renews, in Redis, its own name in the set of replicas and each of its
//! instances in its own set (both expiring after [`ANNOUNCED_FOR`], so a replica that
//! stops announcing drops out). `/routes` reads them back; so an instance registered
//! or gone a moment ago may be shown as before for up to [`ANNOUNCED_FOR`].
//!
//! A cancel for another replica is published on that replica's channel
//! (`<prefix>:cancel.<replica>`), which each replica follows from its start
//! ([`follow_cancels`]). Redis answers how many subscribers got the message: none means
//! no replica of that name is listening (404); one means it was delivered (202, as the
//! cancel then happens there). Redis delivers at most once, and not to a replica cut
//! off at that moment: the admin then sees 503 or 404, never a false 204.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use weir_shared::SharedStore;

use crate::limits::in_flight::RequestRegistry;
use crate::Gateway;

/// How often a replica renews its announcements.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
/// How long an announcement lasts unless renewed: three renewals may fail in a row.
pub(crate) const ANNOUNCED_FOR: Duration = Duration::from_secs(10);

/// The set of live replicas' names.
const REPLICAS: &str = "replicas";

/// The set of `replica`'s instances, as `service/instance_id`.
fn instances_of(replica: &str) -> String {
    format!("instances.{replica}")
}

/// Renews this replica's announcements every [`ANNOUNCE_EVERY`] while the gateway lives.
pub(crate) async fn announce_instances(gateway: Weak<Gateway>, store: SharedStore) {
    let replica = store.config().replica.clone();
    let mut ticker = tokio::time::interval(ANNOUNCE_EVERY);
    loop {
        ticker.tick().await;
        let Some(gateway) = gateway.upgrade() else { return };
        let instances: Vec<String> = gateway
            .routing()
            .instances()
            .iter()
            .map(|instance| format!("{}/{}", instance.identity.service, instance.identity.instance_id))
            .collect();
        drop(gateway);
        // A failure degrades the store, which says so once; the next tick tries again.
        let _ = store.announce(REPLICAS, &replica, ANNOUNCED_FOR).await;
        for instance in instances {
            let _ = store.announce(&instances_of(&replica), &instance, ANNOUNCED_FOR).await;
        }
    }
}

/// `/routes` (`routes` serialised) with, in each instance, the replicas it is registered
/// with as last announced; unchanged when Redis cannot say.
pub(crate) async fn name_replicas_of_instances(store: &SharedStore, mut routes: Value) -> Value {
    let Ok(replicas) = store.members(REPLICAS).await else { return routes };
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for replica in replicas {
        let Ok(instances) = store.members(&instances_of(&replica)).await else { return routes };
        for instance in instances {
            holders.entry(instance).or_default().push(replica.clone());
        }
    }
    for route in routes.as_array_mut().into_iter().flatten() {
        let service = route["service"].as_str().unwrap_or_default().to_owned();
        for instance in route["instances"].as_array_mut().into_iter().flatten() {
            let key = format!("{service}/{}", instance["instance_id"].as_str().unwrap_or_default());
            let mut names = holders.get(&key).cloned().unwrap_or_default();
            names.sort();
            if let Some(object) = instance.as_object_mut() {
                object.insert("replicas".into(), Value::from(names));
            }
        }
    }
    routes
}

/// The channel of `replica`'s cancels.
fn cancel_channel(replica: &str) -> String {
    format!("cancel.{replica}")
}

/// Cancels the requests other replicas name on this replica's channel, until the store
/// is dropped. Started once, when the gateway starts serving.
pub(crate) async fn follow_cancels(store: SharedStore, registry: Arc<RequestRegistry>) {
    let replica = store.config().replica.clone();
    let mut subscription = loop {
        match store.subscribe(&cancel_channel(&replica)).await {
            Ok(subscription) => break subscription,
            Err(err) => {
                tracing::debug!(error = %err, "cannot follow cancels from other replicas yet; retrying");
                let mut health = store.watch_health();
                let _ = health.wait_for(|health| health.is_shared()).await;
            }
        }
    };
    while let Some(message) = subscription.recv().await {
        match message.parse::<u64>() {
            Ok(id) if registry.cancel(id) => tracing::info!(id, "request cancelled from another replica's admin"),
            Ok(id) => tracing::debug!(id, "a cancel from another replica names no request in flight here"),
            Err(_) => tracing::warn!(message, "ignoring a malformed cancel from another replica"),
        }
    }
}

/// Asks `replica` to cancel its request `id`: 202 when a replica of that name got it,
/// 404 when none listens, 503 when Redis cannot be reached.
pub(crate) async fn cancel_elsewhere(store: &SharedStore, replica: &str, id: u64) -> StatusCode {
    match store.publish(&cancel_channel(replica), &id.to_string()).await {
        Ok(0) => StatusCode::NOT_FOUND,
        Ok(_) => {
            tracing::info!(id, replica, "request cancel sent to another replica");
            StatusCode::ACCEPTED
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `/requests` with each entry's `replica` (`requests` serialised, one object each).
pub(crate) fn name_replica(requests: Value, replica: &str) -> Value {
    match requests {
        Value::Array(entries) => Value::Array(
            entries
                .into_iter()
                .map(|mut entry| {
                    if let Some(object) = entry.as_object_mut() {
                        object.insert("replica".into(), Value::String(replica.to_owned()));
                    }
                    entry
                })
                .collect(),
        ),
        other => other,
    }
}
