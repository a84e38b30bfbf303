//! Handing the service side over to another gateway process: the service listener can
//! be paused (new service connections wait in the listener's queue for whoever accepts
//! them next) and resumed, every registered service can be told to dial again (GoAway)
//! while its link serves on, and a caller can wait until services of given names have
//! registered. Pausing never touches a live link; only [`crate::Gateway::close_services`]
//! closes them.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;
use weir_proto::GoAway;

use crate::Gateway;

/// Whether the service listener accepts, and a signal bumped at every registration.
#[derive(Debug)]
pub(crate) struct ServiceIntake {
    /// `true` while the listener must not accept: a successor process accepts instead.
    paused: watch::Sender<bool>,
    /// Bumped at every registration, so that waiting for names needs no polling.
    registrations: watch::Sender<u64>,
}

impl Default for ServiceIntake {
    fn default() -> Self {
        ServiceIntake { paused: watch::Sender::new(false), registrations: watch::Sender::new(0) }
    }
}

impl ServiceIntake {
    /// Called once a service is in the routing table.
    pub(crate) fn registered(&self) {
        self.registrations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves once the intake is open (at once if it is).
    pub(crate) async fn opened(&self) {
        let mut paused = self.paused.subscribe();
        // The sender lives in `self`, which outlives this future: never an error.
        let _ = paused.wait_for(|p| !*p).await;
    }

    /// Resolves once the intake is paused (at once if it is).
    pub(crate) async fn paused(&self) {
        let mut paused = self.paused.subscribe();
        let _ = paused.wait_for(|p| *p).await;
    }
}

impl Gateway {
    /// Stops accepting service connections until [`Gateway::resume_service_intake`];
    /// connections arriving meanwhile wait in the listener's queue.
    pub fn pause_service_intake(&self) {
        self.intake.paused.send_replace(true);
    }

    /// Accepts service connections again.
    pub fn resume_service_intake(&self) {
        self.intake.paused.send_replace(false);
    }

    /// Sends GoAway with `reason` on every live service link; says how many were told.
    /// The links serve on until [`Gateway::close_services`].
    pub fn send_go_away(&self, reason: &str) -> usize {
        let go_away = GoAway { reason: reason.to_owned() };
        let links = self.links.all();
        let told = links.iter().filter(|(_, link)| link.send_go_away(&go_away).is_ok()).count();
        tracing::info!(told, total = links.len(), "services told to dial again (GoAway)");
        told
    }

    /// The names of the services with at least one instance registered now.
    pub fn registered_services(&self) -> BTreeSet<String> {
        let routes = self.routing.snapshot();
        routes.into_iter().filter(|r| !r.instances.is_empty()).map(|r| r.service).collect()
    }

    /// Resolves once every service named in `names` has an instance registered.
    pub async fn services_registered(self: &Arc<Self>, names: &BTreeSet<String>) {
        let mut registrations = self.intake.registrations.subscribe();
        loop {
            // Marked seen before the check, so a registration after it wakes the wait.
            registrations.mark_unchanged();
            if names.is_subset(&self.registered_services()) {
                return;
            }
            // The sender lives in `self`: `changed` fails only if it is gone.
            if registrations.changed().await.is_err() {
                return;
            }
        }
    }
}
