//! `weir serve` and `weir check-config`: load the configuration, start the gateway, the
//! HTTP front, the admin surface and (unless disabled) the embedded demo service, and
//! shut down gracefully on SIGINT or SIGTERM.
//!
//! The configuration file is also the gateway's [`ConfigSource`]: on SIGHUP (or the admin
//! `POST /reload`) it is read and validated again exactly as `weir check-config` does
//! ([`read_config`], TLS files included), with the same command-line overrides as at
//! start, and applied by [`Gateway::reload_from_source`]. Without `--config`, SIGHUP is
//! logged and ignored.
//!
//! When the front is listening, one line goes to stdout: `weir listening on http://ADDR`
//! (`https://` with `[server.tls]`; the real port when `:0` was asked for), so scripts
//! and tests can find it; `weir redirecting on http://ADDR` for the redirect listener
//! (`server.http_redirect_listen`) if there is one; then
//! `weir services on tcp://ADDR` (or `tls://ADDR`) for the service listener
//! (`[services]`), which services in other processes dial, and
//! `weir services on amqp://BROKER queue NAME` with `[services.rabbitmq]`.
//!
//! With `server.handover_socket`, the listeners are first asked of a `weir serve`
//! already running there (`crate::handover`), the configuration having loaded; clients
//! are then accepted once that process's services have moved here, and it drains.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_gateway::config::{ServicesConfig, ServicesTlsConfig};
use weir_gateway::{ConfigSource, Gateway, GatewayConfig, Listeners, ReloadError};
use weir_rabbitmq::BrokerListener;
use weir_shared::SharedStore;
use weir_transport::tls::{self, TlsAcceptor, TlsError};

use crate::config::load_config;
use crate::handover::{self, Handover, Role};

/// What `weir serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// Overrides `services.listen`.
    pub services_listen: Option<SocketAddr>,
    /// Overrides `server.admin_listen`.
    pub admin_listen: Option<SocketAddr>,
    pub demo: bool,
    /// Runtime worker threads; one per core when `None`.
    pub workers: Option<usize>,
}

/// `weir check-config FILE`: prints every error; exit 1 if there is any.
pub fn check_config(file: &Path) -> ExitCode {
    match read_config(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and validates `file` as `weir check-config` does (TLS files included); the
/// error lists every problem with its key and line.
pub fn read_config(file: &Path) -> Result<GatewayConfig, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    load_config(&text).map_err(|errors| format!("{}: invalid configuration\n{errors}", file.display()))
}

/// The configuration `options` ask for: the file (or the defaults) with the
/// command-line overrides applied.
fn configure(options: &ServeOptions) -> Result<GatewayConfig, String> {
    let mut config = match &options.config {
        None => GatewayConfig::default(),
        Some(file) => read_config(file)?,
    };
    if let Some(listen) = options.listen {
        config.server.listen = listen;
    }
    if let Some(listen) = options.services_listen {
        config.services.listen = listen;
    }
    if let Some(listen) = options.admin_listen {
        config.server.admin_listen = Some(listen);
    }
    Ok(config)
}

/// `weir serve`: runs until SIGINT/SIGTERM and a drain; exit 0 after a clean drain.
pub fn run(options: ServeOptions) -> ExitCode {
    let config = match configure(&options) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let source = options.config.is_some().then(|| {
        let options = options.clone();
        Box::new(move || configure(&options)) as ConfigSource
    });
    let runtime = match crate::runtime::build(options.workers) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, source, options.demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: GatewayConfig, source: Option<ConfigSource>, demo: bool) -> std::io::Result<()> {
    // Before the gateway derives its default connection cap from it.
    match weir_gateway::raise_open_files_limit() {
        Ok(limit) => tracing::info!(limit, "open files limit raised to the hard limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open files limit"),
    }
    let mut taken = match &config.server.handover_socket {
        Some(path) => handover::take(path).await.map_err(std::io::Error::other)?,
        None => None,
    };
    let listeners = acquire_listeners(&config, &mut taken).await?;
    let server = config.server.clone();
    let shared = connect_shared(&config).await?;
    let gateway = Gateway::with_shared(config, shared).map_err(std::io::Error::other)?;
    if let Some(source) = source {
        gateway.set_config_source(source);
    }
    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(Arc::clone(&gateway)));
    tracing::info!(max_connections = gateway.connections().max(), "client connection cap");
    let demo_handle = demo.then(|| crate::demo::attach(&gateway));
    if let Some(handle) = &demo_handle {
        // So that the first request after "listening" finds the demo's routes.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), handle.registered()).await;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    print_addresses(&listeners, gateway.client_tls().is_some())?;
    let handover = match server.handover_socket {
        Some(path) => Some(Handover::new(path, taken, &listeners, server.handover_wait)?),
        None => None,
    };
    let public_gate = {
        let (gateway, shutdown) = (Arc::clone(&gateway), shutdown.clone());
        async move {
            if let Some(handover) = handover {
                handover.start(gateway, shutdown).await;
            }
        }
    };
    let served = gateway.run_public_after(listeners, shutdown, public_gate).await;
    if let Some(handle) = demo_handle {
        handle.shutdown();
    }
    served?;
    tracing::info!("weir stopped");
    Ok(())
}

/// `[shared]`: the connection to Redis, made before anything is served; an unreachable
/// Redis stops the start, naming the key (a replica that silently enforced its limits
/// alone would let each client through N times).
async fn connect_shared(config: &GatewayConfig) -> std::io::Result<Option<SharedStore>> {
    let Some(shared) = &config.shared else { return Ok(None) };
    let store = SharedStore::connect(shared.store.clone())
        .await
        .map_err(|e| std::io::Error::other(format!("shared.redis: {e}")))?;
    tracing::info!(redis = %shared.store.redacted_url(), replica = %shared.store.replica, "limits shared through Redis");
    Ok(Some(store))
}

/// Every listener `config` asks for: taken over from `taken` when one matches, else bound.
async fn acquire_listeners(config: &GatewayConfig, taken: &mut Option<handover::Taken>) -> std::io::Result<Listeners> {
    let server = &config.server;
    let public = handover::acquire(taken, Role::Public, server.listen).await?;
    let admin = match server.admin_listen {
        Some(addr) => Some(handover::acquire(taken, Role::Admin, addr).await?),
        None => None,
    };
    let redirect = match server.http_redirect_listen {
        Some(addr) => Some(
            handover::acquire(taken, Role::Redirect, addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("server.http_redirect_listen {addr}: {e}")))?,
        ),
        None => None,
    };
    let services = bind_services(&config.services, taken).await?;
    let broker = match &config.services.rabbitmq {
        None => None,
        Some(rabbitmq) => Some(
            BrokerListener::bind(rabbitmq.url.clone(), rabbitmq.settings.clone())
                .await
                .map_err(|e| std::io::Error::other(format!("services.rabbitmq.url: {e}")))?,
        ),
    };
    Ok(Listeners { public, admin, redirect, services: Some(services), broker })
}

