//! Configuration reload: a new [`GatewayConfig`] applied to the running gateway without
//! dropping a request, a WebSocket or a service link.
//!
//! What a reload replaces lives in one immutable [`Live`] value behind the gateway's
//! `ArcSwap`: the configuration in force, the mounts (with their authenticators, rate
//! limiters and WebSocket slots), the service credentials and the client certificates.
//! A mount that keeps its prefix keeps its WebSocket slots, so the sessions open on it
//! count against its new `ws_max_connections_per_user`.
//! The invariant: every request, client connection and TLS handshake loads `Live` once
//! when it begins and uses that snapshot to its end, so work in progress never sees two
//! configurations, and a reload is one atomic store. Beside it, the payload budget's
//! limits ([`crate::PayloadBudget`]) and the routing preferences
//! ([`crate::RoutingTable::set_preferences`]) are replaced in place, since their state
//! (bytes held, registered instances) must carry over.
//!
//! A reload is all or nothing: everything that can fail (the mounts' keys, the client
//! certificates) is built before anything is stored; a failure changes nothing and is
//! counted, like a success, in `weir_config_reloads_total`. Settings bound to something
//! built once at start (a listening socket, the connection cap, the service listener's
//! TLS, the health sweeper's period...) are [`FIXED_AT_START`]: a changed value is kept
//! as started and reported, never silently ignored. Network services whose credentials
//! no longer qualify them (their entry removed, their token changed, a path they serve
//! no longer under their prefixes) are drained: routed no new requests, given until
//! `server.shutdown_grace` for those in flight, then their link is closed.
//!
//! The gateway reads no file: the binary hands it a [`ConfigSource`] at start, which
//! [`Gateway::reload_from_source`] (`POST /reload`, SIGHUP) calls to read and validate
//! the file again.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use weir_proto::ErrorCode;
use weir_transport::Link;

use crate::config::GatewayConfig;
use crate::downstream::tls::ClientTls;
use crate::limits::lock;
use crate::request::mount::{GatewayStartError, MountTable};
use crate::services::auth::ServiceAuth;
use crate::services::ServiceProof;
use crate::Gateway;

/// Reads the configuration again and validates it, as at start: the message of an
/// error names each key at fault and its line.
pub type ConfigSource = Box<dyn Fn() -> Result<GatewayConfig, String> + Send + Sync>;

/// Where the configuration is read again, set once at start (if ever).
#[derive(Default)]
pub(crate) struct SourceSlot(OnceLock<ConfigSource>);

impl fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() { "SourceSlot(set)" } else { "SourceSlot(none)" })
    }
}

/// The settings a reload cannot change: each is used once, when the gateway starts.
pub const FIXED_AT_START: [&str; 14] = [
    "server.listen",
    "server.admin_listen",
    "server.http_redirect_listen",
    "server.max_connections",
    "server.max_connections_per_ip",
    "server.tls (turning HTTPS on or off)",
    "services.listen",
    "services.tls",
    "services.max_pending_handshakes",
    "services.rabbitmq",
    "shared",
    "routing.max_routes",
    "routing.heartbeat_interval",
    "tracing.otlp_endpoint",
];

/// How often a draining service link is checked for requests still in flight.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// The configuration in force and the state built from it; replaced whole by a reload.
#[derive(Debug)]
pub(crate) struct Live {
    /// The configuration as it applies: the settings [`FIXED_AT_START`] keep their
    /// starting values whatever the file now says.
    pub config: Arc<GatewayConfig>,
    /// The mounts, each with its authenticator, rate limiter and WebSocket slots.
    pub mounts: MountTable,
    /// Checks service Hellos and endpoint updates against `[services]` credentials.
    pub service_auth: ServiceAuth,
    /// HTTPS on the public listener (`[server.tls]`), its certificates loaded and checked.
    pub client_tls: Option<ClientTls>,
}

/// What a successful reload did beyond applying the new settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Settings that changed but need a restart (keys of [`FIXED_AT_START`]); they keep
    /// their starting values.
    pub restart_required: Vec<&'static str>,
    /// Service connections no longer qualified by their credentials, as
    /// `service (connection N)`: drained, then closed.
    pub services_disconnected: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The gateway was started without a configuration file.
    #[error("no configuration file to reload: weir was started without --config")]
    NoSource,
    /// The file could not be read or is not a valid configuration (as
    /// `weir check-config` reports it: each key and its line).
    #[error("{0}")]
    Invalid(String),
    /// A mount's keys or a client certificate could not be loaded.
    #[error("{0}")]
    Start(#[from] GatewayStartError),
}

