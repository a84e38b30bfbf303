//! HTTP/2 attacks sent with real frames over TCP ([`crate::h2_wire`]), each ending with
//! the attacker's connection closed while other clients, on their own connections, keep
//! being served: rapid reset (HEADERS + RST_STREAM by the thousand; and streams reset
//! one by one after they were accepted, which is not counted but cancels each call), endless
//! CONTINUATION, a flood of streams the gateway must reset for malformed headers,
//! SETTINGS and PING floods from a client that never reads the ACKs, and an HPACK bomb.
//! Also: the `[server.http2]` settings reach the wire (the gateway's SETTINGS and its
//! connection WINDOW_UPDATE), a stream over `max_concurrent_streams` is refused, DATA
//! beyond `initial_stream_window` resets its stream, a
//! header list over `max_header_list_size` is answered 431, and the ping interval and
//! timeout close a silent peer. What the gateway does against each attack, and what the
//! RFC asks, is tabled in `docs/conformance.md`.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use weir_gateway::config::Http2Config;

use crate::common::*;
use crate::h2_wire::*;

/// The demo behind a gateway whose `[server.http2]` settings `set` changes.
async fn demo_with_h2(set: impl FnOnce(&mut Http2Config)) -> Harness {
    let mut cfg = config();
    set(&mut cfg.server.http2);
    Harness::with_demo(cfg).await
}

/// h2c clients, each on its own connection, sending GETs in a loop while an attack runs.
struct Bystanders {
    stop: CancellationToken,
    clients: Vec<JoinHandle<usize>>,
}

impl Bystanders {
    fn start(h: &Harness, count: usize) -> Bystanders {
        let stop = CancellationToken::new();
        let clients = (0..count)
            .map(|_| {
                let (stop, url) = (stop.clone(), h.url("/api/hello"));
                tokio::spawn(async move {
                    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
                    let mut served = 0;
                    while !stop.is_cancelled() || served == 0 {
                        let response = tokio::time::timeout(WAIT, client.get(&url).send()).await;
                        let response = response.expect("a bystander waited too long").expect("a bystander failed");
                        assert_eq!(response.status(), StatusCode::OK);
                        served += 1;
                    }
                    served
                })
            })
            .collect();
        Bystanders { stop, clients }
    }

    /// Stops them; each must have been served at least once, and never refused.
    async fn finish(self) -> usize {
        self.stop.cancel();
        let served: Vec<usize> = join_all(self.clients).await.into_iter().map(|r| r.expect("bystander")).collect();
        served.iter().sum()
    }
}

/// Runs `attack` on a fresh connection (small socket buffers when `small`) while four
/// bystanders are served; returns what the gateway sent until it closed the attacker,
/// and how long the attack lived.
async fn attack<F, Fut>(h: &Harness, small: bool, attack: F) -> (Closed, Duration)
where
    F: FnOnce(tokio::net::tcp::OwnedWriteHalf) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let bystanders = Bystanders::start(h, 4);
    let started = Instant::now();
    let socket = if small { connect_small(h.addr).await } else { connect(h.addr).await };
    let (reader, writer) = socket.into_split();
    let writing = tokio::spawn(attack(writer));
    let closed = read_until_closed(reader).await;
    let lived = closed.at - started;
    writing.abort();
    let served = bystanders.finish().await;
    assert!(served >= 4, "bystanders served {served}");
    (closed, lived)
}

