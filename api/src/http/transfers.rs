//! The transfers resource: `/v1/transfers`.
//!
//! This module owns the transfer routes (create, read, post, void, batch), the strict parsing
//! of a transfer request (shared by single transfers and batch items, which name their index
//! in error fields: `transfers[3].amount`), the transfer JSON object and the batch result
//! objects, and the transfer counters of `/metrics`. Creating a transfer or a batch reads the
//! body with the fast reader of [`transfer_json`] first and falls back to the strict reader,
//! and writes the answer with its direct writers: same results, fewer allocations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actors::BatchItemResult;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use engine::{Rejection, Transfer, TransferRequest, TransferStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::accounts::{EmptyRequest, PathIdParam};
use crate::http::error::{ApiError, ErrorBody, ErrorCode, ErrorResponse, rejection_field};
use crate::http::json::{
    Fields, JsonBytes, OptionalJsonBody, PathId, created_or_replayed_bytes, format_timestamp_ms, json_bytes_response,
    json_response, parse_json,
};
use crate::http::reserved::{Caller, check_new_transfers};
use crate::http::transfer_json;
use crate::http::{AppState, RequestLimits};

/// The routes of this resource (state: [`AppState`]).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/transfers", post(create_transfer))
        // `GET /v1/transfers/batch` reads the transfer whose id is `batch`.
        .route("/v1/transfers/batch", post(create_batch).get(get_transfer_named_batch))
        .route("/v1/transfers/{id}", get(get_transfer))
        .route("/v1/transfers/{id}/post", post(post_transfer))
        .route("/v1/transfers/{id}/void", post(void_transfer))
}

/// The fields of a transfer request.
pub const CREATE_TRANSFER_FIELDS: [&str; 8] =
    ["id", "debit_account", "credit_account", "amount", "pending", "timeout_seconds", "description", "metadata"];

/// Longest `timeout_seconds` of a hold: ten years.
pub const TIMEOUT_SECONDS_MAX: u64 = 10 * 365 * 24 * 3600;

/// `POST /v1/transfers` body, and one item of a batch.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransferRequest {
    /// Unique across the ledger, forever: the idempotency key.
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "t-1")]
    pub id: String,
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "alice")]
    pub debit_account: String,
    #[schema(pattern = r"^[A-Za-z0-9_.:\-]{1,64}$", min_length = 1, max_length = 64, example = "bob")]
    pub credit_account: String,
    /// Positive, at most the currency's scale of fractional digits, at most `limits.amount_max`.
    #[schema(pattern = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$", example = "10.00")]
    pub amount: String,
    /// `true`: a hold (two-phase), posted or voided later. Default false.
    #[schema(nullable = false)]
    pub pending: Option<bool>,
    /// Pending only (non-zero on a plain transfer is 400): the hold expires this many seconds
    /// after creation; 0 (default) = never.
    #[schema(minimum = 0, maximum = 315_360_000, nullable = false)]
    pub timeout_seconds: Option<u64>,
    #[schema(max_length = 256, example = "rent", nullable = false)]
    pub description: Option<String>,
    /// At most 16 pairs; keys ≤ 64 characters, values ≤ 256.
    #[schema(nullable = false)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v1/transfers/{id}/post` body (optional).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostTransferRequest {
    /// How much of the hold to post (default: all of it); the rest is released.
    #[schema(
        pattern = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$",
        example = "4.00",
        nullable = false
    )]
    pub amount: Option<String>,
}

/// `POST /v1/transfers/batch` body.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Applied as if one after another, in index order. At most `limits.batch_max` (8190).
    #[schema(max_items = 8190)]
    pub transfers: Vec<CreateTransferRequest>,
    /// All or nothing. Default false.
    #[schema(nullable = false)]
    pub atomic: Option<bool>,
}

/// Where a transfer is in its life.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransferStatusBody {
    Posted,
    Pending,
    Voided,
    Expired,
}

