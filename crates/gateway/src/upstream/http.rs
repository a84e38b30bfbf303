//! Dispatch: one client request's life, in named phases.
//!
//! 1. **route** — the routing table turns (method, path, version) into a
//!    [`RoutingDecision`]: endpoint, instance, effective timeout. Separate from dispatch
//!    (seed 002 §3).
//! 2. **admit** — the body policy: over `max_upload_size` or the endpoint's declared
//!    maximum → 413 before any body byte is read; buffered or streaming is decided exactly
//!    as seed 002 §3 says (the endpoint supports streaming, and the length is unknown or
//!    above the per-call limit); a buffered body over the per-call limit → 413 at once.
//! 3. **forward** — buffered: read the body under the budget (413 the moment it crosses
//!    the per-call limit, 503 if the connection or aggregate budget is exhausted), then
//!    send it inline. Streaming: reserve the stream's whole window in the budget at
//!    admission (503 at once if it does not fit: a transfer is never cut halfway for
//!    budget), then a pump task copies chunks to the service as credit allows.
//! 4. **await** — the response head, within the effective timeout (504 and Cancel(Timeout)
//!    after it); a failure of the pump first (408 slow body, 413 upload size) wins.
//! 5. **respond** — status, headers and a body that is either inline or relayed.
//!
//! Every reservation is an RAII value owned by the phase that needs it, so every exit
//! path releases it; every stream is owned by a [`weir_transport::StreamHandle`] that
//! cancels it unless completed, so a dropped request future (client gone) sends Cancel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_proto::{BodyMode, CancelReason, Headers, RequestHead};
use weir_transport::{DataSender, IncomingResponse, Link, OutgoingCall, StreamError};

use crate::request::authenticate::Identity;
use crate::response::{GatewayBody, RelayLimits};
use crate::limits::budget::{BudgetExceeded, Reservation};
use crate::response::error::GatewayError;
use crate::request::mount::Mount;
use crate::request::Admitted;
use crate::limits::in_flight::Traffic;
use crate::upstream::request_body::{ClientBody, ReadPolicy};
use crate::routing::{InFlightGuard, RouteError, RoutingDecision};
use crate::services::connection::Gateway;
use crate::limits::bandwidth::Shaper;

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
/// The authenticated subject, forwarded to the service (absent for anonymous callers).
pub const SUBJECT_HEADER: &str = "x-weir-subject";
/// The authenticated claims, forwarded to the service with the subject: a JSON array of
/// `{"type": .., "value": ..}` objects, so that a type may repeat (`docs/protocol.md`,
/// "Identity headers").
pub const CLAIMS_HEADER: &str = "x-weir-claims";

/// Answers one client request by way of a service.
pub(crate) async fn dispatch(
    gateway: &Gateway,
    admitted: Admitted,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let Admitted { decision, client, mount, identity, shaper, registered, conn: _ } = admitted;
    let in_flight = decision.instance.begin_call();
    let plan = admit(gateway, &mount, &decision, &request)?;
    let (parts, body) = request.into_parts();
    let traffic = registered.as_ref().map(|r| Arc::clone(&r.traffic));
    let body = ClientBody::new(body, read_policy(gateway, &mount, shaper.clone(), traffic));
    let head = request_head(&parts, &decision, client, &identity, plan.mode);
    let target = Target { link: &decision.instance.link, conn_id: decision.instance.conn_id };
    let forwarded = match plan.mode {
        BodyMode::Buffered => forward_buffered(gateway, target, head, body, &plan).await?,
        BodyMode::Streamed => forward_streamed(gateway, target, head, body, &plan).await?,
    };
    let operator = registered.as_ref().map(|r| r.cancel.clone());
    let response = await_response(forwarded, decision.effective_timeout, operator).await?;
    let limits = RelayLimits { shaper, download_timeout: mount.config.settings.download_timeout, registered };
    respond(response, in_flight, limits)
}

