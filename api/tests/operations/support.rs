//! Helpers shared by the operations suites (crash, corruption, restore, offline commands):
//! running the real `ledgerd` binary, a small HTTP client that reports connection errors
//! instead of panicking (servers get SIGKILLed mid-request here), seeds, and data dirs
//! written straight through the log for tests that need many records quickly.

#![allow(dead_code, reason = "not every suite uses every helper")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use engine::record::{Group, Record};
use engine::{Currency, Id, Ledger, Overdraft};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use crate::process::STARTUP_DEADLINE;
use crate::process::{Exited, Spawned, spawn_listening};

/// The binary, with a quiet default log level and no backtraces.
pub fn ledgerd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    command.env_remove("RUST_BACKTRACE").env_remove("RUST_LOG");
    command
}

/// Runs an offline `ledgerd` command to completion.
pub fn run(args: &[&str]) -> Output {
    ledgerd().args(args).stdin(Stdio::null()).output().unwrap()
}

/// `path` as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// What a finished command printed.
pub struct Printed {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn printed(output: Output) -> Printed {
    Printed {
        status: output.status,
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

impl Printed {
    #[track_caller]
    pub fn assert_success(&self) -> &Printed {
        assert!(self.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr);
        self
    }

    /// Exit 1, and the last stderr line is `ledgerd: error: ...` containing every needle; no
    /// panic.
    #[track_caller]
    pub fn assert_error(&self, needles: &[&str]) -> &Printed {
        assert_eq!(self.status.code(), Some(1), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("internal error"), "{}", self.stderr);
        let last = self.stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("ledgerd: error: "), "stderr:\n{}", self.stderr);
        for needle in needles {
            assert!(last.contains(needle), "{needle:?} not in {last:?}");
        }
        self
    }

    /// The value of the summary line `name: value`.
    pub fn field(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.stdout.lines().find_map(|line| line.strip_prefix(&prefix))
    }
}

/// A running `ledgerd serve`.
pub struct Server {
    spawned: Spawned,
    pub address: SocketAddr,
}

/// How a server that was expected to start ended instead.
pub type StartFailure = Exited;

/// Starts `ledgerd serve --bind 127.0.0.1:0 --data-dir DIR EXTRA...` and waits for
/// `listening on ADDR`.
pub fn start_server(data_dir: &Path, extra: &[&str]) -> Result<Server, StartFailure> {
    let mut command = ledgerd();
    command.args(["serve", "--bind", "127.0.0.1:0", "--data-dir", arg(data_dir)]).args(extra);
    let spawned = spawn_listening(command)?;
    Ok(Server { address: spawned.address, spawned })
}

/// Starts a server that must start.
#[track_caller]
pub fn serve(data_dir: &Path, extra: &[&str]) -> Server {
    start_server(data_dir, extra).unwrap_or_else(|failure| panic!("ledgerd serve failed: {failure:?}"))
}

impl Server {
    /// SIGKILL, then wait for the process. Returns what it logged.
    pub fn kill(mut self) -> String {
        self.spawned.kill()
    }

    /// SIGTERM, then wait (with a deadline) for a clean exit. Returns what it logged.
    #[track_caller]
    pub fn terminate(mut self) -> String {
        let (status, stderr) = self.spawned.stop_with("TERM");
        assert!(status.success(), "exit {status:?} after SIGTERM; stderr:\n{stderr}");
        stderr
    }

    /// The process (to wait on it, or to signal it).
    pub fn child(&mut self) -> &mut Child {
        &mut self.spawned.child
    }
}

/// A small HTTP/1 client; transport errors are values (the server may be killed).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    address: SocketAddr,
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

    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        let (status, body) = self.try_send_raw(method, path, body).await?;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|error| error.to_string())?
        };
        Ok((status, value))
    }

    /// `GET path` as text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let (status, body) =
            self.try_send_raw(Method::GET, path, None).await.unwrap_or_else(|error| panic!("GET {path}: {error}"));
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    pub async fn try_send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut builder = Request::builder().method(method).uri(format!("http://{}{path}", self.address));
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(bytes)).map_err(|error| error.to_string())?;
        let response = self.client.request(request).await.map_err(|error| error.to_string())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|error| error.to_string())?.to_bytes();
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.try_send(Method::GET, path, None).await.unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.try_send(Method::POST, path, Some(&body)).await.unwrap_or_else(|error| panic!("POST {path}: {error}"))
    }
}

