//! Counters the admin endpoint serves in Prometheus' text format: requests, answers by
//! status class, every gateway error by its code, relayed response bodies that failed
//! midway by their reason, client TLS handshakes that failed by theirs, and
//! configuration reloads by their result. Plain
//! atomics; no registry crate, because a handful of counters does not need one.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::limits::budget::BudgetCounters;
use crate::response::error::GatewayError;
use crate::response::BodyError;

/// Request and error counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    /// Indexed like [`GatewayError::CODES`].
    errors: [AtomicU64; GatewayError::CODES.len()],
    /// Relayed response bodies that failed after their head was sent, indexed like
    /// [`BodyError::RELAY_REASONS`]: the client saw a cut connection or a reset stream.
    relay_failures: [AtomicU64; BodyError::RELAY_REASONS.len()],
    /// Client TLS handshakes that failed, indexed like [`Metrics::TLS_HANDSHAKE_FAILURES`].
    tls_handshake_failures: [AtomicU64; Metrics::TLS_HANDSHAKE_FAILURES.len()],
    /// Configuration reloads, indexed like [`Metrics::RELOAD_RESULTS`].
    config_reloads: [AtomicU64; Metrics::RELOAD_RESULTS.len()],
}

impl Metrics {
    /// Why a client TLS handshake failed: it did not end within `handshake_timeout`, or
    /// it broke (a bad ClientHello, a name refused under `strict_sni`, a closed socket).
    pub const TLS_HANDSHAKE_FAILURES: [&'static str; 2] = ["timeout", "error"];

    /// A configuration reload applied, or refused (nothing changed).
    pub const RELOAD_RESULTS: [&'static str; 2] = ["ok", "failed"];

    /// Counts a configuration reload.
    pub(crate) fn config_reloaded(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Configuration reloads with `result` (one of [`Metrics::RELOAD_RESULTS`]) so far.
    pub fn config_reloads(&self, result: &str) -> u64 {
        let index = Self::RELOAD_RESULTS.iter().position(|r| *r == result);
        index.map_or(0, |i| self.config_reloads[i].load(Ordering::Relaxed))
    }

    /// Counts a failed client TLS handshake; `reason` is one of
    /// [`Metrics::TLS_HANDSHAKE_FAILURES`].
    pub(crate) fn tls_handshake_failed(&self, reason: &str) {
        if let Some(index) = Self::TLS_HANDSHAKE_FAILURES.iter().position(|r| *r == reason) {
            self.tls_handshake_failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Client TLS handshakes that failed with `reason` so far.
    pub fn tls_handshake_failures(&self, reason: &str) -> u64 {
        let index = Self::TLS_HANDSHAKE_FAILURES.iter().position(|r| *r == reason);
        index.map_or(0, |i| self.tls_handshake_failures[i].load(Ordering::Relaxed))
    }

    /// Counts a request.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error answer.
    pub(crate) fn error(&self, error: &GatewayError) {
        self.errors[error.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a relayed response body's failure.
    pub(crate) fn relay_failure(&self, error: &BodyError) {
        if let Some(index) = error.relay_index() {
            self.relay_failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Relayed bodies that failed with `reason` so far.
    pub fn relay_failures(&self, reason: &str) -> u64 {
        let index = BodyError::RELAY_REASONS.iter().position(|r| *r == reason);
        index.map_or(0, |i| self.relay_failures[i].load(Ordering::Relaxed))
    }

    /// Errors answered with `code` so far.
    pub fn errors(&self, code: &str) -> u64 {
        GatewayError::CODES.iter().position(|c| *c == code).map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition, with the budget's gauges and the open service and
    /// client connections.
    pub(crate) fn render(&self, budget: &BudgetCounters, services: usize, clients: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE weir_requests_total counter");
        let _ = writeln!(out, "weir_requests_total {}", self.requests.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE weir_errors_total counter");
        for (i, code) in GatewayError::CODES.iter().enumerate() {
            let _ = writeln!(out, "weir_errors_total{{code=\"{code}\"}} {}", self.errors[i].load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# TYPE weir_relayed_body_failures_total counter");
        for (i, reason) in BodyError::RELAY_REASONS.iter().enumerate() {
            let count = self.relay_failures[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "weir_relayed_body_failures_total{{reason=\"{reason}\"}} {count}");
        }
        let _ = writeln!(out, "# TYPE weir_tls_handshake_failures_total counter");
        for reason in Self::TLS_HANDSHAKE_FAILURES {
            let count = self.tls_handshake_failures(reason);
            let _ = writeln!(out, "weir_tls_handshake_failures_total{{reason=\"{reason}\"}} {count}");
        }
        let _ = writeln!(out, "# TYPE weir_config_reloads_total counter");
        for result in Self::RELOAD_RESULTS {
            let _ = writeln!(out, "weir_config_reloads_total{{result=\"{result}\"}} {}", self.config_reloads(result));
        }
        let _ = writeln!(out, "# TYPE weir_budget_reserved_bytes gauge");
        let _ = writeln!(out, "weir_budget_reserved_bytes {}", budget.aggregate_bytes);
        let _ = writeln!(out, "# TYPE weir_budget_reservations gauge");
        let _ = writeln!(out, "weir_budget_reservations {}", budget.reservations);
        let _ = writeln!(out, "# TYPE weir_service_connections gauge");
        let _ = writeln!(out, "weir_service_connections {services}");
        let _ = writeln!(out, "# TYPE weir_client_connections gauge");
        let _ = writeln!(out, "weir_client_connections {clients}");
        out
    }
}
