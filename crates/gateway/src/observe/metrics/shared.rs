//! The shared limits' link to Redis (`[shared]`), read at each scrape:
//! `weir_shared_degraded` (1 while Redis cannot be reached and the replica decides alone
//! or denies, else 0, also without `[shared]`),
//! `weir_shared_degraded_transitions_total`, `weir_shared_commands_total` and
//! `weir_shared_command_failures_total` (failed or timed out).
//!
//! The counters mirror the store's own: each scrape adds what the store counted since
//! the last one, so they only ever grow, as Prometheus counters must.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use weir_shared::StoreStats;

/// The store's state as a scrape reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedState {
    /// Whether the replicas share their limits right now.
    pub shared: bool,
    pub stats: StoreStats,
}

/// The families; they stay at zero without `[shared]`.
#[derive(Debug, Default)]
pub(crate) struct SharedMetrics {
    degraded: Gauge,
    transitions: Counter,
    commands: Counter,
    failures: Counter,
}

impl SharedMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let degraded = "1 while Redis cannot be reached and shared limits fall back ([shared] on_failure)";
        registry.register("weir_shared_degraded", degraded, self.degraded.clone());
        let transitions = "Times the shared limits lost Redis and fell back";
        registry.register("weir_shared_degraded_transitions", transitions, self.transitions.clone());
        registry.register("weir_shared_commands", "Commands sent to Redis", self.commands.clone());
        let failures = "Commands to Redis that failed or timed out";
        registry.register("weir_shared_command_failures", failures, self.failures.clone());
    }

    /// Brings every family up to `state`.
    pub(crate) fn scrape(&self, state: &SharedState) {
        self.degraded.set(i64::from(!state.shared));
        catch_up(&self.transitions, state.stats.degraded_transitions);
        catch_up(&self.commands, state.stats.commands_sent);
        catch_up(&self.failures, state.stats.command_failures);
    }
}

/// Adds to `counter` what `total` has grown by since it was last read.
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}
