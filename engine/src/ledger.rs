//! The one `apply`, and the whole-ledger state it folds the log into.
//!
//! A record touches up to three owners: the debit account, the credit account and the
//! transfer. [`apply_to_account`] and [`apply_to_transfers`] apply one owner's part; live, each
//! part runs in the actor that owns it, and in replay [`Ledger::apply`] runs all of them on one
//! state. Both paths call the same functions, so recovery cannot drift from the live path.
//! [`Ledger`] also offers the reference operations used by tests and offline tools, built on
//! the same rules as the live conversation, and [`Ledger::check_invariants`].

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

use crate::account::Account;
use crate::amount::{add_total, sub_total};
use crate::id::Id;
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
    #[error("record {seq}: account {account} goes below its overdraft limit")]
    Overdrawn { seq: u64, account: Id },
    #[error("record {seq}: account {account} is in {found}, the record in {expected}")]
    CurrencyMismatch { seq: u64, account: Id, found: String, expected: String },
}

/// Applies the part of `record` that concerns `account`, which is on `side` of it.
/// `CreateAccount` is not handled here (see [`account_from_record`]).
pub fn apply_to_account(account: &mut Account, side: Side, seq: u64, record: &Record) -> Result<(), ApplyError> {
    let scale = account.currency.scale;
    let overflow = || ApplyError::Overflow { seq, account: account.id.clone() };
    match record {
        Record::CreateAccount { .. } | Record::External { .. } => return Ok(()),
        Record::SetFrozen { frozen, .. } => account.frozen = *frozen,
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
                (Side::Debit, false) => &mut account.debits_posted,
                (Side::Debit, true) => &mut account.pending_debits,
                (Side::Credit, false) => &mut account.credits_posted,
                (Side::Credit, true) => &mut account.pending_credits,
            };
            *total = add_total(*total, *amount, scale).ok_or_else(overflow)?;
        }
        Record::PostPending { pending_amount, posted_amount, .. } => {
            let (pending_total, posted_total) = match side {
                Side::Debit => (&mut account.pending_debits, &mut account.debits_posted),
                Side::Credit => (&mut account.pending_credits, &mut account.credits_posted),
            };
            *pending_total = sub_total(*pending_total, *pending_amount, scale).ok_or_else(overflow)?;
            *posted_total = add_total(*posted_total, *posted_amount, scale).ok_or_else(overflow)?;
        }
        Record::VoidPending { pending_amount, .. } | Record::ExpirePending { pending_amount, .. } => {
            let pending_total = match side {
                Side::Debit => &mut account.pending_debits,
                Side::Credit => &mut account.pending_credits,
            };
            *pending_total = sub_total(*pending_total, *pending_amount, scale).ok_or_else(overflow)?;
        }
    }
    if account.pending_debits.is_sign_negative() && !account.pending_debits.is_zero()
        || account.pending_credits.is_sign_negative() && !account.pending_credits.is_zero()
    {
        return Err(ApplyError::Overflow { seq, account: account.id.clone() });
    }
    if side == Side::Debit && !account.within_overdraft(Decimal::ZERO) {
        return Err(ApplyError::Overdrawn { seq, account: account.id.clone() });
    }
    account.touch(seq);
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

/// Applies the part of `record` that concerns the transfer it creates or changes.
pub fn apply_to_transfers(transfers: &mut HashMap<Id, Transfer>, seq: u64, record: &Record) -> Result<(), ApplyError> {
    match record {
        Record::CreateTransfer {
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
        } => {
            if transfers.contains_key(id) {
                return Err(ApplyError::DuplicateTransfer { seq, transfer: id.clone() });
            }
            let transfer = Transfer {
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
                posted_amount: if *pending { currency.zero() } else { *amount },
                last_seq: seq,
            };
            transfers.insert(id.clone(), transfer);
        }
        Record::PostPending { transfer, posted_amount, .. } => {
            let stored = pending_transfer(transfers, seq, transfer)?;
            stored.status = TransferStatus::Posted;
            stored.posted_amount = *posted_amount;
            stored.last_seq = seq;
        }
        Record::VoidPending { transfer, .. } => {
            let stored = pending_transfer(transfers, seq, transfer)?;
            stored.status = TransferStatus::Voided;
            stored.last_seq = seq;
        }
        Record::ExpirePending { transfer, .. } => {
            let stored = pending_transfer(transfers, seq, transfer)?;
            stored.status = TransferStatus::Expired;
            stored.last_seq = seq;
        }
        Record::CreateAccount { .. } | Record::SetFrozen { .. } | Record::External { .. } => {}
    }
    Ok(())
}

