//! How long a client connection may live without doing anything: its supervisor drives
//! hyper's connection future and closes the connection when
//!
//! - no request head arrived within `header_timeout` of the connection's start, on a
//!   connection that is not HTTP/1.1 (an HTTP/2 preface and nothing else, or half a
//!   header block): GOAWAY, then close. HTTP/1.1 heads keep hyper's own timer, which
//!   answers 408;
//! - nothing was in flight for `idle_timeout`: a graceful close (HTTP/2: GOAWAY). An
//!   HTTP/1.1 connection in the middle of a request head is left to hyper's head timer,
//!   so that it still gets its 408;
//! - the connection cap sheds it to admit another ([`ConnectionSlot::shed`]): a graceful
//!   close;
//! - the gateway shuts down (or hands over to a successor): a graceful close, except for
//!   an idle HTTP/1.1 connection (or one just accepted, whose protocol is not known
//!   yet), which first drains for `keep_alive_drain`. Closing an
//!   idle keep-alive connection races any request its client is sending at that moment
//!   (the client sees the connection close under its request), so it stays open a little
//!   longer, and a request that arrives is answered with `Connection: close` (added by
//!   the caller) after which hyper closes it. An HTTP/2 connection gets GOAWAY, which
//!   tells its client which streams were taken, so it has no such race.
//!
//! A connection told to close gracefully that has still not closed [`GOODBYE_TIME`]
//! later, with nothing in flight (a peer that never acknowledges the GOAWAY's PING, a
//! header block that never ends), is dropped. A request in flight is never cut by the
//! supervisor: its own timeouts bound it.
//!
//! [`InFlight`] is the response body that keeps its request counted as in flight on the
//! connection until hyper has sent all of it and drops it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::CancellationToken;

use super::client_io::{ConnState, Protocol};
use crate::limits::connections::{ConnectionSlot, RequestGuard};

/// How long a connection told to close gracefully has, once idle, before it is dropped.
pub(super) const GOODBYE_TIME: Duration = Duration::from_secs(1);

/// The bounds a supervisor enforces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// The first request head must have arrived this long after the connection's start.
    pub header_timeout: Duration,
    /// Longest time with nothing in flight.
    pub idle_timeout: Duration,
    /// How long an idle HTTP/1.1 connection stays open once the gateway shuts down.
    pub keep_alive_drain: Duration,
}

/// What a supervisor watches besides the connection future.
#[derive(Debug)]
pub(super) struct Watched<'a> {
    /// Requests in flight, idleness and the shed signal.
    pub slot: &'a ConnectionSlot,
    /// The protocol and whether a request head is half read.
    pub state: &'a ConnState,
    pub bounds: Bounds,
    /// The gateway's shutdown: close gracefully.
    pub shutdown: &'a CancellationToken,
}

/// What the supervisor does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing until then (or until the connection ends, is shed or the gateway stops).
    WaitUntil(Instant),
    /// Close gracefully, for this reason.
    Close(&'static str),
    /// Drop the connection without a word.
    Abandon,
}

/// Drives `connection` to its end under the bounds; `close_gracefully` asks it to close
/// (hyper's `graceful_shutdown`). An abandoned connection ends with `Ok(())`, and the
/// caller drops it.
pub(super) async fn supervise<C, E>(
    mut connection: Pin<&mut C>,
    close_gracefully: impl Fn(Pin<&mut C>),
    watched: Watched<'_>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let started = Instant::now();
    let mut closing_since = None;
    // Set when the gateway shut down while this HTTP/1.1 connection was idle.
    let mut draining_until = None;
    loop {
        let now = Instant::now();
        let step = match (closing_since, draining_until) {
            (Some(since), _) => farewell(now, since, watched.slot),
            (None, Some(until)) => drain_step(now, until, next_step(now, started, &watched), watched.state),
            (None, None) => next_step(now, started, &watched),
        };
        let wake_at = match step {
            Step::WaitUntil(at) => at,
            Step::Close(reason) => {
                tracing::debug!(reason, "closing a client connection");
                close_gracefully(connection.as_mut());
                closing_since = Some(now);
                continue;
            }
            Step::Abandon => return Ok(()),
        };
        let awaits_shutdown = closing_since.is_none() && draining_until.is_none();
        let asked_to_close = tokio::select! {
            ended = connection.as_mut() => return ended,
            () = watched.slot.shed(), if closing_since.is_none() => "shed to admit another connection",
            () = watched.shutdown.cancelled(), if awaits_shutdown => "the gateway is shutting down",
            () = tokio::time::sleep_until(wake_at.into()) => continue,
        };
        if watched.shutdown.is_cancelled() && drains(&watched) {
            draining_until = Some(Instant::now() + watched.bounds.keep_alive_drain);
            continue;
        }
        tracing::debug!(reason = asked_to_close, "closing a client connection");
        close_gracefully(connection.as_mut());
        closing_since = Some(Instant::now());
    }
}

/// Whether a connection the gateway's shutdown finds drains before it closes: an idle
/// HTTP/1.1 one, whose client may be sending its next request right now, or one whose
/// first bytes have not said its protocol yet (just accepted: its client is sending its
/// first request). A busy one is closed gracefully at once: hyper ends it after the
/// response in progress; so is an idle HTTP/2 one, whose GOAWAY tells its client which
/// requests were taken.
fn drains(watched: &Watched<'_>) -> bool {
    let protocol = watched.state.protocol();
    matches!(protocol, Protocol::Http1 | Protocol::Unknown) && watched.slot.idle_since().is_some()
}

