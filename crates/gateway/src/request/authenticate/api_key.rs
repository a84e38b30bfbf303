//! API key authentication: `X-Api-Key: <key>` or `Authorization: Bearer <key>` against
//! the mount's configured keys; the identity is the matching key's subject and claims.
//!
//! Invariants: a presented key is compared with **every** configured key, each time in
//! constant time (`subtle`) on SHA-256 digests, so neither the position of a match nor
//! the length or a common prefix of a configured key shows in the timing. Only digests
//! are kept; no key is ever logged, echoed in an error or shown by `Debug`.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{bearer_token, unauthorized, AuthSetupError, Identity};
use crate::config::ApiKey;
use crate::response::error::GatewayError;

/// The header an API key may come in, besides `Authorization: Bearer`.
pub(crate) const API_KEY_HEADER: &str = "x-api-key";

/// A configured key, reduced to its digest, and whom it stands for.
struct Entry {
    digest: [u8; 32],
    subject: String,
    claims: Vec<(String, String)>,
}

/// The configured keys of one mount.
pub(super) struct ApiKeys {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("keys", &self.entries.len()).finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// The keys of `keys`; an empty key is refused (it would match an empty header).
    pub(super) fn new(keys: &[ApiKey]) -> Result<Self, AuthSetupError> {
        let entries = keys
            .iter()
            .map(|k| {
                if k.key.is_empty() {
                    return Err(AuthSetupError::EmptyApiKey { subject: k.subject.clone() });
                }
                Ok(Entry { digest: digest(&k.key), subject: k.subject.clone(), claims: k.claims.clone() })
            })
            .collect::<Result<_, _>>()?;
        Ok(ApiKeys { entries })
    }

    /// The identity of the presented key, or 401 (missing or unknown key).
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, GatewayError> {
        let presented = presented_key(headers)?.ok_or_else(|| unauthorized("an API key is required"))?;
        let entry = self.find(presented.as_bytes()).ok_or_else(|| unauthorized("unknown API key"))?;
        Ok(Identity::authenticated(entry.subject.clone(), entry.claims.clone()))
    }

    /// The first entry whose key is `presented`, after comparing with every entry.
    fn find(&self, presented: &[u8]) -> Option<&Entry> {
        let presented = digest_bytes(presented);
        let mut found = None;
        for entry in &self.entries {
            let equal: bool = entry.digest.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }
}

/// The key from `X-Api-Key`, else from `Authorization: Bearer`; 401 when a header is
/// repeated or malformed.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    let mut values = headers.get_all(API_KEY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(unauthorized("more than one X-Api-Key header")),
        (Some(value), None) => match value.to_str().map(str::trim) {
            Ok("") => Err(unauthorized("empty API key")),
            Ok(key) => Ok(Some(key)),
            Err(_) => Err(unauthorized("malformed X-Api-Key header")),
        },
        (None, _) => bearer_token(headers),
    }
}

fn digest(key: &str) -> [u8; 32] {
    digest_bytes(key.as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use http::header::AUTHORIZATION;
    use http::HeaderValue;

    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            ApiKey { key: "k-alice".into(), subject: "alice".into(), claims: vec![("role".into(), "admin".into())] },
            ApiKey { key: "k-bob".into(), subject: "bob".into(), claims: vec![] },
        ])
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn detail(result: Result<Identity, GatewayError>) -> String {
        match result {
            Err(GatewayError::Unauthorized(detail)) => detail,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn a_configured_key_gives_its_subject_and_claims() {
        let alice = keys().authenticate(&headers(&[("x-api-key", "k-alice")])).unwrap();
        assert_eq!(alice, Identity::authenticated("alice".into(), vec![("role".into(), "admin".into())]));
        let bob = keys().authenticate(&headers(&[("authorization", "Bearer k-bob")])).unwrap();
        assert_eq!(bob.subject.as_deref(), Some("bob"));
        let lower_scheme = keys().authenticate(&headers(&[("authorization", "bearer k-bob")])).unwrap();
        assert_eq!(lower_scheme.subject.as_deref(), Some("bob"));
    }

    #[test]
    fn a_missing_key_is_401() {
        assert_eq!(detail(keys().authenticate(&HeaderMap::new())), "an API key is required");
        let basic = headers(&[("authorization", "Basic YWxpY2U6cHc=")]);
        assert_eq!(detail(keys().authenticate(&basic)), "an API key is required");
    }

    #[test]
    fn a_wrong_key_is_401_and_never_echoed() {
        for wrong in ["k-alic", "k-alice2", "K-ALICE", "nope"] {
            let mut map = HeaderMap::new();
            map.insert(API_KEY_HEADER, HeaderValue::from_str(wrong).unwrap());
            let detail = detail(keys().authenticate(&map));
            assert_eq!(detail, "unknown API key");
            assert!(!detail.contains(wrong));
        }
        assert_eq!(detail(keys().authenticate(&headers(&[("authorization", "Bearer ")]))), "empty bearer token");
        assert_eq!(detail(keys().authenticate(&headers(&[("x-api-key", " ")]))), "empty API key");
    }

    #[test]
    fn repeated_credentials_are_refused() {
        let twice = headers(&[("x-api-key", "k-alice"), ("x-api-key", "k-bob")]);
        assert_eq!(detail(keys().authenticate(&twice)), "more than one X-Api-Key header");
        let mut twice = headers(&[("authorization", "Bearer k-alice")]);
        twice.append(AUTHORIZATION, HeaderValue::from_static("Bearer k-bob"));
        assert_eq!(detail(keys().authenticate(&twice)), "more than one Authorization header");
    }

    #[test]
    fn debug_shows_no_key_and_empty_keys_are_refused() {
        assert!(!format!("{:?}", keys()).contains("k-alice"));
        let empty = ApiKeys::new(&[ApiKey { key: String::new(), subject: "x".into(), claims: vec![] }]);
        assert!(matches!(empty, Err(AuthSetupError::EmptyApiKey { .. })));
    }
}
