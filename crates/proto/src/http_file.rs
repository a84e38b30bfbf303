//! The pure HTTP logic of file responses, written once and used by both the gateway's
//! static profile and the SDK's `FileResponse`: validators (`ETag`, `Last-Modified`),
//! conditional requests (RFC 9110 §13), single byte ranges (RFC 9110 §14) and
//! `Content-Disposition` (RFC 6266). No I/O: callers pass a file's length and
//! modification time and the request's header values, and get back what to answer and
//! the header values to answer it with.
//!
//! Decisions, the same on both sides:
//! - **ETag** is strong, `"<mtime secs>.<mtime nanos>-<len>"` in hex (as nginx does, with
//!   nanoseconds): a strong tag lets `If-Range` work. Two versions of a file with the same
//!   length written in the same nanosecond would share a tag; that is the accepted cost of
//!   not hashing content.
//! - **Last-Modified** is the modification time in whole seconds (HTTP dates have no
//!   finer unit); a time before 1970 or after 9999 has none.
//! - **Ranges**: one satisfiable range gives 206. Several ranges give the full 200 (a
//!   server may ignore `Range`; no multipart), unless none is satisfiable (416). A
//!   malformed header or an unknown unit is ignored (200).
//! - Evaluation order is RFC 9110 §13.2.2: `If-Match`, else `If-Unmodified-Since` (412);
//!   `If-None-Match`, else `If-Modified-Since` (304); then `If-Range` and `Range`. The
//!   request is assumed to be a GET or HEAD, the only methods a file answers.
//!
//! Invariants: nothing here panics on any header value (a proptest feeds the range
//! parser arbitrary strings); a [`ByteRange`] handed out always lies inside the file
//! (`start <= end < len`); header values produced are visible ASCII only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest second count an HTTP date can show (the end of year 9999).
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// A file's validators, derived from its length and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity tag, quoted: the `ETag` header value.
    pub etag: String,
    /// The modification time truncated to seconds, if it can be an HTTP date.
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    /// Validators of a file of `len` bytes last modified at `modified`.
    pub fn new(len: u64, modified: Option<SystemTime>) -> Self {
        let since_epoch = modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok());
        let (secs, nanos) = since_epoch.map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let last_modified = since_epoch
            .filter(|d| d.as_secs() <= MAX_HTTP_DATE_SECS)
            .map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs()));
        Validators { etag: format!("\"{secs:x}.{nanos:x}-{len:x}\""), last_modified }
    }

    /// The `Last-Modified` header value, if the file has one.
    pub fn last_modified_header(&self) -> Option<String> {
        self.last_modified.map(httpdate::fmt_http_date)
    }

    /// The tag without its quotes.
    fn opaque(&self) -> &str {
        self.etag.trim_matches('"')
    }
}

/// The request headers that decide a file response, each the first value sent; a value
/// that is not UTF-8 counts as absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

impl<'a> Conditions<'a> {
    /// Reads the headers through `lookup`, which is given lower-case header names.
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<&'a [u8]>) -> Self {
        let mut get = |name: &str| lookup(name).and_then(|v| std::str::from_utf8(v).ok());
        Conditions {
            if_match: get("if-match"),
            if_none_match: get("if-none-match"),
            if_modified_since: get("if-modified-since"),
            if_unmodified_since: get("if-unmodified-since"),
            range: get("range"),
            if_range: get("if-range"),
        }
    }
}

/// What to answer a GET or HEAD for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole file.
    Full,
    /// 206 with this range.
    Partial(ByteRange),
    /// 304: the client's copy is current. No body.
    NotModified,
    /// 412: an `If-Match` or `If-Unmodified-Since` precondition does not hold.
    PreconditionFailed,
    /// 416: no requested range overlaps the file; `Content-Range: bytes */len`.
    RangeNotSatisfiable,
}

/// Decides the answer for a file of `len` bytes with `validators`, under `conditions`.
pub fn evaluate(conditions: &Conditions<'_>, validators: &Validators, len: u64) -> Answer {
    if let Some(answer) = preconditions(conditions, validators) {
        return answer;
    }
    let Some(range) = conditions.range else { return Answer::Full };
    if conditions.if_range.is_some_and(|value| !if_range_holds(value, validators)) {
        return Answer::Full;
    }
    match parse_range(range, len) {
        RangeRequest::Ignore => Answer::Full,
        RangeRequest::Single(range) => Answer::Partial(range),
        RangeRequest::Unsatisfiable => Answer::RangeNotSatisfiable,
    }
}

/// Steps 1 to 4 of RFC 9110 §13.2.2; `None` when every precondition holds.
fn preconditions(c: &Conditions<'_>, v: &Validators) -> Option<Answer> {
    if let Some(value) = c.if_match {
        if !list_matches(value, v, Comparison::Strong) {
            return Some(Answer::PreconditionFailed);
        }
    } else if let (Some(date), Some(modified)) = (c.if_unmodified_since.and_then(parse_date), v.last_modified) {
        if modified > date {
            return Some(Answer::PreconditionFailed);
        }
    }
    if let Some(value) = c.if_none_match {
        if list_matches(value, v, Comparison::Weak) {
            return Some(Answer::NotModified);
        }
    } else if let (Some(date), Some(modified)) = (c.if_modified_since.and_then(parse_date), v.last_modified) {
        if modified <= date {
            return Some(Answer::NotModified);
        }
    }
    None
}

