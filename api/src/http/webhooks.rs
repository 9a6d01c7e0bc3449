//! The webhook route: `POST /v1/webhooks/{provider}`, and the withdrawal and deposit-order
//! routes: `/v1/withdrawals`, `/v1/deposits`.
//!
//! This module owns the HTTP side of [`crate::webhooks`]: reading the raw body, answering
//! each scheme the way its provider expects (Standard Webhooks: JSON `{"result": ...}`;
//! CCPayment: `200 text/plain; charset=utf-8` `success`), counting every delivery in
//! `ledger_webhooks_total{provider,type,result}`, and the bodies of withdrawals and deposit
//! orders.
//!
//! The webhook route is not behind the bearer-token guard: providers sign their deliveries
//! instead of sending a token, so it works with auth on; the rate limit does not apply to it
//! either (a provider retries on its own schedule). Its body limit is the server's.
//! `/v1/withdrawals` and `/v1/deposits` are ordinary client routes, behind the guard.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use config::ProviderScheme;
use engine::TransferStatus;
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::http::AppState;
use crate::http::accounts::PathIdParam;
use crate::http::error::{ApiError, ErrorCode, ErrorResponse};
use crate::http::json::{Fields, JsonBody, PathId, RawBody, created_or_replayed, format_timestamp_ms, json_response};
use crate::http::metrics::WEBHOOKS_TOTAL;
use crate::http::transfers::TransferBody;
use crate::webhooks::{OrderView, WithdrawalView};
use payments::DepositFact;
use payments::order::OrderRequest;
use payments::withdrawal::WithdrawalRequest;

/// The webhook route (no bearer token; state: [`AppState`]).
pub fn webhook_router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/webhooks/{provider}", post(receive_webhook))
}

/// The withdrawal and deposit-order routes (behind the auth guard).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/withdrawals", post(create_withdrawal))
        .route("/v1/withdrawals/{id}", get(get_withdrawal))
        .route("/v1/deposits", post(create_deposit_order))
        .route("/v1/deposits/{id}", get(get_deposit_order))
}

/// The fields of `POST /v1/withdrawals`.
pub const CREATE_WITHDRAWAL_FIELDS: [&str; 4] = ["id", "account", "amount", "provider"];
/// The fields of `POST /v1/deposits`.
pub const CREATE_DEPOSIT_FIELDS: [&str; 3] = ["id", "account", "provider"];

/// A webhook delivery. Standard Webhooks events carry `data`, CCPayment notifications `msg`;
/// the body is verified as raw bytes before it is read.
#[derive(Debug, ToSchema)]
pub struct WebhookEvent {
    /// `deposit.completed`, `deposit.failed`, `withdrawal.completed`, `withdrawal.failed`
    /// (standard); `DirectDeposit`, `UserDeposit`, `ApiDeposit`, `ApiWithdrawal`,
    /// `UserWithdrawal` (ccpayment). Other types are acknowledged and ignored.
    #[serde(rename = "type")]
    #[schema(example = "deposit.completed")]
    pub event_type: String,
    /// Standard: `{"deposit_id", "account", "amount", "currency"}` or `{"deposit_id"}` or
    /// `{"withdrawal_id"}`.
    #[schema(value_type = Option<Object>, nullable = false)]
    pub data: Option<Value>,
    /// CCPayment: `{"recordId", "referenceId" | "userId" | "orderId", "coinSymbol", "status", ...}`.
    #[schema(value_type = Option<Object>, nullable = false)]
    pub msg: Option<Value>,
}

/// The answer to a Standard Webhooks delivery (CCPayment gets `text/plain` `success`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    /// What the delivery did: `credited`, `posted`, `voided`, `failed`, `recorded`, `risky`,
    /// `duplicate`, `late_status`, `failed_after_success`, `success_after_failure`, `ignored`.
    #[schema(example = "credited")]
    pub result: &'static str,
    /// The transfer the delivery created or changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "dep:processor:d-1", nullable = false)]
    pub transfer_id: Option<String>,
}

