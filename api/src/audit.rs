//! `ledgerd verify`'s audit of a data directory: every snapshot, the whole log and the
//! history on disk, checked against each other and against every invariant of the contract
//! (API.md §7).
//!
//! This module owns [`audit_data_dir`] and what it reports ([`Audit`]). The checks:
//!
//! - every snapshot file passes its own checks (header and body checksums, lengths, decoding,
//!   invariants: [`snapshots::read_snapshot`]);
//! - the log is readable from its first group to its last: every group's checksum, key and
//!   contiguity ([`snapshots::Wal::groups_from`]), and every record applies;
//! - replaying the log from empty (or, when retention dropped its beginning, from the oldest
//!   snapshot it still covers) gives exactly the accounts and open holds stored in each later
//!   snapshot;
//! - the final state holds every invariant ([`engine::Ledger::check_invariants`]: balances sum
//!   to zero per currency, no account below its overdraft limit, pending totals equal the
//!   open holds);
//! - the log reaches the durable high-water mark recorded while serving
//!   ([`snapshots::log_watermark`]): no acknowledged record went missing from its end;
//! - the history passes its own checks ([`history::History::verify`]: manifest, files, record
//!   checksums, every index entry and account chain), reaches no further than the log, and
//!   the log continues it;
//! - the history with the log after its watermark names only existing accounts, its pending
//!   transfers are exactly the open holds, and every account's posted totals equal the sums
//!   of the transfers that posted to it (unless the history was seeded from a snapshot alone,
//!   which holds no settled transfers).
//!
//! The audit only reads: the history is opened read-only, and nothing is written. A problem
//! never stops it early when more can be checked: all are collected, so one run names
//! everything that is wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use engine::amount::ExactSum;
use engine::{Amount, Currency, Id, Ledger, Record, Transfer, TransferStatus};
use history::History;
use snapshots::{RecoveryProgress, SnapshotInfo, Wal};

/// Stored transfers by status, in the order posted, pending, voided, expired.
pub type TransferCounts = [(TransferStatus, u64); 4];

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
    /// The history's watermark, when there is a history.
    pub history_seq: Option<u64>,
    /// The stored transfers (history and the log after it), when they could all be read.
    pub transfers: Option<TransferCounts>,
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

/// How far an audit got, for progress lines.
#[derive(Debug, Clone, Copy)]
pub enum AuditProgress {
    /// Replaying the log (`replayed_records` counts across the whole audit).
    Replay(RecoveryProgress),
    /// Reading the history: `(what, done, of)`.
    History { what: &'static str, done: u64, of: u64 },
}

/// Audits `data_dir` through its open log (the caller holds the data dir's lock).
pub fn audit_data_dir(data_dir: &Path, wal: &Wal, mut progress: impl FnMut(AuditProgress)) -> Audit {
    let mut audit = Audit { log_range: wal.first_seq().map(|first| (first, wal.last_seq())), ..Audit::default() };
    let Some(ledger) = audit_snapshots_and_log(data_dir, wal, &mut audit, &mut progress) else {
        return audit;
    };
    if let Err(violation) = ledger.check_invariants() {
        audit.problems.push(format!("at seq {}: {violation}", ledger.last_seq));
    }
    if let Err(error) = snapshots::log_watermark::check(data_dir, ledger.last_seq) {
        audit.problems.push(error.to_string());
    }
    audit_history(data_dir, wal, &ledger, &mut audit, &mut progress);
    audit.ledger = Some(ledger);
    audit
}

/// Steps 1 to 3: every snapshot, then the log replayed segment by segment and compared with
/// each later snapshot; the state at the log's end.
fn audit_snapshots_and_log(
    data_dir: &Path,
    wal: &Wal,
    audit: &mut Audit,
    progress: &mut impl FnMut(AuditProgress),
) -> Option<Ledger> {
    // 1. Every snapshot on its own.
    let files = match snapshots::snapshot_files(data_dir) {
        Ok(files) => files,
        Err(error) => {
            audit.problems.push(error.to_string());
            return None;
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
                return None;
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
            progress(AuditProgress::Replay(RecoveryProgress {
                replayed_records: replayed_before + report.replayed_records,
                ..report
            }));
        });
        let replayed = match segment {
            Ok(segment) => segment,
            Err(error) => {
                audit.problems.push(format!("replaying the log to {} (seq {}): {error}", info.id, info.seq));
                return None;
            }
        };
        replayed_before += replayed.replayed_records;
        match snapshots::read_snapshot(path) {
            Ok((_, stored)) => match first_difference(&replayed.ledger, &stored) {
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
        progress(AuditProgress::Replay(RecoveryProgress {
            replayed_records: replayed_before + report.replayed_records,
            ..report
        }));
    });
    match final_state {
        Ok(replayed) => Some(replayed.ledger),
        Err(error) => {
            audit.problems.push(format!("replaying the log to its end: {error}"));
            None
        }
    }
}

/// What the stored transfers add up to: the history's, then the log's records after it.
#[derive(Default)]
struct TransferTotals {
    /// Per account: the sums of what posted transfers debited and credited.
    posted: HashMap<Id, (ExactSum, ExactSum)>,
    /// The pending transfers.
    pending: HashSet<Id>,
    counts: [u64; 4],
    /// Transfers naming an account the ledger does not have (the first few).
    unknown_accounts: Vec<String>,
}

const STATUSES: [TransferStatus; 4] =
    [TransferStatus::Posted, TransferStatus::Pending, TransferStatus::Voided, TransferStatus::Expired];

/// Unknown accounts named at most, per audit.
const UNKNOWN_ACCOUNTS_NAMED_MAX: usize = 5;

impl TransferTotals {
    fn count(&mut self, status: TransferStatus, change: i8) {
        let index = STATUSES.iter().position(|candidate| *candidate == status).expect("every status is listed");
        self.counts[index] = self.counts[index].wrapping_add_signed(i64::from(change));
    }

