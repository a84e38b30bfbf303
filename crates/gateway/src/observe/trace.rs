//! The trace context of each client request (W3C `traceparent` and `tracestate`) and the
//! gateway's own span in it.
//!
//! At the head of a public request, [`GatewaySpan::begin`] continues the client's trace
//! when its `traceparent` is valid, or starts a new one. Either way the gateway's span
//! gets a new random id, and the request's `traceparent` is rewritten to name that span
//! as the parent, so the service's spans hang under the gateway's; the client's
//! `tracestate` goes along when valid and is removed otherwise. When the request ends,
//! [`GatewaySpan::finish`] hands the span over to the OTLP export
//! ([`crate::observe::otlp`]), if there is one and the trace is sampled: its phases as
//! events ("admitted", "routed", "first byte from service", "done"), its attributes
//! after the OpenTelemetry HTTP semantic conventions plus `weir.mount`, `weir.service`
//! and `weir.instance`.
//!
//! Invariants: the gateway's span id is never zero; a continued trace keeps the
//! client's trace id and flags, so the client's sampling decision holds all the way; a
//! trace the gateway starts is marked sampled exactly when spans are exported (the flag
//! tells the service that its caller records).

use std::num::{NonZeroU128, NonZeroU64};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Request, StatusCode, Version};
use opentelemetry::trace::{self as otel, Event, SpanContext, SpanId, SpanKind, TraceFlags, TraceId};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use weir_proto::trace_context::{TraceContext, TraceParent, TraceState, TRACEPARENT, TRACESTATE};

use crate::observe::metrics::http::method_label;
use crate::observe::otlp::SpanExport;

/// One request's span: where it sits in its trace, and where it goes when it ends.
#[derive(Debug)]
pub(crate) struct GatewaySpan {
    /// The trace with the gateway's span as the parent: what the service is sent.
    sent: TraceParent,
    /// The client's span, when the gateway continues the client's trace: the parent of
    /// the gateway's span.
    client_span: Option<u64>,
    /// The `tracestate` passed on, kept for the exported span.
    state: Option<TraceState>,
    /// Where the finished span goes; `None` when spans are not exported or the trace
    /// is not sampled.
    export: Option<Arc<SpanExport>>,
}

/// What a request's record knows of it when it ends.
#[derive(Debug)]
pub(crate) struct SpanEnd<'a> {
    pub method: &'a Method,
    /// The path as the client sent it (`url.path`).
    pub path: &'a str,
    pub version: Version,
    /// When the head arrived, on the monotonic clock and on the wall clock.
    pub started: (Instant, SystemTime),
    pub mount: Option<&'a str>,
    /// The route's template, from the service's registration.
    pub route: Option<&'a str>,
    pub service: Option<&'a str>,
    pub instance: Option<&'a str>,
    /// `None`: no response head was ready (the client left first).
    pub status: Option<StatusCode>,
    /// The code of the error the gateway answered with itself.
    pub refusal: Option<&'static str>,
    pub admitted: Option<Instant>,
    pub routed: Option<Instant>,
    /// When the response head was ready to send.
    pub first_byte: Option<Instant>,
}

impl GatewaySpan {
    /// The span of `request`, which just arrived: its `traceparent` (and `tracestate`)
    /// headers are rewritten for the service here.
    pub(crate) fn begin<B>(request: &mut Request<B>, export: Option<&Arc<SpanExport>>) -> GatewaySpan {
        let headers = request.headers();
        let received = TraceContext::from_lines(
            headers.get_all(TRACEPARENT).iter().map(HeaderValue::as_bytes),
            headers.get_all(TRACESTATE).iter().map(HeaderValue::as_bytes),
        );
        let own_id = rand::random::<NonZeroU64>();
        let (sent, client_span, state) = match received {
            Some(TraceContext { parent, state }) => (parent.with_parent(own_id), Some(parent.parent_id()), state),
            None => {
                let flags = if export.is_some() { TraceParent::SAMPLED } else { 0 };
                (TraceParent::new(rand::random::<NonZeroU128>(), own_id, flags), None, None)
            }
        };
        let headers = request.headers_mut();
        headers.remove(TRACESTATE);
        if let Some(value) = state.as_ref().and_then(|state| HeaderValue::from_str(state.as_str()).ok()) {
            headers.insert(TRACESTATE, value);
        }
        // Lowercase hex and dashes are always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&sent.to_string()) {
            headers.insert(TRACEPARENT, value);
        }
        let export = export.filter(|_| sent.is_sampled()).cloned();
        GatewaySpan { sent, client_span, state, export }
    }

    /// Ends the span as `end` says, exporting it if it is to be.
    pub(crate) fn finish(&self, end: &SpanEnd<'_>) {
        if let Some(export) = &self.export {
            export.send(self.span_data(end, export));
        }
    }

    /// The finished span in the SDK's shape.
    fn span_data(&self, end: &SpanEnd<'_>, export: &SpanExport) -> SpanData {
        let (started, started_at) = end.started;
        let wall = |at: Instant| started_at + at.saturating_duration_since(started);
        let state = self.state.as_ref().and_then(|state| otel::TraceState::from_str(state.as_str()).ok());
        let context = SpanContext::new(
            TraceId::from_bytes(self.sent.trace_id().to_be_bytes()),
            SpanId::from_bytes(self.sent.parent_id().to_be_bytes()),
            TraceFlags::new(self.sent.flags()),
            false,
            state.unwrap_or_default(),
        );
        let (attributes, status) = attributes(end);
        let mut events = SpanEvents::default();
        events.events = phases(end).into_iter().map(|(name, at)| Event::new(name, wall(at), Vec::new(), 0)).collect();
        let method = method_label(end.method);
        let method = if method == "_OTHER" { "HTTP" } else { method };
        SpanData {
            span_context: context,
            parent_span_id: self.client_span.map_or(SpanId::INVALID, |id| SpanId::from_bytes(id.to_be_bytes())),
            parent_span_is_remote: self.client_span.is_some(),
            span_kind: SpanKind::Server,
            name: end.route.map_or_else(|| method.into(), |route| format!("{method} {route}").into()),
            start_time: started_at,
            end_time: wall(Instant::now()),
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: export.scope().clone(),
        }
    }
}

