//! Proves that the worked examples in `docs/protocol.md` are the bytes this crate puts on
//! the wire. Each example there is a `<!-- example: NAME -->` line followed by a ```hex
//! block (`#` starts a comment); this test builds the value each name stands for, encodes
//! it as a full frame with [`FrameCodec`], and compares it with the block, then decodes the
//! block and compares it with the value. The set of examples in the document must equal
//! the set here, and every hex block in the document must be such an example, so the
//! specification and the code cannot drift apart unnoticed. WebSocket examples are stream
//! data frames whose payload is one message of [`weir_proto::websocket`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use weir_proto::websocket::{WsDecoder, WsMessage};
use weir_proto::{
    BodyMode, Cancel, CancelReason, Credit, EndpointDescriptor, ErrorCode, ErrorMessage, Frame, FrameCodec, FrameType,
    GoAway, HealthStatus, Heartbeat, Hello, Message, RequestHead, ResponseHead, Welcome, PROTOCOL_VERSION,
};

const MARKER_PREFIX: &str = "<!-- example:";

/// One example: the frame it encodes to, and a check that its payload decodes back to
/// the value it was built from.
struct Example {
    frame: Frame,
    decodes_back: Box<dyn Fn(Bytes) -> Result<(), String>>,
}

fn message<M>(correlation_id: u64, value: M) -> Example
where
    M: Message + PartialEq + Debug + 'static,
{
    let frame = value.to_frame(correlation_id).expect("example encodes");
    Example {
        frame,
        decodes_back: Box::new(move |payload| {
            let back = M::decode(payload).map_err(|e| e.to_string())?;
            if back == value {
                Ok(())
            } else {
                Err(format!("decoded {back:?}, expected {value:?}"))
            }
        }),
    }
}

fn stream_data(frame: Frame) -> Example {
    Example { frame, decodes_back: Box::new(|_| Ok(())) }
}

/// A stream data frame carrying one WebSocket message, which its payload decodes back to.
fn websocket(frame_type: FrameType, id: u64, message: WsMessage, end: bool) -> Example {
    let bytes = message.encode().expect("example message encodes");
    Example {
        frame: Frame::data(frame_type, id, bytes, end),
        decodes_back: Box::new(move |payload| {
            let mut decoder = WsDecoder::new(1024);
            decoder.push(&payload);
            let back = decoder.next_message().map_err(|e| e.to_string())?;
            decoder.finish().map_err(|e| e.to_string())?;
            match back {
                Some(back) if back == message => Ok(()),
                other => Err(format!("decoded {other:?}, expected {message:?}")),
            }
        }),
    }
}

fn text_plain() -> Vec<(String, Bytes)> {
    vec![("content-type".into(), Bytes::from_static(b"text/plain"))]
}

/// The values the document's examples show, by example name.
fn examples() -> BTreeMap<&'static str, Example> {
    let mut endpoint = EndpointDescriptor::new("GET", "/api/hello");
    endpoint.timeout = Some(Duration::from_secs(5));

    let mut all = BTreeMap::new();
    all.insert(
        "hello",
        message(
            0,
            Hello {
                protocol_version: PROTOCOL_VERSION,
                service: "greeter".into(),
                version: "1.0.0".into(),
                region: "eu-west".into(),
                instance_id: "greeter-1".into(),
                initial_window: weir_proto::DEFAULT_STREAM_WINDOW,
                token: String::new(),
                endpoints: vec![endpoint],
            },
        ),
    );
    all.insert(
        "welcome",
        message(
            0,
            Welcome {
                protocol_version: PROTOCOL_VERSION,
                initial_window: 64 * 1024,
                heartbeat_interval: Duration::from_secs(10),
            },
        ),
    );
    all.insert("heartbeat", message(0, Heartbeat::new(HealthStatus::Healthy, 2, 0.25)));
    all.insert(
        "heartbeat-probe",
        message(0, Heartbeat { probe: Some(1_000_000), ..Heartbeat::new(HealthStatus::Healthy, 3, 0.0) }),
    );
    all.insert(
        "request",
        message(
            1,
            RequestHead {
                method: "POST".into(),
                path: "/api/greet/ada".into(),
                query: "lang=en".into(),
                template: "/api/greet/{name}".into(),
                params: vec![("name".into(), "ada".into())],
                headers: text_plain(),
                body_mode: BodyMode::Buffered,
                body: Bytes::from_static(b"hi"),
                chunk_size: None,
            },
        ),
    );
    all.insert(
        "response",
        message(
            1,
            ResponseHead {
                status: 200,
                headers: text_plain(),
                body_mode: BodyMode::Buffered,
                body: Bytes::from_static(b"hello, ada"),
            },
        ),
    );
    all.insert(
        "request-stream-data-end",
        stream_data(Frame::data(FrameType::RequestStreamData, 2, Bytes::from_static(b"data"), true)),
    );
    all.insert("credit", message(2, Credit { increment: 64 * 1024 }));
    all.insert("cancel", message(3, Cancel { reason: CancelReason::Timeout }));
    all.insert("websocket-text", websocket(FrameType::ResponseStreamData, 4, WsMessage::Text("hi".into()), false));
    all.insert("websocket-close", websocket(FrameType::RequestStreamData, 4, WsMessage::close(1000, "done"), true));
    all.insert(
        "error",
        message(0, ErrorMessage { code: ErrorCode::RegistrationRefused, message: "GET /api/hello is taken".into() }),
    );
    all.insert("go-away", message(0, GoAway { reason: "upgrade".into() }));
    all
}

