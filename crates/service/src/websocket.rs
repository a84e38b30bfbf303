//! WebSocket handlers: the service side of a WebSocket the gateway terminates
//! (`docs/protocol.md`, "WebSocket streams").
//!
//! A WebSocket endpoint is declared with [`crate::EndpointBuilder::websocket_handler`].
//! When the gateway opens its stream, the SDK accepts at once (a `101` head with a
//! streamed body) and runs the handler with a [`WebSocketContext`]: what the gateway
//! forwarded (parameters, headers), the request's cancellation token, the incoming
//! messages ([`WsIncoming`]) and a sender for outgoing ones ([`WsSender`], cheap to
//! clone into other tasks). Messages travel framed inside stream data (`weir-proto`'s
//! [`weir_proto::websocket`]); reading incoming messages is what grants the gateway
//! credit, so a slow handler slows its client down instead of buffering.
//!
//! Closing: the handler closes with [`WsSender::close`], or just returns. On return the
//! SDK sends the close the handler did not: the peer's code echoed if the client closed
//! first, else 1000 (or 1011 with the error's detail when the handler failed), then ends
//! the stream. A cancelled request (client gone, gateway shutdown) fires
//! [`WebSocketContext::cancel`] and ends the incoming messages with an error; the usual
//! grace then applies (see the crate docs, "Cancellation").

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use weir_proto::trace_context::TraceContext;
use weir_proto::websocket::{WsDecoder, WsFramingError, CLOSE_INTERNAL, CLOSE_NORMAL};
use weir_proto::{BodyMode, Headers, RequestHead, ResponseHead};
use weir_transport::{DataReceiver, DataSender, Responder, StreamError};

pub use weir_proto::websocket::WsMessage;

use crate::context::{find_header, find_param, parse_query};
use crate::error::HandlerError;
use crate::handler::Outcome;

/// Largest incoming message a WebSocket handler accepts when its endpoint declares no
/// `max_body_bytes` (64 MiB); the gateway's `ws_max_message_size` is normally smaller.
pub const DEFAULT_WS_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What a WebSocket handler returns once boxed.
pub(crate) type WsHandlerFuture = BoxFuture<'static, Result<(), HandlerError>>;

/// A WebSocket handler as the runtime calls it, with its incoming message limit.
#[derive(Clone)]
pub(crate) struct WsHandler {
    pub(crate) max_message: usize,
    pub(crate) run: Arc<dyn Fn(WebSocketContext) -> WsHandlerFuture + Send + Sync + 'static>,
}

