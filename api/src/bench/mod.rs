//! `ledgerd bench`: the load generator (API.md §9).
//!
//! This module owns the bench command's flags ([`BenchArgs`]) and their checked form
//! ([`Plan`]), and the run itself: reach the target (`GET /health`), create and fund the run's
//! accounts, drive the load over C keep-alive connections (one task each; single transfers,
//! batches, or `GET /health` to measure the generator's own ceiling) for a duration or a fixed
//! count, print a progress line on stderr once a second, then check the balances and build the
//! [`Report`]. Its parts: [`client`] (raw hyper HTTP/1.1 connections), [`workload`] (ids, random
//! pairs, request bodies, reading answers), [`check`] (the balance check), [`report`] (the text
//! and JSON report).
//!
//! The generator is closed-loop: each connection sends its next request when the previous one
//! is answered, so latency is the service time under that concurrency (no coordinated-omission
//! correction).

pub mod check;
pub mod client;
pub mod report;
pub mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode, Uri};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::bench::client::{Connection, Endpoint, TransportError};
use crate::bench::report::{LatencySummary, Report, ResultCounts};
use crate::bench::workload::{BodyWriter, CREATED, EXISTS, Naming, PairPicker, PlannedTransfer};

/// Most accounts a run creates.
pub const ACCOUNTS_MAX: u64 = 10_000_000;
/// Most connections.
pub const CONNECTIONS_MAX: usize = 4096;
/// Most transfers per request (the default `limits.batch_max`).
pub const BATCH_MAX: usize = 8190;
/// Longest run.
pub const DURATION_SECONDS_MAX: u64 = 86_400;
/// Most transfers of a `--count` run.
pub const COUNT_MAX: u64 = 1_000_000_000_000;
/// Most runtime worker threads.
pub const THREADS_MAX: usize = 64;
/// Transfers per funding batch.
const FUNDING_BATCH: u64 = 1000;
/// Connections used for setup.
const SETUP_CONNECTIONS_MAX: usize = 32;
/// Longest pause after a refused or failed request, growing with consecutive failures.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Random transfers between the run's accounts.
    Transfers,
    /// `GET /health`: no accounts, no check; the generator's own ceiling.
    Health,
}

/// Flags of `ledgerd bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The server, `http://HOST:PORT`.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Accounts to create and fund.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub accounts: u64,
    /// Pick both accounts of every transfer among the first K accounts only (contention).
    #[arg(long, value_name = "K")]
    pub hot_accounts: Option<u64>,
    /// Seconds of load.
    #[arg(long = "duration", value_name = "S", default_value_t = 10)]
    pub duration_seconds: u64,
    /// Send exactly this many transfers (requests for `--workload health`) instead of running
    /// for a duration.
    #[arg(long, value_name = "N", conflicts_with = "duration_seconds")]
    pub count: Option<u64>,
    /// Keep-alive connections, one request in flight on each.
    #[arg(long, value_name = "C", default_value_t = 64)]
    pub connections: usize,
    /// Transfers per request: 1 sends `POST /v1/transfers`, more send batches.
    #[arg(long, value_name = "B", default_value_t = 1)]
    pub batch: usize,
    /// Batches are all-or-nothing (`"atomic": true`).
    #[arg(long)]
    pub atomic: bool,
    /// Bearer token (also `LEDGERD_BENCH_TOKEN`).
    #[arg(long, value_name = "T", env = "LEDGERD_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Currency of the run's accounts.
    #[arg(long, value_name = "CODE", default_value = "USD")]
    pub currency: String,
    /// Whole currency units each account is funded with.
    #[arg(long, value_name = "UNITS", default_value_t = 1_000_000)]
    pub funding_amount: u64,
    /// Each transfer moves 1 to this many whole units.
    #[arg(long, value_name = "UNITS", default_value_t = 100)]
    pub transfer_amount_max: u64,
    /// Seed of the random pairs and amounts (default: from the clock).
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,
    /// Prefix of every id the run creates (default: derived from the seed).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// What each request does.
    #[arg(long, value_enum, default_value_t = Workload::Transfers)]
    pub workload: Workload,
    /// Runtime threads of the generator (1: a single-threaded runtime, the cheapest).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Seconds a request may take before it counts as `timeout` (its connection is replaced).
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// Do not read the accounts back at the end.
    #[arg(long)]
    pub skip_balance_check: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// When the load stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    /// After this many transfers (requests for `health`).
    Count(u64),
}

