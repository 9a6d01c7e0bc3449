//! Shared test scaffolding for the webhook tests: signing deliveries the way providers do
//! (HMAC computed here, independently of the server's code), a local stand-in of CCPayment's
//! record API that checks the ledger's request signatures, the real `ledgerd` binary on
//! `127.0.0.1:0`, and a small HTTP client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::Sha256;

#[path = "../process/mod.rs"]
pub mod process;

use process::{Exited, Spawned, spawn_listening};

pub const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const CC_APP_ID: &str = "202302010636261620672405236006912";
pub const CC_SECRET: &str = "test_app_secret";
pub const CC_SECRET_VARIABLE: &str = "LEDGERD_TEST_CCPAYMENT_SECRET";

pub fn unix_seconds() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Standard Webhooks headers for `body`, signed with `secret` at `timestamp`.
pub fn standard_headers(secret: &str, message_id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(&key, &[message_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    let signature = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac));
    vec![
        ("webhook-id".to_owned(), message_id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp),
        ("webhook-signature".to_owned(), signature),
    ]
}

/// CCPayment headers for `body`, signed with `secret` at `timestamp`.
pub fn ccpayment_headers(app_id: &str, secret: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let timestamp = timestamp.to_string();
    let sign = hex::encode(hmac_sha256(secret.as_bytes(), &[app_id.as_bytes(), timestamp.as_bytes(), body]));
    vec![
        ("Appid".to_owned(), app_id.to_owned()),
        ("Timestamp".to_owned(), timestamp),
        ("Sign".to_owned(), sign),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ]
}

// ---- the provider's record API, as a local stand-in --------------------------------------

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Records are served.
    Up,
    /// Every request gets HTTP 503.
    Down,
}

struct StandInState {
    app_id: String,
    secret: Vec<u8>,
    /// (path, recordId) → record.
    records: Mutex<HashMap<(String, String), Value>>,
    mode: Mutex<Mode>,
    requests: AtomicU64,
    bad_signatures: AtomicU64,
}

/// A local stand-in of CCPayment's record API: `POST /ccpayment/v2/get*Record` with
/// `{"recordId"}`, answering `{"code": 10000, "data": {"record"}}` only to requests signed
/// with the app's secret (others get code 10002 and are counted).
pub struct StandIn {
    pub address: SocketAddr,
    state: Arc<StandInState>,
    task: tokio::task::JoinHandle<()>,
}

pub const APP_DEPOSIT: &str = "/ccpayment/v2/getAppDepositRecord";
pub const USER_DEPOSIT: &str = "/ccpayment/v2/getUserDepositRecord";
pub const APP_WITHDRAW: &str = "/ccpayment/v2/getAppWithdrawRecord";
pub const USER_WITHDRAW: &str = "/ccpayment/v2/getUserWithdrawRecord";

