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
//! The hot path is a connection switching between idle and busy, twice per request: it
//! touches only its own slot's atomics (one state word: requests in flight and flags; one
//! idle-since timestamp in nanoseconds from the cap's origin), with no lock and no
//! allocation. The cap's registry of slots changes only when a connection is admitted or
//! its slot dropped; the idle order is derived only when shedding, at the cap, by scanning
//! the registry for the idle slot with the oldest idle-since that is not already shed.
//! That scan costs one pass over the open connections per admission at the cap, paid by
//! the accept path instead of by every request.
//!
//! Invariants:
//! - a slot is counted in `live` exactly as long as it lives (released on drop), and in
//!   `shed` from the moment the cap sheds it until it is dropped;
//! - a slot is shed only by a compare-and-swap of its state word from a value with no
//!   request in flight, so a connection with a request in flight is never shed. When the
//!   cap and a starting request race, whichever changes the word first wins: the request
//!   (the cap's swap fails and it looks again) or the cap (the connection was idle when
//!   shed; the request that begins right after still runs to its end, since the owner
//!   closes gracefully and a graceful close lets requests in flight finish);
//! - the shed flag is set once, only under the registry lock, and `live` and `shed` change
//!   only under it too, so the admission check made under that lock is exact.
//!
//! Lock order: the registry lock, then a shed slot's [`Notify`]; a slot's own state is
//! atomics, never a lock, and the hot path takes no lock at all.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;
use tokio::sync::Notify;

use super::lock;

/// The highest default cap, whatever the file-descriptor limit.
const DEFAULT_CAP_CEILING: u64 = 16_384;

/// The low bits of a slot's state word: requests in flight (HTTP/2 may have many; a
/// connection has at most its stream limit plus one pin, far below this mask).
const IN_FLIGHT: u64 = u32::MAX as u64;
/// State flag set once, by the cap: the connection is shed and closing.
const SHED: u64 = 1 << 32;
/// State flag set by the first request on the connection.
const SERVED: u64 = 1 << 33;

/// The global connection cap and its registry of open connections.
#[derive(Debug)]
pub struct ConnectionCap {
    /// Open connections the cap admits newcomers up to (`server.max_connections`).
    max: usize,
    /// The instant every slot's idle-since is measured from, so it fits in an atomic.
    origin: Instant,
    /// Slots alive: every open client connection. An atomic so the gauge reads it without
    /// the lock; changed only under `registry`'s lock.
    live: AtomicUsize,
    /// Slots shed but not yet dropped: closing, so newcomers do not count them. Changed
    /// only under `registry`'s lock.
    shed: AtomicUsize,
    /// Every live slot's shared state, scanned for the longest idle one when shedding;
    /// locked only to admit, to drop a slot and to shed.
    registry: Mutex<Slab<Arc<SlotState>>>,
}

/// What a connection and the cap share: written by the connection on every request,
/// read (and flagged shed) by the cap only when shedding.
#[derive(Debug)]
struct SlotState {
    /// Requests in flight (the [`IN_FLIGHT`] bits) and the [`SHED`] and [`SERVED`] flags,
    /// in one word so that the cap's shed and a starting request are ordered by it.
    state: AtomicU64,
    /// Nanoseconds from the cap's origin to when nothing was last in flight; meaningful
    /// only while nothing is.
    idle_since: AtomicU64,
    /// Wakes the connection's owner when the cap sheds it.
    notify: Notify,
}

/// One open connection's place under the cap; released when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    /// The cap that counts this slot, told when it is dropped.
    cap: Arc<ConnectionCap>,
    /// Where `shared` sits in the cap's registry.
    key: usize,
    /// The state the cap reads when shedding.
    shared: Arc<SlotState>,
}

/// One request in flight on a connection; the connection is idle again once every such
/// guard is dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    /// The slot whose in-flight count this guard holds one of.
    slot: Arc<ConnectionSlot>,
}

/// Why a newcomer was not admitted.
#[derive(Debug, thiserror::Error)]
#[error("{live} client connections are open, none of them idle")]
pub(crate) struct CapReached {
    /// Open connections when the newcomer was refused, shed ones included.
    live: usize,
}

