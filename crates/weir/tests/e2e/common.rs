//! The test harness: a gateway with its HTTP front on 127.0.0.1:0, services attached
//! over the in-memory transport and awaited until registered (no sleeps), and the check
//! that every payload reservation is released once requests end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_gateway::front::{self, Surface};
use weir_gateway::{Gateway, GatewayConfig};
use weir_service::{RunHandle, Service};

/// Upper bound for anything a test awaits; reaching it is a failure, not a pause.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Harness {
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    /// Shut down with the harness, so no service outlives its test.
    services: Vec<CancellationToken>,
}

impl Harness {
    /// A gateway with `config` and no services.
    pub async fn start(config: GatewayConfig) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Gateway::new(config);
        let shutdown = CancellationToken::new();
        tokio::spawn(front::serve(Arc::clone(&gateway), listener, Surface::Public, shutdown.clone()));
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        Harness { gateway, addr, client, shutdown, services: Vec::new() }
    }

    /// A gateway with `config` and the demo service attached.
    pub async fn with_demo(config: GatewayConfig) -> Harness {
        let mut harness = Harness::start(config).await;
        harness.attach(weir::demo::service()).await;
        harness
    }

    /// Attaches `service` over the in-memory transport and waits until it is registered.
    pub async fn attach(&mut self, service: Service) -> RunHandle {
        let handle = service.run(self.gateway.attach_memory());
        let registered = tokio::time::timeout(WAIT, handle.registered()).await.expect("service did not register");
        assert!(registered, "service stopped before registering");
        self.services.push(handle.shutdown_token());
        handle
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until every budget reservation has been released, and fails if that never
    /// happens: a leak, not slowness.
    pub async fn assert_budget_released(&self) {
        let released = tokio::time::timeout(WAIT, self.gateway.budget().idle()).await;
        assert!(released.is_ok(), "budget not released: {:?}", self.gateway.budget().counters());
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for service in &self.services {
            service.cancel();
        }
        self.shutdown.cancel();
    }
}

/// Default config with small, test-friendly limits where a test crosses them.
pub fn config() -> GatewayConfig {
    GatewayConfig::default()
}
