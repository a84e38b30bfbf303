//! permessage-deflate (RFC 7692) between a client and the gateway, on mounts with
//! `ws_compression = true`: the negotiation ([`negotiate`]), the client's compressed
//! messages inflated under the reader ([`inflate`]) and the gateway's messages compressed
//! for the client ([`compress`]). The service never sees any of it: its stream carries
//! plain messages, and the client's `Sec-WebSocket-Extensions` is not forwarded.
//!
//! Hand-written because tungstenite 0.30 implements no extension: it fails any frame with
//! RSV1 set and has no hook between frames and messages. So the client's compressed frames
//! are inflated into plain frames *below* tungstenite, as its bytes are read, and the
//! gateway's compressed messages go out as ready-made frames with RSV1 set.
//!
//! Negotiation: the client's offers are tried in their order and the first the gateway
//! can honour is accepted, answered by exactly one `Sec-WebSocket-Extensions`. An offer
//! with an unknown, repeated or malformed parameter is declined (RFC 7692 §7.1), and so is
//! one asking for `server_max_window_bits=8`, a window zlib cannot compress raw deflate
//! with; declining an offer never fails the upgrade. `client_max_window_bits` needs no
//! answer: the gateway inflates with the full 32 KiB window, which reads any smaller one.
//!
//! Invariant: a session compresses or inflates only what was negotiated; with no accepted
//! offer its frames pass untouched and tungstenite fails one with RSV1 set (1002).

use http::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS};
use http::HeaderMap;

pub(crate) mod compress;
pub(crate) mod inflate;

/// The extension's name in `Sec-WebSocket-Extensions`.
const EXTENSION: &str = "permessage-deflate";
/// The largest LZ77 window (32 KiB), the default of both directions.
const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window zlib compresses raw deflate with (it refuses 8).
const MIN_SERVER_WINDOW_BITS: u8 = 9;

/// The accepted parameters of one session's permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Deflate {
    /// The client asked the gateway to compress each message on its own (its memory, or a
    /// side channel between messages): the gateway resets its compressor after each.
    pub server_no_context_takeover: bool,
    /// The client compresses each message on its own: the gateway's inflater is reset
    /// after each message, as the client's compressor is.
    pub client_no_context_takeover: bool,
    /// The window the client bounded the gateway's compression to, if it named one; the
    /// answer must repeat it.
    pub server_max_window_bits: Option<u8>,
}

impl Deflate {
    /// The window the gateway compresses with, in bits.
    pub(crate) fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// The answer's `Sec-WebSocket-Extensions` value.
    pub(crate) fn header_value(&self) -> HeaderValue {
        let mut value = EXTENSION.to_owned();
        if self.server_no_context_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            value.push_str(&format!("; server_max_window_bits={bits}"));
        }
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(EXTENSION))
    }
}

/// The first permessage-deflate offer of the request that the gateway can honour.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Deflate> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| split_unquoted(value, ','))
        .find_map(|offer| {
            let mut parts = split_unquoted(offer, ';');
            let name = parts.next()?.trim();
            match name.eq_ignore_ascii_case(EXTENSION) {
                true => accept(parts),
                false => None,
            }
        })
}

/// The offer's parameters as the gateway accepts them, or `None` to decline it.
fn accept<'a>(params: impl Iterator<Item = &'a str>) -> Option<Deflate> {
    let mut deflate = Deflate::default();
    let mut seen: Vec<String> = Vec::new();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim().to_ascii_lowercase(), Some(unquote(value.trim())?)),
            None => (param.trim().to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => deflate.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => deflate.client_no_context_takeover = true,
            ("server_max_window_bits", Some(value)) => {
                let bits = window_bits(value)?;
                if bits < MIN_SERVER_WINDOW_BITS {
                    return None;
                }
                deflate.server_max_window_bits = Some(bits);
            }
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(deflate)
}

/// A window size parameter: a decimal 8 to 15, no leading zero (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

/// A parameter value as a token, or a quoted string's content; `None` if malformed.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.is_empty() && !value.contains('"')).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Splits `value` at each `separator` outside a quoted string, skipping empty elements.
fn split_unquoted(value: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                pieces.push(&value[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces.into_iter().filter(|piece| !piece.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(values: &[&str]) -> Option<Deflate> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(value).unwrap());
        }
        negotiate(&headers)
    }

    fn answer(values: &[&str]) -> Option<String> {
        offered(values).map(|d| d.header_value().to_str().unwrap().to_owned())
    }

    #[test]
    fn a_browsers_offer_is_accepted_with_no_parameters() {
        assert_eq!(answer(&["permessage-deflate; client_max_window_bits"]).as_deref(), Some("permessage-deflate"));
        assert_eq!(answer(&["x-webkit-deflate-frame"]), None);
        assert_eq!(answer(&[]), None);
    }

    #[test]
    fn every_parameter_is_honoured_and_the_window_asked_for_is_repeated() {
        let answer = answer(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9"]);
        assert_eq!(
            answer.as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10"
            )
        );
        let quoted = offered(&["permessage-deflate; server_max_window_bits=\"12\""]).unwrap();
        assert_eq!(quoted.server_window_bits(), 12);
        assert_eq!(offered(&["permessage-deflate"]).unwrap().server_window_bits(), 15);
    }

    #[test]
    fn an_offer_the_gateway_cannot_honour_is_declined_for_the_next() {
        for declined in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(offered(&[declined]), None, "{declined}");
            let fallback = format!("{declined}, permessage-deflate; client_no_context_takeover");
            let accepted = offered(&[&fallback]).unwrap();
            assert!(accepted.client_no_context_takeover && accepted.server_max_window_bits.is_none(), "{fallback}");
        }
    }

    #[test]
    fn offers_are_read_across_header_lines_and_quoted_commas() {
        let accepted =
            offered(&["foo; note=\"a, permessage-deflate\"", "permessage-deflate; server_no_context_takeover"]);
        assert!(accepted.unwrap().server_no_context_takeover);
        assert_eq!(offered(&["foo; note=\"a, permessage-deflate, b\""]), None);
    }
}
