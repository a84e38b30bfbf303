//! The response body the gateway gives hyper: either bytes it already has, or a service's
//! streamed body relayed chunk by chunk.
//!
//! A relayed body owns its stream: taking a chunk grants the service credit for it (so a
//! slow client slows the service, and at most one window is buffered), reaching the
//! explicit end completes the stream, and dropping it early (client gone) cancels it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use weir_transport::{DataReceiver, StreamError, StreamHandle};

use crate::routing::InFlightGuard;

/// hyper's view of a response body from the gateway.
#[derive(Debug)]
pub struct GatewayBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Relay(Relay),
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

    /// A relayed service body.
    pub(crate) fn relay(
        data: DataReceiver,
        handle: StreamHandle,
        in_flight: InFlightGuard<weir_transport::Link>,
        length: Option<u64>,
    ) -> Self {
        GatewayBody { kind: Kind::Relay(Relay { data, handle: Some(handle), in_flight: Some(in_flight), length }) }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Relay(relay) => relay.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Relay(relay) => relay.handle.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Relay(Relay { length: Some(n), .. }) => SizeHint::with_exact(*n),
            Kind::Relay(_) => SizeHint::default(),
        }
    }
}

impl Relay {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        if self.handle.is_none() {
            return Poll::Ready(None);
        }
        match self.data.poll_chunk(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) => {
                self.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                tracing::warn!(error = %err, "service response body failed mid-stream");
                self.finish(false);
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(handle) = self.handle.take() {
            if complete {
                handle.complete();
            } else {
                handle.cancel(weir_proto::CancelReason::HandlerFailed);
            }
        }
        self.in_flight = None;
    }
}
