//! Service authentication and authorisation over the network transports: a wrong or
//! missing token is closed with Unauthorized, a path outside the service's prefixes is
//! refused with RegistrationRefused naming it (and so is a later EndpointsUpdate), an
//! mTLS identity stands in for a token; other services keep serving throughout. In-memory
//! services are trusted without a token.

use std::time::Duration;

use reqwest::StatusCode;
use weir_gateway::GatewayConfig;
use weir_proto::{EndpointDescriptor, EndpointsUpdate, ErrorCode, Hello, PROTOCOL_VERSION};
use weir_service::{Dialer, Endpoint, RawResponse, Service, ServiceError};
use weir_transport::{dial, HandshakeError, LinkConfig};

use crate::common::*;

over_network! {
    wrong_or_missing_token_is_closed_with_unauthorized,
    right_token_registers_within_the_prefixes_only,
    endpoints_update_outside_the_prefixes_is_refused,
}

/// Only `demo` (token `demo-token`, under `/api` and `/stream`) and `billing` (token
/// `billing-token`, under `/billing`) may register.
fn guarded() -> GatewayConfig {
    let cfg = with_credential(config(), "demo", Some("demo-token"), &["/api", "/stream"]);
    with_credential(cfg, "billing", Some("billing-token"), &["/billing"])
}

fn billing(token: &str, paths: &[&str]) -> Service {
    let mut builder = Service::builder("billing", "1.0.0").token(token);
    for path in paths {
        builder = builder.endpoint(Endpoint::get(path).raw(|_| async { Ok(RawResponse::text(200, "billed")) }));
    }
    builder.build().unwrap()
}

/// The demo, with its token, attached to `h`.
async fn demo_with_token(h: &mut Harness) {
    h.attach(weir::demo::builder().token("demo-token").build().unwrap()).await;
}

async fn assert_demo_still_serves(h: &Harness) {
    let response = h.client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Connects once as `service` and expects a refusal.
async fn refusal(h: &Harness, service: &Service) -> (ErrorCode, String) {
    match service.serve(h.dialer(service.name()).dial().await.unwrap()).await {
        Err(ServiceError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn wrong_or_missing_token_is_closed_with_unauthorized(transport: Transport) {
    let mut h = Harness::start_on(guarded(), transport).await;
    demo_with_token(&mut h).await;
    for token in ["n0t-it", "", "demo-token"] {
        let (code, message) = refusal(&h, &billing(token, &["/billing/x"])).await;
        assert_eq!(code, ErrorCode::Unauthorized, "token {token:?}");
        assert!(message.contains("billing"), "{message}");
        assert!(token.is_empty() || !message.contains(token), "the token leaked: {message}");
    }
    let stranger = Service::builder("stranger", "1.0.0").token("billing-token").build().unwrap();
    let (code, message) = refusal(&h, &stranger).await;
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(message.contains("no credentials"), "{message}");
    assert_demo_still_serves(&h).await;
    assert_eq!(h.gateway.service_connections(), 1);
}

async fn right_token_registers_within_the_prefixes_only(transport: Transport) {
    let mut h = Harness::start_on(guarded(), transport).await;
    demo_with_token(&mut h).await;
    for path in ["/billingx", "/api/billing", "/"] {
        let (code, message) = refusal(&h, &billing("billing-token", &["/billing/ok", path])).await;
        assert_eq!(code, ErrorCode::RegistrationRefused, "{path}");
        assert!(message.contains(&format!("`{path}`")), "{message}");
    }
    assert_eq!(h.client.get(h.url("/billing/ok")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    h.attach(billing("billing-token", &["/billing", "/billing/{id}"])).await;
    let response = h.client.get(h.url("/billing/7")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "billed");
    assert_demo_still_serves(&h).await;
}

fn hello(service: &str, token: &str, paths: &[&str]) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        service: service.into(),
        version: "1.0.0".into(),
        region: String::new(),
        instance_id: format!("{service}-raw"),
        initial_window: 65536,
        token: token.into(),
        endpoints: paths.iter().map(|p| EndpointDescriptor::new("GET", p)).collect(),
    }
}

async fn endpoints_update_outside_the_prefixes_is_refused(transport: Transport) {
    let h = Harness::start_on(guarded(), transport).await;
    let io = h.dial().await;
    let hello = hello("billing", "billing-token", &["/billing/a"]);
    let (link, _events, _) = dial(io, &hello, LinkConfig::default(), WAIT).await.unwrap();
    let update = |paths: &[&str]| EndpointsUpdate {
        endpoints: paths.iter().map(|p| EndpointDescriptor::new("GET", p)).collect(),
    };
    link.send_endpoints_update(&update(&["/billing/a", "/admin"])).unwrap();
    link.send_endpoints_update(&update(&["/billing/a", "/billing/b"])).unwrap();
    // Updates apply in order: once the second shows, the first has been refused.
    let gateway = h.gateway.clone();
    let has = move |template: &str| gateway.routing().snapshot().iter().any(|r| r.template == template);
    tokio::time::timeout(WAIT, async {
        while !has("/billing/b") {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the allowed update never applied");
    assert!(!has("/admin"));
    assert!(!link.is_closed(), "a refused update closes nothing: {:?}", link.close_reason());
}

#[tokio::test]
async fn embedded_services_need_no_token() {
    let mut h = Harness::start_on(guarded(), Transport::Memory).await;
    h.attach(weir::demo::service()).await;
    h.attach(billing("", &["/anything"])).await;
    assert_eq!(h.client.get(h.url("/anything")).send().await.unwrap().status(), StatusCode::OK);
    assert_demo_still_serves(&h).await;
}

/// Mutual TLS: `billing` may prove itself by certificate alone.
fn mtls_config() -> GatewayConfig {
    with_credential(config(), "billing", None, &["/billing"])
}

#[tokio::test]
async fn mtls_identity_stands_in_for_a_token() {
    let mut h = Harness::start_mtls(mtls_config()).await;
    // The harness presents a certificate naming the service.
    h.attach(billing("", &["/billing/{id}"])).await;
    let response = h.client.get(h.url("/billing/1")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "billed");
}

#[tokio::test]
async fn mtls_identity_of_another_service_is_refused() {
    let h = Harness::start_mtls(mtls_config()).await;
    let io = h.tls_dialer(Some("search")).dial().await.unwrap();
    match dial(io, &hello("billing", "", &["/billing/x"]), LinkConfig::default(), WAIT).await {
        Err(HandshakeError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::Unauthorized);
            assert!(message.contains("client certificate names `search`"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn mtls_without_a_client_certificate_fails_the_handshake() {
    let mut h = Harness::start_mtls(mtls_config()).await;
    h.attach(billing("", &["/billing/ok"])).await;
    // rustls reports the server's rejection on the first read, so the Hello exchange fails.
    let outcome = match h.tls_dialer(None).dial().await {
        Err(_) => None,
        Ok(io) => Some(dial(io, &hello("billing", "", &["/billing/x"]), LinkConfig::default(), WAIT).await),
    };
    assert!(matches!(outcome, None | Some(Err(HandshakeError::Closed | HandshakeError::Protocol(_)))), "{outcome:?}");
    assert_eq!(h.client.get(h.url("/billing/ok")).send().await.unwrap().status(), StatusCode::OK);
}
