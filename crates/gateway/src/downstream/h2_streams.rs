//! The executor hyper runs each HTTP/2 stream on: every stream's task carries a
//! [`StreamWatch`] that its response body reports to, and the task ends the stream once
//! the watch says its client stalled it (see [`crate::limits::stall`]).
//!
//! Ending the task drops the stream's state in hyper: h2 resets the stream
//! (RST_STREAM with CANCEL), and the dropped response body cancels the service's stream.
//! The connection and its other streams go on. Each such end is counted in the metrics
//! as a relayed body failure with the reason `client_stalled`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use super::metrics::Metrics;
use crate::limits::stall::{self, SendLimits, StreamWatch};
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
