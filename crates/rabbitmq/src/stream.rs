//! One session as the link's byte stream: [`BrokerStream`] reads deliveries from this
//! side's inbox and publishes writes to the peer's, with no pipe or task in between.
//!
//! - *Reading* hands out each delivery's body in order (pings are skipped, `weir.close`
//!   is the end of file) and acknowledges in batches: every `prefetch / 2` deliveries,
//!   and whenever no further delivery is waiting, so the broker never holds deliveries
//!   back for acknowledgements this side sits on.
//! - *Writing* publishes a write at once when no publish is going out, and otherwise
//!   gathers writes into the next message (at most [`MAX_MESSAGE`]), which the next
//!   write or `poll_flush` publishes; a flush completes once lapin has written
//!   everything out. While a publish goes out the link queues more frames, so a busy
//!   link sends few, large messages.
//! - *Liveness* is a task of its own: a mandatory ping to the peer's inbox every
//!   `liveness_interval`; a returned ping (the inbox is gone, hence its owner) or a
//!   broker failure marks the stream dead and wakes its reader, whose next read fails
//!   as a reset socket's would.
//!
//! Frames pushed to lapin are sent in the order of the *first poll* of each publish or
//! acknowledgement future (lapin queues them then, and only waits afterwards); the
//! stream polls each at once when it creates it, so its messages leave in order.
//!
//! Dropping the stream ends the session: a task tells the peer (`weir.close`, unless the
//! peer closed or is gone), deletes this side's inbox and closes its channel (and the
//! connection, when the session owns it).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::{self, BoxFuture};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Consumer};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

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

