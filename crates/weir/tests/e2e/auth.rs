//! Business-profile authentication and validation over real HTTP: API-key and JWT
//! mounts (401 with `WWW-Authenticate` without or with bad credentials, 200 with good
//! ones and the identity forwarded as `x-weir-subject` / `x-weir-claims`), required
//! claims (401 anonymous, 403 missing, 200 held), client-sent identity headers never
//! reaching a service, undeclared content types (415) and bodies over the declared
//! maximum (413, the handler not invoked). Also: an RS256 mount with an unreadable key
//! file stops the gateway from starting.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use weir_gateway::config::{ApiKey, AuthConfig, JwtAlgorithm, JwtConfig, MountConfig, MountSettings, Profile};
use weir_gateway::GatewayStartError;
use weir_gateway::{Gateway, GatewayConfig};
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

const SECRET: &str = "an-e2e-secret-of-at-least-32-bytes";

fn business(prefix: &str, auth: AuthConfig) -> MountConfig {
    MountConfig {
        prefix: prefix.into(),
        profile: Profile::Business,
        root: None,
        auth,
        settings: MountSettings::declared_defaults(),
    }
}

fn key(key: &str, subject: &str, claims: &[(&str, &str)]) -> ApiKey {
    let claims = claims.iter().map(|(t, v)| (t.to_string(), v.to_string())).collect();
    ApiKey { key: key.into(), subject: subject.into(), claims }
}

fn gateway_key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/fixtures").join(name)
}

/// `/keys` (API keys: alice is an admin, bob is not), `/jwt` (HS256, issuer and
/// audience), `/rsa` (RS256 with the gateway's test key) and `/open` (no auth).
fn auth_config() -> GatewayConfig {
    let keys = AuthConfig::ApiKeys(vec![
        key("alice-key", "alice", &[("role", "admin"), ("role", "ops")]),
        key("bob-key", "bob", &[("role", "reader")]),
    ]);
    let jwt = |algorithm| JwtConfig { algorithm, issuer: Some("idp".into()), audience: Some("weir".into()) };
    let hs256 = AuthConfig::Jwt(jwt(JwtAlgorithm::Hs256 { secret: SECRET.into() }));
    let rs256 = AuthConfig::Jwt(jwt(JwtAlgorithm::Rs256 { public_key_file: gateway_key_file("rs256_public.pem") }));
    let mounts = vec![
        business("/keys", keys),
        business("/jwt", hs256),
        business("/rsa", rs256),
        business("/open", AuthConfig::None),
    ];
    GatewayConfig { mounts, ..config() }
}

/// Per mount prefix: `GET whoami` (echoes the identity and every `x-weir-*` header it
/// got), `GET admin` (requires role=admin) and `POST orders` (JSON only, at most 16
/// bytes). `calls` counts every handler invocation.
fn whoami_service(calls: Arc<AtomicUsize>) -> Service {
    let mut builder = Service::builder("whoami", "1.0.0");
    for prefix in ["/keys", "/jwt", "/rsa", "/open"] {
        let whoami = counted(&calls, |ctx| {
            let forwarded: Vec<_> = ctx
                .headers
                .iter()
                .filter(|(name, _)| name.starts_with("x-weir-"))
                .map(|(name, value)| json!([name, String::from_utf8_lossy(value)]))
                .collect();
            let claims: Vec<_> = ctx.claims().into_iter().map(|(t, v)| json!([t, v])).collect();
            let credentials = ctx.header("x-api-key").is_some() || ctx.header("authorization").is_some();
            RawResponse::json(
                200,
                &json!({ "subject": ctx.subject(), "claims": claims, "x-weir": forwarded, "saw_credentials": credentials }),
            )
        });
        let admin = counted(&calls, |_| RawResponse::text(200, "welcome"));
        let orders = counted(&calls, |_| RawResponse::text(200, "ordered"));
        builder = builder
            .endpoint(Endpoint::get(&format!("{prefix}/whoami")).raw(whoami))
            .endpoint(Endpoint::get(&format!("{prefix}/admin")).require_claim("role", Some("admin")).raw(admin))
            .endpoint(
                Endpoint::post(&format!("{prefix}/orders"))
                    .content_type("application/json")
                    .max_body_bytes(16)
                    .raw(orders),
            );
    }
    builder.build().unwrap()
}

