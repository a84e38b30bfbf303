//! The payload budget per service connection and its refusals:
//! `weir_service_budget_reserved_bytes` and `weir_service_budget_reservations` (labels
//! `service`, `instance`: what each live service connection's requests hold, read from
//! the budget at each scrape, so a connection that is gone leaves no series) and
//! `weir_admissions_refused_total` (label `limit`: which of the budget's limits refused a
//! request body, one of [`LIMITS`]).
//!
//! The budget's totals (`weir_budget_*`) are in the parent module.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::gauge_value;
use super::services::InstanceState;
use crate::limits::budget::{BudgetCounters, BudgetExceeded};

/// The values of the `limit` label, one per [`BudgetExceeded`].
pub(crate) const LIMITS: [&str; 5] = ["per_call", "per_client", "per_mount", "per_connection", "aggregate"];

/// The `limit` label of `exceeded`.
fn limit_label(exceeded: BudgetExceeded) -> &'static str {
    match exceeded {
        BudgetExceeded::PerCall => LIMITS[0],
        BudgetExceeded::PerClient => LIMITS[1],
        BudgetExceeded::PerMount => LIMITS[2],
        BudgetExceeded::PerConnection => LIMITS[3],
        BudgetExceeded::Aggregate => LIMITS[4],
    }
}

/// One service connection, named by what it registered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    service: Arc<str>,
    instance: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// The budget's families per service connection and per limit.
#[derive(Debug, Default)]
pub(crate) struct BudgetMetrics {
    /// Bytes held per live connection; rebuilt at each scrape.
    reserved: Family<ConnectionLabels, Gauge>,
    /// Open reservations per live connection; rebuilt at each scrape.
    reservations: Family<ConnectionLabels, Gauge>,
    /// Request bodies refused by each limit; every limit's series exists from the start.
    refused: Family<LimitLabel, Counter>,
}

impl BudgetMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        for limit in LIMITS {
            let _ = self.refused.get_or_create(&LimitLabel { limit });
        }
        let reserved = "Request bytes reserved in the payload budget, per service connection";
        registry.register_with_unit("weir_service_budget_reserved", reserved, Unit::Bytes, self.reserved.clone());
        let reservations = "Open reservations in the payload budget, per service connection";
        registry.register("weir_service_budget_reservations", reservations, self.reservations.clone());
        let refused = "Request bodies refused by the payload budget, by the limit that refused them";
        registry.register("weir_admissions_refused", refused, self.refused.clone());
    }

    /// A request body (or WebSocket message) the budget's `exceeded` limit refused.
    pub(crate) fn refused(&self, exceeded: BudgetExceeded) {
        self.refused.get_or_create(&LimitLabel { limit: limit_label(exceeded) }).inc();
    }

    /// Sets the per-connection gauges to `budget`'s counters for the live `instances`
    /// (a series for each, zero when it holds nothing), dropping those of connections
    /// gone since the last scrape.
    pub(super) fn scrape(&self, budget: &BudgetCounters, instances: &[InstanceState]) {
        self.reserved.clear();
        self.reservations.clear();
        for instance in instances {
            let labels =
                ConnectionLabels { service: Arc::clone(&instance.service), instance: Arc::clone(&instance.instance) };
            let held = budget.per_connection_bytes.get(&instance.conn_id).copied().unwrap_or(0);
            let open = budget.per_connection_reservations.get(&instance.conn_id).copied().unwrap_or(0);
            self.reserved.get_or_create(&labels).set(gauge_value(held));
            self.reservations.get_or_create(&labels).set(gauge_value(open));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::routing::InstanceHealth;

    #[test]
    fn live_connections_show_what_they_hold_and_gone_ones_nothing() {
        let metrics = BudgetMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.refused(BudgetExceeded::PerClient);
        let instance = |conn_id, id: &str| InstanceState {
            conn_id,
            service: "demo".into(),
            instance: id.into(),
            version: "1.0.0".into(),
            health: InstanceHealth::Healthy,
        };
        let budget = BudgetCounters {
            per_connection_bytes: HashMap::from([(1, 500)]),
            per_connection_reservations: HashMap::from([(1, 2)]),
            ..BudgetCounters::default()
        };
        metrics.scrape(&budget, &[instance(1, "a"), instance(2, "b")]);
        let text = super::super::tests::encode(&registry);
        assert!(text.contains(r#"weir_service_budget_reserved_bytes{service="demo",instance="a"} 500"#), "{text}");
        assert!(text.contains(r#"weir_service_budget_reservations{service="demo",instance="a"} 2"#), "{text}");
        assert!(text.contains(r#"weir_service_budget_reserved_bytes{service="demo",instance="b"} 0"#), "{text}");
        assert!(text.contains(r#"weir_admissions_refused_total{limit="per_client"} 1"#), "{text}");
        assert!(text.contains(r#"weir_admissions_refused_total{limit="aggregate"} 0"#), "{text}");
        metrics.scrape(&BudgetCounters::default(), &[instance(2, "b")]);
        let text = super::super::tests::encode(&registry);
        assert!(!text.contains(r#"instance="a""#), "{text}");
    }
}
