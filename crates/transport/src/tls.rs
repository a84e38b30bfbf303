//! The TLS transport: TCP ([`crate::tcp`]) with rustls on top.
//!
//! This module owns turning PEM files into rustls configurations and opening TLS
//! connections; what travels inside is the same frames as over any other byte stream.
//! Invariants:
//!
//! - the crypto provider is always *ring*, passed explicitly, so nothing depends on a
//!   process-wide default provider being installed; TLS 1.2 and 1.3 are offered;
//! - a client trusts only the CA certificates it is given, never the system roots:
//!   service connections are private infrastructure with their own CA;
//! - a server configured with a client CA *requires* a client certificate signed by it
//!   (mutual TLS); the certificate's identity ([`peer_identity`]: the subject common
//!   name, else the first DNS subject alternative name) is what the gateway compares with
//!   the service name a Hello claims;
//! - dialling (TCP connect and TLS handshake) is bounded by [`HANDSHAKE_TIMEOUT`].
//!
//! The gateway calls [`server_config`] at start-up and [`peer_identity`] per connection;
//! the service SDK dials with a [`TlsDialer`].

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use thiserror::Error;
use tokio::net::TcpStream;

pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use rustls::{ClientConfig, ServerConfig};
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Longest a TLS handshake (after the TCP connect) may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{what}: cannot read {path}: {source}")]
    Read { what: &'static str, path: String, source: io::Error },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)")]
    NoKey { what: String },
    #[error("{what}: invalid PEM: {message}")]
    Pem { what: String, message: String },
    #[error("{what}: {message}")]
    Rejected { what: String, message: String },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

/// A certificate chain (leaf first) and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    /// The key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("chain", &self.chain.len()).finish_non_exhaustive()
    }
}

impl Identity {
    /// From PEM text: `cert_pem` holds the chain, `key_pem` the key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(Identity { chain: certificates(cert_pem, "certificate")?, key: private_key(key_pem, "private key")? })
    }

    /// From two PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Identity { chain: read_certificates(cert, "certificate")?, key: read_private_key(key)? })
    }
}

/// Every certificate in PEM text; at least one. `what` names it in errors.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: what.to_owned(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.to_owned() });
    }
    Ok(certs)
}

/// The first private key in PEM text. `what` names it in errors.
pub fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { what: what.to_owned() },
        other => TlsError::Pem { what: what.to_owned(), message: other.to_string() },
    })
}

/// Every certificate in a PEM file; `what` says what the file is for (e.g. "client CA").
pub fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    certificates(&pem, &format!("{what} {}", path.display()))
}

/// The private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "private key")?;
    private_key(&pem, &format!("private key {}", path.display()))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.display().to_string(), source })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rejected(what: &str) -> impl Fn(rustls::Error) -> TlsError + '_ {
    move |e| TlsError::Rejected { what: what.to_owned(), message: e.to_string() }
}

fn root_store(cas: Vec<CertificateDer<'static>>, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(rejected(what))?;
    }
    Ok(roots)
}

/// The gateway's configuration: `identity` as the server certificate and, with
/// `client_ca`, mutual TLS requiring a client certificate signed by one of them.
pub fn server_config(
    identity: Identity,
    client_ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected("TLS protocol versions"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let roots = Arc::new(root_store(cas, "client CA")?);
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Rejected { what: "client CA".into(), message: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(identity.chain, identity.key).map_err(rejected("server certificate"))?;
    Ok(Arc::new(config))
}

/// A service's configuration: trusts exactly `ca`, and presents `identity` when the
/// gateway asks for a client certificate.
pub fn client_config(
    ca: Vec<CertificateDer<'static>>,
    identity: Option<Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected("TLS protocol versions"))?
        .with_root_certificates(root_store(ca, "CA")?);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder.with_client_auth_cert(id.chain, id.key).map_err(rejected("client certificate"))?,
    };
    Ok(Arc::new(config))
}