impl From<TransferStatus> for TransferStatusBody {
    fn from(status: TransferStatus) -> Self {
        match status {
            TransferStatus::Posted => TransferStatusBody::Posted,
            TransferStatus::Pending => TransferStatusBody::Pending,
            TransferStatus::Voided => TransferStatusBody::Voided,
            TransferStatus::Expired => TransferStatusBody::Expired,
        }
    }
}

/// A transfer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransferBody {
    #[schema(example = "t-1")]
    pub id: String,
    #[schema(example = "alice")]
    pub debit_account: String,
    #[schema(example = "bob")]
    pub credit_account: String,
    /// With exactly the currency's scale.
    #[schema(example = "10.00")]
    pub amount: String,
    #[schema(example = "USD")]
    pub currency: String,
    pub status: TransferStatusBody,
    /// What was posted: the amount of a plain transfer, the posted part of a hold, else zero.
    #[schema(example = "10.00")]
    pub posted_amount: String,
    #[schema(example = "rent")]
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2026-11-22T10:00:00.000Z")]
    pub created_at: String,
    /// Position of the creation in the ledger's log.
    #[schema(minimum = 1, example = 42)]
    pub seq: u64,
}

impl TransferBody {
    pub fn new(transfer: &Transfer) -> TransferBody {
        let currency = &transfer.currency;
        TransferBody {
            id: transfer.id.to_string(),
            debit_account: transfer.debit_account.to_string(),
            credit_account: transfer.credit_account.to_string(),
            amount: currency.format(transfer.amount),
            currency: currency.code.to_string(),
            status: transfer.status.into(),
            posted_amount: currency.format(transfer.posted_amount),
            description: transfer.description.clone(),
            metadata: transfer.metadata.clone(),
            created_at: format_timestamp_ms(transfer.created_at_ms),
            seq: transfer.seq,
        }
    }
}

/// The result of one batch item.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum BatchItemBody {
    /// The item created its transfer.
    Created { transfer: TransferBody },
    /// The same transfer existed already (idempotent replay).
    Exists { transfer: TransferBody },
    /// The item was not applied.
    Rejected { error: ErrorBody },
}

/// `POST /v1/transfers/batch` answer: one result per item, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchItemBody>,
}

/// Parses and checks one transfer request; `prefix` names it in error fields.
pub fn parse_transfer_request(
    limits: &RequestLimits,
    value: &Value,
    prefix: &str,
) -> Result<TransferRequest, ApiError> {
    let fields = Fields::new(value, prefix, &CREATE_TRANSFER_FIELDS)?;
    let id = fields.id("id")?;
    let debit_account = fields.id("debit_account")?;
    let credit_account = fields.id("credit_account")?;
    let amount = fields.amount("amount", limits.amount_max)?;
    let pending = fields.optional_bool("pending")?.unwrap_or(false);
    let timeout_seconds = fields.optional_integer("timeout_seconds", TIMEOUT_SECONDS_MAX)?.unwrap_or(0);
    check_timeout_applies(pending, timeout_seconds, || fields.path("timeout_seconds"))?;
    let description =
        fields.optional_text("description", limits.text.description_chars_max)?.unwrap_or_default().to_owned();
    let metadata = fields.optional_metadata("metadata", &limits.text)?;
    Ok(TransferRequest { id, debit_account, credit_account, amount, pending, timeout_seconds, description, metadata })
}

/// The one rule between two fields of a transfer request: only a pending transfer has a
/// timeout. (Shared with the fast reader of `transfer_json`, like the field rules of `json`.)
pub(crate) fn check_timeout_applies(
    pending: bool,
    timeout_seconds: u64,
    path: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if !pending && timeout_seconds != 0 {
        return Err(ApiError::invalid_field(path(), "`timeout_seconds` applies only to pending transfers"));
    }
    Ok(())
}

