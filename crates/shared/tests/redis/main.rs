//! weir-shared against a real Redis (`WEIR_TEST_REDIS_URL`, by default the local one at
//! 127.0.0.1:6379). Every test works under a key prefix of its own, random, so tests
//! running at once, or other suites on the same Redis, never meet; nothing here flushes
//! or stops Redis. Failures of Redis are made by a proxy in front of it (`proxy.rs`).

mod common;
mod count;
mod degraded;
mod messages;
mod proxy;
mod rate;
mod scripts;
