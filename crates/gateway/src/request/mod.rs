//! One client request's phases, in the order they run. This list is the one description
//! of the order; the code below reads in it.
//!
//! 0. **target** — transfer codings weir does not implement are refused (501) and the
//!    path is put in its normal form (dot segments, escapes), which every later phase
//!    sees ([`target`]); an HTTP/2 extended CONNECT for a WebSocket is read as the GET
//!    it stands for, and refused unless it reaches a WebSocket endpoint
//!    ([`crate::upstream::websocket`]);
//! 1. **mount** — the longest matching prefix picks the mount ([`mount`]) and its profile;
//! 2. the profile's phases:
//!    - **static** — *rate limit* (the mount's [`crate::limits::rate`]), then the file is
//!      served by [`crate::static_files`], paced by the connection's bandwidth shaper and
//!      cut at the download timeout; done;
//!    - **business** — *authenticate* ([`authenticate`]) → *route* ([`route`]) →
//!      *validate* ([`validate`]: claims, content type, declared body size) → *rate
//!      limit* → *register* (the registry of requests in flight,
//!      [`crate::limits::in_flight`], which can list and cancel it);
//!    - **streaming** — *route* → *rate limit*; its other limits (bandwidth, upload and
//!      download time) act on the connection and the body;
//!
//!    Every profile's rate limit counts every request, a WebSocket's opening request
//!    too, under the client's key (the authenticated subject, else the client address);
//!    every profile's bandwidth limit shapes the bodies both ways, per connection;
//! 3. **strip credentials** — an API key never reaches a service;
//! 4. **upstream** — the exchange with a service: [`crate::upstream::http`], or
//!    [`crate::upstream::websocket`] when the routed endpoint is a WebSocket.
//!
//! Each phase returns a typed [`GatewayError`], which [`crate::response::error`] maps to a
//! status code. The phases take the settings and state they use ([`Phases`]), not the
//! whole gateway.

pub(crate) mod authenticate;
pub(crate) mod forwarded;
pub(crate) mod mount;
mod route;
mod target;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use weir_proto::EndpointKind;
use weir_transport::Link;

use self::mount::{Mount, MountTable};
use crate::config::{AuthConfig, Profile};
use crate::limits::client_key;
use crate::limits::connection::ClientConn;
use crate::limits::in_flight::RequestRegistry;
use crate::observe::exchange::Exchange;
use crate::response::error::GatewayError;
use crate::response::GatewayBody;
use crate::routing::RoutingTable;
use crate::upstream::{self, Admitted, Upstream};

/// The settings and state the phases use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases<'g> {
    pub mounts: &'g MountTable,
    pub routing: &'g RoutingTable<Link>,
    /// The request header that asks for an exact service version.
    pub version_header: &'g str,
    pub registry: &'g Arc<RequestRegistry>,
    pub upstream: Upstream<'g>,
}

/// Runs every phase for one request.
pub(crate) async fn handle(
    phases: Phases<'_>,
    mut request: Request<Incoming>,
    conn: &Arc<ClientConn>,
    exchange: &Arc<Exchange>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let extended_connect = upstream::websocket::accept_extended_connect(&mut request)?;
    target::normalise(&mut request)?;
    let mount = phases.mounts.select(request.uri().path()).ok_or(GatewayError::NotFound)?;
    exchange.on_mount(&mount.label);
    let admitted = match mount.config.profile {
        Profile::Static if extended_connect => return Err(upstream::websocket::not_a_websocket()),
        Profile::Static => return serve_static(&phases, mount, &request, conn, exchange).await,
        Profile::Business => business(&phases, mount, &request, conn, exchange).await?,
        Profile::Streaming => streaming(&phases, mount, &request, conn, exchange).await?,
    };
    strip_api_key(&mount.config.auth, request.headers_mut());
    if admitted.decision.endpoint.kind == EndpointKind::WebSocket {
        return upstream::websocket::relay(phases.upstream, admitted, request).await;
    }
    if extended_connect {
        return Err(upstream::websocket::not_a_websocket());
    }
    upstream::http::dispatch(phases.upstream, admitted, request).await
}