/// A seed from the environment variable `name`, else from the clock; printed either way.
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var(name).ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        u64::from(since_epoch.subsec_nanos()) ^ since_epoch.as_secs()
    });
    println!("seed {seed} (set {name}={seed} to repeat)");
    seed
}

/// A seeded generator (rand's `SmallRng`, as `ledgerd bench` uses): a failing run repeats
/// with its seed.
#[derive(Debug, Clone)]
pub struct Random(rand::rngs::SmallRng);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(rand::SeedableRng::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }

    /// Uniform in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        rand::Rng::random_range(&mut self.0, 0..bound)
    }

    /// Uniform in `0..len`.
    pub fn index(&mut self, len: usize) -> usize {
        rand::Rng::random_range(&mut self.0, 0..len)
    }
}

pub fn id(text: &str) -> Id {
    Id::parse(text).unwrap()
}

/// A config file in `dir` with `body` (TOML), for `--config`.
pub fn config_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// Records for `accounts` USD accounts (`acct-0` is the unlimited bank) and `transfers`
/// plain transfers from the bank to the others, in a fixed pseudo-random order.
pub fn bank_records(accounts: usize, transfers: usize, seed: u64) -> Vec<Record> {
    let usd = Currency::new("USD", 2);
    let mut records = Vec::with_capacity(accounts + transfers);
    for index in 0..accounts {
        records.push(Record::CreateAccount {
            id: id(&format!("acct-{index}")),
            currency: usd.clone(),
            overdraft: if index == 0 { Overdraft::Unlimited } else { Overdraft::Limited(engine::Amount::ZERO) },
            metadata: BTreeMap::new(),
            created_at_ms: 1_780_000_000_000,
        });
    }
    let mut random = Random::new(seed);
    for index in 0..transfers {
        let credit = 1 + random.index(accounts - 1);
        records.push(Record::CreateTransfer {
            id: id(&format!("xfer-{index:08}")),
            debit_account: id("acct-0"),
            credit_account: id(&format!("acct-{credit}")),
            amount: engine::Amount::from_minor_units(1 + i128::from(random.below(100_000))),
            currency: usd.clone(),
            pending: false,
            timeout_seconds: 0,
            description: String::new(),
            metadata: BTreeMap::new(),
            created_at_ms: 1_780_000_000_000 + i64::try_from(index).unwrap(),
        });
    }
    records
}

/// Appends `records` to the log of `data_dir` (from seq 1) in groups of `group_len`.
pub fn write_log(data_dir: &Path, records: &[Record], group_len: usize) {
    let wal = snapshots::Wal::open(data_dir).unwrap();
    let mut seq = 1;
    for chunk in records.chunks(group_len) {
        wal.append(&Group::new(seq, chunk.to_vec())).unwrap();
        seq += u64::try_from(chunk.len()).unwrap();
    }
}

/// The ledger after the first `count` records.
pub fn ledger_of(records: &[Record], count: usize) -> Ledger {
    let mut ledger = Ledger::default();
    for (index, record) in records[..count].iter().enumerate() {
        ledger.apply(u64::try_from(index).unwrap() + 1, record).unwrap();
    }
    ledger
}

/// Polls `GET path` (with a deadline) until it answers something other than 503: after
/// `listening on`, the shards may still be loading a large recovered ledger.
pub async fn wait_until_serving(http: &Http, path: &str) {
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        match http.try_send(Method::GET, path, None).await {
            Ok((status, _)) if status != StatusCode::SERVICE_UNAVAILABLE => return,
            Ok(_) | Err(_) => {}
        }
        assert!(Instant::now() < deadline, "GET {path} still unavailable after {STARTUP_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every account's balance via HTTP, as printed (`"12.50"`).
pub async fn balances(http: &Http, accounts: impl IntoIterator<Item = String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for account in accounts {
        let (status, body) = http.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(status, StatusCode::OK, "{account}: {body}");
        out.insert(account, body["balance"].as_str().unwrap().to_owned());
    }
    out
}

/// The balances of `ledger`, printed at each currency's scale.
pub fn ledger_balances(ledger: &Ledger) -> BTreeMap<String, String> {
    ledger
        .accounts
        .values()
        .map(|account| (account.id.to_string(), account.currency.format(account.balance())))
        .collect()
}

/// The snapshot files (`.snap`) of a data dir, oldest first.
pub fn snapshot_files(data_dir: &Path) -> Vec<PathBuf> {
    snapshots::snapshot_files(data_dir).unwrap().into_iter().map(|(_, path)| path).collect()
}

/// Copies a directory tree (a stopped data dir) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
