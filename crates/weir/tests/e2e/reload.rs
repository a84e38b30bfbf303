//! Configuration reload (`Gateway::reload`, `POST /reload`, SIGHUP): a new rate limit in
//! force under 32 HTTP/1.1 and HTTP/2 clients without one failed request; a broken file
//! refused with its key and line while the old configuration keeps serving (and the
//! failure counted); a WebSocket open across a reload of its mount keeping its snapshot;
//! a service whose credential is removed finishing its request in flight, then
//! disconnected, while others stay; a new certificate for new handshakes only; and the
//! real binary reloading its file on SIGHUP.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile, Rate, ServerTlsConfig};
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, RawResponse, Service};

use crate::cli::Proc;
use crate::common::*;
use crate::https::Pems;

fn mount(prefix: &str, profile: Profile, change: impl FnOnce(&mut MountSettings)) -> MountConfig {
    let mut settings = MountSettings::declared_defaults();
    change(&mut settings);
    MountConfig { prefix: prefix.into(), profile, root: None, auth: AuthConfig::None, settings }
}

/// `/` as a business mount limited to `rate` requests per client.
fn rate_limited(rate: Option<Rate>) -> GatewayConfig {
    GatewayConfig { mounts: vec![mount("/", Profile::Business, |s| s.rate_limit_requests = rate)], ..config() }
}

/// What the hammering clients saw.
#[derive(Default)]
struct Tally {
    /// Set just before the reload begins: a 429 answered before it is a failure.
    reloading: AtomicBool,
    /// Set once the reload returned: requests sent after it count in `after_reload`.
    reloaded: AtomicBool,
    completed: AtomicU64,
    after_reload: AtomicU64,
    too_many: AtomicU64,
}

/// Requests `/api/hello` until `stop`, over HTTP/2 or HTTP/1.1; any answer but 200, or
/// a 429 answered before the reload began, fails.
async fn hammer(h2: bool, url: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let builder = reqwest::Client::builder();
    let client = if h2 { builder.http2_prior_knowledge() } else { builder.http1_only() }.build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let sent_after = tally.reloaded.load(Ordering::SeqCst);
        let response = client.get(&url).send().await.expect("no request fails across a reload");
        let status = response.status();
        response.bytes().await.expect("the body arrives whole");
        let reload_began = tally.reloading.load(Ordering::SeqCst);
        match status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS if reload_began => {
                tally.too_many.fetch_add(1, Ordering::Relaxed);
            }
            other => panic!("{other} (answered after the reload began: {reload_began})"),
        }
        if sent_after {
            tally.after_reload.fetch_add(1, Ordering::Relaxed);
        }
        tally.completed.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_rate_limit_applies_under_load_without_a_failed_request() {
    let h = Harness::with_demo(rate_limited(None)).await;
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let clients: Vec<_> = (0..32)
        .map(|i| tokio::spawn(hammer(i % 2 == 0, h.url("/api/hello"), Arc::clone(&tally), Arc::clone(&stop))))
        .collect();
    until(|| tally.completed.load(Ordering::Relaxed) >= 200).await;
    assert_eq!(tally.too_many.load(Ordering::Relaxed), 0);
    tally.reloading.store(true, Ordering::SeqCst);
    let report = h.gateway.reload(rate_limited(Some(Rate { count: 5, per: Duration::from_secs(60) }))).unwrap();
    assert!(report.restart_required.is_empty(), "{report:?}");
    tally.reloaded.store(true, Ordering::SeqCst);
    until(|| tally.too_many.load(Ordering::Relaxed) >= 32 && tally.after_reload.load(Ordering::Relaxed) >= 200).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(WAIT, client).await.expect("a client hangs").unwrap();
    }
    assert_eq!(h.gateway.metrics().config_reloads("ok"), 1);
    h.assert_budget_released().await;
}

/// A file the harness reloads from through `weir serve`'s own reader.
fn source_from(file: &Path) -> weir_gateway::ConfigSource {
    let file = file.to_owned();
    Box::new(move || weir::serve::read_config(&file))
}

const GOOD: &str = "[[mount]]\nprefix = \"/api\"\nprofile = \"business\"\nrate_limit_requests = \"1000/min\"\n";
const BROKEN: &str = "[[mount]]\nprefix = \"/api\"\nprofile = \"business\"\nrate_limit_requests = \"lots\"\n";

