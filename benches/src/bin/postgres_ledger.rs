//! The PostgreSQL side of the comparison: the workload of `ledgerd bench`, on a SQL ledger.
//!
//! `postgres_ledger --url "host=127.0.0.1 port=P user=U dbname=D" [--accounts N]
//! [--hot-accounts K] [--connections C] [--batch B] [--duration S | --count N] [--seed S]
//! [--json]`
//!
//! Creates the schema of `benches/postgres/schema.sql` afresh (dropping what was there), opens
//! N accounts funded from an unlimited funding account (not timed), then C connections each
//! send random transfers between distinct random accounts (both among the first K with
//! `--hot-accounts`) for S seconds: B = 1 calls `transfer(...)` (one transaction per transfer),
//! B > 1 calls `transfer_batch(...)` (one transaction per batch). It ends with the same
//! balance check and prints the same report as `ledgerd bench` (`--json`: one JSON object).
//! `benches/postgres/compare.sh` runs it against a private cluster.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use api::bench::report::{self, BalanceCheck, LatencySummary, Report, ResultCounts};
use api::bench::workload::{CREATED, Naming, PairPicker};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tokio_postgres::{Client, NoTls};

const SCHEMA_SQL: &str = include_str!("../../postgres/schema.sql");

/// The SQL ledger driver.
#[derive(Debug, Parser)]
#[command(name = "postgres_ledger")]
struct Options {
    /// libpq-style connection string.
    #[arg(long, value_name = "CONNINFO")]
    url: String,
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    accounts: u64,
    #[arg(long, value_name = "K")]
    hot_accounts: Option<u64>,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: u16,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8190))]
    batch: u16,
    #[arg(long = "duration", value_name = "S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration_seconds: u64,
    #[arg(long, conflicts_with = "duration_seconds", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    #[arg(long, default_value_t = 1_000_000)]
    funding_amount: u64,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    transfer_amount_max: u64,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    let options = match Options::try_parse() {
        Ok(options) => options,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("postgres_ledger: error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(report) => {
            if options.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("postgres_ledger: error: the balance check failed");
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("postgres_ledger: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("postgres_ledger: a connection ended: {error}");
        }
    });
    Ok(client)
}

