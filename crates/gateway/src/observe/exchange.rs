//! [`Exchange`]: one client request's record, from its head's arrival to its end, which
//! every phase writes what it learned into (the mount, the route and the service's
//! instance, the subject, the answer, a refusal) and which reports the whole when it
//! ends: to the per-route metrics ([`crate::observe::metrics::http`]) and the access log
//! ([`crate::observe::access_log`]).
//!
//! Invariant: the request ends when the last `Arc<Exchange>` is dropped, which is when
//! nothing of it is left running: the response body ([`Observed`], dropped by hyper once
//! it is sent or the client left), a WebSocket session, a request body still being
//! pumped to the service. Reporting from `Drop` means no exit path (an error, a timeout,
//! a client gone, a panic) can skip it.
//!
//! The request id is the client's `x-request-id` when it is a plausible id (at most 128
//! characters of letters, digits and `-_.:/+=@`), else a new random one (32 hex
//! digits); the service gets it in the request and the client in the response. The
//! request's trace context is settled at the same moment ([`crate::observe::trace`]),
//! and its span ends when the exchange does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use http::header::HeaderName;
use http::{HeaderValue, Method, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};

use crate::limits::in_flight::Traffic;
use crate::observe::access_log::{AccessLog, AccessRecord};
use crate::observe::metrics::http::{method_label, Finished, MountLabel, RouteLabels};
use crate::observe::metrics::Metrics;
use crate::observe::otlp::SpanExport;
use crate::observe::trace::{GatewaySpan, SpanEnd};
use crate::response::error::GatewayError;
use crate::routing::RoutingDecision;

/// The request id's header, both ways.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-chosen request id kept.
const MAX_REQUEST_ID: usize = 128;

/// One client request, as the gateway observed it.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// When the request head arrived: durations count from here.
    started: Instant,
    /// The same moment on the wall clock, for the access log.
    started_at: SystemTime,
    request_id: HeaderValue,
    method: Method,
    /// The path as the client sent it; kept for the access log.
    path: String,
    version: Version,
    /// The connection's peer; the client the request speaks for may differ (trusted
    /// proxies), see [`Exchange::admitted`].
    peer: SocketAddr,
    /// Body bytes each way, counted where they pass (the request body's reader, the
    /// response body, a WebSocket session) and shown in the request registry too.
    traffic: Arc<Traffic>,
    /// Where the finished request is reported.
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    /// What the phases learned; each writes once, from one task at a time.
    facts: Mutex<Facts>,
    /// The request's span in its trace: the service's parent, finished at the end.
    span: GatewaySpan,
}

/// What a request's phases learned about it.
#[derive(Debug, Default)]
struct Facts {
    mount: Option<Arc<str>>,
    route: Option<Arc<str>>,
    service: Option<Arc<str>>,
    instance: Option<Arc<str>>,
    subject: Option<String>,
    client: Option<SocketAddr>,
    status: Option<StatusCode>,
    /// The code of the error the gateway answered with itself.
    refusal: Option<&'static str>,
    routed: Option<Instant>,
    admitted: Option<Instant>,
    /// When the response head was ready to send.
    first_byte: Option<Instant>,
    websocket: bool,
}

