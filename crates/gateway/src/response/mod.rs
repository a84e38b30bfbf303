//! The response body the gateway gives hyper: bytes it already has, a service's streamed
//! body relayed chunk by chunk, or a static file read chunk by chunk ([`file`]). Relayed
//! and file bodies keep the same [`Pace`]: the mount's bandwidth limit (the connection's
//! shaper) and its download timeout, past which the body fails.
//!
//! A relayed body owns its stream: taking a chunk grants the service credit for it (so a
//! slow client slows the service, and at most one window is buffered), reaching the
//! explicit end completes the stream, and dropping it early (client gone) cancels it.
//! A relayed body with a declared length is held to it: a service that sends more, or
//! ends short, fails the body (hyper then closes the client's HTTP/1.1 connection or
//! resets its HTTP/2 stream) rather than desynchronising the client's connection. Every
//! body failure is counted by its reason in [`Metrics`].

pub mod error;
pub(crate) mod file;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use thiserror::Error;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;
use weir_proto::CancelReason;
use weir_transport::{DataReceiver, StreamError, StreamHandle};

use crate::limits::bandwidth::Shaper;
use crate::limits::in_flight::Registered;
use crate::limits::stall::{self, StreamWatch};
use crate::observe::metrics::Metrics;
use crate::response::file::FileBody;
use crate::routing::InFlightGuard;

/// Why a response body ended before its end; hyper then aborts the response.
#[derive(Debug, Error)]
pub(crate) enum BodyError {
    /// The service's stream failed or was cancelled mid-body.
    #[error("the service's response body failed: {0}")]
    Service(#[source] StreamError),
    /// The whole download took longer than the mount's `download_timeout`.
    #[error("the download took longer than its timeout")]
    DownloadTimeout,
    /// An operator cancelled the request from the admin surface.
    #[error("the request was cancelled by an operator")]
    CancelledByOperator,
    /// A static file could not be read.
    #[error("the file could not be read")]
    FileUnreadable,
    /// A static file shrank while it was sent.
    #[error("the file shrank while it was sent")]
    FileShrank,
    /// An HTTP/2 client left a chunk of this stream waiting past `send_timeout`, or took
    /// it under the minimum response rate: the stream was reset.
    #[error("the client stalled the stream")]
    ClientStalled,
    /// The service's body did not match the length it declared.
    #[error("the service declared {declared} bytes and sent {sent}{}", if *.longer { " or more" } else { "" })]
    LengthMismatch {
        declared: u64,
        sent: u64,
        /// Whether it sent too much (cut at the first byte past `declared`), else too little.
        longer: bool,
    },
}

impl BodyError {
    /// Why a relayed body can fail, in the order of [`BodyError::relay_index`] (metrics
    /// count relayed bodies' failures by it).
    pub(crate) const RELAY_REASONS: [&'static str; 5] =
        ["service_failed", "download_timeout", "cancelled", "length_mismatch", "client_stalled"];

    /// This error's position in [`BodyError::RELAY_REASONS`]; `None` for a static file's.
    pub(crate) fn relay_index(&self) -> Option<usize> {
        match self {
            BodyError::Service(_) => Some(0),
            BodyError::DownloadTimeout => Some(1),
            BodyError::CancelledByOperator => Some(2),
            BodyError::LengthMismatch { .. } => Some(3),
            BodyError::ClientStalled => Some(4),
            BodyError::FileUnreadable | BodyError::FileShrank => None,
        }
    }
}

/// hyper's view of a response body from the gateway.
#[derive(Debug)]
pub(crate) struct GatewayBody {
    kind: Kind,
    /// On HTTP/2, the stream's watch: told when a chunk is handed to hyper and when hyper
    /// comes back for more, so that a client holding the stream's window shut is found.
    watch: Option<Arc<StreamWatch>>,
    /// On HTTP/2, the last byte of the chunk handed over last, held back to be handed
    /// over on its own (see [`GatewayBody::hold_back_tail`]).
    tail: Option<Bytes>,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Relay(Relay),
    File(FileBody, Pace),
}

/// A download's pace: when each chunk may go, and when the whole body must be done.
#[derive(Debug)]
struct Pace {
    /// Paces chunks to the mount's bandwidth limit, if it has one.
    shaper: Option<Arc<Shaper>>,
    /// A chunk waiting for its turn under the shaper.
    delayed: Option<(Bytes, Pin<Box<Sleep>>)>,
    /// The whole download must be done by then (`download_timeout`).
    deadline: Pin<Box<Sleep>>,
}

impl Pace {
    fn new(shaper: Option<Arc<Shaper>>, download_timeout: Duration) -> Self {
        Pace { shaper, delayed: None, deadline: Box::pin(tokio::time::sleep(download_timeout)) }
    }

