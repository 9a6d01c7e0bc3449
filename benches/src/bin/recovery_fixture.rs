//! Writes a large data dir quickly, for measuring recovery and snapshots:
//! `recovery_fixture --data-dir DIR [--accounts N] [--transfers M] [--group-records G]
//! [--snapshot-after-accounts] [--snapshot-at-transfers K] [--seed S]`.
//!
//! It appends big record groups straight through `snapshots::Wal` (no actors, no HTTP): first
//! N `CreateAccount` records (`a0000000` is an unlimited bank, the others may not go below
//! zero), optionally a snapshot of that state (timed: this is the snapshot write time for N
//! accounts), then M plain USD transfers: nine in ten from the bank to a random account, one in
//! ten between two random accounts when the payer has the funds. Every record is one the live
//! path could have written, so `ledgerd verify` and `ledgerd serve` accept the result. Prints
//! what it wrote and how long each part took. `benches/recovery.sh` drives it.
//!
//! With `--snapshot-at-transfers K` it stops after K transfers, recovers the data dir as
//! `ledgerd snapshot create` does (the history ingests everything the log holds and
//! checkpoints), writes a snapshot of that point, drops the log it covers, and goes on with the
//! remaining transfers in the log: the shape of a long-running server, whose restart reads the
//! newest snapshot and only the log after it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use benches::Random;
use engine::record::{Group, Record};
use engine::{Currency, Id, Ledger, Overdraft};

struct Arguments {
    data_dir: PathBuf,
    accounts: usize,
    transfers: usize,
    group_records: usize,
    snapshot_after_accounts: bool,
    snapshot_at_transfers: Option<usize>,
    seed: u64,
}

fn parse_arguments() -> anyhow::Result<Arguments> {
    let mut arguments = Arguments {
        data_dir: PathBuf::new(),
        accounts: 1_000_000,
        transfers: 10_000_000,
        group_records: 16_384,
        snapshot_after_accounts: false,
        snapshot_at_transfers: None,
        seed: 1,
    };
    let mut data_dir = None;
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--accounts" => arguments.accounts = value()?.parse().context("--accounts")?,
            "--transfers" => arguments.transfers = value()?.parse().context("--transfers")?,
            "--group-records" => arguments.group_records = value()?.parse().context("--group-records")?,
            "--seed" => arguments.seed = value()?.parse().context("--seed")?,
            "--snapshot-after-accounts" => arguments.snapshot_after_accounts = true,
            "--snapshot-at-transfers" => {
                arguments.snapshot_at_transfers = Some(value()?.parse().context("--snapshot-at-transfers")?);
            }
            other => bail!("unknown flag {other}; see the module documentation"),
        }
    }
    arguments.data_dir = data_dir.context("--data-dir DIR is required")?;
    if arguments.accounts < 2 || arguments.group_records == 0 {
        bail!("--accounts must be at least 2 and --group-records at least 1");
    }
    if arguments.data_dir.exists() && std::fs::read_dir(&arguments.data_dir)?.next().is_some() {
        bail!("{} must not exist or be empty", arguments.data_dir.display());
    }
    Ok(arguments)
}

fn account_id(index: usize) -> Id {
    Id::parse(&format!("a{index:07}")).expect("a valid id")
}

