//! A minimal reverse proxy on Cloudflare's Pingora: every request goes to one upstream
//! (bench/upstream) over HTTP/1.1, through Pingora's pool of kept-alive upstream
//! connections. The fourth peer of bench/run, configured like nginx and HAProxy there.
//!
//!   pingora-proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]
//!                 [--tls-cert cert.pem --tls-key key.pem]
//!
//! With --tls-cert and --tls-key the listener speaks HTTPS (rustls, TLS 1.2 and 1.3) and
//! offers ALPN h2 then http/1.1; the upstream side stays plain HTTP/1.1 either way.
//! SIGINT stops it at once, SIGTERM after at most a second (Pingora's graceful shutdown,
//! shortened).

use std::process::exit;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Args {
    listen: String,
    upstream: String,
    threads: usize,
    tls: Option<(String, String)>,
}

fn usage(message: &str) -> ! {
    eprintln!("pingora-proxy: {message}");
    eprintln!(
        "usage: pingora-proxy --listen ADDR --upstream ADDR [--threads N] [--tls-cert FILE --tls-key FILE]"
    );
    exit(2)
}

fn parse_args() -> Args {
    let mut listen = None;
    let mut upstream = None;
    let mut threads = 1;
    let mut cert = None;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--listen" => listen = Some(value()),
            "--upstream" => upstream = Some(value()),
            "--threads" => {
                threads = value()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage("--threads takes a positive number"))
            }
            "--tls-cert" => cert = Some(value()),
            "--tls-key" => key = Some(value()),
            "-h" | "--help" => usage("a reverse proxy for bench/run"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => usage("--tls-cert and --tls-key go together"),
    };
    Args {
        listen: listen.unwrap_or_else(|| usage("--listen is required")),
        upstream: upstream.unwrap_or_else(|| usage("--upstream is required")),
        threads,
        tls,
    }
}

/// Sends every request to the one upstream. The peer is built once; each request gets a
/// copy, and Pingora reuses an idle pooled connection to it when there is one.
struct Proxy {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    /// No access log (as for every system in bench/run); failed requests are reported on
    /// stderr, as nginx's error_log at level warn would.
    async fn logging(&self, session: &mut Session, error: Option<&Error>, _ctx: &mut ()) {
        if let Some(error) = error {
            eprintln!(
                "pingora-proxy: {} failed: {error}",
                session.req_header().uri
            );
        }
    }
}

fn main() {
    let args = parse_args();

    let conf = ServerConf {
        // One runtime thread per core the proxy may use: bench/run passes 1 pinned and
        // one per core unpinned, as nginx's worker_processes and HAProxy's nbthread.
        threads: args.threads,
        // The default pool of idle upstream connections is 128, as nginx's `keepalive 128`.
        // SIGTERM: stop accepting and end within a second instead of Pingora's default
        // grace of minutes (bench/run starts every system fresh for each measurement).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let upstream: std::net::SocketAddr = args
        .upstream
        .parse()
        .unwrap_or_else(|_| usage("--upstream takes IP:PORT"));
    // Plain HTTP/1.1 to the upstream (no TLS, no SNI), as nginx and HAProxy in bench/run.
    let peer = HttpPeer::new(upstream, false, String::new());

    let mut service = http_proxy_service(&server.configuration, Proxy { peer });
    match &args.tls {
        None => service.add_tcp(&args.listen),
        Some((cert, key)) => {
            let mut tls = TlsSettings::intermediate(cert, key).unwrap_or_else(|e| {
                eprintln!("pingora-proxy: TLS settings: {e}");
                exit(1)
            });
            tls.enable_h2();
            service.add_tls_with_settings(&args.listen, None, tls);
        }
    }
    server.add_service(service);
    eprintln!(
        "pingora-proxy listening on {}{} -> {}, {} thread(s)",
        args.listen,
        if args.tls.is_some() { " (TLS, h2 and http/1.1)" } else { "" },
        args.upstream,
        args.threads
    );
    server.run_forever();
}