impl StandIn {
    pub async fn start() -> StandIn {
        let state = Arc::new(StandInState {
            app_id: CC_APP_ID.to_owned(),
            secret: CC_SECRET.as_bytes().to_vec(),
            records: Mutex::new(HashMap::new()),
            mode: Mutex::new(Mode::Up),
            requests: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
        });
        let mut router = axum::Router::new();
        for path in [APP_DEPOSIT, USER_DEPOSIT, APP_WITHDRAW, USER_WITHDRAW] {
            let route_state = state.clone();
            router = router.route(
                path,
                post(move |headers: HeaderMap, body: Bytes| {
                    let state = route_state.clone();
                    async move { serve_record(&state, path, &headers, &body) }
                }),
            );
        }
        let router = router.with_state::<()>(());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        StandIn { address, state, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Serves `record` at `path` under its `recordId`.
    pub fn put(&self, path: &str, record: Value) {
        let id = record["recordId"].as_str().unwrap().to_owned();
        self.state.records.lock().unwrap().insert((path.to_owned(), id), record);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Requests received (signed or not).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests whose signature did not verify.
    pub fn bad_signatures(&self) -> u64 {
        self.state.bad_signatures.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn serve_record(state: &StandInState, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if *state.mode.lock().unwrap() == Mode::Down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let (app_id, timestamp, sign) = (header("appid"), header("timestamp"), header("sign"));
    let expected = hex::encode(hmac_sha256(&state.secret, &[app_id.as_bytes(), timestamp.as_bytes(), body]));
    let well_formed = timestamp.len() == 10 && timestamp.bytes().all(|byte| byte.is_ascii_digit());
    let json_content = header("content-type") == "application/json";
    if app_id != state.app_id || sign != expected || !well_formed || !json_content {
        state.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return axum::Json(json!({"code": 10002, "msg": "invalid signature"})).into_response();
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(record_id) = request["recordId"].as_str() else {
        return axum::Json(json!({"code": 10003, "msg": "recordId required"})).into_response();
    };
    let found = state.records.lock().unwrap().get(&(path.to_owned(), record_id.to_owned())).cloned();
    match found {
        Some(record) => {
            axum::Json(json!({"code": 10000, "msg": "success", "data": {"record": record}})).into_response()
        }
        None => axum::Json(json!({"code": 10004, "msg": "record not found"})).into_response(),
    }
}

// ---- a small HTTP client -----------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        self.json()
    }

    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!((self.status, self.code().as_str()), (status, code), "{self:?}");
    }

    /// CCPayment's acknowledgement: 200, text/plain, `success`.
    #[track_caller]
    pub fn assert_ccpayment_success(&self) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert_eq!(self.headers["content-type"], "text/plain; charset=utf-8", "{self:?}");
        assert_eq!(self.text, "success", "{self:?}");
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub address: SocketAddr,
    token: Option<String>,
}

impl Http {
    pub fn new(address: SocketAddr) -> Http {
        Http { client: Client::builder(TokioExecutor::new()).build_http(), address, token: None }
    }

    pub fn with_token(mut self, token: &str) -> Http {
        self.token = Some(token.to_owned());
        self
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(String, String)], body: Vec<u8>) -> Reply {
        let mut builder = Request::builder().method(method).uri(format!("http://{}{path}", self.address));
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let response = self.client.request(builder.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, text: String::from_utf8(bytes.to_vec()).unwrap() }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        let headers = [("content-type".to_owned(), "application/json".to_owned())];
        self.send(Method::POST, path, &headers, body.to_string().into_bytes()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    /// Sends a Standard Webhooks delivery of `event` to `provider`, signed now.
    pub async fn standard(&self, provider: &str, message_id: &str, event: &Value) -> Reply {
        self.standard_at(provider, message_id, event, unix_seconds()).await
    }

    pub async fn standard_at(&self, provider: &str, message_id: &str, event: &Value, timestamp: i64) -> Reply {
        let body = event.to_string().into_bytes();
        let headers = standard_headers(STANDARD_SECRET, message_id, timestamp, &body);
        self.send(Method::POST, &format!("/v1/webhooks/{provider}"), &headers, body).await
    }

    /// Sends a CCPayment notification, signed now.
    pub async fn ccpayment(&self, notification: &Value) -> Reply {
        self.ccpayment_at(notification, unix_seconds()).await
    }

    pub async fn ccpayment_at(&self, notification: &Value, timestamp: i64) -> Reply {
        let body = notification.to_string().into_bytes();
        let headers = ccpayment_headers(CC_APP_ID, CC_SECRET, timestamp, &body);
        self.send(Method::POST, "/v1/webhooks/ccpayment", &headers, body).await
    }

    /// The account's `balance`.
    pub async fn balance(&self, account: &str) -> String {
        let reply = self.get(&format!("/v1/accounts/{account}")).await;
        reply.assert_status(StatusCode::OK)["balance"].as_str().unwrap().to_owned()
    }

    /// Asserts the balances of `accounts` sum to zero in `currency` (all the accounts of that
    /// currency must be listed).
    pub async fn assert_totals_balance(&self, accounts: &[&str]) {
        let mut total = rust_decimal::Decimal::ZERO;
        for account in accounts {
            let balance: rust_decimal::Decimal = self.balance(account).await.parse().unwrap();
            total += balance;
        }
        assert!(total.is_zero(), "balances of {accounts:?} sum to {total}");
    }

    /// The value of the `ledger_webhooks_total` series with these labels (0 when absent).
    pub async fn webhook_count(&self, provider: &str, event_type: &str, result: &str) -> u64 {
        let text = self.get("/metrics").await.text;
        let labels = [("provider", provider), ("type", event_type), ("result", result)];
        // Counters print as integers.
        metric_text(&text, "ledger_webhooks_total", &labels).map_or(0, |value| value.parse().unwrap())
    }
}

/// Runs `promtool check metrics` on `text` (skipped with a NOTICE when promtool is missing).
pub fn check_with_promtool(text: &str) {
    let promtool = ["promtool", "/usr/bin/promtool"].into_iter().find(|candidate| {
        Command::new(candidate).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    });
    let Some(promtool) = promtool else {
        println!("NOTICE: promtool not found; skipping `promtool check metrics` (apt-get install -y prometheus)");
        return;
    };
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value of the series of `family` whose labels are exactly `labels` (any order).
pub fn metric_value(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_text(text, family, labels).and_then(|value| value.parse().ok())
}

/// The value, as written, of the series of `family` whose labels are exactly `labels` (none:
/// the unlabelled series).
pub fn metric_text<'a>(text: &'a str, family: &str, labels: &[(&str, &str)]) -> Option<&'a str> {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else { continue };
        // An unlabelled series: `family value`.
        if labels.is_empty()
            && let Some(value) = rest.strip_prefix(' ')
        {
            return Some(value.trim());
        }
        let Some(rest) = rest.strip_prefix('{') else { continue };
        let Some((label_text, value)) = rest.split_once("} ") else { continue };
        let mut found: Vec<(String, String)> = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('"').to_owned()))
            .collect();
        found.sort();
        let mut wanted: Vec<(String, String)> =
            labels.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        wanted.sort();
        if found == wanted {
            return Some(value.trim());
        }
    }
    None
}

