//! The request side of a raw handler: [`RawRequestContext`] (what the gateway matched and
//! forwarded) and [`RequestBody`] (the body, read forward only).
//!
//! A body arrives either whole in the request head (the gateway buffered it) or as
//! stream data after it; [`RequestBody`] hides the difference. Reading a streamed body
//! is what grants the gateway credit to send more, so a handler that reads slowly slows
//! the upload down instead of making anyone buffer it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use weir_proto::trace_context::TraceContext;
use weir_proto::{Headers, RequestHead};
use weir_transport::DataReceiver;

use crate::error::BodyError;

/// Everything a raw handler gets about its request.
#[derive(Debug)]
pub struct RawRequestContext {
    /// HTTP method, upper case.
    pub method: String,
    /// The request path as the client sent it (percent-encoded).
    pub path: String,
    /// The raw query string without `?`; empty when none.
    pub query: String,
    /// The endpoint's path template the gateway matched, e.g. `/api/items/{id}`.
    pub template: String,
    /// Template parameters, percent-decoded.
    pub params: Vec<(String, String)>,
    /// Request headers, in order.
    pub headers: Headers,
    /// The request body.
    pub body: RequestBody,
    /// Fires when the gateway cancels the request (client gone, timeout, limit) or the
    /// connection is lost. See the crate docs, "Cancellation".
    pub cancel: CancellationToken,
    /// The largest response data chunk the gateway asked for (its mount's `chunk_size`),
    /// if it said: a streamed or file response is sent in pieces of at most this.
    pub chunk_size: Option<usize>,
}

impl RawRequestContext {
    /// The context for a request head and its streamed body, if any.
    pub(crate) fn new(head: RequestHead, body: Option<DataReceiver>, cancel: CancellationToken) -> Self {
        let body = match body {
            Some(receiver) => RequestBody::streamed(receiver),
            None => RequestBody::buffered(head.body),
        };
        RawRequestContext {
            method: head.method,
            path: head.path,
            query: head.query,
            template: head.template,
            params: head.params,
            headers: head.headers,
            body,
            cancel,
            chunk_size: head.chunk_size.map(|size| size as usize),
        }
    }

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

    /// Whether the request has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The caller's authenticated subject (`x-weir-subject`); `None` for an anonymous
    /// caller. Trustworthy only behind a weir gateway, which removes any `x-weir-*`
    /// header a client sends and states the identity it verified.
    pub fn subject(&self) -> Option<&str> {
        subject_of(&self.headers)
    }

    /// The caller's claims as (type, value) pairs (`x-weir-claims`), in the gateway's
    /// order; a type may repeat. Empty for an anonymous caller or a malformed header.
    pub fn claims(&self) -> Vec<(String, String)> {
        claims_of(&self.headers)
    }

    /// The request's W3C trace context (`traceparent`, `tracestate`): behind a weir
    /// gateway always present, its parent being the gateway's span. Start the handler's
    /// spans as its children to join the trace.
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::from_headers(&self.headers)
    }
}

/// The identity headers the gateway sets (`docs/protocol.md`, "Identity headers").
pub(crate) const SUBJECT_HEADER: &str = "x-weir-subject";
pub(crate) const CLAIMS_HEADER: &str = "x-weir-claims";

pub(crate) fn subject_of(headers: &Headers) -> Option<&str> {
    find_header(headers, SUBJECT_HEADER).and_then(|v| std::str::from_utf8(v).ok())
}

pub(crate) fn claims_of(headers: &Headers) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Claim {
        #[serde(rename = "type")]
        claim_type: String,
        value: String,
    }
    let Some(json) = find_header(headers, CLAIMS_HEADER) else { return Vec::new() };
    serde_json::from_slice::<Vec<Claim>>(json)
        .map(|claims| claims.into_iter().map(|c| (c.claim_type, c.value)).collect())
        .unwrap_or_default()
}

pub(crate) fn find_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

pub(crate) fn find_header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
}

pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// A request body, read forward only, chunk by chunk.
///
/// Also a [`Stream`] of `Result<Bytes, BodyError>`. After the end (or an error) it yields
/// nothing more.
#[derive(Debug)]
pub struct RequestBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// Whole in the head; `None` once taken.
    Buffered(Option<Bytes>),
    /// Stream data following the head.
    Streamed(DataReceiver),
}

