//! Proves the codec's three promises on generated input: every message type and every
//! frame survives encode-then-decode unchanged (directly and wrapped in a frame through
//! [`FrameCodec`]); frames concatenated on a byte stream decode to the same frames however
//! the stream is split into reads; and decoding arbitrary or mutated bytes never panics,
//! while any payload that does decode has exactly one encoding (re-encoding gives the same
//! bytes back). It also checks, for one sample of each payload, that trailing bytes and
//! truncation at every cut point are refused, and that out-of-range values are refused on
//! both sides.

use std::fmt::Debug;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio_util::codec::{Decoder, Encoder};
use weir_proto::{
    BodyMode, Cancel, CancelReason, ClaimRequirement, Credit, EndpointDescriptor, EndpointKind, EndpointsUpdate,
    ErrorCode, ErrorMessage, Frame, FrameCodec, FrameFlags, FrameType, GoAway, HealthStatus, Heartbeat, Hello, Message,
    ProtoError, RequestHead, ResponseHead, Welcome, CHUNK_SIZE_FIELD, DEFAULT_MAX_FRAME_PAYLOAD,
};

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Any Unicode text, including control characters and multi-byte characters.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max_chars).prop_map(String::from_iter)
}

fn blob(max_len: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max_len).prop_map(Bytes::from)
}

fn headers() -> impl Strategy<Value = Vec<(String, Bytes)>> {
    prop::collection::vec((text(12), blob(24)), 0..5)
}

fn endpoint_kind() -> impl Strategy<Value = EndpointKind> {
    prop_oneof![Just(EndpointKind::Http), Just(EndpointKind::WebSocket)]
}

fn health_status() -> impl Strategy<Value = HealthStatus> {
    prop_oneof![Just(HealthStatus::Healthy), Just(HealthStatus::Degraded), Just(HealthStatus::Draining)]
}

fn body_mode() -> impl Strategy<Value = BodyMode> {
    prop_oneof![Just(BodyMode::Buffered), Just(BodyMode::Streamed)]
}

fn cancel_reason() -> impl Strategy<Value = CancelReason> {
    prop_oneof![
        Just(CancelReason::ClientDisconnected),
        Just(CancelReason::Timeout),
        Just(CancelReason::PayloadLimitExceeded),
        Just(CancelReason::Shutdown),
        Just(CancelReason::Administrative),
        Just(CancelReason::HandlerFailed),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::ProtocolViolation),
        Just(ErrorCode::Unauthorized),
        Just(ErrorCode::RegistrationRefused),
        Just(ErrorCode::StreamFailed),
        Just(ErrorCode::ShuttingDown),
    ]
}

/// Timeouts travel in whole milliseconds and 0 means "none", so only `None` and whole,
/// non-zero millisecond counts that fit a `u32` round-trip exactly.
fn endpoint_timeout() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((1..=u32::MAX).prop_map(|ms| Duration::from_millis(u64::from(ms))))
}

prop_compose! {
    fn claim()(claim_type in text(10), value in prop::option::of(text(10))) -> ClaimRequirement {
        ClaimRequirement { claim_type, value }
    }
}

prop_compose! {
    fn endpoint()(
        method in text(8),
        path in text(24),
        kind in endpoint_kind(),
        supports_streaming in any::<bool>(),
        timeout in endpoint_timeout(),
        requiring_claims in prop::collection::vec(claim(), 0..3),
        content_types in prop::collection::vec(text(12), 0..3),
        max_body_bytes in prop::option::of(any::<u64>()),
    ) -> EndpointDescriptor {
        EndpointDescriptor {
            method,
            path,
            kind,
            supports_streaming,
            timeout,
            requiring_claims,
            content_types,
            max_body_bytes,
        }
    }
}

prop_compose! {
    fn hello()(
        protocol_version in any::<u16>(),
        service in text(12),
        version in text(8),
        region in text(8),
        instance_id in text(12),
        initial_window in any::<u32>(),
        token in text(16),
        endpoints in prop::collection::vec(endpoint(), 0..4),
    ) -> Hello {
        Hello { protocol_version, service, version, region, instance_id, initial_window, token, endpoints }
    }
}

