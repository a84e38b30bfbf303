//! The authenticate phase of business mounts.
//!
//! [`Authenticator`] turns a request's credentials into an [`Identity`]: anonymous on a
//! mount without authentication, else the subject and claims of a configured API key
//! ([`api_key`]) or of a verified JWT bearer token ([`jwt`]). Any failure is 401 with a
//! short reason and `WWW-Authenticate: Bearer`. Services learn the identity from the
//! headers of [`Identity::forwarded_headers`], never from the credentials.
//!
//! Each mount builds its authenticator once ([`crate::request::mount`]); the gateway fails
//! to start when one cannot be built (an unreadable RS256 key file).
//!
//! Invariants: credentials (API keys, tokens, secrets) never appear in logs, errors or
//! `Debug` output; an identity carries a subject exactly when the caller authenticated.

mod api_key;
mod jwt;

use std::path::PathBuf;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use thiserror::Error;
use weir_proto::Headers;

use crate::config::AuthConfig;
use crate::response::error::GatewayError;

pub(crate) use api_key::API_KEY_HEADER;

/// The authenticated subject, forwarded to the service (absent for anonymous callers).
const SUBJECT_HEADER: &str = "x-weir-subject";
/// The authenticated claims, forwarded to the service with the subject.
const CLAIMS_HEADER: &str = "x-weir-claims";

/// Who is calling: the authenticated subject and its claims, or nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The authenticated subject; `None` for an anonymous caller.
    pub subject: Option<String>,
    /// Claims as (type, value) pairs; a type may repeat (`roles` = `admin`, `ops`).
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// No credentials.
    pub(crate) fn anonymous() -> Self {
        Identity::default()
    }

    /// An authenticated caller.
    pub(crate) fn authenticated(subject: String, claims: Vec<(String, String)>) -> Self {
        Identity { subject: Some(subject), claims }
    }

    /// Whether the caller authenticated.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.subject.is_some()
    }

    /// The headers that state this identity to the service: the subject and the claims, as
    /// a JSON array of `{"type": .., "value": ..}` objects so that a type may repeat
    /// (`docs/protocol.md`, "Identity headers"). None for an anonymous caller.
    pub(crate) fn forwarded_headers(&self) -> Headers {
        let Some(subject) = &self.subject else { return Headers::new() };
        let claims: Vec<serde_json::Value> =
            self.claims.iter().map(|(t, v)| serde_json::json!({ "type": t, "value": v })).collect();
        vec![
            (SUBJECT_HEADER.to_owned(), Bytes::from(subject.clone())),
            (CLAIMS_HEADER.to_owned(), Bytes::from(serde_json::Value::Array(claims).to_string())),
        ]
    }

    /// Whether the caller holds claim `claim_type`, with value `value` when given.
    pub(crate) fn holds(&self, claim_type: &str, value: Option<&str>) -> bool {
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
pub(crate) struct Authenticator {
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
    pub(crate) fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let method = match config {
            AuthConfig::None => Method::None,
            AuthConfig::ApiKeys(keys) => Method::ApiKeys(api_key::ApiKeys::new(keys)?),
            AuthConfig::Jwt(jwt) => Method::Jwt(Box::new(jwt::JwtVerifier::new(jwt)?)),
        };
        Ok(Authenticator { method })
    }

    /// The caller's identity, or 401.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, GatewayError> {
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
pub(super) fn unauthorized(detail: &str) -> GatewayError {
    GatewayError::Unauthorized(detail.to_owned())
}

#[cfg(test)]
mod tests;
