//! The accounts resource: `/v1/accounts`.
//!
//! This module owns the account routes (create, read, freeze, unfreeze, the transfer history
//! with its cursor), the strict parsing of an account request, the account JSON object and the
//! history cursor's encoding. The cursor is opaque to clients: URL-safe base64 of the
//! creation sequence below which the next page starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::AccountRequest;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use engine::amount::{TOTAL_UNITS_DIGITS, WrittenAmount, parse_non_negative};
use engine::{Account, Overdraft};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::http::AppState;
use crate::http::error::{ApiError, ErrorCode, ErrorResponse};
use crate::http::json::{
    AdminOnly, Fields, JsonBody, OptionalJsonBody, PathId, amount_error, created_or_replayed, format_timestamp_ms,
    json_response,
};
use crate::http::reserved::{Caller, check_new_account};
use crate::http::transfers::TransferBody;

/// The routes of this resource (state: [`AppState`]).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/accounts", post(create_account))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/freeze", post(freeze_account))
        .route("/v1/accounts/{id}/unfreeze", post(unfreeze_account))
        .route("/v1/accounts/{id}/transfers", get(account_transfers))
}

/// The fields of `POST /v1/accounts`.
pub const CREATE_ACCOUNT_FIELDS: [&str; 4] = ["id", "currency", "overdraft_limit", "metadata"];

/// `POST /v1/accounts` body.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// 1–64 characters of `A-Z a-z 0-9 _ - . :`.
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "alice")]
    pub id: String,
    /// A configured currency code.
    #[schema(example = "USD")]
    pub currency: String,
    /// `"0"` (default): never below zero; a decimal: down to minus it; `"unlimited"`: no bound.
    #[schema(pattern = r"^(unlimited|[0-9]+(\.[0-9]+)?)$", example = "0", nullable = false)]
    pub overdraft_limit: Option<String>,
    /// At most 16 pairs; keys ≤ 64 characters, values ≤ 256.
    #[schema(nullable = false)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// An empty body (`{}`), accepted by freeze and unfreeze; the body may also be left out.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

/// An account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountBody {
    #[schema(example = "alice")]
    pub id: String,
    #[schema(example = "USD")]
    pub currency: String,
    /// `credits_posted − debits_posted`.
    #[schema(example = "90.00")]
    pub balance: String,
    /// `balance − pending_debits`.
    #[schema(example = "80.00")]
    pub available: String,
    pub pending_debits: String,
    pub pending_credits: String,
    pub debits_posted: String,
    pub credits_posted: String,
    /// With the currency's scale, or `"unlimited"`.
    #[schema(example = "0.00")]
    pub overdraft_limit: String,
    pub frozen: bool,
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2026-11-22T10:00:00.000Z")]
    pub created_at: String,
    /// Changes applied to the account, creation included.
    #[schema(minimum = 1)]
    pub version: u64,
}

impl AccountBody {
    pub fn new(account: &Account) -> AccountBody {
        let currency = &account.currency;
        AccountBody {
            id: account.id.to_string(),
            currency: currency.code.to_string(),
            balance: currency.format(account.balance()),
            available: currency.format(account.available()),
            pending_debits: currency.format(account.pending_debits),
            pending_credits: currency.format(account.pending_credits),
            debits_posted: currency.format(account.debits_posted),
            credits_posted: currency.format(account.credits_posted),
            overdraft_limit: match account.overdraft {
                Overdraft::Limited(limit) => currency.format(limit),
                Overdraft::Unlimited => "unlimited".to_owned(),
            },
            frozen: account.frozen,
            metadata: account.metadata.clone(),
            created_at: format_timestamp_ms(account.created_at_ms),
            version: account.version,
        }
    }
}

/// A page of an account's transfers, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferPage {
    pub transfers: Vec<TransferBody>,
    /// Cursor of the next page (pass it as `before`), or null on the last page.
    pub next: Option<String>,
}

/// Query of `GET /v1/accounts/{id}/transfers`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_\-]{10}[AEIMQUYcgkosw048]$", nullable = false)]
    pub before: Option<String>,
}

/// Default page size of the history.
const HISTORY_LIMIT_DEFAULT: usize = 100;