fn protocol_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The example blocks of the document: name → bytes. Panics on a malformed block, a
/// duplicate name, or a ```hex block without a marker.
fn doc_examples(doc: &str) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut lines = doc.lines().enumerate();
    let mut hex_fences = 0;
    while let Some((n, line)) = lines.next() {
        let line = line.trim();
        if line == "```hex" {
            hex_fences += 1;
        }
        let Some(rest) = line.strip_prefix(MARKER_PREFIX) else {
            continue;
        };
        let name = rest
            .strip_suffix("-->")
            .unwrap_or_else(|| panic!("line {}: marker not closed: {line}", n + 1))
            .trim()
            .to_owned();
        let (_, fence) = lines
            .by_ref()
            .find(|(_, l)| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("example {name}: no block after its marker"));
        assert_eq!(fence.trim(), "```hex", "example {name}: the marker must be followed by a ```hex block");
        hex_fences += 1;
        let mut hex = String::new();
        loop {
            let (m, l) = lines.next().unwrap_or_else(|| panic!("example {name}: block not closed"));
            if l.trim() == "```" {
                break;
            }
            let code = l.split('#').next().unwrap_or_default();
            hex.extend(code.chars().filter(|c| !c.is_whitespace()));
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "example {name}, line {}: not hex: {l}", m + 1);
        }
        let bytes = parse_hex(&name, &hex);
        assert!(found.insert(name.clone(), bytes).is_none(), "example {name} appears twice");
    }
    assert_eq!(
        hex_fences,
        found.len(),
        "every ```hex block in docs/protocol.md must follow an `{MARKER_PREFIX} NAME -->` marker"
    );
    found
}

fn parse_hex(name: &str, hex: &str) -> Vec<u8> {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("hex digits are ASCII");
            assert_eq!(pair.len(), 2, "example {name}: odd number of hex digits");
            u8::from_str_radix(pair, 16).expect("hex digits checked")
        })
        .collect()
}

/// Sixteen bytes a line, as the document writes them, for pasting after a change.
fn pretty(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn doc_has_exactly_the_examples_this_test_checks() {
    let in_doc: Vec<String> = doc_examples(&protocol_doc()).into_keys().collect();
    let here: Vec<String> = examples().into_keys().map(str::to_owned).collect();
    assert_eq!(in_doc, here);
}

#[test]
fn doc_examples_are_what_the_codec_encodes() {
    let doc = doc_examples(&protocol_doc());
    let mut failures = Vec::new();
    for (name, example) in examples() {
        let Some(expected) = doc.get(name) else {
            failures.push(format!("example {name} is missing from docs/protocol.md"));
            continue;
        };
        let mut wire = BytesMut::new();
        FrameCodec::default().encode(example.frame.clone(), &mut wire).expect("example frame encodes");
        if &wire[..] != expected.as_slice() {
            failures.push(format!(
                "example {name}: docs/protocol.md says\n{}\nbut the codec encodes\n{}",
                pretty(expected),
                pretty(&wire)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn doc_examples_decode_to_their_values() {
    let doc = doc_examples(&protocol_doc());
    for (name, example) in examples() {
        let bytes = doc.get(name).unwrap_or_else(|| panic!("example {name} is missing from docs/protocol.md"));
        let mut buf = BytesMut::from(bytes.as_slice());
        let frame = FrameCodec::default()
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("example {name}: {e}"))
            .unwrap_or_else(|| panic!("example {name}: incomplete frame"));
        assert!(buf.is_empty(), "example {name}: bytes after the frame");
        assert_eq!(frame, example.frame, "example {name}");
        (example.decodes_back)(frame.payload).unwrap_or_else(|e| panic!("example {name}: {e}"));
    }
}

#[test]
fn doc_frame_type_table_matches_the_code() {
    // The frame type table's rows, `| N | Name | ...`, in the section "Frame types".
    let doc = protocol_doc();
    let section = doc
        .split("\n## Frame types\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/protocol.md has a '## Frame types' section");
    let rows: Vec<(u8, String)> = section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let number = cells.get(1)?.parse::<u8>().ok()?;
            Some((number, cells.get(2)?.to_string()))
        })
        .collect();
    let expected: Vec<(u8, String)> = FrameType::ALL.iter().map(|t| (*t as u8, format!("{t:?}"))).collect();
    assert_eq!(rows, expected);
}
