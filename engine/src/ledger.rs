//! The one `apply`, and the whole-ledger state it folds the log into.
//!
//! A record touches up to three owners: the debit account, the credit account and the
//! transfer. [`apply_to_account`] and [`apply_to_transfers`] apply one owner's part; live, each
//! part runs in the actor that owns it, and in replay [`Ledger::apply`] runs all of them on one
//! state. Both paths call the same functions, so recovery cannot drift from the live path.
//! [`Ledger`] also offers the reference operations used by tests and offline tools, built on
//! the same rules as the live conversation, and [`Ledger::check_invariants`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::account::{Account, Overdraft};
use crate::amount::{Amount, ExactSum, WrittenAmount};
use crate::id::{Id, IdMap};
use crate::record::Record;
use crate::rejection::Rejection;
use crate::rules::{self, PostOutcome};
use crate::transfer::{Transfer, TransferRequest, TransferStatus};

/// Which side of a record an account is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Debit,
    Credit,
}

/// A record that cannot be applied: in replay this means a corrupt or foreign log; live it is
/// a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("record {seq}: sequence out of order (last applied {last})")]
    OutOfOrder { seq: u64, last: u64 },
    #[error("record {seq}: account {account} does not exist")]
    MissingAccount { seq: u64, account: Id },
    #[error("record {seq}: account {account} exists already")]
    DuplicateAccount { seq: u64, account: Id },
    #[error("record {seq}: transfer {transfer} does not exist")]
    MissingTransfer { seq: u64, transfer: Id },
    #[error("record {seq}: transfer {transfer} exists already")]
    DuplicateTransfer { seq: u64, transfer: Id },
    #[error("record {seq}: transfer {transfer} is not pending")]
    NotPending { seq: u64, transfer: Id },
    #[error("record {seq}: a total of account {account} leaves its bound")]
    Overflow { seq: u64, account: Id },
    #[error("record {seq}: moves money from account {account} to itself")]
    SameAccount { seq: u64, account: Id },
    #[error("record {seq}: account {account} goes below its overdraft limit")]
    Overdrawn { seq: u64, account: Id },
    #[error("record {seq}: account {account} is in {found}, the record in {expected}")]
    CurrencyMismatch { seq: u64, account: Id, found: String, expected: String },
}

/// What a record does to one account: its totals and flag afterwards. Computed by
/// [`account_change`] without touching the account, written by [`AccountChange::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountChange {
    debits_posted: Amount,
    credits_posted: Amount,
    pending_debits: Amount,
    pending_credits: Amount,
    frozen: bool,
    /// What the record moves on each total, derived from the record alone ([`record_deltas`]):
    /// [`AccountChange::commit`] checks that the totals computed above moved by exactly this.
    deltas: [i128; 4],
}

impl AccountChange {
    /// Writes the change into `account` and counts it as the change at `seq`. Asserts (in
    /// release too) that the totals moved by exactly what the record says, that they stay
    /// within their bound and sign, and that the version counts one change.
    pub fn commit(self, account: &mut Account, seq: u64) {
        let before = totals_of(account);
        let after = [self.debits_posted, self.credits_posted, self.pending_debits, self.pending_credits];
        for ((before, after), delta) in before.iter().zip(after).zip(self.deltas) {
            assert_eq!(
                after.minor_units() - before.minor_units(),
                delta,
                "account {}: a change at seq {seq} moves a total by other than its record says",
                account.id
            );
        }
        let version = account.version;
        account.debits_posted = self.debits_posted;
        account.credits_posted = self.credits_posted;
        account.pending_debits = self.pending_debits;
        account.pending_credits = self.pending_credits;
        account.frozen = self.frozen;
        account.touch(seq);
        assert_eq!(account.version, version + 1, "account {}: one change counts one version", account.id);
        assert_sound(account);
    }
}

fn totals_of(account: &Account) -> [Amount; 4] {
    [account.debits_posted, account.credits_posted, account.pending_debits, account.pending_credits]
}

