//! The static profile: files from a mount's `root` directory.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::mount::Mount;

/// Serves the file the request names under the mount's root.
pub async fn serve(_mount: &Mount, _request: &Request<Incoming>) -> Result<Response<GatewayBody>, GatewayError> {
    Err(GatewayError::NotFound)
}