/// The signature headers of both schemes (each provider uses one set).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "documents the headers; they are read from the HeaderMap")]
pub struct WebhookHeaders {
    /// Standard: the message id.
    #[param(rename = "webhook-id", nullable = false)]
    webhook_id: Option<String>,
    /// Standard: Unix seconds.
    #[param(rename = "webhook-timestamp", nullable = false)]
    webhook_timestamp: Option<String>,
    /// Standard: space-separated `v1,<base64>`.
    #[param(rename = "webhook-signature", nullable = false)]
    webhook_signature: Option<String>,
    /// CCPayment: the app id (or `X-App-Id`).
    #[param(rename = "Appid", nullable = false)]
    appid: Option<String>,
    /// CCPayment: Unix seconds (or `X-Timestamp`).
    #[param(rename = "Timestamp", nullable = false)]
    timestamp: Option<String>,
    /// CCPayment: lowercase hex HMAC-SHA256 of `Appid + Timestamp + body` (or `X-Signature`).
    #[param(rename = "Sign", nullable = false)]
    sign: Option<String>,
}

/// The `{provider}` segment of the webhook route.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "documents the path; it is read with Path<String>")]
pub struct ProviderParam {
    /// A configured provider name (`[[webhooks.providers]]`).
    #[param(example = "processor")]
    provider: String,
}

/// Receives a signed deposit or withdrawal event from a payment provider.
#[utoipa::path(
    post, path = "/v1/webhooks/{provider}", tag = "webhooks",
    params(ProviderParam, WebhookHeaders),
    request_body(content = WebhookEvent, content_type = "application/json"),
    responses(
        (status = 200, description = "Acted on, or a duplicate (`result` says which). CCPayment: `text/plain` `success`.", body = WebhookAck),
        (status = 400, description = "A verified body that is malformed: `invalid_request`, `invalid_id`, `invalid_amount`.", body = ErrorResponse),
        (status = 401, description = "`invalid_signature`, `stale_webhook`.", body = ErrorResponse),
        (status = 404, description = "`provider_not_found`.", body = ErrorResponse),
        (status = 409, description = "`exists_with_different_fields`: the deposit was credited already with other fields.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 422, description = "`account_not_found`, `currency_mismatch`, `unknown_currency`, `invalid_amount` (a record's amount beyond the currency's scale), \
            `withdrawal_not_found`, `deposit_not_found`, `record_mismatch`, `unsupported_event`, `account_frozen`.", body = ErrorResponse),
        (status = 503, description = "`provider_unavailable` (nothing credited; retry), `overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security(())
)]
pub async fn receive_webhook(
    State(state): State<Arc<AppState>>,
    Path(provider_name): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    let webhooks = match state.webhooks() {
        Ok(webhooks) => webhooks.clone(),
        Err(error) => return error.into_response(),
    };
    let Some(provider) = webhooks.provider(&provider_name).cloned() else {
        return ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ProviderNotFound, "no such webhook provider")
            .into_response();
    };
    let delivery = webhooks.receive(&provider, &headers, body).await;
    let result = match &delivery.outcome {
        Ok(handled) => handled.result,
        Err(refused) => refused.result,
    };
    metrics::counter!(
        WEBHOOKS_TOTAL,
        "provider" => provider.name.to_string(),
        "type" => delivery.event_type,
        "result" => result
    )
    .increment(1);
    match delivery.outcome {
        Ok(handled) => {
            tracing::info!(provider = %provider.name, event_type = delivery.event_type, result, "webhook delivery");
            if let Some(transfer) = handled.transfer.as_ref().filter(|_| handled.created)
                && transfer.status == TransferStatus::Posted
            {
                if handled.result == "credited" {
                    state.transfer_metrics.count_result("created", 1);
                }
                state.transfer_metrics.add_credited(&transfer.currency, transfer.posted_amount);
            }
            match provider.scheme {
                ProviderScheme::Ccpayment => ccpayment_success(),
                ProviderScheme::Standard => {
                    let ack = WebhookAck {
                        result: handled.result,
                        transfer_id: handled.transfer.map(|transfer| transfer.id.to_string()),
                    };
                    json_response(StatusCode::OK, &ack)
                }
            }
        }
        Err(refused) => {
            tracing::warn!(
                provider = %provider.name,
                event_type = delivery.event_type,
                result,
                message = %refused.error.body.message,
                "webhook delivery refused"
            );
            refused.error.into_response()
        }
    }
}

