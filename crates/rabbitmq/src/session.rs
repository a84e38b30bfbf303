//! One session: a byte stream between two inboxes on the broker.
//!
//! The link gets one end of an in-memory pipe; a pump task owns the other end and the
//! broker side, with three jobs that run side by side, so that neither direction ever
//! waits for the other:
//!
//! - *outbound*: each read from the pipe (whatever the link flushed, at most
//!   [`MAX_MESSAGE`]) is published to the peer's inbox;
//! - *inbound*: each delivery's body is written into the pipe, then acknowledged, in
//!   batches of half the prefetch (sooner when no further delivery is waiting);
//! - *liveness*: a mandatory ping to the peer's inbox every `liveness_interval`; a
//!   returned ping means the inbox is gone, hence its owner.
//!
//! The first job to end ends the session, except that the link going away is always
//! noticed by *outbound*, after it has published everything the link wrote before it
//! went (its last frames are often the reason it went). The pump then tells the peer (`weir.close`, unless
//! the peer is the one that closed or is gone), deletes its own inbox and closes its
//! channel (and the connection, when the session owns it). Dropping the pipe shows the
//! link end of file, which ends the link as a closed socket does.

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicPublishOptions, QueueDeleteOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Consumer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use crate::address::BrokerConnection;
use crate::{BrokerSettings, MAX_MESSAGE};

/// The `type` of a message carrying the link's bytes.
pub(crate) const DATA: &str = "weir.data";
/// The `type` of a liveness ping (no body; ignored by the receiver).
pub(crate) const PING: &str = "weir.ping";
/// The `type` of the message a side sends when it ends the session.
pub(crate) const CLOSE: &str = "weir.close";

/// What a session runs on, once both inboxes exist.
pub(crate) struct SessionParts {
    pub broker: BrokerConnection,
    /// This side's channel: it consumes the inbox and publishes data.
    pub channel: Channel,
    /// The consumer of this side's inbox.
    pub consumer: Consumer,
    /// This side's inbox, deleted when the session ends.
    pub inbox: ShortString,
    /// The peer's inbox.
    pub peer: ShortString,
    /// Whether the session owns its connection (a service's dial) and closes it at the end.
    pub owns_connection: bool,
}

/// Why a session ended.
enum End {
    /// The link closed its end of the pipe.
    LinkClosed,
    /// The peer sent `weir.close`.
    PeerClosed,
    /// The broker returned a ping: the peer's inbox no longer exists.
    PeerGone,
    /// The broker connection or channel failed.
    Broker(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::LinkClosed => f.write_str("closed by this side"),
            End::PeerClosed => f.write_str("closed by the peer"),
            End::PeerGone => f.write_str("the peer's inbox is gone (its connection closed)"),
            End::Broker(reason) => write!(f, "broker failure: {reason}"),
        }
    }
}

/// Starts the pump for `parts` and returns the link's end of the pipe.
pub(crate) fn start(parts: SessionParts, settings: &BrokerSettings) -> DuplexStream {
    let (link_end, pump_end) = tokio::io::duplex(MAX_MESSAGE);
    tokio::spawn(pump(parts, settings.clone(), pump_end));
    link_end
}

async fn pump(parts: SessionParts, settings: BrokerSettings, pipe: DuplexStream) {
    let SessionParts { broker, channel, consumer, inbox, peer, owns_connection } = parts;
    let (from_link, to_link) = tokio::io::split(pipe);
    let ack_batch = (settings.prefetch / 2).max(1);
    let end = tokio::select! {
        end = outbound(&channel, &peer, from_link) => end,
        end = inbound(&channel, consumer, ack_batch, to_link) => end,
        end = liveness(&broker.pings, &peer, settings.liveness_interval) => end,
    };
    tracing::debug!(inbox = %inbox, peer = %peer, reason = %end, "broker session ended");
    if matches!(end, End::LinkClosed | End::Broker(_)) {
        let _ = publish(&channel, &peer, CLOSE, &[]).await;
    }
    let _ = channel.queue_delete(inbox, QueueDeleteOptions::default()).await;
    let _ = channel.close(200, "session ended".into()).await;
    if owns_connection {
        let _ = broker.connection.close(200, "session ended".into()).await;
    }
}

