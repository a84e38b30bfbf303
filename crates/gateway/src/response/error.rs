//! Every way a request can fail at the gateway, and the one place that maps each to a
//! status code and a short JSON body ([`ErrorBody`]: `{"error": "...", "detail": "..."}`):
//! the table [`ANSWERS`], which the README's status-code table describes. Every refusal
//! goes through it, those hyper never sees included (the per-IP limit's 503 and the late
//! 408 are written on the socket in [`GatewayError::to_http1`]'s form). Each answer is
//! counted in [`crate::observe::metrics`]. The one failure that is not an answer: a
//! malformed HTTP/2 request, whose stream is reset (`downstream/h2_streams.rs`).

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use serde::Serialize;
use thiserror::Error;

use crate::limits::body_size::BodySizeError;
use crate::limits::rate::RateLimited;
use crate::response::GatewayBody;
use crate::routing::RouteError;

/// The JSON body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody {
    /// The error's text, for people.
    detail: String,
    /// The stable code ([`GatewayError::code`]).
    error: &'static str,
}

/// A request the gateway answers itself, with an error.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub(crate) enum GatewayError {
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
    #[error("not implemented: {0}")]
    NotImplemented(String),
    #[error("unsupported WebSocket version: {0}")]
    UnsupportedWebSocketVersion(String),
}

/// One kind of answer: its status and its stable code.
struct Answer {
    status: StatusCode,
    code: &'static str,
}

/// The status and code of every [`GatewayError`], indexed by [`GatewayError::index`]:
/// the one table from failure to status code (the README's status table describes it).
const ANSWERS: [Answer; 18] = [
    Answer { status: StatusCode::NOT_FOUND, code: "not_found" },
    Answer { status: StatusCode::METHOD_NOT_ALLOWED, code: "method_not_allowed" },
    Answer { status: StatusCode::BAD_REQUEST, code: "bad_request" },
    Answer { status: StatusCode::PAYLOAD_TOO_LARGE, code: "payload_too_large" },
    Answer { status: StatusCode::REQUEST_TIMEOUT, code: "request_timeout" },
    Answer { status: StatusCode::SERVICE_UNAVAILABLE, code: "no_healthy_instance" },
    Answer { status: StatusCode::SERVICE_UNAVAILABLE, code: "overloaded" },
    Answer { status: StatusCode::GATEWAY_TIMEOUT, code: "upstream_timeout" },
    Answer { status: StatusCode::BAD_GATEWAY, code: "upstream_failed" },
    Answer { status: StatusCode::UNAUTHORIZED, code: "unauthorized" },
    Answer { status: StatusCode::FORBIDDEN, code: "forbidden" },
    Answer { status: StatusCode::UNSUPPORTED_MEDIA_TYPE, code: "unsupported_media_type" },
    Answer { status: StatusCode::TOO_MANY_REQUESTS, code: "too_many_requests" },
    Answer { status: StatusCode::SERVICE_UNAVAILABLE, code: "cancelled" },
    Answer { status: StatusCode::PRECONDITION_FAILED, code: "precondition_failed" },
    Answer { status: StatusCode::RANGE_NOT_SATISFIABLE, code: "range_not_satisfiable" },
    Answer { status: StatusCode::NOT_IMPLEMENTED, code: "not_implemented" },
    Answer { status: StatusCode::UPGRADE_REQUIRED, code: "unsupported_websocket_version" },
];

impl GatewayError {
    /// Every code, in the table's order (metrics count by it).
    pub(crate) const CODES: [&'static str; ANSWERS.len()] = {
        let mut codes = [""; ANSWERS.len()];
        let mut i = 0;
        while i < ANSWERS.len() {
            codes[i] = ANSWERS[i].code;
            i += 1;
        }
        codes
    };

    /// This error's row in [`ANSWERS`] (and position in [`GatewayError::CODES`]).
    pub(crate) fn index(&self) -> usize {
        match self {
            GatewayError::NotFound => 0,
            GatewayError::MethodNotAllowed { .. } => 1,
            GatewayError::BadRequest(_) => 2,
            GatewayError::PayloadTooLarge(_) => 3,
            GatewayError::RequestTimeout(_) => 4,
            GatewayError::NoHealthyInstance(_) => 5,
            GatewayError::Overloaded(_) => 6,
            GatewayError::UpstreamTimeout(_) => 7,
            GatewayError::UpstreamFailed(_) => 8,
            GatewayError::Unauthorized(_) => 9,
            GatewayError::Forbidden(_) => 10,
            GatewayError::UnsupportedMediaType(_) => 11,
            GatewayError::TooManyRequests { .. } => 12,
            GatewayError::CancelledByOperator => 13,
            GatewayError::PreconditionFailed => 14,
            GatewayError::RangeNotSatisfiable { .. } => 15,
            GatewayError::NotImplemented(_) => 16,
            GatewayError::UnsupportedWebSocketVersion(_) => 17,
        }
    }

    /// The status code of this failure.
    pub(crate) fn status(&self) -> StatusCode {
        ANSWERS[self.index()].status
    }