/// Parses and checks a `POST /v1/accounts` body.
pub fn parse_account_request(state: &AppState, body: &Value) -> Result<AccountRequest, ApiError> {
    let fields = Fields::new(body, "", &CREATE_ACCOUNT_FIELDS)?;
    let id = fields.id("id")?;
    let code = fields.string("currency")?;
    let overdraft_text = match body.get("overdraft_limit") {
        None => None,
        Some(Value::String(text)) => Some(text.as_str()),
        Some(_) => {
            return Err(ApiError::invalid_amount(
                "overdraft_limit",
                "`overdraft_limit` must be a string: \"unlimited\" or decimal digits such as \"50.00\"",
            ));
        }
    };
    let overdraft = overdraft_text.map(parse_overdraft).transpose()?;
    let metadata = fields.optional_metadata("metadata", &state.limits.text)?;
    let currency = state.currencies.get(code).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnknownCurrency,
            format!("currency `{code}` is not configured"),
        )
        .with_field("currency")
    })?;
    let overdraft = match overdraft {
        None => Overdraft::Limited(engine::Amount::ZERO),
        Some(WrittenOverdraft::Unlimited) => Overdraft::Unlimited,
        Some(WrittenOverdraft::Limited(limit)) => {
            let limit = currency.normalize(&limit).map_err(|error| amount_error("overdraft_limit", &error))?;
            if limit > currency.total_max() {
                return Err(ApiError::invalid_amount(
                    "overdraft_limit",
                    format!("`overdraft_limit` must be at most {}", currency.format(currency.total_max())),
                ));
            }
            Overdraft::Limited(limit)
        }
    };
    Ok(AccountRequest { id, currency, overdraft, metadata })
}

/// An `overdraft_limit` as written, before the currency is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrittenOverdraft {
    Unlimited,
    Limited(WrittenAmount),
}

/// `"unlimited"`, or a non-negative decimal (zero allowed) at most 10^24.
fn parse_overdraft(text: &str) -> Result<WrittenOverdraft, ApiError> {
    if text == "unlimited" {
        return Ok(WrittenOverdraft::Unlimited);
    }
    parse_non_negative(text, 10_u128.pow(TOTAL_UNITS_DIGITS))
        .map(WrittenOverdraft::Limited)
        .map_err(|error| amount_error("overdraft_limit", &error))
}

/// Opens an account.
#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    request_body(content = CreateAccountRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = AccountBody),
        (status = 200, description = "The same account existed already (idempotent replay).", body = AccountBody,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "`invalid_request`, `invalid_id`, `invalid_amount`, `reserved_id`.", body = ErrorResponse),
        (status = 403, description = "`forbidden`: an unlimited overdraft asked by a `client` token.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 409, description = "`exists_with_different_fields`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 422, description = "`unknown_currency`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_account(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = parse_account_request(&state, &body)?;
    check_new_account(&caller, &request.id, &request.overdraft)?;
    let (account, created) = state.ledger()?.create_account(request).await?;
    Ok(created_or_replayed(created, &AccountBody::new(&account)))
}

