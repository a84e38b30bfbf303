//! What every test uses: the Redis to test against, a fresh key prefix, replicas.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use weir_shared::{SharedConfig, SharedStore};

/// Upper bound for anything a test awaits; never a delay.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// The Redis under test.
pub fn redis_url() -> String {
    std::env::var("WEIR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// The Redis under test's address, for a proxy in front of it.
pub fn redis_addr() -> SocketAddr {
    let url = redis_url();
    let authority = url.trim_start_matches("redis://").split('/').next().expect("an authority");
    authority.parse().expect("a redis://IP:port URL")
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("weir-test:{:016x}", rand::random::<u64>())
}

/// Settings for replica `replica` under `prefix`, with a command timeout generous enough
/// for a loaded two-core machine.
pub fn config(url: &str, prefix: &str, replica: usize) -> SharedConfig {
    SharedConfig {
        command_timeout: Duration::from_secs(2),
        replica: format!("replica{replica}"),
        ..SharedConfig::new(url, prefix)
    }
}

/// `count` replicas sharing one prefix, each with its own connection.
pub async fn replicas(count: usize) -> Vec<SharedStore> {
    let prefix = fresh_prefix();
    let mut stores = Vec::new();
    for replica in 0..count {
        stores.push(SharedStore::connect(config(&redis_url(), &prefix, replica)).await.expect("Redis is up"));
    }
    stores
}
