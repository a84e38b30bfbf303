//! The admin surface, on its own listener: `/healthz`, `/livez` and `/readyz` (the
//! probes, see [`super::health`]), `/budget` (the payload budget's counters), `/routes`
//! (the routing table), `/requests` (business requests in flight; `DELETE
//! /requests/{id}` cancels one, and with `[shared]` `DELETE /requests/{replica}/{id}`
//! one on any replica, see [`super::cluster`]), `/metrics` (Prometheus text), `POST /reload` (the
//! configuration file read again and applied, see [`crate::reload`]) and the live
//! dashboard at `/` with its script and style ([`super::dashboard`]). Read-only but for
//! the cancel and the reload; every other path is 404, every other method 405. Every
//! answer carries the dashboard's Content-Security-Policy, so no page served here can
//! run a script it did not load from here.
//!
//! `POST /reload` answers JSON: 200 `{"status":"reloaded","restart_required":[...],
//! "services_disconnected":[...]}`; 422 `{"status":"failed","error":"..."}` when the file
//! is unreadable or invalid (the error as `weir check-config` prints it) or a key or
//! certificate cannot be loaded; 409 with the same shape when the gateway was started
//! without a configuration file. This is the one place reload errors become statuses.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use std::sync::Arc;

use super::{cluster, dashboard, health};
use crate::observe::metrics::services::InstanceState;
use crate::observe::metrics::shared::SharedState;
use crate::observe::metrics::{self, ScrapedState};
use crate::reload::ReloadError;
use crate::response::error::GatewayError;
use crate::response::GatewayBody;
use crate::Gateway;

/// The admin surface's answer to `request`.
pub(super) async fn answer(gateway: &Arc<Gateway>, request: Request<Incoming>) -> Response<GatewayBody> {
    let mut response = route(gateway, request).await;
    dashboard::protect(response.headers_mut());
    response
}

/// The answer for `request`'s path and method.
async fn route(gateway: &Arc<Gateway>, request: Request<Incoming>) -> Response<GatewayBody> {
    let path = request.uri().path();
    if path == "/reload" {
        return reload(gateway, request.method()).await;
    }
    if let Some(id) = path.strip_prefix("/requests/") {
        return cancel_request(gateway, request.method(), id).await;
    }
    if request.method() != Method::GET {
        return GatewayError::MethodNotAllowed { allow: vec!["GET".into()] }.into_response();
    }
    if let Some(asset) = dashboard::asset(path) {
        return asset;
    }
    match path {
        "/livez" => health::live(),
        "/readyz" => health::ready(gateway),
        "/budget" => json(StatusCode::OK, serde_json::to_string(&gateway.budget().counters()).unwrap_or_default()),
        "/routes" => routes(gateway).await,
        "/requests" => requests(gateway),
        "/metrics" => {
            let state = ScrapedState {
                budget: gateway.budget().counters(),
                budget_limit: gateway.config().limits.payload.max_aggregate_inflight_bytes,
                services: gateway.service_connections(),
                clients: gateway.connections().open(),
                instances: gateway.routing().instances().iter().map(|i| InstanceState::of(i)).collect(),
                shared: gateway
                    .shared_limits()
                    .map(|shared| SharedState { shared: shared.is_shared(), stats: shared.store.stats() }),
            };
            let text = gateway.metrics().render(&state);
            let mut response = Response::new(GatewayBody::full(Bytes::from(text)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            response
        }
        _ => GatewayError::NotFound.into_response(),
    }
}

/// `POST /reload`: reads the configuration file again and applies it, off the async
/// workers (it reads files).
async fn reload(gateway: &Arc<Gateway>, method: &Method) -> Response<GatewayBody> {
    if method != Method::POST {
        return GatewayError::MethodNotAllowed { allow: vec!["POST".into()] }.into_response();
    }
    let reloading = Arc::clone(gateway);
    let outcome = match tokio::task::spawn_blocking(move || reloading.reload_from_source()).await {
        Ok(outcome) => outcome,
        Err(err) => Err(ReloadError::Invalid(format!("the reload did not complete: {err}"))),
    };
    match outcome {
        Ok(report) => {
            let body = serde_json::json!({
                "status": "reloaded",
                "restart_required": report.restart_required,
                "services_disconnected": report.services_disconnected,
            });
            json(StatusCode::OK, body.to_string())
        }
        Err(err) => {
            let status = match err {
                ReloadError::NoSource => StatusCode::CONFLICT,
                ReloadError::Invalid(_) | ReloadError::Start(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json(status, serde_json::json!({ "status": "failed", "error": err.to_string() }).to_string())
        }
    }
}

/// `/routes`: the routing table; with `[shared]`, each instance names the replicas it is
/// registered with.
async fn routes(gateway: &Gateway) -> Response<GatewayBody> {
    let routes = serde_json::to_value(gateway.routing().snapshot()).unwrap_or_default();
    let routes = match gateway.shared_limits() {
        Some(shared) => cluster::name_replicas_of_instances(&shared.store, routes).await,
        None => routes,
    };
    json(StatusCode::OK, routes.to_string())
}

/// `/requests`: this replica's requests in flight, each naming the replica with
/// `[shared]`.
fn requests(gateway: &Gateway) -> Response<GatewayBody> {
    let list = serde_json::to_value(gateway.registry().list()).unwrap_or_default();
    let list = match gateway.shared_limits() {
        Some(shared) => cluster::name_replica(list, &shared.store.config().replica),
        None => list,
    };
    json(StatusCode::OK, list.to_string())
}

/// `DELETE /requests/{id}`: cancels a registered request (204), or 404. With
/// `[shared]`, `DELETE /requests/{replica}/{id}` reaches another replica (202).
async fn cancel_request(gateway: &Gateway, method: &Method, id: &str) -> Response<GatewayBody> {
    if method != Method::DELETE {
        return GatewayError::MethodNotAllowed { allow: vec!["DELETE".into()] }.into_response();
    }
    let (replica, id) = match id.split_once('/') {
        Some((replica, id)) => (Some(replica), id),
        None => (None, id),
    };
    match (replica, gateway.shared_limits(), id.parse::<u64>()) {
        (None, _, _) => {}
        (Some(replica), Some(shared), Ok(id)) if replica != shared.store.config().replica => {
            let status = cluster::cancel_elsewhere(&shared.store, replica, id).await;
            return match status {
                StatusCode::ACCEPTED => json(status, r#"{"status":"sent"}"#.into()),
                StatusCode::NOT_FOUND => GatewayError::NotFound.into_response(),
                _ => {
                    GatewayError::Overloaded("Redis cannot be reached to tell the other replica".into()).into_response()
                }
            };
        }
        (Some(_), Some(_), _) => {}
        (Some(_), None, _) => return GatewayError::NotFound.into_response(),
    }
    match id.parse::<u64>() {
        Ok(id) if gateway.registry().cancel(id) => {
            tracing::info!(id, "request cancelled from the admin endpoint");
            let mut response = Response::new(GatewayBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => GatewayError::NotFound.into_response(),
    }
}

/// A JSON response with `status`.
pub(super) fn json(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
