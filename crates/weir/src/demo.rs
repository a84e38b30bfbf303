//! The embedded demo service, used by the README, the tests and the benchmarks.
//!
//! | endpoint | behaviour |
//! |---|---|
//! | `GET /api/hello` | 200 JSON greeting |
//! | `POST /api/echo` | the body back, same `Content-Type` (buffered) |
//! | `GET /api/items/{id}` | 200 JSON with the id (typed handler) |
//! | `GET /api/headers` | 200 JSON: the request's headers as the service received them (`headers`, name to value, repeated names joined with `, `) and its W3C trace context as the SDK reads it (`trace`, or `null`) |
//! | `GET /api/slow?ms=N` | 200 after N ms, stopping early when cancelled; 5 s timeout |
//! | `POST /stream/upload` | reads a streamed body; `{"bytes": N, "sha256": "<hex>"}` |
//! | `GET /stream/download?bytes=N` | N bytes, byte i = i % 256, with `Content-Length` |
//! | `GET /stream/echo` (WebSocket) | echoes each text or binary message |
//! | `GET /stream/telemetry` (WebSocket) | fire-and-forget in: counts messages, answers nothing |
//! | `GET /stream/telemetry/stats?at_least=N` | `{"messages": N}` counted so far; with `at_least`, waits (up to 5 s) until that many have arrived |
//! | `GET /stream/notifications` (WebSocket) | pushes `{"seq": n}` every second until the client goes |
//!
//! `weir serve` attaches it over the in-memory transport unless `--no-demo` is given;
//! `weir demo-service --connect ADDR` runs it in its own process over TCP or TLS.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use weir_gateway::Gateway;
use weir_service::{
    Endpoint, HandlerError, RawRequestContext, RawResponse, RunHandle, Service, ServiceBuilder, TypedRequest,
    WebSocketContext, WsMessage,
};

/// Longest `/api/slow` sleep the demo declares before the gateway answers 504.
pub const SLOW_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the chunks `/stream/download` produces.
const DOWNLOAD_CHUNK: usize = 64 * 1024;
/// Period of `/stream/notifications` events.
pub const NOTIFICATION_PERIOD: Duration = Duration::from_secs(1);
/// Longest `/stream/telemetry/stats?at_least=N` waits.
const STATS_WAIT: Duration = Duration::from_secs(5);

/// The demo service, ready to serve on any transport.
pub fn service() -> Service {
    builder()
        .build()
        // The demo's declarations are fixed and valid; a failure here is a bug in this file.
        .expect("the demo service declaration is valid")
}

/// The demo's declaration, for settings a deployment adds (a token, the region).
pub fn builder() -> ServiceBuilder {
    // Telemetry messages received by this service instance, shared by its two endpoints.
    let received = Arc::new(watch::Sender::new(0u64));
    let counter = Arc::clone(&received);
    Service::builder("demo", env!("CARGO_PKG_VERSION"))
        .endpoint(Endpoint::get("/api/hello").raw(hello))
        .endpoint(Endpoint::post("/api/echo").raw(echo))
        .endpoint(Endpoint::get("/api/items/{id}").typed(item))
        .endpoint(Endpoint::get("/api/headers").typed(headers))
        .endpoint(Endpoint::get("/api/slow").timeout(SLOW_TIMEOUT).typed(slow))
        .endpoint(Endpoint::post("/stream/upload").streaming().raw(upload))
        .endpoint(Endpoint::get("/stream/download").raw(download))
        .endpoint(Endpoint::get("/stream/echo").websocket_handler(ws_echo))
        .endpoint(Endpoint::get("/stream/telemetry").websocket_handler(move |ws| telemetry(ws, Arc::clone(&counter))))
        .endpoint(
            Endpoint::get("/stream/telemetry/stats")
                .timeout(STATS_WAIT * 2)
                .raw(move |ctx| telemetry_stats(ctx, received.subscribe())),
        )
        .endpoint(Endpoint::get("/stream/notifications").websocket_handler(notifications))
}

/// Attaches the demo to `gateway` over the in-memory transport; it re-registers if the
/// link drops, until the handle is shut down.
pub fn attach(gateway: &Arc<Gateway>) -> RunHandle {
    service().run(gateway.attach_memory())
}

async fn hello(_ctx: RawRequestContext) -> Result<RawResponse, HandlerError> {
    Ok(RawResponse::json(200, &serde_json::json!({ "message": "hello from weir", "service": "demo" })))
}

async fn echo(ctx: RawRequestContext) -> Result<RawResponse, HandlerError> {
    let content_type = ctx.header("content-type").map(Bytes::copy_from_slice);
    let body = ctx.body.collect(usize::MAX).await.map_err(|e| HandlerError::bad_request(e.to_string()))?;
    let mut response = RawResponse::new(200).with_body(body);
    if let Some(content_type) = content_type {
        response = response.header("content-type", content_type);
    }
    Ok(response)
}

