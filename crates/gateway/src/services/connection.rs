//! One service connection's life, and the sweeper that watches them all.
//!
//! A service connection's life: Hello read (bounded in time) →
//! authentication and path authorisation ([`crate::services::auth`]; refused: Error frame
//! and close, logged) → registration in the routing table (refused likewise) → Welcome → its
//! events (heartbeats, endpoint updates) until the link closes → removal from the table
//! at once. The health sweeper closes links whose heartbeats stopped (evicted) and sends the
//! gateway's own heartbeats so services can tell a dead gateway from a quiet one.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_proto::{ErrorCode, HealthStatus, Heartbeat, Message, Welcome, PROTOCOL_VERSION};
use weir_transport::memory::{self, MemoryConnector};
use weir_transport::{accept_hello, ByteStream, Link, LinkConfig, LinkEvent};

use super::auth::{Grant, ServicePeer};
use crate::Gateway;

/// The window a service's response (or WebSocket) stream starts with, announced in the
/// Welcome. It grows to `limits.stream_window` while the client takes the bytes as fast
/// as the service sends them, and falls back while the client is slower; so a client that
/// reads nothing (an HTTP/2 window of zero) holds this much per stream and no more.
const RESPONSE_START_WINDOW: u32 = 16 * 1024;

impl Gateway {
    /// Starts accepting in-memory service connections; returns what services dial.
    pub fn attach_memory(self: &Arc<Self>) -> MemoryConnector {
        let (mut listener, connector) = memory::listener();
        let gateway = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(io) = listener.accept().await {
                tokio::spawn(Arc::clone(&gateway).accept_service(io, ServicePeer::embedded()));
            }
        });
        connector
    }

    /// Runs one service connection from its Hello to its close. `peer` says how far the
    /// transport vouches for it (see [`crate::services::auth`]).
    pub(crate) async fn accept_service<T: ByteStream>(self: Arc<Self>, io: T, peer: ServicePeer) {
        let timeout = self.config.services.handshake_timeout;
        let pending = match accept_hello(io, weir_proto::DEFAULT_MAX_FRAME_PAYLOAD, timeout).await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "service connection refused during handshake");
                return;
            }
        };
        let grant = match self.authorize_hello(&pending.hello, &peer) {
            Ok(grant) => grant,
            Err((code, reason)) => return pending.refuse(code, &reason).await,
        };
        let hello = pending.hello.clone();
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            initial_window: self.config.limits.stream_window.min(RESPONSE_START_WINDOW),
            heartbeat_interval: self.config.routing.heartbeat_interval,
        };
        let link_config = LinkConfig { recv_window_max: self.config.limits.stream_window, ..LinkConfig::default() };
        let (link, events) = pending.start(&welcome, link_config);
        let conn_id = self.links.next_id();
        if let Err(err) = self.routing.register(conn_id, &hello, link.clone(), Instant::now()) {
            tracing::warn!(%peer, service = %hello.service, instance = %hello.instance_id, reason = %err, "service registration refused");
            link.close_with_error(ErrorCode::RegistrationRefused, err.to_string());
            return;
        }
        // Registered before welcomed: requests routed here now queue behind the Welcome.
        let opened =
            welcome.to_frame(0).map_err(|e| e.to_string()).and_then(|f| link.open_with(f).map_err(|e| e.to_string()));
        if let Err(err) = opened {
            tracing::warn!(%peer, error = %err, "service link failed before its Welcome");
            self.routing.remove(conn_id);
            return;
        }
        self.links.insert(conn_id, link.clone());
        tracing::info!(%peer, conn_id, service = %hello.service, version = %hello.version, instance = %hello.instance_id, endpoints = hello.endpoints.len(), "service registered");
        self.follow_link(conn_id, &link, events, (&hello.service, &grant)).await;
        self.routing.remove(conn_id);
        self.links.remove(conn_id);
        let reason = link.close_reason().unwrap_or_default();
        tracing::info!(%peer, conn_id, service = %hello.service, instance = %hello.instance_id, %reason, "service disconnected");
    }

    /// Authenticates `hello` and checks its paths; a refusal is logged here and returned
    /// as the Error to send. Tokens are never logged.
    fn authorize_hello(&self, hello: &weir_proto::Hello, peer: &ServicePeer) -> Result<Grant, (ErrorCode, String)> {
        let (service, instance) = (&hello.service, &hello.instance_id);
        let grant = self.service_auth.authenticate(hello, &peer.trust).map_err(|err| {
            tracing::warn!(%peer, %service, %instance, reason = %err, "service connection refused: unauthorized");
            (ErrorCode::Unauthorized, err.to_string())
        })?;
        grant.check(service, &hello.endpoints).map_err(|err| {
            tracing::warn!(%peer, %service, %instance, reason = %err, "service registration refused");
            (ErrorCode::RegistrationRefused, err.to_string())
        })?;
        Ok(grant)
    }

    /// Applies a registered link's events until it closes. Endpoint updates must stay
    /// within the service's `grant`, like the Hello's endpoints.
    async fn follow_link(
        &self,
        conn_id: u64,
        link: &Link,
        mut events: mpsc::UnboundedReceiver<LinkEvent>,
        (service, grant): (&str, &Grant),
    ) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = link.closed() => None,
            };
            match event {
                None => return,
                Some(LinkEvent::Heartbeat(heartbeat)) => self.routing.heartbeat(conn_id, &heartbeat, Instant::now()),
                Some(LinkEvent::EndpointsUpdate(update)) => {
                    let allowed = grant.check(service, &update.endpoints).map_err(|e| e.to_string());
                    let applied = allowed.and_then(|()| {
                        self.routing.update_endpoints(conn_id, &update.endpoints).map_err(|e| e.to_string())
                    });
                    if let Err(err) = applied {
                        tracing::warn!(conn_id, reason = %err, "endpoints update refused; the previous endpoints stay");
                    }
                }
                Some(LinkEvent::Request(_)) => {
                    link.close_with_error(ErrorCode::ProtocolViolation, "a service may not send requests");
                    return;
                }
            }
        }
    }

    /// Starts the task that evicts silent services and sends the gateway's heartbeats.
    pub(crate) fn spawn_health_sweeper(self: &Arc<Self>) -> JoinHandle<()> {
        let gateway = Arc::downgrade(self);
        let every = self.config.routing.heartbeat_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                gateway.sweep_once(Instant::now());
            }
        })
    }

    /// One sweep: evict services silent past `evict_after`, heartbeat the others.
    pub fn sweep_once(&self, now: Instant) {
        for rate in self.mounts.iter().filter_map(|m| m.request_rate.as_ref()) {
            rate.forget_idle();
        }
        for conn_id in self.routing.sweep(now) {
            if let Some(link) = self.links.remove(conn_id) {
                tracing::warn!(conn_id, "evicting a service that stopped sending heartbeats");
                link.close_with_error(ErrorCode::ProtocolViolation, "no heartbeat received in time; evicted");
            }
        }
        for link in self.links.all() {
            let heartbeat =
                Heartbeat { status: HealthStatus::Healthy, in_flight: link.open_streams() as u32, error_rate: 0.0 };
            let _ = link.send_heartbeat(&heartbeat);
        }
    }

    /// Closes every service link (shutdown).
    pub fn close_services(&self, message: &str) {
        for link in self.links.take_all() {
            link.close_with_error(ErrorCode::ShuttingDown, message);
        }
    }
}
