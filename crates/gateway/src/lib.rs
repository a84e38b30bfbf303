//! weir's gateway: the client-facing HTTP front, the routing table built from service
//! registrations, the payload budget, and dispatch of requests to services as frames.
//!
//! Modules by concern: [`downstream`] (HTTP listener and admin surface), [`upstream`] (one
//! request's exchange with a service), [`routing`] (table and instance choice), [`limits`]
//! (payload reservations and the other protections), [`services`] (shared state and
//! service connections), [`response`] (response bodies and the one status-code mapping),
//! [`static_files`] (the static profile) and the service listener for TCP and TLS
//! ([`Gateway::serve_services`]).

pub mod config;
pub mod downstream;
pub mod limits;
pub mod request;
pub mod response;
pub mod routing;
pub mod services;
pub mod static_files;
mod upstream;

pub use config::GatewayConfig;
pub use services::connection::Gateway;
