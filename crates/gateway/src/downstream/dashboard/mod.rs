//! The live dashboard at the admin listener's `/`: one HTML page, its script
//! (`/dashboard.js`) and its style (`/dashboard.css`), compiled into the binary, so it
//! needs no CDN, no build step and no file beside the binary. The script polls the admin
//! JSON endpoints and `/metrics` every second and draws what they say; the page itself
//! holds no data.
//!
//! Invariant: the page runs nothing inline. Every admin answer carries a
//! Content-Security-Policy of `default-src 'self'` ([`protect`]), so the browser runs only
//! scripts and styles loaded from the admin listener itself, frames the page nowhere and
//! submits no form.

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use http::Response;

use crate::response::GatewayBody;

/// The policy every admin answer carries: nothing but this listener's own files, no
/// framing, no `<base>` and no form submission.
const POLICY: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file and the path it is served at.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_str!("index.html") },
    Asset { path: "/dashboard.js", content_type: "text/javascript; charset=utf-8", body: include_str!("dashboard.js") },
    Asset { path: "/dashboard.css", content_type: "text/css; charset=utf-8", body: include_str!("dashboard.css") },
];

/// The dashboard's file at `path`, if it is one.
pub(super) fn asset(path: &str) -> Option<Response<GatewayBody>> {
    let asset = ASSETS.iter().find(|asset| asset.path == path)?;
    let mut response = Response::new(GatewayBody::full(Bytes::from_static(asset.body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // A newer binary serves a newer script: the browser asks again each load.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// Sets the security fields on an admin answer: the policy, no content sniffing (a JSON
/// answer is never run as a script) and no referrer leaving the admin listener.
pub(super) fn protect(headers: &mut HeaderMap) {
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_script_and_style_from_their_own_paths_and_runs_nothing_inline() {
        let page = ASSETS[0].body;
        assert!(page.contains(r#"<script src="/dashboard.js" defer></script>"#), "{page}");
        assert!(page.contains(r#"<link rel="stylesheet" href="/dashboard.css">"#), "{page}");
        assert_eq!(page.matches("<script").count(), 1, "one script element, with a src");
        assert!(!page.contains("style=") && !page.contains("<style"), "inline style: {page}");
        let handler = page.split_whitespace().find(|word| word.starts_with("on") && word.contains('='));
        assert_eq!(handler, None, "inline event handler");
        for file in &ASSETS {
            assert!(asset(file.path).is_some(), "{} is served", file.path);
        }
        assert!(asset("/index.html").is_none());
    }
}