/// A checked run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub target: String,
    pub token: Option<String>,
    pub workload: Workload,
    pub accounts: u64,
    pub hot_accounts: Option<u64>,
    pub connections: usize,
    pub batch: usize,
    pub atomic: bool,
    pub stop: Stop,
    pub currency: String,
    pub funding_units: u64,
    pub transfer_units_max: u64,
    pub seed: u64,
    pub naming: Naming,
    pub threads: usize,
    pub request_timeout: Duration,
    pub check_balances: bool,
    pub progress: bool,
}

/// Why a bench run could not be done. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    InvalidArguments(String),
    #[error("{0}")]
    Target(#[from] client::TargetError),
    #[error("cannot reach {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("setup failed: {0}")]
    Setup(String),
    #[error("the balance check could not run: {0}")]
    Check(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("a load task failed: {0}")]
    Task(String),
}

fn check_range<T: PartialOrd + std::fmt::Display>(flag: &str, value: T, min: T, max: T) -> Result<(), BenchError> {
    if value < min || value > max {
        return Err(BenchError::InvalidArguments(format!("{flag} must be from {min} to {max}, got {value}")));
    }
    Ok(())
}

impl Plan {
    /// Checks the flags; `seed_default` is used when `--seed` is absent.
    pub fn from_args(args: &BenchArgs, seed_default: u64) -> Result<Plan, BenchError> {
        check_range("--accounts", args.accounts, 2, ACCOUNTS_MAX)?;
        if let Some(hot) = args.hot_accounts {
            check_range("--hot-accounts", hot, 2, args.accounts)?;
        }
        check_range("--connections", args.connections, 1, CONNECTIONS_MAX)?;
        check_range("--batch", args.batch, 1, BATCH_MAX)?;
        check_range("--threads", args.threads, 1, THREADS_MAX)?;
        check_range("--request-timeout-seconds", args.request_timeout_seconds, 1, 3600)?;
        check_range("--transfer-amount-max", args.transfer_amount_max, 1, 1_000_000_000)?;
        check_range("--funding-amount", args.funding_amount, 1, 1_000_000_000_000)?;
        if args.atomic && args.batch == 1 {
            return Err(BenchError::InvalidArguments("--atomic needs --batch of 2 or more".to_owned()));
        }
        let stop = match args.count {
            Some(count) => {
                check_range("--count", count, 1, COUNT_MAX)?;
                Stop::Count(count)
            }
            None => {
                check_range("--duration", args.duration_seconds, 1, DURATION_SECONDS_MAX)?;
                Stop::After(Duration::from_secs(args.duration_seconds))
            }
        };
        let currency_valid =
            (1..=12).contains(&args.currency.len()) && args.currency.bytes().all(|byte| byte.is_ascii_alphanumeric());
        if !currency_valid {
            return Err(BenchError::InvalidArguments(format!(
                "--currency must be 1 to 12 characters of A-Z a-z 0-9, got {:?}",
                args.currency
            )));
        }
        let seed = args.seed.unwrap_or(seed_default);
        let naming = match &args.run_id {
            Some(run_id) => Naming::new(run_id).map_err(|error| BenchError::InvalidArguments(error.to_string()))?,
            None => Naming::from_seed(seed),
        };
        client::parse_target(&args.target)?;
        Ok(Plan {
            target: args.target.clone(),
            token: args.token.clone(),
            workload: args.workload,
            accounts: args.accounts,
            hot_accounts: args.hot_accounts,
            connections: args.connections,
            batch: if args.workload == Workload::Health { 1 } else { args.batch },
            atomic: args.atomic,
            stop,
            currency: args.currency.clone(),
            funding_units: args.funding_amount,
            transfer_units_max: args.transfer_amount_max,
            seed,
            naming,
            threads: args.threads,
            request_timeout: Duration::from_secs(args.request_timeout_seconds),
            check_balances: !args.skip_balance_check && args.workload == Workload::Transfers,
            progress: !args.no_progress,
        })
    }
}