/// Asserts what holds of every account after every change: each total non-negative and within
/// the currency's bound, the balance within the bound, and (unless unlimited) the account
/// within its overdraft limit.
pub fn assert_sound(account: &Account) {
    let bound = account.currency.total_max();
    for total in totals_of(account) {
        assert!(
            !total.is_negative() && total <= bound,
            "account {}: a total of {} minor units leaves [0, {}]",
            account.id,
            total.minor_units(),
            bound.minor_units()
        );
    }
    assert!(account.balance().abs() <= bound, "account {}: the balance leaves its bound", account.id);
    assert!(account.within_overdraft(Amount::ZERO), "account {}: below its overdraft limit", account.id);
}

/// How `record` moves the totals of the account on `side`: (debits posted, credits posted,
/// pending debits, pending credits), in minor units.
fn record_deltas(side: Side, record: &Record) -> [i128; 4] {
    let units = |amount: &Amount| amount.minor_units();
    let [posted, pending] = match record {
        Record::CreateTransfer { amount, pending: false, .. } => [units(amount), 0],
        Record::CreateTransfer { amount, pending: true, .. } => [0, units(amount)],
        Record::PostPending { pending_amount, posted_amount, .. } => [units(posted_amount), -units(pending_amount)],
        Record::VoidPending { pending_amount, .. } | Record::ExpirePending { pending_amount, .. } => {
            [0, -units(pending_amount)]
        }
        Record::CreateAccount { .. } | Record::SetFrozen { .. } | Record::External { .. } => [0, 0],
    };
    match side {
        Side::Debit => [posted, 0, pending, 0],
        Side::Credit => [0, posted, 0, pending],
    }
}

/// What the part of `record` that concerns `account` (on `side` of it) would do, checked
/// against every invariant of an account, without changing anything. `Ok(None)` when the
/// record does not change this account (`CreateAccount`, `External`).
pub fn account_change(
    account: &Account,
    side: Side,
    seq: u64,
    record: &Record,
) -> Result<Option<AccountChange>, ApplyError> {
    let currency = &account.currency;
    let overflow = || ApplyError::Overflow { seq, account: account.id.clone() };
    let mut change = AccountChange {
        debits_posted: account.debits_posted,
        credits_posted: account.credits_posted,
        pending_debits: account.pending_debits,
        pending_credits: account.pending_credits,
        frozen: account.frozen,
        deltas: record_deltas(side, record),
    };
    match record {
        Record::CreateAccount { .. } | Record::External { .. } => return Ok(None),
        Record::SetFrozen { frozen, .. } => change.frozen = *frozen,
        Record::CreateTransfer { amount, pending, currency, .. } => {
            if *currency != account.currency {
                return Err(ApplyError::CurrencyMismatch {
                    seq,
                    account: account.id.clone(),
                    found: account.currency.code.to_string(),
                    expected: currency.code.to_string(),
                });
            }
            let total = match (side, pending) {
                (Side::Debit, false) => &mut change.debits_posted,
                (Side::Debit, true) => &mut change.pending_debits,
                (Side::Credit, false) => &mut change.credits_posted,
                (Side::Credit, true) => &mut change.pending_credits,
            };
            *total = currency.add_total(*total, *amount).ok_or_else(overflow)?;
        }
        Record::PostPending { pending_amount, posted_amount, .. } => {
            let (pending_total, posted_total) = match side {
                Side::Debit => (&mut change.pending_debits, &mut change.debits_posted),
                Side::Credit => (&mut change.pending_credits, &mut change.credits_posted),
            };
            *pending_total = currency.sub_total(*pending_total, *pending_amount).ok_or_else(overflow)?;
            *posted_total = currency.add_total(*posted_total, *posted_amount).ok_or_else(overflow)?;
        }
        Record::VoidPending { pending_amount, .. } | Record::ExpirePending { pending_amount, .. } => {
            let pending_total = match side {
                Side::Debit => &mut change.pending_debits,
                Side::Credit => &mut change.pending_credits,
            };
            *pending_total = currency.sub_total(*pending_total, *pending_amount).ok_or_else(overflow)?;
        }
    }
    let negative = [change.debits_posted, change.credits_posted, change.pending_debits, change.pending_credits]
        .iter()
        .any(|total| total.is_negative());
    if negative {
        return Err(ApplyError::Overflow { seq, account: account.id.clone() });
    }
    if side == Side::Debit
        && let Overdraft::Limited(limit) = account.overdraft
    {
        // Each total is within ±10^36, so this stays far inside i128.
        let available = change.credits_posted.minor_units()
            - change.debits_posted.minor_units()
            - change.pending_debits.minor_units();
        if available + limit.minor_units() < 0 {
            return Err(ApplyError::Overdrawn { seq, account: account.id.clone() });
        }
    }
    Ok(Some(change))
}

