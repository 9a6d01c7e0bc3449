//! CCPayment: a notification says only which record changed; the record, fetched from the
//! provider's API by the caller, decides. This module turns (notification, record) into the
//! report the state machines act on.
//!
//! Deposits credit `{referenceId|userId}:{coinSymbol}` (DirectDeposit, UserDeposit) or the
//! account of the deposit order named by `orderId` (ApiDeposit), for the amount the record
//! says, only when its status is `Success` and it is not flagged as risky. Withdrawals are
//! named by `orderId` = the withdrawal's id.

use engine::{Currency, CurrencyTable, Id};

use crate::deposit::{Credit, Reported, Uncredited, UncreditedOutcome};
use crate::facts::{DepositOrderFact, ReportedDetails, bounded_text};
use crate::refusal::{Refusal, RefusalKind};
use crate::withdrawal::{self, RecordCheck};

/// The CCPayment notification types the ledger acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    DirectDeposit,
    UserDeposit,
    ApiDeposit,
    ApiWithdrawal,
    UserWithdrawal,
}

impl NotificationKind {
    pub fn is_deposit(self) -> bool {
        matches!(self, NotificationKind::DirectDeposit | NotificationKind::UserDeposit | NotificationKind::ApiDeposit)
    }
}

/// A CCPayment notification: which record to fetch, and what it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub kind: NotificationKind,
    pub record_id: Id,
    /// `orderId` (ApiDeposit, withdrawals).
    pub order_id: Option<String>,
    /// `referenceId` (DirectDeposit) or `userId` (UserDeposit, UserWithdrawal).
    pub user: Option<String>,
    /// The status it claims (`Processing`, `Success`, ...): advisory only.
    pub status: String,
}

impl Notification {
    /// What the notification claims, to answer a final fact without a look-up.
    pub fn reported(&self) -> Reported {
        Reported::of_status(&self.status)
    }
}

/// The fields of a provider record the ledger reads (text as the provider sent it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderRecord {
    pub record_id: Option<String>,
    pub status: Option<String>,
    pub coin: Option<String>,
    pub amount: Option<String>,
    pub order_id: Option<String>,
    pub user_id: Option<String>,
    pub reference_id: Option<String>,
    pub risky: bool,
}

/// What a deposit's record reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositReport {
    Credit(Credit),
    Uncredited(Uncredited),
}

/// The deposit order an `ApiDeposit`'s record names, to be looked up before
/// [`deposit_report`].
pub fn order_id_of(notification: &Notification, record: &ProviderRecord) -> Option<String> {
    (notification.kind == NotificationKind::ApiDeposit)
        .then(|| record.order_id.clone().or_else(|| notification.order_id.clone()).unwrap_or_default())
}

/// The report of a deposit's record. `order` is the order [`order_id_of`] names (ApiDeposit).
pub fn deposit_report(
    provider: &str,
    notification: &Notification,
    record: &ProviderRecord,
    order: Option<&DepositOrderFact>,
    currencies: &CurrencyTable,
    amount_max: u128,
) -> Result<DepositReport, Refusal> {
    let status = record_status(record, notification)?;
    let coin = record.coin.clone().unwrap_or_default();
    let order_id = order_id_of(notification, record);
    let mut reported =
        ReportedDetails { account: None, amount: record.amount.clone(), currency: Some(coin.clone()) }.bounded();
    let uncredited = |outcome: UncreditedOutcome, reported: ReportedDetails| {
        DepositReport::Uncredited(Uncredited {
            provider: provider.to_owned(),
            deposit_id: notification.record_id.to_string(),
            outcome,
            provider_status: status.clone(),
            reported,
            order_id: order_id.clone(),
        })
    };
    match status.as_str() {
        "Processing" => return Ok(uncredited(UncreditedOutcome::Processing, reported)),
        "Failed" => return Ok(uncredited(UncreditedOutcome::Failed, reported)),
        "Success" => {}
        other => {
            return Err(Refusal::new(
                RefusalKind::UnsupportedStatus,
                "unsupported_status",
                format!("deposit record status `{}` is not one the ledger knows", bounded_text(other)),
            ));
        }
    }
    let account_text = match &order_id {
        Some(order_id) => match order {
            Some(order) if order.provider == provider && order.id.as_str() == order_id => order.account.to_string(),
            _ => {
                return Err(Refusal::new(
                    RefusalKind::DepositNotFound,
                    "deposit_not_found",
                    format!("no deposit order `{}` is registered for {provider}", bounded_text(order_id)),
                ));
            }
        },
        None => {
            let user = match notification.kind {
                NotificationKind::UserDeposit => record.user_id.clone(),
                _ => record.reference_id.clone(),
            };
            let user = user.or_else(|| notification.user.clone()).unwrap_or_default();
            format!("{user}:{coin}")
        }
    };
    reported.account = Some(bounded_text(&account_text));
    if record.risky {
        return Ok(uncredited(UncreditedOutcome::Risky, reported));
    }
    let currency = currencies.get(&coin).cloned().ok_or_else(|| {
        Refusal::new(
            RefusalKind::UnknownCurrency,
            "unknown_currency",
            format!("the record's coin `{}` is not a configured currency", bounded_text(&coin)),
        )
    })?;
    let amount = record_amount(record.amount.as_deref(), &currency, amount_max)?;
    // An account id that cannot be valid cannot exist.
    let account = Id::parse(&account_text).map_err(|_| Refusal::account_not_found(&bounded_text(&account_text)))?;
    Ok(DepositReport::Credit(Credit {
        provider: provider.to_owned(),
        deposit_id: notification.record_id.to_string(),
        account,
        amount,
        currency,
        order_id,
        provider_status: status,
    }))
}