/// A seed from the clock and the process id.
pub fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let folded = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or_default();
    folded ^ (u64::from(std::process::id()) << 32)
}

/// `ledgerd bench`: runs, prints the report on stdout, and fails when the check failed.
pub fn run_command(args: &BenchArgs) -> Result<(), String> {
    let plan = Plan::from_args(args, clock_seed()).map_err(|error| error.to_string())?;
    let report = run(&plan).map_err(|error| error.to_string())?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.passed() {
        Ok(())
    } else {
        Err("the balance check failed: the ledger's totals do not balance (see the report)".to_owned())
    }
}

/// Runs `plan` on its own runtime.
pub fn run(plan: &Plan) -> Result<Report, BenchError> {
    let runtime = if plan.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(plan.threads).enable_all().build()
    }
    .map_err(BenchError::Runtime)?;
    runtime.block_on(run_async(plan))
}

/// Runs `plan` on the current runtime.
pub async fn run_async(plan: &Plan) -> Result<Report, BenchError> {
    let endpoint = Endpoint::resolve(&plan.target, plan.token.as_deref(), plan.request_timeout).await?;
    probe(&endpoint).await?;
    let setup_started = Instant::now();
    if plan.workload == Workload::Transfers {
        if plan.progress {
            eprintln!("creating and funding {} accounts (run {})", plan.accounts, plan.naming.run_id());
        }
        setup_accounts(&endpoint, plan).await?;
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let load = drive_load(&endpoint, plan).await?;
    let balance = if plan.check_balances {
        if plan.progress {
            eprintln!("checking balances of {} accounts", plan.accounts + 1);
        }
        Some(
            check::check_balances(
                &endpoint,
                &plan.naming,
                plan.accounts,
                plan.connections,
                load.acknowledged_units,
                load.unknown_outcome_units,
            )
            .await?,
        )
    } else {
        None
    };
    let transfers_created = if plan.workload == Workload::Transfers { load.results.get(CREATED) } else { 0 };
    Ok(Report {
        system: "ledgerd".to_owned(),
        target: endpoint.target.clone(),
        workload: match plan.workload {
            Workload::Transfers => "transfers",
            Workload::Health => "health",
        }
        .to_owned(),
        run_id: plan.naming.run_id().to_owned(),
        seed: plan.seed,
        accounts: if plan.workload == Workload::Transfers { plan.accounts } else { 0 },
        hot_accounts: plan.hot_accounts,
        connections: plan.connections,
        batch: plan.batch,
        atomic: plan.atomic,
        setup_seconds,
        elapsed_seconds: load.elapsed.as_secs_f64(),
        requests: load.requests,
        requests_per_second: report::per_second(load.requests, load.elapsed),
        transfers_created,
        throughput_transfers_per_second: report::per_second(transfers_created, load.elapsed),
        latency_ms: LatencySummary::from_histogram(&load.latency),
        results: load.results,
        balance,
        generator_cpu_seconds: load.cpu_seconds,
        generator_threads: plan.threads,
    })
}

/// `GET /health` must answer 200.
async fn probe(endpoint: &Endpoint) -> Result<(), BenchError> {
    let unreachable = |reason: String| BenchError::Unreachable { target: endpoint.target.clone(), reason };
    let mut connection = endpoint.connect().await.map_err(|error| unreachable(error.to_string()))?;
    let (status, _) = connection
        .send(endpoint, Method::GET, Uri::from_static("/health"), None)
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    if status != StatusCode::OK {
        return Err(unreachable(format!("GET /health answered {status}")));
    }
    Ok(())
}

/// Sends one setup request; anything but `expected` (or `200` for an identical replay) fails.
async fn setup_request(
    connection: &mut Connection,
    endpoint: &Endpoint,
    path: &'static str,
    body: Vec<u8>,
    what: &str,
) -> Result<Bytes, BenchError> {
    let (status, answer) = connection
        .send(endpoint, Method::POST, Uri::from_static(path), Some(Bytes::from(body)))
        .await
        .map_err(|error| BenchError::Setup(format!("{what}: {error}")))?;
    if !status.is_success() {
        let key = workload::error_key(status, &answer);
        return Err(BenchError::Setup(format!("{what}: {status} {key}")));
    }
    Ok(answer)
}

/// Creates the funding account and accounts `0..N`, then funds each from it.
async fn setup_accounts(endpoint: &Endpoint, plan: &Plan) -> Result<(), BenchError> {
    let mut connection = endpoint.connect().await.map_err(|error| BenchError::Setup(error.to_string()))?;
    let funding = plan.naming.funding_account();
    let body = workload::account_body(&funding, &plan.currency, true);
    setup_request(&mut connection, endpoint, "/v1/accounts", body, &format!("creating account {funding}")).await?;
    drop(connection);

    let next = Arc::new(AtomicU64::new(0));
    let workers = plan.connections.clamp(1, SETUP_CONNECTIONS_MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (endpoint, plan, next) = (endpoint.clone(), plan.clone(), next.clone());
        tasks.spawn(async move {
            let mut connection = endpoint.connect().await.map_err(|error| BenchError::Setup(error.to_string()))?;
            // Accounts one by one (there is no batch route for accounts) ...
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= plan.accounts {
                    break;
                }
                let id = plan.naming.account(index);
                let body = workload::account_body(&id, &plan.currency, false);
                setup_request(&mut connection, &endpoint, "/v1/accounts", body, &format!("creating account {id}"))
                    .await?;
            }
            Ok::<_, BenchError>(connection)
        });
    }
    let mut connections = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        connections.push(joined.map_err(|error| BenchError::Task(error.to_string()))??);
    }
    // ... then the funding, in batches.
    let next = Arc::new(AtomicU64::new(0));
    for mut connection in connections {
        let (endpoint, plan, next) = (endpoint.clone(), plan.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let start = next.fetch_add(FUNDING_BATCH, Ordering::Relaxed);
                if start >= plan.accounts {
                    return Ok::<_, BenchError>(connection);
                }
                let end = (start + FUNDING_BATCH).min(plan.accounts);
                let body = workload::funding_batch_body(&plan.naming, start..end, plan.funding_units);
                let what = format!("funding accounts {start} to {}", end - 1);
                let answer = setup_request(&mut connection, &endpoint, "/v1/transfers/batch", body, &what).await?;
                let items = usize::try_from(end - start).unwrap_or(usize::MAX);
                let keys = workload::batch_results(StatusCode::OK, &answer, items)
                    .map_err(|key| BenchError::Setup(format!("{what}: {key}")))?;
                if let Some(key) = keys.iter().find(|key| *key != CREATED && *key != EXISTS) {
                    return Err(BenchError::Setup(format!("{what}: an item was rejected: {key}")));
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| BenchError::Task(error.to_string()))??;
    }
    Ok(())
}

