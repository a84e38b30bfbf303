//! Black-box tests of the gateway over real HTTP on an ephemeral port, with services
//! attached over the in-memory transport, TCP, TLS or RabbitMQ (the conformance suite runs
//! each transport-relevant test on all four, see `common.rs`): the embedded demo, or test
//! services whose handlers count their invocations and report cancellation.
//!
//! One test binary with a module per concern, so the suite links once.

mod common;

mod access_log;
mod auth;
mod bad_input;
mod broker;
mod budget_abuse;
mod cancel;
mod cli;
mod concurrency;
mod connection_limits;
mod dashboard;
mod h2_floods;
mod h2_rules;
mod h2_websocket;
mod h2_wire;
mod handover;
mod health;
mod https;
mod limits;
mod liveness;
mod mount_settings;
mod observability;
mod observability_services;
mod paths;
mod protections;
mod proxy_headers;
mod registry;
mod reload;
mod replicas;
mod response_framing;
mod rfc_rules;
mod routing;
mod service_abuse;
mod service_auth;
mod slow_readers;
mod static_files;
mod streaming;
mod trace_context;
mod websocket;
mod wire_faults;
mod ws_budget;
mod ws_compression;
