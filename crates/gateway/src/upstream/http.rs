//! The HTTP exchange with a service, the last phase of [`crate::request`]'s list.
//!
//! The body plan comes first, before any body byte is read: over `max_upload_size` or the
//! endpoint's declared maximum is 413; the body is streamed when the endpoint supports
//! streaming and its length is unknown or above the per-call limit, else buffered (a
//! buffered body declared over the per-call limit is 413 at once). A buffered body is
//! read under the budget (413 the moment it crosses the per-call limit, 503 if the
//! client's, the connection's or the aggregate budget has no room within the read
//! timeout) and sent inline. A
//! streamed body is copied by a [`Pump`] task as credit allows, holding in the budget
//! only its bytes in flight: read from the client and not yet acknowledged by the
//! service's credit. So a slow or idle sender holds next to nothing, however wide its
//! window; when the budget has no room the pump waits (at most the read timeout, then
//! 503) rather than refusing at admission. The answer is awaited and relayed by the
//! helpers of [`crate::upstream`] shared with the WebSocket relay.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use weir_proto::{BodyMode, CancelReason, EndpointDescriptor, RequestHead};
use weir_transport::{DataSender, Link};

use super::request_body::{ClientBody, ReadPolicy};
use super::{await_response, open_call, request_head, respond, Admitted, Forwarded, Upstream};
use crate::config::MountSettings;
use crate::limits::bandwidth::Shaper;
use crate::limits::body_size::{check_declared_length, content_length};
use crate::limits::budget::{BudgetExceeded, Reservation};
use crate::limits::client_key;
use crate::limits::in_flight::Traffic;
use crate::observe::metrics::backpressure::{CreditWait, WaitingFor};
use crate::observe::metrics::Metrics;
use crate::response::error::GatewayError;
use crate::response::GatewayBody;
use crate::routing::RoutingDecision;

/// Answers one client request by way of a service.
pub(crate) async fn dispatch(
    upstream: Upstream<'_>,
    admitted: Admitted<'_>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let in_flight = admitted.decision.instance.begin_call();
    let plan = plan_body(&upstream, admitted.settings, &admitted.decision.endpoint, &request)?;
    let (parts, body) = request.into_parts();
    let traffic = Arc::clone(admitted.exchange.traffic());
    let policy = read_policy(&upstream, admitted.settings, admitted.shaper.clone(), traffic);
    let body = ClientBody::new(body, policy);
    let head = request_head(&parts, &admitted, plan.mode, upstream.server);
    let client = client_key(admitted.subject.as_deref(), admitted.client);
    let decision = &admitted.decision;
    let forwarded = match plan.mode {
        BodyMode::Buffered => forward_buffered(&upstream, decision, head, body, &plan, &client, admitted.mount).await?,
        BodyMode::Streamed => forward_streamed(&upstream, decision, head, body, &plan, &client, admitted.mount).await?,
    };
    let Admitted { settings, decision, shaper, registered, .. } = admitted;
    let operator = registered.as_ref().map(|r| r.cancel.clone());
    let response = await_response(forwarded, decision.effective_timeout, operator).await?;
    let limits = upstream.relay_limits(settings, &decision.template, shaper, registered);
    respond(response, &parts.method, in_flight, limits)
}

/// The slow-sender bounds for this request's body.
fn read_policy(
    upstream: &Upstream<'_>,
    settings: &MountSettings,
    shaper: Option<Arc<Shaper>>,
    traffic: Arc<Traffic>,
) -> ReadPolicy {
    let server = upstream.server;
    ReadPolicy {
        read_timeout: server.read_timeout,
        upload_timeout: settings.upload_timeout,
        min_rate: server.min_request_data_rate,
        grace: server.data_rate_grace,
        shaper,
        traffic,
    }
}

