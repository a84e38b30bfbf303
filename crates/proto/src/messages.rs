//! Typed payloads, one per frame type that carries a message (stream data frames carry
//! raw bytes and have none). Each implements [`Message`]: `encode` gives the payload
//! bytes, `decode` reads them back and refuses anything malformed, including trailing
//! bytes, so that one payload has exactly one encoding.

use std::time::Duration;

use bytes::Bytes;

use crate::wire::{Reader, Writer};
use crate::{Frame, FrameType, ProtoError};

/// A payload with a fixed frame type.
pub trait Message: Sized {
    /// The frame type that carries this payload.
    const FRAME_TYPE: FrameType;

    /// The payload bytes. Refuses a value the peer's `decode` would refuse (a field out
    /// of its range, a string or list too long for its length prefix), so a sender finds
    /// its own mistake instead of losing the connection over it.
    fn encode(&self) -> Result<Bytes, ProtoError>;

    /// Reads a payload; any malformed input is an error, never a panic.
    fn decode(payload: Bytes) -> Result<Self, ProtoError>;

    /// The payload in a frame for `correlation_id`.
    fn to_frame(&self, correlation_id: u64) -> Result<Frame, ProtoError> {
        Ok(Frame::new(Self::FRAME_TYPE, correlation_id, self.encode()?))
    }
}

/// Header name/value pairs, in order, names as sent (HTTP/2 lower-cases them).
pub type Headers = Vec<(String, Bytes)>;

/// What an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// Request/response HTTP.
    Http = 0,
    /// A WebSocket the gateway terminates and relays as stream data.
    WebSocket = 1,
}

/// A claim an endpoint requires of the caller: its type and, optionally, its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimRequirement {
    pub claim_type: String,
    pub value: Option<String>,
}

/// One endpoint a service serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointDescriptor {
    /// HTTP method in upper case, e.g. `GET`.
    pub method: String,
    /// Path template: literal segments, `{name}` parameters, a trailing `{*rest}` catch-all.
    pub path: String,
    pub kind: EndpointKind,
    /// Whether a large or unknown-length request body may be streamed to the handler.
    pub supports_streaming: bool,
    /// The endpoint's own timeout; `None` takes the gateway's default.
    pub timeout: Option<Duration>,
    pub requiring_claims: Vec<ClaimRequirement>,
    /// Accepted request content types; empty accepts any.
    pub content_types: Vec<String>,
    /// Largest request body the endpoint accepts; `None` leaves it to the gateway's limits.
    pub max_body_bytes: Option<u64>,
}

impl EndpointDescriptor {
    /// An HTTP endpoint with defaults: buffered, gateway timeout, no claims.
    pub fn new(method: &str, path: &str) -> Self {
        EndpointDescriptor {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            kind: EndpointKind::Http,
            supports_streaming: false,
            timeout: None,
            requiring_claims: Vec::new(),
            content_types: Vec::new(),
            max_body_bytes: None,
        }
    }
}

/// Service → gateway, the first frame on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u16,
    pub service: String,
    /// Semantic version of the service, e.g. `1.4.2`.
    pub version: String,
    pub region: String,
    /// Unique per running instance.
    pub instance_id: String,
    /// Bytes of stream data the gateway may send per stream before the service grants more.
    pub initial_window: u32,
    /// Shared secret proving the service's identity; empty when none is used.
    pub token: String,
    pub endpoints: Vec<EndpointDescriptor>,
}

/// Gateway → service: the Hello was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub protocol_version: u16,
    /// Bytes of stream data the service may send per stream before the gateway grants more.
    pub initial_window: u32,
    /// How often the gateway expects a heartbeat.
    pub heartbeat_interval: Duration,
}

/// How an instance reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    Healthy = 0,
    Degraded = 1,
    /// Finishing in-flight requests; send no new ones.
    Draining = 2,
}

/// Both ways: liveness and load.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub status: HealthStatus,
    pub in_flight: u32,
    /// Fraction of recent requests that failed, in `[0, 1]`.
    pub error_rate: f32,
    /// Version 2 on. From the gateway: a value the service sends back unchanged in a
    /// heartbeat of its own at once, so the gateway can time the round trip; from the
    /// service: the probe it answers. `None` otherwise, and always towards a version 1
    /// peer.
    pub probe: Option<u64>,
}

