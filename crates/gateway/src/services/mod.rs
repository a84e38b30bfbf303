//! The service side: services dialling in over memory, TCP or TLS, their authentication
//! and the live connections the gateway keeps.

pub mod auth;
pub mod connection;
mod listener;