/// Applies the part of `record` that concerns `account`, which is on `side` of it: checks it
/// with [`account_change`], then writes it. On an error the account is unchanged.
/// `CreateAccount` is not handled here (see [`account_from_record`]).
pub fn apply_to_account(account: &mut Account, side: Side, seq: u64, record: &Record) -> Result<(), ApplyError> {
    if let Some(change) = account_change(account, side, seq, record)? {
        change.commit(account, seq);
    }
    Ok(())
}

/// The account a `CreateAccount` record creates.
pub fn account_from_record(seq: u64, record: &Record) -> Option<Account> {
    match record {
        Record::CreateAccount { id, currency, overdraft, metadata, created_at_ms } => {
            Some(Account::new(id.clone(), currency.clone(), *overdraft, metadata.clone(), *created_at_ms, seq))
        }
        _ => None,
    }
}

/// Checks that the part of `record` that concerns its transfer applies to `transfers`: a
/// creation names a new id, a post, void or expiry names a pending transfer.
pub fn check_transfer_change(transfers: &IdMap<Arc<Transfer>>, seq: u64, record: &Record) -> Result<(), ApplyError> {
    match record {
        Record::CreateTransfer { id, .. } => {
            if transfers.contains_key(id) {
                return Err(ApplyError::DuplicateTransfer { seq, transfer: id.clone() });
            }
        }
        Record::PostPending { transfer, .. }
        | Record::VoidPending { transfer, .. }
        | Record::ExpirePending { transfer, .. } => match transfers.get(transfer) {
            None => return Err(ApplyError::MissingTransfer { seq, transfer: transfer.clone() }),
            Some(stored) if stored.status != TransferStatus::Pending => {
                return Err(ApplyError::NotPending { seq, transfer: transfer.clone() });
            }
            Some(_) => {}
        },
        Record::CreateAccount { .. } | Record::SetFrozen { .. } | Record::External { .. } => {}
    }
    Ok(())
}

/// The transfer a `CreateTransfer` record at `seq` creates.
pub fn transfer_from_record(seq: u64, record: &Record) -> Option<Transfer> {
    let Record::CreateTransfer {
        id,
        debit_account,
        credit_account,
        amount,
        currency,
        pending,
        timeout_seconds,
        description,
        metadata,
        created_at_ms,
    } = record
    else {
        return None;
    };
    Some(Transfer {
        id: id.clone(),
        debit_account: debit_account.clone(),
        credit_account: credit_account.clone(),
        amount: *amount,
        currency: currency.clone(),
        pending: *pending,
        timeout_seconds: *timeout_seconds,
        description: description.clone(),
        metadata: metadata.clone(),
        created_at_ms: *created_at_ms,
        seq,
        status: if *pending { TransferStatus::Pending } else { TransferStatus::Posted },
        posted_amount: if *pending { Amount::ZERO } else { *amount },
        last_seq: seq,
    })
}

/// Applies the part of `record` that concerns the transfer it creates or changes: checks it
/// with [`check_transfer_change`], then writes it. On an error `transfers` is unchanged.
pub fn apply_to_transfers(transfers: &mut IdMap<Arc<Transfer>>, seq: u64, record: &Record) -> Result<(), ApplyError> {
    check_transfer_change(transfers, seq, record)?;
    if let Some(transfer) = transfer_from_record(seq, record) {
        transfers.insert(transfer.id.clone(), Arc::new(transfer));
    } else {
        change_stored_transfer(transfers, seq, record);
    }
    Ok(())
}

