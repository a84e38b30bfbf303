//! Several `weir serve` processes as one gateway (`[shared]`), against the machine's
//! Redis on 127.0.0.1:6379: one demo service registered with every replica (`run_all`);
//! a client spreading its requests over the replicas gets the mount's rate limit in
//! total, not per replica; a user's WebSocket cap counts its sessions on every replica;
//! a cancel sent to one replica's admin reaches the replica running the request; `/routes`
//! names the replicas each instance is registered with; and a
//! replica that loses Redis (a proxy in front of it cut) falls back within the command
//! timeout, says so in `/readyz` and `/metrics`, and shares again once Redis is back.
//!
//! Each test uses its own key prefix: the Redis is shared with other tests and is never
//! stopped or flushed here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weir_transport::tcp::TcpDialer;

use crate::cli::{scratch, write, Proc};
use crate::common::*;

/// The machine's Redis.
const REDIS: &str = "127.0.0.1:6379";

/// The mounts every replica serves: `/api` at `RATE` requests a minute per client,
/// `/stream` with at most two WebSockets per user.
const RATE: usize = 12;

/// One `weir serve` process and its addresses.
struct Replica {
    process: Proc,
    http: String,
    services: String,
    admin: String,
}

/// A config for replica `name` on Redis at `redis` under `prefix`.
fn config(name: &str, redis: &str, prefix: &str, on_failure: &str) -> String {
    format!(
        "[shared]\nredis = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\nreplica = \"{name}\"\n\
         command_timeout = \"100ms\"\non_failure = \"{on_failure}\"\n\n\
         [[mount]]\nprefix = \"/api\"\nprofile = \"business\"\nrate_limit_requests = {RATE}\n\n\
         [[mount]]\nprefix = \"/stream\"\nprofile = \"streaming\"\nws_max_connections_per_user = 2\n"
    )
}

