//! The exchange with a service over its link, after the request phases admitted a request:
//! the HTTP exchange ([`http`]: buffered or streamed body) and the WebSocket relay
//! ([`websocket`]). Both use the helpers here: the request head sent to the service
//! ([`request_head`]), the stream's window ([`Upstream::window`]; both hold in the payload
//! budget only their bytes in flight within it), the wait for the service's answer
//! ([`await_response`]) and the client's response built from it ([`respond`]).
//!
//! The endpoint's timeout starts when a call is first offered to the service's link
//! ([`open_call`]): waiting for room in the link's send queue (full when the service
//! stopped reading) counts against it like waiting for the answer, so such a caller gets
//! 504 in time instead of waiting for room forever.
//!
//! Invariants: every reservation is an RAII value owned by the step that needs it, so every
//! exit path releases it; every stream is owned by a [`weir_transport::StreamHandle`] that
//! cancels it unless completed, so a dropped request future (client gone) sends Cancel.

pub(crate) mod http;
pub(crate) mod request_body;
pub(crate) mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::CONTENT_LENGTH;
use ::http::header::{HeaderName, HeaderValue};
use ::http::{HeaderMap, Method, Response, StatusCode};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_proto::{BodyMode, CancelReason, EndpointKind, Headers, RequestHead};
use weir_transport::{IncomingResponse, Link, OutgoingCall, StreamError};

use crate::config::{LimitsConfig, MountSettings, ServerConfig};
use crate::limits::bandwidth::Shaper;
use crate::limits::body_size::content_length;
use crate::limits::budget::{BudgetExceeded, PayloadBudget, Reservation};
use crate::limits::connection::ClientConn;
use crate::limits::in_flight::Registered;
use crate::limits::shared::SessionCaps;
use crate::observe::exchange::Exchange;
use crate::observe::metrics::backpressure::WaitingFor;
use crate::observe::metrics::Metrics;
use crate::request::forwarded;
use crate::response::error::GatewayError;
use crate::response::{GatewayBody, RelayLimits};
use crate::routing::{InFlightGuard, RoutingDecision};

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Headers a client may not set: the gateway states the caller's identity in them.
const IDENTITY_PREFIX: &str = "x-weir-";

/// The gateway-wide settings and state every exchange with a service uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream<'g> {
    pub server: &'g ServerConfig,
    pub limits: &'g LimitsConfig,
    pub budget: &'g Arc<PayloadBudget>,
    /// Counts the failures of relayed response bodies.
    pub metrics: &'g Arc<Metrics>,
    /// The open WebSocket sessions, which a new one joins.
    pub sessions: &'g websocket::Sessions,
}

/// What the request phases established about a request, as the exchange needs it.
#[derive(Debug)]
pub(crate) struct Admitted<'m> {
    /// The mount's prefix: its requests' bytes count under its budget share.
    pub mount: &'m str,
    /// The mount's settings: body limits, timeouts, WebSocket limits.
    pub settings: &'m MountSettings,
    /// The mount's open WebSockets per user.
    pub websockets: &'m Arc<SessionCaps>,
    pub decision: RoutingDecision<Link>,
    /// The authenticated subject; `None` for an anonymous caller.
    pub subject: Option<String>,
    /// Headers stating the caller's identity to the service (none for anonymous callers).
    pub identity_headers: Headers,
    pub client: SocketAddr,
    /// Streaming mounts with a bandwidth limit: the connection's shaper.
    pub shaper: Option<Arc<Shaper>>,
    /// Business mounts: the request's entry in the request registry.
    pub registered: Option<Registered>,
    /// The client connection, kept by whatever outlives the request (a WebSocket).
    pub conn: Arc<ClientConn>,
    /// The request's record: its body bytes are counted into it, and whatever outlives
    /// the response head (a WebSocket session, a body pump) keeps it until it ends.
    pub exchange: Arc<Exchange>,
}

impl Upstream<'_> {
    /// In-flight bytes allowed for one request on a mount: its override, else `[limits]`.
    fn per_call(&self, settings: &MountSettings) -> u64 {
        settings.max_request_bytes_per_call.unwrap_or(self.limits.payload.max_request_bytes_per_call)
    }

    /// A stream's flow-control window towards the service: the smallest of the per-call
    /// limit, `limits.stream_window` and the declared `length`, never empty. (Nothing is
    /// reserved for it: a streamed body or a WebSocket session reserves its bytes in
    /// flight as it reads them.)
    fn window(&self, per_call: u64, length: Option<u64>) -> u64 {
        per_call.min(u64::from(self.limits.stream_window)).min(length.unwrap_or(u64::MAX)).max(1)
    }
}

