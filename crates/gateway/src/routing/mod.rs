//! The routing table: which service instances serve which (method, path template), and
//! the choice of one instance for each client request.
//!
//! The connection layer calls [`RoutingTable::register`] on a Hello,
//! [`RoutingTable::update_endpoints`] on an EndpointsUpdate, [`RoutingTable::heartbeat`] on
//! a Heartbeat, [`RoutingTable::remove`] on disconnect, and [`RoutingTable::sweep`]
//! periodically (closing the connections it returns). The HTTP front calls
//! [`RoutingTable::route`] for every request and [`RoutingTable::snapshot`] for the admin
//! endpoint. Routing reads an immutable snapshot through an `ArcSwap` without locking;
//! writes serialise on a mutex over the authoritative state and publish a new snapshot.
//! Load and health live in atomics inside each shared [`Instance`].
//!
//! # Path templates
//!
//! - A template starts with `/` and is made of `/`-separated segments: a literal, a
//!   parameter `{name}` matching exactly one non-empty segment, or, as the last segment
//!   only, a catch-all `{*name}` matching the rest of the path (at least one character;
//!   `/files/{*rest}` does not match `/files/`). A parameter is always a whole segment.
//! - Parameter names are made of `A-Z a-z 0-9 _ -` and are distinct within a template.
//!   Literals are visible ASCII without `{ } ? #`; no empty segment except a trailing
//!   slash (`/users/` and `/users` are different templates).
//! - When literal and parameter segments overlap, the literal wins (`/users/me` before
//!   `/users/{id}`). Two templates that differ only in parameter names or that put a
//!   parameter and a catch-all at the same place (`/a/{x}` and `/a/{y}`) cannot coexist.
//! - The path is matched as the client sent it (percent-encoded, without query string);
//!   literal segments compare byte for byte. Parameter values are then percent-decoded
//!   (`%2F` inside a segment stays in that parameter and becomes `/`; a `%` not followed by
//!   two hex digits is kept; `+` stays `+`). A value that does not decode to UTF-8 makes
//!   the path unroutable: 404.
//! - Methods are upper-case HTTP tokens (`GET`, `POST`, `M-SEARCH`) and match exactly.
//!
//! # Matching
//!
//! No template matches the path: 404 ([`RouteError::NotFound`]). A template matches but
//! none of its endpoints has the method: 405 ([`RouteError::MethodNotAllowed`]) with the
//! sorted methods known on it. A `HEAD` request is served by the `GET` endpoint when there
//! is no `HEAD` endpoint, so `GET` implies `HEAD` in `Allow`.
//!
//! # Registration
//!
//! Registration (a Hello or an endpoints update) is all or nothing: refused, it changes
//! nothing and the error says why. It is refused when the version is not strict semver;
//! a method or template is malformed; a (method, template) appears twice in it; an
//! endpoint is served by live instances of another service ([`RegistrationError::Conflict`]:
//! an endpoint belongs to one service); live instances of the same service and version
//! declare a different descriptor for it ([`RegistrationError::DescriptorMismatch`];
//! different versions may differ); or a template cannot coexist with one served by a live
//! instance ([`RegistrationError::TemplateConflict`]). An update replaces the instance's
//! whole endpoint list; refused, the old list stays.
//!
//! Known endpoints stay known for a while: when the last instance serving one leaves (or
//! stops declaring it), the (method, template) stays in the table, so requests get 503
//! ([`RouteError::NoHealthyInstance`]) rather than 404, until a sweep finds it unserved
//! for longer than `routing.forget_after`; then it is forgotten (404). The table holds at
//! most `routing.max_routes` endpoints, served or remembered: a registration that would
//! take it over is refused ([`RegistrationError::TooManyRoutes`]). Ownership follows live instances:
//! another service may then register it. A known template without live instances gives
//! way to a new live template it conflicts with (it is forgotten, and 404s again).
//!
//! # Selection
//!
//! The candidates are the instances serving the matched (method, template). Then:
//! 1. Version: the requested one (header, see `RoutingConfig::version_header`), which must
//!    parse as strict semver or the request gets 400 ([`RouteError::InvalidVersion`]); else
//!    `routing.default_versions[service]`; else the highest version (semver precedence)
//!    with an instance that is not draining. Only instances of exactly that version
//!    remain; there is no fallback to another version.
//! 2. Draining instances are excluded.
//! 3. Healthy instances are preferred; degraded ones are used only when no healthy one is
//!    left.
//! 4. When `routing.region` is set, instances in that region are preferred.
//! 5. The instance with the fewest calls in flight through this gateway is preferred.
//! 6. Remaining ties are taken in turn (round robin per endpoint).
//!
//! No instance left: 503, naming the service and version. The call's timeout is the
//! endpoint's own, else the gateway default, capped by the gateway maximum.
//!
//! # Health
//!
//! A heartbeat's status is the instance's status: `Draining` takes no new requests,
//! `Degraded` is used as above, `Healthy` is healthy. An instance silent (no heartbeat
//! since the last one or since registration) for longer than `routing.degraded_after` is
//! degraded by the next sweep, and a heartbeat restores its reported status; silent for
//! longer than `routing.evict_after`, the sweep removes it and returns its connection id.
//! The connection layer also marks an instance degraded while writes to its connection are
//! stuck ([`RoutingTable::set_write_stalled`]; a heartbeat does not clear that) and removes
//! it when they stay stuck (see `services::connection`).
//!
//! # Preferences
//!
//! What selection and health judge by (`[routing]`'s region, version header, default
//! versions and silence bounds, the server's default and maximum timeouts) can be
//! replaced while the table runs ([`RoutingTable::set_preferences`], on a configuration
//! reload); each request and each sweep reads one consistent set. `routing.max_routes`
//! is fixed when the table is built.

