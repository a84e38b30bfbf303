//! The static profile: files from a mount's `root` directory, answered by the gateway
//! itself (no service involved). Called by the request phases for every request on a static
//! mount.
//!
//! A request path maps to a file as: the path minus the mount prefix, split on `/`,
//! each segment percent-decoded, joined under `root`. Then every symlink is resolved and
//! the result must still lie inside the canonical root.
//!
//! Invariants and decisions:
//! - **No escape from root.** A segment that decodes to `..`, or that holds a separator
//!   (`/` as `%2f`, `\`), a NUL, malformed percent-encoding or non-UTF-8 bytes, is a
//!   400: such a path is malformed or an attack, never a file name. Empty and `.`
//!   segments are skipped. A path that exists but resolves (through a symlink) outside
//!   the root is a 404, as if absent: the answer says nothing about what lies outside.
//!   Symlinks that stay inside the root are followed. (A symlink swapped between the
//!   check and the open needs write access inside the root; that is out of scope.)
//! - **Regular files only.** A FIFO, socket or device under the root is a 404, checked
//!   before the open and again on the open file; the open never blocks (`O_NONBLOCK`), so
//!   such a file cannot hold a blocking-pool thread.
//! - **Directories** are a 404 unless they hold an `index.html`, which is served (also
//!   without a trailing slash; no redirect).
//! - **Methods**: GET and HEAD; others 405 with `Allow: GET, HEAD`.
//! - **Headers**: `Content-Length`, `Content-Type` (guessed from the extension, else
//!   `application/octet-stream`), `Last-Modified`, a strong `ETag`, `Accept-Ranges:
//!   bytes` and `Content-Disposition: inline; filename="<name>"` (inline: a static file
//!   is shown, not forced into a download; the name is there so that a client saving
//!   the response keeps the file's name, as for every file response of the SDK).
//! - **Conditional requests and ranges** follow [`weir_proto::http_file`], shared with the
//!   SDK: 304, 412, a single range as 206, 416 with `Content-Range: bytes */len`, several
//!   ranges as the full 200.
//! - **Body**: read with async reads in `chunk_size` pieces ([`crate::response::file`]);
//!   never the whole file in memory; paced by the connection's bandwidth shaper on the
//!   mount (`rate_limit_bandwidth`) and failed past the mount's `download_timeout`, as a
//!   relayed body is ([`crate::response`]).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, LAST_MODIFIED,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use thiserror::Error;
use tokio::fs::{self, File};
use tokio::io::AsyncSeekExt;
use weir_proto::http_file::{self, Answer, ByteRange, Conditions, Disposition, Validators};

use crate::config::{MountConfig, MountSettings};
use crate::limits::bandwidth::Shaper;
use crate::response::error::GatewayError;
use crate::response::file::FileBody;
use crate::response::GatewayBody;

/// Why a request path cannot name a file under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum PathError {
    #[error("a path segment is `..`")]
    ParentSegment,
    #[error("a path segment holds a separator or NUL")]
    Separator,
    #[error("malformed percent-encoding in the path")]
    BadEncoding,
    #[error("the path is not UTF-8")]
    NotUtf8,
}

/// Serves the file the request names under the mount's root, paced by `shaper` (the
/// connection's on this mount, if it limits bandwidth).
pub(crate) async fn serve(
    mount: &MountConfig,
    request: &Request<Incoming>,
    shaper: Option<Arc<Shaper>>,
) -> Result<Response<GatewayBody>, GatewayError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(GatewayError::MethodNotAllowed { allow: vec!["GET".into(), "HEAD".into()] });
    }
    let root = mount.root.as_deref().ok_or(GatewayError::NotFound)?;
    let relative = relative_path(&mount.prefix, request.uri().path()).map_err(|err| {
        tracing::info!(path = request.uri().path(), error = %err, "static path refused");
        GatewayError::BadRequest(err.to_string())
    })?;
    let found = locate(root, &relative).await?;
    respond(found, request, &mount.settings, shaper).await
}

/// The request path below the mount `prefix`, as a relative path of plain names.
pub(crate) fn relative_path(prefix: &str, path: &str) -> Result<PathBuf, PathError> {
    let rest = if prefix == "/" { path } else { path.strip_prefix(prefix).unwrap_or("") };
    let mut relative = PathBuf::new();
    for raw in rest.split('/') {
        let segment = decode_segment(raw)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => return Err(PathError::ParentSegment),
            name => {
                // On any platform, a segment must be one plain name (no drive, no root).
                if !matches!(Path::new(name).components().collect::<Vec<_>>()[..], [Component::Normal(_)]) {
                    return Err(PathError::Separator);
                }
                relative.push(name);
            }
        }
    }
    Ok(relative)
}

