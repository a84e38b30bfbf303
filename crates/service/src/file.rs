//! File downloads (seed 000's `FileResponse`): [`RawResponse::file`] answers a file read
//! asynchronously in 64 KiB chunks, with `Content-Length` from its metadata, a
//! `Content-Type` guessed from its extension and, when a download name is given, a
//! `Content-Disposition: attachment` header escaped as RFC 6266 asks.
//!
//! Invariant: the body never exceeds the announced length. A file that grows while it
//! is sent is cut at its original length; one that shrinks aborts the response (the
//! gateway sees `HandlerFailed`) rather than sending fewer bytes than announced.

use std::io;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::fs::File;
use tokio::io::AsyncReadExt;

use crate::error::HandlerError;
use crate::response::{BoxError, RawResponse, ResponseBody};

/// Bytes read from the file per chunk.
pub(crate) const FILE_CHUNK: usize = 64 * 1024;

impl RawResponse {
    /// A 200 response streaming the file at `path`.
    ///
    /// `download_name`, when given, is sent as
    /// `content-disposition: attachment; filename="..."` (plus `filename*=` in UTF-8 when
    /// it is not plain ASCII). The content type is guessed from the path's extension, else
    /// from the download name's, else `application/octet-stream`.
    ///
    /// A missing path (or a directory) is a 404 [`HandlerError`]; any other I/O failure
    /// is a 500. Neither reveals the path to the client.
    pub async fn file(path: impl AsRef<Path>, download_name: Option<&str>) -> Result<RawResponse, HandlerError> {
        let path = path.as_ref();
        let file = File::open(path).await.map_err(open_error)?;
        let metadata = file.metadata().await?;
        if !metadata.is_file() {
            return Err(HandlerError::not_found("no such file"));
        }
        let len = metadata.len();
        let mime = mime_guess::from_path(path)
            .first()
            .or_else(|| download_name.and_then(|name| mime_guess::from_path(name).first()))
            .unwrap_or(mime_guess::mime::APPLICATION_OCTET_STREAM);
        let mut response =
            RawResponse::new(200).header("content-type", mime.essence_str()).header("content-length", len.to_string());
        if let Some(name) = download_name {
            response = response.header("content-disposition", content_disposition(name));
        }
        let chunks = file_chunks(file, len).map(|chunk| chunk.map_err(BoxError::from));
        response.body = ResponseBody::Stream(Box::pin(chunks));
        Ok(response)
    }
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

/// `attachment; filename="..."` for `name`, as RFC 6266 section 4.3 recommends: the
/// quoted `filename` is an ASCII fallback (quotes and backslashes escaped, control and
/// non-ASCII characters replaced by `_`), and a name that is not plain ASCII also gets
/// `filename*=UTF-8''...` (RFC 8187 percent-encoding), which user agents prefer.
pub(crate) fn content_disposition(name: &str) -> String {
    let mut value = String::from("attachment; filename=\"");
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
    let plain = name.chars().all(|c| matches!(c, ' '..='~'));
    if !plain {
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
mod tests {
    use super::content_disposition;

    #[test]
    fn plain_ascii_name_is_quoted() {
        assert_eq!(content_disposition("report 2024.pdf"), "attachment; filename=\"report 2024.pdf\"");
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(content_disposition("a\"b\\c.txt"), "attachment; filename=\"a\\\"b\\\\c.txt\"");
    }

    #[test]
    fn control_characters_cannot_inject_headers() {
        assert_eq!(
            content_disposition("a\r\nb.txt"),
            "attachment; filename=\"a__b.txt\"; filename*=UTF-8''a%0D%0Ab.txt"
        );
    }

    #[test]
    fn non_ascii_name_gets_filename_star() {
        assert_eq!(
            content_disposition("résumé €.pdf"),
            "attachment; filename=\"r_sum_ _.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%82%AC.pdf"
        );
    }
}
