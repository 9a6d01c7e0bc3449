//! The transfer rules, split the way the live path meets them.
//!
//! A transfer is decided by a conversation: the debit side looks at its account and reports
//! [`DebitFacts`]; the credit side, which sees the credit account, calls [`decide_transfer`]
//! with those facts and reaches the verdict in the contract's order of checks. The reference
//! path ([`crate::Ledger::create_transfer`]) calls the same two functions, so the live path and
//! the model cannot disagree. Pending-transfer rules ([`check_post`], [`check_void`]) look only at
//! the stored transfer and the clock.

use crate::account::Account;
use crate::amount::{Amount, Currency, WrittenAmount};
use crate::rejection::Rejection;
use crate::transfer::{Transfer, TransferRequest, TransferStatus};

/// What the first checks of a transfer request come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstChecks<T> {
    /// The same transfer exists: answer with it (an idempotent replay).
    Replay(T),
    /// A new transfer whose accounts differ: go on to the accounts' checks.
    New,
}

/// The checks of a transfer request that come before its accounts are looked at, in the
/// contract's order: idempotency against `stored`, the transfer with the request's id if there
/// is one (the same fields: a replay; others: `exists_with_different_fields`), then that the
/// two accounts differ. The live path and the reference decision both start here.
pub fn first_checks<T: std::ops::Deref<Target = Transfer> + Clone>(
    stored: Option<&T>,
    request: &TransferRequest,
) -> Result<FirstChecks<T>, Rejection> {
    if let Some(stored) = stored {
        return if stored.matches(request) {
            Ok(FirstChecks::Replay(stored.clone()))
        } else {
            Err(Rejection::ExistsWithDifferentFields)
        };
    }
    if request.debit_account == request.credit_account {
        return Err(Rejection::AccountsMustBeDifferent);
    }
    Ok(FirstChecks::New)
}

/// What the debit side knows about a proposed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitFacts {
    pub currency: Currency,
    pub frozen: bool,
    /// The debit account stays within its overdraft limit with this amount held.
    pub funds_ok: bool,
    /// A total of the debit account would exceed its bound.
    pub overflow: bool,
}

impl DebitFacts {
    /// Whether the debit side may hold the amount right now (its own checks all pass).
    pub fn may_hold(&self) -> bool {
        !self.frozen && self.funds_ok && !self.overflow
    }
}

/// The debit side's view of moving `amount` (in the account's minor units) out of `account`,
/// which already has `held_elsewhere` reserved by transfers still in flight.
pub fn debit_facts(account: &Account, amount: Amount, held_elsewhere: Amount) -> DebitFacts {
    let currency = &account.currency;
    // Everything that may leave the account: posted, held by pending transfers, held by
    // transfers in flight, and this amount. Neither that total nor the balance net of it may
    // leave the bound.
    let outgoing =
        currency.add_total(account.pending_debits, held_elsewhere).and_then(|held| currency.add_total(held, amount));
    let overflow = match outgoing {
        None => true,
        Some(outgoing) => {
            currency.add_total(account.debits_posted, outgoing).is_none()
                || currency.sub_total(account.balance(), outgoing).is_none()
        }
    };
    // Both are bounded (or saturated), so their sum stays inside i128.
    let extra = held_elsewhere.checked_add(amount).expect("bounded amounts add up inside i128");
    DebitFacts {
        currency: account.currency.clone(),
        frozen: account.frozen,
        funds_ok: account.within_overdraft(extra),
        overflow,
    }
}

/// `written` in the minor units of `account`'s currency, for the debit side's checks before the
/// decision: an amount with too many decimals is held as zero (the decider refuses it), and
/// the decider sees the same normalized amount.
pub fn debit_amount(account: &Account, written: &WrittenAmount) -> Option<Amount> {
    account.currency.normalize(written).ok()
}

/// The verdict on a transfer, reached by the credit side once the debit side has reported.
/// Existence of both accounts and their difference are checked before this. Returns the amount
/// in minor units of the currency.
pub fn decide_transfer(debit: &DebitFacts, credit: &Account, amount: &WrittenAmount) -> Result<Amount, Rejection> {
    if debit.currency != credit.currency {
        return Err(Rejection::CurrencyMismatch);
    }
    let amount = credit.currency.normalize(amount).map_err(|_| Rejection::InvalidAmount)?;
    if debit.frozen || credit.frozen {
        return Err(Rejection::AccountFrozen);
    }
    if !debit.funds_ok {
        return Err(Rejection::InsufficientFunds);
    }
    let currency = &credit.currency;
    // Everything that may arrive: posted, pending, and this amount.
    let credit_overflow = currency
        .add_total(credit.credits_posted, credit.pending_credits)
        .and_then(|incoming| currency.add_total(incoming, amount))
        .is_none();
    if debit.overflow || credit_overflow {
        return Err(Rejection::Overflow);
    }
    Ok(amount)
}

/// What posting a pending transfer would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOutcome {
    /// Already posted with this amount: answer with the stored transfer.
    Replay,
    /// Post `posted_amount` of the hold.
    Apply { posted_amount: Amount },
}

/// Checks a post of `amount` (default: the whole hold) at `now_ms`. Frozen accounts are
/// checked by the account sides.
pub fn check_post(transfer: &Transfer, amount: Option<&WrittenAmount>, now_ms: i64) -> Result<PostOutcome, Rejection> {
    match transfer.status {
        TransferStatus::Posted if !transfer.pending => Err(Rejection::TransferNotPending),
        TransferStatus::Posted => match amount {
            Some(amount) if !amount.same_value(transfer.posted_amount, transfer.currency.scale) => {
                Err(Rejection::PendingTransferAlreadyPosted)
            }
            _ => Ok(PostOutcome::Replay),
        },
        TransferStatus::Voided => Err(Rejection::PendingTransferAlreadyVoided),
        TransferStatus::Expired => Err(Rejection::PendingTransferExpired),
        TransferStatus::Pending => {
            if transfer.deadline_ms().is_some_and(|deadline| now_ms >= deadline) {
                return Err(Rejection::PendingTransferExpired);
            }
            let posted_amount = match amount {
                None => transfer.amount,
                Some(amount) => transfer.currency.normalize(amount).map_err(|_| Rejection::InvalidAmount)?,
            };
            if posted_amount > transfer.amount {
                return Err(Rejection::ExceedsPendingAmount);
            }
            Ok(PostOutcome::Apply { posted_amount })
        }
    }
}

/// Whether a void at `now_ms` applies (`Ok(true)`), replays (`Ok(false)`) or is refused.
pub fn check_void(transfer: &Transfer, now_ms: i64) -> Result<bool, Rejection> {
    match transfer.status {
        TransferStatus::Voided => Ok(false),
        TransferStatus::Posted if !transfer.pending => Err(Rejection::TransferNotPending),
        TransferStatus::Posted => Err(Rejection::PendingTransferAlreadyPosted),
        TransferStatus::Expired => Err(Rejection::PendingTransferExpired),
        TransferStatus::Pending => {
            if transfer.deadline_ms().is_some_and(|deadline| now_ms >= deadline) {
                return Err(Rejection::PendingTransferExpired);
            }
            Ok(true)
        }
    }
}

/// Whether a hold should be released by expiry at `now_ms`.
pub fn is_expired(transfer: &Transfer, now_ms: i64) -> bool {
    transfer.status == TransferStatus::Pending && transfer.deadline_ms().is_some_and(|deadline| now_ms >= deadline)
}