    /// Whether the download's time is up.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// The parked chunk once its turn has come (`Pending` until then), or `None` when
    /// no chunk is parked.
    fn poll_delayed(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some((_, wait)) = &mut self.delayed else { return Poll::Ready(None) };
        ready!(wait.as_mut().poll(cx));
        Poll::Ready(self.delayed.take().map(|(chunk, _)| chunk))
    }

    /// `chunk` if it may go now; else parks it for [`Pace::poll_delayed`].
    fn admit(&mut self, chunk: Bytes) -> Option<Bytes> {
        let Some(shaper) = &self.shaper else { return Some(chunk) };
        let at = shaper.schedule(chunk.len());
        if at <= tokio::time::Instant::now() {
            return Some(chunk);
        }
        self.delayed = Some((chunk, Box::pin(tokio::time::sleep_until(at))));
        None
    }

    /// Bytes of the parked chunk, if any.
    fn parked(&self) -> u64 {
        self.delayed.as_ref().map_or(0, |(chunk, _)| chunk.len() as u64)
    }
}

/// A streamed service response on its way to the client.
#[derive(Debug)]
struct Relay {
    data: DataReceiver,
    /// Completed at the end, dropped (cancelling) if the client goes away first.
    handle: Option<StreamHandle>,
    /// Counts the request as in flight on its instance until the body is done.
    in_flight: Option<InFlightGuard<weir_transport::Link>>,
    /// From the service's `Content-Length`, if it sent one: exactly this many bytes must
    /// come, or the body fails.
    length: Option<u64>,
    /// Bytes taken from the service so far.
    sent: u64,
    /// The chunk that reached the declared length, held until the service's end confirms
    /// that nothing follows it.
    completing: Option<Bytes>,
    /// Counts this body's failure, if it fails.
    metrics: Arc<Metrics>,
    /// The bandwidth limit and the download timeout.
    pace: Pace,
    /// The registry entry: counts bytes out; an operator's cancel ends the body.
    registered: Option<Registered>,
    operator_cancel: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// Bounds on a relayed download.
#[derive(Debug)]
pub(crate) struct RelayLimits {
    /// The connection's shaper on the mount, if the mount limits bandwidth.
    pub shaper: Option<Arc<Shaper>>,
    pub download_timeout: Duration,
    /// Business mounts: the registry entry, kept until the body is done.
    pub registered: Option<Registered>,
    /// Where the body's failure is counted.
    pub metrics: Arc<Metrics>,
}

impl GatewayBody {
    /// A body of `kind`, reporting to the current HTTP/2 stream's watch if there is one.
    fn of(kind: Kind) -> Self {
        GatewayBody { kind, watch: stall::current(), tail: None }
    }

    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Relay(relay) => relay.poll_chunk(cx),
            Kind::File(file, pace) => poll_file(file, pace, cx),
        }
    }

    /// Whether the body has nothing more to give (its held-back tail aside).
    fn kind_ended(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Relay(relay) => relay.handle.is_none(),
            Kind::File(file, pace) => file.remaining() == 0 && pace.delayed.is_none(),
        }
    }

