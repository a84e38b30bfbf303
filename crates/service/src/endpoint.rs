//! Endpoint declarations: what the gateway is told ([`EndpointDescriptor`]) bound to the
//! handler that answers it.
//!
//! [`Endpoint::get`] and friends start an [`EndpointBuilder`] that sets the descriptor's
//! options; [`EndpointBuilder::raw`], [`EndpointBuilder::typed`] or
//! [`EndpointBuilder::websocket_handler`] finish it with a handler. Every handler is
//! stored as a [`Handler`]: HTTP handlers in one shape (typed handlers are raw handlers
//! wrapped by [`crate::typed`]), WebSocket handlers in another ([`crate::websocket`]).
//! Declarations are checked when the service is built ([`crate::service`]), not here,
//! so building an endpoint cannot fail.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_proto::{ClaimRequirement, EndpointDescriptor, EndpointKind};

use crate::context::RawRequestContext;
use crate::error::HandlerError;
use crate::handler::HttpHandler;
use crate::response::RawResponse;
use crate::typed::{typed_handler, TypedRequest};
use crate::websocket::{WebSocketContext, WsHandler, DEFAULT_WS_MAX_MESSAGE};

/// What answers an endpoint: an HTTP handler, or a WebSocket handler.
#[derive(Clone)]
pub(crate) enum Handler {
    Http(HttpHandler),
    WebSocket(WsHandler),
}

/// One endpoint: its descriptor and its handler.
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) descriptor: EndpointDescriptor,
    pub(crate) handler: Handler,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint").field("descriptor", &self.descriptor).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Starts an endpoint for `method` (upper-cased) and path template `path`: literal
    /// segments, `{name}` parameters and a trailing `{*rest}` catch-all.
    // `Endpoint::new` reads as the declaration it starts; like `get`/`post` it returns
    // the builder, and the builder's finisher returns the `Endpoint`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(method: &str, path: &str) -> EndpointBuilder {
        EndpointBuilder { descriptor: EndpointDescriptor::new(method, path) }
    }

    /// Starts a `GET` endpoint.
    pub fn get(path: &str) -> EndpointBuilder {
        Endpoint::new("GET", path)
    }

    /// Starts a `POST` endpoint.
    pub fn post(path: &str) -> EndpointBuilder {
        Endpoint::new("POST", path)
    }

    /// Starts a `PUT` endpoint.
    pub fn put(path: &str) -> EndpointBuilder {
        Endpoint::new("PUT", path)
    }

    /// Starts a `PATCH` endpoint.
    pub fn patch(path: &str) -> EndpointBuilder {
        Endpoint::new("PATCH", path)
    }

    /// Starts a `DELETE` endpoint.
    pub fn delete(path: &str) -> EndpointBuilder {
        Endpoint::new("DELETE", path)
    }

    /// What the gateway is told about this endpoint.
    pub fn descriptor(&self) -> &EndpointDescriptor {
        &self.descriptor
    }
}

/// An endpoint being declared; finish it with [`EndpointBuilder::raw`],
/// [`EndpointBuilder::typed`] or [`EndpointBuilder::websocket_handler`].
#[derive(Debug, Clone)]
#[must_use = "an endpoint builder does nothing until finished with .raw(), .typed() or .websocket_handler()"]
pub struct EndpointBuilder {
    descriptor: EndpointDescriptor,
}

impl EndpointBuilder {
    /// Lets the gateway stream large or unknown-length request bodies to the handler
    /// instead of buffering them (within its payload limits).
    pub fn streaming(mut self) -> Self {
        self.descriptor.supports_streaming = true;
        self
    }

    /// The endpoint's own timeout, instead of the gateway's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.descriptor.timeout = Some(timeout);
        self
    }

    /// Requires the caller to hold claim `claim_type`, with value `value` when given.
    pub fn require_claim(mut self, claim_type: &str, value: Option<&str>) -> Self {
        self.descriptor
            .requiring_claims
            .push(ClaimRequirement { claim_type: claim_type.to_owned(), value: value.map(str::to_owned) });
        self
    }

    /// Accepts request bodies of content type `content_type` (call again for more; with
    /// none declared, any is accepted).
    pub fn content_type(mut self, content_type: &str) -> Self {
        self.descriptor.content_types.push(content_type.to_owned());
        self
    }

    /// The largest request body the endpoint accepts. Typed handlers also use it as
    /// their body limit (default 8 MiB).
    pub fn max_body_bytes(mut self, max: u64) -> Self {
        self.descriptor.max_body_bytes = Some(max);
        self
    }

    /// Finishes as a WebSocket endpoint (the gateway terminates the client's WebSocket
    /// and relays its messages): `handler` runs once per WebSocket with a
    /// [`WebSocketContext`]; see the `websocket` module. Its incoming messages may be up
    /// to [`EndpointBuilder::max_body_bytes`] long (default
    /// [`DEFAULT_WS_MAX_MESSAGE`](crate::DEFAULT_WS_MAX_MESSAGE)).
    pub fn websocket_handler<F, Fut>(mut self, handler: F) -> Endpoint
    where
        F: Fn(WebSocketContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.descriptor.kind = EndpointKind::WebSocket;
        let max_message = self
            .descriptor
            .max_body_bytes
            .map_or(DEFAULT_WS_MAX_MESSAGE, |max| usize::try_from(max).unwrap_or(usize::MAX));
        let run = Arc::new(move |ctx| Box::pin(handler(ctx)) as BoxFuture<'static, _>);
        Endpoint { descriptor: self.descriptor, handler: Handler::WebSocket(WsHandler { max_message, run }) }
    }

    /// Finishes with a raw handler: it gets the whole [`RawRequestContext`], reads the
    /// body as it wants, and answers any [`RawResponse`].
    pub fn raw<F, Fut>(self, handler: F) -> Endpoint
    where
        F: Fn(RawRequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<RawResponse, HandlerError>> + Send + 'static,
    {
        let handler: HttpHandler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        Endpoint { descriptor: self.descriptor, handler: Handler::Http(handler) }
    }

    /// Finishes with a typed handler: the body is parsed from JSON into `B` and the
    /// handler's `T` answered as JSON with status 200. See [`TypedRequest`].
    pub fn typed<B, T, F, Fut>(self, handler: F) -> Endpoint
    where
        B: DeserializeOwned + Send + 'static,
        T: Serialize + 'static,
        F: Fn(TypedRequest<B>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    {
        let handler = typed_handler(&self.descriptor, handler);
        Endpoint { descriptor: self.descriptor, handler: Handler::Http(handler) }
    }

    /// The descriptor as declared so far.
    pub fn descriptor(&self) -> &EndpointDescriptor {
        &self.descriptor
    }
}
