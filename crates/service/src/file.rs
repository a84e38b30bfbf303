//! File downloads: [`RawResponse::file`] answers a file read
//! asynchronously in 64 KiB pieces (sent in frames of the gateway's chunk size) with `Content-Length`, a `Content-Type` guessed from
//! its extension, `Content-Disposition` (an `attachment` under the download name when one
//! is given, else `inline` under the file's own name, escaped as RFC 6266 asks),
//! `Last-Modified` and a strong `ETag`. [`RawResponse::file_for`] also honours the
//! request's conditional and range headers: 304, 412, a single byte range as 206, 416
//! with `Content-Range: bytes */len`, several ranges as the full 200; it announces
//! `Accept-Ranges: bytes`. The header logic is [`weir_proto::http_file`], the same the
//! gateway's static profile uses, so a file answers alike from either. [`FileResponse`]
//! builds the same answers with options: a download name and a media type that replaces
//! the guess (`application/x-ndjson` for a `.log`, say).
//!
//! Invariant: the body never exceeds the announced length. A file that grows while it
//! is sent is cut at its original length; one that shrinks aborts the response (the
//! gateway sees `HandlerFailed`) rather than sending fewer bytes than announced.

use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use weir_proto::http_file::{self, Answer, ByteRange, Conditions, Disposition, Validators};
use weir_proto::Headers;

use crate::context::find_header;
use crate::error::HandlerError;
use crate::response::{BoxError, RawResponse, ResponseBody};

/// Bytes read from the file per chunk.
pub(crate) const FILE_CHUNK: usize = 64 * 1024;

impl RawResponse {
    /// A 200 response streaming the whole file at `path`, whatever the request asked.
    ///
    /// `download_name`, when given, is sent as
    /// `content-disposition: attachment; filename="..."` (plus `filename*=` in UTF-8 when
    /// it is not plain ASCII); without it, the header is `inline` with the file's own
    /// name. The content type is guessed from the path's extension, else from the
    /// download name's, else `application/octet-stream`.
    ///
    /// A missing path (or a directory) is a 404 [`HandlerError`]; any other I/O failure
    /// is a 500. Neither reveals the path to the client.
    pub async fn file(path: impl AsRef<Path>, download_name: Option<&str>) -> Result<RawResponse, HandlerError> {
        FileResponse::new(path.as_ref()).named(download_name).send().await
    }

    /// The answer to a GET (or HEAD) for the file at `path`, given the request's headers
    /// (`ctx.headers`): [`RawResponse::file`]'s headers plus `accept-ranges: bytes`, and
    /// `If-Match`, `If-Unmodified-Since` (412), `If-None-Match`, `If-Modified-Since`
    /// (304, no body), `Range` with `If-Range` (206 for one range, 416 when none is
    /// satisfiable, the whole file for several) evaluated as RFC 9110 orders them.
    ///
    /// ```no_run
    /// # use weir_service::{RawRequestContext, RawResponse, HandlerError};
    /// async fn report(ctx: RawRequestContext) -> Result<RawResponse, HandlerError> {
    ///     RawResponse::file_for(&ctx.headers, "/var/reports/latest.pdf", Some("report.pdf")).await
    /// }
    /// ```
    pub async fn file_for(
        request_headers: &Headers,
        path: impl AsRef<Path>,
        download_name: Option<&str>,
    ) -> Result<RawResponse, HandlerError> {
        FileResponse::new(path.as_ref()).named(download_name).send_for(request_headers).await
    }
}

/// A file answer with options, sent as [`RawResponse::file`] ([`FileResponse::send`])
/// or [`RawResponse::file_for`] ([`FileResponse::send_for`]) would send it.
///
/// ```no_run
/// # use weir_service::{FileResponse, RawRequestContext, RawResponse, HandlerError};
/// async fn events(ctx: RawRequestContext) -> Result<RawResponse, HandlerError> {
///     FileResponse::new("/var/log/events.log").media_type("application/x-ndjson").send_for(&ctx.headers).await
/// }
/// ```
#[derive(Debug, Clone)]
pub struct FileResponse {
    path: PathBuf,
    /// Sent as an `attachment` under this name; `None`: `inline` under the file's name.
    download_name: Option<String>,
    /// Replaces the content type guessed from the extension; `None`: the guess.
    media_type: Option<String>,
}