/// Counters the progress line reads while the load runs.
#[derive(Default)]
struct LiveCounters {
    created: AtomicU64,
    other_results: AtomicU64,
    /// Transfers (requests for `health`) not yet claimed by a connection, in a count run.
    remaining: AtomicU64,
}

impl LiveCounters {
    /// How many transfers the next request carries (0: the load is over).
    fn claim(&self, stop: Stop, batch: usize) -> usize {
        match stop {
            Stop::After(_) => batch,
            Stop::Count(_) => {
                let wanted = u64::try_from(batch).unwrap_or(u64::MAX);
                let claimed = self
                    .remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |remaining| {
                        (remaining > 0).then(|| remaining.saturating_sub(wanted))
                    })
                    .map_or(0, |before| before.min(wanted));
                usize::try_from(claimed).unwrap_or(batch)
            }
        }
    }
}

/// What one connection's task measured.
struct Tally {
    latency: Histogram<u64>,
    results: ResultCounts,
    requests: u64,
    acknowledged_units: u64,
    unknown_outcome_units: u64,
}

/// What the whole load measured.
struct LoadOutcome {
    elapsed: Duration,
    latency: Histogram<u64>,
    results: ResultCounts,
    requests: u64,
    acknowledged_units: u64,
    unknown_outcome_units: u64,
    cpu_seconds: Option<f64>,
}

