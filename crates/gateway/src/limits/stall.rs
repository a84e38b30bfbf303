//! How slowly a client may take a response: the limits ([`SendLimits`]) and, for one
//! HTTP/2 stream, the record of how its client takes the body ([`StreamWatch`]).
//!
//! On HTTP/1.1 the socket is the stream, so the client's I/O enforces the limits. On
//! HTTP/2 many streams share the socket, which keeps moving as long as one of them does,
//! while a client can hold any one stream at a flow-control window of zero. So each
//! stream's response body records when it handed hyper a chunk that hyper has not yet
//! come back from (hyper comes back for the next chunk once the stream had the window and
//! buffer room for this one), and the task that runs the stream judges that record: a
//! chunk waiting on its client for `send_timeout`, or a client that took the stream's
//! bytes slower than `min_rate` over its waits once `grace` has passed, ends the stream.
//! Time the body spends waiting on its service is not the client's and is never counted.
//!
//! The watch reaches the body through a task-local value set while the stream's task
//! polls it ([`watched`]); a body built outside such a task (HTTP/1.1) has no watch.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::lock;

/// Limits on how slowly a client may take its responses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendLimits {
    /// Longest a write (HTTP/1.1) or a chunk (an HTTP/2 stream) may wait on the client.
    pub send_timeout: Duration,
    /// Slowest rate, in bytes per second, at which the client may take its response
    /// while it is what the response waits on.
    pub min_rate: u64,
    /// How long the client may be slower than `min_rate` before it counts.
    pub grace: Duration,
}

tokio::task_local! {
    /// The watch of the HTTP/2 stream whose task is being polled.
    static CURRENT: Arc<StreamWatch>;
}

/// Runs `stream` (one HTTP/2 stream's task) with `watch` as the watch the bodies it
/// builds report to.
pub(crate) fn watched<F: Future>(watch: Arc<StreamWatch>, stream: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(watch, stream)
}

/// The watch of the stream being polled, if it is an HTTP/2 stream.
pub(crate) fn current() -> Option<Arc<StreamWatch>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// One stream's record of how its client takes the response body.
#[derive(Debug, Default)]
pub(crate) struct StreamWatch {
    progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    /// Since when the last chunk handed to hyper waits for the client, and its length;
    /// `None` while the body waits on its source, or before its first chunk.
    waiting: Option<(Instant, u64)>,
    /// Time the stream spent waiting on its client, over its past waits.
    client_time: Duration,
    /// Bytes the client took over those waits.
    taken: u64,
}

/// Why a stream was ended for its client's slowness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stall {
    /// A chunk waited `send_timeout` for the client's window.
    Stopped(Duration),
    /// The client took `taken` bytes in `over` of waiting on it, under the minimum rate.
    TooSlow { taken: u64, over: Duration },
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::Stopped(timeout) => write!(f, "the client took nothing of the stream for {timeout:?}"),
            Stall::TooSlow { taken, over } => {
                write!(f, "the client took {taken} bytes in {over:?}, under the minimum rate")
            }
        }
    }
}

impl StreamWatch {
    /// The body hands hyper a chunk of `len` bytes.
    pub(crate) fn handed(&self, len: usize) {
        lock(&self.progress).waiting = Some((Instant::now(), len as u64));
    }

    /// hyper came back to the body: the chunk it had was taken by the stream.
    pub(crate) fn resumed(&self) {
        let mut progress = lock(&self.progress);
        if let Some((since, len)) = progress.waiting.take() {
            progress.client_time += since.elapsed();
            progress.taken += len;
        }
    }

    /// Judges the stream now: `Err` when it must end, else when to judge it again
    /// (`None`: nothing waits on the client, so nothing can be crossed until the body
    /// runs again).
    pub(crate) fn judge(&self, limits: &SendLimits, now: Instant) -> Result<Option<Instant>, Stall> {
        let progress = lock(&self.progress);
        let Some((since, _)) = progress.waiting else { return Ok(None) };
        let waited = now.saturating_duration_since(since);
        if waited >= limits.send_timeout {
            return Err(Stall::Stopped(limits.send_timeout));
        }
        let over = progress.client_time + waited;
        // The rate is met as long as the waiting has not outlasted both the grace and
        // the time the bytes taken so far pay for.
        let paid = Duration::from_secs_f64(progress.taken as f64 / limits.min_rate.max(1) as f64);
        let allowed = limits.grace.max(paid);
        if limits.min_rate > 0 && over > allowed {
            return Err(Stall::TooSlow { taken: progress.taken, over });
        }
        let mut next = since + limits.send_timeout;
        if limits.min_rate > 0 {
            next = next.min(now + (allowed - over) + Duration::from_millis(1));
        }
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SendLimits {
        SendLimits { send_timeout: Duration::from_secs(10), min_rate: 100, grace: Duration::from_secs(2) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_waiting_on_its_client_ends_the_stream_after_send_timeout() {
        let watch = StreamWatch::default();
        assert_eq!(watch.judge(&limits(), Instant::now()), Ok(None), "nothing handed, nothing to judge");
        watch.handed(100_000);
        let start = Instant::now();
        let next = watch.judge(&limits(), start).unwrap().unwrap();
        assert_eq!(next, start + Duration::from_secs(2) + Duration::from_millis(1), "the grace ends first");
        // 100 000 bytes taken pay for 1000 s at 100 B/s: only send_timeout remains.
        tokio::time::advance(Duration::from_secs(3)).await;
        watch.resumed();
        watch.handed(10);
        let resumed = Instant::now();
        assert_eq!(watch.judge(&limits(), resumed).unwrap(), Some(resumed + Duration::from_secs(10)));
        let err = watch.judge(&limits(), resumed + Duration::from_secs(10)).unwrap_err();
        assert_eq!(err, Stall::Stopped(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_taking_the_stream_under_the_minimum_rate_ends_it_after_the_grace() {
        let watch = StreamWatch::default();
        for _ in 0..3 {
            watch.handed(50);
            tokio::time::advance(Duration::from_secs(1)).await;
            watch.resumed();
        }
        watch.handed(50);
        let now = Instant::now();
        let err = watch.judge(&limits(), now).unwrap_err();
        assert_eq!(err, Stall::TooSlow { taken: 150, over: Duration::from_secs(3) });
        assert!(err.to_string().contains("under the minimum rate"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn time_waiting_on_the_service_is_not_the_clients() {
        let watch = StreamWatch::default();
        watch.handed(50);
        watch.resumed();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(watch.judge(&limits(), Instant::now()), Ok(None));
    }
}