impl FileResponse {
    /// The file at `path`, with the content type guessed from its extension and shown
    /// `inline`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileResponse { path: path.into(), download_name: None, media_type: None }
    }

    /// Sends the file as an `attachment` named `name` (its extension then also guides the
    /// content type's guess when the path's does not).
    pub fn download_name(self, name: impl Into<String>) -> Self {
        self.named(Some(name.into()))
    }

    /// Sends `media_type` (e.g. `"application/x-ndjson"`) as the `Content-Type`, instead
    /// of the guess from the extension. It must be a valid header value: the gateway
    /// drops an invalid one.
    pub fn media_type(mut self, media_type: impl Into<String>) -> Self {
        self.media_type = Some(media_type.into());
        self
    }

    fn named(mut self, download_name: Option<impl Into<String>>) -> Self {
        self.download_name = download_name.map(Into::into);
        self
    }

    /// A 200 streaming the whole file, as [`RawResponse::file`].
    pub async fn send(self) -> Result<RawResponse, HandlerError> {
        Ok(OpenedFile::open(&self).await?.send(None))
    }

    /// The answer to a GET (or HEAD) given the request's headers, as
    /// [`RawResponse::file_for`]: conditionals and ranges honoured.
    pub async fn send_for(self, request_headers: &Headers) -> Result<RawResponse, HandlerError> {
        let mut opened = OpenedFile::open(&self).await?;
        let conditions = Conditions::from_lookup(|name| find_header(request_headers, name));
        let response = match http_file::evaluate(&conditions, &opened.validators, opened.len) {
            Answer::NotModified => with_validators(RawResponse::new(304), &opened.validators),
            Answer::PreconditionFailed => {
                HandlerError::new(412, "precondition_failed", "a precondition of the request does not hold")
                    .into_response()
            }
            Answer::RangeNotSatisfiable => {
                HandlerError::new(416, "range_not_satisfiable", "no requested range overlaps the file")
                    .into_response()
                    .header("content-range", http_file::unsatisfied_content_range(opened.len))
            }
            Answer::Full => opened.send(None),
            Answer::Partial(range) => {
                opened.file.seek(io::SeekFrom::Start(range.start)).await?;
                opened.send(Some(range))
            }
        };
        Ok(response.header("accept-ranges", "bytes"))
    }
}

/// An open regular file with what its headers need.
struct OpenedFile {
    file: File,
    len: u64,
    validators: Validators,
    content_type: String,
    disposition: Option<String>,
}

impl OpenedFile {
    async fn open(options: &FileResponse) -> Result<OpenedFile, HandlerError> {
        let (path, download_name) = (options.path.as_path(), options.download_name.as_deref());
        let file = File::open(path).await.map_err(open_error)?;
        let metadata = file.metadata().await?;
        if !metadata.is_file() {
            return Err(HandlerError::not_found("no such file"));
        }
        let content_type = match &options.media_type {
            Some(media_type) => media_type.clone(),
            None => guess_media_type(path, download_name),
        };
        let disposition = match download_name {
            Some(name) => Some(http_file::content_disposition(Disposition::Attachment, name)),
            None => path
                .file_name()
                .map(|name| http_file::content_disposition(Disposition::Inline, &name.to_string_lossy())),
        };
        Ok(OpenedFile {
            file,
            len: metadata.len(),
            validators: Validators::new(metadata.len(), metadata.modified().ok()),
            content_type,
            disposition,
        })
    }

    /// A 200 with the whole file, or a 206 with `range` (the file already positioned at
    /// its start).
    fn send(self, range: Option<ByteRange>) -> RawResponse {
        let (status, len) = range.map_or((200, self.len), |r| (206, r.len()));
        let mut response = RawResponse::new(status)
            .header("content-type", &self.content_type)
            .header("content-length", len.to_string());
        if let Some(range) = range {
            response = response.header("content-range", range.content_range(self.len));
        }
        response = with_validators(response, &self.validators);
        if let Some(disposition) = &self.disposition {
            response = response.header("content-disposition", disposition);
        }
        let chunks = file_chunks(self.file, len).map(|chunk| chunk.map_err(BoxError::from));
        response.body = ResponseBody::Stream(Box::pin(chunks));
        response
    }
}

/// Adds `etag` and, when the file has one, `last-modified`.
fn with_validators(response: RawResponse, validators: &Validators) -> RawResponse {
    let response = response.header("etag", &validators.etag);
    match validators.last_modified_header() {
        Some(date) => response.header("last-modified", date),
        None => response,
    }
}

/// The media type guessed from the path's extension, else from the download name's, else
/// `application/octet-stream`.
fn guess_media_type(path: &Path, download_name: Option<&str>) -> String {
    let mime = mime_guess::from_path(path)
        .first()
        .or_else(|| download_name.and_then(|name| mime_guess::from_path(name).first()))
        .unwrap_or(mime_guess::mime::APPLICATION_OCTET_STREAM);
    mime.essence_str().to_owned()
}

fn open_error(err: io::Error) -> HandlerError {
    if err.kind() == io::ErrorKind::NotFound {
        HandlerError::not_found("no such file")
    } else {
        tracing::error!(error = %err, "could not open a file to send");
        HandlerError::internal("the file could not be read")
    }
}

