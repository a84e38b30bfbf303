//! Staying connected: [`Service::run`] dials a gateway through a [`Dialer`], serves the
//! session until it closes, and dials again, with exponential backoff and full jitter
//! between attempts, until shut down.
//!
//! A GoAway from the gateway (another gateway process takes over) makes it dial again at
//! once, with no backoff, while the session that got it serves on until the gateway
//! closes it: its streams in progress finish.
//!
//! Backoff: the n-th consecutive wait is uniform in `[0, min(100 ms × 2ⁿ, 10 s)]`; it
//! starts over after a session that lasted more than 10 s. Refusals (bad token,
//! conflicting endpoints) are logged at error level and retried like any failure: the
//! gateway's configuration may change. A [`Dialer`] is anything that opens a byte
//! stream: the in-memory connector, a closure (TCP and TLS dialers are closures over
//! their address and config), or a type implementing the trait.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::DuplexStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_proto::HealthStatus;
use weir_transport::memory::MemoryConnector;
use weir_transport::ByteStream;

use crate::error::ServiceError;
use crate::health::Health;
use crate::runtime::ServiceSession;
use crate::service::Service;

/// First backoff cap.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Largest backoff cap.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A session that lasted longer than this resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// Opens byte streams to a gateway.
///
/// Implemented for [`MemoryConnector`] and for every closure
/// `Fn() -> impl Future<Output = io::Result<impl ByteStream>>`, e.g.
/// `|| tokio::net::TcpStream::connect("127.0.0.1:7000")`.
///
/// ```no_run
/// use weir_service::{Dialer, Service};
///
/// /// A dialer as a type, e.g. to carry TLS settings.
/// struct Tcp(std::net::SocketAddr);
///
/// impl Dialer for Tcp {
///     type Io = tokio::net::TcpStream;
///
///     async fn dial(&self) -> std::io::Result<tokio::net::TcpStream> {
///         tokio::net::TcpStream::connect(self.0).await
///     }
/// }
///
/// # async fn demo(service: Service) {
/// let by_closure = service.run(|| tokio::net::TcpStream::connect("127.0.0.1:7000"));
/// let by_type = service.run(Tcp(([127, 0, 0, 1], 7000).into()));
/// # }
/// ```
pub trait Dialer: Send + Sync + 'static {
    /// The byte stream a successful dial yields.
    type Io: ByteStream;

    /// Opens one connection.
    fn dial(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl<F, Fut, T> Dialer for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<T>> + Send,
    T: ByteStream,
{
    type Io = T;

    fn dial(&self) -> impl Future<Output = io::Result<T>> + Send {
        self()
    }
}

impl Dialer for MemoryConnector {
    type Io = DuplexStream;

    fn dial(&self) -> impl Future<Output = io::Result<DuplexStream>> + Send {
        self.connect()
    }
}

impl Service {
    /// Keeps the service connected through `dialer` until [`RunHandle::shutdown`].
    /// Must be called within a Tokio runtime.
    pub fn run<D: Dialer>(&self, dialer: D) -> RunHandle {
        self.run_until(dialer, CancellationToken::new())
    }

    /// [`Service::run`], also stopping when `shutdown` fires.
    pub fn run_until<D: Dialer>(&self, dialer: D, shutdown: CancellationToken) -> RunHandle {
        let (registered_tx, registered) = watch::channel(false);
        let health = Health::new();
        let run_loop = RunLoop {
            service: self.clone(),
            dialer,
            shutdown: shutdown.clone(),
            registered: registered_tx,
            health: Arc::clone(&health),
        };
        let task = tokio::spawn(run_loop.run());
        RunHandle { shutdown, registered, health, task }
    }
}

/// Controls a [`Service::run`] loop. Dropping it leaves the loop running.
#[derive(Debug)]
pub struct RunHandle {
    shutdown: CancellationToken,
    registered: watch::Receiver<bool>,
    health: Arc<Health>,
    task: JoinHandle<()>,
}

impl RunHandle {
    /// Stops the loop: the current connection is closed (requests in flight are
    /// cancelled) and no new one is opened.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The token that stops the loop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether the service is registered with the gateway right now.
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// Waits until the service is registered; `false` if the loop stopped first.
    pub async fn registered(&self) -> bool {
        let mut registered = self.registered.clone();
        let outcome = registered.wait_for(|r| *r).await.map(|_| ());
        outcome.is_ok()
    }

    /// Waits until the service is not registered (its connection closed or the loop
    /// stopped).
    pub async fn unregistered(&self) {
        let mut registered = self.registered.clone();
        let _ = registered.wait_for(|r| !*r).await;
    }

    /// A receiver that sees every change of registration.
    pub fn registration(&self) -> watch::Receiver<bool> {
        self.registered.clone()
    }

    /// Sets the status reported to the gateway, now and after reconnects; a heartbeat
    /// carrying it is sent at once.
    pub fn set_status(&self, status: HealthStatus) {
        self.health.set_status(status);
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> u32 {
        self.health.in_flight()
    }

    /// Waits until the loop has stopped (after [`RunHandle::shutdown`]).
    pub async fn join(self) {
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "service run loop failed");
        }
    }
}

