//! The `weir` command: `serve` runs the gateway (with the embedded demo service unless
//! `--no-demo`), `demo-service` runs the demo service in its own process against a
//! gateway, `check-config` validates a configuration file (and the TLS files it names)
//! and prints every error, `dev-cert` writes a self-signed certificate for trying HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a gateway allocates and frees small objects (header
/// maps, frames, futures) on every request, and glibc's allocator cost 11% of small-GET
/// CPU time in the profile (`bench/README.md`, "Profile"). Its v2 line, not v3: v3 was a
/// little faster but held 45 MiB at the peak of `bench/stream_rss`, v2 19 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir: an HTTP and WebSocket gateway that microservices dial into.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// TOML configuration file; defaults apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address for client HTTP traffic, overriding `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address services dial in on, overriding `services.listen`.
        #[arg(long)]
        services_listen: Option<SocketAddr>,
        /// Address of the admin surface (metrics, health, dashboard), overriding
        /// `server.admin_listen`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Do not attach the embedded demo service.
        #[arg(long)]
        no_demo: bool,
        /// Runtime worker threads (default: one per core).
        #[arg(long, env = "WEIR_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
    },
    /// Run the demo service in its own process, dialling a gateway over TCP or TLS, or
    /// through a RabbitMQ broker, or both.
    #[command(group(clap::ArgGroup::new("gateway").required(true).multiple(true).args(["connect", "rabbitmq"])))]
    DemoService {
        /// The gateway's service listener, HOST:PORT.
        #[arg(long, value_name = "ADDR")]
        connect: Option<String>,
        /// A RabbitMQ broker, amqp:// or amqps:// URL, through which to reach a gateway
        /// with `[services.rabbitmq]`.
        #[arg(long, value_name = "URL")]
        rabbitmq: Option<String>,
        /// The gateway's `[services.rabbitmq] gateway` name.
        #[arg(long, value_name = "NAME", requires = "rabbitmq", default_value = "default")]
        rabbitmq_gateway: String,
        /// The gateway's `[services.rabbitmq] prefix`.
        #[arg(long, value_name = "PREFIX", requires = "rabbitmq", default_value = "weir")]
        rabbitmq_prefix: String,
        /// Token proving the service's identity (`[[services.credentials]]`).
        #[arg(long)]
        token: Option<String>,
        /// CA certificate(s) to trust, PEM; selects TLS.
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// Client certificate chain for mutual TLS, PEM.
        #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
        tls_cert: Option<PathBuf>,
        /// Private key of the client certificate, PEM.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Name the gateway's certificate must carry (default: the host of --connect).
        #[arg(long, value_name = "NAME", requires = "tls_ca")]
        tls_server_name: Option<String>,
        /// Runtime worker threads (default: one per core).
        #[arg(long, env = "WEIR_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
    },
    /// Validate a configuration file; prints every error with its key and line.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Write a self-signed certificate and key (cert.pem, key.pem) for trying HTTPS locally.
    DevCert {
        /// Directory to write them to (created if missing; existing files are kept).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A DNS name or IP address the certificate is for; repeat for more.
        #[arg(long = "name", value_name = "NAME", default_value = "localhost")]
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    weir::logging::init();
    match cli.command {
        Command::Serve { config, listen, services_listen, admin_listen, no_demo, workers } => {
            let workers = workers.map(usize::from);
            let demo = !no_demo;
            let options = weir::serve::ServeOptions { config, listen, services_listen, admin_listen, demo, workers };
            weir::serve::run(options)
        }
        Command::DemoService {
            connect,
            rabbitmq,
            rabbitmq_gateway,
            rabbitmq_prefix,
            token,
            tls_ca,
            tls_cert,
            tls_key,
            tls_server_name,
            workers,
        } => {
            let workers = workers.map(usize::from);
            let options = weir::demo_service::DemoServiceOptions {
                connect,
                rabbitmq,
                rabbitmq_gateway,
                rabbitmq_prefix,
                token,
                tls_ca,
                tls_cert,
                tls_key,
                tls_server_name,
                workers,
            };
            weir::demo_service::run(options)
        }
        Command::CheckConfig { file } => weir::serve::check_config(&file),
        Command::DevCert { out, names } => weir::dev_cert::run(weir::dev_cert::DevCertOptions { out, names }),
    }
}
