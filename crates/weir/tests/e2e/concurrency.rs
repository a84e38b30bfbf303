//! Many clients at once, on a runtime with several workers, on every transport: 64
//! HTTP/1.1 keep-alive clients and HTTP/2 clients with a dozen streams each, mixing GET,
//! buffered POST, streamed uploads and streamed downloads, plus WebSocket sessions.
//! Every response is checked byte for byte, the service's link must never close (a
//! protocol violation between two correct peers would close it and fail every request
//! on it), and every budget reservation must be released at the end.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

conformance! {
    sixty_four_http1_clients_at_once,
    http2_clients_with_many_streams_each,
    websocket_sessions_beside_http_traffic,
}

/// HTTP/1.1 keep-alive clients, each sending its requests one after another.
const H1_CLIENTS: usize = 64;
const H1_ROUNDS: usize = 6;
/// HTTP/2 clients (one connection each) and the streams each keeps open at once.
const H2_CLIENTS: usize = 6;
const H2_STREAMS: usize = 12;

/// The service connections serving the demo, by id: the same set before and after a
/// test means no link closed (a closed link re-registers under a new id).
fn service_links(h: &Harness) -> BTreeSet<u64> {
    let routes = h.gateway.routing().snapshot();
    routes.iter().flat_map(|route| route.instances.iter().map(|i| i.conn_id)).collect()
}

/// Waits for every task, failing on the first that panicked.
async fn join_all(mut tasks: JoinSet<()>) {
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// After the load: the same service links as before it, and nothing left reserved.
async fn assert_survived(h: &Harness, links: &BTreeSet<u64>) {
    assert_eq!(&service_links(h), links, "a service link closed under load");
    h.assert_budget_released().await;
}

/// A body of `len` bytes that differs per `seed`, so a response crossed with another
/// request's is caught.
fn payload(seed: usize, len: usize) -> Bytes {
    (0..len).map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(7919)) as u8).collect::<Vec<u8>>().into()
}

/// One request to the gateway at `base`, of a kind chosen by `seed`, checked in full.
async fn exchange(base: &str, client: &reqwest::Client, seed: usize) {
    let h_url = |path: &str| format!("{base}{path}");
    match seed % 5 {
        0 => {
            let response = client.get(h_url("/api/hello")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let json: serde_json::Value = response.json().await.unwrap();
            assert_eq!(json["message"], "hello from weir");
        }
        1 => {
            let response = client.get(h_url(&format!("/api/items/{seed}"))).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let json: serde_json::Value = response.json().await.unwrap();
            assert_eq!(json["id"], seed.to_string());
        }
        2 => {
            // Buffered: a known length under the per-call limit travels inline.
            let body = payload(seed, 1 + seed % 8192);
            let response = client.post(h_url("/api/echo")).body(body.clone()).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.bytes().await.unwrap(), body);
        }
        3 => {
            // Streamed: no length, so the body goes as stream data under credit.
            let body = payload(seed, 96 * 1024 + seed);
            let digest = hex::encode(Sha256::digest(&body));
            let chunks: Vec<Result<Bytes, std::io::Error>> = body.chunks(7000).map(|c| Ok(body.slice_ref(c))).collect();
            let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
            let response = client.post(h_url("/stream/upload")).body(stream).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let json: serde_json::Value = response.json().await.unwrap();
            assert_eq!(json["bytes"], body.len());
            assert_eq!(json["sha256"], digest);
        }
        _ => {
            let len = 100 * 1024 + seed;
            let response = client.get(h_url(&format!("/stream/download?bytes={len}"))).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.bytes().await.unwrap();
            assert_eq!(body.len(), len);
            assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8), "download bytes out of pattern");
        }
    }
}

async fn sixty_four_http1_clients_at_once(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let links = service_links(&h);
    let mut clients = JoinSet::new();
    for n in 0..H1_CLIENTS {
        let base = h.url("");
        clients.spawn(async move {
            // One keep-alive connection per client, reused for every request.
            let client = reqwest::Client::builder().http1_only().pool_max_idle_per_host(1).build().unwrap();
            for round in 0..H1_ROUNDS {
                exchange(&base, &client, n * H1_ROUNDS + round).await;
            }
        });
    }
    join_all(clients).await;
    assert_survived(&h, &links).await;
}

async fn http2_clients_with_many_streams_each(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let links = service_links(&h);
    let mut clients = JoinSet::new();
    for n in 0..H2_CLIENTS {
        let base = h.url("");
        clients.spawn(async move {
            // One connection; every stream below is multiplexed over it at once.
            let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
            let mut streams = JoinSet::new();
            for s in 0..H2_STREAMS {
                let (client, base) = (client.clone(), base.clone());
                streams.spawn(async move {
                    for round in 0..3 {
                        exchange(&base, &client, (n * H2_STREAMS + s) * 3 + round).await;
                    }
                });
            }
            join_all(streams).await;
        });
    }
    join_all(clients).await;
    assert_survived(&h, &links).await;
}

async fn websocket_sessions_beside_http_traffic(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let links = service_links(&h);
    let mut tasks = JoinSet::new();
    // Eight sessions: all from one address, under the per-user limit of ten.
    for n in 0..8 {
        let ws_url = format!("ws://{}/stream/echo", h.addr);
        tasks.spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
            for i in 0..40 {
                let text = format!("session {n} message {i}");
                ws.send(Message::text(text.clone())).await.unwrap();
                let echoed = ws.next().await.unwrap().unwrap();
                assert_eq!(echoed.into_text().unwrap().as_str(), text);
            }
            ws.close(None).await.unwrap();
        });
    }
    for n in 0..16 {
        let base = h.url("");
        tasks.spawn(async move {
            let client = reqwest::Client::builder().http1_only().build().unwrap();
            for round in 0..5 {
                exchange(&base, &client, n * 5 + round).await;
            }
        });
    }
    join_all(tasks).await;
    assert_survived(&h, &links).await;
}
