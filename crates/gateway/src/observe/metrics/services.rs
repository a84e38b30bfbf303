//! The services' side: `weir_service_instances` (label `service`, `version`, `health`:
//! the registered instances, read from the routing table at each scrape),
//! `weir_link_bytes_total` and `weir_link_frames_total` (label `service`, `direction`
//! `in` or `out`: every frame of the service's links after their handshake, counted by
//! the link's reader and writer through [`LinkCounters`]), `weir_service_reconnects_total`
//! (label `service`: a Hello from an instance id of that service registered before),
//! `weir_service_heartbeat_rtt_seconds` (label `service`: the round trips of the heartbeat
//! probes its instances answered, see [`crate::services::probe`]) and
//! `weir_service_handshake_failures_total` (label `reason`, one of
//! [`HANDSHAKE_FAILURES`]).
//!
//! Service names and versions come from Hellos that passed authentication, so they are
//! as many as the credentials allow; a failed handshake is counted under its reason
//! alone. The instance ids seen before are remembered up to [`MAX_REMEMBERED`]; past it
//! the memory starts again, so a reconnect may then go uncounted, never a first
//! connection counted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use weir_proto::ErrorCode;
use weir_transport::{HandshakeError, Link, TrafficObserver};

use crate::limits::lock;
use crate::routing::{Instance, InstanceHealth};

/// The values of the `reason` label of `weir_service_handshake_failures_total`: no Hello
/// in time, the connection closed, a frame that is not a valid Hello, credentials refused,
/// registration refused (paths, endpoint count, a conflict).
pub(crate) const HANDSHAKE_FAILURES: [&str; 5] =
    ["timeout", "closed", "protocol", "unauthorized", "registration_refused"];

/// Upper bounds of the round-trip buckets, in seconds: 50 µs (in memory, or a loopback
/// socket) to 60 s (the longest recorded).
const ROUND_TRIP_BUCKETS: [f64; 17] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0];

/// How many (service, instance id) pairs are remembered to recognise a reconnect.
const MAX_REMEMBERED: usize = 65_536;

/// A registered instance as a scrape sees it.
#[derive(Debug, Clone)]
pub(crate) struct InstanceState {
    /// The budget counts per connection id: the key to join its counters with.
    pub conn_id: u64,
    pub service: Arc<str>,
    pub instance: Arc<str>,
    pub version: Arc<str>,
    pub health: InstanceHealth,
}

