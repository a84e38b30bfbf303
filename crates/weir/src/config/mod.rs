//! Loading a `weir.toml` file into a [`GatewayConfig`]: TOML reading, unit grammar, checks.
//!
//! This module owns everything between the text of a config file and the typed values of
//! `weir_gateway::config`, which trusts what it is given. Invariants: every problem in a
//! file is reported, not just the first (the reader keeps going after each error), each
//! with its dotted key and 1-based line; a key or table the reader does not take is
//! reported as unknown; a missing key keeps its default; a config returned as `Ok` passes
//! every bound and cross-field rule here. Each known key is read by exactly one line in
//! `read_server`, `read_routing` or `read_limits`, with its absolute bounds on that
//! line; rules relating two keys live in `check_relations`. `docs/configuration.md` is
//! the user-facing reference for all of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{ImDocument, Item, TableLike, Value};

mod mounts;
use weir_gateway::config::{
    GatewayConfig, LimitsConfig, RoutingConfig, ServerConfig, ServiceCredential, ServicesConfig, ServicesTlsConfig,
};

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
    let mut prefixes = Vec::new();
    root.tables("mount", &mut config.mounts, |s| mounts::read_mount(s, &mut prefixes));
    root.finish();
    check_relations(&mut reader, &config);
    reader.finish(config)
}

/// `[server]`: one line per key.
fn read_server(s: &mut Section<'_, '_>, c: &mut ServerConfig) {
    s.value("listen", &mut c.listen, socket_addr);
    s.value("shutdown_grace", &mut c.shutdown_grace, duration);
    s.value("default_timeout", &mut c.default_timeout, duration);
    s.value("max_timeout", &mut c.max_timeout, duration);
    s.value("header_timeout", &mut c.header_timeout, duration);
    s.value("read_timeout", &mut c.read_timeout, duration);
    s.value("admin_listen", &mut c.admin_listen, |item| socket_addr(item).map(Some));
    s.value("send_timeout", &mut c.send_timeout, duration);
    s.value("max_connections_per_ip", &mut c.max_connections_per_ip, mounts::count);
    s.value("min_request_data_rate", &mut c.min_request_data_rate, size(1, u64::MAX));
    s.value("min_response_data_rate", &mut c.min_response_data_rate, size(1, u64::MAX));
    s.value("data_rate_grace", &mut c.data_rate_grace, duration);
}

/// `[routing]`: one line per key.
fn read_routing(s: &mut Section<'_, '_>, c: &mut RoutingConfig) {
    s.value("region", &mut c.region, string);
    s.value("version_header", &mut c.version_header, header_name);
    s.map("default_versions", &mut c.default_versions, service_version);
    s.value("heartbeat_interval", &mut c.heartbeat_interval, duration);
    s.value("degraded_after", &mut c.degraded_after, duration);
    s.value("evict_after", &mut c.evict_after, duration);
}

/// `[limits]`: one line per key, with its absolute bounds in bytes.
fn read_limits(s: &mut Section<'_, '_>, c: &mut LimitsConfig) {
    let p = &mut c.payload;
    s.value("max_request_bytes_per_call", &mut p.max_request_bytes_per_call, size(1, MAX_BUFFERED_CALL));
    s.value("max_request_bytes_per_connection", &mut p.max_request_bytes_per_connection, size(1, u64::MAX));
    s.value("max_aggregate_inflight_bytes", &mut p.max_aggregate_inflight_bytes, size(1, u64::MAX));
    s.value("max_upload_size", &mut c.max_upload_size, size(1, u64::MAX));
    s.value("chunk_size", &mut c.chunk_size, size(1, MAX_CHUNK));
    s.value("stream_window", &mut c.stream_window, size(KIB, GIB));
}

/// `[services]`: one line per key, then `[services.tls]` and `[[services.credentials]]`.
fn read_services(s: &mut Section<'_, '_>, c: &mut ServicesConfig) {
    s.value("listen", &mut c.listen, socket_addr);
    s.value("handshake_timeout", &mut c.handshake_timeout, duration);
    s.section("tls", |t| {
        if t.present() {
            c.tls = read_services_tls(t);
        }
    });
    let mutual_tls = c.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some());
    s.tables("credentials", &mut c.credentials, |e| read_credential(e, mutual_tls));
}

/// `[services.tls]`: `cert` and `key` are required once the table is there.
fn read_services_tls(s: &mut Section<'_, '_>) -> Option<ServicesTlsConfig> {
    let cert = s.required("cert", file_path);
    let key = s.required("key", file_path);
    let mut client_ca = None;
    s.value("client_ca", &mut client_ca, |item| file_path(item).map(Some));
    Some(ServicesTlsConfig { cert: cert?, key: key?, client_ca })
}

/// One `[[services.credentials]]` entry. Without a token only an mTLS identity can prove
/// the service, so a token is required unless `services.tls.client_ca` is set.
fn read_credential(s: &mut Section<'_, '_>, mutual_tls: bool) -> Option<ServiceCredential> {
    let service = s.required("service", non_empty_string);
    let mut token = None;
    s.value("token", &mut token, |item| non_empty_string(item).map(Some));
    let prefixes = s.required("prefixes", path_prefixes);
    if token.is_none() && !mutual_tls && !s.reader.rejected.contains(&s.key_path("token")) {
        s.missing("token", "required unless services.tls.client_ca is set (only mutual TLS can stand in for it)");
        return None;
    }
    Some(ServiceCredential { service: service?, token, prefixes: prefixes? })
}

/// Rules relating two keys; each is reported on whichever of its keys the file sets.
fn check_relations(r: &mut Reader<'_>, c: &GatewayConfig) {
    let (s, rt, l, p) = (&c.server, &c.routing, &c.limits, &c.limits.payload);
    if s.admin_listen == Some(s.listen) && s.listen.port() != 0 {
        let line = r.lines.get("server.admin_listen").copied().unwrap_or(1);
        r.error("server.admin_listen", line, "must differ from server.listen");
    }
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
    let chunk = u64::try_from(l.chunk_size).unwrap_or(u64::MAX);
    let upload = ("limits.max_upload_size", l.max_upload_size);
    r.relate(("limits.chunk_size", chunk), Order::AtMost, upload, show_size);
}