impl Heartbeat {
    /// A heartbeat without a probe.
    pub fn new(status: HealthStatus, in_flight: u32, error_rate: f32) -> Self {
        Heartbeat { status, in_flight, error_rate, probe: None }
    }
}

/// Gateway → service, on the connection (id 0): dial the gateway again at once; this
/// connection stays up, serving the streams it has and any request still sent on it,
/// until the gateway closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// Why, for the service's log.
    pub reason: String,
}

/// Service → gateway: the complete new endpoint list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointsUpdate {
    pub endpoints: Vec<EndpointDescriptor>,
}

/// How a head's body travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyMode {
    /// The whole body is in the head's `body` field.
    Buffered = 0,
    /// Stream data frames follow, the last one flagged END_STREAM.
    Streamed = 1,
}

/// Gateway → service: a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request path as the client sent it (percent-encoded).
    pub path: String,
    /// The raw query string without `?`; empty when none.
    pub query: String,
    /// The template of the endpoint the gateway matched.
    pub template: String,
    /// Template parameters, decoded.
    pub params: Vec<(String, String)>,
    pub headers: Headers,
    pub body_mode: BodyMode,
    /// The body when buffered; empty when streamed.
    pub body: Bytes,
    /// The largest response data chunk the gateway asks for (the mount's `chunk_size`);
    /// `None` when it does not say, and the service picks. On the wire it is the header
    /// entry [`CHUNK_SIZE_FIELD`], appended after the request's own headers, so that a
    /// receiver that does not know it reads a header no HTTP request can carry.
    pub chunk_size: Option<u32>,
}

/// The name of the header entry that carries [`RequestHead::chunk_size`]: a leading `:`
/// is not a valid HTTP field name, so no client header can be mistaken for it.
pub const CHUNK_SIZE_FIELD: &str = ":chunk-size";

/// Service → gateway: a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Headers,
    pub body_mode: BodyMode,
    pub body: Bytes,
}

/// Why a stream is abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    ClientDisconnected = 1,
    Timeout = 2,
    PayloadLimitExceeded = 3,
    Shutdown = 4,
    /// An operator cancelled it.
    Administrative = 5,
    /// The handler failed after it started answering.
    HandlerFailed = 6,
}

/// Either way: abandon a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancel {
    pub reason: CancelReason,
}

/// Either way: the receiver of a stream grants the sender `increment` more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    pub increment: u32,
}

/// What went wrong, in an Error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The peer broke the protocol; the connection closes.
    ProtocolViolation = 1,
    /// Authentication failed; the connection closes.
    Unauthorized = 2,
    /// The Hello or an EndpointsUpdate was refused (conflict, bad template, prefix).
    RegistrationRefused = 3,
    /// The stream failed on the sender's side.
    StreamFailed = 4,
    /// The sender is shutting down.
    ShuttingDown = 5,
}

/// Either way: a refusal or failure, for a stream or (correlation id 0) the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    pub code: ErrorCode,
    pub message: String,
}

macro_rules! byte_enum {
    ($ty:ident, $field:literal, [$($variant:ident),+]) => {
        impl $ty {
            fn read(r: &mut Reader) -> Result<Self, ProtoError> {
                let v = r.u8($field)?;
                $(if v == $ty::$variant as u8 { return Ok($ty::$variant); })+
                Err(ProtoError::InvalidValue { field: $field, detail: format!("unknown value {v}") })
            }
        }
    };
}

byte_enum!(EndpointKind, "endpoint kind", [Http, WebSocket]);
byte_enum!(HealthStatus, "health status", [Healthy, Degraded, Draining]);
byte_enum!(BodyMode, "body mode", [Buffered, Streamed]);
byte_enum!(
    CancelReason,
    "cancel reason",
    [ClientDisconnected, Timeout, PayloadLimitExceeded, Shutdown, Administrative, HandlerFailed]
);

