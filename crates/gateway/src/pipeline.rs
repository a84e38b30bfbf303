//! A client request's life at the gateway, as named phases (after pingora's phases):
//!
//! 1. **mount** — the longest matching prefix picks the mount and its profile;
//! 2. profile phases — **static**: serve a file, done. **business**: *authenticate* →
//!    *route* → *validate* (claims, content type, declared body size) → *register* (the
//!    request registry) → *rate limit*. **streaming**: *route* (connection and bandwidth
//!    limits act on the connection and body, see `dispatch`);
//! 3. **dispatch** — to a service over its link (`dispatch`), or the WebSocket relay.
//!
//! Each phase returns a typed [`GatewayError`] that `error` maps to a status code.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use weir_proto::EndpointKind;
use weir_transport::Link;

use crate::auth::Identity;
use crate::body::GatewayBody;
use crate::dispatch::{dispatch, route};
use crate::error::GatewayError;
use crate::mount::{Mount, Profile};
use crate::routing::RoutingDecision;
use crate::server::Gateway;

/// What the phases before dispatch established about a request.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub mount: Arc<Mount>,
    pub decision: RoutingDecision<Link>,
    pub identity: Identity,
    pub client: SocketAddr,
}

/// Runs every phase for one request.
pub(crate) async fn handle(
    gateway: &Gateway,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Result<Response<GatewayBody>, GatewayError> {
    let mount = Arc::clone(gateway.mounts().select(request.uri().path()).ok_or(GatewayError::NotFound)?);
    let admitted = match mount.config.profile {
        Profile::Static => return crate::static_files::serve(&mount, &request).await,
        Profile::Business => business(gateway, mount, &request, client)?,
        Profile::Streaming => streaming(gateway, mount, &request, client)?,
    };
    if admitted.decision.endpoint.kind == EndpointKind::WebSocket {
        return crate::websocket::relay(gateway, admitted, request).await;
    }
    dispatch(gateway, admitted, request).await
}

/// Business profile: authenticate → route → validate → rate limit.
fn business(
    gateway: &Gateway,
    mount: Arc<Mount>,
    request: &Request<Incoming>,
    client: SocketAddr,
) -> Result<Admitted, GatewayError> {
    let identity = gateway.authenticator(&mount).authenticate(request.headers())?;
    let decision = route(gateway, request)?;
    crate::auth::validate(&decision.endpoint, &identity, request)?;
    gateway.rate_limits().check_request(&mount, &identity, client)?;
    Ok(Admitted { mount, decision, identity, client })
}

/// Streaming profile: route only; its limits act on the connection and the body.
fn streaming(
    gateway: &Gateway,
    mount: Arc<Mount>,
    request: &Request<Incoming>,
    client: SocketAddr,
) -> Result<Admitted, GatewayError> {
    let decision = route(gateway, request)?;
    Ok(Admitted { mount, decision, identity: Identity::anonymous(), client })
}