    /// On HTTP/2, hands each chunk over as two: all of it but its last byte, then that
    /// byte. hyper passes a chunk to h2 as soon as the stream has any window, and h2
    /// keeps whatever the window does not cover; hyper waits for the window to cover it
    /// only before its next chunk. After the body's last chunk hyper's stream task ends,
    /// so nothing would watch those bytes, and a client granting one byte of window would
    /// hold a whole chunk in h2 for as long as its connection lives. The held-back byte
    /// is that next chunk, always: hyper waits for the window to take everything before
    /// it (its task lives on, and the stream's watch judges the wait as for any chunk),
    /// and when its task ends h2 is left at most one byte of the stream. It costs one
    /// small DATA frame per chunk.
    fn hold_back_tail(
        &mut self,
        polled: Poll<Option<Result<Frame<Bytes>, BodyError>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.watch.is_none() {
            return polled;
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) if data.len() > 1 => {
                    self.tail = Some(data.split_off(data.len() - 1));
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    /// A body of known bytes.
    pub(crate) fn full(bytes: Bytes) -> Self {
        GatewayBody::of(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        GatewayBody::of(Kind::Full(None))
    }

    /// A static file's bytes, read as they are sent, paced by `shaper` (the connection's
    /// on the mount, if it limits bandwidth) and failing past `download_timeout`.
    pub(crate) fn file(file: FileBody, shaper: Option<Arc<Shaper>>, download_timeout: Duration) -> Self {
        GatewayBody::of(Kind::File(file, Pace::new(shaper, download_timeout)))
    }

    /// A relayed service body.
    pub(crate) fn relay(
        data: DataReceiver,
        handle: StreamHandle,
        in_flight: InFlightGuard<weir_transport::Link>,
        length: Option<u64>,
        limits: RelayLimits,
    ) -> Self {
        let relay = Relay {
            data,
            handle: Some(handle),
            in_flight: Some(in_flight),
            length,
            sent: 0,
            completing: None,
            metrics: limits.metrics,
            pace: Pace::new(limits.shaper, limits.download_timeout),
            operator_cancel: limits.registered.as_ref().map(|r| Box::pin(r.cancel.clone().cancelled_owned())),
            registered: limits.registered,
        };
        GatewayBody::of(Kind::Relay(relay))
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(watch) = &this.watch {
            watch.resumed();
        }
        let polled = match this.tail.take() {
            Some(tail) => Poll::Ready(Some(Ok(Frame::data(tail)))),
            None => {
                let polled = this.poll_kind(cx);
                this.hold_back_tail(polled)
            }
        };
        if let (Some(watch), Poll::Ready(Some(Ok(frame)))) = (&this.watch, &polled) {
            watch.handed(frame.data_ref().map_or(0, Bytes::len));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.tail.is_none() && self.kind_ended()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Relay(Relay { length: Some(n), .. }) => SizeHint::with_exact(*n),
            Kind::Relay(_) => SizeHint::default(),
            Kind::File(file, pace) => SizeHint::with_exact(file.remaining() + pace.parked()),
        }
    }
}

/// The next piece of a static file, in its turn under the pace; past the download
/// timeout, an error that ends the body.
fn poll_file(
    file: &mut FileBody,
    pace: &mut Pace,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    if pace.expired(cx) {
        tracing::info!("download timeout: closing the static file's response");
        return Poll::Ready(Some(Err(BodyError::DownloadTimeout)));
    }
    if let Some(chunk) = ready!(pace.poll_delayed(cx)) {
        return Poll::Ready(Some(Ok(Frame::data(chunk))));
    }
    match ready!(file.poll_chunk(cx)) {
        Some(Ok(chunk)) => match pace.admit(chunk) {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            // Parked: polled again, its wait registers this task's waker.
            None => poll_file(file, pace, cx),
        },
        other => Poll::Ready(other.map(|read| read.map(Frame::data))),
    }
}

impl Relay {
    /// The next piece of the body; a failure is counted once, as it ends the body.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.poll_relay(cx);
        if let Poll::Ready(Some(Err(err))) = &polled {
            self.metrics.relay_failure(err);
        }
        polled
    }

    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.handle.is_none() {
            return Poll::Ready(None);
        }
        if self.pace.expired(cx) {
            tracing::info!("download timeout: closing the response");
            self.finish(Some(CancelReason::Timeout));
            return Poll::Ready(Some(Err(BodyError::DownloadTimeout)));
        }
        if self.operator_cancel.as_mut().is_some_and(|c| c.as_mut().poll(cx).is_ready()) {
            self.finish(Some(CancelReason::Administrative));
            return Poll::Ready(Some(Err(BodyError::CancelledByOperator)));
        }
        if let Some(chunk) = ready!(self.pace.poll_delayed(cx)) {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        loop {
            let chunk = match self.data.poll_chunk(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(None) => return self.poll_end(cx),
                Poll::Ready(Some(Err(err))) => {
                    tracing::warn!(error = %err, "service response body failed mid-stream");
                    self.finish(Some(CancelReason::HandlerFailed));
                    return Poll::Ready(Some(Err(BodyError::Service(err))));
                }
            };
            if chunk.is_empty() {
                continue;
            }
            let sent = self.sent + chunk.len() as u64;
            if let Some(declared) = self.length.filter(|declared| sent > *declared) {
                tracing::warn!(declared, "service response body longer than its content-length");
                self.finish(Some(CancelReason::PayloadLimitExceeded));
                return Poll::Ready(Some(Err(BodyError::LengthMismatch { declared, sent, longer: true })));
            }
            self.sent = sent;
            if self.length == Some(sent) && !self.data.is_ended() {
                // The client's connection ends the body at the declared length by itself
                // and would never show us an overlong tail: the completing chunk waits
                // for the service's end, which normally comes with it.
                self.completing = Some(chunk);
                continue;
            }
            return self.pace(chunk, cx);
        }
    }

    /// The service's body has ended: hands on a held completing chunk first, then ends the
    /// relay, failing a body shorter than its declared length.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(chunk) = self.completing.take() {
            return self.pace(chunk, cx);
        }
        self.finish(None);
        match self.length.filter(|declared| self.sent != *declared) {
            None => Poll::Ready(None),
            Some(declared) => {
                tracing::warn!(declared, sent = self.sent, "service response body shorter than its content-length");
                Poll::Ready(Some(Err(BodyError::LengthMismatch { declared, sent: self.sent, longer: false })))
            }
        }
    }

