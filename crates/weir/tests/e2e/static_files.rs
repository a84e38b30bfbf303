//! The static profile and the SDK's file responses over real HTTP:
//! every header (`Content-Length`, `Content-Type`, `Content-Disposition`,
//! `Last-Modified`, `ETag`, `Accept-Ranges`), HEAD, 304 by `If-None-Match` and by
//! `If-Modified-Since`, 206 for each single-range form with exact bytes, 416, paths that
//! try to leave the root (`..`, encoded dots and slashes, symlinks out) refused, a
//! FIFO in the root refused without blocking, a 20 MiB file streamed whole, an SDK service's `FileResponse` sending the media type it is given, and an SDK service's `file_for` answering ranges and
//! conditionals through the gateway.
//!
//! Each test builds its own tree under the system temp directory and removes it after.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile};
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, FileResponse, RawRequestContext, RawResponse, Service};

use crate::common::*;

/// A directory tree made for one test, removed when dropped:
/// `root/` (served) holds `hello.txt`, `sub/index.html`, `empty/`, a symlink inside
/// (`alias.txt` → `hello.txt`) and two out (`leak.txt` → `../outside/secret.txt`,
/// `escape` → `../outside`); `outside/secret.txt` must never be served.
struct Tree {
    base: PathBuf,
}

const HELLO: &[u8] = b"Hello, static world!\n0123456789abcdefghijklmnopqrstuvwxyz\n";
const SECRET: &str = "top secret: outside the root";