/// Creates a transfer (or a hold, with `pending: true`).
#[utoipa::path(
    post, path = "/v1/transfers", tag = "transfers",
    request_body(content = CreateTransferRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = TransferBody),
        (status = 200, description = "The same transfer existed already (idempotent replay).", body = TransferBody,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "`invalid_request`, `invalid_id`, `invalid_amount`, `reserved_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden`: a `client` token naming a `settlement:` account.", body = ErrorResponse),
        (status = 409, description = "`exists_with_different_fields`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 422, description = "`accounts_must_be_different`, `debit_account_not_found`, `credit_account_not_found`, \
            `currency_mismatch`, `account_frozen`, `insufficient_funds`, `overflow`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_transfer(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let request = match transfer_json::read_transfer(&state.limits, &body) {
        Some(request) => request,
        None => parse_transfer_request(&state.limits, &parse_json(&body)?, "")?,
    };
    check_new_transfers(&caller, std::slice::from_ref(&request), |_| String::new())?;
    let outcome = state.ledger()?.create_transfer(request).await;
    let metrics = &state.transfer_metrics;
    match outcome {
        Ok((transfer, created)) => {
            metrics.count_result(if created { "created" } else { "exists" }, 1);
            if created && transfer.status == TransferStatus::Posted {
                metrics.add_credited(&transfer.currency, transfer.amount);
            }
            Ok(created_or_replayed_bytes(created, transfer_json::transfer_bytes(&transfer)))
        }
        Err(error) => {
            if let actors::LedgerError::Rejected(rejection) = &error {
                metrics.count_result(rejection.code(), 1);
            }
            Err(error.into())
        }
    }
}

/// Creates many transfers, applied as if one after another in index order.
#[utoipa::path(
    post, path = "/v1/transfers/batch", tag = "transfers",
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per item, in order.", body = BatchResponse),
        (status = 400, description = "`invalid_request`, `invalid_id`, `invalid_amount`, `reserved_id`: a malformed \
            item (`field`: `transfers[3].amount`) or too many items; nothing is applied.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden`: a `client` token naming a `settlement:` account; nothing is applied.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_batch(
    State(state): State<Arc<AppState>>,
    Caller(caller): Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let (requests, atomic) = match transfer_json::read_batch(&state.limits, &body) {
        Some(batch) => batch,
        None => parse_batch(&state.limits, &parse_json(&body)?)?,
    };
    check_new_transfers(&caller, &requests, |index| format!("transfers[{index}]"))?;
    if requests.is_empty() {
        return Ok(json_response(StatusCode::OK, &BatchResponse { results: Vec::new() }));
    }
    let outcomes = state.ledger()?.create_batch(requests, atomic).await?;
    count_batch(&state, &outcomes);
    Ok(json_bytes_response(StatusCode::OK, transfer_json::batch_bytes(&outcomes)))
}

/// The strict reading of a batch body: every error names its field.
fn parse_batch(limits: &RequestLimits, body: &Value) -> Result<(Vec<TransferRequest>, bool), ApiError> {
    let fields = Fields::new(body, "", &["transfers", "atomic"])?;
    let items = fields.array("transfers")?;
    let batch_max = limits.batch_max;
    if items.len() > batch_max {
        return Err(ApiError::invalid_field("transfers", format!("a batch has at most {batch_max} transfers")));
    }
    let atomic = fields.optional_bool("atomic")?.unwrap_or(false);
    let requests = items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_transfer_request(limits, item, &format!("transfers[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((requests, atomic))
}

/// The error object of a rejected batch item.
pub(crate) fn rejection_body(rejection: Rejection) -> ErrorBody {
    ErrorBody {
        code: ErrorCode::of_rejection(rejection),
        message: rejection.message().into(),
        field: rejection_field(rejection).map(str::to_owned),
    }
}

/// Counts a batch's results and credited amounts, one metrics update per kind.
fn count_batch(state: &AppState, outcomes: &[BatchItemResult]) {
    let mut by_result: HashMap<&'static str, u64> = HashMap::new();
    let mut credited: HashMap<&str, (&engine::Currency, engine::Amount)> = HashMap::new();
    for outcome in outcomes {
        let result = match outcome {
            BatchItemResult::Created(transfer) => {
                if transfer.status == TransferStatus::Posted {
                    let (_, total) =
                        credited.entry(&transfer.currency.code).or_insert((&transfer.currency, engine::Amount::ZERO));
                    // Each amount is bounded: a batch's sum stays far inside i128.
                    *total = total.checked_add(transfer.amount).unwrap_or(*total);
                }
                "created"
            }
            BatchItemResult::Exists(_) => "exists",
            BatchItemResult::Rejected(rejection) => rejection.code(),
        };
        *by_result.entry(result).or_default() += 1;
    }
    for (result, count) in by_result {
        state.transfer_metrics.count_result(result, count);
    }
    for (currency, amount) in credited.into_values() {
        state.transfer_metrics.add_credited(currency, amount);
    }
}

/// Reads a transfer (its current status).
#[utoipa::path(
    get, path = "/v1/transfers/{id}", tag = "transfers",
    params(PathIdParam),
    responses(
        (status = 200, description = "The transfer.", body = TransferBody),
        (status = 400, description = "`invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`transfer_not_found`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_transfer(State(state): State<Arc<AppState>>, PathId(id): PathId) -> Result<Response, ApiError> {
    let transfer = state.ledger()?.transfer(&id).await?;
    Ok(json_response(StatusCode::OK, &TransferBody::new(&transfer)))
}

/// Reads the transfer whose id is `batch` (the path `/v1/transfers/batch` also takes the
/// batch route's POST).
#[utoipa::path(
    get, path = "/v1/transfers/batch", tag = "transfers",
    responses(
        (status = 200, description = "The transfer whose id is `batch`.", body = TransferBody),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`transfer_not_found`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_transfer_named_batch(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let id = engine::Id::parse("batch").map_err(|_| ApiError::internal())?;
    let transfer = state.ledger()?.transfer(&id).await?;
    Ok(json_response(StatusCode::OK, &TransferBody::new(&transfer)))
}

/// Posts a hold: all of it by default, or `amount` of it (the rest is released).
#[utoipa::path(
    post, path = "/v1/transfers/{id}/post", tag = "transfers",
    params(PathIdParam),
    request_body(content = Option<PostTransferRequest>, content_type = "application/json", description = "Optional; may be left out."),
    responses(
        (status = 200, description = "The transfer, posted.", body = TransferBody),
        (status = 400, description = "`invalid_request`, `invalid_id`, `invalid_amount`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`transfer_not_found`.", body = ErrorResponse),
        (status = 409, description = "`transfer_not_pending`, `pending_transfer_already_posted`, \
            `pending_transfer_already_voided`, `pending_transfer_expired`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 422, description = "`exceeds_pending_amount`, `account_frozen`, `overflow`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn post_transfer(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    let amount = match &body {
        Some(body) => Fields::new(body, "", &["amount"])?.optional_amount("amount", state.limits.amount_max)?,
        None => None,
    };
    let transfer = state.ledger()?.post_transfer(&id, amount).await?;
    state.transfer_metrics.add_credited(&transfer.currency, transfer.posted_amount);
    Ok(json_response(StatusCode::OK, &TransferBody::new(&transfer)))
}

/// Voids a hold.
#[utoipa::path(
    post, path = "/v1/transfers/{id}/void", tag = "transfers",
    params(PathIdParam),
    request_body(content = Option<EmptyRequest>, content_type = "application/json", description = "Optional; may be left out."),
    responses(
        (status = 200, description = "The transfer, voided.", body = TransferBody),
        (status = 400, description = "`invalid_request`, `invalid_id`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 404, description = "`transfer_not_found`.", body = ErrorResponse),
        (status = 409, description = "`transfer_not_pending`, `pending_transfer_already_posted`, \
            `pending_transfer_already_voided`, `pending_transfer_expired`.", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`overloaded`, `unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn void_transfer(
    State(state): State<Arc<AppState>>,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    if let Some(body) = &body {
        Fields::new(body, "", &[])?;
    }
    let transfer = state.ledger()?.void_transfer(&id).await?;
    Ok(json_response(StatusCode::OK, &TransferBody::new(&transfer)))
}
