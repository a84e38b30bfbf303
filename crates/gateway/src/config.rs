//! The gateway's typed configuration: what each setting means and its default.
//!
//! This module holds plain values only. Reading TOML, reporting errors with their key and
//! line, and cross-field validation live in the `weir` binary's `config` module; the
//! gateway trusts what it is given. The README's configuration reference documents
//! every field here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::budget::PayloadLimits;

/// Everything the gateway needs to run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    pub routing: RoutingConfig,
    pub limits: LimitsConfig,
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
}

/// `[limits]`: payload limits of seed 002 plus the total upload size.
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
