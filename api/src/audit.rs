//! `ledgerd verify`'s audit of a data directory: every snapshot and the whole log, checked
//! against each other and against every invariant of the contract (API.md §7).
//!
//! This module owns [`audit_data_dir`] and what it reports ([`Audit`]). The checks:
//!
//! - every snapshot file passes its own checks (header and body checksums, lengths, decoding,
//!   invariants: [`snapshots::read_snapshot`]);
//! - the log is readable from its first group to its last: every group's checksum, key and
//!   contiguity ([`snapshots::Wal::groups_from`]), and every record applies;
//! - replaying the log from empty (or, when retention dropped its beginning, from the oldest
//!   snapshot it still covers) gives exactly the state stored in each later snapshot;
//! - the final state holds every invariant ([`engine::Ledger::check_invariants`]: balances sum
//!   to zero per currency, no account below its overdraft limit, pending totals equal the
//!   open holds, no transfer names a missing account), and every account's posted totals
//!   equal the sums of the stored transfers that posted to it;
//! - the log reaches the durable high-water mark recorded while serving
//!   ([`crate::log_watermark`]): no acknowledged record went missing from its end.
//!
//! A problem never stops the audit early when more can be checked: all are collected, so one
//! run names everything that is wrong.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use engine::amount::ExactSum;
use engine::{Amount, Currency, Id, Ledger, TransferStatus};
use snapshots::{RecoveryProgress, SnapshotInfo, Wal};

/// What one audit found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Snapshots that passed their own checks.
    pub sound_snapshots: Vec<SnapshotInfo>,
    /// Snapshots compared with the log replayed to their sequence (and found equal).
    pub cross_checked_snapshots: usize,
    /// `(first, last)` sequence of the log, `None` when it is empty.
    pub log_range: Option<(u64, u64)>,
    /// The state at the end of the log, when it could be rebuilt.
    pub ledger: Option<Ledger>,
    /// Everything found wrong, one line each. Empty = sound.
    pub problems: Vec<String>,
    /// Things worth knowing that are not wrong (e.g. snapshots older than the log).
    pub notes: Vec<String>,
}

impl Audit {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty() && self.ledger.is_some()
    }
}

/// Audits `data_dir` through its open log; `progress` sees the replay advance (its
/// `replayed_records` counts across the whole audit).
pub fn audit_data_dir(data_dir: &Path, wal: &Wal, mut progress: impl FnMut(RecoveryProgress)) -> Audit {
    let mut audit = Audit { log_range: wal.first_seq().map(|first| (first, wal.last_seq())), ..Audit::default() };

    // 1. Every snapshot on its own.
    let files = match snapshots::snapshot_files(data_dir) {
        Ok(files) => files,
        Err(error) => {
            audit.problems.push(error.to_string());
            return audit;
        }
    };
    let mut sound: Vec<(SnapshotInfo, PathBuf)> = Vec::new();
    for (_, path) in &files {
        match snapshots::read_snapshot(path) {
            Ok((info, ledger)) => {
                drop(ledger);
                sound.push((info.clone(), path.clone()));
                audit.sound_snapshots.push(info);
            }
            Err(error) => audit.problems.push(error.to_string()),
        }
    }

    // 2. Where the replay can start: empty when the log begins at seq 1 (or there is no log
    //    and no snapshot), else the oldest sound snapshot the log continues.
    let log_first = wal.first_seq();
    let start_index = match log_first {
        Some(1) => None,
        None if sound.is_empty() => None,
        None => Some(sound.len() - 1),
        Some(first) => match sound.iter().position(|(info, _)| info.seq + 1 >= first) {
            Some(index) => Some(index),
            None => {
                audit.problems.push(format!(
                    "the log starts at seq {first} and no sound snapshot reaches seq {}: the records before it are \
                     lost",
                    first - 1
                ));
                return audit;
            }
        },
    };
    if let Some(index) = start_index {
        let (base, _) = &sound[index];
        if index > 0 || log_first.is_none() {
            audit.notes.push(format!(
                "{} older snapshot(s) not compared with the log: {}",
                index,
                match log_first {
                    Some(first) => format!("the log starts at seq {first} (log retention)"),
                    None => "the log is empty".to_owned(),
                }
            ));
        }
        audit.notes.push(format!("replay starts from {} (seq {})", base.id, base.seq));
    }

    // 3. Replay, segment by segment, comparing each later snapshot with the replayed state.
    let mut replayed_before = 0;
    let mut current: Option<&Path> = start_index.map(|index| sound[index].1.as_path());
    let mut current_seq = start_index.map_or(0, |index| sound[index].0.seq);
    let later = start_index.map_or(0, |index| index + 1);
    for (info, path) in &sound[later..] {
        if info.seq == current_seq {
            continue;
        }
        let segment = snapshots::replay_to(current, Some(wal), Some(info.seq), |report| {
            progress(RecoveryProgress { replayed_records: replayed_before + report.replayed_records, ..report });
        });
        let (replayed, records) = match segment {
            Ok(segment) => segment,
            Err(error) => {
                audit.problems.push(format!("replaying the log to {} (seq {}): {error}", info.id, info.seq));
                return audit;
            }
        };
        replayed_before += records;
        match snapshots::read_snapshot(path) {
            Ok((_, stored)) => match first_difference(&replayed, &stored) {
                None => audit.cross_checked_snapshots += 1,
                Some(difference) => audit.problems.push(format!(
                    "snapshot {} differs from the log replayed to seq {}: {difference}",
                    info.id, info.seq
                )),
            },
            Err(error) => audit.problems.push(error.to_string()),
        }
        current = Some(path.as_path());
        current_seq = info.seq;
    }
    let final_state = snapshots::replay_to(current, Some(wal), None, |report| {
        progress(RecoveryProgress { replayed_records: replayed_before + report.replayed_records, ..report });
    });
    let ledger = match final_state {
        Ok((ledger, _)) => ledger,
        Err(error) => {
            audit.problems.push(format!("replaying the log to its end: {error}"));
            return audit;
        }
    };

    // 4. The final state: the invariants, and the posted totals against the transfers.
    if let Err(violation) = ledger.check_invariants() {
        audit.problems.push(format!("at seq {}: {violation}", ledger.last_seq));
    }
    audit.problems.extend(posted_totals_problems(&ledger));
    if let Err(error) = crate::log_watermark::check(data_dir, ledger.last_seq) {
        audit.problems.push(error.to_string());
    }
    audit.ledger = Some(ledger);
    audit
}