/// What the gateway forwarded: every header, and the trace context read from them.
async fn headers(request: TypedRequest<()>) -> Result<serde_json::Value, HandlerError> {
    let mut headers = serde_json::Map::new();
    for (name, value) in &request.headers {
        let value = String::from_utf8_lossy(value);
        let joined = headers.entry(name.as_str()).or_insert_with(|| String::new().into());
        if let serde_json::Value::String(joined) = joined {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(&value);
        }
    }
    let trace = request.trace_context().map(|context| {
        serde_json::json!({
            "trace_id": format!("{:032x}", context.parent.trace_id()),
            "parent_id": format!("{:016x}", context.parent.parent_id()),
            "sampled": context.parent.is_sampled(),
            "tracestate": context.state.as_ref().map(|state| state.as_str()),
        })
    });
    Ok(serde_json::json!({ "headers": headers, "trace": trace }))
}

async fn item(request: TypedRequest<()>) -> Result<serde_json::Value, HandlerError> {
    let id = request.param("id").unwrap_or_default();
    Ok(serde_json::json!({ "id": id, "name": format!("item {id}") }))
}

#[derive(Debug, Deserialize)]
struct SlowQuery {
    ms: u64,
}

async fn slow(request: TypedRequest<()>) -> Result<serde_json::Value, HandlerError> {
    let query: SlowQuery = request.query()?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(query.ms)) => Ok(serde_json::json!({ "slept_ms": query.ms })),
        _ = request.cancel.cancelled() => Err(HandlerError::unavailable("cancelled")),
    }
}

async fn upload(mut ctx: RawRequestContext) -> Result<RawResponse, HandlerError> {
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    while let Some(chunk) = ctx.body.chunk().await.map_err(|e| HandlerError::bad_request(e.to_string()))? {
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let sha256 = hex::encode(hasher.finalize());
    Ok(RawResponse::json(200, &serde_json::json!({ "bytes": bytes, "sha256": sha256 })))
}

#[derive(Debug, Deserialize)]
struct DownloadQuery {
    bytes: u64,
}

async fn download(ctx: RawRequestContext) -> Result<RawResponse, HandlerError> {
    let query: DownloadQuery = serde_urlencoded::from_str(&ctx.query)
        .map_err(|e| HandlerError::bad_request(format!("expected ?bytes=N: {e}")))?;
    // Byte i is i % 256 and chunks start at multiples of 64 KiB (a multiple of 256), so
    // every chunk is a prefix of one shared pattern: no per-chunk generation.
    let pattern = Bytes::from((0..DOWNLOAD_CHUNK).map(|i| i as u8).collect::<Vec<u8>>());
    let total = query.bytes;
    let chunks = futures_util::stream::unfold(0u64, move |sent| {
        let pattern = pattern.clone();
        async move {
            (sent < total).then(|| {
                let n = (total - sent).min(DOWNLOAD_CHUNK as u64) as usize;
                (Ok::<Bytes, std::io::Error>(pattern.slice(..n)), sent + n as u64)
            })
        }
    });
    Ok(RawResponse::stream(200, "application/octet-stream", chunks).header("content-length", total.to_string()))
}

/// `/stream/echo`: each text or binary message back; the SDK answers the close.
async fn ws_echo(mut ws: WebSocketContext) -> Result<(), HandlerError> {
    while let Some(message) = ws.incoming.next().await {
        match message? {
            WsMessage::Close { .. } => break,
            data => ws.outgoing.send(data).await?,
        }
    }
    Ok(())
}

/// `/stream/telemetry`: counts what arrives and answers nothing
/// (fire-and-forget telemetry).
async fn telemetry(mut ws: WebSocketContext, received: Arc<watch::Sender<u64>>) -> Result<(), HandlerError> {
    while let Some(message) = ws.incoming.next().await {
        match message? {
            WsMessage::Close { .. } => break,
            _ => received.send_modify(|n| *n += 1),
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct StatsQuery {
    at_least: Option<u64>,
}

/// `/stream/telemetry/stats`: the count, once it reaches `at_least` (or after
/// [`STATS_WAIT`], whatever it is then).
async fn telemetry_stats(
    ctx: RawRequestContext,
    mut received: watch::Receiver<u64>,
) -> Result<RawResponse, HandlerError> {
    let query: StatsQuery = serde_urlencoded::from_str(&ctx.query)
        .map_err(|e| HandlerError::bad_request(format!("expected ?at_least=N: {e}")))?;
    let at_least = query.at_least.unwrap_or(0);
    tokio::select! {
        _ = tokio::time::timeout(STATS_WAIT, received.wait_for(|n| *n >= at_least)) => {}
        () = ctx.cancel.cancelled() => return Err(HandlerError::unavailable("cancelled")),
    }
    let messages = *received.borrow();
    Ok(RawResponse::json(200, &serde_json::json!({ "messages": messages })))
}

/// `/stream/notifications`: `{"seq": n}` every [`NOTIFICATION_PERIOD`]
/// (fire-and-forget notifications), until the client closes or goes.
async fn notifications(mut ws: WebSocketContext) -> Result<(), HandlerError> {
    let start = tokio::time::Instant::now() + NOTIFICATION_PERIOD;
    let mut ticker = tokio::time::interval_at(start, NOTIFICATION_PERIOD);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                seq += 1;
                ws.outgoing.text(serde_json::json!({ "seq": seq }).to_string()).await?;
            }
            message = ws.incoming.next() => match message {
                // Whatever the client says is ignored; its close or its going ends the feed.
                Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))) => {}
                _ => return Ok(()),
            },
        }
    }
}
