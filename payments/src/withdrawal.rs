//! The withdrawal state machine.
//!
//! `POST /v1/withdrawals` holds the funds: the pending transfer `wd:{provider}:{id}` from the
//! account to the provider's settlement account. The provider's reports move the withdrawal
//! forward (Pending → WaitingApproval → Processing → Completed | Failed); completed posts the
//! hold, failed or rejected voids it. The hold is the truth about the money: posted is
//! completed, voided is failed, whatever a late or contradictory report says.

use engine::{Account, Id, Metadata, Transfer, TransferRequest, TransferStatus, WrittenAmount};

use crate::facts::{WithdrawalFact, WithdrawalStatus, bounded_text};
use crate::ids;
use crate::refusal::{Refusal, RefusalKind};

/// A withdrawal a client asks for, after syntax checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRequest {
    pub id: Id,
    pub account: Id,
    /// As written; checked against the account's currency.
    pub amount: WrittenAmount,
    pub provider: String,
}

/// What a provider reports of a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub status: WithdrawalStatus,
    /// The provider's own status word.
    pub provider_status: String,
    /// What the provider's record says, when one was fetched, to compare with the withdrawal.
    pub record: Option<RecordCheck>,
}

/// The parts of a provider's withdrawal record the ledger compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCheck {
    pub record_id: String,
    pub coin: String,
    /// The record's amount as the provider wrote it.
    pub amount: Option<String>,
}

/// What to do with the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldAction {
    Post,
    Void,
}

/// The decision on a report: what to do with the hold, the fact to write once that is done,
/// and the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub action: Option<HoldAction>,
    pub write: Option<WithdrawalFact>,
    pub result: &'static str,
}

/// Why a withdrawal request is refused before anything is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefusal {
    /// The same id with other fields.
    Conflict(String),
    /// The amount does not fit the account's currency (the client's mistake).
    InvalidAmount(engine::AmountError),
    /// A derived id is not valid (a bug).
    Internal(Refusal),
}

/// A request for a withdrawal that exists already: `Ok(true)` when it is the same (a replay),
/// a conflict otherwise. `Ok(false)` when there is none: go on.
pub fn before_create(fact: Option<&WithdrawalFact>, request: &WithdrawalRequest) -> Result<bool, CreateRefusal> {
    let Some(fact) = fact else { return Ok(false) };
    let same = fact.account == request.account
        && fact.provider == request.provider
        && request.amount.same_value(fact.amount, fact.currency.scale);
    if !same {
        return Err(CreateRefusal::Conflict(format!("withdrawal {} exists with other fields", request.id)));
    }
    Ok(true)
}

/// The hold of a new withdrawal from `account` to the provider's `settlement` account.
pub fn hold_request(
    request: &WithdrawalRequest,
    account: &Account,
    settlement: Id,
) -> Result<TransferRequest, CreateRefusal> {
    account.currency.normalize(&request.amount).map_err(CreateRefusal::InvalidAmount)?;
    let id = ids::withdrawal_transfer(&request.provider, request.id.as_str())
        .map_err(|_| CreateRefusal::Internal(Refusal::internal("a withdrawal transfer id")))?;
    Ok(TransferRequest {
        id,
        debit_account: account.id.clone(),
        credit_account: settlement,
        amount: request.amount,
        pending: true,
        timeout_seconds: 0,
        description: format!("withdrawal {} via {}", request.id, request.provider),
        metadata: Metadata::new(),
    })
}

/// The fact of a withdrawal whose hold `hold` was just made.
pub fn created(request: &WithdrawalRequest, hold: &Transfer, now_ms: i64) -> WithdrawalFact {
    fact_of_hold(request.id.clone(), &request.provider, hold, now_ms)
}

/// The fact of a withdrawal whose hold exists without it (a crash between the two).
pub fn rebuilt(id: Id, provider: &str, hold: &Transfer, now_ms: i64) -> WithdrawalFact {
    fact_of_hold(id, provider, hold, now_ms)
}

fn fact_of_hold(id: Id, provider: &str, hold: &Transfer, now_ms: i64) -> WithdrawalFact {
    WithdrawalFact {
        id,
        provider: provider.to_owned(),
        account: hold.debit_account.clone(),
        amount: hold.amount,
        currency: hold.currency.clone(),
        transfer: hold.id.clone(),
        status: WithdrawalStatus::Pending,
        provider_status: None,
        record_id: None,
        created_at_ms: hold.created_at_ms,
        updated_at_ms: now_ms,
    }
}