/// Publishes `body` as a message of type `kind` to `queue` through the default exchange.
pub(crate) async fn publish(channel: &Channel, queue: &ShortString, kind: &str, body: &[u8]) -> lapin::Result<()> {
    let properties = BasicProperties::default().with_type(kind.into());
    channel.basic_publish("".into(), queue.clone(), BasicPublishOptions::default(), body, properties).await?;
    Ok(())
}

/// Link to broker: one message per read from the pipe.
async fn outbound(channel: &Channel, peer: &ShortString, mut from_link: ReadHalf<DuplexStream>) -> End {
    let mut buf = vec![0; MAX_MESSAGE];
    loop {
        let n = match from_link.read(&mut buf).await {
            Ok(0) | Err(_) => return End::LinkClosed,
            Ok(n) => n,
        };
        if let Err(err) = publish(channel, peer, DATA, &buf[..n]).await {
            return End::Broker(format!("publish: {err}"));
        }
    }
}

/// Broker to link: each delivery's body into the pipe, acknowledged in batches.
async fn inbound(
    channel: &Channel,
    mut consumer: Consumer,
    ack_batch: u16,
    mut to_link: WriteHalf<DuplexStream>,
) -> End {
    let mut unacked: u16 = 0;
    let mut last_tag = 0;
    loop {
        // Acknowledge what was taken before waiting, so the broker never holds back
        // deliveries because of acknowledgements this side sits on.
        let next = match consumer.next().now_or_never() {
            Some(next) => next,
            None => {
                if unacked > 0 {
                    if let Err(err) = ack(channel, last_tag).await {
                        return End::Broker(format!("ack: {err}"));
                    }
                    unacked = 0;
                }
                consumer.next().await
            }
        };
        let delivery = match next {
            None => return End::Broker("the inbox's consumer was cancelled".to_owned()),
            Some(Err(err)) => return End::Broker(format!("consume: {err}")),
            Some(Ok(delivery)) => delivery,
        };
        match delivery.properties.kind().as_ref().map(ShortString::as_str) {
            Some(CLOSE) => return End::PeerClosed,
            Some(PING) => {}
            _ => {
                if to_link.write_all(&delivery.data).await.is_err() {
                    // The link has gone: *outbound* ends the session once it has
                    // published the last bytes the link wrote (a refusal, an error frame).
                    return std::future::pending().await;
                }
            }
        }
        last_tag = delivery.delivery_tag;
        unacked += 1;
        if unacked >= ack_batch {
            if let Err(err) = ack(channel, last_tag).await {
                return End::Broker(format!("ack: {err}"));
            }
            unacked = 0;
        }
    }
}

/// Acknowledges every delivery up to `tag`.
async fn ack(channel: &Channel, tag: u64) -> lapin::Result<()> {
    channel.basic_ack(tag, BasicAckOptions { multiple: true }).await
}

/// Pings the peer's inbox every `interval`; ends when the broker returns a ping.
async fn liveness(pings: &Channel, peer: &ShortString, interval: std::time::Duration) -> End {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match ping(pings, peer).await {
            Ok(true) => {}
            Ok(false) => return End::PeerGone,
            Err(err) => return End::Broker(format!("ping: {err}")),
        }
    }
}

/// One mandatory ping to `queue`, awaited until the broker confirms it: `false` if the
/// broker returned it (no such queue).
pub(crate) async fn ping(pings: &Channel, queue: &ShortString) -> lapin::Result<bool> {
    let properties = BasicProperties::default().with_type(PING.into());
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let confirm = pings.basic_publish("".into(), queue.clone(), options, &[], properties).await?;
    Ok(matches!(confirm.await?, Confirmation::Ack(None)))
}
