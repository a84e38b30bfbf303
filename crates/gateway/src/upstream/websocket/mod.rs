//! WebSockets through the gateway: the gateway terminates the client's WebSocket and
//! relays its messages to the service as stream data (`docs/protocol.md`, "WebSocket
//! streams"). Called by the request phases ([`crate::request`]) when the routed endpoint's kind is
//! WebSocket.
//!
//! This module owns the opening: the upgrade is checked (GET over HTTP/1.1 with
//! `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Version: 13` and a key;
//! anything else is 400), the user's slot is taken (at most `ws_max_connections_per_user`
//! open WebSockets per mount and user, the user being the authenticated subject or else
//! the client IP; over it: **503 with `Retry-After`**, like every other connection limit
//! of the gateway), an empty reservation is opened in the payload budget under the
//! client's key (the session then holds only its bytes in flight, see [`flight`]), the
//! stream is opened with a `Streamed` request head, and the service's
//! answer is awaited within the endpoint's effective timeout (504 and Cancel(Timeout)
//! after it). A 101 with a streamed body accepts: the client gets its 101 and
//! [`session`] relays messages until either side ends. Any other answer is relayed to
//! the client as an ordinary response.
//!
//! On a mount with `ws_compression = true` the client may negotiate permessage-deflate
//! ([`deflate`]): the acceptance then names it, and the session inflates the client's
//! messages and compresses its own. The service sees plain messages either way.
//!
//! Over HTTP/2 a WebSocket opens with an extended CONNECT (RFC 8441): `:protocol
//! websocket` and `Sec-WebSocket-Version: 13`, no key. It is turned into the GET it
//! stands for before routing ([`accept_extended_connect`]), so the routing table and the
//! service see what an HTTP/1.1 upgrade shows them; one whose target is not a WebSocket
//! endpoint is 400, one for another protocol 501. Accepted, the client gets a 200 (not
//! a 101) and its stream carries the WebSocket's bytes: the session relays them the same
//! way. An HTTP/2 WebSocket counts as a request in flight on its connection while its
//! session runs, so the connection is neither closed as idle nor shed under it.
//!
//! Every session runs as a task of [`Sessions`], the gateway's record of its open
//! WebSockets: when the gateway shuts down, each session closes its client with 1001
//! "Going away" and cancels its service stream (Shutdown), and the gateway waits for
//! those closes (within `shutdown_grace`) before it closes its service links.
//!
//! Invariant: the slot, the reservation, the instance's in-flight count and the stream
//! are values owned by whoever runs the WebSocket at each moment (this function, then
//! the session task), so every exit path, including a client that never completes the
//! upgrade, releases them; the stream is cancelled unless it completed.

use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL};
use http::header::{SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use weir_proto::{BodyMode, Headers};
use weir_transport::{DataReceiver, IncomingResponse};

use super::{await_response, open_call, request_head, respond, Admitted, Forwarded, Upstream};
use crate::limits::budget::Reservation;
use crate::limits::client_key;
use crate::limits::shared::SessionSlot;
use crate::observe::metrics::backpressure::WaitingFor;
use crate::response::error::GatewayError;
use crate::response::GatewayBody;

mod deflate;
mod flight;
mod session;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use deflate::Deflate;
use flight::Flight;
use session::{Session, SessionLimits};

/// The open WebSocket sessions, so that a shutting-down gateway can close them properly.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    /// Each session's task, for the wait at shutdown.
    tracker: TaskTracker,
    /// Cancelled when the gateway begins to shut down: each session then says goodbye.
    going_away: CancellationToken,
}

impl Sessions {
    /// Tells every session, open or opening, to close with 1001 "Going away".
    pub(crate) fn go_away(&self) {
        self.going_away.cancel();
    }

    /// Waits, at most `grace`, for every session to finish its close.
    pub(crate) async fn closed(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "WebSocket sessions still closing after the grace period");
        }
    }
}