/// The withdrawal a withdrawal notification names (its `orderId`).
pub fn withdrawal_id_of(notification: &Notification) -> Result<Id, Refusal> {
    let order_id = notification.order_id.clone().unwrap_or_default();
    Id::parse(&order_id).map_err(|_| Refusal::withdrawal_not_found(&order_id))
}

/// The report of a withdrawal's record.
pub fn withdrawal_report(notification: &Notification, record: &ProviderRecord) -> Result<withdrawal::Report, Refusal> {
    let status = record_status(record, notification)?;
    let order_id = notification.order_id.clone().unwrap_or_default();
    if let Some(record_order) = &record.order_id
        && *record_order != order_id
    {
        return Err(Refusal::record_mismatch(format!(
            "the record belongs to order `{}`, the notification names `{}`",
            bounded_text(record_order),
            bounded_text(&order_id)
        )));
    }
    let outcome = withdrawal::status_of(&status).ok_or_else(|| withdrawal::unsupported_status(&status))?;
    Ok(withdrawal::Report {
        status: outcome,
        provider_status: status,
        record: Some(RecordCheck {
            record_id: notification.record_id.to_string(),
            coin: record.coin.clone().unwrap_or_default(),
            amount: record.amount.clone(),
        }),
    })
}

/// The record's status, after checking that it is the notification's record.
fn record_status(record: &ProviderRecord, notification: &Notification) -> Result<String, Refusal> {
    if record.record_id.as_deref() != Some(notification.record_id.as_str()) {
        return Err(Refusal::record_mismatch(format!(
            "the provider answered with record `{}` for `{}`",
            bounded_text(record.record_id.as_deref().unwrap_or_default()),
            notification.record_id
        )));
    }
    record.status.as_deref().map(bounded_text).ok_or_else(|| Refusal::record_mismatch("the record has no status"))
}

