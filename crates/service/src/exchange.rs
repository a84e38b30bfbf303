//! One request, from the gateway's request head to the last byte of the response, and
//! the SDK's cancellation semantics.
//!
//! Each request runs in its own Tokio task (the *work* task: handler, then response),
//! watched by a second, small *supervisor* task. So a handler that panics takes down its
//! own task only: its [`weir_transport::Responder`] is dropped during the unwind, which
//! tells the gateway the stream failed (`HandlerFailed`), and the connection goes on
//! serving other requests.
//!
//! # Cancellation
//!
//! - The request's [`tokio_util::sync::CancellationToken`] is in the handler's context.
//!   It fires at once when the gateway cancels the request (client disconnected,
//!   timeout, payload limit breached) or the connection is lost; a streamed request body
//!   then ends with an error.
//! - From that moment the handler has a grace period (1 s by default,
//!   [`crate::ServiceBuilder::cancel_grace`]) to return, so it can clean up. After it,
//!   the supervisor aborts the work task: the handler future is dropped at its next
//!   await point.
//! - A cancelled request's response is never sent: a handler that returns after the
//!   token fired has its answer dropped, and a response body being streamed stops.
//!
//! # Sending a response
//!
//! An empty body, or a whole body of at most [`INLINE_BODY_MAX`] (1 MiB), travels inline
//! in a `Buffered` response head. A larger whole body and every generated body go as a
//! `Streamed` head followed by stream data chunks of at most the chunk size the request
//! head asks for (the gateway's mount's `chunk_size`), else [`STREAM_CHUNK`] (64 KiB),
//! and never above the largest frame payload; each is sent when the gateway has
//! granted credit for it, then an explicit end. A body
//! stream that yields an error aborts the response with `HandlerFailed`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weir_proto::{BodyMode, CancelReason, ResponseHead};
use weir_transport::{DataSender, IncomingRequest, Responder};

use crate::context::RawRequestContext;
use crate::endpoint::Handler;
use crate::error::HandlerError;
use crate::handler::{HttpHandler, Outcome};
use crate::health::{Health, InFlight};
use crate::response::{BodyStream, RawResponse, ResponseBody};
use crate::service::Service;

/// Largest whole body sent inline in the response head (1 MiB).
pub const INLINE_BODY_MAX: usize = 1024 * 1024;
/// Largest stream data chunk the SDK sends when the gateway does not ask for a chunk
/// size (64 KiB).
pub const STREAM_CHUNK: usize = 64 * 1024;

/// Starts serving `request` in its own task.
pub(crate) fn spawn(service: &Service, health: &Arc<Health>, request: IncomingRequest) {
    let IncomingRequest { head, body, cancel, responder } = request;
    let span = tracing::debug_span!("request", id = responder.id(), method = %head.method, template = %head.template);
    let handler = service
        .handler_for(&head.method, &head.template)
        .unwrap_or_else(|| unknown_endpoint(&head.method, &head.template));
    // Counted from now, so a heartbeat sent right after already sees the request.
    let in_flight = health.enter();
    let work = match handler {
        Handler::Http(handler) => {
            let ctx = RawRequestContext::new(head, body, cancel.clone());
            tokio::spawn(exchange(handler, ctx, responder, cancel.clone()).instrument(span.clone()))
        }
        Handler::WebSocket(handler) => {
            let ws = crate::websocket::exchange(handler, head, body, responder, cancel.clone());
            tokio::spawn(ws.instrument(span.clone()))
        }
    };
    let grace = service.inner.cancel_grace;
    tokio::spawn(supervise(work, cancel, grace, in_flight).instrument(span));
}

/// A handler for a template this service never declared (a gateway bug): 404.
fn unknown_endpoint(method: &str, template: &str) -> Handler {
    tracing::warn!(%method, %template, "request for an endpoint this service does not declare");
    Handler::Http(Arc::new(|_| Box::pin(async { Err(HandlerError::not_found("no such endpoint on this service")) })))
}

