//! The deposit state machine: Processing → Credited | Failed | Risky, never back.
//!
//! A deposit is credited exactly once, by the plain transfer `dep:{provider}:{deposit_id}` from
//! the provider's settlement account. The functions here decide, from the stored fact, what a
//! delivery reported and (for a fact that is not final) whether the credit transfer exists,
//! what to write and what to answer. A late Processing changes nothing (`late_status`); a
//! failure after a success changes nothing and is counted (`failed_after_success`), as is a
//! success after a failure (`success_after_failure`).

use engine::{Account, Amount, Currency, Id, Metadata, Transfer, TransferRequest, WrittenAmount};

use crate::facts::{DepositCredit, DepositFact, DepositStatus, Fact, ReportedDetails, bounded_text};
use crate::ids;
use crate::refusal::{Refusal, RefusalKind};

/// How a delivery reports a deposit's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Processing,
    Success,
    Failed,
}

impl Reported {
    /// A provider's status word as a report (`Success`; `Failed` or `Rejected`; anything else
    /// is still in progress).
    pub fn of_status(status: &str) -> Reported {
        match status {
            "Success" => Reported::Success,
            "Failed" | "Rejected" => Reported::Failed,
            _ => Reported::Processing,
        }
    }
}

/// A deposit a provider reports as completed, with what the ledger needs to credit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub provider: String,
    pub deposit_id: String,
    pub account: Id,
    /// In minor units of `currency`.
    pub amount: Amount,
    pub currency: Currency,
    pub order_id: Option<String>,
    /// The provider's status word (`completed`, `Success`).
    pub provider_status: String,
}

/// A deposit a provider reports as not (yet) credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncredited {
    pub provider: String,
    pub deposit_id: String,
    pub outcome: UncreditedOutcome,
    pub provider_status: String,
    pub reported: ReportedDetails,
    pub order_id: Option<String>,
}

/// How a deposit ends, or stays, without a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UncreditedOutcome {
    /// Still in progress at the provider.
    Processing,
    /// The provider reports it failed.
    Failed,
    /// The provider reports success but flags it as risky: never credited automatically.
    Risky,
}

/// What to write and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Facts to write, together (one log submission), in this order.
    pub writes: Vec<Fact>,
    /// The `result` of the delivery.
    pub result: &'static str,
}

impl Decision {
    fn answer(result: &'static str) -> Decision {
        Decision { writes: Vec::new(), result }
    }
}

/// The answer to a delivery for a deposit whose fact is final, if it is: such a delivery
/// changes nothing.
pub fn answer_final(fact: Option<&DepositFact>, reported: Reported) -> Option<&'static str> {
    let fact = fact.filter(|fact| fact.status.is_final())?;
    Some(match (fact.status, reported) {
        (_, Reported::Processing) => "late_status",
        (DepositStatus::Credited, Reported::Failed) => "failed_after_success",
        (DepositStatus::Failed, Reported::Success) => "success_after_failure",
        (DepositStatus::Risky, Reported::Failed) => "late_status",
        _ => "duplicate",
    })
}

/// Before a credit: `Ok(Some(result))` when nothing is to be done (a duplicate, a success after
/// a failure), `Ok(None)` to go on and credit, `Err` when the delivery contradicts the credit
/// already made.
pub fn before_credit(fact: Option<&DepositFact>, credit: &Credit) -> Result<Option<&'static str>, Refusal> {
    let Some(fact) = fact else { return Ok(None) };
    match fact.status {
        DepositStatus::Credited => {
            let same = fact.credit.as_ref().is_some_and(|stored| {
                stored.account == credit.account && stored.amount == credit.amount && stored.currency == credit.currency
            });
            if !same {
                return Err(credit_conflict(fact, credit));
            }
            Ok(Some("duplicate"))
        }
        DepositStatus::Failed => Ok(Some("success_after_failure")),
        DepositStatus::Risky => Ok(Some("duplicate")),
        DepositStatus::Processing => Ok(None),
    }
}

fn credit_conflict(fact: &DepositFact, credit: &Credit) -> Refusal {
    let stored = match &fact.credit {
        Some(stored) => {
            format!("{} {} to {}", stored.currency.format(stored.amount), stored.currency.code, stored.account)
        }
        None => "?".to_owned(),
    };
    Refusal::new(
        RefusalKind::Conflict,
        "conflict",
        format!(
            "deposit {} was credited already as {stored}; this delivery says {} {} to {} and changes nothing",
            credit.deposit_id,
            credit.currency.format(credit.amount),
            credit.currency.code,
            credit.account
        ),
    )
}

