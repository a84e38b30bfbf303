//! A hand-driven gateway side for black-box tests of the SDK: the transport crate's
//! gateway role, driven by the test instead of a real gateway.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use weir_proto::{BodyMode, Headers, Heartbeat, Hello, RequestHead, ResponseHead, Welcome};
use weir_service::{Service, ServiceSession};
use weir_transport::memory::{self, MemoryListener};
use weir_transport::{accept_hello, DataReceiver, Link, LinkConfig, LinkEvent, OutgoingCall, StreamError};

/// Upper bound for anything a test awaits; never a delay.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// The gateway's side of one service connection.
pub struct Gateway {
    pub link: Link,
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    pub hello: Hello,
}

/// What the gateway answers to a Hello.
pub fn welcome(heartbeat_interval: Duration) -> Welcome {
    Welcome {
        protocol_version: weir_proto::PROTOCOL_VERSION,
        initial_window: weir_proto::DEFAULT_STREAM_WINDOW,
        heartbeat_interval,
    }
}

/// Accepts the next connection on `listener` and welcomes it.
pub async fn accept(listener: &mut MemoryListener, welcome: &Welcome) -> Gateway {
    let io = within(listener.accept()).await.expect("a connection");
    let pending = within(accept_hello(io, weir_proto::DEFAULT_MAX_FRAME_PAYLOAD, WAIT)).await.expect("a Hello");
    let hello = pending.hello.clone();
    let (link, events) = pending.welcome(welcome, LinkConfig::default()).await.expect("welcomed");
    Gateway { link, events, hello }
}

/// Connects `service` to a fresh hand-driven gateway.
pub async fn connect(service: &Service, heartbeat_interval: Duration) -> (Gateway, ServiceSession) {
    let (mut listener, connector) = memory::listener();
    let service = service.clone();
    let serving = tokio::spawn(async move { service.serve_memory(&connector).await });
    let gateway = accept(&mut listener, &welcome(heartbeat_interval)).await;
    let session = within(serving).await.expect("serve task").expect("serve");
    (gateway, session)
}

/// Connects with heartbeats far apart (one hour), so none arrive by themselves.
pub async fn connect_quiet(service: &Service) -> (Gateway, ServiceSession) {
    connect(service, Duration::from_secs(3600)).await
}

/// A request head with a buffered body.
pub fn request(
    method: &str,
    path: &str,
    query: &str,
    template: &str,
    params: &[(&str, &str)],
    body: &[u8],
) -> RequestHead {
    RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        template: template.to_owned(),
        params: params.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        headers: Headers::new(),
        body_mode: BodyMode::Buffered,
        body: Bytes::copy_from_slice(body),
        chunk_size: None,
    }
}

/// A bodiless GET whose path is its template.
pub fn get(path: &str) -> RequestHead {
    request("GET", path, "", path, &[], b"")
}

/// The whole body of a response, inline or streamed.
pub async fn read_body(head: &ResponseHead, body: Option<DataReceiver>) -> Result<Bytes, StreamError> {
    let Some(mut body) = body else { return Ok(head.body.clone()) };
    let mut whole = BytesMut::new();
    while let Some(chunk) = body.next_chunk().await {
        whole.extend_from_slice(&chunk?);
    }
    Ok(whole.freeze())
}

/// The first value of header `name`, case-insensitive, as text.
pub fn header<'a>(head: &'a ResponseHead, name: &str) -> Option<&'a str> {
    head.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

impl Gateway {
    /// Sends a request.
    pub async fn call(&self, head: RequestHead) -> OutgoingCall {
        self.link.call(head, weir_proto::DEFAULT_STREAM_WINDOW).await.expect("request sent")
    }

    /// Sends a request and reads the whole response.
    pub async fn exchange(&self, head: RequestHead) -> (ResponseHead, Bytes) {
        let call = self.call(head).await;
        let response = within(call.response).await.expect("response channel").expect("a response");
        let body = within(read_body(&response.head, response.body)).await.expect("the whole body");
        call.handle.complete();
        (response.head, body)
    }

    /// The next heartbeat the service sends.
    pub async fn next_heartbeat(&mut self) -> Heartbeat {
        match within(self.events.recv()).await.expect("link open") {
            LinkEvent::Heartbeat(heartbeat) => heartbeat,
            other => panic!("unexpected event {other:?}"),
        }
    }
}
