//! Bandwidth shaping: bytes per second per client connection and mount, both ways.
//!
//! Each chunk is scheduled after the ones before it (virtual scheduling: the next byte
//! may go at `next_free`, and a chunk of n bytes moves `next_free` on by n / rate). A
//! transfer therefore runs at the configured rate smoothly, without a
//! fixed one-second window that lets a burst of a whole second's bytes through at once.
//! A burst of at most `BURST` of idle credit is kept so short pauses are not punished.

use std::sync::Mutex;
use std::time::Duration;

use super::lock;
use tokio::time::Instant;

/// Idle time that may be spent as a burst.
const BURST: Duration = Duration::from_millis(50);

/// A rate shared by every transfer of one connection on one mount.
#[derive(Debug)]
pub(crate) struct Shaper {
    bytes_per_second: u64,
    next_free: Mutex<Instant>,
}

impl Shaper {
    /// A shaper for `bytes_per_second` (at least 1).
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        Shaper { bytes_per_second: bytes_per_second.max(1), next_free: Mutex::new(Instant::now()) }
    }

    /// Books `bytes` and returns when they may be sent.
    pub(crate) fn schedule(&self, bytes: usize) -> Instant {
        let now = Instant::now();
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        // A poisoned lock holds a valid instant.
        let mut next_free = lock(&self.next_free);
        let start = (*next_free).max(now.checked_sub(BURST).unwrap_or(now));
        *next_free = start + cost;
        start.max(now)
    }

    /// Waits until `bytes` may be sent.
    pub(crate) async fn throttle(&self, bytes: usize) {
        let at = self.schedule(bytes);
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_transfer_takes_its_size_over_the_rate() {
        let shaper = Shaper::new(100_000);
        let start = Instant::now();
        for _ in 0..100 {
            shaper.throttle(10_000).await;
        }
        // 1 MB at 100 kB/s: 10 s, less the burst and the last chunk's own time.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(9_800) && took <= Duration::from_millis(10_000), "{took:?}");
    }
}
