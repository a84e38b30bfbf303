//! Mounts: a path prefix with its own profile (business, streaming or static; the phases
//! each runs are listed in [`crate::request`]), its settings and the state its phases keep
//! (authenticator, request rate limiter, WebSocket slots), built once with the mount. The
//! longest matching prefix wins, segment-aware (`/api` covers `/api` and `/api/x`, not
//! `/apix`), so that business, streaming and static traffic never share limits.
//!
//! Without any `[[mount]]`, one implicit business mount at `/` carries the `[limits]`
//! values and no authentication, rate or bandwidth limit, so the quick start just works.
//!
//! A configuration reload builds a new table from the old one ([`MountTable::rebuild`]):
//! a mount keeps its rate limiter (and the buckets in it) when its prefix and request
//! rate are unchanged, and its WebSocket slots when its prefix and per-user WebSocket
//! limit are; everything else, the authenticator included (its keys may be files that
//! changed), is built afresh. Requests in flight keep the `Arc<Mount>` they started with.

use std::sync::Arc;

use thiserror::Error;

use super::authenticate::{AuthSetupError, Authenticator};
use crate::config::{AuthConfig, GatewayConfig, MountConfig, MountSettings, Profile};
use crate::limits::rate::RequestRate;
use crate::limits::shared::{SessionCaps, SharedLimits};
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
    /// The access log's file (`[log] access`) cannot be opened.
    #[error("{0}")]
    AccessLog(#[from] crate::observe::access_log::AccessLogError),
    /// The span export (`[tracing]`) cannot be set up.
    #[error("{0}")]
    Tracing(#[from] crate::TracingError),
    /// A mount's limit cannot be shared (`[shared]`).
    #[error("mount {prefix:?}: shared limits: {source}")]
    Shared {
        prefix: String,
        #[source]
        source: weir_shared::SharedError,
    },
}

/// A mount as the running gateway uses it: its configuration and the state its phases
/// keep, built once with the mount.
#[derive(Debug)]
pub(crate) struct Mount {
    pub config: MountConfig,
    /// The prefix as the metrics' `mount` label, shared by every request on the mount.
    pub label: Arc<str>,
    /// Business mounts: who the caller is.
    pub authenticator: Authenticator,
    /// Requests per client key, when the mount limits them; shared with the mount that
    /// replaces this one on a reload if the rate did not change, so buckets survive it.
    pub request_rate: Option<Arc<RequestRate>>,
    /// Open WebSockets per user (`ws_max_connections_per_user`), here and, with
    /// `[shared]`, on every replica; kept across a reload, with the new limit, so open
    /// sessions still count against it.
    pub websockets: Arc<SessionCaps>,
}

impl Mount {
    /// The mount for `config`, keeping the rate limiter and WebSocket slots of
    /// `previous` (the mount it replaces, if any) that still apply, its limits shared
    /// through `shared` when given; fails when its authentication cannot be set up.
    fn new(
        config: MountConfig,
        previous: Option<&Mount>,
        shared: Option<&SharedLimits>,
    ) -> Result<Self, GatewayStartError> {
        let authenticator = Authenticator::new(&config.auth)
            .map_err(|source| GatewayStartError::Auth { prefix: config.prefix.clone(), source })?;
        let settings = &config.settings;
        let unshareable = |source| GatewayStartError::Shared { prefix: config.prefix.clone(), source };
        let request_rate = match previous {
            Some(old) if old.config.settings.rate_limit_requests == settings.rate_limit_requests => {
                old.request_rate.clone()
            }
            _ => match settings.rate_limit_requests {
                Some(rate) => RequestRate::new(rate, &config.prefix, shared).map_err(unshareable)?.map(Arc::new),
                None => None,
            },
        };
        let websockets = match previous {
            Some(old) => {
                old.websockets.set_max(settings.ws_max_connections_per_user);
                Arc::clone(&old.websockets)
            }
            None => {
                SessionCaps::new(settings.ws_max_connections_per_user, &config.prefix, shared).map_err(unshareable)?
            }
        };
        Ok(Mount { label: config.prefix.as_str().into(), config, authenticator, request_rate, websockets })
    }
}

/// The mounts, longest prefix first.
#[derive(Debug)]
pub(crate) struct MountTable {
    mounts: Vec<Arc<Mount>>,
}

impl MountTable {
    /// The table for `config`: its mounts, or the implicit root mount, their limits
    /// shared through `shared` when given.
    pub(crate) fn new(config: &GatewayConfig, shared: Option<&SharedLimits>) -> Result<Self, GatewayStartError> {
        Self::rebuild(&MountTable { mounts: Vec::new() }, config, shared)
    }

    /// The table for `config`, each mount keeping what it can of the mount of `self`
    /// with the same prefix (see the module documentation).
    pub(crate) fn rebuild(
        &self,
        config: &GatewayConfig,
        shared: Option<&SharedLimits>,
    ) -> Result<Self, GatewayStartError> {
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
        let mounts = configs
            .into_iter()
            .map(|config| {
                let previous = self.mounts.iter().find(|m| m.config.prefix == config.prefix);
                Mount::new(config, previous.map(|m| &**m), shared).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
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
        let table = MountTable::new(&config, None).unwrap();
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
        let table = MountTable::new(&GatewayConfig::default(), None).unwrap();
        let root = table.select("/anything").unwrap();
        assert_eq!(root.config.profile, Profile::Business);
        assert_eq!(root.config.settings.rate_limit_requests, None);
        assert_eq!(root.config.settings.max_upload_size, 100 * 1024 * 1024);
    }

    #[test]
    fn a_rebuilt_mount_keeps_the_state_whose_limit_did_not_change() {
        let rate = |count| Some(crate::config::Rate { count, per: std::time::Duration::from_secs(1) });
        let mut api = mount("/api", Profile::Business);
        api.settings.rate_limit_requests = rate(5);
        let mut ws = mount("/ws", Profile::Business);
        ws.settings.ws_max_connections_per_user = 3;
        let config = GatewayConfig { mounts: vec![api.clone(), ws.clone()], ..GatewayConfig::default() };
        let old = MountTable::new(&config, None).unwrap();
        ws.settings.rate_limit_requests = rate(7);
        let mut lower = api.clone();
        lower.settings.rate_limit_requests = rate(1);
        let kept = old.rebuild(&GatewayConfig { mounts: vec![api, ws], ..GatewayConfig::default() }, None).unwrap();
        let changed = old.rebuild(&GatewayConfig { mounts: vec![lower], ..GatewayConfig::default() }, None).unwrap();
        let (old_api, old_ws) = (old.select("/api").unwrap(), old.select("/ws").unwrap());
        let same_rate = |a: &Mount, b: &Mount| match (&a.request_rate, &b.request_rate) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        assert!(same_rate(old_api, kept.select("/api").unwrap()), "same rate: same buckets");
        assert!(Arc::ptr_eq(&old_ws.websockets, &kept.select("/ws").unwrap().websockets), "same ws limit: same slots");
        assert!(kept.select("/ws").unwrap().request_rate.is_some(), "a new rate limit applies");
        assert!(!same_rate(old_api, changed.select("/api").unwrap()), "a new rate: new buckets");
        assert!(changed.select("/ws").is_none(), "a removed mount is gone");
    }

    #[tokio::test]
    async fn a_changed_websocket_limit_keeps_the_open_sessions_counted() {
        let mut ws = mount("/ws", Profile::Business);
        ws.settings.ws_max_connections_per_user = 3;
        let old =
            MountTable::new(&GatewayConfig { mounts: vec![ws.clone()], ..GatewayConfig::default() }, None).unwrap();
        let caps = &old.select("/ws").unwrap().websockets;
        let open = vec![
            caps.acquire("alice".to_owned(), 3).await.unwrap(),
            caps.acquire("alice".to_owned(), 3).await.unwrap(),
        ];
        ws.settings.ws_max_connections_per_user = 2;
        let new = old.rebuild(&GatewayConfig { mounts: vec![ws], ..GatewayConfig::default() }, None).unwrap();
        let slots = &new.select("/ws").unwrap().websockets;
        assert!(slots.acquire("alice".to_owned(), 2).await.is_err(), "her two open sessions fill the new limit");
        drop(open);
        assert!(slots.acquire("alice".to_owned(), 2).await.is_ok());
    }
}