/// The transfer that credits `credit` to `account` (which must be in the deposit's currency)
/// from the provider's `settlement` account.
pub fn credit_request(credit: &Credit, account: &Account, settlement: Id) -> Result<TransferRequest, Refusal> {
    if account.currency != credit.currency {
        return Err(Refusal::new(
            RefusalKind::CurrencyMismatch,
            "currency_mismatch",
            format!("account {} is in {}, the deposit in {}", account.id, account.currency.code, credit.currency.code),
        ));
    }
    let id = ids::deposit_transfer(&credit.provider, &credit.deposit_id)
        .map_err(|_| Refusal::internal("a deposit transfer id"))?;
    let minor_units = u128::try_from(credit.amount.minor_units()).map_err(|_| Refusal::internal("a deposit amount"))?;
    Ok(TransferRequest {
        id,
        debit_account: settlement,
        credit_account: account.id.clone(),
        amount: WrittenAmount::from_minor_units(minor_units, credit.currency.scale),
        pending: false,
        timeout_seconds: 0,
        description: format!("deposit {} via {}", credit.deposit_id, credit.provider),
        metadata: Metadata::new(),
    })
}

/// After the credit transfer `transfer` was made (`created`) or found (a delivery that stopped
/// before its fact made it): the facts to write and the result.
pub fn credited(credit: &Credit, transfer: &Transfer, created: bool, now_ms: i64) -> Decision {
    let fact = DepositFact {
        provider: credit.provider.clone(),
        deposit_id: credit.deposit_id.clone(),
        status: DepositStatus::Credited,
        provider_status: bounded_text(&credit.provider_status),
        credit: Some(DepositCredit {
            account: credit.account.clone(),
            amount: credit.amount,
            currency: credit.currency.clone(),
            transfer: transfer.id.clone(),
        }),
        reported: ReportedDetails::default(),
        order_id: credit.order_id.clone(),
        updated_at_ms: now_ms,
    };
    Decision { writes: vec![Fact::Deposit(fact)], result: if created { "credited" } else { "duplicate" } }
}

