//! The binary end to end: `weir serve` prints where its HTTP front and its service
//! listener are, `weir demo-service` dials that listener over TCP with a token or over
//! mutual TLS, the demo answers through the gateway, and both exit 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use reqwest::StatusCode;
use tokio::sync::mpsc;

use crate::common::*;

/// A child process killed if the test fails, with its stdout as a stream of lines.
pub(crate) struct Proc {
    /// `None` once waited for.
    child: Option<Child>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    /// `weir` with `args`.
    pub(crate) fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_program(env!("CARGO_BIN_EXE_weir"), args).expect("weir starts")
    }

    /// `program` with `args`; fails when it cannot be started (not installed).
    pub(crate) fn spawn_program(program: &str, args: &[&str]) -> std::io::Result<Proc> {
        let mut child = Command::new(program).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Proc { child: Some(child), lines })
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub(crate) async fn line(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.recv()).await.expect("no such line").expect("exited");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// Sends `signal` (as `kill` names it: `-HUP`) to the running process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the exit, without a signal.
    pub(crate) async fn exited(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let waited = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(WAIT, waited).await.expect("did not exit").unwrap().unwrap()
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) async fn terminate(self) -> ExitStatus {
        self.signal("-TERM");
        self.exited().await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scratch directory for one test's files.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `weir serve` with `config`, on ephemeral ports; returns it, its HTTP address and the
/// service listener's `scheme://addr`.
async fn serve(config: &str) -> (Proc, String, String) {
    let args =
        ["serve", "--no-demo", "--config", config, "--listen", "127.0.0.1:0", "--services-listen", "127.0.0.1:0"];
    let mut gateway = Proc::spawn(&args);
    let http = gateway.line("weir listening on ").await;
    let services = gateway.line("weir services on ").await;
    (gateway, http, services)
}

async fn demo_answers(http: &str) {
    let response = reqwest::get(format!("{http}/api/items/3")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["id"], "3");
}

#[tokio::test]
async fn demo_service_dials_weir_serve_over_tcp_with_a_token() {
    let dir = scratch("tcp");
    let config = write(
        &dir,
        "weir.toml",
        "[[services.credentials]]\nservice = \"demo\"\ntoken = \"t0ken\"\nprefixes = [\"/api\", \"/stream\"]\n",
    );
    let (gateway, http, services) = serve(&config).await;
    let addr = services.strip_prefix("tcp://").expect("a TCP listener").to_owned();
    let mut demo = Proc::spawn(&["demo-service", "--connect", &addr, "--token", "t0ken"]);
    assert_eq!(demo.line("weir demo-service registered with ").await, services);
    demo_answers(&http).await;
    assert!(demo.terminate().await.success());
    assert!(gateway.terminate().await.success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn demo_service_dials_weir_serve_over_mutual_tls() {
    let dir = scratch("mtls");
    let pki = TestPki::new();
    let (cert, key) = pki.issue("gateway", &["127.0.0.1"]);
    let (client_cert, client_key) = pki.issue("demo", &[]);
    let ca = write(&dir, "ca.pem", &pki.ca_pem());
    let config = format!(
        "[services.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{ca}\"\n\n\
         [[services.credentials]]\nservice = \"demo\"\nprefixes = [\"/api\", \"/stream\"]\n",
        write(&dir, "gateway.pem", &cert),
        write(&dir, "gateway.key", &key),
    );
    let config = write(&dir, "weir.toml", &config);
    let (gateway, http, services) = serve(&config).await;
    let addr = services.strip_prefix("tls://").expect("a TLS listener").to_owned();
    let (client_cert, client_key) = (write(&dir, "demo.pem", &client_cert), write(&dir, "demo.key", &client_key));
    let args =
        ["demo-service", "--connect", &addr, "--tls-ca", &ca, "--tls-cert", &client_cert, "--tls-key", &client_key];
    let mut demo = Proc::spawn(&args);
    assert_eq!(demo.line("weir demo-service registered with ").await, services);
    demo_answers(&http).await;
    assert!(demo.terminate().await.success());
    assert!(gateway.terminate().await.success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn serve_with_the_embedded_demo_answers_at_once_and_drains_on_sigterm() {
    let args =
        ["serve", "--listen", "127.0.0.1:0", "--services-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let mut gateway = Proc::spawn(&args);
    let http = gateway.line("weir listening on ").await;
    let admin = gateway.line("weir admin on ").await;
    assert_eq!(reqwest::get(format!("{http}/healthz")).await.unwrap().status(), StatusCode::OK);
    demo_answers(&http).await;
    let metrics = reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"weir_service_instances{service="demo""#), "{metrics}");
    let dashboard = reqwest::get(format!("{admin}/")).await.unwrap();
    assert_eq!(dashboard.status(), StatusCode::OK);
    // A request in flight when SIGTERM arrives still completes, then weir exits 0.
    let slow = tokio::spawn(reqwest::get(format!("{http}/api/slow?ms=700")));
    // A request sent after it has been answered, so the slow one is in flight by now.
    demo_answers(&http).await;
    assert!(gateway.terminate().await.success());
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
}

#[tokio::test]
async fn serve_without_the_demo_has_no_demo_routes() {
    let args = ["serve", "--no-demo", "--listen", "127.0.0.1:0", "--services-listen", "127.0.0.1:0"];
    let mut gateway = Proc::spawn(&args);
    let http = gateway.line("weir listening on ").await;
    assert_eq!(reqwest::get(format!("{http}/api/hello")).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert!(gateway.terminate().await.success());
}

#[tokio::test]
async fn check_config_prints_every_error_with_key_and_line_and_exits_1() {
    let dir = scratch("check");
    let bad = write(
        &dir,
        "bad.toml",
        "[server]\nlisten = \"nowhere\"\nheader_timeout = \"5 parsecs\"\n\n[limits]\nchunk_size = 0\nmystery = 1\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["check-config", &bad]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "line 2: server.listen",
        "line 3: server.header_timeout",
        "line 6: limits.chunk_size",
        "line 7: limits.mystery",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in {stderr}");
    }
    let good = write(&dir, "good.toml", "[server]\nlisten = \"127.0.0.1:0\"\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["check-config", &good]).output().unwrap();
    assert!(output.status.success());
    std::fs::remove_dir_all(dir).unwrap();
}
