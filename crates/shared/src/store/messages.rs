//! Messages between replicas over Redis pub/sub, on channels `<prefix>:<suffix>`.
//! Publishing is an ordinary command (bounded, degrading). A [`Subscription`] has a
//! connection of its own (Redis gives a subscribed connection to nothing else) and a
//! task that follows the store's health: when the store degrades it drops that
//! connection, and when the store is shared again it subscribes anew, as it does when
//! Redis closes the connection. Delivery is Redis's: at most once, and a replica misses
//! what is published while it is cut off or resubscribing.
//!
//! The reconnection loop is written here because it keys on the store's health rather
//! than on the subscribed socket alone, which a silent network would keep open.

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::health::PROBE_INTERVAL;
use super::{Health, SharedStore};
use crate::SharedError;

/// Messages not yet taken by the subscriber before Redis's socket is left unread.
const BUFFER: usize = 256;

/// The messages of one channel, as they arrive; ends only when dropped.
#[derive(Debug)]
pub struct Subscription {
    /// Filled by the subscription's task; dropping it stops the task.
    messages: mpsc::Receiver<String>,
}

impl Subscription {
    /// The next message.
    pub async fn recv(&mut self) -> Option<String> {
        self.messages.recv().await
    }
}

/// Why one subscribed connection stopped being read.
enum Ended {
    /// The subscriber dropped its [`Subscription`].
    Unsubscribed,
    /// Redis closed the connection, or the store degraded: subscribe again.
    Lost,
}

impl SharedStore {
    /// Sends `payload` to the subscribers of `<prefix>:<channel_suffix>`; the number of
    /// subscribers that got it.
    pub async fn publish(&self, channel_suffix: &str, payload: &str) -> Result<u32, SharedError> {
        let channel = self.key(&[channel_suffix]);
        self.run(|mut connection| async move {
            redis::cmd("PUBLISH").arg(&channel).arg(payload).query_async(&mut connection).await
        })
        .await
    }

    /// Subscribes to `<prefix>:<channel_suffix>`: returns once Redis confirmed the
    /// subscription (within `connect_timeout`), then follows it across reconnections.
    /// Messages that are not UTF-8 are skipped.
    pub async fn subscribe(&self, channel_suffix: &str) -> Result<Subscription, SharedError> {
        if !self.health().is_shared() {
            return Err(SharedError::Unavailable);
        }
        let channel = self.key(&[channel_suffix]);
        let first = self.open_subscription(&channel).await?;
        let (sender, messages) = mpsc::channel(BUFFER);
        tokio::spawn(follow(self.clone(), channel, first, sender));
        Ok(Subscription { messages })
    }

    /// A new connection subscribed to `channel`, within `connect_timeout`.
    async fn open_subscription(&self, channel: &str) -> Result<PubSubStream, SharedError> {
        let config = &self.inner.config;
        let attempt = async {
            let mut pubsub = self.inner.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(config.connect_timeout, attempt).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => {
                Err(SharedError::Connect { url: config.redacted_url(), reason: config.scrub(&error.to_string()) })
            }
            Err(_) => Err(SharedError::Unreachable { url: config.redacted_url(), timeout: config.connect_timeout }),
        }
    }
}

/// Forwards `channel`'s messages to `sender`, subscribing again whenever the connection
/// is lost, until the subscriber is gone.
async fn follow(store: SharedStore, channel: String, first: PubSubStream, sender: mpsc::Sender<String>) {
    let mut health = store.watch_health();
    let mut stream = Some(first);
    loop {
        if let Some(current) = stream.take() {
            if let Ended::Unsubscribed = forward(current, &sender, &mut health).await {
                return;
            }
        }
        // Not in a hurry: wait for the store to be shared, and pace attempts on a Redis
        // that accepts the store's commands but closes subscriptions.
        tokio::select! {
            _ = sender.closed() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        tokio::select! {
            _ = sender.closed() => return,
            shared = health.wait_for(Health::is_shared) => if shared.is_err() { return },
        }
        match store.open_subscription(&channel).await {
            Ok(opened) => stream = Some(opened),
            Err(error) => debug!(%error, channel, "shared state: resubscribing failed"),
        }
    }
}

/// Forwards messages from one subscribed connection until it ends, the store degrades
/// or the subscriber is gone.
async fn forward(
    mut stream: PubSubStream,
    sender: &mpsc::Sender<String>,
    health: &mut watch::Receiver<Health>,
) -> Ended {
    loop {
        tokio::select! {
            _ = sender.closed() => return Ended::Unsubscribed,
            changed = health.changed() => {
                if changed.is_err() {
                    return Ended::Unsubscribed;
                }
                if !health.borrow_and_update().is_shared() {
                    return Ended::Lost;
                }
            }
            message = stream.next() => {
                let Some(message) = message else { return Ended::Lost };
                match message.get_payload::<String>() {
                    Ok(payload) => {
                        if sender.send(payload).await.is_err() {
                            return Ended::Unsubscribed;
                        }
                    }
                    Err(error) => debug!(%error, "shared state: message skipped"),
                }
            }
        }
    }
}