impl Exchange {
    /// The record of `request`, which arrived just now on a connection from `peer`; its
    /// request id and trace context are settled here and written into its headers.
    pub(crate) fn begin<B>(
        metrics: &Arc<Metrics>,
        access_log: &Arc<AccessLog>,
        spans: Option<&Arc<SpanExport>>,
        request: &mut Request<B>,
        peer: SocketAddr,
    ) -> Arc<Exchange> {
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) if is_plausible_id(id.as_bytes()) => id.clone(),
            _ => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = GatewaySpan::begin(request, spans);
        Arc::new(Exchange {
            started: Instant::now(),
            started_at: SystemTime::now(),
            request_id,
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            version: request.version(),
            peer,
            traffic: Arc::default(),
            metrics: Arc::clone(metrics),
            access_log: Arc::clone(access_log),
            facts: Mutex::default(),
            span,
        })
    }

    /// A record of `request` reporting to fresh metrics and no access log.
    #[cfg(test)]
    pub(crate) fn unlogged<B>(request: &mut Request<B>) -> Arc<Exchange> {
        let metrics = Arc::new(Metrics::default());
        let off = crate::config::LogConfig { access: crate::config::AccessLogTarget::Off, ..Default::default() };
        let log = Arc::new(AccessLog::new(&off, metrics.access_log_dropped.clone()).expect("no file to open"));
        Exchange::begin(&metrics, &log, None, request, "127.0.0.1:4000".parse().expect("an address"))
    }

    /// The request's id, as the service and the client see it.
    pub(crate) fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The counters of the request's body bytes each way.
    pub(crate) fn traffic(&self) -> &Arc<Traffic> {
        &self.traffic
    }

    /// The mount the request is on; from now on it counts as in flight there.
    pub(crate) fn on_mount(&self, mount: &Arc<str>) {
        let mut facts = self.facts();
        if facts.mount.is_none() {
            self.metrics.http.started(&MountLabel { mount: Arc::clone(mount) });
            facts.mount = Some(Arc::clone(mount));
        }
    }

    /// The route that matched, and the service instance chosen to answer.
    pub(crate) fn on_route<L>(&self, decision: &RoutingDecision<L>) {
        let identity = &decision.instance.identity;
        let mut facts = self.facts();
        facts.route = Some(decision.template.as_str().into());
        facts.service = Some(identity.service.as_str().into());
        facts.instance = Some(identity.instance_id.as_str().into());
        facts.routed = Some(Instant::now());
    }

    /// The request speaks for `client`, authenticated as `subject` if the mount
    /// authenticates; known before the phases that may refuse it (routing, the rate
    /// limit), so their refusals name the client too.
    pub(crate) fn on_client(&self, subject: Option<&str>, client: SocketAddr) {
        let mut facts = self.facts();
        facts.subject = subject.map(str::to_owned);
        facts.client = Some(client);
    }

    /// Every phase admitted the request.
    pub(crate) fn on_admitted(&self) {
        self.facts().admitted = Some(Instant::now());
    }

    /// The request is a WebSocket session: it ends when the session does.
    pub(crate) fn on_websocket(&self) {
        self.facts().websocket = true;
    }

    /// The gateway answers with `error` itself.
    pub(crate) fn on_refusal(&self, error: &GatewayError) {
        self.facts().refusal = Some(error.code());
    }

    /// The response head is ready to send with `status`.
    pub(crate) fn on_response(&self, status: StatusCode) {
        let mut facts = self.facts();
        facts.status = Some(status);
        facts.first_byte = Some(Instant::now());
    }

    fn facts(&self) -> MutexGuard<'_, Facts> {
        // A panic while holding this lock left plain values behind, still usable.
        self.facts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        let facts = std::mem::take(&mut *self.facts());
        let (bytes_in, bytes_out) =
            (self.traffic.bytes_in.load(Ordering::Relaxed), self.traffic.bytes_out.load(Ordering::Relaxed));
        let empty: Arc<str> = Arc::from("");
        let label = |value: &Option<Arc<str>>| value.clone().unwrap_or_else(|| Arc::clone(&empty));
        let labels = RouteLabels {
            mount: label(&facts.mount),
            route: label(&facts.route),
            method: method_label(&self.method),
            // No head was ready: the client left (or a panic ended the request) first.
            status: facts.status.map_or(499, |s| s.as_u16()),
            service: label(&facts.service),
        };
        let finished = Finished { labels: &labels, duration, bytes_in, bytes_out, refusal: facts.refusal };
        self.metrics.http.finished(finished);
        if let Some(mount) = &facts.mount {
            self.metrics.http.ended(&MountLabel { mount: Arc::clone(mount) });
        }
        self.span.finish(&SpanEnd {
            method: &self.method,
            path: &self.path,
            version: self.version,
            started: (self.started, self.started_at),
            mount: facts.mount.as_deref(),
            route: facts.route.as_deref(),
            service: facts.service.as_deref(),
            instance: facts.instance.as_deref(),
            status: facts.status,
            refusal: facts.refusal,
            admitted: facts.admitted,
            routed: facts.routed,
            first_byte: facts.first_byte,
        });
        if self.access_log.is_on() {
            let record = self.access_record(facts, duration, bytes_in, bytes_out);
            self.access_log.record(record);
        }
    }
}

impl Exchange {
    /// The access log's line for this request, which ends now after `duration`.
    fn access_record(&mut self, facts: Facts, duration: Duration, bytes_in: u64, bytes_out: u64) -> AccessRecord {
        AccessRecord {
            start: self.started_at,
            request_id: self.request_id.clone(),
            client: facts.client.unwrap_or(self.peer),
            method: self.method.clone(),
            path: std::mem::take(&mut self.path),
            version: self.version,
            mount: facts.mount,
            route: facts.route,
            service: facts.service,
            instance: facts.instance,
            subject: facts.subject,
            status: facts.status,
            reason: facts.refusal,
            bytes_in,
            bytes_out,
            duration,
            time_to_first_byte: facts.first_byte.map(|at| at.duration_since(self.started)),
            websocket: facts.websocket,
        }
    }
}

/// Whether a client's `x-request-id` is kept: short, and of characters that are safe in
/// logs and headers.
fn is_plausible_id(id: &[u8]) -> bool {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b);
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(allowed)
}

/// A new random request id: 128 bits as 32 lowercase hex digits.
fn new_request_id() -> HeaderValue {
    let id = format!("{:032x}", rand::random::<u128>());
    // Hex digits are always a valid header value.
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A response body that counts its bytes into its request's [`Exchange`] and keeps the
/// exchange alive until the body is done (sent in full, failed, or dropped).
#[derive(Debug)]
pub(crate) struct Observed<B> {
    body: B,
    exchange: Option<Arc<Exchange>>,
}

impl<B> Observed<B> {
    /// `body`, reporting to `exchange` if the request has one (admin and health
    /// requests do not).
    pub(crate) fn new(body: B, exchange: Option<Arc<Exchange>>) -> Self {
        Observed { body, exchange }
    }
}

impl<B: Body + Unpin> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(exchange)) = (&polled, &self.exchange) {
            if let Some(data) = frame.data_ref() {
                exchange.traffic.bytes_out.fetch_add(data.remaining() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plausible_client_id_is_kept_and_any_other_replaced() {
        let mut kept = Request::get("/x").header("x-request-id", "abc-123:ZZ").body(()).unwrap();
        assert_eq!(Exchange::unlogged(&mut kept).request_id(), "abc-123:ZZ");
        for bad in ["has space", "quote\"", &"x".repeat(129), ""] {
            let mut replaced = Request::get("/x").header("x-request-id", bad).body(()).unwrap();
            let exchange = Exchange::unlogged(&mut replaced);
            let id = exchange.request_id().to_str().unwrap().to_owned();
            assert_eq!(id.len(), 32, "{bad:?} replaced by {id}");
            assert_eq!(replaced.headers()["x-request-id"], id, "the service gets the new id");
        }
        let mut none = Request::get("/x").body(()).unwrap();
        let first = Exchange::unlogged(&mut none).request_id().clone();
        let mut again = Request::get("/x").body(()).unwrap();
        assert_ne!(first, Exchange::unlogged(&mut again).request_id(), "ids are random");
    }
}
