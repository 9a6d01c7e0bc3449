//! The real `ledgerd` binary: start on `127.0.0.1:0`, read `listening on ADDR`, talk HTTP,
//! SIGTERM, restart on the same data dir; and every way `serve` must refuse to start (locked
//! data dir, bad config key, non-loopback bind without tokens, port in use, bad flags), each
//! with one clear line on stderr. Also runs `promtool check metrics` on `/metrics`.

mod common;

use common::process::{Exited, Spawned, spawn_listening};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A running `ledgerd serve`.
struct Server(Spawned);

/// How a `ledgerd` run that was expected to fail ended.
type Failure = Exited;

fn ledgerd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    // Default log level: failures must still be one line on stderr.
    command.env_remove("RUST_BACKTRACE").env_remove("RUST_LOG");
    command
}

fn serve_command(data_dir: &Path, extra: &[&str]) -> Command {
    let mut command = ledgerd();
    command.arg("serve").arg("--bind").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir).args(extra);
    command
}

/// Starts `command` and waits for `listening on ADDR`; `Err` with stderr if it exits first.
fn start(command: Command) -> Result<Server, Failure> {
    spawn_listening(command).map(Server)
}

/// Runs `command`, which must fail; returns its exit status and stderr.
fn expect_failure(command: Command) -> Failure {
    match start(command) {
        Ok(mut server) => {
            server.0.kill();
            panic!("ledgerd started at {} but should have refused", server.0.address);
        }
        Err(failure) => failure,
    }
}

impl Failure {
    /// Exit non-zero, exactly one line on stderr containing every `needle`, no panic.
    #[track_caller]
    fn assert_one_line(&self, needles: &[&str]) {
        assert!(!self.status.success(), "exit status {:?}", self.status);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr: {:?}", self.stderr);
        for needle in needles {
            assert!(lines[0].contains(needle), "{needle:?} not in {:?}", lines[0]);
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }
}

impl Server {
    fn address(&self) -> SocketAddr {
        self.0.address
    }

    /// Sends `signal` and waits for the exit; returns the status and stderr, and checks that
    /// stdout carried nothing after `listening on`.
    fn stop_with(mut self, signal: &str) -> (ExitStatus, String) {
        let (status, stderr) = self.0.stop_with(signal);
        let extra: Vec<String> = self.0.stdout_lines.try_iter().collect();
        assert!(extra.is_empty(), "stdout carries only the `listening on` line: {extra:?}");
        (status, stderr)
    }
}

/// A tiny HTTP/1 client.
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    address: SocketAddr,
}

