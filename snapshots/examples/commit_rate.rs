//! Measures the durable commit rate of the log: groups/s and records/s for groups of small
//! `CreateTransfer` records, straight into the `Wal` and through the `Committer`.
//!
//! `cargo run --release -p snapshots --example commit_rate -- [GROUPS] [RECORDS_PER_GROUP] [DIR]`
//! (defaults: 1000 groups of 1000 records, in a temporary directory under `target/`). The
//! directory must be on a real disk (not tmpfs), or fdatasync costs nothing.

use std::path::PathBuf;
use std::time::Instant;

use engine::account::{Metadata, Overdraft};
use engine::amount::{Amount, Currency};
use engine::id::Id;
use engine::record::{Group, Record};
use snapshots::{Committer, CommitterSettings, EncodedGroup, Wal};

fn record(number: u64) -> Record {
    let id = |text: String| Id::parse(&text).unwrap();
    Record::CreateTransfer {
        id: id(format!("t-{number}")),
        debit_account: id(format!("acct-{}", number % 1000)),
        credit_account: id(format!("acct-{}", (number + 1) % 1000)),
        amount: Amount::from_minor_units(1234),
        currency: Currency::new("USD", 2),
        pending: false,
        timeout_seconds: 0,
        description: String::new(),
        metadata: Metadata::new(),
        created_at_ms: 1_700_000_000_000 + i64::try_from(number).unwrap(),
    }
}

fn report(label: &str, groups: u64, records: u64, bytes: u64, seconds: f64) {
    println!(
        "{label}: {groups} groups, {records} records, {:.1} MB in {seconds:.3} s = {:.0} groups/s, {:.0} records/s, {:.1} MB/s, {:.3} ms/group",
        bytes as f64 / 1e6,
        groups as f64 / seconds,
        records as f64 / seconds,
        bytes as f64 / 1e6 / seconds,
        seconds * 1e3 / groups as f64,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let groups: u64 = args.next().map_or(1000, |text| text.parse().unwrap());
    let per_group: u64 = args.next().map_or(1000, |text| text.parse().unwrap());
    let base: PathBuf = args
        .next()
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/commit-rate"), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();

    let records: Vec<Vec<Record>> =
        (0..groups).map(|group| (0..per_group).map(|index| record(group * per_group + index + 1)).collect()).collect();

    // 1. Encoding alone.
    let started = Instant::now();
    let mut encoded = EncodedGroup::new();
    let mut bytes = 0;
    for (group, items) in records.iter().enumerate() {
        encoded.begin(u64::try_from(group).unwrap() * per_group + 1);
        for record in items {
            encoded.push(record);
        }
        encoded.seal();
        bytes += encoded.bytes().len() as u64;
    }
    report("encode only", groups, groups * per_group, bytes, started.elapsed().as_secs_f64());
    println!("  {:.1} bytes per record", bytes as f64 / (groups * per_group) as f64);

    // 2. Straight into the Wal: insert + flush + fdatasync per group.
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let started = Instant::now();
        let mut bytes = 0;
        for (group, items) in records.iter().enumerate() {
            encoded.begin(u64::try_from(group).unwrap() * per_group + 1);
            for record in items {
                encoded.push(record);
            }
            encoded.seal();
            bytes += encoded.bytes().len() as u64;
            wal.append_encoded(&encoded).unwrap();
        }
        report(
            "wal append (encode + insert + flush + fdatasync)",
            groups,
            groups * per_group,
            bytes,
            started.elapsed().as_secs_f64(),
        );
        // Recovery of that log (after the accounts the transfers need).
        let accounts: Vec<Record> = (0..1000)
            .map(|number| Record::CreateAccount {
                id: Id::parse(&format!("acct-{number}")).unwrap(),
                currency: Currency::new("USD", 2),
                overdraft: Overdraft::Unlimited,
                metadata: Metadata::new(),
                created_at_ms: 0,
            })
            .collect();
        drop(wal);
        let recovery_dir = tempfile::tempdir_in(&base).unwrap();
        let wal = Wal::open(recovery_dir.path()).unwrap();
        wal.append(&Group::new(1, accounts)).unwrap();
        for (group, items) in records.iter().enumerate() {
            wal.append(&Group::new(1001 + u64::try_from(group).unwrap() * per_group, items.clone())).unwrap();
        }
        let started = Instant::now();
        let decoded: usize = wal.groups_from(1).map(|group| group.unwrap().records.len()).sum();
        println!("  read + decode alone: {decoded} records in {:.3} s", started.elapsed().as_secs_f64());
        drop(wal);
        let started = Instant::now();
        let recovered = snapshots::recover(recovery_dir.path(), history::HistorySettings::default(), |_| {}).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "recover (read + decode + apply + check_invariants): {} records in {seconds:.3} s = {:.0} records/s",
            recovered.replayed_records,
            recovered.replayed_records as f64 / seconds
        );
    }

    // 3. Through the committer: 2 submitter threads, each submission one group's records.
    for group_records_max in [usize::try_from(per_group).unwrap(), 16_384] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let settings = CommitterSettings { group_records_max, group_bytes_max: 4 << 20, queue_records_max: 1 << 24 };
        let (handle, thread) = Committer::start(wal.clone(), 1, settings);
        let mut halves: Vec<Vec<Vec<Record>>> = vec![Vec::new(), Vec::new()];
        for (index, items) in records.iter().enumerate() {
            halves[index % 2].push(items.clone());
        }
        let started = Instant::now();
        let submitters: Vec<_> = halves
            .into_iter()
            .map(|half| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    let mut last = 0;
                    for items in half {
                        let count = items.len() as u64;
                        // The queue is large enough never to be full here.
                        let first = handle.submit(items).unwrap();
                        last = first + count - 1;
                    }
                    runtime.block_on(handle.wait_durable(last)).unwrap();
                })
            })
            .collect();
        for submitter in submitters {
            submitter.join().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let written_groups = wal.groups_from(1).count() as u64;
        handle.close();
        thread.join().unwrap().unwrap();
        report(
            &format!(
                "committer, 2 submitters, group_records_max {group_records_max} ({written_groups} groups written)"
            ),
            written_groups,
            groups * per_group,
            bytes,
            seconds,
        );
    }
}
