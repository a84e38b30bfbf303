//! Mounts: a path prefix with its own middleware profile and settings (seed 000,
//! "Workload Separation"). The longest matching prefix wins, segment-aware (`/api` covers
//! `/api` and `/api/x`, not `/apix`).
//!
//! Profiles:
//! - **business** — authentication → validation → request registry → rate limit, then
//!   dispatch to a service. The full middleware, for RPC/REST.
//! - **streaming** — connection limit → bandwidth limit, then dispatch. Minimal work per
//!   chunk, for uploads, downloads and WebSockets.
//! - **static** — files from `root`, no service involved.
//!
//! Without any `[[mount]]`, one implicit business mount at `/` carries the `[limits]`
//! values and no authentication, rate or bandwidth limit, so the quick start just works.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{GatewayConfig, LimitsConfig};

/// A mount's middleware profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Business,
    Streaming,
    Static,
}

impl Profile {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Business => "business",
            Profile::Streaming => "streaming",
            Profile::Static => "static",
        }
    }
}

/// A count per period, e.g. 100 per minute; the unit is always explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// How a business mount authenticates callers.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AuthConfig {
    /// Everyone is anonymous (the default).
    #[default]
    None,
    /// `Authorization: Bearer <key>` or `X-Api-Key: <key>` against a list.
    ApiKeys(Vec<ApiKey>),
    /// `Authorization: Bearer <jwt>`, verified with HS256 or RS256.
    Jwt(JwtConfig),
}

/// One accepted API key and who it stands for. `Debug` never shows the key.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    pub key: String,
    pub subject: String,
    /// Claims granted to this key: (type, value).
    pub claims: Vec<(String, String)>,
}

/// JWT verification settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
}

/// A JWT algorithm with its key. `Debug` never shows the secret.
#[derive(Clone, PartialEq)]
pub enum JwtAlgorithm {
    /// Shared secret.
    Hs256 { secret: String },
    /// Public key in a PEM file.
    Rs256 { public_key_file: PathBuf },
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &"<redacted>")
            .field("subject", &self.subject)
            .field("claims", &self.claims)
            .finish()
    }
}

impl std::fmt::Debug for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtAlgorithm::Hs256 { .. } => f.debug_struct("Hs256").field("secret", &"<redacted>").finish(),
            JwtAlgorithm::Rs256 { public_key_file } => {
                f.debug_struct("Rs256").field("public_key_file", public_key_file).finish()
            }
        }
    }
}

/// Seed 000's StreamingApp settings, under the seed's names and with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct MountSettings {
    /// Largest total request body (413 over it).
    pub max_upload_size: u64,
    /// Longest a whole upload may take (408 after it).
    pub upload_timeout: Duration,
    /// Longest a whole download may take (the connection is closed after it).
    pub download_timeout: Duration,
    /// Body chunk size, both ways.
    pub chunk_size: usize,
    /// Largest WebSocket message (close 1009 over it).
    pub ws_max_message_size: u64,
    /// WebSocket silence before close 1000 "Idle timeout".
    pub ws_idle_timeout: Duration,
    /// Open WebSockets per user (the authenticated subject, else the client IP).
    pub ws_max_connections_per_user: u32,
    /// WebSocket messages a client may send, if limited.
    pub ws_rate_limit_messages: Option<Rate>,
    /// Requests per client key, if limited (seed default 100 per minute).
    pub rate_limit_requests: Option<Rate>,
    /// Bytes per second per connection, both ways, if limited (seed default 10 MiB/s).
    pub rate_limit_bandwidth: Option<u64>,
    /// In-flight bytes of one request, overriding `[limits]` for this mount.
    pub max_request_bytes_per_call: Option<u64>,
}