async fn drive_load(endpoint: &Endpoint, plan: &Plan) -> Result<LoadOutcome, BenchError> {
    let counters = Arc::new(LiveCounters::default());
    if let Stop::Count(count) = plan.stop {
        counters.remaining.store(count, Ordering::Relaxed);
    }
    // Open every connection before the clock starts.
    let mut connections = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let connection = endpoint
            .connect()
            .await
            .map_err(|error| BenchError::Unreachable { target: endpoint.target.clone(), reason: error.to_string() })?;
        connections.push(connection);
    }
    if plan.progress {
        let what = match plan.stop {
            Stop::After(duration) => format!("for {} s", duration.as_secs()),
            Stop::Count(count) => format!("{count} in all"),
        };
        let unit = if plan.workload == Workload::Health { "GET /health" } else { "transfers" };
        eprintln!("sending {unit} over {} connections, {} per request, {what}", plan.connections, plan.batch);
    }
    let cpu_before = report::process_cpu_seconds();
    let started = Instant::now();
    let deadline = match plan.stop {
        Stop::After(duration) => Some(started + duration),
        Stop::Count(_) => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (index, connection) in connections.into_iter().enumerate() {
        let (endpoint, plan, counters) = (endpoint.clone(), plan.clone(), counters.clone());
        tasks.spawn(async move { drive_connection(endpoint, plan, counters, index, connection, deadline).await });
    }
    let ticker = plan.progress.then(|| tokio::spawn(tick(plan.clone(), counters.clone(), started)));
    let mut latency = report::latency_histogram();
    let mut results = ResultCounts::default();
    let (mut requests, mut acknowledged_units, mut unknown_outcome_units) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|error| BenchError::Task(error.to_string()))?;
        latency.add(&tally.latency).map_err(|error| BenchError::Task(error.to_string()))?;
        results.merge(&tally.results);
        requests += tally.requests;
        acknowledged_units += tally.acknowledged_units;
        unknown_outcome_units += tally.unknown_outcome_units;
    }
    let elapsed = started.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let cpu_seconds = match (cpu_before, report::process_cpu_seconds()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    Ok(LoadOutcome { elapsed, latency, results, requests, acknowledged_units, unknown_outcome_units, cpu_seconds })
}

