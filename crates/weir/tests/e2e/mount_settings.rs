//! Mount settings that every profile they are accepted on enforces, crossed over real
//! sockets: `rate_limit_requests` on streaming mounts (WebSocket openings counted too)
//! and static mounts, `rate_limit_bandwidth` and `download_timeout` on static and
//! business mounts, a static mount refusing a key it has no use for (`weir
//! check-config`), `max_inflight_bytes`: slow uploads filling their mount's share of
//! the payload budget leave the rest to other mounts, many clients at once, and
//! `chunk_size` told to the service in the request head.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Error as WsError;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile, Rate};
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

const KIB: u64 = 1024;

fn mount(prefix: &str, profile: Profile, change: impl FnOnce(&mut MountSettings)) -> MountConfig {
    let mut settings = MountSettings::declared_defaults();
    change(&mut settings);
    MountConfig { prefix: prefix.into(), profile, root: None, auth: AuthConfig::None, settings }
}

fn three_per_minute(settings: &mut MountSettings) {
    settings.rate_limit_requests = Some(Rate { count: 3, per: Duration::from_secs(60) });
}

/// A 429 with a `Retry-After` of at least a second, as the error table renders it.
async fn assert_rate_limited(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "retry-after {retry}");
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "too_many_requests");
}

/// A directory under the system temp directory holding `name` of `len` bytes, removed
/// when dropped.
struct Root(PathBuf);

