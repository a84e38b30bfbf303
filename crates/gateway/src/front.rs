//! The HTTP front: accepts client connections (HTTP/1.1, and HTTP/2 with prior
//! knowledge, told apart by hyper-util's auto builder), answers `/healthz` itself, hands
//! every other request to [`crate::dispatch`], and turns its errors into responses.
//!
//! The same front serves the admin surface on its own listener: `/healthz`, `/budget`
//! (the payload budget's counters), `/routes` (the routing table) and `/metrics`.
//! Shutdown: stop accepting, let in-flight requests finish within the grace period,
//! then return; the caller closes service links after.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::pipeline;
use crate::server::Gateway;

/// Which surface a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Client traffic routed to services.
    Public,
    /// Operator endpoints: budget, routes, metrics.
    Admin,
}

/// Serves `listener` until `shutdown` fires, then drains for at most the grace period.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    surface: Surface,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(&gateway);
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
        let _ = stream.set_nodelay(true);
        let gateway = Arc::clone(&gateway);
        let service = service_fn(move |request| handle(Arc::clone(&gateway), request, client, surface));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = watched.await {
                tracing::debug!(%client, error = %err, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = gateway.config().server.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "grace period over; abandoning the requests still in flight");
    }
    Ok(())
}

fn connection_builder(gateway: &Gateway) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config().server.header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    builder
}

async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    client: SocketAddr,
    surface: Surface,
) -> Result<Response<GatewayBody>, Infallible> {
    if request.uri().path() == "/healthz" {
        return Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.into()));
    }
    if surface == Surface::Admin {
        return Ok(admin(&gateway, &request));
    }
    gateway.metrics().request();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match pipeline::handle(&gateway, request, client).await {
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

fn admin(gateway: &Gateway, request: &Request<Incoming>) -> Response<GatewayBody> {
    if request.method() != Method::GET {
        return GatewayError::MethodNotAllowed { allow: vec!["GET".into()] }.into_response();
    }
    match request.uri().path() {
        "/budget" => json(StatusCode::OK, serde_json::to_string(&gateway.budget().counters()).unwrap_or_default()),
        "/routes" => json(StatusCode::OK, serde_json::to_string(&gateway.routing().snapshot()).unwrap_or_default()),
        "/metrics" => {
            let text = gateway.metrics().render(&gateway.budget().counters(), gateway.service_connections());
            let mut response = Response::new(GatewayBody::full(Bytes::from(text)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        _ => GatewayError::NotFound.into_response(),
    }
}

fn json(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
