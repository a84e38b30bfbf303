//! The service side: services dialling in ([`listener`] for TCP and TLS, in memory through
//! [`crate::Gateway::attach_memory`]), proving who they are and which paths they may serve
//! ([`auth`]), and each connection's life from Hello to close ([`connection`]), with its
//! endpoint updates capped and paced ([`updates`]). The live links are kept in
//! [`ServiceLinks`], so that eviction and shutdown reach every one; network connections
//! still in their handshake each hold a [`HandshakeSlot`]. [`intake`] pauses and resumes
//! the listener and tells services to dial again, for a hand-over to another process.

pub(crate) mod auth;
mod connection;
pub(crate) mod intake;
mod listener;
mod updates;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use weir_transport::Link;

use crate::limits::lock;

/// A network service connection's place among the `services.max_pending_handshakes`
/// connections allowed in their handshake at once; given back when it is welcomed or
/// dropped.
pub(crate) type HandshakeSlot = tokio::sync::OwnedSemaphorePermit;

/// The live service links by connection id.
#[derive(Debug)]
pub(crate) struct ServiceLinks {
    links: Mutex<HashMap<u64, Link>>,
    /// Connection ids are never reused, so a stale id can never name a new connection.
    next_id: AtomicU64,
}

impl Default for ServiceLinks {
    fn default() -> Self {
        ServiceLinks { links: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }
}

impl ServiceLinks {
    /// A connection id never handed out before.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn insert(&self, conn_id: u64, link: Link) {
        lock(&self.links).insert(conn_id, link);
    }

    pub(crate) fn remove(&self, conn_id: u64) -> Option<Link> {
        lock(&self.links).remove(&conn_id)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.links).len()
    }

    /// Every live link with its connection id (cloned, so that no lock is held while
    /// they are used).
    pub(crate) fn all(&self) -> Vec<(u64, Link)> {
        lock(&self.links).iter().map(|(id, link)| (*id, link.clone())).collect()
    }

    /// Every live link, forgotten here (shutdown).
    pub(crate) fn take_all(&self) -> Vec<Link> {
        lock(&self.links).drain().map(|(_, link)| link).collect()
    }
}