/// The debug data of the gateway's GOAWAY.
fn goaway_debug(closed: &Closed) -> String {
    let goaway = closed.frames.iter().find(|f| f.kind == GOAWAY).expect("a GOAWAY");
    String::from_utf8_lossy(&goaway.payload[8..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_closed_with_enhance_your_calm_while_others_are_served() {
    let h = demo_with_h2(|c| c.max_pending_accept_reset_streams = 10).await;
    let (closed, lived) = attack(&h, false, |mut writer| async move {
        // 5,000 streams opened and cancelled at once, 500 per write.
        flood(&mut writer, 10, |batch| {
            (0..500u32)
                .flat_map(|i| {
                    let stream = (batch as u32 * 500 + i) * 2 + 1;
                    [get(stream, "/api/slow?ms=1000"), rst_stream(stream, CANCEL)].concat()
                })
                .collect()
        })
        .await;
    })
    .await;
    assert_eq!(
        closed.goaway(),
        Some(ENHANCE_YOUR_CALM),
        "{:?}",
        closed.frames.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
    assert_eq!(goaway_debug(&closed), "too_many_resets");
    assert_eq!(closed.count(HEADERS), 0, "a reset stream was answered");
    assert!(lived < Duration::from_secs(3), "closed late: {lived:?}");
    until(|| h.gateway.connections().open() == 0).await;
}

/// Writes `bytes` and a PING, and reads until its answer: the gateway has processed
/// everything before it. `false` once the connection is closed; a GOAWAY's code is kept.
async fn round_trip(socket: &mut tokio::net::TcpStream, bytes: Vec<u8>, goaway: &mut Option<u32>) -> bool {
    if socket.write_all(&[bytes, ping(1)].concat()).await.is_err() {
        return false;
    }
    loop {
        match tokio::time::timeout(WAIT, read_frame(socket)).await.expect("no PING answer") {
            Some(frame) if frame.kind == PING && frame.flags & ACK != 0 => return true,
            Some(frame) if frame.kind == GOAWAY => *goaway = frame.goaway_code(),
            Some(_) => {}
            None => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_of_accepted_streams_are_bounded_by_cancellation_while_others_are_served() {
    let h = demo_with_h2(|_| {}).await;
    let bystanders = Bystanders::start(&h, 4);
    let mut socket = connect(h.addr).await;
    let mut goaway = None;
    // Each stream is opened, accepted (its call started), and only then reset: resets
    // that `max_pending_accept_reset_streams` does not count.
    for pair in 0..300u32 {
        let stream = pair * 2 + 1;
        if !round_trip(&mut socket, get(stream, "/api/slow?ms=2000"), &mut goaway).await
            || !round_trip(&mut socket, rst_stream(stream, CANCEL), &mut goaway).await
        {
            break;
        }
    }
    eprintln!("300 accepted-then-reset streams: GOAWAY {goaway:?}");
    assert!(bystanders.finish().await >= 4);
    // Each reset cancelled its call at once (a call left running would take 2 s).
    let cancelled = tokio::time::timeout(Duration::from_secs(1), until(|| h.gateway.registry().list().is_empty()));
    cancelled.await.expect("calls outlived their streams' resets");
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_continuation_is_closed_within_a_few_frames() {
    let h = demo_with_h2(|_| {}).await;
    let before = resident_bytes();
    let (closed, lived) = attack(&h, false, |mut writer| async move {
        let head = request_block("GET", "/api/hello");
        writer.write_all(&frame(HEADERS, END_STREAM, 1, &head)).await.unwrap();
        // Header fields that are each whole, 8 KB a frame, never END_HEADERS; 3.2 MB at
        // most, which the gateway's lingering close reads rather than resetting.
        let field = literal("x-filler", &[b'a'; 8000]);
        flood(&mut writer, 400, |_| frame(CONTINUATION, 0, 1, &field)).await;
    })
    .await;
    let grown = resident_bytes().saturating_sub(before);
    eprintln!("continuation flood: closed after {lived:?}, resident memory grew {} KiB", grown / 1024);
    assert_eq!(closed.goaway(), Some(ENHANCE_YOUR_CALM));
    assert_eq!(closed.count(HEADERS), 0, "the endless block was answered");
    assert!(lived < Duration::from_secs(3), "closed late: {lived:?}");
    assert!(grown < 64 * 1024 * 1024, "resident memory grew {grown} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_split_into_tiny_continuations_is_closed_too() {
    let h = demo_with_h2(|_| {}).await;
    let (closed, _) = attack(&h, false, |mut writer| async move {
        writer.write_all(&frame(HEADERS, END_STREAM, 1, &request_block("GET", "/api/hello"))).await.unwrap();
        // Empty CONTINUATION frames: no bytes at all, only frames.
        flood(&mut writer, 100_000, |_| frame(CONTINUATION, 0, 1, &[])).await;
    })
    .await;
    assert_eq!(closed.goaway(), Some(ENHANCE_YOUR_CALM));
    assert_eq!(goaway_debug(&closed), "too_many_continuations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_for_malformed_headers_are_bounded_by_max_local_error_reset_streams() {
    let h = demo_with_h2(|c| c.max_local_error_reset_streams = 10).await;
    let (closed, _) = attack(&h, false, |mut writer| async move {
        // A connection-specific field is malformed in HTTP/2: the gateway resets the stream.
        let malformed = [request_block("GET", "/api/hello"), literal("connection", b"close")].concat();
        flood(&mut writer, 1000, |i| frame(HEADERS, END_HEADERS | END_STREAM, i as u32 * 2 + 1, &malformed)).await;
    })
    .await;
    let resets = closed.frames.iter().filter_map(Frame::reset_code).collect::<Vec<_>>();
    assert!(resets.iter().all(|code| *code == PROTOCOL_ERROR), "{resets:?}");
    assert!(resets.len() <= 10, "{} resets before the GOAWAY", resets.len());
    assert_eq!(closed.goaway(), Some(ENHANCE_YOUR_CALM));
    assert_eq!(goaway_debug(&closed), "too_many_internal_resets");
}

/// A client that floods `frame` without reading the acknowledgements: the gateway stops
/// reading it (one acknowledgement pending at a time), and its stalled writes close the
/// connection at `send_timeout`.
async fn unread_flood(kind: &str, flood_frame: Vec<u8>) {
    let h = Harness::with_demo({
        let mut cfg = config();
        cfg.server.send_timeout = Duration::from_millis(500);
        cfg
    })
    .await;
    let before = resident_bytes();
    let bystanders = Bystanders::start(&h, 4);
    let started = Instant::now();
    let (_reader, mut writer) = connect_small(h.addr).await.into_split();
    let batch = flood_frame.repeat(256);
    let ended = tokio::time::timeout(WAIT, flood(&mut writer, usize::MAX, |_| batch.clone())).await;
    let lived = started.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    let writes = ended.expect("the gateway kept reading the flood").expect("the flood ended");
    eprintln!(
        "{kind} flood: {} frames written, closed after {lived:?}, memory grew {} KiB",
        writes * 256,
        grown / 1024
    );
    assert!(lived < Duration::from_millis(500) + Duration::from_secs(4), "closed late: {lived:?}");
    assert!(grown < 64 * 1024 * 1024, "resident memory grew {grown} bytes");
    bystanders.finish().await;
    until(|| h.gateway.connections().open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_the_acks_is_closed() {
    unread_flood("PING", ping(7)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_that_never_reads_the_acks_is_closed() {
    unread_flood("SETTINGS", settings(&[(SETTINGS_HEADER_TABLE_SIZE, 4096)])).await;
}

/// A header block that puts a 4,000-byte field in the HPACK table, then refers to it
/// `references` times (one byte each).
fn hpack_bomb(references: usize) -> Vec<u8> {
    let mut block = request_block("GET", "/api/hello");
    block.extend(literal_indexed("x-bomb", &[b'b'; 4000]));
    for _ in 0..references {
        block.extend(indexed(62));
    }
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_before_it_is_allocated() {
    let h = demo_with_h2(|_| {}).await;
    let before = resident_bytes();
    let (closed, lived) = attack(&h, false, |mut writer| async move {
        // 12,000 references: 48 MB of header fields in a 16 KB frame.
        let _ = writer.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &hpack_bomb(12_000))).await;
    })
    .await;
    let grown = resident_bytes().saturating_sub(before);
    eprintln!("HPACK bomb: closed after {lived:?}, resident memory grew {} KiB", grown / 1024);
    assert_eq!(closed.goaway(), Some(ENHANCE_YOUR_CALM));
    assert_eq!(goaway_debug(&closed), "header_list_way_too_large");
    assert_eq!(closed.count(HEADERS), 0, "the bomb was answered");
    assert!(grown < 32 * 1024 * 1024, "resident memory grew {grown} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_max_header_list_size_is_answered_431_and_the_connection_goes_on() {
    let h = demo_with_h2(|c| c.max_header_list_size = 8 * 1024).await;
    let (reader, mut writer) = connect(h.addr).await.into_split();
    // Three references: about 12 KB decoded, over the 8 KiB list but under four times it.
    writer.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &hpack_bomb(3))).await.unwrap();
    writer.write_all(&get(3, "/api/hello")).await.unwrap();
    let mut reader = reader;
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut reader)).await.expect("no answer").expect("closed");
        if frame.kind == HEADERS {
            statuses.push((frame.stream, frame.payload.clone()));
        }
    }
    // 200 is static-table entry 8 (0x88). 431 is a literal with `:status`'s name and a
    // Huffman-coded value (RFC 7541 Appendix B: 4 = 011010, 3 = 011001, 1 = 00001, then
    // ones to the byte): 0x83 (Huffman, 3 bytes) 0x69 0x90 0xff.
    let (first, second) = (&statuses[0], &statuses[1]);
    assert_eq!(first.0, 1);
    assert!(first.1.windows(4).any(|w| w == [0x83, 0x69, 0x90, 0xff]), "stream 1 was not answered 431: {:?}", first.1);
    assert_eq!((second.0, second.1[0]), (3, 0x88), "stream 3 was not answered 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http2_settings_reach_the_wire() {
    let h = demo_with_h2(|c| {
        c.max_concurrent_streams = 7;
        c.initial_stream_window = 100_000;
        c.initial_connection_window = 300_000;
        c.max_header_list_size = 10_000;
    })
    .await;
    let (mut reader, _writer) = connect(h.addr).await.into_split();
    let first = tokio::time::timeout(WAIT, read_frame(&mut reader)).await.unwrap().expect("the gateway's SETTINGS");
    assert_eq!(first.kind, SETTINGS);
    assert_eq!(first.setting(SETTINGS_MAX_CONCURRENT_STREAMS), Some(7));
    assert_eq!(first.setting(SETTINGS_INITIAL_WINDOW_SIZE), Some(100_000));
    assert_eq!(first.setting(SETTINGS_MAX_HEADER_LIST_SIZE), Some(10_000));
    assert_eq!(first.setting(SETTINGS_ENABLE_CONNECT_PROTOCOL), Some(1));
    let update = loop {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut reader)).await.unwrap().expect("a WINDOW_UPDATE");
        if frame.kind == WINDOW_UPDATE && frame.stream == 0 {
            break frame;
        }
    };
    let increment = u32::from_be_bytes(update.payload[..4].try_into().unwrap());
    assert_eq!(increment, 300_000 - 65_535, "the connection window is not the configured one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_initial_stream_window_resets_the_stream() {
    let h = demo_with_h2(|c| c.initial_stream_window = 8 * 1024).await;
    let (mut reader, mut writer) = connect(h.addr).await.into_split();
    // The window applies once the gateway's SETTINGS are acknowledged (RFC 9113 §6.5.3).
    let first = tokio::time::timeout(WAIT, read_frame(&mut reader)).await.unwrap().expect("the gateway's SETTINGS");
    assert_eq!(first.setting(SETTINGS_INITIAL_WINDOW_SIZE), Some(8 * 1024));
    let upload = frame(HEADERS, END_HEADERS, 1, &request_block("POST", "/stream/upload"));
    // The window's 8 KiB, then 1,000 bytes more, before any WINDOW_UPDATE could come.
    let over =
        [frame(SETTINGS, ACK, 0, &[]), upload, data(1, 0, &[b'u'; 8 * 1024]), data(1, END_STREAM, &[b'v'; 1000])];
    let over = over.concat();
    writer.write_all(&over).await.unwrap();
    let reset = loop {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut reader)).await.expect("no reset").expect("closed");
        if let Some(code) = frame.reset_code() {
            break (frame.stream, code);
        }
    };
    assert_eq!(reset, (1, FLOW_CONTROL_ERROR));
    // The connection goes on.
    writer.write_all(&get(3, "/api/hello")).await.unwrap();
    let answered = loop {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut reader)).await.expect("no answer").expect("closed");
        if frame.kind == HEADERS {
            break frame.stream;
        }
    };
    assert_eq!(answered, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_max_concurrent_streams_is_refused() {
    let h = demo_with_h2(|c| c.max_concurrent_streams = 4).await;
    let (mut reader, mut writer) = connect(h.addr).await.into_split();
    for stream in [1, 3, 5, 7, 9] {
        writer.write_all(&get(stream, "/api/slow?ms=3000")).await.unwrap();
    }
    let refused = loop {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut reader)).await.expect("no refusal").expect("closed");
        assert_ne!(frame.kind, HEADERS, "a slow response came before the refusal");
        if let Some(code) = frame.reset_code() {
            break (frame.stream, code);
        }
    };
    assert_eq!(refused, (9, REFUSED_STREAM));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_interval_and_timeout_close_a_silent_peer_with_a_request_in_flight() {
    let h = demo_with_h2(|c| {
        c.keep_alive_interval = Some(Duration::from_millis(200));
        c.keep_alive_timeout = Some(Duration::from_millis(300));
    })
    .await;
    // idle_timeout keeps its default (30 s): it alone would ping only after 15 s.
    let started = Instant::now();
    let (reader, mut writer) = connect(h.addr).await.into_split();
    writer.write_all(&get(1, "/api/slow?ms=4000")).await.unwrap();
    let closed = read_until_closed(reader).await;
    let lived = closed.at - started;
    assert!(closed.count(PING) >= 1, "never pinged");
    assert!(lived >= Duration::from_millis(450), "closed before interval + timeout: {lived:?}");
    assert!(lived < Duration::from_millis(500) + Duration::from_millis(2500), "closed late: {lived:?}");
    assert_eq!(closed.count(HEADERS), 0, "answered without the pings");
}
