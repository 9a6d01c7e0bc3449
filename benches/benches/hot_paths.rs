//! criterion benches of the hot paths of a transfer, from the inside out:
//!
//! - `record`: encoding a group of log records (`engine::record::encode_group`, and
//!   `snapshots::EncodedGroup` as the committer builds it record by record) and decoding it
//!   back (`engine::record::decode_group`), for groups of 1 and 1,000 transfer records;
//! - `ledger_apply`: `engine::Ledger::apply` of one transfer record on a ledger of 10,000
//!   accounts (the replay path, and the same functions as the live path);
//! - `actor_round_trip`: one transfer through `actors::LedgerHandle` in-process, durable (the
//!   committer and its `fdatasync` included) on a temporary data dir, one at a time and 64 at
//!   once;
//! - `group_commit`: `snapshots::Committer` over a `Wal` in a temporary dir: submit a group of
//!   1, 100 or 1,000 records and wait until it is durable (sled insert, flush, fdatasync).
//!
//! Run: `cargo bench -p benches` (or `cargo bench -p benches -- record` for one group).

use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::{Random, id, usd_account, usd_transfer};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use engine::record::{Group, Record, decode_group, encode_group};
use engine::{Currency, Ledger, Overdraft};
use snapshots::{Committer, CommitterSettings, EncodedGroup, Wal};

const ACCOUNTS: usize = 10_000;

fn account_name(index: usize) -> String {
    format!("acct-{index}")
}

/// A plain transfer record as the live path writes it.
fn transfer_record(sequence: u64, debit: usize, credit: usize) -> Record {
    Record::CreateTransfer {
        id: id(&format!("t-{sequence}")),
        debit_account: id(&account_name(debit)),
        credit_account: id(&account_name(credit)),
        amount: engine::Amount::from_minor_units(1_234),
        currency: Currency::new("USD", 2),
        pending: false,
        timeout_seconds: 0,
        description: String::new(),
        metadata: Default::default(),
        created_at_ms: 1_795_341_600_000,
    }
}

fn random_records(count: usize, random: &mut Random) -> Vec<Record> {
    (0..count)
        .map(|index| {
            let debit = random.below(ACCOUNTS);
            let credit = (debit + 1 + random.below(ACCOUNTS - 1)) % ACCOUNTS;
            transfer_record(u64::try_from(index).expect("small"), debit, credit)
        })
        .collect()
}

fn record(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("record");
    let mut random = Random::new(1);
    for records in [1_usize, 1000] {
        let log_group = Group::new(1_000_000, random_records(records, &mut random));
        let encoded = encode_group(&log_group);
        group.throughput(Throughput::Elements(u64::try_from(records).expect("small")));
        group.bench_with_input(BenchmarkId::new("encode_group", records), &log_group, |bencher, log_group| {
            bencher.iter(|| encode_group(black_box(log_group)));
        });
        group.bench_with_input(BenchmarkId::new("encoded_group_push", records), &log_group, |bencher, log_group| {
            let mut encoder = EncodedGroup::new();
            bencher.iter(|| {
                encoder.begin(log_group.first_seq);
                for record in &log_group.records {
                    encoder.push(black_box(record));
                }
                encoder.seal();
                black_box(encoder.bytes().len())
            });
        });
        group.bench_with_input(BenchmarkId::new("decode_group", records), &encoded, |bencher, encoded| {
            bencher.iter(|| decode_group(black_box(encoded)).expect("decodes"));
        });
    }
    group.finish();
}

/// A ledger with `ACCOUNTS` funded accounts, as replay would have built it.
fn funded_ledger() -> Ledger {
    let mut ledger = Ledger::default();
    let mut seq = 0;
    let mut apply = |ledger: &mut Ledger, record: Record| {
        seq += 1;
        ledger.apply(seq, &record).expect("a valid record");
    };
    let usd = Currency::new("USD", 2);
    let create = |name: String, overdraft| Record::CreateAccount {
        id: id(&name),
        currency: usd.clone(),
        overdraft,
        metadata: Default::default(),
        created_at_ms: 0,
    };
    apply(&mut ledger, create("bank".to_owned(), Overdraft::Unlimited));
    for index in 0..ACCOUNTS {
        apply(&mut ledger, create(account_name(index), Overdraft::Limited(engine::Amount::ZERO)));
    }
    for index in 0..ACCOUNTS {
        let mut funding = transfer_record(0, 0, index);
        if let Record::CreateTransfer { id: transfer_id, debit_account, amount, .. } = &mut funding {
            *transfer_id = engine::Id::parse(&format!("seed-{index}")).expect("valid");
            *debit_account = engine::Id::parse("bank").expect("valid");
            *amount = engine::Amount::from_minor_units(100_000_000);
        }
        apply(&mut ledger, funding);
    }
    ledger
}