/// The file's first `len` bytes, in chunks of at most [`FILE_CHUNK`]; an error if the
/// file ends before `len`.
fn file_chunks(file: File, len: u64) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::try_unfold((file, len), |(mut file, remaining)| async move {
        if remaining == 0 {
            return Ok(None);
        }
        // At most FILE_CHUNK, so the conversion to usize cannot truncate.
        let want = remaining.min(FILE_CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        let read = file.read(&mut buf).await?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was being sent"));
        }
        buf.truncate(read);
        Ok(Some((buf.freeze(), (file, remaining - read as u64))))
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;

    /// A temporary file, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> TempFile {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let path = std::env::temp_dir().join(format!("weir-file-{}-{nanos}-{name}", std::process::id()));
            std::fs::write(&path, contents).expect("temp file written");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn header<'a>(response: &'a RawResponse, name: &str) -> Option<&'a str> {
        response.header_value(name).map(|v| std::str::from_utf8(v).expect("ASCII header"))
    }

    async fn body(response: RawResponse) -> Vec<u8> {
        match response.body {
            ResponseBody::Empty => Vec::new(),
            ResponseBody::Full(bytes) => bytes.to_vec(),
            ResponseBody::Stream(mut stream) => {
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk.expect("chunk read"));
                }
                out
            }
        }
    }

    fn request(headers: &[(&str, &str)]) -> Headers {
        headers.iter().map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v.as_bytes()))).collect()
    }

    fn contents() -> Vec<u8> {
        (0..200_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn whole_file_carries_length_validators_and_disposition() {
        let file = TempFile::new("data.bin", &contents());
        let response = RawResponse::file(&file.0, None).await.expect("served");
        assert_eq!(response.status, 200);
        assert_eq!(header(&response, "content-length"), Some("200000"));
        assert!(header(&response, "etag").is_some_and(|t| t.starts_with('"') && t.ends_with('"')));
        assert!(header(&response, "last-modified").is_some_and(|d| d.ends_with(" GMT")));
        let name = file.0.file_name().expect("a name").to_string_lossy().into_owned();
        assert_eq!(header(&response, "content-disposition"), Some(format!("inline; filename=\"{name}\"").as_str()));
        assert_eq!(header(&response, "accept-ranges"), None, "file() ignores ranges, so it does not offer them");
        assert_eq!(body(response).await, contents());
    }

    #[tokio::test]
    async fn ranges_are_served_from_the_right_offset() {
        let file = TempFile::new("r.bin", &contents());
        let data = contents();
        for (range, start, end) in
            [("bytes=0-99", 0, 99), ("bytes=150000-", 150_000, 199_999), ("bytes=-70000", 130_000, 199_999)]
        {
            let response =
                RawResponse::file_for(&request(&[("Range", range)]), &file.0, Some("r.bin")).await.expect("served");
            assert_eq!(response.status, 206, "{range}");
            assert_eq!(header(&response, "content-range"), Some(format!("bytes {start}-{end}/200000").as_str()));
            assert_eq!(header(&response, "content-length"), Some((end - start + 1).to_string().as_str()));
            assert_eq!(header(&response, "accept-ranges"), Some("bytes"));
            assert_eq!(body(response).await, &data[start..=end]);
        }
        let response =
            RawResponse::file_for(&request(&[("range", "bytes=0-1,5-6")]), &file.0, None).await.expect("served");
        assert_eq!(response.status, 200, "several ranges: the whole file");
        assert_eq!(body(response).await.len(), data.len());
    }

    #[tokio::test]
    async fn unsatisfiable_range_is_416_with_the_length() {
        let file = TempFile::new("u.bin", &contents());
        let response =
            RawResponse::file_for(&request(&[("range", "bytes=300000-")]), &file.0, None).await.expect("served");
        assert_eq!(response.status, 416);
        assert_eq!(header(&response, "content-range"), Some("bytes */200000"));
    }

    #[tokio::test]
    async fn current_validators_give_304_without_a_body() {
        let file = TempFile::new("c.bin", &contents());
        let first = RawResponse::file(&file.0, None).await.expect("served");
        let etag = header(&first, "etag").expect("an etag").to_owned();
        let date = header(&first, "last-modified").expect("a date").to_owned();
        for conditions in [vec![("If-None-Match", etag.as_str())], vec![("if-modified-since", date.as_str())]] {
            let response = RawResponse::file_for(&request(&conditions), &file.0, None).await.expect("served");
            assert_eq!(response.status, 304);
            assert_eq!(header(&response, "etag"), Some(etag.as_str()));
            assert!(body(response).await.is_empty());
        }
        let stale =
            RawResponse::file_for(&request(&[("if-none-match", "\"old\"")]), &file.0, None).await.expect("served");
        assert_eq!(stale.status, 200);
        let failed = RawResponse::file_for(&request(&[("if-match", "\"old\"")]), &file.0, None).await.expect("served");
        assert_eq!(failed.status, 412);
    }
}
