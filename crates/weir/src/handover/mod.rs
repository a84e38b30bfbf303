//! Restarts that drop nothing: a running `weir serve` hands its listening sockets to a
//! successor over the Unix socket `server.handover_socket`, so the kernel's queues of
//! those sockets are never closed.
//!
//! The conversation ([`message`]), the successor speaking first:
//! 1. successor → running: `Request`; the running process pauses its service listener;
//! 2. running → successor: `Offer` (each listener's role and address, and the names of
//!    the services registered with it), the listening sockets attached ([`fd_passing`]);
//!    the running process then sends GoAway to every service, which dials again and so
//!    reaches the successor, the only one accepting services now;
//! 3. the successor serves services at once, and clients once the offered services have
//!    registered with it (at most `server.handover_wait`), then sends `Ready`;
//! 4. the running process stops accepting and drains as on SIGTERM (its shutdown token),
//!    and the successor listens on the hand-over socket for the next one.
//!
//! Invariants: a successor contacts the running process only after its configuration
//! loaded; while the running process waits for `Ready` it keeps accepting clients (the
//! sockets are shared); if the successor goes away or errs before `Ready`, the running
//! process resumes accepting services and goes on as before (logged).

mod fd_passing;
mod message;

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use weir_gateway::{Gateway, Listeners};

pub(crate) use message::Role;
use message::{ListenerDescription, Message};

/// How long either side waits for the other's next message, except `Ready`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept on the hand-over socket, so a persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why a hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("hand-over socket: {0}")]
    Io(#[source] io::Error),
    #[error("malformed hand-over message: {0}")]
    Malformed(String),
    #[error("unexpected hand-over message: expected {expected}, got {got:?}")]
    Unexpected { expected: &'static str, got: String },
    #[error("no hand-over message within {0:?}")]
    Timeout(Duration),
}

/// Waits at most `limit` for `recv`.
async fn recv_within(channel: &mut UnixStream, limit: Duration) -> Result<(Message, Vec<OwnedFd>), HandoverError> {
    tokio::time::timeout(limit, message::recv(channel)).await.map_err(|_| HandoverError::Timeout(limit))?
}

fn unexpected(expected: &'static str, got: &Message) -> HandoverError {
    HandoverError::Unexpected { expected, got: format!("{got:?}") }
}

/// What a successor received from the running process.
pub(crate) struct Taken {
    /// The offered listeners not yet used.
    listeners: Vec<(ListenerDescription, OwnedFd)>,
    /// The services registered with the running process, awaited before clients.
    services: BTreeSet<String>,
    /// The conversation, for `Ready`.
    channel: UnixStream,
}

/// Asks the process serving `path` for its listeners; `None` when nobody serves it.
pub(crate) async fn take(path: &Path) -> Result<Option<Taken>, HandoverError> {
    let mut channel = match UnixStream::connect(path).await {
        Ok(channel) => channel,
        Err(err) if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            tracing::info!(path = %path.display(), "no running weir on the hand-over socket: starting afresh");
            return Ok(None);
        }
        Err(err) => return Err(HandoverError::Io(err)),
    };
    tracing::info!(path = %path.display(), "asking the running weir for its listeners");
    message::send(&mut channel, &Message::Request { pid: std::process::id() }, &[]).await?;
    let (offer, fds) = recv_within(&mut channel, ANSWER_TIMEOUT).await?;
    let Message::Offer { listeners, services } = offer else {
        return Err(unexpected("offer", &offer));
    };
    tracing::info!(?listeners, ?services, "listeners taken over from the running weir");
    Ok(Some(Taken { listeners: listeners.into_iter().zip(fds).collect(), services, channel }))
}

/// Whether an offered listener on `offered` serves a configuration asking for
/// `configured`: the same address, or the same IP when any port was asked for.
fn serves(offered: SocketAddr, configured: SocketAddr) -> bool {
    offered == configured || (configured.port() == 0 && offered.ip() == configured.ip())
}

/// The listener for `role` at `addr`: the offered one if it matches, else bound afresh.
pub(crate) async fn acquire(taken: &mut Option<Taken>, role: Role, addr: SocketAddr) -> io::Result<TcpListener> {
    let Some(taken) = taken else {
        return TcpListener::bind(addr).await;
    };
    let Some(at) = taken.listeners.iter().position(|(d, _)| d.role == role && serves(d.addr, addr)) else {
        tracing::info!(?role, %addr, "no matching listener was handed over: binding it");
        return TcpListener::bind(addr).await;
    };
    let (description, fd) = taken.listeners.remove(at);
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    tracing::info!(?role, addr = %description.addr, "using the handed-over listener");
    TcpListener::from_std(listener)
}

/// The hand-over side of one `weir serve`: taking over (if it found a running process)
/// and then offering its own listeners to the next successor.
pub(crate) struct Handover {
    /// The hand-over socket's path (`server.handover_socket`).
    path: PathBuf,
    /// What was taken from the process this one succeeds, if any.
    taken: Option<Taken>,
    /// Copies of this process's listening sockets, to offer to a successor.
    offered: Vec<(ListenerDescription, OwnedFd)>,
    /// `server.handover_wait`.
    wait: Duration,
}