/// Accounts whose posted totals differ from the sums of the posted transfers naming them.
pub fn posted_totals_problems(ledger: &Ledger) -> Vec<String> {
    let mut posted: HashMap<&Id, (ExactSum, ExactSum)> = HashMap::new();
    for transfer in ledger.transfers.values() {
        if transfer.status == TransferStatus::Posted {
            posted.entry(&transfer.debit_account).or_default().0.add(transfer.posted_amount);
            posted.entry(&transfer.credit_account).or_default().1.add(transfer.posted_amount);
        }
    }
    let mut problems = Vec::new();
    let mut accounts: Vec<_> = ledger.accounts.values().collect();
    accounts.sort_by(|a, b| a.id.cmp(&b.id));
    for account in accounts {
        let (debits, credits) = posted.get(&account.id).copied().unwrap_or_default();
        let agrees = debits.value() == Some(account.debits_posted.minor_units())
            && credits.value() == Some(account.credits_posted.minor_units());
        if !agrees {
            let currency = &account.currency;
            problems.push(format!(
                "account {}: debits_posted {} and credits_posted {}, but its posted transfers sum to {debits} and \
                 {credits} minor units",
                account.id,
                currency.format(account.debits_posted),
                currency.format(account.credits_posted),
            ));
        }
    }
    problems
}

/// The first difference between two ledgers, for humans; `None` when they are equal.
pub fn first_difference(left: &Ledger, right: &Ledger) -> Option<String> {
    if left == right {
        return None;
    }
    if left.last_seq != right.last_seq {
        return Some(format!("last_seq {} vs {}", left.last_seq, right.last_seq));
    }
    if left.accounts.len() != right.accounts.len() {
        return Some(format!("{} accounts vs {}", left.accounts.len(), right.accounts.len()));
    }
    if left.transfers.len() != right.transfers.len() {
        return Some(format!("{} transfers vs {}", left.transfers.len(), right.transfers.len()));
    }
    let mut ids: Vec<&Id> = left.accounts.keys().collect();
    ids.sort();
    for id in ids {
        if left.accounts.get(id) != right.accounts.get(id) {
            return Some(format!("account {id} differs"));
        }
    }
    let mut ids: Vec<&Id> = left.transfers.keys().collect();
    ids.sort();
    for id in ids {
        if left.transfers.get(id) != right.transfers.get(id) {
            return Some(format!("transfer {id} differs"));
        }
    }
    Some("the webhook and deposit bookkeeping differs".to_owned())
}

/// One currency's totals over every account.
#[derive(Debug, Clone)]
pub struct CurrencyTotals {
    pub currency: Currency,
    pub balances: ExactSum,
    pub positive_balances: ExactSum,
    pub accounts: u64,
}

impl CurrencyTotals {
    /// `sum` printed in the currency's units (or in minor units when it passes `i128`).
    pub fn format(&self, sum: ExactSum) -> String {
        match sum.value() {
            Some(units) => self.currency.format(Amount::from_minor_units(units)),
            None => format!("{sum} minor units"),
        }
    }
}

/// Per currency code: the sums of balances and of positive balances, and the accounts.
pub fn currency_totals(ledger: &Ledger) -> BTreeMap<String, CurrencyTotals> {
    let mut totals: BTreeMap<String, CurrencyTotals> = BTreeMap::new();
    for account in ledger.accounts.values() {
        let entry = totals.entry(account.currency.code.to_string()).or_insert_with(|| CurrencyTotals {
            currency: account.currency.clone(),
            balances: ExactSum::default(),
            positive_balances: ExactSum::default(),
            accounts: 0,
        });
        let balance = account.balance();
        entry.balances.add(balance);
        if balance.is_positive() {
            entry.positive_balances.add(balance);
        }
        entry.accounts += 1;
    }
    totals
}

/// Transfers by status, in the order posted, pending, voided, expired.
pub fn transfer_counts(ledger: &Ledger) -> [(TransferStatus, u64); 4] {
    let mut counts = [
        (TransferStatus::Posted, 0),
        (TransferStatus::Pending, 0),
        (TransferStatus::Voided, 0),
        (TransferStatus::Expired, 0),
    ];
    for transfer in ledger.transfers.values() {
        if let Some(entry) = counts.iter_mut().find(|(status, _)| *status == transfer.status) {
            entry.1 += 1;
        }
    }
    counts
}
