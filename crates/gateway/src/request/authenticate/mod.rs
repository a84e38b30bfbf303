//! Authentication and validation for business mounts (issue 5, point 4).
//!
//! [`Authenticator`] turns a request's credentials into an [`Identity`]: anonymous on a
//! mount without authentication, else the subject and claims of a configured API key
//! ([`api_key`]) or of a verified JWT bearer token ([`jwt`]). Any failure is 401 with a
//! short reason and `WWW-Authenticate: Bearer`. [`validate`] then checks the routed
//! request against its endpoint descriptor before dispatch: required claims (401 for an
//! anonymous caller, 403 for an authenticated one lacking a claim), declared content
//! types (415) and the declared maximum body (413 before any body byte is read).
//!
//! Called by the pipeline's business phases; `Gateway::new` builds one authenticator per
//! mount and fails to start when one cannot be built (an unreadable RS256 key file).
//!
//! Invariants: credentials (API keys, tokens, secrets) never appear in logs, errors or
//! `Debug` output; an identity carries a subject exactly when the caller authenticated.

mod api_key;
mod jwt;

use std::path::PathBuf;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, Request};
use thiserror::Error;
use weir_proto::EndpointDescriptor;

use crate::response::error::GatewayError;
use crate::request::mount::AuthConfig;

pub use api_key::API_KEY_HEADER;
pub use jwt::{LEEWAY, MIN_RSA_BITS};

/// Who is calling: the authenticated subject and its claims, or nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The authenticated subject; `None` for an anonymous caller.
    pub subject: Option<String>,
    /// Claims as (type, value) pairs; a type may repeat (`roles` = `admin`, `ops`).
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// No credentials.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// An authenticated caller.
    pub fn authenticated(subject: String, claims: Vec<(String, String)>) -> Self {
        Identity { subject: Some(subject), claims }
    }

    /// Whether the caller authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.subject.is_some()
    }

    /// Whether the caller holds claim `claim_type`, with value `value` when given.
    pub fn holds(&self, claim_type: &str, value: Option<&str>) -> bool {
        self.claims.iter().any(|(t, v)| t == claim_type && value.is_none_or(|want| want == v))
    }
}

/// Why a mount's authentication could not be set up; the gateway does not start.
#[derive(Debug, Error)]
pub enum AuthSetupError {
    #[error("cannot read the RS256 public key file {}: {source}", path.display())]
    KeyFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a usable RS256 public key: {reason}", path.display())]
    InvalidPublicKey { path: PathBuf, reason: String },
    #[error("the HS256 secret is empty")]
    EmptySecret,
    #[error("the API key of subject {subject:?} is empty")]
    EmptyApiKey { subject: String },
}

/// A mount's authentication, ready to check requests.
#[derive(Debug)]
pub struct Authenticator {
    method: Method,
}

/// The configured method with its prepared keys. `Debug` shows no secret (see the
/// submodules' own `Debug`). One per mount, built once: the box costs nothing per request.
#[derive(Debug)]
enum Method {
    None,
    ApiKeys(api_key::ApiKeys),
    Jwt(Box<jwt::JwtVerifier>),
}

impl Authenticator {
    /// An authenticator for `config`; RS256 reads and checks its public key file here.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let method = match config {
            AuthConfig::None => Method::None,
            AuthConfig::ApiKeys(keys) => Method::ApiKeys(api_key::ApiKeys::new(keys)?),
            AuthConfig::Jwt(jwt) => Method::Jwt(Box::new(jwt::JwtVerifier::new(jwt)?)),
        };
        Ok(Authenticator { method })
    }

    /// The caller's identity, or 401.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, GatewayError> {
        match &self.method {
            Method::None => Ok(Identity::anonymous()),
            Method::ApiKeys(keys) => keys.authenticate(headers),
            Method::Jwt(verifier) => verifier.authenticate(headers),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header: `Ok(None)` without an
/// `Authorization` header or with another scheme; 401 when it is repeated, not text, or
/// the token is empty.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(unauthorized("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    match token.trim() {
        "" => Err(unauthorized("empty bearer token")),
        token => Ok(Some(token)),
    }
}

/// 401 with `detail`, which must never contain a credential.
fn unauthorized(detail: &str) -> GatewayError {
    GatewayError::Unauthorized(detail.to_owned())
}

/// Checks a routed request against its endpoint's declarations, before any body byte
/// is read: claims (401/403), content type (415), declared body length (413).
pub fn validate<B>(
    endpoint: &EndpointDescriptor,
    identity: &Identity,
    request: &Request<B>,
) -> Result<(), GatewayError> {
    check_claims(endpoint, identity)?;
    check_content_type(endpoint, request.headers())?;
    check_declared_length(endpoint, request.headers())
}

/// Every required claim must be held: 401 for an anonymous caller (authenticating may
/// help), 403 for an authenticated one (it will not).
fn check_claims(endpoint: &EndpointDescriptor, identity: &Identity) -> Result<(), GatewayError> {
    if endpoint.requiring_claims.is_empty() {
        return Ok(());
    }
    if !identity.is_authenticated() {
        return Err(unauthorized("this endpoint requires an authenticated caller"));
    }
    for required in &endpoint.requiring_claims {
        if !identity.holds(&required.claim_type, required.value.as_deref()) {
            let detail = match &required.value {
                Some(value) => format!("claim {:?} = {value:?} required", required.claim_type),
                None => format!("claim {:?} required", required.claim_type),
            };
            return Err(GatewayError::Forbidden(detail));
        }
    }
    Ok(())
}

/// With declared content types, a request with a body must have one of them (compared
/// without parameters, case-insensitively); a body without `Content-Type` is refused
/// too. A request without a body passes.
fn check_content_type(endpoint: &EndpointDescriptor, headers: &HeaderMap) -> Result<(), GatewayError> {
    if endpoint.content_types.is_empty() {
        return Ok(());
    }
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        if has_body(headers) {
            return Err(GatewayError::UnsupportedMediaType("a Content-Type is required".into()));
        }
        return Ok(());
    };
    let content_type = content_type.to_str().unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if endpoint.content_types.iter().any(|t| t.eq_ignore_ascii_case(essence)) {
        Ok(())
    } else {
        let accepted = endpoint.content_types.join(", ");
        Err(GatewayError::UnsupportedMediaType(format!("{essence:?} is not accepted here (accepted: {accepted})")))
    }
}

/// Whether the request announces a body: a non-zero `Content-Length` or any
/// `Transfer-Encoding`.
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers.get(CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
    headers.contains_key(TRANSFER_ENCODING) || length.is_some_and(|n| n != Some(0))
}

/// A declared `Content-Length` over the endpoint's `max_body_bytes` is 413 before the
/// body is read. An undeclared length is left to dispatch, which counts as it reads.
fn check_declared_length(endpoint: &EndpointDescriptor, headers: &HeaderMap) -> Result<(), GatewayError> {
    let (Some(max), Some(length)) = (endpoint.max_body_bytes, headers.get(CONTENT_LENGTH)) else { return Ok(()) };
    match length.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(n) if n > max => {
            Err(GatewayError::PayloadTooLarge(format!("this endpoint accepts at most {max} bytes, not {n}")))
        }
        Some(_) => Ok(()),
        None => Err(GatewayError::BadRequest("invalid Content-Length".into())),
    }
}

#[cfg(test)]
mod tests;
