//! The test harness: a gateway with its HTTP front on 127.0.0.1:0 and its health sweeper,
//! services attached over one [`Transport`] and awaited until registered (no sleeps), and
//! the check that every payload reservation is released once requests end.
//!
//! The conformance suite: a test written once as `async fn name(transport: Transport)`
//! and listed in [`conformance!`] runs on every transport, as `name::memory`,
//! `name::tcp`, `name::tls`, `name::rabbitmq`, each on a multi-threaded runtime with two
//! workers. A new transport is one `Transport` variant, one arm in [`Harness::dialer`]
//! and one line in `for_each_transport!`. Tests of rules that only
//! network connections obey (service authentication) use [`over_network!`].
//!
//! TLS uses a throwaway CA and certificates made per harness ([`TestPki`]); mutual TLS is
//! [`Harness::start_mtls`], whose services present a certificate naming them.
//!
//! The RabbitMQ transport uses the broker at [`amqp_url`] (the machine's, on
//! 127.0.0.1:5672); each harness names its queues with a prefix of its own, so tests
//! running at once never take each other's services.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile};
use weir_gateway::{Gateway, GatewayConfig, Listeners};
use weir_proto::{FrameCodec, FrameType};
use weir_rabbitmq::{BrokerListener, BrokerSettings, RabbitMqDialer};
use weir_service::{Dialer, RunHandle, Service};
use weir_transport::memory::MemoryConnector;
use weir_transport::tls::{self, ClientConfig, Identity, TlsAcceptor, TlsDialer};
use weir_transport::ByteStream;

/// Upper bound for anything a test awaits; reaching it is a failure, not a pause.
pub const WAIT: Duration = Duration::from_secs(10);

/// How services reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In-process pipe: the reference transport; embedded services are trusted.
    Memory,
    /// Plain TCP to the gateway's service listener.
    Tcp,
    /// TLS (rustls) to the gateway's service listener, with a throwaway CA.
    Tls,
    /// Through the RabbitMQ broker at [`amqp_url`].
    RabbitMq,
}

/// The broker the RabbitMQ transport's tests use: `WEIR_TEST_AMQP_URL`, else the
/// machine's broker with RabbitMQ's default account.
pub fn amqp_url() -> String {
    std::env::var("WEIR_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Broker settings with a queue prefix no other harness in any test process uses.
pub fn unique_broker_settings() -> BrokerSettings {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    BrokerSettings { prefix: format!("weir-test-{}-{n}", std::process::id()), ..BrokerSettings::default() }
}

/// Instantiates `$callback!(... name variant kind)` once per transport; the one list
/// a new transport is added to. `kind` is `local` or `network`.
macro_rules! for_each_transport {
    ($callback:ident!($($args:tt)*)) => {
        $callback!($($args)* memory Memory local);
        $callback!($($args)* tcp Tcp network);
        $callback!($($args)* tls Tls network);
        $callback!($($args)* rabbitmq RabbitMq network);
    };
}
pub(crate) use for_each_transport;

/// One `#[tokio::test]` calling `super::$name(Transport::$variant)`, if `$filter`
/// admits the transport's kind.
macro_rules! transport_test {
    ($filter:ident $name:ident $test:ident $variant:ident $kind:ident) => {
        $crate::common::transport_test!(@$filter $kind $name $test $variant);
    };
    (@any $kind:ident $name:ident $test:ident $variant:ident) => {
        // Two workers, as on the smallest machine users run: tasks of one request (the
        // client, the front, the link's reader and writer, the handler) run in parallel.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            super::$name($crate::common::Transport::$variant).await
        }
    };
    (@network network $name:ident $test:ident $variant:ident) => {
        $crate::common::transport_test!(@any network $name $test $variant);
    };
    (@network local $name:ident $test:ident $variant:ident) => {};
}
pub(crate) use transport_test;

/// Runs each listed `async fn name(transport: Transport)` on every transport, as tests
/// `name::memory`, `name::tcp`, `name::tls`, `name::rabbitmq`.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            $crate::common::for_each_transport!(transport_test!(any $name));
            use $crate::common::transport_test;
        }
    )+};
}
pub(crate) use conformance;