fn ledger_apply(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ledger_apply");
    group.throughput(Throughput::Elements(1));
    let mut ledger = funded_ledger();
    let mut random = Random::new(2);
    let mut sequence = 0_u64;
    group.bench_function("transfer_10k_accounts", |bencher| {
        bencher.iter_batched(
            || {
                sequence += 1;
                let debit = random.below(ACCOUNTS);
                let credit = (debit + 1 + random.below(ACCOUNTS - 1)) % ACCOUNTS;
                transfer_record(sequence, debit, credit)
            },
            |record| {
                let seq = ledger.last_seq + 1;
                ledger.apply(seq, &record).expect("applies");
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn actor_round_trip(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("actor_round_trip");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let ledger = runtime.block_on(async {
        let ledger = benches::start(data_dir.path(), 2).await.expect("the ledger starts");
        let handle = ledger.handle.clone();
        handle.create_account(usd_account("bank", Overdraft::Unlimited)).await.expect("bank");
        for index in 0..1000 {
            let name = account_name(index);
            handle.create_account(usd_account(&name, Overdraft::Limited(engine::Amount::ZERO))).await.expect("account");
            handle
                .create_transfer(usd_transfer(&format!("seed-{index}"), "bank", &name, 100_000_000))
                .await
                .expect("funding");
        }
        ledger
    });
    let handle = ledger.handle.clone();
    let mut sequence = 0_u64;
    let mut random = Random::new(3);
    let mut next_transfer = move || {
        sequence += 1;
        let debit = random.below(1000);
        let credit = (debit + 1 + random.below(999)) % 1000;
        usd_transfer(&format!("rt-{sequence}"), &account_name(debit), &account_name(credit), 1)
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_transfer_durable", |bencher| {
        bencher.iter_custom(|iterations| {
            let transfers: Vec<_> = (0..iterations).map(|_| next_transfer()).collect();
            runtime.block_on(async {
                let started = Instant::now();
                for transfer in transfers {
                    handle.create_transfer(transfer).await.expect("a transfer is answered");
                }
                started.elapsed()
            })
        });
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("64_concurrent_transfers_durable", |bencher| {
        bencher.iter_custom(|iterations| {
            let rounds: Vec<Vec<_>> = (0..iterations).map(|_| (0..64).map(|_| next_transfer()).collect()).collect();
            runtime.block_on(async {
                let started = Instant::now();
                for round in rounds {
                    let calls = round.into_iter().map(|transfer| {
                        let handle = handle.clone();
                        tokio::spawn(async move { handle.create_transfer(transfer).await })
                    });
                    let calls: Vec<_> = calls.collect();
                    for call in calls {
                        call.await.expect("a task").expect("a transfer is answered");
                    }
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    runtime.block_on(ledger.close());
}

fn group_commit(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("group_commit");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let data_dir = tempfile::tempdir().expect("a temp dir");
    let wal = Wal::open(data_dir.path()).expect("the log opens");
    let settings =
        CommitterSettings { group_records_max: 16_384, group_bytes_max: 4 << 20, queue_records_max: 1 << 20 };
    let (commit, committer) = Committer::start(wal, 1, settings);
    let mut random = Random::new(4);
    for records in [1_usize, 100, 1000] {
        group.throughput(Throughput::Elements(u64::try_from(records).expect("small")));
        group.bench_function(BenchmarkId::new("submit_and_wait_durable", records), |bencher| {
            bencher.iter_batched(
                || random_records(records, &mut random),
                |batch| {
                    let first = commit.submit(batch).expect("submitted");
                    let last = first + u64::try_from(records).expect("small") - 1;
                    runtime.block_on(commit.wait_durable(last)).expect("durable");
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    commit.close();
    committer.join().expect("the committer thread").expect("the committer ends cleanly");
}

criterion_group!(hot_paths, record, ledger_apply, actor_round_trip, group_commit);
criterion_main!(hot_paths);
