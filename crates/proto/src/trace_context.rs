//! W3C Trace Context: the `traceparent` and `tracestate` request headers that carry a
//! distributed trace from a client through the gateway to a service, parsed and
//! formatted here so that the gateway (which continues or starts a trace) and the SDK
//! (which shows it to handlers) read them alike.
//!
//! Invariants: a [`TraceParent`] never holds an all-zero trace id or parent id (such a
//! header is invalid, and so is every form the specification rejects: uppercase hex,
//! wrong lengths, version `ff`), and it is always written as version `00`; a
//! [`TraceState`] is a list of at most [`MAX_TRACESTATE_MEMBERS`] well-formed members
//! with distinct keys in at most [`MAX_TRACESTATE_BYTES`], kept byte for byte as
//! received. A `tracestate` is only meaningful beside a valid `traceparent`
//! ([`TraceContext`]). Parsing never panics on any input.

use std::fmt;
use std::num::{NonZeroU128, NonZeroU64};

use thiserror::Error;

use crate::Headers;

/// The header naming the trace and the caller's span.
pub const TRACEPARENT: &str = "traceparent";

/// The header carrying vendors' trace data along with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` kept; a longer one is dropped whole.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The most list members a kept `tracestate` has; with more it is dropped whole.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Length of a version `00` `traceparent`: `vv-` + 32 + `-` + 16 + `-ff`.
const TRACEPARENT_LEN: usize = 55;

/// A valid `traceparent`: the trace, the caller's span in it, and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// Identifies the whole trace across every process it passes.
    trace_id: NonZeroU128,
    /// The span of the caller that sent the request.
    parent_id: NonZeroU64,
    /// Bit 0: sampled (the caller may have recorded its span). Other bits as received
    /// from a version `00` header; a later version's other bits are unknown and cleared.
    flags: u8,
}

/// Why a `traceparent` header is invalid (the receiver then starts a new trace).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TraceParentError {
    #[error("traceparent of {0} bytes (version 00 has 55)")]
    Length(usize),
    #[error("traceparent version is not two lowercase hex digits other than ff")]
    Version,
    #[error("traceparent is not four dash-separated fields of lowercase hex")]
    Malformed,
    #[error("traceparent's trace id is all zeros")]
    ZeroTraceId,
    #[error("traceparent's parent id is all zeros")]
    ZeroParentId,
}

impl TraceParent {
    /// The `sampled` trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// The trace parent of these ids and flags.
    pub fn new(trace_id: NonZeroU128, parent_id: NonZeroU64, flags: u8) -> TraceParent {
        TraceParent { trace_id, parent_id, flags }
    }

    /// Parses one `traceparent` header value. Version `00` must be exactly 55 bytes; a
    /// later version (not `ff`) is read for its first four fields, as the
    /// specification asks, and anything after them is ignored.
    pub fn parse(value: &[u8]) -> Result<TraceParent, TraceParentError> {
        if value.len() < TRACEPARENT_LEN {
            return Err(TraceParentError::Length(value.len()));
        }
        let version = lower_hex(&value[..2]).ok_or(TraceParentError::Version)?;
        if version == 0xff {
            return Err(TraceParentError::Version);
        }
        let longer_ok = version > 0 && value[TRACEPARENT_LEN..].first().is_none_or(|b| *b == b'-');
        if value.len() > TRACEPARENT_LEN && !longer_ok {
            return Err(TraceParentError::Length(value.len()));
        }
        if [2, 35, 52].iter().any(|&at| value[at] != b'-') {
            return Err(TraceParentError::Malformed);
        }
        let trace_id = lower_hex(&value[3..35]).ok_or(TraceParentError::Malformed)?;
        let parent_id = lower_hex(&value[36..52]).ok_or(TraceParentError::Malformed)?;
        let flags = lower_hex(&value[53..55]).ok_or(TraceParentError::Malformed)?;
        // Two hex digits and sixteen: both fit their types.
        let (parent_id, mut flags) = (parent_id as u64, flags as u8);
        if version > 0 {
            flags &= Self::SAMPLED;
        }
        let trace_id = NonZeroU128::new(trace_id).ok_or(TraceParentError::ZeroTraceId)?;
        let parent_id = NonZeroU64::new(parent_id).ok_or(TraceParentError::ZeroParentId)?;
        Ok(TraceParent::new(trace_id, parent_id, flags))
    }

    /// The trace's id (never zero).
    pub fn trace_id(&self) -> u128 {
        self.trace_id.get()
    }

    /// The caller's span id: the parent of the receiver's span (never zero).
    pub fn parent_id(&self) -> u64 {
        self.parent_id.get()
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller marked the trace as sampled.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The same trace with `span_id` as the parent: what a process sends onwards from
    /// its own span.
    pub fn with_parent(&self, span_id: NonZeroU64) -> TraceParent {
        TraceParent::new(self.trace_id, span_id, self.flags)
    }
}

impl fmt::Display for TraceParent {
    /// The header value, version `00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }
}

/// `bytes` as a number if they are 1 to 32 lowercase hex digits.
fn lower_hex(bytes: &[u8]) -> Option<u128> {
    if bytes.is_empty() || bytes.len() > 32 {
        return None;
    }
    bytes.iter().try_fold(0u128, |n, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u128::from(digit))
    })
}

