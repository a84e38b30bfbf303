//! The live dashboard in a real browser: headless Chromium, driven through chromedriver
//! over WebDriver (the `fantoccini` crate), loads the admin listener's `/` with the demo
//! service attached on `/api` and `/stream`, shows the demo's routes, shows a route's
//! request counter moving while HTTP/1.1 and HTTP/2 clients load the gateway, and
//! cancels a request in flight from its row: the client gets 503 `cancelled` and the row
//! goes. The page runs under its own `default-src 'self'` policy, so a script it tried to
//! run inline would not run and nothing here would appear.
//!
//! With `WEIR_DASHBOARD_SCREENSHOT=PATH` the page under load is saved at PATH as PNG
//! (`docs/dashboard.png` is one). Chromium and chromedriver are Debian's `chromium` and
//! `chromium-driver`, which `test.sh` installs.

use std::path::PathBuf;

use fantoccini::wd::Locator;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::cli::{scratch, Proc};
use crate::common::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The demo route whose counter the test watches.
const ITEMS: &str = "GET /api/items/{id}";

/// Headless Chromium under chromedriver, with a profile of its own.
struct Browser {
    /// Killed when the test ends, whatever happens.
    _driver: Proc,
    client: Client,
    /// Chromium's `--user-data-dir`, removed at the end.
    profile: PathBuf,
}

impl Browser {
    async fn launch() -> Browser {
        let driver = Proc::spawn_program(CHROMEDRIVER, &["--port=0"]);
        let mut driver = driver.unwrap_or_else(|err| {
            panic!(
                "{CHROMEDRIVER} cannot be started ({err}): run ./test.sh, which installs chromium and chromium-driver"
            )
        });
        let port = driver.line("ChromeDriver was started successfully on port ").await;
        let port = port.trim_end_matches('.').to_owned();
        let profile = scratch(&format!("chromium-{port}"));
        let capabilities = json!({
            "browserName": "chrome",
            "timeouts": { "script": WAIT.as_millis() as u64 * 2 },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver starts a Chromium session");
        Browser { _driver: driver, client, profile }
    }

    /// Ends the session: Chromium exits.
    async fn close(self) {
        self.client.clone().close().await.expect("the session ends");
    }

    /// Waits, across the page's polls, until `condition` (the body of a JavaScript
    /// function) returns something truthy, and returns it; `what` names it on failure.
    async fn until(&self, what: &str, condition: &str) -> Value {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
            const test = () => {{ {condition} }};
            const check = () => {{
                const value = test();
                if (value) {{ document.removeEventListener("weir:polled", check); done(value); }}
            }};
            document.addEventListener("weir:polled", check);
            check();"#
        );
        let value = self.client.execute_async(&script, vec![]).await;
        value.unwrap_or_else(|err| panic!("the page never showed {what}: {err}"))
    }

    /// Waits for `polls` more polls of the page, then evaluates `expression`.
    async fn after_polls(&self, polls: u32, expression: &str) -> Value {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
            let left = {polls};
            const polled = () => {{
                left -= 1;
                if (left === 0) {{ document.removeEventListener("weir:polled", polled); done({expression}); }}
            }};
            document.addEventListener("weir:polled", polled);"#
        );
        self.client.execute_async(&script, vec![]).await.expect("the page polls")
    }

    /// The text the page shows in the first element `selector` finds, read in one
    /// script (a redraw cannot come between finding it and reading it).
    async fn text(&self, selector: &str) -> String {
        let script = "return document.querySelector(arguments[0]).innerText;";
        let text = self.client.execute(script, vec![Value::String(selector.to_owned())]).await.unwrap();
        text.as_str().unwrap().to_owned()
    }
}