/// CCPayment's acknowledgement.
fn ccpayment_success() -> Response {
    let mut response = (StatusCode::OK, "success").into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

// ---- withdrawals ---------------------------------------------------------------------------

/// `POST /v1/withdrawals` body.
#[derive(Debug, ToSchema)]
pub struct CreateWithdrawalRequest {
    /// Unique among withdrawals; the provider's `orderId`.
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "w-1")]
    pub id: String,
    /// The account the money leaves.
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "alice")]
    pub account: String,
    /// Positive, at most the account currency's scale of fractional digits.
    #[schema(pattern = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$", example = "3.00")]
    pub amount: String,
    /// A configured provider name.
    #[schema(example = "ccpayment")]
    pub provider: String,
}

/// Where a withdrawal is, from its hold: pending, posted (completed) or voided (failed).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WithdrawalStatusBody {
    Pending,
    Completed,
    Failed,
}

/// A withdrawal.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalBody {
    #[schema(example = "w-1")]
    pub id: String,
    #[schema(example = "alice")]
    pub account: String,
    #[schema(example = "3.00")]
    pub amount: String,
    #[schema(example = "USD")]
    pub currency: String,
    #[schema(example = "ccpayment")]
    pub provider: String,
    pub status: WithdrawalStatusBody,
    /// The provider's own word for the last status it reported (`Processing`, ...), if any.
    #[schema(example = "Processing")]
    pub provider_status: Option<String>,
    /// The provider's record id, once a delivery named one.
    pub record_id: Option<String>,
    /// The hold `wd:{provider}:{id}`.
    pub transfer: TransferBody,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2026-11-22T10:00:00.000Z")]
    pub created_at: String,
}

impl WithdrawalBody {
    fn new(view: &WithdrawalView) -> WithdrawalBody {
        let status = match view.transfer.status {
            TransferStatus::Pending => WithdrawalStatusBody::Pending,
            TransferStatus::Posted => WithdrawalStatusBody::Completed,
            TransferStatus::Voided | TransferStatus::Expired => WithdrawalStatusBody::Failed,
        };
        let fact = &view.fact;
        WithdrawalBody {
            id: fact.id.to_string(),
            account: fact.account.to_string(),
            amount: fact.currency.format(fact.amount),
            currency: fact.currency.code.to_string(),
            provider: fact.provider.clone(),
            status,
            provider_status: fact.provider_status.clone(),
            record_id: fact.record_id.clone(),
            transfer: TransferBody::new(&view.transfer),
            created_at: format_timestamp_ms(fact.created_at_ms),
        }
    }
}

/// Holds the funds of a withdrawal: a pending transfer `wd:{provider}:{id}` from the account
/// to the provider's settlement account, posted or voided by the provider's webhooks.
#[utoipa::path(
    post, path = "/v1/withdrawals", tag = "withdrawals",
    request_body(content = CreateWithdrawalRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Held.", body = WithdrawalBody),
        (status = 200, description = "The same withdrawal existed already (idempotent replay).", body = WithdrawalBody,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "`invalid_request`, `invalid_id`, `invalid_amount`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 409, description = "`exists_with_different_fields`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 422, description = "`provider_not_found`, `account_not_found`, `account_frozen`, `insufficient_funds`, `overflow`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_withdrawal(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let fields = Fields::new(&body, "", &CREATE_WITHDRAWAL_FIELDS)?;
    let id = fields.id("id")?;
    let account = fields.id("account")?;
    let amount = fields.amount("amount", state.limits.amount_max)?;
    let provider = fields.string("provider")?.to_owned();
    let request = WithdrawalRequest { id, account, amount, provider };
    let (view, created) = state.webhooks()?.create_withdrawal(request).await?;
    Ok(created_or_replayed(created, &WithdrawalBody::new(&view)))
}

/// Reads a withdrawal: its status and its hold.
#[utoipa::path(
    get, path = "/v1/withdrawals/{id}", tag = "withdrawals",
    params(PathIdParam),
    responses(
        (status = 200, description = "The withdrawal.", body = WithdrawalBody),
        (status = 400, description = "`invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`withdrawal_not_found`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_withdrawal(State(state): State<Arc<AppState>>, PathId(id): PathId) -> Result<Response, ApiError> {
    let view = state.webhooks()?.withdrawal(&id).await?;
    Ok(json_response(StatusCode::OK, &WithdrawalBody::new(&view)))
}

// ---- deposit orders ------------------------------------------------------------------------

/// `POST /v1/deposits` body.
#[derive(Debug, ToSchema)]
pub struct CreateDepositRequest {
    /// Unique among deposit orders; the provider's `orderId`.
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "o-1")]
    pub id: String,
    /// The account its deposits credit.
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "alice")]
    pub account: String,
    /// A configured provider name.
    #[schema(example = "ccpayment")]
    pub provider: String,
}

