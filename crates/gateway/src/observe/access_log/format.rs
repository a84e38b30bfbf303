//! The two line formats of the access log, both one line per record ending in `\n`.
//!
//! **json** (the default): an object with the keys `time` (RFC 3339, UTC, milliseconds),
//! `request_id`, `client`, `method`, `path`, `version`, `mount`, `route`, `service`,
//! `instance`, `subject`, `status`, `reason`, `bytes_in`, `bytes_out`, `duration_s`,
//! `ttfb_s` and `websocket`; a value the request never had (no route matched, the client
//! left before a status) is `null`.
//!
//! **text**: the time, the client, the quoted request line, the status (`-` if none),
//! then `key=value` pairs in the order of the JSON keys:
//!
//! ```text
//! 2026-12-03T07:30:00.123Z 10.0.0.7:51234 "GET /api/items/7 HTTP/1.1" 200 in=0 out=42 duration=0.001234 ttfb=0.001100 id=4bf9… mount=/api route=/api/items/{id} service=demo instance=demo-1 subject=- reason=- ws=0
//! ```
//!
//! In text, an absent value is `-` and every byte outside printable ASCII, a space, a
//! `"` or a `\` in a value is written `\xNN`, so a line always splits on spaces.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use super::AccessRecord;
use crate::config::AccessLogFormat;

/// RFC 3339 in UTC with milliseconds.
const TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Writes `record` as one line in `format` to `out` (the writer's buffer: formatted in
/// place, with no line of its own allocated).
pub(super) fn write(out: &mut impl Write, record: &AccessRecord, format: AccessLogFormat) -> io::Result<()> {
    match format {
        AccessLogFormat::Json => json(out, record)?,
        AccessLogFormat::Text => text(out, record)?,
    }
    out.write_all(b"\n")
}

/// The JSON object of one record.
#[derive(Serialize)]
struct JsonLine<'r> {
    time: String,
    request_id: &'r str,
    client: String,
    method: &'r str,
    path: &'r str,
    version: &'static str,
    mount: Option<&'r str>,
    route: Option<&'r str>,
    service: Option<&'r str>,
    instance: Option<&'r str>,
    subject: Option<&'r str>,
    status: Option<u16>,
    reason: Option<&'static str>,
    bytes_in: u64,
    bytes_out: u64,
    duration_s: f64,
    ttfb_s: Option<f64>,
    websocket: bool,
}

fn json(out: &mut impl Write, r: &AccessRecord) -> io::Result<()> {
    let object = JsonLine {
        time: timestamp(r),
        request_id: request_id(r),
        client: r.client.to_string(),
        method: r.method.as_str(),
        path: &r.path,
        version: version(r.version),
        mount: r.mount.as_deref(),
        route: r.route.as_deref(),
        service: r.service.as_deref(),
        instance: r.instance.as_deref(),
        subject: r.subject.as_deref(),
        status: r.status.map(|s| s.as_u16()),
        reason: r.reason,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        duration_s: r.duration.as_secs_f64(),
        ttfb_s: r.time_to_first_byte.as_ref().map(Duration::as_secs_f64),
        websocket: r.websocket,
    };
    // Plain strings and numbers always serialize: an error here is the writer's.
    serde_json::to_writer(out, &object).map_err(io::Error::from)
}

fn text(out: &mut impl Write, r: &AccessRecord) -> io::Result<()> {
    let status = r.status.as_ref().map_or("-", |s| s.as_str());
    write!(out, "{} {} \"{} ", timestamp(r), r.client, r.method)?;
    escaped(out, Some(&r.path))?;
    write!(
        out,
        " {}\" {status} in={} out={} duration={:.6}",
        version(r.version),
        r.bytes_in,
        r.bytes_out,
        r.duration.as_secs_f64()
    )?;
    out.write_all(b" ttfb=")?;
    match r.time_to_first_byte {
        Some(ttfb) => write!(out, "{:.6}", ttfb.as_secs_f64())?,
        None => out.write_all(b"-")?,
    }
    let pairs = [
        (" id=", Some(request_id(r))),
        (" mount=", r.mount.as_deref()),
        (" route=", r.route.as_deref()),
        (" service=", r.service.as_deref()),
        (" instance=", r.instance.as_deref()),
        (" subject=", r.subject.as_deref()),
        (" reason=", r.reason),
    ];
    for (key, value) in pairs {
        out.write_all(key.as_bytes())?;
        escaped(out, value)?;
    }
    out.write_all(if r.websocket { b" ws=1" } else { b" ws=0" })
}

