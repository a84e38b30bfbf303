//! The reader task: decodes frames and routes each to its stream or to the owner.
//!
//! Every check that can fail returns a violation message; the loop turns the first one
//! into an Error frame, a log line and the link's close. Nothing here panics on input.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_proto::{
    BodyMode, Cancel, Credit, EndpointsUpdate, ErrorCode, ErrorMessage, Frame, FrameType, GoAway, Heartbeat, Message,
    ProtoError, RequestHead, ResponseHead,
};

use super::flow::{CreditGate, DataEvent, DataReceiver, StreamError};
use super::streams::StreamEntry;
use super::{FrameSource, IncomingRequest, IncomingResponse, Link, LinkEvent, Responder, Role, Violation, MAX_CREDIT};
use crate::ByteStream;

fn decode<M: Message>(payload: Bytes) -> Result<M, Violation> {
    M::decode(payload).map_err(malformed::<M>)
}

fn malformed<M: Message>(err: ProtoError) -> Violation {
    format!("malformed {:?} payload: {err}", M::FRAME_TYPE)
}

impl Link {
    pub(super) async fn read_loop<T: ByteStream>(
        self,
        mut source: FrameSource<T>,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) {
        loop {
            let next = tokio::select! {
                next = source.next() => next,
                _ = self.shared.closed.cancelled() => return,
            };
            let outcome = match next {
                None => {
                    self.close("peer closed the connection");
                    return;
                }
                Some(Err(err)) => Err(format!("unreadable frame: {err}")),
                Some(Ok(frame)) => {
                    self.note_received(&frame);
                    self.dispatch(frame, &events)
                }
            };
            if let Err(violation) = outcome {
                tracing::warn!(role = ?self.role(), reason = %violation, "closing service link: protocol violation");
                self.close_with_error(ErrorCode::ProtocolViolation, violation);
                return;
            }
        }
    }

    fn dispatch(&self, frame: Frame, events: &mpsc::UnboundedSender<LinkEvent>) -> Result<(), Violation> {
        let id = frame.correlation_id;
        match (self.role(), frame.frame_type) {
            (_, FrameType::Heartbeat) => {
                let _ = events.send(LinkEvent::Heartbeat(decode::<Heartbeat>(frame.payload)?));
                Ok(())
            }
            (Role::Service, FrameType::GoAway) if id == 0 => {
                let _ = events.send(LinkEvent::GoAway(decode::<GoAway>(frame.payload)?));
                Ok(())
            }
            (Role::Gateway, FrameType::EndpointsUpdate) => self.on_endpoints_update(frame.payload, events),
            (Role::Service, FrameType::Request) => self.on_request(id, frame.payload, events),
            (Role::Gateway, FrameType::Response) => self.on_response(id, frame.payload),
            (Role::Service, FrameType::RequestStreamData) | (Role::Gateway, FrameType::ResponseStreamData) => {
                self.on_data(frame)
            }
            (_, FrameType::Credit) => self.on_credit(id, decode::<Credit>(frame.payload)?),
            (_, FrameType::Cancel) => {
                let cancel = decode::<Cancel>(frame.payload)?;
                self.on_peer_end(id, StreamError::Cancelled(cancel.reason), "Cancel")
            }
            (_, FrameType::Error) => self.on_error(id, decode::<ErrorMessage>(frame.payload)?),
            (role, other) => Err(format!("unexpected {other:?} frame for the {role:?} side")),
        }
    }

    /// Decodes an update only if its count prefix is within `max_update_endpoints`; one
    /// over it is passed on as refused without reading further (the rest of it is not
    /// checked, as it is never used).
    fn on_endpoints_update(&self, payload: Bytes, events: &mpsc::UnboundedSender<LinkEvent>) -> Result<(), Violation> {
        let declared = EndpointsUpdate::declared_count(&payload).map_err(malformed::<EndpointsUpdate>)?;
        let event = if declared > self.shared.config.max_update_endpoints {
            LinkEvent::EndpointsOverLimit { declared }
        } else {
            LinkEvent::EndpointsUpdate(decode::<EndpointsUpdate>(payload)?)
        };
        let _ = events.send(event);
        Ok(())
    }

