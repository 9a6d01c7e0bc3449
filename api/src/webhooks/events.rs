//! What a verified delivery says: the events of both schemes, parsed from the body.
//!
//! This module owns the parsing of a body whose signature was already checked: Standard
//! Webhooks events (`deposit.completed`, `deposit.failed`, `withdrawal.completed`,
//! `withdrawal.failed`) and CCPayment notifications (`DirectDeposit`, `UserDeposit`,
//! `ApiDeposit`, `ApiWithdrawal`, `UserWithdrawal`). Unknown fields are ignored (providers add
//! fields); a missing or mistyped field that the ledger needs is 400 `invalid_request` naming
//! it (`data.amount`, `msg.recordId`). An event type the ledger does not act on is
//! [`Event::Other`]: acknowledged and counted, never an error, since providers also send
//! events such as CCPayment's URL activation.

use engine::amount::parse_amount;
use engine::{Currency, CurrencyTable, Id};
use serde_json::{Map, Value};

use crate::http::error::{ApiError, ErrorCode};
use crate::http::json::{amount_error, parse_id};

/// A verified delivery's meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Standard `deposit.completed`.
    DepositCompleted { deposit_id: Id, account: Id, amount: engine::Amount, currency: Currency },
    /// Standard `deposit.failed`.
    DepositFailed { deposit_id: Id },
    /// Standard `withdrawal.completed`.
    WithdrawalCompleted { withdrawal_id: Id },
    /// Standard `withdrawal.failed`.
    WithdrawalFailed { withdrawal_id: Id },
    /// A CCPayment notification (not authoritative: the record is fetched).
    Ccpayment(Notification),
    /// A type the ledger does not act on.
    Other,
}

pub use payments::ccpayment::{Notification, NotificationKind};

/// The `type` label of a body for metrics: one of a fixed set, so that a sender cannot create
/// series at will.
pub fn type_label(body: &[u8]) -> &'static str {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return "malformed";
    };
    match object.get("type").and_then(Value::as_str) {
        Some(name) => known_type(name).unwrap_or("other"),
        None => "malformed",
    }
}

/// The event types a Standard Webhooks provider sends that the ledger acts on.
pub const STANDARD_TYPES: [&str; 4] =
    ["deposit.completed", "deposit.failed", "withdrawal.completed", "withdrawal.failed"];
/// The notification types of CCPayment that the ledger acts on.
pub const CCPAYMENT_TYPES: [&str; 5] =
    ["DirectDeposit", "UserDeposit", "ApiDeposit", "ApiWithdrawal", "UserWithdrawal"];

/// The types a provider of `scheme` sends that the ledger acts on (the `type` labels its
/// verified deliveries can have, besides `other` and `malformed`).
pub fn known_types(scheme: config::ProviderScheme) -> &'static [&'static str] {
    match scheme {
        config::ProviderScheme::Standard => &STANDARD_TYPES,
        config::ProviderScheme::Ccpayment => &CCPAYMENT_TYPES,
    }
}

fn known_type(name: &str) -> Option<&'static str> {
    STANDARD_TYPES.into_iter().chain(CCPAYMENT_TYPES).find(|known| *known == name)
}

