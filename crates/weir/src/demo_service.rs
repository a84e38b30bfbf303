//! `weir demo-service`: the demo service ([`crate::demo`]) in its own process, dialling a
//! gateway's service listener over TCP, or TLS with `--tls-ca`, and/or a gateway through
//! a RabbitMQ broker (`--rabbitmq URL`), and reconnecting with backoff whenever a
//! connection drops. With both, it is registered with both gateways at once.
//!
//! Each time it is registered, one line goes to stdout:
//! `weir demo-service registered with tcp://ADDR` (or `tls://`, or
//! `amqp://BROKER queue NAME`, never with the broker's credentials), so scripts and tests
//! can wait for it. SIGINT or SIGTERM drains: the service announces Draining, waits (at
//! most [`DRAIN_GRACE`]) for its requests in flight, closes the connection and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weir_rabbitmq::RabbitMqDialer;
use weir_service::{HealthStatus, RunHandle, ServiceError, TcpDialer, TlsDialer};
use weir_transport::tls::{self, ClientConfig, TlsError};

/// Longest a drain waits for requests in flight before closing anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// What `weir demo-service` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct DemoServiceOptions {
    /// The gateway's service listener, `host:port`.
    pub connect: Option<String>,
    /// A RabbitMQ broker's URL, to reach a gateway through it.
    pub rabbitmq: Option<String>,
    /// The `[services.rabbitmq] gateway` name to dial through the broker.
    pub rabbitmq_gateway: String,
    /// The `[services.rabbitmq] prefix` of that gateway.
    pub rabbitmq_prefix: String,
    /// The token to present (see `[[services.credentials]]`).
    pub token: Option<String>,
    /// CA certificate(s) to trust; setting it selects TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// Private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Name the gateway's certificate must carry; default: the host of `connect`.
    pub tls_server_name: Option<String>,
    /// Runtime worker threads; one per core when `None`.
    pub workers: Option<usize>,
}

/// Why the demo service could not start.
#[derive(Debug, Error)]
pub enum DemoServiceError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("--tls-cert and --tls-key go together, with --tls-ca")]
    IncompleteTls,
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("--rabbitmq: {0}")]
    Broker(#[from] weir_rabbitmq::BrokerError),
    #[error("give --connect, --rabbitmq or both")]
    NoGateway,
}

/// `weir demo-service`: runs until SIGINT/SIGTERM, then drains; exit 0.
pub fn run(options: DemoServiceOptions) -> ExitCode {
    match try_run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir demo-service: {err}");
            ExitCode::FAILURE
        }
    }
}

fn try_run(options: DemoServiceOptions) -> Result<(), DemoServiceError> {
    let mut builder = crate::demo::builder();
    if let Some(token) = &options.token {
        builder = builder.token(token.clone());
    }
    let service = builder.build()?;
    let tls = tls_config(&options)?;
    let broker = match &options.rabbitmq {
        None => None,
        Some(url) => Some(
            RabbitMqDialer::new(url)?
                .gateway(options.rabbitmq_gateway.as_str())
                .prefix(options.rabbitmq_prefix.as_str()),
        ),
    };
    if options.connect.is_none() && broker.is_none() {
        return Err(DemoServiceError::NoGateway);
    }
    let runtime = crate::runtime::build(options.workers).map_err(DemoServiceError::Runtime)?;
    runtime.block_on(async move {
        let mut running = Vec::new();
        if let Some(addr) = &options.connect {
            running.push(match tls {
                None => (service.run(TcpDialer::new(addr.as_str())), format!("tcp://{addr}")),
                Some(config) => {
                    let dialer = TlsDialer::new(addr.as_str(), options.tls_server_name.as_deref(), config)?;
                    (service.run(dialer), format!("tls://{addr}"))
                }
            });
        }
        if let Some(dialer) = broker {
            let label = format!("{} queue {}", dialer.address(), dialer.settings().connect_queue());
            running.push((service.run(dialer), label));
        }
        serve(running).await;
        Ok(())
    })
}

/// The TLS client configuration the options ask for, if any.
fn tls_config(options: &DemoServiceOptions) -> Result<Option<Arc<ClientConfig>>, DemoServiceError> {
    let identity = match (&options.tls_cert, &options.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(tls::Identity::from_files(cert, key)?),
        _ => return Err(DemoServiceError::IncompleteTls),
    };
    let Some(ca) = &options.tls_ca else {
        return if identity.is_some() { Err(DemoServiceError::IncompleteTls) } else { Ok(None) };
    };
    let roots = tls::read_certificates(ca, "CA")?;
    Ok(Some(tls::client_config(roots, identity)?))
}

/// Keeps each (run, where) going until a signal, printing each registration; then
/// drains them all.
async fn serve(running: Vec<(RunHandle, String)>) {
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::serve::wait_for_signal(shutdown.clone()));
    let reporters: Vec<_> = running
        .iter()
        .map(|(run, place)| tokio::spawn(report_registrations(run.registration(), place.clone(), shutdown.clone())))
        .collect();
    for reporter in reporters {
        let _ = reporter.await;
    }
    for (run, _) in &running {
        drain(run).await;
    }
    for (run, _) in running {
        run.shutdown();
        run.join().await;
    }
    tracing::info!("demo service stopped");
}

/// Prints a line each time `registration` turns true, until `shutdown`.
async fn report_registrations(mut registration: watch::Receiver<bool>, place: String, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = registration.changed() => {
                if changed.is_err() {
                    break;
                }
                if *registration.borrow_and_update() {
                    println!("weir demo-service registered with {place}");
                }
            }
        }
    }
}

/// Announces Draining and waits for the requests in flight, at most [`DRAIN_GRACE`].
async fn drain(running: &RunHandle) {
    running.set_status(HealthStatus::Draining);
    let idle = async {
        while running.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, idle).await.is_err() {
        tracing::warn!(in_flight = running.in_flight(), "drain grace over; closing with requests in flight");
    }
}