/// [`conformance!`] for the network transports only (where services must authenticate).
macro_rules! over_network {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            $crate::common::for_each_transport!(transport_test!(network $name));
            use $crate::common::transport_test;
        }
    )+};
}
pub(crate) use over_network;

/// A throwaway CA with a server certificate for 127.0.0.1 and client certificates on demand.
pub struct TestPki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl TestPki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "weir test CA");
        let ca_key = KeyPair::generate().unwrap();
        TestPki { ca: params.self_signed(&ca_key).unwrap(), ca_key }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate signed by this CA for `sans`, with subject common name `cn`.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn identity(&self, cn: &str, sans: &[&str]) -> Identity {
        let (cert, key) = self.issue(cn, sans);
        Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
    }

    /// The gateway's TLS acceptor; with `mutual`, client certificates from this CA are required.
    pub fn acceptor(&self, mutual: bool) -> TlsAcceptor {
        let roots = mutual.then(|| self.roots());
        TlsAcceptor::from(tls::server_config(self.identity("gateway", &["127.0.0.1", "localhost"]), roots).unwrap())
    }

    pub fn roots(&self) -> Vec<tls::CertificateDer<'static>> {
        tls::certificates(self.ca_pem().as_bytes(), "test CA").unwrap()
    }

    /// A client trusting this CA, presenting a certificate naming `client_cn` if given.
    pub fn client_config(&self, client_cn: Option<&str>) -> Arc<ClientConfig> {
        tls::client_config(self.roots(), client_cn.map(|cn| self.identity(cn, &[]))).unwrap()
    }
}

/// The service listener of a network harness, restartable.
struct ServiceListener {
    addr: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The gateway's place on the broker, for the RabbitMQ transport.
struct BrokerHarness {
    settings: BrokerSettings,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct Harness {
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    /// The admin surface's address.
    pub admin_addr: SocketAddr,
    pub client: reqwest::Client,
    pub transport: Transport,
    /// The CA of the TLS transport.
    pub pki: TestPki,
    /// Whether services must present client certificates (mutual TLS).
    mutual_tls: bool,
    memory: MemoryConnector,
    listener: Option<ServiceListener>,
    broker: Option<BrokerHarness>,
    shutdown: CancellationToken,
    /// Shut down with the harness, so no service outlives its test.
    services: Vec<CancellationToken>,
}

impl Harness {
    /// A gateway with `config` and no services, which attach in memory.
    pub async fn start(config: GatewayConfig) -> Harness {
        Harness::start_on(config, Transport::Memory).await
    }

    /// A gateway with `config` whose services attach over `transport`.
    pub async fn start_on(config: GatewayConfig, transport: Transport) -> Harness {
        Harness::launch(config, transport, false).await
    }

    /// A gateway whose services attach over mutual TLS, each presenting a certificate
    /// with its service name as common name.
    pub async fn start_mtls(config: GatewayConfig) -> Harness {
        Harness::launch(config, Transport::Tls, true).await
    }

    async fn launch(config: GatewayConfig, transport: Transport, mutual_tls: bool) -> Harness {
        init_test_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let gateway = Gateway::new(config).expect("valid test gateway");
        let shutdown = CancellationToken::new();
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let pki = TestPki::new();
        let memory = gateway.attach_memory();
        let listeners =
            Listeners { public: listener, admin: Some(admin), redirect: None, services: None, broker: None };
        {
            let (gateway, shutdown) = (Arc::clone(&gateway), shutdown.clone());
            tokio::spawn(async move { gateway.run(listeners, shutdown).await });
        }
        let mut harness = Harness {
            gateway,
            addr,
            admin_addr,
            client,
            transport,
            pki,
            mutual_tls,
            memory,
            listener: None,
            broker: None,
            shutdown,
            services: Vec::new(),
        };
        match transport {
            Transport::Memory => {}
            Transport::RabbitMq => harness.listen_on_broker(unique_broker_settings()).await,
            Transport::Tcp | Transport::Tls => {
                let acceptor = (transport == Transport::Tls).then(|| harness.pki.acceptor(mutual_tls));
                harness.listen_for_services("127.0.0.1:0".parse().unwrap(), acceptor).await;
            }
        }
        harness
    }