/// The routing decision (a phase of its own, run by the pipeline before dispatch).
pub(crate) fn route(gateway: &Gateway, request: &Request<Incoming>) -> Result<RoutingDecision<Link>, GatewayError> {
    let version = match request.headers().get(&gateway.config().routing.version_header) {
        None => None,
        Some(value) => {
            Some(value.to_str().map_err(|_| GatewayError::BadRequest("version header is not ASCII".into()))?)
        }
    };
    gateway.routing().route(request.method().as_str(), request.uri().path(), version).map_err(|err| match err {
        RouteError::NotFound => GatewayError::NotFound,
        RouteError::MethodNotAllowed { allow } => GatewayError::MethodNotAllowed { allow },
        RouteError::NoHealthyInstance { detail } => GatewayError::NoHealthyInstance(detail),
        RouteError::InvalidVersion { value } => {
            GatewayError::BadRequest(format!("version {value:?} is not a semantic version"))
        }
    })
}

/// The slow-sender bounds for this request's body.
fn read_policy(
    gateway: &Gateway,
    mount: &Mount,
    shaper: Option<Arc<Shaper>>,
    traffic: Option<Arc<Traffic>>,
) -> ReadPolicy {
    let server = &gateway.config().server;
    ReadPolicy {
        read_timeout: server.read_timeout,
        upload_timeout: mount.config.settings.upload_timeout,
        min_rate: server.min_request_data_rate,
        grace: server.data_rate_grace,
        shaper,
        traffic,
    }
}

/// The service connection a request goes to.
#[derive(Clone, Copy)]
struct Target<'a> {
    link: &'a Link,
    /// The budget's key for the connection.
    conn_id: u64,
}

/// A request handed to a service, awaiting its response.
pub(crate) struct Forwarded {
    pub call: OutgoingCall,
    /// Streaming: the task copying the client's body; it reports 408/413 failures.
    pub pump: Option<JoinHandle<Result<(), GatewayError>>>,
    /// Buffered: the body's bytes, held until the response shows the service has them.
    pub held: Option<Reservation>,
}

/// What admission decided about a request body.
struct BodyPlan {
    mode: BodyMode,
    /// Largest total body accepted (upload size, endpoint maximum).
    max_total: u64,
    /// Declared length, if any.
    length: Option<u64>,
    /// In-flight bytes allowed for this request (the mount's override or `[limits]`).
    per_call: u64,
    /// Largest body chunk forwarded as one frame.
    chunk_size: usize,
}

/// Phase 2: the body policy, before any body byte is read.
fn admit(
    gateway: &Gateway,
    mount: &Mount,
    decision: &RoutingDecision<Link>,
    request: &Request<Incoming>,
) -> Result<BodyPlan, GatewayError> {
    let settings = &mount.config.settings;
    let per_call =
        settings.max_request_bytes_per_call.unwrap_or(gateway.config().limits.payload.max_request_bytes_per_call);
    let max_total =
        decision.endpoint.max_body_bytes.map_or(settings.max_upload_size, |m| m.min(settings.max_upload_size));
    let length = declared_length(request)?;
    if let Some(n) = length.filter(|n| *n > max_total) {
        return Err(GatewayError::PayloadTooLarge(format!("body of {n} bytes exceeds the limit of {max_total}")));
    }
    let streaming = decision.endpoint.supports_streaming && length.is_none_or(|n| n > per_call);
    if !streaming {
        if let Some(n) = length.filter(|n| *n > per_call) {
            let detail = format!("buffered body of {n} bytes exceeds the per-call limit of {per_call}");
            return Err(GatewayError::PayloadTooLarge(detail));
        }
    }
    let mode = if streaming { BodyMode::Streamed } else { BodyMode::Buffered };
    Ok(BodyPlan { mode, max_total, length, per_call, chunk_size: settings.chunk_size })
}