/// The host part of `host:port` (`[::1]:7070` → `::1`), the default TLS server name.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Service side: dials one gateway over TLS. Cheap to clone.
#[derive(Clone)]
pub struct TlsDialer {
    addr: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl fmt::Debug for TlsDialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsDialer").field("addr", &self.addr).field("server_name", &self.server_name).finish()
    }
}

impl TlsDialer {
    /// Dials `addr` and expects the gateway's certificate to be valid for `server_name`
    /// (`None`: the host part of `addr`, an IP address or a DNS name).
    pub fn new(
        addr: impl Into<String>,
        server_name: Option<&str>,
        config: Arc<ClientConfig>,
    ) -> Result<Self, TlsError> {
        let addr = addr.into();
        let name = server_name.unwrap_or_else(|| host_of(&addr)).to_owned();
        let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?;
        Ok(TlsDialer { addr, server_name, connector: TlsConnector::from(config) })
    }

    /// The address it dials.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Opens one connection: TCP connect, then the TLS handshake within
    /// [`HANDSHAKE_TIMEOUT`]. A certificate the CA does not vouch for is an
    /// `InvalidData` error.
    pub async fn dial(&self) -> io::Result<ClientTlsStream<TcpStream>> {
        let tcp = crate::tcp::connect(self.addr.as_str()).await?;
        let handshake = self.connector.connect(self.server_name.clone(), tcp);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

/// Gateway side: the identity of the client certificate on an accepted connection, if
/// one was presented (only with mutual TLS). See [`certificate_identity`].
pub fn peer_identity<IO>(stream: &ServerTlsStream<IO>) -> Option<String> {
    let (_, connection) = stream.get_ref();
    certificate_identity(connection.peer_certificates()?.first()?)
}

/// A certificate's identity: its subject common name, else its first DNS subject
/// alternative name; `None` for an unparsable certificate or one with neither.
pub fn certificate_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    if let Some(cn) = der::common_name(cert.subject()) {
        return Some(cn);
    }
    cert.valid_dns_names().next().map(str::to_owned)
}

/// Splits one DER tag-length-value off `input`: `(tag, value, rest)`; `None` when
/// `input` is too short for what its header announces (or announces over 4 GiB).
pub fn split_der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    der::tlv(input)
}

/// Just enough DER to find a common name in an X.509 subject.
mod der {
    /// OID 2.5.4.3, id-at-commonName, as encoded content bytes.
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    /// String types a common name is written in that are valid UTF-8 as they are:
    /// UTF8String, PrintableString, IA5String.
    const TEXT: [u8; 3] = [0x0c, 0x13, 0x16];

