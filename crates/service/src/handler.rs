//! The handler vocabulary shared by declaring an endpoint ([`crate::endpoint`],
//! [`crate::typed`]) and running one ([`crate::exchange`], [`crate::websocket`]): the
//! one shape every HTTP handler is called in, and how an exchange ended. A leaf, so
//! that declaring and running never import each other.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::context::RawRequestContext;
use crate::error::HandlerError;
use crate::response::RawResponse;

/// What every handler returns once boxed.
pub(crate) type HandlerFuture = BoxFuture<'static, Result<RawResponse, HandlerError>>;

/// An HTTP handler in the one shape the runtime calls.
pub(crate) type HttpHandler = Arc<dyn Fn(RawRequestContext) -> HandlerFuture + Send + Sync + 'static>;

/// How one exchange ended, for the error rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The response was sent in full with this status.
    Answered(u16),
    /// The handler or its body stream failed after answering started.
    Failed,
    /// The gateway cancelled the request (not the service's failure).
    Cancelled,
}

impl Outcome {
    /// Whether the exchange counts against the error rate (a 5xx or a failure).
    pub(crate) fn is_failure(self) -> bool {
        match self {
            Outcome::Answered(status) => status >= 500,
            Outcome::Failed => true,
            Outcome::Cancelled => false,
        }
    }
}
