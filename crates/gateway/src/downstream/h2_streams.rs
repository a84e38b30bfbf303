//! The executor hyper runs each HTTP/2 stream on: every stream's task carries a
//! [`StreamWatch`] that its response body reports to, and the task ends the stream once
//! the watch says its client stalled it (see [`crate::limits::stall`]).
//!
//! Ending the task drops the stream's state in hyper: h2 resets the stream
//! (RST_STREAM with CANCEL), and the dropped response body cancels the service's stream.
//! The connection and its other streams go on. Each such end is counted in the metrics
//! as a relayed body failure with the reason `client_stalled`.
//!
//! It also refuses the malformed HTTP/2 requests that `h2` hands on as if they were
//! well formed ([`refuse_malformed`]): a field value with leading or trailing whitespace
//! (RFC 9113 §8.2.1) and a `CONNECT` without `:authority` (§8.5). A malformed request is
//! a stream error of type `PROTOCOL_ERROR` (§8.1.1), never an answer: the service
//! function fails with a [`MalformedRequest`], whose source carries that reason, and
//! hyper resets the stream with the reason it finds there. The connection goes on. Such
//! a reset is not counted under `max_local_error_reset_streams` (`h2` counts only its
//! own): it costs what a 400 would, and `max_concurrent_streams` bounds it the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Version};
use hyper::ext::Protocol;
use tokio::time::{Instant, Sleep};

use crate::limits::stall::{self, SendLimits, StreamWatch};
use crate::observe::metrics::Metrics;
use crate::response::BodyError;

/// Spawns hyper's HTTP/2 stream tasks on tokio, each under its own watch.
#[derive(Debug, Clone)]
pub(crate) struct StreamExecutor {
    /// The limits every stream is held to.
    limits: SendLimits,
    /// Where streams ended for a stall are counted.
    metrics: Arc<Metrics>,
}

impl StreamExecutor {
    pub(crate) fn new(limits: SendLimits, metrics: Arc<Metrics>) -> Self {
        StreamExecutor { limits, metrics }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let watch = Arc::new(StreamWatch::default());
        let task = WatchedStream {
            stream: Box::pin(stall::watched(Arc::clone(&watch), async move {
                stream.await;
            })),
            watch,
            limits: self.limits,
            metrics: Arc::clone(&self.metrics),
            timer: None,
        };
        tokio::spawn(task);
    }
}

/// One stream's task: the stream, raced against its watch's verdict.
struct WatchedStream {
    stream: Pin<Box<dyn Future<Output = ()> + Send>>,
    watch: Arc<StreamWatch>,
    limits: SendLimits,
    metrics: Arc<Metrics>,
    /// Wakes the task when the watch is next due to be judged.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for WatchedStream {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.stream.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let due = match this.watch.judge(&this.limits, Instant::now()) {
                Ok(Some(due)) => due,
                Ok(None) => {
                    this.timer = None;
                    return Poll::Pending;
                }
                Err(stall) => {
                    tracing::info!(%stall, "resetting an HTTP/2 stream its client stalled");
                    this.metrics.relay_failure(&BodyError::ClientStalled);
                    return Poll::Ready(());
                }
            };
            let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            timer.as_mut().reset(due);
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// An HTTP/2 request RFC 9113 calls malformed that reached weir: its stream is reset
/// with `PROTOCOL_ERROR` rather than answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MalformedRequest {
    /// §8.2.1: a field value starts or ends with SP or HTAB.
    #[error("the value of `{name}` starts or ends with whitespace")]
    PaddedValue {
        name: http::HeaderName,
        /// The reason hyper resets the stream with, found by it in this error's sources.
        source: h2::Error,
    },
    /// §8.5: a `CONNECT` (not an extended one) must name its target in `:authority`.
    #[error("CONNECT without `:authority`")]
    ConnectWithoutAuthority {
        /// As for `PaddedValue`.
        source: h2::Error,
    },
}

/// Refuses an HTTP/2 request that is malformed in a way `h2` does not check; requests
/// of other versions pass (HTTP/1.1's parser trims a field value's whitespace itself).
pub(crate) fn refuse_malformed<B>(request: &Request<B>) -> Result<(), MalformedRequest> {
    if request.version() != Version::HTTP_2 {
        return Ok(());
    }
    let reason = || h2::Error::from(h2::Reason::PROTOCOL_ERROR);
    let plain_connect = request.method() == Method::CONNECT && request.extensions().get::<Protocol>().is_none();
    if plain_connect && request.uri().authority().is_none() {
        return Err(MalformedRequest::ConnectWithoutAuthority { source: reason() });
    }
    let padded = |value: &[u8]| matches!(value.first().zip(value.last()), Some((a, z)) if is_blank(*a) || is_blank(*z));
    match request.headers().iter().find(|(_, value)| padded(value.as_bytes())) {
        Some((name, _)) => Err(MalformedRequest::PaddedValue { name: name.clone(), source: reason() }),
        None => Ok(()),
    }
}

/// SP or HTAB, the whitespace a field value may contain but not start or end with.
fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2_request(method: Method, uri: &str, field: Option<&[u8]>) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri).version(Version::HTTP_2);
        if let Some(value) = field {
            builder = builder.header("x-probe", http::HeaderValue::from_bytes(value).unwrap());
        }
        builder.body(()).unwrap()
    }

    fn reason(refused: &MalformedRequest) -> Option<h2::Reason> {
        std::error::Error::source(refused).and_then(|s| s.downcast_ref::<h2::Error>()).and_then(h2::Error::reason)
    }

    #[test]
    fn padded_field_values_are_refused_with_protocol_error() {
        for value in [&b" a"[..], b"a ", b"\ta", b"a\t", b" "] {
            let refused = refuse_malformed(&h2_request(Method::GET, "http://weir.test/", Some(value))).unwrap_err();
            assert!(matches!(refused, MalformedRequest::PaddedValue { .. }), "{value:?}");
            assert_eq!(reason(&refused), Some(h2::Reason::PROTOCOL_ERROR));
        }
        for value in [&b""[..], b"a", b"a b", b"a\tb"] {
            assert!(refuse_malformed(&h2_request(Method::GET, "http://weir.test/", Some(value))).is_ok(), "{value:?}");
        }
        let mut http11 = h2_request(Method::GET, "/", Some(b" a"));
        *http11.version_mut() = Version::HTTP_11;
        assert!(refuse_malformed(&http11).is_ok(), "HTTP/1.1 is not checked here");
    }

    #[test]
    fn a_connect_must_name_its_authority() {
        let refused = refuse_malformed(&h2_request(Method::CONNECT, "/", None)).unwrap_err();
        assert!(matches!(refused, MalformedRequest::ConnectWithoutAuthority { .. }));
        assert_eq!(reason(&refused), Some(h2::Reason::PROTOCOL_ERROR));
        assert!(refuse_malformed(&h2_request(Method::CONNECT, "weir.test:443", None)).is_ok());
        let mut extended = h2_request(Method::CONNECT, "/chat", None);
        extended.extensions_mut().insert(Protocol::from_static("websocket"));
        assert!(refuse_malformed(&extended).is_ok(), "an extended CONNECT has :path, checked by h2");
    }
}
