//! HTTPS on the client listener (`[server.tls]`), over real sockets and real TLS with a
//! throwaway CA: HTTP/2 or HTTP/1.1 as ALPN negotiates, for many clients at once; the
//! certificate chosen by SNI (and refused for unknown names under `strict_sni`); the
//! handshake timeout crossed by silent and half-ClientHello clients; the late 408 of a
//! slow request head, over TLS as over plain; the redirect listener's 308s; and
//! `weir check-config` naming the key of a mismatched key and of an expired certificate.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{date_time_ymd, CertificateParams, DnType, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use weir_gateway::config::{ServerTlsConfig, SniCertificateConfig};
use weir_gateway::{Gateway, GatewayConfig, Listeners};
use weir_transport::tls::{certificate_identity, ClientConfig, ClientTlsStream, TlsConnector};

use crate::common::*;

/// PEM files of one test, in a fresh directory removed when dropped.
pub(crate) struct Pems(PathBuf);

impl Pems {
    pub(crate) fn new(name: &str) -> Pems {
        let dir = std::env::temp_dir().join(format!("weir-https-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Pems(dir)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A certificate from `pki` with common name `cn` for `sans`, written as
    /// `{cn}.pem` and `{cn}.key`.
    fn issue(&self, pki: &TestPki, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = pki.issue(cn, sans);
        (self.write(&format!("{cn}.pem"), &cert), self.write(&format!("{cn}.key"), &key))
    }
}

impl Drop for Pems {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// HTTPS with a default certificate (common name `default`, for localhost and
/// 127.0.0.1), one for `api.example.com` (`api`) and one for `*.apps.example.com`
/// (`apps`).
fn tls_config(pki: &TestPki, pems: &Pems) -> ServerTlsConfig {
    let (cert, key) = pems.issue(pki, "default", &["localhost", "127.0.0.1"]);
    let mut tls = ServerTlsConfig::new(cert, key);
    for (cn, name) in [("api", "api.example.com"), ("apps", "*.apps.example.com")] {
        let (cert, key) = pems.issue(pki, cn, &[name]);
        tls.certificates.push(SniCertificateConfig { names: vec![name.to_owned()], cert, key });
    }
    tls
}

fn https_config(pki: &TestPki, pems: &Pems) -> GatewayConfig {
    let mut config = GatewayConfig::default();
    config.server.tls = Some(tls_config(pki, pems));
    config
}

/// One test's PEM files (removed when the first is dropped), CA and HTTPS configuration.
fn https_setup(name: &str) -> (Pems, TestPki, GatewayConfig) {
    let pems = Pems::new(name);
    let pki = TestPki::new();
    let config = https_config(&pki, &pems);
    (pems, pki, config)
}

/// A client trusting `pki`'s CA, offering `alpn`.
pub(crate) fn client(pki: &TestPki, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = Arc::unwrap_or_clone(pki.client_config(None));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Accepts any certificate: for seeing which one the gateway chose for a name it is not
/// valid for.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn trusting_anything() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr` asking for `name` (an IP address sends no SNI).
pub(crate) async fn connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
) -> io::Result<ClientTlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp)).await.expect("handshake hangs")
}

/// The common name of the certificate the gateway presented.
pub(crate) fn presented(stream: &ClientTlsStream<TcpStream>) -> String {
    let certificate = &stream.get_ref().1.peer_certificates().expect("a certificate")[0];
    certificate_identity(certificate).expect("a common name")
}

/// GETs each of `paths` on one connection, as HTTP/2 if ALPN said so, else HTTP/1.1;
/// returns each answer's version and status.
pub(crate) async fn get_all(stream: ClientTlsStream<TcpStream>, paths: &[&str]) -> Vec<(Version, StatusCode)> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let mut answers = Vec::new();
    if h2 {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(connection);
        for path in paths {
            let request = Request::get(format!("https://localhost{path}")).body(Empty::<Bytes>::new()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            answers.push((response.version(), response.status()));
            response.into_body().collect().await.unwrap();
        }
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        for path in paths {
            let request = Request::get(*path).header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            answers.push((response.version(), response.status()));
            response.into_body().collect().await.unwrap();
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_http2_or_http1_for_many_clients_at_once() {
    let (_pems, pki, config) = https_setup("alpn");
    let h = Harness::with_demo(config).await;
    let clients = (0..40).map(|i| {
        let (addr, offers_h2) = (h.addr, i % 2 == 0);
        let alpn: &[&[u8]] = if offers_h2 { &[b"h2", b"http/1.1"] } else { &[b"http/1.1"] };
        let config = client(&pki, alpn);
        tokio::spawn(async move {
            let stream = connect(addr, "localhost", config).await.expect("handshake");
            assert_eq!(presented(&stream), "default");
            let answers = get_all(stream, &["/api/hello", "/api/items/7", "/healthz"]).await;
            let version = if offers_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
            assert_eq!(answers, vec![(version, StatusCode::OK); 3]);
        })
    });
    for client in clients.collect::<Vec<_>>() {
        tokio::time::timeout(WAIT, client).await.expect("client hangs").unwrap();
    }
    // Without ALPN the connection is HTTP/1.1: HTTP/2's preface is not taken as HTTP/2.
    let mut stream = connect(h.addr, "localhost", client(&pki, &[])).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("no close");
    let settings_frame = answer.len() >= 4 && answer[3] == 0x04;
    assert!(!settings_frame, "answered as HTTP/2: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_strict_sni_refuses_unknown_names() {
    let pems = Pems::new("sni");
    let pki = TestPki::new();
    let h = Harness::start(https_config(&pki, &pems)).await;
    let cases = [
        ("api.example.com", "api"),
        ("x.apps.example.com", "apps"),
        ("a.b.apps.example.com", "default"),
        ("unknown.example.org", "default"),
        ("127.0.0.1", "default"),
    ];
    for (name, expected) in cases {
        let stream = connect(h.addr, name, trusting_anything()).await.unwrap();
        assert_eq!(presented(&stream), expected, "for {name}");
        assert_eq!(get_all(stream, &["/healthz"]).await[0].1, StatusCode::OK);
    }
    // Verified for real: the chosen certificate is valid for the name.
    let stream = connect(h.addr, "x.apps.example.com", client(&pki, &[b"h2"])).await.unwrap();
    assert_eq!(get_all(stream, &["/healthz"]).await, [(Version::HTTP_2, StatusCode::OK)]);

    let mut config = https_config(&pki, &pems);
    config.server.tls.as_mut().unwrap().strict_sni = true;
    let strict = Harness::start(config).await;
    for name in ["unknown.example.org", "a.b.apps.example.com", "127.0.0.1"] {
        let refused = connect(strict.addr, name, trusting_anything()).await;
        assert!(refused.is_err(), "{name} was served");
    }
    for (name, expected) in [("api.example.com", "api"), ("localhost", "default")] {
        let stream = connect(strict.addr, name, client(&pki, &[])).await.unwrap();
        assert_eq!(presented(&stream), expected);
    }
    let metrics = strict.gateway.metrics();
    counted(|| metrics.tls_handshake_failures("error"), 3).await;
}

/// Waits until `count` reaches `expected` (the gateway counts a failed handshake just
/// after closing its socket, so a client can see the close first), and checks it stops
/// there.
async fn counted(count: impl Fn() -> u64, expected: u64) {
    let reached = tokio::time::timeout(WAIT, async {
        while count() < expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    reached.await.expect("not counted");
    assert_eq!(count(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_does_not_end_in_time_is_closed_and_counted() {
    let (_pems, pki, mut config) = https_setup("handshake");
    let bound = Duration::from_millis(400);
    config.server.tls.as_mut().unwrap().handshake_timeout = bound;
    let h = Harness::start(config).await;
    // A ClientHello record header announcing 512 bytes, and only 10 of them.
    let half_hello: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    let stalled = (0..32).map(|i| {
        let addr = h.addr;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut socket = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 1 {
                socket.write_all(half_hello).await.unwrap();
            }
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(WAIT, socket.read(&mut buf)).await.expect("never closed");
            assert!(matches!(read, Ok(0) | Err(_)), "got bytes: {read:?}");
            started.elapsed()
        })
    });
    let stalled: Vec<_> = stalled.collect();
    // Meanwhile a real client is served.
    let stream = connect(h.addr, "localhost", client(&pki, &[b"h2"])).await.unwrap();
    assert_eq!(get_all(stream, &["/healthz"]).await, [(Version::HTTP_2, StatusCode::OK)]);
    for client in stalled {
        let waited = client.await.unwrap();
        assert!(waited >= bound, "closed after {waited:?}, before the bound");
        assert!(waited < bound + Duration::from_secs(2), "closed after {waited:?}, long after the bound");
    }
    let metrics = h.gateway.metrics();
    counted(|| metrics.tls_handshake_failures("timeout"), 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_completes_over_tls_gets_408() {
    let (_pems, pki, mut config) = https_setup("slow-head");
    config.server.header_timeout = Duration::from_millis(300);
    let h = Harness::with_demo(config).await;
    let slow = (0..8).map(|_| {
        let (addr, config) = (h.addr, client(&pki, &[b"http/1.1"]));
        tokio::spawn(async move {
            let mut stream = connect(addr, "localhost", config).await.unwrap();
            stream.write_all(b"GET /api/hello HTTP/1.1\r\nhost: localhost\r\nx-slow: ").await.unwrap();
            let started = Instant::now();
            let mut answer = Vec::new();
            let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("never answered");
            let answer = String::from_utf8_lossy(&answer).into_owned();
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} ({read:?})");
            assert!(read.is_ok(), "not closed with close_notify: {read:?}");
            started.elapsed()
        })
    });
    for client in slow.collect::<Vec<_>>() {
        assert!(client.await.unwrap() < Duration::from_secs(3));
    }
}

/// A gateway with HTTPS on one listener and the redirect on another; stops when the
/// returned token is dropped.
struct Redirecting {
    gateway: Arc<Gateway>,
    https: SocketAddr,
    redirect: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

async fn start_redirecting(config: GatewayConfig) -> Redirecting {
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (https, redirect_addr) = (public.local_addr().unwrap(), redirect.local_addr().unwrap());
    let gateway = Gateway::new(config).unwrap();
    let stop = CancellationToken::new();
    let listeners = Listeners { public, admin: None, redirect: Some(redirect), services: None, broker: None };
    let (running, shutdown) = (Arc::clone(&gateway), stop.clone());
    tokio::spawn(async move { running.run(listeners, shutdown).await });
    Redirecting { gateway, https, redirect: redirect_addr, _stop: stop.drop_guard() }
}

/// Sends `request` on a new plain connection and reads the answer to its end.
pub(crate) async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await.expect("never answered");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_answers_308_to_https_with_the_same_path() {
    let (_pems, pki, mut config) = https_setup("redirect");
    config.server.header_timeout = Duration::from_millis(300);
    let r = start_redirecting(config).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let requests = (0..32).map(|i| {
        let url = format!("http://{}/a/{i}?x=1&y=%20", r.redirect);
        let request = if i % 2 == 0 { http.get(url) } else { http.post(url).body("payload") };
        request.header("host", "example.com:8080").send()
    });
    let port = r.https.port();
    for (i, response) in futures_util::future::join_all(requests).await.into_iter().enumerate() {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(location, format!("https://example.com:{port}/a/{i}?x=1&y=%20"));
    }
    let no_host = exchange(r.redirect, "GET /a HTTP/1.0\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400") || no_host.starts_with("HTTP/1.0 400"), "{no_host:?}");
    // The front's protections hold on this listener too.
    let slow = exchange(r.redirect, "GET /a HTTP/1.1\r\nhost: example.com\r\nx-slow: ").await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow:?}");
    // And the HTTPS listener it points to answers.
    let stream = connect(r.https, "localhost", client(&pki, &[b"h2"])).await.unwrap();
    assert_eq!(get_all(stream, &["/healthz"]).await, [(Version::HTTP_2, StatusCode::OK)]);
    assert!(r.gateway.client_tls().is_some());
}

/// A self-signed certificate for `name` valid from `from` to `until` (year, month, day).
fn dated_certificate(name: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = date_time_ymd(from.0, from.1, from.2);
    params.not_after = date_time_ymd(until.0, until.1, until.2);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// `weir check-config` on `config`: whether it passed, and what it printed.
fn check_config(dir: &Path, config: &str) -> (bool, String) {
    let file = dir.join("weir.toml");
    std::fs::write(&file, config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("weir runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), printed)
}

#[test]
fn check_config_names_the_key_of_a_mismatched_key_and_of_an_expired_certificate() {
    let pems = Pems::new("check-config");
    let pki = TestPki::new();
    let (cert, key) = pems.issue(&pki, "default", &["localhost"]);
    let (_, other_key) = pems.issue(&pki, "other", &["localhost"]);
    let (expired, expired_key) = dated_certificate("old.example.com", (2000, 1, 1), (2001, 1, 1));
    let (expired, expired_key) = (pems.write("old.pem", &expired), pems.write("old.key", &expired_key));
    let entry = |cert: &Path, key: &Path| {
        format!("[[server.tls.certificates]]\nnames = [\"old.example.com\"]\ncert = {cert:?}\nkey = {key:?}\n")
    };
    let sound = format!("[server.tls]\ncert = {cert:?}\nkey = {key:?}\n");
    let (ok, printed) = check_config(&pems.0, &sound);
    assert!(ok, "{printed}");
    let broken = format!("[server.tls]\ncert = {cert:?}\nkey = {other_key:?}\n\n{}", entry(&expired, &expired_key));
    let (ok, printed) = check_config(&pems.0, &broken);
    assert!(!ok, "{printed}");
    assert!(printed.contains("line 3: server.tls.key: "), "{printed}");
    assert!(printed.contains("is not the key of the certificate"), "{printed}");
    assert!(printed.contains("line 7: server.tls.certificates[0].cert: "), "{printed}");
    assert!(printed.contains("expired on 2001-01-01 00:00:00 UTC"), "{printed}");
    let missing = format!("[server.tls]\ncert = {:?}\nkey = {key:?}\n", pems.0.join("nowhere.pem"));
    let (ok, printed) = check_config(&pems.0, &missing);
    assert!(!ok && printed.contains("line 2: server.tls.cert: "), "{printed}");
}

#[test]
fn dev_cert_writes_a_certificate_check_config_accepts() {
    let pems = Pems::new("dev-cert");
    let out = pems.0.join("certs");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["dev-cert", "--out"])
        .arg(&out)
        .args(["--name", "localhost", "--name", "127.0.0.1"])
        .output()
        .expect("weir runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    let config = format!("[server.tls]\ncert = {cert:?}\nkey = {key:?}\n");
    let (ok, printed) = check_config(&pems.0, &config);
    assert!(ok, "{printed}");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["dev-cert", "--out"]).arg(&out).output();
    assert!(!again.unwrap().status.success(), "overwrote the files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_that_stop_reading_are_cut_at_send_timeout() {
    let (_pems, pki, mut config) = https_setup("stalled");
    config.server.send_timeout = Duration::from_millis(300);
    let mut h = Harness::start(config).await;
    let (service, mut cancelled) = crate::protections::reporting_download(512 * 1024 * 1024);
    h.attach(service).await;
    let (mut held, mut unread) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        // HTTP/1.1: the connection's writes stall once the socket buffers are full.
        let mut stream = connect(h.addr, "localhost", client(&pki, &[b"http/1.1"])).await.unwrap();
        stream.write_all(b"GET /big HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        held.push(stream);
        // HTTP/2: the stream's window runs out; the response head comes, the body is
        // never read.
        let stream = connect(h.addr, "localhost", client(&pki, &[b"h2"])).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get("https://localhost/big").body(Empty::<Bytes>::new()).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        unread.push(response);
    }
    for _ in 0..8 {
        tokio::time::timeout(WAIT, cancelled.recv()).await.expect("a stalled stream was never cancelled");
    }
    assert_eq!(h.gateway.service_connections(), 1, "only the streams end, not the service link");
}