fn main() -> anyhow::Result<()> {
    let arguments = parse_arguments()?;
    let usd = Currency::new("USD", 2);
    let mut wal = snapshots::Wal::open(&arguments.data_dir)?;
    let started = Instant::now();
    let mut seq = 1_u64;
    let mut pending: Vec<Record> = Vec::with_capacity(arguments.group_records);
    let flush = |wal: &snapshots::Wal, pending: &mut Vec<Record>, seq: &mut u64| -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let group = Group::new(*seq, std::mem::take(pending));
        wal.append(&group)?;
        *seq += u64::try_from(group.records.len())?;
        Ok(())
    };

    // Accounts.
    let mut snapshot_ledger = arguments.snapshot_after_accounts.then(Ledger::default);
    for index in 0..arguments.accounts {
        let record = Record::CreateAccount {
            id: account_id(index),
            currency: usd.clone(),
            overdraft: if index == 0 { Overdraft::Unlimited } else { Overdraft::Limited(engine::Amount::ZERO) },
            metadata: Default::default(),
            created_at_ms: 1_780_000_000_000,
        };
        if let Some(ledger) = snapshot_ledger.as_mut() {
            ledger.apply(seq + u64::try_from(pending.len())?, &record)?;
        }
        pending.push(record);
        if pending.len() == arguments.group_records {
            flush(&wal, &mut pending, &mut seq)?;
        }
    }
    flush(&wal, &mut pending, &mut seq)?;
    println!("accounts: {} records in {:.2?}", arguments.accounts, started.elapsed());
    if let Some(ledger) = snapshot_ledger.take() {
        let writing = Instant::now();
        let info = snapshots::write_ledger_snapshot(&arguments.data_dir, &ledger, 0, 1_780_000_000_000)?;
        println!(
            "snapshot after the accounts: {} at seq {}, {} bytes, written in {:.2?}",
            info.id,
            info.seq,
            info.bytes,
            writing.elapsed()
        );
    }

    // Transfers, with the balances tracked so that no account goes below zero.
    let transfers_started = Instant::now();
    let mut random = Random::new(arguments.seed);
    let mut balances_cents: Vec<i64> = vec![0; arguments.accounts];
    let mut written = 0;
    for index in 0..arguments.transfers {
        if arguments.snapshot_at_transfers == Some(index) {
            flush(&wal, &mut pending, &mut seq)?;
            wal = snapshot_here(&arguments.data_dir, wal)?;
        }
        let cents = 1 + i64::try_from(random.below(10_000))?;
        let credit = 1 + random.below(arguments.accounts - 1);
        let mut debit = 0;
        if random.below(10) == 0 {
            let payer = 1 + random.below(arguments.accounts - 1);
            if payer != credit && balances_cents[payer] >= cents {
                debit = payer;
            }
        }
        balances_cents[debit] -= cents;
        balances_cents[credit] += cents;
        pending.push(Record::CreateTransfer {
            id: Id::parse(&format!("t{index:09}")).expect("a valid id"),
            debit_account: account_id(debit),
            credit_account: account_id(credit),
            amount: engine::Amount::from_minor_units(i128::from(cents)),
            currency: usd.clone(),
            pending: false,
            timeout_seconds: 0,
            description: String::new(),
            metadata: Default::default(),
            created_at_ms: 1_780_000_000_000 + i64::try_from(index)?,
        });
        written += 1;
        if pending.len() == arguments.group_records {
            flush(&wal, &mut pending, &mut seq)?;
        }
        if written % 1_000_000 == 0 {
            eprintln!("recovery_fixture: {written} transfers written, {:.0?}", transfers_started.elapsed());
        }
    }
    flush(&wal, &mut pending, &mut seq)?;
    println!(
        "transfers: {} records in {:.2?}; log ends at seq {}; total {:.2?}",
        arguments.transfers,
        transfers_started.elapsed(),
        wal.last_seq(),
        started.elapsed()
    );
    Ok(())
}

/// Closes `wal`, recovers the data dir (the history ingests the whole log and checkpoints),
/// writes a snapshot of its end, drops the log the snapshot and the history cover, and gives
/// back the open log.
fn snapshot_here(data_dir: &std::path::Path, wal: snapshots::Wal) -> anyhow::Result<snapshots::Wal> {
    drop(wal);
    let started = Instant::now();
    let mut reported = Instant::now();
    let recovered = snapshots::recover(data_dir, history::HistorySettings::default(), |progress| {
        if reported.elapsed().as_secs() >= 10 {
            reported = Instant::now();
            eprintln!("recovery_fixture: recovering for the snapshot: {progress:?}");
        }
    })?;
    let history_seq = recovered.history.close(recovered.history_threads)?;
    let ingested = started.elapsed();
    let writing = Instant::now();
    let info = snapshots::write_ledger_snapshot(data_dir, &recovered.ledger, history_seq, 1_780_000_000_000)?;
    let retained = snapshots::apply_retention(
        data_dir,
        &recovered.wal,
        history_seq,
        snapshots::Retention { snapshots_kept: 3, wal_retention_snapshots: 1 },
    )?;
    println!(
        "snapshot at seq {} ({} accounts, {} bytes) written in {:.2?}, after the history ingested the log in {ingested:.2?}; \
         {} log groups dropped",
        info.seq,
        info.accounts,
        info.bytes,
        writing.elapsed(),
        retained.log_groups_removed
    );
    Ok(recovered.wal)
}
