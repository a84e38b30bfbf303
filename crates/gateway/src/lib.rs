//! weir's gateway: the client-facing HTTP front, the routing table built from service
//! registrations, the payload budget, and dispatch of requests to services as frames.
//!
//! Modules by concern: [`front`] (HTTP listener and admin surface), [`dispatch`] (one
//! request's phases), [`routing`] (table and instance choice), [`budget`] (payload
//! reservations), [`server`] (shared state and service connections), [`body`] (response
//! bodies relayed from services), [`error`] (the one status-code mapping), [`metrics`],
//! [`service_auth`] (which services may register which paths), [`static_files`] (the
//! static profile) and the service listener for TCP and TLS ([`Gateway::serve_services`]).

pub mod auth;
pub mod body;
pub mod budget;
pub mod client_io;
pub mod config;
mod dispatch;
pub mod error;
mod file_body;
pub mod front;
pub mod limiter;
pub mod metrics;
pub mod mount;
mod pipeline;
pub mod ratelimit;
pub mod registry;
mod request_body;
pub mod routing;
pub mod server;
pub mod service_auth;
mod service_listener;
pub mod shaper;
pub mod static_files;
mod websocket;

pub use config::GatewayConfig;
pub use server::Gateway;
