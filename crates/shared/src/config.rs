//! The store's settings and their validation. It owns one invariant: no text built from
//! a [`SharedConfig`] (its `Debug`, an error) shows the password of its URL. The URL is
//! redacted by hand rather than through redis-rs's parser because the redacted form is
//! needed exactly when that parser rejects the URL, and because redis-rs keeps the
//! password in its connection info, which is not ours to print.

use std::fmt;
use std::time::Duration;

use crate::SharedError;

/// How to reach Redis and how this replica appears there.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// Where Redis is: `redis://` or `rediss://` (TLS through rustls with ring, the system's
    /// roots), with user, password and database number as redis-rs reads them.
    pub url: String,
    /// Starts every key and channel (`<prefix>:...`), so that several deployments, or
    /// tests, share one Redis without meeting.
    pub key_prefix: String,
    /// Bound on opening a connection and getting its first answer, at start and on each
    /// reconnection attempt.
    pub connect_timeout: Duration,
    /// Bound on every command; past it the command counts as failed and the store
    /// degrades, so no caller waits longer than this for Redis.
    pub command_timeout: Duration,
    /// This process among the replicas, unique per process: it names the slots this
    /// replica holds in shared counts (`<replica>:<slot id>`), so it has no `:`.
    pub replica: String,
}

impl SharedConfig {
    /// Default bound on opening a connection.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default bound on one command: far above a healthy Redis's sub-millisecond answer
    /// on a local network, far below what a client would notice.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(100);

    /// Settings for Redis at `url` under `key_prefix`, with the default timeouts and a
    /// replica name made of the process id and a random number.
    pub fn new(url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        SharedConfig {
            url: url.into(),
            key_prefix: key_prefix.into(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            replica: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        }
    }

    /// Checks every setting; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), SharedError> {
        let invalid = |field, reason: String| Err(SharedError::Config { field, reason });
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return invalid("url", format!("{} is not a redis:// or rediss:// URL", self.redacted_url()));
        }
        if redis::Client::open(self.url.as_str()).is_err() {
            return invalid("url", format!("{} is not a valid Redis URL", self.redacted_url()));
        }
        if self.key_prefix.is_empty() {
            return invalid("key_prefix", "must not be empty".into());
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be more than zero".into());
        }
        if self.command_timeout.is_zero() {
            return invalid("command_timeout", "must be more than zero".into());
        }
        if self.replica.is_empty() || self.replica.contains(':') {
            return invalid("replica", format!("{:?} must be non-empty and have no ':'", self.replica));
        }
        Ok(())
    }

    /// The URL with its password replaced by `***` (the whole user part when it has no
    /// `:`, since a lone user part is often a password put in the wrong place).
    pub fn redacted_url(&self) -> String {
        match userinfo(&self.url) {
            Some((start, end)) => {
                let info = &self.url[start..end];
                let shown = match info.split_once(':') {
                    Some((user, _)) => format!("{user}:***"),
                    None => "***".to_string(),
                };
                format!("{}{shown}{}", &self.url[..start], &self.url[end..])
            }
            None => self.url.clone(),
        }
    }

    /// `text` with every occurrence of the URL's secret part replaced by `***`, for
    /// wrapping error texts that come from Redis or the system.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let secret = userinfo(&self.url).map(|(start, end)| {
            let info = &self.url[start..end];
            info.split_once(':').map_or(info, |(_, password)| password)
        });
        match secret {
            Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
            _ => text.to_string(),
        }
    }
}

impl fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConfig")
            .field("url", &self.redacted_url())
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("replica", &self.replica)
            .finish()
    }
}

/// Byte range of the user part (`user:password`) of `url`, without its `@`.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_len = url[start..].find(['/', '?', '#']).unwrap_or(url.len() - start);
    let at = url[start..start + authority_len].rfind('@')?;
    Some((start, start + at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> SharedConfig {
        SharedConfig::new(url, "weir")
    }

    #[test]
    fn accepts_redis_and_rediss() {
        config("redis://127.0.0.1:6379").validate().unwrap();
        config("rediss://user:pw@cache.example:6380/2").validate().unwrap();
    }

    #[test]
    fn rejects_each_bad_setting_naming_it() {
        let field = |config: SharedConfig| match config.validate() {
            Err(SharedError::Config { field, .. }) => field,
            other => panic!("expected a configuration error, got {other:?}"),
        };
        assert_eq!(field(config("http://127.0.0.1")), "url");
        assert_eq!(field(config("redis://127.0.0.1:notaport")), "url");
        assert_eq!(field(SharedConfig { key_prefix: String::new(), ..config("redis://h") }), "key_prefix");
        assert_eq!(field(SharedConfig { connect_timeout: Duration::ZERO, ..config("redis://h") }), "connect_timeout");
        assert_eq!(field(SharedConfig { command_timeout: Duration::ZERO, ..config("redis://h") }), "command_timeout");
        assert_eq!(field(SharedConfig { replica: "a:b".into(), ..config("redis://h") }), "replica");
        assert_eq!(field(SharedConfig { replica: String::new(), ..config("redis://h") }), "replica");
    }

    #[test]
    fn no_error_or_debug_shows_the_password() {
        for url in ["ftp://user:hunter2@host", "redis://user:hunter2@host:notaport/0", "rediss://hunter2@host:x"] {
            let config = config(url);
            let error = config.validate().unwrap_err().to_string();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains("***"), "{error}");
            assert!(!format!("{config:?}").contains("hunter2"));
        }
    }

    #[test]
    fn redaction_keeps_the_rest_of_the_url() {
        assert_eq!(config("redis://u:p@h:1/2?x=y@z").redacted_url(), "redis://u:***@h:1/2?x=y@z");
        assert_eq!(config("redis://h:1/2").redacted_url(), "redis://h:1/2");
        assert_eq!(config("redis://p%40ss@h").redacted_url(), "redis://***@h");
        assert_eq!(config("redis://u:secret@h").scrub("bad secret here"), "bad *** here");
        assert_eq!(config("redis://h").scrub("unchanged"), "unchanged");
    }
}