impl InstanceState {
    /// `instance` as it is now.
    pub(crate) fn of(instance: &Instance<Link>) -> Self {
        let identity = &instance.identity;
        InstanceState {
            conn_id: instance.conn_id,
            service: identity.service.as_str().into(),
            instance: identity.instance_id.as_str().into(),
            version: identity.version.to_string().into(),
            health: instance.status(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    service: Arc<str>,
    version: Arc<str>,
    health: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    service: Arc<str>,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The services' families.
#[derive(Debug)]
pub(crate) struct ServiceMetrics {
    /// Instances per service, version and health; rebuilt at each scrape.
    instances: Family<InstanceLabels, Gauge>,
    link_bytes: Family<LinkLabels, Counter>,
    link_frames: Family<LinkLabels, Counter>,
    reconnects: Family<ServiceLabel, Counter>,
    heartbeat_rtt: Family<ServiceLabel, Histogram, fn() -> Histogram>,
    /// Every reason's series exists from the start.
    handshake_failures: Family<ReasonLabel, Counter>,
    /// (service, instance id) of every registration so far, up to [`MAX_REMEMBERED`].
    seen: Mutex<HashSet<(String, String)>>,
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        ServiceMetrics {
            instances: Family::default(),
            link_bytes: Family::default(),
            link_frames: Family::default(),
            reconnects: Family::default(),
            heartbeat_rtt: Family::new_with_constructor(|| Histogram::new(ROUND_TRIP_BUCKETS)),
            handshake_failures: Family::default(),
            seen: Mutex::default(),
        }
    }
}

/// One service's link counters, shared by all its links: told of each frame by the
/// link's reader and writer.
#[derive(Debug)]
pub(crate) struct LinkCounters {
    bytes_in: Counter,
    frames_in: Counter,
    bytes_out: Counter,
    frames_out: Counter,
}

impl TrafficObserver for LinkCounters {
    fn frame_read(&self, wire_bytes: usize) {
        self.bytes_in.inc_by(wire_bytes as u64);
        self.frames_in.inc();
    }

    fn frame_written(&self, wire_bytes: usize) {
        self.bytes_out.inc_by(wire_bytes as u64);
        self.frames_out.inc();
    }
}

impl ServiceMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        for reason in HANDSHAKE_FAILURES {
            let _ = self.handshake_failures.get_or_create(&ReasonLabel { reason });
        }
        let instances = "Registered service instances, by service, version and health";
        registry.register("weir_service_instances", instances, self.instances.clone());
        let bytes = "Bytes of frames on service links, by service and direction (in: from the service)";
        registry.register_with_unit("weir_link", bytes, Unit::Bytes, self.link_bytes.clone());
        let frames = "Frames on service links, by service and direction (in: from the service)";
        registry.register("weir_link_frames", frames, self.link_frames.clone());
        let reconnects = "Registrations of an instance id registered before, by service";
        registry.register("weir_service_reconnects", reconnects, self.reconnects.clone());
        let rtt = "Round trips of the gateway's heartbeat probes, by service";
        registry.register_with_unit("weir_service_heartbeat_rtt", rtt, Unit::Seconds, self.heartbeat_rtt.clone());
        let failures = "Service connections refused before their Welcome, by reason";
        registry.register("weir_service_handshake_failures", failures, self.handshake_failures.clone());
    }

    /// The counters a link of `service` reports its frames to.
    pub(crate) fn link_counters(&self, service: &str) -> Arc<LinkCounters> {
        let service: Arc<str> = service.into();
        let series = |family: &Family<LinkLabels, Counter>, direction| {
            family.get_or_create_owned(&LinkLabels { service: Arc::clone(&service), direction })
        };
        Arc::new(LinkCounters {
            bytes_in: series(&self.link_bytes, "in"),
            frames_in: series(&self.link_frames, "in"),
            bytes_out: series(&self.link_bytes, "out"),
            frames_out: series(&self.link_frames, "out"),
        })
    }

    /// An instance registered: a reconnect if its id registered before.
    pub(crate) fn registered(&self, service: &str, instance: &str) {
        let first = {
            let mut seen = lock(&self.seen);
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
            seen.insert((service.to_owned(), instance.to_owned()))
        };
        if !first {
            self.reconnects.get_or_create(&ServiceLabel { service: service.into() }).inc();
        }
    }

    /// An instance of `service` answered a heartbeat probe after `rtt`.
    pub(crate) fn heartbeat_round_trip(&self, service: &str, rtt: std::time::Duration) {
        self.heartbeat_rtt.get_or_create(&ServiceLabel { service: service.into() }).observe(rtt.as_secs_f64());
    }

    /// A handshake that failed before the Hello was read whole.
    pub(crate) fn handshake_failed(&self, error: &HandshakeError) {
        let reason = match error {
            HandshakeError::Timeout => "timeout",
            HandshakeError::Closed => "closed",
            HandshakeError::Protocol(_) | HandshakeError::Refused { .. } => "protocol",
        };
        self.handshake_failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A Hello refused with `code`.
    pub(crate) fn hello_refused(&self, code: ErrorCode) {
        let reason = match code {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RegistrationRefused => "registration_refused",
            _ => "protocol",
        };
        self.handshake_failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Sets the instance gauges to the live `instances`, dropping the series of
    /// (service, version, health) triples no instance has any more.
    pub(super) fn scrape(&self, instances: &[InstanceState]) {
        self.instances.clear();
        for instance in instances {
            let labels = InstanceLabels {
                service: Arc::clone(&instance.service),
                version: Arc::clone(&instance.version),
                health: health_label(instance.health),
            };
            self.instances.get_or_create(&labels).inc();
        }
    }
}

fn health_label(health: InstanceHealth) -> &'static str {
    match health {
        InstanceHealth::Healthy => "healthy",
        InstanceHealth::Degraded => "degraded",
        InstanceHealth::Draining => "draining",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_links_reconnects_and_failures_are_encoded() {
        let metrics = ServiceMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let instance = |id: &str, health| InstanceState {
            conn_id: 1,
            service: "demo".into(),
            instance: id.into(),
            version: "1.2.0".into(),
            health,
        };
        let live = [instance("a", InstanceHealth::Healthy), instance("b", InstanceHealth::Healthy)];
        metrics.scrape(&[live[0].clone(), live[1].clone(), instance("c", InstanceHealth::Draining)]);
        let counters = metrics.link_counters("demo");
        counters.frame_read(100);
        counters.frame_read(20);
        counters.frame_written(7);
        metrics.registered("demo", "a");
        metrics.registered("demo", "b");
        metrics.registered("demo", "a");
        metrics.handshake_failed(&HandshakeError::Timeout);
        metrics.hello_refused(ErrorCode::Unauthorized);
        metrics.heartbeat_round_trip("demo", std::time::Duration::from_micros(300));
        let text = super::super::tests::encode(&registry);
        for line in [
            r#"weir_service_instances{service="demo",version="1.2.0",health="healthy"} 2"#,
            r#"weir_service_instances{service="demo",version="1.2.0",health="draining"} 1"#,
            r#"weir_link_bytes_total{service="demo",direction="in"} 120"#,
            r#"weir_link_frames_total{service="demo",direction="in"} 2"#,
            r#"weir_link_bytes_total{service="demo",direction="out"} 7"#,
            r#"weir_service_reconnects_total{service="demo"} 1"#,
            r#"weir_service_handshake_failures_total{reason="timeout"} 1"#,
            r#"weir_service_handshake_failures_total{reason="unauthorized"} 1"#,
            r#"weir_service_handshake_failures_total{reason="closed"} 0"#,
            r#"weir_service_heartbeat_rtt_seconds_bucket{service="demo",le="0.0005"} 1"#,
            r#"weir_service_heartbeat_rtt_seconds_bucket{service="demo",le="0.00025"} 0"#,
            r#"weir_service_heartbeat_rtt_seconds_count{service="demo"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        metrics.scrape(&live);
        let text = super::super::tests::encode(&registry);
        assert!(!text.contains("draining"), "{text}");
    }
}
