//! The target phase, first of all: what the request asks for, made unambiguous before
//! anything matches on it.
//!
//! - **Transfer codings.** weir decodes one coding, `chunked` (hyper does, as the last
//!   coding of an HTTP/1.1 request). Any other coding, or `chunked` twice, is refused
//!   with 501 (RFC 9112 §6.1): the body's bytes would otherwise reach the service still
//!   encoded, with nothing saying so.
//! - **The path** is normalised once, and every later phase — mount, route, static file,
//!   the head sent to the service — sees only the normal form:
//!   - escapes of unreserved characters are decoded (RFC 3986 §6.2.2.2: `%61` is `a`,
//!     `%2e` is `.`), so a prefix cannot be dodged by spelling it differently;
//!   - dot segments are removed (RFC 3986 §5.2.4: `/a/./b/../c` is `/a/c`); a path whose
//!     `..` climbs above the root is a 400 (RFC 3986 would stop at the root; no client
//!     sends such a path but to probe, and nginx refuses it too);
//!   - an encoded NUL (`%00`) is a 400: no file, template or service wants one;
//!   - an encoded slash (`%2F`) is a 400: decoded inside a path parameter it would be
//!     a path separator the router never saw, and kept encoded it would mean one thing
//!     to weir and another to a service that decodes it. Paths that need a `/` in a
//!     segment belong in a catch-all parameter (`{*rest}`), or in the query.
//!
//!   Other escapes (`%20`, non-ASCII bytes) are kept as they are and decoded only in
//!   matched parameters, as before.

use std::borrow::Cow;

use http::header::TRANSFER_ENCODING;
use http::uri::{PathAndQuery, Uri};
use http::Request;

use crate::response::error::GatewayError;
use crate::routing::normal_path;

/// Refuses unimplemented transfer codings and puts `request`'s path in its normal form.
pub(crate) fn normalise<B>(request: &mut Request<B>) -> Result<(), GatewayError> {
    check_transfer_codings(request.headers())?;
    let normal = match normal_path(request.uri().path()).map_err(GatewayError::BadRequest)? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(path) => path,
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|_| GatewayError::BadRequest("the normalised path is not a valid path".into()))?,
    );
    *request.uri_mut() = Uri::from_parts(parts)
        .map_err(|_| GatewayError::BadRequest("the normalised path is not a valid path".into()))?;
    Ok(())
}

/// 501 unless the request's transfer codings are none, or exactly one `chunked`.
fn check_transfer_codings(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(coding), None) if coding.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(GatewayError::NotImplemented("weir implements no transfer coding but one chunked".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, codings: &[&str]) -> Request<()> {
        let mut builder = Request::get(path);
        for coding in codings {
            builder = builder.header(TRANSFER_ENCODING, *coding);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_one_chunked_transfer_coding_is_implemented() {
        for codings in [&[][..], &["chunked"], &["Chunked"], &[" chunked "]] {
            assert_eq!(normalise(&mut request("/", codings)), Ok(()), "{codings:?}");
        }
        for codings in
            [&["gzip, chunked"][..], &["chunked, chunked"], &["gzip"], &["chunked", "chunked"], &["identity"]]
        {
            let refused = normalise(&mut request("/", codings));
            assert!(matches!(refused, Err(GatewayError::NotImplemented(_))), "{codings:?}: {refused:?}");
        }
    }

    #[test]
    fn the_request_keeps_its_query_and_gets_the_normal_path() {
        let mut request = request("/a/./b/../%63?x=1&y=%2F", &[]);
        normalise(&mut request).unwrap();
        assert_eq!(request.uri().path(), "/a/c");
        assert_eq!(request.uri().query(), Some("x=1&y=%2F"));
    }
}
