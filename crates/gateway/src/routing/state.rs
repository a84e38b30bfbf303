//! The authoritative registration state behind the routing table, and the checks a
//! registration must pass before it changes anything.
//!
//! [`State`] lives under the table's mutex. Every write first runs the read-only checks
//! (`check_admission`) against the current state, then applies the change, which cannot
//! fail, then builds a new snapshot: a refused registration leaves the state untouched.
//! Invariants: every endpoint a registered instance serves is in `known`; the templates
//! served by live instances fit together in one `matchit` router; live instances serving a
//! (method, template) all belong to one service, and those of one version all declare the
//! same descriptor for it; `known` never holds more than `max_routes` endpoints (a
//! registration that would take it over is refused), and an endpoint no instance serves
//! is forgotten once it has been unserved longer than `forget_after` ([`State::forget_unserved`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use semver::Version;
use weir_proto::{EndpointDescriptor, Hello};

use super::error::RegistrationError;
use super::instance::{Instance, InstanceIdentity};
use super::snapshot::{KnownEndpoints, Snapshot};
use super::template::{validate_method, validate_template};

/// A registered connection and the endpoints it serves now.
pub(crate) struct Registration<L> {
    pub(crate) instance: Arc<Instance<L>>,
    pub(crate) endpoints: Vec<Arc<EndpointDescriptor>>,
}

/// A (method, template) the table has seen; it outlives its instances.
pub(crate) struct KnownEndpoint {
    /// The service that registered it last.
    pub(crate) service: String,
    /// Round-robin counter for ties, kept across snapshots.
    pub(crate) rotation: Arc<AtomicUsize>,
    /// When a sweep first found no live instance serving it; `None` while served (or not
    /// yet swept since its last instance left). Past `forget_after`, it is forgotten.
    pub(crate) unserved_since: Option<Instant>,
}

/// Registrations and known endpoints.
pub(crate) struct State<L> {
    pub(crate) instances: BTreeMap<u64, Registration<L>>,
    known: KnownEndpoints,
    /// Most endpoints `known` may hold (`routing.max_routes`).
    max_routes: usize,
}

/// The identity a Hello declares; the version must be strict semver.
pub(crate) fn identity_from_hello(hello: &Hello) -> Result<InstanceIdentity, RegistrationError> {
    if hello.service.is_empty() {
        return Err(RegistrationError::InvalidIdentity { reason: "the service name is empty".to_owned() });
    }
    let version = Version::parse(&hello.version)
        .map_err(|e| RegistrationError::InvalidVersion { value: hello.version.clone(), reason: e.to_string() })?;
    Ok(InstanceIdentity {
        service: hello.service.clone(),
        version,
        region: hello.region.clone(),
        instance_id: hello.instance_id.clone(),
    })
}

/// Checks each descriptor's method and template and that no (method, template) repeats.
pub(crate) fn validate_endpoints(
    endpoints: &[EndpointDescriptor],
) -> Result<Vec<Arc<EndpointDescriptor>>, RegistrationError> {
    let mut seen = HashSet::new();
    for endpoint in endpoints {
        validate_method(&endpoint.method)
            .map_err(|reason| RegistrationError::InvalidMethod { method: endpoint.method.clone(), reason })?;
        validate_template(&endpoint.path)
            .map_err(|reason| RegistrationError::InvalidTemplate { template: endpoint.path.clone(), reason })?;
        if !seen.insert((endpoint.method.as_str(), endpoint.path.as_str())) {
            return Err(RegistrationError::DuplicateEndpoint {
                method: endpoint.method.clone(),
                template: endpoint.path.clone(),
            });
        }
    }
    Ok(endpoints.iter().cloned().map(Arc::new).collect())
}

impl<L> State<L> {
    pub(crate) fn new(max_routes: usize) -> Self {
        State { instances: BTreeMap::new(), known: BTreeMap::new(), max_routes }
    }

    /// Whether connection `conn_id`, with `identity`, may serve `endpoints` next to every
    /// other registered connection. Reads only.
    pub(crate) fn check_admission(
        &self,
        conn_id: u64,
        identity: &InstanceIdentity,
        endpoints: &[Arc<EndpointDescriptor>],
    ) -> Result<(), RegistrationError> {
        self.check_claims(conn_id, identity, endpoints)?;
        self.check_templates_fit(conn_id, endpoints)?;
        self.check_room(endpoints)
    }

    /// The endpoints not known yet must fit under `max_routes` next to those known.
    fn check_room(&self, endpoints: &[Arc<EndpointDescriptor>]) -> Result<(), RegistrationError> {
        let known: usize = self.known.values().map(BTreeMap::len).sum();
        let is_new = |d: &&Arc<EndpointDescriptor>| {
            self.known.get(&d.path).is_none_or(|methods| !methods.contains_key(&d.method))
        };
        let added = endpoints.iter().filter(is_new).count();
        if known + added > self.max_routes {
            return Err(RegistrationError::TooManyRoutes { known, added, max: self.max_routes });
        }
        Ok(())
    }