    /// Splits one tag-length-value off `input`: `(tag, value, rest)`.
    pub(super) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// The first common name in a Name's content (a sequence of relative distinguished
    /// names, each a set of attribute type-and-value sequences).
    pub(super) fn common_name(mut name: &[u8]) -> Option<String> {
        while !name.is_empty() {
            let (tag, mut rdn, rest) = tlv(name)?;
            name = rest;
            if tag != SET {
                return None;
            }
            while !rdn.is_empty() {
                let (tag, attribute, rest) = tlv(rdn)?;
                rdn = rest;
                if tag != SEQUENCE {
                    return None;
                }
                let (oid_tag, oid, value) = tlv(attribute)?;
                let (value_tag, text, _) = tlv(value)?;
                if oid_tag == OID && oid == COMMON_NAME && TEXT.contains(&value_tag) {
                    return std::str::from_utf8(text).ok().map(str::to_owned);
                }
            }
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn truncated_or_odd_input_gives_none() {
            assert_eq!(common_name(&[]), None);
            assert_eq!(common_name(&[SET]), None);
            assert_eq!(common_name(&[SET, 0x85, 1, 1, 1, 1, 1]), None);
            assert_eq!(common_name(&[SET, 0x05, SEQUENCE, 0x03, OID, 0x01]), None);
            assert_eq!(common_name(&[SEQUENCE, 0x00]), None);
        }

        #[test]
        fn long_form_lengths_are_read() {
            let cn = b"x".repeat(200);
            let mut attribute = vec![OID, 3, 0x55, 0x04, 0x03, 0x0c, 0x81, 200];
            attribute.extend_from_slice(&cn);
            let mut seq = vec![SEQUENCE, 0x81, attribute.len() as u8];
            seq.extend_from_slice(&attribute);
            let mut set = vec![SET, 0x81, seq.len() as u8];
            set.extend_from_slice(&seq);
            assert_eq!(common_name(&set).as_deref(), Some(&*String::from_utf8(cn).unwrap()));
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    use super::*;

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "test CA");
        let key = KeyPair::generate().unwrap();
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    fn leaf(ca: &Ca, cn: Option<&str>, sans: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::OrganizationName, "weir");
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn identity_prefers_the_common_name_then_the_first_dns_name() {
        let ca = ca();
        let with_cn = leaf(&ca, Some("billing"), &["billing.internal"]).0;
        let only_san = leaf(&ca, None, &["search.internal", "other.internal"]).0;
        let neither = leaf(&ca, None, &["10.0.0.1"]).0;
        let id = |pem: &str| certificate_identity(&certificates(pem.as_bytes(), "test").unwrap()[0]);
        assert_eq!(id(&with_cn).as_deref(), Some("billing"));
        assert_eq!(id(&only_san).as_deref(), Some("search.internal"));
        assert_eq!(id(&neither), None);
        assert_eq!(certificate_identity(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn pem_errors_say_what_is_wrong() {
        assert!(matches!(certificates(b"", "x"), Err(TlsError::NoCertificate { .. })));
        assert!(matches!(private_key(b"nothing here", "x"), Err(TlsError::NoKey { .. })));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(certificates(broken, "x"), Err(TlsError::Pem { .. })));
        let missing = read_certificates(Path::new("/nonexistent/weir.pem"), "certificate").unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/weir.pem"), "{missing}");
    }

    #[test]
    fn hosts_are_split_from_ports() {
        assert_eq!(host_of("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7070"), "::1");
        assert_eq!(host_of("gateway.internal:7070"), "gateway.internal");
        assert_eq!(host_of("localhost"), "localhost");
    }

    async fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> (io::Result<()>, Option<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialer = TlsDialer::new(listener.local_addr().unwrap().to_string(), None, client).unwrap();
        let acceptor = TlsAcceptor::from(server);
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.ok().and_then(|s| peer_identity(&s))
        };
        let (client, identity) = tokio::join!(dialer.dial(), server);
        (client.map(drop), identity)
    }

    #[tokio::test]
    async fn mutual_tls_exposes_the_client_identity_and_checks_the_ca() {
        let ca = ca();
        let (cert, key) = leaf(&ca, None, &["127.0.0.1"]);
        let ca_pem = ca.cert.pem();
        let client_ca = Some(certificates(ca_pem.as_bytes(), "ca").unwrap());
        let server = server_config(Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), client_ca).unwrap();
        let (ccert, ckey) = leaf(&ca, Some("billing"), &[]);
        let client_id = Identity::from_pem(ccert.as_bytes(), ckey.as_bytes()).unwrap();
        let roots = certificates(ca_pem.as_bytes(), "ca").unwrap();
        let client = client_config(roots.clone(), Some(client_id)).unwrap();
        let (ok, identity) = handshake(client, Arc::clone(&server)).await;
        ok.unwrap();
        assert_eq!(identity.as_deref(), Some("billing"));
        // A client trusting another CA refuses the server's certificate.
        let stranger = client_config(certificates(ca_pem_of(&self::ca()).as_bytes(), "ca").unwrap(), None).unwrap();
        let (refused, _) = handshake(stranger, server).await;
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    fn ca_pem_of(ca: &Ca) -> String {
        ca.cert.pem()
    }
}
