//! The stream table: every open stream of one link, and the rules for opening one.
//!
//! Ordering invariant: the gateway opens streams with strictly increasing ids, and the
//! service treats any id not above the highest it has seen as a violation. Ids therefore
//! have to reach the wire in the order they are allocated. [`Streams::open`] allocates the
//! id, records the stream and queues its head inside one critical section (the table's
//! lock), so no other caller can allocate a later id and queue it first, whichever worker
//! threads the callers run on. The data queue is FIFO and the writer drains it in order,
//! so queue order is wire order.
//!
//! The table also refuses new streams once the link has closed ([`StreamTable::close`]
//! and the insertions share the lock), so no stream can be added after the closing drain
//! and wait for a response that never comes.
//!
//! The lock type comes from [`crate::sync`], so the model-checking tests (feature `loom`)
//! explore every interleaving of this code itself.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::flow::{CreditGate, DataEvent, StreamError};
use super::{IncomingResponse, Violation};
use crate::sync::{Mutex, MutexGuard};

/// One open stream, as one side of the link sees it.
#[derive(Debug)]
pub(super) struct StreamEntry {
    /// Where peer data goes; `None` when the body is buffered or has ended.
    pub(super) incoming: Option<mpsc::UnboundedSender<DataEvent>>,
    /// Stream bytes the peer may still send before we grant more.
    pub(super) recv_credit: u64,
    /// The peer has sent END_STREAM.
    pub(super) recv_ended: bool,
    /// Credit for what we send.
    pub(super) send_gate: Arc<CreditGate>,
    /// Gateway role: where the response head goes.
    pub(super) pending_response: Option<oneshot::Sender<Result<IncomingResponse, StreamError>>>,
    /// Service role: fired on cancel.
    pub(super) cancel: Option<CancellationToken>,
}

impl StreamEntry {
    /// Gateway role: a stream we open, awaiting its response head on `pending_response`.
    pub(super) fn outgoing(
        send_gate: Arc<CreditGate>,
        pending_response: oneshot::Sender<Result<IncomingResponse, StreamError>>,
    ) -> Self {
        StreamEntry {
            incoming: None,
            recv_credit: 0,
            recv_ended: false,
            send_gate,
            pending_response: Some(pending_response),
            cancel: None,
        }
    }

    /// Fails every local waiter of the stream with `error`.
    pub(super) fn fail(self, error: StreamError) {
        if let Some(tx) = self.incoming {
            let _ = tx.send(DataEvent::Reset(error.clone()));
        }
        if let Some(tx) = self.pending_response {
            let _ = tx.send(Err(error.clone()));
        }
        if let Some(token) = self.cancel {
            token.cancel();
        }
        self.send_gate.close(error);
    }
}

/// What the lock protects.
#[derive(Debug, Default)]
pub(super) struct StreamTable {
    pub(super) entries: HashMap<u64, StreamEntry>,
    /// Highest id ever opened; ids at or below it that have no entry are closed.
    highest_id: u64,
    /// The link has closed: no stream may open any more.
    closed: bool,
}

/// Why a stream could not be opened locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LinkClosed;

/// The table behind its lock.
#[derive(Debug, Default)]
pub(super) struct Streams {
    table: Mutex<StreamTable>,
}

impl Streams {
    pub(super) fn lock(&self) -> MutexGuard<'_, StreamTable> {
        // The table is only mutated by short, non-panicking sections; a poisoned lock
        // still holds a consistent table.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gateway role: allocates the next stream id, records `entry` under it and calls
    /// `queue_head` with the id, all under the lock, so heads are queued in id order.
    /// `queue_head` must not block: it hands the head to a queue with room already
    /// reserved.
    pub(super) fn open(&self, entry: StreamEntry, queue_head: impl FnOnce(u64)) -> Result<u64, LinkClosed> {
        let mut table = self.lock();
        if table.closed {
            return Err(LinkClosed);
        }
        let id = table.highest_id + 1;
        table.highest_id = id;
        table.entries.insert(id, entry);
        queue_head(id);
        Ok(id)
    }
}

impl StreamTable {
    /// Service role: records a stream the peer opened with `id`, which must be above
    /// every id it opened before. `Ok(false)` when the link has closed meanwhile.
    pub(super) fn accept(&mut self, id: u64, entry: StreamEntry) -> Result<bool, Violation> {
        if id <= self.highest_id {
            return Err(format!("request reuses stream id {id} (highest so far {})", self.highest_id));
        }
        self.highest_id = id;
        if self.closed {
            return Ok(false);
        }
        self.entries.insert(id, entry);
        Ok(true)
    }

    /// Marks the link closed and hands back every stream still open.
    pub(super) fn close(&mut self) -> Vec<StreamEntry> {
        self.closed = true;
        self.entries.drain().map(|(_, entry)| entry).collect()
    }

    /// Whether `id` was ever opened on this link (it may have ended since).
    pub(super) fn was_opened(&self, id: u64) -> bool {
        id != 0 && id <= self.highest_id
    }

    /// For a frame whose stream has no entry: `Ok` to ignore it when the stream was
    /// opened and has ended, `Err` when it never existed.
    ///
    /// A frame for an ended stream is always ignored, however late: it crossed the
    /// stream's end on the wire (a response to a request the gateway gave up on, data
    /// sent before a Cancel arrived). Only a faulty peer names a stream never opened.
    pub(super) fn closed_stream(&self, id: u64, what: &str) -> Result<(), Violation> {
        if self.was_opened(id) {
            Ok(())
        } else {
            Err(format!("{what} for unknown stream {id}"))
        }
    }
}

/// Model checks of the opening rule: every interleaving of several callers, run by
/// `cargo test -p weir-transport --features loom --lib model` (see `test.sh`).
#[cfg(all(test, feature = "loom"))]
mod model {
    use super::*;
    use loom::sync::Mutex as ModelMutex;
    use loom::thread;

    fn entry() -> StreamEntry {
        StreamEntry::outgoing(CreditGate::new(0), oneshot::channel().0)
    }

    /// Gateway callers open streams concurrently; the queue they share is read by a peer
    /// table applying the service's rule. Every head must be accepted, in id order.
    #[test]
    fn concurrent_opens_queue_heads_in_id_order() {
        loom::model(|| {
            let gateway = Arc::new(Streams::default());
            let queue = Arc::new(ModelMutex::new(Vec::new()));
            let callers: Vec<_> = (0..3)
                .map(|_| {
                    let gateway = Arc::clone(&gateway);
                    let queue = Arc::clone(&queue);
                    thread::spawn(move || {
                        gateway.open(entry(), |id| queue.lock().unwrap().push(id)).unwrap();
                    })
                })
                .collect();
            for caller in callers {
                caller.join().unwrap();
            }
            let mut peer = StreamTable::default();
            for id in queue.lock().unwrap().drain(..) {
                assert_eq!(peer.accept(id, entry()), Ok(true), "head {id} refused by the peer");
            }
            assert_eq!(gateway.lock().entries.len(), 3);
        });
    }

    /// A close racing with opens: every stream is either refused or handed to the close,
    /// never left in the table after it.
    #[test]
    fn no_stream_opens_after_the_close() {
        loom::model(|| {
            let gateway = Arc::new(Streams::default());
            let opener = {
                let gateway = Arc::clone(&gateway);
                thread::spawn(move || gateway.open(entry(), |_| {}).is_ok())
            };
            let closed = gateway.lock().close().len();
            let opened = opener.join().unwrap();
            assert!(gateway.lock().entries.is_empty(), "a stream opened after the close");
            assert_eq!(closed, usize::from(opened), "an opened stream missed the close");
        });
    }
}
