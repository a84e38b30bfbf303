//! Loading a `weir.toml` file into a [`GatewayConfig`]: TOML reading, unit grammar, checks.
//!
//! This module owns everything between the text of a config file and the typed values of
//! `weir_gateway::config`, which trusts what it is given. Invariants: every problem in a
//! file is reported, not just the first (the reader keeps going after each error), each
//! with its dotted key and 1-based line; a key or table the reader does not take is
//! reported as unknown; a missing key keeps its default; a config returned as `Ok` passes
//! every bound and cross-field rule here. Each known key is read by exactly one line in
//! `sections.rs` (or `mounts.rs`), with its absolute bounds on that line; rules relating
//! two keys live in `check_relations`; the TLS files `[server.tls]` names are read and
//! checked last (`check_tls_files`). `docs/configuration.md` is the user-facing
//! reference for all of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{ImDocument, Item, TableLike, Value};

use weir_gateway::config::GatewayConfig;

mod mounts;
mod reader;
mod sections;
#[cfg(test)]
mod tests;
mod values;

use reader::{Order, Reader, Section};
use sections::{read_limits, read_log, read_routing, read_server, read_services, read_shared, read_tracing};
use values::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;
/// Longest duration any setting accepts: anything longer is almost surely a unit slip.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Buffered request bodies travel inline in one frame of at most 16 MiB.
const MAX_BUFFERED_CALL: u64 = 8 * MIB;
/// A body chunk travels as one stream data frame of at most 16 MiB.
const MAX_CHUNK: u64 = 16 * MIB;
/// Largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
const MAX_H2_WINDOW: u64 = (1 << 31) - 1;
/// A connection's HTTP/2 window starts at this size (RFC 9113 §6.9.2) and cannot shrink.
const MIN_H2_CONN_WINDOW: u64 = 65_535;
/// Most HTTP/2 streams one connection may open at once: more is a slip, and each
/// multiplies the per-stream windows and buffers.
const MAX_H2_STREAMS: u32 = 10_000;
/// Largest decoded HTTP/2 request header list: far above any real client's.
const MAX_H2_HEADER_LIST: u64 = MIB;
/// Most resets the HTTP/2 limits may allow before closing a connection.
const MAX_H2_RESETS: u32 = 100_000;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `limits.chunk_size`; empty for a TOML syntax error.
    pub key: String,
    /// 1-based line of the key (of the syntax error, for one).
    pub line: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.key, self.message)
        }
    }
}

/// Every problem found in a config file, in line order; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// One error per line, as `line N: key: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses and validates a config file; an empty text gives [`GatewayConfig::default`].
pub fn load_config(text: &str) -> Result<GatewayConfig, ConfigErrors> {
    let mut reader = Reader::new(text);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = reader.line_of(e.span()).unwrap_or(1);
            let message = e.message().trim().replace('\n', "; ");
            reader.error("", line, format!("invalid TOML: {message}"));
            return reader.finish(GatewayConfig::default());
        }
    };
    let mut config = GatewayConfig::default();
    let mut root = Section::root(&mut reader, doc.as_table());
    root.section("server", |s| read_server(s, &mut config.server));
    root.section("routing", |s| read_routing(s, &mut config.routing));
    root.section("limits", |s| read_limits(s, &mut config.limits));
    root.section("services", |s| read_services(s, &mut config.services));
    root.section("log", |s| read_log(s, &mut config.log));
    root.section("tracing", |s| read_tracing(s, &mut config.tracing));
    root.section("shared", |s| {
        if s.present() {
            config.shared = read_shared(s);
        }
    });
    let mut prefixes = Vec::new();
    root.tables("mount", &mut config.mounts, |s| mounts::read_mount(s, &mut prefixes));
    root.finish();
    check_relations(&mut reader, &config);
    check_tls_files(&mut reader, &config);
    reader.finish(config)
}

/// Rules relating two keys; each is reported on whichever of its keys the file sets.
fn check_relations(r: &mut Reader<'_>, c: &GatewayConfig) {
    let (s, rt, l, p) = (&c.server, &c.routing, &c.limits, &c.limits.payload);
    if s.admin_listen == Some(s.listen) && s.listen.port() != 0 {
        let line = r.lines.get("server.admin_listen").copied().unwrap_or(1);
        r.error("server.admin_listen", line, "must differ from server.listen");
    }
    check_redirect_listener(r, s);
    let d = show_duration;
    r.relate(("server.default_timeout", s.default_timeout), Order::AtMost, ("server.max_timeout", s.max_timeout), d);
    let heartbeat = ("routing.heartbeat_interval", rt.heartbeat_interval);
    let degraded = ("routing.degraded_after", rt.degraded_after);
    r.relate(heartbeat, Order::Below, degraded, d);
    r.relate(degraded, Order::Below, ("routing.evict_after", rt.evict_after), d);
    let call = ("limits.max_request_bytes_per_call", p.max_request_bytes_per_call);
    let conn = ("limits.max_request_bytes_per_connection", p.max_request_bytes_per_connection);
    let all = ("limits.max_aggregate_inflight_bytes", p.max_aggregate_inflight_bytes);
    r.relate(call, Order::AtMost, conn, show_size);
    r.relate(conn, Order::AtMost, all, show_size);
    let client = ("limits.max_inflight_bytes_per_client", p.max_inflight_bytes_per_client);
    r.relate(call, Order::AtMost, client, show_size);
    let chunk = u64::try_from(l.chunk_size).unwrap_or(u64::MAX);
    let upload = ("limits.max_upload_size", l.max_upload_size);
    r.relate(("limits.chunk_size", chunk), Order::AtMost, upload, show_size);
    let h2 = &s.http2;
    let stream_window = ("server.http2.initial_stream_window", u64::from(h2.initial_stream_window));
    let conn_window = ("server.http2.initial_connection_window", u64::from(h2.initial_connection_window));
    r.relate(stream_window, Order::AtMost, conn_window, show_size);
}

/// `server.http_redirect_listen` redirects to HTTPS, so it needs `[server.tls]`, and an
/// address of its own.
fn check_redirect_listener(r: &mut Reader<'_>, s: &weir_gateway::config::ServerConfig) {
    let Some(redirect) = s.http_redirect_listen else { return };
    let key = "server.http_redirect_listen";
    let line = r.lines.get(key).copied().unwrap_or(1);
    if s.tls.is_none() && !r.lines.contains_key("server.tls") {
        r.error(key, line, "redirects to HTTPS: requires [server.tls]");
    }
    let taken = [Some(s.listen), s.admin_listen].contains(&Some(redirect));
    if taken && redirect.port() != 0 {
        r.error(key, line, "must differ from server.listen and server.admin_listen");
    }
}

/// The files `[server.tls]` names: readable, PEM, keys matching their certificates,
/// certificates valid now and for the names they are listed for. Each problem is
/// reported on the key it names (the table's line when that key is not in the file).
fn check_tls_files(r: &mut Reader<'_>, c: &GatewayConfig) {
    let Some(tls) = &c.server.tls else { return };
    for problem in weir_gateway::ClientTls::check(tls, std::time::SystemTime::now()) {
        let table = problem.key.rsplit_once('.').map_or("server.tls", |(table, _)| table);
        let line = r.lines.get(&problem.key).or_else(|| r.lines.get(table)).copied().unwrap_or(1);
        r.error(&problem.key, line, problem.message);
    }
}
