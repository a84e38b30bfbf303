//! Request body size: the declared `Content-Length`, read one way everywhere, and the one
//! check of a declared length against a limit, refused (413) before any body byte is
//! read. Bodies without a declared length are counted as they are read instead (see
//! `upstream/http.rs`).

use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use thiserror::Error;

/// Why a declared body size is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum BodySizeError {
    /// `Content-Length` is not a decimal number (400).
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// The declared length is over the limit (413).
    #[error("body of {length} bytes exceeds the limit of {max}")]
    TooLarge { length: u64, max: u64 },
}

/// The `Content-Length` of `headers`: `None` when absent, `Some(Err)` when not a decimal
/// number (refused on a request; ignored on a service's response).
pub(crate) fn content_length(headers: &HeaderMap) -> Option<Result<u64, BodySizeError>> {
    let value = headers.get(CONTENT_LENGTH)?;
    let parsed = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
    Some(parsed.ok_or(BodySizeError::InvalidContentLength))
}

/// Refuses a declared body `length` over `max`.
pub(crate) fn check_declared_length(length: Option<u64>, max: u64) -> Result<(), BodySizeError> {
    match length {
        Some(length) if length > max => Err(BodySizeError::TooLarge { length, max }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn content_length_is_absent_a_number_or_invalid() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(content_length(&headers), Some(Ok(42)));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("4x"));
        assert_eq!(content_length(&headers), Some(Err(BodySizeError::InvalidContentLength)));
    }

    #[test]
    fn a_declared_length_over_the_limit_is_413() {
        assert_eq!(check_declared_length(None, 10), Ok(()));
        assert_eq!(check_declared_length(Some(10), 10), Ok(()));
        assert_eq!(check_declared_length(Some(11), 10), Err(BodySizeError::TooLarge { length: 11, max: 10 }));
    }
}