    fn on_request(&self, id: u64, payload: Bytes, events: &mpsc::UnboundedSender<LinkEvent>) -> Result<(), Violation> {
        let head = decode::<RequestHead>(payload)?;
        let streamed = head.body_mode == BodyMode::Streamed;
        let cancel = CancellationToken::new();
        let gate = CreditGate::new(u64::from(self.shared.config.send_window));
        let (tx, rx) = mpsc::unbounded_channel();
        let entry = StreamEntry {
            incoming: streamed.then_some(tx),
            recv_credit: if streamed { u64::from(self.shared.config.recv_window) } else { 0 },
            recv_ended: !streamed,
            send_gate: Arc::clone(&gate),
            pending_response: None,
            cancel: Some(cancel.clone()),
        };
        if !self.table().accept(id, entry)? {
            // The link closed meanwhile; nobody will answer, so nobody is told.
            return Ok(());
        }
        let body = streamed.then(|| DataReceiver::new(rx, self.clone(), id));
        let responder = Responder::new(self.clone(), id, gate);
        let _ = events.send(LinkEvent::Request(IncomingRequest { head, body, cancel, responder }));
        Ok(())
    }

    fn on_response(&self, id: u64, payload: Bytes) -> Result<(), Violation> {
        let head = decode::<ResponseHead>(payload)?;
        let streamed = head.body_mode == BodyMode::Streamed;
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = {
            let mut table = self.table();
            let Some(entry) = table.entries.get_mut(&id) else {
                return table.closed_stream(id, "response");
            };
            let Some(pending) = entry.pending_response.take() else {
                return Err(format!("second response on stream {id}"));
            };
            if streamed {
                entry.incoming = Some(tx);
                entry.recv_credit = u64::from(self.shared.config.recv_window);
            } else {
                entry.recv_ended = true;
            }
            pending
        };
        let body = streamed.then(|| DataReceiver::new(rx, self.clone(), id));
        if !streamed {
            self.complete_stream(id);
        }
        let _ = pending.send(Ok(IncomingResponse { head, body }));
        Ok(())
    }

    fn on_data(&self, frame: Frame) -> Result<(), Violation> {
        let id = frame.correlation_id;
        let len = frame.payload.len() as u64;
        let end = frame.is_end_stream();
        let mut table = self.table();
        let Some(entry) = table.entries.get_mut(&id) else {
            return table.closed_stream(id, "stream data");
        };
        if entry.recv_ended {
            return Err(format!("stream data after end of stream {id}"));
        }
        let Some(incoming) = &entry.incoming else {
            return Err(format!("stream data on stream {id} before its streamed head"));
        };
        if len > entry.recv_credit {
            return Err(format!("stream {id} sent {len} bytes with {} bytes of credit", entry.recv_credit));
        }
        entry.recv_credit -= len;
        // The receiver may be gone (handler dropped the body); its bytes are simply dropped.
        let _ = incoming.send(DataEvent::Data(frame.payload, end));
        if end {
            entry.recv_ended = true;
            entry.incoming = None;
            if self.role() == Role::Gateway {
                drop(table);
                self.complete_stream(id);
            }
        }
        Ok(())
    }

    fn on_credit(&self, id: u64, credit: Credit) -> Result<(), Violation> {
        let table = self.table();
        // Credit for a stream that has ended is normal: the peer consumed the last bytes
        // after we stopped caring.
        let Some(entry) = table.entries.get(&id) else {
            return if table.was_opened(id) { Ok(()) } else { Err(format!("credit for unknown stream {id}")) };
        };
        if entry.send_gate.add(u64::from(credit.increment)) > MAX_CREDIT {
            return Err(format!("credit on stream {id} exceeds {MAX_CREDIT} bytes"));
        }
        Ok(())
    }

    fn on_peer_end(&self, id: u64, error: StreamError, what: &str) -> Result<(), Violation> {
        let mut table = self.table();
        let Some(entry) = table.entries.remove(&id) else {
            // Ending a stream that already ended is a normal race (both sides finished or
            // gave up at once); only a stream that never existed is a violation.
            return if table.was_opened(id) { Ok(()) } else { Err(format!("{what} for unknown stream {id}")) };
        };
        drop(table);
        entry.fail(error);
        Ok(())
    }

    fn on_error(&self, id: u64, error: ErrorMessage) -> Result<(), Violation> {
        if id == 0 {
            tracing::warn!(code = ?error.code, message = %error.message, "peer closed the service link with an error");
            self.close(format!("peer error {:?}: {}", error.code, error.message));
            return Ok(());
        }
        self.on_peer_end(id, StreamError::Failed(error.message), "Error")
    }
}
