//! The per-client limits that several replicas enforce together through Redis
//! (`[shared]`): the request rate ([`super::rate::RequestRate`] holds its shared part) and
//! the open WebSockets per user ([`SessionCaps`]), with the store they share.
//!
//! A shared limit never replaces the local one: every request and session is counted
//! locally too, so that while Redis cannot be reached the replica falls back to a
//! limiter that knows the client's recent traffic (`on_failure = "local"`), or refuses
//! with 503 (`"deny"`). Redis itself is asked within `command_timeout` and not at all
//! while known to be down (see `weir_shared`), so no request waits longer for it.
//!
//! What stays per replica (connections per IP, the payload budget, bandwidth shaping)
//! is listed in `docs/scaling.md`, with the consistency bound of each shared limit.

use std::sync::Arc;
use std::time::Duration;

use weir_shared::{CountRefusal, CountSlot, Health, SharedCount, SharedError, SharedStore};

use super::slots::{KeyedLimiter, Permit};
use crate::config::OnSharedFailure;
use crate::response::error::GatewayError;

/// How long a replica's WebSocket slot counts after its last renewal: a replica that
/// crashed holds its users' slots at most this long.
pub const SESSION_SLOT_TTL: Duration = Duration::from_secs(15);

/// The store the replicas share, and what to do while it cannot be reached.
#[derive(Debug, Clone)]
pub struct SharedLimits {
    /// The connection to Redis and its health.
    pub store: SharedStore,
    /// `[shared] on_failure`.
    pub on_failure: OnSharedFailure,
}

impl SharedLimits {
    /// Whether this replica decides its shared limits with the others right now.
    pub fn is_shared(&self) -> bool {
        matches!(self.store.health(), Health::Shared)
    }
}

/// A mount's cap on open WebSockets per user: on this replica, and, with `[shared]`,
/// across all of them. Kept across a reload, so open sessions still count.
#[derive(Debug)]
pub(crate) struct SessionCaps {
    /// This replica's sessions per user; its maximum follows reloads.
    local: Arc<KeyedLimiter<String>>,
    /// Every replica's sessions per user, and the answer while Redis cannot count them.
    shared: Option<(SharedCount, OnSharedFailure)>,
}

/// One user's WebSocket slot; dropping it frees the slot here and in Redis.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    _local: Permit<String>,
    /// `None` when Redis could not count the session (it counts locally only).
    _shared: Option<CountSlot>,
}

impl SessionCaps {
    /// Caps of `max` sessions per user on `mount`, shared through `shared` when given.
    pub(crate) fn new(max: u32, mount: &str, shared: Option<&SharedLimits>) -> Result<Arc<Self>, SharedError> {
        let shared = match shared {
            Some(limits) => Some((SharedCount::new(limits.store.clone(), mount, SESSION_SLOT_TTL)?, limits.on_failure)),
            None => None,
        };
        Ok(Arc::new(SessionCaps { local: KeyedLimiter::new(max), shared }))
    }

    /// From now on at most `max` sessions per user (a reload).
    pub(crate) fn set_max(&self, max: u32) {
        self.local.set_max(max);
    }

    /// Open sessions of `user` on this replica.
    pub(crate) fn count(&self, user: &str) -> u32 {
        self.local.count(&user.to_owned())
    }

    /// A slot for `user`, or 503 when the user has `max` sessions open (here, or, with
    /// `[shared]`, on all replicas together).
    pub(crate) async fn acquire(&self, user: String, max: u32) -> Result<SessionSlot, GatewayError> {
        let full = || GatewayError::Overloaded(format!("this user already has {max} open WebSockets"));
        let Some(local) = self.local.try_acquire(user.clone()) else {
            return Err(full());
        };
        let Some((shared, on_failure)) = &self.shared else {
            return Ok(SessionSlot { _local: local, _shared: None });
        };
        match shared.try_acquire(&user, max).await {
            Ok(slot) => Ok(SessionSlot { _local: local, _shared: Some(slot) }),
            Err(CountRefusal::Full) => Err(full()),
            Err(CountRefusal::Unavailable) => match on_failure {
                OnSharedFailure::Local => Ok(SessionSlot { _local: local, _shared: None }),
                OnSharedFailure::Deny => Err(GatewayError::Overloaded(
                    "the shared WebSocket cap cannot be checked (Redis unreachable)".into(),
                )),
            },
        }
    }
}
