//! The validate phase of business mounts: a routed request is checked against its
//! endpoint's declarations before any body byte is read — required claims (401 for an
//! anonymous caller, 403 for an authenticated one lacking a claim), declared content
//! types (415) and the declared maximum body (413).

use http::header::{CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, Request};
use weir_proto::EndpointDescriptor;

use super::authenticate::{unauthorized, Identity};
use crate::limits::body_size::{check_declared_length, content_length};
use crate::response::error::GatewayError;

/// Checks a routed request against its endpoint's declarations, before any body byte
/// is read: claims (401/403), content type (415), declared body length (413).
pub(crate) fn validate<B>(
    endpoint: &EndpointDescriptor,
    identity: &Identity,
    request: &Request<B>,
) -> Result<(), GatewayError> {
    check_claims(endpoint, identity)?;
    check_content_type(endpoint, request.headers())?;
    check_declared_body(endpoint, request.headers())
}

/// Every required claim must be held: 401 for an anonymous caller (authenticating may
/// help), 403 for an authenticated one (it will not).
fn check_claims(endpoint: &EndpointDescriptor, identity: &Identity) -> Result<(), GatewayError> {
    if endpoint.requiring_claims.is_empty() {
        return Ok(());
    }
    if !identity.is_authenticated() {
        return Err(unauthorized("this endpoint requires an authenticated caller"));
    }
    for required in &endpoint.requiring_claims {
        if !identity.holds(&required.claim_type, required.value.as_deref()) {
            let detail = match &required.value {
                Some(value) => format!("claim {:?} = {value:?} required", required.claim_type),
                None => format!("claim {:?} required", required.claim_type),
            };
            return Err(GatewayError::Forbidden(detail));
        }
    }
    Ok(())
}

/// With declared content types, a request with a body must have one of them (compared
/// without parameters, case-insensitively); a body without `Content-Type` is refused
/// too. A request without a body passes.
fn check_content_type(endpoint: &EndpointDescriptor, headers: &HeaderMap) -> Result<(), GatewayError> {
    if endpoint.content_types.is_empty() {
        return Ok(());
    }
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        if has_body(headers) {
            return Err(GatewayError::UnsupportedMediaType("a Content-Type is required".into()));
        }
        return Ok(());
    };
    let content_type = content_type.to_str().unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if endpoint.content_types.iter().any(|t| t.eq_ignore_ascii_case(essence)) {
        Ok(())
    } else {
        let accepted = endpoint.content_types.join(", ");
        Err(GatewayError::UnsupportedMediaType(format!("{essence:?} is not accepted here (accepted: {accepted})")))
    }
}

/// Whether the request announces a body: a non-zero `Content-Length` or any
/// `Transfer-Encoding`.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING) || content_length(headers).is_some_and(|n| n != Ok(0))
}

/// A declared `Content-Length` over the endpoint's `max_body_bytes` is 413 before the
/// body is read. An undeclared length is left to the upstream exchange, which counts as
/// it reads.
fn check_declared_body(endpoint: &EndpointDescriptor, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(max) = endpoint.max_body_bytes else { return Ok(()) };
    Ok(check_declared_length(content_length(headers).transpose()?, max)?)
}

#[cfg(test)]
mod tests {
    use http::Method as HttpMethod;
    use weir_proto::ClaimRequirement;

    use super::*;

    fn endpoint() -> EndpointDescriptor {
        EndpointDescriptor::new(HttpMethod::POST.as_str(), "/orders")
    }

    fn requiring(claims: &[(&str, Option<&str>)]) -> EndpointDescriptor {
        let mut endpoint = endpoint();
        endpoint.requiring_claims = claims
            .iter()
            .map(|(t, v)| ClaimRequirement { claim_type: t.to_string(), value: v.map(str::to_owned) })
            .collect();
        endpoint
    }

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::post("/orders");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn admin() -> Identity {
        Identity::authenticated("alice".into(), vec![("role".into(), "admin".into()), ("role".into(), "ops".into())])
    }

    #[test]
    fn required_claims_are_401_for_anonymous_and_403_when_missing() {
        let endpoint = requiring(&[("role", Some("admin"))]);
        let anonymous = validate(&endpoint, &Identity::anonymous(), &request(&[]));
        assert!(matches!(anonymous, Err(GatewayError::Unauthorized(_))), "{anonymous:?}");
        let bob = Identity::authenticated("bob".into(), vec![("role".into(), "reader".into())]);
        let missing = validate(&endpoint, &bob, &request(&[]));
        assert!(matches!(missing, Err(GatewayError::Forbidden(ref d)) if d.contains("role")), "{missing:?}");
        assert_eq!(validate(&endpoint, &admin(), &request(&[])), Ok(()));
    }

    #[test]
    fn every_required_claim_must_be_held_any_value_when_unspecified() {
        let both = requiring(&[("role", Some("ops")), ("role", None)]);
        assert_eq!(validate(&both, &admin(), &request(&[])), Ok(()));
        let also_tenant = requiring(&[("role", Some("admin")), ("tenant", None)]);
        assert!(matches!(validate(&also_tenant, &admin(), &request(&[])), Err(GatewayError::Forbidden(_))));
        assert_eq!(validate(&endpoint(), &Identity::anonymous(), &request(&[])), Ok(()), "no requirement");
    }

    #[test]
    fn declared_content_types_are_enforced() {
        let mut json_only = endpoint();
        json_only.content_types = vec!["application/json".into()];
        let ok = request(&[("content-type", "Application/JSON; charset=utf-8"), ("content-length", "2")]);
        assert_eq!(validate(&json_only, &admin(), &ok), Ok(()));
        let wrong = request(&[("content-type", "text/plain"), ("content-length", "2")]);
        assert!(matches!(validate(&json_only, &admin(), &wrong), Err(GatewayError::UnsupportedMediaType(_))));
        let untyped_body = request(&[("content-length", "2")]);
        assert!(matches!(validate(&json_only, &admin(), &untyped_body), Err(GatewayError::UnsupportedMediaType(_))));
        let chunked = request(&[("transfer-encoding", "chunked")]);
        assert!(matches!(validate(&json_only, &admin(), &chunked), Err(GatewayError::UnsupportedMediaType(_))));
        assert_eq!(validate(&json_only, &admin(), &request(&[])), Ok(()), "no body, no type needed");
        assert_eq!(validate(&json_only, &admin(), &request(&[("content-length", "0")])), Ok(()));
        let any = request(&[("content-type", "text/plain"), ("content-length", "2")]);
        assert_eq!(validate(&endpoint(), &admin(), &any), Ok(()), "no declaration accepts any type");
    }

    #[test]
    fn a_declared_length_over_the_maximum_is_413() {
        let mut small = endpoint();
        small.max_body_bytes = Some(10);
        assert_eq!(validate(&small, &admin(), &request(&[("content-length", "10")])), Ok(()));
        let over = validate(&small, &admin(), &request(&[("content-length", "11")]));
        assert!(matches!(over, Err(GatewayError::PayloadTooLarge(_))), "{over:?}");
        let bogus = validate(&small, &admin(), &request(&[("content-length", "ten")]));
        assert!(matches!(bogus, Err(GatewayError::BadRequest(_))), "{bogus:?}");
        assert_eq!(validate(&small, &admin(), &request(&[])), Ok(()), "unknown length: counted while read");
    }
}
