//! Where bytes wait, per route: `weir_credit_wait_seconds_total` (label `route`,
//! `direction`) and `weir_route_inflight_bytes` (label `route`).
//!
//! Credit wait, `to_service`: a request body or a WebSocket's messages waiting for the
//! service to grant credit on its stream (its window is full: the service reads slower
//! than the client sends). `to_client`: a relayed response body or a WebSocket's
//! messages waiting for the client to take them, while the gateway withholds the
//! stream's credit from the service (it grants credit only as the client reads). Both
//! are sums of waits, in seconds; their rate is the number of streams waiting on
//! average.
//!
//! In-flight bytes: request bytes reserved in the payload budget for the route's
//! requests and WebSockets right now, moved by the reservations themselves
//! (`limits/budget.rs`).
//!
//! The route is the endpoint's template from the service's registration.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use crate::limits::budget::ByteGauge;

/// Seconds of waiting, summed.
pub(crate) type WaitCounter = Counter<f64, AtomicU64>;

/// Which side a stream waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitingFor {
    /// The service's credit, to send it the client's bytes.
    Service,
    /// The client, to take the service's bytes (the service's credit is withheld).
    Client,
}

impl WaitingFor {
    fn label(self) -> &'static str {
        match self {
            WaitingFor::Service => "to_service",
            WaitingFor::Client => "to_client",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    route: Arc<str>,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

/// The backpressure families.
#[derive(Debug, Default)]
pub(crate) struct BackpressureMetrics {
    credit_wait: Family<WaitLabels, WaitCounter>,
    inflight: Family<RouteLabel, ByteGauge>,
}

impl BackpressureMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        let wait = "Seconds streams spent waiting for link credit, per route and direction";
        registry.register_with_unit("weir_credit_wait", wait, Unit::Seconds, self.credit_wait.clone());
        let inflight = "Request bytes reserved in the payload budget for each route's requests now";
        registry.register_with_unit("weir_route_inflight", inflight, Unit::Bytes, self.inflight.clone());
    }

    /// The counter of waits on `route` for `side`.
    pub(crate) fn credit_wait(&self, route: &str, side: WaitingFor) -> CreditWait {
        let labels = WaitLabels { route: route.into(), direction: side.label() };
        CreditWait { seconds: self.credit_wait.get_or_create_owned(&labels) }
    }

    /// The gauge of `route`'s bytes in flight, for its requests' reservations.
    pub(crate) fn route_bytes(&self, route: &str) -> ByteGauge {
        self.inflight.get_or_create_owned(&RouteLabel { route: route.into() })
    }
}

/// One route's and direction's waits, held by the stream that waits.
#[derive(Debug, Clone)]
pub(crate) struct CreditWait {
    seconds: WaitCounter,
}

impl CreditWait {
    /// A wait of `waited` is over.
    pub(crate) fn add(&self, waited: Duration) {
        self.seconds.inc_by(waited.as_secs_f64());
    }

    /// Runs `wait`, counting the time it takes.
    pub(crate) async fn timed<F: std::future::Future>(&self, wait: F) -> F::Output {
        let started = tokio::time::Instant::now();
        let output = wait.await;
        self.add(started.elapsed());
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_are_summed_per_route_and_direction() {
        let metrics = BackpressureMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let wait = metrics.credit_wait("/api/upload", WaitingFor::Service);
        wait.timed(tokio::time::sleep(Duration::from_millis(1500))).await;
        wait.add(Duration::from_millis(500));
        metrics.credit_wait("/api/upload", WaitingFor::Client).add(Duration::from_millis(250));
        metrics.route_bytes("/api/upload").inc_by(4096);
        let text = super::super::tests::encode(&registry);
        for line in [
            r#"weir_credit_wait_seconds_total{route="/api/upload",direction="to_service"} 2.0"#,
            r#"weir_credit_wait_seconds_total{route="/api/upload",direction="to_client"} 0.25"#,
            r#"weir_route_inflight_bytes{route="/api/upload"} 4096"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