/// Starts replica `name` with `config`.
async fn replica(dir: &std::path::Path, name: &str, config: &str) -> Replica {
    let path = write(dir, &format!("{name}.toml"), config);
    let args = [
        "serve",
        "--no-demo",
        "--config",
        &path,
        "--listen",
        "127.0.0.1:0",
        "--services-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let mut process = Proc::spawn(&args);
    let http = process.line("weir listening on ").await;
    let admin = process.line("weir admin on ").await;
    let services = process.line("weir services on tcp://").await;
    Replica { process, http, services, admin }
}

/// `count` replicas named `r0`, `r1`... sharing `prefix` through Redis at `redis`, with
/// the demo service registered with each.
async fn replicas(
    test: &str,
    count: usize,
    redis: &str,
    on_failure: &str,
) -> (Vec<Replica>, Vec<weir_service::RunHandle>) {
    let dir = scratch(test);
    let prefix = format!("weir-test-{}-{}", std::process::id(), rand::random::<u32>());
    let mut started = Vec::new();
    for i in 0..count {
        let name = format!("r{i}");
        started.push(replica(&dir, &name, &config(&name, redis, &prefix, on_failure)).await);
    }
    let dialers: Vec<_> = started.iter().map(|r| TcpDialer::new(r.services.clone())).collect();
    let running = weir::demo::service().run_all(dialers);
    for run in &running {
        assert!(tokio::time::timeout(WAIT, run.registered()).await.expect("registered"));
    }
    (started, running)
}

/// Statuses of `GET /api/items/1` sent `count` times, spread over `replicas` in turn,
/// all at once.
async fn spread(replicas: &[Replica], count: usize) -> Vec<StatusCode> {
    let client = reqwest::Client::new();
    let sent = (0..count).map(|i| {
        let url = format!("{}/api/items/1", replicas[i % replicas.len()].http);
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry >= 1, "Retry-After {retry}");
            }
            response.status()
        }
    });
    join_all(sent).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_spreading_over_three_replicas_gets_the_mounts_limit_in_total() {
    let (replicas, running) = replicas("shared-rate", 3, REDIS, "local").await;
    // One at a time, in turn: the limit holds exactly (a lease is one token at this rate).
    let mut statuses = Vec::new();
    for i in 0..RATE {
        statuses.extend(spread(&replicas[i % 3..i % 3 + 1], 1).await);
    }
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    // All at once, on every replica: every further request is refused, none admitted.
    let burst = spread(&replicas, 3 * RATE).await;
    let ok = burst.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = burst.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((ok, limited), (0, 3 * RATE), "{burst:?}");
    for replica in &replicas {
        let ready: serde_json::Value =
            reqwest::get(format!("{}/readyz", replica.admin)).await.unwrap().json().await.unwrap();
        assert_eq!(ready["shared_limits"], "shared", "{ready}");
    }
    for run in running {
        run.shutdown();
    }
    for replica in replicas {
        assert!(replica.process.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_on_two_replicas_never_get_more_than_the_limit() {
    let (replicas, running) = replicas("shared-burst", 2, REDIS, "local").await;
    let burst = spread(&replicas, 8 * RATE).await;
    let ok = burst.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = burst.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(ok + limited, burst.len(), "only 200 and 429: {burst:?}");
    assert_eq!(ok, RATE, "the burst gets the limit, once: {burst:?}");
    for run in running {
        run.shutdown();
    }
}

/// Opens a WebSocket to the demo's echo through `replica`: its handshake status.
async fn websocket(replica: &Replica) -> Result<impl Sized, StatusCode> {
    let url = format!("{}/stream/echo", replica.http.replace("http://", "ws://"));
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.expect("handshake") {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(err) => panic!("websocket failed: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_websocket_cap_counts_its_sessions_on_every_replica() {
    let (replicas, running) = replicas("shared-ws", 3, REDIS, "local").await;
    let first = websocket(&replicas[0]).await.expect("first session");
    let _second = websocket(&replicas[1]).await.expect("second session");
    let third = websocket(&replicas[2]).await.err();
    assert_eq!(third, Some(StatusCode::SERVICE_UNAVAILABLE), "a third session, on a third replica");
    drop(first);
    // The closed session's slot is given back asynchronously: wait for it.
    let deadline = Instant::now() + WAIT;
    loop {
        match websocket(&replicas[2]).await {
            Ok(_) => break,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the freed slot never came back: {status}"),
        }
    }
    for run in running {
        run.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_one_replica_reaches_the_replica_running_the_request() {
    let (replicas, running) = replicas("shared-cancel", 2, REDIS, "local").await;
    let slow = tokio::spawn(reqwest::get(format!("{}/api/slow?ms=4000", replicas[0].http)));
    let entry = loop {
        let list: serde_json::Value =
            reqwest::get(format!("{}/requests", replicas[0].admin)).await.unwrap().json().await.unwrap();
        if let Some(entry) = list.as_array().unwrap().first() {
            break entry.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(entry["replica"], "r0", "{entry}");
    let url = format!("{}/requests/r0/{}", replicas[1].admin, entry["id"]);
    let client = reqwest::Client::new();
    let sent = client.delete(&url).send().await.unwrap();
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let started = Instant::now();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(3), "cancelled, not finished: {:?}", started.elapsed());
    let unknown = client.delete(format!("{}/requests/nobody/1", replicas[1].admin)).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "no replica of that name listens");
    for run in running {
        run.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_name_the_replicas_each_instance_is_registered_with() {
    let (replicas, running) = replicas("shared-routes", 2, REDIS, "local").await;
    let deadline = Instant::now() + WAIT;
    let names = loop {
        let routes: serde_json::Value =
            reqwest::get(format!("{}/routes", replicas[1].admin)).await.unwrap().json().await.unwrap();
        let route = routes.as_array().unwrap().iter().find(|r| r["template"] == "/api/hello").cloned();
        let names = route.map(|r| r["instances"][0]["replicas"].clone()).unwrap_or_default();
        if names == serde_json::json!(["r0", "r1"]) || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(names, serde_json::json!(["r0", "r1"]), "the demo instance, registered with both");
    for run in running {
        run.shutdown();
    }
}

/// A TCP proxy to Redis that can be cut (every connection dropped, new ones closed at
/// once) and resumed: Redis gone, as a replica sees it, without stopping the Redis that
/// other tests use.
struct CuttableProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl CuttableProxy {
    async fn start(upstream: &'static str) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                if *cut_rx.borrow() {
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CuttableProxy { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// `/readyz` of `replica`: its status and body.
async fn readiness(replica: &Replica) -> (StatusCode, serde_json::Value) {
    let response = reqwest::get(format!("{}/readyz", replica.admin)).await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Waits until `replica`'s `/readyz` says `state` for its shared limits.
async fn until_shared_limits(replica: &Replica, state: &str) -> (StatusCode, serde_json::Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = readiness(replica).await;
        if body["shared_limits"] == state {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "shared_limits never became {state}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cuts Redis from a replica: requests are answered within the command timeout (as
/// `on_failure` says), `/readyz` and `/metrics` show it degraded, and once Redis is back
/// the replica shares its limits again.
async fn losing_redis(on_failure: &str, expected: StatusCode, ready_while_cut: StatusCode) {
    let proxy = CuttableProxy::start(REDIS).await;
    let redis = proxy.addr.to_string();
    let (replicas, running) = replicas(&format!("shared-cut-{on_failure}"), 1, &redis, on_failure).await;
    let r = &replicas[0];
    assert_eq!(spread(&replicas, 1).await, [StatusCode::OK]);
    proxy.set_cut(true);
    let hung = Arc::new(AtomicBool::new(false));
    for _ in 0..3 {
        let started = Instant::now();
        let statuses = spread(&replicas, 1).await;
        assert_eq!(statuses, [expected], "with on_failure = {on_failure}");
        // The command timeout is 100 ms; a request never waits on Redis for longer.
        if started.elapsed() > Duration::from_secs(1) {
            hung.store(true, Ordering::Relaxed);
        }
    }
    assert!(!hung.load(Ordering::Relaxed), "a request waited on the lost Redis");
    let (status, body) = until_shared_limits(r, "degraded").await;
    assert_eq!(status, ready_while_cut, "{body}");
    let metrics = reqwest::get(format!("{}/metrics", r.admin)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("weir_shared_degraded 1"), "{metrics}");
    assert!(metrics.contains("weir_shared_degraded_transitions_total 1"), "{metrics}");
    proxy.set_cut(false);
    let (status, _) = until_shared_limits(r, "shared").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spread(&replicas, 1).await, [StatusCode::OK], "shared again");
    for run in running {
        run.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_falls_back_to_local_limits_and_recovers() {
    losing_redis("local", StatusCode::OK, StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_with_deny_refuses_with_503_and_is_not_ready() {
    losing_redis("deny", StatusCode::SERVICE_UNAVAILABLE, StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_stops_serve_naming_the_key() {
    let dir = scratch("shared-unreachable");
    let path = write(&dir, "weir.toml", &config("r0", "127.0.0.1:1", "weir-test-none", "local"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--no-demo", "--config", &path, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("shared.redis"), "{stderr}");
}