/// A raw handler that counts its invocations and answers `respond(&ctx)`.
fn counted(
    calls: &Arc<AtomicUsize>,
    respond: fn(&RawRequestContext) -> RawResponse,
) -> impl Fn(RawRequestContext) -> std::future::Ready<Result<RawResponse, HandlerError>> + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move |ctx| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(respond(&ctx)))
    }
}

async fn harness() -> (Harness, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut h = Harness::start(auth_config()).await;
    h.attach(whoami_service(Arc::clone(&calls))).await;
    (h, calls)
}

/// Sends `request`, expects 401 with `WWW-Authenticate: Bearer`; returns the detail
/// ("authentication required: <reason>").
async fn unauthorized(request: RequestBuilder) -> String {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    body["detail"].as_str().unwrap().to_owned()
}

/// Sends `request`, expects 200 and returns the JSON body.
async fn ok_json(request: RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn hs256_token(claims: &Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn alice_claims(exp: i64) -> Value {
    json!({ "sub": "alice", "iss": "idp", "aud": "weir", "exp": exp, "roles": ["admin"], "scope": "read write" })
}

#[tokio::test]
async fn api_keys_401_without_or_with_a_wrong_key_and_forward_the_identity() {
    let (h, calls) = harness().await;
    let whoami = h.url("/keys/whoami");
    assert!(unauthorized(h.client.get(&whoami)).await.contains("API key"));
    assert!(unauthorized(h.client.get(&whoami).header("x-api-key", "mallory-key")).await.contains("unknown"));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a refused request reached the service");

    let alice = ok_json(h.client.get(&whoami).header("x-api-key", "alice-key")).await;
    assert_eq!(alice["subject"], "alice");
    assert_eq!(alice["claims"], json!([["role", "admin"], ["role", "ops"]]));
    let raw_claims = json!([{ "type": "role", "value": "admin" }, { "type": "role", "value": "ops" }]);
    let header = alice["x-weir"].as_array().unwrap().iter().find(|h| h[0] == "x-weir-claims").unwrap();
    assert_eq!(serde_json::from_str::<Value>(header[1].as_str().unwrap()).unwrap(), raw_claims);

    assert_eq!(alice["saw_credentials"], false, "the API key reached the service");
    let bob = ok_json(h.client.get(&whoami).bearer_auth("bob-key")).await;
    assert_eq!(bob["subject"], "bob");
    assert_eq!(bob["saw_credentials"], false, "the API key reached the service");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn jwt_401_for_missing_expired_or_forged_tokens_and_forwards_claims() {
    let (h, calls) = harness().await;
    let whoami = h.url("/jwt/whoami");
    assert!(unauthorized(h.client.get(&whoami)).await.contains("bearer token"));
    let expired = hs256_token(&alice_claims(now() - 3600), SECRET);
    assert!(unauthorized(h.client.get(&whoami).bearer_auth(expired)).await.ends_with("token expired"));
    let forged = hs256_token(&alice_claims(now() + 300), "not-the-secret-but-just-as-long!!");
    assert!(unauthorized(h.client.get(&whoami).bearer_auth(forged)).await.ends_with("bad token signature"));
    let mut wrong_issuer = alice_claims(now() + 300);
    wrong_issuer["iss"] = json!("evil");
    let wrong_issuer = hs256_token(&wrong_issuer, SECRET);
    assert!(unauthorized(h.client.get(&whoami).bearer_auth(wrong_issuer)).await.ends_with("wrong token issuer"));
    // An API key is no token here.
    assert!(!unauthorized(h.client.get(&whoami).bearer_auth("alice-key")).await.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let token = hs256_token(&alice_claims(now() + 300), SECRET);
    let alice = ok_json(h.client.get(&whoami).bearer_auth(token)).await;
    assert_eq!(alice["subject"], "alice");
    let claims = alice["claims"].as_array().unwrap();
    for expected in [json!(["roles", "admin"]), json!(["scope", "read"]), json!(["scope", "write"])] {
        assert!(claims.contains(&expected), "{expected} missing from {claims:?}");
    }
}

#[tokio::test]
async fn rs256_tokens_from_the_key_pair_pass() {
    let (h, _calls) = harness().await;
    let pem = std::fs::read(gateway_key_file("rs256_private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let token = encode(&Header::new(Algorithm::RS256), &alice_claims(now() + 300), &key).unwrap();
    let alice = ok_json(h.client.get(h.url("/rsa/whoami")).bearer_auth(&token)).await;
    assert_eq!(alice["subject"], "alice");
    let hs = hs256_token(&alice_claims(now() + 300), SECRET);
    let refused = unauthorized(h.client.get(h.url("/rsa/whoami")).bearer_auth(hs)).await;
    assert!(refused.ends_with("token algorithm not accepted"), "{refused}");
}

#[tokio::test]
async fn a_required_claim_is_401_anonymous_403_missing_and_200_held() {
    let (h, calls) = harness().await;
    let admin = h.url("/keys/admin");
    let anonymous = h.client.get(h.url("/open/admin")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let bob = h.client.get(&admin).header("x-api-key", "bob-key").send().await.unwrap();
    assert_eq!(bob.status(), StatusCode::FORBIDDEN);
    assert_eq!(bob.json::<Value>().await.unwrap()["error"], "forbidden");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler ran for a refused caller");
    let alice = h.client.get(&admin).header("x-api-key", "alice-key").send().await.unwrap();
    assert_eq!(alice.status(), StatusCode::OK);
    assert_eq!(alice.text().await.unwrap(), "welcome");
    let token = hs256_token(&alice_claims(now() + 300), SECRET);
    // On the JWT mount the claim is `roles`, not `role`: authenticated but missing.
    let jwt = h.client.get(h.url("/jwt/admin")).bearer_auth(token).send().await.unwrap();
    assert_eq!(jwt.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_service() {
    let (h, _calls) = harness().await;
    let forge = |request: RequestBuilder| {
        request
            .header("x-weir-subject", "root")
            .header("X-Weir-Claims", r#"[{"type":"role","value":"admin"}]"#)
            .header("x-weir-anything", "x")
    };
    let anonymous = ok_json(forge(h.client.get(h.url("/open/whoami")))).await;
    assert_eq!(anonymous["subject"], Value::Null);
    assert_eq!(anonymous["x-weir"], json!([]), "no identity header for an anonymous caller");
    let bob = ok_json(forge(h.client.get(h.url("/keys/whoami")).header("x-api-key", "bob-key"))).await;
    assert_eq!(bob["subject"], "bob");
    assert_eq!(bob["claims"], json!([["role", "reader"]]));
    assert_eq!(bob["x-weir"].as_array().unwrap().len(), 2, "{bob}");
    let forged_admin = h.client.get(h.url("/keys/admin")).header("x-api-key", "bob-key");
    assert_eq!(forge(forged_admin).send().await.unwrap().status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn undeclared_content_types_are_415_and_bodies_over_the_declared_maximum_413() {
    let (h, calls) = harness().await;
    let orders = h.url("/keys/orders");
    let post = || h.client.post(&orders).header("x-api-key", "alice-key");
    let text = post().header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(text.json::<Value>().await.unwrap()["error"], "unsupported_media_type");
    let untyped = post().body("{}").send().await.unwrap();
    assert_eq!(untyped.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let json_post = || post().header("content-type", "application/json");
    let known = json_post().body(vec![b' '; 1024]).send().await.unwrap();
    assert_eq!(known.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"[1,2,3,4,5,6,7,8]")));
    let chunked = json_post().body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).send().await;
    assert_eq!(chunked.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler ran for a refused body");

    let fits = json_post().body("[1,2,3]").send().await.unwrap();
    assert_eq!(fits.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    h.assert_budget_released().await;
}

#[test]
fn an_unreadable_rs256_key_file_stops_the_gateway_from_starting() {
    let algorithm = JwtAlgorithm::Rs256 { public_key_file: gateway_key_file("no-such-key.pem") };
    let auth = AuthConfig::Jwt(JwtConfig { algorithm, issuer: None, audience: None });
    let config = GatewayConfig { mounts: vec![business("/api", auth)], ..config() };
    match Gateway::new(config) {
        Err(err @ GatewayStartError::Auth { .. }) => {
            let message = err.to_string();
            assert!(message.contains("\"/api\"") && message.contains("no-such-key.pem"), "{message}");
        }
        Err(other) => panic!("the gateway failed for another reason: {other}"),
        Ok(_) => panic!("the gateway started without its key"),
    }
}