/// The background task of [`Service::run`].
struct RunLoop<D> {
    service: Service,
    dialer: D,
    shutdown: CancellationToken,
    registered: watch::Sender<bool>,
    health: Arc<Health>,
}

impl<D: Dialer> RunLoop<D> {
    async fn run(self) {
        let mut backoff = Backoff::default();
        loop {
            let opened = tokio::select! {
                () = self.shutdown.cancelled() => break,
                opened = self.open() => opened,
            };
            match opened {
                Ok(session) => match self.serve_until_closed(session).await {
                    // The old session runs on; the new one is dialled at once.
                    SessionEnd::GoAway => continue,
                    SessionEnd::Closed(lasted) if lasted > BACKOFF_RESET_AFTER => backoff.reset(),
                    SessionEnd::Closed(_) => {}
                },
                Err(err @ ServiceError::Refused { .. }) => tracing::error!(error = %err, "gateway refused the service"),
                Err(err) => tracing::warn!(error = %err, "could not connect to the gateway"),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.registered.send_replace(false);
    }

    /// Dials and registers.
    async fn open(&self) -> Result<ServiceSession, ServiceError> {
        let io = self.dialer.dial().await.map_err(ServiceError::Connect)?;
        self.service.serve_with(io, Arc::clone(&self.health)).await
    }

    /// Serves `session` until it closes, shutdown (which closes it) or a GoAway (after
    /// which it serves on in its own task until the gateway closes it, or shutdown).
    async fn serve_until_closed(&self, session: ServiceSession) -> SessionEnd {
        let started = Instant::now();
        self.registered.send_replace(true);
        tokio::select! {
            () = session.closed() => {}
            () = self.shutdown.cancelled() => session.close(),
            () = session.going_away() => {
                tokio::spawn(serve_out(session, self.shutdown.clone()));
                return SessionEnd::GoAway;
            }
        }
        self.registered.send_replace(false);
        SessionEnd::Closed(started.elapsed())
    }
}

/// How a session handed to [`RunLoop::serve_until_closed`] ended.
enum SessionEnd {
    /// It closed after lasting this long.
    Closed(Duration),
    /// The gateway asked for a new connection; the session serves on meanwhile.
    GoAway,
}

/// Keeps a session the gateway sent GoAway on until the gateway closes it, or shutdown.
async fn serve_out(session: ServiceSession, shutdown: CancellationToken) {
    tokio::select! {
        () = session.closed() => {}
        () = shutdown.cancelled() => session.close(),
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug)]
struct Backoff {
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { cap: BACKOFF_INITIAL }
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.cap = BACKOFF_INITIAL;
    }

    /// A delay uniform in `[0, cap]`; the cap then doubles, up to [`BACKOFF_MAX`].
    fn next_delay(&mut self) -> Duration {
        let cap_ms = u64::try_from(self.cap.as_millis()).unwrap_or(u64::MAX);
        self.cap = (self.cap * 2).min(BACKOFF_MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=cap_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::default();
        let caps: Vec<u64> = (0..10)
            .map(|_| {
                let cap = backoff.cap;
                assert!(backoff.next_delay() <= cap);
                cap.as_millis() as u64
            })
            .collect();
        assert_eq!(caps, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
        backoff.reset();
        assert_eq!(backoff.cap, BACKOFF_INITIAL);
    }
}
