//! What a service connection may declare after its Hello, and how often it is applied.
//!
//! Every endpoint list (a Hello's, an EndpointsUpdate's) is held to
//! `services.max_endpoints`: each endpoint costs routing-table memory and the checks every
//! later registration runs. An update's list is judged by the link from its count prefix,
//! before any endpoint is decoded (`LinkConfig::max_update_endpoints`), so one over the
//! limit costs no allocation for its endpoints. Updates are applied at most once per [`UPDATE_INTERVAL`] per
//! connection: one arriving sooner is kept, replacing any kept before it (an update
//! replaces the whole list, so only the latest matters), and applied when the interval
//! has passed. So a service flooding updates costs the table ten rebuilds a second, not
//! one per frame, and requests routing meanwhile are not held up by them.

use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;
use weir_proto::EndpointsUpdate;

/// Shortest time between two updates applied for one connection.
pub(crate) const UPDATE_INTERVAL: Duration = Duration::from_millis(100);

/// An endpoint list longer than `services.max_endpoints`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{count} endpoints declared; at most {max} are allowed per service connection")]
pub(crate) struct TooManyEndpoints {
    pub count: usize,
    pub max: usize,
}

/// Refuses a list of `count` endpoints over `max`.
pub(crate) fn check_endpoint_count(count: usize, max: usize) -> Result<(), TooManyEndpoints> {
    if count > max {
        return Err(TooManyEndpoints { count, max });
    }
    Ok(())
}

/// One connection's updates, held back to one applied per [`UPDATE_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct UpdatePacer {
    /// When the last update was applied; `None` before the first.
    last_applied: Option<Instant>,
    /// The latest update that arrived too soon, waiting for its turn.
    waiting: Option<EndpointsUpdate>,
}

impl UpdatePacer {
    /// `update` if it may be applied now (the caller applies it); else it waits, in place
    /// of any update waiting before it.
    pub(crate) fn offer(&mut self, update: EndpointsUpdate, now: Instant) -> Option<EndpointsUpdate> {
        match self.last_applied {
            Some(last) if now < last + UPDATE_INTERVAL => {
                self.waiting = Some(update);
                None
            }
            _ => {
                self.last_applied = Some(now);
                self.waiting = None;
                Some(update)
            }
        }
    }

    /// Resolves when the waiting update's turn has come; never when none waits.
    pub(crate) async fn turn(&self) {
        match (self.waiting.is_some(), self.last_applied) {
            (true, Some(last)) => tokio::time::sleep_until(last + UPDATE_INTERVAL).await,
            _ => std::future::pending().await,
        }
    }

    /// The waiting update, taken to be applied at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> Option<EndpointsUpdate> {
        let update = self.waiting.take()?;
        self.last_applied = Some(now);
        Some(update)
    }
}

#[cfg(test)]
mod tests {
    use weir_proto::EndpointDescriptor;

    use super::*;

    fn update(path: &str) -> EndpointsUpdate {
        EndpointsUpdate { endpoints: vec![EndpointDescriptor::new("GET", path)] }
    }

    #[test]
    fn the_count_is_capped() {
        assert_eq!(check_endpoint_count(3, 3), Ok(()));
        assert_eq!(check_endpoint_count(4, 3), Err(TooManyEndpoints { count: 4, max: 3 }));
    }

    #[tokio::test(start_paused = true)]
    async fn updates_arriving_too_soon_are_coalesced_into_the_latest() {
        let mut pacer = UpdatePacer::default();
        let t0 = Instant::now();
        assert_eq!(pacer.offer(update("/a"), t0), Some(update("/a")));
        for path in ["/b", "/c", "/d"] {
            assert_eq!(pacer.offer(update(path), t0 + Duration::from_millis(10)), None);
        }
        pacer.turn().await;
        assert!(Instant::now() >= t0 + UPDATE_INTERVAL);
        assert_eq!(pacer.take(Instant::now()), Some(update("/d")));
        assert_eq!(pacer.take(Instant::now()), None);
        let later = Instant::now() + UPDATE_INTERVAL;
        assert_eq!(pacer.offer(update("/e"), later), Some(update("/e")));
    }
}
