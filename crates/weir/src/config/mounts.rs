//! `[[mount]]` entries: prefix, profile, the mount's settings (body limits, timeouts,
//! WebSocket and rate limits), the static profile's `root`, and a business mount's `[mount.auth]`.
//!
//! A declared mount starts from the defaults of `MountSettings::declared_defaults`;
//! rate settings always name their unit (`"100/min"`, `"20/s"`), except that a bare
//! integer `rate_limit_requests` means per minute (`docs/configuration.md`); `"off"`
//! disables a limit. Rules within one mount (chunk size against upload size, `root` only
//! and always for static, auth only for business, no key the profile has no use for) and
//! across mounts (no two with the same prefix) are reported on the key at fault: a key
//! that would be silently ignored is an error, never a surprise in production.

use std::path::PathBuf;
use std::time::Duration;

use toml_edit::Item;
use weir_gateway::config::{ApiKey, AuthConfig, JwtAlgorithm, JwtConfig, MountConfig, MountSettings, Profile, Rate};

use super::{duration, expected, non_empty_string, size, string, Section, GIB, MAX_CHUNK};

/// One `[[mount]]`; `None` (already reported) when its prefix or profile is unusable.
/// `seen` holds the prefixes of the mounts before it, with their paths, in file order.
pub(super) fn read_mount(s: &mut Section<'_, '_>, seen: &mut Vec<(String, String)>) -> Option<MountConfig> {
    let prefix = s.required("prefix", mount_prefix);
    if let Some(prefix) = &prefix {
        if let Some((_, first)) = seen.iter().find(|(p, _)| p == prefix) {
            let path = s.key_path("prefix");
            let line = s.reader.lines.get(&path).copied().unwrap_or(s.line);
            s.reader.reject(&path, line, format!("{prefix:?} is already the prefix of {first}"));
        }
        seen.push((prefix.clone(), s.path.clone()));
    }
    let profile = s.required("profile", profile);
    let mut root = None;
    s.value("root", &mut root, |item| directory(item).map(Some));
    let mut settings = MountSettings::declared_defaults();
    read_settings(s, &mut settings);
    let mut auth = AuthConfig::None;
    s.section("auth", |a| {
        if a.present() {
            auth = read_auth(a);
        }
    });
    let (prefix, profile) = (prefix?, profile?);
    check_mount(s, profile, root.is_some(), &auth, &settings);
    Some(MountConfig { prefix, profile, root, auth, settings })
}

/// The mount's settings, one line per key.
fn read_settings(s: &mut Section<'_, '_>, c: &mut MountSettings) {
    s.value("max_upload_size", &mut c.max_upload_size, size(1, u64::MAX));
    s.value("upload_timeout", &mut c.upload_timeout, duration);
    s.value("download_timeout", &mut c.download_timeout, duration);
    s.value("chunk_size", &mut c.chunk_size, size(1, MAX_CHUNK));
    s.value("ws_max_message_size", &mut c.ws_max_message_size, size(1, GIB));
    s.value("ws_idle_timeout", &mut c.ws_idle_timeout, duration);
    s.value("ws_max_connections_per_user", &mut c.ws_max_connections_per_user, count);
    s.value("ws_rate_limit_messages", &mut c.ws_rate_limit_messages, |item| rate(item, None));
    s.value("ws_compression", &mut c.ws_compression, super::boolean);
    s.value("rate_limit_requests", &mut c.rate_limit_requests, |item| rate(item, Some(Duration::from_secs(60))));
    s.value("rate_limit_bandwidth", &mut c.rate_limit_bandwidth, bandwidth);
    s.value("max_request_bytes_per_call", &mut c.max_request_bytes_per_call, |item| {
        size(1, 8 * 1024 * 1024)(item).map(Some)
    });
    s.value("max_inflight_bytes", &mut c.max_inflight_bytes, |item| size(1, u64::MAX)(item).map(Some));
}

/// The settings a static mount has no use for: it reads no request body and opens no
/// WebSocket (every other setting applies to every profile; `docs/configuration.md`
/// tables them).
const UNUSED_BY_STATIC: [&str; 9] = [
    "max_upload_size",
    "upload_timeout",
    "ws_max_message_size",
    "ws_idle_timeout",
    "ws_max_connections_per_user",
    "ws_rate_limit_messages",
    "ws_compression",
    "max_request_bytes_per_call",
    "max_inflight_bytes",
];

