//! The authenticator per configured method, and [`validate`]: claims (401/403), content
//! types (415) and the declared body length (413).

use http::Method as HttpMethod;
use weir_proto::ClaimRequirement;

use super::*;
use crate::request::mount::ApiKey;

fn endpoint() -> EndpointDescriptor {
    EndpointDescriptor::new(HttpMethod::POST.as_str(), "/orders")
}

fn requiring(claims: &[(&str, Option<&str>)]) -> EndpointDescriptor {
    let mut endpoint = endpoint();
    endpoint.requiring_claims = claims
        .iter()
        .map(|(t, v)| ClaimRequirement { claim_type: t.to_string(), value: v.map(str::to_owned) })
        .collect();
    endpoint
}

fn request(headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::post("/orders");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

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
fn required_claims_are_401_for_anonymous_and_403_when_missing() {
    let endpoint = requiring(&[("role", Some("admin"))]);
    let anonymous = validate(&endpoint, &Identity::anonymous(), &request(&[]));
    assert!(matches!(anonymous, Err(GatewayError::Unauthorized(_))), "{anonymous:?}");
    let bob = Identity::authenticated("bob".into(), vec![("role".into(), "reader".into())]);
    let missing = validate(&endpoint, &bob, &request(&[]));
    assert!(matches!(missing, Err(GatewayError::Forbidden(ref d)) if d.contains("role")), "{missing:?}");
    assert_eq!(validate(&endpoint, &admin(), &request(&[])), Ok(()));
}

#[test]
fn every_required_claim_must_be_held_any_value_when_unspecified() {
    let both = requiring(&[("role", Some("ops")), ("role", None)]);
    assert_eq!(validate(&both, &admin(), &request(&[])), Ok(()));
    let also_tenant = requiring(&[("role", Some("admin")), ("tenant", None)]);
    assert!(matches!(validate(&also_tenant, &admin(), &request(&[])), Err(GatewayError::Forbidden(_))));
    assert_eq!(validate(&endpoint(), &Identity::anonymous(), &request(&[])), Ok(()), "no requirement");
}

#[test]
fn declared_content_types_are_enforced() {
    let mut json_only = endpoint();
    json_only.content_types = vec!["application/json".into()];
    let ok = request(&[("content-type", "Application/JSON; charset=utf-8"), ("content-length", "2")]);
    assert_eq!(validate(&json_only, &admin(), &ok), Ok(()));
    let wrong = request(&[("content-type", "text/plain"), ("content-length", "2")]);
    assert!(matches!(validate(&json_only, &admin(), &wrong), Err(GatewayError::UnsupportedMediaType(_))));
    let untyped_body = request(&[("content-length", "2")]);
    assert!(matches!(validate(&json_only, &admin(), &untyped_body), Err(GatewayError::UnsupportedMediaType(_))));
    let chunked = request(&[("transfer-encoding", "chunked")]);
    assert!(matches!(validate(&json_only, &admin(), &chunked), Err(GatewayError::UnsupportedMediaType(_))));
    assert_eq!(validate(&json_only, &admin(), &request(&[])), Ok(()), "no body, no type needed");
    assert_eq!(validate(&json_only, &admin(), &request(&[("content-length", "0")])), Ok(()));
    let any = request(&[("content-type", "text/plain"), ("content-length", "2")]);
    assert_eq!(validate(&endpoint(), &admin(), &any), Ok(()), "no declaration accepts any type");
}

#[test]
fn a_declared_length_over_the_maximum_is_413() {
    let mut small = endpoint();
    small.max_body_bytes = Some(10);
    assert_eq!(validate(&small, &admin(), &request(&[("content-length", "10")])), Ok(()));
    let over = validate(&small, &admin(), &request(&[("content-length", "11")]));
    assert!(matches!(over, Err(GatewayError::PayloadTooLarge(_))), "{over:?}");
    let bogus = validate(&small, &admin(), &request(&[("content-length", "ten")]));
    assert!(matches!(bogus, Err(GatewayError::BadRequest(_))), "{bogus:?}");
    assert_eq!(validate(&small, &admin(), &request(&[])), Ok(()), "unknown length: counted while read");
}
