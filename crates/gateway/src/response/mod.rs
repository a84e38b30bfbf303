//! The response body the gateway gives hyper: bytes it already has, a service's streamed
//! body relayed chunk by chunk, or a static file read chunk by chunk (`file_body.rs`).
//!
//! A relayed body owns its stream: taking a chunk grants the service credit for it (so a
//! slow client slows the service, and at most one window is buffered), reaching the
//! explicit end completes the stream, and dropping it early (client gone) cancels it.

pub mod error;
pub(crate) mod file;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;
use weir_proto::CancelReason;
use weir_transport::{DataReceiver, StreamError, StreamHandle};

use crate::response::file::FileBody;
use crate::limits::in_flight::Registered;
use crate::routing::InFlightGuard;
use crate::limits::bandwidth::Shaper;

/// hyper's view of a response body from the gateway.
#[derive(Debug)]
pub struct GatewayBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Relay(Relay),
    File(FileBody),
}

/// A streamed service response on its way to the client.
#[derive(Debug)]
struct Relay {
    data: DataReceiver,
    /// Completed at the end, dropped (cancelling) if the client goes away first.
    handle: Option<StreamHandle>,
    /// Counts the request as in flight on its instance until the body is done.
    in_flight: Option<InFlightGuard<weir_transport::Link>>,
    /// From the service's `Content-Length`, if it sent one.
    length: Option<u64>,
    /// Streaming mounts: paces chunks to the bandwidth limit.
    shaper: Option<Arc<Shaper>>,
    /// A chunk waiting for its turn under the shaper.
    delayed: Option<(Bytes, Pin<Box<Sleep>>)>,
    /// The whole download must be done by then (`download_timeout`).
    deadline: Pin<Box<Sleep>>,
    /// The registry entry: counts bytes out; an operator's cancel ends the body.
    registered: Option<Registered>,
    operator_cancel: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// Bounds on a relayed download.
#[derive(Debug)]
pub(crate) struct RelayLimits {
    pub shaper: Option<Arc<Shaper>>,
    pub download_timeout: Duration,
    /// Business mounts: the registry entry, kept until the body is done.
    pub registered: Option<Registered>,
}

impl GatewayBody {
    /// A body of known bytes.
    pub fn full(bytes: Bytes) -> Self {
        GatewayBody { kind: Kind::Full((!bytes.is_empty()).then_some(bytes)) }
    }

    /// An empty body.
    pub fn empty() -> Self {
        GatewayBody { kind: Kind::Full(None) }
    }

    /// A static file's bytes, read as they are sent.
    pub(crate) fn file(file: FileBody) -> Self {
        GatewayBody { kind: Kind::File(file) }
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
            shaper: limits.shaper,
            delayed: None,
            deadline: Box::pin(tokio::time::sleep(limits.download_timeout)),
            operator_cancel: limits.registered.as_ref().map(|r| Box::pin(r.cancel.clone().cancelled_owned())),
            registered: limits.registered,
        };
        GatewayBody { kind: Kind::Relay(relay) }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Relay(relay) => relay.poll_chunk(cx),
            Kind::File(file) => file.poll_chunk(cx).map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Relay(relay) => relay.handle.is_none(),
            Kind::File(file) => file.remaining() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Relay(Relay { length: Some(n), .. }) => SizeHint::with_exact(*n),
            Kind::Relay(_) => SizeHint::default(),
            Kind::File(file) => SizeHint::with_exact(file.remaining()),
        }
    }
}

impl Relay {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        if self.handle.is_none() {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            tracing::info!("download timeout: closing the response");
            self.finish(Some(CancelReason::Timeout));
            return Poll::Ready(Some(Err(StreamError::Cancelled(CancelReason::Timeout))));
        }
        if self.operator_cancel.as_mut().is_some_and(|c| c.as_mut().poll(cx).is_ready()) {
            self.finish(Some(CancelReason::Administrative));
            return Poll::Ready(Some(Err(StreamError::Cancelled(CancelReason::Administrative))));
        }
        if let Some((_, wait)) = &mut self.delayed {
            ready!(wait.as_mut().poll(cx));
            let chunk = self.delayed.take().map(|(chunk, _)| chunk).unwrap_or_default();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.data.poll_chunk(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(registered) = &self.registered {
                    registered.traffic.bytes_out.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                self.pace(chunk, cx)
            }
            Poll::Ready(None) => {
                self.finish(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                tracing::warn!(error = %err, "service response body failed mid-stream");
                self.finish(Some(CancelReason::HandlerFailed));
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    /// Hands `chunk` on now, or parks it until the shaper's schedule allows.
    fn pace(&mut self, chunk: Bytes, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let Some(shaper) = &self.shaper else { return Poll::Ready(Some(Ok(Frame::data(chunk)))) };
        let at = shaper.schedule(chunk.len());
        if at <= tokio::time::Instant::now() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        self.delayed = Some((chunk, Box::pin(tokio::time::sleep_until(at))));
        self.poll_chunk(cx)
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