/// A valid `tracestate`, kept as received (its header lines joined with `,`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceState(String);

/// Why a `tracestate` is dropped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TraceStateError {
    #[error("tracestate has no list member")]
    Empty,
    #[error("tracestate of {0} bytes (at most {MAX_TRACESTATE_BYTES} are kept)")]
    TooLong(usize),
    #[error("tracestate with more than {MAX_TRACESTATE_MEMBERS} list members")]
    TooManyMembers,
    #[error("tracestate list member {0} is not key=value of the allowed characters")]
    Member(usize),
    #[error("tracestate names key {0:?} twice")]
    DuplicateKey(String),
}

impl TraceState {
    /// The `tracestate` of a request whose header lines are `lines` (in order), joined
    /// with `,` as HTTP combines repeated fields.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Result<TraceState, TraceStateError> {
        let mut joined = Vec::new();
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend_from_slice(line);
            if joined.len() > MAX_TRACESTATE_BYTES {
                return Err(TraceStateError::TooLong(joined.len()));
            }
        }
        // Members are checked to be ASCII below, so this fails only for a bad member.
        let text = String::from_utf8(joined).map_err(|_| TraceStateError::Member(0))?;
        let mut keys: Vec<&str> = Vec::new();
        let members = text.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty());
        for (index, member) in members.enumerate() {
            if index == MAX_TRACESTATE_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            let key = member_key(member).ok_or(TraceStateError::Member(index))?;
            if keys.contains(&key) {
                return Err(TraceStateError::DuplicateKey(key.to_owned()));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(TraceStateError::Empty);
        }
        Ok(TraceState(text))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of a well-formed list member `key=value`: a simple key (a lowercase letter,
/// then up to 255 of `a-z0-9_-*/`) or a multi-tenant one (`tenant@system`: up to 241
/// and a letter then up to 13 of those); a value of 1 to 256 printable ASCII
/// characters other than `,` and `=` (the member is trimmed of spaces and tabs: the
/// value cannot end in one).
fn member_key(member: &str) -> Option<&str> {
    let (key, value) = member.split_once('=')?;
    let key_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b);
    let key_ok = match key.split_once('@') {
        None => key.len() <= 256 && key.bytes().next().is_some_and(|b| b.is_ascii_lowercase()),
        Some((tenant, system)) => {
            let tenant_first = tenant.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            let system_first = system.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
            tenant_first && system_first && tenant.len() <= 241 && system.len() <= 14 && !system.contains('@')
        }
    };
    let key_chars = key.bytes().filter(|&b| b != b'@').all(key_char);
    let value_char = |b: u8| (b' '..=b'~').contains(&b) && b != b',' && b != b'=';
    let value_ok = (1..=256).contains(&value.len()) && value.bytes().all(value_char);
    (key_ok && key_chars && value_ok).then_some(key)
}

/// The trace context a request carries: a valid `traceparent`, and its `tracestate`
/// if that is valid too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace and the caller's span.
    pub parent: TraceParent,
    /// Vendors' trace data; `None` when absent or dropped as invalid.
    pub state: Option<TraceState>,
}

impl TraceContext {
    /// The trace context of a request with these `traceparent` and `tracestate` header
    /// lines; `None` unless there is exactly one `traceparent` and it is valid.
    pub fn from_lines<'a>(
        traceparent: impl IntoIterator<Item = &'a [u8]>,
        tracestate: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<TraceContext> {
        let mut parents = traceparent.into_iter();
        let parent = TraceParent::parse(parents.next()?).ok()?;
        if parents.next().is_some() {
            return None;
        }
        let mut states = tracestate.into_iter().peekable();
        let state = states.peek().is_some().then(|| TraceState::parse(states).ok()).flatten();
        Some(TraceContext { parent, state })
    }

    /// The trace context in a request head's `headers` (names compared without case).
    pub fn from_headers(headers: &Headers) -> Option<TraceContext> {
        let lines = |wanted: &'static str| {
            headers.iter().filter(move |(name, _)| name.eq_ignore_ascii_case(wanted)).map(|(_, value)| &value[..])
        };
        TraceContext::from_lines(lines(TRACEPARENT), lines(TRACESTATE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_and_formats_back() {
        let parent = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(parent.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.parent_id(), 0x00f067aa0ba902b7);
        assert!(parent.is_sampled());
        assert_eq!(parent.to_string(), VALID);
        let child = parent.with_parent(NonZeroU64::new(0xabc).unwrap());
        assert_eq!(child.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01");
    }

    #[test]
    fn every_invalid_form_of_the_specification_is_refused() {
        use TraceParentError::*;
        let cases: &[(&str, TraceParentError)] = &[
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", Malformed),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", Malformed),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", Malformed),
            ("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Version),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Version),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ZeroTraceId),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ZeroParentId),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", Length(54)),
            ("00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", Length(56)),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", Malformed),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", Length(56)),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", Length(56)),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Malformed),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", Malformed),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01", Malformed),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1", Malformed),
            ("", Length(0)),
        ];
        for (value, error) in cases {
            assert_eq!(TraceParent::parse(value.as_bytes()), Err(error.clone()), "{value}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_first_fields_and_its_sampled_bit() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-follows";
        let parent = TraceParent::parse(later.as_bytes()).unwrap();
        assert_eq!(parent.flags(), TraceParent::SAMPLED);
        assert_eq!(parent.to_string(), VALID, "sent on as version 00");
        let exact = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!TraceParent::parse(exact.as_bytes()).unwrap().is_sampled());
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00x";
        assert_eq!(TraceParent::parse(glued.as_bytes()), Err(TraceParentError::Length(56)));
    }

