//! Fuzzes the receiving side of a service connection: arbitrary bytes go through
//! `FrameCodec` (with a small maximum payload and with the default one) until it needs
//! more input or refuses, and each frame's payload through the decoder of its type.
//!
//! Beyond "never panics" it asserts:
//! - every decoded frame re-encodes to exactly the bytes it was read from;
//! - feeding the same bytes in small pieces gives the same frames and the same error;
//! - every payload that decodes re-encodes to the same bytes, and those decode to an
//!   equal value (one encoding per value, values survive a round trip).

#![no_main]

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use weir_proto::{
    Cancel, Credit, EndpointsUpdate, ErrorMessage, Frame, FrameCodec, FrameType, GoAway, Heartbeat, Hello,
    Message, ProtoError, RequestHead, ResponseHead, Welcome, DEFAULT_MAX_FRAME_PAYLOAD,
};

fuzz_target!(|data: &[u8]| {
    for max in [4096, DEFAULT_MAX_FRAME_PAYLOAD] {
        let (frames, err) = decode_all(max, data);
        check_frames(max, data, &frames);
        for frame in &frames {
            check_payload(frame.frame_type, &frame.payload);
        }

        // The same bytes in pieces whose size the input picks.
        let piece = data.first().map_or(1, |b| usize::from(b % 31) + 1);
        let (frames_in_pieces, err_in_pieces) = decode_in_pieces(max, data, piece);
        assert_eq!(frames_in_pieces, frames);
        assert_eq!(err_in_pieces, err);
    }
});

/// Decodes frames from all of `data` at once until the codec wants more or refuses.
fn decode_all(max: usize, data: &[u8]) -> (Vec<Frame>, Option<ProtoError>) {
    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(err) => return (frames, Some(err)),
        }
    }
}

/// Decodes frames from `data` delivered `piece` bytes at a time.
fn decode_in_pieces(max: usize, data: &[u8], piece: usize) -> (Vec<Frame>, Option<ProtoError>) {
    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Some(err)),
            }
        }
    }
    (frames, None)
}

/// Each frame respects the maximum and re-encodes to the bytes it came from.
fn check_frames(max: usize, data: &[u8], frames: &[Frame]) {
    let mut codec = FrameCodec::new(max);
    let mut wire = BytesMut::new();
    for frame in frames {
        assert!(frame.payload.len() <= max);
        codec
            .encode(frame.clone(), &mut wire)
            .expect("a decoded frame re-encodes");
    }
    assert_eq!(&wire[..], &data[..wire.len()]);
}

/// Decodes a payload as its frame type's message; if that works, checks the round trip.
fn check_payload(frame_type: FrameType, payload: &Bytes) {
    match frame_type {
        FrameType::Hello => round_trip::<Hello>(payload),
        FrameType::Heartbeat => round_trip::<Heartbeat>(payload),
        FrameType::EndpointsUpdate => round_trip::<EndpointsUpdate>(payload),
        FrameType::Request => round_trip::<RequestHead>(payload),
        FrameType::Response => round_trip::<ResponseHead>(payload),
        FrameType::Cancel => round_trip::<Cancel>(payload),
        FrameType::Credit => round_trip::<Credit>(payload),
        FrameType::Error => round_trip::<ErrorMessage>(payload),
        FrameType::Welcome => round_trip::<Welcome>(payload),
        FrameType::GoAway => round_trip::<GoAway>(payload),
        // Raw bytes: nothing to decode.
        FrameType::RequestStreamData | FrameType::ResponseStreamData => {}
    }
}

fn round_trip<M: Message + PartialEq + Debug>(payload: &Bytes) {
    let Ok(value) = M::decode(payload.clone()) else {
        return;
    };
    let again = value.encode().expect("a decoded value re-encodes");
    assert_eq!(&again, payload, "second encoding of {value:?}");
    let back = M::decode(again).expect("a re-encoded value decodes");
    assert_eq!(back, value);
}
