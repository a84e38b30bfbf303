//! The access log: one line per finished client request (a WebSocket session is one
//! request, logged when it ends), written by a thread of its own so that writing never
//! blocks a request.
//!
//! A finished request pushes its [`AccessRecord`] onto a bounded queue ([`QUEUE_LINES`]
//! records) under a short lock, and wakes no one: when the writer falls behind (a slow
//! disk, a blocked stdout), the record is dropped and counted in
//! `weir_access_log_dropped_lines_total`, never waited for. The writer takes the whole
//! queue every [`WRITE_EVERY`] (at once when it is half full, or on
//! [`AccessLog::flush`]), formats it ([`format`]) and writes it in one go. Waking the
//! writer for each record cost a futex wake, a context switch and a `write` per request:
//! on a loaded core that was more than the request itself. So a line reaches its
//! destination about [`WRITE_EVERY`] after its request ends (nginx's `buffer=`/`flush=`
//! trade the same way).
//!
//! Each configuration (`[log] access` and `format`) has its own writer thread, which
//! opens the destination once. A reload starts a new writer, which opens the file again
//! (after a rotation, a new file), and the old one ends once its queue is written; so
//! `SIGHUP` or `POST /reload` is how a rotated log is reopened.

mod format;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::{HeaderValue, Method, StatusCode, Version};
use prometheus_client::metrics::counter::Counter;

use crate::config::{AccessLogFormat, AccessLogTarget, LogConfig};
use crate::limits::lock;

/// Records waiting for the writer; beyond this, new ones are dropped.
const QUEUE_LINES: usize = 4096;

/// Bytes the writer gathers before a `write` (a turn ends with one anyway).
const WRITE_BUFFER: usize = 64 * 1024;

/// How often the writer takes the queue when it is not half full.
const WRITE_EVERY: Duration = Duration::from_millis(10);

/// How long [`AccessLog::flush`] waits for the writer to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// What the access log says of one finished request.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    /// When the request head arrived.
    pub start: SystemTime,
    pub request_id: HeaderValue,
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
        let writer = self.writer.load();
        let Some(writer) = writer.as_ref() else { return };
        if !writer.queue.push(record) {
            self.dropped.inc();
        }
    }

    /// Waits (at most [`FLUSH_WAIT`]) until every record queued so far is written; the
    /// gateway calls it as it stops. Blocks: call it off the async workers.
    pub(crate) fn flush(&self) {
        let Some(writer) = self.writer.load_full() else { return };
        if !writer.queue.flush(FLUSH_WAIT) {
            tracing::warn!("access log: lines still queued at shutdown were not all written");
        }
    }
}

