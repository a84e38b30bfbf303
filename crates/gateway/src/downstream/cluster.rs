//! The admin surface across replicas (`[shared]`): `DELETE /requests/{replica}/{id}`
//! cancels a request on whichever replica runs it, and each entry of `/requests` names
//! its replica, so the id an operator copies from any replica's list works on any other.
//!
//! A cancel for another replica is published on that replica's channel
//! (`<prefix>:cancel.<replica>`), which each replica follows from its start
//! ([`follow_cancels`]). Redis answers how many subscribers got the message: none means
//! no replica of that name is listening (404); one means it was delivered (202, as the
//! cancel then happens there). Redis delivers at most once, and not to a replica cut
//! off at that moment: the admin then sees 503 or 404, never a false 204.

use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;
use weir_shared::SharedStore;

use crate::limits::in_flight::RequestRegistry;

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