/// How the first value of a relation must compare with the second.
#[derive(Clone, Copy)]
enum Order {
    AtMost,
    Below,
}

/// Collects errors and remembers where keys were, for the checks after reading.
struct Reader<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
    /// Line of every known key present in the file, by dotted path.
    lines: HashMap<String, usize>,
    /// Keys whose value was rejected: relations involving them are not checked.
    rejected: HashSet<String>,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader { text, errors: Vec::new(), lines: HashMap::new(), rejected: HashSet::new() }
    }

    /// 1-based line of the start of `span`.
    fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        let end = span?.start.min(self.text.len());
        Some(self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1)
    }

    fn error(&mut self, key: &str, line: usize, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.to_owned(), line, message: message.into() });
    }

    fn reject(&mut self, key: &str, line: usize, message: impl Into<String>) {
        self.rejected.insert(key.to_owned());
        self.error(key, line, message);
    }

    /// Checks `lo <order> hi`, blaming `lo` unless only `hi` is set in the file (line 1 if
    /// neither is: the defaults themselves would be inconsistent).
    fn relate<T: PartialOrd>(&mut self, lo: (&str, T), order: Order, hi: (&str, T), show: fn(&T) -> String) {
        if self.rejected.contains(lo.0) || self.rejected.contains(hi.0) {
            return;
        }
        let holds = match order {
            Order::AtMost => lo.1 <= hi.1,
            Order::Below => lo.1 < hi.1,
        };
        if holds {
            return;
        }
        let blame_hi = !self.lines.contains_key(lo.0) && self.lines.contains_key(hi.0);
        let ((key, value), (other, bound)) = if blame_hi { (hi, lo) } else { (lo, hi) };
        let phrase = match (order, blame_hi) {
            (Order::AtMost, false) => "must not exceed",
            (Order::Below, false) => "must be less than",
            (Order::AtMost, true) => "must be at least",
            (Order::Below, true) => "must be more than",
        };
        let line = self.lines.get(key).copied().unwrap_or(1);
        let message = format!("{} {phrase} {other} ({})", show(&value), show(&bound));
        self.error(key, line, message);
    }

    /// `config` if nothing was wrong, else every error in line order.
    fn finish(mut self, config: GatewayConfig) -> Result<GatewayConfig, ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(config);
        }
        self.errors.sort_by_key(|e| e.line);
        Err(ConfigErrors { errors: self.errors })
    }
}

/// A table being read: hands out its keys and, when finished, reports those nobody took.
struct Section<'r, 'a> {
    reader: &'r mut Reader<'a>,
    /// Dotted path of this table; empty for the document root.
    path: String,
    /// `None` when the table is absent or was not a table (already reported).
    table: Option<&'a dyn TableLike>,
    /// Line errors fall back to when toml_edit has no span for a key.
    line: usize,
    taken: Vec<&'static str>,
}

impl<'r, 'a> Section<'r, 'a> {
    fn root(reader: &'r mut Reader<'a>, table: &'a dyn TableLike) -> Self {
        Section { reader, path: String::new(), table: Some(table), line: 1, taken: Vec::new() }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Marks `key` as known; returns its dotted path, line and item if the file sets it.
    fn take(&mut self, key: &'static str) -> Option<(String, usize, &'a Item)> {
        self.taken.push(key);
        let (k, item) = self.table?.get_key_value(key)?;
        let path = self.key_path(key);
        let line = self.reader.line_of(k.span()).or_else(|| self.reader.line_of(item.span()));
        let line = line.unwrap_or(self.line);
        self.reader.lines.insert(path.clone(), line);
        Some((path, line, item))
    }

    /// Reads `key` into `slot` with `parse`; a rejected value is reported and leaves `slot`.
    fn value<T>(&mut self, key: &'static str, slot: &mut T, parse: impl Fn(&Item) -> Result<T, String>) {
        let Some((path, line, item)) = self.take(key) else {
            return;
        };
        match parse(item) {
            Ok(value) => *slot = value,
            Err(message) => self.reader.reject(&path, line, message),
        }
    }

    /// Reads `key` as a table of free-form names, each value checked by `parse(name, item)`
    /// and reported on its own line.
    fn map<T>(
        &mut self,
        key: &'static str,
        slot: &mut BTreeMap<String, T>,
        parse: impl Fn(&str, &Item) -> Result<T, String>,
    ) {
        let Some((path, line, item)) = self.take(key) else {
            return;
        };
        let Some(table) = item.as_table_like() else {
            return self.reader.reject(&path, line, expected("a table", item));
        };
        let mut map = BTreeMap::new();
        for (name, value) in table.iter() {
            let entry_line = table.key(name).and_then(|k| self.reader.line_of(k.span()));
            match parse(name, value) {
                Ok(parsed) => {
                    map.insert(name.to_owned(), parsed);
                }
                Err(message) => self.reader.reject(&format!("{path}.{name}"), entry_line.unwrap_or(line), message),
            }
        }
        *slot = map;
    }

    /// Whether the table is in the file (and is a table).
    fn present(&self) -> bool {
        self.table.is_some()
    }

    /// Reports that required `key` is missing, at the table's line.
    fn missing(&mut self, key: &str, message: &str) {
        let path = self.key_path(key);
        let line = self.line;
        self.reader.reject(&path, line, format!("missing: {message}"));
    }

    /// Reads required `key` with `parse`; `None` (reported) if absent or rejected.
    fn required<T>(&mut self, key: &'static str, parse: impl Fn(&Item) -> Result<T, String>) -> Option<T> {
        let Some((path, line, item)) = self.take(key) else {
            self.missing(key, "this key is required");
            return None;
        };
        parse(item).map_err(|message| self.reader.reject(&path, line, message)).ok()
    }

    /// Reads `key` as an array of tables (`[[a.b]]` blocks, or an array of inline
    /// tables), each read by `read` as section `key[i]` whose untaken keys are reported.
    /// Entries `read` refuses (`None`, already reported) are left out of `slot`.
    fn tables<T>(
        &mut self,
        key: &'static str,
        slot: &mut Vec<T>,
        mut read: impl FnMut(&mut Section<'_, 'a>) -> Option<T>,
    ) {
        let Some((path, line, item)) = self.take(key) else {
            return;
        };
        let tables: Vec<(&'a dyn TableLike, Option<Range<usize>>)> = match item {
            Item::ArrayOfTables(array) => array.iter().map(|t| (t as &dyn TableLike, t.span())).collect(),
            Item::Value(Value::Array(array)) if array.iter().all(Value::is_inline_table) => {
                array.iter().filter_map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, t.span()))).collect()
            }
            _ => return self.reader.reject(&path, line, expected("an array of tables", item)),
        };
        let mut entries = Vec::with_capacity(tables.len());
        for (i, (table, span)) in tables.into_iter().enumerate() {
            let line = self.reader.line_of(span).unwrap_or(line);
            let path = format!("{path}[{i}]");
            let mut child = Section { reader: &mut *self.reader, path, table: Some(table), line, taken: Vec::new() };
            entries.extend(read(&mut child));
            child.finish();
        }
        *slot = entries;
    }

    /// Reads sub-table `key` with `read`, then reports the keys `read` did not take.
    fn section(&mut self, key: &'static str, read: impl FnOnce(&mut Section<'_, 'a>)) {
        let (path, line, table) = match self.take(key) {
            None => (self.key_path(key), self.line, None),
            Some((path, line, item)) => {
                let table = item.as_table_like();
                if table.is_none() {
                    self.reader.reject(&path, line, expected("a table", item));
                }
                (path, line, table)
            }
        };
        let mut child = Section { reader: &mut *self.reader, path, table, line, taken: Vec::new() };
        read(&mut child);
        child.finish();
    }

    /// Reports every key of the table that was not taken, with a suggestion if one is close.
    fn finish(self) {
        let Some(table) = self.table else { return };
        for (name, item) in table.iter() {
            if self.taken.contains(&name) {
                continue;
            }
            let line = table.key(name).and_then(|k| self.reader.line_of(k.span()));
            let line = line.or_else(|| self.reader.line_of(item.span())).unwrap_or(self.line);
            let what = if item.is_table_like() || item.is_array_of_tables() { "table" } else { "key" };
            let known = self.taken.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
            let message = match self.taken.iter().find(|k| edit_distance(name, k) <= 2) {
                Some(close) => format!("unknown {what}; did you mean `{close}`?"),
                None => format!("unknown {what}; expected one of {known}"),
            };
            self.reader.error(&self.key_path(name), line, message);
        }
    }
}

