//! WebSockets through the gateway: the gateway terminates the client's WebSocket and
//! relays its messages to the service as stream data.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::pipeline::Admitted;
use crate::server::Gateway;

/// Upgrades the request and relays messages both ways.
pub(crate) async fn relay(
    _gateway: &Gateway,
    _admitted: Admitted,
    _request: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    Err(GatewayError::BadRequest("WebSocket endpoints are not relayed yet".into()))
}
