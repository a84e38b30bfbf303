//! The client's side of a request: the listener, the per-IP admission and the global
//! connection cap (which sheds idle connections), TLS when `[server.tls]` is set
//! ([`tls`]: a bounded handshake once both places are held, the certificate chosen by
//! SNI), the socket and its timeouts ([`client_io`], over a plain or TLS [`stream`]),
//! each connection's lifetime bounds ([`lifetime`]: first request head, idleness),
//! HTTP/1.1 and HTTP/2 (told apart by hyper-util's auto builder from the first bytes,
//! which over TLS must say what ALPN agreed on: see [`client_io`]), `/healthz`, and the
//! hand-over of every other request to the request phases ([`crate::request`]), whose
//! errors become responses here.
//!
//! The same front serves the admin surface ([`admin`]) and the plain-HTTP redirect to
//! HTTPS ([`redirect`]) on their own listeners; their connections count under the same
//! cap, since they hold file descriptors too. Shutdown:
//! stop accepting, let in-flight requests finish within the grace period, then return;
//! the caller closes service links after.

mod admin;
mod client_io;
pub(crate) mod cluster;
mod dashboard;
mod h2_streams;
mod health;
mod lifetime;
mod redirect;
mod refusal;
mod socket;
mod stream;
pub(crate) mod tls;
mod validity;

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use self::client_io::{ClientIo, Protocol, SendLimits};
use self::h2_streams::{MalformedRequest, StreamExecutor};
use self::lifetime::{Bounds, InFlight, Watched};
use self::stream::ClientStream;
use crate::limits::connection::ClientConn;
use crate::limits::slots::KeyedLimiter;
use crate::observe::exchange::{Exchange, Observed, REQUEST_ID};
use crate::observe::metrics::Metrics;
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
    /// Plain HTTP answered with redirects to the HTTPS listener on this port.
    Redirect { https_port: u16 },
}

/// Serves `listener` until `shutdown` fires, then drains for at most the grace period.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    surface: Surface,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Counts connections until hyper is done with them, for the drain.
    let open = TaskTracker::new();
    // Shared: each connection's task would otherwise carry a copy of every setting.
    // Rebuilt when a reload changed the configuration, for the connections after it.
    let mut built_for = gateway.config();
    let mut builder = Arc::new(connection_builder(&built_for.server, gateway.metrics.clone()));
    let per_ip = KeyedLimiter::new(built_for.server.max_connections_per_ip);
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
        let live = gateway.live();
        if !Arc::ptr_eq(&live.config, &built_for) {
            built_for = Arc::clone(&live.config);
            builder = Arc::new(connection_builder(&built_for.server, gateway.metrics.clone()));
        }
        // Loaded per connection: a reload's certificates serve the handshakes after it.
        let tls = match surface {
            Surface::Public => live.client_tls.clone(),
            Surface::Admin | Surface::Redirect { .. } => None,
        };
        let conn = match admit(&gateway, &per_ip, client) {
            Ok(conn) => conn,
            Err(refusal) => {
                gateway.metrics().error(&refusal);
                tracing::info!(%client, error = %refusal, "connection refused");
                let refusal = tls.is_none().then_some(refusal);
                tokio::spawn(refusal::refuse_connection(stream, refusal));
                continue;
            }
        };
        socket::tune(&stream);
        let connection = Connection {
            gateway: Arc::clone(&gateway),
            server: Arc::clone(&built_for),
            conn,
            surface,
            tls,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(serve_connection(connection, stream, builder.clone(), open.token()));
    }
    drop(listener);
    open.close();
    let grace = gateway.config().server.shutdown_grace;
    if tokio::time::timeout(grace, open.wait()).await.is_err() {
        tracing::warn!(?grace, "grace period over; abandoning the requests still in flight");
    }
    Ok(())
}

/// A new connection's places: under its address's limit, then under the global cap
/// (which may shed an idle connection to make room).
fn admit(
    gateway: &Gateway,
    per_ip: &Arc<KeyedLimiter<IpAddr>>,
    client: SocketAddr,
) -> Result<Arc<ClientConn>, GatewayError> {
    let Some(permit) = per_ip.try_acquire(client.ip()) else {
        return Err(GatewayError::Overloaded("too many connections from this address".into()));
    };
    let slot = gateway.connections().admit().map_err(|full| GatewayError::Overloaded(full.to_string()))?;
    Ok(Arc::new(ClientConn::new(client, permit, slot)))
}