/// What the body plan decided about a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The body plan, before any body byte is read.
fn plan_body<B: http_body::Body>(
    upstream: &Upstream<'_>,
    settings: &MountSettings,
    endpoint: &EndpointDescriptor,
    request: &Request<B>,
) -> Result<BodyPlan, GatewayError> {
    let per_call = upstream.per_call(settings);
    let max_total = endpoint.max_body_bytes.map_or(settings.max_upload_size, |m| m.min(settings.max_upload_size));
    let length = declared_length(request)?;
    check_declared_length(length, max_total)?;
    let streaming = endpoint.supports_streaming && length.is_none_or(|n| n > per_call);
    if !streaming {
        if let Some(n) = length.filter(|n| *n > per_call) {
            upstream.metrics.budget.refused(BudgetExceeded::PerCall);
            let detail = format!("buffered body of {n} bytes exceeds the per-call limit of {per_call}");
            return Err(GatewayError::PayloadTooLarge(detail));
        }
    }
    let mode = if streaming { BodyMode::Streamed } else { BodyMode::Buffered };
    Ok(BodyPlan { mode, max_total, length, per_call, chunk_size: settings.chunk_size })
}

/// The body's length when known: exact from the body itself, else its `Content-Length`.
fn declared_length<B: http_body::Body>(request: &Request<B>) -> Result<Option<u64>, GatewayError> {
    match request.body().size_hint().exact() {
        Some(n) => Ok(Some(n)),
        None => Ok(content_length(request.headers()).transpose()?),
    }
}

/// Buffered: reads the whole body under the budget, then sends it inline. When a shared
/// limit is full, each chunk waits for room at most the read timeout (as the pump does),
/// then 503: room comes back as soon as streams' bytes are acknowledged.
async fn forward_buffered(
    upstream: &Upstream<'_>,
    decision: &RoutingDecision<Link>,
    mut head: RequestHead,
    mut body: ClientBody,
    plan: &BodyPlan,
    client: &str,
    mount: &str,
) -> Result<Forwarded, GatewayError> {
    let per_call = plan.per_call;
    let mut reservation = upstream.reservation(decision, client, mount, per_call);
    let mut buffer = BytesMut::with_capacity(plan.length.unwrap_or(0).min(per_call) as usize);
    while let Some(chunk) = body.next().await? {
        if buffer.len() as u64 + chunk.len() as u64 > plan.max_total {
            return Err(GatewayError::PayloadTooLarge(format!("body exceeds the limit of {} bytes", plan.max_total)));
        }
        let deadline = Instant::now() + upstream.server.read_timeout;
        reservation.grow_until(chunk.len() as u64, deadline).await.map_err(|e| upstream.refused(e, per_call))?;
        buffer.extend_from_slice(&chunk);
    }
    head.body = buffer.freeze();
    let (call, deadline) = open_call(decision, head, 0).await?;
    // The body now sits in the link's queue until written; the reservation goes with the
    // request until the response arrives, which is when the service certainly has it.
    Ok(Forwarded { call, deadline, pump: None, held: Some(reservation) })
}

/// Streamed: sends the head with the stream's window and starts the pump. Nothing is
/// reserved yet: the pump reserves what it reads.
async fn forward_streamed(
    upstream: &Upstream<'_>,
    decision: &RoutingDecision<Link>,
    head: RequestHead,
    body: ClientBody,
    plan: &BodyPlan,
    client: &str,
    mount: &str,
) -> Result<Forwarded, GatewayError> {
    let window = upstream.window(plan.per_call, plan.length);
    let reservation = upstream.reservation(decision, client, mount, plan.per_call);
    // The window fits in u32: it is at most `stream_window`.
    let initial_credit = u32::try_from(window).unwrap_or(u32::MAX);
    let (mut call, deadline) = open_call(decision, head, initial_credit).await?;
    let sender =
        call.body.take().ok_or_else(|| GatewayError::UpstreamFailed("streamed call without a body sender".into()))?;
    // What the stream may really have in flight: the window asked for, or less when the
    // service announced a smaller one. The reservation follows this, not the request.
    let window = sender.credit().min(window).max(1);
    let pump = Pump {
        flight: InFlight { sender, reservation, window },
        max_total: plan.max_total,
        // At most the window, so a piece always fits the per-call limit once the service
        // has caught up; `window` ≥ 1 and is at most `stream_window`, so it fits usize.
        piece: plan.chunk_size.min(usize::try_from(window).unwrap_or(usize::MAX)),
        room_wait: upstream.server.read_timeout,
        service_wait: upstream.metrics.backpressure.credit_wait(&decision.template, WaitingFor::Service),
        metrics: Arc::clone(upstream.metrics),
        forwarded: 0,
    };
    Ok(Forwarded { call, deadline, pump: Some(tokio::spawn(pump.run(body))), held: None })
}