/// Levenshtein distance, for "did you mean" suggestions on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

fn expected(what: &str, item: &Item) -> String {
    format!("expected {what}, found {}", item.type_name())
}

fn string(item: &Item) -> Result<String, String> {
    item.as_str().map(str::to_owned).ok_or_else(|| expected("a string", item))
}

fn non_empty_string(item: &Item) -> Result<String, String> {
    let text = string(item)?;
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(text)
}

/// A file path, relative to the working directory unless absolute.
fn file_path(item: &Item) -> Result<PathBuf, String> {
    let text = item.as_str().ok_or_else(|| expected("a file path string", item))?;
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// A non-empty array of literal path prefixes, each starting with `/`.
fn path_prefixes(item: &Item) -> Result<Vec<String>, String> {
    let array = item.as_array().ok_or_else(|| expected("an array of path prefixes such as [\"/api\"]", item))?;
    if array.is_empty() {
        return Err("must list at least one prefix (\"/\" allows every path)".to_owned());
    }
    let mut prefixes = Vec::with_capacity(array.len());
    for value in array.iter() {
        let prefix = value.as_str().ok_or_else(|| format!("expected prefix strings, found {}", value.type_name()))?;
        if !prefix.starts_with('/') {
            return Err(format!("prefix `{prefix}` must start with `/`"));
        }
        if let Some(bad) = prefix.chars().find(|c| "{}?#".contains(*c) || c.is_whitespace()) {
            return Err(format!("prefix `{prefix}` must be a literal path ({bad:?} is not allowed)"));
        }
        prefixes.push(prefix.to_owned());
    }
    Ok(prefixes)
}

fn socket_addr(item: &Item) -> Result<SocketAddr, String> {
    let text = item.as_str().ok_or_else(|| expected("a socket address string", item))?;
    text.parse().map_err(|_| {
        format!("`{text}` is not a socket address (write IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::1]:8080\")")
    })
}

/// A lowercase HTTP header name: one or more RFC 9110 token characters, no uppercase.
fn header_name(item: &Item) -> Result<String, String> {
    let name = string(item)?;
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(bad) = name.chars().find(|&c| !is_tchar(c)) {
        return Err(format!("`{name}` is not a valid HTTP header name ({bad:?} is not allowed)"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("must be lowercase: write `{}`", name.to_ascii_lowercase()));
    }
    Ok(name)
}

/// A service's default version: a strict semantic version such as `1.4.0`.
fn service_version(service: &str, item: &Item) -> Result<String, String> {
    if service.is_empty() {
        return Err("service name must not be empty".to_owned());
    }
    let text = item.as_str().ok_or_else(|| expected("a version string such as \"1.2.0\"", item))?;
    match semver::Version::parse(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!("`{text}` is not a semantic version MAJOR.MINOR.PATCH: {e}")),
    }
}

/// A size in bytes within `min..=max`, converted to the field's integer type.
fn size<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(&Item) -> Result<T, String> {
    move |item| {
        let bytes = if let Some(n) = item.as_integer() {
            u64::try_from(n).map_err(|_| "must not be negative".to_owned())?
        } else if let Some(text) = item.as_str() {
            parse_size(text)?
        } else if item.as_float().is_some() {
            return Err("fractions are not allowed: use whole bytes or a smaller unit, e.g. \"1536KiB\"".to_owned());
        } else {
            return Err(expected("a size (integer bytes, or a string such as \"64KiB\")", item));
        };
        if bytes == 0 {
            return Err("must be greater than zero".to_owned());
        }
        within(bytes, min, max, show_size)?;
        T::try_from(bytes).map_err(|_| format!("{} is too large for this platform", show_size(&bytes)))
    }
}

/// `"512"`, `"64KiB"`, `"10MB"`, ...: whole number, optional space, case-insensitive unit.
fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => TIB,
        _ => {
            return Err(format!("unknown size unit `{unit}` in `{text}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"))
        }
    };
    number.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration: integer seconds or a string such as `"300ms"`; nonzero, at most 24 h.
