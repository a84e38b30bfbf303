//! Choosing the instance that serves one request, among the instances registered for the
//! matched endpoint.
//!
//! Pure functions over a published snapshot; the only thing they change is the endpoint's
//! round-robin counter. Load and health are read from the instances' atomics at the time
//! of the call. The rules are listed in the `routing` module documentation.

use std::sync::atomic::Ordering;

use semver::Version;

use super::instance::InstanceHealth;
use super::snapshot::{Candidate, EndpointRoutes};

/// The version a request goes to: the requested one, else the configured default for the
/// service, else the highest version that has an instance which is not draining. `None`
/// when there is no such instance.
pub(crate) fn target_version<L>(
    endpoint: &EndpointRoutes<L>,
    requested: Option<Version>,
    configured_default: Option<&Version>,
) -> Option<Version> {
    requested.or_else(|| configured_default.cloned()).or_else(|| highest_available_version(endpoint))
}

fn highest_available_version<L>(endpoint: &EndpointRoutes<L>) -> Option<Version> {
    endpoint
        .candidates
        .iter()
        .filter(|c| c.instance.status() != InstanceHealth::Draining)
        .map(|c| &c.instance.identity.version)
        .max()
        .cloned()
}

/// How much an instance is wanted; lower is better, compared field by field in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Preference {
    /// Degraded instances come after all healthy ones.
    degraded: bool,
    /// Then instances outside the gateway's region (when it has one).
    remote: bool,
    /// Then the least loaded.
    in_flight: u32,
}

/// `None` for an instance that takes no new requests (draining).
fn preference<L>(candidate: &Candidate<L>, local_region: &str) -> Option<Preference> {
    let degraded = match candidate.instance.status() {
        InstanceHealth::Draining => return None,
        InstanceHealth::Healthy => false,
        InstanceHealth::Degraded => true,
    };
    let remote = !local_region.is_empty() && candidate.instance.identity.region != local_region;
    Some(Preference { degraded, remote, in_flight: candidate.instance.in_flight() })
}

/// The best instance of exactly `version`, ties taken in turn; `None` when every instance
/// of that version is draining or there is none.
pub(crate) fn pick<'a, L>(
    endpoint: &'a EndpointRoutes<L>,
    version: &Version,
    local_region: &str,
) -> Option<&'a Candidate<L>> {
    // Preferences are computed once: in-flight counts move under our feet.
    let ranked: Vec<(Preference, &Candidate<L>)> = endpoint
        .candidates
        .iter()
        .filter(|c| c.instance.identity.version == *version)
        .filter_map(|c| preference(c, local_region).map(|p| (p, c)))
        .collect();
    let best = ranked.iter().map(|(p, _)| *p).min()?;
    let ties: Vec<&Candidate<L>> = ranked.iter().filter(|(p, _)| *p == best).map(|(_, c)| *c).collect();
    let turn = endpoint.rotation.fetch_add(1, Ordering::Relaxed);
    ties.get(turn % ties.len()).copied()
}
