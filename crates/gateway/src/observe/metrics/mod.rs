//! The gateway's metrics, served at the admin listener's `/metrics` in Prometheus' text
//! format (version 0.0.4) by the `prometheus-client` crate: requests and their answers per
//! route ([`http`]), every gateway error by its code, relayed response bodies that failed
//! midway by their reason, client TLS handshakes, configuration reloads, access log lines
//! dropped, and gauges read
//! from the gateway's state at each scrape (the budget, open connections).
//!
//! Every family is registered once, in [`Metrics::default`]; the families whose label
//! values are a fixed list (error codes, relay reasons) have every series created then,
//! so a scrape shows zeros rather than nothing. The names follow the OpenTelemetry HTTP
//! semantic conventions where one exists (`http_server_*`) and are `weir_*` otherwise;
//! `docs/operations.md` lists them all.

pub(crate) mod backpressure;
pub(crate) mod budget;
pub(crate) mod http;
mod process;
pub(crate) mod services;
pub(crate) mod shared;
pub(crate) mod websocket;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::limits::budget::BudgetCounters;
use crate::response::error::GatewayError;
use crate::response::BodyError;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A series labelled by one fixed word: an error code, a reason, a result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// What the gateway counts, and the registry that renders it.
#[derive(Debug)]
pub struct Metrics {
    /// Owns the text encoding of every family below (each is a shared handle).
    registry: Registry,
    /// Client requests on the public listener.
    requests: Counter,
    /// Error answers by [`GatewayError::code`].
    errors: Family<CodeLabel, Counter>,
    /// Relayed response bodies that failed after their head was sent, by
    /// [`BodyError::RELAY_REASONS`]: the client saw a cut connection or a reset stream.
    relay_failures: Family<ReasonLabel, Counter>,
    /// Client TLS handshakes that failed, by [`Metrics::TLS_HANDSHAKE_FAILURES`].
    tls_handshake_failures: Family<ReasonLabel, Counter>,
    /// Client TLS handshakes that completed.
    tls_handshakes: Counter,
    /// Configuration reloads, by [`Metrics::RELOAD_RESULTS`].
    config_reloads: Family<ResultLabel, Counter>,
    /// Access log lines dropped: the writer fell behind, or writing failed.
    pub(crate) access_log_dropped: Counter,
    /// Per route: durations, body sizes, requests in flight, refusals.
    pub(crate) http: http::HttpMetrics,
    /// The payload budget per service connection, and its refusals by limit.
    pub(crate) budget: budget::BudgetMetrics,
    /// Credit waits and bytes in flight per route.
    pub(crate) backpressure: backpressure::BackpressureMetrics,
    /// Instances, links, reconnects and handshake failures of services.
    pub(crate) services: services::ServiceMetrics,
    /// Open WebSocket sessions, their messages and closes, per mount.
    pub(crate) websocket: websocket::WebSocketMetrics,
    /// The shared limits' link to Redis.
    shared: shared::SharedMetrics,
    /// Read from the gateway's state at each scrape ([`Metrics::render`]).
    scraped: ScrapedGauges,
}

