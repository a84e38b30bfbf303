//! The gateway's typed configuration: what each setting means and its default.
//!
//! This module holds plain values only. Reading TOML, reporting errors with their key and
//! line, and cross-field validation live in the `weir` binary's `config` module; the
//! gateway trusts what it is given. The README's configuration reference documents
//! every field here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod http2;
mod mount;

pub use http2::Http2Config;
pub use mount::{ApiKey, AuthConfig, JwtAlgorithm, JwtConfig, MountConfig, MountSettings, Profile, Rate};

/// Everything the gateway needs to run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    pub routing: RoutingConfig,
    pub limits: LimitsConfig,
    pub services: ServicesConfig,
    pub log: LogConfig,
    /// `[[mount]]` entries; none means one implicit business mount at `/`.
    pub mounts: Vec<MountConfig>,
    pub tracing: TracingConfig,
    /// `[shared]`: limits shared with the other replicas through Redis; `None` keeps
    /// every limit to this process.
    pub shared: Option<SharedLimitsConfig>,
}

/// `[shared]`: how this replica shares its per-client limits with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLimitsConfig {
    /// Where Redis is, the key prefix, the timeouts and this replica's name.
    pub store: weir_shared::SharedConfig,
    /// What a limit decides while Redis cannot be reached.
    pub on_failure: OnSharedFailure,
}

/// `[shared] on_failure`: a replica's answer while Redis is unreachable or slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnSharedFailure {
    /// Each replica enforces its limits alone, as without `[shared]` (a client may then
    /// get up to the limit on each replica).
    #[default]
    Local,
    /// Requests on rate-limited mounts and new WebSockets on capped mounts get 503.
    Deny,
}

/// `[tracing]`: the gateway's own span of each client request. Trace context is
/// carried to services whatever this says; it only decides where spans go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP receiver (`http://host:4318`, plain HTTP): spans are
    /// posted to its `/v1/traces` as protobuf, in batches. `None`: spans are not
    /// exported, and a trace the gateway starts is not marked sampled.
    pub otlp_endpoint: Option<String>,
}

/// `[server]`: the client-facing HTTP listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address the HTTP front listens on.
    pub listen: SocketAddr,
    /// How long SIGINT/SIGTERM waits for in-flight requests before exiting anyway.
    pub shutdown_grace: Duration,
    /// Timeout for endpoints that declare none.
    pub default_timeout: Duration,
    /// Upper bound on any endpoint's timeout (the effective timeout is capped by it).
    pub max_timeout: Duration,
    /// Longest wait for a whole request head; a slower client gets 408.
    pub header_timeout: Duration,
    /// Longest wait for the next bytes of a request body; a slower client gets 408.
    pub read_timeout: Duration,
    /// Address of the admin surface (budget, routes, metrics); `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Longest a write to a client may stall (it stopped reading); then it is closed.
    pub send_timeout: Duration,
    /// Open client connections per IP address; more are answered 503 and closed.
    pub max_connections_per_ip: u32,
    /// Slowest request body accepted after `data_rate_grace`, in bytes per second (408).
    pub min_request_data_rate: u64,
    /// Slowest response reading accepted after `data_rate_grace`, in bytes per second.
    pub min_response_data_rate: u64,
    /// How long a transfer may run below the minimum data rates before they apply.
    pub data_rate_grace: Duration,
    /// Longest a client connection may stay open with no request in flight; then it is
    /// closed gracefully (HTTP/2: GOAWAY). HTTP/2 peers are pinged at half of it.
    pub idle_timeout: Duration,
    /// Open client connections, both listeners together: every one holds a file
    /// descriptor. At the cap the longest-idle connection is shed for a newcomer; with
    /// none idle the newcomer gets 503. `None`: three quarters of the open-files limit
    /// when the gateway starts, at most 16,384.
    pub max_connections: Option<u32>,
    /// `[server.http2]`: what one HTTP/2 connection may hold and do.
    pub http2: Http2Config,
    /// `[server.tls]`: HTTPS on `listen`; `None` serves plain HTTP (and h2c).
    pub tls: Option<ServerTlsConfig>,
    /// A plain-HTTP listener that answers every request with a 308 to the same path on
    /// `https://` (`None`: no such listener). Meaningful only with `tls`.
    pub http_redirect_listen: Option<SocketAddr>,
    /// Peers (proxies in front of weir) whose `X-Forwarded-For`/`Forwarded` name the
    /// client; from anyone else those fields say nothing about who the client is.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether services also get an RFC 7239 `Forwarded` field (beside `X-Forwarded-*`).
    pub forwarded_header: bool,
    /// A Unix socket where the running `weir serve` hands its listening sockets over to
    /// a successor (an upgrade that drops nothing); `None`: no hand-over.
    pub handover_socket: Option<PathBuf>,
    /// How long a successor waits for the services of the process it takes over from
    /// to register with it before it accepts client connections anyway.
    pub handover_wait: Duration,
    /// How long an idle HTTP/1.1 connection stays open once the gateway is shutting down
    /// (or handing over): a client that sends its next request meanwhile gets its answer,
    /// with `Connection: close`, instead of a connection closed under its request.
    pub keep_alive_drain: Duration,
    /// Services that must each have a healthy registered instance before the admin
    /// listener's `/readyz` answers 200, so an orchestrator sends no traffic to a gateway
    /// that would answer 503; empty: no service is needed.
    pub ready_services: Vec<String>,
}