    /// A gateway whose services dial in through the broker under `settings` (to put
    /// several gateways on one prefix, as replicas).
    pub async fn start_on_broker(config: GatewayConfig, settings: BrokerSettings) -> Harness {
        let mut harness = Harness::launch(config, Transport::Memory, false).await;
        harness.transport = Transport::RabbitMq;
        harness.listen_on_broker(settings).await;
        harness
    }

    async fn listen_on_broker(&mut self, settings: BrokerSettings) {
        let address = amqp_url().parse().unwrap();
        let listener = BrokerListener::bind(address, settings.clone()).await.expect("the test broker is reachable");
        let stop = self.shutdown.child_token();
        let (gateway, token) = (Arc::clone(&self.gateway), stop.clone());
        let task = tokio::spawn(async move { gateway.serve_broker_services(listener, token).await });
        self.broker = Some(BrokerHarness { settings, stop, task });
    }

    /// The broker settings of the RabbitMQ transport.
    pub fn broker_settings(&self) -> &BrokerSettings {
        &self.broker.as_ref().expect("the RabbitMQ transport").settings
    }

    async fn listen_for_services(&mut self, addr: SocketAddr, acceptor: Option<TlsAcceptor>) {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = self.shutdown.child_token();
        let (gateway, token, tls) = (Arc::clone(&self.gateway), stop.clone(), acceptor.clone());
        let task = tokio::spawn(async move { gateway.serve_services(listener, tls, token).await });
        self.listener = Some(ServiceListener { addr, acceptor, stop, task });
    }

    /// A gateway with `config` and the demo service attached in memory.
    pub async fn with_demo(config: GatewayConfig) -> Harness {
        Harness::with_demo_on(config, Transport::Memory).await
    }

    /// A gateway with `config` and the demo service attached over `transport`.
    pub async fn with_demo_on(config: GatewayConfig, transport: Transport) -> Harness {
        let mut harness = Harness::start_on(config, transport).await;
        harness.attach(weir::demo::service()).await;
        harness
    }

    /// The address of the service listener (network transports).
    pub fn services_addr(&self) -> SocketAddr {
        self.listener.as_ref().expect("a network transport").addr
    }

    /// A dialer reaching this gateway over its transport, as service `name` (the common
    /// name of its client certificate, under mutual TLS).
    pub fn dialer(&self, name: &str) -> HarnessDialer {
        let target = match self.transport {
            Transport::Memory => Target::Memory(self.memory.clone()),
            Transport::Tcp => Target::Tcp(self.services_addr().to_string()),
            Transport::Tls => {
                let cn = self.mutual_tls.then_some(name);
                Target::Tls(self.tls_dialer(cn))
            }
            Transport::RabbitMq => {
                let settings = self.broker_settings().clone();
                Target::RabbitMq(RabbitMqDialer::with_settings(amqp_url().parse().unwrap(), settings))
            }
        };
        HarnessDialer { target, tap: None }
    }

    /// A TLS dialer to this gateway, trusting its CA, with a client certificate naming
    /// `client_cn` if given.
    pub fn tls_dialer(&self, client_cn: Option<&str>) -> TlsDialer {
        TlsDialer::new(self.services_addr().to_string(), None, self.pki.client_config(client_cn)).unwrap()
    }

    /// One raw connection to the gateway's service side, over the harness transport.
    pub async fn dial(&self) -> Box<dyn ByteStream> {
        self.dialer("raw").dial().await.expect("dial the gateway")
    }

