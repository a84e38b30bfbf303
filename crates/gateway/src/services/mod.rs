//! The service side: services dialling in ([`listener`] for TCP and TLS, in memory through
//! [`crate::Gateway::attach_memory`]), proving who they are and which paths they may serve
//! ([`auth`]), and each connection's life from Hello to close ([`connection`]), with its
//! endpoint updates capped and paced ([`updates`]). The live links are kept in
//! [`ServiceLinks`], so that eviction, shutdown and a configuration reload reach every
//! one, each with the proof it registered with ([`ServiceProof`], which a reload checks
//! against the new credentials); network connections still in their handshake each hold
//! a [`HandshakeSlot`]. [`intake`] pauses and resumes the listener and tells services to
//! dial again, for a hand-over to another process. [`probe`] times the round trip of each
//! heartbeat a version 2 service answers.

pub(crate) mod auth;
mod connection;
pub(crate) mod intake;
mod listener;
pub(crate) mod probe;
mod updates;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weir_proto::Hello;
use weir_transport::Link;

use self::auth::PeerTrust;
use crate::limits::lock;

/// A network service connection's place among the `services.max_pending_handshakes`
/// connections allowed in their handshake at once; given back when it is welcomed or
/// dropped.
pub(crate) type HandshakeSlot = tokio::sync::OwnedSemaphorePermit;

/// What a service connection proved itself with: checked again, against the new
/// credentials, when the configuration is reloaded, and on each endpoint update.
#[derive(Debug)]
pub(crate) struct ServiceProof {
    /// Its Hello: the service name and token it presented (the token is never logged).
    pub hello: Hello,
    /// What the transport vouched for (in memory, or its mTLS identity).
    pub trust: PeerTrust,
}

impl ServiceProof {
    /// Whether the service answers heartbeat probes (see [`probe`]).
    pub(crate) fn answers_probes(&self) -> bool {
        self.hello.protocol_version >= weir_proto::PROBE_VERSION
    }
}

/// The live service links by connection id, each with its proof.
#[derive(Debug)]
pub(crate) struct ServiceLinks {
    links: Mutex<HashMap<u64, (Link, Arc<ServiceProof>)>>,
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

    pub(crate) fn insert(&self, conn_id: u64, link: Link, proof: Arc<ServiceProof>) {
        lock(&self.links).insert(conn_id, (link, proof));
    }

    pub(crate) fn remove(&self, conn_id: u64) -> Option<Link> {
        lock(&self.links).remove(&conn_id).map(|(link, _)| link)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.links).len()
    }

    /// Every live link with its connection id (cloned, so that no lock is held while
    /// they are used).
    pub(crate) fn all(&self) -> Vec<(u64, Link)> {
        lock(&self.links).iter().map(|(id, (link, _))| (*id, link.clone())).collect()
    }

    /// Every live link with its connection id and proof (cloned, like [`Self::all`]).
    pub(crate) fn proofs(&self) -> Vec<(u64, Link, Arc<ServiceProof>)> {
        lock(&self.links).iter().map(|(id, (link, proof))| (*id, link.clone(), Arc::clone(proof))).collect()
    }

    /// Every live link, forgotten here (shutdown).
    pub(crate) fn take_all(&self) -> Vec<Link> {
        lock(&self.links).drain().map(|(_, (link, _))| link).collect()
    }
}
