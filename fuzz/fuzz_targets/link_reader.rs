//! Fuzzes the gateway side of a live service connection: a valid Hello is accepted and
//! welcomed, the gateway opens three streams (one buffered request, two streamed, so the
//! input can answer them with responses, stream data, credit and cancels), and then the
//! arbitrary bytes arrive as if from the service, followed by the end of the connection.
//!
//! Beyond "never panics" it asserts that the link always closes (a violation or the end
//! of input) and that closing leaves no stream open, whatever the input did.

#![no_main]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Encoder;
use weir_proto::{
    BodyMode, EndpointDescriptor, FrameCodec, Hello, Message, RequestHead, Welcome, DEFAULT_MAX_FRAME_PAYLOAD,
    PROTOCOL_VERSION,
};
use weir_transport::{accept_hello, LinkConfig};

const WAIT: Duration = Duration::from_secs(5);

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.with(|runtime| runtime.block_on(run(data)));
});

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        service: "fuzz".into(),
        version: "1.0.0".into(),
        region: String::new(),
        instance_id: "fuzz-1".into(),
        initial_window: 4096,
        token: String::new(),
        endpoints: vec![EndpointDescriptor::new("POST", "/x")],
    }
}

fn request(mode: BodyMode) -> RequestHead {
    RequestHead {
        method: "POST".into(),
        path: "/x".into(),
        query: String::new(),
        template: "/x".into(),
        params: vec![],
        headers: vec![],
        body_mode: mode,
        body: Bytes::new(),
        chunk_size: None,
    }
}

async fn run(data: &[u8]) {
    let (mut service, gateway) = tokio::io::duplex(64 * 1024);
    let hello = hello().to_frame(0).expect("the Hello encodes");
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(hello, &mut wire).expect("the Hello encodes");
    service.write_all(&wire).await.expect("the Hello is written");
    let pending = accept_hello(gateway, DEFAULT_MAX_FRAME_PAYLOAD, WAIT).await.expect("a valid Hello");
    let welcome = Welcome { protocol_version: PROTOCOL_VERSION, initial_window: 4096, heartbeat_interval: WAIT };
    let (link, _events) = pending.welcome(&welcome, LinkConfig::default()).await.expect("welcomed");
    let mut calls = Vec::new();
    for mode in [BodyMode::Buffered, BodyMode::Streamed, BodyMode::Streamed] {
        calls.push(link.call(request(mode), 4096).await.expect("the stream opens"));
    }
    let (mut from_gateway, mut to_gateway) = tokio::io::split(service);
    // Drain what the gateway writes, so its writer never blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = from_gateway.read_to_end(&mut sink).await;
    });
    let _ = to_gateway.write_all(data).await;
    let _ = to_gateway.shutdown().await;
    tokio::time::timeout(WAIT, link.closed()).await.expect("the link closes after any input");
    assert_eq!(link.open_streams(), 0, "streams left open after the close");
    drop(calls);
    drop(to_gateway);
    let _ = tokio::time::timeout(WAIT, drain).await;
}