/// An accepted client connection and what serving it needs.
struct Connection {
    gateway: Arc<Gateway>,
    /// The configuration in force when it was accepted: its timeouts and data rates
    /// hold for the connection's life, whatever a reload changes meanwhile.
    server: Arc<crate::GatewayConfig>,
    conn: Arc<ClientConn>,
    surface: Surface,
    /// The listener's TLS, if it speaks HTTPS: the handshake comes first.
    tls: Option<tls::ClientTls>,
    /// The gateway's shutdown, on which the connection closes gracefully.
    shutdown: CancellationToken,
}

/// The connection's stream, over TLS if its listener speaks it; `None` if the TLS
/// handshake failed (already counted and logged).
async fn open_stream(connection: &Connection, stream: TcpStream) -> Option<ClientStream> {
    let Some(tls) = &connection.tls else {
        return Some(ClientStream::Plain(stream));
    };
    let Connection { gateway, conn, .. } = connection;
    let secured = tls.handshake(stream, &conn.slot, gateway.metrics()).await?;
    Some(ClientStream::Tls(Box::new(secured)))
}

/// One client connection, from its first byte to its close; `open` counts it for the
/// drain until hyper is done with it.
async fn serve_connection(
    connection: Connection,
    stream: TcpStream,
    builder: Arc<auto::Builder<StreamExecutor>>,
    open: TaskTrackerToken,
) {
    let Some(stream) = open_stream(&connection, stream).await else {
        return;
    };
    let Connection { gateway, server: config, conn, surface, shutdown, .. } = connection;
    let client = conn.addr;
    let server = &config.server;
    let bounds = Bounds {
        header_timeout: server.header_timeout,
        idle_timeout: server.idle_timeout,
        keep_alive_drain: server.keep_alive_drain.min(server.shutdown_grace),
    };
    let (io, state) = ClientIo::new(stream, send_limits(server));
    let ended = {
        let (gateway, served, closing) = (Arc::clone(&gateway), Arc::clone(&conn), shutdown.clone());
        let service = service_fn(move |request| {
            handle(Arc::clone(&gateway), request, Arc::clone(&served), surface, closing.clone())
        });
        let connection = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
        let watched = Watched { slot: &conn.slot, state: &state, bounds, shutdown: &shutdown };
        lifetime::supervise(connection, |c| c.graceful_shutdown(), watched).await
    };
    drop(open);
    // Upgraded connections keep their socket in the WebSocket relay, which closes it.
    let Some(mut socket) = state.take_socket() else {
        conn.slot.pin_busy();
        return;
    };
    if let Err(err) = ended {
        // An HTTP/2 client would read an HTTP/1.1 answer as garbage.
        let http1 = state.protocol() == Protocol::Http1;
        if http1 && is_timeout(&*err) && state.request_in_progress() {
            answer_head_timeout(&mut socket);
        }
        tracing::debug!(%client, error = %err, "client connection ended with an error");
    }
    socket.close_lingering().await;
}

fn send_limits(server: &crate::config::ServerConfig) -> SendLimits {
    SendLimits {
        send_timeout: server.send_timeout,
        min_rate: server.min_response_data_rate,
        grace: server.data_rate_grace,
    }
}

fn is_timeout(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    err.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout())
}

/// hyper closes a connection whose request head did not arrive in time without a word;
/// when a request had begun, the client still gets its 408 (best effort, never blocking).
fn answer_head_timeout(socket: &mut ClientStream) {
    let answer = GatewayError::RequestTimeout("request head not received in time".into());
    socket.answer_late(&answer.to_http1());
    tracing::info!("request head timed out: answered 408");
}

/// Response bytes hyper holds per HTTP/1.1 connection before it stops taking more from
/// the body (one more chunk may come on top), and the largest request head it reads. A
/// client reading slowly costs this much plus its stream's window; hyper's default
/// (about 400 KiB) would hold that much more per slow reader.
const H1_BUFFER: usize = 32 * 1024;

/// hyper's HTTP/1.1 and HTTP/2 settings, the latter from `[server.http2]`; extended
/// CONNECT (RFC 8441) is on so that WebSockets can open over HTTP/2 too.
fn connection_builder(server: &crate::config::ServerConfig, metrics: Arc<Metrics>) -> auto::Builder<StreamExecutor> {
    let executor = StreamExecutor::new(send_limits(server), metrics);
    let mut builder = auto::Builder::new(executor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_timeout)
        .max_buf_size(H1_BUFFER)
        .keep_alive(true);
    // A peer that stops answering pings is gone, even with requests in flight: by
    // default pinged after half `idle_timeout` of silence, it has the other half to answer.
    let h2 = &server.http2;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(h2.initial_stream_window)
        .initial_connection_window_size(h2.initial_connection_window)
        .max_send_buf_size(h2.max_send_buffer)
        .max_header_list_size(h2.max_header_list_size)
        .keep_alive_interval(h2.ping_interval(server.idle_timeout))
        .keep_alive_timeout(h2.ping_timeout(server.idle_timeout))
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        .enable_connect_protocol();
    builder
}

