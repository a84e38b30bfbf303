//! Client requests per route, after the OpenTelemetry HTTP server conventions:
//! `http_server_request_duration_seconds`, the request and response body sizes, the
//! requests in flight per mount, and `weir_refusals_total` (answers the gateway gave
//! itself, by the error's code, per mount).
//!
//! Labels: `mount` (the mount's prefix, from the configuration), `route` (the endpoint's
//! path template, from the service's registration; empty when no route matched),
//! `service` (the registered name; empty likewise), `method` (one of the methods of RFC
//! 9110 and PATCH, else `_OTHER`) and `status` (the code). A client can choose none of
//! these values freely, so the series stay as many as the routes.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the duration buckets, in seconds: 0.5 ms to 60 s.
const DURATION_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Body sizes: 64 bytes to 1 GiB, each bucket four times the last.
const SIZE_BUCKETS: (f64, f64, u16) = (64.0, 4.0, 13);

/// A finished request's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub mount: Arc<str>,
    pub route: Arc<str>,
    pub method: &'static str,
    pub status: u16,
    pub service: Arc<str>,
}

/// A request body's labels: as [`RouteLabels`] without the status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadLabels {
    mount: Arc<str>,
    route: Arc<str>,
    method: &'static str,
    service: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MountLabel {
    pub mount: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    mount: Arc<str>,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The per-route families.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    duration: HistogramFamily<RouteLabels>,
    request_size: HistogramFamily<UploadLabels>,
    response_size: HistogramFamily<RouteLabels>,
    active: Family<MountLabel, Gauge>,
    refusals: Family<RefusalLabels, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            request_size: Family::new_with_constructor(size_histogram),
            response_size: Family::new_with_constructor(size_histogram),
            active: Family::default(),
            refusals: Family::default(),
        }
    }
}

fn size_histogram() -> Histogram {
    let (start, factor, length) = SIZE_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, length))
}

/// What a finished request reports.
#[derive(Debug)]
pub(crate) struct Finished<'a> {
    pub labels: &'a RouteLabels,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The error code the gateway answered with, if it refused or failed the request.
    pub refusal: Option<&'static str>,
}

impl HttpMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        let duration = "Duration of client requests, from the head's arrival to the body's end";
        registry.register_with_unit("http_server_request_duration", duration, Unit::Seconds, self.duration.clone());
        let request = "Size of client request bodies read";
        registry.register_with_unit("http_server_request_body_size", request, Unit::Bytes, self.request_size.clone());
        let response = "Size of response bodies sent to clients";
        registry.register_with_unit(
            "http_server_response_body_size",
            response,
            Unit::Bytes,
            self.response_size.clone(),
        );
        let active = "Client requests in flight, per mount";
        registry.register("http_server_active_requests", active, self.active.clone());
        let refusals = "Requests the gateway refused or failed itself, by the error's code, per mount";
        registry.register("weir_refusals", refusals, self.refusals.clone());
    }

    /// A request on `mount` began.
    pub(crate) fn started(&self, mount: &MountLabel) {
        self.active.get_or_create(mount).inc();
    }

    /// A request on `mount` that [`HttpMetrics::started`] counted is over.
    pub(crate) fn ended(&self, mount: &MountLabel) {
        self.active.get_or_create(mount).dec();
    }

    /// Records a finished request.
    pub(crate) fn finished(&self, request: Finished<'_>) {
        let labels = request.labels;
        self.duration.get_or_create(labels).observe(request.duration.as_secs_f64());
        self.response_size.get_or_create(labels).observe(request.bytes_out as f64);
        let upload = UploadLabels {
            mount: Arc::clone(&labels.mount),
            route: Arc::clone(&labels.route),
            method: labels.method,
            service: Arc::clone(&labels.service),
        };
        self.request_size.get_or_create(&upload).observe(request.bytes_in as f64);
        if let Some(reason) = request.refusal {
            self.refusals.get_or_create(&RefusalLabels { mount: Arc::clone(&labels.mount), reason }).inc();
        }
    }
}

/// `method` as a label: a standard method's name, else `_OTHER` (any token is a valid
/// method, and a label per token would let clients create series).
pub(crate) fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("_OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "_OTHER");
    }

    #[test]
    fn a_finished_request_lands_in_its_route_series() {
        let metrics = HttpMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let labels = RouteLabels {
            mount: "/api".into(),
            route: "/api/items/{id}".into(),
            method: "GET",
            status: 504,
            service: "demo".into(),
        };
        let mount = MountLabel { mount: "/api".into() };
        metrics.started(&mount);
        let finished = Finished {
            labels: &labels,
            duration: Duration::from_millis(30),
            bytes_in: 0,
            bytes_out: 100,
            refusal: Some("upstream_timeout"),
        };
        metrics.finished(finished);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let series = r#"mount="/api",route="/api/items/{id}",method="GET",status="504",service="demo""#;
        assert!(
            text.contains(&format!("http_server_request_duration_seconds_bucket{{{series},le=\"0.05\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("http_server_request_duration_seconds_bucket{{{series},le=\"0.025\"}} 0")),
            "{text}"
        );
        assert!(text.contains(r#"weir_refusals_total{mount="/api",reason="upstream_timeout"} 1"#), "{text}");
        assert!(text.contains(r#"http_server_active_requests{mount="/api"} 1"#), "{text}");
        metrics.ended(&mount);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"http_server_active_requests{mount="/api"} 0"#), "{text}");
    }
}
