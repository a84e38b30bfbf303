//! The reader: walks the TOML document, records the line of every known key, reports each
//! problem with its dotted key and line (and unknown keys, with a suggestion), and keeps
//! going after every error.

use super::*;

/// How the first value of a relation must compare with the second.
#[derive(Clone, Copy)]
pub(super) enum Order {
    AtMost,
    Below,
}

/// Collects errors and remembers where keys were, for the checks after reading.
pub(super) struct Reader<'a> {
    pub(super) text: &'a str,
    pub(super) errors: Vec<ConfigError>,
    /// Line of every known key present in the file, by dotted path.
    pub(super) lines: HashMap<String, usize>,
    /// Keys whose value was rejected: relations involving them are not checked.
    pub(super) rejected: HashSet<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Reader { text, errors: Vec::new(), lines: HashMap::new(), rejected: HashSet::new() }
    }

    /// 1-based line of the start of `span`.
    pub(super) fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        let end = span?.start.min(self.text.len());
        Some(self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1)
    }

    pub(super) fn error(&mut self, key: &str, line: usize, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.to_owned(), line, message: message.into() });
    }

    pub(super) fn reject(&mut self, key: &str, line: usize, message: impl Into<String>) {
        self.rejected.insert(key.to_owned());
        self.error(key, line, message);
    }

    /// Checks `lo <order> hi`, blaming `lo` unless only `hi` is set in the file (line 1 if
    /// neither is: the defaults themselves would be inconsistent).
    pub(super) fn relate<T: PartialOrd>(&mut self, lo: (&str, T), order: Order, hi: (&str, T), show: fn(&T) -> String) {
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
    pub(super) fn finish(mut self, config: GatewayConfig) -> Result<GatewayConfig, ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(config);
        }
        self.errors.sort_by_key(|e| e.line);
        Err(ConfigErrors { errors: self.errors })
    }
}

/// A table being read: hands out its keys and, when finished, reports those nobody took.
pub(super) struct Section<'r, 'a> {
    pub(super) reader: &'r mut Reader<'a>,
    /// Dotted path of this table; empty for the document root.
    pub(super) path: String,
    /// `None` when the table is absent or was not a table (already reported).
    pub(super) table: Option<&'a dyn TableLike>,
    /// Line errors fall back to when toml_edit has no span for a key.
    pub(super) line: usize,
    pub(super) taken: Vec<&'static str>,
}

impl<'r, 'a> Section<'r, 'a> {
    pub(super) fn root(reader: &'r mut Reader<'a>, table: &'a dyn TableLike) -> Self {
        Section { reader, path: String::new(), table: Some(table), line: 1, taken: Vec::new() }
    }

    pub(super) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Marks `key` as known; returns its dotted path, line and item if the file sets it.
    pub(super) fn take(&mut self, key: &'static str) -> Option<(String, usize, &'a Item)> {
        self.taken.push(key);
        let (k, item) = self.table?.get_key_value(key)?;
        let path = self.key_path(key);
        let line = self.reader.line_of(k.span()).or_else(|| self.reader.line_of(item.span()));
        let line = line.unwrap_or(self.line);
        self.reader.lines.insert(path.clone(), line);
        Some((path, line, item))
    }

    /// Reads `key` into `slot` with `parse`; a rejected value is reported and leaves `slot`.
    pub(super) fn value<T>(&mut self, key: &'static str, slot: &mut T, parse: impl Fn(&Item) -> Result<T, String>) {
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
    pub(super) fn map<T>(
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
    pub(super) fn present(&self) -> bool {
        self.table.is_some()
    }

    /// Reports that required `key` is missing, at the table's line.
    pub(super) fn missing(&mut self, key: &str, message: &str) {
        let path = self.key_path(key);
        let line = self.line;
        self.reader.reject(&path, line, format!("missing: {message}"));
    }

    /// Reads required `key` with `parse`; `None` (reported) if absent or rejected.
    pub(super) fn required<T>(&mut self, key: &'static str, parse: impl Fn(&Item) -> Result<T, String>) -> Option<T> {
        let Some((path, line, item)) = self.take(key) else {
            self.missing(key, "this key is required");
            return None;
        };
        parse(item).map_err(|message| self.reader.reject(&path, line, message)).ok()
    }

    /// Reads `key` as an array of tables (`[[a.b]]` blocks, or an array of inline
    /// tables), each read by `read` as section `key[i]` whose untaken keys are reported.
    /// Entries `read` refuses (`None`, already reported) are left out of `slot`.
    pub(super) fn tables<T>(
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
    pub(super) fn section(&mut self, key: &'static str, read: impl FnOnce(&mut Section<'_, 'a>)) {
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
    pub(super) fn finish(self) {
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
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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