prop_compose! {
    /// The heartbeat interval travels in whole milliseconds as a `u32`.
    fn welcome()(protocol_version in any::<u16>(), initial_window in any::<u32>(), ms in any::<u32>())
        -> Welcome {
        Welcome {
            protocol_version,
            initial_window,
            heartbeat_interval: Duration::from_millis(u64::from(ms)),
        }
    }
}

/// Error rates are fractions in `[0, 1]`; the bounds (and -0.0, which compares equal to
/// 0.0 and is accepted) get drawn on purpose.
fn error_rate() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(-0.0f32), Just(1.0f32), Just(f32::MIN_POSITIVE), 0.0f32..=1.0f32,]
}

prop_compose! {
    fn heartbeat()(
        status in health_status(),
        in_flight in any::<u32>(),
        error_rate in error_rate(),
        probe in prop::option::of(any::<u64>()),
    ) -> Heartbeat {
        Heartbeat { status, in_flight, error_rate, probe }
    }
}

prop_compose! {
    fn endpoints_update()(endpoints in prop::collection::vec(endpoint(), 0..4)) -> EndpointsUpdate {
        EndpointsUpdate { endpoints }
    }
}

prop_compose! {
    fn request_head()(
        method in text(8),
        path in text(24),
        query in text(16),
        template in text(24),
        params in prop::collection::vec((text(8), text(12)), 0..4),
        headers in headers(),
        body_mode in body_mode(),
        body in blob(64),
        chunk_size in prop::option::of(1u32..),
    ) -> RequestHead {
        RequestHead { method, path, query, template, params, headers, body_mode, body, chunk_size }
    }
}

prop_compose! {
    fn response_head()(status in 100u16..=999, headers in headers(), body_mode in body_mode(), body in blob(64))
        -> ResponseHead {
        ResponseHead { status, headers, body_mode, body }
    }
}

fn cancel() -> impl Strategy<Value = Cancel> {
    cancel_reason().prop_map(|reason| Cancel { reason })
}

fn credit() -> impl Strategy<Value = Credit> {
    (1..=u32::MAX).prop_map(|increment| Credit { increment })
}

fn error_message() -> impl Strategy<Value = ErrorMessage> {
    (error_code(), text(40)).prop_map(|(code, message)| ErrorMessage { code, message })
}

fn frame_type() -> impl Strategy<Value = FrameType> {
    prop::sample::select(FrameType::ALL.to_vec())
}

prop_compose! {
    fn frame()(frame_type in frame_type(), end in any::<bool>(), correlation_id in any::<u64>(), payload in blob(96))
        -> Frame {
        Frame {
            frame_type,
            flags: if end { FrameFlags::END_STREAM } else { FrameFlags::NONE },
            correlation_id,
            payload,
        }
    }
}