/// One request; it counts as in flight on its connection until its response body is
/// sent in full (or dropped). Once the gateway is shutting down, an HTTP/1 answer says
/// `Connection: close`, and hyper closes the connection after it ([`lifetime`]). A
/// malformed HTTP/2 request fails instead: hyper resets its stream with
/// `PROTOCOL_ERROR` ([`h2_streams::refuse_malformed`]).
async fn handle(
    gateway: Arc<Gateway>,
    mut request: Request<Incoming>,
    conn: Arc<ClientConn>,
    surface: Surface,
    shutdown: CancellationToken,
) -> Result<Response<InFlight<Observed<GatewayBody>>>, MalformedRequest> {
    if let Err(malformed) = h2_streams::refuse_malformed(&request) {
        tracing::info!(client = %conn.addr, error = %malformed, "malformed HTTP/2 request: stream reset");
        return Err(malformed);
    }
    let in_flight = conn.slot.request_started();
    let http1 = request.version() < Version::HTTP_2;
    let exchange = (surface == Surface::Public && !is_health_check(&request)).then(|| {
        Exchange::begin(&gateway.metrics, &gateway.access_log, gateway.spans.as_ref(), &mut request, conn.addr)
    });
    let mut response = match &exchange {
        Some(exchange) => respond(gateway, request, &conn, exchange).await,
        None => respond_beside(gateway, request, surface).await,
    };
    if let Some(exchange) = &exchange {
        exchange.on_response(response.status());
        response.headers_mut().insert(REQUEST_ID, exchange.request_id().clone());
    }
    if http1 && shutdown.is_cancelled() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response.map(|body| InFlight::new(Observed::new(body, exchange), in_flight)))
}

/// `/healthz`, on every listener but the redirect: answered before anything else.
fn is_health_check<B>(request: &Request<B>) -> bool {
    request.uri().path() == "/healthz"
}

/// The answer on a listener other than the public one, or to a health check.
async fn respond_beside(gateway: Arc<Gateway>, request: Request<Incoming>, surface: Surface) -> Response<GatewayBody> {
    if let Surface::Redirect { https_port } = surface {
        return redirect::answer(&request, https_port).unwrap_or_else(|err| {
            gateway.metrics().error(&err);
            err.into_response()
        });
    }
    if is_health_check(&request) {
        return admin::json(StatusCode::OK, r#"{"status":"ok"}"#.into());
    }
    admin::answer(&gateway, request).await
}

/// The answer to a client request on the public listener.
async fn respond(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    conn: &Arc<ClientConn>,
    exchange: &Arc<Exchange>,
) -> Response<GatewayBody> {
    gateway.metrics().request();
    let method = request.method().clone();
    if method == Method::OPTIONS && request.uri() == "*" {
        return server_options();
    }
    let path = request.uri().path().to_owned();
    // The configuration this request keeps to its end, whatever a reload does meanwhile.
    let live = gateway.live();
    // Boxed: hyper keeps room for this future in every connection, idle or not, so the
    // phases' large state machine is allocated per request instead.
    let response = match Box::pin(request::handle(gateway.phases(&live), request, conn, exchange)).await {
        Ok(response) => response,
        Err(err) => {
            gateway.metrics().error(&err);
            exchange.on_refusal(&err);
            log_error(&err, &method, &path, conn.addr);
            err.into_response()
        }
    };
    if method == Method::HEAD {
        without_body(response)
    } else {
        response
    }
}

/// The answer to `OPTIONS *`, a question about the server as a whole (RFC 9110 §9.3.7):
/// 204. No `Allow`: which methods are served depends on the path and on the services
/// registered at the moment, and a request for a path gets its own 405 with `Allow`.
fn server_options() -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// A response to HEAD carries no content (RFC 9110 §9.3.2), whatever the service or the
/// file sent: hyper drops it on HTTP/1.1 but would send it as DATA on HTTP/2. A length the
/// body knew is kept as `Content-Length`, the length a GET would have had.
fn without_body(response: Response<GatewayBody>) -> Response<GatewayBody> {
    let (mut parts, body) = response.into_parts();
    if let (false, Some(length)) = (parts.headers.contains_key(CONTENT_LENGTH), body.size_hint().exact()) {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, GatewayBody::empty())
}

fn log_error(err: &GatewayError, method: &Method, path: &str, client: SocketAddr) {
    let status = err.status().as_u16();
    if err.status().is_server_error() {
        tracing::warn!(%client, %method, %path, status, error = %err, "request failed");
    } else {
        tracing::info!(%client, %method, %path, status, error = %err, "request refused");
    }
}