/// Reads an account.
#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts",
    params(PathIdParam),
    responses(
        (status = 200, description = "The account.", body = AccountBody),
        (status = 400, description = "`invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`account_not_found`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_account(State(state): State<Arc<AppState>>, PathId(id): PathId) -> Result<Response, ApiError> {
    let account = state.ledger()?.account(&id).await?;
    Ok(json_response(StatusCode::OK, &AccountBody::new(&account)))
}

/// Freezes an account (admin): it accepts no new transfer in either direction.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/freeze", tag = "accounts",
    params(PathIdParam),
    request_body(content = Option<EmptyRequest>, content_type = "application/json", description = "Optional; may be left out."),
    responses(
        (status = 200, description = "The account, frozen.", body = AccountBody),
        (status = 400, description = "`invalid_request`, `invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden` (admin only).", body = ErrorResponse),
        (status = 404, description = "`account_not_found`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn freeze_account(
    _admin: AdminOnly,
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    set_frozen(&state, &id, body.as_ref(), true).await
}

/// Unfreezes an account (admin).
#[utoipa::path(
    post, path = "/v1/accounts/{id}/unfreeze", tag = "accounts",
    params(PathIdParam),
    request_body(content = Option<EmptyRequest>, content_type = "application/json", description = "Optional; may be left out."),
    responses(
        (status = 200, description = "The account, not frozen.", body = AccountBody),
        (status = 400, description = "`invalid_request`, `invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden` (admin only).", body = ErrorResponse),
        (status = 404, description = "`account_not_found`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn unfreeze_account(
    _admin: AdminOnly,
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    set_frozen(&state, &id, body.as_ref(), false).await
}

async fn set_frozen(
    state: &AppState,
    id: &engine::Id,
    body: Option<&Value>,
    frozen: bool,
) -> Result<Response, ApiError> {
    if let Some(body) = body {
        Fields::new(body, "", &[])?;
    }
    let account = state.ledger()?.set_frozen(id, frozen).await?;
    Ok(json_response(StatusCode::OK, &AccountBody::new(&account)))
}

/// The transfers that debit or credit an account, newest first.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/transfers", tag = "accounts",
    params(PathIdParam, HistoryQuery),
    responses(
        (status = 200, description = "A page of transfers.", body = TransferPage),
        (status = 400, description = "`invalid_request` (`limit`, `before`), `invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`account_not_found`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn account_transfers(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|rejection| ApiError::invalid_request(format!("malformed query: {rejection}")))?;
    let mut limit = HISTORY_LIMIT_DEFAULT.min(state.limits.history_limit_max);
    let mut before = None;
    for (name, value) in &pairs {
        match name.as_str() {
            "limit" => limit = parse_limit(value, state.limits.history_limit_max)?,
            "before" => before = Some(decode_cursor(value)?),
            _ => {}
        }
    }
    let (transfers, next) = state.ledger()?.account_transfers(&id, limit, before).await?;
    let page = TransferPage {
        transfers: transfers.iter().map(|transfer| TransferBody::new(transfer)).collect(),
        next: next.map(encode_cursor),
    };
    Ok(json_response(StatusCode::OK, &page))
}

fn parse_limit(text: &str, max: usize) -> Result<usize, ApiError> {
    match text.parse::<usize>() {
        Ok(limit) if (1..=max).contains(&limit) && !text.starts_with('+') => Ok(limit),
        _ => Err(ApiError::invalid_field("limit", format!("`limit` must be an integer from 1 to {max}"))),
    }
}

/// The cursor of the page that starts below creation sequence `seq`: URL-safe base64 (no
/// padding) of the 8 big-endian bytes of `seq`, always 11 characters.
pub fn encode_cursor(seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(seq.to_be_bytes())
}

/// The sequence a cursor encodes; anything not made by [`encode_cursor`] is refused.
pub fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::invalid_field("before", "`before` is not a cursor returned by this API");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| bad())?;
    Ok(u64::from_be_bytes(bytes))
}

/// The `{id}` path parameter, for the OpenAPI document.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PathIdParam {
    /// 1–64 characters of `A-Z a-z 0-9 _ - . :`.
    #[param(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64)]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        for seq in [0, 1, 42, u64::MAX] {
            let cursor = encode_cursor(seq);
            assert_eq!(cursor.len(), 11);
            assert_eq!(decode_cursor(&cursor).unwrap(), seq);
        }
        // Wrong length, padding, bad alphabet, non-zero trailing bits.
        for bad in ["", "abc", "AAAAAAAAAAAA", "AAAAAAAAAAA=", "AAAAAAAAAA!", "AAAAAAAAAAB", "AAAAAAAAAA"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit("1", 1000).unwrap(), 1);
        assert_eq!(parse_limit("1000", 1000).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "+5", "abc", "", "1.5"] {
            assert!(parse_limit(bad, 1000).is_err(), "{bad}");
        }
    }

    #[test]
    fn overdraft_accepts_zero_and_unlimited() {
        assert_eq!(parse_overdraft("unlimited").unwrap(), WrittenOverdraft::Unlimited);
        let WrittenOverdraft::Limited(zero) = parse_overdraft("0.00").unwrap() else { panic!("a limit") };
        assert!(zero.is_zero() && zero.written_scale() == 2);
        assert!(matches!(parse_overdraft("0").unwrap(), WrittenOverdraft::Limited(limit) if limit.is_zero()));
        for bad in ["-1", "1e3", "Unlimited", "", "12.", ".5"] {
            assert!(parse_overdraft(bad).is_err(), "{bad}");
        }
    }
}