/// `[server.tls]`: the client listener's certificates, chosen by the name the client
/// asks for (SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// PEM file with the default certificate chain, leaf first: served for the DNS names
    /// it carries, and for any name no entry of `certificates` claims (unless
    /// `strict_sni`).
    pub cert: PathBuf,
    /// PEM file with the default certificate's private key.
    pub key: PathBuf,
    /// More certificates, each served for the names it lists; the first listing a
    /// name wins.
    pub certificates: Vec<SniCertificateConfig>,
    /// Refuse a handshake whose name (or lack of one) no certificate claims, instead of
    /// answering it with the default certificate, which would reveal the names it
    /// carries to anyone who asks.
    pub strict_sni: bool,
    /// Longest a TLS handshake may take once the connection is admitted: a client that
    /// connects and sends nothing (or half a ClientHello) holds a slot until then.
    pub handshake_timeout: Duration,
}

/// `[[server.tls.certificates]]`: one certificate and the names it is served for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCertificateConfig {
    /// Exact DNS names (`api.example.com`) and one-label wildcards (`*.example.com`,
    /// which matches `a.example.com` but neither `example.com` nor `a.b.example.com`).
    pub names: Vec<String>,
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with its private key.
    pub key: PathBuf,
}

impl ServerTlsConfig {
    /// The default `handshake_timeout`.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// HTTPS with the certificate in `cert` and its key in `key`, other settings default.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTlsConfig {
            cert: cert.into(),
            key: key.into(),
            certificates: Vec::new(),
            strict_sni: false,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// `[log]`: the access log, one line per finished request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// Where the lines go.
    pub access: AccessLogTarget,
    /// How each line is written.
    pub format: AccessLogFormat,
}

/// `[log] access`: `"stdout"` (the default), `"off"`, or a file path (appended to,
/// created if absent, opened again at each reload so a rotated log is reopened).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    Off,
    #[default]
    Stdout,
    File(PathBuf),
}

/// `[log] format`: one JSON object per line (the default), or the text line
/// documented in `docs/operations.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    #[default]
    Json,
    Text,
}

/// `[routing]`: how instances are chosen and how health follows heartbeats.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// The gateway's own region; instances in it are preferred.
    pub region: String,
    /// Request header that asks for an exact service version.
    pub version_header: String,
    /// Version used for a service when the request names none (service name → semver).
    pub default_versions: BTreeMap<String, String>,
    /// Interval the gateway asks services to send heartbeats at.
    pub heartbeat_interval: Duration,
    /// An instance silent this long is degraded (used only when no healthy one is left).
    pub degraded_after: Duration,
    /// An instance silent this long is evicted and its connection closed.
    pub evict_after: Duration,
    /// How long an endpoint no instance serves any more still answers 503 (rather than
    /// 404) before it is forgotten: remembering departed services' paths forever would
    /// let services that register many paths and leave grow the table without bound.
    pub forget_after: Duration,
    /// Most (method, template) endpoints the table holds, served or remembered; a
    /// registration that would go over it is refused, so the table's memory is bounded.
    pub max_routes: usize,
}

/// `[limits]`: the payload budget's limits plus the total upload size.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    pub payload: PayloadLimits,
    /// Largest total request body, streamed or not; over it the client gets 413.
    pub max_upload_size: u64,
    /// Size of body chunks read from clients and sent as stream data.
    pub chunk_size: usize,
    /// Per-stream flow-control window the gateway grants services for response bodies.
    pub stream_window: u32,
}

/// The payload budget's limits, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimits {
    /// In-flight bytes of one request.
    pub max_request_bytes_per_call: u64,
    /// In-flight bytes of all requests to one service connection.
    pub max_request_bytes_per_connection: u64,
    /// In-flight bytes across the whole gateway.
    pub max_aggregate_inflight_bytes: u64,
    /// In-flight bytes of all requests of one client (authenticated subject, else IP), so
    /// that one client cannot hold a service connection's whole budget.
    pub max_inflight_bytes_per_client: u64,
}

