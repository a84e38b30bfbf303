//! HTTPS on the client listener (`[server.tls]`): loading and checking the certificates,
//! choosing one by the name the client asks for ([`SniResolver`]), and the bounded
//! handshake of each admitted connection.
//!
//! Invariants:
//!
//! - rustls with the *ring* provider, TLS 1.2 and 1.3; ALPN offers `h2` then `http/1.1`,
//!   and the connection speaks exactly what was negotiated (no ALPN is HTTP/1.1: HTTP/2
//!   with prior knowledge is not accepted over TLS), which `ClientIo` enforces on the
//!   first bytes read ([`super::client_io`]);
//! - every certificate is checked before it is served: readable PEM files, a key that
//!   matches the leaf, a leaf valid now and valid for each name it is listed for. Every
//!   problem names the config key at fault ([`CertificateProblem`]), for
//!   `weir check-config` as well as at start-up, which refuses to run with any;
//! - the handshake runs after the connection holds its per-IP slot and its place under
//!   the connection cap, and ends within `handshake_timeout`, or when the connection is
//!   shed. The gateway's shutdown does not cut it: the client that began it may already be
//!   sending its request, which the connection's drain then answers; a failed handshake is counted (a timed-out one also logged
//!   at info, others at debug), and the socket closed without a word (there is no
//!   protocol yet to say one in).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use thiserror::Error;
use tokio::net::TcpStream;
use weir_transport::tls::{self as transport_tls, CertificateDer, ServerTlsStream, TlsAcceptor};

use super::validity::validity;
use crate::config::ServerTlsConfig;
use crate::limits::connections::ConnectionSlot;
use crate::observe::metrics::Metrics;

/// What the client listener's TLS needs per connection: the acceptor (configuration
/// and certificates) and the handshake's bound.
#[derive(Clone)]
pub struct ClientTls {
    acceptor: TlsAcceptor,
    /// `server.tls.handshake_timeout`.
    handshake_timeout: Duration,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("handshake_timeout", &self.handshake_timeout).finish_non_exhaustive()
    }
}

/// One problem with a certificate, its key or its names.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key}: {message}")]
pub struct CertificateProblem {
    /// The dotted config key at fault, e.g. `server.tls.certificates[1].key`.
    pub key: String,
    /// What is wrong, in words.
    pub message: String,
}

/// Why the client listener's TLS could not be set up: every problem found.
#[derive(Debug, Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ClientTlsError {
    pub problems: Vec<CertificateProblem>,
}

/// What ALPN offers, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// Plaintext a TLS session buffers for sending before it refuses more (rustls' default
/// is 64 KiB): a slow reader costs this on top of hyper's buffer and the socket's.
const TLS_SEND_BUFFER: usize = 32 * 1024;

impl ClientTls {
    /// Loads and checks every certificate of `config`; any problem refuses them all.
    pub fn load(config: &ServerTlsConfig) -> Result<ClientTls, ClientTlsError> {
        let (resolver, problems) = SniResolver::load(config, SystemTime::now());
        if !problems.is_empty() {
            return Err(ClientTlsError { problems });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions();
        let builder = builder.map_err(|e| ClientTlsError {
            problems: vec![CertificateProblem { key: "server.tls".into(), message: e.to_string() }],
        })?;
        let mut server = builder.with_no_client_auth().with_cert_resolver(Arc::new(resolver));
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ClientTls { acceptor: TlsAcceptor::from(Arc::new(server)), handshake_timeout: config.handshake_timeout })
    }

    /// Every problem with `config`'s certificates at time `now`, for `weir check-config`.
    pub fn check(config: &ServerTlsConfig, now: SystemTime) -> Vec<CertificateProblem> {
        SniResolver::load(config, now).1
    }