/// Business profile: authenticate → route → validate → rate limit → register.
async fn business<'m, B>(
    phases: &Phases<'_>,
    mount: &'m Mount,
    request: &Request<B>,
    conn: &Arc<ClientConn>,
    exchange: &Arc<Exchange>,
) -> Result<Admitted<'m>, GatewayError> {
    let client = client_of(phases, request, conn);
    let identity = mount.authenticator.authenticate(request.headers())?;
    exchange.on_client(identity.subject.as_deref(), client);
    let decision = route::route(phases.routing, phases.version_header, request)?;
    exchange.on_route(&decision);
    validate::validate(&decision.endpoint, &identity, request)?;
    rate_limit(mount, identity.subject.as_deref(), client).await?;
    exchange.on_admitted();
    let path = request.uri().path();
    let traffic = Arc::clone(exchange.traffic());
    let registered = phases.registry.begin(request.method().as_str(), path, &decision.template, client, traffic);
    let identity_headers = identity.forwarded_headers();
    Ok(Admitted {
        registered: Some(registered),
        subject: identity.subject,
        identity_headers,
        shaper: conn.shaper(&mount.config),
        ..admitted(mount, decision, client, conn, exchange)
    })
}

/// Streaming profile: route → rate limit; its other limits act on the connection and
/// the body.
async fn streaming<'m, B>(
    phases: &Phases<'_>,
    mount: &'m Mount,
    request: &Request<B>,
    conn: &Arc<ClientConn>,
    exchange: &Arc<Exchange>,
) -> Result<Admitted<'m>, GatewayError> {
    let decision = route::route(phases.routing, phases.version_header, request)?;
    exchange.on_route(&decision);
    let client = client_of(phases, request, conn);
    exchange.on_client(None, client);
    rate_limit(mount, None, client).await?;
    exchange.on_admitted();
    Ok(Admitted { shaper: conn.shaper(&mount.config), ..admitted(mount, decision, client, conn, exchange) })
}

/// Static profile: rate limit → the file, paced by the connection's shaper.
async fn serve_static(
    phases: &Phases<'_>,
    mount: &Mount,
    request: &Request<Incoming>,
    conn: &Arc<ClientConn>,
    exchange: &Exchange,
) -> Result<Response<GatewayBody>, GatewayError> {
    let client = client_of(phases, request, conn);
    exchange.on_client(None, client);
    rate_limit(mount, None, client).await?;
    exchange.on_admitted();
    crate::static_files::serve(&mount.config, request, conn.shaper(&mount.config)).await
}

/// One more request of the caller (its `subject`, else its address) against the mount's
/// request rate: 429 with `Retry-After` over it (503 while a shared limit cannot be
/// checked, if the mount denies then).
async fn rate_limit(mount: &Mount, subject: Option<&str>, client: SocketAddr) -> Result<(), GatewayError> {
    match &mount.request_rate {
        Some(rate) => rate.check(client_key(subject, client)).await,
        None => Ok(()),
    }
}

/// The client the request speaks for: the peer, or the address a trusted proxy names
/// ([`forwarded`]); the port is the peer's.
fn client_of<B>(phases: &Phases<'_>, request: &Request<B>, conn: &ClientConn) -> SocketAddr {
    let trusted = &phases.upstream.server.trusted_proxies;
    SocketAddr::new(forwarded::client_address(request.headers(), conn.addr.ip(), trusted), conn.addr.port())
}

/// An anonymous, unregistered, unshaped request on `mount`: what every profile starts from.
fn admitted<'m>(
    mount: &'m Mount,
    decision: crate::routing::RoutingDecision<Link>,
    client: SocketAddr,
    conn: &Arc<ClientConn>,
    exchange: &Arc<Exchange>,
) -> Admitted<'m> {
    Admitted {
        mount: &mount.config.prefix,
        settings: &mount.config.settings,
        websockets: &mount.websockets,
        decision,
        subject: None,
        identity_headers: Vec::new(),
        client,
        shaper: None,
        registered: None,
        conn: Arc::clone(conn),
        exchange: Arc::clone(exchange),
    }
}