impl Drop for Browser {
    /// A failed test leaves its session open, and killing chromedriver would leave
    /// Chromium running: end Chromium first, by the process id its profile's lock names
    /// (`HOST-PID`; gone once it has exited), then remove the profile.
    fn drop(&mut self) {
        let lock = std::fs::read_link(self.profile.join("SingletonLock")).ok();
        let pid = lock.as_ref().and_then(|lock| lock.to_str()?.rsplit('-').next()?.parse::<u32>().ok());
        if let Some(pid) = pid {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            // Not our child, so not awaitable: it writes its profile as it exits.
            let running = std::path::Path::new("/proc").join(pid.to_string());
            let deadline = std::time::Instant::now() + WAIT;
            while running.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET /api/jobs/{id}`: reports that it started, then waits until it is cancelled.
fn jobs(started: mpsc::UnboundedSender<()>) -> Service {
    let endpoint = Endpoint::get("/api/jobs/{id}").raw(move |ctx: RawRequestContext| {
        let started = started.clone();
        async move {
            let _ = started.send(());
            ctx.cancel.cancelled().await;
            Err::<RawResponse, _>(HandlerError::unavailable("cancelled"))
        }
    });
    Service::builder("jobs", "1.0.0").endpoint(endpoint).build().unwrap()
}

/// Until `stop`: `/api/items/{n}` (200), and every tenth request a path no service
/// serves (404, an error the page shows by reason). Returns the requests answered.
async fn load(client: reqwest::Client, base: String, stop: CancellationToken) -> u64 {
    let mut answered = 0u64;
    while !stop.is_cancelled() {
        let (path, expected) = if answered % 10 == 9 {
            (format!("{base}/api/nowhere/{answered}"), StatusCode::NOT_FOUND)
        } else {
            (format!("{base}/api/items/{answered}"), StatusCode::OK)
        };
        let response = client.get(&path).send().await.unwrap();
        assert_eq!(response.status(), expected, "{path}");
        response.bytes().await.unwrap();
        answered += 1;
    }
    answered
}

/// Sixteen clients, HTTP/1.1 and HTTP/2 in turn, each running [`load`].
fn drive_load(h: &Harness, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..16)
        .map(|i| {
            let builder = reqwest::Client::builder();
            let client = if i % 2 == 0 { builder.http1_only() } else { builder.http2_prior_knowledge() };
            tokio::spawn(load(client.build().unwrap(), h.url(""), stop.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_routes_and_load_and_cancels_a_request_in_a_real_browser() {
    let mut h = Harness::with_demo(demo_mounts()).await;
    let (started, mut job_started) = mpsc::unbounded_channel();
    h.attach(jobs(started)).await;
    let browser = Browser::launch().await;
    browser.client.goto(&h.admin_url("/")).await.unwrap();

    // The demo's routes, both mounts, each with its healthy instance.
    let routes = [ITEMS, "POST /api/echo", "GET /stream/echo", "POST /stream/upload", "GET /api/jobs/{id}"];
    let selectors: Vec<String> = routes.iter().map(|r| format!(r#"tr[data-route="{r}"]"#)).collect();
    let all_shown = selectors.iter().map(|s| format!("document.querySelector('{s}') !== null")).collect::<Vec<_>>();
    browser.until("the demo's routes", &format!("return {};", all_shown.join(" && "))).await;
    let items_row = browser.text(&selectors[0]).await;
    assert!(items_row.contains("/api/items/{id}") && items_row.contains("healthy"), "{items_row}");
    assert!(items_row.contains(&format!("v{}", env!("CARGO_PKG_VERSION"))), "{items_row}");
    assert_eq!(browser.text(&format!("{} td.count", selectors[0])).await, "0");

    // Under load the counter moves, poll after poll, and the rate and percentiles show.
    let stop = CancellationToken::new();
    let clients = drive_load(&h, &stop);
    let count_above = |n: u64| {
        format!(
            r#"const row = document.querySelector('{}'); return row && Number(row.dataset.count) > {n} ? Number(row.dataset.count) : null;"#,
            selectors[0]
        )
    };
    let first = browser.until("requests counted", &count_above(0)).await.as_u64().unwrap();
    let second = browser.until("the counter moving", &count_above(first)).await.as_u64().unwrap();
    assert!(second > first);
    let p99 = format!(
        r#"const cells = document.querySelector('{}').cells; return cells[5].textContent !== "–" && cells[4].textContent !== "–" && cells[6].textContent;"#,
        selectors[0]
    );
    browser.until("a rate and percentiles", &p99).await;
    browser
        .until("404s by reason", r#"return document.querySelector('#refusals tr[data-reason="not_found"]') !== null;"#)
        .await;

    // A request in flight appears in the registry, and its Cancel button ends it.
    let slow = tokio::spawn(h.client.get(h.url("/api/jobs/7")).send());
    tokio::time::timeout(WAIT, job_started.recv()).await.unwrap().unwrap();
    let listed = r#"const row = document.querySelector('#requests tr[data-route="/api/jobs/{id}"]'); return row && row.dataset.requestId;"#;
    let id = browser.until("the request in flight", listed).await.as_str().unwrap().to_owned();
    if let Ok(path) = std::env::var("WEIR_DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, browser.client.screenshot().await.unwrap()).unwrap();
    }
    let button = format!(r#"tr[data-request-id="{id}"] button.cancel"#);
    browser.client.find(Locator::Css(&button)).await.unwrap().click().await.unwrap();
    let response = tokio::time::timeout(WAIT, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "cancelled");
    until(|| h.gateway.registry().list().iter().all(|r| r.id.to_string() != id)).await;
    // Two polls: the second began after the registry let the request go.
    let gone =
        browser.after_polls(2, &format!(r#"document.querySelector('tr[data-request-id="{id}"]') === null"#)).await;
    assert_eq!(gone, Value::Bool(true), "the cancelled request's row is still shown");

    stop.cancel();
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    assert!(answered >= second, "the page counted {second} of {answered} requests");
    browser
        .until(
            "the cancel by reason",
            r#"return document.querySelector('#refusals tr[data-reason="cancelled"]') !== null;"#,
        )
        .await;
    browser.close().await;
}