/// The request's phases that happened, in the order they did, then "done" (now). The
/// first byte counts as the service's only when a service answered.
fn phases(end: &SpanEnd<'_>) -> Vec<(&'static str, Instant)> {
    let from_service = end.service.is_some() && end.refusal.is_none();
    let mut phases: Vec<_> = [
        ("admitted", end.admitted),
        ("routed", end.routed),
        ("first byte from service", end.first_byte.filter(|_| from_service)),
    ]
    .into_iter()
    .filter_map(|(name, at)| Some((name, at?)))
    .collect();
    phases.sort_by_key(|(_, at)| *at);
    phases.push(("done", Instant::now()));
    phases
}

/// The span's attributes (OpenTelemetry HTTP server conventions, then weir's own) and
/// its status: an error when the gateway refused with a 5xx, the service answered one,
/// or no answer was ready.
fn attributes(end: &SpanEnd<'_>) -> (Vec<KeyValue>, otel::Status) {
    let mut attributes = vec![
        KeyValue::new("http.request.method", method_label(end.method)),
        KeyValue::new("url.path", end.path.to_owned()),
        KeyValue::new("network.protocol.version", protocol_version(end.version)),
    ];
    let optional = [("http.route", end.route), ("weir.mount", end.mount), ("weir.service", end.service)];
    for (key, value) in optional.into_iter().chain([("weir.instance", end.instance)]) {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value.to_owned()));
        }
    }
    if let Some(status) = end.status {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    }
    let server_error = end.status.is_none_or(|status| status.is_server_error());
    let error_type = match (end.refusal, end.status) {
        (Some(code), _) => Some(code.to_owned()),
        (None, Some(status)) if status.is_server_error() => Some(status.as_u16().to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("client_closed".to_owned()),
    };
    let status = match &error_type {
        Some(error) if server_error => otel::Status::error(error.clone()),
        _ => otel::Status::Unset,
    };
    if let Some(error) = error_type {
        attributes.push(KeyValue::new("error.type", error));
    }
    (attributes, status)
}

/// `network.protocol.version` of an HTTP version.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/api/items/1");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_valid_client_trace_is_continued_under_a_new_span() {
        let mut continued = request(&[("traceparent", CLIENT), ("tracestate", "congo=t61rcWkgMzE")]);
        let span = GatewaySpan::begin(&mut continued, None);
        let sent = continued.headers()["traceparent"].to_str().unwrap();
        assert_eq!(sent, span.sent.to_string());
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{sent}");
        assert!(sent.ends_with("-01"), "the client's flags: {sent}");
        assert_ne!(span.sent.parent_id(), 0x00f067aa0ba902b7, "the gateway's own span");
        assert_eq!(span.client_span, Some(0x00f067aa0ba902b7));
        assert_eq!(continued.headers()["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn no_or_an_invalid_traceparent_starts_a_new_trace_without_the_tracestate() {
        let invalid = CLIENT.to_uppercase();
        let cases = [vec![], vec![("traceparent", invalid.as_str()), ("tracestate", "a=1")]];
        for headers in cases {
            let mut fresh = request(&headers);
            let span = GatewaySpan::begin(&mut fresh, None);
            let sent = TraceParent::parse(fresh.headers()["traceparent"].as_bytes()).unwrap();
            assert_eq!(sent, span.sent);
            assert_ne!(sent.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
            assert!(!sent.is_sampled(), "nothing records a trace when spans are not exported");
            assert_eq!(span.client_span, None);
            assert!(fresh.headers().get("tracestate").is_none(), "{headers:?}");
        }
    }

    #[test]
    fn a_refusal_is_the_error_type_and_a_5xx_an_error_status() {
        let (method, start) = (Method::GET, Instant::now());
        let end = |status: Option<u16>, refusal| SpanEnd {
            method: &method,
            path: "/api/x",
            version: Version::HTTP_11,
            started: (start, SystemTime::now()),
            mount: Some("/api"),
            route: None,
            service: None,
            instance: None,
            status: status.map(|s| StatusCode::from_u16(s).unwrap()),
            refusal,
            admitted: None,
            routed: None,
            first_byte: None,
        };
        let error_type = |(attributes, _): &(Vec<KeyValue>, otel::Status)| {
            attributes.iter().find(|kv| kv.key.as_str() == "error.type").map(|kv| kv.value.to_string())
        };
        let ok = attributes(&end(Some(200), None));
        assert_eq!((error_type(&ok), ok.1), (None, otel::Status::Unset));
        let limited = attributes(&end(Some(429), Some("too_many_requests")));
        assert_eq!((error_type(&limited).as_deref(), limited.1), (Some("too_many_requests"), otel::Status::Unset));
        let timeout = attributes(&end(Some(504), Some("upstream_timeout")));
        assert_eq!(timeout.1, otel::Status::error("upstream_timeout"));
        let failed = attributes(&end(Some(500), None));
        assert_eq!((error_type(&failed).as_deref(), failed.1), (Some("500"), otel::Status::error("500")));
        assert_eq!(error_type(&attributes(&end(None, None))).as_deref(), Some("client_closed"));
    }
}