impl ErrorCode {
    fn read(r: &mut Reader) -> Result<Self, ProtoError> {
        let v = r.u16("error code")?;
        [
            ErrorCode::ProtocolViolation,
            ErrorCode::Unauthorized,
            ErrorCode::RegistrationRefused,
            ErrorCode::StreamFailed,
            ErrorCode::ShuttingDown,
        ]
        .into_iter()
        .find(|c| *c as u16 == v)
        .ok_or(ProtoError::InvalidValue { field: "error code", detail: format!("unknown value {v}") })
    }
}

/// Heartbeat error rates are fractions in `[0, 1]`; NaN is refused too.
fn check_error_rate(error_rate: f32) -> Result<(), ProtoError> {
    if !(0.0..=1.0).contains(&error_rate) {
        return Err(ProtoError::InvalidValue {
            field: "error rate",
            detail: format!("{error_rate} is outside [0, 1]"),
        });
    }
    Ok(())
}

/// Response statuses are three-digit codes.
fn check_status(status: u16) -> Result<(), ProtoError> {
    if !(100..=999).contains(&status) {
        return Err(ProtoError::InvalidValue { field: "status", detail: format!("{status}") });
    }
    Ok(())
}

/// A credit of zero bytes grants nothing and is refused.
fn check_credit_increment(increment: u32) -> Result<(), ProtoError> {
    if increment == 0 {
        return Err(ProtoError::InvalidValue { field: "credit increment", detail: "zero".into() });
    }
    Ok(())
}

fn write_duration_ms(w: &mut Writer, d: Duration) {
    w.u32(u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
}

fn write_headers(w: &mut Writer, headers: &Headers) -> Result<(), ProtoError> {
    write_header_list(w, headers.iter(), headers.len())
}

/// The `count` entries of `headers` as the counted list `write_headers` writes.
fn write_header_list<'h>(
    w: &mut Writer,
    headers: impl Iterator<Item = &'h (String, Bytes)>,
    count: usize,
) -> Result<(), ProtoError> {
    let max = usize::from(u16::MAX);
    let counted = u16::try_from(count).map_err(|_| ProtoError::TooLong { field: "headers", len: count, max })?;
    w.u16(counted);
    for (name, value) in headers {
        w.str("header name", name)?;
        w.bytes("header value", value)?;
    }
    Ok(())
}

fn read_headers(r: &mut Reader) -> Result<Headers, ProtoError> {
    r.list("headers", |r| Ok((r.str("header name")?, r.bytes("header value")?)))
}

fn write_endpoints(w: &mut Writer, endpoints: &[EndpointDescriptor]) -> Result<(), ProtoError> {
    w.list("endpoints", endpoints, |w, e| {
        w.str("method", &e.method)?;
        w.str("path", &e.path)?;
        w.u8(e.kind as u8);
        w.bool(e.supports_streaming);
        write_duration_ms(w, e.timeout.unwrap_or(Duration::ZERO));
        w.list("requiring claims", &e.requiring_claims, |w, c| {
            w.str("claim type", &c.claim_type)?;
            w.option(c.value.as_ref(), |w, v| w.str("claim value", v))
        })?;
        w.list("content types", &e.content_types, |w, t| w.str("content type", t))?;
        w.option(e.max_body_bytes.as_ref(), |w, v| {
            w.u64(*v);
            Ok(())
        })
    })
}

fn read_endpoints(r: &mut Reader) -> Result<Vec<EndpointDescriptor>, ProtoError> {
    r.list("endpoints", |r| {
        let method = r.str("method")?;
        let path = r.str("path")?;
        let kind = EndpointKind::read(r)?;
        let supports_streaming = r.bool("supports streaming")?;
        let timeout_ms = r.u32("timeout")?;
        let requiring_claims = r.list("requiring claims", |r| {
            Ok(ClaimRequirement {
                claim_type: r.str("claim type")?,
                value: r.option("claim value", |r| r.str("claim value"))?,
            })
        })?;
        let content_types = r.list("content types", |r| r.str("content type"))?;
        let max_body_bytes = r.option("max body bytes", |r| r.u64("max body bytes"))?;
        Ok(EndpointDescriptor {
            method,
            path,
            kind,
            supports_streaming,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms))),
            requiring_claims,
            content_types,
            max_body_bytes,
        })
    })
}

