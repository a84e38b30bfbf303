//! What a raw handler answers: a status, headers and a body that is empty, whole, or
//! generated chunk by chunk ([`RawResponse::stream`]).
//! File downloads ([`RawResponse::file`]) live in [`crate::file`].
//!
//! This module only describes a response; `exchange.rs` decides how it travels: small
//! whole bodies inline in the response head, everything else as stream data.

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use crate::error::HandlerError;

/// Any error a body stream may yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A response body generated chunk by chunk. An `Err` item aborts the response: the
/// gateway sees the stream cancelled as `HandlerFailed`.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send + 'static>>;

/// A response body.
pub enum ResponseBody {
    /// No body.
    Empty,
    /// The whole body, already in memory.
    Full(Bytes),
    /// A body produced as it is sent; the SDK pulls the next chunk only when the gateway
    /// has granted credit for more, so a slow client slows the producer down.
    Stream(BodyStream),
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseBody::Empty => f.write_str("Empty"),
            ResponseBody::Full(bytes) => write!(f, "Full({} bytes)", bytes.len()),
            ResponseBody::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A raw handler's answer.
///
/// Header names set by the SDK's constructors are lower case (as HTTP/2 sends them);
/// the gateway treats names case-insensitively.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status code, 100 to 999.
    pub status: u16,
    /// Header name/value pairs, in order.
    pub headers: Vec<(String, Bytes)>,
    /// The body.
    pub body: ResponseBody,
}

impl RawResponse {
    /// A response with no headers and no body.
    pub fn new(status: u16) -> Self {
        RawResponse { status, headers: Vec::new(), body: ResponseBody::Empty }
    }

    /// `value` serialized as JSON, with `content-type: application/json`.
    ///
    /// If `value` cannot be serialized (a map with non-string keys, a failing `Serialize`
    /// impl), the answer is a 500 error response instead, and the failure is logged.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => RawResponse::new(status).header("content-type", "application/json").with_body(body),
            Err(err) => {
                tracing::error!(error = %err, "response value could not be serialized as JSON");
                HandlerError::internal("the response could not be serialized").into_response()
            }
        }
    }

    /// A UTF-8 text body with `content-type: text/plain; charset=utf-8`.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        RawResponse::new(status).header("content-type", "text/plain; charset=utf-8").with_body(text.into())
    }

    /// A body generated chunk by chunk from `stream`, with the given content type.
    ///
    /// Chunks are sent as they come, each split into stream data frames of at most the
    /// chunk size the gateway asked for (`RawRequestContext::chunk_size`), else 64 KiB. If the stream yields an error, the response is aborted (the gateway sees
    /// `HandlerFailed`, and cuts the client's response short).
    pub fn stream<S, E>(status: u16, content_type: &str, stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let body: BodyStream = Box::pin(stream.map(|item| item.map_err(Into::into)));
        RawResponse {
            status,
            headers: vec![("content-type".to_owned(), Bytes::copy_from_slice(content_type.as_bytes()))],
            body: ResponseBody::Stream(body),
        }
    }

    /// Adds a header (keeping any earlier one of the same name).
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), Bytes::copy_from_slice(value.as_ref())));
        self
    }

    /// Replaces the body with `body`.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = ResponseBody::Full(body.into());
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
}
