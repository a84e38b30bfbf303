//! The client's side of a request: the listener, the per-IP admission, the socket and its
//! timeouts ([`client_io`]), HTTP/1.1 and HTTP/2 with prior knowledge (told apart by
//! hyper-util's auto builder), `/healthz`, and the hand-over of every other request to
//! the request phases ([`crate::request`]), whose errors become responses here.
//!
//! The same front serves the admin surface ([`admin`]) on its own listener. Shutdown: stop
//! accepting, let in-flight requests finish within the grace period, then return; the
//! caller closes service links after.

mod admin;
mod client_io;
mod h2_streams;
pub(crate) mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use self::client_io::{ClientIo, SendLimits};
use self::h2_streams::StreamExecutor;
use crate::limits::connection::ClientConn;
use crate::limits::slots::KeyedLimiter;
use crate::request;
use crate::response::error::GatewayError;
use crate::response::GatewayBody;
use crate::Gateway;

/// Which surface a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// Client traffic routed to services.
    Public,
    /// Operator endpoints: budget, routes, metrics.
    Admin,
}

/// Serves `listener` until `shutdown` fires, then drains for at most the grace period.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    surface: Surface,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    // Shared: each connection's task would otherwise carry a copy of every setting.
    let builder = Arc::new(connection_builder(&gateway));
    let per_ip = KeyedLimiter::new(gateway.config().server.max_connections_per_ip);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: keep serving, don't spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(permit) = per_ip.try_acquire(client.ip()) else {
            let refusal = GatewayError::Overloaded("too many connections from this address".into());
            gateway.metrics().error(&refusal);
            tracing::info!(%client, "connection refused: too many connections from this address");
            tokio::spawn(refuse_connection(stream, refusal));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ClientConn::new(client, permit));
        tokio::spawn(serve_connection(
            Arc::clone(&gateway),
            stream,
            conn,
            surface,
            builder.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    let grace = gateway.config().server.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "grace period over; abandoning the requests still in flight");
    }
    Ok(())
}

/// One client connection, from its first byte to its close.
async fn serve_connection(
    gateway: Arc<Gateway>,
    stream: TcpStream,
    conn: Arc<ClientConn>,
    surface: Surface,
    builder: Arc<auto::Builder<StreamExecutor>>,
    watcher: Watcher,
) {
    let client = conn.addr;
    // hyper's head timer starts once it parses; before the first byte (while the
    // protocol is being detected) nothing bounds an idle connection but this.
    let mut first = [0u8; 1];
    let first_byte_timeout = gateway.config().server.header_timeout;
    if !matches!(tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)).await, Ok(Ok(1..))) {
        tracing::debug!(%client, "closing a connection that sent nothing");
        return;
    }
    let (io, state) = ClientIo::new(stream, send_limits(&gateway));
    let service = service_fn(move |request| handle(Arc::clone(&gateway), request, Arc::clone(&conn), surface));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let ended = watcher.watch(connection.into_owned()).await;
    // Upgraded connections keep their socket in the WebSocket relay, which closes it.
    let Some(socket) = state.take_socket() else {
        return;
    };
    if let Err(err) = ended {
        if is_timeout(&*err) && state.request_in_progress() {
            answer_head_timeout(&socket);
        }
        tracing::debug!(%client, error = %err, "client connection ended with an error");
    }
    close_lingering(socket).await;
}

/// How long a closing connection keeps reading what its client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much of it is read and discarded, at most.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Closes a connection hyper is done with: stops sending (the client sees the end of the
/// response), then reads and discards what the client is still sending, for at most
/// [`LINGER_TIME`] and [`LINGER_BYTES`], before closing. Closing a socket with unread
/// bytes in it makes the kernel answer with a reset, which can destroy the response just
/// written: a client still uploading a refused body would see a broken pipe instead of
/// its 413 or 503. A client that already closed costs one read that finds the end.
async fn close_lingering(mut socket: TcpStream) {
    let _ = socket.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    // Allocated only here, so an open connection's task does not carry it.
    let mut discard = vec![0u8; 16 * 1024];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, socket.read(&mut discard)).await {
            Ok(Ok(n @ 1..)) => discarded += n,
            _ => return,
        }
    }
}

fn send_limits(gateway: &Gateway) -> SendLimits {
    let server = &gateway.config().server;
    SendLimits {
        send_timeout: server.send_timeout,
        min_rate: server.min_response_data_rate,
        grace: server.data_rate_grace,
    }
}

/// A connection over the per-IP limit gets a 503 it can read, then is closed.
async fn refuse_connection(mut stream: TcpStream, refusal: GatewayError) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&refusal.to_http1())).await;
    close_lingering(stream).await;
}

fn is_timeout(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    err.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout())
}

/// hyper closes a connection whose request head did not arrive in time without a word;
/// when a request had begun, the client still gets its 408 (best effort, never blocking).
fn answer_head_timeout(socket: &TcpStream) {
    let answer = GatewayError::RequestTimeout("request head not received in time".into());
    let _ = socket.try_write(&answer.to_http1());
    tracing::info!("request head timed out: answered 408");
}

/// Response bytes hyper holds per HTTP/1.1 connection before it stops taking more from
/// the body (one more chunk may come on top), and the largest request head it reads. A
/// client reading slowly costs this much plus its stream's window; hyper's default
/// (about 400 KiB) would hold that much more per slow reader.
const H1_BUFFER: usize = 32 * 1024;
/// Response bytes h2 holds per stream waiting for the client's window before hyper
/// stops taking more from the body (hyper's default is 400 KiB).
const H2_SEND_BUFFER: usize = 16 * 1024;
/// Streams one HTTP/2 connection may have open at once; each can hold its window's
/// worth of response bytes while its client does not read.
const H2_MAX_STREAMS: u32 = 128;

fn connection_builder(gateway: &Gateway) -> auto::Builder<StreamExecutor> {
    let executor = StreamExecutor::new(send_limits(gateway), Arc::clone(&gateway.metrics));
    let mut builder = auto::Builder::new(executor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config().server.header_timeout)
        .max_buf_size(H1_BUFFER)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(H2_MAX_STREAMS).max_send_buf_size(H2_SEND_BUFFER);
    builder
}

async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    conn: Arc<ClientConn>,
    surface: Surface,
) -> Result<Response<GatewayBody>, Infallible> {
    let client = conn.addr;
    if request.uri().path() == "/healthz" {
        return Ok(admin::json(StatusCode::OK, r#"{"status":"ok"}"#.into()));
    }
    if surface == Surface::Admin {
        return Ok(admin::answer(&gateway, &request));
    }
    gateway.metrics().request();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Boxed: hyper keeps room for this future in every connection, idle or not, so the
    // phases' large state machine is allocated per request instead.
    match Box::pin(request::handle(gateway.phases(), request, &conn)).await {
        Ok(response) => Ok(response),
        Err(err) => {
            gateway.metrics().error(&err);
            log_error(&err, &method, &path, client);
            Ok(err.into_response())
        }
    }
}

fn log_error(err: &GatewayError, method: &Method, path: &str, client: SocketAddr) {
    let status = err.status().as_u16();
    if err.status().is_server_error() {
        tracing::warn!(%client, %method, %path, status, error = %err, "request failed");
    } else {
        tracing::info!(%client, %method, %path, status, error = %err, "request refused");
    }
}