/// One segment, percent-decoded; separators and NUL refused, encoded or not.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut input = raw.bytes();
    while let Some(byte) = input.next() {
        let byte = match byte {
            b'%' => {
                let high = input.next().and_then(hex_value).ok_or(PathError::BadEncoding)?;
                let low = input.next().and_then(hex_value).ok_or(PathError::BadEncoding)?;
                high << 4 | low
            }
            other => other,
        };
        if matches!(byte, b'/' | b'\\' | 0) {
            return Err(PathError::Separator);
        }
        bytes.push(byte);
    }
    String::from_utf8(bytes).map_err(|_| PathError::NotUtf8)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

/// A file found under the root, open.
#[derive(Debug)]
struct Found {
    /// Its canonical path (for the content type and the name).
    path: PathBuf,
    file: File,
    len: u64,
    modified: Option<SystemTime>,
}

/// Opens the regular file `relative` names under `root` (a directory's `index.html`).
async fn locate(root: &Path, relative: &Path) -> Result<Found, GatewayError> {
    let root = fs::canonicalize(root).await.map_err(|err| {
        tracing::warn!(root = %root.display(), error = %err, "static root is not readable");
        GatewayError::NotFound
    })?;
    let mut path = inside(&root, &root.join(relative)).await?;
    if fs::metadata(&path).await.map_err(io_error)?.is_dir() {
        path = inside(&root, &path.join("index.html")).await?;
    }
    if !fs::metadata(&path).await.map_err(io_error)?.is_file() {
        tracing::info!(path = %path.display(), "static path is not a regular file: refused as 404");
        return Err(GatewayError::NotFound);
    }
    let file = open_regular(&path).await?;
    let metadata = file.metadata().await.map_err(io_error)?;
    Ok(Found { path, file, len: metadata.len(), modified: metadata.modified().ok() })
}

/// Opens `path` for reading without ever blocking on it, and only if it is a regular
/// file. Opening a FIFO for reading waits for a writer (and a device may wait for
/// anything), which would hold a blocking-pool thread per request: `O_NONBLOCK` makes
/// such an open return at once (it changes nothing for a regular file's reads), and the
/// type is checked again on the open file, since the path may have been swapped after
/// the caller's check.
async fn open_regular(path: &Path) -> Result<File, GatewayError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .await
        .map_err(io_error)?;
    if file.metadata().await.map_err(io_error)?.is_file() {
        Ok(file)
    } else {
        tracing::info!(path = %path.display(), "static path became a special file: refused as 404");
        Err(GatewayError::NotFound)
    }
}

/// `path` with every symlink resolved, if it exists and stays under `root` (canonical).
async fn inside(root: &Path, path: &Path) -> Result<PathBuf, GatewayError> {
    let resolved = fs::canonicalize(path).await.map_err(io_error)?;
    if resolved.starts_with(root) {
        Ok(resolved)
    } else {
        tracing::info!(path = %path.display(), "static path resolves outside the root: refused as 404");
        Err(GatewayError::NotFound)
    }
}

/// Missing (or a path through a file) is 404, unreadable 403; anything else is logged
/// and answered 404 too, revealing nothing.
fn io_error(err: std::io::Error) -> GatewayError {
    match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => GatewayError::NotFound,
        std::io::ErrorKind::PermissionDenied => GatewayError::Forbidden("the file is not readable".into()),
        _ => {
            tracing::warn!(error = %err, "static file lookup failed");
            GatewayError::NotFound
        }
    }
}

/// The answer for `found` under the request's conditional and range headers.
async fn respond(
    found: Found,
    request: &Request<Incoming>,
    settings: &MountSettings,
    shaper: Option<Arc<Shaper>>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let validators = Validators::new(found.len, found.modified);
    let conditions = Conditions::from_lookup(|name| request.headers().get(name).map(HeaderValue::as_bytes));
    let range = match http_file::evaluate(&conditions, &validators, found.len) {
        Answer::NotModified => return Ok(not_modified(&validators)),
        Answer::PreconditionFailed => return Err(GatewayError::PreconditionFailed),
        Answer::RangeNotSatisfiable => return Err(GatewayError::RangeNotSatisfiable { length: found.len }),
        Answer::Full => None,
        Answer::Partial(range) => Some(range),
    };
    let headers = content_headers(&found, &validators, range);
    let (start, len) = range.map_or((0, found.len), |r| (r.start, r.len()));
    let body = if *request.method() == Method::HEAD {
        GatewayBody::empty()
    } else {
        let mut file = found.file;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start)).await.map_err(io_error)?;
        }
        GatewayBody::file(FileBody::new(file, len, settings.chunk_size), shaper, settings.download_timeout)
    };
    let mut response = Response::new(body);
    *response.status_mut() = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    *response.headers_mut() = headers;
    Ok(response)
}