    fn post(&mut self, debit: &Id, credit: &Id, amount: Amount) {
        self.posted.entry(debit.clone()).or_default().0.add(amount);
        self.posted.entry(credit.clone()).or_default().1.add(amount);
    }

    fn check_accounts(&mut self, ledger: &Ledger, transfer: &Id, accounts: [&Id; 2]) {
        for account in accounts {
            if !ledger.accounts.contains_key(account) && self.unknown_accounts.len() < UNKNOWN_ACCOUNTS_NAMED_MAX {
                self.unknown_accounts
                    .push(format!("transfer {transfer} names account {account}, which does not exist"));
            }
        }
    }

    /// A transfer as the history stores it.
    fn add_stored(&mut self, ledger: &Ledger, transfer: &Transfer) {
        self.check_accounts(ledger, &transfer.id, [&transfer.debit_account, &transfer.credit_account]);
        self.count(transfer.status, 1);
        match transfer.status {
            TransferStatus::Posted => {
                self.post(&transfer.debit_account, &transfer.credit_account, transfer.posted_amount)
            }
            TransferStatus::Pending => {
                self.pending.insert(transfer.id.clone());
            }
            TransferStatus::Voided | TransferStatus::Expired => {}
        }
    }

    /// A log record after the history's watermark.
    fn add_record(&mut self, ledger: &Ledger, record: &Record) {
        match record {
            Record::CreateTransfer { id, debit_account, credit_account, amount, pending, .. } => {
                self.check_accounts(ledger, id, [debit_account, credit_account]);
                if *pending {
                    self.count(TransferStatus::Pending, 1);
                    self.pending.insert(id.clone());
                } else {
                    self.count(TransferStatus::Posted, 1);
                    self.post(debit_account, credit_account, *amount);
                }
            }
            Record::PostPending { transfer, debit_account, credit_account, posted_amount, .. } => {
                self.resolve(transfer, TransferStatus::Posted);
                self.post(debit_account, credit_account, *posted_amount);
            }
            Record::VoidPending { transfer, .. } => self.resolve(transfer, TransferStatus::Voided),
            Record::ExpirePending { transfer, .. } => self.resolve(transfer, TransferStatus::Expired),
            Record::CreateAccount { .. } | Record::SetFrozen { .. } | Record::External { .. } => {}
        }
    }

    fn resolve(&mut self, transfer: &Id, status: TransferStatus) {
        self.pending.remove(transfer);
        self.count(TransferStatus::Pending, -1);
        self.count(status, 1);
    }