/// Rules between one mount's keys.
fn check_mount(s: &mut Section<'_, '_>, profile: Profile, has_root: bool, auth: &AuthConfig, settings: &MountSettings) {
    let fault = |s: &mut Section<'_, '_>, key: &str, message: String| {
        let path = s.key_path(key);
        let line = s.reader.lines.get(&path).copied().unwrap_or(s.line);
        s.reader.reject(&path, line, message);
    };
    if profile == Profile::Static && !has_root && !s.reader.rejected.contains(&s.key_path("root")) {
        s.missing("root", "a static mount needs the directory it serves");
    }
    if profile != Profile::Static && has_root {
        fault(s, "root", format!("only a static mount serves a root (this one is {})", profile.name()));
    }
    if profile != Profile::Business && *auth != AuthConfig::None {
        fault(s, "auth", format!("authentication runs on business mounts (this one is {})", profile.name()));
    }
    if profile == Profile::Static {
        for key in UNUSED_BY_STATIC {
            if s.reader.lines.contains_key(&s.key_path(key)) {
                fault(s, key, "is not used by a static mount (it reads no request body and opens no WebSocket)".into());
            }
        }
    }
    if settings.chunk_size as u64 > settings.max_upload_size {
        let message =
            format!("{} bytes exceeds max_upload_size ({} bytes)", settings.chunk_size, settings.max_upload_size);
        fault(s, "chunk_size", message);
    }
}

/// `[mount.auth]`: `kind` and its settings.
fn read_auth(s: &mut Section<'_, '_>) -> AuthConfig {
    match s.required("kind", string).as_deref() {
        Some("none") => AuthConfig::None,
        Some("api_keys") => {
            let mut keys = Vec::new();
            s.tables("keys", &mut keys, read_api_key);
            if keys.is_empty() {
                s.missing("keys", "api_keys authentication needs at least one [[mount.auth.keys]]");
            }
            AuthConfig::ApiKeys(keys)
        }
        Some("jwt") => read_jwt(s).map_or(AuthConfig::None, AuthConfig::Jwt),
        Some(other) => {
            let path = s.key_path("kind");
            let line = s.reader.lines.get(&path).copied().unwrap_or(s.line);
            s.reader.reject(&path, line, format!("{other:?} is not one of \"none\", \"api_keys\", \"jwt\""));
            AuthConfig::None
        }
        None => AuthConfig::None,
    }
}

/// One `[[mount.auth.keys]]`: `key`, `subject`, optional `claims` (type → value or values).
fn read_api_key(s: &mut Section<'_, '_>) -> Option<ApiKey> {
    let key = s.required("key", non_empty_string);
    let subject = s.required("subject", non_empty_string);
    let mut claims = Vec::new();
    s.value("claims", &mut claims, claim_table);
    Some(ApiKey { key: key?, subject: subject?, claims })
}

/// JWT settings: `algorithm` with `secret` (HS256) or `public_key_file` (RS256).
fn read_jwt(s: &mut Section<'_, '_>) -> Option<JwtConfig> {
    let algorithm = s.required("algorithm", string)?;
    let mut secret = None;
    s.value("secret", &mut secret, |item| non_empty_string(item).map(Some));
    let mut public_key_file = None;
    s.value("public_key_file", &mut public_key_file, |item| existing_file(item).map(Some));
    let mut issuer = None;
    s.value("issuer", &mut issuer, |item| non_empty_string(item).map(Some));
    let mut audience = None;
    s.value("audience", &mut audience, |item| non_empty_string(item).map(Some));
    let algorithm = match (algorithm.as_str(), secret, public_key_file) {
        ("HS256", Some(secret), None) => JwtAlgorithm::Hs256 { secret },
        ("RS256", None, Some(public_key_file)) => JwtAlgorithm::Rs256 { public_key_file },
        (alg, _, _) => {
            let path = s.key_path("algorithm");
            let line = s.reader.lines.get(&path).copied().unwrap_or(s.line);
            let message = format!("{alg:?}: use \"HS256\" with `secret`, or \"RS256\" with `public_key_file`");
            s.reader.reject(&path, line, message);
            return None;
        }
    };
    Some(JwtConfig { algorithm, issuer, audience })
}

fn claim_table(item: &Item) -> Result<Vec<(String, String)>, String> {
    let table = item.as_table_like().ok_or_else(|| expected("a table of claim type = value", item))?;
    let mut claims = Vec::new();
    for (claim_type, value) in table.iter() {
        match (value.as_str(), value.as_array()) {
            (Some(v), _) => claims.push((claim_type.to_owned(), v.to_owned())),
            (None, Some(values)) if values.iter().all(|v| v.as_str().is_some()) => {
                claims.extend(values.iter().filter_map(|v| v.as_str()).map(|v| (claim_type.to_owned(), v.to_owned())));
            }
            _ => return Err(format!("claim {claim_type:?} must be a string or an array of strings")),
        }
    }
    Ok(claims)
}