/// A 304: the validators, no body.
fn not_modified(validators: &Validators) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    validator_headers(response.headers_mut(), validators);
    response
}

/// The headers of a 200 (`range` is `None`) or a 206.
fn content_headers(found: &Found, validators: &Validators, range: Option<ByteRange>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mime = mime_guess::from_path(&found.path).first_or_octet_stream();
    insert(&mut headers, CONTENT_TYPE, mime.essence_str());
    insert(&mut headers, CONTENT_LENGTH, &range.map_or(found.len, |r| r.len()).to_string());
    if let Some(range) = range {
        insert(&mut headers, CONTENT_RANGE, &range.content_range(found.len));
    }
    insert(&mut headers, ACCEPT_RANGES, "bytes");
    validator_headers(&mut headers, validators);
    if let Some(name) = found.path.file_name() {
        let disposition = http_file::content_disposition(Disposition::Inline, &name.to_string_lossy());
        insert(&mut headers, CONTENT_DISPOSITION, &disposition);
    }
    headers
}

fn validator_headers(headers: &mut HeaderMap, validators: &Validators) {
    insert(headers, ETAG, &validators.etag);
    if let Some(date) = validators.last_modified_header() {
        insert(headers, LAST_MODIFIED, &date);
    }
}

/// Sets a header; every value built here is visible ASCII, so none is ever dropped.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => tracing::warn!(header = %name, "static file header value not representable: left out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(prefix: &str, path: &str) -> Result<PathBuf, PathError> {
        relative_path(prefix, path)
    }

    #[test]
    fn plain_paths_map_below_the_prefix() {
        assert_eq!(path("/files", "/files/a/b.txt"), Ok(PathBuf::from("a/b.txt")));
        assert_eq!(path("/files", "/files"), Ok(PathBuf::new()));
        assert_eq!(path("/files", "/files/"), Ok(PathBuf::new()));
        assert_eq!(path("/", "/x.css"), Ok(PathBuf::from("x.css")));
        assert_eq!(path("/files", "/files//a/./b"), Ok(PathBuf::from("a/b")));
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(path("/f", "/f/hello%20world.txt"), Ok(PathBuf::from("hello world.txt")));
        assert_eq!(path("/f", "/f/r%C3%A9sum%C3%A9"), Ok(PathBuf::from("résumé")));
        assert_eq!(path("/f", "/f/%2e"), Ok(PathBuf::new()));
        assert_eq!(path("/f", "/f/..a"), Ok(PathBuf::from("..a")));
    }

    #[test]
    fn traversal_is_refused_however_it_is_spelled() {
        for attack in ["/f/..", "/f/a/../../etc", "/f/%2e%2e", "/f/%2E%2e/x", "/f/.%2E", "/f/%2e%2E%2fetc"] {
            assert!(path("/f", attack).is_err(), "{attack}");
        }
        assert_eq!(path("/f", "/f/%2E%2E"), Err(PathError::ParentSegment));
        assert_eq!(path("/f", "/f/a%2fb"), Err(PathError::Separator));
        assert_eq!(path("/f", "/f/a%2Fb"), Err(PathError::Separator));
        assert_eq!(path("/f", "/f/..%5c..%5cx"), Err(PathError::Separator));
        assert_eq!(path("/f", "/f/a\\b"), Err(PathError::Separator));
        assert_eq!(path("/f", "/f/a%00.txt"), Err(PathError::Separator));
    }

    #[test]
    fn malformed_encoding_is_refused() {
        assert_eq!(path("/f", "/f/a%2"), Err(PathError::BadEncoding));
        assert_eq!(path("/f", "/f/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(path("/f", "/f/%ff"), Err(PathError::NotUtf8));
    }

    proptest::proptest! {
        #[test]
        fn decoded_paths_never_leave_the_root(raw in "(/|%2[eEfF]|%5[cC]|%00|\\.|\\\\|a|%|[0-9a-f]){0,24}") {
            if let Ok(relative) = relative_path("/", &format!("/{raw}")) {
                proptest::prop_assert!(relative.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