mod error;
mod instance;
mod path;
mod select;
mod snapshot;
mod state;
mod template;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use semver::Version;
use serde::Serialize;
use weir_proto::{EndpointDescriptor, Heartbeat, Hello};

use crate::config::RoutingConfig;
use crate::limits::lock;

pub use error::{RegistrationError, RouteError};
pub use instance::{InFlightGuard, Instance, InstanceHealth};
pub(crate) use path::normal_path;
pub(crate) use template::under_prefix;

use snapshot::{EndpointRoutes, Snapshot};
use state::State;

/// Where one request goes.
pub struct RoutingDecision<L> {
    /// The descriptor the chosen instance declared for the endpoint.
    pub endpoint: Arc<EndpointDescriptor>,
    /// The matched path template.
    pub template: String,
    /// Template parameters in template order, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The chosen instance; call [`Instance::begin_call`] at once.
    pub instance: Arc<Instance<L>>,
    /// The endpoint's timeout, else the default, capped by the maximum.
    pub effective_timeout: Duration,
}

impl<L> fmt::Debug for RoutingDecision<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingDecision")
            .field("endpoint", &self.endpoint)
            .field("template", &self.template)
            .field("params", &self.params)
            .field("instance", &self.instance)
            .field("effective_timeout", &self.effective_timeout)
            .finish()
    }
}

/// One known endpoint, for the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteInfo {
    pub template: String,
    pub method: String,
    /// The owning service.
    pub service: String,
    /// Instances serving it, by connection id; empty when none is left.
    pub instances: Vec<InstanceInfo>,
}

/// One instance serving an endpoint, for the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    pub conn_id: u64,
    pub instance_id: String,
    pub version: String,
    pub region: String,
    pub health: InstanceHealth,
    pub in_flight: u32,
}

/// What selection and health judge by: replaced whole on a reload, so one request or
/// one sweep never mixes two configurations.
#[derive(Debug)]
struct Preferences {
    config: RoutingConfig,
    /// `config.default_versions`, parsed; invalid entries are left out (and logged).
    default_versions: BTreeMap<String, Version>,
    default_timeout: Duration,
    max_timeout: Duration,
}

impl Preferences {
    fn new(config: RoutingConfig, default_timeout: Duration, max_timeout: Duration) -> Self {
        let default_versions = parse_default_versions(&config.default_versions);
        Preferences { config, default_versions, default_timeout, max_timeout }
    }
}

/// Registered instances and the endpoints they serve; see the module documentation.
pub struct RoutingTable<L> {
    /// Read lock-free by every request; replaced by [`RoutingTable::set_preferences`].
    preferences: ArcSwap<Preferences>,
    /// What `route` reads, lock-free. Replaced only while `state` is locked.
    published: ArcSwap<Snapshot<L>>,
    /// The authoritative state; every write holds this lock until it has published.
    state: Mutex<State<L>>,
}

impl<L> fmt::Debug for RoutingTable<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.published.load();
        f.debug_struct("RoutingTable")
            .field("preferences", &self.preferences.load())
            .field("templates", &snapshot.templates().len())
            .field("instances", &snapshot.instances.len())
            .finish_non_exhaustive()
    }
}

