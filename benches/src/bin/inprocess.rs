//! In-process durable throughput: actors + log, no HTTP.
//!
//! `cargo run -p benches --release --bin inprocess -- [--accounts N] [--seconds S]
//! [--submitters C] [--batch B] [--shards K (default 1, as the server)] [--data-dir DIR]`
//!
//! Opens N funded accounts, then C concurrent submitters send random transfers (B per call:
//! single transfers for B = 1, non-atomic batches otherwise) for S seconds. Every counted
//! transfer was acknowledged, i.e. durable. Prints throughput and the latency of each call.

/// The same allocator as the `ledgerd` binary, so that the figures are the server's.
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actors::BatchItemResult;
use benches::{Random, usd_account, usd_transfer};
use engine::Overdraft;
use hdrhistogram::Histogram;

struct Options {
    accounts: usize,
    seconds: u64,
    submitters: usize,
    batch: usize,
    shards: usize,
    data_dir: Option<std::path::PathBuf>,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options { accounts: 10_000, seconds: 10, submitters: 64, batch: 1, shards: 1, data_dir: None };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--accounts" => options.accounts = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--submitters" => options.submitters = value()?.parse()?,
            "--batch" => options.batch = value()?.parse()?,
            "--shards" => options.shards = value()?.parse()?,
            "--data-dir" => options.data_dir = Some(value()?.into()),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(options.accounts >= 2 && options.submitters >= 1 && options.batch >= 1, "bad sizes");
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let data_dir = options.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let ledger = benches::start(&data_dir, options.shards).await?;
    let handle = ledger.handle.clone();
    eprintln!("opening {} accounts", options.accounts);
    handle.create_account(usd_account("bank", Overdraft::Unlimited)).await?;
    let chunk = 1_000;
    for start in (0..options.accounts).step_by(chunk) {
        let mut creations = Vec::new();
        for index in start..(start + chunk).min(options.accounts) {
            let handle = handle.clone();
            creations.push(tokio::spawn(async move {
                let name = format!("acct-{index}");
                handle.create_account(usd_account(&name, Overdraft::Limited(engine::Amount::ZERO))).await?;
                handle.create_transfer(usd_transfer(&format!("seed-{index}"), "bank", &name, 1_000_000)).await?;
                Ok::<_, actors::LedgerError>(())
            }));
        }
        for creation in creations {
            creation.await??;
        }
    }
    eprintln!("running {} submitters x batch {} for {} s", options.submitters, options.batch, options.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for submitter in 0..options.submitters {
        let (handle, stop, created, rejected) = (handle.clone(), stop.clone(), created.clone(), rejected.clone());
        let (accounts, batch) = (options.accounts, options.batch);
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut random = Random::new(0x5eed + submitter as u64);
            let mut sequence = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let mut items = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let from = random.below(accounts);
                    let to = (from + 1 + random.below(accounts - 1)) % accounts;
                    sequence += 1;
                    items.push(usd_transfer(
                        &format!("s{submitter}-{sequence}"),
                        &format!("acct-{from}"),
                        &format!("acct-{to}"),
                        i64::try_from(1 + random.below(100)).expect("small"),
                    ));
                }
                let call = Instant::now();
                if batch == 1 {
                    match handle.create_transfer(items.pop().expect("one item")).await {
                        Ok(_) => created.fetch_add(1, Ordering::Relaxed),
                        Err(_) => rejected.fetch_add(1, Ordering::Relaxed),
                    };
                } else {
                    for result in handle.create_batch(items, false).await.expect("a batch is answered") {
                        match result {
                            BatchItemResult::Created(_) => created.fetch_add(1, Ordering::Relaxed),
                            _ => rejected.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
                let micros = u64::try_from(call.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                latency.saturating_record(micros);
            }
            latency
        }));
    }
    let mut last = 0;
    for second in 1..=options.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = created.load(Ordering::Relaxed);
        eprintln!("[{second:>3}s] {:>9} transfers/s", now - last);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        latency.add(task.await?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let created = created.load(Ordering::Relaxed);
    println!(
        "in-process: {:.0} durable transfers/s ({} created, {} rejected in {:.1} s; {} submitters, batch {}, {} shards, {} accounts)",
        created as f64 / elapsed,
        created,
        rejected.load(Ordering::Relaxed),
        elapsed,
        options.submitters,
        options.batch,
        options.shards,
        options.accounts
    );
    println!(
        "latency per call: p50 {} us, p99 {} us, p999 {} us, max {} us",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max()
    );
    ledger.close().await;
    Ok(())
}