/// The post, void or expiry of a stored pending transfer (checked by the caller).
fn change_stored_transfer(transfers: &mut IdMap<Arc<Transfer>>, seq: u64, record: &Record) {
    let Some(id) = record.transfer() else { return };
    let stored = transfers.get_mut(id).expect("checked: the transfer exists and is pending");
    if let Some(changed) = changed_transfer(stored, seq, record) {
        *stored = Arc::new(changed);
    }
}

/// The hold `stored` after the post, void or expiry `record` at `seq`; `None` for any other
/// record.
pub fn changed_transfer(stored: &Transfer, seq: u64, record: &Record) -> Option<Transfer> {
    let (status, posted_amount) = match record {
        Record::PostPending { posted_amount, .. } => (TransferStatus::Posted, Some(*posted_amount)),
        Record::VoidPending { .. } => (TransferStatus::Voided, None),
        Record::ExpirePending { .. } => (TransferStatus::Expired, None),
        Record::CreateAccount { .. }
        | Record::SetFrozen { .. }
        | Record::External { .. }
        | Record::CreateTransfer { .. } => {
            return None;
        }
    };
    let mut changed = stored.clone();
    changed.status = status;
    if let Some(posted_amount) = posted_amount {
        changed.posted_amount = posted_amount;
    }
    changed.last_seq = seq;
    Some(changed)
}

/// A broken invariant of the contract (API.md §7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("balances in {currency} sum to {sum} minor units, not zero")]
    Unbalanced { currency: String, sum: ExactSum },
    #[error("account {account} is below its overdraft limit (available {} minor units)", available.minor_units())]
    Overdrawn { account: Id, available: Amount },
    #[error("account {account}: pending {which} is {} but open holds sum to {} (minor units)", stored.minor_units(), expected.minor_units())]
    PendingMismatch { account: Id, which: &'static str, stored: Amount, expected: Amount },
    #[error("transfer {transfer} names a missing account {account}")]
    DanglingTransfer { transfer: Id, account: Id },
    #[error("transfer {transfer} is not in the currency of its accounts")]
    CurrencyMismatch { transfer: Id },
    #[error("transfer {transfer} moves money from an account to itself")]
    SameAccount { transfer: Id },
    #[error("transfer {transfer} is kept as an open hold but is not pending")]
    NotPending { transfer: Id },
}

fn missing_account(seq: u64, account: &Id) -> ApplyError {
    ApplyError::MissingAccount { seq, account: account.clone() }
}

/// What a transfer request comes to against the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferDecision {
    /// The same transfer exists: answer with it.
    Replay(Arc<Transfer>),
    /// A new transfer: this record creates it.
    New(Record),
}

/// What stays in memory of the ledger, and what replaying the log from empty gives of it: the
/// accounts and the open holds (pending transfers). Every other stored transfer and the
/// payment facts live in the history on disk (the `history` crate), derived from the same log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub accounts: IdMap<Account>,
    /// The pending transfers, by id. Shared, so that an answer can hand one out without
    /// copying it.
    pub open_holds: IdMap<Arc<Transfer>>,
    /// Sequence of the last applied record (0 = empty).
    pub last_seq: u64,
}

/// Checks that the part of `record` that concerns its transfer applies to `open_holds`: a
/// creation does not name an open hold, a post, void or expiry names one.
pub fn check_hold_change(open_holds: &IdMap<Arc<Transfer>>, seq: u64, record: &Record) -> Result<(), ApplyError> {
    match record {
        Record::CreateTransfer { id, .. } if open_holds.contains_key(id) => {
            Err(ApplyError::DuplicateTransfer { seq, transfer: id.clone() })
        }
        Record::PostPending { transfer, .. }
        | Record::VoidPending { transfer, .. }
        | Record::ExpirePending { transfer, .. }
            if !open_holds.contains_key(transfer) =>
        {
            Err(ApplyError::NotPending { seq, transfer: transfer.clone() })
        }
        _ => Ok(()),
    }
}