/// An API key proves who the caller is to the gateway; services get the identity
/// headers instead, never the key itself.
fn strip_api_key(auth: &AuthConfig, headers: &mut HeaderMap) {
    if matches!(auth, AuthConfig::ApiKeys(_)) {
        headers.remove(http::header::AUTHORIZATION);
        headers.remove(authenticate::API_KEY_HEADER);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::{ApiKey, GatewayConfig, MountConfig, MountSettings};
    use crate::limits::slots::KeyedLimiter;

    /// A gateway with `mounts` and no service registered.
    fn gateway(mounts: Vec<MountConfig>) -> Arc<crate::Gateway> {
        crate::Gateway::new(GatewayConfig { mounts, ..GatewayConfig::default() }).unwrap()
    }

    fn mount(prefix: &str, profile: Profile, auth: AuthConfig) -> MountConfig {
        MountConfig { prefix: prefix.into(), profile, root: None, auth, settings: MountSettings::declared_defaults() }
    }

    fn api_keys() -> AuthConfig {
        AuthConfig::ApiKeys(vec![ApiKey { key: "secret".into(), subject: "svc".into(), claims: vec![] }])
    }

    fn conn() -> Arc<ClientConn> {
        let addr: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let slot = KeyedLimiter::<IpAddr>::new(1).try_acquire(addr.ip()).unwrap();
        let connection = crate::limits::connections::ConnectionCap::new(1).admit().unwrap();
        Arc::new(ClientConn::new(addr, slot, connection))
    }

    fn exchange() -> Arc<Exchange> {
        Exchange::unlogged(&mut Request::get("/x").body(()).unwrap())
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[tokio::test]
    async fn business_mounts_authenticate_before_they_route() {
        let gateway = gateway(vec![mount("/api", Profile::Business, api_keys())]);
        let live = gateway.live();
        let phases = gateway.phases(&live);
        let api = phases.mounts.select("/api/x").unwrap();
        let anonymous = business(&phases, api, &request("/api/x", &[]), &conn(), &exchange()).await;
        assert!(matches!(anonymous, Err(GatewayError::Unauthorized(_))), "{anonymous:?}");
        let known = business(&phases, api, &request("/api/x", &[("x-api-key", "secret")]), &conn(), &exchange()).await;
        assert!(matches!(known, Err(GatewayError::NotFound)), "authenticated, then routed: {known:?}");
        assert!(gateway.registry().list().is_empty(), "nothing registered before routing succeeds");
    }

    #[tokio::test]
    async fn streaming_mounts_route_before_they_rate_limit() {
        let gateway = gateway(vec![mount("/stream", Profile::Streaming, AuthConfig::None)]);
        let live = gateway.live();
        let phases = gateway.phases(&live);
        let stream = phases.mounts.select("/stream/up").unwrap();
        let routed = streaming(&phases, stream, &request("/stream/up", &[]), &conn(), &exchange()).await;
        assert!(matches!(routed, Err(GatewayError::NotFound)), "{routed:?}");
    }

    #[tokio::test]
    async fn a_version_header_that_is_not_ascii_is_400() {
        let gateway = gateway(vec![]);
        let live = gateway.live();
        let phases = gateway.phases(&live);
        let root = phases.mounts.select("/x").unwrap();
        let mut bad = request("/x", &[]);
        bad.headers_mut().insert("x-weir-version", http::HeaderValue::from_bytes(b"\xff").unwrap());
        let refused = business(&phases, root, &bad, &conn(), &exchange()).await;
        assert!(matches!(refused, Err(GatewayError::BadRequest(_))), "{refused:?}");
    }

    #[test]
    fn api_keys_never_reach_services() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        headers.insert(authenticate::API_KEY_HEADER, "secret".parse().unwrap());
        let mut kept = headers.clone();
        strip_api_key(&AuthConfig::None, &mut kept);
        assert_eq!(kept.len(), 2, "a mount without API keys forwards Authorization as is");
        strip_api_key(&api_keys(), &mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }
}
