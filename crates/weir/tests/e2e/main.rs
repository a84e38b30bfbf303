//! Black-box tests of the gateway over real HTTP on an ephemeral port, with services
//! attached over the in-memory transport: the embedded demo, or test services whose
//! handlers count their invocations and report cancellation.
//!
//! One test binary with a module per concern, so the suite links once.

mod common;

mod bad_input;
mod cancel;
mod limits;
mod protections;
mod routing;
mod streaming;
