//! Syntax checks for what a service declares (HTTP methods and path templates), the
//! percent-decoding of matched parameters, and the one rule for a path under a prefix.
//!
//! These are pure functions with no state. The routing table calls the validators before
//! it looks at anything else in a registration, so that a malformed declaration is refused
//! with a precise reason; `matchit` still has the last word on whether a template fits
//! next to the others (see `state`).

use std::borrow::Cow;
use std::collections::BTreeSet;

/// Whether `path` lies under `prefix` on a segment boundary: `/api` (or `/api/`) covers
/// `/api` and `/api/x`, not `/apix`; `/` covers every path. Mounts and service grants both
/// match prefixes this way.
pub(crate) fn under_prefix(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Checks that `method` is a non-empty HTTP token (RFC 9110 `tchar`s) with no lower-case
/// letters. On failure returns why.
pub(crate) fn validate_method(method: &str) -> Result<(), String> {
    if method.is_empty() {
        return Err("the method is empty".to_owned());
    }
    if let Some(c) = method.chars().find(|c| !is_tchar(*c)) {
        return Err(format!("{c:?} is not allowed in an HTTP method"));
    }
    if method.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("methods must be upper case".to_owned());
    }
    Ok(())
}

/// RFC 9110 `tchar`: the characters of an HTTP token.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks a path template: it starts with `/`, has no empty interior segment, literal
/// segments hold visible ASCII without braces, `?` or `#`, a parameter `{name}` or
/// catch-all `{*name}` is a whole segment, names are `[A-Za-z0-9_-]+` and distinct, and
/// a catch-all comes last, and it is in the normal form of request paths (no `.` or
/// `..` segment, no escape of an unreserved character, no `%00` or `%2F`: see
/// [`super::path`]). Finally `matchit` must accept it on its own. On failure
/// returns why.
pub(crate) fn validate_template(template: &str) -> Result<(), String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("a template must start with '/'".to_owned());
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut names = BTreeSet::new();
    for (index, segment) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        if segment.is_empty() && !is_last {
            return Err("empty path segment ('//')".to_owned());
        }
        match parse_segment(segment)? {
            Segment::Literal => {}
            Segment::Param(name) => insert_name(&mut names, name)?,
            Segment::CatchAll(name) if is_last => insert_name(&mut names, name)?,
            Segment::CatchAll(name) => {
                return Err(format!("catch-all {{*{name}}} must be the last segment"));
            }
        }
    }
    match super::path::normal_path(template) {
        Ok(normal) if normal == template => {}
        Ok(normal) => return Err(format!("not in normal form (request paths are {normal:?}): no '.' or '..' segment, no escaped unreserved character")),
        Err(why) => return Err(why),
    }
    let mut probe = matchit::Router::new();
    probe.insert(template, ()).map_err(|e| e.to_string())
}

/// What one `/`-separated piece of a template is.
enum Segment<'a> {
    Literal,
    Param(&'a str),
    CatchAll(&'a str),
}

fn parse_segment(segment: &str) -> Result<Segment<'_>, String> {
    let braced = segment.strip_prefix('{').and_then(|inner| inner.strip_suffix('}'));
    let Some(inner) = braced else {
        return validate_literal(segment).map(|()| Segment::Literal);
    };
    let (name, is_catch_all) = match inner.strip_prefix('*') {
        Some(name) => (name, true),
        None => (inner, false),
    };
    if name.is_empty() {
        return Err(format!("parameter in segment {segment:?} has no name"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("{c:?} is not allowed in parameter name {name:?}"));
    }
    Ok(if is_catch_all { Segment::CatchAll(name) } else { Segment::Param(name) })
}

fn validate_literal(segment: &str) -> Result<(), String> {
    if segment.contains(['{', '}']) {
        return Err(format!("segment {segment:?}: a parameter must be a whole segment, '{{name}}' or '{{*name}}'"));
    }
    match segment.chars().find(|c| !c.is_ascii_graphic() || *c == '?' || *c == '#') {
        Some(c) => Err(format!("{c:?} is not allowed in a path template")),
        None => Ok(()),
    }
}

fn insert_name<'a>(names: &mut BTreeSet<&'a str>, name: &'a str) -> Result<(), String> {
    if names.insert(name) {
        Ok(())
    } else {
        Err(format!("parameter name {name:?} is used twice"))
    }
}

/// Decodes `%XX` escapes. A `%` not followed by two hex digits is kept as it is, and `+`
/// stays `+` (it means a space only in form-encoded query strings). Returns `None` when
/// the decoded bytes are not UTF-8.
pub(crate) fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = match bytes[index] {
            b'%' => bytes.get(index + 1..index + 3).and_then(decode_hex_pair),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

/// The byte two hex digits spell, or `None` when they are not both hex digits.
fn decode_hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    let value = digit(*pair.first()?)? * 16 + digit(*pair.get(1)?)?;
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_must_be_upper_case_tokens() {
        assert!(validate_method("GET").is_ok());
        assert!(validate_method("M-SEARCH").is_ok());
        assert!(validate_method("get").is_err());
        assert!(validate_method("").is_err());
        assert!(validate_method("GE T").is_err());
        assert!(validate_method("GET/").is_err());
    }

    #[test]
    fn templates_are_checked() {
        for good in [
            "/",
            "/users",
            "/users/",
            "/users/{id}",
            "/users/{id}/orders/{order_id}",
            "/files/{*rest}",
            "/v1.0/items:search",
            "/a/.../b",
            "/a%20b",
        ] {
            assert!(validate_template(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "users",
            "/users//x",
            "/users/{id",
            "/users/id}",
            "/users/{}",
            "/users/{*}",
            "/img{id}.png",
            "/{a}/{a}",
            "/{*rest}/more",
            "/a b",
            "/a?b",
            "/{na.me}",
            "/caf\u{e9}",
            "/billing/../api/hello",
            "/billing/./x",
            "/billing/..",
            "/billing/%2e%2e/api",
            "/%61pi",
            "/a%2Fb",
            "/a%00",
        ] {
            assert!(validate_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("caf\u{e9}"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%FF"), None);
    }
}