fn duration(item: &Item) -> Result<Duration, String> {
    let value = if let Some(n) = item.as_integer() {
        Duration::from_secs(u64::try_from(n).map_err(|_| "must not be negative".to_owned())?)
    } else if let Some(text) = item.as_str() {
        parse_duration(text)?
    } else if item.as_float().is_some() {
        return Err("fractions are not allowed: use a smaller unit, e.g. \"1500ms\"".to_owned());
    } else {
        return Err(expected("a duration (integer seconds, or a string such as \"5s\")", item));
    };
    if value.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    within(value, Duration::ZERO, MAX_DURATION, show_duration)?;
    Ok(value)
}

/// `"250us"`, `"300ms"`, `"5s"`, `"2m"`, `"1h"`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    let too_large = || format!("`{text}` is too large");
    match unit.to_ascii_lowercase().as_str() {
        "us" | "µs" => Ok(Duration::from_micros(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs).ok_or_else(too_large),
        "h" => number.checked_mul(3600).map(Duration::from_secs).ok_or_else(too_large),
        _ => Err(format!("unknown duration unit `{unit}` in `{text}` (use us, ms, s, m or h)")),
    }
}

/// Splits `"64 KiB"` into `64` and `"KiB"`, rejecting signs, fractions and overflow.
fn split_number(text: &str) -> Result<(u64, &str), String> {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, rest) = text.split_at(end);
    if text.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    if rest.starts_with('.') || rest.starts_with(',') {
        return Err(format!("`{text}` has a fraction: use a whole number of a smaller unit"));
    }
    if digits.is_empty() {
        return Err(format!("`{text}` does not start with a number"));
    }
    let number = digits.parse::<u64>().map_err(|_| format!("`{text}` is too large"))?;
    Ok((number, rest.trim_start()))
}

fn within<T: PartialOrd>(value: T, min: T, max: T, show: fn(&T) -> String) -> Result<(), String> {
    if value < min {
        return Err(format!("{} is below the minimum of {}", show(&value), show(&min)));
    }
    if value > max {
        return Err(format!("{} is above the maximum of {}", show(&value), show(&max)));
    }
    Ok(())
}

/// `8 MiB`, `1536 KiB`, `1000 bytes`: the largest binary unit that divides exactly.
fn show_size(bytes: &u64) -> String {
    let units = [(" TiB", TIB), (" GiB", GIB), (" MiB", MIB), (" KiB", KIB), (" bytes", 1)];
    in_largest_unit(u128::from(*bytes), &units.map(|(name, scale)| (name, u128::from(scale))))
}

/// `1h`, `90s`, `300ms`, `250us`: the largest unit of the grammar that divides exactly.
fn show_duration(d: &Duration) -> String {
    const S: u128 = 1_000_000_000;
    let units = [("h", 3600 * S), ("m", 60 * S), ("s", S), ("ms", S / 1000), ("us", S / 1_000_000), ("ns", 1)];
    in_largest_unit(d.as_nanos(), &units)
}