impl Root {
    fn with_file(name: &str, len: usize) -> Root {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-mount-settings-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), vec![7u8; len]).unwrap();
        Root(dir)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn static_mount(root: &Root, change: impl FnOnce(&mut MountSettings)) -> GatewayConfig {
    let mut files = mount("/files", Profile::Static, change);
    files.root = Some(root.0.clone());
    GatewayConfig { mounts: vec![files], ..config() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_requests_and_websocket_openings_count_against_the_rate_limit() {
    let cfg = GatewayConfig { mounts: vec![mount("/stream", Profile::Streaming, three_per_minute)], ..config() };
    let h = Harness::with_demo(cfg).await;
    for _ in 0..2 {
        let response = h.client.get(h.url("/stream/download?bytes=10")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let url = format!("ws://{}/stream/echo", h.addr);
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str())).await.unwrap().unwrap();
    drop(ws);
    assert_rate_limited(h.client.get(h.url("/stream/download?bytes=10")).send().await.unwrap()).await;
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str())).await.unwrap() {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key("retry-after"), "{response:?}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_requests_over_the_rate_limit_get_429() {
    let root = Root::with_file("a.txt", 10);
    let h = Harness::start(static_mount(&root, three_per_minute)).await;
    for _ in 0..3 {
        assert_eq!(h.client.get(h.url("/files/a.txt")).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_rate_limited(h.client.get(h.url("/files/a.txt")).send().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_download_is_shaped_to_the_mounts_bandwidth() {
    let root = Root::with_file("big.bin", 300 * 1024);
    let h = Harness::start(static_mount(&root, |s| {
        s.rate_limit_bandwidth = Some(100 * KIB);
        s.chunk_size = 16 * 1024;
    }))
    .await;
    let started = Instant::now();
    let body = h.client.get(h.url("/files/big.bin")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 300 * 1024);
    let took = started.elapsed();
    // 300 KiB at 100 KiB/s: 3 s, less the last chunk's own time and the shaper's burst.
    assert!(took >= Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_timeout_cuts_a_slow_static_download() {
    let root = Root::with_file("big.bin", 300 * 1024);
    let h = Harness::start(static_mount(&root, |s| {
        s.rate_limit_bandwidth = Some(100 * KIB);
        s.chunk_size = 16 * 1024;
        s.download_timeout = Duration::from_millis(500);
    }))
    .await;
    let started = Instant::now();
    let response = h.client.get(h.url("/files/big.bin")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(300 * 1024));
    assert!(response.bytes().await.is_err(), "the body was cut short of its length");
    assert!(started.elapsed() < Duration::from_secs(2), "cut at the timeout, not at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_download_is_shaped_to_the_mounts_bandwidth() {
    let shaped = mount("/stream", Profile::Business, |s| {
        s.rate_limit_bandwidth = Some(100 * KIB);
        s.rate_limit_requests = None;
    });
    let h = Harness::with_demo(GatewayConfig { mounts: vec![shaped], ..config() }).await;
    let started = Instant::now();
    let body = h.client.get(h.url("/stream/download?bytes=307200")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 300 * 1024);
    // The demo sends 64 KiB chunks: the last leaves at (300 - 44) KiB / 100 KiB/s.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2400), "took {took:?}");
}

#[tokio::test]
async fn check_config_refuses_a_key_a_static_mount_has_no_use_for() {
    let root = Root::with_file("a.txt", 1);
    let text = format!(
        "[[mount]]\nprefix = \"/api\"\nprofile = \"business\"\n\n[[mount]]\nprefix = \"/files\"\nprofile = \"static\"\nroot = {:?}\nws_max_message_size = \"1MiB\"\n",
        root.0.to_string_lossy()
    );
    let file = root.0.join("weir.toml");
    std::fs::write(&file, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check-config", &file.to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = "line 9: mount[1].ws_max_message_size: is not used by a static mount";
    assert!(stderr.contains(expected), "missing {expected:?} in {stderr}");
}

/// A streamed endpoint `/hold/upload` whose handler reads nothing until a permit of
/// `gate` is released: the bytes the gateway sent stay unacknowledged, held in its budget.
fn holding_uploads(gate: Arc<Semaphore>, started: mpsc::UnboundedSender<()>) -> Service {
    let endpoint = Endpoint::post("/hold/upload").streaming().raw(move |mut ctx: RawRequestContext| {
        let (gate, started) = (Arc::clone(&gate), started.clone());
        async move {
            let _ = started.send(());
            let _permit = gate.acquire().await;
            let mut bytes = 0;
            while let Some(chunk) = ctx.body.chunk().await.map_err(|e| HandlerError::bad_request(e.to_string()))? {
                bytes += chunk.len();
            }
            Ok::<_, HandlerError>(RawResponse::text(200, bytes.to_string()))
        }
    });
    Service::builder("holding", "1.0.0").endpoint(endpoint).build().unwrap()
}

/// A chunked body of `len` one-byte chunks: the gateway reserves it byte by byte, so the
/// uploads fill their windows and the share exactly.
fn byte_by_byte(len: usize) -> reqwest::Body {
    let bytes = (0..len).map(|_| Ok::<Bytes, std::io::Error>(Bytes::from_static(b"x")));
    reqwest::Body::wrap_stream(futures_util::stream::iter(bytes))
}

/// A 4 KiB window per upload, an 8 KiB budget for the gateway: two held uploads fill
/// it, unless their mount's 6 KiB share stops them first.
fn shared_budget(share: Option<u64>) -> GatewayConfig {
    let mut cfg = config();
    let payload = &mut cfg.limits.payload;
    payload.max_request_bytes_per_call = 4 * KIB;
    payload.max_request_bytes_per_connection = 1024 * KIB;
    payload.max_aggregate_inflight_bytes = 8 * KIB;
    payload.max_inflight_bytes_per_client = 1024 * KIB;
    cfg.limits.stream_window = 4 * 1024;
    cfg.server.read_timeout = Duration::from_secs(10);
    // The uploads are held on purpose: the budget is under test, not the data rate.
    cfg.server.data_rate_grace = Duration::from_secs(60);
    let hold = mount("/hold", Profile::Streaming, |s| s.max_inflight_bytes = share);
    let api = mount("/api", Profile::Business, |s| s.rate_limit_requests = None);
    GatewayConfig { mounts: vec![hold, api], ..cfg }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_filling_their_mounts_share_leave_room_for_other_mounts() {
    let mut h = Harness::with_demo(shared_budget(Some(6 * KIB))).await;
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    h.attach(holding_uploads(Arc::clone(&gate), started_tx)).await;
    let mut uploads = JoinSet::new();
    for _ in 0..2 {
        uploads.spawn(h.client.post(h.url("/hold/upload")).body(byte_by_byte(6 * 1024)).send());
        tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    }
    let budget = h.gateway.budget();
    until(|| budget.counters().per_mount_bytes.get("/hold") == Some(&(6 * KIB))).await;
    assert_eq!(budget.counters().aggregate_bytes, 6 * KIB, "the share, not the gateway's budget, stopped them");
    let mut business = JoinSet::new();
    for seed in 0..32u8 {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let request = client.post(h.url("/api/echo")).body(vec![seed; 4]);
        business.spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "a business request was refused");
            assert_eq!(response.bytes().await.unwrap(), vec![seed; 4]);
        });
    }
    while let Some(done) = business.join_next().await {
        done.unwrap();
    }
    gate.add_permits(2);
    while let Some(upload) = uploads.join_next().await {
        let response = upload.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "6144");
    }
    h.assert_budget_released().await;
}

/// `GET {prefix}/chunks`: says the chunk size its request head asked for, then streams
/// 64 KiB chunks, 128 KiB in all.
fn chunk_reporter(prefixes: &[&str]) -> Service {
    let mut service = Service::builder("chunks", "1.0.0");
    for prefix in prefixes {
        service =
            service.endpoint(Endpoint::get(&format!("{prefix}/chunks")).raw(|ctx: RawRequestContext| async move {
                let asked = Bytes::from(format!("{:?}\n", ctx.chunk_size));
                let chunks = [asked].into_iter().chain((0..2).map(|_| Bytes::from(vec![b'x'; 64 * 1024])));
                Ok(RawResponse::stream(
                    200,
                    "text/plain",
                    futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>)),
                ))
            }));
    }
    service.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_told_its_mounts_chunk_size() {
    let small = mount("/small", Profile::Streaming, |s| s.chunk_size = 4 * 1024);
    let default = mount("/default", Profile::Business, |_| {});
    let mut h = Harness::start(GatewayConfig { mounts: vec![small, default], ..config() }).await;
    h.attach(chunk_reporter(&["/small", "/default"])).await;
    for (path, asked) in [("/small/chunks", "Some(4096)"), ("/default/chunks", "Some(65536)")] {
        let body = h.client.get(h.url(path)).send().await.unwrap().text().await.unwrap();
        let (first, rest) = body.split_once('\n').unwrap();
        assert_eq!(first, asked, "{path}");
        assert_eq!(rest.len(), 128 * 1024, "{path}: the whole body, whatever its frames");
    }
}
