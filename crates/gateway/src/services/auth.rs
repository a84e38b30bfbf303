//! Who may register what: authenticating a service connection's Hello and authorising
//! the paths of its endpoints, against the `[[services.credentials]]` of the config.
//!
//! The rules, applied by [`Gateway::accept_service`](crate::Gateway::accept_service)
//! before anything is registered, and to every later EndpointsUpdate:
//!
//! - an in-memory connection (a service embedded in the gateway's process) is trusted as
//!   the gateway's own code: no proof, any path;
//! - with no credentials configured at all, network services (TCP, TLS) need no proof
//!   and may register any path: the open mode, for development, warned about at start-up;
//! - otherwise the Hello must name a service that has credentials and prove it, with a
//!   token equal to one of that service's entries, or with a mutual-TLS identity equal to
//!   the service name. A failure is `Unauthorized`;
//! - every endpoint template must then lie under one of the prefixes of the entry whose
//!   token matched (of all the service's entries, for an mTLS identity), segment by
//!   segment: `/api` allows `/api` and `/api/x`, never `/apix`. A failure is
//!   `RegistrationRefused`, naming the path.
//!
//! Tokens are compared in constant time, as SHA-256 digests so that not even their length
//! leaks through timing, and are never logged or printed.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;
use weir_proto::{EndpointDescriptor, Hello};

use crate::config::ServicesConfig;
use crate::routing::under_prefix;

/// How much the transport vouches for a service connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerTrust {
    /// In-memory: a service in the gateway's own process; trusted.
    Embedded,
    /// TCP or TLS: must prove who it is when credentials are configured.
    Network {
        /// The client certificate's identity, with mutual TLS.
        identity: Option<String>,
    },
}

/// The other end of a service connection, as far as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServicePeer {
    /// For logs: `in-memory`, `tcp://ADDR` or `tls://ADDR`.
    pub addr: String,
    pub trust: PeerTrust,
}

impl ServicePeer {
    /// A service in the gateway's process.
    pub(crate) fn embedded() -> Self {
        ServicePeer { addr: "in-memory".to_owned(), trust: PeerTrust::Embedded }
    }

    /// A service over the network, with its mTLS identity if it presented a certificate.
    pub(crate) fn network(addr: impl Into<String>, identity: Option<String>) -> Self {
        ServicePeer { addr: addr.into(), trust: PeerTrust::Network { identity } }
    }
}

impl fmt::Display for ServicePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// Why a Hello was not authenticated; the message goes to the service and the log, and
/// never contains a token.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub(crate) enum AuthError {
    #[error("service `{0}` has no credentials at this gateway")]
    UnknownService(String),
    #[error("service `{service}` did not prove its identity: wrong or missing token{}", identity_note(.identity))]
    NotProven { service: String, identity: Option<String> },
}

fn identity_note(identity: &Option<String>) -> String {
    match identity {
        Some(identity) => format!(", and its client certificate names `{identity}`"),
        None => String::new(),
    }
}

/// A path outside what the service may register.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("path `{path}` is outside the prefixes allowed for service `{service}` ({allowed})")]
pub(crate) struct PathRefused {
    pub service: String,
    pub path: String,
    pub allowed: String,
}

/// What an authenticated service may register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Any path: embedded services, and every service in the open mode.
    Any,
    /// Only templates under these prefixes.
    Prefixes(Vec<String>),
}

impl Grant {
    /// Whether `path` (a template) lies under the grant, segment by segment.
    pub(crate) fn allows(&self, path: &str) -> bool {
        match self {
            Grant::Any => true,
            Grant::Prefixes(prefixes) => prefixes.iter().any(|prefix| under_prefix(prefix, path)),
        }
    }

    /// The first endpoint of `service` whose path the grant does not allow, as an error.
    pub(crate) fn check(&self, service: &str, endpoints: &[EndpointDescriptor]) -> Result<(), PathRefused> {
        let Some(endpoint) = endpoints.iter().find(|e| !self.allows(&e.path)) else {
            return Ok(());
        };
        let allowed = match self {
            Grant::Any => String::new(),
            Grant::Prefixes(prefixes) => prefixes.join(", "),
        };
        Err(PathRefused { service: service.to_owned(), path: endpoint.path.clone(), allowed })
    }
}

/// One credential entry, its token kept only as a digest.
struct Entry {
    service: String,
    token_digest: Option<[u8; 32]>,
    prefixes: Vec<String>,
}

/// The credentials of `[services]`, ready to check Hellos against.
pub(crate) struct ServiceAuth {
    entries: Vec<Entry>,
}

impl fmt::Debug for ServiceAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAuth").field("entries", &self.entries.len()).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ServiceAuth {
    /// From the configured credentials.
    pub(crate) fn new(config: &ServicesConfig) -> Self {
        let entries = config
            .credentials
            .iter()
            .map(|c| Entry {
                service: c.service.clone(),
                token_digest: c.token.as_deref().map(digest),
                prefixes: c.prefixes.clone(),
            })
            .collect();
        ServiceAuth { entries }
    }

    /// Whether no credentials are configured: network services need no proof.
    pub(crate) fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks who `hello` says it is against what `trust` vouches for.
    pub(crate) fn authenticate(&self, hello: &Hello, trust: &PeerTrust) -> Result<Grant, AuthError> {
        let identity = match trust {
            PeerTrust::Embedded => return Ok(Grant::Any),
            _ if self.is_open() => return Ok(Grant::Any),
            PeerTrust::Network { identity } => identity,
        };
        let entries: Vec<&Entry> = self.entries.iter().filter(|e| e.service == hello.service).collect();
        if entries.is_empty() {
            return Err(AuthError::UnknownService(hello.service.clone()));
        }
        if let Some(entry) = token_match(&entries, &hello.token) {
            return Ok(Grant::Prefixes(entry.prefixes.clone()));
        }
        if identity.as_deref() == Some(hello.service.as_str()) {
            return Ok(Grant::Prefixes(entries.iter().flat_map(|e| e.prefixes.iter().cloned()).collect()));
        }
        Err(AuthError::NotProven { service: hello.service.clone(), identity: identity.clone() })
    }
}

