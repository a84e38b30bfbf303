//! The SDK's three error types, each for a different audience.
//!
//! - [`ServiceError`]: for the program that runs the service: a declaration that does not
//!   build, or a connection that could not be opened or was refused by the gateway.
//! - [`BodyError`]: for a handler reading its request body: the body was larger than the
//!   handler allowed, or its stream broke (cancelled, connection lost).
//! - [`HandlerError`]: for the client: what a handler answers when it fails. It becomes a
//!   response with the status and the short JSON body every weir error has,
//!   `{"error": "...", "detail": "..."}` (the README's "Status codes").

use bytes::Bytes;
use thiserror::Error;
use weir_proto::ErrorCode;
use weir_transport::{HandshakeError, StreamError};

use crate::response::RawResponse;

/// Why a service could not be built, connected or kept connected.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The service name is empty.
    #[error("the service name is empty")]
    EmptyName,
    /// The version is not a semantic version (`MAJOR.MINOR.PATCH`).
    #[error("invalid service version {version:?}: {reason}")]
    InvalidVersion {
        /// The version as given.
        version: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An endpoint declaration is malformed.
    #[error("invalid endpoint {method} {path}: {reason}")]
    InvalidEndpoint {
        /// The endpoint's method.
        method: String,
        /// The endpoint's path template.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two endpoints have the same method and path template.
    #[error("endpoint {method} {path} is declared twice")]
    DuplicateEndpoint {
        /// The method both declare.
        method: String,
        /// The template of the second declaration.
        path: String,
    },
    /// A builder setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The byte stream to the gateway could not be opened.
    #[error("could not connect to the gateway: {0}")]
    Connect(#[source] std::io::Error),
    /// The gateway refused the service's Hello (bad token, conflicting endpoints...).
    #[error("the gateway refused the service ({code:?}): {message}")]
    Refused {
        /// The gateway's error code (`Unauthorized`, `RegistrationRefused`...).
        code: ErrorCode,
        /// The gateway's reason.
        message: String,
    },
    /// The handshake failed for another reason (timeout, closed, protocol error).
    #[error("handshake with the gateway failed: {0}")]
    Handshake(#[source] HandshakeError),
}

impl From<HandshakeError> for ServiceError {
    fn from(err: HandshakeError) -> Self {
        match err {
            HandshakeError::Refused { code, message } => ServiceError::Refused { code, message },
            other => ServiceError::Handshake(other),
        }
    }
}

/// Why reading a request body failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    /// The body is larger than the limit passed to [`crate::RequestBody::collect`].
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The body's stream ended abnormally: the request was cancelled, the gateway
    /// reported a failure, or the connection was lost.
    #[error("the request body was interrupted: {0}")]
    Interrupted(#[from] StreamError),
}

/// A handler's failure, answered to the client as `status` with a JSON error body.
///
/// `error` is a short machine-readable code (`not_found`, `bad_request`...), `detail` a
/// human-readable explanation. Both reach the client, so `detail` must not leak secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{status} {error}: {detail}")]
pub struct HandlerError {
    /// The HTTP status code, 100 to 999.
    pub status: u16,
    /// A stable code such as `not_found`.
    pub error: String,
    /// What went wrong, for a person.
    pub detail: String,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $status:literal, $code:literal;)+) => {
        $(
            $(#[$doc])*
            pub fn $name(detail: impl Into<String>) -> Self {
                HandlerError::new($status, $code, detail)
            }
        )+
    };
}

impl HandlerError {
    /// An error with any status and code.
    pub fn new(status: u16, error: impl Into<String>, detail: impl Into<String>) -> Self {
        HandlerError { status, error: error.into(), detail: detail.into() }
    }

    constructors! {
        /// 400: the request is malformed (unparsable body or query, missing parameter).
        bad_request => 400, "bad_request";
        /// 401: the caller is not authenticated.
        unauthorized => 401, "unauthorized";
        /// 403: the caller may not do this.
        forbidden => 403, "forbidden";
        /// 404: the resource does not exist.
        not_found => 404, "not_found";
        /// 409: the request conflicts with the resource's current state.
        conflict => 409, "conflict";
        /// 413: the request body is too large.
        payload_too_large => 413, "payload_too_large";
        /// 422: the request is well-formed but its content is invalid.
        unprocessable => 422, "unprocessable_entity";
        /// 500: the handler failed.
        internal => 500, "internal_error";
        /// 503: the handler cannot serve now (a dependency is down); the client may retry.
        unavailable => 503, "unavailable";
    }

    /// The JSON error body: `{"error": "...", "detail": "..."}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({ "error": self.error, "detail": self.detail });
        Bytes::from(body.to_string())
    }

    /// The response this error is answered with.
    pub fn into_response(self) -> RawResponse {
        RawResponse::new(self.status).header("content-type", "application/json").with_body(self.body())
    }
}

impl From<std::io::Error> for HandlerError {
    /// Any I/O failure is the service's own: 500. (A missing file a handler means to
    /// answer as 404 should be mapped by the handler, as [`RawResponse::file`] does.)
    fn from(err: std::io::Error) -> Self {
        HandlerError::internal(err.to_string())
    }
}

impl From<BodyError> for HandlerError {
    /// A body over its limit is 413; an interrupted body is 400 (when the request was
    /// cancelled, no response is sent at all).
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::TooLarge { .. } => HandlerError::payload_too_large(err.to_string()),
            BodyError::Interrupted(_) => HandlerError::bad_request(err.to_string()),
        }
    }
}

impl From<HandlerError> for RawResponse {
    fn from(err: HandlerError) -> Self {
        err.into_response()
    }
}