    /// Attaches `service` over the harness transport and waits until it is registered.
    pub async fn attach(&mut self, service: Service) -> RunHandle {
        let dialer = self.dialer(service.name());
        self.run_registered(service, dialer).await
    }

    /// Attaches `service` through a [`Wire`] that can freeze its connection (a silent,
    /// half-open peer) and reports the gateway's heartbeats.
    pub async fn attach_tapped(&mut self, service: Service) -> (RunHandle, Wire) {
        let mut dialer = self.dialer(service.name());
        let wire = Wire::new(self.shutdown.clone());
        dialer.tap = Some(wire.clone());
        (self.run_registered(service, dialer).await, wire)
    }

    async fn run_registered(&mut self, service: Service, dialer: HarnessDialer) -> RunHandle {
        let handle = service.run(dialer);
        let registered = tokio::time::timeout(WAIT, handle.registered()).await.expect("service did not register");
        assert!(registered, "service stopped before registering");
        self.services.push(handle.shutdown_token());
        handle
    }

    /// Restarts the service side: closes every service link and, for a network
    /// transport, stops the listener and listens again on the same address.
    pub async fn restart_services(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.stop.cancel();
            broker.task.await.unwrap();
            self.gateway.close_services("gateway restarting");
            self.listen_on_broker(broker.settings).await;
        } else if let Some(listener) = self.listener.take() {
            listener.stop.cancel();
            listener.task.await.unwrap();
            self.gateway.close_services("gateway restarting");
            self.listen_for_services(listener.addr, listener.acceptor).await;
        } else {
            self.gateway.close_services("gateway restarting");
        }
    }

    /// Begins the gateway's shutdown, as SIGTERM does; its services stay attached.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The URL of `path` on the admin surface.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
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
        // Stops the gateway's `run`: it drains, then closes its service links.
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
enum Target {
    Memory(MemoryConnector),
    Tcp(String),
    Tls(TlsDialer),
    RabbitMq(RabbitMqDialer),
}

/// Dials the harness gateway over its transport, optionally through a [`Wire`].
#[derive(Clone)]
pub struct HarnessDialer {
    target: Target,
    tap: Option<Wire>,
}

impl Dialer for HarnessDialer {
    type Io = Box<dyn ByteStream>;

    async fn dial(&self) -> io::Result<Box<dyn ByteStream>> {
        let io: Box<dyn ByteStream> = match &self.target {
            Target::Memory(connector) => Box::new(connector.connect().await?),
            Target::Tcp(addr) => Box::new(weir_transport::tcp::connect(addr.as_str()).await?),
            Target::Tls(dialer) => Box::new(dialer.dial().await?),
            Target::RabbitMq(dialer) => Box::new(dialer.dial().await?),
        };
        Ok(match &self.tap {
            None => io,
            Some(wire) => Box::new(wire.splice(io)),
        })
    }
}

/// A relay between a service and its connection that can go silent on command, as a
/// half-open socket does: after [`Wire::freeze`] nothing passes either way and nothing
/// closes. Each dial gets a fresh relay; `freeze` applies to the latest one.
#[derive(Clone)]
pub struct Wire {
    /// Fires to freeze the current connection.
    current: Arc<Mutex<CancellationToken>>,
    /// Gateway heartbeats relayed so far, over every connection.
    heartbeats: watch::Sender<u64>,
    shutdown: CancellationToken,
}

impl Wire {
    fn new(shutdown: CancellationToken) -> Self {
        Wire { current: Arc::new(Mutex::new(CancellationToken::new())), heartbeats: watch::channel(0).0, shutdown }
    }

    /// Stops the current connection dead in both directions, without closing it.
    pub fn freeze(&self) {
        self.current.lock().unwrap().cancel();
    }

    /// Waits for the next heartbeat from the gateway to reach the service.
    pub async fn gateway_heartbeat(&self) {
        let mut seen = self.heartbeats.subscribe();
        seen.mark_unchanged();
        tokio::time::timeout(WAIT, seen.changed()).await.expect("no heartbeat from the gateway").unwrap();
    }

