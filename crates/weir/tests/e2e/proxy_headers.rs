//! What a service is told about the hops before it, and who the gateway believes the
//! client is: hop-by-hop fields (and those `Connection` names) stay behind,
//! `X-Forwarded-For` is one field with the peer appended, `X-Forwarded-Proto` and
//! `-Host` are the gateway's unless a trusted proxy sent them, `Forwarded` gets this hop
//! when asked; behind `server.trusted_proxies` rate limits key on the forwarded address,
//! and from anyone else a forged `X-Forwarded-For` buys nothing. Over HTTP/1.1 and
//! HTTP/2, many clients at once.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile, Rate};
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

/// A service answering `GET /headers` with the request's fields as a JSON list of pairs.
fn header_echo() -> Service {
    let endpoint = Endpoint::get("/headers").raw(|ctx: RawRequestContext| async move {
        let pairs: Vec<(String, String)> = ctx
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        Ok::<_, HandlerError>(RawResponse::json(200, &pairs))
    });
    Service::builder("headers", "1.0.0").endpoint(endpoint).build().unwrap()
}

fn gateway(rate: Option<u32>, trusted: &[&str], forwarded_header: bool) -> GatewayConfig {
    let mut settings = MountSettings::declared_defaults();
    settings.rate_limit_requests = rate.map(|count| Rate { count, per: Duration::from_secs(60) });
    let mount =
        MountConfig { prefix: "/".into(), profile: Profile::Business, root: None, auth: AuthConfig::None, settings };
    let mut config = GatewayConfig { mounts: vec![mount], ..config() };
    config.server.trusted_proxies = trusted.iter().map(|net| net.parse().unwrap()).collect();
    config.server.forwarded_header = forwarded_header;
    config
}

async fn started(config: GatewayConfig) -> Harness {
    let mut h = Harness::start(config).await;
    h.attach(header_echo()).await;
    h
}

/// Every value of `name` the service saw.
fn seen<'p>(pairs: &'p [(String, String)], name: &str) -> Vec<&'p str> {
    pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

/// The fields the service received for `request`.
async fn fields(request: reqwest::RequestBuilder) -> Vec<(String, String)> {
    request.send().await.unwrap().json().await.unwrap()
}

fn clients() -> [reqwest::Client; 2] {
    [reqwest::Client::new(), reqwest::Client::builder().http2_prior_knowledge().build().unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_sees_one_forwarded_chain_and_no_hop_by_hop_fields() {
    let h = started(gateway(None, &[], false)).await;
    let host = h.addr.to_string();
    let requests = clients().into_iter().flat_map(|client| (0..16).map(move |_| client.clone())).map(|client| {
        let url = h.url("/headers");
        async move {
            let request = client
                .get(url)
                .header("x-forwarded-for", "198.51.100.1")
                .header("x-forwarded-proto", "gopher")
                .header("x-forwarded-host", "evil.test")
                .header("x-private", "secret")
                .header("forwarded", "for=198.51.100.1");
            fields(request).await
        }
    });
    for pairs in join_all(requests).await {
        assert_eq!(seen(&pairs, "x-forwarded-for"), ["198.51.100.1, 127.0.0.1"], "one field, the peer appended");
        assert_eq!(seen(&pairs, "x-forwarded-proto"), ["http"], "an untrusted peer's claim is replaced");
        assert_eq!(seen(&pairs, "x-forwarded-host"), [host.as_str()]);
        assert_eq!(seen(&pairs, "forwarded"), ["for=198.51.100.1"], "passed untouched when not enabled");
        assert_eq!(seen(&pairs, "x-private"), ["secret"]);
    }
    // Over HTTP/1.1 (HTTP/2 forbids connection-specific fields), `Connection` names fields
    // that end at this hop.
    let request = reqwest::Client::new()
        .get(h.url("/headers"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("upgrade", "h2c");
    let pairs = fields(request).await;
    for name in ["connection", "x-hop", "keep-alive", "upgrade"] {
        assert!(seen(&pairs, name).is_empty(), "{name} reached the service: {pairs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_gets_this_hop_appended_when_enabled() {
    let h = started(gateway(None, &[], true)).await;
    for client in clients() {
        let pairs = fields(client.get(h.url("/headers")).header("forwarded", "for=198.51.100.1")).await;
        let expected = format!("for=198.51.100.1, for=127.0.0.1;host=\"{}\";proto=http", h.addr);
        assert_eq!(seen(&pairs, "forwarded"), [expected.as_str()]);
    }
}

/// Sends `count` requests at once claiming to come from `from`; the statuses.
async fn burst(h: &Harness, from: &str, count: usize) -> Vec<StatusCode> {
    let [h1, h2] = clients();
    let requests = (0..count).map(|i| {
        let client = if i % 2 == 0 { h1.clone() } else { h2.clone() };
        let request = client.get(h.url("/headers")).header("x-forwarded-for", from);
        async move { request.send().await.unwrap().status() }
    });
    join_all(requests).await
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_rate_limits_key_on_the_forwarded_client() {
    let h = started(gateway(Some(8), &["127.0.0.0/8"], false)).await;
    let first = burst(&h, "198.51.100.1", 12).await;
    assert_eq!((count(&first, StatusCode::OK), count(&first, StatusCode::TOO_MANY_REQUESTS)), (8, 4), "{first:?}");
    // Another client behind the same proxy has its own allowance; a trusted hop after it
    // in the chain does not change who it is.
    let second = burst(&h, "198.51.100.2, 127.0.0.9", 8).await;
    assert_eq!(count(&second, StatusCode::OK), 8, "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_an_untrusted_peer_a_forged_chain_buys_nothing() {
    let h = started(gateway(Some(8), &["10.0.0.0/8"], false)).await;
    let first = burst(&h, "198.51.100.1", 8).await;
    assert_eq!(count(&first, StatusCode::OK), 8, "{first:?}");
    let forged = burst(&h, "198.51.100.2", 4).await;
    assert_eq!(count(&forged, StatusCode::TOO_MANY_REQUESTS), 4, "the peer is the client: {forged:?}");
}
