//! Transfers: what a client asks for, what the ledger stores, and the pending life cycle.

use serde::{Deserialize, Serialize};

use crate::account::Metadata;
use crate::amount::{Amount, Currency, WrittenAmount};
use crate::id::Id;

/// Where a transfer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferStatus {
    Posted,
    Pending,
    Voided,
    Expired,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Posted => "posted",
            TransferStatus::Pending => "pending",
            TransferStatus::Voided => "voided",
            TransferStatus::Expired => "expired",
        }
    }
}

/// A transfer as a client asked for it, after syntax checks (ids valid, amount positive and
/// at most `amount_max`, description and metadata within their limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub id: Id,
    pub debit_account: Id,
    pub credit_account: Id,
    /// As written: its scale is checked against the currency once the accounts are known.
    pub amount: WrittenAmount,
    pub pending: bool,
    /// Pending only; 0 = never expires.
    pub timeout_seconds: u64,
    pub description: String,
    pub metadata: Metadata,
}

/// A transfer as the ledger stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: Id,
    pub debit_account: Id,
    pub credit_account: Id,
    pub amount: Amount,
    pub currency: Currency,
    pub pending: bool,
    pub timeout_seconds: u64,
    pub description: String,
    pub metadata: Metadata,
    pub created_at_ms: i64,
    /// Log position of the creation.
    pub seq: u64,
    pub status: TransferStatus,
    pub posted_amount: Amount,
    /// Log position of the last change (creation, post, void or expiry): the read barrier.
    pub last_seq: u64,
}

impl Transfer {
    /// When a hold with a timeout expires (ms since the epoch), if it has one.
    pub fn deadline_ms(&self) -> Option<i64> {
        deadline_ms(self.pending, self.timeout_seconds, self.created_at_ms)
    }

    /// Whether `request` names the same transfer (the idempotency comparison of the contract:
    /// amounts by value, omitted fields equal to their defaults).
    pub fn matches(&self, request: &TransferRequest) -> bool {
        self.debit_account == request.debit_account
            && self.credit_account == request.credit_account
            && request.amount.same_value(self.amount, self.currency.scale)
            && self.pending == request.pending
            && self.timeout_seconds == request.timeout_seconds
            && self.description == request.description
            && self.metadata == request.metadata
    }
}

/// The expiry deadline of a hold created at `created_at_ms`.
pub fn deadline_ms(pending: bool, timeout_seconds: u64, created_at_ms: i64) -> Option<i64> {
    if !pending || timeout_seconds == 0 {
        return None;
    }
    let timeout_ms = i64::try_from(timeout_seconds).ok()?.checked_mul(1000)?;
    created_at_ms.checked_add(timeout_ms)
}