    /// Puts a relay between a new service end and `io`, the connection to the gateway.
    fn splice(&self, io: Box<dyn ByteStream>) -> tokio::io::DuplexStream {
        let frozen = CancellationToken::new();
        *self.current.lock().unwrap() = frozen.clone();
        let (service_end, relay_end) = tokio::io::duplex(256 * 1024);
        let heartbeats = self.heartbeats.clone();
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            // The task owns both connections until the test ends, frozen or not.
            let (mut from_gateway, mut to_gateway) = tokio::io::split(io);
            let (mut from_service, mut to_service) = tokio::io::split(relay_end);
            let down = async {
                let mut frames = FramedRead::new(&mut from_gateway, FrameCodec::default());
                let mut sink = FramedWrite::new(&mut to_service, FrameCodec::default());
                while let Some(Ok(frame)) = frames.next().await {
                    let heartbeat = frame.frame_type == FrameType::Heartbeat;
                    if sink.send(frame).await.is_err() {
                        break;
                    }
                    if heartbeat {
                        heartbeats.send_modify(|n| *n += 1);
                    }
                }
                // The gateway closed: pass the end of stream on.
                let _ = sink.close().await;
            };
            let up = async {
                let _ = tokio::io::copy(&mut from_service, &mut to_gateway).await;
                let _ = to_gateway.shutdown().await;
            };
            // Frozen: stop relaying but keep both ends open until the test ends.
            tokio::select! {
                _ = async { tokio::join!(down, up) } => {}
                () = frozen.cancelled() => stop.cancelled().await,
                () = stop.cancelled() => {}
            }
        });
        service_end
    }
}

/// Warnings and errors of the gateway and services in this test process go to the
/// test's captured output, which is shown when the test fails, with the request body
/// pump's and the link's debug lines (a body that stalls, on whose side); `RUST_LOG`
/// overrides this.
fn init_test_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "warn,lapin=error,weir_gateway::upstream::http=debug,weir_transport::link=debug",
            )
        });
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Default config with small, test-friendly limits where a test crosses them.
pub fn config() -> GatewayConfig {
    GatewayConfig::default()
}

/// `/api` business and `/stream` streaming, as `weir serve` mounts the demo, without
/// rate limits (tests drive load).
pub fn demo_mounts() -> GatewayConfig {
    let mount = |prefix: &str, profile| MountConfig {
        prefix: prefix.into(),
        profile,
        root: None,
        auth: AuthConfig::None,
        settings: MountSettings { rate_limit_requests: None, ..MountSettings::declared_defaults() },
    };
    GatewayConfig { mounts: vec![mount("/api", Profile::Business), mount("/stream", Profile::Streaming)], ..config() }
}

/// A config whose services must present a token: `service` may register under
/// `prefixes` with `token`.
pub fn with_credential(
    mut config: GatewayConfig,
    service: &str,
    token: Option<&str>,
    prefixes: &[&str],
) -> GatewayConfig {
    config.services.credentials.push(weir_gateway::config::ServiceCredential {
        service: service.to_owned(),
        token: token.map(str::to_owned),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    });
    config
}

/// Waits for a state change that has no event of its own (a heartbeat applied, a
/// connection noticed closed), polling briefly; [`WAIT`] bounds it.
pub async fn until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition never held");
}

/// The Hello of a hand-driven service `service`, version 1.0.0, without a token.
pub fn hello(service: &str, endpoints: Vec<weir_proto::EndpointDescriptor>) -> weir_proto::Hello {
    weir_proto::Hello {
        protocol_version: weir_proto::PROTOCOL_VERSION,
        service: service.into(),
        version: "1.0.0".into(),
        region: String::new(),
        instance_id: format!("{service}-1"),
        initial_window: 65536,
        token: String::new(),
        endpoints,
    }
}