/// A new channel consuming a new exclusive inbox, `<prefix>.<role>.<64 random bits>`
/// (the prefix and role tell an operator listing queues whose it is): (channel,
/// consumer, name).
pub(crate) async fn open_inbox(
    broker: &BrokerConnection,
    settings: &BrokerSettings,
    role: &str,
) -> lapin::Result<(lapin::Channel, Consumer, ShortString)> {
    let channel = broker.connection.create_channel().await?;
    channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await?;
    let name = format!("{}.{role}.{:016x}", settings.prefix, rand::thread_rng().gen::<u64>());
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    let queue = channel.queue_declare(name.into(), options, FieldTable::default()).await?;
    let inbox = queue.name().clone();
    let consumer =
        channel.basic_consume(inbox.clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    Ok((channel, consumer, inbox))
}

/// One side of a session through the broker, as the link's byte stream.
pub struct BrokerStream {
    channel: Channel,
    peer: ShortString,
    consumer: Consumer,
    /// The delivery being read, and how much of it was read.
    reading: Option<(Vec<u8>, usize)>,
    acks: AckBatch,
    /// The peer sent `weir.close`: reads see the end of file.
    peer_closed: bool,
    /// The message being gathered from writes.
    out: Vec<u8>,
    /// The publish in progress (a message, or the `weir.close` of a shutdown).
    publishing: Option<BoxFuture<'static, lapin::Result<()>>>,
    /// This side sent `weir.close` (a shutdown).
    closed: bool,
    /// Set by the liveness task when the peer or the broker is gone.
    health: Arc<Health>,
    /// What the end of the session releases; taken by `Drop`.
    cleanup: Option<Cleanup>,
}

/// The liveness task's verdict, and the reader it wakes.
#[derive(Default)]
struct Health {
    dead: AtomicBool,
    reader: AtomicWaker,
}

/// Deliveries read but not yet acknowledged.
struct AckBatch {
    unacked: u16,
    last_tag: u64,
    /// Acknowledge at least every this many deliveries.
    every: u16,
    /// The acknowledgement in progress.
    sending: Option<BoxFuture<'static, lapin::Result<()>>>,
}

struct Cleanup {
    broker: BrokerConnection,
    inbox: ShortString,
    owns_connection: bool,
    liveness: JoinHandle<()>,
}

impl BrokerStream {
    /// The stream over `parts`, with its liveness task started.
    pub(crate) fn start(parts: SessionParts, settings: &BrokerSettings) -> Self {
        let SessionParts { broker, channel, consumer, inbox, peer, owns_connection } = parts;
        let health = Arc::new(Health::default());
        let liveness = tokio::spawn(watch_peer(
            broker.pings.clone(),
            peer.clone(),
            settings.liveness_interval,
            Arc::clone(&health),
        ));
        BrokerStream {
            channel,
            peer,
            consumer,
            reading: None,
            acks: AckBatch { unacked: 0, last_tag: 0, every: (settings.prefetch / 2).max(1), sending: None },
            peer_closed: false,
            out: Vec::new(),
            publishing: None,
            closed: false,
            health,
            cleanup: Some(Cleanup { broker, inbox, owns_connection, liveness }),
        }
    }

    fn dead(&self) -> bool {
        self.health.dead.load(Ordering::Acquire)
    }

    /// Starts publishing `body` as a message of type `kind`, polled once so it is queued.
    fn start_publish(&mut self, kind: &'static str, body: Vec<u8>, cx: &mut Context<'_>) {
        let (channel, peer) = (self.channel.clone(), self.peer.clone());
        let mut publishing = async move { publish(&channel, &peer, kind, &body).await }.boxed();
        self.publishing = match publishing.poll_unpin(cx) {
            Poll::Pending => Some(publishing),
            Poll::Ready(Ok(())) => None,
            // Kept for `poll_publishing` to report.
            Poll::Ready(Err(err)) => Some(future::ready(Err(err)).boxed()),
        };
    }

    /// Starts publishing what the writes gathered, if anything.
    fn publish_gathered(&mut self, cx: &mut Context<'_>) {
        if !self.out.is_empty() {
            let body = std::mem::take(&mut self.out);
            self.start_publish(DATA, body, cx);
        }
    }

    /// Drives the publish in progress to its end.
    fn poll_publishing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(publishing) = &mut self.publishing {
            let published = ready!(publishing.poll_unpin(cx));
            self.publishing = None;
            published.map_err(|err| io::Error::new(io::ErrorKind::BrokenPipe, format!("publish: {err}")))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AckBatch {
    /// Records a delivery taken from the inbox.
    fn taken(&mut self, tag: u64) {
        self.last_tag = tag;
        self.unacked = self.unacked.saturating_add(1);
    }

    /// Finishes the acknowledgement in progress, then sends the next one if a batch is
    /// full (or, when `idle`, if anything is unacknowledged).
    fn poll_send(&mut self, channel: &Channel, idle: bool, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(sending) = &mut self.sending {
            match sending.poll_unpin(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(sent) => {
                    self.sending = None;
                    sent.map_err(|err| io::Error::new(io::ErrorKind::ConnectionReset, format!("ack: {err}")))?;
                }
            }
        }
        if self.unacked == 0 || !(idle || self.unacked >= self.every) {
            return Ok(());
        }
        let (channel, tag) = (channel.clone(), self.last_tag);
        self.unacked = 0;
        let mut sending = async move { channel.basic_ack(tag, BasicAckOptions { multiple: true }).await }.boxed();
        match sending.poll_unpin(cx) {
            Poll::Pending => self.sending = Some(sending),
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(err)) => return Err(io::Error::new(io::ErrorKind::ConnectionReset, format!("ack: {err}"))),
        }
        Ok(())
    }
}

impl AsyncRead for BrokerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some((data, read)) = &mut this.reading {
                let n = buf.remaining().min(data.len() - *read);
                buf.put_slice(&data[*read..*read + n]);
                *read += n;
                if *read == data.len() {
                    this.reading = None;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            this.health.reader.register(cx.waker());
            if this.dead() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "the peer's inbox is gone")));
            }
            let delivery = match this.consumer.poll_next_unpin(cx) {
                Poll::Pending => {
                    this.acks.poll_send(&this.channel, true, cx)?;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the inbox's consumer ended",
                    )))
                }
                Poll::Ready(Some(Err(err))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, format!("consume: {err}"))))
                }
                Poll::Ready(Some(Ok(delivery))) => delivery,
            };
            this.acks.taken(delivery.delivery_tag);
            match delivery.properties.kind().as_ref().map(ShortString::as_str) {
                Some(CLOSE) => this.peer_closed = true,
                Some(PING) => {}
                _ if delivery.data.is_empty() => {}
                _ => this.reading = Some((delivery.data, 0)),
            }
            this.acks.poll_send(&this.channel, false, cx)?;
        }
    }
}