fn declared_length(request: &Request<Incoming>) -> Result<Option<u64>, GatewayError> {
    if let Some(n) = request.body().size_hint().exact() {
        return Ok(Some(n));
    }
    match request.headers().get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| GatewayError::BadRequest("invalid Content-Length".into())),
    }
}

fn budget_error(err: BudgetExceeded, per_call: u64) -> GatewayError {
    match err {
        BudgetExceeded::PerCall => {
            GatewayError::PayloadTooLarge(format!("body exceeds the per-call limit of {per_call} bytes"))
        }
        other => GatewayError::Overloaded(other.to_string()),
    }
}

/// Phase 3, buffered: read the whole body under the budget, then send it inline.
async fn forward_buffered(
    gateway: &Gateway,
    target: Target<'_>,
    mut head: RequestHead,
    mut body: ClientBody,
    plan: &BodyPlan,
) -> Result<Forwarded, GatewayError> {
    let per_call = plan.per_call;
    let mut reservation = gateway.budget().open_with_call_limit(target.conn_id, per_call);
    let mut buffer = BytesMut::with_capacity(plan.length.unwrap_or(0).min(per_call) as usize);
    while let Some(chunk) = body.next().await? {
        if buffer.len() as u64 + chunk.len() as u64 > plan.max_total {
            return Err(GatewayError::PayloadTooLarge(format!("body exceeds the limit of {} bytes", plan.max_total)));
        }
        reservation.try_grow(chunk.len() as u64).map_err(|e| budget_error(e, per_call))?;
        buffer.extend_from_slice(&chunk);
    }
    head.body = buffer.freeze();
    let call = target.link.call(head, 0).await.map_err(upstream_error)?;
    // The body now sits in the link's queue until written; the reservation goes with the
    // request until the response arrives, which is when the service certainly has it.
    Ok(Forwarded { call, pump: None, held: Some(reservation) })
}

/// Phase 3, streaming: reserve a window, send the head, start the pump.
async fn forward_streamed(
    gateway: &Gateway,
    target: Target<'_>,
    head: RequestHead,
    body: ClientBody,
    plan: &BodyPlan,
) -> Result<Forwarded, GatewayError> {
    let stream_window = u64::from(gateway.config().limits.stream_window);
    let window = plan.per_call.min(stream_window).min(plan.length.unwrap_or(u64::MAX)).max(1);
    let mut reservation = gateway.budget().open_with_call_limit(target.conn_id, plan.per_call);
    reservation.try_grow(window).map_err(|e| budget_error(e, plan.per_call))?;
    // The window fits in u32: it is at most `stream_window`.
    let window = u32::try_from(window).unwrap_or(u32::MAX);
    let mut call = target.link.call(head, window).await.map_err(upstream_error)?;
    let sender =
        call.body.take().ok_or_else(|| GatewayError::UpstreamFailed("streamed call without a body sender".into()))?;
    let pump = Pump { sender, reservation, max_total: plan.max_total, chunk_size: plan.chunk_size };
    Ok(Forwarded { call, pump: Some(tokio::spawn(pump.run(body))), held: None })
}

/// Copies a client body to a service stream.
struct Pump {
    sender: DataSender,
    /// Held for the pump's life: the window it reserved at admission.
    reservation: Reservation,
    max_total: u64,
    chunk_size: usize,
}