impl Ledger {
    /// Applies one record at `seq`, which must follow the last applied one. A refused record
    /// leaves the ledger unchanged. `External` records (payment facts) change nothing here.
    pub fn apply(&mut self, seq: u64, record: &Record) -> Result<(), ApplyError> {
        if seq != self.last_seq + 1 {
            return Err(ApplyError::OutOfOrder { seq, last: self.last_seq });
        }
        match record {
            Record::CreateAccount { id, .. } => {
                if self.accounts.contains_key(id) {
                    return Err(ApplyError::DuplicateAccount { seq, account: id.clone() });
                }
                let account = account_from_record(seq, record).expect("a CreateAccount record creates an account");
                self.accounts.insert(id.clone(), account);
            }
            Record::SetFrozen { account, .. } => {
                let stored = self.accounts.get_mut(account).ok_or_else(|| missing_account(seq, account))?;
                apply_to_account(stored, Side::Debit, seq, record)?;
            }
            Record::External { .. } => {}
            Record::CreateTransfer { debit_account, credit_account, .. }
            | Record::PostPending { debit_account, credit_account, .. }
            | Record::VoidPending { debit_account, credit_account, .. }
            | Record::ExpirePending { debit_account, credit_account, .. } => {
                if debit_account == credit_account {
                    return Err(ApplyError::SameAccount { seq, account: debit_account.clone() });
                }
                // Check everything that can fail before changing anything, so that a refused
                // record leaves the state untouched.
                let [debit, credit] = self.accounts.get_disjoint_mut([debit_account, credit_account]);
                let debit = debit.ok_or_else(|| missing_account(seq, debit_account))?;
                let credit = credit.ok_or_else(|| missing_account(seq, credit_account))?;
                let debit_change = account_change(debit, Side::Debit, seq, record)?;
                let credit_change = account_change(credit, Side::Credit, seq, record)?;
                check_hold_change(&self.open_holds, seq, record)?;
                if let Some(change) = debit_change {
                    change.commit(debit, seq);
                }
                if let Some(change) = credit_change {
                    change.commit(credit, seq);
                }
                match transfer_from_record(seq, record) {
                    Some(mut transfer) if transfer.pending => {
                        // Share the accounts' allocations instead of keeping the record's.
                        transfer.debit_account = debit.id.clone();
                        transfer.credit_account = credit.id.clone();
                        transfer.currency = debit.currency.clone();
                        self.open_holds.insert(transfer.id.clone(), Arc::new(transfer));
                    }
                    Some(_) => {}
                    None => {
                        let id = record.transfer().expect("a hold's change names its transfer");
                        self.open_holds.remove(id);
                    }
                }
            }
        }
        self.last_seq = seq;
        Ok(())
    }

    /// The reference decision on a transfer request at `now_ms`, using the same rules as the
    /// live conversation (with nothing in flight). `stored`: the transfer with the request's
    /// id, if one exists (an open hold, or one the caller keeps).
    pub fn create_transfer(
        &self,
        request: &TransferRequest,
        stored: Option<&Arc<Transfer>>,
        now_ms: i64,
    ) -> Result<TransferDecision, Rejection> {
        if let rules::FirstChecks::Replay(stored) = rules::first_checks(stored, request)? {
            return Ok(TransferDecision::Replay(stored));
        }
        let debit = self.accounts.get(&request.debit_account).ok_or(Rejection::DebitAccountNotFound)?;
        let debit_amount = rules::debit_amount(debit, &request.amount).unwrap_or(Amount::ZERO);
        let facts = rules::debit_facts(debit, debit_amount, Amount::ZERO);
        let credit = self.accounts.get(&request.credit_account).ok_or(Rejection::CreditAccountNotFound)?;
        let amount = rules::decide_transfer(&facts, credit, &request.amount)?;
        Ok(TransferDecision::New(transfer_record(request, amount, credit, now_ms)))
    }

