//! Authentication and validation for business mounts.
//!
//! [`Authenticator`] turns a request's credentials into an [`Identity`] (anonymous when
//! the mount has no authentication). [`validate`] checks a routed request against its
//! endpoint descriptor before dispatch: required claims (403), declared content types
//! (415) and the declared maximum body (413).

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request};
use hyper::body::Incoming;
use weir_proto::EndpointDescriptor;

use crate::error::GatewayError;
use crate::mount::AuthConfig;

/// Who is calling: the authenticated subject and its claims, or nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub subject: Option<String>,
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// No credentials.
    pub fn anonymous() -> Self {
        Identity::default()
    }
}

/// A mount's authentication, ready to check requests.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
}

impl Authenticator {
    /// An authenticator for `config`.
    pub fn new(config: &AuthConfig) -> Self {
        Authenticator { config: config.clone() }
    }

    /// The caller's identity, or 401.
    pub fn authenticate(&self, _headers: &HeaderMap) -> Result<Identity, GatewayError> {
        match &self.config {
            AuthConfig::None => Ok(Identity::anonymous()),
            _ => Err(GatewayError::Unauthorized("this mount's authentication is not available".into())),
        }
    }
}

/// Checks a routed request against its endpoint's declarations.
pub fn validate(
    endpoint: &EndpointDescriptor,
    identity: &Identity,
    request: &Request<Incoming>,
) -> Result<(), GatewayError> {
    for required in &endpoint.requiring_claims {
        let held = identity
            .claims
            .iter()
            .any(|(t, v)| *t == required.claim_type && required.value.as_ref().is_none_or(|want| want == v));
        if !held {
            return Err(GatewayError::Forbidden(format!("claim {:?} required", required.claim_type)));
        }
    }
    if !endpoint.content_types.is_empty() {
        if let Some(content_type) = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !endpoint.content_types.iter().any(|t| t.eq_ignore_ascii_case(essence)) {
                return Err(GatewayError::UnsupportedMediaType(format!("{essence} is not accepted here")));
            }
        }
    }
    if let (Some(max), Some(length)) = (endpoint.max_body_bytes, request.headers().get(CONTENT_LENGTH)) {
        if length.to_str().ok().and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > max) {
            return Err(GatewayError::PayloadTooLarge(format!("this endpoint accepts at most {max} bytes")));
        }
    }
    Ok(())
}