/// Upgrades the request and relays messages both ways.
pub(crate) async fn relay(
    upstream: Upstream<'_>,
    admitted: Admitted<'_>,
    mut request: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let handshake = check_upgrade(&request)?;
    let deflate = admitted.settings.ws_compression.then(|| deflate::negotiate(request.headers())).flatten();
    let permit = acquire_slot(&admitted).await?;
    let in_flight = admitted.decision.instance.begin_call();
    let per_call = upstream.per_call(admitted.settings);
    let window = upstream.window(per_call, None);
    let reservation = open_reservation(&upstream, &admitted, per_call);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (parts, _) = request.into_parts();
    let head = request_head(&parts, &admitted, BodyMode::Streamed, upstream.server);
    let Admitted { mount, settings, decision, shaper, registered, conn, exchange, .. } = admitted;
    // The window fits in u32: it is at most `stream_window`.
    let (mut call, deadline) = open_call(&decision, head, u32::try_from(window).unwrap_or(u32::MAX)).await?;
    let sender =
        call.body.take().ok_or_else(|| GatewayError::UpstreamFailed("streamed call without a body sender".into()))?;
    let operator = registered.as_ref().map(|r| r.cancel.clone());
    let forwarded = Forwarded { call, deadline, pump: None, held: None };
    let (response, call) = await_response(forwarded, decision.effective_timeout, operator).await?;
    let (receiver, headers) = match classify(response)? {
        Answer::Accepted { messages, headers } => (messages, headers),
        Answer::Refused(response) => {
            // Refused: end our direction, then answer the client as for any request.
            let _ = sender.finish().await;
            let limits = upstream.relay_limits(settings, &decision.template, shaper, registered);
            return respond((response, call), &parts.method, in_flight, limits);
        }
    };
    let protocol = subprotocol(&headers);
    // An HTTP/2 WebSocket is one stream among others: its connection must count it.
    let stream_in_flight = (handshake == Handshake::Http2).then(|| conn.slot.request_started());
    exchange.on_websocket();
    let backpressure = &upstream.metrics.backpressure;
    let session = Session {
        meter: upstream.metrics.websocket.open(mount),
        service_wait: backpressure.credit_wait(&decision.template, WaitingFor::Service),
        client_wait: backpressure.credit_wait(&decision.template, WaitingFor::Client),
        sender,
        receiver,
        handle: call.handle,
        limits: SessionLimits::new(settings),
        registered,
        exchange,
        flight: Flight::new(reservation),
        deflate,
        window,
        going_away: upstream.sessions.going_away.clone(),
        _permit: permit,
        _conn: conn,
        _in_flight: in_flight,
    };
    upstream.sessions.tracker.spawn(async move {
        session.run(on_upgrade).await;
        drop(stream_in_flight);
    });
    Ok(accepted(&handshake, protocol, deflate.as_ref()))
}

/// Turns an RFC 8441 extended CONNECT for `websocket` into the GET it stands for (the
/// `:protocol` stays in the extensions, for [`check_upgrade`]) and says whether it was
/// one; an extended CONNECT for another protocol is 501.
pub(crate) fn accept_extended_connect<B>(request: &mut Request<B>) -> Result<bool, GatewayError> {
    if request.method() != Method::CONNECT {
        return Ok(false);
    }
    let Some(protocol) = request.extensions().get::<Protocol>() else {
        return Ok(false);
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        let detail = format!("extended CONNECT for `{}`: weir serves only `websocket`", protocol.as_str());
        return Err(GatewayError::NotImplemented(detail));
    }
    *request.method_mut() = Method::GET;
    Ok(true)
}

/// The refusal of an extended CONNECT whose target is not a WebSocket endpoint.
pub(crate) fn not_a_websocket() -> GatewayError {
    GatewayError::BadRequest("extended CONNECT: this is not a WebSocket endpoint".into())
}

/// How the client asked for its WebSocket.
#[derive(Debug, PartialEq, Eq)]
enum Handshake {
    /// An HTTP/1.1 upgrade with its `Sec-WebSocket-Key`.
    Http1 { key: String },
    /// An HTTP/2 extended CONNECT: no key, the stream is the WebSocket's byte stream.
    Http2,
}

/// The session's reservation, empty: on the service connection, under the client's key
/// (as an upload's), held to the session's in-flight limit.
fn open_reservation(upstream: &Upstream<'_>, admitted: &Admitted<'_>, per_call: u64) -> Reservation {
    let client = client_key(admitted.subject.as_deref(), admitted.client);
    let limit = session::in_flight_limit(per_call, admitted.settings.ws_max_message_size);
    upstream.reservation(&admitted.decision, &client, admitted.mount, limit)
}

/// The user's WebSocket slot on the mount (the user being the authenticated subject, else
/// the client IP), or 503 when the user already has `ws_max_connections_per_user` open
/// (with `[shared]`, on all replicas together).
async fn acquire_slot(admitted: &Admitted<'_>) -> Result<SessionSlot, GatewayError> {
    let user = client_key(admitted.subject.as_deref(), admitted.client);
    admitted.websockets.acquire(user, admitted.settings.ws_max_connections_per_user).await
}

