//! Mounts: a path prefix with its own profile (business, streaming or static; the phases
//! each runs are listed in [`crate::request`]), its settings and the state its phases keep
//! (authenticator, request rate limiter, WebSocket slots), built once with the mount. The
//! longest matching prefix wins, segment-aware (`/api` covers `/api` and `/api/x`, not
//! `/apix`), so that business, streaming and static traffic never share limits.
//!
//! Without any `[[mount]]`, one implicit business mount at `/` carries the `[limits]`
//! values and no authentication, rate or bandwidth limit, so the quick start just works.

use std::sync::Arc;

use thiserror::Error;

use super::authenticate::{AuthSetupError, Authenticator};
use crate::config::{AuthConfig, GatewayConfig, MountConfig, MountSettings, Profile};
use crate::limits::rate::RequestRate;
use crate::limits::slots::KeyedLimiter;
use crate::routing::under_prefix;

/// Why a gateway could not be built from its configuration.
#[derive(Debug, Error)]
pub enum GatewayStartError {
    /// A mount's authentication could not be set up.
    #[error("mount {prefix:?}: {source}")]
    Auth {
        prefix: String,
        #[source]
        source: AuthSetupError,
    },
    /// The client listener's certificates (`[server.tls]`) cannot be served.
    #[error("{0}")]
    Tls(#[from] crate::ClientTlsError),
}

/// A mount as the running gateway uses it: its configuration and the state its phases
/// keep, built once with the mount.
#[derive(Debug)]
pub(crate) struct Mount {
    pub config: MountConfig,
    /// Business mounts: who the caller is.
    pub authenticator: Authenticator,
    /// Requests per client key, when the mount limits them.
    pub request_rate: Option<RequestRate>,
    /// Open WebSockets per user (`ws_max_connections_per_user`).
    pub websockets: Arc<KeyedLimiter<String>>,
}

impl Mount {
    /// The mount for `config`; fails when its authentication cannot be set up.
    fn new(config: MountConfig) -> Result<Self, GatewayStartError> {
        let authenticator = Authenticator::new(&config.auth)
            .map_err(|source| GatewayStartError::Auth { prefix: config.prefix.clone(), source })?;
        let request_rate = config.settings.rate_limit_requests.and_then(RequestRate::new);
        let websockets = KeyedLimiter::new(config.settings.ws_max_connections_per_user);
        Ok(Mount { config, authenticator, request_rate, websockets })
    }
}

/// The mounts, longest prefix first.
#[derive(Debug)]
pub(crate) struct MountTable {
    mounts: Vec<Arc<Mount>>,
}

impl MountTable {
    /// The table for `config`: its mounts, or the implicit root mount.
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, GatewayStartError> {
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
        let mounts = configs.into_iter().map(|config| Mount::new(config).map(Arc::new)).collect::<Result<_, _>>()?;
        Ok(MountTable { mounts })
    }

    /// The mount serving `path`, if any covers it.
    pub(crate) fn select(&self, path: &str) -> Option<&Arc<Mount>> {
        self.mounts.iter().find(|m| under_prefix(&m.config.prefix, path))
    }

    /// Every mount, longest prefix first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Mount>> {
        self.mounts.iter()
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
            settings: MountSettings::declared_defaults(),
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
        let table = MountTable::new(&config).unwrap();
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
        let table = MountTable::new(&GatewayConfig::default()).unwrap();
        let root = table.select("/anything").unwrap();
        assert_eq!(root.config.profile, Profile::Business);
        assert_eq!(root.config.settings.rate_limit_requests, None);
        assert_eq!(root.config.settings.max_upload_size, 100 * 1024 * 1024);
    }
}