/// An idle slot the cap may shed, and the state word it was seen with.
struct Candidate<'a> {
    /// The slot, borrowed from the registry the cap holds locked.
    slot: &'a SlotState,
    /// Its state word when chosen: the shed swaps from exactly this value, so a request
    /// begun since makes the shed fail instead of cutting it.
    seen: u64,
}

impl ConnectionCap {
    /// A cap admitting `max` open connections.
    pub fn new(max: u32) -> Arc<Self> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Arc::new(ConnectionCap {
            max,
            origin: Instant::now(),
            live: AtomicUsize::new(0),
            shed: AtomicUsize::new(0),
            registry: Mutex::default(),
        })
    }

    /// A slot for a new connection (idle from now on); at the cap, the connection idle
    /// the longest is shed to make room, and with none idle the newcomer is refused.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Arc<ConnectionSlot>, CapReached> {
        let shared = Arc::new(SlotState {
            state: AtomicU64::new(0),
            idle_since: AtomicU64::new(self.since_origin(Instant::now())),
            notify: Notify::new(),
        });
        let mut registry = lock(&self.registry);
        let live = self.live.load(Ordering::Relaxed);
        let counted = live - self.shed.load(Ordering::Relaxed);
        if counted >= self.max && !self.shed_longest_idle(&registry) {
            return Err(CapReached { live });
        }
        let key = registry.insert(Arc::clone(&shared));
        self.live.store(live + 1, Ordering::Relaxed);
        drop(registry);
        Ok(Arc::new(ConnectionSlot { cap: Arc::clone(self), key, shared }))
    }

    /// Open client connections, shed ones included.
    pub fn open(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The cap it enforces.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Sheds the idle slot with the oldest idle-since that is not shed yet; `false` when
    /// there is none. Called with the registry locked.
    fn shed_longest_idle(&self, registry: &Slab<Arc<SlotState>>) -> bool {
        loop {
            let Some(candidate) = longest_idle(registry) else {
                return false;
            };
            if self.try_shed(&candidate) {
                return true;
            }
            // A request began on it since it was seen (or it went busy and idle again):
            // look again. Each failed swap means a connection made progress.
        }
    }

    /// Sheds `candidate` if its state is still the idle one it was seen with; `false` if
    /// a request changed it first. Called with the registry locked.
    fn try_shed(&self, candidate: &Candidate<'_>) -> bool {
        let shed = candidate.seen | SHED;
        let swapped = candidate.slot.state.compare_exchange(candidate.seen, shed, Ordering::AcqRel, Ordering::Relaxed);
        if swapped.is_err() {
            return false;
        }
        self.shed.fetch_add(1, Ordering::Relaxed);
        candidate.slot.notify.notify_one();
        true
    }

    /// `at` as nanoseconds from the origin (saturating: 584 years fit).
    fn since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The idle, unshed slot with the oldest idle-since, with the state it was seen in.
fn longest_idle(registry: &Slab<Arc<SlotState>>) -> Option<Candidate<'_>> {
    let mut oldest: Option<(u64, Candidate<'_>)> = None;
    for (_, slot) in registry {
        let seen = slot.state.load(Ordering::Acquire);
        if seen & (IN_FLIGHT | SHED) != 0 {
            continue;
        }
        // Read after the state: the connection stores its idle-since before releasing
        // its last request, so an idle state comes with the idle-since that began it.
        let since = slot.idle_since.load(Ordering::Relaxed);
        if oldest.as_ref().is_none_or(|(oldest_since, _)| since < *oldest_since) {
            oldest = Some((since, Candidate { slot, seen }));
        }
    }
    oldest.map(|(_, candidate)| candidate)
}

impl ConnectionSlot {
    /// Counts a request in flight until the guard is dropped.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        let state = &self.shared.state;
        // Acquire pairs with the cap's swap: a request that comes second sees the shed.
        let before = state.fetch_add(1, Ordering::AcqRel);
        if before & SERVED == 0 {
            state.fetch_or(SERVED, Ordering::Relaxed);
        }
        RequestGuard { slot: Arc::clone(self) }
    }

    /// Makes the connection busy for good: after an upgrade, the socket belongs to a
    /// WebSocket session, which has its own idle timeout and no one listens for the shed
    /// signal any more. The slot still counts until the session ends. (A shed that raced
    /// the upgrade stays counted as closing until then: a bounded overshoot, not a leak.)
    pub(crate) fn pin_busy(&self) {
        self.shared.state.fetch_add(1, Ordering::AcqRel);
    }

    /// Since when nothing has been in flight; `None` while a request is.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        if self.shared.state.load(Ordering::Acquire) & IN_FLIGHT != 0 {
            return None;
        }
        let nanos = self.shared.idle_since.load(Ordering::Relaxed);
        Some(self.cap.origin + Duration::from_nanos(nanos))
    }

    /// Whether any request has begun on this connection.
    pub(crate) fn served(&self) -> bool {
        self.shared.state.load(Ordering::Relaxed) & SERVED != 0
    }

    /// Resolves once the cap sheds this connection to admit another.
    pub(crate) async fn shed(&self) {
        self.shared.notify.notified().await;
    }

    /// Whether the cap has shed this connection.
    #[cfg(test)]
    fn is_shed(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) & SHED != 0
    }

    /// One request fewer in flight; the last one out stores when idleness began, before
    /// the state word says idle (release), so the cap never reads an idle slot's old
    /// idle-since.
    fn request_ended(&self) {
        let state = &self.shared.state;
        let mut current = state.load(Ordering::Relaxed);
        loop {
            if current & IN_FLIGHT == 0 {
                // Every decrement pairs with an increment; nothing to take back.
                return;
            }
            if current & IN_FLIGHT == 1 {
                let now = self.cap.since_origin(Instant::now());
                self.shared.idle_since.store(now, Ordering::Relaxed);
            }
            match state.compare_exchange_weak(current, current - 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
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
        let mut registry = lock(&self.cap.registry);
        registry.try_remove(self.key);
        self.cap.live.fetch_sub(1, Ordering::Relaxed);
        // The flag is set only under this lock, so it cannot change while it is read.
        if self.shared.state.load(Ordering::Acquire) & SHED != 0 {
            self.cap.shed.fetch_sub(1, Ordering::Relaxed);
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
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_is_shed_and_a_busy_one_never() {
        let cap = ConnectionCap::new(2);
        let first = cap.admit().unwrap();
        let second = cap.admit().unwrap();
        let busy = second.request_started();
        let third = cap.admit().expect("admitted by shedding the idle one");
        assert!(first.is_shed(), "the idle connection is shed");
        assert!(!second.is_shed());
        assert_eq!(cap.open(), 3, "the shed one counts until it closes");
        let _keep = third.request_started();
        assert!(cap.admit().is_err(), "nothing idle left to shed");
        drop(first);
        drop(busy);
        let fourth = cap.admit().expect("the second went idle");
        assert!(second.is_shed());
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
        assert!(late.is_shed());
        assert!(!early.is_shed());
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
    fn a_slot_that_turns_busy_while_chosen_is_not_shed() {
        let cap = ConnectionCap::new(1);
        let only = cap.admit().unwrap();
        let registry = lock(&cap.registry);
        let candidate = longest_idle(&registry).expect("the only connection is idle");
        // A request begins between the cap's choice and its swap: the request wins.
        let request = only.request_started();
        assert!(!cap.try_shed(&candidate), "the swap sees the request");
        assert!(!only.is_shed());
        assert_eq!(cap.shed.load(Ordering::Relaxed), 0);
        assert!(longest_idle(&registry).is_none(), "a look again finds nothing idle");
        drop(registry);
        assert!(cap.admit().is_err(), "the busy connection is not shed");
        drop(request);
        let _newcomer = cap.admit().expect("idle again, so shed");
        assert!(only.is_shed());
    }

    #[test]
    fn a_request_that_begins_after_the_shed_is_counted_and_never_shed_again() {
        let cap = ConnectionCap::new(1);
        let first = cap.admit().unwrap();
        let registry = lock(&cap.registry);
        let candidate = longest_idle(&registry).unwrap();
        assert!(cap.try_shed(&candidate), "the cap swaps first");
        drop(registry);
        // The owner closes gracefully, so this late request still runs to its end.
        let request = first.request_started();
        assert!(first.idle_since().is_none() && first.served());
        drop(request);
        assert!(first.idle_since().is_some());
        let second = cap.admit().expect("the shed one does not count against newcomers");
        let busy = second.request_started();
        assert!(cap.admit().is_err(), "the shed one, idle again, is never picked twice");
        drop(busy);
        assert_eq!((cap.open(), cap.shed.load(Ordering::Relaxed)), (2, 1));
        drop(first);
        assert_eq!((cap.open(), cap.shed.load(Ordering::Relaxed)), (1, 0));
        drop(second);
        assert_eq!(cap.open(), 0);
    }

    /// Connections on several threads switch between busy and idle as fast as they can
    /// while the main thread admits newcomers at the cap (and closes each newcomer once
    /// shed): no connection is shed while a request it began before the shed is in
    /// flight, the shed ones never count against newcomers, and every count returns to
    /// zero.
    #[test]
    fn many_threads_switching_while_the_cap_sheds_keep_the_counts_right() {
        const WORKERS: usize = 4;
        const SLOTS_PER_WORKER: usize = 4;
        let cap = ConnectionCap::new(u32::try_from(WORKERS * SLOTS_PER_WORKER).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let slots: Vec<_> = (0..SLOTS_PER_WORKER).map(|_| cap.admit().unwrap()).collect();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || switch_busy_and_idle(&slots, &stop))
            })
            .collect();
        let newcomers = admit_at_the_cap(&cap, 5_000);
        stop.store(true, Ordering::Relaxed);
        let (shed_while_busy, workers_shed) =
            workers.into_iter().map(|w| w.join().unwrap()).fold((0, 0), |(busy, shed), (b, s)| (busy + b, shed + s));
        assert_eq!(shed_while_busy, 0, "a connection was shed with a request in flight");
        assert!(workers_shed > 0, "the cap never shed a switching connection: the race was not exercised");
        let shed_newcomers = newcomers.iter().filter(|n| n.is_shed()).count();
        assert_eq!(cap.open(), newcomers.len(), "the workers' slots were released");
        assert_eq!(cap.shed.load(Ordering::Relaxed), shed_newcomers);
        assert!(newcomers.len() - shed_newcomers <= cap.max());
        drop(newcomers);
        assert_eq!((cap.open(), cap.shed.load(Ordering::Relaxed)), (0, 0));
        assert_eq!(lock(&cap.registry).len(), 0);
    }

    /// Starts and ends requests on `slots` in turn until `stop`; returns how many times a
    /// slot was found shed while a request that began before the shed was still in
    /// flight, and how many of the slots were shed in the end.
    fn switch_busy_and_idle(slots: &[Arc<ConnectionSlot>], stop: &AtomicBool) -> (usize, usize) {
        let mut shed_while_busy = 0;
        for slot in slots.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let request = slot.request_started();
            let shed_before = slot.is_shed();
            std::hint::spin_loop();
            if !shed_before && slot.is_shed() {
                shed_while_busy += 1;
            }
            drop(request);
        }
        (shed_while_busy, slots.iter().filter(|s| s.is_shed()).count())
    }

    /// Makes `admissions` attempts to admit a newcomer at the cap, closing each newcomer
    /// once shed and checking, after each attempt, that the connections not shed stay
    /// within the cap. Returns the newcomers still open.
    fn admit_at_the_cap(cap: &Arc<ConnectionCap>, admissions: usize) -> Vec<Arc<ConnectionSlot>> {
        let mut newcomers: Vec<Arc<ConnectionSlot>> = Vec::new();
        for _ in 0..admissions {
            if let Ok(slot) = cap.admit() {
                newcomers.push(slot);
            }
            newcomers.retain(|n| !n.is_shed());
            // Read under the lock, which every change to the two counts holds.
            let registry = lock(&cap.registry);
            let counted = cap.open() - cap.shed.load(Ordering::Relaxed);
            assert!(counted <= cap.max(), "{counted} connections counted over a cap of {}", cap.max());
            assert_eq!(registry.len(), cap.open());
        }
        newcomers
    }

    /// One operation on the cap in a generated sequence; indices pick among the open
    /// connections, modulo their number.
    #[derive(Debug, Clone)]
    enum Op {
        Admit,
        Start(usize),
        End(usize),
        Pin(usize),
        Close(usize),
    }

    /// An open connection as the sequence drives it.
    struct Open {
        slot: Arc<ConnectionSlot>,
        /// Its requests in flight, ended by dropping.
        requests: Vec<RequestGuard>,
        pinned: bool,
    }

    impl Open {
        fn busy(&self) -> bool {
            self.pinned || !self.requests.is_empty()
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Admit),
            3 => any::<usize>().prop_map(Op::Start),
            3 => any::<usize>().prop_map(Op::End),
            1 => any::<usize>().prop_map(Op::Pin),
            1 => any::<usize>().prop_map(Op::Close),
        ]
    }

    /// Admits one newcomer and checks the outcome against the connections before it: a
    /// refusal only with every counted connection busy, an admission at the cap by
    /// shedding exactly one idle connection, and a busy one never shed.
    fn admit_and_check(cap: &Arc<ConnectionCap>, open: &mut Vec<Open>) -> Result<(), TestCaseError> {
        let before: Vec<(bool, bool)> = open.iter().map(|o| (o.slot.is_shed(), o.busy())).collect();
        let counted = before.iter().filter(|(shed, _)| !shed).count();
        let admitted = cap.admit();
        let newly_shed: Vec<bool> = open
            .iter()
            .zip(&before)
            .filter(|(o, (shed, _))| !shed && o.slot.is_shed())
            .map(|(_, (_, busy))| *busy)
            .collect();
        prop_assert!(!newly_shed.contains(&true), "a busy connection was shed");
        match admitted {
            Ok(slot) => {
                let expected_sheds = usize::from(counted >= cap.max());
                prop_assert_eq!(newly_shed.len(), expected_sheds);
                open.push(Open { slot, requests: Vec::new(), pinned: false });
            }
            Err(_) => {
                prop_assert!(counted >= cap.max() && before.iter().all(|(shed, busy)| *shed || *busy));
                prop_assert!(newly_shed.is_empty());
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_sequence_keeps_the_counts_and_never_sheds_a_busy_connection(
            max in 1u32..5,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let cap = ConnectionCap::new(max);
            let mut open: Vec<Open> = Vec::new();
            for op in ops {
                let count = open.len().max(1);
                match op {
                    Op::Admit => admit_and_check(&cap, &mut open)?,
                    Op::Start(i) => if let Some(o) = open.get_mut(i % count) {
                        let request = o.slot.request_started();
                        o.requests.push(request);
                    },
                    Op::End(i) => if let Some(o) = open.get_mut(i % count) {
                        o.requests.pop();
                    },
                    Op::Pin(i) => if let Some(o) = open.get_mut(i % count) {
                        o.slot.pin_busy();
                        o.pinned = true;
                    },
                    Op::Close(i) => if i % count < open.len() {
                        open.swap_remove(i % count);
                    },
                }
                prop_assert_eq!(cap.open(), open.len());
                let shed = open.iter().filter(|o| o.slot.is_shed()).count();
                prop_assert_eq!(cap.shed.load(Ordering::Relaxed), shed);
                prop_assert!(open.len() - shed <= cap.max());
                for o in &open {
                    prop_assert_eq!(o.slot.idle_since().is_none(), o.busy());
                }
            }
        }
    }

    #[test]
    fn the_default_cap_follows_the_open_files_limit() {
        let limit = open_files_limit().expect("getrlimit works on this system");
        let expected = (limit / 4 * 3).clamp(1, DEFAULT_CAP_CEILING);
        assert_eq!(u64::from(default_max_connections()), expected);
    }
}
