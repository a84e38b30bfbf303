//! The broker's address and the connection to it.
//!
//! A [`BrokerAddress`] is an `amqp://` or `amqps://` URL checked when it is parsed; it
//! prints (`Display` and `Debug`) without its user name and password, so logs and
//! errors never carry credentials. [`connect`] opens one AMQP connection, bounded by the
//! connect timeout, with its channel for liveness pings in confirm mode.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Connection, ConnectionProperties};
use thiserror::Error;

/// Why the broker transport could not start or go on.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The URL does not parse; the message never repeats the URL (it may hold a password).
    #[error("not an amqp:// or amqps:// URL: {0}")]
    Url(String),
    /// The broker (`address`, printed without credentials) could not be reached, refused the credentials, or timed out.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The broker refused an operation (declaring a queue, consuming, publishing).
    #[error("broker {address}: {reason}")]
    Broker { address: String, reason: String },
}

/// An AMQP URL whose credentials never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    uri: AMQPUri,
}

impl FromStr for BrokerAddress {
    type Err = BrokerError;

    fn from_str(url: &str) -> Result<Self, BrokerError> {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(BrokerError::Url("the scheme must be amqp:// or amqps://".to_owned()));
        }
        let uri = AMQPUri::from_str(url).map_err(BrokerError::Url)?;
        Ok(BrokerAddress { uri })
    }
}

impl BrokerAddress {
    /// With the AMQP heartbeat set to `seconds` (0 leaves it to the broker).
    pub fn with_heartbeat(mut self, seconds: u16) -> Self {
        if seconds > 0 {
            self.uri.query.heartbeat = Some(seconds);
        }
        self
    }

    fn redacted(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.uri.scheme {
            AMQPScheme::AMQP => "amqp",
            AMQPScheme::AMQPS => "amqps",
        };
        let authority = &self.uri.authority;
        write!(f, "{scheme}://{}:{}/{}", authority.host, authority.port, self.uri.vhost.replace('/', "%2f"))
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.redacted(f)
    }
}

impl fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.redacted(f)
    }
}

/// One AMQP connection and its confirm-mode channel for liveness pings.
#[derive(Clone)]
pub(crate) struct BrokerConnection {
    /// Shared by the listener and its sessions; it closes when the last holder drops it.
    pub connection: Arc<Connection>,
    pub pings: Channel,
    pub address: BrokerAddress,
}

impl BrokerConnection {
    /// A [`BrokerError::Broker`] for `what` failing with `err`.
    pub(crate) fn error(&self, what: &str, err: lapin::Error) -> BrokerError {
        BrokerError::Broker { address: self.address.to_string(), reason: format!("{what}: {err}") }
    }
}

/// Opens a connection to `address`, named `name` in the broker's management views,
/// within `timeout`.
pub(crate) async fn connect(
    address: &BrokerAddress,
    name: &str,
    timeout: Duration,
) -> Result<BrokerConnection, BrokerError> {
    let failed = |reason: String| BrokerError::Connect { address: address.to_string(), reason };
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let opening = async {
        let connection = Connection::connect_uri(address.uri.clone(), properties).await?;
        let pings = connection.create_channel().await?;
        pings.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok::<_, lapin::Error>(BrokerConnection { connection: Arc::new(connection), pings, address: address.clone() })
    };
    match tokio::time::timeout(timeout, opening).await {
        Err(_) => Err(failed(format!("timed out after {timeout:?}"))),
        Ok(Err(err)) => Err(failed(err.to_string())),
        Ok(Ok(connection)) => Ok(connection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let address: BrokerAddress = "amqp://admin:s3cret@broker.internal:5673/%2fprod".parse().unwrap();
        assert_eq!(address.to_string(), "amqp://broker.internal:5673/%2fprod");
        assert!(!format!("{address:?}").contains("s3cret"));
        let tls: BrokerAddress = "amqps://u:p@h".parse().unwrap();
        assert_eq!(tls.to_string(), "amqps://h:5671/%2f");
    }

    #[test]
    fn other_schemes_and_garbage_are_refused_without_echoing_them() {
        for url in ["http://u:s3cret@h", "amqp://u:s3cret@h:notaport", "s3cret"] {
            let err = url.parse::<BrokerAddress>().unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