    /// The reference decision on posting the transfer `stored` (`None`: no such transfer):
    /// `Ok(None)` is an idempotent replay.
    pub fn post(
        &self,
        stored: Option<&Arc<Transfer>>,
        amount: Option<&WrittenAmount>,
        now_ms: i64,
    ) -> Result<Option<Record>, Rejection> {
        let transfer = stored.ok_or(Rejection::TransferNotFound)?;
        match rules::check_post(transfer, amount, now_ms)? {
            PostOutcome::Replay => Ok(None),
            PostOutcome::Apply { posted_amount } => {
                let frozen = |account: &Id| self.accounts.get(account).is_some_and(|account| account.frozen);
                if frozen(&transfer.debit_account) || frozen(&transfer.credit_account) {
                    return Err(Rejection::AccountFrozen);
                }
                Ok(Some(Record::PostPending {
                    transfer: transfer.id.clone(),
                    debit_account: transfer.debit_account.clone(),
                    credit_account: transfer.credit_account.clone(),
                    pending_amount: transfer.amount,
                    posted_amount,
                }))
            }
        }
    }

    /// The reference decision on voiding the transfer `stored`: `Ok(None)` is an idempotent
    /// replay.
    pub fn void(&self, stored: Option<&Arc<Transfer>>, now_ms: i64) -> Result<Option<Record>, Rejection> {
        let transfer = stored.ok_or(Rejection::TransferNotFound)?;
        if !rules::check_void(transfer, now_ms)? {
            return Ok(None);
        }
        Ok(Some(Record::VoidPending {
            transfer: transfer.id.clone(),
            debit_account: transfer.debit_account.clone(),
            credit_account: transfer.credit_account.clone(),
            pending_amount: transfer.amount,
        }))
    }

    /// Expiry records for every hold whose deadline is at or before `now_ms`, in id order.
    pub fn expire(&self, now_ms: i64) -> Vec<Record> {
        let mut due: Vec<&Transfer> = self
            .open_holds
            .values()
            .map(|transfer| &**transfer)
            .filter(|transfer| rules::is_expired(transfer, now_ms))
            .collect();
        due.sort_by(|a, b| a.id.cmp(&b.id));
        due.into_iter().map(expiry_record).collect()
    }

    /// Checks every invariant of the contract; the first broken one is returned: per
    /// currency the balances sum to zero, no account is below its overdraft limit, pending
    /// totals equal the sums of the open holds, and every open hold is pending, between two
    /// existing, different accounts of its currency.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let mut sums: BTreeMap<&str, ExactSum> = BTreeMap::new();
        let mut held: HashMap<&Id, (Amount, Amount), ahash::RandomState> = HashMap::default();
        for transfer in self.open_holds.values() {
            if transfer.status != TransferStatus::Pending {
                return Err(InvariantViolation::NotPending { transfer: transfer.id.clone() });
            }
            if transfer.debit_account == transfer.credit_account {
                return Err(InvariantViolation::SameAccount { transfer: transfer.id.clone() });
            }
            for account in [&transfer.debit_account, &transfer.credit_account] {
                match self.accounts.get(account) {
                    None => {
                        return Err(InvariantViolation::DanglingTransfer {
                            transfer: transfer.id.clone(),
                            account: account.clone(),
                        });
                    }
                    Some(stored) if stored.currency != transfer.currency => {
                        return Err(InvariantViolation::CurrencyMismatch { transfer: transfer.id.clone() });
                    }
                    Some(_) => {}
                }
            }
            // Open holds of one account sum to at most its bounded pending total; a sum past
            // i128 can only come from a corrupt state, and saturating still reports a mismatch.
            let debits = &mut held.entry(&transfer.debit_account).or_default().0;
            *debits = debits.checked_add(transfer.amount).unwrap_or(Amount::from_minor_units(i128::MAX));
            let credits = &mut held.entry(&transfer.credit_account).or_default().1;
            *credits = credits.checked_add(transfer.amount).unwrap_or(Amount::from_minor_units(i128::MAX));
        }
        for account in self.accounts.values() {
            sums.entry(&account.currency.code).or_default().add(account.balance());
            if !account.within_overdraft(Amount::ZERO) {
                return Err(InvariantViolation::Overdrawn {
                    account: account.id.clone(),
                    available: account.available(),
                });
            }
            let (debits, credits) = held.get(&account.id).copied().unwrap_or_default();
            if account.pending_debits != debits {
                return Err(InvariantViolation::PendingMismatch {
                    account: account.id.clone(),
                    which: "debits",
                    stored: account.pending_debits,
                    expected: debits,
                });
            }
            if account.pending_credits != credits {
                return Err(InvariantViolation::PendingMismatch {
                    account: account.id.clone(),
                    which: "credits",
                    stored: account.pending_credits,
                    expected: credits,
                });
            }
        }
        for (currency, sum) in sums {
            if !sum.is_zero() {
                return Err(InvariantViolation::Unbalanced { currency: currency.to_owned(), sum });
            }
        }
        Ok(())
    }
}