async fn post_reload(h: &Harness) -> (StatusCode, serde_json::Value) {
    let response = h.client.post(h.admin_url("/reload")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn metric(h: &Harness, line: &str) -> bool {
    let text = h.client.get(h.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing_and_the_answer_names_the_key() {
    let dir = Pems::new("reload-broken");
    let file = dir.write("weir.toml", GOOD);
    let mut h = Harness::start(weir::serve::read_config(&file).unwrap()).await;
    h.attach(weir::demo::service()).await;
    let (status, body) = post_reload(&h).await;
    assert_eq!(status, StatusCode::CONFLICT, "no source yet: {body}");
    assert!(body["error"].as_str().unwrap().contains("no configuration file"), "{body}");
    h.gateway.set_config_source(source_from(&file));
    assert_eq!(post_reload(&h).await.0, StatusCode::OK);
    dir.write("weir.toml", BROKEN);
    let (status, body) = post_reload(&h).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("line 4: ") && error.contains("rate_limit_requests"), "{error}");
    // Still the old configuration: the mount and its limit are served as before.
    assert_eq!(h.client.get(h.url("/api/hello")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.gateway.config().mounts[0].settings.rate_limit_requests.unwrap().count, 1000);
    assert!(metric(&h, "weir_config_reloads_total{result=\"failed\"} 1").await);
    assert!(metric(&h, "weir_config_reloads_total{result=\"ok\"} 1").await);
    let wrong_method = h.client.get(h.admin_url("/reload")).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_open_across_a_reload_of_its_mount_keeps_relaying() {
    let streaming = |size| GatewayConfig {
        mounts: vec![mount("/stream", Profile::Streaming, |s| s.ws_max_message_size = size)],
        ..config()
    };
    let h = Harness::with_demo(streaming(64 * 1024)).await;
    let url = format!("ws://{}/stream/echo", h.addr);
    let (mut before, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    before.send(Message::text("one")).await.unwrap();
    assert_eq!(before.next().await.unwrap().unwrap(), Message::text("one"));
    h.gateway.reload(streaming(1024)).unwrap();
    // The open session keeps the limit it began with; a new one gets the new limit.
    let large = "x".repeat(4096);
    before.send(Message::text(large.clone())).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, before.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text(large.clone()));
    let (mut after, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    after.send(Message::text(large)).await.unwrap();
    match tokio::time::timeout(WAIT, after.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    before.send(Message::text("still here")).await.unwrap();
    assert_eq!(before.next().await.unwrap().unwrap(), Message::text("still here"));
}

/// `billing`, whose `/billing/slow` reports its start on `started` and answers once
/// `release` is notified.
fn slow_billing(started: mpsc::UnboundedSender<()>, release: Arc<Notify>) -> Service {
    let slow = Endpoint::get("/billing/slow").raw(move |_| {
        let (started, release) = (started.clone(), Arc::clone(&release));
        async move {
            let _ = started.send(());
            release.notified().await;
            Ok(RawResponse::text(200, "billed"))
        }
    });
    Service::builder("billing", "1.0.0").token("billing-token").endpoint(slow).build().unwrap()
}

fn credentials(billing: bool) -> GatewayConfig {
    let cfg = with_credential(config(), "demo", Some("demo-token"), &["/api", "/stream"]);
    if billing {
        with_credential(cfg, "billing", Some("billing-token"), &["/billing"])
    } else {
        cfg
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_credential_disconnects_its_service_after_the_request_in_flight() {
    let mut h = Harness::start_on(credentials(true), Transport::Tcp).await;
    h.attach(weir::demo::builder().token("demo-token").build().unwrap()).await;
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    h.attach(slow_billing(started, Arc::clone(&release))).await;
    assert_eq!(h.gateway.service_connections(), 2);
    let in_flight = tokio::spawn(h.client.get(h.url("/billing/slow")).send());
    tokio::time::timeout(WAIT, started_rx.recv()).await.unwrap().unwrap();
    let report = h.gateway.reload(credentials(false)).unwrap();
    assert_eq!(report.services_disconnected.len(), 1, "{report:?}");
    assert!(report.services_disconnected[0].starts_with("billing"), "{report:?}");
    // Drained: no new request reaches it, the one in flight still does.
    let refused = h.client.get(h.url("/billing/slow")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.gateway.service_connections(), 2, "the link stays open while its request is in flight");
    release.notify_one();
    let answered = tokio::time::timeout(WAIT, in_flight).await.unwrap().unwrap().unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(answered.text().await.unwrap(), "billed");
    until(|| h.gateway.service_connections() == 1).await;
    assert_eq!(h.client.get(h.url("/api/hello")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_serves_new_handshakes_and_old_connections_go_on() {
    let dir = Pems::new("reload-tls");
    let pki = TestPki::new();
    let https = |cn: &str| {
        let (cert, key) = pki.issue(cn, &["localhost", "127.0.0.1"]);
        let tls = ServerTlsConfig::new(dir.write(&format!("{cn}.pem"), &cert), dir.write(&format!("{cn}.key"), &key));
        let mut config = config();
        config.server.tls = Some(tls);
        config
    };
    let h = Harness::with_demo(https("first")).await;
    let client = crate::https::client(&pki, &[b"h2"]);
    let old = crate::https::connect(h.addr, "localhost", Arc::clone(&client)).await.unwrap();
    assert_eq!(crate::https::presented(&old), "first");
    h.gateway.reload(https("second")).unwrap();
    let new = crate::https::connect(h.addr, "localhost", client).await.unwrap();
    assert_eq!(crate::https::presented(&new), "second");
    for stream in [old, new] {
        let answers = crate::https::get_all(stream, &["/api/hello"]).await;
        assert_eq!(answers[0].1, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_serve_reloads_its_file_on_sighup() {
    let dir = Pems::new("reload-sighup");
    let file = dir.write("weir.toml", "[server]\nread_timeout = \"30s\"\n");
    let file = file.to_str().unwrap();
    let mut gateway =
        Proc::spawn(&["serve", "--config", file, "--listen", "127.0.0.1:0", "--services-listen", "127.0.0.1:0"]);
    let http = gateway.line("weir listening on ").await;
    let hello = format!("{http}/api/hello");
    assert_eq!(reqwest::get(&hello).await.unwrap().status(), StatusCode::OK);
    let keyed = "[[mount]]\nprefix = \"/api\"\nprofile = \"business\"\n\n[mount.auth]\nkind = \"api_keys\"\n\n\
                 [[mount.auth.keys]]\nkey = \"k3y\"\nsubject = \"ops\"\n";
    dir.write("weir.toml", keyed);
    gateway.signal("-HUP");
    // The reload runs on its own task: wait for its effect, not for a fixed time.
    tokio::time::timeout(WAIT, async {
        while reqwest::get(&hello).await.unwrap().status() != StatusCode::UNAUTHORIZED {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the new mount never applied");
    let with_key = reqwest::Client::new().get(&hello).header("x-api-key", "k3y").send().await.unwrap();
    assert_eq!(with_key.status(), StatusCode::OK);
    assert!(gateway.terminate().await.success());
}