impl Upstream<'_> {
    /// The client's answer when a reservation does not fit, counted under its limit:
    /// 413 for the request's own limit, 503 for the client's, the mount's share, the
    /// connection's or the gateway's.
    fn refused(&self, err: BudgetExceeded, per_call: u64) -> GatewayError {
        self.metrics.budget.refused(err);
        budget_error(err, per_call)
    }

    /// A reservation for `decision`'s request whose bytes also count on its route.
    fn reservation<L>(&self, decision: &RoutingDecision<L>, client: &str, mount: &str, per_call: u64) -> Reservation {
        let reservation = self.budget.open_with_call_limit(decision.instance.conn_id, Some(client), mount, per_call);
        reservation.counting_into(self.metrics.backpressure.route_bytes(&decision.template))
    }

    /// The download bounds of a relayed response on `settings`' mount, for `route`.
    fn relay_limits(
        &self,
        settings: &MountSettings,
        route: &str,
        shaper: Option<Arc<Shaper>>,
        registered: Option<Registered>,
    ) -> RelayLimits {
        RelayLimits {
            shaper,
            download_timeout: settings.download_timeout,
            registered,
            metrics: Arc::clone(self.metrics),
            client_wait: self.metrics.backpressure.credit_wait(route, WaitingFor::Client),
        }
    }
}

/// The client's answer when a reservation does not fit: 413 for the request's own limit,
/// 503 for the client's, the mount's share, the connection's or the gateway's.
fn budget_error(err: BudgetExceeded, per_call: u64) -> GatewayError {
    match err {
        BudgetExceeded::PerCall => {
            GatewayError::PayloadTooLarge(format!("body exceeds the per-call limit of {per_call} bytes"))
        }
        other => GatewayError::Overloaded(other.to_string()),
    }
}

/// The head sent to the service: the client's request minus hop-by-hop fields (those of
/// [`HOP_BY_HOP`], every field `Connection` names, and `Upgrade` except on a WebSocket's
/// handshake), a WebSocket's `Sec-WebSocket-Extensions` (the gateway's to negotiate)
/// and any client-sent `x-weir-*` field, plus the proxy fields of
/// [`forwarded`] and the caller's identity headers.
fn request_head(
    parts: &::http::request::Parts,
    admitted: &Admitted<'_>,
    mode: BodyMode,
    server: &ServerConfig,
) -> RequestHead {
    let peer = admitted.conn.addr.ip();
    let hop = forwarded::Hop {
        peer,
        scheme: if server.tls.is_some() { "https" } else { "http" },
        trusted_peer: forwarded::is_trusted_proxy(peer, &server.trusted_proxies),
        forwarded_header: server.forwarded_header,
        authority: parts.uri.authority().map(|a| a.as_str()),
    };
    let websocket = admitted.decision.endpoint.kind == EndpointKind::WebSocket;
    let named = connection_named(&parts.headers);
    let mut headers: Headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value))
        .filter(|(name, _)| !is_hop_by_hop(name) && !name.starts_with(IDENTITY_PREFIX) && !hop.rewrites(name))
        .filter(|(name, _)| {
            (websocket && *name == "upgrade") || !(*name == "upgrade" || named.iter().any(|n| n == name))
        })
        // The gateway negotiates a WebSocket's extensions with the client itself.
        .filter(|(name, _)| !(websocket && *name == "sec-websocket-extensions"))
        .map(|(name, value)| (name.to_owned(), Bytes::copy_from_slice(value.as_bytes())))
        .collect();
    headers.extend(hop.fields(&parts.headers));
    headers.extend(admitted.identity_headers.iter().cloned());
    let decision = &admitted.decision;
    RequestHead {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        template: decision.template.clone(),
        params: decision.params.clone(),
        headers,
        body_mode: mode,
        body: Bytes::new(),
        // At most the configuration's largest chunk size, which fits in u32.
        chunk_size: u32::try_from(admitted.settings.chunk_size).ok(),
    }
}

/// A request handed to a service, awaiting its response.
struct Forwarded {
    call: OutgoingCall,
    /// When the endpoint's timeout runs out, counted from the call's first offer to the link.
    deadline: Instant,
    /// Streaming: the task copying the client's body; it reports 408/413 failures.
    pump: Option<JoinHandle<Result<(), GatewayError>>>,
    /// Buffered: the body's bytes, held until the response shows the service has them.
    held: Option<Reservation>,
}

