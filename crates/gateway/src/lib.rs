//! weir's gateway: the client-facing HTTP front, the routing table built from service
//! registrations, the payload budget, and dispatch of requests to services as frames.
//!
//! Modules by concern: [`front`] (HTTP listener and admin surface), [`dispatch`] (one
//! request's phases), [`routing`] (table and instance choice), [`budget`] (payload
//! reservations), [`server`] (shared state and service connections), [`body`] (response
//! bodies relayed from services), [`error`] (the one status-code mapping), [`metrics`].

pub mod body;
pub mod budget;
pub mod config;
mod dispatch;
pub mod error;
pub mod front;
pub mod metrics;
pub mod routing;
pub mod server;

pub use config::GatewayConfig;
pub use server::Gateway;
