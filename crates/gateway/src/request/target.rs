//! The target phase, first of all: what the request asks for, made unambiguous before
//! anything matches on it.
//!
//! - **Host** (RFC 9112 §3.2). An HTTP/1.1 request carries exactly one `Host` field with
//!   a valid value (`host[:port]`, no user information; empty only when the target has
//!   no authority), absolute-form included; anything else is a 400. HTTP/1.0 may omit
//!   it; HTTP/2 names its authority in `:authority`.
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

use http::header::{HOST, TRANSFER_ENCODING};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Version};

use crate::response::error::GatewayError;
use crate::routing::normal_path;

/// Refuses a request without one valid `Host` or with unimplemented transfer codings,
/// and puts `request`'s path in its normal form.
pub(crate) fn normalise<B>(request: &mut Request<B>) -> Result<(), GatewayError> {
    check_host(request)?;
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

/// 400 unless an HTTP/1.1 request has exactly one `Host`, and a valid one.
fn check_host<B>(request: &Request<B>) -> Result<(), GatewayError> {
    if request.version() != Version::HTTP_11 {
        return Ok(());
    }
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host,
        (None, _) => return Err(GatewayError::BadRequest("an HTTP/1.1 request needs a `Host` field".into())),
        (Some(_), Some(_)) => return Err(GatewayError::BadRequest("more than one `Host` field".into())),
    };
    let valid = match host.as_bytes() {
        b"" => request.uri().authority().is_none(),
        bytes => is_host_and_port(bytes),
    };
    if valid {
        Ok(())
    } else {
        Err(GatewayError::BadRequest("the `Host` field is not a valid `host[:port]`".into()))
    }
}

/// Whether `bytes` is `uri-host [":" port]`: an authority without user information whose
/// port, if any, is digits.
fn is_host_and_port(bytes: &[u8]) -> bool {
    let Ok(authority) = Authority::try_from(bytes) else { return false };
    match authority.as_str().strip_prefix(authority.host()) {
        _ if bytes.contains(&b'@') => false,
        Some(rest) => {
            rest.is_empty() || rest.strip_prefix(':').is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()))
        }
        None => false,
    }
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
        let mut builder = Request::get(path).header(HOST, "weir.test");
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

    fn with_hosts(target: &str, version: Version, hosts: &[&[u8]]) -> Request<()> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(HOST, http::HeaderValue::from_bytes(host).unwrap());
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn an_http11_request_has_exactly_one_valid_host() {
        let served: [(&str, &[&[u8]]); 5] = [
            ("/", &[b"weir.test"]),
            ("/", &[b"weir.test:8080"]),
            ("/", &[b"[::1]:8080"]),
            ("/", &[b""]),
            ("http://weir.test/", &[b"weir.test"]),
        ];
        for (target, hosts) in served {
            assert_eq!(normalise(&mut with_hosts(target, Version::HTTP_11, hosts)), Ok(()), "{target} {hosts:?}");
        }
        let refused: [(&str, &[&[u8]]); 8] = [
            ("/", &[]),
            ("/", &[b"a.test", b"b.test"]),
            ("/", &[b"a.test", b"a.test"]),
            ("/", &[b"a b"]),
            ("/", &[b"user@weir.test"]),
            ("/", &[b"weir.test:port"]),
            ("http://weir.test/", &[]),
            ("http://weir.test/", &[b""]),
        ];
        for (target, hosts) in refused {
            let answer = normalise(&mut with_hosts(target, Version::HTTP_11, hosts));
            assert!(matches!(answer, Err(GatewayError::BadRequest(_))), "{target} {hosts:?}: {answer:?}");
        }
        for version in [Version::HTTP_10, Version::HTTP_2] {
            assert_eq!(normalise(&mut with_hosts("/", version, &[])), Ok(()), "{version:?} needs no Host");
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