/// The first entry whose token equals `token`. Every entry is compared, in constant
/// time, whatever matches; an empty token never matches (entries without a token are
/// for mTLS only).
fn token_match<'a>(entries: &[&'a Entry], token: &str) -> Option<&'a Entry> {
    if token.is_empty() {
        return None;
    }
    let presented = digest(token);
    let mut found = None;
    for entry in entries {
        let Some(expected) = &entry.token_digest else { continue };
        let equal: Choice = expected.ct_eq(&presented);
        if bool::from(equal) && found.is_none() {
            found = Some(*entry);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceCredential;

    fn credential(service: &str, token: Option<&str>, prefixes: &[&str]) -> ServiceCredential {
        ServiceCredential {
            service: service.into(),
            token: token.map(Into::into),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn auth(credentials: Vec<ServiceCredential>) -> ServiceAuth {
        ServiceAuth::new(&ServicesConfig { credentials, ..ServicesConfig::default() })
    }

    fn hello(service: &str, token: &str) -> Hello {
        Hello {
            protocol_version: weir_proto::PROTOCOL_VERSION,
            service: service.into(),
            version: "1.0.0".into(),
            region: String::new(),
            instance_id: "i".into(),
            initial_window: 1024,
            token: token.into(),
            endpoints: vec![],
        }
    }

    fn network(identity: Option<&str>) -> PeerTrust {
        PeerTrust::Network { identity: identity.map(Into::into) }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let grant = Grant::Prefixes(vec!["/api".into(), "/files/".into()]);
        for ok in ["/api", "/api/", "/api/x", "/api/{id}", "/files", "/files/{*rest}"] {
            assert!(grant.allows(ok), "{ok}");
        }
        for refused in ["/apix", "/ap", "/", "/other/api", "/filesystem", ""] {
            assert!(!grant.allows(refused), "{refused}");
        }
        assert!(Grant::Prefixes(vec!["/".into()]).allows("/anything/at/all"));
        assert!(Grant::Any.allows("/x"));
    }

    #[test]
    fn check_names_the_first_offending_path() {
        let grant = Grant::Prefixes(vec!["/api".into()]);
        let endpoints = [EndpointDescriptor::new("GET", "/api/ok"), EndpointDescriptor::new("GET", "/admin")];
        let err = grant.check("svc", &endpoints).unwrap_err();
        assert_eq!(err.path, "/admin");
        assert_eq!(err.to_string(), "path `/admin` is outside the prefixes allowed for service `svc` (/api)");
        assert!(grant.check("svc", &endpoints[..1]).is_ok());
    }

    #[test]
    fn embedded_and_open_mode_need_no_proof() {
        let closed = auth(vec![credential("billing", Some("s3cret"), &["/billing"])]);
        assert_eq!(closed.authenticate(&hello("anyone", ""), &PeerTrust::Embedded), Ok(Grant::Any));
        let open = auth(vec![]);
        assert!(open.is_open());
        assert_eq!(open.authenticate(&hello("anyone", ""), &network(None)), Ok(Grant::Any));
    }

    #[test]
    fn tokens_select_their_entry_and_wrong_ones_are_refused() {
        let a = auth(vec![
            credential("billing", Some("old"), &["/billing"]),
            credential("billing", Some("new"), &["/billing", "/invoices"]),
            credential("search", Some("other"), &["/search"]),
        ]);
        let grant = a.authenticate(&hello("billing", "new"), &network(None)).unwrap();
        assert_eq!(grant, Grant::Prefixes(vec!["/billing".into(), "/invoices".into()]));
        assert_eq!(
            a.authenticate(&hello("billing", "old"), &network(None)),
            Ok(Grant::Prefixes(vec!["/billing".into()]))
        );
        let wrong = a.authenticate(&hello("billing", "other"), &network(None)).unwrap_err();
        assert!(matches!(wrong, AuthError::NotProven { .. }));
        assert!(!wrong.to_string().contains("other"), "the token leaked: {wrong}");
        assert_eq!(
            a.authenticate(&hello("nobody", "new"), &network(None)),
            Err(AuthError::UnknownService("nobody".into()))
        );
    }

    #[test]
    fn mtls_identity_proves_the_service_name_only() {
        let a = auth(vec![credential("billing", None, &["/billing"]), credential("billing", Some("t"), &["/pay"])]);
        let grant = a.authenticate(&hello("billing", ""), &network(Some("billing"))).unwrap();
        assert_eq!(grant, Grant::Prefixes(vec!["/billing".into(), "/pay".into()]));
        let err = a.authenticate(&hello("billing", ""), &network(Some("search"))).unwrap_err();
        assert!(err.to_string().contains("client certificate names `search`"), "{err}");
        // An entry without a token is never matched by an empty token.
        assert!(a.authenticate(&hello("billing", ""), &network(None)).is_err());
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let c = credential("billing", Some("hunter2"), &["/billing"]);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", auth(vec![c])).contains("hunter2"));
    }
}