impl Pump {
    async fn run(mut self, mut body: ClientBody) -> Result<(), GatewayError> {
        let mut total: u64 = 0;
        loop {
            let chunk = match body.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    let _ = self.sender.finish().await;
                    drop(self.reservation);
                    return Ok(());
                }
                Err(err) => return Err(self.abort(err)),
            };
            total += chunk.len() as u64;
            if total > self.max_total {
                let err = GatewayError::PayloadTooLarge(format!("body exceeds the limit of {} bytes", self.max_total));
                return Err(self.abort(err));
            }
            if self.send(chunk).await.is_err() {
                // The stream is over (answered early or cancelled): stop reading quietly.
                return Ok(());
            }
        }
    }

    async fn send(&mut self, mut chunk: Bytes) -> Result<(), StreamError> {
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(self.chunk_size));
            self.sender.send(piece).await?;
        }
        Ok(())
    }

    fn abort(self, err: GatewayError) -> GatewayError {
        let reason = match &err {
            GatewayError::PayloadTooLarge(_) => CancelReason::PayloadLimitExceeded,
            GatewayError::RequestTimeout(_) => CancelReason::Timeout,
            _ => CancelReason::ClientDisconnected,
        };
        tracing::info!(reason = ?reason, error = %err, "request body stream aborted");
        self.sender.abort(reason);
        err
    }
}

/// Phase 4: the response head, the pump's failure, the timeout (504, Cancel(Timeout))
/// or an operator's cancel, whichever first. Shared with the WebSocket relay.
pub(crate) async fn await_response(
    forwarded: Forwarded,
    timeout: Duration,
    operator: Option<CancellationToken>,
) -> Result<(IncomingResponse, OutgoingCall), GatewayError> {
    let Forwarded { mut call, mut pump, held } = forwarded;
    let operator_cancel = async {
        match &operator {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, &mut call.response) => outcome,
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

/// Phase 5: the client's response (also the WebSocket relay's answer to a refused upgrade).
pub(crate) fn respond(
    (response, call): (IncomingResponse, OutgoingCall),
    in_flight: InFlightGuard<Link>,
    limits: RelayLimits,
) -> Result<Response<GatewayBody>, GatewayError> {
    let status = StatusCode::from_u16(response.head.status)
        .map_err(|_| GatewayError::UpstreamFailed(format!("invalid status {}", response.head.status)))?;
    let mut headers = HeaderMap::with_capacity(response.head.headers.len());
    copy_headers_in(&response.head.headers, &mut headers);
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = match response.body {
        None => {
            call.handle.complete();
            GatewayBody::full(response.head.body)
        }
        Some(data) => GatewayBody::relay(data, call.handle, in_flight, length, limits),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

fn upstream_error(err: StreamError) -> GatewayError {
    GatewayError::UpstreamFailed(err.to_string())
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The head sent to the service: the client's request minus hop-by-hop headers and any
/// client-sent `x-weir-*` header, plus `x-forwarded-for`, `x-forwarded-proto` and, for
/// an authenticated caller, the identity headers. Shared with the WebSocket relay.
pub(crate) fn request_head(
    parts: &http::request::Parts,
    decision: &RoutingDecision<Link>,
    client: SocketAddr,
    identity: &Identity,
    mode: BodyMode,
) -> RequestHead {
    let mut headers: Headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name.as_str()) && !name.as_str().starts_with(IDENTITY_PREFIX))
        .map(|(name, value)| (name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes())))
        .collect();
    headers.push(("x-forwarded-for".to_owned(), Bytes::from(client.ip().to_string())));
    headers.push(("x-forwarded-proto".to_owned(), Bytes::from_static(b"http")));
    if let Some(subject) = &identity.subject {
        headers.push((SUBJECT_HEADER.to_owned(), Bytes::from(subject.clone())));
        let claims: Vec<serde_json::Value> =
            identity.claims.iter().map(|(t, v)| serde_json::json!({ "type": t, "value": v })).collect();
        headers.push((CLAIMS_HEADER.to_owned(), Bytes::from(serde_json::Value::Array(claims).to_string())));
    }
    RequestHead {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        template: decision.template.clone(),
        params: decision.params.clone(),
        headers,
        body_mode: mode,
        body: Bytes::new(),
    }
}

/// Copies a service's response headers, dropping hop-by-hop and invalid ones.
fn copy_headers_in(from: &Headers, to: &mut HeaderMap) {
    for (name, value) in from {
        if is_hop_by_hop(name) {
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