/// `value` with every byte that could break a space-separated line escaped; `-` if absent.
fn escaped(out: &mut impl Write, value: Option<&str>) -> io::Result<()> {
    let Some(value) = value else { return out.write_all(b"-") };
    let plain = |byte: &u8| byte.is_ascii_graphic() && *byte != b'"' && *byte != b'\\';
    let mut rest = value.as_bytes();
    while !rest.is_empty() {
        let run = rest.iter().take_while(|b| plain(b)).count();
        out.write_all(&rest[..run])?;
        if let Some(byte) = rest.get(run) {
            write!(out, "\\x{byte:02X}")?;
        }
        rest = rest.get(run + 1..).unwrap_or_default();
    }
    Ok(())
}

/// The request id as text: a client's is kept only when plausible (ASCII), a generated
/// one is hex.
fn request_id(r: &AccessRecord) -> &str {
    r.request_id.to_str().unwrap_or("-")
}

fn timestamp(r: &AccessRecord) -> String {
    OffsetDateTime::from(r.start).format(TIME).unwrap_or_else(|_| "-".to_owned())
}

fn version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/0.9",
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::SystemTime;

    use http::{Method, StatusCode, Version};

    use super::*;

    fn written(record: &AccessRecord, format: AccessLogFormat) -> String {
        let mut line = Vec::new();
        write(&mut line, record, format).unwrap();
        String::from_utf8(line).unwrap()
    }

    fn record() -> AccessRecord {
        AccessRecord {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_256_000_123),
            request_id: http::HeaderValue::from_static("abc"),
            client: "10.0.0.7:51234".parse::<SocketAddr>().unwrap(),
            method: Method::GET,
            path: "/api/it ems/\"7\"".into(),
            version: Version::HTTP_11,
            mount: Some(Arc::from("/api")),
            route: Some(Arc::from("/api/items/{id}")),
            service: Some(Arc::from("demo")),
            instance: None,
            subject: Some("alice smith".into()),
            status: Some(StatusCode::OK),
            reason: None,
            bytes_in: 3,
            bytes_out: 42,
            duration: Duration::from_micros(1234),
            time_to_first_byte: Some(Duration::from_micros(1100)),
            websocket: false,
        }
    }

    #[test]
    fn json_has_every_key_and_null_for_what_the_request_lacked() {
        let line = written(&record(), AccessLogFormat::Json);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-12-03T00:00:00.123Z");
        assert_eq!(value["path"], "/api/it ems/\"7\"");
        assert_eq!(value["route"], "/api/items/{id}");
        assert_eq!(value["instance"], serde_json::Value::Null);
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes_out"], 42);
        assert_eq!(value["duration_s"], 0.001234);
        assert_eq!(value.as_object().unwrap().len(), 18);
    }

    #[test]
    fn text_escapes_what_would_split_a_field() {
        let line = written(&record(), AccessLogFormat::Text);
        assert_eq!(
            line,
            "2026-12-03T00:00:00.123Z 10.0.0.7:51234 \"GET /api/it\\x20ems/\\x227\\x22 HTTP/1.1\" 200 in=3 out=42 \
             duration=0.001234 ttfb=0.001100 id=abc mount=/api route=/api/items/{id} service=demo instance=- \
             subject=alice\\x20smith reason=- ws=0\n"
        );
        let mut gone = record();
        gone.status = None;
        gone.time_to_first_byte = None;
        let line = written(&gone, AccessLogFormat::Text);
        assert!(line.contains("HTTP/1.1\" - in=3") && line.contains("ttfb=- "), "{line}");
    }
}