    /// The stable machine-readable name in the JSON body and in metrics.
    pub(crate) fn code(&self) -> &'static str {
        ANSWERS[self.index()].code
    }

    /// Whether the client connection should be closed after this answer (the request
    /// body was not fully read, so the connection cannot be reused safely).
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::PayloadTooLarge(_) | GatewayError::RequestTimeout(_) | GatewayError::NotImplemented(_)
        )
    }

    /// The JSON body of this answer.
    fn body(&self) -> Bytes {
        let body = ErrorBody { error: self.code(), detail: self.to_string() };
        // Serialising two strings cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The same answer as raw HTTP/1.1 bytes, for a socket hyper does not serve (a
    /// connection refused before hyper, or one hyper gave up on): status line, the
    /// response's headers, `Content-Length`, `Connection: close`, then the body.
    pub(crate) fn to_http1(&self) -> Vec<u8> {
        let response = self.clone().into_response();
        let status = response.status();
        let mut head = format!("HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or(""));
        for (name, value) in response.headers() {
            if name != http::header::CONNECTION {
                head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
            }
        }
        let body = self.body();
        head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }

    /// The HTTP response.
    pub(crate) fn into_response(self) -> Response<GatewayBody> {
        let mut response = Response::new(GatewayBody::full(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            GatewayError::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(ALLOW, value);
                }
            }
            GatewayError::NoHealthyInstance(_) | GatewayError::Overloaded(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::TooManyRequests { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            GatewayError::UnsupportedWebSocketVersion(_) => {
                // RFC 6455 §4.2.2: the versions the server speaks.
                headers.insert(http::header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
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

impl From<RouteError> for GatewayError {
    fn from(err: RouteError) -> Self {
        match err {
            RouteError::NotFound => GatewayError::NotFound,
            RouteError::MethodNotAllowed { allow } => GatewayError::MethodNotAllowed { allow },
            RouteError::NoHealthyInstance { detail } => GatewayError::NoHealthyInstance(detail),
            RouteError::InvalidVersion { value } => {
                GatewayError::BadRequest(format!("version {value:?} is not a semantic version"))
            }
        }
    }
}

impl From<BodySizeError> for GatewayError {
    fn from(err: BodySizeError) -> Self {
        match err {
            BodySizeError::InvalidContentLength => GatewayError::BadRequest(err.to_string()),
            BodySizeError::TooLarge { .. } => GatewayError::PayloadTooLarge(err.to_string()),
        }
    }
}

impl From<RateLimited> for GatewayError {
    fn from(err: RateLimited) -> Self {
        GatewayError::TooManyRequests { retry_after_secs: err.retry_after_secs }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// One error of every kind.
    fn every_error() -> Vec<GatewayError> {
        vec![
            GatewayError::NotFound,
            GatewayError::MethodNotAllowed { allow: vec!["GET".into(), "HEAD".into()] },
            GatewayError::BadRequest("x".into()),
            GatewayError::PayloadTooLarge("x".into()),
            GatewayError::RequestTimeout("x".into()),
            GatewayError::NoHealthyInstance("x".into()),
            GatewayError::Overloaded("x".into()),
            GatewayError::UpstreamTimeout(std::time::Duration::from_secs(1)),
            GatewayError::UpstreamFailed("x".into()),
            GatewayError::Unauthorized("x".into()),
            GatewayError::Forbidden("x".into()),
            GatewayError::UnsupportedMediaType("x".into()),
            GatewayError::TooManyRequests { retry_after_secs: 3 },
            GatewayError::CancelledByOperator,
            GatewayError::PreconditionFailed,
            GatewayError::RangeNotSatisfiable { length: 10 },
            GatewayError::NotImplemented("x".into()),
            GatewayError::UnsupportedWebSocketVersion("x".into()),
        ]
    }

    #[test]
    fn every_error_has_its_own_row_of_the_table() {
        let errors = every_error();
        assert_eq!(errors.len(), ANSWERS.len());
        for (i, err) in errors.iter().enumerate() {
            assert_eq!(err.index(), i, "{err:?}");
            assert_eq!(GatewayError::CODES[i], err.code());
        }
        let mut codes = GatewayError::CODES.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ANSWERS.len(), "codes are unique");
    }

    #[tokio::test]
    async fn the_response_carries_status_headers_and_the_json_body() {
        let response = GatewayError::TooManyRequests { retry_after_secs: 3 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, serde_json::json!({"error": "too_many_requests", "detail": "rate limit exceeded"}));

        let response = GatewayError::MethodNotAllowed { allow: vec!["GET".into(), "HEAD".into()] }.into_response();
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        let response = GatewayError::PayloadTooLarge("big".into()).into_response();
        assert_eq!(response.headers()[http::header::CONNECTION], "close");
    }

    #[test]
    fn the_raw_http1_form_is_the_same_answer_on_a_closing_connection() {
        let raw = GatewayError::Overloaded("too many connections from this address".into()).to_http1();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&"content-type: application/json"), "{headers:?}");
        assert!(headers.contains(&"retry-after: 1"), "{headers:?}");
        assert!(headers.contains(&format!("content-length: {}", body.len()).as_str()), "{headers:?}");
        assert_eq!(headers.iter().filter(|h| h.starts_with("connection:")).count(), 1);
        assert!(headers.contains(&"connection: close"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "overloaded");

        let timeout = String::from_utf8(GatewayError::RequestTimeout("head".into()).to_http1()).unwrap();
        assert!(timeout.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert_eq!(timeout.matches("connection: close").count(), 1, "{timeout}");
    }

    #[test]
    fn route_errors_map_to_404_405_503_and_400() {
        assert_eq!(GatewayError::from(RouteError::NotFound).status(), StatusCode::NOT_FOUND);
        let allow = vec!["GET".to_owned()];
        assert_eq!(GatewayError::from(RouteError::MethodNotAllowed { allow }).status(), StatusCode::METHOD_NOT_ALLOWED);
        let unavailable = RouteError::NoHealthyInstance { detail: "none".into() };
        assert_eq!(GatewayError::from(unavailable).status(), StatusCode::SERVICE_UNAVAILABLE);
        let invalid = RouteError::InvalidVersion { value: "x".into() };
        assert_eq!(GatewayError::from(invalid).status(), StatusCode::BAD_REQUEST);
    }
}
