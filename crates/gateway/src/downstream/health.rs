//! The probes an orchestrator asks the admin listener: `/livez` (the process runs and
//! serves its admin listener: always 200 when answered at all) and `/readyz` (200 when
//! the gateway can serve clients, else 503 naming what is missing). `/healthz`, answered
//! on every listener, is the older liveness probe and stays as it is.
//!
//! Ready means: the public listener accepts (its start gate has opened and no shutdown
//! has begun) and every service of `server.ready_services`, read from the configuration
//! in force (so a reload applies to the next probe), has at least one healthy registered
//! instance. With `[shared]`, the body also says whether the replicas share their
//! limits right now (`shared_limits`: `shared` or `degraded`); degraded is not ready
//! only when `on_failure = "deny"`, which refuses every limited request meanwhile (a
//! replica that falls back to its local limits still serves). The configuration is loaded by construction: the gateway serves nothing
//! before it has one, and a failed reload keeps the one in force.

use http::{Response, StatusCode};
use serde::Serialize;

use super::admin::json;
use crate::config::OnSharedFailure;
use crate::response::GatewayBody;
use crate::Gateway;

/// `/readyz`'s body: the verdict and each of its conditions.
#[derive(Debug, Serialize)]
struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Whether the public listener accepts clients.
    listening: bool,
    /// Services of `server.ready_services` with no healthy instance, in the order
    /// configured: what an operator has to bring up.
    missing_services: Vec<String>,
    /// With `[shared]`: `shared`, or `degraded` while Redis cannot be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_limits: Option<&'static str>,
}

/// `/livez`: answering is the proof.
pub(super) fn live() -> Response<GatewayBody> {
    json(StatusCode::OK, r#"{"status":"live"}"#.into())
}

/// `/readyz`: 200 when ready, else 503; the body says which condition failed.
pub(super) fn ready(gateway: &Gateway) -> Response<GatewayBody> {
    let healthy = gateway.routing().healthy_services();
    let config = gateway.config();
    let missing_services: Vec<String> =
        config.server.ready_services.iter().filter(|name| !healthy.contains(*name)).cloned().collect();
    let listening = gateway.public_listening();
    let shared = gateway.shared_limits().map(|shared| (shared.is_shared(), shared.on_failure));
    let denying = matches!(shared, Some((false, OnSharedFailure::Deny)));
    let ready = listening && missing_services.is_empty() && !denying;
    let readiness = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        listening,
        missing_services,
        shared_limits: shared.map(|(up, _)| if up { "shared" } else { "degraded" }),
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(status, serde_json::to_string(&readiness).unwrap_or_default())
}