/// A record's amount in minor units of `currency`. Trailing zeros beyond the scale are
/// accepted (`"0.50000000"` is 0.5 USDT); a value with more decimals than the currency has, or
/// above `amount_max`, is refused.
pub fn record_amount(text: Option<&str>, currency: &Currency, amount_max: u128) -> Result<engine::Amount, Refusal> {
    let refuse = |message: String| Refusal::new(RefusalKind::InvalidAmount, "invalid_amount", message);
    let text = text.ok_or_else(|| refuse("the record has no amount".to_owned()))?;
    let amount = engine::amount::parse_amount(text, amount_max)
        .map_err(|error| refuse(format!("the record's amount `{}` is not acceptable: {error}", bounded_text(text))))?;
    currency.normalize(&amount.without_trailing_zeros()).map_err(|error| {
        refuse(format!("the record's amount {} does not fit {}: {error}", bounded_text(text), currency.code))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Amount, Overdraft};

    fn id(text: &str) -> Id {
        Id::parse(text).unwrap()
    }

    fn currencies() -> CurrencyTable {
        CurrencyTable::new([Currency::new("USDT", 6)])
    }

    fn notification(kind: NotificationKind) -> Notification {
        Notification { kind, record_id: id("r-1"), order_id: None, user: None, status: "Success".into() }
    }

    fn record(status: &str) -> ProviderRecord {
        ProviderRecord {
            record_id: Some("r-1".into()),
            status: Some(status.into()),
            coin: Some("USDT".into()),
            amount: Some("0.50000000".into()),
            reference_id: Some("user_42".into()),
            ..ProviderRecord::default()
        }
    }

    #[test]
    fn a_direct_deposit_credits_the_users_coin_account_with_the_record_amount() {
        let report = deposit_report(
            "cc",
            &notification(NotificationKind::DirectDeposit),
            &record("Success"),
            None,
            &currencies(),
            1_000_000,
        )
        .unwrap();
        let DepositReport::Credit(credit) = report else { panic!("a credit") };
        assert_eq!(credit.account.as_str(), "user_42:USDT");
        assert_eq!(credit.amount, Amount::from_minor_units(500_000));
    }

    #[test]
    fn risky_failed_and_processing_records_credit_nothing() {
        let mut risky = record("Success");
        risky.risky = true;
        for (record, outcome) in [
            (risky, UncreditedOutcome::Risky),
            (record("Failed"), UncreditedOutcome::Failed),
            (record("Processing"), UncreditedOutcome::Processing),
        ] {
            let report = deposit_report(
                "cc",
                &notification(NotificationKind::DirectDeposit),
                &record,
                None,
                &currencies(),
                1_000_000,
            )
            .unwrap();
            assert!(
                matches!(report, DepositReport::Uncredited(ref uncredited) if uncredited.outcome == outcome),
                "{report:?}"
            );
        }
    }

    #[test]
    fn an_api_deposit_needs_its_order_and_a_record_must_be_the_notifications() {
        let notification = Notification { order_id: Some("o-1".into()), ..notification(NotificationKind::ApiDeposit) };
        let record = record("Success");
        assert_eq!(order_id_of(&notification, &record).as_deref(), Some("o-1"));
        let refusal = deposit_report("cc", &notification, &record, None, &currencies(), 1_000_000).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::DepositNotFound);
        let account = engine::Account::new(
            id("alice"),
            Currency::new("USDT", 6),
            Overdraft::Limited(Amount::ZERO),
            Default::default(),
            0,
            1,
        );
        let order = crate::order::created(
            &crate::order::OrderRequest { id: id("o-1"), account: id("alice"), provider: "cc".into() },
            &account,
            1,
        );
        let DepositReport::Credit(credit) =
            deposit_report("cc", &notification, &record, Some(&order), &currencies(), 1_000_000).unwrap()
        else {
            panic!("a credit")
        };
        assert_eq!(credit.account.as_str(), "alice");
        let wrong = ProviderRecord { record_id: Some("r-2".into()), ..record };
        assert_eq!(
            deposit_report("cc", &notification, &wrong, Some(&order), &currencies(), 1_000_000).unwrap_err().kind,
            RefusalKind::RecordMismatch
        );
    }

    #[test]
    fn record_amounts_fit_the_currency_by_value() {
        let usdt = Currency::new("USDT", 6);
        assert_eq!(record_amount(Some("0.5"), &usdt, 1_000_000).unwrap(), Amount::from_minor_units(500_000));
        for bad in ["0.1234567", "-1", "0", "1e3", "abc", "2000000"] {
            assert_eq!(
                record_amount(Some(bad), &usdt, 1_000_000).unwrap_err().kind,
                RefusalKind::InvalidAmount,
                "{bad}"
            );
        }
        assert!(record_amount(None, &usdt, 1_000_000).is_err());
    }

    #[test]
    fn withdrawal_records_name_their_order() {
        let notification =
            Notification { order_id: Some("w-1".into()), ..notification(NotificationKind::ApiWithdrawal) };
        assert_eq!(withdrawal_id_of(&notification).unwrap().as_str(), "w-1");
        let report =
            withdrawal_report(&notification, &ProviderRecord { order_id: Some("w-1".into()), ..record("Rejected") })
                .unwrap();
        assert_eq!(report.status, crate::facts::WithdrawalStatus::Failed);
        let other = ProviderRecord { order_id: Some("w-2".into()), ..record("Success") };
        assert_eq!(withdrawal_report(&notification, &other).unwrap_err().kind, RefusalKind::RecordMismatch);
        assert_eq!(withdrawal_report(&notification, &record("Elsewhere")).unwrap_err().result, "unsupported_status");
    }
}
