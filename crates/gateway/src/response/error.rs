//! Every way a request can fail at the gateway, and the one place that maps each to a
//! status code and a short JSON body (`{"error": "...", "detail": "..."}`), as the table
//! in DESIGN.md says. Each answer is counted in [`crate::downstream::metrics`].

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use thiserror::Error;

use crate::response::GatewayBody;

/// A request the gateway answers itself, with an error.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<String> },
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("request timed out: {0}")]
    RequestTimeout(String),
    #[error("no healthy instance: {0}")]
    NoHealthyInstance(String),
    #[error("gateway overloaded: {0}")]
    Overloaded(String),
    #[error("service timed out after {0:?}")]
    UpstreamTimeout(std::time::Duration),
    #[error("service failed: {0}")]
    UpstreamFailed(String),
    #[error("gateway is shutting down")]
    ShuttingDown,
    #[error("authentication required: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("rate limit exceeded")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("request cancelled by an operator")]
    CancelledByOperator,
    #[error("a precondition of the request does not hold")]
    PreconditionFailed,
    #[error("no requested range overlaps the {length} bytes of the file")]
    RangeNotSatisfiable { length: u64 },
}

impl GatewayError {
    /// The status code DESIGN.md assigns to this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::NoHealthyInstance(_) | GatewayError::Overloaded(_) | GatewayError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::CancelledByOperator => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            GatewayError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }

    /// The stable machine-readable name in the JSON body and in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::PayloadTooLarge(_) => "payload_too_large",
            GatewayError::RequestTimeout(_) => "request_timeout",
            GatewayError::NoHealthyInstance(_) => "no_healthy_instance",
            GatewayError::Overloaded(_) => "overloaded",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::UpstreamFailed(_) => "upstream_failed",
            GatewayError::ShuttingDown => "shutting_down",
            GatewayError::Unauthorized(_) => "unauthorized",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::TooManyRequests { .. } => "too_many_requests",
            GatewayError::CancelledByOperator => "cancelled",
            GatewayError::PreconditionFailed => "precondition_failed",
            GatewayError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
        }
    }

    /// Every code, for metrics.
    pub const CODES: [&'static str; 17] = [
        "not_found",
        "method_not_allowed",
        "bad_request",
        "payload_too_large",
        "request_timeout",
        "no_healthy_instance",
        "overloaded",
        "upstream_timeout",
        "upstream_failed",
        "shutting_down",
        "unauthorized",
        "forbidden",
        "unsupported_media_type",
        "too_many_requests",
        "cancelled",
        "precondition_failed",
        "range_not_satisfiable",
    ];

    /// Whether the client connection should be closed after this answer (the request
    /// body was not fully read, so the connection cannot be reused safely).
    pub fn closes_connection(&self) -> bool {
        matches!(self, GatewayError::PayloadTooLarge(_) | GatewayError::RequestTimeout(_))
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<GatewayBody> {
        let body = serde_json::json!({ "error": self.code(), "detail": self.to_string() });
        let mut response = Response::new(GatewayBody::full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            GatewayError::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(ALLOW, value);
                }
            }
            GatewayError::NoHealthyInstance(_) | GatewayError::Overloaded(_) | GatewayError::ShuttingDown => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::TooManyRequests { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            GatewayError::Unauthorized(_) => {
                headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            GatewayError::RangeNotSatisfiable { length } => {
                let value = weir_proto::http_file::unsatisfied_content_range(*length);
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(http::header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        if self.closes_connection() {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
