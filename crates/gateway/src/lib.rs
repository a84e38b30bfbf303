//! weir's gateway: clients' HTTP requests in, frames to the services that dialled in, and
//! their answers back, under the payload budget.
//!
//! The folders follow one request, in order (`ARCHITECTURE.md` tells the path file by
//! file): `downstream` (the client's connection) → `request` (the phases: mount,
//! authenticate, route, validate, rate limit, register) → `static_files` or `upstream`
//! (the exchange with a service) → `response` (the body the client gets, and the one
//! table from failure to status code). Beside the path: `services` (services dialling
//! in), `routing` (the table they fill), `limits` (the protections, as RAII units) and
//! [`config`] (plain values).
//!
//! [`Gateway`] holds the shared state; [`Gateway::run`] serves it until shutdown. What a
//! configuration reload replaces ([`reload`]: mounts, service credentials, client
//! certificates and the settings read per request or per connection) is one immutable
//! [`reload::Live`] behind an `ArcSwap`: a request, connection or handshake loads it once
//! and keeps that snapshot to its end, so a reload never changes anything under work in
//! progress.

pub mod config;
mod downstream;
mod limits;
mod observe;
pub mod reload;
mod request;
mod response;
mod routing;
mod services;
mod static_files;
mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_shared::SharedStore;
use weir_transport::tls::TlsAcceptor;
use weir_transport::Link;

pub use config::GatewayConfig;
pub use downstream::tls::{CertificateProblem, ClientTls, ClientTlsError};
pub use limits::budget::{BudgetCounters, PayloadBudget};
pub use limits::connections::{default_max_connections, open_files_limit, raise_open_files_limit, ConnectionCap};
pub use limits::in_flight::{RequestRegistry, RequestSnapshot};
pub use observe::access_log::AccessLogError;
pub use observe::metrics::Metrics;
pub use observe::otlp::{traces_url as otlp_traces_url, TracingError};
pub use reload::{ConfigSource, ReloadError, ReloadReport};
pub use request::mount::GatewayStartError;
pub use routing::RoutingTable;

use downstream::Surface;
use observe::access_log::AccessLog;
use reload::Live;
use request::mount::MountTable;
use request::Phases;
use services::auth::ServiceAuth;
use services::ServiceLinks;
use upstream::Upstream;

/// The running gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration in force and the state built from it that a reload replaces
    /// whole; loaded once per request, connection or handshake (see [`reload`]).
    live: ArcSwap<Live>,
    /// Where [`Gateway::reload_from_source`] reads the configuration again, if the
    /// gateway was started from a file; set once, at start.
    config_source: reload::SourceSlot,
    /// One reload at a time: two interleaved would each build from the same old state.
    reloading: Mutex<()>,
    routing: RoutingTable<Link>,
    budget: Arc<PayloadBudget>,
    /// Shared with every relayed response body, which counts its own failures.
    metrics: Arc<Metrics>,
    /// Where each finished request writes its line; replaced by a reload.
    access_log: Arc<AccessLog>,
    /// Where each request's span goes when it ends (`[tracing] otlp_endpoint`); built at
    /// start, flushed when [`Gateway::run`] ends.
    spans: Option<Arc<observe::otlp::SpanExport>>,
    /// Business requests in flight, for the admin surface.
    registry: Arc<RequestRegistry>,
    /// Live service links: eviction and shutdown must reach them.
    links: ServiceLinks,
    /// Stamps the probes of the gateway's heartbeats and times their answers.
    probes: services::probe::ProbeClock,
    /// The cap on open client connections, shared by both listeners (one fd each).
    connections: Arc<ConnectionCap>,
    /// One permit per network service connection in its handshake
    /// (`services.max_pending_handshakes`), so unauthenticated peers are bounded.
    pending_handshakes: Arc<tokio::sync::Semaphore>,
    /// Open WebSocket sessions: told to go away at shutdown, and awaited before the
    /// service links close, so their clients get 1001 rather than a broken stream.
    websockets: upstream::websocket::Sessions,
    /// Whether the service listener accepts (paused while another process takes over),
    /// and the signal that a service registered.
    intake: services::intake::ServiceIntake,
    /// Whether the public listener accepts clients: set once its gate has opened (a
    /// process taking over waits for its services first), cleared when shutdown begins;
    /// the admin listener's `/readyz` reads it.
    public_listening: AtomicBool,
    /// `[shared]`: the Redis store the replicas share their limits through, connected
    /// at start (a restart is needed to change it); `None` keeps every limit local.
    shared: Option<limits::shared::SharedLimits>,
}

