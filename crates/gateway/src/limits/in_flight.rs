//! The request registry of business mounts: every request
//! in flight, listed at the admin endpoint (`GET /requests`) with its route, client,
//! start and bytes in and out, and cancellable from there (`DELETE /requests/{id}`).
//!
//! An entry lives exactly as long as its [`Registered`] guard, which the request holds
//! until its response body is done, so the list never shows finished requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::lock;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Byte counters a request updates as it goes.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    method: String,
    path: String,
    route: String,
    client: SocketAddr,
    started_unix_ms: u128,
    started: Instant,
    traffic: Arc<Traffic>,
    cancel: CancellationToken,
}

/// What the admin endpoint shows of one request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestSnapshot {
    pub id: u64,
    pub method: String,
    pub path: String,
    pub route: String,
    pub client: String,
    pub started_unix_ms: u128,
    pub elapsed_ms: u128,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Every registered request in flight.
#[derive(Debug, Default)]
pub struct RequestRegistry {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

/// A request's place in the registry; dropping it removes the entry.
#[derive(Debug)]
pub(crate) struct Registered {
    registry: Arc<RequestRegistry>,
    id: u64,
    /// Fires when an operator cancels the request.
    pub cancel: CancellationToken,
}

impl RequestRegistry {
    /// Registers a request whose body bytes `traffic` counts.
    pub(crate) fn begin(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        route: &str,
        client: SocketAddr,
        traffic: Arc<Traffic>,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let cancel = CancellationToken::new();
        let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let entry = Entry {
            method: method.to_owned(),
            path: path.to_owned(),
            route: route.to_owned(),
            client,
            started_unix_ms,
            started: Instant::now(),
            traffic,
            cancel: cancel.clone(),
        };
        self.lock().insert(id, entry);
        Registered { registry: Arc::clone(self), id, cancel }
    }

    /// Every request in flight, oldest first.
    pub fn list(&self) -> Vec<RequestSnapshot> {
        let mut list: Vec<RequestSnapshot> = self
            .lock()
            .iter()
            .map(|(id, e)| RequestSnapshot {
                id: *id,
                method: e.method.clone(),
                path: e.path.clone(),
                route: e.route.clone(),
                client: e.client.to_string(),
                started_unix_ms: e.started_unix_ms,
                elapsed_ms: e.started.elapsed().as_millis(),
                bytes_in: e.traffic.bytes_in.load(Ordering::Relaxed),
                bytes_out: e.traffic.bytes_out.load(Ordering::Relaxed),
            })
            .collect();
        list.sort_by_key(|r| r.id);
        list
    }

    /// Cancels request `id`; false if it is not in flight.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        match self.lock().get(&id) {
            Some(entry) => {
                entry.cancel.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Inserts and removals only: a poisoned map is still a valid map.
        lock(&self.entries)
    }
}

impl Registered {
    #[cfg(test)]
    /// The request's registry id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_guard_and_can_be_cancelled() {
        let registry = Arc::new(RequestRegistry::default());
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let traffic = Arc::new(Traffic::default());
        let a = registry.begin("GET", "/a", "/a", client, Arc::clone(&traffic));
        let b = registry.begin("POST", "/b", "/b", client, Arc::default());
        traffic.bytes_in.fetch_add(5, Ordering::Relaxed);
        let list = registry.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].bytes_in, 5);
        assert!(registry.cancel(b.id()));
        assert!(b.cancel.is_cancelled());
        drop(a);
        assert_eq!(registry.list().len(), 1);
        drop(b);
        assert!(!registry.cancel(2));
        assert!(registry.list().is_empty());
    }
}