    /// The TLS handshake on an admitted connection, bounded by `handshake_timeout` and
    /// abandoned when the connection is shed; failures are counted in `metrics` and logged.
    pub(super) async fn handshake(
        &self,
        tcp: TcpStream,
        slot: &ConnectionSlot,
        metrics: &Metrics,
    ) -> Option<ServerTlsStream<TcpStream>> {
        let client = tcp.peer_addr().ok();
        let failure = tokio::select! {
            accepted = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)) => match accepted {
                Ok(Ok(mut stream)) => {
                    stream.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
                    metrics.tls_handshake_completed();
                    return Some(stream);
                }
                Ok(Err(err)) => HandshakeFailure::Failed(err),
                Err(_) => HandshakeFailure::TimedOut(self.handshake_timeout),
            },
            () = slot.shed() => HandshakeFailure::Abandoned("shed to admit another connection"),
        };
        if let Some(reason) = failure.counted_as() {
            metrics.tls_handshake_failed(reason);
        }
        // A timeout holds a slot for long and is worth a line; other failures are
        // cheap for anyone to cause (and a client that closes right after its Finished
        // fails the session tickets' write), so they are only counted.
        match failure {
            HandshakeFailure::TimedOut(_) => tracing::info!(?client, error = %failure, "TLS handshake failed"),
            _ => tracing::debug!(?client, error = %failure, "TLS handshake failed"),
        }
        None
    }
}

/// Why a handshake ended without a connection.
#[derive(Debug, Error)]
enum HandshakeFailure {
    #[error("no handshake within {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(io::Error),
    #[error("abandoned: {0}")]
    Abandoned(&'static str),
}

impl HandshakeFailure {
    /// The reason it counts under in [`Metrics::TLS_HANDSHAKE_FAILURES`], if it counts.
    fn counted_as(&self) -> Option<&'static str> {
        match self {
            HandshakeFailure::TimedOut(_) => Some("timeout"),
            HandshakeFailure::Failed(_) => Some("error"),
            HandshakeFailure::Abandoned(_) => None,
        }
    }
}

/// Chooses the certificate for a handshake by its server name (SNI): an exact name
/// first, then a one-label wildcard (`*.example.com` for `a.example.com`); names the
/// `[[server.tls.certificates]]` entries list come before the default certificate's own
/// DNS names. A name nobody claims, or no name at all, gets the default certificate, or
/// no certificate at all (the handshake fails) with `strict_sni`.
#[derive(Debug)]
pub(crate) struct SniResolver {
    /// The default certificate first, then the entries', in config order.
    certificates: Vec<Arc<CertifiedKey>>,
    /// Lowercase exact name → its certificate's index.
    exact: HashMap<String, usize>,
    /// Lowercase parent of a wildcard (`example.com` for `*.example.com`) → index.
    wildcard: HashMap<String, usize>,
    /// Refuse names nobody claims instead of serving the default certificate.
    strict: bool,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name()).cloned()
    }
}

impl SniResolver {
    fn new(strict: bool) -> Self {
        SniResolver { certificates: Vec::new(), exact: HashMap::new(), wildcard: HashMap::new(), strict }
    }

    /// The certificate for `server_name` (`None`: the client sent none).
    pub(crate) fn pick(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let claimed = server_name.and_then(|name| self.claimant(&name.trim_end_matches('.').to_ascii_lowercase()));
        match claimed {
            Some(index) => self.certificates.get(index),
            None if self.strict => None,
            None => self.certificates.first(),
        }
    }

    fn claimant(&self, name: &str) -> Option<usize> {
        if let Some(&index) = self.exact.get(name) {
            return Some(index);
        }
        let (label, parent) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(parent).copied()
    }

    /// Adds `certificate`; returns its index.
    fn add(&mut self, certificate: Arc<CertifiedKey>) -> usize {
        self.certificates.push(certificate);
        self.certificates.len() - 1
    }

