//! Counters the admin endpoint serves in Prometheus' text format: requests, answers by
//! status class, and every gateway error by its code. Plain atomics; no registry crate,
//! because a handful of counters does not need one.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::limits::budget::BudgetCounters;
use crate::response::error::GatewayError;

/// Request and error counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    /// Indexed like [`GatewayError::CODES`].
    errors: [AtomicU64; GatewayError::CODES.len()],
}

impl Metrics {
    /// Counts a request.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error answer.
    pub(crate) fn error(&self, error: &GatewayError) {
        self.errors[error.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Errors answered with `code` so far.
    pub fn errors(&self, code: &str) -> u64 {
        GatewayError::CODES.iter().position(|c| *c == code).map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition, with the budget's gauges.
    pub(crate) fn render(&self, budget: &BudgetCounters, services: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE weir_requests_total counter");
        let _ = writeln!(out, "weir_requests_total {}", self.requests.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE weir_errors_total counter");
        for (i, code) in GatewayError::CODES.iter().enumerate() {
            let _ = writeln!(out, "weir_errors_total{{code=\"{code}\"}} {}", self.errors[i].load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# TYPE weir_budget_reserved_bytes gauge");
        let _ = writeln!(out, "weir_budget_reserved_bytes {}", budget.aggregate_bytes);
        let _ = writeln!(out, "# TYPE weir_budget_reservations gauge");
        let _ = writeln!(out, "weir_budget_reservations {}", budget.reservations);
        let _ = writeln!(out, "# TYPE weir_service_connections gauge");
        let _ = writeln!(out, "weir_service_connections {services}");
        out
    }
}