/// A delivery that reports no credit (still processing, failed, risky). `credit_transfer` is
/// the transfer `dep:{provider}:{deposit_id}`, looked up whenever the stored fact is not final:
/// when it exists although the fact does not say so (a crash between the two), the fact is
/// repaired from it and nothing else changes.
pub fn uncredited(
    fact: Option<&DepositFact>,
    report: &Uncredited,
    credit_transfer: Option<&Transfer>,
    now_ms: i64,
) -> Decision {
    let reported = match report.outcome {
        UncreditedOutcome::Processing => Reported::Processing,
        UncreditedOutcome::Failed => Reported::Failed,
        UncreditedOutcome::Risky => Reported::Success,
    };
    if let Some(result) = answer_final(fact, reported) {
        return Decision::answer(result);
    }
    if let Some(transfer) = credit_transfer {
        let repaired = DepositFact {
            provider: report.provider.clone(),
            deposit_id: report.deposit_id.clone(),
            status: DepositStatus::Credited,
            provider_status: bounded_text(&report.provider_status),
            credit: Some(DepositCredit {
                account: transfer.credit_account.clone(),
                amount: transfer.amount,
                currency: transfer.currency.clone(),
                transfer: transfer.id.clone(),
            }),
            reported: ReportedDetails::default(),
            order_id: fact.and_then(|fact| fact.order_id.clone()).or_else(|| report.order_id.clone()),
            updated_at_ms: now_ms,
        };
        let result = match report.outcome {
            UncreditedOutcome::Failed => "failed_after_success",
            UncreditedOutcome::Processing => "late_status",
            UncreditedOutcome::Risky => "duplicate",
        };
        return Decision { writes: vec![Fact::Deposit(repaired)], result };
    }
    let (status, result) = match report.outcome {
        UncreditedOutcome::Processing if fact.is_some() => return Decision::answer("duplicate"),
        UncreditedOutcome::Processing => (DepositStatus::Processing, "recorded"),
        UncreditedOutcome::Failed => (DepositStatus::Failed, "failed"),
        UncreditedOutcome::Risky => (DepositStatus::Risky, "risky"),
    };
    let written = DepositFact {
        provider: report.provider.clone(),
        deposit_id: report.deposit_id.clone(),
        status,
        provider_status: bounded_text(&report.provider_status),
        credit: None,
        reported: report.reported.clone().bounded(),
        order_id: report.order_id.as_deref().map(bounded_text),
        updated_at_ms: now_ms,
    };
    Decision { writes: vec![Fact::Deposit(written)], result }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Overdraft, TransferStatus};

    fn id(text: &str) -> Id {
        Id::parse_internal(text).unwrap()
    }

    fn usd() -> Currency {
        Currency::new("USD", 2)
    }

    fn credit() -> Credit {
        Credit {
            provider: "processor".to_owned(),
            deposit_id: "d-1".to_owned(),
            account: id("alice"),
            amount: Amount::from_minor_units(500),
            currency: usd(),
            order_id: None,
            provider_status: "completed".to_owned(),
        }
    }

    fn account(name: &str, currency: Currency) -> Account {
        Account::new(id(name), currency, Overdraft::Limited(Amount::ZERO), Metadata::new(), 0, 1)
    }

    fn transfer(credit: &Credit) -> Transfer {
        Transfer {
            id: ids::deposit_transfer(&credit.provider, &credit.deposit_id).unwrap(),
            debit_account: id("settlement:processor:USD"),
            credit_account: credit.account.clone(),
            amount: credit.amount,
            currency: credit.currency.clone(),
            pending: false,
            timeout_seconds: 0,
            description: String::new(),
            metadata: Metadata::new(),
            created_at_ms: 5,
            seq: 9,
            status: TransferStatus::Posted,
            posted_amount: credit.amount,
            last_seq: 9,
        }
    }

    fn stored(decision: &Decision) -> DepositFact {
        match &decision.writes[..] {
            [Fact::Deposit(fact)] => fact.clone(),
            other => panic!("expected one deposit fact, got {other:?}"),
        }
    }

    fn report(outcome: UncreditedOutcome) -> Uncredited {
        Uncredited {
            provider: "processor".to_owned(),
            deposit_id: "d-1".to_owned(),
            outcome,
            provider_status: "Failed".to_owned(),
            reported: ReportedDetails { amount: Some("1".repeat(100)), ..ReportedDetails::default() },
            order_id: None,
        }
    }

    #[test]
    fn a_credit_happens_once_and_a_different_one_is_refused() {
        let credit = credit();
        assert_eq!(before_credit(None, &credit), Ok(None));
        let request = credit_request(&credit, &account("alice", usd()), id("settlement:processor:USD")).unwrap();
        assert_eq!(request.id.as_str(), "dep:processor:d-1");
        assert!(request.amount.same_value(credit.amount, 2));
        let decision = credited(&credit, &transfer(&credit), true, 10);
        assert_eq!(decision.result, "credited");
        let fact = stored(&decision);
        assert_eq!(before_credit(Some(&fact), &credit), Ok(Some("duplicate")));
        let other = Credit { amount: Amount::from_minor_units(501), ..credit.clone() };
        assert_eq!(before_credit(Some(&fact), &other).unwrap_err().kind, RefusalKind::Conflict);
        assert_eq!(credited(&credit, &transfer(&credit), false, 10).result, "duplicate");
    }

    #[test]
    fn the_account_must_be_in_the_deposit_currency() {
        let refusal =
            credit_request(&credit(), &account("alice", Currency::new("EUR", 2)), id("settlement:processor:USD"))
                .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::CurrencyMismatch);
    }

    #[test]
    fn statuses_only_move_forward() {
        let failed = stored(&uncredited(None, &report(UncreditedOutcome::Failed), None, 1));
        assert_eq!(failed.status, DepositStatus::Failed);
        assert_eq!(failed.reported.amount.as_deref().map(str::len), Some(64), "provider text is bounded");
        assert_eq!(before_credit(Some(&failed), &credit()), Ok(Some("success_after_failure")));
        let late = uncredited(Some(&failed), &report(UncreditedOutcome::Processing), None, 2);
        assert_eq!((late.result, late.writes.len()), ("late_status", 0));
        let processing = stored(&uncredited(None, &report(UncreditedOutcome::Processing), None, 1));
        assert_eq!(processing.status, DepositStatus::Processing);
        let again = uncredited(Some(&processing), &report(UncreditedOutcome::Processing), None, 2);
        assert_eq!((again.result, again.writes.len()), ("duplicate", 0));
        let risky = stored(&uncredited(Some(&processing), &report(UncreditedOutcome::Risky), None, 3));
        assert_eq!(risky.status, DepositStatus::Risky);
        let credited_fact = stored(&credited(&credit(), &transfer(&credit()), true, 4));
        assert_eq!(answer_final(Some(&credited_fact), Reported::Failed), Some("failed_after_success"));
        assert_eq!(answer_final(Some(&processing), Reported::Failed), None);
    }

    #[test]
    fn a_credit_without_its_fact_is_repaired_from_the_transfer() {
        let credit = credit();
        let transfer = transfer(&credit);
        let decision = uncredited(None, &report(UncreditedOutcome::Failed), Some(&transfer), 7);
        assert_eq!(decision.result, "failed_after_success");
        let fact = stored(&decision);
        assert_eq!(fact.status, DepositStatus::Credited);
        assert_eq!(fact.credit.unwrap().amount, credit.amount);
        let risky = uncredited(None, &report(UncreditedOutcome::Risky), Some(&transfer), 7);
        assert_eq!(risky.result, "duplicate");
    }

    #[test]
    fn reports_read_provider_status_words() {
        assert_eq!(Reported::of_status("Success"), Reported::Success);
        assert_eq!(Reported::of_status("Rejected"), Reported::Failed);
        assert_eq!(Reported::of_status("WaitingApproval"), Reported::Processing);
    }
}
