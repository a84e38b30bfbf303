//! The service declaration: [`ServiceBuilder`] collects identity, settings and endpoints,
//! checks them, and builds a [`Service`], an immutable, cheaply cloned value holding the
//! Hello it will send and the handler of each endpoint.
//!
//! Checks done at build time, so that a mistake is found before the gateway refuses it:
//! a non-empty name, a semantic version, HTTP-token methods, templates starting with `/`,
//! timeouts of at least 1 ms (the wire carries milliseconds, and 0 means "none"), a
//! non-zero stream window, and no two endpoints with the same method and template shape
//! (`/a/{id}` and `/a/{key}` are the same route). The gateway checks templates in full.
//!
//! Connecting lives in `runtime.rs` ([`Service::serve`]) and `reconnect.rs`
//! ([`Service::run`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use weir_proto::{EndpointDescriptor, Hello, PROTOCOL_VERSION};

use crate::endpoint::{Endpoint, Handler};
use crate::error::ServiceError;

/// Default grace a cancelled handler gets to return before its task is aborted.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(1);

/// Default number of silent heartbeat intervals after which a gateway is taken for dead.
pub const DEFAULT_HEARTBEAT_MISS_COUNT: u32 = 3;

/// A built service: identity, endpoints and handlers. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<ServiceInner>,
}

