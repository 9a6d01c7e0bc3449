//! The facts the ledger keeps about deposits, withdrawals and deposit orders, and their
//! encoding.
//!
//! Each fact is written to the log as one `engine::Record::External` record: its
//! [`FactKind::name`] is the record's `kind`, [`Fact::key`] its `key`, and [`Fact::encode`] its
//! payload: a format version byte followed by the postcard encoding of the fact. The latest
//! record of a (kind, key) is the fact. Money the ledger decided is typed ([`DepositCredit`],
//! the withdrawal's account, amount and currency); what a provider reported without the
//! ledger acting on it is kept as the provider's text ([`ReportedDetails`], each value at most
//! [`REPORTED_CHARS_MAX`] characters).
//!
//! Enum variants and struct fields are append-only within a format version; a change of shape
//! gets a new [`FACT_FORMAT_VERSION`] and a decoder for the old one.

use engine::{Amount, Currency, Id};
use serde::{Deserialize, Serialize};

/// Version byte of the current fact encoding.
pub const FACT_FORMAT_VERSION: u8 = 1;
/// Longest provider text kept in a fact (a status word, an amount or account as reported).
pub const REPORTED_CHARS_MAX: usize = 64;
/// Most deposits an order's fact lists.
pub const ORDER_DEPOSITS_MAX: usize = 1000;

/// Where a deposit is. Only forward: `Processing` → one of the others, which are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositStatus {
    /// Seen, not settled yet (CCPayment `Processing`).
    Processing,
    /// Credited: the transfer `dep:{provider}:{deposit_id}` exists.
    Credited,
    /// The provider says it failed; nothing was credited.
    Failed,
    /// The provider's record is `Success` but flagged as risky: recorded, not credited.
    Risky,
}

impl DepositStatus {
    pub fn is_final(self) -> bool {
        self != DepositStatus::Processing
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DepositStatus::Processing => "processing",
            DepositStatus::Credited => "credited",
            DepositStatus::Failed => "failed",
            DepositStatus::Risky => "risky",
        }
    }
}

/// What a provider reported of a deposit the ledger did not credit, as its text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedDetails {
    pub account: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
}

impl ReportedDetails {
    /// Each value cut to [`REPORTED_CHARS_MAX`] characters.
    pub fn bounded(self) -> ReportedDetails {
        ReportedDetails {
            account: self.account.map(|text| bounded_text(&text)),
            amount: self.amount.map(|text| bounded_text(&text)),
            currency: self.currency.map(|text| bounded_text(&text)),
        }
    }
}

/// At most [`REPORTED_CHARS_MAX`] characters of `text`.
pub fn bounded_text(text: &str) -> String {
    text.chars().take(REPORTED_CHARS_MAX).collect()
}

/// The credit of a deposit, as the ledger made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositCredit {
    pub account: Id,
    pub amount: Amount,
    pub currency: Currency,
    /// `dep:{provider}:{deposit_id}`.
    pub transfer: Id,
}

/// What the ledger knows of one deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositFact {
    pub provider: String,
    pub deposit_id: String,
    pub status: DepositStatus,
    /// The provider's own status word of the last delivery acted on (bounded).
    pub provider_status: String,
    /// Set when `status` is `Credited`.
    pub credit: Option<DepositCredit>,
    /// What the provider reported, for a deposit not credited.
    pub reported: ReportedDetails,
    /// The deposit order it belongs to (CCPayment `ApiDeposit`).
    pub order_id: Option<String>,
    pub updated_at_ms: i64,
}

impl DepositFact {
    /// The key of a deposit's fact: `{provider}:{deposit_id}`.
    pub fn key_of(provider: &str, deposit_id: &str) -> String {
        format!("{provider}:{deposit_id}")
    }
}

/// Where a withdrawal is, as the provider reported it. The money's state is the hold's
/// (`wd:{provider}:{id}`): pending, posted (completed) or voided (failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WithdrawalStatus {
    /// Held; the provider has said nothing yet.
    Pending,
    /// The provider waits for an approval (CCPayment `WaitingApproval`).
    WaitingApproval,
    /// The provider is sending it (CCPayment `Processing`).
    Processing,
    /// Sent: the hold is posted.
    Completed,
    /// Failed or rejected: the hold is voided.
    Failed,
}

impl WithdrawalStatus {
    pub fn is_final(self) -> bool {
        matches!(self, WithdrawalStatus::Completed | WithdrawalStatus::Failed)
    }

    /// The status `GET /v1/withdrawals/{id}` shows: `pending`, `completed` or `failed`.
    pub fn public_name(self) -> &'static str {
        match self {
            WithdrawalStatus::Pending | WithdrawalStatus::WaitingApproval | WithdrawalStatus::Processing => "pending",
            WithdrawalStatus::Completed => "completed",
            WithdrawalStatus::Failed => "failed",
        }
    }
}

/// What the ledger knows of one withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalFact {
    pub id: Id,
    pub provider: String,
    pub account: Id,
    pub amount: Amount,
    pub currency: Currency,
    /// `wd:{provider}:{id}`.
    pub transfer: Id,
    pub status: WithdrawalStatus,
    /// The provider's own status word of the last delivery acted on.
    pub provider_status: Option<String>,
    /// The provider's record id, once a delivery named one.
    pub record_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// An expected deposit, registered with `POST /v1/deposits` (CCPayment `ApiDeposit` credits
