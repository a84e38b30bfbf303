//! A client request's life at the gateway, as named phases (after pingora's phases):
//!
//! 1. **mount** — the longest matching prefix picks the mount and its profile;
//! 2. profile phases — **static**: serve a file, done. **business**: *authenticate* →
//!    *route* → *validate* (claims, content type, declared body size) → *rate limit* →
//!    *register* (the request registry, which can list and cancel it). **streaming**: *route* (connection and bandwidth
//!    limits act on the connection and body, see `dispatch`);
//! 3. **dispatch** — to a service over its link (`dispatch`), or the WebSocket relay.
//!
//! Each phase returns a typed [`GatewayError`] that `error` maps to a status code.

pub mod authenticate;
pub mod mount;

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::body::Incoming;
use weir_proto::EndpointKind;
use weir_transport::Link;

use crate::request::authenticate::Identity;
use crate::response::GatewayBody;
use crate::upstream::http::{dispatch, route};
use crate::response::error::GatewayError;
use crate::limits::slots::Permit;
use crate::request::mount::{AuthConfig, Mount, Profile};
use crate::limits::in_flight::Registered;
use crate::routing::RoutingDecision;
use crate::services::connection::Gateway;
use crate::limits::bandwidth::Shaper;

/// One client connection, as every request on it sees it.
#[derive(Debug)]
pub(crate) struct ClientConn {
    pub addr: SocketAddr,
    /// This connection's slot under `max_connections_per_ip`; an upgraded WebSocket keeps
    /// the connection (and so the slot) alive after hyper lets go of it.
    _ip_slot: Permit<IpAddr>,
    /// Bandwidth shapers of this connection, one per mount that limits bandwidth.
    shapers: Mutex<HashMap<String, Arc<Shaper>>>,
}

impl ClientConn {
    pub(crate) fn new(addr: SocketAddr, ip_slot: Permit<IpAddr>) -> Self {
        ClientConn { addr, _ip_slot: ip_slot, shapers: Mutex::new(HashMap::new()) }
    }

    /// The shaper this connection uses on `mount`, if the mount limits bandwidth.
    fn shaper(&self, mount: &Mount) -> Option<Arc<Shaper>> {
        let rate = mount.config.settings.rate_limit_bandwidth?;
        // A poisoned map of shapers is still a valid map.
        let mut shapers = self.shapers.lock().unwrap_or_else(|p| p.into_inner());
        Some(Arc::clone(shapers.entry(mount.config.prefix.clone()).or_insert_with(|| Arc::new(Shaper::new(rate)))))
    }
}

/// What the phases before dispatch established about a request.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub mount: Arc<Mount>,
    pub decision: RoutingDecision<Link>,
    pub identity: Identity,
    pub client: SocketAddr,
    /// Streaming mounts with a bandwidth limit: the connection's shaper.
    pub shaper: Option<Arc<Shaper>>,
    /// Business mounts: the request's entry in the request registry.
    pub registered: Option<Registered>,
    /// The client connection, kept by whatever outlives the request (a WebSocket).
    pub conn: Arc<ClientConn>,
}

/// Runs every phase for one request.
pub(crate) async fn handle(
    gateway: &Gateway,
    request: Request<Incoming>,
    conn: &Arc<ClientConn>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let mount = Arc::clone(gateway.mounts().select(request.uri().path()).ok_or(GatewayError::NotFound)?);
    let admitted = match mount.config.profile {
        Profile::Static => return crate::static_files::serve(&mount, &request).await,
        Profile::Business => business(gateway, mount, &request, conn)?,
        Profile::Streaming => streaming(gateway, mount, &request, conn)?,
    };
    let mut request = request;
    strip_api_key(&admitted.mount, request.headers_mut());
    if admitted.decision.endpoint.kind == EndpointKind::WebSocket {
        return crate::upstream::websocket::relay(gateway, admitted, request).await;
    }
    dispatch(gateway, admitted, request).await
}

/// An API key proves who the caller is to the gateway; services get the identity
/// headers instead, never the key itself.
fn strip_api_key(mount: &Mount, headers: &mut http::HeaderMap) {
    if matches!(mount.config.auth, AuthConfig::ApiKeys(_)) {
        headers.remove(http::header::AUTHORIZATION);
        headers.remove(crate::request::authenticate::API_KEY_HEADER);
    }
}

/// Business profile: authenticate → route → validate → rate limit.
fn business(
    gateway: &Gateway,
    mount: Arc<Mount>,
    request: &Request<Incoming>,
    conn: &Arc<ClientConn>,
) -> Result<Admitted, GatewayError> {
    let client = conn.addr;
    let identity = gateway.authenticator(&mount).authenticate(request.headers())?;
    let decision = route(gateway, request)?;
    crate::request::authenticate::validate(&decision.endpoint, &identity, request)?;
    gateway.rate_limits().check_request(&mount, &identity, client)?;
    let path = request.uri().path();
    let registered = gateway.registry().begin(request.method().as_str(), path, &decision.template, client);
    let conn = Arc::clone(conn);
    Ok(Admitted { mount, decision, identity, client, shaper: None, registered: Some(registered), conn })
}

/// Streaming profile: route only; its limits act on the connection and the body.
fn streaming(
    gateway: &Gateway,
    mount: Arc<Mount>,
    request: &Request<Incoming>,
    conn: &Arc<ClientConn>,
) -> Result<Admitted, GatewayError> {
    let decision = route(gateway, request)?;
    let shaper = conn.shaper(&mount);
    let (client, conn) = (conn.addr, Arc::clone(conn));
    Ok(Admitted { mount, decision, identity: Identity::anonymous(), client, shaper, registered: None, conn })
}
