//! Log set-up: human-readable lines on stderr, filtered by `RUST_LOG` (default `info`,
//! with the AMQP client's own lines at `error` only: weir logs what a broker event means
//! for it, and the client would add a warning with a whole message dump for every ping a
//! dead peer's inbox returns).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