/// A wait for the service longer than this is logged once, with what the stream and the
/// link hold: a service that stopped taking a body, or credit that never came back.
const STALL_REPORT: Duration = Duration::from_secs(5);

/// Copies a client body to a service stream, holding in the budget only the bytes in
/// flight.
struct Pump {
    /// The stream and the bytes it holds in the budget.
    flight: InFlight,
    /// Largest total body (upload size, endpoint maximum): 413 past it, mid-stream.
    max_total: u64,
    /// Largest piece reserved and sent at once.
    piece: usize,
    /// Longest wait for room in the shared budget before 503: the read timeout, which
    /// is how long the client could have stalled us anyway.
    room_wait: Duration,
    /// Where the time spent waiting for the service's credit is counted.
    service_wait: CreditWait,
    /// Where a refusal by the budget is counted, by its limit.
    metrics: Arc<Metrics>,
    /// Body bytes handed to the stream so far (for the stall report).
    forwarded: u64,
}

/// Why the pump stopped forwarding before the body's end.
enum Stop {
    /// The stream is over (answered early or cancelled): stop reading quietly.
    StreamOver,
    /// The request fails with this error.
    Refused(GatewayError),
}

/// One stream's bytes in flight: read from the client and not yet acknowledged by the
/// service's credit. Invariant: the reservation is at least the unacknowledged bytes
/// plus the piece being handed over, at most the window, and is shrunk back to the
/// unacknowledged bytes whenever the pump waits.
struct InFlight {
    /// The stream's sending half: its credit tells what the service has acknowledged.
    sender: DataSender,
    /// The bytes in flight, as counted against every limit of the budget.
    reservation: Reservation,
    /// The stream's initial credit: the window minus the credit left is unacknowledged.
    window: u64,
}

impl InFlight {
    /// Gives back what the service has acknowledged, judged by the credit read once here;
    /// returns that credit. A wait for more credit must start from this very value: the
    /// link's reader adds credit on another thread at any moment, and credit read again
    /// later could already include an acknowledgement that this settling did not give
    /// back, so a wait above it could wait for credit that never comes (every byte
    /// acknowledged, the reservation still full).
    fn settle(&mut self) -> u64 {
        let credit = self.sender.credit();
        self.reservation.shrink_to(self.window.saturating_sub(credit));
        credit
    }

    /// The client's next chunk; meanwhile gives back what the service acknowledges, so a
    /// stalled client holds nothing the service already has.
    async fn next_settling(&mut self, body: &mut ClientBody) -> Result<Option<Bytes>, GatewayError> {
        let next = body.next();
        tokio::pin!(next);
        loop {
            let seen = self.settle();
            if self.reservation.bytes() == 0 {
                return next.await;
            }
            let acknowledged = tokio::select! {
                biased;
                chunk = &mut next => return chunk,
                acknowledged = self.sender.credit_above(seen) => acknowledged,
            };
            if acknowledged.is_err() {
                // The stream is over: the next send says so.
                return next.await;
            }
        }
    }
}

