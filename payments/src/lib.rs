//! ledgerd's payment flows, as pure state machines.
//!
//! Deposits and withdrawals reach the ledger as signed webhooks from payment providers. This
//! crate owns what they mean and what the ledger does about them, without HTTP, JSON, clocks or
//! tasks: the typed facts the ledger keeps about each deposit, withdrawal and deposit order, and
//! their versioned encoding ([`facts`]); the ids the ledger derives for their money
//! ([`ids`]); and the decisions, each a function from (the stored fact, what the provider
//! reported, what the ledger holds) to (the fact to write, the money to move, the outcome):
//! [`deposit`], [`withdrawal`], [`order`]. [`ccpayment`] turns a CCPayment record (fetched by
//! the caller) into a report. A decision that refuses says why in a [`Refusal`], which the HTTP
//! layer maps to an answer.
//!
//! The caller (the webhook service in `api`) interprets the decisions: it serializes the work
//! of one deposit, withdrawal or order under that key's lock, reads the fact and the ledger's
//! transfer, asks for a decision, moves the money through the ledger first and writes the fact
//! second. Because the transfer ids are derived and the ledger's transfers are idempotent, a
//! crash between the two converges: every decision on a fact that is not final looks at the
//! transfer and repairs the fact from it.

/// Every outcome of a verified delivery that the ledger acted on (the `result` label of its
/// metric; a refused delivery is labelled with its error code instead): money `credited`, a
/// deposit marked `failed` or `risky`, a withdrawal's progress `recorded`, its hold `posted`
/// or `voided`, a `duplicate`, a `late_status` that changes nothing, a contradiction of a
/// final state (`failed_after_success`, `success_after_failure`), or an event `ignored`.
pub const OUTCOMES: [&str; 11] = [
    "credited",
    "failed",
    "risky",
    "recorded",
    "posted",
    "voided",
    "duplicate",
    "late_status",
    "failed_after_success",
    "success_after_failure",
    "ignored",
];

pub mod ccpayment;
pub mod deposit;
pub mod facts;
pub mod ids;
pub mod order;
pub mod refusal;
pub mod withdrawal;

pub use facts::{
    DepositCredit, DepositFact, DepositOrderFact, DepositStatus, Fact, FactDecodeError, FactKind, ReportedDetails,
    WithdrawalFact, WithdrawalStatus,
};
pub use refusal::{Refusal, RefusalKind};
