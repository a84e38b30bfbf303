//! The access log: one line per finished client request (a WebSocket session is one
//! request, logged when it ends), written by a thread of its own so that writing never
//! blocks a request.
//!
//! A finished request hands its [`AccessRecord`] to a bounded queue
//! ([`QUEUE_LINES`] records) with `try_send`: when the writer falls behind (a slow disk,
//! a blocked stdout), the record is dropped and counted in
//! `weir_access_log_dropped_lines_total`, never waited for. The writer formats
//! ([`format`]) and writes in batches, flushing whenever the queue runs empty, so a
//! line reaches the file a moment after its request ends.
//!
//! Each configuration (`[log] access` and `format`) has its own writer thread, which
//! opens the destination once. A reload starts a new writer, which opens the file again
//! (after a rotation, a new file), and the old one ends once its queue is drained; so
//! `SIGHUP` or `POST /reload` is how a rotated log is reopened.

mod format;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::{Method, StatusCode, Version};
use prometheus_client::metrics::counter::Counter;

use crate::config::{AccessLogFormat, AccessLogTarget, LogConfig};

/// Records waiting for the writer; beyond this, new ones are dropped.
const QUEUE_LINES: usize = 4096;

/// How long [`AccessLog::flush`] waits for the writer to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// What the access log says of one finished request.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    /// When the request head arrived.
    pub start: SystemTime,
    pub request_id: String,
    /// The client the request speaks for (behind a trusted proxy, the forwarded one).
    pub client: SocketAddr,
    pub method: Method,
    /// The path the client sent, without the query (which may carry secrets).
    pub path: String,
    pub version: Version,
    pub mount: Option<Arc<str>>,
    /// The route template that matched (not the path).
    pub route: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    pub instance: Option<Arc<str>>,
    /// Who the mount's authentication says the client is; never a credential.
    pub subject: Option<String>,
    /// The status sent; `None` when the client left before any.
    pub status: Option<StatusCode>,
    /// The code of the error the gateway answered with itself.
    pub reason: Option<&'static str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    /// From the head's arrival to the response head's.
    pub time_to_first_byte: Option<Duration>,
    pub websocket: bool,
}

/// The access log of one gateway: the writer in force (none when `access = "off"`) and
/// the count of lines dropped.
#[derive(Debug)]
pub(crate) struct AccessLog {
    /// Swapped whole by a reload; requests load it once, when they end.
    writer: ArcSwapOption<Writer>,
    /// Records that found the queue full, or that failed to be written.
    dropped: Counter,
}

/// Why the access log could not be started.
#[derive(Debug, thiserror::Error)]
#[error("access log {path}: {source}")]
pub struct AccessLogError {
    path: PathBuf,
    source: io::Error,
}

impl AccessLog {
    /// An access log writing as `config` says, counting dropped lines in `dropped`.
    pub(crate) fn new(config: &LogConfig, dropped: Counter) -> Result<Self, AccessLogError> {
        let log = AccessLog { writer: ArcSwapOption::empty(), dropped };
        log.configure(config)?;
        Ok(log)
    }

    /// Writes from now on as `config` says: a new writer, which opens the destination
    /// again; the previous one finishes its queue and ends.
    pub(crate) fn configure(&self, config: &LogConfig) -> Result<(), AccessLogError> {
        let writer = match &config.access {
            AccessLogTarget::Off => None,
            AccessLogTarget::Stdout => Some(Writer::start(Box::new(io::stdout()), config.format, self.dropped.clone())),
            AccessLogTarget::File(path) => {
                let file = open_append(path).map_err(|source| AccessLogError { path: path.clone(), source })?;
                Some(Writer::start(Box::new(file), config.format, self.dropped.clone()))
            }
        };
        self.writer.store(writer.map(Arc::new));
        Ok(())
    }

    /// Whether records are wanted: building one costs a little, so a request asks first.
    pub(crate) fn is_on(&self) -> bool {
        self.writer.load().is_some()
    }

    /// Queues `record` for writing, or drops and counts it if the queue is full.
    pub(crate) fn record(&self, record: AccessRecord) {
        let Some(writer) = self.writer.load_full() else { return };
        match writer.queue.try_send(Entry::Line(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Waits (at most [`FLUSH_WAIT`]) until every record queued so far is written; the
    /// gateway calls it as it stops. Blocks: call it off the async workers.
    pub(crate) fn flush(&self) {
        let Some(writer) = self.writer.load_full() else { return };
        let (done, flushed) = mpsc::sync_channel(1);
        if writer.queue.send(Entry::Flush(done)).is_ok() {
            if let Err(RecvTimeoutError::Timeout) = flushed.recv_timeout(FLUSH_WAIT) {
                tracing::warn!("access log: lines still queued at shutdown were not all written");
            }
        }
    }
}

/// Opens `path` for appending, creating it if absent.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// What the writer thread is sent.
enum Entry {
    Line(Box<AccessRecord>),
    /// Answer once everything before this is written.
    Flush(SyncSender<()>),
}

/// One writer thread and its queue; the thread ends when the queue's last sender (this)
/// is dropped and the queue is drained.
#[derive(Debug)]
struct Writer {
    queue: SyncSender<Entry>,
}

impl Writer {
    fn start(out: Box<dyn Write + Send>, format: AccessLogFormat, dropped: Counter) -> Writer {
        let (queue, entries) = mpsc::sync_channel(QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_entries(&entries, BufWriter::new(out), format, &dropped));
        if let Err(err) = spawned {
            // The queue's receiver went with the closure: every record counts as dropped.
            tracing::error!(error = %err, "access log: the writer thread could not start; lines will be dropped");
        }
        Writer { queue }
    }
}

/// The writer thread: formats and writes each record, flushing whenever the queue is
/// empty; a failed write is logged once per run of failures and its lines counted.
fn write_entries(
    entries: &Receiver<Entry>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    format: AccessLogFormat,
    dropped: &Counter,
) {
    let mut line = String::with_capacity(512);
    let mut failing = false;
    while let Ok(mut entry) = entries.recv() {
        loop {
            match entry {
                Entry::Line(record) => {
                    line.clear();
                    format::write(&mut line, &record, format);
                    let written = out.write_all(line.as_bytes());
                    failing = note_write(written, failing, dropped);
                }
                Entry::Flush(done) => {
                    failing = note_write(out.flush(), failing, dropped);
                    let _ = done.send(());
                }
            }
            match entries.try_recv() {
                Ok(next) => entry = next,
                Err(_) => break,
            }
        }
        failing = note_write(out.flush(), failing, dropped);
    }
    let _ = out.flush();
}

/// Counts and reports a failed write (once until writes succeed again); returns whether
/// writes are failing now.
fn note_write(written: io::Result<()>, failing: bool, dropped: &Counter) -> bool {
    match written {
        Ok(()) => false,
        Err(err) => {
            dropped.inc();
            if !failing {
                tracing::error!(error = %err, "access log: write failed; lines are being dropped");
            }
            true
        }
    }
}
