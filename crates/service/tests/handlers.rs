//! Handlers as the gateway sees them: typed JSON endpoints, raw streaming in both
//! directions, file downloads and error bodies, over a real in-memory link.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{connect_quiet, header, read_body, request, within};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_proto::{BodyMode, CancelReason};
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service, TypedRequest};
use weir_transport::StreamError;

const MIB: usize = 1024 * 1024;

#[derive(Deserialize)]
struct Patch {
    name: String,
    qty: u32,
}

#[derive(Deserialize)]
struct Options {
    verbose: bool,
}

fn typed_service() -> Service {
    Service::builder("items", "1.0.0")
        .endpoint(Endpoint::put("/api/items/{id}").typed(|req: TypedRequest<Patch>| async move {
            let options: Options = req.query()?;
            Ok::<_, HandlerError>(json!({
                "id": req.param("id"),
                "name": req.body.name,
                "qty": req.body.qty,
                "verbose": options.verbose,
                "tags": req.query_pairs.iter().filter(|(k, _)| k == "tag").map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            }))
        }))
        .endpoint(
            Endpoint::get("/api/items/{id}")
                .typed(|req: TypedRequest<()>| async move { Ok::<_, HandlerError>(json!({ "id": req.param("id") })) }),
        )
        .build()
        .expect("valid service")
}

fn json_body(body: &Bytes) -> Value {
    serde_json::from_slice(body).expect("a JSON body")
}

#[tokio::test]
async fn typed_handler_gets_params_query_and_json_body() {
    let (gateway, _session) = connect_quiet(&typed_service()).await;
    let body = br#"{"name": "widget", "qty": 3}"#;
    let head =
        request("PUT", "/api/items/42", "verbose=true&tag=a%20b&tag=c", "/api/items/{id}", &[("id", "42")], body);
    let (response, body) = gateway.exchange(head).await;
    assert_eq!(response.status, 200);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(
        json_body(&body),
        json!({"id": "42", "name": "widget", "qty": 3, "verbose": true, "tags": ["a b", "c"]})
    );

    let head = request("GET", "/api/items/7", "", "/api/items/{id}", &[("id", "7")], b"");
    let (response, body) = gateway.exchange(head).await;
    assert_eq!(response.status, 200);
    assert_eq!(json_body(&body), json!({"id": "7"}));
}

