//! The route phase: the routing table turns (method, path, requested version) into a
//! [`RoutingDecision`] — endpoint, instance, effective timeout. The version is the one the
//! request's version header asks for, if any (see [`crate::routing`] for the rules).

use http::Request;
use weir_transport::Link;

use crate::response::error::GatewayError;
use crate::routing::{RoutingDecision, RoutingTable};

/// The routing decision for `request`; 400 when the version header is not ASCII.
pub(crate) fn route<B>(
    routing: &RoutingTable<Link>,
    version_header: &str,
    request: &Request<B>,
) -> Result<RoutingDecision<Link>, GatewayError> {
    let version = match request.headers().get(version_header) {
        None => None,
        Some(value) => {
            Some(value.to_str().map_err(|_| GatewayError::BadRequest("version header is not ASCII".into()))?)
        }
    };
    Ok(routing.route(request.method().as_str(), request.uri().path(), version)?)
}
