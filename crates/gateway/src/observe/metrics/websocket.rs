//! WebSocket sessions per mount: `weir_websocket_sessions` (open now),
//! `weir_websocket_messages_total` and `weir_websocket_bytes_total` (label `direction`,
//! `client_to_service` or `service_to_client`; bytes are message payloads, decompressed)
//! and `weir_websocket_closes_total` (label `code`: the close code the session ended
//! with, as a number when RFC 6455 registers it, `other` for any other, `none` for a
//! close without a code; a client gone without a close frame is 1006).
//!
//! A session takes a [`SessionMeter`] when it opens: its counters and its place in the
//! gauge, which it gives back when dropped, so a session counts as open exactly as
//! long as it runs, whatever ends it.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The codes RFC 6455 and its IANA registry name (1004 is reserved and never sent),
/// each as its own `code` label value.
const REGISTERED_CODES: [&str; 16] = [
    "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010", "1011", "1012", "1013",
    "1014", "1015",
];

/// "No status code was present" (RFC 6455 §7.4.1): labelled `none`.
const NO_STATUS: u16 = 1005;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabel {
    mount: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    mount: Arc<str>,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    mount: Arc<str>,
    code: &'static str,
}

/// The WebSocket families.
#[derive(Debug, Default)]
pub(crate) struct WebSocketMetrics {
    sessions: Family<MountLabel, Gauge>,
    messages: Family<DirectionLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    closes: Family<CloseLabels, Counter>,
}

/// One direction's counters of a session.
#[derive(Debug)]
pub(crate) struct DirectionCounters {
    messages: Counter,
    bytes: Counter,
}

impl DirectionCounters {
    /// A message of `payload` bytes passed.
    pub(crate) fn message(&self, payload: usize) {
        self.messages.inc();
        self.bytes.inc_by(payload as u64);
    }
}

/// An open session's counters; dropping it closes the session in the gauge.
#[derive(Debug)]
pub(crate) struct SessionMeter {
    pub client_to_service: DirectionCounters,
    pub service_to_client: DirectionCounters,
    /// The mount's open sessions, decremented on drop.
    open: Gauge,
    /// The mount's closes, by code.
    closes: Family<CloseLabels, Counter>,
    mount: Arc<str>,
}

impl SessionMeter {
    /// The session ended with close code `code` (`None`: without a code).
    pub(crate) fn closed(&self, code: Option<u16>) {
        let code = close_label(code);
        self.closes.get_or_create(&CloseLabels { mount: Arc::clone(&self.mount), code }).inc();
    }
}

impl Drop for SessionMeter {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// `code` as a bounded label value.
fn close_label(code: Option<u16>) -> &'static str {
    match code {
        None | Some(NO_STATUS) => "none",
        Some(code) => REGISTERED_CODES.into_iter().find(|c| c.parse() == Ok(code)).unwrap_or("other"),
    }
}

impl WebSocketMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        let sessions = "Open WebSocket sessions, per mount";
        registry.register("weir_websocket_sessions", sessions, self.sessions.clone());
        let messages = "WebSocket data messages relayed, per mount and direction";
        registry.register("weir_websocket_messages", messages, self.messages.clone());
        let bytes = "WebSocket message payload bytes relayed, per mount and direction";
        registry.register_with_unit("weir_websocket", bytes, Unit::Bytes, self.bytes.clone());
        let closes = "WebSocket sessions ended, per mount and close code";
        registry.register("weir_websocket_closes", closes, self.closes.clone());
    }

    /// A session opens on `mount` (its prefix, from the configuration).
    pub(crate) fn open(&self, mount: &str) -> SessionMeter {
        let mount: Arc<str> = mount.into();
        let open = self.sessions.get_or_create_owned(&MountLabel { mount: Arc::clone(&mount) });
        open.inc();
        let direction = |direction| {
            let labels = DirectionLabels { mount: Arc::clone(&mount), direction };
            DirectionCounters {
                messages: self.messages.get_or_create_owned(&labels),
                bytes: self.bytes.get_or_create_owned(&labels),
            }
        };
        SessionMeter {
            client_to_service: direction("client_to_service"),
            service_to_client: direction("service_to_client"),
            open,
            closes: self.closes.clone(),
            mount,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_bounded() {
        assert_eq!(close_label(Some(1000)), "1000");
        assert_eq!(close_label(Some(1013)), "1013");
        assert_eq!(close_label(Some(1005)), "none");
        assert_eq!(close_label(None), "none");
        assert_eq!(close_label(Some(4000)), "other");
        assert_eq!(close_label(Some(1016)), "other");
    }

    #[test]
    fn a_session_counts_while_open_and_its_messages_each_way() {
        let metrics = WebSocketMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let session = metrics.open("/ws");
        let other = metrics.open("/ws");
        session.client_to_service.message(5);
        session.client_to_service.message(7);
        session.service_to_client.message(3);
        session.closed(Some(1000));
        other.closed(Some(4001));
        drop(other);
        let text = super::super::tests::encode(&registry);
        for line in [
            r#"weir_websocket_sessions{mount="/ws"} 1"#,
            r#"weir_websocket_messages_total{mount="/ws",direction="client_to_service"} 2"#,
            r#"weir_websocket_bytes_total{mount="/ws",direction="client_to_service"} 12"#,
            r#"weir_websocket_bytes_total{mount="/ws",direction="service_to_client"} 3"#,
            r#"weir_websocket_closes_total{mount="/ws",code="1000"} 1"#,
            r#"weir_websocket_closes_total{mount="/ws",code="other"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        drop(session);
        assert!(super::super::tests::encode(&registry).contains(r#"weir_websocket_sessions{mount="/ws"} 0"#));
    }
}