impl Default for PayloadLimits {
    fn default() -> Self {
        PayloadLimits {
            max_request_bytes_per_call: 1024 * 1024,
            max_request_bytes_per_connection: 16 * 1024 * 1024,
            max_aggregate_inflight_bytes: 256 * 1024 * 1024,
            max_inflight_bytes_per_client: 8 * 1024 * 1024,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            admin_listen: None,
            send_timeout: Duration::from_secs(30),
            max_connections_per_ip: 100,
            min_request_data_rate: 240,
            min_response_data_rate: 240,
            data_rate_grace: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: None,
            http2: Http2Config::default(),
            tls: None,
            http_redirect_listen: None,
            trusted_proxies: Vec::new(),
            forwarded_header: false,
            handover_socket: None,
            handover_wait: Duration::from_secs(5),
            keep_alive_drain: Duration::from_secs(2),
            ready_services: Vec::new(),
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            region: String::new(),
            version_header: "x-weir-version".to_owned(),
            default_versions: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(5),
            degraded_after: Duration::from_secs(15),
            evict_after: Duration::from_secs(30),
            forget_after: Duration::from_secs(5 * 60),
            max_routes: 16 * 1024,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            payload: PayloadLimits::default(),
            max_upload_size: 100 * 1024 * 1024,
            chunk_size: 64 * 1024,
            stream_window: weir_proto::DEFAULT_STREAM_WINDOW,
        }
    }
}

/// `[services]`: where services dial in, and who may register what.
///
/// Authentication applies to network connections (TCP, TLS) only: a service embedded in
/// the gateway's process over the in-memory transport is trusted as the gateway's own
/// code. With no `credentials` at all, network services are accepted without a token
/// (the gateway logs a warning at start-up).
#[derive(Debug, Clone, PartialEq)]
pub struct ServicesConfig {
    /// Address the service listener (TCP, or TLS with `tls`) listens on.
    pub listen: SocketAddr,
    /// Longest time from accepting a service connection to its Hello, TLS handshake
    /// included; a slower peer is dropped.
    pub handshake_timeout: Duration,
    /// TLS for the service listener; `None` is plain TCP.
    pub tls: Option<ServicesTlsConfig>,
    /// `[services.rabbitmq]`: services dial in through this broker too; `None`: not at all.
    pub rabbitmq: Option<RabbitMqConfig>,
    /// Who may register, with what proof, under which paths.
    pub credentials: Vec<ServiceCredential>,
    /// Largest frame payload read from a service before its Welcome (its Hello): an
    /// unauthenticated peer must not make the gateway buffer the 16 MiB a frame may hold.
    pub max_hello_size: usize,
    /// Service connections in their handshake (TLS, then Hello) at once; more are closed
    /// as they are accepted, so a flood of unauthenticated connections is bounded.
    pub max_pending_handshakes: usize,
    /// Most endpoints one service connection may declare, in its Hello or in an update:
    /// each costs routing-table memory and every registration's checks.
    pub max_endpoints: usize,
}

/// `[services.rabbitmq]`: where the broker is and how this gateway's queues are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitMqConfig {
    /// `amqp://` or `amqps://` URL; its credentials are never logged.
    pub url: weir_rabbitmq::BrokerAddress,
    /// Queue naming, prefetch, the broker heartbeat and the liveness ping interval.
    pub settings: weir_rabbitmq::BrokerSettings,
}

/// `[services.tls]`: the listener's certificate and, for mutual TLS, the client CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicesTlsConfig {
    /// PEM file with the gateway's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key.
    pub key: PathBuf,
    /// PEM file with the CA(s) that sign service certificates. When set, every service
    /// must present a certificate signed by one (mutual TLS), and its identity (subject
    /// common name, else first DNS name) can stand in for a token.
    pub client_ca: Option<PathBuf>,
}

/// `[[services.credentials]]`: one way for one service to prove who it is.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceCredential {
    /// The service name the Hello must claim.
    pub service: String,
    /// The shared secret the Hello must carry; `None`: only an mTLS identity equal to
    /// `service` proves it. Never logged.
    pub token: Option<String>,
    /// Path prefixes the service may register endpoints under, segment by segment:
    /// `/api` allows `/api` and `/api/x`, not `/apix`; `/` allows everything.
    pub prefixes: Vec<String>,
}

impl fmt::Debug for ServiceCredential {
    /// The token is redacted: configs end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("service", &self.service)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            handshake_timeout: Duration::from_secs(10),
            tls: None,
            rabbitmq: None,
            credentials: Vec::new(),
            max_hello_size: 64 * 1024,
            max_pending_handshakes: 256,
            max_endpoints: 1024,
        }
    }
}
