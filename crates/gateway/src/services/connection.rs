//! The gateway: shared state, and the service side of it (services dialling in).
//!
//! [`Gateway`] owns the routing table, the payload budget, the metrics and the live
//! service links. A service connection's life: Hello read (bounded in time) →
//! authentication and path authorisation ([`crate::services::auth`]; refused: Error frame
//! and close, logged) → registration in the routing table (refused likewise) → Welcome → its
//! events (heartbeats, endpoint updates) until the link closes → removal from the table
//! at once. A sweeper closes links whose heartbeats stopped (evicted) and sends the
//! gateway's own heartbeats so services can tell a dead gateway from a quiet one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_proto::{ErrorCode, HealthStatus, Heartbeat, Message, Welcome, PROTOCOL_VERSION};
use weir_transport::memory::{self, MemoryConnector};
use weir_transport::{accept_hello, ByteStream, Link, LinkConfig, LinkEvent};

use crate::request::authenticate::{AuthSetupError, Authenticator};
use crate::limits::budget::PayloadBudget;
use crate::config::GatewayConfig;
use crate::downstream::metrics::Metrics;
use crate::request::mount::{Mount, MountTable};
use crate::limits::rate::RateLimits;
use crate::limits::in_flight::RequestRegistry;
use crate::routing::RoutingTable;
use crate::services::auth::{Grant, ServiceAuth, ServicePeer};
use crate::upstream::websocket::WsConnections;

/// Why a gateway could not be built from its configuration.
#[derive(Debug, Error)]
pub enum GatewayStartError {
    /// A mount's authentication could not be set up.
    #[error("mount {prefix:?}: {source}")]
    Auth {
        prefix: String,
        #[source]
        source: AuthSetupError,
    },
}

/// The running gateway's shared state.
pub struct Gateway {
    config: GatewayConfig,
    routing: RoutingTable<Link>,
    budget: Arc<PayloadBudget>,
    metrics: Metrics,
    /// Live service links by connection id: eviction and shutdown must reach them.
    links: Mutex<HashMap<u64, Link>>,
    /// Connection ids are never reused, so a stale id can never name a new connection.
    next_conn_id: AtomicU64,
    mounts: MountTable,
    /// One authenticator per mount prefix (business mounts use theirs).
    authenticators: HashMap<String, Authenticator>,
    rate_limits: RateLimits,
    /// Open WebSockets per mount and user (`ws_max_connections_per_user`).
    ws_connections: WsConnections,
    /// Business requests in flight, for the admin surface.
    registry: Arc<RequestRegistry>,
    /// Checks service Hellos against `[services]` credentials.
    service_auth: ServiceAuth,
}

