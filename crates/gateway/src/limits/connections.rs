//! The global cap on open client connections (`server.max_connections`), and which of
//! them are idle. Every accepted connection holds a [`ConnectionSlot`] for as long as its
//! socket is open (an upgraded WebSocket included); the slot knows whether a request is
//! in flight on it and since when it has been idle.
//!
//! At the cap, a newcomer is admitted by shedding the connection idle the longest: the
//! cap signals it ([`ConnectionSlot::shed`]) and its owner closes it gracefully. Only
//! when no connection is idle is the newcomer refused. A shed connection keeps its slot
//! until its socket is really closed, but no longer counts against newcomers, so the
//! number of open sockets exceeds the cap by at most the connections being closed.
//!
//! Invariants: a slot is counted exactly as long as it lives (released on drop); a
//! connection is in the idle index exactly while no request is in flight on it and it has
//! not been shed. Lock order: a slot's own state, then the cap's; the cap never takes a
//! slot's lock, so no two paths wait on each other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::lock;

/// The highest default cap, whatever the file-descriptor limit.
const DEFAULT_CAP_CEILING: u64 = 16_384;

/// Where a connection sits in the idle index: idle since, then a unique id for ties.
type IdleKey = (Instant, u64);

/// The global connection cap and its index of idle connections.
#[derive(Debug)]
pub struct ConnectionCap {
    /// Open connections the cap admits newcomers up to (`server.max_connections`).
    max: usize,
    /// Numbers the slots, so that two connections idle since the same instant differ.
    next_id: AtomicU64,
    counts: Mutex<Counts>,
}

/// What the cap's lock guards.
#[derive(Debug, Default)]
struct Counts {
    /// Slots alive: every open client connection.
    live: usize,
    /// Slots shed but not yet dropped: closing, so newcomers do not count them.
    shed: usize,
    /// Idle connections, longest idle first, with the signal that sheds each.
    idle: BTreeMap<IdleKey, Arc<ShedSignal>>,
}

/// How the cap tells a connection to close.
#[derive(Debug, Default)]
pub(crate) struct ShedSignal {
    notify: Notify,
    /// Set once, by the cap: the slot is counted in `Counts::shed` until dropped.
    shed: AtomicBool,
}

/// One open connection's place under the cap; released when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    cap: Arc<ConnectionCap>,
    id: u64,
    signal: Arc<ShedSignal>,
    activity: Mutex<Activity>,
}

/// Whether requests are in flight on a connection.
#[derive(Debug)]
struct Activity {
    /// Requests begun and not yet answered in full (HTTP/2 may have many).
    in_flight: u32,
    /// Since when nothing has been in flight (`None` while busy or pinned).
    idle_since: Option<Instant>,
    /// Whether any request has begun on this connection.
    served: bool,
}

/// One request in flight on a connection; the connection is idle again once every such
/// guard is dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    slot: Arc<ConnectionSlot>,
}

/// Why a newcomer was not admitted.
#[derive(Debug, thiserror::Error)]
#[error("{live} client connections are open, none of them idle")]
pub(crate) struct CapReached {
    live: usize,
}

