//! A mount's configuration: its prefix, its profile, how it authenticates callers and the
//! settings its protections read. Plain values; the running mounts (with the state built
//! from these values) are `request/mount.rs`'s.

use std::path::PathBuf;
use std::time::Duration;

use super::LimitsConfig;

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

/// A mount's settings for its body limits, timeouts, WebSocket limits and rate limits.
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
    /// Whether a client may negotiate permessage-deflate (RFC 7692); off by default, as
    /// compression costs CPU and memory per session and can leak secrets mixed with
    /// attacker-chosen text in one compressed stream.
    pub ws_compression: bool,
    /// Requests per client key, if limited (100 per minute by default).
    pub rate_limit_requests: Option<Rate>,
    /// Bytes per second per connection, both ways, if limited (10 MiB/s by default).
    pub rate_limit_bandwidth: Option<u64>,
    /// In-flight bytes of one request, overriding `[limits]` for this mount.
    pub max_request_bytes_per_call: Option<u64>,
    /// In-flight bytes of all this mount's requests together, if limited: its share of
    /// the payload budget, so that its traffic cannot fill what other mounts need.
    pub max_inflight_bytes: Option<u64>,
}

impl MountSettings {
    /// The defaults a declared `[[mount]]` gets (`docs/configuration.md`, "`[[mount]]`").
    pub fn declared_defaults() -> Self {
        MountSettings {
            max_upload_size: 100 * 1024 * 1024,
            upload_timeout: Duration::from_secs(300),
            download_timeout: Duration::from_secs(600),
            chunk_size: 64 * 1024,
            ws_max_message_size: 1024 * 1024,
            ws_idle_timeout: Duration::from_secs(60),
            ws_max_connections_per_user: 10,
            ws_rate_limit_messages: None,
            ws_compression: false,
            rate_limit_requests: Some(Rate { count: 100, per: Duration::from_secs(60) }),
            rate_limit_bandwidth: Some(10 * 1024 * 1024),
            max_request_bytes_per_call: None,
            max_inflight_bytes: None,
        }
    }

    /// The implicit root mount's settings: `[limits]` values, no rate or bandwidth limit.
    pub fn unlimited(limits: &LimitsConfig) -> Self {
        MountSettings {
            max_upload_size: limits.max_upload_size,
            chunk_size: limits.chunk_size,
            rate_limit_requests: None,
            rate_limit_bandwidth: None,
            ..MountSettings::declared_defaults()
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