/// The decision on a report for the withdrawal `fact` of `provider`, whose hold is now in
/// `hold`.
pub fn settle(
    fact: &WithdrawalFact,
    provider: &str,
    report: &Report,
    hold: TransferStatus,
    now_ms: i64,
) -> Result<Settlement, Refusal> {
    if fact.provider != provider {
        return Err(Refusal::withdrawal_not_found(fact.id.as_str()));
    }
    if let Some(record) = &report.record {
        check_record(fact, record)?;
    }
    use HoldAction::{Post, Void};
    use WithdrawalStatus::{Completed, Failed};
    let (result, action, status) = match (report.status, hold) {
        (Completed, TransferStatus::Pending) => ("posted", Some(Post), Completed),
        (Failed, TransferStatus::Pending) => ("voided", Some(Void), Failed),
        (Completed, TransferStatus::Posted) => ("duplicate", None, Completed),
        (Failed, TransferStatus::Posted) => ("failed_after_success", None, Completed),
        (Completed, _) => ("success_after_failure", None, Failed),
        (Failed, _) => ("duplicate", None, Failed),
        (progress, TransferStatus::Pending) => {
            if progress > fact.status {
                ("recorded", None, progress)
            } else if progress == fact.status {
                ("duplicate", None, progress)
            } else {
                ("late_status", None, fact.status)
            }
        }
        (_, TransferStatus::Posted) => ("late_status", None, Completed),
        (_, _) => ("late_status", None, Failed),
    };
    let provider_status = bounded_text(&report.provider_status);
    let record_id = report.record.as_ref().map(|record| bounded_text(&record.record_id));
    let changed = status != fact.status
        || (action.is_some() && fact.provider_status.as_deref() != Some(provider_status.as_str()))
        || (record_id.is_some() && fact.record_id.is_none());
    let write = changed.then(|| {
        let mut next = fact.clone();
        next.status = status;
        if status == report.status {
            next.provider_status = Some(provider_status);
        }
        if next.record_id.is_none() {
            next.record_id = record_id;
        }
        next.updated_at_ms = now_ms;
        next
    });
    Ok(Settlement { action, write, result })
}

/// A provider's record must be of the withdrawal's coin and amount.
fn check_record(fact: &WithdrawalFact, record: &RecordCheck) -> Result<(), Refusal> {
    if record.coin != *fact.currency.code {
        return Err(Refusal::record_mismatch(format!(
            "the record is in `{}`, withdrawal {} in {}",
            bounded_text(&record.coin),
            fact.id,
            fact.currency.code
        )));
    }
    let reported = record.amount.as_deref().and_then(|text| text.parse::<WrittenAmount>().ok());
    if !reported.is_some_and(|reported| reported.same_value(fact.amount, fact.currency.scale)) {
        return Err(Refusal::record_mismatch(format!(
            "the record's amount {} is not withdrawal {}'s {}",
            bounded_text(record.amount.as_deref().unwrap_or("(none)")),
            fact.id,
            fact.currency.format(fact.amount)
        )));
    }
    Ok(())
}

/// A provider status word as a withdrawal status, `None` for one the ledger does not know.
pub fn status_of(word: &str) -> Option<WithdrawalStatus> {
    Some(match word {
        "Success" => WithdrawalStatus::Completed,
        "Failed" | "Rejected" => WithdrawalStatus::Failed,
        "Processing" => WithdrawalStatus::Processing,
        "WaitingApproval" => WithdrawalStatus::WaitingApproval,
        _ => return None,
    })
}

/// The refusal of a provider status the ledger does not know.
pub fn unsupported_status(word: &str) -> Refusal {
    Refusal::new(
        RefusalKind::UnsupportedStatus,
        "unsupported_status",
        format!("withdrawal record status `{}` is not one the ledger knows", bounded_text(word)),
    )
}

