//! Why a payment flow refuses a delivery or a request, in its own words; the HTTP layer maps
//! each [`RefusalKind`] to a status and an error code.

/// What kind of refusal it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The account to credit or debit does not exist.
    AccountNotFound,
    /// The account is in another currency than the deposit.
    CurrencyMismatch,
    /// The provider's coin is not a configured currency.
    UnknownCurrency,
    /// The provider's amount is not acceptable (syntax, scale, bound).
    InvalidAmount,
    /// No deposit order is registered for the deposit.
    DepositNotFound,
    /// No withdrawal is known for the notification.
    WithdrawalNotFound,
    /// The provider's record contradicts the notification or the ledger.
    RecordMismatch,
    /// A provider status the ledger does not know.
    UnsupportedStatus,
    /// The same id exists with other fields (a deposit credited otherwise, a withdrawal or
    /// order with other fields, a settlement account that cannot settle).
    Conflict,
    /// A derived id is not valid: a bug, never the sender's fault.
    Internal,
}

/// A refusal: its kind, the metric's `result` label, and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// The `result` label of `ledger_webhooks_total`.
    pub result: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, result: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { kind, result, message: message.into() }
    }

    pub fn account_not_found(account: &str) -> Refusal {
        Refusal::new(RefusalKind::AccountNotFound, "account_not_found", format!("account {account} does not exist"))
    }

    pub fn record_mismatch(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::RecordMismatch, "record_mismatch", message)
    }

    pub fn withdrawal_not_found(id: &str) -> Refusal {
        Refusal::new(
            RefusalKind::WithdrawalNotFound,
            "withdrawal_not_found",
            format!("no withdrawal {} for this provider", crate::facts::bounded_text(id)),
        )
    }

    pub fn internal(what: &str) -> Refusal {
        Refusal::new(RefusalKind::Internal, "internal", format!("{what} is not valid"))
    }
}