/// The response head, the pump's failure, the timeout (504, Cancel(Timeout)) or an
/// operator's cancel, whichever first.
async fn await_response(
    forwarded: Forwarded,
    timeout: Duration,
    operator: Option<CancellationToken>,
) -> Result<(IncomingResponse, OutgoingCall), GatewayError> {
    let Forwarded { mut call, deadline, mut pump, held } = forwarded;
    let operator_cancel = async {
        match &operator {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout_at(deadline, &mut call.response) => outcome,
        err = pump_failure(pump.as_mut()) => return Err(err),
        _ = operator_cancel => {
            call.handle.cancel(CancelReason::Administrative);
            return Err(GatewayError::CancelledByOperator);
        }
    };
    drop(held);
    match outcome {
        Err(_) => {
            call.handle.cancel(CancelReason::Timeout);
            Err(GatewayError::UpstreamTimeout(timeout))
        }
        Ok(Err(_)) => Err(GatewayError::UpstreamFailed("stream closed without a response".into())),
        Ok(Ok(Err(err))) => match pump {
            // The pump cancelling the stream (408, 413) is what failed it: report that.
            Some(handle) if handle.is_finished() || matches!(err, StreamError::Cancelled(_)) => match handle.await {
                Ok(Err(pump_err)) => Err(pump_err),
                _ => Err(upstream_error(err)),
            },
            _ => Err(upstream_error(err)),
        },
        Ok(Ok(Ok(response))) => Ok((response, call)),
    }
}

/// Opens the call on the decision's instance and returns it with its deadline: the
/// endpoint's timeout, starting now. Waiting for room in the link's send queue is bounded
/// by it (504); a link that closes meanwhile is an instance that left (503).
async fn open_call(
    decision: &RoutingDecision<Link>,
    head: RequestHead,
    window: u32,
) -> Result<(OutgoingCall, Instant), GatewayError> {
    let deadline = Instant::now() + decision.effective_timeout;
    match tokio::time::timeout_at(deadline, decision.instance.link.call(head, window)).await {
        Ok(call) => Ok((call.map_err(unsent_call_error)?, deadline)),
        Err(_) => Err(GatewayError::UpstreamTimeout(decision.effective_timeout)),
    }
}

/// Resolves with the pump's error if it fails; never resolves if it succeeds or is absent.
async fn pump_failure(pump: Option<&mut JoinHandle<Result<(), GatewayError>>>) -> GatewayError {
    match pump {
        Some(handle) => match handle.await {
            Ok(Err(err)) => err,
            Ok(Ok(())) => std::future::pending().await,
            Err(join) => GatewayError::UpstreamFailed(format!("body pump failed: {join}")),
        },
        None => std::future::pending().await,
    }
}

/// The client's response from the service's (also the WebSocket relay's answer to a
/// refused upgrade). The service never sets the framing of the client's connection:
/// hop-by-hop fields stay behind, and its `Content-Length` is not passed on. hyper frames
/// the body from what the gateway sends (an inline body's own size; a streamed body is
/// held to the length the service declared, see [`GatewayBody::relay`]); only an empty
/// answer to HEAD, or a 304, keeps the service's length, which there describes the
/// representation and frames nothing.
fn respond(
    (response, call): (IncomingResponse, OutgoingCall),
    method: &Method,
    in_flight: InFlightGuard<Link>,
    limits: RelayLimits,
) -> Result<Response<GatewayBody>, GatewayError> {
    let status = StatusCode::from_u16(response.head.status)
        .map_err(|_| GatewayError::UpstreamFailed(format!("invalid status {}", response.head.status)))?;
    let mut headers = HeaderMap::with_capacity(response.head.headers.len());
    copy_headers_in(&response.head.headers, &mut headers);
    // An invalid length is ignored, as if absent.
    let declared = content_length(&headers).and_then(Result::ok);
    headers.remove(CONTENT_LENGTH);
    let body = match response.body {
        None => {
            call.handle.complete();
            let bodiless = *method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
            if let (true, true, Some(length)) = (bodiless, response.head.body.is_empty(), declared) {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            }
            GatewayBody::full(response.head.body)
        }
        Some(data) => GatewayBody::relay(data, call.handle, in_flight, declared, limits),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

fn upstream_error(err: StreamError) -> GatewayError {
    GatewayError::UpstreamFailed(err.to_string())
}

/// The error of a call the link refused to open. Nothing reached the service: a link that
/// closed between routing and sending is an instance that has left, answered like one
/// that was never there (503), not as a service failure (502).
fn unsent_call_error(err: StreamError) -> GatewayError {
    match err {
        StreamError::ConnectionLost(reason) => GatewayError::NoHealthyInstance(format!("the instance left: {reason}")),
        other => upstream_error(other),
    }
}

/// The fields a request's `Connection` names (lower case): hop-by-hop by declaration
/// (RFC 9110 §7.6.1).
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Copies a service's response headers, dropping hop-by-hop ones (those of
/// [`HOP_BY_HOP`], `Upgrade`, and any field the service's `Connection` names) and invalid
/// ones.
fn copy_headers_in(from: &Headers, to: &mut HeaderMap) {
    let named: Vec<&str> = from
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(',').map(str::trim))
        .collect();
    for (name, value) in from {
        let connection_specific =
            name.eq_ignore_ascii_case("upgrade") || named.iter().any(|n| n.eq_ignore_ascii_case(name));
        if is_hop_by_hop(name) || connection_specific {
            continue;
        }
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_maybe_shared(value.clone())) {
            (Ok(name), Ok(value)) => {
                to.append(name, value);
            }
            _ => {
                tracing::debug!(header = %name, "dropping an invalid response header from a service")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PayloadLimits;

    fn budget(aggregate: u64) -> Arc<PayloadBudget> {
        PayloadBudget::new(
            PayloadLimits {
                max_request_bytes_per_call: 1000,
                max_request_bytes_per_connection: aggregate,
                max_aggregate_inflight_bytes: aggregate,
                max_inflight_bytes_per_client: aggregate,
            },
            Default::default(),
        )
    }

    #[test]
    fn a_window_is_the_smallest_of_the_call_limit_the_stream_window_and_the_length() {
        let (server, mut limits, budget) = (ServerConfig::default(), LimitsConfig::default(), budget(1 << 20));
        limits.stream_window = 500;
        let (metrics, sessions) = (Arc::default(), websocket::Sessions::default());
        let upstream =
            Upstream { server: &server, limits: &limits, budget: &budget, metrics: &metrics, sessions: &sessions };
        assert_eq!(upstream.window(1000, None), 500);
        assert_eq!(upstream.window(200, None), 200);
        assert_eq!(upstream.window(1000, Some(10)), 10);
        assert_eq!(upstream.window(1000, Some(0)), 1, "never an empty window");
        assert_eq!(budget.counters(), Default::default(), "a window reserves nothing");
    }

    #[test]
    fn the_per_call_limit_is_the_mounts_override_else_the_gateways() {
        let (server, limits, budget) = (ServerConfig::default(), LimitsConfig::default(), budget(1 << 20));
        let (metrics, sessions) = (Arc::default(), websocket::Sessions::default());
        let upstream =
            Upstream { server: &server, limits: &limits, budget: &budget, metrics: &metrics, sessions: &sessions };
        let mut settings = MountSettings::declared_defaults();
        assert_eq!(upstream.per_call(&settings), limits.payload.max_request_bytes_per_call);
        settings.max_request_bytes_per_call = Some(42);
        assert_eq!(upstream.per_call(&settings), 42);
    }

    #[test]
    fn hop_by_hop_and_invalid_response_headers_stay_behind() {
        let from: Headers = vec![
            ("content-type".into(), Bytes::from_static(b"text/plain")),
            ("Connection".into(), Bytes::from_static(b"close")),
            ("transfer-encoding".into(), Bytes::from_static(b"chunked")),
            ("bad header".into(), Bytes::from_static(b"x")),
            ("x-bad-value".into(), Bytes::from_static(b"a\nb")),
            ("set-cookie".into(), Bytes::from_static(b"a=1")),
            ("set-cookie".into(), Bytes::from_static(b"b=2")),
            ("connection".into(), Bytes::from_static(b"x-private, X-Other")),
            ("x-private".into(), Bytes::from_static(b"1")),
            ("x-other".into(), Bytes::from_static(b"2")),
            ("upgrade".into(), Bytes::from_static(b"h2c")),
        ];
        let mut to = HeaderMap::new();
        copy_headers_in(&from, &mut to);
        assert_eq!(to.len(), 3, "{to:?}");
        assert_eq!(to["content-type"], "text/plain");
        assert_eq!(to.get_all("set-cookie").iter().count(), 2);
    }
}