/// The stdout lines saying where each listener is (see the module documentation).
fn print_addresses(listeners: &Listeners, https: bool) -> std::io::Result<()> {
    let scheme = if https { "https" } else { "http" };
    println!("weir listening on {scheme}://{}", listeners.public.local_addr()?);
    if let Some(redirect) = &listeners.redirect {
        println!("weir redirecting on http://{}", redirect.local_addr()?);
    }
    if let Some(admin) = &listeners.admin {
        println!("weir admin on http://{}", admin.local_addr()?);
    }
    if let Some((services, tls)) = &listeners.services {
        let scheme = if tls.is_some() { "tls" } else { "tcp" };
        println!("weir services on {scheme}://{}", services.local_addr()?);
    }
    if let Some(broker) = &listeners.broker {
        println!("weir services on {} queue {}", broker.address(), broker.connect_queue());
    }
    Ok(())
}

/// Binds (or takes over) the service listener and loads its TLS files; errors name the
/// key at fault.
async fn bind_services(
    config: &ServicesConfig,
    taken: &mut Option<handover::Taken>,
) -> std::io::Result<(TcpListener, Option<TlsAcceptor>)> {
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(load_tls(files).map_err(|e| std::io::Error::other(format!("services.tls: {e}")))?),
    };
    let listener = handover::acquire(taken, Role::Services, config.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("services.listen {}: {e}", config.listen)))?;
    Ok((listener, tls))
}

fn load_tls(files: &ServicesTlsConfig) -> Result<TlsAcceptor, TlsError> {
    let identity = tls::Identity::from_files(&files.cert, &files.key)?;
    let client_ca = match &files.client_ca {
        Some(path) => Some(tls::read_certificates(path, "client CA")?),
        None => None,
    };
    Ok(TlsAcceptor::from(tls::server_config(identity, client_ca)?))
}

/// Reloads the configuration on every SIGHUP, for the life of the process (a failed
/// reload is logged and counted by the gateway; the previous configuration stays).
#[cfg(unix)]
async fn reload_on_hangup(gateway: Arc<Gateway>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGHUP: reload only through POST /reload");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        let reloading = Arc::clone(&gateway);
        match tokio::task::spawn_blocking(move || reloading.reload_from_source()).await {
            Ok(Err(ReloadError::NoSource)) => tracing::warn!("SIGHUP ignored: weir was started without --config"),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "the reload did not complete"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM, cancelling `shutdown`.
pub(crate) async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received; draining");
    shutdown.cancel();
}