/// One valid payload of any message type, as its frame type and payload bytes.
fn any_payload() -> impl Strategy<Value = (FrameType, Bytes)> {
    fn enc<M: Message>(m: M) -> (FrameType, Bytes) {
        (M::FRAME_TYPE, m.encode().expect("generated values encode"))
    }
    prop_oneof![
        hello().prop_map(enc),
        welcome().prop_map(enc),
        heartbeat().prop_map(enc),
        endpoints_update().prop_map(enc),
        request_head().prop_map(enc),
        response_head().prop_map(enc),
        cancel().prop_map(enc),
        credit().prop_map(enc),
        error_message().prop_map(enc),
    ]
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Encode, decode, compare; then the same through a frame, the codec and back.
fn assert_round_trip<M>(value: &M, correlation_id: u64) -> Result<(), TestCaseError>
where
    M: Message + PartialEq + Debug,
{
    let payload = value.encode()?;
    prop_assert_eq!(&M::decode(payload.clone())?, value);

    let frame = value.to_frame(correlation_id)?;
    prop_assert_eq!(frame.frame_type, M::FRAME_TYPE);
    prop_assert_eq!(&frame.payload, &payload);
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(frame.clone(), &mut wire)?;
    let decoded = FrameCodec::default().decode(&mut wire)?;
    prop_assert_eq!(decoded.as_ref(), Some(&frame));
    prop_assert!(wire.is_empty(), "codec left {} bytes", wire.len());
    prop_assert_eq!(&M::decode(frame.payload)?, value);
    Ok(())
}

/// Runs the decoder of the message `frame_type` carries, if it carries one. When the
/// decode succeeds, the value must re-encode to exactly the same bytes (one encoding per
/// payload) and decode again to an equal value. Returns whether the payload decoded.
fn decode_as(frame_type: FrameType, payload: &Bytes) -> Result<bool, TestCaseError> {
    fn check<M: Message + PartialEq + Debug>(payload: &Bytes) -> Result<bool, TestCaseError> {
        match M::decode(payload.clone()) {
            Ok(value) => {
                let again = value.encode()?;
                prop_assert_eq!(&again, payload, "re-encoding of {:?} differs", value);
                prop_assert_eq!(M::decode(again)?, value);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
    match frame_type {
        FrameType::Hello => check::<Hello>(payload),
        FrameType::Heartbeat => check::<Heartbeat>(payload),
        FrameType::EndpointsUpdate => check::<EndpointsUpdate>(payload),
        FrameType::Request => check::<RequestHead>(payload),
        FrameType::Response => check::<ResponseHead>(payload),
        FrameType::Cancel => check::<Cancel>(payload),
        FrameType::Credit => check::<Credit>(payload),
        FrameType::Error => check::<ErrorMessage>(payload),
        FrameType::Welcome => check::<Welcome>(payload),
        FrameType::GoAway => check::<GoAway>(payload),
        FrameType::RequestStreamData | FrameType::ResponseStreamData => Ok(true),
    }
}

/// Feeds `wire` to a fresh codec all at once and collects frames until it needs more
/// bytes or fails; returns the frames and the first error, if any.
fn decode_stream(codec: &mut FrameCodec, wire: &[u8]) -> (Vec<Frame>, Option<ProtoError>) {
    let mut buf = BytesMut::from(wire);
    let mut frames = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(err) => return (frames, Some(err)),
        }
    }
    // End of input: whatever is left is a truncated frame, reported, not a panic.
    let eof = codec.decode_eof(&mut buf);
    match eof {
        Ok(Some(frame)) => {
            frames.push(frame);
            (frames, None)
        }
        Ok(None) => (frames, None),
        Err(err) => (frames, Some(err)),
    }
}

// ---------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hello_round_trips(v in hello(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn welcome_round_trips(v in welcome(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn heartbeat_round_trips(v in heartbeat(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
        // Bit-exact, not only equal: -0.0 stays -0.0.
        let back = Heartbeat::decode(v.encode()?)?;
        prop_assert_eq!(back.error_rate.to_bits(), v.error_rate.to_bits());
    }

    #[test]
    fn endpoints_update_round_trips(v in endpoints_update(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn request_head_round_trips(v in request_head(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn response_head_round_trips(v in response_head(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn cancel_round_trips(v in cancel(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn credit_round_trips(v in credit(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn error_message_round_trips(v in error_message(), id in any::<u64>()) {
        assert_round_trip(&v, id)?;
    }

    #[test]
    fn frame_round_trips_through_the_codec(f in frame()) {
        let mut codec = FrameCodec::new(1024);
        let mut wire = BytesMut::new();
        codec.encode(f.clone(), &mut wire)?;
        prop_assert_eq!(wire.len(), 14 + f.payload.len());
        prop_assert_eq!(codec.decode(&mut wire)?, Some(f));
        prop_assert!(wire.is_empty());
    }

    /// Timeouts that are not whole milliseconds are normalised the documented way:
    /// truncated to whole milliseconds, 0 ms read back as `None`, saturated at `u32::MAX` ms.
    #[test]
    fn endpoint_timeout_is_normalised_to_milliseconds(
        base in endpoint(),
        nanos in prop_oneof![0u64..5_000_000, any::<u64>()],
    ) {
        let timeout = Duration::from_nanos(nanos);
        let sent = EndpointDescriptor { timeout: Some(timeout), ..base };
        let update = EndpointsUpdate { endpoints: vec![sent.clone()] };
        let back = EndpointsUpdate::decode(update.encode()?)?;
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let expected = (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
        prop_assert_eq!(back.endpoints, vec![EndpointDescriptor { timeout: expected, ..sent }]);
    }

    /// Several frames on one byte stream, delivered in arbitrary pieces, decode to the same
    /// frames in the same order, with nothing left over.
    #[test]
    fn concatenated_frames_survive_any_split(
        frames in prop::collection::vec(frame(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut codec = FrameCodec::new(1024);
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut wire)?;
        }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.extend([0, wire.len()]);
        points.sort_unstable();
        points.dedup();

        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in points.windows(2) {
            buf.extend_from_slice(&wire[piece[0]..piece[1]]);
            while let Some(f) = codec.decode(&mut buf)? {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn frames_fed_one_byte_at_a_time_decode() {
    let frames = vec![
        Hello {
            protocol_version: 1,
            service: "s".into(),
            version: "1.0.0".into(),
            region: "r".into(),
            instance_id: "i".into(),
            initial_window: 65_536,
            token: String::new(),
            endpoints: vec![EndpointDescriptor::new("get", "/a/{id}")],
        }
        .to_frame(0)
        .unwrap(),
        Frame::data(FrameType::RequestStreamData, 1, Bytes::new(), true),
        Credit { increment: 9 }.to_frame(1).unwrap(),
    ];
    let mut codec = FrameCodec::default();
    let mut wire = BytesMut::new();
    for f in &frames {
        codec.encode(f.clone(), &mut wire).unwrap();
    }
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for byte in wire.iter() {
        buf.put_u8(*byte);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
    }
    assert_eq!(out, frames);
    assert!(buf.is_empty());
}

#[test]
fn encoder_refuses_payloads_over_its_maximum() {
    let mut codec = FrameCodec::new(8);
    let mut wire = BytesMut::new();
    let ok = Frame::new(FrameType::RequestStreamData, 1, Bytes::from_static(b"12345678"));
    codec.encode(ok, &mut wire).unwrap();
    let too_big = Frame::new(FrameType::RequestStreamData, 1, Bytes::from_static(b"123456789"));
    let before = wire.len();
    assert_eq!(codec.encode(too_big, &mut wire).unwrap_err(), ProtoError::FrameTooLarge { len: 9, max: 8 });
    assert_eq!(wire.len(), before, "a refused frame writes nothing");
}

// ---------------------------------------------------------------------------------------
// Arbitrary input never panics
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every payload decoder, on arbitrary bytes, returns Ok or Err; what it accepts has
    /// one encoding.
    #[test]
    fn payload_decoders_never_panic(bytes in blob(256)) {
        for frame_type in FrameType::ALL {
            decode_as(frame_type, &bytes)?;
        }
    }

    /// The frame decoder, on arbitrary bytes, with a small and the default maximum.
    #[test]
    fn frame_decoder_never_panics(bytes in blob(512)) {
        for max in [0, 16, 4096, DEFAULT_MAX_FRAME_PAYLOAD] {
            let (frames, _err) = decode_stream(&mut FrameCodec::new(max), &bytes);
            for f in frames {
                prop_assert!(f.payload.len() <= max);
                decode_as(f.frame_type, &f.payload)?;
            }
        }
    }

    /// Arbitrary bytes that start like a frame (a plausible length, a known type) reach
    /// deeper into the decoder than pure noise does.
    #[test]
    fn frame_decoder_never_panics_on_frame_shaped_input(
        len in 0u32..64,
        frame_type in 0u8..=13,
        flags in prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
        rest in blob(96),
    ) {
        let mut wire = BytesMut::new();
        wire.put_u32(len);
        wire.put_u8(frame_type);
        wire.put_u8(flags);
        wire.extend_from_slice(&rest);
        let (frames, err) = decode_stream(&mut FrameCodec::new(64), &wire);
        if !(1..=12).contains(&frame_type) && wire.len() >= 14 && len >= 10 {
            prop_assert_eq!(err, Some(ProtoError::UnknownFrameType(frame_type)));
        }
        for f in frames {
            decode_as(f.frame_type, &f.payload)?;
        }
    }

    /// Valid payloads with a few bytes overwritten, inserted or removed: decoders explore
    /// the paths just past the checks. Whatever still decodes must re-encode identically.
    #[test]
    fn mutated_payloads_never_panic(
        (frame_type, payload) in any_payload(),
        edits in prop::collection::vec((0u8..3, any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = payload.to_vec();
        for (op, at, value) in edits {
            match op {
                0 if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                1 => {
                    let i = at.index(bytes.len() + 1);
                    bytes.insert(i, value);
                }
                _ if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        decode_as(frame_type, &Bytes::from(bytes))?;
    }

    /// Any valid payload in a frame, decoded through the codec, decodes as its message.
    #[test]
    fn valid_payloads_decode_after_framing((frame_type, payload) in any_payload(), id in any::<u64>()) {
        let mut wire = BytesMut::new();
        FrameCodec::default().encode(Frame::new(frame_type, id, payload.clone()), &mut wire)?;
        let (frames, err) = decode_stream(&mut FrameCodec::default(), &wire);
        prop_assert_eq!(err, None);
        prop_assert_eq!(frames.len(), 1);
        prop_assert!(decode_as(frames[0].frame_type, &frames[0].payload)?);
    }
}

// ---------------------------------------------------------------------------------------
// Trailing bytes, truncation, out-of-range values
// ---------------------------------------------------------------------------------------

/// One rich sample of each payload: every option present, every list non-empty.
fn samples() -> Vec<(FrameType, Bytes)> {
    fn enc<M: Message>(m: M) -> (FrameType, Bytes) {
        (M::FRAME_TYPE, m.encode().unwrap())
    }
    let endpoint = EndpointDescriptor {
        method: "POST".into(),
        path: "/files/{*rest}".into(),
        kind: EndpointKind::WebSocket,
        supports_streaming: true,
        timeout: Some(Duration::from_millis(2500)),
        requiring_claims: vec![
            ClaimRequirement { claim_type: "role".into(), value: Some("admin".into()) },
            ClaimRequirement { claim_type: "sub".into(), value: None },
        ],
        content_types: vec!["application/json".into()],
        max_body_bytes: Some(1 << 20),
    };
    vec![
        enc(Hello {
            protocol_version: 1,
            service: "files".into(),
            version: "2.1.0".into(),
            region: "eu".into(),
            instance_id: "files-7".into(),
            initial_window: 1 << 18,
            token: "t0ken".into(),
            endpoints: vec![endpoint.clone(), EndpointDescriptor::new("GET", "/x")],
        }),
        enc(Welcome { protocol_version: 1, initial_window: 1 << 16, heartbeat_interval: Duration::from_secs(5) }),
        enc(Heartbeat::new(HealthStatus::Degraded, 3, 0.25)),
        enc(EndpointsUpdate { endpoints: vec![endpoint] }),
        enc(RequestHead {
            method: "PUT".into(),
            path: "/files/a%20b".into(),
            query: "x=1".into(),
            template: "/files/{*rest}".into(),
            params: vec![("rest".into(), "a b".into())],
            headers: vec![("content-type".into(), Bytes::from_static(b"text/plain"))],
            body_mode: BodyMode::Buffered,
            body: Bytes::from_static(b"hello"),
            chunk_size: Some(4096),
        }),
        enc(ResponseHead {
            status: 201,
            headers: vec![("etag".into(), Bytes::from_static(b"\"1\""))],
            body_mode: BodyMode::Buffered,
            body: Bytes::from_static(b"ok"),
        }),
        enc(Cancel { reason: CancelReason::Timeout }),
        enc(Credit { increment: 4096 }),
        enc(ErrorMessage { code: ErrorCode::RegistrationRefused, message: "GET /x is taken".into() }),
        enc(GoAway { reason: "another gateway process is taking over".into() }),
    ]
}

#[test]
fn samples_cover_every_message_type() {
    let mut types: Vec<u8> = samples().iter().map(|(t, _)| *t as u8).collect();
    types.sort_unstable();
    let expected: Vec<u8> = FrameType::ALL.iter().filter(|t| !t.is_stream_data()).map(|t| *t as u8).collect();
    assert_eq!(types, expected);
}

/// Runs the decoder of `frame_type` and keeps only the error (the value types differ).
fn decode_err(frame_type: FrameType, payload: Bytes) -> Option<ProtoError> {
    fn err<M: Message>(payload: Bytes) -> Option<ProtoError> {
        M::decode(payload).err()
    }
    match frame_type {
        FrameType::Hello => err::<Hello>(payload),
        FrameType::Heartbeat => err::<Heartbeat>(payload),
        FrameType::EndpointsUpdate => err::<EndpointsUpdate>(payload),
        FrameType::Request => err::<RequestHead>(payload),
        FrameType::Response => err::<ResponseHead>(payload),
        FrameType::Cancel => err::<Cancel>(payload),
        FrameType::Credit => err::<Credit>(payload),
        FrameType::Error => err::<ErrorMessage>(payload),
        FrameType::Welcome => err::<Welcome>(payload),
        FrameType::GoAway => err::<GoAway>(payload),
        FrameType::RequestStreamData | FrameType::ResponseStreamData => None,
    }
}

#[test]
fn every_payload_refuses_trailing_bytes() {
    for (frame_type, payload) in samples() {
        assert_eq!(decode_err(frame_type, payload.clone()), None, "{frame_type:?}");
        for extra in [&[0u8][..], &[1], &[0xff, 0xff, 0xff]] {
            let mut longer = payload.to_vec();
            longer.extend_from_slice(extra);
            assert_eq!(
                decode_err(frame_type, Bytes::from(longer)),
                Some(ProtoError::TrailingBytes(extra.len())),
                "{frame_type:?} with {extra:?} appended"
            );
        }
    }
}

#[test]
fn every_payload_refuses_truncation_at_every_cut() {
    for (frame_type, payload) in samples() {
        for cut in 0..payload.len() {
            let err = decode_err(frame_type, payload.slice(..cut));
            assert!(
                matches!(err, Some(ProtoError::Truncated(_))),
                "{frame_type:?} cut at {cut} of {}: {err:?}",
                payload.len()
            );
        }
    }
}

#[test]
fn out_of_range_values_are_refused_by_encoder_and_decoder() {
    for rate in [-0.5f32, 1.000_001, 2.0, f32::NAN, f32::INFINITY, -f32::INFINITY] {
        let hb = Heartbeat::new(HealthStatus::Healthy, 0, rate);
        assert!(matches!(hb.encode(), Err(ProtoError::InvalidValue { .. })), "{rate}");
        let mut raw = vec![0u8, 0, 0, 0, 0];
        raw.extend_from_slice(&rate.to_bits().to_be_bytes());
        assert!(matches!(Heartbeat::decode(Bytes::from(raw)), Err(ProtoError::InvalidValue { .. })), "{rate}");
    }

    for status in [0u16, 99, 1000, u16::MAX] {
        let head = ResponseHead { status, headers: vec![], body_mode: BodyMode::Buffered, body: Bytes::new() };
        assert!(matches!(head.encode(), Err(ProtoError::InvalidValue { .. })));
        let mut raw = status.to_be_bytes().to_vec();
        raw.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(ResponseHead::decode(Bytes::from(raw)), Err(ProtoError::InvalidValue { .. })));
    }

    assert!(matches!(Credit { increment: 0 }.encode(), Err(ProtoError::InvalidValue { .. })));
    assert!(matches!(Credit::decode(Bytes::from_static(&[0, 0, 0, 0])), Err(ProtoError::InvalidValue { .. })));
}

#[test]
fn a_heartbeat_probe_is_an_optional_tail_of_exactly_eight_bytes() {
    let plain = Heartbeat::new(HealthStatus::Healthy, 4, 0.5);
    let probed = Heartbeat { probe: Some(0x0102_0304_0506_0708), ..plain.clone() };
    assert_eq!(plain.encode().unwrap().len(), 9);
    let raw = probed.encode().unwrap();
    assert_eq!(&raw[9..], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(Heartbeat::decode(raw.clone()).unwrap(), probed);
    for cut in 10..17 {
        let err = Heartbeat::decode(raw.slice(..cut)).unwrap_err();
        assert_eq!(err, ProtoError::TrailingBytes(cut - 9), "cut at {cut}");
    }
    let mut longer = raw.to_vec();
    longer.push(0);
    assert!(matches!(Heartbeat::decode(Bytes::from(longer)), Err(ProtoError::TrailingBytes(1))));
}

#[test]
fn unknown_enum_values_and_non_boolean_bytes_are_refused() {
    let invalid = |r: Result<(), ProtoError>| matches!(r, Err(ProtoError::InvalidValue { .. }));
    // Heartbeat with health status 3.
    assert!(invalid(Heartbeat::decode(Bytes::from_static(&[3, 0, 0, 0, 0, 0, 0, 0, 0])).map(drop)));
    // Cancel reasons 0 and 7.
    assert!(invalid(Cancel::decode(Bytes::from_static(&[0])).map(drop)));
    assert!(invalid(Cancel::decode(Bytes::from_static(&[7])).map(drop)));
    // Error codes 0 and 6.
    assert!(invalid(ErrorMessage::decode(Bytes::from_static(&[0, 0, 0, 0])).map(drop)));
    assert!(invalid(ErrorMessage::decode(Bytes::from_static(&[0, 6, 0, 0])).map(drop)));
    // Response body mode 2.
    assert!(invalid(ResponseHead::decode(Bytes::from_static(&[0, 200, 0, 0, 2, 0, 0, 0, 0])).map(drop)));
    // Endpoint: kind 2, then a supports-streaming byte of 2, then an option tag of 2.
    let endpoint = |kind: u8, streaming: u8, tag: u8| {
        let mut raw = vec![0, 1]; // one endpoint
        raw.extend_from_slice(&[0, 3, b'G', b'E', b'T', 0, 1, b'/']);
        raw.extend_from_slice(&[kind, streaming, 0, 0, 0, 0, 0, 0, 0, 0, tag]);
        EndpointsUpdate::decode(Bytes::from(raw)).map(drop)
    };
    assert_eq!(endpoint(0, 0, 0), Ok(()));
    assert!(invalid(endpoint(2, 0, 0)));
    assert!(invalid(endpoint(0, 2, 0)));
    assert!(invalid(endpoint(0, 0, 2)));
    // Invalid UTF-8 in a string.
    assert_eq!(
        ErrorMessage::decode(Bytes::from_static(&[0, 1, 0, 1, 0xff])),
        Err(ProtoError::InvalidUtf8("error message"))
    );
}

#[test]
fn strings_and_lists_too_long_for_their_prefix_are_refused_on_encode() {
    let long = "x".repeat(usize::from(u16::MAX) + 1);
    let err = ErrorMessage { code: ErrorCode::StreamFailed, message: long }.encode().unwrap_err();
    assert!(matches!(err, ProtoError::TooLong { .. }), "{err:?}");

    let just_fits = "x".repeat(usize::from(u16::MAX));
    let msg = ErrorMessage { code: ErrorCode::StreamFailed, message: just_fits };
    assert_eq!(ErrorMessage::decode(msg.encode().unwrap()).unwrap(), msg);

    let many = EndpointsUpdate { endpoints: vec![EndpointDescriptor::new("GET", "/"); usize::from(u16::MAX) + 1] };
    assert!(matches!(many.encode(), Err(ProtoError::TooLong { .. })));
}

#[test]
fn forged_list_counts_do_not_allocate_or_panic() {
    // An EndpointsUpdate claiming 65535 endpoints in a 2-byte payload.
    assert_eq!(EndpointsUpdate::decode(Bytes::from_static(&[0xff, 0xff])), Err(ProtoError::Truncated("endpoints")));
    // A RequestHead body claiming 4 GiB.
    let mut raw = vec![0u8; 4 * 2]; // method, path, query, template: empty strings
    raw.extend_from_slice(&[0, 0, 0, 0, 0]); // no params, no headers, buffered
    raw.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(RequestHead::decode(Bytes::from(raw)), Err(ProtoError::Truncated("body")));
}

#[test]
fn a_chunk_size_travels_as_a_header_entry_that_an_unaware_receiver_reads_as_a_header() {
    let head = RequestHead {
        method: "GET".into(),
        path: "/files/a".into(),
        query: String::new(),
        template: "/files/{*rest}".into(),
        params: vec![("rest".into(), "a".into())],
        headers: vec![("accept".into(), Bytes::from_static(b"*/*"))],
        body_mode: BodyMode::Buffered,
        body: Bytes::new(),
        chunk_size: Some(4096),
    };
    let wire = head.encode().unwrap();
    let mut as_header = head.clone();
    as_header.chunk_size = None;
    as_header.headers.push((CHUNK_SIZE_FIELD.into(), Bytes::from_static(b"4096")));
    assert_eq!(wire, as_header.encode().unwrap(), "the same bytes as one more header, last");
    assert_eq!(RequestHead::decode(wire).unwrap(), head, "taken out of the headers again");
    for bad in ["0", "-1", "+4096", "04096", "4 KiB", "99999999999"] {
        let mut malformed = as_header.clone();
        malformed.headers.last_mut().unwrap().1 = Bytes::from(bad);
        assert!(RequestHead::decode(malformed.encode().unwrap()).is_err(), "{bad:?}");
    }
    as_header.headers.insert(0, (CHUNK_SIZE_FIELD.into(), Bytes::from_static(b"512")));
    assert!(RequestHead::decode(as_header.encode().unwrap()).is_err(), "given twice, or not last");
}