/// Whether `If-Range` names the current file: its strong tag, or exactly its date.
fn if_range_holds(value: &str, v: &Validators) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        let mut tags = entity_tags(value);
        return matches!((tags.next(), tags.next()), (Some((false, tag)), None) if tag == v.opaque());
    }
    parse_date(value).is_some_and(|date| v.last_modified == Some(date))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Both tags strong and equal (`If-Match`, `If-Range`).
    Strong,
    /// Equal ignoring weakness (`If-None-Match`).
    Weak,
}

/// Whether a list header (`*` or entity tags) matches the file's tag.
fn list_matches(value: &str, v: &Validators, comparison: Comparison) -> bool {
    if value.trim() == "*" {
        return true;
    }
    entity_tags(value).any(|(weak, tag)| tag == v.opaque() && (comparison == Comparison::Weak || !weak))
}

/// The entity tags of a comma-separated list, as (weak, opaque tag); stops at the first
/// malformed element, so a malformed list matches at most the tags before it.
fn entity_tags(value: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = value;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let (weak, tagged) = match rest.strip_prefix("W/") {
            Some(tagged) => (true, tagged),
            None => (false, rest),
        };
        let quoted = tagged.strip_prefix('"')?;
        let end = quoted.find('"')?;
        rest = &quoted[end + 1..];
        Some((weak, &quoted[..end]))
    })
}

fn parse_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// An inclusive byte range inside a file: `start <= end < len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// How many bytes the range holds (at least one).
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a range holds at least one byte. (For clippy's `len` convention.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value of a 206: `bytes start-end/total`.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.start, self.end)
    }
}

/// The `Content-Range` value of a 416: `bytes */total`.
pub fn unsatisfied_content_range(total: u64) -> String {
    format!("bytes */{total}")
}

/// What a `Range` header asks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Malformed, another unit, or several ranges: answer the whole file.
    Ignore,
    /// Exactly one range, satisfiable: answer it.
    Single(ByteRange),
    /// Well-formed, but no range overlaps the file.
    Unsatisfiable,
}

/// One `range-spec`, before it meets the file's length.
#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `first-last` or `first-` (`last` = `u64::MAX`).
    From { first: u64, last: u64 },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl Spec {
    /// The range this spec selects in a file of `len` bytes, if any.
    fn resolve(self, len: u64) -> Option<ByteRange> {
        let last_byte = len.checked_sub(1)?;
        match self {
            Spec::From { first, last } => {
                (first <= last_byte).then(|| ByteRange { start: first, end: last.min(last_byte) })
            }
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some(ByteRange { start: len.saturating_sub(n), end: last_byte }),
        }
    }
}

/// Parses a `Range` header value against a file of `len` bytes (RFC 9110 §14.1.2).
/// Numbers too large for a `u64` saturate: a huge first position is past the end, a huge
/// last position or suffix covers the rest of the file.
pub fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some((unit, set)) = value.split_once('=') else { return RangeRequest::Ignore };
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeRequest::Ignore;
    }
    let (mut specs, mut satisfiable) = (0usize, None);
    for element in set.split(',').map(|e| e.trim_matches([' ', '\t'])).filter(|e| !e.is_empty()) {
        let Some(spec) = parse_spec(element) else { return RangeRequest::Ignore };
        specs += 1;
        satisfiable = satisfiable.or(spec.resolve(len));
    }
    match (specs, satisfiable) {
        (0, _) => RangeRequest::Ignore,
        (_, None) => RangeRequest::Unsatisfiable,
        (1, Some(range)) => RangeRequest::Single(range),
        (_, Some(_)) => RangeRequest::Ignore,
    }
}

fn parse_spec(spec: &str) -> Option<Spec> {
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        return digits(last).map(Spec::Suffix);
    }
    let first = digits(first)?;
    let last = if last.is_empty() { u64::MAX } else { digits(last)? };
    (first <= last).then_some(Spec::From { first, last })
}

/// A non-empty run of ASCII digits as a number, saturating at `u64::MAX`.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// How a user agent should present a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Shown in the browser (`inline`): static files.
    Inline,
    /// Saved as a download (`attachment`).
    Attachment,
}

/// `inline; filename="..."` or `attachment; filename="..."` for `name`, as RFC 6266
/// §4.3 recommends: the quoted `filename` is an ASCII fallback (quotes and backslashes
/// escaped, control and non-ASCII characters replaced by `_`), and a name that is not
/// plain ASCII also gets `filename*=UTF-8''...` (RFC 8187 percent-encoding), which user
/// agents prefer. The value never holds a control character, so it cannot split a header.
pub fn content_disposition(disposition: Disposition, name: &str) -> String {
    let mut value = String::from(match disposition {
        Disposition::Inline => "inline; filename=\"",
        Disposition::Attachment => "attachment; filename=\"",
    });
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                value.push('\\');
                value.push(c);
            }
            ' '..='~' => value.push(c),
            _ => value.push('_'),
        }
    }
    value.push('"');
    if !name.chars().all(|c| matches!(c, ' '..='~')) {
        value.push_str("; filename*=UTF-8''");
        value.push_str(&rfc8187_encode(name));
    }
    value
}

/// Percent-encodes every byte that is not an RFC 8187 `attr-char`.
fn rfc8187_encode(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(name.len() * 3);
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests;
