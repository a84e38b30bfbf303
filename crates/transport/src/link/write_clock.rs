//! How long the link's writer has been stuck: the measure by which the owner tells a peer
//! that stopped reading from one that is merely quiet.
//!
//! The writer marks the clock when it starts writing queued bytes, again after every write
//! that made progress, and clears it once everything queued is written. So
//! [`WriteClock::stalled_for`] is zero for an idle link and for one whose peer reads, and
//! grows only while bytes wait and the peer takes none of them. Times are milliseconds
//! after the clock's creation in one atomic, so reading the clock never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Stored when nothing waits to be written.
const IDLE: u64 = u64::MAX;

/// When the writer last made progress with bytes still queued.
#[derive(Debug)]
pub(super) struct WriteClock {
    /// The origin of `waiting_since_ms`.
    started: Instant,
    /// Milliseconds after `started` of the last progress while bytes waited; [`IDLE`]
    /// when none wait.
    waiting_since_ms: AtomicU64,
}

impl Default for WriteClock {
    fn default() -> Self {
        WriteClock { started: Instant::now(), waiting_since_ms: AtomicU64::new(IDLE) }
    }
}

impl WriteClock {
    fn now_ms(&self) -> u64 {
        // Saturates after 584 million years; below IDLE for any real uptime.
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(IDLE - 1)
    }

    /// Bytes wait to be written and the writer starts on them (keeps an earlier mark).
    pub(super) fn waiting(&self) {
        let now = self.now_ms();
        let _ = self.waiting_since_ms.compare_exchange(IDLE, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A write took some bytes: the stall, if any, is over.
    pub(super) fn progressed(&self) {
        self.waiting_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Everything queued is written.
    pub(super) fn idle(&self) {
        self.waiting_since_ms.store(IDLE, Ordering::Relaxed);
    }

    /// How long bytes have waited at `now` without any of them being written.
    pub(super) fn stalled_for(&self, now: Instant) -> Duration {
        match self.waiting_since_ms.load(Ordering::Relaxed) {
            IDLE => Duration::ZERO,
            since => now.saturating_duration_since(self.started + Duration::from_millis(since)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_waiting_without_progress_counts_as_a_stall() {
        let clock = WriteClock::default();
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(clock.stalled_for(later), Duration::ZERO, "an idle writer is not stalled");
        clock.waiting();
        assert!(clock.stalled_for(later) >= Duration::from_secs(4));
        clock.waiting();
        assert!(clock.stalled_for(later) >= Duration::from_secs(4), "a second mark keeps the first");
        clock.progressed();
        assert!(clock.stalled_for(Instant::now()) < Duration::from_secs(1));
        clock.idle();
        assert_eq!(clock.stalled_for(later), Duration::ZERO);
    }
}
