//! The history against an in-memory reference (`engine::TransferBook`) over random logs: every
//! transfer readable by id in its current state, every account's history complete and newest
//! first through pages, every fact's latest payload, across checkpoints, merges, clean reopens
//! and crashes (threads stopped without the last checkpoint, then the log after the watermark
//! ingested again, as recovery does).

use engine::ledger::TransferDecision;
use engine::{Amount, Currency, Id, Ledger, Metadata, Overdraft, Record, TransferBook, TransferRequest, WrittenAmount};
use history::{History, HistorySettings};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const ACCOUNTS: usize = 6;

fn id(text: &str) -> Id {
    Id::parse_internal(text).unwrap()
}

fn account_id(index: usize) -> Id {
    id(&format!("acct-{index}"))
}

/// The latest payload of each (kind, key).
type Facts = BTreeMap<(String, String), Vec<u8>>;

/// A random valid log: accounts, plain and pending transfers, posts, voids, expiries, facts.
fn random_log(seed: u64, operations: usize) -> (Vec<Record>, TransferBook, Facts) {
    let mut random = SmallRng::seed_from_u64(seed);
    let mut ledger = Ledger::default();
    let mut book = TransferBook::default();
    let mut facts = BTreeMap::new();
    let mut records = Vec::new();
    let apply = |ledger: &mut Ledger, book: &mut TransferBook, records: &mut Vec<Record>, record: Record| {
        let seq = ledger.last_seq + 1;
        ledger.apply(seq, &record).unwrap();
        book.apply(seq, &record).unwrap();
        records.push(record);
    };
    for index in 0..ACCOUNTS {
        let overdraft = if index == 0 { Overdraft::Unlimited } else { Overdraft::Limited(Amount::ZERO) };
        let record = Record::CreateAccount {
            id: account_id(index),
            currency: Currency::new("USD", 2),
            overdraft,
            metadata: Metadata::new(),
            created_at_ms: 1,
        };
        apply(&mut ledger, &mut book, &mut records, record);
    }
    let mut now_ms = 1_000_000_i64;
    let mut names: Vec<Id> = Vec::new();
    for step in 0..operations {
        now_ms += 700;
        let choice = random.random_range(0..10);
        let record = match choice {
            0..=5 => {
                let debit = if random.random_range(0..3) == 0 { 0 } else { random.random_range(0..ACCOUNTS) };
                let credit = random.random_range(0..ACCOUNTS);
                let pending = random.random_bool(0.4);
                let request = TransferRequest {
                    id: id(&format!("t-{step}-{}", "x".repeat(random.random_range(0..40)))),
                    debit_account: account_id(debit),
                    credit_account: account_id(credit),
                    amount: WrittenAmount::from_minor_units(random.random_range(1..5_000), 2),
                    pending,
                    timeout_seconds: if pending && random.random_bool(0.3) { 2 } else { 0 },
                    description: if random.random_bool(0.5) { "rent ünï \"q\"".to_owned() } else { String::new() },
                    metadata: if random.random_bool(0.3) {
                        [("k".to_owned(), format!("v{step}"))].into()
                    } else {
                        Metadata::new()
                    },
                };
                match ledger.create_transfer(&request, book.get(&request.id), now_ms) {
                    Ok(TransferDecision::New(record)) => {
                        names.push(request.id.clone());
                        Some(record)
                    }
                    _ => None,
                }
            }
            6 | 7 if !names.is_empty() => {
                let name = &names[random.random_range(0..names.len())];
                if choice == 6 {
                    let amount = book.get(name).map(|stored| {
                        WrittenAmount::from_minor_units(stored.amount.minor_units().unsigned_abs() / 2 + 1, 2)
                    });
                    ledger
                        .post(book.get(name), amount.as_ref().filter(|_| random.random_bool(0.5)), now_ms)
                        .ok()
                        .flatten()
                } else {
                    ledger.void(book.get(name), now_ms).ok().flatten()
                }
            }
            8 => ledger.expire(now_ms).into_iter().next(),
            _ => {
                let key = format!("key-{}", random.random_range(0..5));
                let payload = format!("payload {step}").into_bytes();
                facts.insert(("payments.deposit".to_owned(), key.clone()), payload.clone());
                Some(Record::External { kind: "payments.deposit".to_owned(), key, payload })
            }
        };
        if let Some(record) = record {
            apply(&mut ledger, &mut book, &mut records, record);
        }
    }
    (records, book, facts)
}