/// The sockets [`Gateway::run`] serves.
pub struct Listeners {
    /// Client traffic routed to services.
    pub public: TcpListener,
    /// The admin surface (`/budget`, `/routes`, `/requests`, `/metrics`), if enabled.
    pub admin: Option<TcpListener>,
    /// Plain HTTP answered with redirects to `public` over HTTPS
    /// (`server.http_redirect_listen`), if enabled.
    pub redirect: Option<TcpListener>,
    /// Where services in other processes dial in, over TLS when an acceptor is given;
    /// `None`: only in-memory services ([`Gateway::attach_memory`]).
    pub services: Option<(TcpListener, Option<TlsAcceptor>)>,
    /// Services dialling in through a RabbitMQ broker (`[services.rabbitmq]`), if enabled.
    pub broker: Option<weir_rabbitmq::BrokerListener>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = self.services.as_ref().map(|(listener, tls)| (listener, tls.as_ref().map(|_| "TLS")));
        f.debug_struct("Listeners")
            .field("public", &self.public)
            .field("admin", &self.admin)
            .field("redirect", &self.redirect)
            .field("services", &services)
            .field("broker", &self.broker.as_ref().map(|broker| broker.address().to_string()))
            .finish()
    }
}

impl Gateway {
    /// A gateway with `config`; nothing runs until [`Gateway::run`] or a service attaches.
    /// Fails when a mount's authentication cannot be set up (an unreadable RS256 key), a
    /// client certificate (`[server.tls]`) cannot be served, or spans are to be exported
    /// (`[tracing]`) but the call is not made inside a Tokio runtime.
    pub fn new(config: GatewayConfig) -> Result<Arc<Self>, GatewayStartError> {
        Gateway::with_shared(config, None)
    }

    /// A gateway with `config` whose per-client limits are shared with other replicas
    /// through `store` (connected from `config.shared`), when given: the rate limits and
    /// the WebSocket caps of every mount count all replicas' traffic.
    pub fn with_shared(config: GatewayConfig, store: Option<SharedStore>) -> Result<Arc<Self>, GatewayStartError> {
        let on_failure = config.shared.as_ref().map(|shared| shared.on_failure).unwrap_or_default();
        let shared = store.map(|store| limits::shared::SharedLimits { store, on_failure });
        let server = &config.server;
        let live = Live {
            client_tls: server.tls.as_ref().map(ClientTls::load).transpose()?,
            mounts: MountTable::new(&config, shared.as_ref())?,
            service_auth: ServiceAuth::new(&config.services),
            config: Arc::new(config.clone()),
        };
        let server = &config.server;
        let metrics = Arc::new(Metrics::default());
        let access_log = Arc::new(AccessLog::new(&config.log, metrics.access_log_dropped.clone())?);
        Ok(Arc::new(Gateway {
            live: ArcSwap::from_pointee(live),
            config_source: reload::SourceSlot::default(),
            reloading: Mutex::new(()),
            websockets: upstream::websocket::Sessions::default(),
            intake: services::intake::ServiceIntake::default(),
            registry: Arc::new(RequestRegistry::default()),
            routing: RoutingTable::new(config.routing.clone(), server.default_timeout, server.max_timeout),
            budget: PayloadBudget::new(config.limits.payload, limits::budget::mount_shares(&config.mounts)),
            metrics,
            access_log,
            spans: observe::otlp::SpanExport::new(&config.tracing)?,
            links: ServiceLinks::default(),
            probes: services::probe::ProbeClock::default(),
            connections: ConnectionCap::new(server.max_connections.unwrap_or_else(default_max_connections)),
            pending_handshakes: Arc::new(tokio::sync::Semaphore::new(config.services.max_pending_handshakes)),
            public_listening: AtomicBool::new(false),
            shared,
        }))
    }

    /// Serves `listeners` until `shutdown` fires: the health sweeper, the service listener,
    /// the admin surface and the public front. Then the fronts stop accepting and drain
    /// for at most `server.shutdown_grace`, every WebSocket closes its client with 1001
    /// "Going away" (awaited for at most the grace too), the service listener stops,
    /// every service link is closed, the sweeper ends, the spans still queued are
    /// exported and the access log is flushed.
    pub async fn run(self: &Arc<Self>, listeners: Listeners, shutdown: CancellationToken) -> std::io::Result<()> {
        self.run_public_after(listeners, shutdown, std::future::ready(())).await
    }

