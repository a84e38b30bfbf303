//! The authenticator per configured method, the bearer-token parser and the identity
//! headers forwarded to services.

use super::*;
use crate::config::ApiKey;

fn admin() -> Identity {
    Identity::authenticated("alice".into(), vec![("role".into(), "admin".into()), ("role".into(), "ops".into())])
}

#[test]
fn no_authentication_means_anonymous() {
    let auth = Authenticator::new(&AuthConfig::None).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, "Bearer whatever".parse().unwrap());
    assert_eq!(auth.authenticate(&headers), Ok(Identity::anonymous()));
}

#[test]
fn api_key_mounts_authenticate_by_key() {
    let keys = vec![ApiKey { key: "secret-key".into(), subject: "svc".into(), claims: vec![] }];
    let auth = Authenticator::new(&AuthConfig::ApiKeys(keys)).unwrap();
    let mut headers = HeaderMap::new();
    assert!(matches!(auth.authenticate(&headers), Err(GatewayError::Unauthorized(_))));
    headers.insert("x-api-key", "secret-key".parse().unwrap());
    assert_eq!(auth.authenticate(&headers).unwrap().subject.as_deref(), Some("svc"));
    assert!(!format!("{auth:?}").contains("secret-key"));
}

#[test]
fn bearer_tokens_are_parsed_leniently_but_not_ambiguously() {
    let parse = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        bearer_token(&headers).map(|t| t.map(str::to_owned))
    };
    assert_eq!(parse("Bearer abc"), Ok(Some("abc".into())));
    assert_eq!(parse("BEARER   abc "), Ok(Some("abc".into())));
    assert_eq!(parse("Basic abc"), Ok(None));
    assert_eq!(parse("Bearer"), Err(unauthorized("empty bearer token")));
    assert_eq!(bearer_token(&HeaderMap::new()), Ok(None));
}

#[test]
fn services_get_the_subject_and_claims_of_authenticated_callers_only() {
    assert!(Identity::anonymous().forwarded_headers().is_empty());
    let headers = admin().forwarded_headers();
    assert_eq!(headers[0], (SUBJECT_HEADER.to_owned(), Bytes::from("alice")));
    let claims: serde_json::Value = serde_json::from_slice(&headers[1].1).unwrap();
    assert_eq!(headers[1].0, CLAIMS_HEADER);
    assert_eq!(claims, serde_json::json!([{"type": "role", "value": "admin"}, {"type": "role", "value": "ops"}]));
}
