//! Dialling gateways over the network: [`Dialer`] for the transport crate's TCP and TLS
//! dialers and for [`RabbitMqDialer`] (through a broker), and [`Service::run_all`] for a
//! deployment with several gateway replicas.
//!
//! ```no_run
//! use weir_service::{RabbitMqDialer, Service, TcpDialer, TlsDialer};
//! use weir_transport::tls;
//!
//! # async fn connect(service: Service) -> Result<(), Box<dyn std::error::Error>> {
//! // Plain TCP, one gateway:
//! let running = service.run(TcpDialer::new("10.0.0.5:7070"));
//!
//! // TLS, trusting only the deployment's CA, with a client certificate (mutual TLS):
//! let ca = tls::read_certificates("ca.pem".as_ref(), "CA")?;
//! let me = tls::Identity::from_files("billing.pem".as_ref(), "billing.key".as_ref())?;
//! let config = tls::client_config(ca, Some(me))?;
//! let dialers = ["gw-a.internal:7070", "gw-b.internal:7070"]
//!     .map(|addr| TlsDialer::new(addr, None, config.clone()))
//!     .into_iter()
//!     .collect::<Result<Vec<_>, _>>()?;
//! // One registered connection to each replica, each reconnecting on its own.
//! let replicas = service.run_all(dialers);
//!
//! // Through a RabbitMQ broker, to the gateway with `[services.rabbitmq]` on it; at the
//! // same time as the TCP and TLS connections above, each with its own backoff:
//! let brokered = service.run(RabbitMqDialer::new("amqp://svc:secret@broker.internal:5672/%2f")?);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;

use tokio::net::TcpStream;
use weir_rabbitmq::{BrokerStream, RabbitMqDialer};
use weir_transport::tcp::TcpDialer;
use weir_transport::tls::{ClientTlsStream, TlsDialer};

use crate::reconnect::{Dialer, RunHandle};
use crate::service::Service;

impl Dialer for TcpDialer {
    type Io = TcpStream;

    fn dial(&self) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpDialer::dial(self)
    }
}

impl Dialer for TlsDialer {
    type Io = ClientTlsStream<TcpStream>;

    fn dial(&self) -> impl Future<Output = io::Result<ClientTlsStream<TcpStream>>> + Send {
        TlsDialer::dial(self)
    }
}

impl Dialer for RabbitMqDialer {
    type Io = BrokerStream;

    fn dial(&self) -> impl Future<Output = io::Result<BrokerStream>> + Send {
        RabbitMqDialer::dial(self)
    }
}

impl Service {
    /// Keeps the service registered with every gateway `dialers` reach: one
    /// [`Service::run`] loop per dialer, in the same order. Each handle is independent —
    /// it reconnects with its own backoff, reports its own registration, and its
    /// [`RunHandle::set_status`] and [`RunHandle::shutdown`] concern that gateway only (to
    /// drain everywhere, set the status on every handle). The instance id is the same on
    /// every gateway: each replica keeps its own routing table.
    pub fn run_all<D: Dialer>(&self, dialers: impl IntoIterator<Item = D>) -> Vec<RunHandle> {
        dialers.into_iter().map(|dialer| self.run(dialer)).collect()
    }
}