// ---- the real binary ---------------------------------------------------------------------

/// A running `ledgerd serve` (killed on drop).
pub struct Server {
    spawned: Spawned,
    pub address: SocketAddr,
}

/// How a `ledgerd` run that was expected to fail ended.
pub type Failure = Exited;

/// `ledgerd serve` on `127.0.0.1:0` with `config` and `data_dir`, the CCPayment secret in its
/// environment variable.
pub fn serve_command(config: &Path, data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    command.env_remove("RUST_BACKTRACE").env_remove("RUST_LOG").env(CC_SECRET_VARIABLE, CC_SECRET);
    command.arg("serve").arg("--bind").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir).arg("--config").arg(config);
    command
}

/// Starts `command` and waits for `listening on ADDR`; `Err` with stderr if it exits first.
pub fn start(command: Command) -> Result<Server, Failure> {
    let spawned = spawn_listening(command)?;
    Ok(Server { address: spawned.address, spawned })
}

impl Server {
    /// Sends `signal` (`TERM`, `KILL`) and waits for the exit.
    pub fn stop_with(mut self, signal: &str) -> ExitStatus {
        self.spawned.stop_with(signal).0
    }
}

/// A config with the providers `processor` (standard) and `ccpayment` (at `api_base_url`),
/// plus `extra` TOML.
pub fn write_config(dir: &Path, api_base_url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("ledgerd.toml");
    let text = format!(
        "{extra}\n\
         [[webhooks.providers]]\nname = \"processor\"\nscheme = \"standard\"\nsecret = \"{STANDARD_SECRET}\"\n\n\
         [[webhooks.providers]]\nname = \"ccpayment\"\nscheme = \"ccpayment\"\napp_id = \"{CC_APP_ID}\"\n\
         secret_env = \"{CC_SECRET_VARIABLE}\"\napi_base_url = \"{api_base_url}\"\nfetch_timeout_ms = 500\n\
         fetch_retries = 2\nreplay_window_seconds = 120\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}