pub(crate) struct ServiceInner {
    pub(crate) hello: Hello,
    /// Keyed by (method, template) exactly as declared: the gateway sends back the
    /// template it matched.
    handlers: HashMap<(String, String), Handler>,
    pub(crate) cancel_grace: Duration,
    /// Heartbeat intervals of silence from the gateway after which the link is closed.
    pub(crate) heartbeat_miss_count: u32,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hello = &self.inner.hello;
        f.debug_struct("Service")
            .field("name", &hello.service)
            .field("version", &hello.version)
            .field("region", &hello.region)
            .field("instance_id", &hello.instance_id)
            .field("endpoints", &hello.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts declaring service `name` at semantic version `version` (e.g. `1.4.2`).
    pub fn builder(name: impl Into<String>, version: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder {
            name: name.into(),
            version: version.into(),
            region: "default".to_owned(),
            instance_id: None,
            token: String::new(),
            stream_window: weir_proto::DEFAULT_STREAM_WINDOW,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            heartbeat_miss_count: DEFAULT_HEARTBEAT_MISS_COUNT,
            endpoints: Vec::new(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.inner.hello.service
    }

    /// The service's semantic version.
    pub fn version(&self) -> &str {
        &self.inner.hello.version
    }

    /// The region it says it runs in.
    pub fn region(&self) -> &str {
        &self.inner.hello.region
    }

    /// This running instance's id.
    pub fn instance_id(&self) -> &str {
        &self.inner.hello.instance_id
    }

    /// The endpoints it registers, in declaration order.
    pub fn endpoints(&self) -> &[EndpointDescriptor] {
        &self.inner.hello.endpoints
    }

    /// The Hello sent on every connection.
    pub fn hello(&self) -> &Hello {
        &self.inner.hello
    }

    /// The handler for a request the gateway matched to `(method, template)`. As at the
    /// gateway, a `HEAD` request without a `HEAD` endpoint is served by the `GET` one (its
    /// context says `HEAD`, and the gateway sends no body to the client).
    pub(crate) fn handler_for(&self, method: &str, template: &str) -> Option<Handler> {
        let find = |method: &str| self.inner.handlers.get(&(method.to_owned(), template.to_owned())).cloned();
        find(method).or_else(|| if method == "HEAD" { find("GET") } else { None })
    }
}

/// Declares a [`Service`]; see [`Service::builder`].
#[must_use = "a service builder does nothing until .build()"]
pub struct ServiceBuilder {
    name: String,
    version: String,
    region: String,
    instance_id: Option<String>,
    token: String,
    stream_window: u32,
    cancel_grace: Duration,
    heartbeat_miss_count: u32,
    endpoints: Vec<Endpoint>,
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl ServiceBuilder {
    /// The region the instance runs in (default `default`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// This instance's id (default: the name and 16 random hex digits).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The shared secret sent in the Hello to prove the service's identity.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Bytes of request body the gateway may send per stream before the service has
    /// consumed them (default [`weir_proto::DEFAULT_STREAM_WINDOW`]).
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.stream_window = bytes;
        self
    }

    /// How long a cancelled handler may keep running before its task is aborted
    /// (default 1 s). See the crate docs, "Cancellation".
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// After how many heartbeat intervals without any frame from the gateway the
    /// connection is taken for dead: closed (requests in flight are cancelled) and, under
    /// [`Service::run`], dialled again (default 3; 0 never gives up on a gateway). See
    /// `liveness.rs`: only a gateway that has sent a heartbeat is judged.
    pub fn heartbeat_miss_count(mut self, intervals: u32) -> Self {
        self.heartbeat_miss_count = intervals;
        self
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Checks the declaration and builds the service.
    pub fn build(self) -> Result<Service, ServiceError> {
        self.check_identity()?;
        let mut handlers = HashMap::new();
        let mut shapes = HashMap::new();
        let mut descriptors = Vec::with_capacity(self.endpoints.len());
        for Endpoint { descriptor, handler } in self.endpoints {
            check_endpoint(&descriptor)?;
            let shape = (descriptor.method.clone(), template_shape(&descriptor.path));
            if shapes.insert(shape, ()).is_some() {
                return Err(ServiceError::DuplicateEndpoint { method: descriptor.method, path: descriptor.path });
            }
            handlers.insert((descriptor.method.clone(), descriptor.path.clone()), handler);
            descriptors.push(descriptor);
        }
        let instance_id = self.instance_id.unwrap_or_else(|| format!("{}-{:016x}", self.name, rand::random::<u64>()));
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            service: self.name,
            version: self.version,
            region: self.region,
            instance_id,
            initial_window: self.stream_window,
            token: self.token,
            endpoints: descriptors,
        };
        Ok(Service {
            inner: Arc::new(ServiceInner {
                hello,
                handlers,
                cancel_grace: self.cancel_grace,
                heartbeat_miss_count: self.heartbeat_miss_count,
            }),
        })
    }

    fn check_identity(&self) -> Result<(), ServiceError> {
        if self.name.is_empty() {
            return Err(ServiceError::EmptyName);
        }
        semver::Version::parse(&self.version)
            .map_err(|err| ServiceError::InvalidVersion { version: self.version.clone(), reason: err.to_string() })?;
        if self.stream_window == 0 {
            return Err(ServiceError::InvalidSetting("the stream window must be at least 1 byte".into()));
        }
        if matches!(&self.instance_id, Some(id) if id.is_empty()) {
            return Err(ServiceError::InvalidSetting("the instance id is empty".into()));
        }
        Ok(())
    }
}

/// Checks what the SDK can check of one endpoint.
fn check_endpoint(descriptor: &EndpointDescriptor) -> Result<(), ServiceError> {
    let invalid = |reason: &str| ServiceError::InvalidEndpoint {
        method: descriptor.method.clone(),
        path: descriptor.path.clone(),
        reason: reason.to_owned(),
    };
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if descriptor.method.is_empty() || !descriptor.method.chars().all(tchar) {
        return Err(invalid("the method is not an HTTP token"));
    }
    if !descriptor.path.starts_with('/') {
        return Err(invalid("the path template must start with '/'"));
    }
    if descriptor.timeout.is_some_and(|t| t < Duration::from_millis(1)) {
        return Err(invalid("the timeout must be at least 1 ms"));
    }
    Ok(())
}

/// The template with parameter names erased: `/a/{id}/{*rest}` → `/a/{}/{*}`.
fn template_shape(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if name.starts_with('*') => "{*}",
            Some(_) => "{}",
            None => segment,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HandlerError, RawResponse};

    fn ok_endpoint(method: &str, path: &str) -> Endpoint {
        Endpoint::new(method, path).raw(|_| async { Ok::<_, HandlerError>(RawResponse::new(204)) })
    }

    #[test]
    fn version_must_be_semver() {
        let err = Service::builder("svc", "1.2").build().unwrap_err();
        assert!(matches!(err, ServiceError::InvalidVersion { .. }), "{err}");
        assert!(Service::builder("svc", "1.2.3-beta.1").build().is_ok());
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let err = Service::builder("svc", "1.0.0")
            .endpoint(ok_endpoint("GET", "/a/{id}"))
            .endpoint(ok_endpoint("get", "/a/{key}"))
            .build()
            .unwrap_err();
        assert!(matches!(err, ServiceError::DuplicateEndpoint { .. }), "{err}");
        let ok = Service::builder("svc", "1.0.0")
            .endpoint(ok_endpoint("GET", "/a/{id}"))
            .endpoint(ok_endpoint("POST", "/a/{id}"))
            .build();
        assert!(ok.is_ok());
    }

    #[test]
    fn malformed_endpoints_are_refused() {
        for (method, path) in [("GET", "no-slash"), ("G T", "/x"), ("", "/x")] {
            let err = Service::builder("svc", "1.0.0").endpoint(ok_endpoint(method, path)).build().unwrap_err();
            assert!(matches!(err, ServiceError::InvalidEndpoint { .. }), "{method} {path}: {err}");
        }
    }

    #[test]
    fn defaults_fill_the_hello() {
        let service = Service::builder("svc", "1.0.0").token("secret").build().unwrap();
        let hello = service.hello();
        assert!(hello.instance_id.starts_with("svc-") && hello.instance_id.len() == 20);
        assert_eq!(hello.initial_window, weir_proto::DEFAULT_STREAM_WINDOW);
        assert_eq!(hello.token, "secret");
        assert!(!format!("{service:?}").contains("secret"));
    }

    #[test]
    fn shapes_erase_parameter_names() {
        assert_eq!(template_shape("/a/{id}/b/{*rest}"), "/a/{}/b/{*}");
    }
}