impl MountSettings {
    /// The seed's defaults, as a declared `[[mount]]` gets them.
    pub fn seed_defaults() -> Self {
        MountSettings {
            max_upload_size: 100 * 1024 * 1024,
            upload_timeout: Duration::from_secs(300),
            download_timeout: Duration::from_secs(600),
            chunk_size: 64 * 1024,
            ws_max_message_size: 1024 * 1024,
            ws_idle_timeout: Duration::from_secs(60),
            ws_max_connections_per_user: 10,
            ws_rate_limit_messages: None,
            rate_limit_requests: Some(Rate { count: 100, per: Duration::from_secs(60) }),
            rate_limit_bandwidth: Some(10 * 1024 * 1024),
            max_request_bytes_per_call: None,
        }
    }

    /// The implicit root mount's settings: `[limits]` values, no rate or bandwidth limit.
    pub fn unlimited(limits: &LimitsConfig) -> Self {
        MountSettings {
            max_upload_size: limits.max_upload_size,
            chunk_size: limits.chunk_size,
            rate_limit_requests: None,
            rate_limit_bandwidth: None,
            ..MountSettings::seed_defaults()
        }
    }
}

/// One `[[mount]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountConfig {
    /// Path prefix, starting with `/`, no trailing `/` except the root itself.
    pub prefix: String,
    pub profile: Profile,
    /// Static profile: the directory served.
    pub root: Option<PathBuf>,
    pub auth: AuthConfig,
    pub settings: MountSettings,
}

/// A mount as the running gateway uses it.
#[derive(Debug)]
pub struct Mount {
    pub config: MountConfig,
}

/// The mounts, longest prefix first.
#[derive(Debug)]
pub struct MountTable {
    mounts: Vec<Arc<Mount>>,
}

impl MountTable {
    /// The table for `config`: its mounts, or the implicit root mount.
    pub fn new(config: &GatewayConfig) -> Self {
        let mut configs = config.mounts.clone();
        if configs.is_empty() {
            configs.push(MountConfig {
                prefix: "/".into(),
                profile: Profile::Business,
                root: None,
                auth: AuthConfig::None,
                settings: MountSettings::unlimited(&config.limits),
            });
        }
        configs.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        MountTable { mounts: configs.into_iter().map(|config| Arc::new(Mount { config })).collect() }
    }

    /// The mount serving `path`, if any covers it.
    pub fn select(&self, path: &str) -> Option<&Arc<Mount>> {
        self.mounts.iter().find(|m| covers(&m.config.prefix, path))
    }

    /// Every mount, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Mount>> {
        self.mounts.iter()
    }
}

/// Whether `prefix` covers `path` on a segment boundary.
pub fn covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(prefix: &str, profile: Profile) -> MountConfig {
        MountConfig {
            prefix: prefix.into(),
            profile,
            root: None,
            auth: AuthConfig::None,
            settings: MountSettings::seed_defaults(),
        }
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let config = GatewayConfig {
            mounts: vec![
                mount("/api", Profile::Business),
                mount("/api/files", Profile::Static),
                mount("/stream", Profile::Streaming),
            ],
            ..GatewayConfig::default()
        };
        let table = MountTable::new(&config);
        let profile = |path| table.select(path).map(|m| m.config.profile);
        assert_eq!(profile("/api/files/a.txt"), Some(Profile::Static));
        assert_eq!(profile("/api/filesystem"), Some(Profile::Business));
        assert_eq!(profile("/api"), Some(Profile::Business));
        assert_eq!(profile("/stream/upload"), Some(Profile::Streaming));
        assert_eq!(profile("/apix"), None);
        assert_eq!(profile("/"), None);
    }

    #[test]
    fn no_mounts_means_one_unlimited_root_mount() {
        let table = MountTable::new(&GatewayConfig::default());
        let root = table.select("/anything").unwrap();
        assert_eq!(root.config.profile, Profile::Business);
        assert_eq!(root.config.settings.rate_limit_requests, None);
        assert_eq!(root.config.settings.max_upload_size, 100 * 1024 * 1024);
    }
}
