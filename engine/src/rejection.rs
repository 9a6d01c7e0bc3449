//! Every business rejection of the contract, as a value.
//!
//! A rejection is an expected outcome (bad input, missing account, not enough money); it is
//! never a bug. Bugs are assertions and crash. Each rejection has a stable snake_case code,
//! the one clients see in `{"error": {"code": ...}}`.

/// A business rejection, in the contract's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Same id, different fields (accounts and transfers).
    ExistsWithDifferentFields,
    AccountsMustBeDifferent,
    DebitAccountNotFound,
    CreditAccountNotFound,
    AccountNotFound,
    CurrencyMismatch,
    UnknownCurrency,
    /// More fractional digits than the currency's scale (HTTP 400 `invalid_amount`).
    InvalidAmount,
    AccountFrozen,
    InsufficientFunds,
    Overflow,
    TransferNotFound,
    TransferNotPending,
    PendingTransferAlreadyPosted,
    PendingTransferAlreadyVoided,
    PendingTransferExpired,
    ExceedsPendingAmount,
    /// An item of an atomic batch that was not applied because another item failed.
    BatchAborted,
}

impl Rejection {
    /// The stable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::ExistsWithDifferentFields => "exists_with_different_fields",
            Rejection::AccountsMustBeDifferent => "accounts_must_be_different",
            Rejection::DebitAccountNotFound => "debit_account_not_found",
            Rejection::CreditAccountNotFound => "credit_account_not_found",
            Rejection::AccountNotFound => "account_not_found",
            Rejection::CurrencyMismatch => "currency_mismatch",
            Rejection::UnknownCurrency => "unknown_currency",
            Rejection::InvalidAmount => "invalid_amount",
            Rejection::AccountFrozen => "account_frozen",
            Rejection::InsufficientFunds => "insufficient_funds",
            Rejection::Overflow => "overflow",
            Rejection::TransferNotFound => "transfer_not_found",
            Rejection::TransferNotPending => "transfer_not_pending",
            Rejection::PendingTransferAlreadyPosted => "pending_transfer_already_posted",
            Rejection::PendingTransferAlreadyVoided => "pending_transfer_already_voided",
            Rejection::PendingTransferExpired => "pending_transfer_expired",
            Rejection::ExceedsPendingAmount => "exceeds_pending_amount",
            Rejection::BatchAborted => "batch_aborted",
        }
    }

    /// A sentence for humans. Not stable; clients must match on [`Rejection::code`].
    pub fn message(self) -> &'static str {
        match self {
            Rejection::ExistsWithDifferentFields => "an object with this id exists with different fields",
            Rejection::AccountsMustBeDifferent => "debit_account and credit_account must differ",
            Rejection::DebitAccountNotFound => "the debit account does not exist",
            Rejection::CreditAccountNotFound => "the credit account does not exist",
            Rejection::AccountNotFound => "the account does not exist",
            Rejection::CurrencyMismatch => "the two accounts have different currencies",
            Rejection::UnknownCurrency => "this currency is not configured",
            Rejection::InvalidAmount => "the amount has more fractional digits than the currency allows",
            Rejection::AccountFrozen => "an account of this transfer is frozen",
            Rejection::InsufficientFunds => "the debit account would go below its overdraft limit",
            Rejection::Overflow => "a total of an account would exceed its bound",
            Rejection::TransferNotFound => "the transfer does not exist",
            Rejection::TransferNotPending => "the transfer is not a pending transfer",
            Rejection::PendingTransferAlreadyPosted => "the pending transfer was already posted",
            Rejection::PendingTransferAlreadyVoided => "the pending transfer was already voided",
            Rejection::PendingTransferExpired => "the pending transfer expired",
            Rejection::ExceedsPendingAmount => "the amount exceeds the pending amount",
            Rejection::BatchAborted => "not applied: another item of the atomic batch was rejected",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.code())
    }
}