    #[test]
    fn a_tracestate_is_kept_as_received_when_valid() {
        let kept = TraceState::parse([&b"congo=t61rcWkgMzE"[..], b" rojo=00f067aa0ba902b7 ,tenant@sys=x y"]).unwrap();
        assert_eq!(kept.as_str(), "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7 ,tenant@sys=x y");
        assert_eq!(TraceState::parse([&b"a=1,,  ,b=2"[..]]).unwrap().as_str(), "a=1,,  ,b=2");
    }

    #[test]
    fn a_tracestate_out_of_bounds_or_malformed_is_dropped() {
        let parse = |text: &str| TraceState::parse([text.as_bytes()]);
        let members = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert!(parse(&members(32)).is_ok());
        assert_eq!(parse(&members(33)), Err(TraceStateError::TooManyMembers));
        let values =
            |first: usize| (0..16).map(move |i| format!("k{i:02}={}", "x".repeat(if i == 0 { first } else { 27 })));
        let long = values(28).collect::<Vec<_>>().join(",");
        assert_eq!(long.len(), MAX_TRACESTATE_BYTES);
        assert!(parse(&long).is_ok());
        assert_eq!(parse(&format!("{long}x")), Err(TraceStateError::TooLong(513)));
        assert_eq!(parse(" , "), Err(TraceStateError::Empty));
        assert_eq!(parse("a=1,a=2"), Err(TraceStateError::DuplicateKey("a".into())));
        for bad in ["A=1", "1a=1", "a", "a=", "a=b=c", "a=x\u{7f}", "@s=1", "t@=1", "t@1=1", "a=\u{e9}", "a b=1"] {
            assert!(matches!(parse(bad), Err(TraceStateError::Member(0))), "{bad:?}");
        }
        assert!(parse(&format!("t@{}=1", "s".repeat(15))).is_err(), "system id of 15");
        assert!(parse(&format!("a={}", "v".repeat(257))).is_err(), "value of 257");
    }

    #[test]
    fn a_context_needs_exactly_one_valid_traceparent() {
        let header = |name: &str, value: &str| (name.to_owned(), Bytes::from(value.to_owned()));
        let mut headers = vec![header("TraceParent", VALID), header("tracestate", "a=1"), header("tracestate", "b=2")];
        let context = TraceContext::from_headers(&headers).unwrap();
        assert_eq!(context.parent.to_string(), VALID);
        assert_eq!(context.state.unwrap().as_str(), "a=1,b=2");
        headers.push(header("tracestate", "INVALID"));
        assert_eq!(TraceContext::from_headers(&headers).unwrap().state, None, "tracestate dropped, trace kept");
        headers.push(header("traceparent", VALID));
        assert_eq!(TraceContext::from_headers(&headers), None, "two traceparents");
        assert_eq!(TraceContext::from_headers(&vec![header("tracestate", "a=1")]), None);
    }

    proptest! {
        #[test]
        fn a_trace_parent_formats_and_parses_back(trace in 1..=u128::MAX, parent in 1..=u64::MAX, flags: u8) {
            let written = TraceParent::new(NonZeroU128::new(trace).unwrap(), NonZeroU64::new(parent).unwrap(), flags);
            let text = written.to_string();
            prop_assert_eq!(text.len(), TRACEPARENT_LEN);
            prop_assert_eq!(TraceParent::parse(text.as_bytes()), Ok(written));
        }

        #[test]
        fn any_bytes_parse_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(parent) = TraceParent::parse(&bytes) {
                prop_assert!(parent.trace_id() != 0 && parent.parent_id() != 0);
            }
            let _ = TraceState::parse([&bytes[..]]);
        }

        #[test]
        fn a_valid_tracestate_parses_back_to_itself(
            members in prop::collection::vec(("[a-z][a-z0-9_*/-]{0,8}", "[!-+\\x2D-<>-~]{1,8}"), 1..32),
        ) {
            let mut seen = std::collections::HashSet::new();
            let unique: Vec<_> = members.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let text = unique.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let state = TraceState::parse([text.as_bytes()]).unwrap();
            prop_assert_eq!(state.as_str(), text.as_str());
        }
    }
}