    /// [`Gateway::run`], accepting on the public listener only once `public_gate`
    /// resolves (the other listeners at once): a process taking over from another waits
    /// for the services to register with it first. Shutdown before the gate still drains.
    pub async fn run_public_after(
        self: &Arc<Self>,
        listeners: Listeners,
        shutdown: CancellationToken,
        public_gate: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let sweeper = self.spawn_health_sweeper();
        let cluster = self.shared.as_ref().map(|shared| {
            let follow = downstream::cluster::follow_cancels(shared.store.clone(), Arc::clone(&self.registry));
            let announce = downstream::cluster::announce_instances(Arc::downgrade(self), shared.store.clone());
            [tokio::spawn(follow), tokio::spawn(announce)]
        });
        let services = listeners.services.map(|(listener, tls)| {
            let (gateway, shutdown) = (Arc::clone(self), shutdown.clone());
            tokio::spawn(async move { gateway.serve_services(listener, tls, shutdown).await })
        });
        let broker = listeners.broker.map(|listener| {
            let (gateway, shutdown) = (Arc::clone(self), shutdown.clone());
            tokio::spawn(async move { gateway.serve_broker_services(listener, shutdown).await })
        });
        let admin = listeners.admin.map(|listener| {
            tokio::spawn(downstream::serve(Arc::clone(self), listener, Surface::Admin, shutdown.clone()))
        });
        let redirect = match listeners.redirect {
            Some(listener) => {
                let surface = Surface::Redirect { https_port: listeners.public.local_addr()?.port() };
                Some(tokio::spawn(downstream::serve(Arc::clone(self), listener, surface, shutdown.clone())))
            }
            None => None,
        };
        let going_away = {
            let (gateway, shutdown) = (Arc::clone(self), shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                gateway.public_listening.store(false, Ordering::Relaxed);
                gateway.websockets.go_away();
            })
        };
        tokio::select! {
            () = public_gate => {}
            () = shutdown.cancelled() => {}
        }
        // Checked after the store too: a shutdown between them must not leave it set.
        self.public_listening.store(true, Ordering::Relaxed);
        if shutdown.is_cancelled() {
            self.public_listening.store(false, Ordering::Relaxed);
        }
        let served = downstream::serve(Arc::clone(self), listeners.public, Surface::Public, shutdown).await;
        for task in [admin, redirect].into_iter().flatten() {
            let _ = task.await;
        }
        let _ = going_away.await;
        self.websockets.closed(self.config().server.shutdown_grace).await;
        for task in [services, broker].into_iter().flatten() {
            let _ = task.await;
        }
        self.close_services("gateway shutting down");
        sweeper.abort();
        for task in cluster.into_iter().flatten() {
            task.abort();
        }
        if let Some(spans) = &self.spans {
            Arc::clone(spans).shutdown().await;
        }
        let access_log = Arc::clone(&self.access_log);
        let _ = tokio::task::spawn_blocking(move || access_log.flush()).await;
        served
    }

    /// The configuration in force: the one it started with, or the last reloaded.
    pub fn config(&self) -> Arc<GatewayConfig> {
        Arc::clone(&self.live.load().config)
    }

    /// The configuration and the state built from it, as one snapshot.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Whether the public listener accepts clients now (its gate opened, no shutdown).
    pub(crate) fn public_listening(&self) -> bool {
        self.public_listening.load(Ordering::Relaxed)
    }

    /// The routing table.
    pub fn routing(&self) -> &RoutingTable<Link> {
        &self.routing
    }

    /// The payload budget.
    pub fn budget(&self) -> &Arc<PayloadBudget> {
        &self.budget
    }

    /// Business requests in flight.
    pub fn registry(&self) -> &Arc<RequestRegistry> {
        &self.registry
    }

    /// `[shared]`: the store the replicas share their limits through, if configured.
    pub fn shared_limits(&self) -> Option<&limits::shared::SharedLimits> {
        self.shared.as_ref()
    }

    /// Request and error counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Open WebSockets of `user` (subject or client IP) on the mount with `prefix`.
    pub fn open_websockets(&self, prefix: &str, user: &str) -> u32 {
        let live = self.live();
        let mount = live.mounts.iter().find(|m| m.config.prefix == prefix);
        mount.map_or(0, |m| m.websockets.count(user))
    }

    /// Live service connections.
    pub fn service_connections(&self) -> usize {
        self.links.len()
    }

    /// HTTPS on the public listener, if configured: the certificates in force.
    pub fn client_tls(&self) -> Option<ClientTls> {
        self.live.load().client_tls.clone()
    }

    /// The cap on open client connections: its limit and how many are open.
    pub fn connections(&self) -> &Arc<ConnectionCap> {
        &self.connections
    }

    /// The settings and state of one request's phases, from the snapshot `live` it
    /// loaded when it began.
    fn phases<'g>(&'g self, live: &'g Live) -> Phases<'g> {
        Phases {
            mounts: &live.mounts,
            routing: &self.routing,
            version_header: &live.config.routing.version_header,
            registry: &self.registry,
            upstream: Upstream {
                server: &live.config.server,
                limits: &live.config.limits,
                budget: &self.budget,
                metrics: &self.metrics,
                sessions: &self.websockets,
            },
        }
    }
}
