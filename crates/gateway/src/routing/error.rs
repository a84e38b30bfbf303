//! Why a request could not be routed ([`RouteError`], answered to the client) and why a
//! registration was refused ([`RegistrationError`], logged and sent back to the service).
//!
//! Messages are written for their reader: a client gets the route error's text as the
//! `detail` of its JSON error body; a service operator gets the registration error's text
//! in an Error frame, so it names the offending method, template or version.

use thiserror::Error;

/// Why a request found no instance to go to.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// No template matches the path.
    #[error("no route matches the path")]
    NotFound,
    /// A template matches, but no endpoint serves this method.
    #[error("method not allowed; allowed: {}", allow.join(", "))]
    MethodNotAllowed {
        /// Methods the matched template serves, sorted; `HEAD` included when `GET` is.
        allow: Vec<String>,
    },
    /// The endpoint is known but no instance of the chosen version can take the request.
    #[error("no healthy instance: {detail}")]
    NoHealthyInstance { detail: String },
    /// The requested version is not a strict semantic version.
    #[error("{value:?} is not a semantic version (expected e.g. 1.4.2)")]
    InvalidVersion { value: String },
}

/// Why a Hello or an endpoints update was refused. A refused registration changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistrationError {
    /// The Hello's version is not a strict semantic version.
    #[error("version {value:?} is not a semantic version: {reason}")]
    InvalidVersion { value: String, reason: String },
    /// The Hello's identity is unusable (an empty service name).
    #[error("invalid identity: {reason}")]
    InvalidIdentity { reason: String },
    /// An endpoint's method is not an upper-case HTTP token.
    #[error("invalid method {method:?}: {reason}")]
    InvalidMethod { method: String, reason: String },
    /// An endpoint's path template is malformed.
    #[error("invalid path template {template:?}: {reason}")]
    InvalidTemplate { template: String, reason: String },
    /// The template cannot live next to one already served (e.g. `/a/{x}` and `/a/{y}`).
    #[error("path template {template:?} conflicts with the registered template {existing:?}")]
    TemplateConflict { template: String, existing: String },
    /// Another service has live instances serving this endpoint.
    #[error("{method} {template} is served by service {owner:?}")]
    Conflict { method: String, template: String, owner: String },
    /// Instances of one service and version must declare identical endpoints.
    #[error(
        "{method} {template} differs from the descriptor other instances of \
         {service} {version} declare"
    )]
    DescriptorMismatch { method: String, template: String, service: String, version: String },
    /// The same method and template appear twice in one declaration.
    #[error("{method} {template} is declared twice")]
    DuplicateEndpoint { method: String, template: String },
    /// `register` was called for a connection id already registered.
    #[error("connection {conn_id} is already registered")]
    AlreadyRegistered { conn_id: u64 },
    /// The table would hold more than `routing.max_routes` endpoints.
    #[error("{added} new endpoints do not fit: the routing table holds {known} of at most {max}")]
    TooManyRoutes { known: usize, added: usize, max: usize },
    /// An update names a connection that is not registered (never was, or left).
    #[error("connection {conn_id} is not registered")]
    UnknownConnection { conn_id: u64 },
}