impl Tree {
    fn new() -> Tree {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("weir-static-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(root.join("hello.txt"), HELLO).unwrap();
        std::fs::write(root.join("sub/index.html"), "<h1>index</h1>").unwrap();
        std::fs::write(base.join("outside/secret.txt"), SECRET).unwrap();
        std::os::unix::fs::symlink("hello.txt", root.join("alias.txt")).unwrap();
        std::os::unix::fs::symlink("../outside/secret.txt", root.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("escape")).unwrap();
        Tree { base }
    }

    fn root(&self) -> PathBuf {
        self.base.join("root")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn static_config(root: &Path, settings: MountSettings) -> GatewayConfig {
    let mount = MountConfig {
        prefix: "/files".into(),
        profile: Profile::Static,
        root: Some(root.to_path_buf()),
        auth: AuthConfig::None,
        settings,
    };
    GatewayConfig { mounts: vec![mount], ..config() }
}

async fn serve(tree: &Tree) -> Harness {
    Harness::start(static_config(&tree.root(), MountSettings::declared_defaults())).await
}

/// One request over a fresh connection with `path` exactly as written (reqwest would
/// normalise `..` and `%2e%2e` away); returns the status and the whole answer.
async fn raw(h: &Harness, method: &str, path: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await.expect("answered in time").unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

#[tokio::test]
async fn a_file_is_served_with_every_header() {
    let tree = Tree::new();
    let h = serve(&tree).await;
    let response = h.client.get(h.url("/files/hello.txt")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-length"), HELLO.len().to_string());
    assert_eq!(header(&response, "content-type"), "text/plain");
    assert_eq!(header(&response, "content-disposition"), "inline; filename=\"hello.txt\"");
    assert_eq!(header(&response, "accept-ranges"), "bytes");
    let etag = header(&response, "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "{etag}");
    let modified = std::fs::metadata(tree.root().join("hello.txt")).unwrap().modified().unwrap();
    let last_modified = httpdate_of(header(&response, "last-modified"));
    let skew = modified.duration_since(last_modified).unwrap();
    assert!(skew < std::time::Duration::from_secs(1), "Last-Modified is the mtime in whole seconds");
    assert_eq!(response.bytes().await.unwrap(), HELLO);
}

fn httpdate_of(value: &str) -> std::time::SystemTime {
    // The gateway's dates are IMF-fixdate: parse them by hand, not with the code under test.
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let parts: Vec<&str> = value.split([' ', ':']).collect();
    assert_eq!(parts.len(), 8, "{value}");
    assert_eq!(parts[7], "GMT");
    let (day, year): (i64, i64) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
    let month = months.iter().position(|m| *m == parts[2]).unwrap() as i64 + 1;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let (h, m, s): (i64, i64, i64) = (parts[4].parse().unwrap(), parts[5].parse().unwrap(), parts[6].parse().unwrap());
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let tree = Tree::new();
    let h = serve(&tree).await;
    let (status, answer) = raw(&h, "HEAD", "/files/hello.txt").await;
    assert_eq!(status, 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("content-length: {}", HELLO.len())), "{head}");
    assert!(head.contains("etag: \""), "{head}");
    assert!(head.contains("last-modified: "), "{head}");
    assert_eq!(body, "");
}

#[tokio::test]
async fn current_copies_get_304_by_tag_and_by_date() {
    let tree = Tree::new();
    let h = serve(&tree).await;
    let first = h.client.get(h.url("/files/hello.txt")).send().await.unwrap();
    let etag = header(&first, "etag").to_owned();
    let date = header(&first, "last-modified").to_owned();
    let weak_in_list = format!("\"nope\", W/{etag}");
    for (name, value) in [("if-none-match", etag.as_str()), ("if-none-match", &weak_in_list), ("if-none-match", "*")] {
        let response = h.client.get(h.url("/files/hello.txt")).header(name, value).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{name}: {value}");
        assert_eq!(header(&response, "etag"), etag);
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let by_date = h.client.get(h.url("/files/hello.txt")).header("if-modified-since", &date).send().await.unwrap();
    assert_eq!(by_date.status(), StatusCode::NOT_MODIFIED);
    assert!(by_date.bytes().await.unwrap().is_empty());
    // A stale tag wins over a current date: If-Modified-Since only counts without If-None-Match.
    let stale = h.client.get(h.url("/files/hello.txt")).header("if-none-match", "\"old\"");
    let stale = stale.header("if-modified-since", &date).send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap(), HELLO);
}

#[tokio::test]
async fn each_single_range_form_gets_206_with_exact_bytes() {
    let tree = Tree::new();
    let h = serve(&tree).await;
    let len = HELLO.len();
    for (range, start, end) in [("bytes=0-4", 0, 4), ("bytes=7-", 7, len - 1), ("bytes=-10", len - 10, len - 1)] {
        let response = h.client.get(h.url("/files/hello.txt")).header("range", range).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(header(&response, "content-range"), format!("bytes {start}-{end}/{len}"));
        assert_eq!(header(&response, "content-length"), (end - start + 1).to_string());
        assert_eq!(response.bytes().await.unwrap(), &HELLO[start..=end], "{range}");
    }
    // If-Range with the current tag keeps the range; a stale one gets the whole file.
    let etag = header(&h.client.get(h.url("/files/hello.txt")).send().await.unwrap(), "etag").to_owned();
    let current = h.client.get(h.url("/files/hello.txt")).header("range", "bytes=0-1").header("if-range", &etag);
    assert_eq!(current.send().await.unwrap().status(), StatusCode::PARTIAL_CONTENT);
    let stale = h.client.get(h.url("/files/hello.txt")).header("range", "bytes=0-1").header("if-range", "\"old\"");
    assert_eq!(stale.send().await.unwrap().bytes().await.unwrap(), HELLO);
    // Several ranges and malformed ones: the whole file.
    for range in ["bytes=0-1,4-5", "bytes=x-y", "lines=1-2"] {
        let response = h.client.get(h.url("/files/hello.txt")).header("range", range).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{range}");
        assert_eq!(response.bytes().await.unwrap(), HELLO);
    }
}

#[tokio::test]
async fn a_range_past_the_end_gets_416_with_the_length() {
    let tree = Tree::new();
    let h = serve(&tree).await;
    let response = h.client.get(h.url("/files/hello.txt")).header("range", "bytes=1000-").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, "content-range"), format!("bytes */{}", HELLO.len()));
}

#[tokio::test]
async fn paths_cannot_leave_the_root() {
    let tree = Tree::new();
    let h = serve(&tree).await;
    // Dot segments are removed before the mount is chosen, so a traversal leaves the
    // mount (404: nothing else is mounted) or climbs above the root (400); malformed
    // paths are 400; symlinks out are 404, as if absent.
    for (path, expected) in [
        ("/files/../outside/secret.txt", 404),
        ("/files/sub/../../outside/secret.txt", 404),
        ("/files/%2e%2e/outside/secret.txt", 404),
        ("/files/%2E%2e/outside/secret.txt", 404),
        ("/files/../../outside/secret.txt", 400),
        ("/files/%2E%2E%2Foutside%2Fsecret.txt", 400),
        ("/files/sub%2f..%2f..%2foutside/secret.txt", 400),
        ("/files/..%5coutside%5csecret.txt", 400),
        ("/files/hello.txt%00.png", 400),
        ("/files/leak.txt", 404),
        ("/files/escape/secret.txt", 404),
        ("/files/escape", 404),
    ] {
        let (status, answer) = raw(&h, "GET", path).await;
        assert_eq!(status, expected, "{path}: {answer}");
        assert!(!answer.contains(SECRET), "{path} leaked the file");
    }
    // Symlinks that stay inside are followed.
    let (status, answer) = raw(&h, "GET", "/files/alias.txt").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with(std::str::from_utf8(HELLO).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_root_is_404_at_once_and_holds_no_thread() {
    let tree = Tree::new();
    let fifo = tree.root().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let h = serve(&tree).await;
    // Opening a FIFO for reading waits for a writer: none comes, so any blocking open
    // would hang every one of these requests.
    let requests = (0..32).map(|_| {
        let (client, url) = (h.client.clone(), h.url("/files/pipe"));
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
    });
    for request in requests.collect::<Vec<_>>() {
        let status = tokio::time::timeout(WAIT, request).await.expect("answered in time").unwrap().unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let response = h.client.get(h.url("/files/hello.txt")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn directories_serve_their_index_or_404_and_other_methods_get_405() {
    let tree = Tree::new();
    let h = serve(&tree).await;
    for path in ["/files/sub", "/files/sub/", "/files/sub/index.html"] {
        let response = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "content-type"), "text/html");
        assert_eq!(response.text().await.unwrap(), "<h1>index</h1>");
    }
    for path in ["/files/empty", "/files", "/files/missing.txt", "/files/hello.txt/more"] {
        assert_eq!(h.client.get(h.url(path)).send().await.unwrap().status(), StatusCode::NOT_FOUND, "{path}");
    }
    let response = h.client.post(h.url("/files/hello.txt")).body("x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, "allow"), "GET, HEAD");
}

#[tokio::test]
async fn a_20_mib_file_streams_whole() {
    let tree = Tree::new();
    let contents: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(tree.root().join("big.bin"), &contents).unwrap();
    let settings =
        MountSettings { chunk_size: 16 * 1024, rate_limit_bandwidth: None, ..MountSettings::declared_defaults() };
    let h = Harness::start(static_config(&tree.root(), settings)).await;
    let response = h.client.get(h.url("/files/big.bin")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(contents.len() as u64));
    assert_eq!(header(&response, "content-type"), "application/octet-stream");
    let mut received = 0usize;
    let mut hasher = Sha256::new();
    let mut response = response;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, contents.len());
    assert_eq!(hasher.finalize(), Sha256::digest(&contents));
    // A range deep inside the file comes from the right offset.
    let response =
        h.client.get(h.url("/files/big.bin")).header("range", "bytes=15000000-15000099").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.unwrap(), &contents[15_000_000..15_000_100]);
}

#[tokio::test]
async fn an_sdk_file_response_answers_ranges_and_conditionals_through_the_gateway() {
    let tree = Tree::new();
    let file = tree.root().join("hello.txt");
    let endpoint = Endpoint::get("/export").raw(move |ctx: RawRequestContext| {
        let file = file.clone();
        async move { RawResponse::file_for(&ctx.headers, &file, Some("export.txt")).await }
    });
    let mut h = Harness::start(config()).await;
    h.attach(Service::builder("exporter", "1.0.0").endpoint(endpoint).build().unwrap()).await;
    let full = h.client.get(h.url("/export")).send().await.unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(header(&full, "content-disposition"), "attachment; filename=\"export.txt\"");
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    assert!(!header(&full, "last-modified").is_empty());
    let etag = header(&full, "etag").to_owned();
    assert_eq!(full.bytes().await.unwrap(), HELLO);

    let ranged = h.client.get(h.url("/export")).header("range", "bytes=7-12").send().await.unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&ranged, "content-range"), format!("bytes 7-12/{}", HELLO.len()));
    assert_eq!(ranged.bytes().await.unwrap(), &HELLO[7..=12]);

    let cached = h.client.get(h.url("/export")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert!(cached.bytes().await.unwrap().is_empty());

    let past_end = h.client.get(h.url("/export")).header("range", "bytes=999-").send().await.unwrap();
    assert_eq!(past_end.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&past_end, "content-range"), format!("bytes */{}", HELLO.len()));
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_file_response_sends_the_media_type_it_is_given_else_its_guess() {
    let tree = Tree::new();
    let file = tree.root().join("hello.txt");
    let events = file.clone();
    let chosen = Endpoint::get("/events").raw(move |ctx: RawRequestContext| {
        let events = events.clone();
        async move {
            FileResponse::new(events)
                .media_type("application/x-ndjson")
                .download_name("e.txt")
                .send_for(&ctx.headers)
                .await
        }
    });
    let guessed = Endpoint::get("/guessed").raw(move |_ctx: RawRequestContext| {
        let file = file.clone();
        async move { FileResponse::new(file).send().await }
    });
    let mut h = Harness::start(config()).await;
    h.attach(Service::builder("exporter", "1.0.0").endpoint(chosen).endpoint(guessed).build().unwrap()).await;
    let response = h.client.get(h.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().get_all("content-type").iter().count(), 1, "replaced, not added");
    assert_eq!(header(&response, "content-type"), "application/x-ndjson");
    assert_eq!(header(&response, "content-disposition"), "attachment; filename=\"e.txt\"");
    assert_eq!(response.bytes().await.unwrap(), HELLO);
    let ranged = h.client.get(h.url("/events")).header("range", "bytes=0-4").send().await.unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&ranged, "content-type"), "application/x-ndjson");
    let response = h.client.get(h.url("/guessed")).send().await.unwrap();
    assert_eq!(header(&response, "content-type"), "text/plain");
    assert_eq!(response.bytes().await.unwrap(), HELLO);
    h.assert_budget_released().await;
}
