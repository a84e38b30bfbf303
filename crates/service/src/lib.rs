//! The weir service SDK: declare endpoints, connect to a gateway, answer its requests.
//!
//! A service dials the gateway (it is never dialled), says Hello with the endpoints it
//! serves, and then answers the requests the gateway routes to it over that one
//! multiplexed connection ([`weir_transport`]). This crate owns the service side of that
//! conversation:
//!
//! - declaring: [`Service::builder`] with [`Endpoint`]s (`service.rs`, `endpoint.rs`);
//! - handling: raw handlers get a [`RawRequestContext`] whose [`RequestBody`] is read
//!   forward only, chunk by chunk, and answer a [`RawResponse`] (whole, generated as a
//!   stream, or a file); typed handlers get a [`TypedRequest`] with a JSON body parsed
//!   by serde and answer any `Serialize` value (`context.rs`, `response.rs`, `file.rs`,
//!   `typed.rs`); failures are [`HandlerError`]s answered as JSON (`error.rs`);
//!   WebSocket handlers get a [`WebSocketContext`] with incoming messages and a
//!   [`WsSender`] for outgoing ones (`websocket.rs`); each context's `trace_context()`
//!   is the request's W3C [`TraceContext`], whose parent is the gateway's span, so a
//!   handler's own spans join the trace;
//! - running: [`Service::serve`] runs one connection ([`ServiceSession`], `runtime.rs`),
//!   each request in its own task (`exchange.rs`), with heartbeats reporting status,
//!   load and error rate (`health.rs`), and a watchdog closes a connection whose gateway
//!   fell silent (`liveness.rs`); [`Service::run`] keeps reconnecting with backoff
//!   ([`RunHandle`], `reconnect.rs`) through any [`Dialer`]: in-memory, [`TcpDialer`] or
//!   [`TlsDialer`] (`dial.rs`); [`Service::run_all`] stays registered with several
//!   gateway replicas.
//!
//! # Cancellation
//!
//! Each request runs in its own task, with the request's [`CancellationToken`] in its
//! context. When the gateway cancels (client disconnect, timeout, limit breach) or the
//! connection is lost, the token fires at once and a streamed body ends with an error.
//! The handler then has a grace period (1 s, [`ServiceBuilder::cancel_grace`]) to return;
//! after it, its task is aborted. A cancelled request's response is never sent. A
//! handler that panics fails only its own request: the gateway sees the stream fail.
//!
//! # Example
//!
//! ```
//! use serde::Deserialize;
//! use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service, ServiceError, TypedRequest};
//!
//! #[derive(Deserialize)]
//! struct NewItem {
//!     name: String,
//! }
//!
//! fn inventory() -> Result<Service, ServiceError> {
//!     Service::builder("inventory", "1.2.0")
//!         .region("eu-west")
//!         .token("shared-secret")
//!         // Typed: parameters, query and JSON body in; any `Serialize` value out (200).
//!         .endpoint(Endpoint::get("/api/items/{id}").typed(|req: TypedRequest<()>| async move {
//!             let id = req.param("id").unwrap_or_default().to_owned();
//!             Ok::<_, HandlerError>(serde_json::json!({ "id": id }))
//!         }))
//!         .endpoint(Endpoint::post("/api/items").typed(|req: TypedRequest<NewItem>| async move {
//!             if req.body.name.is_empty() {
//!                 return Err(HandlerError::unprocessable("the name is empty"));
//!             }
//!             Ok(serde_json::json!({ "created": req.body.name }))
//!         }))
//!         // Raw and streaming: read an upload of any size chunk by chunk.
//!         .endpoint(Endpoint::post("/api/upload").streaming().raw(|mut ctx: RawRequestContext| async move {
//!             let mut bytes = 0;
//!             while let Some(chunk) = ctx.body.chunk().await? {
//!                 bytes += chunk.len();
//!             }
//!             Ok(RawResponse::json(200, &serde_json::json!({ "bytes": bytes })))
//!         }))
//!         // A file download, streamed in chunks of the gateway's chunk size.
//!         .endpoint(Endpoint::get("/api/report").raw(|_ctx| async move {
//!             RawResponse::file("/var/reports/latest.pdf", Some("report.pdf")).await
//!         }))
//!         .build()
//! }
//!
//! /// Connects to a gateway running in the same process, and stays connected.
//! async fn connect(service: &Service, connector: weir_transport::memory::MemoryConnector) {
//!     let running = service.run(connector);
//!     if running.registered().await {
//!         // Serving. Later: running.shutdown();
//!     }
//! }
//!
//! # fn main() -> Result<(), ServiceError> {
//! let service = inventory()?;
//! assert_eq!(service.endpoints().len(), 4);
//! # let _ = connect; // needs a gateway on the other end of the connector to do anything
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod context;
mod dial;
mod endpoint;
mod error;
mod exchange;
mod file;
mod handler;
mod health;
mod liveness;
mod reconnect;
mod response;
mod runtime;
mod service;
mod typed;
mod websocket;

pub use context::{RawRequestContext, RequestBody};
pub use endpoint::{Endpoint, EndpointBuilder};
pub use error::{BodyError, HandlerError, ServiceError};
pub use exchange::{INLINE_BODY_MAX, STREAM_CHUNK};
pub use file::FileResponse;
pub use health::ERROR_WINDOW;
pub use reconnect::{Dialer, RunHandle};
pub use response::{BodyStream, BoxError, RawResponse, ResponseBody};
pub use runtime::{ServiceSession, HANDSHAKE_TIMEOUT};
pub use service::{Service, ServiceBuilder, DEFAULT_CANCEL_GRACE, DEFAULT_HEARTBEAT_MISS_COUNT};
pub use typed::{TypedRequest, DEFAULT_TYPED_BODY_LIMIT};
pub use websocket::{WebSocketContext, WsError, WsIncoming, WsMessage, WsSender, DEFAULT_WS_MAX_MESSAGE};

pub use bytes::Bytes;
pub use tokio_util::sync::CancellationToken;
pub use weir_proto::trace_context::{TraceContext, TraceParent, TraceState};
pub use weir_proto::{ClaimRequirement, EndpointDescriptor, EndpointKind, Headers, HealthStatus, Welcome};
pub use weir_rabbitmq::RabbitMqDialer;
pub use weir_transport::tcp::TcpDialer;
pub use weir_transport::tls::TlsDialer;