    /// Claims `name` for certificate `index`; `Err` with the earlier claimant's index if
    /// the name is taken.
    fn claim(&mut self, name: &str, index: usize) -> Result<(), usize> {
        let name = name.to_ascii_lowercase();
        let (map, key) = match name.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent.to_owned()),
            None => (&mut self.exact, name),
        };
        match map.get(&key) {
            Some(&earlier) => Err(earlier),
            None => {
                map.insert(key, index);
                Ok(())
            }
        }
    }

    /// Loads every certificate of `config` as of `now`: the resolver, and every problem
    /// found (a certificate with a problem is left out).
    fn load(config: &ServerTlsConfig, now: SystemTime) -> (SniResolver, Vec<CertificateProblem>) {
        let mut resolver = SniResolver::new(config.strict_sni);
        let mut problems = Vec::new();
        let default = load_certificate("server.tls", &config.cert, &config.key, now, &mut problems);
        let default_names = default.as_ref().map(|c| leaf_dns_names(&c.cert[0])).unwrap_or_default();
        if let Some(certificate) = default {
            resolver.add(Arc::new(certificate));
        }
        for (i, entry) in config.certificates.iter().enumerate() {
            let prefix = format!("server.tls.certificates[{i}]");
            let Some(certificate) = load_certificate(&prefix, &entry.cert, &entry.key, now, &mut problems) else {
                continue;
            };
            let problem = |message| CertificateProblem { key: format!("{prefix}.names"), message };
            for name in &entry.names {
                if let Err(message) = covers(&certificate.cert[0], name) {
                    problems.push(problem(format!("the certificate in {}: {message}", entry.cert.display())));
                }
            }
            let index = resolver.add(Arc::new(certificate));
            for name in &entry.names {
                if let Err(earlier) = resolver.claim(name, index) {
                    problems.push(problem(format!("`{name}` is already listed by certificate {earlier}")));
                }
            }
        }
        // The default certificate's own names come last: an entry's names beat them.
        for name in &default_names {
            let _ = resolver.claim(name, 0);
        }
        (resolver, problems)
    }
}

/// One certificate chain and key, checked; `None` after pushing its problems.
fn load_certificate(
    prefix: &str,
    cert: &Path,
    key: &Path,
    now: SystemTime,
    problems: &mut Vec<CertificateProblem>,
) -> Option<CertifiedKey> {
    let mut problem = |field: &str, message: String| {
        problems.push(CertificateProblem { key: format!("{prefix}.{field}"), message });
    };
    let chain = transport_tls::read_certificates(cert, "certificate").map_err(|e| problem("cert", e.to_string()));
    let key_der = transport_tls::read_private_key(key).map_err(|e| problem("key", e.to_string()));
    let (chain, key_der) = (chain.ok()?, key_der.ok()?);
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = match provider.key_provider.load_private_key(key_der) {
        Ok(signing_key) => signing_key,
        Err(err) => {
            problem("key", format!("private key {}: {err}", key.display()));
            return None;
        }
    };
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            problem("key", format!("{} is not the key of the certificate in {}", key.display(), cert.display()));
            return None;
        }
        Err(err) => {
            problem("cert", format!("certificate {}: {err}", cert.display()));
            return None;
        }
    }
    let Some(period) = validity(&certified.cert[0]) else {
        problem("cert", format!("certificate {}: cannot read its validity period", cert.display()));
        return None;
    };
    if period.not_after.is_before(now) {
        problem("cert", format!("certificate {} expired on {}", cert.display(), period.not_after));
        return None;
    }
    if !period.not_before.is_before(now) {
        problem("cert", format!("certificate {} is not valid before {}", cert.display(), period.not_before));
        return None;
    }
    Some(certified)
}

/// The DNS names (wildcards included) a leaf certificate carries.
fn leaf_dns_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => cert.valid_dns_names().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether `leaf` is valid for `name` (an exact name, or a wildcard: valid for any one
/// label in its place).
fn covers(leaf: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let probe = match name.strip_prefix("*.") {
        Some(parent) => format!("weir-sni-probe.{parent}"),
        None => name.to_owned(),
    };
    let server_name =
        rustls::pki_types::ServerName::try_from(probe).map_err(|_| format!("`{name}` is not a valid DNS name"))?;
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("cannot be parsed: {e}"))?;
    cert.verify_is_valid_for_subject_name(&server_name).map_err(|_| format!("not valid for `{name}`"))
}

#[cfg(test)]
mod tests;
