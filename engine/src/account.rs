//! Account state: posted and pending totals, overdraft limit, frozen flag, metadata.
//!
//! `balance = credits_posted − debits_posted`, `available = balance − pending_debits`.
//! Pending credits are never spendable. Every total keeps exactly the currency's scale.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::amount::{Amount, Currency};
use crate::id::Id;

/// String→string pairs attached to an account or transfer (bounded by config).
pub type Metadata = BTreeMap<String, String>;

/// How far below zero an account's balance may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overdraft {
    /// The balance (minus pending debits) may go down to minus this amount.
    Limited(Amount),
    /// No lower bound (settlement and system accounts).
    Unlimited,
}

/// One account as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: Id,
    pub currency: Currency,
    pub debits_posted: Amount,
    pub credits_posted: Amount,
    pub pending_debits: Amount,
    pub pending_credits: Amount,
    pub overdraft: Overdraft,
    pub frozen: bool,
    pub metadata: Metadata,
    pub created_at_ms: i64,
    /// Changes applied to the account, creation included.
    pub version: u64,
    /// Log sequence of the last change applied to the account (its read barrier).
    pub last_seq: u64,
}

impl Account {
    /// A new, empty account.
    pub fn new(
        id: Id,
        currency: Currency,
        overdraft: Overdraft,
        metadata: Metadata,
        created_at_ms: i64,
        seq: u64,
    ) -> Account {
        Account {
            id,
            currency,
            debits_posted: Amount::ZERO,
            credits_posted: Amount::ZERO,
            pending_debits: Amount::ZERO,
            pending_credits: Amount::ZERO,
            overdraft,
            frozen: false,
            metadata,
            created_at_ms,
            version: 1,
            last_seq: seq,
        }
    }

    /// `credits_posted − debits_posted` (both bounded, so this never leaves `i128`).
    pub fn balance(&self) -> Amount {
        Amount::from_minor_units(self.credits_posted.minor_units() - self.debits_posted.minor_units())
    }

    /// `balance − pending_debits`.
    pub fn available(&self) -> Amount {
        Amount::from_minor_units(self.balance().minor_units() - self.pending_debits.minor_units())
    }

    /// Whether the account respects its overdraft limit once `extra_debits` more are held.
    /// `available + limit` is at most 3 × 10^36 and `extra_debits` at most a saturated
    /// amount, so the comparison is exact in `i128`.
    pub fn within_overdraft(&self, extra_debits: Amount) -> bool {
        match self.overdraft {
            Overdraft::Unlimited => true,
            Overdraft::Limited(limit) => {
                self.available().minor_units() + limit.minor_units() >= extra_debits.minor_units()
            }
        }
    }

    /// Records one applied change at log sequence `seq`.
    pub fn touch(&mut self, seq: u64) {
        self.version += 1;
        self.last_seq = seq;
    }
}