impl Message for Hello {
    const FRAME_TYPE: FrameType = FrameType::Hello;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        let mut w = Writer::new();
        w.u16(self.protocol_version);
        w.str("service", &self.service)?;
        w.str("version", &self.version)?;
        w.str("region", &self.region)?;
        w.str("instance id", &self.instance_id)?;
        w.u32(self.initial_window);
        w.str("token", &self.token)?;
        write_endpoints(&mut w, &self.endpoints)?;
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let hello = Hello {
            protocol_version: r.u16("protocol version")?,
            service: r.str("service")?,
            version: r.str("version")?,
            region: r.str("region")?,
            instance_id: r.str("instance id")?,
            initial_window: r.u32("initial window")?,
            token: r.str("token")?,
            endpoints: read_endpoints(&mut r)?,
        };
        r.finish()?;
        Ok(hello)
    }
}

impl Message for Welcome {
    const FRAME_TYPE: FrameType = FrameType::Welcome;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        let mut w = Writer::new();
        w.u16(self.protocol_version);
        w.u32(self.initial_window);
        write_duration_ms(&mut w, self.heartbeat_interval);
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let welcome = Welcome {
            protocol_version: r.u16("protocol version")?,
            initial_window: r.u32("initial window")?,
            heartbeat_interval: Duration::from_millis(u64::from(r.u32("heartbeat interval")?)),
        };
        r.finish()?;
        Ok(welcome)
    }
}

impl Message for Heartbeat {
    const FRAME_TYPE: FrameType = FrameType::Heartbeat;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        // Checked on both sides: a value the peer's decoder refuses would cost the
        // connection, so the sender finds out locally instead.
        check_error_rate(self.error_rate)?;
        let mut w = Writer::new();
        w.u8(self.status as u8);
        w.u32(self.in_flight);
        w.u32(self.error_rate.to_bits());
        if let Some(probe) = self.probe {
            w.u64(probe);
        }
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let status = HealthStatus::read(&mut r)?;
        let in_flight = r.u32("in flight")?;
        let error_rate = f32::from_bits(r.u32("error rate")?);
        check_error_rate(error_rate)?;
        // The probe is the payload's optional tail of exactly 8 bytes; fewer are trailing
        // bytes, as more are.
        let probe = if r.remaining() >= 8 { Some(r.u64("probe")?) } else { None };
        r.finish()?;
        Ok(Heartbeat { status, in_flight, error_rate, probe })
    }
}

impl Message for EndpointsUpdate {
    const FRAME_TYPE: FrameType = FrameType::EndpointsUpdate;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        let mut w = Writer::new();
        write_endpoints(&mut w, &self.endpoints)?;
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let endpoints = read_endpoints(&mut r)?;
        r.finish()?;
        Ok(EndpointsUpdate { endpoints })
    }
}

impl EndpointsUpdate {
    /// How many endpoints `payload` declares, read from the list's count prefix alone: a
    /// receiver that accepts fewer refuses the update before decoding (and allocating
    /// for) any of them. The rest of the payload is not looked at.
    pub fn declared_count(payload: &Bytes) -> Result<usize, ProtoError> {
        Reader::new(payload.clone()).u16("endpoints").map(usize::from)
    }
}

/// Room reserved for a head's fields besides its body (grown if the headers need more).
const HEAD_ROOM: usize = 512;