/// Every transfer ever stored, in memory, kept by [`apply_to_transfers`]: the reference that
/// tests and small tools use next to a [`Ledger`]. (The server keeps them in the history.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferBook {
    pub transfers: IdMap<Arc<Transfer>>,
}

impl TransferBook {
    /// Applies the part of `record` that concerns its transfer.
    pub fn apply(&mut self, seq: u64, record: &Record) -> Result<(), ApplyError> {
        apply_to_transfers(&mut self.transfers, seq, record)
    }

    pub fn get(&self, id: &Id) -> Option<&Arc<Transfer>> {
        self.transfers.get(id)
    }
}

/// The record that creates the transfer `request` describes, with its amount rescaled.
pub fn transfer_record(request: &TransferRequest, amount: Amount, credit: &Account, now_ms: i64) -> Record {
    Record::CreateTransfer {
        id: request.id.clone(),
        debit_account: request.debit_account.clone(),
        credit_account: request.credit_account.clone(),
        amount,
        currency: credit.currency.clone(),
        pending: request.pending,
        timeout_seconds: request.timeout_seconds,
        description: request.description.clone(),
        metadata: request.metadata.clone(),
        created_at_ms: now_ms,
    }
}

/// The record that releases an expired hold.
pub fn expiry_record(transfer: &Transfer) -> Record {
    Record::ExpirePending {
        transfer: transfer.id.clone(),
        debit_account: transfer.debit_account.clone(),
        credit_account: transfer.credit_account.clone(),
        pending_amount: transfer.amount,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Currency;

    fn account() -> Account {
        let id = Id::parse("alice").unwrap();
        Account::new(id, Currency::new("USD", 2), Overdraft::Unlimited, Default::default(), 0, 1)
    }

    fn credit(amount: i128) -> Record {
        Record::CreateTransfer {
            id: Id::parse("t").unwrap(),
            debit_account: Id::parse("bank").unwrap(),
            credit_account: Id::parse("alice").unwrap(),
            amount: Amount::from_minor_units(amount),
            currency: Currency::new("USD", 2),
            pending: false,
            timeout_seconds: 0,
            description: String::new(),
            metadata: Default::default(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn a_change_moves_totals_by_what_its_record_says() {
        let mut account = account();
        apply_to_account(&mut account, Side::Credit, 2, &credit(500)).unwrap();
        assert_eq!((account.credits_posted.minor_units(), account.version, account.last_seq), (500, 2, 2));
    }

    #[test]
    #[should_panic(expected = "moves a total by other than its record says")]
    fn a_change_that_does_not_pair_with_its_record_is_a_bug() {
        let mut account = account();
        let mut change = account_change(&account, Side::Credit, 2, &credit(500)).unwrap().unwrap();
        change.credits_posted = Amount::from_minor_units(499);
        change.commit(&mut account, 2);
    }

    #[test]
    #[should_panic(expected = "leaves [0,")]
    fn an_unsound_account_is_a_bug() {
        let mut account = account();
        account.pending_debits = Amount::from_minor_units(-1);
        assert_sound(&account);
    }
}