/// Waits for the work task; on cancellation, gives it `grace` and then aborts it.
async fn supervise(mut work: JoinHandle<Outcome>, cancel: CancellationToken, grace: Duration, in_flight: InFlight) {
    let joined = tokio::select! {
        joined = &mut work => joined,
        () = cancel.cancelled() => match tokio::time::timeout(grace, &mut work).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::debug!(?grace, "cancelled handler did not return within its grace; aborting it");
                work.abort();
                // Resolves once the aborted future has been dropped (its cleanup ran).
                let _ = work.await;
                return;
            }
        },
    };
    match joined {
        Ok(outcome) => in_flight.record(outcome.is_failure()),
        Err(err) if err.is_panic() => {
            tracing::error!(panic = panic_message(err.into_panic().as_ref()), "handler panicked");
            in_flight.record(true);
        }
        Err(_) => {}
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// The work task: runs the handler, then sends its response unless cancelled.
async fn exchange(
    handler: HttpHandler,
    ctx: RawRequestContext,
    responder: Responder,
    cancel: CancellationToken,
) -> Outcome {
    let chunk = ctx.chunk_size.map_or(STREAM_CHUNK, |size| size.clamp(1, weir_proto::DEFAULT_MAX_FRAME_PAYLOAD));
    let response = match handler(ctx).await {
        Ok(response) => response,
        Err(err) => {
            if err.status >= 500 {
                tracing::warn!(status = err.status, error = %err.error, detail = %err.detail, "handler failed");
            }
            err.into_response()
        }
    };
    if cancel.is_cancelled() {
        return Outcome::Cancelled;
    }
    send_response(responder, response, chunk, &cancel).await
}

/// Sends `response` on `responder` as the module docs describe, its streamed body in
/// pieces of at most `chunk` bytes.
async fn send_response(
    responder: Responder,
    response: RawResponse,
    chunk: usize,
    cancel: &CancellationToken,
) -> Outcome {
    let response = checked(response);
    let status = response.status;
    let (head, stream) = plan(response);
    let sender = match responder.send(head).await {
        Ok(sender) => sender,
        Err(err) => {
            tracing::debug!(error = %err, "response head not sent");
            return if cancel.is_cancelled() { Outcome::Cancelled } else { Outcome::Failed };
        }
    };
    match (sender, stream) {
        (Some(sender), Some(stream)) => pump(sender, stream, chunk, cancel).await.unwrap_or(Outcome::Answered(status)),
        _ => Outcome::Answered(status),
    }
}

/// `response`, or a 500 if the wire could not carry its head (the transport would refuse
/// to encode it).
fn checked(response: RawResponse) -> RawResponse {
    let status_ok = (100..=999).contains(&response.status);
    let headers_ok = response.headers.len() <= usize::from(u16::MAX)
        && response
            .headers
            .iter()
            .all(|(name, value)| name.len() <= usize::from(u16::MAX) && u32::try_from(value.len()).is_ok());
    if status_ok && headers_ok {
        return response;
    }
    tracing::error!(status = response.status, "handler answered a response the protocol cannot carry");
    HandlerError::internal("the service produced an invalid response").into_response()
}

/// The response head and, for a streamed body, the stream to send after it.
fn plan(response: RawResponse) -> (ResponseHead, Option<BodyStream>) {
    let RawResponse { status, mut headers, body } = response;
    let (body_mode, inline, stream) = match body {
        ResponseBody::Empty => (BodyMode::Buffered, Bytes::new(), None),
        ResponseBody::Full(bytes) if bytes.len() <= INLINE_BODY_MAX => (BodyMode::Buffered, bytes, None),
        ResponseBody::Full(bytes) => {
            if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-length")) {
                headers.push(("content-length".to_owned(), Bytes::from(bytes.len().to_string())));
            }
            let once: BodyStream = Box::pin(futures_util::stream::iter([Ok(bytes)]));
            (BodyMode::Streamed, Bytes::new(), Some(once))
        }
        ResponseBody::Stream(stream) => (BodyMode::Streamed, Bytes::new(), Some(stream)),
    };
    (ResponseHead { status, headers, body_mode, body: inline }, stream)
}

/// Sends `stream` in chunks of at most `chunk` bytes, then the end. `None` when the
/// whole body was sent; otherwise how the exchange ended instead.
async fn pump(
    mut sender: DataSender,
    mut stream: BodyStream,
    chunk: usize,
    cancel: &CancellationToken,
) -> Option<Outcome> {
    loop {
        let item = tokio::select! {
            () = cancel.cancelled() => return Some(Outcome::Cancelled),
            item = stream.next() => item,
        };
        let mut bytes = match item {
            None => break,
            Some(Ok(bytes)) => bytes,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "response body stream failed; aborting the response");
                sender.abort(CancelReason::HandlerFailed);
                return Some(Outcome::Failed);
            }
        };
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(chunk));
            if let Err(err) = sender.send(piece).await {
                tracing::debug!(error = %err, "response body not sent in full");
                return Some(if cancel.is_cancelled() { Outcome::Cancelled } else { Outcome::Failed });
            }
        }
    }
    match sender.finish().await {
        Ok(()) => None,
        Err(_) if cancel.is_cancelled() => Some(Outcome::Cancelled),
        Err(_) => Some(Outcome::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_go_inline() {
        let (head, stream) = plan(RawResponse::text(200, "hi"));
        assert_eq!(head.body_mode, BodyMode::Buffered);
        assert_eq!(&head.body[..], b"hi");
        assert!(stream.is_none());
    }

    #[test]
    fn large_bodies_are_streamed_with_a_length() {
        let big = Bytes::from(vec![7u8; INLINE_BODY_MAX + 1]);
        let (head, stream) = plan(RawResponse::new(200).with_body(big));
        assert_eq!(head.body_mode, BodyMode::Streamed);
        assert!(head.body.is_empty() && stream.is_some());
        let length = head.headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.clone());
        assert_eq!(length, Some(Bytes::from((INLINE_BODY_MAX + 1).to_string())));
    }

    #[test]
    fn unencodable_status_becomes_500() {
        assert_eq!(checked(RawResponse::new(42)).status, 500);
        assert_eq!(checked(RawResponse::new(299)).status, 299);
    }

    #[test]
    fn failures_are_5xx_and_broken_streams() {
        assert!(Outcome::Answered(503).is_failure());
        assert!(!Outcome::Answered(404).is_failure());
        assert!(Outcome::Failed.is_failure());
        assert!(!Outcome::Cancelled.is_failure());
    }
}
