//! Restarts that drop nothing: a second `weir serve` with the same configuration takes
//! the listening sockets of the running one over `server.handover_socket`, the services
//! move to it (GoAway), and the first drains and exits 0, while clients over HTTP/1.1
//! (keep-alive and a new connection per request) and HTTP/2 hammer it without a single
//! failed request. The HTTPS and redirect listeners are handed over too, and a
//! keep-alive client of the old process is answered while it drains. A successor whose
//! configuration is broken never contacts the running process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{scratch, write, Proc};
use crate::common::*;

/// Every answer the clients got.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// What went wrong, per failed request.
    failed: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` requests beyond those counted now have succeeded.
    async fn more_successes(&self, more: u64) {
        let target = self.ok() + more;
        until(|| self.ok() >= target).await;
    }
}

/// One client task: requests until told to stop, counting each answer.
async fn hammer(client: reqwest::Client, http: String, tally: Arc<Tally>, task: usize) {
    let mut n = 0u64;
    while !tally.stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("{task}-{n}");
        let outcome = match client.get(format!("{http}/api/items/{id}")).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                match response.json::<serde_json::Value>().await {
                    Ok(body) if body["id"] == id.as_str() => Ok(()),
                    Ok(body) => Err(format!("wrong body {body}")),
                    Err(err) => Err(format!("body: {err:?}")),
                }
            }
            Ok(response) => Err(format!("status {}", response.status())),
            Err(err) => Err(format!("{err:?}")),
        };
        match outcome {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => tally.failed.lock().unwrap().push(err),
        }
    }
}

/// 32 client tasks: 16 HTTP/1.1 keep-alive, 8 HTTP/1.1 with a new connection per
/// request, 8 HTTP/2.
fn start_clients(http: &str, tally: &Arc<Tally>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..32)
        .map(|task| {
            let builder = reqwest::Client::builder();
            let client = match task {
                0..16 => builder,
                16..24 => builder.pool_max_idle_per_host(0),
                _ => builder.http2_prior_knowledge(),
            };
            tokio::spawn(hammer(client.build().unwrap(), http.to_owned(), Arc::clone(tally), task))
        })
        .collect()
}

/// Hand-overs after the first, in the loaded test.
const FURTHER_HANDOVERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successor_takes_the_listeners_and_services_over_without_a_failed_request() {
    let dir = scratch("handover");
    let socket = dir.join("weir.sock");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         handover_socket = \"{}\"\nhandover_wait = \"5s\"\n\n[services]\nlisten = \"127.0.0.1:0\"\n",
        socket.display()
    );
    let config = write(&dir, "weir.toml", &config);

    let mut old = Proc::spawn(&["serve", "--no-demo", "--config", &config]);
    let http = old.line("weir listening on ").await;
    let admin = old.line("weir admin on ").await;
    let services = old.line("weir services on ").await;
    let mut demo = Proc::spawn(&["demo-service", "--connect", services.trim_start_matches("tcp://")]);
    assert_eq!(demo.line("weir demo-service registered with ").await, services);

    let ws_url = format!("{}/stream/echo", http.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("WebSocket opens");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    let tally = Arc::new(Tally::default());
    let clients = start_clients(&http, &tally);
    tally.more_successes(200).await;

    let mut new = Proc::spawn(&["serve", "--no-demo", "--config", &config]);
    let pid = new.pid().to_string();
    assert_eq!(old.line("weir hand-over requested by process ").await, pid);
    assert_eq!(new.line("weir listening on ").await, http, "the same socket");
    assert_eq!(new.line("weir admin on ").await, admin);
    assert_eq!(new.line("weir services on ").await, services);
    // The demo service dialled again (GoAway) and the new process waited for it.
    assert_eq!(demo.line("weir demo-service registered with ").await, services);
    new.line("weir took over from the running weir").await;
    old.line("weir handed over; draining").await;

    // The old process's WebSocket is told goodbye; the old process exits 0.
    let close = match ws.next().await.expect("a close frame").expect("a clean close") {
        Message::Close(frame) => frame.expect("a close code"),
        other => panic!("unexpected message {other:?}"),
    };
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1001, "Going away"));
    // Reading on sends tungstenite's queued reply; the gateway then closes the connection.
    let end = tokio::time::timeout(WAIT, ws.next()).await.expect("the gateway closes after the handshake");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    assert!(old.exited().await.success(), "the old process exits 0");
    tally.more_successes(300).await;

    // More hand-overs under the same load: each drain is another moment to lose a request.
    for _ in 0..FURTHER_HANDOVERS {
        let next = Proc::spawn(&["serve", "--no-demo", "--config", &config]);
        let pid = next.pid().to_string();
        let mut previous = std::mem::replace(&mut new, next);
        assert_eq!(previous.line("weir hand-over requested by process ").await, pid);
        assert_eq!(new.line("weir listening on ").await, http, "the same socket");
        assert_eq!(demo.line("weir demo-service registered with ").await, services);
        new.line("weir took over from the running weir").await;
        assert!(previous.exited().await.success());
        tally.more_successes(300).await;
    }

    // Requests go on succeeding with the old processes gone, and the service is here.
    tally.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failed = tally.failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        tally.ok() + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    eprintln!("{} requests across {} hand-overs, none failed", tally.ok(), 1 + FURTHER_HANDOVERS);
    let routes: serde_json::Value = reqwest::get(format!("{admin}/routes")).await.unwrap().json().await.unwrap();
    let demo_routes = routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == "demo" && !r["instances"].as_array().unwrap().is_empty());
    assert!(demo_routes.count() > 0, "the demo service is registered with the new process: {routes}");

    assert!(new.terminate().await.success());
    assert!(demo.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_gone_before_ready_leaves_the_old_process_serving_its_services() {
    let dir = scratch("handover-abandoned");
    let socket = dir.join("weir.sock");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhandover_socket = \"{}\"\n\n[services]\nlisten = \"127.0.0.1:0\"\n",
        socket.display()
    );
    let config = write(&dir, "weir.toml", &config);
    let mut old = Proc::spawn(&["serve", "--no-demo", "--config", &config]);
    let http = old.line("weir listening on ").await;
    let services = old.line("weir services on ").await;
    let mut demo = Proc::spawn(&["demo-service", "--connect", services.trim_start_matches("tcp://")]);
    assert_eq!(demo.line("weir demo-service registered with ").await, services);

    // A successor that asks, reads the offer (its sockets) and goes away.
    let mut successor = tokio::net::UnixStream::connect(&socket).await.expect("the old process listens");
    let request = br#"{"type":"request","pid":4242}"#;
    successor.write_all(&(request.len() as u32).to_be_bytes()).await.unwrap();
    successor.write_all(request).await.unwrap();
    let mut length = [0u8; 4];
    successor.read_exact(&mut length).await.unwrap();
    let mut offer = vec![0u8; u32::from_be_bytes(length) as usize];
    successor.read_exact(&mut offer).await.unwrap();
    let offer: serde_json::Value = serde_json::from_slice(&offer).unwrap();
    assert_eq!(offer["type"], "offer");
    assert_eq!(offer["services"], serde_json::json!(["demo"]));
    assert_eq!(old.line("weir hand-over requested by process ").await, "4242");
    drop(successor);

    // The demo service was told to dial again; the old process accepts it again.
    assert_eq!(demo.line("weir demo-service registered with ").await, services);
    let response = reqwest::get(format!("{http}/api/items/7")).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(old.terminate().await.success());
    assert!(demo.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_with_a_broken_configuration_never_contacts_the_running_process() {
    let dir = scratch("handover-broken");
    let socket = dir.join("weir.sock");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhandover_socket = \"{}\"\n\n[services]\nlisten = \"127.0.0.1:0\"\n",
        socket.display()
    );
    let config = write(&dir, "weir.toml", &config);
    let broken =
        write(&dir, "broken.toml", &format!("[server]\nhandover_socket = \"{}\"\nlistn = 1\n", socket.display()));
    let mut old = Proc::spawn(&["serve", "--config", &config]);
    let http = old.line("weir listening on ").await;

    let failed = Proc::spawn(&["serve", "--no-demo", "--config", &broken]);
    assert_eq!(failed.exited().await.code(), Some(1));

    // The running process was never asked: a good successor's request is the first.
    let mut new = Proc::spawn(&["serve", "--config", &config]);
    let pid = new.pid().to_string();
    assert_eq!(old.line("weir hand-over requested by process ").await, pid);
    assert_eq!(new.line("weir listening on ").await, http);
    assert!(old.exited().await.success());
    let response = reqwest::get(format!("{http}/api/items/7")).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(new.terminate().await.success());
}

/// The HTTPS and redirect listeners are handed over like the plain one, and an HTTPS
/// keep-alive connection to the old process that sends a request while it drains gets its
/// answer, with `Connection: close`, instead of a connection closed under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_redirect_listeners_are_handed_over_and_keep_alive_clients_are_answered() {
    use http_body_util::{BodyExt, Empty};

    let dir = scratch("handover-tls");
    let pki = TestPki::new();
    let pems = crate::https::Pems::new("handover");
    let (cert, key) = pki.issue("localhost", &["localhost", "127.0.0.1"]);
    let (cert, key) = (pems.write("cert.pem", &cert), pems.write("key.pem", &key));
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhttp_redirect_listen = \"127.0.0.1:0\"\nhandover_socket = \"{}\"\n\
         keep_alive_drain = \"20s\"\nshutdown_grace = \"30s\"\n\n[server.tls]\ncert = {cert:?}\nkey = {key:?}\n",
        dir.join("weir.sock").display()
    );
    let config = write(&dir, "weir.toml", &config);
    let mut old = Proc::spawn(&["serve", "--config", &config]);
    let https = old.line("weir listening on ").await;
    let redirect = old.line("weir redirecting on ").await;
    let addr: std::net::SocketAddr = https.trim_start_matches("https://").parse().unwrap();

    let stream = crate::https::connect(addr, "localhost", crate::https::client(&pki, &[b"http/1.1"])).await.unwrap();
    let (mut kept, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let get = |id: u32| {
        let request = http::Request::get(format!("/api/items/{id}")).header("host", "localhost");
        request.body(Empty::<bytes::Bytes>::new()).unwrap()
    };
    let first = kept.send_request(get(1)).await.unwrap();
    assert_eq!((first.status(), first.headers().get("connection")), (http::StatusCode::OK, None));
    first.into_body().collect().await.unwrap();
    // The old process's WebSocket hears of its drain (1001) when its connections do.
    let stream = crate::https::connect(addr, "localhost", crate::https::client(&pki, &[b"http/1.1"])).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/stream/echo", stream).await.unwrap();

    let mut new = Proc::spawn(&["serve", "--config", &config]);
    assert_eq!(new.line("weir listening on ").await, https, "the same HTTPS socket");
    assert_eq!(new.line("weir redirecting on ").await, redirect, "the same redirect socket");
    old.line("weir handed over; draining").await;
    let Some(Ok(Message::Close(Some(close)))) = ws.next().await else { panic!("the WebSocket is told goodbye") };
    assert_eq!(u16::from(close.code), 1001);
    // Reading on sends tungstenite's queued reply; the gateway then closes the connection.
    let end = tokio::time::timeout(WAIT, ws.next()).await.expect("the gateway closes after the handshake");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");

    // Idle when the drain began, the connection is still open a while later (the client's
    // think time, not a wait for an event): its request is answered.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let during = kept.send_request(get(2)).await.expect("answered, not closed under the request");
    assert_eq!(during.status(), http::StatusCode::OK);
    assert_eq!(during.headers()["connection"], "close");
    during.into_body().collect().await.unwrap();
    assert!(old.exited().await.success(), "the old process exits once its connection closed");

    for alpn in [&b"h2"[..], b"http/1.1"] {
        let stream = crate::https::connect(addr, "localhost", crate::https::client(&pki, &[alpn])).await.unwrap();
        let answers = crate::https::get_all(stream, &["/api/items/3"]).await;
        assert_eq!(answers[0].1, http::StatusCode::OK, "{alpn:?} to the new process");
    }
    let redirect: std::net::SocketAddr = redirect.trim_start_matches("http://").parse().unwrap();
    let answer =
        crate::https::exchange(redirect, "GET /a HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer:?}");
    assert!(new.terminate().await.success());
}