impl<L: Clone + Send + Sync + 'static> RoutingTable<L> {
    /// An empty table. `default_timeout` and `max_timeout` are the server's.
    pub fn new(config: RoutingConfig, default_timeout: Duration, max_timeout: Duration) -> Self {
        let state = State::new(config.max_routes);
        RoutingTable {
            preferences: ArcSwap::from_pointee(Preferences::new(config, default_timeout, max_timeout)),
            published: ArcSwap::from_pointee(Snapshot::empty()),
            state: Mutex::new(state),
        }
    }

    /// The routing configuration in force.
    pub fn config(&self) -> RoutingConfig {
        self.preferences.load().config.clone()
    }

    /// Replaces the preferences (a configuration reload): requests routed from now on
    /// and the next sweep use them. `config.max_routes` is ignored: the bound is fixed
    /// when the table is built.
    pub fn set_preferences(&self, config: RoutingConfig, default_timeout: Duration, max_timeout: Duration) {
        self.preferences.store(Arc::new(Preferences::new(config, default_timeout, max_timeout)));
    }

    /// Registers connection `conn_id` from its Hello, healthy and heard from at `now`.
    pub fn register(
        &self,
        conn_id: u64,
        hello: &Hello,
        link: L,
        now: Instant,
    ) -> Result<Arc<Instance<L>>, RegistrationError> {
        let identity = state::identity_from_hello(hello)?;
        let endpoints = state::validate_endpoints(&hello.endpoints)?;
        let mut state = self.lock_state();
        if state.instances.contains_key(&conn_id) {
            return Err(RegistrationError::AlreadyRegistered { conn_id });
        }
        state.check_admission(conn_id, &identity, &endpoints)?;
        let instance = Arc::new(Instance::new(conn_id, identity, link, now));
        state.insert(Arc::clone(&instance), endpoints);
        self.publish(&mut state);
        Ok(instance)
    }

    /// Replaces the endpoint list of connection `conn_id` atomically; refused, the old list
    /// stays.
    pub fn update_endpoints(&self, conn_id: u64, endpoints: &[EndpointDescriptor]) -> Result<(), RegistrationError> {
        let endpoints = state::validate_endpoints(endpoints)?;
        let mut state = self.lock_state();
        let identity = match state.instances.get(&conn_id) {
            Some(registration) => registration.instance.identity.clone(),
            None => return Err(RegistrationError::UnknownConnection { conn_id }),
        };
        state.check_admission(conn_id, &identity, &endpoints)?;
        // Cannot be false: the connection was found above under the same lock.
        let _ = state.replace_endpoints(conn_id, endpoints);
        self.publish(&mut state);
        Ok(())
    }

    /// Removes connection `conn_id` at once (it disconnected). Its endpoints stay known.
    pub fn remove(&self, conn_id: u64) {
        let mut state = self.lock_state();
        if state.remove(conn_id).is_some() {
            self.publish(&mut state);
        }
    }

    /// Records a heartbeat of connection `conn_id`; unknown connections are ignored.
    pub fn heartbeat(&self, conn_id: u64, heartbeat: &Heartbeat, now: Instant) {
        match self.published.load().instances.get(&conn_id) {
            Some(instance) => instance.record_heartbeat(heartbeat.status, now),
            None => tracing::debug!(conn_id, "heartbeat from an unregistered connection"),
        }
    }

    /// Marks connection `conn_id`'s instance degraded while writes to it are stuck, or
    /// clears the mark; unknown connections are ignored.
    pub fn set_write_stalled(&self, conn_id: u64, stalled: bool) {
        if let Some(instance) = self.published.load().instances.get(&conn_id) {
            instance.set_write_stalled(stalled);
        }
    }

    /// Degrades instances silent longer than `degraded_after`; removes those silent longer
    /// than `evict_after` and returns their connection ids, sorted, for the caller to close.
    /// Forgets endpoints unserved for longer than `forget_after`.
    pub fn sweep(&self, now: Instant) -> Vec<u64> {
        let evicted = self.evict_silent(now);
        let mut state = self.lock_state();
        if state.forget_unserved(now, self.preferences.load().config.forget_after) {
            self.publish(&mut state);
        }
        evicted
    }

    /// The silence half of [`RoutingTable::sweep`]: degrades, then evicts.
    fn evict_silent(&self, now: Instant) -> Vec<u64> {
        let preferences = self.preferences.load();
        let (degraded_after, evict_after) = (preferences.config.degraded_after, preferences.config.evict_after);
        let mut overdue = Vec::new();
        for instance in self.published.load().instances.values() {
            let silence = instance.silence(now);
            if silence > degraded_after {
                instance.mark_silent();
            }
            if silence > evict_after {
                overdue.push(instance.conn_id);
            }
        }
        if overdue.is_empty() {
            return overdue;
        }
        let mut state = self.lock_state();
        // Checked again under the lock: a heartbeat may have arrived meanwhile.
        let mut evicted: Vec<u64> = overdue
            .into_iter()
            .filter(|id| {
                let registration = state.instances.get(id);
                registration.is_some_and(|r| r.instance.silence(now) > evict_after)
            })
            .collect();
        evicted.sort_unstable();
        for conn_id in &evicted {
            state.remove(*conn_id);
        }
        if !evicted.is_empty() {
            self.publish(&mut state);
        }
        evicted
    }

    /// Chooses the instance for a request; `path` is the raw path without query string,
    /// `requested_version` the version header's value if the client sent one.
    pub fn route(
        &self,
        method: &str,
        path: &str,
        requested_version: Option<&str>,
    ) -> Result<RoutingDecision<L>, RouteError> {
        let snapshot = self.published.load();
        let (routes, raw_params) = snapshot.lookup(path).ok_or(RouteError::NotFound)?;
        let params = decode_params(&raw_params).ok_or(RouteError::NotFound)?;
        let endpoint = routes
            .endpoint_for(method)
            .ok_or_else(|| RouteError::MethodNotAllowed { allow: routes.allowed_methods() })?;
        let requested = requested_version.map(parse_requested_version).transpose()?;
        let preferences = self.preferences.load();
        let configured_default = preferences.default_versions.get(&endpoint.service);
        let version = select::target_version(endpoint, requested, configured_default)
            .ok_or_else(|| no_instance(endpoint, None))?;
        let chosen = select::pick(endpoint, &version, &preferences.config.region)
            .ok_or_else(|| no_instance(endpoint, Some(&version)))?;
        let timeout = chosen.descriptor.timeout.unwrap_or(preferences.default_timeout);
        Ok(RoutingDecision {
            endpoint: Arc::clone(&chosen.descriptor),
            template: routes.template.clone(),
            params,
            instance: Arc::clone(&chosen.instance),
            effective_timeout: timeout.min(preferences.max_timeout),
        })
    }

    /// Every known endpoint with the instances serving it, sorted by template and method.
    pub fn snapshot(&self) -> Vec<RouteInfo> {
        let snapshot = self.published.load();
        let mut routes: Vec<RouteInfo> = snapshot
            .templates()
            .iter()
            .flat_map(|t| t.methods.iter().map(|(method, endpoint)| route_info(&t.template, method, endpoint)))
            .collect();
        routes.sort_by(|a, b| (&a.template, &a.method).cmp(&(&b.template, &b.method)));
        routes
    }

    /// The names of the services with at least one registered instance healthy now
    /// (neither degraded nor draining).
    pub fn healthy_services(&self) -> BTreeSet<String> {
        let snapshot = self.published.load();
        let healthy = snapshot.instances.values().filter(|i| i.status() == InstanceHealth::Healthy);
        healthy.map(|i| i.identity.service.clone()).collect()
    }

    /// Every registered instance, whatever it serves (the metrics' scrape).
    pub fn instances(&self) -> Vec<Arc<Instance<L>>> {
        self.published.load().instances.values().cloned().collect()
    }

    fn lock_state(&self) -> MutexGuard<'_, State<L>> {
        // A panic while the lock was held cannot leave the state half-changed: checks run
        // before any change and the changes themselves cannot fail.
        lock(&self.state)
    }

    fn publish(&self, state: &mut State<L>) {
        self.published.store(Arc::new(state.publish()));
    }
}

