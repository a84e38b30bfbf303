//! The normal form of a request path, which every phase after the first sees (see
//! `crate::request::target` for the policy): escapes of unreserved characters decoded,
//! dot segments removed (RFC 3986 §5.2.4), and `%00`, `%2F` and `..` above the root
//! refused. Templates are held to the same form at registration, so a template and the
//! paths it matches are always compared in one spelling.

use std::borrow::Cow;

/// `path` in its normal form (see the module doc), borrowed when it already is; on
/// refusal returns why.
pub(crate) fn normal_path(path: &str) -> Result<Cow<'_, str>, String> {
    let decoded = decode_unreserved(path)?;
    if !has_dot_segment(&decoded) {
        return Ok(decoded);
    }
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// Decodes escapes of unreserved characters; refuses `%00` and `%2F`.
fn decode_unreserved(path: &str) -> Result<Cow<'_, str>, String> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        match escape.get(1..3).and_then(hex_byte) {
            Some(0) => return Err("an encoded NUL (%00) in the path".into()),
            Some(b'/') => return Err("an encoded slash (%2F) in the path".into()),
            Some(byte) if is_unreserved(byte) => {
                out.push(char::from(byte));
                rest = &escape[3..];
            }
            // Kept as it is: another escape, or a `%` not followed by two hex digits.
            _ => {
                out.push('%');
                rest = &escape[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// The byte two hex digits spell (`from_str_radix` alone would also take a sign).
fn hex_byte(hex: &str) -> Option<u8> {
    if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        u8::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| segment == "." || segment == "..")
}

/// RFC 3986 §5.2.4 on an absolute path, except that climbing above the root is refused.
fn remove_dot_segments(path: &str) -> Result<String, String> {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        match *segment {
            "." if is_last => kept.push(""),
            "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err("the path climbs above the root ('..')".into());
                }
                if is_last {
                    kept.push("");
                }
            }
            other => kept.push(other),
        }
    }
    Ok(format!("/{}", kept.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed() {
        for (path, normal) in [
            ("/a/b/c", "/a/b/c"),
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/../b/./../c/", "/c/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/.c", "/a/..b/.c"),
            ("/a//b/../c", "/a//c"),
            ("/billing/../api/hello", "/api/hello"),
        ] {
            assert_eq!(normal_path(path).unwrap(), normal, "{path}");
        }
    }

    #[test]
    fn a_path_already_normal_is_borrowed() {
        assert!(matches!(normal_path("/api/hello/x.y"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept() {
        for (path, normal) in [
            ("/%61pi/hello", "/api/hello"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/%2E%2e/admin", "/admin"),
            ("/api/.%2e/admin", "/admin"),
            ("/files/a%20b", "/files/a%20b"),
            ("/files/%C3%A9", "/files/%C3%A9"),
            ("/files/100%", "/files/100%"),
            ("/files/%zz", "/files/%zz"),
            ("/files/%+0", "/files/%+0"),
            ("/x/%7Eme", "/x/~me"),
        ] {
            assert_eq!(normal_path(path).unwrap(), normal, "{path}");
        }
    }

    #[test]
    fn nul_encoded_slashes_and_climbing_above_the_root_are_refused() {
        for path in
            ["/a%00b", "/api/..%2fadmin", "/api/a%2Fb", "/..", "/a/../..", "/%2e%2e/etc/passwd", "/a/%2E%2E/%2e%2e/b"]
        {
            assert!(normal_path(path).is_err(), "{path}");
        }
    }
}
