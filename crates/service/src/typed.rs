//! Typed handlers: JSON in, JSON out, with serde doing the work.
//!
//! A typed handler is a raw handler underneath: the wrapper here collects the request
//! body (up to the endpoint's `max_body_bytes`, else 8 MiB; over it is 413), parses it as
//! JSON into the handler's body type `B` (an empty body parses as JSON `null`, so `()`
//! and `Option<T>` accept a bodiless request; invalid JSON is 400), calls the handler
//! with a [`TypedRequest`], and answers its `Ok(T)` as JSON with status 200. A
//! [`HandlerError`] is answered as its own status with the JSON error body.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use weir_proto::trace_context::TraceContext;
use weir_proto::{EndpointDescriptor, Headers};

use crate::context::{find_header, find_param, parse_query, RawRequestContext};
use crate::error::HandlerError;
use crate::handler::HttpHandler;
use crate::response::RawResponse;

/// Body limit of a typed handler whose endpoint declares no `max_body_bytes` (8 MiB).
pub const DEFAULT_TYPED_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What a typed handler gets: the request with its body parsed into `B`.
#[derive(Debug)]
pub struct TypedRequest<B> {
    /// HTTP method, upper case.
    pub method: String,
    /// The request path as the client sent it (percent-encoded).
    pub path: String,
    /// Template parameters, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The query string's pairs, decoded, in order.
    pub query_pairs: Vec<(String, String)>,
    /// The raw query string without `?`, which [`TypedRequest::query`] parses.
    pub raw_query: String,
    /// Request headers, in order.
    pub headers: Headers,
    /// The parsed body.
    pub body: B,
    /// Fires when the gateway cancels the request or the connection is lost.
    pub cancel: CancellationToken,
}

impl<B> TypedRequest<B> {
    /// The value of template parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The query string parsed into `Q` (a struct of named fields, usually); a query that
    /// does not fit is a 400 [`HandlerError`] a handler can return with `?`.
    pub fn query<Q: DeserializeOwned>(&self) -> Result<Q, HandlerError> {
        serde_urlencoded::from_str(&self.raw_query)
            .map_err(|err| HandlerError::bad_request(format!("invalid query string: {err}")))
    }

    /// Whether the request has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The request's W3C trace context; see [`RawRequestContext::trace_context`].
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::from_headers(&self.headers)
    }
}

impl<B: DeserializeOwned> TypedRequest<B> {
    /// Collects and parses the body of `ctx`.
    async fn from_context(ctx: RawRequestContext, limit: usize) -> Result<Self, HandlerError> {
        let bytes = ctx.body.collect(limit).await?;
        Ok(TypedRequest {
            body: parse_json_body(&bytes)?,
            query_pairs: parse_query(&ctx.query),
            method: ctx.method,
            path: ctx.path,
            params: ctx.params,
            raw_query: ctx.query,
            headers: ctx.headers,
            cancel: ctx.cancel,
        })
    }
}

/// Parses a JSON body; an empty (or all-whitespace) body is `null`.
fn parse_json_body<B: DeserializeOwned>(bytes: &[u8]) -> Result<B, HandlerError> {
    let json: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { bytes };
    serde_json::from_slice(json).map_err(|err| HandlerError::bad_request(format!("invalid JSON body: {err}")))
}

/// The body limit a typed handler of `descriptor` enforces.
fn body_limit(descriptor: &EndpointDescriptor) -> usize {
    descriptor.max_body_bytes.map_or(DEFAULT_TYPED_BODY_LIMIT, |max| usize::try_from(max).unwrap_or(usize::MAX))
}

/// Wraps a typed handler into the raw [`HttpHandler`] shape.
pub(crate) fn typed_handler<B, T, F, Fut>(descriptor: &EndpointDescriptor, handler: F) -> HttpHandler
where
    B: DeserializeOwned + Send + 'static,
    T: Serialize + 'static,
    F: Fn(TypedRequest<B>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
{
    let limit = body_limit(descriptor);
    let handler = Arc::new(handler);
    Arc::new(move |ctx: RawRequestContext| {
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let request = TypedRequest::<B>::from_context(ctx, limit).await?;
            let value = handler(request).await?;
            Ok(RawResponse::json(200, &value))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_is_null() {
        assert_eq!(parse_json_body::<()>(b""), Ok(()));
        assert_eq!(parse_json_body::<Option<u32>>(b"  \n"), Ok(None));
        assert_eq!(parse_json_body::<Option<u32>>(b"7"), Ok(Some(7)));
    }

    #[test]
    fn invalid_json_is_bad_request() {
        let err = parse_json_body::<u32>(b"{nope").unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.error, "bad_request");
    }

    #[test]
    fn limit_defaults_to_8_mib() {
        let mut descriptor = EndpointDescriptor::new("POST", "/x");
        assert_eq!(body_limit(&descriptor), 8 * 1024 * 1024);
        descriptor.max_body_bytes = Some(10);
        assert_eq!(body_limit(&descriptor), 10);
    }
}
