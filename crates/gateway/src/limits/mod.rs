//! The protections, each a unit of its own: per-IP connection slots and WebSocket slots
//! ([`slots`]), request rates ([`rate`]), the limits replicas share through Redis
//! ([`shared`]), bandwidth ([`bandwidth`]), the payload budget
//! ([`budget`]), the registry of requests in flight ([`in_flight`]), a client connection's
//! share of them ([`connection`]), declared body sizes ([`body_size`]), how slowly a
//! client may take a response ([`stall`]) and the global cap on open client connections,
//! which sheds idle ones ([`connections`]).
//!
//! Invariant: a slot, a reservation or a registration is a value that releases what it
//! holds when dropped, so no exit path of a request can leak one.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

pub mod bandwidth;
pub(crate) mod body_size;
pub mod budget;
pub(crate) mod connection;
pub mod connections;
pub mod in_flight;
pub(crate) mod rate;
pub mod shared;
pub mod slots;
pub(crate) mod stall;

/// Locks `mutex`, recovering from poisoning: every mutex of the gateway guards data that
/// each critical section leaves consistent (plain inserts, removals and counters, no
/// half-done update across a panic point), so a poisoned one is still valid.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key per-client limits count under (request rates, WebSocket slots, in-flight
/// body bytes): the
/// authenticated subject, else the client's IP address.
pub(crate) fn client_key(subject: Option<&str>, client: SocketAddr) -> String {
    subject.map_or_else(|| client.ip().to_string(), str::to_owned)
}