/// Why a WebSocket operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WsError {
    /// This side has already sent its close: nothing more can be sent.
    #[error("the WebSocket is closed")]
    Closed,
    /// The peer's messages were malformed or over the size limit.
    #[error("malformed WebSocket message stream: {0}")]
    Malformed(#[from] WsFramingError),
    /// The stream broke: the request was cancelled or the connection lost.
    #[error("the WebSocket stream was interrupted: {0}")]
    Interrupted(#[from] StreamError),
}

impl From<WsError> for HandlerError {
    /// A broken WebSocket is the handler's failure to report: 500 (its detail becomes
    /// the close reason, code 1011).
    fn from(err: WsError) -> Self {
        HandlerError::internal(err.to_string())
    }
}

/// State both halves of one WebSocket share.
#[derive(Debug)]
struct Shared {
    /// The stream's sending half until this side closes.
    out: tokio::sync::Mutex<Option<DataSender>>,
    /// This side has sent its close (or can send nothing more).
    closed: AtomicBool,
    /// The peer's close, once received: echoed when the handler returns.
    peer_close: Mutex<Option<(u16, String)>>,
}

impl Shared {
    fn peer_close(&self) -> Option<(u16, String)> {
        // Set once, read once: a poisoned lock still holds a valid value.
        self.peer_close.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Everything a WebSocket handler gets.
#[derive(Debug)]
pub struct WebSocketContext {
    /// The request path as the client sent it (percent-encoded).
    pub path: String,
    /// The raw query string without `?`; empty when none.
    pub query: String,
    /// The endpoint's path template the gateway matched.
    pub template: String,
    /// Template parameters, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The upgrade request's headers, in order.
    pub headers: Headers,
    /// Fires when the gateway cancels the WebSocket (client gone without a close,
    /// shutdown) or the connection is lost.
    pub cancel: CancellationToken,
    /// Messages from the client.
    pub incoming: WsIncoming,
    /// Sends messages to the client; clone it to send from another task.
    pub outgoing: WsSender,
}

impl WebSocketContext {
    /// The value of template parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The query string's pairs, percent- and `+`-decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_query(&self.query)
    }

    /// The upgrade request's W3C trace context; see
    /// [`RawRequestContext::trace_context`](crate::RawRequestContext::trace_context).
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::from_headers(&self.headers)
    }

    /// The next message from the client; see [`WsIncoming::next`].
    pub async fn next(&mut self) -> Option<Result<WsMessage, WsError>> {
        self.incoming.next().await
    }

    /// Sends `message`; see [`WsSender::send`].
    pub async fn send(&self, message: WsMessage) -> Result<(), WsError> {
        self.outgoing.send(message).await
    }

    /// Closes with `code` and `reason`; see [`WsSender::close`].
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), WsError> {
        self.outgoing.close(code, reason).await
    }
}

/// Messages from the client, in order. Also a [`Stream`].
///
/// Yields text and binary messages, then the client's close message (after which
/// nothing more), or an error if the stream breaks. Once this side has closed, the end
/// of the stream is simply `None`.
#[derive(Debug)]
pub struct WsIncoming {
    body: DataReceiver,
    decoder: WsDecoder,
    shared: Arc<Shared>,
    done: bool,
}

impl WsIncoming {
    /// The next message; `None` after the close message or once this side has closed.
    pub async fn next(&mut self) -> Option<Result<WsMessage, WsError>> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WsMessage, WsError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.decoder.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(self.deliver(message)))),
                Ok(None) => {}
                Err(err) => return Poll::Ready(self.fail(err.into())),
            }
            match self.body.poll_chunk(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => self.decoder.push(&chunk),
                Poll::Ready(Some(Err(err))) => return Poll::Ready(self.fail(err.into())),
                Poll::Ready(None) => {
                    let err = self.decoder.finish().err().unwrap_or(WsFramingError::Truncated(0));
                    return Poll::Ready(self.fail(err.into()));
                }
            }
        }
    }

    fn deliver(&mut self, message: WsMessage) -> WsMessage {
        if let WsMessage::Close { code, reason } = &message {
            self.done = true;
            *self.shared.peer_close.lock().unwrap_or_else(|p| p.into_inner()) = Some((*code, reason.clone()));
        }
        message
    }

    /// Ends the messages: with `err`, unless this side has closed already (then the
    /// stream's end is expected and is just the end).
    fn fail(&mut self, err: WsError) -> Option<Result<WsMessage, WsError>> {
        self.done = true;
        (!self.shared.closed.load(Ordering::Acquire)).then_some(Err(err))
    }
}

impl Stream for WsIncoming {
    type Item = Result<WsMessage, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

/// Sends messages to the client. Clones share one stream; messages never interleave.
#[derive(Debug, Clone)]
pub struct WsSender {
    shared: Arc<Shared>,
}

impl WsSender {
    /// Sends `message`, waiting for the gateway's credit. A close message is the last:
    /// the stream's direction ends after it and later sends fail with [`WsError::Closed`].
    pub async fn send(&self, message: WsMessage) -> Result<(), WsError> {
        let bytes = message.encode()?;
        let mut out = self.shared.out.lock().await;
        let Some(sender) = out.as_mut() else {
            return Err(WsError::Closed);
        };
        let sent = sender.send(bytes).await;
        if sent.is_err() || message.is_close() {
            self.shared.closed.store(true, Ordering::Release);
            if let Some(sender) = out.take() {
                if sent.is_ok() {
                    sender.finish().await?;
                }
            }
        }
        sent.map_err(WsError::from)
    }

