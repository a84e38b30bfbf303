//! Heartbeat probes: how the gateway times the round trip to each service on a protocol
//! version 2 connection. The gateway's heartbeat carries a probe, the microseconds since
//! this clock's epoch when it was sent; the service echoes it at once in a heartbeat of
//! its own, and the round trip is the time now less the time in the probe.
//!
//! Invariants: the probe carries its own send time, so the gateway keeps no state per
//! probe (an answer needs nothing looked up, a service that never answers costs nothing).
//! A service can distort only its own figure by echoing a made-up value: a probe from the
//! future is ignored, and so is a round trip longer than [`MAX_ROUND_TRIP`], which is a
//! stale or invented answer rather than a measurement.

use std::time::{Duration, Instant};

/// The longest round trip recorded: the largest bucket of the histogram.
pub(crate) const MAX_ROUND_TRIP: Duration = Duration::from_secs(60);

/// The clock probes are stamped with.
#[derive(Debug)]
pub(crate) struct ProbeClock {
    /// When the gateway started; a probe is the microseconds since then.
    epoch: Instant,
}

impl Default for ProbeClock {
    fn default() -> Self {
        ProbeClock { epoch: Instant::now() }
    }
}

impl ProbeClock {
    /// The probe for a heartbeat sent at `now`.
    pub(crate) fn stamp(&self, now: Instant) -> u64 {
        // 2^64 microseconds is over 500,000 years: the cast never truncates.
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The round trip of a heartbeat that answered `probe` at `now`, if it is one.
    pub(crate) fn round_trip(&self, probe: u64, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.epoch);
        elapsed.checked_sub(Duration::from_micros(probe)).filter(|rtt| *rtt <= MAX_ROUND_TRIP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answered_probe_gives_the_time_since_it_was_stamped() {
        let clock = ProbeClock::default();
        let sent = clock.epoch + Duration::from_millis(1500);
        let probe = clock.stamp(sent);
        assert_eq!(probe, 1_500_000);
        let rtt = clock.round_trip(probe, sent + Duration::from_micros(250));
        assert_eq!(rtt, Some(Duration::from_micros(250)));
    }

    #[test]
    fn probes_from_the_future_or_too_old_are_ignored() {
        let clock = ProbeClock::default();
        let now = clock.epoch + Duration::from_secs(100);
        assert_eq!(clock.round_trip(clock.stamp(now) + 1, now), None);
        assert_eq!(clock.round_trip(u64::MAX, now), None);
        assert_eq!(clock.round_trip(0, now), None, "100 s is past the longest round trip");
        assert_eq!(clock.round_trip(clock.stamp(now - MAX_ROUND_TRIP), now), Some(MAX_ROUND_TRIP));
    }
}
