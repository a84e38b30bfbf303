//! The store's health: [`Health::Shared`] while it has a connection that answers,
//! [`Health::Degraded`] from the first failed or timed-out command until a probe gets an
//! answer again. Each transition happens once, under the connection lock, and logs one
//! line (a warning going down, an info line coming back), however many commands fail
//! meanwhile. While degraded, one background task opens a fresh connection and PINGs
//! every [`PROBE_INTERVAL`]; it holds the store weakly, so a dropped store stops it.
//!
//! Written by hand because the transition and the probe are the whole policy: which
//! failure degrades (any, on the current connection), how often Redis is asked while
//! down (one probe per interval per process, not one attempt per request).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::{Live, SharedStore, StoreInner};
use crate::{lock, SharedError};

/// How often a degraded store tries Redis again.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Whether the shared state is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Redis answers; shared limits are enforced.
    Shared,
    /// Redis failed or did not answer; commands are not attempted and callers fall
    /// back to their local limits, or deny.
    Degraded {
        /// When the store degraded.
        since: Instant,
    },
}

impl Health {
    /// Whether Redis is in use.
    pub fn is_shared(&self) -> bool {
        matches!(self, Health::Shared)
    }
}

impl SharedStore {
    /// The health now.
    pub fn health(&self) -> Health {
        *self.inner.health.borrow()
    }

    /// Follows the health: the receiver sees every transition.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.inner.health.subscribe()
    }
}

impl StoreInner {
    /// Degrades the store after `error` on connection `epoch`, unless that connection
    /// is already gone (another failure degraded first, or a newer connection is in use).
    pub(super) fn degrade(self: &Arc<Self>, epoch: u64, error: &SharedError) {
        {
            let mut connection = lock(&self.connection);
            if connection.as_ref().is_none_or(|live| live.epoch != epoch) {
                return;
            }
            *connection = None;
            // Counted before it is seen, so a watcher of the health sees the count too.
            self.transitions.fetch_add(1, Ordering::Relaxed);
            self.health.send_replace(Health::Degraded { since: Instant::now() });
        }
        warn!(
            url = %self.config.redacted_url(),
            %error,
            "shared state degraded: Redis failed, shared limits fall back until it answers again"
        );
        tokio::spawn(probe(Arc::downgrade(self)));
    }

    /// Puts `connection` in use and makes the store shared again.
    fn recover(&self, connection: MultiplexedConnection) {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        let was = {
            let mut live = lock(&self.connection);
            *live = Some(Live { epoch, connection });
            self.health.send_replace(Health::Shared)
        };
        let down_for = match was {
            Health::Degraded { since } => since.elapsed(),
            Health::Shared => Duration::ZERO,
        };
        info!(url = %self.config.redacted_url(), ?down_for, "shared state restored: Redis answers again");
    }
}

/// Tries a fresh connection every [`PROBE_INTERVAL`] until one answers, or the store is
/// dropped.
async fn probe(store: Weak<StoreInner>) {
    let mut ticks = tokio::time::interval_at(Instant::now() + PROBE_INTERVAL, PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(store) = store.upgrade() else { return };
        match store.open().await {
            Ok(connection) => return store.recover(connection),
            Err(error) => debug!(%error, "shared state: Redis still unreachable"),
        }
    }
}