    /// Sends a text message.
    pub async fn text(&self, text: impl Into<String>) -> Result<(), WsError> {
        self.send(WsMessage::Text(text.into())).await
    }

    /// Sends a binary message.
    pub async fn binary(&self, bytes: impl Into<Bytes>) -> Result<(), WsError> {
        self.send(WsMessage::Binary(bytes.into())).await
    }

    /// Sends a close message with `code` (e.g. 1000) and `reason`, ending this side.
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), WsError> {
        self.send(WsMessage::close(code, reason)).await
    }

    /// Whether this side has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// Serves one WebSocket stream: accepts it, runs `handler`, and closes what it left open.
pub(crate) async fn exchange(
    handler: WsHandler,
    head: RequestHead,
    body: Option<DataReceiver>,
    responder: Responder,
    cancel: CancellationToken,
) -> Outcome {
    let Some(body) = body else {
        return refuse(responder, HandlerError::bad_request("a WebSocket needs a streamed request")).await;
    };
    let accept = ResponseHead { status: 101, headers: Vec::new(), body_mode: BodyMode::Streamed, body: Bytes::new() };
    let sender = match responder.send(accept).await {
        Ok(Some(sender)) => sender,
        Ok(None) => return Outcome::Failed,
        Err(err) => {
            tracing::debug!(error = %err, "WebSocket accept not sent");
            return if cancel.is_cancelled() { Outcome::Cancelled } else { Outcome::Failed };
        }
    };
    let shared = Arc::new(Shared {
        out: tokio::sync::Mutex::new(Some(sender)),
        closed: AtomicBool::new(false),
        peer_close: Mutex::new(None),
    });
    let incoming =
        WsIncoming { body, decoder: WsDecoder::new(handler.max_message), shared: Arc::clone(&shared), done: false };
    let outgoing = WsSender { shared: Arc::clone(&shared) };
    let ctx = WebSocketContext {
        path: head.path,
        query: head.query,
        template: head.template,
        params: head.params,
        headers: head.headers,
        cancel: cancel.clone(),
        incoming,
        outgoing: outgoing.clone(),
    };
    let result = (handler.run)(ctx).await;
    if cancel.is_cancelled() {
        return Outcome::Cancelled;
    }
    close_after(&outgoing, &shared, &result).await;
    match result {
        Ok(()) => Outcome::Answered(101),
        Err(_) => Outcome::Failed,
    }
}

/// The close a returning handler did not send: the peer's echoed, 1000, or 1011.
async fn close_after(outgoing: &WsSender, shared: &Shared, result: &Result<(), HandlerError>) {
    if outgoing.is_closed() {
        return;
    }
    let (code, reason) = match result {
        Err(err) => {
            tracing::warn!(status = err.status, error = %err.error, detail = %err.detail, "WebSocket handler failed");
            (CLOSE_INTERNAL, err.detail.clone())
        }
        Ok(()) => shared.peer_close().unwrap_or((CLOSE_NORMAL, String::new())),
    };
    if let Err(err) = outgoing.close(code, &reason).await {
        tracing::debug!(error = %err, "WebSocket close not sent");
    }
}

/// Answers a request that cannot be a WebSocket with an ordinary error response.
async fn refuse(responder: Responder, err: HandlerError) -> Outcome {
    let status = err.status;
    let head = ResponseHead {
        status,
        headers: vec![("content-type".to_owned(), Bytes::from_static(b"application/json"))],
        body_mode: BodyMode::Buffered,
        body: err.body(),
    };
    match responder.send(head).await {
        Ok(_) => Outcome::Answered(status),
        Err(_) => Outcome::Failed,
    }
}