/// Opens `path` for appending, creating it if absent.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The records between requests and the writer, and what the writer is asked to do.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the writer before its next turn: the queue is half full, a flush is asked
    /// for, or the log is closing.
    wake: Condvar,
    /// Tells [`Queue::flush`] callers that the writer finished a turn.
    turned: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    records: Vec<AccessRecord>,
    /// Flushes asked for so far, and the count the writer had seen when it last
    /// finished writing: a flush is done once `flushes_done` reaches its number.
    flushes_asked: u64,
    flushes_done: u64,
    /// The log's handle is gone: write what is left and end.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Adds `record`; `false` (dropped) if the queue is full.
    fn push(&self, record: AccessRecord) -> bool {
        let mut state = self.lock();
        if state.records.len() >= QUEUE_LINES {
            return false;
        }
        state.records.push(record);
        let half_full = state.records.len() == QUEUE_LINES / 2;
        drop(state);
        if half_full {
            self.wake.notify_one();
        }
        true
    }

    /// Asks the writer to write everything queued now and waits for it, at most `wait`;
    /// whether it did.
    fn flush(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        state.flushes_asked += 1;
        let asked = state.flushes_asked;
        self.wake.notify_one();
        while state.flushes_done < asked {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            state = self.turned.wait_timeout(state, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        true
    }

    /// The writer's wait for its next turn: the records queued by then (swapped with
    /// `spare`, which must be empty, so neither side allocates in steady state), the
    /// flushes asked so far, and whether the log is closing.
    fn next_turn(&self, spare: &mut Vec<AccessRecord>) -> (u64, bool) {
        let mut state = self.lock();
        let idle = |s: &QueueState| s.records.len() < QUEUE_LINES / 2 && s.flushes_asked == s.flushes_done && !s.closed;
        if idle(&state) {
            state = self.wake.wait_timeout(state, WRITE_EVERY).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        std::mem::swap(&mut state.records, spare);
        (state.flushes_asked, state.closed)
    }

    /// The writer finished a turn that saw `flushes` flushes asked.
    fn turn_done(&self, flushes: u64) {
        self.lock().flushes_done = flushes;
        self.turned.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// One writer thread and its queue; dropping it (a reload, the gateway's end) closes
/// the queue, and the thread ends once it has written what was left.
#[derive(Debug)]
struct Writer {
    queue: Arc<Queue>,
}

impl Writer {
    fn start(out: Box<dyn Write + Send>, format: AccessLogFormat, dropped: Counter) -> Writer {
        let queue = Arc::new(Queue::default());
        let records = Arc::clone(&queue);
        let spawned = std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_records(&records, BufWriter::with_capacity(WRITE_BUFFER, out), format, &dropped));
        if let Err(err) = spawned {
            // Nobody takes the queue: it fills, and every record after counts as dropped.
            tracing::error!(error = %err, "access log: the writer thread could not start; lines will be dropped");
        }
        Writer { queue }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The writer thread: each turn formats and writes the records queued, then flushes; a
/// failed write is logged once per run of failures and its lines counted.
fn write_records(queue: &Queue, mut out: BufWriter<Box<dyn Write + Send>>, format: AccessLogFormat, dropped: &Counter) {
    let mut failing = false;
    let mut batch = Vec::new();
    loop {
        let (flushes, closed) = queue.next_turn(&mut batch);
        let batch_size = batch.len();
        for record in batch.drain(..) {
            failing = note_write(format::write(&mut out, &record, format), failing, dropped);
        }
        if batch_size > 0 {
            failing = note_write(out.flush(), failing, dropped);
        }
        // A burst leaves a large buffer behind: give most of it back once traffic is light.
        if batch.capacity() > 4 * batch_size.max(64) {
            batch.shrink_to(batch_size.max(64));
        }
        queue.turn_done(flushes);
        if closed && batch_size == 0 {
            return;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination the test can read while the writer holds it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn record(path: &str) -> AccessRecord {
        AccessRecord {
            start: SystemTime::UNIX_EPOCH,
            request_id: HeaderValue::from_static("id"),
            client: "127.0.0.1:1".parse().unwrap(),
            method: Method::GET,
            path: path.into(),
            version: Version::HTTP_11,
            mount: None,
            route: None,
            service: None,
            instance: None,
            subject: None,
            status: Some(StatusCode::OK),
            reason: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            time_to_first_byte: None,
            websocket: false,
        }
    }

    #[test]
    fn a_flush_waits_until_every_record_queued_before_it_is_written() {
        let sink = Sink::default();
        let log = AccessLog { writer: ArcSwapOption::empty(), dropped: Counter::default() };
        let writer = Writer::start(Box::new(sink.clone()), AccessLogFormat::Text, log.dropped.clone());
        log.writer.store(Some(Arc::new(writer)));
        for round in 0..3 {
            for i in 0..100 {
                log.record(record(&format!("/r{round}/{i}")));
            }
            log.flush();
            let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            assert_eq!(text.lines().count(), 100 * (round + 1));
            assert!(text.contains(&format!("/r{round}/99 ")), "{text}");
        }
        assert_eq!(log.dropped.get(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        // A queue no thread takes, as when the writer is stuck on a blocked destination.
        let log = AccessLog {
            writer: ArcSwapOption::from(Some(Arc::new(Writer { queue: Arc::default() }))),
            dropped: Counter::default(),
        };
        for i in 0..QUEUE_LINES + 10 {
            log.record(record(&format!("/{i}")));
        }
        assert_eq!(log.dropped.get(), 10);
        let writer = log.writer.load_full().unwrap();
        assert!(!writer.queue.flush(Duration::from_millis(10)), "nobody wrote them");
    }

    #[test]
    fn a_closed_queue_hands_over_what_is_left_and_says_it_is_closing() {
        let queue = Queue::default();
        assert!(queue.push(record("/last")));
        queue.close();
        let mut batch = Vec::new();
        let (_, closed) = queue.next_turn(&mut batch);
        assert!(closed && batch.len() == 1);
        batch.clear();
        let (_, closed) = queue.next_turn(&mut batch);
        assert!(closed && batch.is_empty(), "nothing more came: the writer ends after this turn");
    }
}
