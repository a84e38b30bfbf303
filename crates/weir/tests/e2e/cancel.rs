//! Cancellation reaches handlers: a client that disconnects (HTTP/1.1 socket closed, or
//! HTTP/2 stream reset) and a timeout both fire the handler's cancellation token, the
//! disconnect within 100 ms.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

conformance! {
    http1_client_disconnect_cancels_the_handler_within_100ms,
    h2_stream_reset_cancels_the_handler,
    timeout_answers_504_and_cancels_the_handler,
}

/// What the waiting handler reports.
#[derive(Debug)]
enum Seen {
    Started,
    Cancelled(Instant),
}

/// A service whose `/wait` handler reports its start, then waits for its cancellation.
fn waiting_service(timeout: Option<Duration>) -> (Service, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut endpoint = Endpoint::get("/wait");
    if let Some(timeout) = timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let endpoint = endpoint.raw(move |ctx: RawRequestContext| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Seen::Started);
            ctx.cancel.cancelled().await;
            let _ = tx.send(Seen::Cancelled(Instant::now()));
            Err::<RawResponse, _>(HandlerError::unavailable("cancelled"))
        }
    });
    (Service::builder("waiter", "1.0.0").endpoint(endpoint).build().unwrap(), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("handler said nothing").expect("handler gone")
}

async fn http1_client_disconnect_cancels_the_handler_within_100ms(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let (service, mut seen) = waiting_service(None);
    h.attach(service).await;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(b"GET /wait HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    assert!(matches!(next(&mut seen).await, Seen::Started));
    let closed_at = Instant::now();
    drop(socket);
    let Seen::Cancelled(at) = next(&mut seen).await else { panic!("expected a cancel") };
    let latency = at.duration_since(closed_at);
    assert!(latency < Duration::from_millis(100), "cancel took {latency:?}");
    h.assert_budget_released().await;
}

async fn h2_stream_reset_cancels_the_handler(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let (service, mut seen) = waiting_service(None);
    h.attach(service).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let request = tokio::spawn(client.get(h.url("/wait")).send());
    assert!(matches!(next(&mut seen).await, Seen::Started));
    let dropped_at = Instant::now();
    request.abort();
    let Seen::Cancelled(at) = next(&mut seen).await else { panic!("expected a cancel") };
    assert!(at.duration_since(dropped_at) < Duration::from_millis(100));
}

async fn timeout_answers_504_and_cancels_the_handler(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let (service, mut seen) = waiting_service(Some(Duration::from_millis(100)));
    h.attach(service).await;
    let response = h.client.get(h.url("/wait")).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::GATEWAY_TIMEOUT);
    assert!(matches!(next(&mut seen).await, Seen::Started));
    assert!(matches!(next(&mut seen).await, Seen::Cancelled(_)));
}