fn mount_prefix(item: &Item) -> Result<String, String> {
    let prefix = string(item)?;
    if !prefix.starts_with('/') {
        return Err(format!("{prefix:?} must start with /"));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!("{prefix:?} must not end with / (prefixes match whole segments)"));
    }
    if prefix.contains("//") || prefix.contains(['?', '#', '{', '}']) {
        return Err(format!("{prefix:?} is not a plain path"));
    }
    Ok(prefix)
}

fn profile(item: &Item) -> Result<Profile, String> {
    match string(item)?.as_str() {
        "business" => Ok(Profile::Business),
        "streaming" => Ok(Profile::Streaming),
        "static" => Ok(Profile::Static),
        other => Err(format!("unknown profile {other:?}; expected \"business\", \"streaming\" or \"static\"")),
    }
}

fn directory(item: &Item) -> Result<PathBuf, String> {
    let path = PathBuf::from(non_empty_string(item)?);
    if !path.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    Ok(path)
}

fn existing_file(item: &Item) -> Result<PathBuf, String> {
    let path = PathBuf::from(non_empty_string(item)?);
    if !path.is_file() {
        return Err(format!("{} is not a readable file", path.display()));
    }
    Ok(path)
}

pub(super) fn count(item: &Item) -> Result<u32, String> {
    let n = item.as_integer().ok_or_else(|| expected("a whole number", item))?;
    match u32::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{n} must be between 1 and {}", u32::MAX)),
    }
}

/// A rate: `"N/s"`, `"N/min"`, `"N/h"`, or `"off"`; a bare integer only where
/// `bare_unit` says what it means.
fn rate(item: &Item, bare_unit: Option<Duration>) -> Result<Option<Rate>, String> {
    if let (Some(n), Some(per)) = (item.as_integer(), bare_unit) {
        let count = u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| format!("{n} must be a positive count"))?;
        return Ok(Some(Rate { count, per }));
    }
    let text = string(item).map_err(|_| expected("a rate such as \"100/min\" or \"off\"", item))?;
    if text == "off" {
        return Ok(None);
    }
    let (count, unit) =
        text.split_once('/').ok_or_else(|| format!("{text:?} must name its unit, e.g. \"{text}/s\""))?;
    let count: u32 =
        count.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("{count:?} is not a positive count"))?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => return Err(format!("unknown rate unit {other:?}; use s, min or h")),
    };
    Ok(Some(Rate { count, per }))
}

