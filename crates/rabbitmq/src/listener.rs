//! The gateway's side: connect requests from the connect queue, and a session for each.
//!
//! [`BrokerListener::bind`] connects to the broker and declares the connect queue
//! (`<prefix>.connect.<gateway>`: not durable, auto-deleted when its last gateway leaves,
//! so a service dialling a gateway that is not running is refused at once instead of
//! waiting). [`BrokerListener::accept`] yields one [`ConnectRequest`] per dialling
//! service; the gateway either [`ConnectRequest::open`]s a session for it or
//! [`ConnectRequest::refuse`]s it. If the broker connection is lost, `accept` reconnects
//! with backoff (100 ms doubling to 5 s, with jitter) and declares the queue again;
//! sessions on the lost connection end by themselves.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Consumer};
use rand::Rng;

use crate::address::{connect, BrokerAddress, BrokerConnection, BrokerError};
use crate::stream::{open_inbox, BrokerStream, SessionParts};
use crate::BrokerSettings;

/// The `type` of a service's connect request (its `reply_to` is the service's inbox).
pub(crate) const CONNECT: &str = "weir.connect";
/// The `type` of the gateway's answer opening a session (`reply_to`: its inbox).
pub(crate) const ACCEPT: &str = "weir.accept";
/// The `type` of the gateway's answer refusing a session (the body says why).
pub(crate) const REFUSE: &str = "weir.refuse";

/// First pause after losing the broker; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The gateway's place on the broker.
pub struct BrokerListener {
    address: BrokerAddress,
    settings: BrokerSettings,
    /// The current connection and the consumer of the connect queue; `None` after the
    /// connection was lost, until `accept` reconnects.
    bound: Option<(BrokerConnection, Consumer)>,
}

/// One service asking for a session.
pub struct ConnectRequest {
    broker: BrokerConnection,
    settings: BrokerSettings,
    /// The service's inbox.
    reply_to: ShortString,
}

impl BrokerListener {
    /// Connects and declares the connect queue; an error here is a configuration or
    /// reachability problem to report at start.
    pub async fn bind(address: BrokerAddress, settings: BrokerSettings) -> Result<Self, BrokerError> {
        let address = address.with_heartbeat(settings.heartbeat);
        let bound = bind_queue(&address, &settings).await?;
        tracing::info!(broker = %address, queue = %settings.connect_queue(), "accepting service connections through the broker");
        Ok(BrokerListener { address, settings, bound: Some(bound) })
    }

    /// The broker's address (without credentials).
    pub fn address(&self) -> &BrokerAddress {
        &self.address
    }

    /// The queue it takes connect requests from.
    pub fn connect_queue(&self) -> String {
        self.settings.connect_queue()
    }

    /// The next connect request; reconnects to the broker for as long as it takes.
    pub async fn accept(&mut self) -> ConnectRequest {
        loop {
            let Some((broker, consumer)) = &mut self.bound else {
                self.bound = Some(self.rebind().await);
                continue;
            };
            let delivery = match consumer.next().await {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => {
                    tracing::warn!(broker = %self.address, error = %err, "lost the broker connection");
                    self.bound = None;
                    continue;
                }
                None => {
                    tracing::warn!(broker = %self.address, "the broker cancelled the connect queue's consumer");
                    self.bound = None;
                    continue;
                }
            };
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            let properties = &delivery.properties;
            let reply_to = properties.reply_to().clone();
            match (properties.kind().as_ref().map(ShortString::as_str), reply_to) {
                (Some(CONNECT), Some(reply_to)) => {
                    return ConnectRequest { broker: broker.clone(), settings: self.settings.clone(), reply_to };
                }
                (kind, _) => {
                    tracing::warn!(broker = %self.address, ?kind, "ignored a message on the connect queue: not a connect request with a reply_to")
                }
            }
        }
    }

    /// Connects again, with backoff, until it works.
    async fn rebind(&self) -> (BrokerConnection, Consumer) {
        let mut pause = MIN_BACKOFF;
        loop {
            let jitter = rand::thread_rng().gen_range(0..=pause.as_millis() as u64 / 2);
            tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
            match bind_queue(&self.address, &self.settings).await {
                Ok(bound) => {
                    tracing::info!(broker = %self.address, "reconnected to the broker");
                    return bound;
                }
                Err(err) => tracing::warn!(error = %err, retry_in = ?pause, "reconnecting to the broker failed"),
            }
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// Connects, declares the connect queue and consumes it.
async fn bind_queue(
    address: &BrokerAddress,
    settings: &BrokerSettings,
) -> Result<(BrokerConnection, Consumer), BrokerError> {
    let name = format!("weir gateway on {}", settings.connect_queue());
    let broker = connect(address, &name, settings.connect_timeout).await?;
    let queue = settings.connect_queue();
    let declared = async {
        let channel = broker.connection.create_channel().await?;
        channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await?;
        let options = QueueDeclareOptions { auto_delete: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
        channel
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
    };
    match declared.await {
        Ok(consumer) => Ok((broker, consumer)),
        Err(err) => Err(broker.error(&format!("consuming {queue}"), err)),
    }
}

impl ConnectRequest {
    /// Where the service is, for logs: the broker and the service's inbox.
    pub fn peer(&self) -> String {
        format!("{}#{}", self.broker.address, self.reply_to)
    }

    /// Declares this session's inbox, answers the service with it, and returns the
    /// gateway's end of the session.
    pub async fn open(self) -> Result<BrokerStream, BrokerError> {
        let (channel, consumer, inbox) = open_inbox(&self.broker, &self.settings, "session")
            .await
            .map_err(|err| self.broker.error("declaring a session inbox", err))?;
        let properties = BasicProperties::default().with_type(ACCEPT.into()).with_reply_to(inbox.clone());
        let answered = channel
            .basic_publish("".into(), self.reply_to.clone(), Default::default(), &[], properties)
            .await
            .map(drop);
        if let Err(err) = answered {
            return Err(self.broker.error("answering a connect request", err));
        }
        let parts =
            SessionParts { broker: self.broker, channel, consumer, inbox, peer: self.reply_to, owns_connection: false };
        Ok(BrokerStream::start(parts, &self.settings))
    }

    /// Tells the service its connection is refused, and why.
    pub async fn refuse(self, reason: &str) {
        let Ok(channel) = self.broker.connection.create_channel().await else { return };
        let properties = BasicProperties::default().with_type(REFUSE.into());
        let _ =
            channel.basic_publish("".into(), self.reply_to, Default::default(), reason.as_bytes(), properties).await;
        let _ = channel.close(200, "refused".into()).await;
    }
}