    fn counts(&self) -> TransferCounts {
        std::array::from_fn(|index| (STATUSES[index], self.counts[index]))
    }
}

/// Steps 4 and 5: the history on its own, then with the log after it against the ledger.
fn audit_history(
    data_dir: &Path,
    wal: &Wal,
    ledger: &Ledger,
    audit: &mut Audit,
    progress: &mut impl FnMut(AuditProgress),
) {
    let mut totals = TransferTotals::default();
    let mut complete_from_seq = 0;
    let history_seq = if History::exists(data_dir) {
        let history = match History::open_read_only(data_dir) {
            Ok(history) => history,
            Err(error) => {
                audit.problems.push(format!("history: {error}"));
                return;
            }
        };
        let history_seq = history.durable_seq();
        audit.history_seq = Some(history_seq);
        complete_from_seq = history.complete_from_seq();
        match history.verify(|done, of| progress(AuditProgress::History { what: "history check", done, of })) {
            Ok(report) => audit.problems.extend(report.problems.iter().map(|problem| format!("history: {problem}"))),
            Err(error) => {
                audit.problems.push(format!("history: {error}"));
                return;
            }
        }
        if history_seq > ledger.last_seq {
            audit.problems.push(format!(
                "the history reaches seq {history_seq}, beyond the log's end at seq {}: the log lost acknowledged \
                 records",
                ledger.last_seq
            ));
            return;
        }
        if let Some(first) = wal.first_seq()
            && first > history_seq + 1
        {
            audit.problems.push(format!(
                "the log starts at seq {first} but the history reaches only seq {history_seq}: the records between \
                 are in neither"
            ));
            return;
        }
        if complete_from_seq > 0 {
            audit.notes.push(format!(
                "the history was seeded at seq {complete_from_seq} from a snapshot alone: transfers settled before \
                 it are not stored, so posted totals are not compared with transfers"
            ));
        }
        let mut read = 0;
        let all = history.stats().transfers;
        let visited = history.for_each_transfer(|transfer| {
            totals.add_stored(ledger, transfer);
            read += 1;
            if read % 65_536 == 0 {
                progress(AuditProgress::History { what: "history totals", done: read, of: all });
            }
            Ok(())
        });
        if let Err(error) = visited {
            audit.problems.push(format!("history: {error}"));
            return;
        }
        history_seq
    } else {
        match wal.first_seq() {
            Some(1) => audit.notes.push("no history yet: serve derives it from the log".to_owned()),
            None if ledger.last_seq == 0 => {}
            _ => {
                audit.problems.push(format!(
                    "there is no history ({}/) and the log does not start at seq 1: the stored transfers are lost",
                    history::HISTORY_DIR_NAME
                ));
                return;
            }
        }
        0
    };
    // The log after the history's watermark.
    if history_seq < ledger.last_seq {
        for group in wal.groups_from(history_seq + 1) {
            let group = match group {
                Ok(group) => group,
                Err(error) => {
                    audit.problems.push(error.to_string());
                    return;
                }
            };
            for (seq, record) in (group.first_seq..).zip(&group.records) {
                if seq > history_seq && seq <= ledger.last_seq {
                    totals.add_record(ledger, record);
                }
            }
        }
    }
    audit.problems.extend(totals.unknown_accounts.iter().cloned());
    audit.problems.extend(open_hold_problems(ledger, &totals.pending));
    if complete_from_seq == 0 {
        audit.problems.extend(posted_totals_problems(ledger, &totals.posted));
    }
    audit.transfers = Some(totals.counts());
}

/// Differences between the ledger's open holds and the stored pending transfers.
fn open_hold_problems(ledger: &Ledger, pending: &HashSet<Id>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut missing: Vec<&Id> = ledger.open_holds.keys().filter(|id| !pending.contains(*id)).collect();
    missing.sort();
    if let Some(first) = missing.first() {
        problems.push(format!("{} open hold(s) are not pending in the history, first {first}", missing.len()));
    }
    let mut extra: Vec<&Id> = pending.iter().filter(|id| !ledger.open_holds.contains_key(*id)).collect();
    extra.sort();
    if let Some(first) = extra.first() {
        problems.push(format!("{} transfer(s) pending in the history are no open hold, first {first}", extra.len()));
    }
    problems
}

/// Accounts whose posted totals differ from the sums of the posted transfers naming them.
fn posted_totals_problems(ledger: &Ledger, posted: &HashMap<Id, (ExactSum, ExactSum)>) -> Vec<String> {
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
    if left.open_holds.len() != right.open_holds.len() {
        return Some(format!("{} open holds vs {}", left.open_holds.len(), right.open_holds.len()));
    }
    let mut ids: Vec<&Id> = left.accounts.keys().collect();
    ids.sort();
    for id in ids {
        if left.accounts.get(id) != right.accounts.get(id) {
            return Some(format!("account {id} differs"));
        }
    }
    let mut ids: Vec<&Id> = left.open_holds.keys().collect();
    ids.sort();
    for id in ids {
        if left.open_holds.get(id) != right.open_holds.get(id) {
            return Some(format!("open hold {id} differs"));
        }
    }
    Some("the ledgers differ".to_owned())
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