    /// Ownership and same-version consistency against the other live instances.
    fn check_claims(
        &self,
        conn_id: u64,
        identity: &InstanceIdentity,
        endpoints: &[Arc<EndpointDescriptor>],
    ) -> Result<(), RegistrationError> {
        let claimed: HashMap<(&str, &str), &EndpointDescriptor> =
            endpoints.iter().map(|d| ((d.method.as_str(), d.path.as_str()), &**d)).collect();
        let others = self.instances.iter().filter(|(id, _)| **id != conn_id);
        for (_, other) in others {
            let owner = &other.instance.identity;
            for served in &other.endpoints {
                let key = (served.method.as_str(), served.path.as_str());
                let Some(claim) = claimed.get(&key) else {
                    continue;
                };
                if owner.service != identity.service {
                    return Err(RegistrationError::Conflict {
                        method: served.method.clone(),
                        template: served.path.clone(),
                        owner: owner.service.clone(),
                    });
                }
                if owner.version == identity.version && **served != **claim {
                    return Err(RegistrationError::DescriptorMismatch {
                        method: served.method.clone(),
                        template: served.path.clone(),
                        service: identity.service.clone(),
                        version: identity.version.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The new templates must fit in one `matchit` router with those other live instances
    /// serve. (Templates with no live instance give way instead: see `publish`.)
    fn check_templates_fit(
        &self,
        conn_id: u64,
        endpoints: &[Arc<EndpointDescriptor>],
    ) -> Result<(), RegistrationError> {
        let existing: BTreeSet<&str> = self
            .instances
            .iter()
            .filter(|(id, _)| **id != conn_id)
            .flat_map(|(_, r)| r.endpoints.iter().map(|d| d.path.as_str()))
            .collect();
        let mut router = matchit::Router::new();
        for template in &existing {
            // Cannot fail: live templates were checked against each other on registration.
            let _ = router.insert(*template, ());
        }
        let added: BTreeSet<&str> =
            endpoints.iter().map(|d| d.path.as_str()).filter(|t| !existing.contains(t)).collect();
        for template in added {
            router.insert(template, ()).map_err(|e| match e {
                matchit::InsertError::Conflict { with } => {
                    RegistrationError::TemplateConflict { template: template.to_owned(), existing: with }
                }
                other => {
                    RegistrationError::InvalidTemplate { template: template.to_owned(), reason: other.to_string() }
                }
            })?;
        }
        Ok(())
    }

    /// Adds an admitted registration.
    pub(crate) fn insert(&mut self, instance: Arc<Instance<L>>, endpoints: Vec<Arc<EndpointDescriptor>>) {
        self.remember(&instance.identity.service, &endpoints);
        let registration = Registration { instance, endpoints };
        self.instances.insert(registration.instance.conn_id, registration);
    }

    /// Replaces an admitted registration's endpoints; false if `conn_id` is unknown.
    pub(crate) fn replace_endpoints(&mut self, conn_id: u64, endpoints: Vec<Arc<EndpointDescriptor>>) -> bool {
        let Some(registration) = self.instances.get_mut(&conn_id) else {
            return false;
        };
        registration.endpoints = endpoints;
        let service = registration.instance.identity.service.clone();
        let endpoints = registration.endpoints.clone();
        self.remember(&service, &endpoints);
        true
    }

    /// Removes a registration; its endpoints stay known.
    pub(crate) fn remove(&mut self, conn_id: u64) -> Option<Registration<L>> {
        self.instances.remove(&conn_id)
    }

    /// Records `service` as the owner of `endpoints`, keeping existing rotation counters.
    fn remember(&mut self, service: &str, endpoints: &[Arc<EndpointDescriptor>]) {
        for descriptor in endpoints {
            let known =
                self.known.entry(descriptor.path.clone()).or_default().entry(descriptor.method.clone()).or_insert_with(
                    || KnownEndpoint {
                        service: service.to_owned(),
                        rotation: Arc::new(AtomicUsize::new(0)),
                        unserved_since: None,
                    },
                );
            if known.service != service {
                known.service = service.to_owned();
            }
        }
    }

    /// Notes, at `now`, which known endpoints no live instance serves, and forgets those
    /// unserved for longer than `forget_after`. True if any was forgotten (the caller
    /// then publishes).
    pub(crate) fn forget_unserved(&mut self, now: Instant, forget_after: Duration) -> bool {
        let served: HashSet<(&str, &str)> = self
            .instances
            .values()
            .flat_map(|r| r.endpoints.iter().map(|d| (d.path.as_str(), d.method.as_str())))
            .collect();
        let mut forgotten = 0usize;
        for (template, methods) in self.known.iter_mut() {
            methods.retain(|method, known| {
                if served.contains(&(template.as_str(), method.as_str())) {
                    known.unserved_since = None;
                    return true;
                }
                let since = *known.unserved_since.get_or_insert(now);
                let keep = now.saturating_duration_since(since) <= forget_after;
                forgotten += usize::from(!keep);
                keep
            });
        }
        self.known.retain(|_, methods| !methods.is_empty());
        if forgotten > 0 {
            tracing::info!(forgotten, ?forget_after, "forgetting endpoints no instance has served for too long");
        }
        forgotten > 0
    }

    /// A snapshot of the current state. Known templates without live instances that no
    /// longer fit next to the live ones are forgotten here.
    pub(crate) fn publish(&mut self) -> Snapshot<L> {
        let (snapshot, rejected) = Snapshot::build(&self.known, &self.instances);
        for template in rejected {
            tracing::info!(%template, "forgetting an unserved template that a new one displaces");
            self.known.remove(&template);
        }
        snapshot
    }
}