impl Pump {
    async fn run(mut self, mut body: ClientBody) -> Result<(), GatewayError> {
        let mut total: u64 = 0;
        loop {
            let next = self.flight.next_settling(&mut body);
            let chunk = match client_stall(next, self.forwarded).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    let _ = self.flight.sender.finish().await;
                    return Ok(());
                }
                Err(err) => return Err(self.abort(err)),
            };
            total += chunk.len() as u64;
            if total > self.max_total {
                let err = GatewayError::PayloadTooLarge(format!("body exceeds the limit of {} bytes", self.max_total));
                return Err(self.abort(err));
            }
            match self.forward(chunk).await {
                Ok(()) => {}
                Err(Stop::StreamOver) => return Ok(()),
                Err(Stop::Refused(err)) => return Err(self.abort(err)),
            }
        }
    }

    /// Reserves and sends `chunk`, piece by piece.
    async fn forward(&mut self, mut chunk: Bytes) -> Result<(), Stop> {
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(self.piece));
            let len = piece.len() as u64;
            self.reserve(len).await?;
            self.flight.sender.send(piece).await.map_err(|_| Stop::StreamOver)?;
            self.forwarded += len;
        }
        Ok(())
    }

    /// Reserves `bytes` for the piece in hand. While the stream's window or the call's
    /// own limit is full, waits for the service to acknowledge bytes (it always does, or
    /// the stream ends); while a
    /// shared limit (client, connection, gateway) is full, waits for anyone to give bytes
    /// back, at most `room_wait`, then 503.
    async fn reserve(&mut self, bytes: u64) -> Result<(), Stop> {
        let deadline = Instant::now() + self.room_wait;
        let budget = Arc::clone(self.flight.reservation.budget());
        loop {
            let released = budget.released();
            tokio::pin!(released);
            released.as_mut().enable();
            let seen = self.flight.settle();
            // A piece is reserved only once the window has room for it, so the stream
            // never holds more than its window.
            let refusal = match self.flight.reservation.bytes() + bytes <= self.flight.window {
                true => match self.flight.reservation.try_grow(bytes) {
                    Ok(()) => return Ok(()),
                    Err(refusal) => Some(refusal),
                },
                false => None,
            };
            let acknowledged = self.flight.sender.credit_above(seen);
            let outcome = match refusal {
                // The stream's window is full: the service has not acknowledged enough.
                None | Some(BudgetExceeded::PerCall) => {
                    let waited = report_stall(acknowledged, "waiting for credit", &self.flight, self.forwarded);
                    self.service_wait.timed(waited).await
                }
                Some(shared) => tokio::select! {
                    acknowledged = acknowledged => acknowledged,
                    () = released => Ok(()),
                    () = tokio::time::sleep_until(deadline) => {
                        self.metrics.budget.refused(shared);
                        let detail = format!("{shared} (no room for {:?})", self.room_wait);
                        return Err(Stop::Refused(GatewayError::Overloaded(detail)));
                    }
                },
            };
            outcome.map_err(|_| Stop::StreamOver)?;
        }
    }

    fn abort(self, err: GatewayError) -> GatewayError {
        let reason = match &err {
            // No room in the budget is a payload limit too, as seen from the service.
            GatewayError::PayloadTooLarge(_) | GatewayError::Overloaded(_) => CancelReason::PayloadLimitExceeded,
            GatewayError::RequestTimeout(_) => CancelReason::Timeout,
            _ => CancelReason::ClientDisconnected,
        };
        tracing::info!(reason = ?reason, error = %err, "request body stream aborted");
        self.flight.sender.abort(reason);
        err
    }
}

/// Awaits the client's next chunk; past [`STALL_REPORT`] says so once at debug level (a
/// slow client is no fault of the gateway's; its read timeout bounds the wait).
async fn client_stall<F: std::future::Future>(next: F, forwarded: u64) -> F::Output {
    tokio::pin!(next);
    tokio::select! {
        output = &mut next => return output,
        () = tokio::time::sleep(STALL_REPORT) => {}
    }
    tracing::debug!(forwarded, "request body: the client has sent nothing for {STALL_REPORT:?}");
    next.await
}

