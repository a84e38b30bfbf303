//! The plain-HTTP redirect listener (`server.http_redirect_listen`): every request, on
//! any path and with any method, is answered 308 Permanent Redirect to the same path and
//! query on `https://HOST`, where HOST is the host the request names (its absolute URI
//! or HTTP/2 authority, else its `Host` header) without its port, followed by the HTTPS
//! listener's port unless that is 443. 308, unlike 301, tells clients to repeat the
//! method and body. A request that names no host cannot be redirected: 400.
//!
//! The listener is served by the same front as the others (per-IP limit, connection
//! cap, header and idle timeouts); only the answer differs.

use http::header::{HeaderValue, HOST, LOCATION};
use http::uri::Authority;
use http::{Request, Response, StatusCode};

use crate::response::error::GatewayError;
use crate::response::GatewayBody;

/// The redirect for `request`, to the HTTPS listener on `https_port`.
pub(super) fn answer<B>(request: &Request<B>, https_port: u16) -> Result<Response<GatewayBody>, GatewayError> {
    let host = requested_host(request)
        .ok_or_else(|| GatewayError::BadRequest("no host to redirect to: the request has no Host header".into()))?;
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let location = HeaderValue::try_from(location)
        .map_err(|_| GatewayError::BadRequest("the request's host and path make no valid Location".into()))?;
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// The host `request` names, without its port: its URI's authority, else its `Host`
/// header; `None` if neither is there or the header is no valid authority.
fn requested_host<B>(request: &Request<B>) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.host().to_owned());
    }
    let header = request.headers().get(HOST)?.to_str().ok()?;
    let authority: Authority = header.parse().ok()?;
    let host = authority.host();
    // An authority with user info (`user@host`) is not a Host header.
    (!host.is_empty() && !header.contains('@')).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(request: Request<()>, port: u16) -> Result<String, GatewayError> {
        let response = answer(&request, port)?;
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        Ok(response.headers()[LOCATION].to_str().unwrap().to_owned())
    }

    fn get(uri: &str, host: Option<&str>) -> Request<()> {
        let mut builder = Request::get(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_host_loses_its_port_and_gains_the_https_one() {
        assert_eq!(
            location(get("/a/b?x=1&y", Some("example.com:8080")), 8443).unwrap(),
            "https://example.com:8443/a/b?x=1&y"
        );
        assert_eq!(location(get("/", Some("example.com")), 443).unwrap(), "https://example.com/");
        assert_eq!(location(get("/v6", Some("[::1]:80")), 443).unwrap(), "https://[::1]/v6");
        assert_eq!(location(get("http://abs.example/p?q", Some("other")), 443).unwrap(), "https://abs.example/p?q");
    }

    #[test]
    fn no_usable_host_is_a_bad_request() {
        for host in [None, Some(""), Some("user@evil.example"), Some("a b")] {
            let err = location(get("/", host), 443).unwrap_err();
            assert!(matches!(err, GatewayError::BadRequest(_)), "{host:?}: {err}");
        }
    }
}