fn pending_transfer<'a>(
    transfers: &'a mut HashMap<Id, Transfer>,
    seq: u64,
    id: &Id,
) -> Result<&'a mut Transfer, ApplyError> {
    let stored = transfers.get_mut(id).ok_or_else(|| ApplyError::MissingTransfer { seq, transfer: id.clone() })?;
    if stored.status != TransferStatus::Pending {
        return Err(ApplyError::NotPending { seq, transfer: id.clone() });
    }
    Ok(stored)
}

/// A broken invariant of the contract (API.md §7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("balances in {currency} sum to {sum}, not zero")]
    Unbalanced { currency: String, sum: Decimal },
    #[error("account {account} is below its overdraft limit (available {available})")]
    Overdrawn { account: Id, available: Decimal },
    #[error("account {account}: pending {which} is {stored} but open holds sum to {expected}")]
    PendingMismatch { account: Id, which: &'static str, stored: Decimal, expected: Decimal },
    #[error("transfer {transfer} names a missing account {account}")]
    DanglingTransfer { transfer: Id, account: Id },
}

/// What a transfer request comes to against the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferDecision {
    /// The same transfer exists: answer with it.
    Replay(Box<Transfer>),
    /// A new transfer: this record creates it.
    New(Record),
}

/// The whole ledger: what replaying the log from empty gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub accounts: HashMap<Id, Account>,
    pub transfers: HashMap<Id, Transfer>,
    /// Webhook and deposit bookkeeping, by (kind, key): the latest payload.
    pub external: BTreeMap<(String, String), Vec<u8>>,
    /// Sequence of the last applied record (0 = empty).
    pub last_seq: u64,
}