impl AsyncWrite for BrokerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Gathers `bufs` into the next message, and publishes it at once unless a publish
    /// is still going out (then it waits for the next write or flush, gathering more):
    /// like a socket without Nagle's delay, a write goes out without a flush.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.dead() || this.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the session has ended")));
        }
        if this.out.len() >= MAX_MESSAGE {
            ready!(Pin::new(&mut *this).poll_flush(cx))?;
        }
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(MAX_MESSAGE - this.out.len());
            this.out.extend_from_slice(&buf[..n]);
            written += n;
            if n < buf.len() {
                break;
            }
        }
        if let Poll::Ready(published) = this.poll_publishing(cx) {
            published?;
            this.publish_gathered(cx);
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_publishing(cx))?;
            if this.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.publish_gathered(cx);
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        let this = self.get_mut();
        if !this.closed {
            this.closed = true;
            this.start_publish(CLOSE, Vec::new(), cx);
        }
        this.poll_publishing(cx)
    }
}

impl Drop for BrokerStream {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else { return };
        cleanup.liveness.abort();
        let tell_peer = !(self.closed || self.peer_closed || self.dead());
        let (channel, peer, unsent) = (self.channel.clone(), self.peer.clone(), std::mem::take(&mut self.out));
        // Outside a runtime (the process is ending) the broker cleans up on its own:
        // the inbox is exclusive, and goes with the connection.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if tell_peer {
                    // Written but not flushed is still sent, as a socket sends it on close.
                    if !unsent.is_empty() {
                        let _ = publish(&channel, &peer, DATA, &unsent).await;
                    }
                    let _ = publish(&channel, &peer, CLOSE, &[]).await;
                }
                let _ = channel.queue_delete(cleanup.inbox.clone(), QueueDeleteOptions::default()).await;
                let _ = channel.close(200, "session ended".into()).await;
                if cleanup.owns_connection {
                    let _ = cleanup.broker.connection.close(200, "session ended".into()).await;
                }
                tracing::debug!(inbox = %cleanup.inbox, %peer, "broker session ended");
            });
        }
    }
}

/// Publishes `body` as a message of type `kind` to `queue` through the default exchange.
pub(crate) async fn publish(channel: &Channel, queue: &ShortString, kind: &str, body: &[u8]) -> lapin::Result<()> {
    let properties = BasicProperties::default().with_type(kind.into());
    channel.basic_publish("".into(), queue.clone(), BasicPublishOptions::default(), body, properties).await?;
    Ok(())
}

/// Pings `peer` every `interval` until a ping comes back or fails, then marks `health`
/// dead and wakes the reader.
async fn watch_peer(pings: Channel, peer: ShortString, interval: std::time::Duration, health: Arc<Health>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        ticks.tick().await;
        match ping(&pings, &peer).await {
            Ok(true) => {}
            Ok(false) => break "the peer's inbox is gone (its connection closed)".to_owned(),
            Err(err) => break format!("ping: {err}"),
        }
    };
    tracing::debug!(%peer, %reason, "broker session is dead");
    health.dead.store(true, Ordering::Release);
    health.reader.wake();
}

/// One mandatory ping to `queue`, awaited until the broker confirms it: `false` if the
/// broker returned it (no such queue).
pub(crate) async fn ping(pings: &Channel, queue: &ShortString) -> lapin::Result<bool> {
    let properties = BasicProperties::default().with_type(PING.into());
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let confirm = pings.basic_publish("".into(), queue.clone(), options, &[], properties).await?;
    Ok(matches!(confirm.await?, Confirmation::Ack(None)))
}

impl std::fmt::Debug for BrokerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerStream").field("peer", &self.peer).field("dead", &self.dead()).finish_non_exhaustive()
    }
}