impl Handover {
    /// Prepares the hand-over of `listeners` (copies of their sockets are kept).
    pub(crate) fn new(path: PathBuf, taken: Option<Taken>, listeners: &Listeners, wait: Duration) -> io::Result<Self> {
        let mut sockets = vec![(Role::Public, &listeners.public)];
        sockets.extend(listeners.admin.iter().map(|l| (Role::Admin, l)));
        sockets.extend(listeners.redirect.iter().map(|l| (Role::Redirect, l)));
        sockets.extend(listeners.services.iter().map(|(l, _)| (Role::Services, l)));
        let offered = sockets
            .into_iter()
            .map(|(role, listener)| {
                let description = ListenerDescription { role, addr: listener.local_addr()? };
                Ok((description, listener.as_fd().try_clone_to_owned()?))
            })
            .collect::<io::Result<_>>()?;
        Ok(Handover { path, taken, offered, wait })
    }

    /// Resolves when this process may accept clients: at once, or, taking over, once the
    /// services of the previous process registered here (at most `wait`) and it was told
    /// `Ready`. Then offers this process's listeners to the next successor, in a task.
    pub(crate) async fn start(self, gateway: Arc<Gateway>, shutdown: CancellationToken) {
        let Handover { path, taken, offered, wait } = self;
        if let Some(taken) = taken {
            take_over(&gateway, taken, wait).await;
        }
        tokio::spawn(offer(path, offered, gateway, shutdown));
    }
}

/// The successor's wait for the services, then `Ready`.
async fn take_over(gateway: &Arc<Gateway>, mut taken: Taken, wait: Duration) {
    let services = std::mem::take(&mut taken.services);
    match tokio::time::timeout(wait, gateway.services_registered(&services)).await {
        Ok(()) => tracing::info!(?services, "the running weir's services registered here"),
        Err(_) => {
            let missing: Vec<_> = services.difference(&gateway.registered_services()).cloned().collect();
            tracing::warn!(
                ?missing,
                ?wait,
                "services of the running weir did not register in time; accepting clients anyway"
            );
        }
    }
    for (description, _) in &taken.listeners {
        tracing::info!(role = ?description.role, addr = %description.addr, "handed-over listener not configured here: closed");
    }
    match message::send(&mut taken.channel, &Message::Ready, &[]).await {
        Ok(()) => {
            tracing::info!("ready: the running weir was told to drain");
            println!("weir took over from the running weir");
        }
        Err(err) => tracing::warn!(error = %err, "could not tell the running weir to drain; it serves on too"),
    }
}

/// Listens on `path` for successors until one is ready (then cancels `shutdown`, which
/// drains this process) or shutdown.
async fn offer(
    path: PathBuf,
    offered: Vec<(ListenerDescription, OwnedFd)>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    let listener = match bind_handover_socket(&path) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot listen on the hand-over socket: no successor can take over");
            return;
        }
    };
    tracing::info!(path = %path.display(), "waiting for a successor on the hand-over socket");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let mut channel = match accepted {
            Ok((channel, _)) => channel,
            Err(err) => {
                tracing::warn!(error = %err, "accepting on the hand-over socket failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        match hand_over(&mut channel, &offered, &gateway).await {
            Ok(()) => {
                tracing::info!("the successor is ready: draining");
                println!("weir handed over; draining");
                shutdown.cancel();
                return;
            }
            Err(err) => {
                gateway.resume_service_intake();
                tracing::warn!(error = %err, "hand-over abandoned: serving on as before");
            }
        }
    }
}

/// One successor's conversation; `Ok` once it said `Ready`.
async fn hand_over(
    channel: &mut UnixStream,
    offered: &[(ListenerDescription, OwnedFd)],
    gateway: &Arc<Gateway>,
) -> Result<(), HandoverError> {
    let (request, _) = recv_within(channel, ANSWER_TIMEOUT).await?;
    let Message::Request { pid } = request else {
        return Err(unexpected("request", &request));
    };
    tracing::info!(successor = pid, "hand-over offered: service listener paused");
    println!("weir hand-over requested by process {pid}");
    gateway.pause_service_intake();
    let services = gateway.registered_services();
    let listeners = offered.iter().map(|(d, _)| d.clone()).collect();
    let fds: Vec<BorrowedFd<'_>> = offered.iter().map(|(_, fd)| fd.as_fd()).collect();
    message::send(channel, &Message::Offer { listeners, services }, &fds).await?;
    gateway.send_go_away("another weir process is taking over");
    // The successor waits at most its own `handover_wait`; this bound is a safety net.
    let limit = gateway.config().server.handover_wait + ANSWER_TIMEOUT;
    let (ready, _) = recv_within(channel, limit).await?;
    match ready {
        Message::Ready => Ok(()),
        other => Err(unexpected("ready", &other)),
    }
}

/// Binds the hand-over socket, replacing a stale one (a socket file nobody serves: the
/// previous process, or one that died); any other file at `path` is left alone.
fn bind_handover_socket(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    UnixListener::bind(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_serves_its_own_address_or_any_port_of_its_ip() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(serves(at("127.0.0.1:8080"), at("127.0.0.1:8080")));
        assert!(serves(at("127.0.0.1:43210"), at("127.0.0.1:0")));
        assert!(!serves(at("127.0.0.1:8080"), at("127.0.0.1:8081")));
        assert!(!serves(at("127.0.0.1:8080"), at("0.0.0.0:8080")));
        assert!(!serves(at("127.0.0.1:8080"), at("0.0.0.0:0")));
    }
}
