//! The access log, read from the file the gateway writes: one line per finished request
//! and per WebSocket session, with the facts of each (the request id the client got, the
//! route template, bytes each way, the authenticated subject and never the key), under
//! many HTTP/1.1 and HTTP/2 clients at once; a log nobody reads drops lines and counts
//! them rather than holding a request; a reload reopens a rotated file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use weir_gateway::config::{AccessLogFormat, AccessLogTarget, ApiKey, AuthConfig, LogConfig};
use weir_gateway::GatewayConfig;

use crate::common::*;
use crate::observability::{scrape, value};

const KEY: &str = "alice-secret-key";

/// A directory of its own under the system's temporary one, removed at the end.
struct LogDir(PathBuf);

impl LogDir {
    fn new(name: &str) -> LogDir {
        let dir = std::env::temp_dir().join(format!("weir-access-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        LogDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo's mounts, `/api` behind an API key, logging to `path` in `format`.
fn logging(path: &Path, format: AccessLogFormat) -> GatewayConfig {
    let mut config = demo_mounts();
    let key = ApiKey { key: KEY.into(), subject: "alice".into(), claims: Vec::new() };
    config.mounts[0].auth = AuthConfig::ApiKeys(vec![key]);
    config.log = LogConfig { access: AccessLogTarget::File(path.to_owned()), format };
    config
}

/// The file's complete lines, once it has at least `n` of them (lines are written a
/// moment after their request ends; the file has no event to await).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut text = String::new();
    let ready = tokio::time::timeout(WAIT, async {
        loop {
            text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    ready.await.unwrap_or_else(|_| panic!("fewer than {n} lines in {}:\n{text}", path.display()));
    text.lines().map(str::to_owned).collect()
}

/// What a client saw of one request: its id, status and body length.
struct Seen {
    id: String,
    status: u16,
    sent: u64,
    received: u64,
}

async fn send(request: reqwest::RequestBuilder, sent: u64) -> Seen {
    let response = request.send().await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let status = response.status().as_u16();
    let received = response.bytes().await.unwrap().len() as u64;
    Seen { id, status, sent, received }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_and_session_writes_one_line_with_its_facts() {
    let dir = LogDir::new("facts");
    let path = dir.file("access.log");
    let h = Harness::with_demo(logging(&path, AccessLogFormat::Json)).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut tasks = Vec::new();
    for c in 0..16u64 {
        let client = if c % 2 == 0 { h.client.clone() } else { h2.clone() };
        let url = h.url("/api");
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; 500 + c as usize];
            let echo = client.post(format!("{url}/echo")).header("x-api-key", KEY).body(body);
            vec![
                ("/api/items/{id}", send(client.get(format!("{url}/items/{c}")).header("x-api-key", KEY), 0).await),
                ("/api/echo", send(echo.header("content-type", "text/plain"), 500 + c).await),
                ("", send(client.get(format!("{url}/no-such-{c}")).header("x-api-key", KEY), 0).await),
                ("", send(client.get(format!("{url}/items/{c}")), 0).await),
            ]
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/stream/echo", h.addr)).await.unwrap();
    for _ in 0..3 {
        ws.send(Message::text("y".repeat(100))).await.unwrap();
        assert!(ws.next().await.unwrap().unwrap().is_text());
    }
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}

    let text = lines(&path, seen.len() + 1).await;
    assert_eq!(text.len(), seen.len() + 1, "one line per request and session");
    assert!(!text.iter().any(|l| l.contains(KEY)), "a key never reaches the log");
    let by_id: HashMap<String, Value> = text
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (v["request_id"].as_str().unwrap().to_owned(), v))
        .collect();
    for (route, s) in &seen {
        let line = &by_id[&s.id];
        assert_eq!(line["status"], s.status, "{line}");
        assert_eq!(line["mount"], "/api", "{line}");
        assert_eq!(line["bytes_in"], s.sent, "{line}");
        assert_eq!(line["bytes_out"], s.received, "{line}");
        assert_eq!(line["client"].as_str().unwrap().split(':').next(), Some("127.0.0.1"), "{line}");
        assert!(line["ttfb_s"].as_f64().unwrap() <= line["duration_s"].as_f64().unwrap(), "{line}");
        assert_eq!(line["websocket"], false);
        match s.status {
            200 => {
                assert_eq!(line["route"], *route, "{line}");
                assert_eq!(
                    (&line["service"], &line["subject"], &line["reason"]),
                    (&"demo".into(), &"alice".into(), &Value::Null)
                );
                assert!(line["instance"].is_string(), "{line}");
            }
            404 => assert_eq!(
                (&line["route"], &line["reason"], &line["subject"]),
                (&Value::Null, &"not_found".into(), &"alice".into())
            ),
            401 => assert_eq!((&line["reason"], &line["subject"]), (&"unauthorized".into(), &Value::Null)),
            other => panic!("unexpected status {other}: {line}"),
        }
    }
    let session = text.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["websocket"] == true);
    let session = session.expect("the WebSocket session has its line");
    assert_eq!(
        (&session["status"], &session["route"], &session["mount"]),
        (&101.into(), &"/stream/echo".into(), &"/stream".into())
    );
    assert!(session["bytes_in"].as_u64().unwrap() >= 300 && session["bytes_out"].as_u64().unwrap() >= 300, "{session}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_nobody_reads_drops_lines_and_counts_them_but_never_holds_a_request() {
    let dir = LogDir::new("stalled");
    let fifo = dir.file("stalled.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // A reader that opens the pipe and never reads: once its buffer is full, every write
    // of the log's thread blocks.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::File::open(fifo).unwrap())
    };
    let mut config = logging(&fifo, AccessLogFormat::Json);
    config.mounts[0].auth = AuthConfig::None;
    let h = Harness::with_demo(config).await;
    let _held_open = reader.join().unwrap();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let (clients, each) = (32, 200);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = if c % 2 == 0 { h.client.clone() } else { h2.clone() };
        let url = h.url(&format!("/api/items/{c}"));
        tasks.push(tokio::spawn(async move {
            for _ in 0..each {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.bytes().await.unwrap();
            }
        }));
    }
    // Bounded well below what the requests would take if each waited for its line.
    tokio::time::timeout(WAIT * 4, async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
    .expect("requests finished although nobody reads the log");
    let dropped = r#"weir_access_log_dropped_lines_total"#;
    let text = scrape(&h).await;
    let lost = value(&text, dropped);
    // The pipe holds some lines and the queue some thousands; the rest are dropped.
    assert!(lost > 0.0 && lost < (clients * each) as f64, "{lost} dropped of {}:\n{text}", clients * each);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reopens_a_rotated_file_in_the_new_format() {
    let dir = LogDir::new("rotated");
    let path = dir.file("access.log");
    let h = Harness::with_demo(logging(&path, AccessLogFormat::Json)).await;
    let get = || h.client.get(h.url("/api/items/1")).header("x-api-key", KEY).send();
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    lines(&path, 1).await;
    let rotated = dir.file("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    h.gateway.reload(logging(&path, AccessLogFormat::Text)).unwrap();
    let response = get().await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.bytes().await.unwrap();
    let text = lines(&path, 1).await;
    assert_eq!(text.len(), 1, "{text:?}");
    let fields: Vec<&str> = text[0].split(' ').collect();
    assert_eq!(&fields[1..6], [fields[1], "\"GET", "/api/items/1", "HTTP/1.1\"", "200"], "{}", text[0]);
    assert!(fields.contains(&format!("id={id}").as_str()) && fields.contains(&"route=/api/items/{id}"), "{}", text[0]);
    assert!(fields.contains(&"subject=alice"), "{}", text[0]);
    assert_eq!(std::fs::read_to_string(&rotated).unwrap().lines().count(), 1, "the old file got no more lines");
}