/// Bytes per second: an integer, a size string optionally ending in `/s`, or `"off"`.
fn bandwidth(item: &Item) -> Result<Option<u64>, String> {
    if item.as_str() == Some("off") {
        return Ok(None);
    }
    if let Some(text) = item.as_str().and_then(|t| t.strip_suffix("/s")) {
        return size(1, u64::MAX)(&Item::Value(text.into())).map(Some);
    }
    size(1, u64::MAX)(item).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::load_config;
    use super::*;

    #[test]
    fn the_documented_mount_example_is_expressible_as_it_stands() {
        let config = load_config(
            r#"
[[mount]]
prefix = "/api"
profile = "business"

[[mount]]
prefix = "/stream"
profile = "streaming"
max_upload_size = "100MiB"
upload_timeout = 300
download_timeout = 600
chunk_size = "64KiB"
ws_max_message_size = "1MiB"
ws_idle_timeout = 60
ws_max_connections_per_user = 10
rate_limit_requests = 100
rate_limit_bandwidth = "10MiB/s"
"#,
        )
        .unwrap();
        let stream = &config.mounts[1];
        assert_eq!(stream.profile, Profile::Streaming);
        assert_eq!(stream.settings.rate_limit_requests, Some(Rate { count: 100, per: Duration::from_secs(60) }));
        assert_eq!(stream.settings.rate_limit_bandwidth, Some(10 * 1024 * 1024));
        assert_eq!(config.mounts[0].settings, MountSettings::declared_defaults());
    }

    #[test]
    fn rates_name_their_unit_and_can_be_off() {
        let config = load_config(
            "[[mount]]\nprefix = \"/a\"\nprofile = \"business\"\nrate_limit_requests = \"20/s\"\nws_rate_limit_messages = \"5/s\"\nrate_limit_bandwidth = \"off\"\n",
        )
        .unwrap();
        let settings = &config.mounts[0].settings;
        assert_eq!(settings.rate_limit_requests, Some(Rate { count: 20, per: Duration::from_secs(1) }));
        assert_eq!(settings.ws_rate_limit_messages, Some(Rate { count: 5, per: Duration::from_secs(1) }));
        assert_eq!(settings.rate_limit_bandwidth, None);
    }

    #[test]
    fn ws_compression_is_off_unless_a_mount_turns_it_on() {
        let config = load_config(
            "[[mount]]\nprefix = \"/a\"\nprofile = \"business\"\nws_compression = true\n\n[[mount]]\nprefix = \"/b\"\nprofile = \"business\"\n",
        )
        .unwrap();
        assert!(config.mounts[0].settings.ws_compression);
        assert!(!config.mounts[1].settings.ws_compression);
        let errors = load_config("[[mount]]\nprefix = \"/a\"\nprofile = \"business\"\nws_compression = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(errors.contains("mount[0].ws_compression"), "{errors}");
    }

    #[test]
    fn nonsensical_mounts_are_rejected_naming_the_key() {
        let errors = load_config(
            r#"
[[mount]]
prefix = "/a"
profile = "fast"

[[mount]]
prefix = "/b"
profile = "streaming"
chunk_size = "2MiB"
max_upload_size = "1MiB"
ws_max_connections_per_user = 0
upload_timeout = -5
rate_limit_requests = "10"

[[mount]]
prefix = "/b"
profile = "static"
"#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "line 4: mount[0].profile: unknown profile",
            "mount[1].chunk_size: 2097152 bytes exceeds max_upload_size",
            "mount[1].ws_max_connections_per_user",
            "mount[1].upload_timeout",
            "mount[1].rate_limit_requests",
            "mount[2].prefix: \"/b\" is already the prefix of mount[1]",
            "mount[2].root: missing",
        ] {
            assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
        }
    }

    #[test]
    fn a_static_mount_refuses_the_keys_it_has_no_use_for_and_takes_the_others() {
        let dir = std::env::temp_dir();
        let root = dir.to_string_lossy();
        let mut text = format!("[[mount]]\nprefix = \"/a\"\nprofile = \"business\"\n\n[[mount]]\nprefix = \"/f\"\nprofile = \"static\"\nroot = {root:?}\n");
        for key in UNUSED_BY_STATIC {
            let value = if key.starts_with("ws_rate") {
                "\"5/s\""
            } else if key == "ws_compression" {
                "true"
            } else if key.ends_with("timeout") || key.ends_with("user") {
                "5"
            } else {
                "\"1MiB\""
            };
            text.push_str(&format!("{key} = {value}\n"));
        }
        let errors = load_config(&text).unwrap_err().to_string();
        for key in UNUSED_BY_STATIC {
            let expected = format!("mount[1].{key}: is not used by a static mount");
            assert!(errors.contains(&expected), "missing {expected:?} in:\n{errors}");
        }
        assert_eq!(errors.lines().count(), UNUSED_BY_STATIC.len(), "nothing else refused:\n{errors}");
        let used = format!(
            "[[mount]]\nprefix = \"/f\"\nprofile = \"static\"\nroot = {root:?}\ndownload_timeout = 5\nchunk_size = \"4KiB\"\nrate_limit_requests = \"5/s\"\nrate_limit_bandwidth = \"100KiB/s\"\n"
        );
        let settings = load_config(&used).unwrap().mounts[0].settings.clone();
        assert_eq!((settings.download_timeout, settings.chunk_size), (Duration::from_secs(5), 4096));
        assert_eq!(settings.rate_limit_bandwidth, Some(100 * 1024));
        let shared =
            load_config("[[mount]]\nprefix = \"/s\"\nprofile = \"streaming\"\nmax_inflight_bytes = \"1MiB\"\n")
                .unwrap();
        assert_eq!(shared.mounts[0].settings.max_inflight_bytes, Some(1024 * 1024));
    }

    #[test]
    fn auth_is_read_and_checked() {
        let config = load_config(
            r#"
[[mount]]
prefix = "/api"
profile = "business"
[mount.auth]
kind = "api_keys"
[[mount.auth.keys]]
key = "k1"
subject = "alice"
claims = { role = ["admin", "ops"] }
"#,
        )
        .unwrap();
        let AuthConfig::ApiKeys(keys) = &config.mounts[0].auth else { panic!("api keys expected") };
        assert_eq!(keys[0].claims, vec![("role".into(), "admin".into()), ("role".into(), "ops".into())]);
        let errors = load_config(
            "[[mount]]\nprefix = \"/s\"\nprofile = \"streaming\"\n[mount.auth]\nkind = \"jwt\"\nalgorithm = \"HS256\"\nsecret = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(errors.contains("mount[0].auth: authentication runs on business mounts"), "{errors}");
    }
}