/// its account), with the deposits seen for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositOrderFact {
    pub id: Id,
    pub account: Id,
    pub provider: String,
    pub currency: Currency,
    /// Ids of the deposits of this order (at most [`ORDER_DEPOSITS_MAX`], first seen first).
    pub deposits: Vec<String>,
    pub created_at_ms: i64,
}

/// Which of the three a fact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactKind {
    Deposit,
    Withdrawal,
    DepositOrder,
}

impl FactKind {
    /// The `kind` of the fact's `External` record.
    pub fn name(self) -> &'static str {
        match self {
            FactKind::Deposit => "payments.deposit",
            FactKind::Withdrawal => "payments.withdrawal",
            FactKind::DepositOrder => "payments.deposit_order",
        }
    }

    /// The kind named `name`, if it is one of this crate's.
    pub fn of_name(name: &str) -> Option<FactKind> {
        [FactKind::Deposit, FactKind::Withdrawal, FactKind::DepositOrder].into_iter().find(|kind| kind.name() == name)
    }
}

/// A fact to write or read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fact {
    Deposit(DepositFact),
    Withdrawal(WithdrawalFact),
    DepositOrder(DepositOrderFact),
}

/// A recorded payload that is not a sound fact: a corrupt or foreign log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment fact ({kind}, {key}) does not decode: {reason}")]
pub struct FactDecodeError {
    pub kind: String,
    pub key: String,
    pub reason: String,
}

impl Fact {
    pub fn kind(&self) -> FactKind {
        match self {
            Fact::Deposit(_) => FactKind::Deposit,
            Fact::Withdrawal(_) => FactKind::Withdrawal,
            Fact::DepositOrder(_) => FactKind::DepositOrder,
        }
    }

    /// The key of the fact within its kind.
    pub fn key(&self) -> String {
        match self {
            Fact::Deposit(fact) => DepositFact::key_of(&fact.provider, &fact.deposit_id),
            Fact::Withdrawal(fact) => fact.id.to_string(),
            Fact::DepositOrder(fact) => fact.id.to_string(),
        }
    }

    /// The version byte, then the postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data always encodes into a Vec.
        postcard::to_extend(self, vec![FACT_FORMAT_VERSION]).expect("postcard encoding into a Vec is infallible")
    }

    /// The fact recorded as (`kind`, `key`, `payload`); checks that the payload is a fact of
    /// that kind and key.
    pub fn decode(kind: &str, key: &str, payload: &[u8]) -> Result<Fact, FactDecodeError> {
        let failed = |reason: String| FactDecodeError { kind: kind.to_owned(), key: key.to_owned(), reason };
        let (version, body) = payload.split_first().ok_or_else(|| failed("empty payload".to_owned()))?;
        if *version != FACT_FORMAT_VERSION {
            return Err(failed(format!("unknown format version {version}")));
        }
        let fact: Fact = postcard::from_bytes(body).map_err(|error| failed(error.to_string()))?;
        if fact.kind().name() != kind || fact.key() != key {
            return Err(failed(format!("its payload is the fact ({}, {})", fact.kind().name(), fact.key())));
        }
        Ok(fact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Id {
        Id::parse_internal(text).unwrap()
    }

    #[test]
    fn facts_round_trip_and_refuse_what_is_not_theirs() {
        let facts = [
            Fact::Deposit(DepositFact {
                provider: "processor".to_owned(),
                deposit_id: "d-1".to_owned(),
                status: DepositStatus::Credited,
                provider_status: "completed".to_owned(),
                credit: Some(DepositCredit {
                    account: id("alice"),
                    amount: Amount::from_minor_units(500),
                    currency: Currency::new("USD", 2),
                    transfer: id("dep:processor:d-1"),
                }),
                reported: ReportedDetails::default(),
                order_id: Some("o-1".to_owned()),
                updated_at_ms: 7,
            }),
            Fact::Withdrawal(WithdrawalFact {
                id: id("w-1"),
                provider: "processor".to_owned(),
                account: id("alice"),
                amount: Amount::from_minor_units(10_i128.pow(30)),
                currency: Currency::new("ETH", 18),
                transfer: id("wd:processor:w-1"),
                status: WithdrawalStatus::Processing,
                provider_status: Some("Processing".to_owned()),
                record_id: None,
                created_at_ms: 1,
                updated_at_ms: 2,
            }),
            Fact::DepositOrder(DepositOrderFact {
                id: id("o-1"),
                account: id("alice"),
                provider: "ccpayment".to_owned(),
                currency: Currency::new("USDT", 6),
                deposits: vec!["r-1".to_owned()],
                created_at_ms: 3,
            }),
        ];
        for fact in facts {
            let payload = fact.encode();
            let (kind, key) = (fact.kind().name(), fact.key());
            assert_eq!(Fact::decode(kind, &key, &payload).unwrap(), fact);
            assert!(Fact::decode(kind, "another key", &payload).is_err());
            assert!(Fact::decode("payments.other", &key, &payload).is_err());
            let mut wrong_version = payload.clone();
            wrong_version[0] = 9;
            assert!(Fact::decode(kind, &key, &wrong_version).unwrap_err().reason.contains("version 9"));
            assert!(Fact::decode(kind, &key, &payload[..payload.len() - 1]).is_err());
            assert_eq!(FactKind::of_name(kind), Some(fact.kind()));
        }
    }

    #[test]
    fn reported_text_is_bounded() {
        let long = "x".repeat(500);
        let details =
            ReportedDetails { account: Some(long.clone()), amount: Some(long.clone()), currency: Some(long) }.bounded();
        assert_eq!(details.account.unwrap().len(), REPORTED_CHARS_MAX);
    }
}