    /// Hands `chunk` on now, or parks it until the shaper's schedule allows.
    fn pace(&mut self, chunk: Bytes, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.pace.admit(chunk) {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => self.poll_relay(cx),
        }
    }

    /// Ends the relay: completed (`None`) or cancelled with a reason.
    fn finish(&mut self, cancel: Option<CancelReason>) {
        if let Some(handle) = self.handle.take() {
            match cancel {
                None => handle.complete(),
                Some(reason) => handle.cancel(reason),
            }
        }
        self.in_flight = None;
        self.registered = None;
        self.operator_cancel = None;
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_full_body_is_one_frame_of_its_exact_size() {
        let body = GatewayBody::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn an_empty_body_has_ended_before_its_first_poll() {
        for body in [GatewayBody::empty(), GatewayBody::full(Bytes::new())] {
            assert!(body.is_end_stream());
            assert_eq!(body.size_hint().exact(), Some(0));
            assert!(body.collect().await.unwrap().to_bytes().is_empty());
        }
    }

    #[test]
    fn body_errors_say_what_ended_the_body() {
        assert_eq!(BodyError::DownloadTimeout.to_string(), "the download took longer than its timeout");
        let service = BodyError::Service(StreamError::Cancelled(CancelReason::Timeout));
        assert!(service.to_string().starts_with("the service's response body failed"), "{service}");
        assert!(std::error::Error::source(&service).is_some());
    }
}