/// How the client asked, if the request is a valid upgrade, else 400.
fn check_upgrade<B>(request: &Request<B>) -> Result<Handshake, GatewayError> {
    let bad = |detail: &str| Err(GatewayError::BadRequest(format!("invalid WebSocket upgrade: {detail}")));
    let headers = request.headers();
    if request.method() != Method::GET {
        return bad("the method must be GET");
    }
    if request.version() == Version::HTTP_2 {
        let protocol = request.extensions().get::<Protocol>();
        if !protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket")) {
            return bad("over HTTP/2, a WebSocket opens with an extended CONNECT (`:protocol websocket`)");
        }
        check_version(headers)?;
        return Ok(Handshake::Http2);
    }
    if request.version() != Version::HTTP_11 {
        return bad("WebSockets are served over HTTP/1.1, or HTTP/2 with an extended CONNECT");
    }
    if !has_token(headers, &UPGRADE, "websocket") {
        return bad("missing `Upgrade: websocket`");
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return bad("missing `Connection: upgrade`");
    }
    check_version(headers)?;
    match headers.get(SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) {
        Some(key) if is_websocket_key(key) => Ok(Handshake::Http1 { key: key.to_owned() }),
        _ => bad("`Sec-WebSocket-Key` must be 16 bytes in base64"),
    }
}

/// 426 with `Sec-WebSocket-Version: 13` unless the client asks for version 13 (RFC 6455
/// §4.2.2): the one version weir speaks, named so that the client may retry with it.
fn check_version(headers: &HeaderMap) -> Result<(), GatewayError> {
    match headers.get(SEC_WEBSOCKET_VERSION) {
        Some(version) if version.as_bytes() == b"13" => Ok(()),
        Some(version) => Err(GatewayError::UnsupportedWebSocketVersion(format!(
            "`Sec-WebSocket-Version: {}`; weir speaks 13",
            String::from_utf8_lossy(version.as_bytes())
        ))),
        None => Err(GatewayError::UnsupportedWebSocketVersion("no `Sec-WebSocket-Version`; weir speaks 13".into())),
    }
}

/// Whether a comma-separated header of `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A base64 encoding of 16 bytes: 22 base64 characters and `==`.
fn is_websocket_key(key: &str) -> bool {
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    key.len() == 24 && key.ends_with("==") && key.as_bytes()[..22].iter().all(|&c| is_b64(c))
}

/// The service's answer: accepted (101 with a streamed body), or refused with a final
/// status; anything else is 502.
enum Answer {
    Accepted { messages: DataReceiver, headers: Headers },
    Refused(IncomingResponse),
}

fn classify(response: IncomingResponse) -> Result<Answer, GatewayError> {
    match (response.head.status, response.body) {
        (101, Some(messages)) => Ok(Answer::Accepted { messages, headers: response.head.headers }),
        (101, None) => Err(upstream_msg("101 without a streamed body")),
        (100..=199, _) => Err(upstream_msg("an informational status instead of 101")),
        (_, body) => Ok(Answer::Refused(IncomingResponse { head: response.head, body })),
    }
}

/// The subprotocol the service chose, if valid as a header value.
fn subprotocol(headers: &Headers) -> Option<HeaderValue> {
    let (_, value) = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(SEC_WEBSOCKET_PROTOCOL.as_str()))?;
    HeaderValue::from_bytes(value).ok()
}

/// The client's acceptance: 101 for an HTTP/1.1 upgrade, 200 for an extended CONNECT
/// (whose stream then carries the WebSocket, with no key to answer); with the
/// permessage-deflate offer accepted, if any.
fn accepted(handshake: &Handshake, protocol: Option<HeaderValue>, deflate: Option<&Deflate>) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::empty());
    let headers = response.headers_mut();
    if let Some(protocol) = protocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Some(deflate) = deflate {
        headers.insert(SEC_WEBSOCKET_EXTENSIONS, deflate.header_value());
    }
    if let Handshake::Http1 { key } = handshake {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    }
    response
}

fn upstream_msg(detail: &str) -> GatewayError {
    GatewayError::UpstreamFailed(format!("WebSocket: the service answered {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_16_bytes_of_base64() {
        assert!(is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_websocket_key("dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_websocket_key("dGhlIHNhbXBsZSBub25j!Q=="));
        assert!(!is_websocket_key("dGhlIHNhbXBsZSBub25jZQ==AA"));
    }

    #[test]
    fn header_tokens_are_found_in_lists_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(has_token(&headers, &CONNECTION, "upgrade"));
        assert!(!has_token(&headers, &UPGRADE, "websocket"));
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        let handshake = Handshake::Http1 { key: "dGhlIHNhbXBsZSBub25jZQ==".into() };
        let response = accepted(&handshake, None, None);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