/// Gauges whose value is the gateway's state at the moment of a scrape.
#[derive(Debug, Default)]
struct ScrapedGauges {
    budget_reserved: Gauge,
    budget_reservations: Gauge,
    budget_limit: Gauge,
    service_connections: Gauge,
    client_connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            requests: Counter::default(),
            errors: Family::default(),
            relay_failures: Family::default(),
            tls_handshake_failures: Family::default(),
            tls_handshakes: Counter::default(),
            config_reloads: Family::default(),
            access_log_dropped: Counter::default(),
            http: http::HttpMetrics::default(),
            budget: budget::BudgetMetrics::default(),
            backpressure: backpressure::BackpressureMetrics::default(),
            services: services::ServiceMetrics::default(),
            websocket: websocket::WebSocketMetrics::default(),
            shared: shared::SharedMetrics::default(),
            scraped: ScrapedGauges::default(),
            registry: Registry::default(),
        };
        metrics.register(&mut registry);
        for code in GatewayError::CODES {
            let _ = metrics.errors.get_or_create(&CodeLabel { code });
        }
        for reason in BodyError::RELAY_REASONS {
            let _ = metrics.relay_failures.get_or_create(&ReasonLabel { reason });
        }
        for reason in Self::TLS_HANDSHAKE_FAILURES {
            let _ = metrics.tls_handshake_failures.get_or_create(&ReasonLabel { reason });
        }
        for result in Self::RELOAD_RESULTS {
            let _ = metrics.config_reloads.get_or_create(&ResultLabel { result });
        }
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// Why a client TLS handshake failed: it did not end within `handshake_timeout`, or
    /// it broke (a bad ClientHello, a name refused under `strict_sni`, a closed socket).
    pub const TLS_HANDSHAKE_FAILURES: [&'static str; 2] = ["timeout", "error"];

    /// A configuration reload applied, or refused (nothing changed).
    pub const RELOAD_RESULTS: [&'static str; 2] = ["ok", "failed"];

    fn register(&self, registry: &mut Registry) {
        registry.register("weir_requests", "Client requests on the public listener", self.requests.clone());
        registry.register("weir_errors", "Error answers, by the error's code", self.errors.clone());
        let relay = "Relayed response bodies that failed after their head was sent, by reason";
        registry.register("weir_relayed_body_failures", relay, self.relay_failures.clone());
        let failed = "Client TLS handshakes that failed, by reason";
        registry.register("weir_tls_handshake_failures", failed, self.tls_handshake_failures.clone());
        registry.register("weir_tls_handshakes", "Client TLS handshakes completed", self.tls_handshakes.clone());
        let reloads = "Configuration reloads, by result";
        registry.register("weir_config_reloads", reloads, self.config_reloads.clone());
        let dropped = "Access log lines dropped (the writer fell behind or a write failed)";
        registry.register("weir_access_log_dropped_lines", dropped, self.access_log_dropped.clone());
        self.http.register(registry);
        self.budget.register(registry);
        self.backpressure.register(registry);
        self.services.register(registry);
        self.websocket.register(registry);
        self.shared.register(registry);
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        let s = &self.scraped;
        let reserved = "Request bytes reserved in the payload budget";
        registry.register_with_unit("weir_budget_reserved", reserved, Unit::Bytes, s.budget_reserved.clone());
        let reservations = "Open reservations in the payload budget";
        registry.register("weir_budget_reservations", reservations, s.budget_reservations.clone());
        let limit = "The payload budget's limit for the whole gateway";
        registry.register_with_unit("weir_budget_limit", limit, Unit::Bytes, s.budget_limit.clone());
        let services = "Open service connections";
        registry.register("weir_service_connections", services, s.service_connections.clone());
        let clients = "Open client connections, on every listener";
        registry.register("weir_client_connections", clients, s.client_connections.clone());
    }

    /// Counts a configuration reload.
    pub(crate) fn config_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.config_reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Configuration reloads with `result` (one of [`Metrics::RELOAD_RESULTS`]) so far.
    pub fn config_reloads(&self, result: &str) -> u64 {
        let result = Self::RELOAD_RESULTS.into_iter().find(|r| *r == result);
        result.and_then(|result| self.config_reloads.get(&ResultLabel { result }).map(|c| c.get())).unwrap_or(0)
    }

    /// Counts a completed client TLS handshake.
    pub(crate) fn tls_handshake_completed(&self) {
        self.tls_handshakes.inc();
    }

    /// Counts a failed client TLS handshake; `reason` is one of
    /// [`Metrics::TLS_HANDSHAKE_FAILURES`].
    pub(crate) fn tls_handshake_failed(&self, reason: &'static str) {
        if Self::TLS_HANDSHAKE_FAILURES.contains(&reason) {
            self.tls_handshake_failures.get_or_create(&ReasonLabel { reason }).inc();
        }
    }

    /// Client TLS handshakes that failed with `reason` so far.
    pub fn tls_handshake_failures(&self, reason: &str) -> u64 {
        let reason = Self::TLS_HANDSHAKE_FAILURES.into_iter().find(|r| *r == reason);
        reason.and_then(|reason| self.tls_handshake_failures.get(&ReasonLabel { reason }).map(|c| c.get())).unwrap_or(0)
    }

    /// Counts a request.
    pub(crate) fn request(&self) {
        self.requests.inc();
    }

    /// Counts an error answer.
    pub(crate) fn error(&self, error: &GatewayError) {
        self.errors.get_or_create(&CodeLabel { code: error.code() }).inc();
    }

    /// Counts a relayed response body's failure.
    pub(crate) fn relay_failure(&self, error: &BodyError) {
        if let Some(index) = error.relay_index() {
            let reason = BodyError::RELAY_REASONS[index];
            self.relay_failures.get_or_create(&ReasonLabel { reason }).inc();
        }
    }

    /// Relayed bodies that failed with `reason` so far.
    pub fn relay_failures(&self, reason: &str) -> u64 {
        let reason = BodyError::RELAY_REASONS.into_iter().find(|r| *r == reason);
        reason.and_then(|reason| self.relay_failures.get(&ReasonLabel { reason }).map(|c| c.get())).unwrap_or(0)
    }

    /// Errors answered with `code` so far.
    pub fn errors(&self, code: &str) -> u64 {
        let code = GatewayError::CODES.into_iter().find(|c| *c == code);
        code.and_then(|code| self.errors.get(&CodeLabel { code }).map(|c| c.get())).unwrap_or(0)
    }

    /// The text exposition, with the budget's gauges and the open service and client
    /// connections as they are now.
    pub(crate) fn render(&self, state: &ScrapedState) -> String {
        let s = &self.scraped;
        s.budget_reserved.set(gauge_value(state.budget.aggregate_bytes));
        s.budget_reservations.set(gauge_value(state.budget.reservations));
        s.budget_limit.set(gauge_value(state.budget_limit));
        s.service_connections.set(gauge_value(state.services as u64));
        s.client_connections.set(gauge_value(state.clients as u64));
        self.services.scrape(&state.instances);
        self.budget.scrape(&state.budget, &state.instances);
        if let Some(shared) = &state.shared {
            self.shared.scrape(shared);
        }
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error would be a bug in a
        // label's encoder, and a scrape then shows what was written before it.
        if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %err, "metrics could not be encoded");
        }
        out
    }
}

/// The gateway's state a scrape reports, read by the caller at that moment.
#[derive(Debug)]
pub(crate) struct ScrapedState {
    pub budget: BudgetCounters,
    /// `[limits.payload] max_inflight_bytes`.
    pub budget_limit: u64,
    pub services: usize,
    pub clients: usize,
    /// The registered service instances.
    pub instances: Vec<services::InstanceState>,
    /// With `[shared]`: the link to Redis.
    pub shared: Option<shared::SharedState>,
}

/// A count as a gauge's signed value (counts never come near `i64::MAX`).
fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use prometheus_client::registry::Registry;

    /// `registry` in the text exposition.
    pub(crate) fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
        text
    }
}