impl RequestBody {
    /// A body that is already whole.
    pub fn buffered(bytes: Bytes) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        RequestBody { inner: Inner::Buffered(bytes) }
    }

    /// A body arriving as stream data.
    pub fn streamed(receiver: DataReceiver) -> Self {
        RequestBody { inner: Inner::Streamed(receiver) }
    }

    /// An empty body.
    pub fn empty() -> Self {
        RequestBody::buffered(Bytes::new())
    }

    /// Whether the body arrives as stream data (rather than whole in the head).
    pub fn is_streamed(&self) -> bool {
        matches!(self.inner, Inner::Streamed(_))
    }

    /// The next chunk; `Ok(None)` at the end of the body. Never yields an empty chunk.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await.transpose()
    }

    /// The whole body, or [`BodyError::TooLarge`] as soon as it exceeds `limit` bytes
    /// (the rest is not read).
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, BodyError> {
        if let Inner::Buffered(bytes) = &mut self.inner {
            let bytes = bytes.take().unwrap_or_default();
            return if bytes.len() > limit { Err(BodyError::TooLarge { limit }) } else { Ok(bytes) };
        }
        let mut whole = BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            if whole.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.freeze())
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        match &mut self.inner {
            Inner::Buffered(bytes) => Poll::Ready(bytes.take().map(Ok)),
            Inner::Streamed(receiver) => loop {
                match receiver.poll_chunk(cx) {
                    Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => continue,
                    Poll::Ready(item) => return Poll::Ready(item.map(|r| r.map_err(BodyError::from))),
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }
}

impl Stream for RequestBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffered_body_yields_once() {
        let mut body = RequestBody::buffered(Bytes::from_static(b"hello"));
        assert_eq!(body.chunk().await, Ok(Some(Bytes::from_static(b"hello"))));
        assert_eq!(body.chunk().await, Ok(None));
        assert_eq!(body.chunk().await, Ok(None));
    }

    #[tokio::test]
    async fn empty_body_has_no_chunk() {
        assert_eq!(RequestBody::empty().chunk().await, Ok(None));
    }

    #[tokio::test]
    async fn collect_enforces_the_limit() {
        let body = RequestBody::buffered(Bytes::from_static(b"0123456789"));
        assert_eq!(body.collect(9).await, Err(BodyError::TooLarge { limit: 9 }));
        let body = RequestBody::buffered(Bytes::from_static(b"0123456789"));
        assert_eq!(body.collect(10).await.as_deref(), Ok(&b"0123456789"[..]));
    }

    #[test]
    fn query_pairs_are_decoded() {
        let pairs = parse_query("q=caf%C3%A9+au+lait&tag=a&tag=b&flag");
        assert_eq!(
            pairs,
            vec![
                ("q".to_owned(), "café au lait".to_owned()),
                ("tag".to_owned(), "a".to_owned()),
                ("tag".to_owned(), "b".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn identity_headers_give_subject_and_repeated_claims() {
        let claims = r#"[{"type":"roles","value":"admin"},{"type":"roles","value":"ops"}]"#;
        let headers = vec![
            ("x-weir-subject".to_owned(), Bytes::from_static(b"alice")),
            ("x-weir-claims".to_owned(), Bytes::from(claims)),
        ];
        assert_eq!(subject_of(&headers), Some("alice"));
        let expected = [("roles", "admin"), ("roles", "ops")].map(|(t, v)| (t.to_owned(), v.to_owned()));
        assert_eq!(claims_of(&headers), expected);
        assert_eq!(subject_of(&Vec::new()), None);
        assert!(claims_of(&vec![("x-weir-claims".to_owned(), Bytes::from_static(b"{"))]).is_empty());
    }

    #[test]
    fn headers_are_case_insensitive() {
        let headers = vec![("Content-Type".to_owned(), Bytes::from_static(b"text/plain"))];
        assert_eq!(find_header(&headers, "content-type"), Some(&b"text/plain"[..]));
        assert_eq!(find_header(&headers, "accept"), None);
    }
}