/// One deposit of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDepositBody {
    /// The provider's record id.
    #[schema(example = "20240313113108112345")]
    pub deposit_id: String,
    /// `processing`, `credited`, `failed` or `risky` (recorded, not credited).
    #[schema(example = "credited")]
    pub status: &'static str,
    /// With the currency's scale, when known.
    #[schema(example = "0.500000")]
    pub amount: Option<String>,
    /// The credit `dep:{provider}:{deposit_id}`, once credited.
    pub transfer_id: Option<String>,
}

/// A deposit order and what was credited to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepositOrderBody {
    #[schema(example = "o-1")]
    pub id: String,
    #[schema(example = "alice")]
    pub account: String,
    #[schema(example = "ccpayment")]
    pub provider: String,
    #[schema(example = "USDT")]
    pub currency: String,
    /// Sum of the credited deposits, with the currency's scale.
    #[schema(example = "0.500000")]
    pub credited_amount: String,
    /// Its deposits (at most 1000).
    pub deposits: Vec<OrderDepositBody>,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2026-11-22T10:00:00.000Z")]
    pub created_at: String,
}

impl DepositOrderBody {
    fn new(view: &OrderView) -> DepositOrderBody {
        let fact = &view.fact;
        let deposit = |deposit: &DepositFact| OrderDepositBody {
            deposit_id: deposit.deposit_id.clone(),
            status: deposit.status.as_str(),
            amount: match &deposit.credit {
                Some(credit) => Some(credit.currency.format(credit.amount)),
                // As the provider wrote it, shown with the currency's scale when it fits.
                None => deposit.reported.amount.as_deref().map(|text| {
                    text.parse::<engine::WrittenAmount>()
                        .ok()
                        .and_then(|amount| fact.currency.normalize(&amount.without_trailing_zeros()).ok())
                        .map_or_else(|| text.to_owned(), |amount| fact.currency.format(amount))
                }),
            },
            transfer_id: deposit.credit.as_ref().map(|credit| credit.transfer.to_string()),
        };
        DepositOrderBody {
            id: fact.id.to_string(),
            account: fact.account.to_string(),
            provider: fact.provider.clone(),
            currency: fact.currency.code.to_string(),
            credited_amount: fact.currency.format(view.credited_amount),
            deposits: view.deposits.iter().map(deposit).collect(),
            created_at: format_timestamp_ms(fact.created_at_ms),
        }
    }
}

/// Registers an expected deposit (a CCPayment `ApiDeposit` order): its deposits credit
/// `account`.
#[utoipa::path(
    post, path = "/v1/deposits", tag = "deposits",
    request_body(content = CreateDepositRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered.", body = DepositOrderBody),
        (status = 200, description = "The same order existed already (idempotent replay).", body = DepositOrderBody,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "`invalid_request`, `invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 409, description = "`exists_with_different_fields`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 422, description = "`provider_not_found`, `account_not_found`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_deposit_order(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let fields = Fields::new(&body, "", &CREATE_DEPOSIT_FIELDS)?;
    let id = fields.id("id")?;
    let account = fields.id("account")?;
    let provider = fields.string("provider")?.to_owned();
    let (view, created) = state.webhooks()?.create_order(OrderRequest { id, account, provider }).await?;
    Ok(created_or_replayed(created, &DepositOrderBody::new(&view)))
}

/// Reads a deposit order and what was credited to it.
#[utoipa::path(
    get, path = "/v1/deposits/{id}", tag = "deposits",
    params(PathIdParam),
    responses(
        (status = 200, description = "The order.", body = DepositOrderBody),
        (status = 400, description = "`invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`deposit_not_found`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_deposit_order(State(state): State<Arc<AppState>>, PathId(id): PathId) -> Result<Response, ApiError> {
    let view = state.webhooks()?.order(&id).await?;
    Ok(json_response(StatusCode::OK, &DepositOrderBody::new(&view)))
}