impl Gateway {
    /// A gateway with `config`; nothing runs until a front or a service is attached.
    /// Fails when a mount's authentication cannot be set up (an unreadable RS256 key).
    pub fn new(config: GatewayConfig) -> Result<Arc<Self>, GatewayStartError> {
        let server = &config.server;
        let mounts = MountTable::new(&config);
        let authenticators = mounts
            .iter()
            .map(|m| {
                let prefix = m.config.prefix.clone();
                match Authenticator::new(&m.config.auth) {
                    Ok(authenticator) => Ok((prefix, authenticator)),
                    Err(source) => Err(GatewayStartError::Auth { prefix, source }),
                }
            })
            .collect::<Result<_, _>>()?;
        let rate_limits = RateLimits::new(&mounts);
        let ws_connections = WsConnections::new(&mounts);
        Ok(Arc::new(Gateway {
            mounts,
            authenticators,
            rate_limits,
            ws_connections,
            registry: Arc::new(RequestRegistry::default()),
            routing: RoutingTable::new(config.routing.clone(), server.default_timeout, server.max_timeout),
            budget: PayloadBudget::new(config.limits.payload),
            metrics: Metrics::default(),
            links: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            service_auth: ServiceAuth::new(&config.services),
            config,
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The routing table.
    pub fn routing(&self) -> &RoutingTable<Link> {
        &self.routing
    }

    /// The payload budget.
    pub fn budget(&self) -> &Arc<PayloadBudget> {
        &self.budget
    }

    /// The mounts, longest prefix first.
    pub fn mounts(&self) -> &MountTable {
        &self.mounts
    }

    /// The authenticator of `mount`.
    pub fn authenticator(&self, mount: &Mount) -> &Authenticator {
        // Built for every mount in `new`, from the same table: the lookup cannot miss.
        &self.authenticators[&mount.config.prefix]
    }

    /// Business requests in flight.
    pub fn registry(&self) -> &Arc<RequestRegistry> {
        &self.registry
    }

    /// Request rate limits of every mount.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// Open WebSockets per mount and user.
    pub(crate) fn ws_connections(&self) -> &WsConnections {
        &self.ws_connections
    }

    /// Open WebSockets of `user` (subject or client IP) on the mount with `prefix`.
    pub fn open_websockets(&self, prefix: &str, user: &str) -> u32 {
        self.ws_connections.count(prefix, user)
    }

    /// Request and error counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The service credentials in force.
    pub fn service_auth(&self) -> &ServiceAuth {
        &self.service_auth
    }

    /// Live service connections.
    pub fn service_connections(&self) -> usize {
        self.lock_links().len()
    }

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
    pub async fn accept_service<T: ByteStream>(self: Arc<Self>, io: T, peer: ServicePeer) {
        let timeout = self.config.services.handshake_timeout;
        let pending = match accept_hello(io, weir_proto::DEFAULT_MAX_FRAME_PAYLOAD, timeout).await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "service connection refused during handshake");
                return;
            }
        };
        let grant = match self.admit(&pending.hello, &peer) {
            Ok(grant) => grant,
            Err((code, reason)) => return pending.refuse(code, &reason).await,
        };
        let hello = pending.hello.clone();
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            initial_window: self.config.limits.stream_window,
            heartbeat_interval: self.config.routing.heartbeat_interval,
        };
        let (link, events) = pending.start(&welcome, LinkConfig::default());
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
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
        self.lock_links().insert(conn_id, link.clone());
        tracing::info!(%peer, conn_id, service = %hello.service, version = %hello.version, instance = %hello.instance_id, endpoints = hello.endpoints.len(), "service registered");
        self.follow_link(conn_id, &link, events, (&hello.service, &grant)).await;
        self.routing.remove(conn_id);
        self.lock_links().remove(&conn_id);
        let reason = link.close_reason().unwrap_or_default();
        tracing::info!(%peer, conn_id, service = %hello.service, instance = %hello.instance_id, %reason, "service disconnected");
    }

    /// Authenticates `hello` and checks its paths; a refusal is logged here and returned
    /// as the Error to send. Tokens are never logged.
    fn admit(&self, hello: &weir_proto::Hello, peer: &ServicePeer) -> Result<Grant, (ErrorCode, String)> {
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
    pub fn spawn_health_sweeper(self: &Arc<Self>) -> JoinHandle<()> {
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
        self.rate_limits.forget_idle();
        for conn_id in self.routing.sweep(now) {
            if let Some(link) = self.lock_links().remove(&conn_id) {
                tracing::warn!(conn_id, "evicting a service that stopped sending heartbeats");
                link.close_with_error(ErrorCode::ProtocolViolation, "no heartbeat received in time; evicted");
            }
        }
        let links: Vec<Link> = self.lock_links().values().cloned().collect();
        for link in links {
            let heartbeat =
                Heartbeat { status: HealthStatus::Healthy, in_flight: link.open_streams() as u32, error_rate: 0.0 };
            let _ = link.send_heartbeat(&heartbeat);
        }
    }

    /// Closes every service link (shutdown).
    pub fn close_services(&self, message: &str) {
        let links: Vec<Link> = self.lock_links().drain().map(|(_, link)| link).collect();
        for link in links {
            link.close_with_error(ErrorCode::ShuttingDown, message);
        }
    }

    fn lock_links(&self) -> MutexGuard<'_, HashMap<u64, Link>> {
        // Inserts and removals only: a poisoned map is still a valid map.
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
}