impl Message for RequestHead {
    const FRAME_TYPE: FrameType = FrameType::Request;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        let mut w = Writer::with_capacity(HEAD_ROOM + self.body.len());
        w.str("method", &self.method)?;
        w.str("path", &self.path)?;
        w.str("query", &self.query)?;
        w.str("template", &self.template)?;
        w.list("params", &self.params, |w, (name, value)| {
            w.str("param name", name)?;
            w.str("param value", value)
        })?;
        match self.chunk_size {
            None => write_headers(&mut w, &self.headers)?,
            Some(size) => {
                let field = (CHUNK_SIZE_FIELD.to_owned(), Bytes::from(size.to_string()));
                write_header_list(&mut w, self.headers.iter().chain([&field]), self.headers.len() + 1)?;
            }
        }
        w.u8(self.body_mode as u8);
        w.bytes("body", &self.body)?;
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let mut head = RequestHead {
            method: r.str("method")?,
            path: r.str("path")?,
            query: r.str("query")?,
            template: r.str("template")?,
            params: r.list("params", |r| Ok((r.str("param name")?, r.str("param value")?)))?,
            headers: read_headers(&mut r)?,
            body_mode: BodyMode::read(&mut r)?,
            body: r.bytes("body")?,
            chunk_size: None,
        };
        r.finish()?;
        head.chunk_size = take_chunk_size(&mut head.headers)?;
        Ok(head)
    }
}

/// Removes the [`CHUNK_SIZE_FIELD`] entry from `headers` and reads its value. As
/// everywhere in the protocol, a head has one encoding: the entry is the last one and
/// appears once, its value a decimal count of bytes, at least 1, without sign or leading
/// zero.
fn take_chunk_size(headers: &mut Headers) -> Result<Option<u32>, ProtoError> {
    let Some(at) = headers.iter().position(|(name, _)| name == CHUNK_SIZE_FIELD) else { return Ok(None) };
    let invalid = |detail: String| ProtoError::InvalidValue { field: "chunk size", detail };
    if at + 1 != headers.len() {
        return Err(invalid("its entry must be the last header, and only one".into()));
    }
    let (_, value) = headers.remove(at);
    let text = std::str::from_utf8(&value).ok();
    let size = text.and_then(|t| t.parse::<u32>().ok()).filter(|n| *n > 0 && text == Some(n.to_string().as_str()));
    size.map(Some).ok_or_else(|| invalid(format!("{:?} is not a count of bytes", String::from_utf8_lossy(&value))))
}

impl Message for ResponseHead {
    const FRAME_TYPE: FrameType = FrameType::Response;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        check_status(self.status)?;
        let mut w = Writer::with_capacity(HEAD_ROOM + self.body.len());
        w.u16(self.status);
        write_headers(&mut w, &self.headers)?;
        w.u8(self.body_mode as u8);
        w.bytes("body", &self.body)?;
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let status = r.u16("status")?;
        check_status(status)?;
        let head = ResponseHead {
            status,
            headers: read_headers(&mut r)?,
            body_mode: BodyMode::read(&mut r)?,
            body: r.bytes("body")?,
        };
        r.finish()?;
        Ok(head)
    }
}

impl Message for Cancel {
    const FRAME_TYPE: FrameType = FrameType::Cancel;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        let mut w = Writer::new();
        w.u8(self.reason as u8);
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let reason = CancelReason::read(&mut r)?;
        r.finish()?;
        Ok(Cancel { reason })
    }
}

impl Message for Credit {
    const FRAME_TYPE: FrameType = FrameType::Credit;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        check_credit_increment(self.increment)?;
        let mut w = Writer::new();
        w.u32(self.increment);
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let increment = r.u32("credit increment")?;
        check_credit_increment(increment)?;
        r.finish()?;
        Ok(Credit { increment })
    }
}

impl Message for GoAway {
    const FRAME_TYPE: FrameType = FrameType::GoAway;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        let mut w = Writer::new();
        w.str("go away reason", &self.reason)?;
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let reason = r.str("go away reason")?;
        r.finish()?;
        Ok(GoAway { reason })
    }
}

impl Message for ErrorMessage {
    const FRAME_TYPE: FrameType = FrameType::Error;

    fn encode(&self) -> Result<Bytes, ProtoError> {
        let mut w = Writer::new();
        w.u16(self.code as u16);
        w.str("error message", &self.message)?;
        Ok(w.finish())
    }

    fn decode(payload: Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(payload);
        let code = ErrorCode::read(&mut r)?;
        let message = r.str("error message")?;
        r.finish()?;
        Ok(ErrorMessage { code, message })
    }
}
