//! The tokio runtime every long-running `weir` command runs on: multi-threaded, with one
//! worker per core unless `--workers` (or `WEIR_WORKERS`) asks for another number.
//! Neither the gateway nor the demo service assumes any particular number: both are
//! tested with two workers and load-tested with more.
//!
//! A worker that goes idle hands the memory its allocator holds free back to the system,
//! at most once a second ([`return_free_memory`]). mimalloc keeps freed memory in the heap
//! of the thread that allocated it, and collects it only when that thread allocates or
//! collects again, so after a burst (an attack of thousands of stalled streams, say) a
//! quiet gateway would otherwise stay at its peak for as long as it stays quiet.

use std::cell::Cell;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};

/// The least time between two collections on one worker thread.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Builds the runtime with `workers` worker threads (one per core when `None`).
pub fn build(workers: Option<usize>) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.on_thread_park(return_free_memory).enable_all().build()
}

/// Runs as a worker parks: collects this thread's mimalloc heap (frees other threads
/// made of its blocks, empty pages, and memory whose purge delay has passed), unless it
/// did so less than [`COLLECT_EVERY`] ago. A worker under load parks rarely, and then
/// pays one clock read.
fn return_free_memory() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    LAST.with(|last| {
        let now = Instant::now();
        if last.get().is_some_and(|at| now.duration_since(at) < COLLECT_EVERY) {
            return;
        }
        last.set(Some(now));
        // SAFETY: mi_collect works on the calling thread's own heap and takes no pointers;
        // where mimalloc is not the global allocator it finds that heap empty.
        unsafe { libmimalloc_sys::mi_collect(false) };
    });
}
