//! The `weir` command: `serve` runs the gateway (with the embedded demo service unless
//! `--no-demo`), `check-config` validates a configuration file and prints every error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// Do not attach the embedded demo service.
        #[arg(long)]
        no_demo: bool,
    },
    /// Validate a configuration file; prints every error with its key and line.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    weir::logging::init();
    match cli.command {
        Command::Serve { config, listen, no_demo } => {
            let options = weir::serve::ServeOptions { config, listen, demo: !no_demo };
            weir::serve::run(options)
        }
        Command::CheckConfig { file } => weir::serve::check_config(&file),
    }
}
