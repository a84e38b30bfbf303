//! The service's side: [`RabbitMqDialer`] opens one session with a gateway per dial.
//!
//! Each dial opens its own broker connection (so a session's end, or the broker closing
//! it, takes nothing else down), declares an exclusive inbox, publishes a mandatory
//! connect request to the gateway's connect queue and waits for the answer. No connect
//! queue (no gateway of that name running) is refused at once, as a closed port is;
//! the whole dial is bounded by [`BrokerSettings::connect_timeout`]. The connect request
//! expires in the queue after that same time, so a gateway that starts later never
//! answers a service that has given up.

use std::io;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation, Consumer};

use crate::address::{connect, BrokerAddress, BrokerConnection, BrokerError};
use crate::listener::{ACCEPT, CONNECT, REFUSE};
use crate::stream::{open_inbox, BrokerStream, SessionParts, PING};
use crate::BrokerSettings;

/// Dials a gateway through the broker at `address`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RabbitMqDialer {
    address: BrokerAddress,
    settings: BrokerSettings,
}

impl RabbitMqDialer {
    /// A dialer for the broker at `url` (`amqp://` or `amqps://`), with the default
    /// settings (prefix `weir`, gateway `default`).
    pub fn new(url: &str) -> Result<Self, BrokerError> {
        Ok(Self::with_settings(url.parse()?, BrokerSettings::default()))
    }

    /// A dialer with every setting given; `settings` must match the gateway's.
    pub fn with_settings(address: BrokerAddress, settings: BrokerSettings) -> Self {
        RabbitMqDialer { address: address.with_heartbeat(settings.heartbeat), settings }
    }

    /// The same dialer, for the gateway named `name` (`[services.rabbitmq] gateway`).
    pub fn gateway(mut self, name: impl Into<String>) -> Self {
        self.settings.gateway = name.into();
        self
    }

    /// The same dialer with the queue-name prefix `prefix` (`[services.rabbitmq] prefix`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// The broker it dials (printed without credentials).
    pub fn address(&self) -> &BrokerAddress {
        &self.address
    }

    /// The settings it dials with.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Opens one session with the gateway.
    pub async fn dial(&self) -> io::Result<BrokerStream> {
        let timeout = self.settings.connect_timeout;
        match tokio::time::timeout(timeout, self.open()).await {
            Err(_) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer from the gateway within {timeout:?}")))
            }
            Ok(result) => result,
        }
    }

    async fn open(&self) -> io::Result<BrokerStream> {
        let queue = self.settings.connect_queue();
        let broker = connect(&self.address, &format!("weir service to {queue}"), self.settings.connect_timeout)
            .await
            .map_err(refused)?;
        let (channel, mut consumer, inbox) = open_inbox(&broker, &self.settings, "service")
            .await
            .map_err(|e| refused(broker.error("declaring the inbox", e)))?;
        request_session(&broker, &queue, &inbox, self.settings.connect_timeout).await?;
        let peer = await_answer(&mut consumer, &queue).await?;
        let parts = SessionParts { broker, channel, consumer, inbox, peer, owns_connection: true };
        Ok(BrokerStream::start(parts, &self.settings))
    }
}

/// Publishes the connect request, mandatory, and waits for the broker to route it.
async fn request_session(
    broker: &BrokerConnection,
    queue: &str,
    inbox: &ShortString,
    expires: std::time::Duration,
) -> io::Result<()> {
    let properties = BasicProperties::default()
        .with_type(CONNECT.into())
        .with_reply_to(inbox.clone())
        .with_expiration(expires.as_millis().to_string().into());
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    let routed = async {
        let confirm = broker.pings.basic_publish("".into(), queue.into(), options, &[], properties).await?;
        confirm.await
    };
    match routed.await {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(_) => Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("no gateway consumes {queue}"))),
        Err(err) => Err(refused(broker.error("publishing the connect request", err))),
    }
}

/// The gateway's answer: its inbox, or why it refused.
async fn await_answer(consumer: &mut Consumer, queue: &str) -> io::Result<ShortString> {
    loop {
        let delivery = match consumer.next().await {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => return Err(io::Error::new(io::ErrorKind::ConnectionReset, err.to_string())),
            None => return Err(io::Error::new(io::ErrorKind::ConnectionReset, "the inbox's consumer was cancelled")),
        };
        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        let properties = &delivery.properties;
        match properties.kind().as_ref().map(ShortString::as_str) {
            // The gateway's pings may overtake its answer (they go on another channel).
            Some(PING) => continue,
            Some(ACCEPT) => {
                return properties.reply_to().clone().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the gateway at {queue} accepted without an inbox"),
                    )
                })
            }
            Some(REFUSE) => {
                let reason = String::from_utf8_lossy(&delivery.data);
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("{queue} refused: {reason}")));
            }
            kind => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected answer from {queue}: {kind:?}"),
                ))
            }
        }
    }
}

fn refused(err: BrokerError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, err.to_string())
}
