//! Who the client is behind the proxies in front of weir, and what a service is told about
//! the hops a request took.
//!
//! - **The client's address.** A request's client is the peer of its connection, unless
//!   that peer is one of `server.trusted_proxies`. Then the client is read from
//!   `X-Forwarded-For` (or, when there is none, from the `for=` parameters of RFC 7239
//!   `Forwarded`) from the right, since each proxy appends the peer it saw: the first
//!   address that is not itself a trusted proxy. An entry that is not an address stops the
//!   walk, and the last trusted hop is then the client. That address is the one rate
//!   limits, the per-client budget cap and per-user WebSocket limits key on, and the
//!   request registry shows. From any other peer these fields say nothing about who the
//!   client is. (The per-IP connection limit counts connections before any request is
//!   read, so it stays on the peer: a proxy's connections count as its own.)
//! - **The fields sent on.** `X-Forwarded-For` is the value the request came with, with
//!   the peer appended, as one field. `X-Forwarded-Proto` (the client listener's scheme)
//!   and `X-Forwarded-Host` (the request's `Host`, or `:authority`) are set by the gateway,
//!   replacing what an untrusted peer sent and keeping what a trusted proxy sent. With
//!   `server.forwarded_header`, `Forwarded` gets an element `for=…;host=…;proto=…`
//!   appended the same way; without it, a `Forwarded` field passes untouched.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{HeaderName, FORWARDED, HOST};
use http::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// The client a request speaks for: see the module doc.
pub(crate) fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted_proxy(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_chain(headers).into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// Whether `ip` is one of `server.trusted_proxies`.
pub(crate) fn is_trusted_proxy(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The addresses the proxies before weir saw, oldest first (`None`: not an address, such
/// as `unknown` or an obfuscated name).
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let list = |name| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    let x_forwarded: Vec<_> = list(HeaderName::from_static(X_FORWARDED_FOR)).map(parse_address).collect();
    if !x_forwarded.is_empty() {
        return x_forwarded;
    }
    list(FORWARDED)
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then(|| parse_address(value.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, or either with a port.
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// One hop, as the service is to be told about it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hop<'a> {
    /// The connection's peer: appended to the chain.
    pub peer: IpAddr,
    /// `http` or `https`: the client listener's scheme.
    pub scheme: &'static str,
    /// Whether `peer` is a trusted proxy, whose `X-Forwarded-Proto`/`-Host` stand.
    pub trusted_peer: bool,
    /// `server.forwarded_header`.
    pub forwarded_header: bool,
    /// The request's `:authority`, for HTTP/2 requests that carry no `Host`.
    pub authority: Option<&'a str>,
}

impl Hop<'_> {
    /// Whether the gateway writes field `name` itself (the client's copy is not passed on).
    pub(crate) fn rewrites(&self, name: &str) -> bool {
        matches!(name, X_FORWARDED_FOR | X_FORWARDED_PROTO | X_FORWARDED_HOST)
            || (self.forwarded_header && name == FORWARDED.as_str())
    }

    /// The fields the gateway writes, from the request's `headers`.
    pub(crate) fn fields(&self, headers: &HeaderMap) -> Vec<(String, Bytes)> {
        let joined = |name: &str| {
            let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        let kept = |name: &str| self.trusted_peer.then(|| joined(name)).flatten();
        let host = headers.get(HOST).and_then(|v| v.to_str().ok()).or(self.authority);
        let mut fields = vec![(X_FORWARDED_FOR.to_owned(), append(joined(X_FORWARDED_FOR), &self.peer.to_string()))];
        let proto = kept(X_FORWARDED_PROTO).unwrap_or_else(|| self.scheme.to_owned());
        fields.push((X_FORWARDED_PROTO.to_owned(), Bytes::from(proto)));
        if let Some(host) = kept(X_FORWARDED_HOST).or_else(|| host.map(str::to_owned)) {
            fields.push((X_FORWARDED_HOST.to_owned(), Bytes::from(host)));
        }
        if self.forwarded_header {
            let element = self.forwarded_element(host);
            fields.push((FORWARDED.as_str().to_owned(), append(joined(FORWARDED.as_str()), &element)));
        }
        fields
    }

    /// This hop as a `Forwarded` element (RFC 7239 §4): `for=…;host="…";proto=…`.
    fn forwarded_element(&self, host: Option<&str>) -> String {
        let mut element = match self.peer {
            IpAddr::V4(ip) => format!("for={ip}"),
            IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
        };
        if let Some(host) = host.filter(|h| !h.contains(['"', '\\'])) {
            element.push_str(&format!(";host=\"{host}\""));
        }
        element.push_str(&format!(";proto={}", self.scheme));
        element
    }
}

/// `list, item` (or `item` alone).
fn append(list: Option<String>, item: &str) -> Bytes {
    Bytes::from(match list {
        Some(list) => format!("{list}, {item}"),
        None => item.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_client_is_read_from_the_right_past_trusted_proxies_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let xff = |v| headers(&[("x-forwarded-for", v)]);
        // An untrusted peer: its claims say nothing.
        assert_eq!(client_address(&xff("1.2.3.4"), ip("203.0.113.9"), &trusted), ip("203.0.113.9"));
        // A trusted peer: the rightmost untrusted entry, past other trusted proxies.
        assert_eq!(client_address(&xff("6.6.6.6, 1.2.3.4, 10.1.1.1"), ip("10.0.0.1"), &trusted), ip("1.2.3.4"));
        assert_eq!(client_address(&xff("[2001:db8::1]:443"), ip("fd00::1"), &trusted), ip("2001:db8::1"));
        // Every hop trusted: the leftmost; garbage stops the walk at the last trusted hop.
        assert_eq!(client_address(&xff("10.2.2.2, 10.1.1.1"), ip("10.0.0.1"), &trusted), ip("10.2.2.2"));
        assert_eq!(client_address(&xff("1.2.3.4, garbage, 10.1.1.1"), ip("10.0.0.1"), &trusted), ip("10.1.1.1"));
        // No field: the peer.
        assert_eq!(client_address(&HeaderMap::new(), ip("10.0.0.1"), &trusted), ip("10.0.0.1"));
        // Forwarded when there is no X-Forwarded-For.
        let forwarded = headers(&[("forwarded", "for=1.2.3.4;proto=https, for=\"[2001:db8::7]:80\"")]);
        assert_eq!(client_address(&forwarded, ip("10.0.0.1"), &trusted), ip("2001:db8::7"));
        let unknown = headers(&[("forwarded", "for=1.2.3.4, for=unknown")]);
        assert_eq!(client_address(&unknown, ip("10.0.0.1"), &trusted), ip("10.0.0.1"));
    }

    fn hop(trusted_peer: bool, forwarded_header: bool) -> Hop<'static> {
        Hop { peer: ip("192.0.2.7"), scheme: "https", trusted_peer, forwarded_header, authority: Some("h2.test") }
    }

    fn field<'f>(fields: &'f [(String, Bytes)], name: &str) -> Option<&'f str> {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn the_chain_is_appended_to_and_an_untrusted_peers_claims_are_replaced() {
        let sent = headers(&[
            ("host", "api.test"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.test"),
        ]);
        let untrusted = hop(false, false).fields(&sent);
        assert_eq!(field(&untrusted, "x-forwarded-for"), Some("1.1.1.1, 2.2.2.2, 192.0.2.7"));
        assert_eq!(field(&untrusted, "x-forwarded-proto"), Some("https"));
        assert_eq!(field(&untrusted, "x-forwarded-host"), Some("api.test"));
        assert_eq!(field(&untrusted, "forwarded"), None);
        let trusted = hop(true, false).fields(&sent);
        assert_eq!(field(&trusted, "x-forwarded-proto"), Some("gopher"));
        assert_eq!(field(&trusted, "x-forwarded-host"), Some("evil.test"));
        let h2 = hop(false, false).fields(&HeaderMap::new());
        assert_eq!(field(&h2, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(field(&h2, "x-forwarded-host"), Some("h2.test"));
    }

    #[test]
    fn forwarded_gets_this_hop_appended_when_enabled() {
        let sent = headers(&[("host", "api.test"), ("forwarded", "for=1.1.1.1")]);
        let fields = hop(false, true).fields(&sent);
        assert_eq!(field(&fields, "forwarded"), Some("for=1.1.1.1, for=192.0.2.7;host=\"api.test\";proto=https"));
        assert!(hop(false, true).rewrites("forwarded") && !hop(false, false).rewrites("forwarded"));
        let v6 = Hop { peer: ip("2001:db8::2"), ..hop(false, true) };
        assert_eq!(
            field(&v6.fields(&HeaderMap::new()), "forwarded"),
            Some("for=\"[2001:db8::2]\";host=\"h2.test\";proto=https")
        );
    }
}
