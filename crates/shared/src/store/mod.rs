//! The connection to Redis and the one road every command takes, [`SharedStore::run`]:
//! it bounds the command by `command_timeout`, counts it, and on an error or a timeout
//! degrades the store (`health.rs`). The invariant: the store holds a connection exactly
//! while its health is [`Health::Shared`]; while degraded there is none, so a command
//! fails at once with [`SharedError::Unavailable`] and no caller ever waits for a dead
//! Redis; only the background probe reconnects.
//!
//! The connection is managed here by hand, one `MultiplexedConnection` swapped as a
//! whole, rather than by redis-rs's `ConnectionManager`: that one reconnects only after
//! errors it classes as a dropped connection, not after a timeout, so a connection to a
//! Redis that stopped answering (a partition, a blackholing firewall) would be kept
//! forever; and its retries and backoff would be a second health state beside ours.
//! Here any failure drops the connection and the probe builds a fresh one, which also
//! follows a failover behind a DNS name (the old primary's `READONLY` errors degrade).

mod expiring;
mod health;
mod messages;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};
use tokio::sync::watch;

pub use health::Health;
pub use messages::Subscription;

use crate::{lock, SharedConfig, SharedError};

/// The process's handle on the shared state: cheap to clone, all clones one connection
/// and one health state.
#[derive(Clone)]
pub struct SharedStore {
    /// Shared by the clones, by the probe task (weakly) and by subscriptions.
    inner: Arc<StoreInner>,
}

/// Counters for the gateway's metrics, read with [`SharedStore::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Commands sent to Redis.
    pub commands_sent: u64,
    /// Commands sent that failed or timed out.
    pub command_failures: u64,
    /// Commands not attempted because the store was degraded (a rate check that
    /// finds the store degraded asks for no command at all, and is not counted here).
    pub commands_skipped: u64,
    /// Transitions from shared to degraded.
    pub degraded_transitions: u64,
}

pub(crate) struct StoreInner {
    /// The settings, for timeouts, key names and redaction.
    config: SharedConfig,
    /// Opens connections (the probe's and subscriptions'); parsed once from the URL.
    client: redis::Client,
    /// The connection while shared, `None` while degraded (the module's invariant).
    connection: Mutex<Option<Live>>,
    /// The health state, written under the `connection` lock so the two agree.
    health: watch::Sender<Health>,
    /// Numbers the connections, so a failure seen on an old one cannot degrade a new one.
    next_epoch: AtomicU64,
    /// Numbers this replica's count slots (unique per process, across all counts).
    next_slot: AtomicU64,
    /// See [`StoreStats`].
    sent: AtomicU64,
    /// See [`StoreStats`].
    failures: AtomicU64,
    /// See [`StoreStats`].
    skipped: AtomicU64,
    /// See [`StoreStats`].
    transitions: AtomicU64,
}

/// The connection in use, with its number.
struct Live {
    /// Which connection this is (see `StoreInner::next_epoch`).
    epoch: u64,
    /// Clones of it share one socket; redis-rs pipelines their commands.
    connection: MultiplexedConnection,
}

impl SharedStore {
    /// Validates `config` and connects; fails if Redis does not answer a PING within
    /// `connect_timeout` (the gateway then refuses to start).
    pub async fn connect(config: SharedConfig) -> Result<SharedStore, SharedError> {
        config.validate()?;
        if config.url.starts_with("rediss://") {
            // redis-rs builds its TLS configuration from rustls' process-wide provider;
            // name ring (the workspace's provider) unless the process already chose one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(config.url.as_str())
            .map_err(|error| SharedError::Config { field: "url", reason: config.scrub(&error.to_string()) })?;
        let inner = StoreInner {
            connection: Mutex::new(None),
            health: watch::Sender::new(Health::Shared),
            next_epoch: AtomicU64::new(0),
            next_slot: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            client,
            config,
        };
        let connection = inner.open().await?;
        let epoch = inner.next_epoch.fetch_add(1, Ordering::Relaxed);
        *lock(&inner.connection) = Some(Live { epoch, connection });
        Ok(SharedStore { inner: Arc::new(inner) })
    }

    /// The settings the store was connected with.
    pub fn config(&self) -> &SharedConfig {
        &self.inner.config
    }

    /// The counters for metrics.
    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        StoreStats {
            commands_sent: inner.sent.load(Ordering::Relaxed),
            command_failures: inner.failures.load(Ordering::Relaxed),
            commands_skipped: inner.skipped.load(Ordering::Relaxed),
            degraded_transitions: inner.transitions.load(Ordering::Relaxed),
        }
    }

    /// `<prefix>:<parts joined by :>`.
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.config.key_prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// A number no other slot of this process has.
    pub(crate) fn next_slot_id(&self) -> u64 {
        self.inner.next_slot.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `command` on the connection, bounded by `command_timeout`; fails at once
    /// while degraded; degrades the store on an error or a timeout.
    pub(crate) async fn run<T, F, Fut>(&self, command: F) -> Result<T, SharedError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let inner = &self.inner;
        let Some((epoch, connection)) = inner.current() else {
            inner.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(SharedError::Unavailable);
        };
        inner.sent.fetch_add(1, Ordering::Relaxed);
        let timeout = inner.config.command_timeout;
        let error = match tokio::time::timeout(timeout, command(connection)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => SharedError::Command(inner.config.scrub(&error.to_string())),
            Err(_) => SharedError::Timeout(timeout),
        };
        inner.failures.fetch_add(1, Ordering::Relaxed);
        inner.degrade(epoch, &error);
        Err(error)
    }
}

impl StoreInner {
    /// The connection and its number, unless degraded.
    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        lock(&self.connection).as_ref().map(|live| (live.epoch, live.connection.clone()))
    }

    /// A new connection that answered a PING, all within `connect_timeout`.
    async fn open(&self) -> Result<MultiplexedConnection, SharedError> {
        let url = || self.config.redacted_url();
        let timeout = self.config.connect_timeout;
        // Bounded here as a whole, and each command by `run`: no timeouts of redis-rs.
        let settings = AsyncConnectionConfig::new().set_connection_timeout(None).set_response_timeout(None);
        let attempt = async {
            let mut connection = self.client.get_multiplexed_async_connection_with_config(&settings).await?;
            redis::cmd("PING").query_async::<()>(&mut connection).await?;
            Ok::<_, redis::RedisError>(connection)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(SharedError::Connect { url: url(), reason: self.config.scrub(&error.to_string()) }),
            Err(_) => Err(SharedError::Unreachable { url: url(), timeout }),
        }
    }
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStore")
            .field("url", &self.inner.config.redacted_url())
            .field("replica", &self.inner.config.replica)
            .field("health", &self.health())
            .finish()
    }
}