impl Http {
    fn new(address: SocketAddr) -> Http {
        Http { client: Client::builder(TokioExecutor::new()).build_http(), address }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, String) {
        let mut builder = Request::builder().method(method).uri(format!("http://{}{path}", self.address));
        let bytes = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let response = self.client.request(builder.body(Full::new(bytes)).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let (status, text) = self.send(method, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.json(Method::POST, path, Some(&body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::GET, path, None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_stops_on_sigterm_and_recovers_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").join("nested");
    assert!(!data_dir.exists());

    let server = start(serve_command(&data_dir, &[])).unwrap_or_else(|failure| panic!("{}", failure.stderr));
    assert!(data_dir.is_dir(), "the missing data dir is created");
    let http = Http::new(server.address());
    // `listening on` is printed once /ready answers 200.
    assert_eq!(http.get("/ready").await.0, StatusCode::OK);
    assert_eq!(http.get("/health").await.0, StatusCode::OK);
    let (status, _) =
        http.post("/v1/accounts", json!({"id": "bank", "currency": "USD", "overdraft_limit": "unlimited"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(http.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await.0, StatusCode::CREATED);
    let transfer = json!({"id": "t-1", "debit_account": "bank", "credit_account": "alice", "amount": "42.5"});
    let (status, created) = http.post("/v1/transfers", transfer.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, hold) = http
        .post(
            "/v1/transfers",
            json!({"id": "h-1", "debit_account": "alice", "credit_account": "bank", "amount": "2", "pending": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, alice_before) = http.get("/v1/accounts/alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alice_before["available"], "40.50");
    let (status, error) = http.get("/v1/nowhere").await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let (exit, stderr) = server.stop_with("TERM");
    assert!(exit.success(), "exit {exit:?}, stderr: {stderr}");

    // Same data dir: everything acknowledged is there.
    let server = start(serve_command(&data_dir, &[])).unwrap_or_else(|failure| panic!("{}", failure.stderr));
    let http = Http::new(server.address());
    assert_eq!(http.get("/v1/accounts/alice").await, (StatusCode::OK, alice_before));
    let (status, replay) = http.post("/v1/transfers", transfer).await;
    assert_eq!((status, &replay), (StatusCode::OK, &created));
    let (status, posted) = http.post("/v1/transfers/h-1/post", json!({})).await;
    assert_eq!((status, posted["status"].as_str()), (StatusCode::OK, Some("posted")));
    let (status, page) = http.get("/v1/accounts/alice/transfers?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["transfers"][0]["id"], "h-1");
    assert!(page["next"].is_string());
    let (exit, stderr) = server.stop_with("INT");
    assert!(exit.success(), "exit {exit:?}, stderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        start(serve_command(&dir.path().join("data"), &[])).unwrap_or_else(|failure| panic!("{}", failure.stderr));
    let http = Http::new(server.address());
    let (status, text) = http.send(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    for family in ["ledger_wal_commit_duration_seconds", "ledger_webhooks_total", "ledger_snapshot_last_seq"] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing before traffic:\n{text}");
    }
    http.post("/v1/accounts", json!({"id": "bank", "currency": "EUR", "overdraft_limit": "unlimited"})).await;
    http.post("/v1/accounts", json!({"id": "alice", "currency": "EUR"})).await;
    http.post("/v1/transfers", json!({"id": "t", "debit_account": "bank", "credit_account": "alice", "amount": "3"}))
        .await;
    http.post("/v1/transfers", json!({"id": "u", "debit_account": "alice", "credit_account": "bank", "amount": "30"}))
        .await;
    http.post(
        "/v1/transfers/batch",
        json!({"transfers": [{"id": "v", "debit_account": "bank", "credit_account": "alice", "amount": "1"}]}),
    )
    .await;
    http.get("/v1/accounts/nobody").await;
    let (status, text) = http.send(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "ledger_transfers_total{result=\"created\"} 2",
        "ledger_transfers_total{result=\"insufficient_funds\"} 1",
        "ledger_transfer_amount_total{currency=\"EUR\"} 4",
        "ledger_accounts 2",
        "route=\"/v1/accounts/{id}\",status=\"404\"",
        "ledger_wal_batch_size_count",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }

    common::check_with_promtool(&text);
}

#[test]
fn a_locked_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = start(serve_command(&data_dir, &[])).unwrap_or_else(|failure| panic!("{}", failure.stderr));
    let failure = expect_failure(serve_command(&data_dir, &[]));
    failure.assert_one_line(&["locked"]);
    let (exit, stderr) = first.stop_with("TERM");
    assert!(exit.success(), "{stderr}");
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("ledgerd.toml");
    std::fs::write(&config, "[server]\nbnd = \"127.0.0.1:1\"\n").unwrap();
    let failure = expect_failure(serve_command(&data_dir, &["--config", config.to_str().unwrap()]));
    failure.assert_one_line(&["server.bnd"]);
    assert!(!data_dir.exists(), "refused before touching the data dir");

    std::fs::write(&config, "[limits]\nbatch_max = 0\n").unwrap();
    expect_failure(serve_command(&data_dir, &["--config", config.to_str().unwrap()]))
        .assert_one_line(&["limits.batch_max"]);

    let mut command = serve_command(&data_dir, &[]);
    command.env("LEDGERD_LIMITS__BATCH_MAXX", "5");
    expect_failure(command).assert_one_line(&["LEDGERD_LIMITS__BATCH_MAXX"]);

    let mut command = serve_command(&data_dir, &[]);
    command.env("LEDGERD_ENGINE__SHARDS", "many");
    expect_failure(command).assert_one_line(&["engine.shards"]);

    let missing = dir.path().join("missing.toml");
    expect_failure(serve_command(&data_dir, &["--config", missing.to_str().unwrap()]))
        .assert_one_line(&["missing.toml"]);

    let failure = expect_failure({
        let mut command = ledgerd();
        command.args(["serve", "--bogus"]);
        command
    });
    failure.assert_one_line(&["--bogus"]);
    assert_eq!(failure.status.code(), Some(2));
}

#[test]
fn non_loopback_without_tokens_and_busy_ports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut command = ledgerd();
    command.args(["serve", "--bind", "0.0.0.0:0", "--data-dir"]).arg(&data_dir);
    expect_failure(command).assert_one_line(&["0.0.0.0:0", "loopback"]);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut command = ledgerd();
    command.args(["serve", "--bind", &address, "--data-dir"]).arg(&data_dir);
    expect_failure(command).assert_one_line(&["cannot listen", &address]);

    // An environment override of the bind address counts like the flag.
    let mut command = ledgerd();
    command.args(["serve", "--data-dir"]).arg(&data_dir).env("LEDGERD_SERVER__BIND", "0.0.0.0:0");
    expect_failure(command).assert_one_line(&["loopback"]);
}

#[test]
fn an_unusable_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    expect_failure(serve_command(&file, &[])).assert_one_line(&["a-file"]);
}

#[test]
fn a_corrupt_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = start(serve_command(&data_dir, &[])).unwrap_or_else(|failure| panic!("{}", failure.stderr));
    let (exit, stderr) = server.stop_with("TERM");
    assert!(exit.success(), "{stderr}");
    // Overwrite the log's settings file (sled's `conf`) with bytes that fail its checksum.
    let conf = data_dir.join("wal").join("conf");
    assert!(conf.is_file(), "the log keeps its settings in {}", conf.display());
    std::fs::write(&conf, [0xff_u8; 64]).unwrap();
    let failure = expect_failure(serve_command(&data_dir, &[]));
    assert!(!failure.status.success());
    assert!(!failure.stderr.contains("panicked"), "{}", failure.stderr);
    let last = failure.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("ledgerd: error: cannot recover data dir"), "{}", failure.stderr);
}