/// Prints the progress line once a second.
async fn tick(plan: Plan, counters: Arc<LiveCounters>, started: Instant) {
    let mut interval = tokio::time::interval_at(
        tokio::time::Instant::from_std(started) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let unit = if plan.workload == Workload::Health { "requests" } else { "transfers" };
    let mut last_created = 0;
    let mut second = 0;
    loop {
        interval.tick().await;
        second += 1;
        let created = counters.created.load(Ordering::Relaxed);
        let other = counters.other_results.load(Ordering::Relaxed);
        eprintln!("{}", report::progress_line(second, created - last_created, unit, created, other));
        last_created = created;
    }
}

/// One connection's loop: build a request, send it, classify the answer, until told to stop.
async fn drive_connection(
    endpoint: Endpoint,
    plan: Plan,
    counters: Arc<LiveCounters>,
    index: usize,
    connection: Connection,
    deadline: Option<Instant>,
) -> Tally {
    let mut tally = Tally {
        latency: report::latency_histogram(),
        results: ResultCounts::default(),
        requests: 0,
        acknowledged_units: 0,
        unknown_outcome_units: 0,
    };
    let mut connection = Some(connection);
    let mut random = SmallRng::seed_from_u64(plan.seed ^ (u64::try_from(index).unwrap_or_default() << 40));
    let picker = PairPicker::new(plan.hot_accounts.unwrap_or(plan.accounts));
    let writer = BodyWriter::new(&plan.naming, index);
    let mut sequence = 0_u64;
    let mut planned = Vec::with_capacity(plan.batch);
    let mut consecutive_failures = 0_u32;
    loop {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let items = counters.claim(plan.stop, plan.batch);
        if items == 0 {
            break;
        }
        let (path, body) = if plan.workload == Workload::Health {
            (Uri::from_static("/health"), None)
        } else {
            planned.clear();
            for _ in 0..items {
                let (debit, credit) = picker.pick(&mut random);
                sequence += 1;
                let amount_units = rand::Rng::random_range(&mut random, 1..=plan.transfer_units_max);
                planned.push(PlannedTransfer { sequence, debit, credit, amount_units });
            }
            let mut body = Vec::with_capacity(items * 120 + 32);
            if plan.batch == 1 {
                writer.write_transfer(&mut body, &planned[0]);
                (Uri::from_static("/v1/transfers"), Some(Bytes::from(body)))
            } else {
                writer.write_batch(&mut body, &planned, plan.atomic);
                (Uri::from_static("/v1/transfers/batch"), Some(Bytes::from(body)))
            }
        };
        let method = if body.is_some() { Method::POST } else { Method::GET };
        let sent = Instant::now();
        let answer = match connection.as_mut() {
            Some(open) => open.send(&endpoint, method, path, body).await,
            None => match endpoint.connect().await {
                Ok(open) => connection.insert(open).send(&endpoint, method, path, body).await,
                Err(error) => Err(error),
            },
        };
        tally.requests += 1;
        let failed = match answer {
            Ok((status, answer)) => {
                report::record_latency(&mut tally.latency, sent.elapsed());
                classify(&plan, &planned, items, status, &answer, &mut tally, &counters)
            }
            Err(error) => {
                connection = None;
                count(&mut tally, &counters, error.result_key(), u64::try_from(items).unwrap_or(u64::MAX));
                if !matches!(error, TransportError::Connect { .. }) {
                    tally.unknown_outcome_units += planned.iter().map(|transfer| transfer.amount_units).sum::<u64>();
                }
                true
            }
        };
        if failed {
            consecutive_failures = consecutive_failures.saturating_add(1);
            let pause = Duration::from_millis(u64::from(consecutive_failures.min(100))).min(BACKOFF_MAX);
            tokio::time::sleep(pause).await;
        } else {
            consecutive_failures = 0;
        }
    }
    tally
}

fn count(tally: &mut Tally, counters: &LiveCounters, key: &str, transfers: u64) {
    tally.results.add(key, transfers);
    if key == CREATED {
        counters.created.fetch_add(transfers, Ordering::Relaxed);
    } else {
        counters.other_results.fetch_add(transfers, Ordering::Relaxed);
    }
}

/// Counts an answer; `true` when the whole request failed (the generator then backs off).
fn classify(
    plan: &Plan,
    planned: &[PlannedTransfer],
    items: usize,
    status: StatusCode,
    answer: &[u8],
    tally: &mut Tally,
    counters: &LiveCounters,
) -> bool {
    if plan.workload == Workload::Health {
        // Answered health requests count in the live `created` counter, so that the progress
        // line shows them.
        if status == StatusCode::OK {
            tally.results.add("ok", 1);
            counters.created.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        tally.results.add(&workload::error_key(status, answer), 1);
        counters.other_results.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    if plan.batch == 1 {
        let key = workload::single_result(status, answer);
        count(tally, counters, &key, 1);
        if key == CREATED || key == EXISTS {
            tally.acknowledged_units += planned[0].amount_units;
        }
        return status.is_server_error();
    }
    match workload::batch_results(status, answer, items) {
        Ok(keys) => {
            let mut created = 0;
            for (key, transfer) in keys.iter().zip(planned) {
                if key == CREATED || key == EXISTS {
                    tally.acknowledged_units += transfer.amount_units;
                }
                if key == CREATED {
                    created += 1;
                } else {
                    tally.results.add(key, 1);
                    counters.other_results.fetch_add(1, Ordering::Relaxed);
                }
            }
            if created > 0 {
                tally.results.add(CREATED, created);
                counters.created.fetch_add(created, Ordering::Relaxed);
            }
            false
        }
        Err(key) => {
            count(tally, counters, &key, u64::try_from(items).unwrap_or(u64::MAX));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan(arguments: &[&str]) -> Result<Plan, BenchError> {
        let wrapper = Wrapper::try_parse_from(std::iter::once("bench").chain(arguments.iter().copied()))
            .map_err(|error| BenchError::InvalidArguments(error.to_string()))?;
        Plan::from_args(&wrapper.args, 99)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.target, "http://127.0.0.1:8080");
        assert_eq!(plan.accounts, 10_000);
        assert_eq!(plan.connections, 64);
        assert_eq!(plan.batch, 1);
        assert_eq!(plan.stop, Stop::After(Duration::from_secs(10)));
        assert_eq!(plan.seed, 99);
        assert_eq!(plan.naming, Naming::from_seed(99));
        assert!(plan.check_balances && plan.progress);
    }

    #[test]
    fn every_flag_of_the_contract_parses() {
        let plan = plan(&[
            "--target",
            "http://localhost:9000",
            "--accounts",
            "500",
            "--duration",
            "3",
            "--connections",
            "8",
            "--batch",
            "1000",
            "--token",
            "secret",
            "--hot-accounts",
            "10",
            "--seed",
            "5",
            "--run-id",
            "x1",
            "--currency",
            "EUR",
        ])
        .unwrap();
        assert_eq!(plan.target, "http://localhost:9000");
        assert_eq!((plan.accounts, plan.hot_accounts, plan.connections, plan.batch), (500, Some(10), 8, 1000));
        assert_eq!(plan.stop, Stop::After(Duration::from_secs(3)));
        assert_eq!(plan.token.as_deref(), Some("secret"));
        assert_eq!((plan.seed, plan.naming.run_id(), plan.currency.as_str()), (5, "x1", "EUR"));
        let counted = super::tests::plan(&["--count", "1234"]).unwrap();
        assert_eq!(counted.stop, Stop::Count(1234));
        let health = super::tests::plan(&["--workload", "health", "--batch", "50"]).unwrap();
        assert_eq!((health.workload, health.batch, health.check_balances), (Workload::Health, 1, false));
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        for (arguments, needle) in [
            (&["--accounts", "1"][..], "--accounts"),
            (&["--accounts", "10", "--hot-accounts", "11"], "--hot-accounts"),
            (&["--hot-accounts", "1"], "--hot-accounts"),
            (&["--connections", "0"], "--connections"),
            (&["--batch", "8191"], "--batch"),
            (&["--duration", "0"], "--duration"),
            (&["--count", "0"], "--count"),
            (&["--count", "5", "--duration", "5"], "cannot be used with"),
            (&["--atomic"], "--atomic"),
            (&["--currency", "U S"], "--currency"),
            (&["--run-id", "has space"], "--run-id"),
            (&["--target", "https://x:1"], "http://"),
            (&["--target", "localhost"], "--target"),
            (&["--threads", "0"], "--threads"),
            (&["--accounts", "many"], "invalid value"),
        ] {
            let error = plan(arguments).err().unwrap_or_else(|| panic!("{arguments:?} was accepted"));
            assert!(error.to_string().contains(needle), "{arguments:?}: {error}");
        }
    }

    #[test]
    fn a_count_run_claims_exactly_the_count() {
        let counters = LiveCounters::default();
        counters.remaining.store(2_500, Ordering::Relaxed);
        let stop = Stop::Count(2_500);
        let claims: Vec<usize> = std::iter::from_fn(|| Some(counters.claim(stop, 1000))).take(5).collect();
        assert_eq!(claims, [1000, 1000, 500, 0, 0]);
        let timed = LiveCounters::default();
        assert_eq!(timed.claim(Stop::After(Duration::from_secs(1)), 7), 7);
    }
}
