//! The one error type of the crate. Its texts are shown to operators (the gateway's
//! start-up refusal, its logs), so none of them ever carries the password of the Redis
//! URL: URLs appear only redacted, and Redis's own error texts are scrubbed of the
//! password before they are wrapped (see `SharedConfig::scrub`).

use std::time::Duration;

use thiserror::Error;

/// Why a shared operation, or setting the store up, failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SharedError {
    /// A setting is invalid; `field` names it as in [`crate::SharedConfig`] (`url`,
    /// `key_prefix`, ...) or as the argument of a limit's constructor (`count`, `per`,
    /// `ttl`), so the gateway can name its own configuration key.
    #[error("{field}: {reason}")]
    Config {
        /// The setting at fault.
        field: &'static str,
        /// What is wrong with it, the URL redacted.
        reason: String,
    },
    /// Redis did not answer the first connection within `connect_timeout`.
    #[error("Redis at {url} did not answer within {timeout:?}")]
    Unreachable {
        /// The URL, redacted.
        url: String,
        /// The `connect_timeout` that ran out.
        timeout: Duration,
    },
    /// Connecting to Redis failed (refused, TLS, authentication).
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// Redis's or the system's reason, scrubbed of the password.
        reason: String,
    },
    /// The store is degraded: the command was not attempted.
    #[error("shared state unavailable: Redis is unreachable, command not attempted")]
    Unavailable,
    /// Redis did not answer within `command_timeout`.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed under the command.
    #[error("Redis command failed: {0}")]
    Command(String),
}