fn parse_default_versions(configured: &BTreeMap<String, String>) -> BTreeMap<String, Version> {
    configured
        .iter()
        .filter_map(|(service, value)| match Version::parse(value) {
            Ok(version) => Some((service.clone(), version)),
            Err(error) => {
                tracing::warn!(%service, %value, %error, "ignoring invalid default version");
                None
            }
        })
        .collect()
}

fn parse_requested_version(value: &str) -> Result<Version, RouteError> {
    Version::parse(value).map_err(|_| RouteError::InvalidVersion { value: value.to_owned() })
}

/// Percent-decoded parameters; `None` when one is not UTF-8 once decoded.
fn decode_params(raw: &matchit::Params<'_, '_>) -> Option<Vec<(String, String)>> {
    raw.iter().map(|(name, value)| Some((name.to_owned(), template::percent_decode(value)?.into_owned()))).collect()
}

fn no_instance<L>(endpoint: &EndpointRoutes<L>, version: Option<&Version>) -> RouteError {
    let detail = match version {
        Some(version) => format!("service {} version {version} has no instance that takes requests", endpoint.service),
        None => format!("service {} (any version) has no instance that takes requests", endpoint.service),
    };
    RouteError::NoHealthyInstance { detail }
}

fn route_info<L>(template: &str, method: &str, endpoint: &EndpointRoutes<L>) -> RouteInfo {
    let instances = endpoint
        .candidates
        .iter()
        .map(|c| InstanceInfo {
            conn_id: c.instance.conn_id,
            instance_id: c.instance.identity.instance_id.clone(),
            version: c.instance.identity.version.to_string(),
            region: c.instance.identity.region.clone(),
            health: c.instance.status(),
            in_flight: c.instance.in_flight(),
        })
        .collect();
    RouteInfo { template: template.to_owned(), method: method.to_owned(), service: endpoint.service.clone(), instances }
}
