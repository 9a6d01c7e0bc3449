//! Resident memory per account and per stored transfer, through the real actors and log.
//!
//! `cargo run --release -p benches --bin memory -- [--accounts N] [--transfers M] [--shards K]`
//! (defaults: 1,000,000 accounts, 2,000,000 transfers, 1 shard) opens a ledger in-process on a
//! fresh temporary data dir, reads the process's resident set size (`VmRSS` in
//! `/proc/self/status`), opens N accounts in batches of concurrent requests, reads it again,
//! sends M transfers between random pairs in batches of 1,000, reads it again, and prints the
//! difference per account and per transfer. Every step is durable, as in the server.

use std::time::Instant;

use benches::{Random, usd_account, usd_transfer};
use engine::Overdraft;

/// The same allocator as the `ledgerd` binary, so that the figures are the server's.
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Accounts opened concurrently at a time.
const OPEN_CONCURRENCY: usize = 2_000;
/// Transfers per batch request.
const BATCH: usize = 1_000;
/// Batch requests in flight at a time.
const BATCH_CONCURRENCY: usize = 8;

struct Options {
    accounts: usize,
    transfers: usize,
    shards: usize,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options { accounts: 1_000_000, transfers: 2_000_000, shards: 1 };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--accounts" => options.accounts = value()?.parse()?,
            "--transfers" => options.transfers = value()?.parse()?,
            "--shards" => options.shards = value()?.parse()?,
            other => anyhow::bail!("unknown flag {other} (flags: --accounts N --transfers M --shards K)"),
        }
    }
    anyhow::ensure!(options.accounts >= 2, "--accounts must be at least 2");
    Ok(options)
}

/// The resident set size of this process, in bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS line in /proc/self/status"))?;
    let kilobytes: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse()?;
    Ok(kilobytes * 1024)
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let ledger = benches::start(directory.path(), options.shards).await?;
    let handle = ledger.handle.clone();
    handle.create_account(usd_account("bank", Overdraft::Unlimited)).await?;
    let base = resident_bytes()?;
    let started = Instant::now();
    for start in (0..options.accounts).step_by(OPEN_CONCURRENCY) {
        let mut creations = Vec::with_capacity(OPEN_CONCURRENCY);
        for index in start..(start + OPEN_CONCURRENCY).min(options.accounts) {
            let handle = handle.clone();
            creations.push(tokio::spawn(async move {
                handle.create_account(usd_account(&format!("acct-{index}"), Overdraft::Unlimited)).await
            }));
        }
        for creation in creations {
            creation.await??;
        }
        if (start / OPEN_CONCURRENCY).is_multiple_of(100) {
            eprintln!("opened {start} accounts ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    let with_accounts = resident_bytes()?;
    let accounts = u64::try_from(options.accounts)?;
    println!(
        "accounts: {} opened in {:.1} s; resident {} MiB -> {} MiB: {} bytes per account",
        options.accounts,
        started.elapsed().as_secs_f64(),
        base >> 20,
        with_accounts >> 20,
        with_accounts.saturating_sub(base) / accounts
    );

    let started = Instant::now();
    let mut random = Random::new(0x5eed);
    let mut sent = 0;
    while sent < options.transfers {
        let mut batches = Vec::with_capacity(BATCH_CONCURRENCY);
        for _ in 0..BATCH_CONCURRENCY {
            if sent >= options.transfers {
                break;
            }
            let size = BATCH.min(options.transfers - sent);
            let items: Vec<_> = (0..size)
                .map(|offset| {
                    let from = random.below(options.accounts);
                    let to = (from + 1 + random.below(options.accounts - 1)) % options.accounts;
                    let cents = i64::try_from(1 + random.below(10_000)).unwrap_or(1);
                    usd_transfer(&format!("t-{}", sent + offset), &format!("acct-{from}"), &format!("acct-{to}"), cents)
                })
                .collect();
            sent += size;
            let handle = handle.clone();
            batches.push(tokio::spawn(async move { handle.create_batch(items, false).await }));
        }
        for batch in batches {
            batch.await??;
        }
    }
    let with_transfers = resident_bytes()?;
    let transfers = u64::try_from(options.transfers.max(1))?;
    println!(
        "transfers: {} stored in {:.1} s; resident {} MiB -> {} MiB: {} bytes per transfer",
        options.transfers,
        started.elapsed().as_secs_f64(),
        with_accounts >> 20,
        with_transfers >> 20,
        with_transfers.saturating_sub(with_accounts) / transfers
    );
    ledger.close().await;
    Ok(())
}