impl ConnectionCap {
    /// A cap admitting `max` open connections.
    pub fn new(max: u32) -> Arc<Self> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Arc::new(ConnectionCap { max, next_id: AtomicU64::new(0), counts: Mutex::default() })
    }

    /// A slot for a new connection (idle from now on); at the cap, the connection idle
    /// the longest is shed to make room, and with none idle the newcomer is refused.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Arc<ConnectionSlot>, CapReached> {
        let now = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(ShedSignal::default());
        let mut counts = lock(&self.counts);
        if counts.live - counts.shed >= self.max {
            let Some((_, victim)) = counts.idle.pop_first() else {
                return Err(CapReached { live: counts.live });
            };
            victim.shed.store(true, Ordering::Relaxed);
            counts.shed += 1;
            victim.notify.notify_one();
        }
        counts.live += 1;
        counts.idle.insert((now, id), Arc::clone(&signal));
        drop(counts);
        let activity = Mutex::new(Activity { in_flight: 0, idle_since: Some(now), served: false });
        Ok(Arc::new(ConnectionSlot { cap: Arc::clone(self), id, signal, activity }))
    }

    /// Open client connections, shed ones included.
    pub fn open(&self) -> usize {
        lock(&self.counts).live
    }

    /// The cap it enforces.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl ConnectionSlot {
    /// Counts a request in flight until the guard is dropped.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        let mut activity = lock(&self.activity);
        activity.in_flight += 1;
        activity.served = true;
        if let Some(since) = activity.idle_since.take() {
            lock(&self.cap.counts).idle.remove(&(since, self.id));
        }
        RequestGuard { slot: Arc::clone(self) }
    }

    /// Takes the connection out of the idle index for good: after an upgrade, the socket
    /// belongs to a WebSocket session, which has its own idle timeout and no one listens
    /// for the shed signal any more. (A shed that raced the upgrade stays counted as
    /// closing until the session ends: a bounded overshoot, not a leak.)
    pub(crate) fn pin_busy(&self) {
        let mut activity = lock(&self.activity);
        activity.in_flight += 1;
        if let Some(since) = activity.idle_since.take() {
            lock(&self.cap.counts).idle.remove(&(since, self.id));
        }
    }

    /// Since when nothing has been in flight; `None` while a request is.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        lock(&self.activity).idle_since
    }

    /// Whether any request has begun on this connection.
    pub(crate) fn served(&self) -> bool {
        lock(&self.activity).served
    }

    /// Resolves once the cap sheds this connection to admit another.
    pub(crate) async fn shed(&self) {
        self.signal.notify.notified().await;
    }

    fn request_ended(&self) {
        let mut activity = lock(&self.activity);
        activity.in_flight = activity.in_flight.saturating_sub(1);
        if activity.in_flight > 0 {
            return;
        }
        let now = Instant::now();
        activity.idle_since = Some(now);
        // A shed connection is closing: it must not be picked, and counted, twice.
        if !self.signal.shed.load(Ordering::Relaxed) {
            lock(&self.cap.counts).idle.insert((now, self.id), Arc::clone(&self.signal));
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.slot.request_ended();
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let idle_since = lock(&self.activity).idle_since;
        let mut counts = lock(&self.cap.counts);
        counts.live -= 1;
        if self.signal.shed.load(Ordering::Relaxed) {
            counts.shed -= 1;
        }
        if let Some(since) = idle_since {
            counts.idle.remove(&(since, self.id));
        }
    }
}

/// The default `server.max_connections`: three quarters of the process's soft limit on
/// open files (the rest is for service links, static files and the listeners), at most
/// 16,384.
pub fn default_max_connections() -> u32 {
    let limit = open_files_limit().unwrap_or(1024);
    u32::try_from((limit / 4 * 3).clamp(1, DEFAULT_CAP_CEILING)).unwrap_or(1)
}

/// Raises the process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit;
/// returns the soft limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
    }
    Ok(limit.rlim_cur)
}

/// The soft limit on open files (`RLIMIT_NOFILE`), if the system tells it.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (status == 0).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_is_shed_and_a_busy_one_never() {
        let cap = ConnectionCap::new(2);
        let first = cap.admit().unwrap();
        let second = cap.admit().unwrap();
        let busy = second.request_started();
        let third = cap.admit().expect("admitted by shedding the idle one");
        assert!(first.signal.shed.load(Ordering::Relaxed), "the idle connection is shed");
        assert!(!second.signal.shed.load(Ordering::Relaxed));
        assert_eq!(cap.open(), 3, "the shed one counts until it closes");
        let _keep = third.request_started();
        assert!(cap.admit().is_err(), "nothing idle left to shed");
        drop(first);
        drop(busy);
        let fourth = cap.admit().expect("the second went idle");
        assert!(second.signal.shed.load(Ordering::Relaxed));
        drop((second, fourth));
        assert_eq!(cap.open(), 1);
    }

    #[test]
    fn the_connection_idle_longest_goes_first() {
        let cap = ConnectionCap::new(2);
        let early = cap.admit().unwrap();
        let late = cap.admit().unwrap();
        // `early` works and goes idle again: now `late` has been idle longer.
        std::thread::sleep(Duration::from_millis(2));
        drop(early.request_started());
        let _newcomer = cap.admit().unwrap();
        assert!(late.signal.shed.load(Ordering::Relaxed));
        assert!(!early.signal.shed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_pinned_slot_is_never_shed() {
        let cap = ConnectionCap::new(1);
        let websocket = cap.admit().unwrap();
        websocket.pin_busy();
        assert!(cap.admit().is_err());
        assert!(websocket.idle_since().is_none());
    }

    #[test]
    fn the_default_cap_follows_the_open_files_limit() {
        let limit = open_files_limit().expect("getrlimit works on this system");
        let expected = (limit / 4 * 3).clamp(1, DEFAULT_CAP_CEILING);
        assert_eq!(u64::from(default_max_connections()), expected);
    }
}
