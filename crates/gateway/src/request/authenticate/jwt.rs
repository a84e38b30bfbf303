//! JWT bearer tokens (`Authorization: Bearer <jwt>`), verified with the `jsonwebtoken`
//! crate: HS256 with a shared secret, or RS256 with a PEM public key read once, when the
//! gateway starts.
//!
//! Rules, all failing with 401 and a short reason:
//! - the header's `alg` must be the mount's algorithm exactly (no `none`, and no HS256
//!   token checked with an RS256 public key as its secret);
//! - `exp` and `sub` are required; `exp` and, when present, `nbf` are checked with a
//!   leeway of [`LEEWAY`] for clock skew between issuer and gateway;
//! - `iss` and `aud` are required and must match when the mount configures them; without
//!   a configured audience, `aud` is not checked.
//!
//! The identity: subject = `sub` (a non-empty string); claims = every top-level string
//! claim, every string element of an array claim (`roles: ["admin", "ops"]` gives
//! `("roles", "admin")` and `("roles", "ops")`), and a conventional space-separated
//! `scope` string split into one `("scope", s)` per scope. Numbers, booleans and objects
//! are not claims.
//!
//! Invariants: neither the token nor the secret is logged or shown by `Debug`; an RS256
//! key that is unreadable, not an RSA public key or shorter than [`MIN_RSA_BITS`] stops
//! the gateway from starting instead of failing every request later.

use std::path::Path;
use std::time::Duration;

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use serde_json::{Map, Value};

use super::{bearer_token, unauthorized, AuthSetupError, Identity};
use crate::config::{JwtAlgorithm, JwtConfig};
use crate::response::error::GatewayError;

/// Clock skew tolerated on `exp` and `nbf`: a token is accepted up to 30 s after it
/// expired and from 30 s before it becomes valid.
pub(crate) const LEEWAY: Duration = Duration::from_secs(30);

/// The shortest RS256 modulus accepted (NIST's minimum for RSA signatures).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Below this many bytes an HS256 secret is weak (RFC 7518 §3.2); the gateway warns.
const MIN_HS256_SECRET: usize = 32;

/// A mount's token verifier: its key and its rules.
pub(super) struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// The verifier for `config`; RS256 reads and checks its key file now.
    pub(super) fn new(config: &JwtConfig) -> Result<Self, AuthSetupError> {
        // One backend is compiled in; installing it explicitly keeps verification working
        // even if feature unification ever enabled a second one. Already installed: fine.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let (algorithm, key) = match &config.algorithm {
            JwtAlgorithm::Hs256 { secret } => (Algorithm::HS256, hs256_key(secret)?),
            JwtAlgorithm::Rs256 { public_key_file } => (Algorithm::RS256, rs256_key(public_key_file)?),
        };
        Ok(JwtVerifier { key, validation: validation(algorithm, config) })
    }

    /// The identity of a valid bearer token, or 401.
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, GatewayError> {
        let token = bearer_token(headers)?.ok_or_else(|| unauthorized("a bearer token is required"))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| GatewayError::Unauthorized(reason(e.kind())))?;
        identity(&data.claims)
    }
}

/// The checks for `algorithm` and `config`'s issuer and audience.
fn validation(algorithm: Algorithm, config: &JwtConfig) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn hs256_key(secret: &str) -> Result<DecodingKey, AuthSetupError> {
    if secret.is_empty() {
        return Err(AuthSetupError::EmptySecret);
    }
    if secret.len() < MIN_HS256_SECRET {
        tracing::warn!(bytes = secret.len(), "the HS256 secret is shorter than 32 bytes: tokens can be forged");
    }
    Ok(DecodingKey::from_secret(secret.as_bytes()))
}

/// The RSA public key in the PEM file `path` (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC
/// KEY`), checked now so that a bad file stops the start.
fn rs256_key(path: &Path) -> Result<DecodingKey, AuthSetupError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|source| AuthSetupError::KeyFileUnreadable { path: path.to_owned(), source })?;
    let invalid = |reason: String| AuthSetupError::InvalidPublicKey { path: path.to_owned(), reason };
    if pem.contains("PRIVATE KEY-----") {
        return Err(invalid("it holds a private key; the gateway needs only the public key".into()));
    }
    let key = RsaPublicKey::from_public_key_pem(&pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(&pem))
        .map_err(|_| invalid("expected a PEM RSA public key (\"PUBLIC KEY\" or \"RSA PUBLIC KEY\")".into()))?;
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(invalid(format!("the key has {bits} bits; at least {MIN_RSA_BITS} are required")));
    }
    Ok(DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be()))
}

/// A short, secret-free reason for a refused token.
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".into(),
        ErrorKind::InvalidSignature => "bad token signature".into(),
        ErrorKind::InvalidIssuer => "wrong token issuer".into(),
        ErrorKind::InvalidAudience => "wrong token audience".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            "token algorithm not accepted".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the {claim:?} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed {claim:?} claim in token"),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "malformed token".into()
        }
        _ => "invalid token".into(),
    }
}

/// The identity a verified token's claims give (see the module docs).
fn identity(claims: &Map<String, Value>) -> Result<Identity, GatewayError> {
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err(unauthorized("the token's \"sub\" claim must be a non-empty string")),
    };
    Ok(Identity::authenticated(subject, claim_pairs(claims)))
}

/// Claims as (type, value) pairs, in the order of the decoded claim map.
pub(super) fn claim_pairs(claims: &Map<String, Value>) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, value) in claims {
        match value {
            Value::String(scopes) if name == "scope" => {
                pairs.extend(scopes.split_whitespace().map(|s| (name.clone(), s.to_owned())));
            }
            Value::String(s) => pairs.push((name.clone(), s.clone())),
            Value::Array(items) => {
                pairs.extend(items.iter().filter_map(Value::as_str).map(|s| (name.clone(), s.to_owned())));
            }
            _ => {}
        }
    }
    pairs
}

#[cfg(test)]
mod tests;