#[tokio::test]
async fn invalid_json_and_query_are_400_with_a_json_error() {
    let (gateway, _session) = connect_quiet(&typed_service()).await;
    let head = request("PUT", "/api/items/1", "verbose=true", "/api/items/{id}", &[("id", "1")], b"{not json");
    let (response, body) = gateway.exchange(head).await;
    assert_eq!(response.status, 400);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    let error = json_body(&body);
    assert_eq!(error["error"], "bad_request");
    assert!(error["detail"].as_str().is_some_and(|d| d.contains("JSON")), "{error}");

    let head =
        request("PUT", "/api/items/1", "verbose=maybe", "/api/items/{id}", &[("id", "1")], br#"{"name":"a","qty":1}"#);
    let (response, body) = gateway.exchange(head).await;
    assert_eq!(response.status, 400);
    assert!(json_body(&body)["detail"].as_str().is_some_and(|d| d.contains("query")));
}

#[tokio::test]
async fn typed_body_over_max_body_bytes_is_413() {
    let service = Service::builder("items", "1.0.0")
        .endpoint(
            Endpoint::post("/small")
                .max_body_bytes(8)
                .typed(|req: TypedRequest<Value>| async move { Ok::<_, HandlerError>(req.body) }),
        )
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let (response, body) = gateway.exchange(request("POST", "/small", "", "/small", &[], b"[1,2,3,4,5]")).await;
    assert_eq!(response.status, 413);
    assert_eq!(json_body(&body)["error"], "payload_too_large");
    let (response, body) = gateway.exchange(request("POST", "/small", "", "/small", &[], b"[1,2]")).await;
    assert_eq!((response.status, json_body(&body)), (200, json!([1, 2])));
}

fn upload_service() -> Service {
    Service::builder("uploads", "1.0.0")
        .endpoint(Endpoint::post("/upload").streaming().raw(|mut ctx: RawRequestContext| async move {
            assert!(ctx.body.is_streamed());
            let (mut bytes, mut chunks) = (0usize, 0usize);
            while let Some(chunk) = ctx.body.chunk().await? {
                assert!(chunk.iter().all(|b| *b == 0xAB));
                bytes += chunk.len();
                chunks += 1;
            }
            Ok(RawResponse::json(200, &json!({ "bytes": bytes, "chunks": chunks })))
        }))
        .build()
        .expect("valid service")
}

#[tokio::test]
async fn raw_handler_reads_a_5_mib_streamed_body_in_chunks() {
    let (gateway, _session) = connect_quiet(&upload_service()).await;
    let mut head = request("POST", "/upload", "", "/upload", &[], b"");
    head.body_mode = BodyMode::Streamed;
    let mut call = gateway.call(head).await;
    let mut sender = call.body.take().expect("a body sender");
    let upload = tokio::spawn(async move {
        let chunk = Bytes::from(vec![0xABu8; 64 * 1024]);
        for _ in 0..(5 * MIB / chunk.len()) {
            sender.send(chunk.clone()).await?;
        }
        sender.finish().await
    });
    let response = within(call.response).await.expect("channel").expect("a response");
    within(upload).await.expect("upload task").expect("upload sent");
    let body = read_body(&response.head, response.body).await.expect("body");
    call.handle.complete();
    assert_eq!(response.head.status, 200);
    let answer = json_body(&body);
    assert_eq!(answer["bytes"], 5 * MIB);
    // The service's window (256 KiB) is far below 5 MiB: the body came in many pieces.
    assert!(answer["chunks"].as_u64().is_some_and(|c| c >= 20), "{answer}");
}

#[tokio::test]
async fn streamed_response_of_3_mib_arrives_whole_in_64_kib_frames() {
    let pattern = |i: usize| (i % 251) as u8;
    let service = Service::builder("reports", "1.0.0")
        .endpoint(Endpoint::get("/report").raw(move |_| async move {
            let chunks = (0..3).map(move |n| {
                let chunk: Vec<u8> = (n * MIB..(n + 1) * MIB).map(pattern).collect();
                Ok::<_, std::io::Error>(Bytes::from(chunk))
            });
            Ok(RawResponse::stream(200, "application/octet-stream", stream::iter(chunks)))
        }))
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let call = gateway.call(common::get("/report")).await;
    let response = within(call.response).await.expect("channel").expect("a response");
    assert_eq!(response.head.status, 200);
    assert_eq!(response.head.body_mode, BodyMode::Streamed);
    assert_eq!(header(&response.head, "content-type"), Some("application/octet-stream"));
    let mut body = response.body.expect("a streamed body");
    let mut received = Vec::with_capacity(3 * MIB);
    while let Some(chunk) = within(body.next_chunk()).await {
        let chunk = chunk.expect("a chunk");
        assert!(chunk.len() <= 64 * 1024, "frame of {} bytes", chunk.len());
        received.extend_from_slice(&chunk);
    }
    call.handle.complete();
    assert_eq!(received.len(), 3 * MIB);
    assert!(received.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

#[tokio::test]
async fn large_whole_body_is_streamed_and_small_one_inline() {
    let service = Service::builder("blobs", "1.0.0")
        .endpoint(Endpoint::get("/big").raw(|_| async { Ok(RawResponse::new(200).with_body(vec![1u8; 2 * MIB])) }))
        .endpoint(Endpoint::get("/small").raw(|_| async { Ok(RawResponse::text(200, "hi")) }))
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let call = gateway.call(common::get("/big")).await;
    let response = within(call.response).await.expect("channel").expect("a response");
    assert_eq!(response.head.body_mode, BodyMode::Streamed);
    assert_eq!(header(&response.head, "content-length"), Some("2097152"));
    let body = within(read_body(&response.head, response.body)).await.expect("body");
    call.handle.complete();
    assert_eq!(body.len(), 2 * MIB);

    let (head, body) = gateway.exchange(common::get("/small")).await;
    assert_eq!((head.body_mode, &body[..]), (BodyMode::Buffered, &b"hi"[..]));
}

#[tokio::test]
async fn failing_body_stream_aborts_the_response() {
    let service = Service::builder("broken", "1.0.0")
        .endpoint(Endpoint::get("/broken").raw(|_| async {
            let items = vec![Ok(Bytes::from_static(b"partial")), Err(HandlerError::internal("disk gone"))];
            Ok(RawResponse::stream(200, "text/plain", stream::iter(items)))
        }))
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let call = gateway.call(common::get("/broken")).await;
    // The Cancel travels as a control frame, which may overtake the queued head: the
    // gateway sees the failure either instead of the head or in place of the body's end.
    let outcome = match within(call.response).await.expect("channel") {
        Ok(response) => within(read_body(&response.head, response.body)).await.map(|_| ()),
        Err(err) => Err(err),
    };
    assert_eq!(outcome, Err(StreamError::Cancelled(CancelReason::HandlerFailed)));
}

fn temp_file(contents: &[u8]) -> std::path::PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!("weir-service-{}-{nanos}.txt", std::process::id()));
    std::fs::write(&path, contents).expect("temp file written");
    path
}

#[tokio::test]
async fn file_response_has_length_disposition_and_type() {
    let contents: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
    let path = temp_file(&contents);
    let served = path.clone();
    let service = Service::builder("files", "1.0.0")
        .endpoint(Endpoint::get("/file").raw(move |_| {
            let path = served.clone();
            async move { RawResponse::file(path, Some("résumé \"final\".txt")).await }
        }))
        .endpoint(
            Endpoint::get("/missing").raw(|_| async { RawResponse::file("/definitely/not/here.bin", None).await }),
        )
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let (head, body) = gateway.exchange(common::get("/file")).await;
    std::fs::remove_file(&path).expect("temp file removed");
    assert_eq!(head.status, 200);
    assert_eq!(header(&head, "content-length"), Some("200000"));
    assert_eq!(header(&head, "content-type"), Some("text/plain"));
    assert_eq!(
        header(&head, "content-disposition"),
        Some("attachment; filename=\"r_sum_ \\\"final\\\".txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt")
    );
    assert_eq!(&body[..], &contents[..]);

    let (head, body) = gateway.exchange(common::get("/missing")).await;
    assert_eq!(head.status, 404);
    assert_eq!(json_body(&body), json!({"error": "not_found", "detail": "no such file"}));
}

#[tokio::test]
async fn handler_errors_become_json_bodies() {
    let service = Service::builder("errors", "1.0.0")
        .endpoint(Endpoint::delete("/locked").raw(|_| async { Err(HandlerError::conflict("the item is locked")) }))
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let (head, body) = gateway.exchange(request("DELETE", "/locked", "", "/locked", &[], b"")).await;
    assert_eq!(head.status, 409);
    assert_eq!(json_body(&body), json!({"error": "conflict", "detail": "the item is locked"}));
    // HEAD falls back to GET, as at the gateway; other methods do not.
    let (head, _) = gateway.exchange(request("HEAD", "/locked", "", "/locked", &[], b"")).await;
    assert_eq!(head.status, 404);
    // A template the service never declared (a gateway bug) is answered 404, not a hang.
    let (head, _) = gateway.exchange(common::get("/nowhere")).await;
    assert_eq!(head.status, 404);
}

#[tokio::test]
async fn raw_context_exposes_headers_query_and_params() {
    let service = Service::builder("echo", "1.0.0")
        .endpoint(Endpoint::get("/echo/{*rest}").raw(|ctx: RawRequestContext| async move {
            let answer = json!({
                "rest": ctx.param("rest"),
                "trace": ctx.header("x-trace-id").map(|v| String::from_utf8_lossy(v).into_owned()),
                "query": ctx.query_pairs(),
                "template": ctx.template,
                "cancelled": ctx.is_cancelled(),
            });
            Ok(RawResponse::json(201, &answer))
        }))
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let mut head = request("GET", "/echo/a/b", "x=1+2", "/echo/{*rest}", &[("rest", "a/b")], b"");
    head.headers.push(("X-Trace-Id".to_owned(), Bytes::from_static(b"abc")));
    let (response, body) = gateway.exchange(head).await;
    assert_eq!(response.status, 201);
    let (head_response, _) = gateway.exchange(request("HEAD", "/echo/x", "", "/echo/{*rest}", &[], b"")).await;
    assert_eq!(head_response.status, 201, "HEAD is served by the GET handler");
    assert_eq!(
        json_body(&body),
        json!({"rest": "a/b", "trace": "abc", "query": [["x", "1 2"]], "template": "/echo/{*rest}", "cancelled": false})
    );
}

#[tokio::test]
async fn streamed_and_file_responses_use_the_chunk_size_the_gateway_asks_for() {
    let file = std::env::temp_dir().join(format!("weir-chunk-size-{}", std::process::id()));
    std::fs::write(&file, vec![5u8; 100 * 1024]).expect("temp file written");
    let served = file.clone();
    let service = Service::builder("reports", "1.0.0")
        .endpoint(Endpoint::get("/report").raw(move |ctx: RawRequestContext| async move {
            assert_eq!(ctx.chunk_size, Some(4096), "the handler sees it too");
            let chunks = (0..2).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 64 * 1024])));
            Ok(RawResponse::stream(200, "application/octet-stream", stream::iter(chunks)))
        }))
        .endpoint(Endpoint::get("/file").raw(move |_| {
            let served = served.clone();
            async move { RawResponse::file(served, None).await }
        }))
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    for (path, len) in [("/report", 128 * 1024), ("/file", 100 * 1024)] {
        let head = weir_proto::RequestHead { chunk_size: Some(4096), ..common::get(path) };
        let call = gateway.call(head).await;
        let response = within(call.response).await.expect("channel").expect("a response");
        assert_eq!(response.head.status, 200, "{path}");
        let mut body = response.body.expect("a streamed body");
        let mut received = 0;
        while let Some(chunk) = within(body.next_chunk()).await {
            let chunk = chunk.expect("a chunk");
            assert!(chunk.len() <= 4096, "{path}: frame of {} bytes", chunk.len());
            received += chunk.len();
        }
        call.handle.complete();
        assert_eq!(received, len, "{path}");
    }
    let _ = std::fs::remove_file(file);
}
