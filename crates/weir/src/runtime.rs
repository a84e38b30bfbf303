//! The tokio runtime every long-running `weir` command runs on: multi-threaded, with one
//! worker per core unless `--workers` (or `WEIR_WORKERS`) asks for another number.
//! Neither the gateway nor the demo service assumes any particular number: both are
//! tested with two workers and load-tested with more.

use tokio::runtime::{Builder, Runtime};

/// Builds the runtime with `workers` worker threads (one per core when `None`).
pub fn build(workers: Option<usize>) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}