/// The next step of an HTTP/1.1 connection draining until `until`: what its bounds say
/// (`normal`) until then, a graceful close after, unless a request head is half read
/// (hyper's head timer bounds it; the answer will say `Connection: close`).
fn drain_step(now: Instant, until: Instant, normal: Step, state: &ConnState) -> Step {
    match normal {
        Step::WaitUntil(_) if now >= until && state.request_in_progress() => Step::WaitUntil(now + GOODBYE_TIME),
        Step::WaitUntil(_) if now >= until => Step::Close("the gateway is shutting down"),
        Step::WaitUntil(at) => Step::WaitUntil(at.min(until)),
        other => other,
    }
}

/// The next step of a connection not yet closing.
fn next_step(now: Instant, started: Instant, watched: &Watched<'_>) -> Step {
    let Bounds { header_timeout, idle_timeout, .. } = watched.bounds;
    let protocol = watched.state.protocol();
    let awaiting_head = !watched.slot.served() && protocol != Protocol::Http1;
    let head_due = awaiting_head.then_some(started + header_timeout);
    if head_due.is_some_and(|due| now >= due) {
        return match protocol {
            // Not even a whole preface: there is no protocol to say goodbye in.
            Protocol::Unknown => Step::Abandon,
            _ => Step::Close("request head not received in time"),
        };
    }
    let idle_due = watched.slot.idle_since().map(|since| since + idle_timeout);
    if idle_due.is_some_and(|due| now >= due) {
        if protocol == Protocol::Http1 && watched.state.request_in_progress() {
            // hyper's head timer runs and answers 408; look again after it.
            return Step::WaitUntil(now + header_timeout);
        }
        return Step::Close("idle timeout");
    }
    // While busy, look again after a whole idle period: cheap, and idleness can only
    // begin later than now.
    let due = [head_due, idle_due].into_iter().flatten().min();
    Step::WaitUntil(due.unwrap_or(now + idle_timeout))
}

/// The next step of a connection asked to close gracefully at `since`.
fn farewell(now: Instant, since: Instant, slot: &ConnectionSlot) -> Step {
    let due = since + GOODBYE_TIME;
    if now < due {
        Step::WaitUntil(due)
    } else if slot.idle_since().is_some() {
        Step::Abandon
    } else {
        // A request raced the goodbye: let it finish under its own timeouts.
        Step::WaitUntil(now + GOODBYE_TIME)
    }
}

/// A response body that counts its request as in flight until hyper drops it.
#[derive(Debug)]
pub(super) struct InFlight<B> {
    body: B,
    /// Dropped with the body, which makes the connection idle once it is the last.
    _request: RequestGuard,
}

impl<B> InFlight<B> {
    pub(super) fn new(body: B, request: RequestGuard) -> Self {
        InFlight { body, _request: request }
    }
}

impl<B: Body + Unpin> Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::limits::connections::ConnectionCap;

    fn bounds() -> Bounds {
        Bounds {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive_drain: Duration::from_secs(2),
        }
    }

    /// One connection's slot and state, as a supervisor watches them.
    struct Fixture {
        slot: Arc<ConnectionSlot>,
        state: ConnState,
        shutdown: CancellationToken,
    }

    impl Fixture {
        fn new() -> Self {
            let slot = ConnectionCap::new(4).admit().unwrap();
            Fixture { slot, state: ConnState::default(), shutdown: CancellationToken::new() }
        }

        fn watched(&self) -> Watched<'_> {
            Watched { slot: &self.slot, state: &self.state, bounds: bounds(), shutdown: &self.shutdown }
        }
    }

    #[test]
    fn without_a_request_head_a_connection_that_is_not_http1_is_closed_at_header_timeout() {
        let f = Fixture::new();
        let start = Instant::now();
        let due = start + Duration::from_secs(10);
        assert_eq!(next_step(start, start, &f.watched()), Step::WaitUntil(due));
        assert_eq!(next_step(due, start, &f.watched()), Step::Abandon, "no whole preface: dropped");
        drop(f.slot.request_started());
        let idle_due = f.slot.idle_since().unwrap() + bounds().idle_timeout;
        let later = due + Duration::from_secs(5);
        assert_eq!(next_step(later, start, &f.watched()), Step::WaitUntil(idle_due));
    }

    #[test]
    fn an_idle_connection_is_closed_at_idle_timeout_and_a_busy_one_is_not() {
        let f = Fixture::new();
        let start = Instant::now();
        let request = f.slot.request_started();
        let much_later = start + Duration::from_secs(100);
        assert_eq!(next_step(much_later, start, &f.watched()), Step::WaitUntil(much_later + bounds().idle_timeout));
        assert_eq!(farewell(much_later, start, &f.slot), Step::WaitUntil(much_later + GOODBYE_TIME));
        drop(request);
        let idle_due = f.slot.idle_since().unwrap() + bounds().idle_timeout;
        assert_eq!(next_step(idle_due, start, &f.watched()), Step::Close("idle timeout"));
        assert_eq!(farewell(start + GOODBYE_TIME, start, &f.slot), Step::Abandon);
    }

    #[test]
    fn an_http1_connection_drains_until_its_deadline_then_closes() {
        let f = Fixture::new();
        let start = Instant::now();
        let until = start + Duration::from_secs(2);
        let later = start + Duration::from_secs(60);
        assert_eq!(drain_step(start, until, Step::WaitUntil(later), &f.state), Step::WaitUntil(until));
        let sooner = start + Duration::from_secs(1);
        assert_eq!(drain_step(start, until, Step::WaitUntil(sooner), &f.state), Step::WaitUntil(sooner));
        assert_eq!(
            drain_step(until, until, Step::WaitUntil(later), &f.state),
            Step::Close("the gateway is shutting down")
        );
        assert_eq!(drain_step(start, until, Step::Close("idle timeout"), &f.state), Step::Close("idle timeout"));
    }
}
