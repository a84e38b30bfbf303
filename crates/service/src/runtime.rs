//! One connection to a gateway: [`Service::serve`] dials (Hello, then Welcome or a
//! refusal) and spawns the session loop, which serves the link's requests, each in its
//! own task (`exchange.rs`), and sends heartbeats until the link closes.
//!
//! A GoAway from the gateway fires [`ServiceSession::going_away`] and changes nothing
//! else: the session serves on until the gateway closes it (`reconnect.rs` dials again).
//!
//! Heartbeats go out every `Welcome::heartbeat_interval` (none when it is zero) and at
//! once whenever the status changes ([`ServiceSession::set_status`]); a gateway heartbeat
//! carrying a probe (protocol version 2) is answered at once with the same probe, so the
//! gateway can time the round trip. Dropping a
//! [`ServiceSession`] does not close the connection; [`ServiceSession::close`] does, as
//! does the gateway. Reconnecting is `reconnect.rs`'s job.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use weir_proto::{ErrorCode, HealthStatus, Heartbeat, Welcome};
use weir_transport::memory::MemoryConnector;
use weir_transport::{ByteStream, Link, LinkConfig, LinkEvent};

use crate::error::ServiceError;
use crate::exchange;
use crate::health::Health;
use crate::service::Service;

/// How long the gateway has to answer the Hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Service {
    /// Connects over `io`: sends the Hello, waits for the gateway's Welcome (at most
    /// [`HANDSHAKE_TIMEOUT`]) and starts serving requests in a background task.
    ///
    /// A gateway that refuses the service yields [`ServiceError::Refused`] with its
    /// reason. Must be called within a Tokio runtime.
    pub async fn serve<T: ByteStream>(&self, io: T) -> Result<ServiceSession, ServiceError> {
        self.serve_with(io, Health::new()).await
    }

    /// Connects through the in-memory transport (a gateway in the same process).
    pub async fn serve_memory(&self, connector: &MemoryConnector) -> Result<ServiceSession, ServiceError> {
        let io = connector.connect().await.map_err(ServiceError::Connect)?;
        self.serve(io).await
    }

    /// [`Service::serve`] reporting into an existing `health`.
    pub(crate) async fn serve_with<T: ByteStream>(
        &self,
        io: T,
        health: Arc<Health>,
    ) -> Result<ServiceSession, ServiceError> {
        let (link, events, welcome) =
            weir_transport::dial(io, self.hello(), LinkConfig::default(), HANDSHAKE_TIMEOUT).await?;
        tracing::info!(
            service = %self.name(),
            instance = %self.instance_id(),
            heartbeat_interval = ?welcome.heartbeat_interval,
            "registered with the gateway"
        );
        let going_away = CancellationToken::new();
        let session_loop = SessionLoop {
            service: self.clone(),
            link: link.clone(),
            health: Arc::clone(&health),
            going_away: going_away.clone(),
        };
        tokio::spawn(session_loop.run(events, welcome.heartbeat_interval));
        tokio::spawn(crate::liveness::watch(link.clone(), welcome.heartbeat_interval, self.inner.heartbeat_miss_count));
        Ok(ServiceSession { link, welcome, health, going_away })
    }
}

/// A live connection to one gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServiceSession {
    link: Link,
    welcome: Welcome,
    health: Arc<Health>,
    /// Fired by a GoAway: whoever keeps the service connected dials again at once.
    going_away: CancellationToken,
}

impl ServiceSession {
    /// Resolves once the gateway has sent GoAway: it wants a new connection, and this
    /// one stays up (serving its streams and any new request) until the gateway closes it.
    pub async fn going_away(&self) {
        self.going_away.cancelled().await
    }

    /// The multiplexed link under the session.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// What the gateway answered to the Hello.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Resolves when the connection has closed, for any reason.
    pub async fn closed(&self) {
        self.link.closed().await
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.link.close_reason()
    }

    /// Sets the status reported to the gateway (e.g. `Draining` before a shutdown, so no
    /// new requests come). A heartbeat carrying it is sent at once.
    pub fn set_status(&self, status: HealthStatus) {
        self.health.set_status(status);
    }

    /// The status reported to the gateway.
    pub fn status(&self) -> HealthStatus {
        self.health.status()
    }

    /// Requests being served now (handler running or response being sent).
    pub fn in_flight(&self) -> u32 {
        self.health.in_flight()
    }

    /// Share of failed answers (5xx, panics, broken body streams) among the last 100.
    pub fn error_rate(&self) -> f32 {
        self.health.error_rate()
    }

    /// Closes the connection, telling the gateway the service is shutting down. Requests
    /// in flight are cancelled (their tokens fire).
    pub fn close(&self) {
        self.link.close_with_error(ErrorCode::ShuttingDown, "the service closed the connection");
    }
}

/// The background task of one session.
struct SessionLoop {
    service: Service,
    link: Link,
    health: Arc<Health>,
    /// Fired when the gateway sends GoAway.
    going_away: CancellationToken,
}

impl SessionLoop {
    async fn run(self, mut events: mpsc::UnboundedReceiver<LinkEvent>, heartbeat_interval: Duration) {
        let mut status = self.health.subscribe();
        let mut ticker = heartbeat_ticker(heartbeat_interval);
        if self.health.status() != HealthStatus::Healthy {
            self.heartbeat();
        }
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(LinkEvent::Request(request)) => exchange::spawn(&self.service, &self.health, request),
                    Some(LinkEvent::GoAway(go_away)) => {
                        tracing::info!(reason = %go_away.reason, "the gateway asked for a new connection; this one serves on until it closes");
                        self.going_away.cancel();
                    }
                    // The gateway's probe is answered at once, so its round trip measures
                    // the link and this loop, not the ticker.
                    Some(LinkEvent::Heartbeat(Heartbeat { probe: Some(probe), .. })) => self.answer_probe(probe),
                    Some(LinkEvent::Heartbeat(_) | LinkEvent::EndpointsUpdate(_) | LinkEvent::EndpointsOverLimit { .. }) => {}
                    // The link's reader has stopped: the link is closed.
                    None => break,
                },
                () = tick(&mut ticker) => self.heartbeat(),
                // Never an error: `self.health` owns the sender and outlives this loop.
                Ok(()) = status.changed() => self.heartbeat(),
            }
        }
        tracing::info!(reason = ?self.link.close_reason(), "gateway connection closed");
    }

    fn heartbeat(&self) {
        self.send_heartbeat(self.health.heartbeat());
    }

    /// A heartbeat with the current figures, echoing the gateway's `probe`.
    fn answer_probe(&self, probe: u64) {
        self.send_heartbeat(Heartbeat { probe: Some(probe), ..self.health.heartbeat() });
    }

    fn send_heartbeat(&self, heartbeat: Heartbeat) {
        if let Err(err) = self.link.send_heartbeat(&heartbeat) {
            tracing::debug!(error = %err, "heartbeat not sent");
        }
    }
}

fn heartbeat_ticker(period: Duration) -> Option<Interval> {
    if period.is_zero() {
        return None;
    }
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(interval)
}

/// The next tick, or never without a ticker.
async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