/// `value` written in the first of `units` (largest first, smallest 1) that divides it.
fn in_largest_unit(value: u128, units: &[(&str, u128)]) -> String {
    let fits = |scale: u128| value.checked_rem(scale) == Some(0) && (value >= scale || scale == 1);
    match units.iter().find(|(_, scale)| fits(*scale)) {
        Some((name, scale)) => format!("{}{name}", value / scale),
        None => format!("{value}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors of `text`, as `(line, key)` pairs in report order.
    fn problems(text: &str) -> Vec<(usize, String)> {
        let errors = load_config(text).expect_err("config should be rejected").errors;
        errors.into_iter().map(|e| (e.line, e.key)).collect()
    }

    /// The single error of `text`.
    fn only_error(text: &str) -> ConfigError {
        let errors = load_config(text).expect_err("config should be rejected").errors;
        assert_eq!(errors.len(), 1, "expected one error, got {errors:?}");
        errors.into_iter().next().expect("one error")
    }

    fn limits(body: &str) -> LimitsConfig {
        load_config(&format!("[limits]\n{body}\n")).expect("valid config").limits
    }

    fn server(body: &str) -> ServerConfig {
        load_config(&format!("[server]\n{body}\n")).expect("valid config").server
    }

    #[test]
    fn empty_file_and_empty_sections_give_defaults() {
        assert_eq!(load_config("").unwrap(), GatewayConfig::default());
        assert_eq!(load_config("# only a comment\n\n").unwrap(), GatewayConfig::default());
        let sections = "[server]\n[routing]\n[routing.default_versions]\n[limits]\n";
        assert_eq!(load_config(sections).unwrap(), GatewayConfig::default());
    }

    #[test]
    fn documented_example_loads_with_every_key() {
        let doc = include_str!("../../../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("example block") + "```toml\n".len();
        let example = &doc[start..start + doc[start..].find("```").expect("block end")];
        let c = load_config(example).unwrap_or_else(|e| panic!("example is invalid:\n{e}"));
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.server.default_timeout, Duration::from_secs(15));
        assert_eq!(c.server.max_timeout, Duration::from_secs(120));
        assert_eq!(c.server.header_timeout, Duration::from_secs(5));
        assert_eq!(c.server.read_timeout, Duration::from_millis(15_000));
        assert_eq!(c.server.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.routing.region, "eu-west");
        assert_eq!(c.routing.version_header, "x-api-version");
        assert_eq!(c.routing.default_versions["billing"], "2.1.0");
        assert_eq!(c.routing.default_versions["search"], "1.0.0-beta.2");
        assert_eq!(c.routing.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.routing.degraded_after, Duration::from_secs(6));
        assert_eq!(c.routing.evict_after, Duration::from_secs(60));
        assert_eq!(c.limits.payload.max_request_bytes_per_call, 2 * MIB);
        assert_eq!(c.limits.payload.max_request_bytes_per_connection, 32 * MIB);
        assert_eq!(c.limits.payload.max_aggregate_inflight_bytes, GIB);
        assert_eq!(c.limits.max_upload_size, 5 * GIB);
        assert_eq!(c.limits.chunk_size, 128 * 1024);
        assert_eq!(c.limits.stream_window, 512 * 1024);
        let services = &c.services;
        assert_eq!(services.listen, "0.0.0.0:7443".parse::<SocketAddr>().unwrap());
        assert_eq!(services.handshake_timeout, Duration::from_secs(5));
        let tls = services.tls.as_ref().expect("tls");
        assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/weir/services-ca.pem")));
        assert_eq!(services.credentials.len(), 2);
        assert_eq!(services.credentials[0].prefixes, ["/billing", "/invoices"]);
        assert_eq!(services.credentials[1].token, None);
    }

    #[test]
    fn missing_keys_keep_their_defaults() {
        let c = load_config("[server]\nmax_timeout = \"10m\"\n").unwrap();
        let expected = ServerConfig { max_timeout: Duration::from_secs(600), ..ServerConfig::default() };
        assert_eq!(c.server, expected);
        assert_eq!(c.routing, RoutingConfig::default());
        assert_eq!(c.limits, LimitsConfig::default());
    }

    #[test]
    fn sizes_accept_every_unit() {
        let cases = [
            ("1048576", MIB),
            ("\"1048576\"", MIB),
            ("\"1048576B\"", MIB),
            ("\"1024KiB\"", MIB),
            ("\"1MiB\"", MIB),
            ("\"1 mib\"", MIB),
            ("\"1000KB\"", 1_000_000),
            ("\"1MB\"", 1_000_000),
            ("\"1gb\"", 1_000_000_000),
            ("\"2GiB\"", 2 * GIB),
            ("\"1TB\"", 1_000_000_000_000),
            ("\"3TiB\"", 3 * TIB),
        ];
        for (value, bytes) in cases {
            let l = limits(&format!("max_upload_size = {value}"));
            assert_eq!(l.max_upload_size, bytes, "{value}");
        }
    }

    #[test]
    fn invalid_sizes_are_rejected_with_reasons() {
        let cases = [
            ("\"1.5MiB\"", "fraction"),
            ("1.5", "fractions are not allowed"),
            ("-1", "must not be negative"),
            ("\"-1KiB\"", "negative"),
            ("0", "greater than zero"),
            ("\"0MiB\"", "greater than zero"),
            ("\"10XB\"", "unknown size unit `XB`"),
            ("\"10 K\"", "unknown size unit `K`"),
            ("\"MiB\"", "does not start with a number"),
            ("\"\"", "does not start with a number"),
            ("\"99999999999999999999\"", "too large"),
            ("\"20000000TiB\"", "too large"),
            ("true", "expected a size"),
            ("[1]", "found array"),
        ];
        for (value, reason) in cases {
            let e = only_error(&format!("[limits]\nmax_upload_size = {value}\n"));
            assert_eq!((e.line, e.key.as_str()), (2, "limits.max_upload_size"), "{value}");
            assert!(e.message.contains(reason), "{value}: {}", e.message);
        }
    }

    #[test]
    fn sizes_convert_to_each_field_type() {
        let l = limits("chunk_size = \"16MiB\"\nstream_window = \"1GiB\"\nmax_request_bytes_per_call = \"8MiB\"");
        assert_eq!(l.chunk_size, 16 * 1024 * 1024);
        assert_eq!(l.stream_window, 1 << 30);
        assert_eq!(l.payload.max_request_bytes_per_call, 8 * MIB);
        assert_eq!(limits("stream_window = \"1KiB\"").stream_window, 1024);
    }

    #[test]
    fn absolute_size_bounds_are_enforced() {
        let cases = [
            ("max_request_bytes_per_call = \"9MiB\"", "above the maximum of 8 MiB"),
            ("chunk_size = \"17MiB\"", "above the maximum of 16 MiB"),
            ("stream_window = 1023", "below the minimum of 1 KiB"),
            ("stream_window = \"2GiB\"", "above the maximum of 1 GiB"),
        ];
        for (line, reason) in cases {
            let e = only_error(&format!("[limits]\n{line}\n"));
            assert!(e.message.contains(reason), "{line}: {}", e.message);
        }
    }

    #[test]
    fn durations_accept_every_unit() {
        let cases = [
            ("7", Duration::from_secs(7)),
            ("\"7\"", Duration::from_secs(7)),
            ("\"7s\"", Duration::from_secs(7)),
            ("\"300ms\"", Duration::from_millis(300)),
            ("\"250us\"", Duration::from_micros(250)),
            ("\"250µs\"", Duration::from_micros(250)),
            ("\"2m\"", Duration::from_secs(120)),
            ("\"1h\"", Duration::from_secs(3600)),
            ("\"24h\"", Duration::from_secs(86_400)),
            ("\"5S\"", Duration::from_secs(5)),
            ("\"5 ms\"", Duration::from_millis(5)),
        ];
        for (value, expected) in cases {
            assert_eq!(server(&format!("shutdown_grace = {value}")).shutdown_grace, expected, "{value}");
        }
    }

    #[test]
    fn invalid_durations_are_rejected_with_reasons() {
        let cases = [
            ("0", "greater than zero"),
            ("\"0ms\"", "greater than zero"),
            ("-5", "must not be negative"),
            ("\"-5s\"", "negative"),
            ("1.5", "fractions are not allowed"),
            ("\"1.5s\"", "fraction"),
            ("\"5d\"", "unknown duration unit `d`"),
            ("\"1h30m\"", "unknown duration unit `h30m`"),
            ("\"25h\"", "above the maximum of 24h"),
            ("\"99999999999999999999h\"", "too large"),
            ("\"18446744073709551615h\"", "too large"),
            ("\"s\"", "does not start with a number"),
            ("\"fast\"", "does not start with a number"),
            ("{ secs = 5 }", "expected a duration"),
        ];
        for (value, reason) in cases {
            let e = only_error(&format!("[server]\nshutdown_grace = {value}\n"));
            assert_eq!((e.line, e.key.as_str()), (2, "server.shutdown_grace"), "{value}");
            assert!(e.message.contains(reason), "{value}: {}", e.message);
        }
    }

    #[test]
    fn scalar_values_are_checked() {
        let cases = [
            ("[server]\nlisten = \"localhost:80\"", "server.listen", "not a socket address"),
            ("[server]\nlisten = 8080", "server.listen", "found integer"),
            ("[routing]\nregion = 3", "routing.region", "expected a string, found integer"),
            ("[routing]\nversion_header = \"X-Version\"", "routing.version_header", "write `x-version`"),
            ("[routing]\nversion_header = \"x version\"", "routing.version_header", "' ' is not allowed"),
            ("[routing]\nversion_header = \"x:v\"", "routing.version_header", "':' is not allowed"),
            ("[routing]\nversion_header = \"\"", "routing.version_header", "must not be empty"),
        ];
        for (text, key, reason) in cases {
            let e = only_error(text);
            assert_eq!((e.line, e.key.as_str()), (2, key), "{text}");
            assert!(e.message.contains(reason), "{text}: {}", e.message);
        }
        let listen = server("listen = \"[::1]:0\"").listen;
        assert_eq!(listen, "[::1]:0".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn admin_listen_is_optional_and_apart_from_listen() {
        assert_eq!(server("").admin_listen, None);
        let admin = server("admin_listen = \"[::1]:9000\"").admin_listen;
        assert_eq!(admin, Some("[::1]:9000".parse().unwrap()));
        let both_ephemeral = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"";
        assert_eq!(server(both_ephemeral).admin_listen.map(|a| a.port()), Some(0));
        let e = only_error("[server]\nlisten = \"0.0.0.0:80\"\nadmin_listen = \"0.0.0.0:80\"\n");
        assert_eq!((e.line, e.key.as_str()), (3, "server.admin_listen"));
        assert_eq!(e.message, "must differ from server.listen");
        let e = only_error("[server]\nadmin_listen = \"off\"\n");
        assert!(e.message.contains("not a socket address"), "{}", e.message);
    }

    #[test]
    fn default_versions_accept_inline_and_sub_tables() {
        let inline = "[routing]\ndefault_versions = { billing = \"1.2.3\", \"user-profile\" = \"0.1.0\" }\n";
        let sub = "[routing.default_versions]\nbilling = \"1.2.3\"\n\"user-profile\" = \"0.1.0\"\n";
        for text in [inline, sub] {
            let versions = load_config(text).unwrap().routing.default_versions;
            let expected = [("billing", "1.2.3"), ("user-profile", "0.1.0")];
            let expected = expected.map(|(k, v)| (k.to_owned(), v.to_owned())).into_iter().collect();
            assert_eq!(versions, expected, "{text}");
        }
    }

    #[test]
    fn default_versions_report_each_bad_entry_on_its_line() {
        let text = "[routing.default_versions]\na = \"1.2\"\nb = \"1.0.0\"\nc = \"v1.0.0\"\nd = 1\n\"\" = \"1.0.0\"\n";
        let errors = load_config(text).unwrap_err().errors;
        let got: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        let want = [
            (2, "routing.default_versions.a"),
            (4, "routing.default_versions.c"),
            (5, "routing.default_versions.d"),
            (6, "routing.default_versions."),
        ];
        assert_eq!(got, want);
        assert!(errors[0].message.contains("not a semantic version"));
        assert!(errors[2].message.contains("expected a version string"));
        assert!(errors[3].message.contains("service name must not be empty"));
        let e = only_error("[routing]\ndefault_versions = \"1.0.0\"\n");
        assert_eq!((e.line, e.key.as_str()), (2, "routing.default_versions"));
        assert!(e.message.contains("expected a table, found string"));
    }

    #[test]
    fn unknown_keys_and_sections_are_reported_with_lines() {
        let text = "[server]\nlisten = \"0.0.0.0:80\"\nlistn = 1\ncolour = \"blue\"\n\n[metrics]\nport = 9\n\n[[plugins]]\nname = \"x\"\n";
        let errors = load_config(text).unwrap_err().errors;
        let got: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, [(3, "server.listn"), (4, "server.colour"), (6, "metrics"), (9, "plugins")]);
        assert_eq!(errors[0].message, "unknown key; did you mean `listen`?");
        assert!(errors[1].message.starts_with("unknown key; expected one of `listen`, `shutdown_grace`"));
        assert!(errors[2].message.starts_with("unknown table; expected one of `server`, `routing`, `limits`"));
        assert!(errors[3].message.starts_with("unknown table"));
    }

    #[test]
    fn unknown_keys_in_nested_and_dotted_forms_are_reported() {
        assert_eq!(problems("server.lissten = \"x\"\n"), [(1, "server.lissten".to_owned())]);
        assert_eq!(problems("[limits.extra]\nx = 1\n"), [(1, "limits.extra".to_owned())]);
        assert_eq!(problems("top = 1\n"), [(1, "top".to_owned())]);
        let c = load_config("server.listen = \"127.0.0.1:9\"\n").unwrap();
        assert_eq!(c.server.listen.port(), 9);
    }

    #[test]
    fn a_section_of_the_wrong_type_is_one_error() {
        let e = only_error("\n\nserver = 5\n");
        assert_eq!((e.line, e.key.as_str()), (3, "server"));
        assert_eq!(e.message, "expected a table, found integer");
        let e = only_error("[[limits]]\nchunk_size = 1\n");
        assert_eq!((e.line, e.key.as_str()), (1, "limits"));
        assert!(e.message.contains("found array of tables"));
    }

    #[test]
    fn every_error_is_reported_at_once_in_line_order() {
        let text = "\
[limits]
chunk_size = \"1.5MiB\"
stream_window = 0
bogus = true

[server]
listen = \"nowhere\"
default_timeout = \"2h\"
max_timeout = \"1h\"

[routing]
version_header = \"X-V\"
evict_after = \"5s\"
[nope]
";
        let got = problems(text);
        let want = [
            (2, "limits.chunk_size"),
            (3, "limits.stream_window"),
            (4, "limits.bogus"),
            (7, "server.listen"),
            (8, "server.default_timeout"),
            (12, "routing.version_header"),
            (13, "routing.evict_after"),
            (14, "nope"),
        ];
        assert_eq!(got, want.map(|(l, k)| (l, k.to_owned())));
    }

    #[test]
    fn cross_field_rules_name_the_key_set_in_the_file() {
        let cases = [
            (
                "[server]\ndefault_timeout = \"10m\"",
                "server.default_timeout",
                "10m must not exceed server.max_timeout (5m)",
            ),
            ("[server]\nmax_timeout = 20", "server.max_timeout", "20s must be at least server.default_timeout (30s)"),
            (
                "[routing]\nheartbeat_interval = 15",
                "routing.heartbeat_interval",
                "15s must be less than routing.degraded_after (15s)",
            ),
            (
                "[routing]\ndegraded_after = 5",
                "routing.degraded_after",
                "5s must be more than routing.heartbeat_interval (5s)",
            ),
            (
                "[routing]\nevict_after = 15",
                "routing.evict_after",
                "15s must be more than routing.degraded_after (15s)",
            ),
            (
                "[limits]\nmax_request_bytes_per_call = \"8MiB\"\nmax_request_bytes_per_connection = \"4MiB\"",
                "limits.max_request_bytes_per_call",
                "8 MiB must not exceed limits.max_request_bytes_per_connection (4 MiB)",
            ),
            (
                "[limits]\nmax_request_bytes_per_connection = \"512KiB\"",
                "limits.max_request_bytes_per_connection",
                "512 KiB must be at least limits.max_request_bytes_per_call (1 MiB)",
            ),
            (
                "[limits]\nmax_aggregate_inflight_bytes = \"8MiB\"",
                "limits.max_aggregate_inflight_bytes",
                "8 MiB must be at least limits.max_request_bytes_per_connection (16 MiB)",
            ),
            (
                "[limits]\nmax_upload_size = 1000",
                "limits.max_upload_size",
                "1000 bytes must be at least limits.chunk_size (64 KiB)",
            ),
            ("[limits]\nchunk_size = \"2MiB\"\nmax_upload_size = \"1MiB\"", "limits.chunk_size", "must not exceed"),
        ];
        for (text, key, message) in cases {
            let e = only_error(text);
            assert_eq!(e.key, key, "{text}");
            assert!(e.message.contains(message), "{text}: {}", e.message);
            assert_eq!(e.line, 2, "{text}");
        }
    }

    #[test]
    fn relations_may_hold_at_their_bounds() {
        let text =
            "[server]\ndefault_timeout = 60\nmax_timeout = 60\n[limits]\nmax_request_bytes_per_call = \"1MiB\"\n\
                    max_request_bytes_per_connection = \"1MiB\"\nmax_aggregate_inflight_bytes = \"1MiB\"\n\
                    chunk_size = 4096\nmax_upload_size = 4096\n";
        assert!(load_config(text).is_ok());
    }

    #[test]
    fn a_rejected_value_does_not_also_fail_its_relations() {
        let e = only_error(
            "[limits]\nmax_request_bytes_per_call = \"lots\"\nmax_request_bytes_per_connection = \"512KiB\"\n",
        );
        assert_eq!(e.key, "limits.max_request_bytes_per_call");
    }

    #[test]
    fn toml_syntax_errors_carry_their_line() {
        let e = only_error("[server]\nlisten = \"0.0.0.0:80\"\nmax_timeout = = 3\n");
        assert_eq!((e.line, e.key.as_str()), (3, ""));
        assert!(e.message.starts_with("invalid TOML"), "{}", e.message);
        let e = only_error("[server]\nmax_timeout = 3\nmax_timeout = 4\n");
        assert_eq!(e.line, 3);
    }

    #[test]
    fn display_prints_one_error_per_line() {
        let errors = load_config("[server]\nlisten = 1\n[x]\n").unwrap_err();
        let shown = errors.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "line 2: server.listen: expected a socket address string, found integer");
        assert!(lines[1].starts_with("line 3: x: unknown table"));
        assert_eq!(only_error("a = = 1").to_string().split(": ").next(), Some("line 1"));
    }

    #[test]
    fn shown_values_use_the_largest_exact_unit() {
        assert_eq!(show_size(&(8 * MIB)), "8 MiB");
        assert_eq!(show_size(&(1536 * KIB)), "1536 KiB");
        assert_eq!(show_size(&1000), "1000 bytes");
        assert_eq!(show_duration(&Duration::from_secs(7200)), "2h");
        assert_eq!(show_duration(&Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(&Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(&Duration::from_micros(250)), "250us");
        assert_eq!(edit_distance("listn", "listen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    fn services(body: &str) -> ServicesConfig {
        load_config(body).unwrap_or_else(|e| panic!("invalid:\n{e}")).services
    }

    #[test]
    fn services_keys_tls_and_credentials_are_read() {
        let text = "\
[services]
listen = \"0.0.0.0:7443\"
handshake_timeout = \"3s\"

[services.tls]
cert = \"gw.pem\"
key = \"/etc/weir/gw.key\"
client_ca = \"ca.pem\"

[[services.credentials]]
service = \"billing\"
token = \"s3cret\"
prefixes = [\"/billing\", \"/invoices/\"]

[[services.credentials]]
service = \"search\"
prefixes = [\"/\"]
";
        let c = services(text);
        assert_eq!(c.listen, "0.0.0.0:7443".parse::<SocketAddr>().unwrap());
        assert_eq!(c.handshake_timeout, Duration::from_secs(3));
        let tls = c.tls.expect("tls");
        assert_eq!((tls.cert.to_str(), tls.key.to_str()), (Some("gw.pem"), Some("/etc/weir/gw.key")));
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.credentials.len(), 2);
        assert_eq!(c.credentials[0].service, "billing");
        assert_eq!(c.credentials[0].token.as_deref(), Some("s3cret"));
        assert_eq!(c.credentials[0].prefixes, ["/billing", "/invoices/"]);
        assert_eq!(
            (c.credentials[1].token.as_ref(), c.credentials[1].prefixes.as_slice()),
            (None, &["/".to_owned()][..])
        );
    }

    #[test]
    fn services_default_to_plain_tcp_on_7070_without_credentials() {
        let c = services("[services]\n");
        assert_eq!(c, ServicesConfig::default());
        assert_eq!(c.listen, "127.0.0.1:7070".parse::<SocketAddr>().unwrap());
        assert_eq!((c.tls, c.credentials.len()), (None, 0));
        let inline = "[services]\ncredentials = [{ service = \"a\", token = \"t\", prefixes = [\"/a\"] }]\n";
        assert_eq!(services(inline).credentials[0].prefixes, ["/a"]);
    }

    #[test]
    fn services_tls_needs_a_cert_and_a_key() {
        let errors = load_config("[services.tls]\nclient_ca = \"ca.pem\"\n").unwrap_err().errors;
        let got: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, [(1, "services.tls.cert"), (1, "services.tls.key")]);
        assert!(errors[0].message.starts_with("missing"), "{}", errors[0].message);
        let e = only_error("[services.tls]\ncert = \"\"\nkey = \"k.pem\"\n");
        assert_eq!((e.line, e.key.as_str(), e.message.as_str()), (2, "services.tls.cert", "must not be empty"));
    }

    #[test]
    fn bad_credentials_are_reported_per_entry_and_key() {
        let cases = [
            ("token = \"t\"\nprefixes = [\"/a\"]", "services.credentials[0].service", "missing"),
            ("service = \"a\"\ntoken = \"t\"", "services.credentials[0].prefixes", "missing"),
            (
                "service = \"\"\ntoken = \"t\"\nprefixes = [\"/a\"]",
                "services.credentials[0].service",
                "must not be empty",
            ),
            (
                "service = \"a\"\ntoken = \"\"\nprefixes = [\"/a\"]",
                "services.credentials[0].token",
                "must not be empty",
            ),
            ("service = \"a\"\ntoken = 5\nprefixes = [\"/a\"]", "services.credentials[0].token", "expected a string"),
            (
                "service = \"a\"\ntoken = \"t\"\nprefixes = []",
                "services.credentials[0].prefixes",
                "at least one prefix",
            ),
            (
                "service = \"a\"\ntoken = \"t\"\nprefixes = [\"api\"]",
                "services.credentials[0].prefixes",
                "must start with `/`",
            ),
            (
                "service = \"a\"\ntoken = \"t\"\nprefixes = [\"/a/{id}\"]",
                "services.credentials[0].prefixes",
                "literal path",
            ),
            (
                "service = \"a\"\ntoken = \"t\"\nprefixes = \"/a\"",
                "services.credentials[0].prefixes",
                "expected an array",
            ),
            (
                "service = \"a\"\ntoken = \"t\"\nprefixes = [\"/a\"]\nprefix = 1",
                "services.credentials[0].prefix",
                "unknown key",
            ),
            ("service = \"a\"\nprefixes = [\"/a\"]", "services.credentials[0].token", "unless services.tls.client_ca"),
        ];
        for (entry, key, reason) in cases {
            let e = only_error(&format!("[[services.credentials]]\n{entry}\n"));
            assert_eq!(e.key, key, "{entry}");
            assert!(e.message.contains(reason), "{entry}: {}", e.message);
        }
        let e = only_error("[services]\ncredentials = 5\n");
        assert_eq!((e.line, e.key.as_str()), (2, "services.credentials"));
        assert!(e.message.contains("expected an array of tables"), "{}", e.message);
    }

    #[test]
    fn each_credential_entry_is_numbered_and_found_on_its_line() {
        let text = "[[services.credentials]]\nservice = \"a\"\ntoken = \"t\"\nprefixes = [\"/a\"]\n\n\
                    [[services.credentials]]\nservice = \"b\"\ntoken = \"t\"\nprefixes = [\"b\"]\n";
        let e = only_error(text);
        assert_eq!((e.line, e.key.as_str()), (9, "services.credentials[1].prefixes"));
        let missing = only_error("[[services.credentials]]\nservice = \"a\"\ntoken = \"t\"\n");
        assert_eq!(missing.line, 1, "{missing}");
    }

    #[test]
    fn a_token_without_client_ca_is_only_optional_with_mutual_tls() {
        let text = "[services.tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n\
                    [[services.credentials]]\nservice = \"a\"\nprefixes = [\"/a\"]\n";
        assert_eq!(services(text).credentials[0].token, None);
    }

    #[test]
    fn tokens_never_appear_in_errors_or_debug_output() {
        let text = "[[services.credentials]]\nservice = \"a\"\ntoken = \"hunter2\"\nprefixes = [\"bad\"]\n";
        assert!(!load_config(text).unwrap_err().to_string().contains("hunter2"));
        let ok = "[[services.credentials]]\nservice = \"a\"\ntoken = \"hunter2\"\nprefixes = [\"/a\"]\n";
        assert!(!format!("{:?}", load_config(ok).unwrap()).contains("hunter2"));
    }
}
