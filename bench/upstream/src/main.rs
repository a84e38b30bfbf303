//! The weir demo service's handlers served directly over HTTP/1.1 (keep-alive) with
//! hyper: the backend that nginx and HAProxy proxy to in `bench/run`, and, alone, the
//! ceiling any proxy in front of it can reach.
//!
//! | endpoint | behaviour (same as `crates/weir/src/demo.rs`) |
//! |---|---|
//! | `GET /api/hello` | 200 `{"message":"hello from weir","service":"demo"}` |
//! | `POST /api/echo` | the body back, same `Content-Type`, streamed (not collected) |
//! | `POST /stream/upload` | reads the body as it streams; `{"bytes":N,"sha256":"<hex>"}` |
//! | `GET /stream/download?bytes=N` | N bytes, byte i = i % 256, with `Content-Length` |
//!
//! Usage: `upstream [--threads N] [--listen ADDR | PORT]`. `--threads 1` (the benchmark's
//! choice) runs a current-thread runtime so the server uses one core, like the proxies'
//! single worker. Prints `upstream listening on http://ADDR` once bound (port 0 works).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// Size of the chunks `/stream/download` produces, as in the demo service.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

type Reply = Response<Either<Full<Bytes>, Either<Incoming, Pattern>>>;

fn main() {
    let mut threads = 0usize;
    let mut listen: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => threads = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "-h" | "--help" => usage(),
            port => listen.set_port(port.parse().unwrap_or_else(|_| usage())),
        }
    }
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            builder.worker_threads(threads);
        }
        builder.enable_all().build()
    }
    .expect("cannot start the tokio runtime");
    if let Err(err) = runtime.block_on(serve(listen)) {
        eprintln!("upstream: {err}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: upstream [--threads N] [--listen ADDR | PORT]");
    std::process::exit(2);
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("upstream listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(err) => {
                eprintln!("upstream: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(route))
                .await;
        });
    }
}

async fn route(request: Request<Incoming>) -> Result<Reply, Infallible> {
    let reply = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/api/hello") => json(r#"{"message":"hello from weir","service":"demo"}"#.into()),
        (&Method::POST, "/api/echo") => echo(request),
        (&Method::POST, "/stream/upload") => upload(request).await,
        (&Method::GET, "/stream/download") => download(request.uri().query().unwrap_or("")),
        (_, "/api/hello" | "/api/echo" | "/stream/upload" | "/stream/download") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    };
    Ok(reply)
}

fn json(body: String) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, code: &str) -> Reply {
    let mut response = json(format!(r#"{{"error":"{code}","detail":"{code}"}}"#));
    *response.status_mut() = status;
    response
}

/// The request body goes straight back as the response body, chunk by chunk; with a
/// `Content-Length` request hyper answers with the same `Content-Length`.
fn echo(request: Request<Incoming>) -> Reply {
    let content_type = request.headers().get(CONTENT_TYPE).cloned();
    let length = request.headers().get(CONTENT_LENGTH).cloned();
    let mut response = Response::new(Either::Right(Either::Left(request.into_body())));
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    if let Some(length) = length {
        response.headers_mut().insert(CONTENT_LENGTH, length);
    }
    response
}

async fn upload(request: Request<Incoming>) -> Reply {
    let mut body = request.into_body();
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    hasher.update(data);
                }
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad_body"),
        }
    }
    let sha256: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    json(format!(r#"{{"bytes":{bytes},"sha256":"{sha256}"}}"#))
}

fn download(query: &str) -> Reply {
    let bytes = query.split('&').find_map(|pair| pair.strip_prefix("bytes=")).and_then(|v| v.parse::<u64>().ok());
    let Some(total) = bytes else {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    };
    let mut response = Response::new(Either::Right(Either::Right(Pattern::new(total))));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(total));
    response
}

/// `total` bytes where byte i is i % 256, as 64 KiB slices of one shared pattern (every
/// chunk starts at a multiple of 64 KiB, itself a multiple of 256): no per-chunk work.
struct Pattern {
    pattern: Bytes,
    remaining: u64,
}

impl Pattern {
    fn new(total: u64) -> Self {
        let pattern = Bytes::from((0..DOWNLOAD_CHUNK).map(|i| i as u8).collect::<Vec<u8>>());
        Pattern { pattern, remaining: total }
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(DOWNLOAD_CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.pattern.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