/// Parses a Standard Webhooks event.
pub fn parse_standard(body: &[u8], currencies: &CurrencyTable, amount_max: u128) -> Result<Event, ApiError> {
    let object = object_of(body)?;
    let event_type = string(&object, "type", "type")?;
    let data = || match object.get("data") {
        Some(Value::Object(data)) => Ok(data),
        Some(_) => Err(ApiError::invalid_field("data", "`data` must be an object")),
        None => Err(ApiError::invalid_field("data", "missing field `data`")),
    };
    match event_type {
        "deposit.completed" => {
            let data = data()?;
            let deposit_id = id(data, "deposit_id", "data.deposit_id")?;
            let account = id(data, "account", "data.account")?;
            let code = string(data, "currency", "data.currency")?;
            let currency = currencies.get(code).cloned().ok_or_else(|| {
                ApiError::new(
                    http::StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::UnknownCurrency,
                    format!("currency `{code}` is not configured"),
                )
                .with_field("data.currency")
            })?;
            let amount_text = match data.get("amount") {
                Some(Value::String(text)) => text,
                Some(_) => {
                    return Err(ApiError::invalid_amount(
                        "data.amount",
                        "`data.amount` must be a string of decimal digits such as \"5.00\"",
                    ));
                }
                None => return Err(ApiError::invalid_field("data.amount", "missing field `amount`")),
            };
            let amount = parse_amount(amount_text, amount_max)
                .and_then(|amount| currency.normalize(&amount))
                .map_err(|error| amount_error("data.amount", &error))?;
            Ok(Event::DepositCompleted { deposit_id, account, amount, currency })
        }
        "deposit.failed" => Ok(Event::DepositFailed { deposit_id: id(data()?, "deposit_id", "data.deposit_id")? }),
        "withdrawal.completed" => {
            Ok(Event::WithdrawalCompleted { withdrawal_id: id(data()?, "withdrawal_id", "data.withdrawal_id")? })
        }
        "withdrawal.failed" => {
            Ok(Event::WithdrawalFailed { withdrawal_id: id(data()?, "withdrawal_id", "data.withdrawal_id")? })
        }
        _ => Ok(Event::Other),
    }
}

/// Parses a CCPayment notification.
pub fn parse_ccpayment(body: &[u8]) -> Result<Event, ApiError> {
    let object = object_of(body)?;
    let kind = match string(&object, "type", "type")? {
        "DirectDeposit" => NotificationKind::DirectDeposit,
        "UserDeposit" => NotificationKind::UserDeposit,
        "ApiDeposit" => NotificationKind::ApiDeposit,
        "ApiWithdrawal" => NotificationKind::ApiWithdrawal,
        "UserWithdrawal" => NotificationKind::UserWithdrawal,
        _ => return Ok(Event::Other),
    };
    let msg = match object.get("msg") {
        Some(Value::Object(msg)) => msg,
        Some(_) => return Err(ApiError::invalid_field("msg", "`msg` must be an object")),
        None => return Err(ApiError::invalid_field("msg", "missing field `msg`")),
    };
    let record_id = id(msg, "recordId", "msg.recordId")?;
    let status = string(msg, "status", "msg.status")?.to_owned();
    let optional = |name: &str| match msg.get(name) {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let user = match kind {
        NotificationKind::DirectDeposit => optional("referenceId"),
        NotificationKind::UserDeposit | NotificationKind::UserWithdrawal => optional("userId"),
        NotificationKind::ApiDeposit | NotificationKind::ApiWithdrawal => None,
    };
    let order_id = optional("orderId");
    if matches!(kind, NotificationKind::ApiWithdrawal | NotificationKind::UserWithdrawal) && order_id.is_none() {
        return Err(ApiError::invalid_field("msg.orderId", "a withdrawal notification names its `orderId`"));
    }
    Ok(Event::Ccpayment(Notification { kind, record_id, order_id, user, status }))
}

fn object_of(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::invalid_request("the event must be a JSON object")),
        Err(error) => Err(ApiError::invalid_request(format!("malformed JSON: {error}"))),
    }
}

fn string<'a>(object: &'a Map<String, Value>, name: &str, field: &str) -> Result<&'a str, ApiError> {
    match object.get(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(ApiError::invalid_field(field, format!("`{name}` must be a string"))),
        None => Err(ApiError::invalid_field(field, format!("missing field `{name}`"))),
    }
}