impl Gateway {
    /// Sets where [`Gateway::reload_from_source`] reads the configuration; only the
    /// first call counts (the binary makes it once, at start).
    pub fn set_config_source(&self, source: ConfigSource) {
        if self.config_source.0.set(source).is_err() {
            tracing::warn!("configuration source already set; keeping the first");
        }
    }

    /// Reads the configuration from the source given at start and applies it (see
    /// [`Gateway::reload`]). Reads files: call it off the async workers.
    pub fn reload_from_source(&self) -> Result<ReloadReport, ReloadError> {
        let Some(source) = self.config_source.0.get() else {
            return Err(ReloadError::NoSource);
        };
        match source() {
            Ok(config) => self.reload(config),
            Err(message) => Err(self.reload_failed(ReloadError::Invalid(message))),
        }
    }

    /// Applies `config` (already validated) to new requests, connections and
    /// handshakes; work in progress keeps the configuration it began with. A failure
    /// changes nothing. Either way it is logged and counted.
    pub fn reload(&self, config: GatewayConfig) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = lock(&self.reloading);
        let report = self.apply(config).map_err(|err| self.reload_failed(err))?;
        self.metrics.config_reloaded(true);
        for key in &report.restart_required {
            tracing::warn!(key, "configuration reload: this setting changed but needs a restart; kept as started");
        }
        tracing::info!(
            restart_required = report.restart_required.len(),
            services_disconnected = report.services_disconnected.len(),
            "configuration reloaded"
        );
        Ok(report)
    }

    fn reload_failed(&self, err: ReloadError) -> ReloadError {
        self.metrics.config_reloaded(false);
        tracing::error!(error = %err, "configuration reload failed; the previous configuration stays");
        err
    }

    /// Builds everything that can fail, then stores it all.
    fn apply(&self, mut config: GatewayConfig) -> Result<ReloadReport, ReloadError> {
        let current = self.live();
        let restart_required = keep_fixed(&current.config, &mut config);
        let client_tls =
            config.server.tls.as_ref().map(ClientTls::load).transpose().map_err(GatewayStartError::from)?;
        // The last step that can fail, and the first that changes something: a new
        // access log writer (the file opened again).
        self.access_log.configure(&config.log).map_err(GatewayStartError::from)?;
        let live = Live {
            mounts: current.mounts.rebuild(&config, self.shared.as_ref())?,
            service_auth: ServiceAuth::new(&config.services),
            client_tls,
            config: Arc::new(config),
        };
        let config = &live.config;
        self.budget.set_limits(config.limits.payload, crate::limits::budget::mount_shares(&config.mounts));
        self.routing.set_preferences(config.routing.clone(), config.server.default_timeout, config.server.max_timeout);
        let grace = config.server.shutdown_grace;
        let live = Arc::new(live);
        self.live.store(Arc::clone(&live));
        let services_disconnected = self.drain_unqualified(&live.service_auth, grace);
        Ok(ReloadReport { restart_required, services_disconnected })
    }

    /// Drains every network service that `auth` no longer lets serve what it serves;
    /// returns them, as `service (connection N)`.
    fn drain_unqualified(&self, auth: &ServiceAuth, grace: Duration) -> Vec<String> {
        let routes = self.routing.snapshot();
        let mut drained = Vec::new();
        for (conn_id, link, proof) in self.links.proofs() {
            let served = routes.iter().filter(|r| r.instances.iter().any(|i| i.conn_id == conn_id));
            let templates: Vec<&str> = served.map(|r| r.template.as_str()).collect();
            if let Err(reason) = qualifies(auth, &proof, &templates) {
                let service = &proof.hello.service;
                tracing::warn!(conn_id, %service, %reason, "configuration reload: service no longer qualified; draining it");
                drained.push(format!("{service} (connection {conn_id})"));
                self.routing.remove(conn_id);
                tokio::spawn(close_when_idle(link, grace));
            }
        }
        drained
    }
}

/// Whether the service that proved `proof` may still serve `templates` under `auth`.
fn qualifies(auth: &ServiceAuth, proof: &ServiceProof, templates: &[&str]) -> Result<(), String> {
    let grant = auth.authenticate(&proof.hello, &proof.trust).map_err(|e| e.to_string())?;
    match templates.iter().find(|t| !grant.allows(t)) {
        Some(path) => Err(format!("path `{path}` is outside its prefixes")),
        None => Ok(()),
    }
}

/// Closes `link` once no request is in flight on it, or after `grace` at most.
async fn close_when_idle(link: Link, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while link.open_streams() > 0 && !link.is_closed() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(DRAIN_CHECK).await;
    }
    link.close_with_error(ErrorCode::Unauthorized, "credentials withdrawn by a configuration reload");
}