impl Ledger {
    /// Applies one record at `seq`, which must follow the last applied one.
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
                let stored = self.account_mut(seq, account)?;
                apply_to_account(stored, Side::Debit, seq, record)?;
            }
            Record::External { kind, key, payload } => {
                self.external.insert((kind.clone(), key.clone()), payload.clone());
            }
            Record::CreateTransfer { debit_account, credit_account, .. }
            | Record::PostPending { debit_account, credit_account, .. }
            | Record::VoidPending { debit_account, credit_account, .. }
            | Record::ExpirePending { debit_account, credit_account, .. } => {
                // Check everything that can fail before changing anything, so that a refused
                // record leaves the state untouched.
                let mut debit = self.account_mut(seq, debit_account)?.clone();
                let mut credit = self.account_mut(seq, credit_account)?.clone();
                apply_to_account(&mut debit, Side::Debit, seq, record)?;
                apply_to_account(&mut credit, Side::Credit, seq, record)?;
                apply_to_transfers(&mut self.transfers, seq, record)?;
                self.accounts.insert(debit.id.clone(), debit);
                self.accounts.insert(credit.id.clone(), credit);
            }
        }
        self.last_seq = seq;
        Ok(())
    }

    fn account_mut(&mut self, seq: u64, id: &Id) -> Result<&mut Account, ApplyError> {
        self.accounts.get_mut(id).ok_or_else(|| ApplyError::MissingAccount { seq, account: id.clone() })
    }

    /// The reference decision on a transfer request at `now_ms`, using the same rules as the
    /// live conversation (with nothing in flight).
    pub fn create_transfer(&self, request: &TransferRequest, now_ms: i64) -> Result<TransferDecision, Rejection> {
        if let Some(stored) = self.transfers.get(&request.id) {
            return if stored.matches(request) {
                Ok(TransferDecision::Replay(Box::new(stored.clone())))
            } else {
                Err(Rejection::ExistsWithDifferentFields)
            };
        }
        if request.debit_account == request.credit_account {
            return Err(Rejection::AccountsMustBeDifferent);
        }
        let debit = self.accounts.get(&request.debit_account).ok_or(Rejection::DebitAccountNotFound)?;
        let facts = rules::debit_facts(debit, request.amount, Decimal::ZERO);
        let credit = self.accounts.get(&request.credit_account).ok_or(Rejection::CreditAccountNotFound)?;
        let amount = rules::decide_transfer(&facts, credit, request.amount)?;
        Ok(TransferDecision::New(transfer_record(request, amount, credit, now_ms)))
    }

    /// The reference decision on posting a pending transfer: `Ok(None)` is an idempotent replay.
    pub fn post(&self, id: &Id, amount: Option<Decimal>, now_ms: i64) -> Result<Option<Record>, Rejection> {
        let transfer = self.transfers.get(id).ok_or(Rejection::TransferNotFound)?;
        match rules::check_post(transfer, amount, now_ms)? {
            PostOutcome::Replay => Ok(None),
            PostOutcome::Apply { posted_amount } => {
                let frozen = |account: &Id| self.accounts.get(account).is_some_and(|account| account.frozen);
                if frozen(&transfer.debit_account) || frozen(&transfer.credit_account) {
                    return Err(Rejection::AccountFrozen);
                }
                Ok(Some(Record::PostPending {
                    transfer: id.clone(),
                    debit_account: transfer.debit_account.clone(),
                    credit_account: transfer.credit_account.clone(),
                    pending_amount: transfer.amount,
                    posted_amount,
                }))
            }
        }
    }

    /// The reference decision on voiding a pending transfer: `Ok(None)` is an idempotent replay.
    pub fn void(&self, id: &Id, now_ms: i64) -> Result<Option<Record>, Rejection> {
        let transfer = self.transfers.get(id).ok_or(Rejection::TransferNotFound)?;
        if !rules::check_void(transfer, now_ms)? {
            return Ok(None);
        }
        Ok(Some(Record::VoidPending {
            transfer: id.clone(),
            debit_account: transfer.debit_account.clone(),
            credit_account: transfer.credit_account.clone(),
            pending_amount: transfer.amount,
        }))
    }

    /// Expiry records for every hold whose deadline is at or before `now_ms`, in id order.
    pub fn expire(&self, now_ms: i64) -> Vec<Record> {
        let mut due: Vec<&Transfer> =
            self.transfers.values().filter(|transfer| rules::is_expired(transfer, now_ms)).collect();
        due.sort_by(|a, b| a.id.cmp(&b.id));
        due.into_iter().map(expiry_record).collect()
    }

    /// Checks every invariant of the contract; the first broken one is returned.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let mut sums: BTreeMap<&str, Decimal> = BTreeMap::new();
        let mut held: HashMap<&Id, (Decimal, Decimal)> = HashMap::new();
        for transfer in self.transfers.values() {
            for account in [&transfer.debit_account, &transfer.credit_account] {
                if !self.accounts.contains_key(account) {
                    return Err(InvariantViolation::DanglingTransfer {
                        transfer: transfer.id.clone(),
                        account: account.clone(),
                    });
                }
            }
            if transfer.status == TransferStatus::Pending {
                held.entry(&transfer.debit_account).or_default().0 += transfer.amount;
                held.entry(&transfer.credit_account).or_default().1 += transfer.amount;
            }
        }
        for account in self.accounts.values() {
            *sums.entry(&account.currency.code).or_default() += account.balance();
            if !account.within_overdraft(Decimal::ZERO) {
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

    /// Per currency: (sum of balances, sum of positive balances).
    pub fn totals_by_currency(&self) -> BTreeMap<String, (Decimal, Decimal)> {
        let mut totals: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for account in self.accounts.values() {
            let entry = totals.entry(account.currency.code.to_string()).or_default();
            entry.0 += account.balance();
            if account.balance().is_sign_positive() {
                entry.1 += account.balance();
            }
        }
        totals
    }
}

/// The record that creates the transfer `request` describes, with its amount rescaled.
pub fn transfer_record(request: &TransferRequest, amount: Decimal, credit: &Account, now_ms: i64) -> Record {
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