fn id(object: &Map<String, Value>, name: &str, field: &str) -> Result<Id, ApiError> {
    let text = match object.get(name) {
        Some(Value::String(text)) => text.clone(),
        // Providers sometimes send numeric ids.
        Some(Value::Number(number)) => number.to_string(),
        Some(_) => return Err(ApiError::invalid_field(field, format!("`{name}` must be a string"))),
        None => return Err(ApiError::invalid_field(field, format!("missing field `{name}`"))),
    };
    parse_id(&text, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currencies() -> CurrencyTable {
        CurrencyTable::new([Currency::new("USD", 2), Currency::new("USDT", 6)])
    }

    #[test]
    fn standard_events_parse_with_their_fields() {
        let max = 1_000_000;
        let body = br#"{"type": "deposit.completed", "timestamp": "x", "data": {"deposit_id": "d-1", "account": "alice", "amount": "5.00", "currency": "USD"}}"#;
        let Event::DepositCompleted { deposit_id, amount, currency, .. } =
            parse_standard(body, &currencies(), max).unwrap()
        else {
            panic!("not a deposit");
        };
        assert_eq!((deposit_id.as_str(), currency.format(amount), &*currency.code), ("d-1", "5.00".to_owned(), "USD"));
        let failures = [
            (&br#"{"type": "deposit.completed", "data": {"deposit_id": "d-1", "account": "alice", "amount": "5.001", "currency": "USD"}}"#[..], "data.amount", ErrorCode::InvalidAmount),
            (br#"{"type": "deposit.completed", "data": {"deposit_id": "d-1", "account": "alice", "amount": 5, "currency": "USD"}}"#, "data.amount", ErrorCode::InvalidAmount),
            (br#"{"type": "deposit.completed", "data": {"deposit_id": "d-1", "account": "alice", "amount": "5", "currency": "XXX"}}"#, "data.currency", ErrorCode::UnknownCurrency),
            (br#"{"type": "deposit.completed", "data": {"deposit_id": "d 1", "account": "alice", "amount": "5", "currency": "USD"}}"#, "data.deposit_id", ErrorCode::InvalidId),
            (br#"{"type": "withdrawal.failed", "data": {}}"#, "data.withdrawal_id", ErrorCode::InvalidRequest),
            (br#"{"type": "withdrawal.failed"}"#, "data", ErrorCode::InvalidRequest),
            (br#"{"data": {}}"#, "type", ErrorCode::InvalidRequest),
        ];
        for (body, field, code) in failures {
            let error = parse_standard(body, &currencies(), max).unwrap_err();
            assert_eq!(
                (error.body.field.as_deref(), error.body.code),
                (Some(field), code),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_standard(br#"{"type": "invoice.paid", "data": {}}"#, &currencies(), max).unwrap(),
            Event::Other
        );
        assert!(parse_standard(b"[1]", &currencies(), max).is_err());
    }

    #[test]
    fn ccpayment_notifications_name_their_record() {
        let body = br#"{"type":"DirectDeposit","msg":{"recordId":"20240313113108112345","referenceId":"user_42","coinId":1280,"coinSymbol":"USDT","status":"Success","isFlaggedAsRisky":false}}"#;
        let Event::Ccpayment(notification) = parse_ccpayment(body).unwrap() else { panic!("not a notification") };
        assert_eq!(notification.kind, NotificationKind::DirectDeposit);
        assert_eq!(notification.record_id.as_str(), "20240313113108112345");
        assert_eq!(notification.user.as_deref(), Some("user_42"));
        assert_eq!(notification.status, "Success");
        let withdrawal = br#"{"type":"ApiWithdrawal","msg":{"recordId":"r-9","coinSymbol":"USDT","status":"Success"}}"#;
        assert_eq!(parse_ccpayment(withdrawal).unwrap_err().body.field.as_deref(), Some("msg.orderId"));
        assert_eq!(parse_ccpayment(br#"{"type":"ActivateWebhookURL","msg":{}}"#).unwrap(), Event::Other);
        assert_eq!(type_label(br#"{"type":"ActivateWebhookURL"}"#), "other");
        assert_eq!(type_label(body), "DirectDeposit");
        assert_eq!(type_label(b"{"), "malformed");
    }
}
