//! Export of the gateway's spans to an OTLP/HTTP receiver (`[tracing] otlp_endpoint`):
//! the OpenTelemetry SDK's batch span processor, whose exporter posts protobuf batches to
//! the receiver's `/v1/traces` through hyper, on the gateway's own runtime.
//!
//! Invariants: handing a span over never blocks a request. The processor queues at most
//! [`QUEUE`] spans; when the queue is full a span is dropped, and the SDK, which keeps
//! its count to itself, logs the first drop and the total at shutdown. Batches leave
//! from the processor's own thread (every 5 s, or at 512 spans; the SDK's `OTEL_BSP_*`
//! variables change that), and their HTTP requests run on the runtime the gateway was
//! built in. [`SpanExport::shutdown`] exports what is still queued.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::InstrumentationScope;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{ExporterBuildError, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;
use thiserror::Error;
use tokio::runtime::Handle;

use crate::config::TracingConfig;

/// The most finished spans waiting for export; more are dropped.
pub const QUEUE: usize = 4096;

/// The longest one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the receiver takes traces, below its base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Why spans cannot be exported as configured.
#[derive(Debug, Error)]
pub enum TracingError {
    /// `otlp_endpoint` is not a plain-HTTP base URL.
    #[error("tracing.otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: &'static str },
    /// The gateway was not built inside a Tokio runtime, which export requests run on.
    #[error("tracing.otlp_endpoint: the gateway must be started inside a Tokio runtime to export spans")]
    NoRuntime,
    /// The SDK refused the exporter's settings.
    #[error("tracing.otlp_endpoint: {0}")]
    Exporter(#[from] ExporterBuildError),
}

/// The URL spans are posted to for the receiver at `endpoint` (`http://host:port`, maybe
/// with a base path): its `/v1/traces`. An `https` URL is refused: the exporter speaks
/// plain HTTP to a receiver beside the gateway (a collector), which forwards further.
pub fn traces_url(endpoint: &str) -> Result<String, TracingError> {
    let refuse = |reason| TracingError::Endpoint { endpoint: endpoint.to_owned(), reason };
    let uri: http::Uri = endpoint.parse().map_err(|_| refuse("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(refuse("must start with http:// (plain HTTP to a nearby receiver)"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse("names no host"));
    }
    if uri.query().is_some() {
        return Err(refuse("must have no query"));
    }
    Ok(format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/')))
}

/// The gateway's span export: the SDK's batch processor in front of an OTLP/HTTP
/// exporter.
#[derive(Debug)]
pub(crate) struct SpanExport {
    /// Queues finished spans and exports them in batches from its own thread.
    processor: BatchSpanProcessor,
    /// Names the gateway as the spans' source, the same for every span.
    scope: InstrumentationScope,
}

impl SpanExport {
    /// The export `config` asks for; `None` when it asks for none. Must run inside the
    /// Tokio runtime the export requests are to run on.
    pub(crate) fn new(config: &TracingConfig) -> Result<Option<Arc<SpanExport>>, TracingError> {
        let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
        let runtime = Handle::try_current().map_err(|_| TracingError::NoRuntime)?;
        let client = OnRuntime { runtime, client: HyperClient::with_default_connector(EXPORT_TIMEOUT, None) };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint)?)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()?;
        exporter.set_resource(&Resource::builder().with_service_name("weir").build());
        let batches = BatchConfigBuilder::default().with_max_queue_size(QUEUE).build();
        let scope = InstrumentationScope::builder("weir-gateway").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Some(Arc::new(SpanExport { processor: BatchSpanProcessor::new(exporter, batches), scope })))
    }

    /// Queues `span` for export, or drops it if the queue is full; never waits.
    pub(crate) fn send(&self, span: SpanData) {
        self.processor.on_end(span);
    }

    /// The instrumentation scope every span is exported under.
    pub(crate) fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Exports what is queued and stops; spans sent afterwards are dropped. Waits on a
    /// blocking thread, so the runtime stays free to run the export requests.
    pub(crate) async fn shutdown(self: Arc<Self>) {
        let stopped = tokio::task::spawn_blocking(move || self.processor.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "span export did not shut down cleanly"),
            Err(err) => tracing::warn!(error = %err, "span export shutdown panicked"),
        }
    }
}

/// An HTTP client whose requests run on the gateway's runtime, whichever thread awaits
/// them: the batch processor awaits its exports on a thread of its own, where hyper
/// would find no runtime.
#[derive(Debug)]
struct OnRuntime {
    /// The runtime the gateway was built in.
    runtime: Handle,
    /// hyper's pooled client (a cheap handle to clone into each request's task).
    client: HyperClient,
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime.spawn(async move { client.send_bytes(request).await }).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_a_plain_http_base_url() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/otel/").unwrap(), "http://collector:4318/otel/v1/traces");
        for refused in ["https://collector:4318", "collector:4318", "http://", "http://c:4318/?a=b", "not a url"] {
            assert!(traces_url(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn export_needs_a_runtime_and_none_is_configured_by_default() {
        assert!(SpanExport::new(&TracingConfig::default()).unwrap().is_none());
        let config = TracingConfig { otlp_endpoint: Some("http://127.0.0.1:4318".into()) };
        assert!(matches!(SpanExport::new(&config), Err(TracingError::NoRuntime)));
    }
}
