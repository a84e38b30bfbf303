//! The `weir` binary's library half: configuration loading, `weir serve`, `weir
//! dev-cert` and the embedded demo service, kept in a library so that tests can drive them directly.

pub mod config;
pub mod demo;
pub mod demo_service;
pub mod dev_cert;
mod handover;
pub mod logging;
pub mod runtime;
pub mod serve;