/// Puts back in `new` the starting value of every [`FIXED_AT_START`] setting it
/// changes, and names them.
fn keep_fixed(current: &GatewayConfig, new: &mut GatewayConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let [listen, admin, redirect, max_conns, per_ip, server_tls, services_listen, services_tls, pending, rabbitmq, shared, routes, beat, otlp] =
        FIXED_AT_START;
    let (old, server) = (&current.server, &mut new.server);
    keep(listen, &old.listen, &mut server.listen, &mut changed);
    keep(admin, &old.admin_listen, &mut server.admin_listen, &mut changed);
    keep(redirect, &old.http_redirect_listen, &mut server.http_redirect_listen, &mut changed);
    keep(max_conns, &old.max_connections, &mut server.max_connections, &mut changed);
    keep(per_ip, &old.max_connections_per_ip, &mut server.max_connections_per_ip, &mut changed);
    if old.tls.is_some() != server.tls.is_some() {
        changed.push(server_tls);
        server.tls.clone_from(&old.tls);
    }
    let (old, services) = (&current.services, &mut new.services);
    keep(services_listen, &old.listen, &mut services.listen, &mut changed);
    keep(services_tls, &old.tls, &mut services.tls, &mut changed);
    keep(pending, &old.max_pending_handshakes, &mut services.max_pending_handshakes, &mut changed);
    keep(rabbitmq, &old.rabbitmq, &mut services.rabbitmq, &mut changed);
    keep(shared, &current.shared, &mut new.shared, &mut changed);
    let (old, routing) = (&current.routing, &mut new.routing);
    keep(routes, &old.max_routes, &mut routing.max_routes, &mut changed);
    keep(beat, &old.heartbeat_interval, &mut routing.heartbeat_interval, &mut changed);
    keep(otlp, &current.tracing.otlp_endpoint, &mut new.tracing.otlp_endpoint, &mut changed);
    changed
}

/// Restores `new` to `old` if they differ, recording `key`.
fn keep<T: PartialEq + Clone>(key: &'static str, old: &T, new: &mut T, changed: &mut Vec<&'static str>) {
    if old != new {
        changed.push(key);
        new.clone_from(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServerTlsConfig, ServiceCredential};

    #[test]
    fn fixed_settings_keep_their_starting_values_and_are_named() {
        let current = GatewayConfig::default();
        let mut new = GatewayConfig::default();
        new.server.listen = "127.0.0.1:9999".parse().unwrap();
        new.server.tls = Some(ServerTlsConfig::new("c.pem", "k.pem"));
        new.routing.max_routes = 3;
        new.tracing.otlp_endpoint = Some("http://127.0.0.1:4318".into());
        new.server.read_timeout = Duration::from_secs(1);
        let changed = keep_fixed(&current, &mut new);
        let expected =
            ["server.listen", "server.tls (turning HTTPS on or off)", "routing.max_routes", "tracing.otlp_endpoint"];
        assert_eq!(changed, expected);
        assert_eq!(new.tracing.otlp_endpoint, None);
        assert_eq!(new.server.listen, current.server.listen);
        assert_eq!(new.server.tls, None);
        assert_eq!(new.routing.max_routes, current.routing.max_routes);
        assert_eq!(new.server.read_timeout, Duration::from_secs(1), "a reloadable setting applies");
    }

    #[test]
    fn a_service_qualifies_only_with_a_credential_covering_what_it_serves() {
        let credential = |token: &str, prefix: &str| ServiceCredential {
            service: "orders".into(),
            token: Some(token.into()),
            prefixes: vec![prefix.into()],
        };
        let auth = |credentials| ServiceAuth::new(&crate::config::ServicesConfig { credentials, ..Default::default() });
        let hello = weir_proto::Hello {
            protocol_version: weir_proto::PROTOCOL_VERSION,
            service: "orders".into(),
            version: "1.0.0".into(),
            region: String::new(),
            instance_id: "i".into(),
            initial_window: 1024,
            token: "t1".into(),
            endpoints: Vec::new(),
        };
        let proof = ServiceProof { hello, trust: crate::services::auth::PeerTrust::Network { identity: None } };
        assert!(qualifies(&auth(vec![credential("t1", "/orders")]), &proof, &["/orders/{id}"]).is_ok());
        assert!(qualifies(&auth(vec![credential("t2", "/orders")]), &proof, &["/orders/{id}"]).is_err());
        assert!(qualifies(&auth(vec![credential("t1", "/api")]), &proof, &["/orders/{id}"]).is_err());
        let other = ServiceCredential { service: "billing".into(), ..credential("t1", "/") };
        assert!(qualifies(&auth(vec![other]), &proof, &[]).is_err(), "its entry removed");
    }
}
