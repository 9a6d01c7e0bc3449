//! ledgerd's pure domain.
//!
//! This crate owns the vocabulary and the rules of the ledger: identifiers, amounts and their
//! per-currency scale, account state, transfers and their life cycle, every rejection code of
//! the contract, the log records with their on-disk encoding, and the one `apply` that both the
//! live path and recovery use. It does no IO, knows no async runtime and reads no clock: time
//! is passed in as milliseconds since the Unix epoch.

pub mod account;
pub mod amount;
pub mod id;
pub mod ledger;
pub mod record;
pub mod rejection;
pub mod rules;
pub mod transfer;

pub use account::{Account, Metadata, Overdraft};
pub use amount::{Amount, AmountError, Currency, CurrencyTable, WrittenAmount};
pub use id::{Id, IdError, IdMap, IdSet};
pub use ledger::{ApplyError, InvariantViolation, Ledger, Side, TransferBook, TransferDecision};
pub use record::{DecodeError, Group, Record, Unit};
pub use rejection::Rejection;
pub use transfer::{Transfer, TransferRequest, TransferStatus};
