//! The immutable routing snapshot that requests read without taking a lock.
//!
//! A [`Snapshot`] is built from the authoritative state (see `state`) after every change
//! of registrations and published through an `ArcSwap`; it is never modified afterwards.
//! It holds a `matchit` router from path template to the methods known on it, and for
//! each (method, template) the owning service, the instances serving it with their own
//! descriptor, and the round-robin counter (shared with the state, so rotation survives
//! republishing). Instances are shared `Arc`s: their load and health change in place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use weir_proto::EndpointDescriptor;

use super::instance::Instance;
use super::state::{KnownEndpoint, Registration};

/// Everything routing reads, frozen at one moment.
pub(crate) struct Snapshot<L> {
    router: matchit::Router<usize>,
    /// Indexed by the router's values.
    templates: Vec<TemplateRoutes<L>>,
    /// Registered instances by connection id, for heartbeats and sweeps.
    pub(crate) instances: HashMap<u64, Arc<Instance<L>>>,
}

/// The endpoints known on one path template.
pub(crate) struct TemplateRoutes<L> {
    pub(crate) template: String,
    /// By method.
    pub(crate) methods: BTreeMap<String, EndpointRoutes<L>>,
}

/// One known (method, template) and who serves it now.
pub(crate) struct EndpointRoutes<L> {
    /// The service that owns it (the last one that registered it).
    pub(crate) service: String,
    /// Instances serving it, by connection id; empty when the last one left.
    pub(crate) candidates: Vec<Candidate<L>>,
    pub(crate) rotation: Arc<AtomicUsize>,
}

/// An instance with the descriptor it declared for the endpoint.
pub(crate) struct Candidate<L> {
    pub(crate) instance: Arc<Instance<L>>,
    pub(crate) descriptor: Arc<EndpointDescriptor>,
}

/// Known endpoints by template, then method.
pub(crate) type KnownEndpoints = BTreeMap<String, BTreeMap<String, KnownEndpoint>>;

impl<L> Snapshot<L> {
    /// A snapshot with no routes.
    pub(crate) fn empty() -> Self {
        Snapshot { router: matchit::Router::new(), templates: Vec::new(), instances: HashMap::new() }
    }

    /// Builds the snapshot of `known` endpoints served by `instances`. Templates served by
    /// live instances are inserted first; a template `matchit` refuses is left out and
    /// returned, so that the caller forgets it.
    pub(crate) fn build(known: &KnownEndpoints, instances: &BTreeMap<u64, Registration<L>>) -> (Self, Vec<String>) {
        let live: BTreeSet<&str> =
            instances.values().flat_map(|r| r.endpoints.iter().map(|d| d.path.as_str())).collect();
        let mut snapshot = Snapshot::empty();
        let mut rejected = Vec::new();
        let live_first = known
            .iter()
            .filter(|(t, _)| live.contains(t.as_str()))
            .chain(known.iter().filter(|(t, _)| !live.contains(t.as_str())));
        for (template, methods) in live_first {
            if let Err(error) = snapshot.add_template(template, methods) {
                if live.contains(template.as_str()) {
                    // Not expected: live templates were checked against each other.
                    tracing::error!(%template, %error, "served template left out of routing");
                }
                rejected.push(template.clone());
            }
        }
        snapshot.attach_instances(instances);
        (snapshot, rejected)
    }

    fn add_template(
        &mut self,
        template: &str,
        methods: &BTreeMap<String, KnownEndpoint>,
    ) -> Result<(), matchit::InsertError> {
        self.router.insert(template, self.templates.len())?;
        let methods = methods
            .iter()
            .map(|(method, known)| {
                let routes = EndpointRoutes {
                    service: known.service.clone(),
                    candidates: Vec::new(),
                    rotation: Arc::clone(&known.rotation),
                };
                (method.clone(), routes)
            })
            .collect();
        self.templates.push(TemplateRoutes { template: template.to_owned(), methods });
        Ok(())
    }

    fn attach_instances(&mut self, instances: &BTreeMap<u64, Registration<L>>) {
        let index: HashMap<String, usize> =
            self.templates.iter().enumerate().map(|(i, t)| (t.template.clone(), i)).collect();
        for (conn_id, registration) in instances {
            for descriptor in &registration.endpoints {
                let endpoint = index
                    .get(&descriptor.path)
                    .and_then(|i| self.templates.get_mut(*i))
                    .and_then(|t| t.methods.get_mut(&descriptor.method));
                if let Some(endpoint) = endpoint {
                    endpoint.candidates.push(Candidate {
                        instance: Arc::clone(&registration.instance),
                        descriptor: Arc::clone(descriptor),
                    });
                }
            }
            self.instances.insert(*conn_id, Arc::clone(&registration.instance));
        }
    }

    /// The template matching `path` (raw, percent-encoded, without query) and the raw
    /// parameter values.
    pub(crate) fn lookup<'s, 'p>(&'s self, path: &'p str) -> Option<(&'s TemplateRoutes<L>, matchit::Params<'s, 'p>)> {
        let matched = self.router.at(path).ok()?;
        let routes = self.templates.get(*matched.value)?;
        Some((routes, matched.params))
    }

    /// Every template, in no particular order.
    pub(crate) fn templates(&self) -> &[TemplateRoutes<L>] {
        &self.templates
    }
}

impl<L> TemplateRoutes<L> {
    /// The endpoint for `method`; a `HEAD` request falls back to the `GET` endpoint.
    pub(crate) fn endpoint_for(&self, method: &str) -> Option<&EndpointRoutes<L>> {
        self.methods.get(method).or_else(|| (method == "HEAD").then(|| self.methods.get("GET")).flatten())
    }

    /// The methods known on this template, sorted, with `HEAD` whenever `GET` is there.
    pub(crate) fn allowed_methods(&self) -> Vec<String> {
        let mut allow: Vec<String> = self.methods.keys().cloned().collect();
        if self.methods.contains_key("GET") && !self.methods.contains_key("HEAD") {
            allow.push("HEAD".to_owned());
            allow.sort();
        }
        allow
    }
}