/// Awaits `wait`; past [`STALL_REPORT`] logs once what the stream and its link hold, then
/// keeps waiting (the request's own timeouts bound it).
async fn report_stall<F: std::future::Future>(
    wait: F,
    what: &'static str,
    flight: &InFlight,
    forwarded: u64,
) -> F::Output {
    tokio::pin!(wait);
    tokio::select! {
        output = &mut wait => return output,
        () = tokio::time::sleep(STALL_REPORT) => {}
    }
    let state = flight.sender.state();
    tracing::warn!(
        stream = flight.sender.id(),
        what,
        forwarded,
        window = flight.window,
        reserved = flight.reservation.bytes(),
        credit = state.credit,
        stream_open = state.stream_open,
        data_queue_free = state.data_queue_free,
        write_stalled_ms = state.write_stalled.as_millis() as u64,
        since_last_received_ms = state.since_last_received.as_millis() as u64,
        "request body stalled: the service has taken nothing for {STALL_REPORT:?}"
    );
    wait.await
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;
    use crate::config::{LimitsConfig, ServerConfig};
    use crate::limits::budget::PayloadBudget;

    const PER_CALL: u64 = 1000;

    /// A body whose size is unknown until it is read, like a chunked upload's.
    struct UnknownSize;

    impl http_body::Body for UnknownSize {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(None)
        }
    }

    fn plan(
        endpoint: &EndpointDescriptor,
        body: Option<&'static [u8]>,
        length: Option<&str>,
    ) -> Result<BodyPlan, GatewayError> {
        let (server, mut limits) = (ServerConfig::default(), LimitsConfig::default());
        limits.payload.max_request_bytes_per_call = PER_CALL;
        let budget = PayloadBudget::new(limits.payload, Default::default());
        let (metrics, sessions) = (Arc::default(), crate::upstream::websocket::Sessions::default());
        let upstream =
            Upstream { server: &server, limits: &limits, budget: &budget, metrics: &metrics, sessions: &sessions };
        let mut settings = MountSettings::declared_defaults();
        settings.max_upload_size = 10_000;
        let mut request = Request::post("/upload");
        if let Some(length) = length {
            request = request.header(http::header::CONTENT_LENGTH, length);
        }
        match body {
            // A body that knows its exact size.
            Some(bytes) => {
                plan_body(&upstream, &settings, endpoint, &request.body(Full::new(Bytes::from_static(bytes))).unwrap())
            }
            // A body of unknown size: only its Content-Length, if any, tells.
            None => plan_body(&upstream, &settings, endpoint, &request.body(UnknownSize).unwrap()),
        }
    }

    fn endpoint(streaming: bool, max: Option<u64>) -> EndpointDescriptor {
        let mut endpoint = EndpointDescriptor::new("POST", "/upload");
        endpoint.supports_streaming = streaming;
        endpoint.max_body_bytes = max;
        endpoint
    }

    #[test]
    fn small_bodies_are_buffered_and_large_ones_streamed_where_the_endpoint_allows() {
        let small = plan(&endpoint(true, None), Some(b"hello"), None).unwrap();
        assert_eq!((small.mode, small.length, small.per_call), (BodyMode::Buffered, Some(5), PER_CALL));
        let large = plan(&endpoint(true, None), None, Some("5000")).unwrap();
        assert_eq!((large.mode, large.length, large.max_total), (BodyMode::Streamed, Some(5000), 10_000));
        let unknown = plan(&endpoint(true, None), None, None).unwrap();
        assert_eq!((unknown.mode, unknown.length), (BodyMode::Streamed, None));
        let unknown_buffered = plan(&endpoint(false, None), None, None).unwrap();
        assert_eq!(unknown_buffered.mode, BodyMode::Buffered);
    }

    #[test]
    fn declared_bodies_over_a_limit_are_413_before_reading() {
        let too_large =
            |result: Result<BodyPlan, GatewayError>| matches!(result, Err(GatewayError::PayloadTooLarge(_)));
        assert!(too_large(plan(&endpoint(true, None), None, Some("10001"))), "over max_upload_size");
        assert!(too_large(plan(&endpoint(true, Some(100)), None, Some("101"))), "over the endpoint's maximum");
        assert!(too_large(plan(&endpoint(false, None), None, Some("1001"))), "buffered over the per-call limit");
        let capped = plan(&endpoint(true, Some(100)), None, Some("100")).unwrap();
        assert_eq!(capped.max_total, 100);
    }

    #[test]
    fn an_invalid_content_length_is_400() {
        let invalid = plan(&endpoint(true, None), None, Some("ten"));
        assert!(matches!(invalid, Err(GatewayError::BadRequest(_))), "{invalid:?}");
    }
}