/// The answer to a report for a withdrawal of `provider` whose fact is final, if it is: such a
/// report changes nothing and needs no look-up of the provider's record.
pub fn answer_final(
    fact: Option<&WithdrawalFact>,
    provider: &str,
    reported: crate::deposit::Reported,
) -> Option<&'static str> {
    use crate::deposit::Reported;
    let fact = fact.filter(|fact| fact.status.is_final() && fact.provider == provider)?;
    Some(match (fact.status, reported) {
        (WithdrawalStatus::Completed, Reported::Success) | (WithdrawalStatus::Failed, Reported::Failed) => "duplicate",
        (WithdrawalStatus::Completed, Reported::Failed) => "failed_after_success",
        (WithdrawalStatus::Failed, Reported::Success) => "success_after_failure",
        _ => "late_status",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Amount, Currency};

    fn id(text: &str) -> Id {
        Id::parse_internal(text).unwrap()
    }

    fn request(amount: &str) -> WithdrawalRequest {
        WithdrawalRequest { id: id("w-1"), account: id("alice"), amount: amount.parse().unwrap(), provider: "p".into() }
    }

    fn hold() -> Transfer {
        Transfer {
            id: id("wd:p:w-1"),
            debit_account: id("alice"),
            credit_account: id("settlement:p:USD"),
            amount: Amount::from_minor_units(300),
            currency: Currency::new("USD", 2),
            pending: true,
            timeout_seconds: 0,
            description: String::new(),
            metadata: Metadata::new(),
            created_at_ms: 5,
            seq: 3,
            status: TransferStatus::Pending,
            posted_amount: Amount::ZERO,
            last_seq: 3,
        }
    }

    fn report(status: WithdrawalStatus) -> Report {
        Report { status, provider_status: format!("{status:?}"), record: None }
    }

    #[test]
    fn a_withdrawal_is_held_once_and_replays_by_value() {
        let fact = created(&request("3.00"), &hold(), 9);
        assert_eq!((fact.status, fact.amount), (WithdrawalStatus::Pending, Amount::from_minor_units(300)));
        assert_eq!(before_create(Some(&fact), &request("3")), Ok(true));
        assert!(matches!(before_create(Some(&fact), &request("3.01")), Err(CreateRefusal::Conflict(_))));
        assert_eq!(before_create(None, &request("3")), Ok(false));
        let account = engine::Account::new(
            id("alice"),
            Currency::new("USD", 2),
            engine::Overdraft::Limited(Amount::ZERO),
            Metadata::new(),
            0,
            1,
        );
        assert!(matches!(
            hold_request(&request("3.001"), &account, id("settlement:p:USD")),
            Err(CreateRefusal::InvalidAmount(_))
        ));
        let hold = hold_request(&request("3.00"), &account, id("settlement:p:USD")).unwrap();
        assert!(hold.pending && hold.id.as_str() == "wd:p:w-1");
    }

    #[test]
    fn reports_move_forward_and_the_hold_is_the_truth() {
        let fact = created(&request("3.00"), &hold(), 9);
        let processing =
            settle(&fact, "p", &report(WithdrawalStatus::Processing), TransferStatus::Pending, 10).unwrap();
        assert_eq!((processing.result, processing.action), ("recorded", None));
        let fact = processing.write.unwrap();
        let late = settle(&fact, "p", &report(WithdrawalStatus::WaitingApproval), TransferStatus::Pending, 11).unwrap();
        assert_eq!((late.result, late.write.is_none()), ("late_status", true));
        let done = settle(&fact, "p", &report(WithdrawalStatus::Completed), TransferStatus::Pending, 12).unwrap();
        assert_eq!((done.result, done.action), ("posted", Some(HoldAction::Post)));
        let fact = done.write.unwrap();
        assert_eq!(fact.status, WithdrawalStatus::Completed);
        let failed = settle(&fact, "p", &report(WithdrawalStatus::Failed), TransferStatus::Posted, 13).unwrap();
        assert_eq!((failed.result, failed.action, failed.write), ("failed_after_success", None, None));
        let duplicate = settle(&fact, "p", &report(WithdrawalStatus::Completed), TransferStatus::Posted, 13).unwrap();
        assert_eq!(duplicate.result, "duplicate");
        // Voided though the fact says pending: the hold wins.
        let pending = created(&request("3.00"), &hold(), 9);
        let after_void =
            settle(&pending, "p", &report(WithdrawalStatus::Completed), TransferStatus::Voided, 14).unwrap();
        assert_eq!(
            (after_void.result, after_void.write.unwrap().status),
            ("success_after_failure", WithdrawalStatus::Failed)
        );
        assert_eq!(
            settle(&pending, "other", &report(WithdrawalStatus::Completed), TransferStatus::Pending, 1)
                .unwrap_err()
                .kind,
            RefusalKind::WithdrawalNotFound
        );
    }

    #[test]
    fn a_record_must_match_the_withdrawal() {
        let fact = created(&request("3.00"), &hold(), 9);
        let with_record = |coin: &str, amount: &str| Report {
            status: WithdrawalStatus::Completed,
            provider_status: "Success".into(),
            record: Some(RecordCheck { record_id: "r-1".into(), coin: coin.into(), amount: Some(amount.into()) }),
        };
        let good = settle(&fact, "p", &with_record("USD", "3.0"), TransferStatus::Pending, 1).unwrap();
        assert_eq!(good.write.unwrap().record_id.as_deref(), Some("r-1"));
        for (coin, amount) in [("EUR", "3.00"), ("USD", "3.01"), ("USD", "x")] {
            let refusal = settle(&fact, "p", &with_record(coin, amount), TransferStatus::Pending, 1).unwrap_err();
            assert_eq!(refusal.kind, RefusalKind::RecordMismatch, "{coin} {amount}");
        }
    }

    #[test]
    fn status_words() {
        assert_eq!(status_of("Rejected"), Some(WithdrawalStatus::Failed));
        assert_eq!(status_of("Elsewhere"), None);
        assert_eq!(unsupported_status("Elsewhere").result, "unsupported_status");
    }
}