fn settings() -> HistorySettings {
    HistorySettings { cache_bytes: 1 << 16, checkpoint_records: 13, checkpoint_interval_ms: 60_000 }
}

/// Ingests `records[from..to]` (0-based indexes, so `records[i]` has seq `i + 1`) in groups.
fn ingest(history: &History, records: &[Record], from: usize, to: usize, random: &mut SmallRng) {
    let mut at = from;
    while at < to {
        let len = random.random_range(1..=9).min(to - at);
        history.ingest(u64::try_from(at).unwrap() + 1, &records[at..at + len]).unwrap();
        at += len;
    }
}

fn check(history: &History, book: &TransferBook, facts: &Facts, upto_seq: u64) {
    for transfer in book.transfers.values().filter(|transfer| transfer.seq <= upto_seq) {
        let mut expected = (**transfer).clone();
        // The book is at the end of the log; the history at `upto_seq`.
        if expected.last_seq > upto_seq {
            expected.status = engine::TransferStatus::Pending;
            expected.posted_amount = Amount::ZERO;
            expected.last_seq = expected.seq;
        }
        let stored = history.transfer(&transfer.id).unwrap().unwrap_or_else(|| panic!("{} is missing", transfer.id));
        assert_eq!(*stored, expected);
    }
    assert_eq!(history.transfer(&id("never-stored")).unwrap(), None);
    for index in 0..ACCOUNTS {
        let account = account_id(index);
        // Account `index` is created at seq `index + 1`.
        if u64::try_from(index).unwrap() >= upto_seq {
            assert_eq!(history.account_transfers(&account, None, 3).unwrap(), None);
            continue;
        }
        let mut expected: Vec<(u64, Id)> = book
            .transfers
            .values()
            .filter(|transfer| transfer.seq <= upto_seq)
            .filter(|transfer| transfer.debit_account == account || transfer.credit_account == account)
            .map(|transfer| (transfer.seq, transfer.id.clone()))
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = history.account_transfers(&account, cursor, 3).unwrap().expect("the account is known");
            assert!(page.transfers.len() <= 3);
            seen.extend(page.transfers.iter().map(|transfer| (transfer.seq, transfer.id.clone())));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "history of {account}");
        // A cursor that is not one of the account's transfers: those created before it.
        let before = upto_seq.min(u64::try_from(book.transfers.len()).unwrap()) / 2 + 1;
        let page = history.account_transfers(&account, Some(before), 3).unwrap().expect("the account is known");
        let expected_before: Vec<(u64, Id)> =
            expected.iter().filter(|(seq, _)| *seq < before).take(3).cloned().collect();
        let found: Vec<(u64, Id)> = page.transfers.iter().map(|transfer| (transfer.seq, transfer.id.clone())).collect();
        assert_eq!(found, expected_before, "history of {account} before {before}");
    }
    assert_eq!(history.account_transfers(&id("nobody"), None, 3).unwrap(), None);
    // Facts as of `upto_seq` are checked at the end only (the reference holds the last).
    if upto_seq == u64::MAX {
        for ((kind, key), payload) in facts {
            assert_eq!(history.fact(kind, key).unwrap().as_deref(), Some(payload.as_slice()), "fact {key}");
        }
        assert_eq!(history.fact("payments.deposit", "missing").unwrap(), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    #[test]
    fn the_history_agrees_with_the_book(seed in any::<u64>(), operations in 50..400_usize) {
        let (records, book, facts) = random_log(seed, operations);
        let dir = tempfile::tempdir().unwrap();
        let mut random = SmallRng::seed_from_u64(seed ^ 0x5eed);
        let (mut history, mut threads) = History::open(dir.path(), settings()).unwrap();
        let mut at = 0;
        while at < records.len() {
            let to = (at + random.random_range(1..80)).min(records.len());
            ingest(&history, &records, at, to, &mut random);
            at = to;
            match random.random_range(0..6) {
                0 => {
                    history.checkpoint().unwrap();
                }
                1 => {
                    // A clean stop and reopen.
                    history.close(threads).unwrap();
                    (history, threads) = History::open(dir.path(), settings()).unwrap();
                    prop_assert_eq!(history.durable_seq(), u64::try_from(at).unwrap());
                }
                2 => {
                    // A crash: what was not checkpointed is ingested again from the log.
                    drop(threads);
                    (history, threads) = History::open(dir.path(), settings()).unwrap();
                    let watermark = usize::try_from(history.durable_seq()).unwrap();
                    prop_assert!(watermark <= at);
                    ingest(&history, &records, watermark, at, &mut random);
                }
                _ => {}
            }
            check(&history, &book, &facts, u64::try_from(at).unwrap());
        }
        check(&history, &book, &facts, u64::MAX);
        let stats = history.stats();
        prop_assert_eq!(stats.transfers, u64::try_from(book.transfers.len()).unwrap());
        history.close(threads).unwrap();
    }
}

#[test]
fn records_past_the_watermark_are_refused_out_of_order_and_overlaps_are_skipped() {
    let (records, book, facts) = random_log(7, 200);
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    history.ingest(1, &records[..10]).unwrap();
    assert!(history.ingest(12, &records[11..12]).is_err(), "a gap is refused");
    // A group that overlaps what was ingested: only its new records count.
    history.ingest(5, &records[4..]).unwrap();
    check(&history, &book, &facts, u64::MAX);
    history.close(threads).unwrap();
}

#[test]
fn a_checkpoint_cut_short_leaves_nothing_behind() {
    let (records, book, facts) = random_log(11, 300);
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    let half = records.len() / 2;
    history.ingest(1, &records[..half]).unwrap();
    let watermark = history.checkpoint().unwrap();
    drop(threads);
    drop(history);
    // What a checkpoint that stopped half-way leaves: bytes past the manifest, a new run file.
    let history_dir = dir.path().join("history");
    for name in ["transfers.dat", "strings.dat", "facts.dat", "accounts.dat", "pages.idx"] {
        let mut file = std::fs::OpenOptions::new().append(true).open(history_dir.join(name)).unwrap();
        std::io::Write::write_all(&mut file, &[0xab; 300]).unwrap();
    }
    std::fs::write(history_dir.join("run-999.idx"), b"partial").unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    assert_eq!(history.durable_seq(), watermark);
    assert!(!history_dir.join("run-999.idx").exists());
    ingest(&history, &records, usize::try_from(watermark).unwrap(), records.len(), &mut SmallRng::seed_from_u64(1));
    check(&history, &book, &facts, u64::MAX);
    history.close(threads).unwrap();
}

#[test]
fn damage_is_found_and_named_never_answered_wrongly() {
    let (records, book, _) = random_log(13, 300);
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    history.ingest(1, &records).unwrap();
    history.close(threads).unwrap();
    let history_dir = dir.path().join("history");
    let transfers = std::fs::read(history_dir.join("transfers.dat")).unwrap();
    // A flipped byte in one record: reading that transfer is an error naming the file.
    let mut damaged = transfers.clone();
    damaged[128 * 3 + 30] ^= 0x20;
    std::fs::write(history_dir.join("transfers.dat"), &damaged).unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    let mut errors = 0;
    for transfer in book.transfers.values() {
        match history.transfer(&transfer.id) {
            Ok(Some(stored)) => assert_eq!(stored, *transfer),
            Ok(None) => panic!("{} is missing", transfer.id),
            Err(error) => {
                assert!(error.is_damage() && error.to_string().contains("transfers.dat"), "{error}");
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 1, "exactly the damaged record is refused");
    drop(threads);
    std::fs::write(history_dir.join("transfers.dat"), &transfers).unwrap();
    // A damaged manifest or heads file: the history does not open.
    for name in ["MANIFEST", "accounts.dat"] {
        let clean = std::fs::read(history_dir.join(name)).unwrap();
        let mut damaged = clean.clone();
        let at = damaged.len() - 2;
        damaged[at] ^= 0x01;
        std::fs::write(history_dir.join(name), &damaged).unwrap();
        let error = History::open(dir.path(), settings()).err().expect("refused");
        assert!(error.is_damage(), "{name}: {error}");
        std::fs::write(history_dir.join(name), &clean).unwrap();
    }
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    assert!(history.transfer(&book.transfers.values().next().unwrap().id).unwrap().is_some());
    history.close(threads).unwrap();
}

#[test]
fn exports_hold_the_history_as_it_was_at_any_sequence() {
    let (records, book, _) = random_log(17, 400);
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    history.ingest(1, &records).unwrap();
    history.checkpoint().unwrap();
    let last = u64::try_from(records.len()).unwrap();
    for up_to in [1, 6, 7, last / 3, last / 2, last - 1, last] {
        let target = tempfile::tempdir().unwrap();
        history.export_to(target.path(), up_to, settings(), |_, _| {}).unwrap();
        let (exported, exported_threads) = History::open(target.path(), settings()).unwrap();
        assert_eq!(exported.durable_seq(), up_to);
        check(&exported, &book, &Facts::new(), up_to);
        // The export continues the log where it stopped.
        let from = usize::try_from(up_to).unwrap();
        exported.ingest(up_to + 1, &records[from..]).unwrap();
        check(&exported, &book, &Facts::new(), last);
        exported.close(exported_threads).unwrap();
    }
    history.close(threads).unwrap();
}

#[test]
fn a_backup_taken_while_ingesting_recovers_to_the_same_history() {
    let (records, book, facts) = random_log(19, 400);
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    let half = records.len() / 2;
    history.ingest(1, &records[..half]).unwrap();
    let target = tempfile::tempdir().unwrap();
    let watermark = std::thread::scope(|scope| {
        let ingesting = scope.spawn(|| history.ingest(u64::try_from(half).unwrap() + 1, &records[half..]).unwrap());
        let watermark = history.backup_to(&target.path().join("history")).unwrap();
        ingesting.join().unwrap();
        watermark
    });
    history.close(threads).unwrap();
    let (copy, copy_threads) = History::open(target.path(), settings()).unwrap();
    assert_eq!(copy.durable_seq(), watermark);
    // Recovery from the copy: the log after its watermark, again.
    let from = usize::try_from(watermark).unwrap();
    ingest(&copy, &records, from, records.len(), &mut SmallRng::seed_from_u64(3));
    check(&copy, &book, &facts, u64::MAX);
    copy.close(copy_threads).unwrap();
}

#[test]
fn verify_passes_a_sound_history_and_names_damage() {
    let (records, _, _) = random_log(23, 300);
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    history.ingest(1, &records).unwrap();
    history.checkpoint().unwrap();
    let report = history.verify(|_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.transfers > 0 && report.facts > 0);
    history.close(threads).unwrap();
    let path = dir.path().join("history").join("strings.dat");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    let report = history.verify(|_, _| {}).unwrap();
    assert!(report.problems.iter().any(|problem| problem.contains("strings.dat")), "{:?}", report.problems);
    drop(threads);
}

/// A history seeded from a ledger alone (a restore from a snapshot file) holds its accounts and
/// open holds, says from where it is complete, and takes the log after the seed.
#[test]
fn a_seeded_history_holds_the_open_holds_and_continues_the_log() {
    let (records, book, _) = random_log(7, 400);
    let mut ledger = Ledger::default();
    for (index, record) in records.iter().enumerate() {
        ledger.apply(index as u64 + 1, record).unwrap();
    }
    assert!(!ledger.open_holds.is_empty(), "the sample has open holds");
    let dir = tempfile::tempdir().unwrap();
    let settings = HistorySettings { cache_bytes: 1 << 16, checkpoint_records: 16, checkpoint_interval_ms: 60_000 };
    History::seed(dir.path(), &ledger, settings).unwrap();

    let (history, threads) = History::open(dir.path(), settings).unwrap();
    assert_eq!(history.complete_from_seq(), ledger.last_seq);
    assert_eq!(history.durable_seq(), ledger.last_seq);
    for transfer in book.transfers.values() {
        let found = history.transfer(&transfer.id).unwrap();
        if ledger.open_holds.contains_key(&transfer.id) {
            assert_eq!(found.as_deref(), Some(&**transfer), "open hold {}", transfer.id);
        } else {
            assert_eq!(found, None, "settled transfer {} is not in a seeded history", transfer.id);
        }
    }
    let (hold_id, hold) = ledger.open_holds.iter().next().map(|(id, hold)| (id.clone(), hold.clone())).unwrap();
    let page = history.account_transfers(&hold.debit_account, None, 1000).unwrap().expect("the account exists");
    assert!(page.transfers.iter().any(|transfer| transfer.id == hold_id));
    assert!(page.transfers.iter().all(|transfer| ledger.open_holds.contains_key(&transfer.id)));

    // The log after the seed: post the hold.
    let post = Record::PostPending {
        transfer: hold_id.clone(),
        debit_account: hold.debit_account.clone(),
        credit_account: hold.credit_account.clone(),
        pending_amount: hold.amount,
        posted_amount: hold.amount,
    };
    history.ingest(ledger.last_seq + 1, std::slice::from_ref(&post)).unwrap();
    let posted = history.transfer(&hold_id).unwrap().unwrap();
    assert_eq!(posted.status, engine::TransferStatus::Posted);
    assert_eq!(posted.last_seq, ledger.last_seq + 1);
    history.close(threads).unwrap();
    let reopened = History::open_read_only(dir.path()).unwrap();
    assert_eq!(reopened.complete_from_seq(), ledger.last_seq);
    assert_eq!(reopened.transfer(&hold_id).unwrap().unwrap().status, engine::TransferStatus::Posted);
    assert!(reopened.verify(|_, _| {}).unwrap().problems.is_empty());

    // Seeding is for an empty history only.
    assert!(History::seed(dir.path(), &ledger, settings).is_err());
}

/// Damage to any index run: a history page, a transfer or a fact is an error naming the run
/// (or, for a run not needed, the right answer), never a wrong answer; verify names the run.
#[test]
fn damage_to_an_index_run_is_found_never_answered_wrongly() {
    let (records, book, facts) = random_log(29, 300);
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = History::open(dir.path(), settings()).unwrap();
    history.ingest(1, &records).unwrap();
    history.close(threads).unwrap();
    let history_dir = dir.path().join("history");
    let mut runs: Vec<std::path::PathBuf> = std::fs::read_dir(&history_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_str().unwrap().starts_with("run-"))
        .collect();
    runs.sort();
    assert!(runs.len() >= 3, "an id, a fact and an account index: {runs:?}");
    let mut pages_refused = 0;
    for run in &runs {
        let clean = std::fs::read(run).unwrap();
        let mut damaged = clean.clone();
        damaged[40] ^= 0x10;
        std::fs::write(run, &damaged).unwrap();
        let (history, threads) = History::open(dir.path(), settings()).unwrap();
        for index in 0..ACCOUNTS {
            let account = account_id(index);
            let mut expected: Vec<Id> = book
                .transfers
                .values()
                .filter(|transfer| transfer.debit_account == account || transfer.credit_account == account)
                .map(|transfer| (transfer.seq, transfer.id.clone()))
                .collect::<BTreeMap<u64, Id>>()
                .into_values()
                .rev()
                .collect();
            expected.truncate(1_000);
            match history.account_transfers(&account, None, 1_000) {
                Ok(page) => {
                    let found: Vec<Id> = page.unwrap().transfers.iter().map(|transfer| transfer.id.clone()).collect();
                    assert_eq!(found, expected, "history of {account} with {run:?} damaged");
                }
                Err(error) => {
                    assert!(error.is_damage() && error.to_string().contains("run-"), "{error}");
                    pages_refused += 1;
                }
            }
        }
        for transfer in book.transfers.values() {
            match history.transfer(&transfer.id) {
                Ok(found) => assert_eq!(found.as_deref(), Some(&**transfer)),
                Err(error) => assert!(error.is_damage() && error.to_string().contains("run-"), "{error}"),
            }
        }
        for ((kind, key), payload) in &facts {
            match history.fact(kind, key) {
                Ok(found) => assert_eq!(found.as_deref(), Some(payload.as_slice())),
                Err(error) => assert!(error.is_damage() && error.to_string().contains("run-"), "{error}"),
            }
        }
        let report = history.verify(|_, _| {}).unwrap();
        let name = run.file_name().unwrap().to_str().unwrap();
        assert!(report.problems.iter().any(|problem| problem.contains(name)), "{name}: {:?}", report.problems);
        drop(threads);
        std::fs::write(run, &clean).unwrap();
    }
    assert!(pages_refused > 0, "a damaged account index refuses a page");
}