async fn run(options: &Options) -> anyhow::Result<Report> {
    if let Some(hot) = options.hot_accounts {
        anyhow::ensure!((2..=options.accounts).contains(&hot), "--hot-accounts must be from 2 to --accounts");
    }
    let seed = options.seed.unwrap_or_else(api::bench::clock_seed);
    let naming = Naming::from_seed(seed);
    let setup_started = Instant::now();
    let client = connect(&options.url).await?;
    setup(&client, options, &naming).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let mut clients = Vec::new();
    for _ in 0..options.connections {
        clients.push(connect(&options.url).await?);
    }
    if !options.no_progress {
        eprintln!("sending transfers over {} connections, {} per transaction", options.connections, options.batch);
    }
    let remaining = Arc::new(AtomicU64::new(options.count.unwrap_or(u64::MAX)));
    let created_live = Arc::new(AtomicU64::new(0));
    let cpu_before = report::process_cpu_seconds();
    let started = Instant::now();
    let deadline = options.count.is_none().then(|| started + Duration::from_secs(options.duration_seconds));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let worker = Worker {
            client,
            naming: naming.clone(),
            picker: PairPicker::new(options.hot_accounts.unwrap_or(options.accounts)),
            random: SmallRng::seed_from_u64(seed ^ (u64::try_from(index)? << 40)),
            prefix: format!("{}-c{index}-", naming.run_id()),
            batch: u64::from(options.batch),
            amount_max: options.transfer_amount_max,
        };
        let (remaining, created_live) = (remaining.clone(), created_live.clone());
        tasks.spawn(worker.drive(deadline, remaining, created_live));
    }
    let progress = (!options.no_progress).then(|| {
        let created_live = created_live.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for second in 1.. {
                tokio::time::sleep_until(tokio::time::Instant::from_std(started + Duration::from_secs(second))).await;
                let created = created_live.load(Ordering::Relaxed);
                eprintln!("{}", report::progress_line(second, created - last, "transfers", created, 0));
                last = created;
            }
        })
    });
    let mut latency = report::latency_histogram();
    let mut results = ResultCounts::default();
    let mut requests = 0;
    let mut acknowledged_units = 0;
    while let Some(joined) = tasks.join_next().await {
        let tally = joined??;
        latency.add(&tally.latency)?;
        results.merge(&tally.results);
        requests += tally.requests;
        acknowledged_units += tally.acknowledged_units;
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    let cpu_seconds = match (cpu_before, report::process_cpu_seconds()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let balance = check(&client, &naming, acknowledged_units).await?;
    let created = results.get(CREATED);
    Ok(Report {
        system: "postgresql".to_owned(),
        target: format!("postgresql ({})", options.url),
        workload: "transfers".to_owned(),
        run_id: naming.run_id().to_owned(),
        seed,
        accounts: options.accounts,
        hot_accounts: options.hot_accounts,
        connections: usize::from(options.connections),
        batch: usize::from(options.batch),
        atomic: false,
        setup_seconds,
        elapsed_seconds: elapsed.as_secs_f64(),
        requests,
        requests_per_second: report::per_second(requests, elapsed),
        transfers_created: created,
        throughput_transfers_per_second: report::per_second(created, elapsed),
        latency_ms: LatencySummary::from_histogram(&latency),
        results,
        balance: Some(balance),
        generator_cpu_seconds: cpu_seconds,
        generator_threads: 1,
    })
}

/// The schema afresh, the funding account, N accounts funded from it (one transfer each).
async fn setup(client: &Client, options: &Options, naming: &Naming) -> anyhow::Result<()> {
    client.batch_execute(SCHEMA_SQL).await.context("creating the schema")?;
    let run = naming.run_id();
    let funding = naming.funding_account();
    let amount = Decimal::from(options.funding_amount);
    let accounts = i64::try_from(options.accounts)?;
    client
        .execute(
            "INSERT INTO accounts (id, currency, balance, overdraft_limit) VALUES ($1, 'USD', 0, NULL)",
            &[&funding],
        )
        .await
        .context("creating the funding account")?;
    client
        .execute(
            "INSERT INTO accounts (id, currency, balance, overdraft_limit) \
             SELECT $1 || '-a' || index, 'USD', 0, 0 FROM generate_series(0, $2::bigint - 1) AS index",
            &[&run, &accounts],
        )
        .await
        .context("creating the accounts")?;
    client
        .execute(
            "INSERT INTO transfers (id, debit_account, credit_account, amount) \
             SELECT $1 || '-f' || index, $3, $1 || '-a' || index, $4 FROM generate_series(0, $2::bigint - 1) AS index",
            &[&run, &accounts, &funding, &amount],
        )
        .await
        .context("recording the funding transfers")?;
    client
        .execute("UPDATE accounts SET balance = $1 WHERE id <> $2", &[&amount, &funding])
        .await
        .context("funding the accounts")?;
    client
        .execute(
            "UPDATE accounts SET balance = -$1::numeric * $2::numeric WHERE id = $3",
            &[&amount, &Decimal::from(accounts), &funding],
        )
        .await
        .context("debiting the funding account")?;
    // One statement each: VACUUM cannot run in the implicit transaction of a multi-statement
    // string.
    for statement in ["VACUUM ANALYZE accounts", "VACUUM ANALYZE transfers", "CHECKPOINT"] {
        client.batch_execute(statement).await.with_context(|| statement.to_owned())?;
    }
    Ok(())
}

/// The same verdict as `ledgerd bench`: balances sum to zero, nobody below their limit, the
/// load's transfers moved exactly what was acknowledged.
async fn check(client: &Client, naming: &Naming, acknowledged_units: u64) -> anyhow::Result<BalanceCheck> {
    let row = client
        .query_one(
            "SELECT count(*), coalesce(sum(balance), 0), \
                    count(*) FILTER (WHERE overdraft_limit IS NOT NULL AND balance < -overdraft_limit) \
             FROM accounts",
            &[],
        )
        .await?;
    let (accounts, sum, over_limit): (i64, Decimal, i64) = (row.get(0), row.get(1), row.get(2));
    let load_prefix = format!("{}-c%", naming.run_id());
    let moved: Decimal = client
        .query_one("SELECT coalesce(sum(amount), 0) FROM transfers WHERE id LIKE $1", &[&load_prefix])
        .await?
        .get(0);
    let acknowledged = Decimal::from(acknowledged_units);
    let moved_as_acknowledged = moved == acknowledged;
    Ok(BalanceCheck {
        accounts_checked: u64::try_from(accounts)?,
        sum_of_balances: sum.normalize().to_string(),
        accounts_over_limit: u64::try_from(over_limit)?,
        debits_posted: moved.normalize().to_string(),
        acknowledged_amount: acknowledged.to_string(),
        unknown_outcome_amount: "0".to_owned(),
        moved_as_acknowledged,
        passed: sum.is_zero() && over_limit == 0 && moved_as_acknowledged,
    })
}

struct Worker {
    client: Client,
    naming: Naming,
    picker: PairPicker,
    random: SmallRng,
    prefix: String,
    batch: u64,
    amount_max: u64,
}

struct Tally {
    latency: hdrhistogram::Histogram<u64>,
    results: ResultCounts,
    requests: u64,
    acknowledged_units: u64,
}

impl Worker {
    async fn drive(
        mut self,
        deadline: Option<Instant>,
        remaining: Arc<AtomicU64>,
        created_live: Arc<AtomicU64>,
    ) -> anyhow::Result<Tally> {
        let single = self.client.prepare("SELECT transfer($1, $2, $3, $4)").await?;
        let batch = self.client.prepare("SELECT transfer_batch($1, $2, $3, $4)").await?;
        let mut tally = Tally {
            latency: report::latency_histogram(),
            results: ResultCounts::default(),
            requests: 0,
            acknowledged_units: 0,
        };
        let mut sequence = 0_u64;
        loop {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
            let claimed = remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    (left > 0).then(|| left.saturating_sub(self.batch))
                })
                .map_or(0, |before| before.min(self.batch));
            if claimed == 0 {
                break;
            }
            let (mut ids, mut debits, mut credits, mut amounts, mut units) = (vec![], vec![], vec![], vec![], vec![]);
            for _ in 0..claimed {
                sequence += 1;
                let (debit, credit) = self.picker.pick(&mut self.random);
                let amount_units = self.random.random_range(1..=self.amount_max);
                ids.push(format!("{}{sequence}", self.prefix));
                debits.push(self.naming.account(debit));
                credits.push(self.naming.account(credit));
                amounts.push(Decimal::from(amount_units));
                units.push(amount_units);
            }
            let sent = Instant::now();
            let outcome: Result<Vec<String>, tokio_postgres::Error> = if self.batch == 1 {
                self.client
                    .query_one(&single, &[&ids[0], &debits[0], &credits[0], &amounts[0]])
                    .await
                    .map(|row| vec![row.get::<_, String>(0)])
            } else {
                self.client.query_one(&batch, &[&ids, &debits, &credits, &amounts]).await.map(|row| row.get(0))
            };
            tally.requests += 1;
            match outcome {
                Ok(keys) => {
                    report::record_latency(&mut tally.latency, sent.elapsed());
                    for (key, amount_units) in keys.iter().zip(&units) {
                        tally.results.add(key, 1);
                        if key == CREATED {
                            tally.acknowledged_units += amount_units;
                            created_live.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(error) => {
                    let key =
                        error.code().map_or_else(|| "sql_error".to_owned(), |code| format!("sql_{}", code.code()));
                    tally.results.add(&key, claimed);
                    anyhow::ensure!(!self.client.is_closed(), "the connection closed: {error}");
                }
            }
        }
        Ok(tally)
    }
}
