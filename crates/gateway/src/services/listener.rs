//! The service listeners: services in other processes dial in over TCP, or TLS, or
//! through a RabbitMQ broker.
//!
//! [`Gateway::serve_services`] accepts sockets until shutdown (not while the intake is
//! paused for a hand-over, see [`super::intake`]) and gives each its own task:
//! the TLS handshake (when configured), bounded by `services.handshake_timeout`, then
//! [`Gateway::accept_service`] (Hello, authentication, registration, the link's life). A
//! connection that sends garbage, fails its TLS handshake or stalls costs only its own
//! task and a log line; the accept loop never waits on any connection. At most
//! `services.max_pending_handshakes` connections may be in their handshake at once: one
//! accepted beyond that is closed at once (logged), before any byte of it is read. Accept errors
//! (for example running out of file descriptors) are logged and retried after a pause.
//!
//! [`Gateway::serve_broker_services`] does the same for connect requests taken from the
//! broker: the same slots (a request beyond them is refused with a reason the service
//! sees), the same `accept_service`. Losing the broker is not an error here: the
//! listener reconnects by itself, and services dial again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use weir_rabbitmq::BrokerListener;
use weir_transport::tls::{self, TlsAcceptor};

use super::auth::ServicePeer;
use super::HandshakeSlot;
use crate::Gateway;

/// Pause after a failed accept, so a persistent error (EMFILE) does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl Gateway {
    /// Accepts service connections on `listener` (TLS when `tls` is given) until
    /// `shutdown` fires; registered services keep running after it returns
    /// ([`Gateway::close_services`] ends them).
    pub async fn serve_services(
        self: &Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        let scheme = if tls.is_some() { "tls" } else { "tcp" };
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        self.warn_if_open(&local);
        tracing::info!(listen = %local, scheme, "accepting service connections");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.intake.opened() => {}
            }
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.intake.paused() => {
                    tracing::info!(listen = %local, "service listener paused: another process accepts services");
                    continue;
                }
                accepted = weir_transport::tcp::accept(&listener) => accepted,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let Some(slot) = self.handshake_slot(&addr) else { continue };
                    tokio::spawn(Arc::clone(self).open_service_connection(stream, addr, tls.clone(), slot));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a service connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
        tracing::info!(listen = %local, "service listener stopped");
    }

    /// Accepts service connections through the broker until `shutdown` fires (not while
    /// the intake is paused); registered services keep running after it returns.
    pub async fn serve_broker_services(self: &Arc<Self>, mut listener: BrokerListener, shutdown: CancellationToken) {
        let broker = listener.address().to_string();
        self.warn_if_open(&broker);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.intake.opened() => {}
            }
            let request = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.intake.paused() => continue,
                request = listener.accept() => request,
            };
            let peer = request.peer();
            let Some(slot) = self.handshake_slot(&peer) else {
                tokio::spawn(request.refuse("too many handshakes in progress"));
                continue;
            };
            let gateway = Arc::clone(self);
            tokio::spawn(async move {
                match request.open().await {
                    Ok(stream) => gateway.accept_service(stream, ServicePeer::network(peer, None), Some(slot)).await,
                    Err(err) => tracing::warn!(%peer, error = %err, "broker service connection dropped"),
                }
            });
        }
        tracing::info!(%broker, "broker service listener stopped");
    }

    /// A place among the connections in their handshake for `peer`, or `None` (logged)
    /// when `services.max_pending_handshakes` are already there.
    fn handshake_slot(&self, peer: &dyn std::fmt::Display) -> Option<HandshakeSlot> {
        let slot = Arc::clone(&self.pending_handshakes).try_acquire_owned().ok();
        if slot.is_none() {
            let max = self.config().services.max_pending_handshakes;
            tracing::warn!(%peer, max, "service connection refused: too many handshakes in progress");
        }
        slot
    }

    /// Warns, once per listener, when no credentials guard what services may register.
    fn warn_if_open(&self, listen: &str) {
        if self.live().service_auth.is_open() {
            tracing::warn!(
                %listen,
                "no [[services.credentials]] configured: any service that can reach the service listener may register any path"
            );
        }
    }

    /// One accepted socket: TLS handshake if configured, then the service's whole life.
    async fn open_service_connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        slot: HandshakeSlot,
    ) {
        let Some(acceptor) = tls else {
            let peer = ServicePeer::network(format!("tcp://{addr}"), None);
            return self.accept_service(stream, peer, Some(slot)).await;
        };
        let peer = format!("tls://{addr}");
        let timeout = self.config().services.handshake_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Err(_) => tracing::warn!(%peer, ?timeout, "service connection dropped: TLS handshake timed out"),
            Ok(Err(err)) => tracing::warn!(%peer, error = %err, "service connection dropped: TLS handshake failed"),
            Ok(Ok(stream)) => {
                let identity = tls::peer_identity(&stream);
                self.accept_service(stream, ServicePeer::network(peer, identity), Some(slot)).await;
            }
        }
    }
}
