//! Token verification: HS256 and RS256 (with the committed test keys in
//! `tests/fixtures`), every refusal reason, the leeway, and claims extraction.

use std::path::PathBuf;

use http::HeaderValue;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn hs256(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
    let algorithm = JwtAlgorithm::Hs256 { secret: SECRET.into() };
    JwtVerifier::new(&JwtConfig { algorithm, issuer: issuer.map(Into::into), audience: audience.map(Into::into) })
        .unwrap()
}

fn rs256() -> JwtVerifier {
    let algorithm = JwtAlgorithm::Rs256 { public_key_file: fixture("rs256_public.pem") };
    JwtVerifier::new(&JwtConfig { algorithm, issuer: None, audience: None }).unwrap()
}

fn sign_hs256(claims: &Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn sign_rs256(claims: &Value, private_key: &str) -> String {
    let pem = std::fs::read(fixture(private_key)).unwrap();
    encode(&Header::new(Algorithm::RS256), claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    headers
}

/// The 401 detail of `token` on `verifier`.
fn refused(verifier: &JwtVerifier, token: &str) -> String {
    match verifier.authenticate(&bearer(token)) {
        Err(GatewayError::Unauthorized(detail)) => detail,
        other => panic!("expected 401, got {other:?}"),
    }
}

fn alice(extra: Value) -> Value {
    let mut claims = json!({ "sub": "alice", "exp": now() + 300 });
    claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    claims
}

#[test]
fn a_valid_hs256_token_gives_subject_and_claims() {
    let token = sign_hs256(&alice(json!({ "iss": "idp", "aud": "weir", "roles": ["admin"] })), SECRET);
    let identity = hs256(Some("idp"), Some("weir")).authenticate(&bearer(&token)).unwrap();
    assert_eq!(identity.subject.as_deref(), Some("alice"));
    assert!(identity.holds("roles", Some("admin")));
    assert!(identity.holds("iss", Some("idp")));
}

#[test]
fn expiry_is_checked_with_the_documented_leeway() {
    let leeway = LEEWAY.as_secs() as i64;
    let expired = sign_hs256(&json!({ "sub": "alice", "exp": now() - leeway - 60 }), SECRET);
    assert_eq!(refused(&hs256(None, None), &expired), "token expired");
    let within_leeway = sign_hs256(&json!({ "sub": "alice", "exp": now() - leeway / 2 }), SECRET);
    assert!(hs256(None, None).authenticate(&bearer(&within_leeway)).is_ok());
}

#[test]
fn nbf_in_the_future_is_refused_beyond_the_leeway() {
    let leeway = LEEWAY.as_secs() as i64;
    let early = sign_hs256(&alice(json!({ "nbf": now() + leeway + 60 })), SECRET);
    assert_eq!(refused(&hs256(None, None), &early), "token not yet valid (nbf)");
    let nearly = sign_hs256(&alice(json!({ "nbf": now() + leeway / 2 })), SECRET);
    assert!(hs256(None, None).authenticate(&bearer(&nearly)).is_ok());
}

#[test]
fn a_token_signed_with_another_secret_or_tampered_is_refused() {
    let forged = sign_hs256(&alice(json!({})), "another-secret-of-at-least-32-bytes");
    assert_eq!(refused(&hs256(None, None), &forged), "bad token signature");
    let token = sign_hs256(&alice(json!({})), SECRET);
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let payload = base64_url(&alice(json!({ "sub": "mallory" })));
    assert_eq!(refused(&hs256(None, None), &format!("{head}.{payload}.{signature}")), "bad token signature");
}

#[test]
fn issuer_and_audience_must_match_and_be_present_when_configured() {
    let verifier = hs256(Some("idp"), Some("weir"));
    let wrong_iss = sign_hs256(&alice(json!({ "iss": "evil", "aud": "weir" })), SECRET);
    assert_eq!(refused(&verifier, &wrong_iss), "wrong token issuer");
    let wrong_aud = sign_hs256(&alice(json!({ "iss": "idp", "aud": "other" })), SECRET);
    assert_eq!(refused(&verifier, &wrong_aud), "wrong token audience");
    let no_iss = sign_hs256(&alice(json!({ "aud": "weir" })), SECRET);
    assert_eq!(refused(&verifier, &no_iss), "token lacks the \"iss\" claim");
    let no_aud = sign_hs256(&alice(json!({ "iss": "idp" })), SECRET);
    assert_eq!(refused(&verifier, &no_aud), "token lacks the \"aud\" claim");
    let any_aud = sign_hs256(&alice(json!({ "aud": "whoever" })), SECRET);
    assert!(hs256(None, None).authenticate(&bearer(&any_aud)).is_ok(), "aud unchecked when not configured");
}

#[test]
fn exp_and_a_string_sub_are_required() {
    let no_exp = sign_hs256(&json!({ "sub": "alice" }), SECRET);
    assert_eq!(refused(&hs256(None, None), &no_exp), "token lacks the \"exp\" claim");
    let no_sub = sign_hs256(&json!({ "exp": now() + 300 }), SECRET);
    assert_eq!(refused(&hs256(None, None), &no_sub), "token lacks the \"sub\" claim");
    let empty_sub = sign_hs256(&json!({ "sub": "", "exp": now() + 300 }), SECRET);
    assert!(refused(&hs256(None, None), &empty_sub).contains("\"sub\""));
}

#[test]
fn missing_or_malformed_tokens_are_refused() {
    assert_eq!(
        hs256(None, None).authenticate(&HeaderMap::new()),
        Err(GatewayError::Unauthorized("a bearer token is required".into()))
    );
    assert_eq!(refused(&hs256(None, None), "not-a-jwt"), "malformed token");
    let header = base64_url(&json!({ "alg": "none", "typ": "JWT" }));
    let unsigned = format!("{header}.{}.", base64_url(&alice(json!({}))));
    assert!(hs256(None, None).authenticate(&bearer(&unsigned)).is_err(), "alg none must never pass");
}

#[test]
fn rs256_accepts_its_key_pair_only() {
    let token = sign_rs256(&alice(json!({ "scope": "read write" })), "rs256_private.pem");
    let identity = rs256().authenticate(&bearer(&token)).unwrap();
    assert_eq!(identity.subject.as_deref(), Some("alice"));
    assert!(identity.holds("scope", Some("read")) && identity.holds("scope", Some("write")));
    let other = sign_rs256(&alice(json!({})), "rs256_other_private.pem");
    assert_eq!(refused(&rs256(), &other), "bad token signature");
}

#[test]
fn rs256_refuses_an_hs256_token_keyed_with_its_public_key() {
    let public_pem = std::fs::read_to_string(fixture("rs256_public.pem")).unwrap();
    let confused = sign_hs256(&alice(json!({})), &public_pem);
    assert_eq!(refused(&rs256(), &confused), "token algorithm not accepted");
}

#[test]
fn rs256_key_files_are_checked_at_start() {
    let start = |file: &str| {
        let algorithm = JwtAlgorithm::Rs256 { public_key_file: fixture(file) };
        JwtVerifier::new(&JwtConfig { algorithm, issuer: None, audience: None }).map(|_| ())
    };
    assert!(matches!(start("missing.pem"), Err(AuthSetupError::KeyFileUnreadable { .. })));
    for (file, reason) in [
        ("rs256_private.pem", "private key"),
        ("ec_public.pem", "RSA public key"),
        ("README.md", "RSA public key"),
        ("rs1024_public.pem", "1024 bits"),
    ] {
        match start(file) {
            Err(err @ AuthSetupError::InvalidPublicKey { .. }) => {
                let message = err.to_string();
                assert!(message.contains(reason) && message.contains(file), "{file}: {message}");
            }
            other => panic!("{file}: expected an invalid key, got {other:?}"),
        }
    }
    let secret = JwtConfig { algorithm: JwtAlgorithm::Hs256 { secret: String::new() }, issuer: None, audience: None };
    assert!(matches!(JwtVerifier::new(&secret), Err(AuthSetupError::EmptySecret)));
}

#[test]
fn claims_are_strings_array_strings_and_split_scopes() {
    let claims = json!({
        "sub": "alice",
        "exp": 1_900_000_000,
        "admin": true,
        "roles": ["admin", "ops", 7],
        "scope": "read  write",
        "address": { "city": "Paris" },
        "tenant": "acme",
    });
    let mut pairs = claim_pairs(claims.as_object().unwrap());
    pairs.sort();
    let expected: Vec<(String, String)> = [
        ("roles", "admin"),
        ("roles", "ops"),
        ("scope", "read"),
        ("scope", "write"),
        ("sub", "alice"),
        ("tenant", "acme"),
    ]
    .iter()
    .map(|(t, v)| (t.to_string(), v.to_string()))
    .collect();
    assert_eq!(pairs, expected);
}

#[test]
fn debug_shows_no_secret() {
    let debug = format!("{:?}", hs256(Some("idp"), None));
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("idp"));
}

/// `value` as JSON in base64url without padding, to hand-craft token parts.
fn base64_url(value: &Value) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in value.to_string().as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
