//! What the gateway shows of itself: the metrics served at the admin listener's
//! `/metrics` ([`metrics`], on the `prometheus-client` crate), the access log
//! ([`access_log`]), each request's place in its distributed trace ([`trace`]) with the
//! export of the gateway's spans over OTLP ([`otlp`]), and the record each client request
//! keeps of itself from its head to its end ([`exchange`]), which feeds them all.
//!
//! Beside the request's path, like `limits`: every phase may write into the request's
//! [`exchange::Exchange`], and nothing here calls back into the phases. Label values
//! come from the configuration (mounts) and from services' registrations (routes,
//! services), never from what a client sent, so a scan of random paths cannot create
//! series.

pub(crate) mod access_log;
pub(crate) mod exchange;
pub mod metrics;
pub mod otlp;
pub(crate) mod trace;
