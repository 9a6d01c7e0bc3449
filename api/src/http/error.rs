//! Every failure the HTTP API answers, and how it is written on the wire.
//!
//! This module owns [`ApiError`] (the one error type of the handlers, with `IntoResponse`),
//! [`ErrorCode`] (every stable error code a client can see, which is also the `code` enum of
//! the OpenAPI document) and the mapping of the engine's [`Rejection`]s and the actors'
//! [`LedgerError`]s to HTTP status codes. Every error body is
//! `{"error": {"code": "...", "message": "...", "field": "..."?}}`.
//!
//! Internal failures are logged here and answered without their details.

use std::borrow::Cow;

use actors::LedgerError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::Rejection;
use serde::Serialize;
use utoipa::ToSchema;

/// `Retry-After` of a write refused while read-only.
pub const READ_ONLY_RETRY_AFTER_SECONDS: u64 = 30;

/// Every error code of the API. Codes are stable; add new ones here (the OpenAPI document
/// lists exactly these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // ---- malformed requests (400) and transport ---------------------------------------------
    /// Malformed JSON, an unknown field, a missing field, a wrong type, a value out of range.
    InvalidRequest,
    /// An id that is not 1–64 characters of `A-Z a-z 0-9 _ - . :`.
    InvalidId,
    /// An amount that is not a positive decimal string within the limits and the scale.
    InvalidAmount,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than `server.body_limit_bytes`.
    PayloadTooLarge,
    /// Missing or unknown bearer token.
    Unauthorized,
    /// The token's role may not do this.
    Forbidden,
    /// No such route.
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// Too many requests for this token (or client address); see `Retry-After`.
    RateLimited,
    /// The ledger's queues are full; see `Retry-After`.
    Overloaded,
    /// The ledger is not ready (recovering, shutting down) or cannot make progress.
    Unavailable,
    /// The request took longer than `server.request_timeout_ms` once its body had arrived.
    Timeout,
    /// The request (its body) did not arrive within `server.request_timeout_ms` (408).
    RequestTimeout,
    /// The request target is too long (414).
    UriTooLong,
    /// The request's headers are too large (431).
    HeadersTooLarge,
    /// The request tries to create an id that belongs to the ledger (`settlement:`, `dep:`,
    /// `wd:`) (400).
    ReservedId,
    /// The ledger is read-only (the kill switch): no write is applied; see `Retry-After` (503).
    ReadOnly,
    /// A bug. Logged on the server.
    Internal,
    // ---- business rejections (the engine's codes) -------------------------------------------
    ExistsWithDifferentFields,
    AccountsMustBeDifferent,
    DebitAccountNotFound,
    CreditAccountNotFound,
    AccountNotFound,
    CurrencyMismatch,
    UnknownCurrency,
    AccountFrozen,
    InsufficientFunds,
    Overflow,
    TransferNotFound,
    TransferNotPending,
    PendingTransferAlreadyPosted,
    PendingTransferAlreadyVoided,
    PendingTransferExpired,
    ExceedsPendingAmount,
    BatchAborted,
    // ---- webhooks, deposits and withdrawals -------------------------------------------------
    /// A webhook whose signature is missing, malformed or wrong (401).
    InvalidSignature,
    /// A correctly signed webhook whose timestamp is outside the provider's replay window (401).
    StaleWebhook,
    /// No webhook provider of that name is configured (404 on the webhook route, 422 in a body).
    ProviderNotFound,
    /// The provider's record API could not be read; nothing was credited (503, retry).
    ProviderUnavailable,
    /// The provider's record contradicts the notification or the withdrawal (422).
    RecordMismatch,
    /// A provider status the ledger does not know (422).
    UnsupportedEvent,
    /// No such withdrawal (404 on `GET`, 422 in a webhook).
    WithdrawalNotFound,
    /// No such deposit order (404 on `GET`, 422 in a webhook).
    DepositNotFound,
}

impl ErrorCode {
    /// The code of a business rejection.
    pub fn of_rejection(rejection: Rejection) -> ErrorCode {
        match rejection {
            Rejection::ExistsWithDifferentFields => ErrorCode::ExistsWithDifferentFields,
            Rejection::AccountsMustBeDifferent => ErrorCode::AccountsMustBeDifferent,
            Rejection::DebitAccountNotFound => ErrorCode::DebitAccountNotFound,
            Rejection::CreditAccountNotFound => ErrorCode::CreditAccountNotFound,
            Rejection::AccountNotFound => ErrorCode::AccountNotFound,
            Rejection::CurrencyMismatch => ErrorCode::CurrencyMismatch,
            Rejection::UnknownCurrency => ErrorCode::UnknownCurrency,
            Rejection::InvalidAmount => ErrorCode::InvalidAmount,
            Rejection::AccountFrozen => ErrorCode::AccountFrozen,
            Rejection::InsufficientFunds => ErrorCode::InsufficientFunds,
            Rejection::Overflow => ErrorCode::Overflow,
            Rejection::TransferNotFound => ErrorCode::TransferNotFound,
            Rejection::TransferNotPending => ErrorCode::TransferNotPending,
            Rejection::PendingTransferAlreadyPosted => ErrorCode::PendingTransferAlreadyPosted,
            Rejection::PendingTransferAlreadyVoided => ErrorCode::PendingTransferAlreadyVoided,
            Rejection::PendingTransferExpired => ErrorCode::PendingTransferExpired,
            Rejection::ExceedsPendingAmount => ErrorCode::ExceedsPendingAmount,
            Rejection::BatchAborted => ErrorCode::BatchAborted,
        }
    }
}

/// The HTTP status of a business rejection.
pub fn rejection_status(rejection: Rejection) -> StatusCode {
    match rejection {
        Rejection::ExistsWithDifferentFields
        | Rejection::TransferNotPending
        | Rejection::PendingTransferAlreadyPosted
        | Rejection::PendingTransferAlreadyVoided
        | Rejection::PendingTransferExpired => StatusCode::CONFLICT,
        Rejection::TransferNotFound | Rejection::AccountNotFound => StatusCode::NOT_FOUND,
        Rejection::InvalidAmount => StatusCode::BAD_REQUEST,
        Rejection::AccountsMustBeDifferent
        | Rejection::DebitAccountNotFound
        | Rejection::CreditAccountNotFound
        | Rejection::CurrencyMismatch
        | Rejection::UnknownCurrency
        | Rejection::AccountFrozen
        | Rejection::InsufficientFunds
        | Rejection::Overflow
        | Rejection::ExceedsPendingAmount
        | Rejection::BatchAborted => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The input field a rejection blames, if any.
pub fn rejection_field(rejection: Rejection) -> Option<&'static str> {
    match rejection {
        Rejection::InvalidAmount => Some("amount"),
        _ => None,
    }
}

/// The error body: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case. Clients match on it.
    pub code: ErrorCode,
    /// For humans; not stable.
    pub message: Cow<'static, str>,
    /// The input field at fault, when one is (`amount`, `transfers[3].amount`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
}

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for the `Retry-After` header (429, 503).
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError { status, body: ErrorBody { code, message: message.into(), field: None }, retry_after_seconds: None }
    }

    /// Blames `field`.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.body.field = Some(field.into());
        self
    }

    /// Replaces the message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> ApiError {
        self.body.message = message.into();
        self
    }

    /// Adds `Retry-After`.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    /// 400 `invalid_request` blaming `field`.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::invalid_request(message).with_field(field)
    }

    /// 400 `invalid_id` blaming `field`.
    pub fn invalid_id(field: impl Into<String>, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidId, message).with_field(field)
    }

    /// 400 `invalid_amount` blaming `field`.
    pub fn invalid_amount(field: impl Into<String>, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidAmount, message).with_field(field)
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the body must be sent with Content-Type: application/json",
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit_bytes: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit_bytes} bytes"),
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "a valid bearer token is required")
    }

    /// 403 `forbidden`.
    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "this token's role may not do this")
    }

    /// 404 `not_found` (no such route).
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "this route does not take this method",
        )
    }

    /// 429 `rate_limited`.
    pub fn rate_limited(retry_after_seconds: u64) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many requests; retry later")
            .with_retry_after(retry_after_seconds)
    }

    /// 503 `overloaded`.
    pub fn overloaded() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Overloaded, "the ledger is busy; retry later")
            .with_retry_after(1)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message).with_retry_after(1)
    }

    /// 503 `timeout`.
    pub fn timeout() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Timeout, "the request took too long; retry later")
            .with_retry_after(1)
    }

    /// 408 `request_timeout`: the body did not arrive in time.
    pub fn request_timeout() -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout, "the request did not arrive in time")
    }

    /// 414 `uri_too_long`.
    pub fn uri_too_long(limit_bytes: usize) -> ApiError {
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            format!("the request target is longer than {limit_bytes} bytes"),
        )
    }

    /// 431 `headers_too_large`.
    pub fn headers_too_large(limit_bytes: usize) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!("the request headers are larger than {limit_bytes} bytes"),
        )
    }

    /// 400 `reserved_id` blaming `field`.
    pub fn reserved_id(field: impl Into<String>, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ReservedId, message).with_field(field)
    }

    /// 503 `read_only`: the kill switch is on.
    pub fn read_only() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ReadOnly,
            "the ledger is read-only; no write is applied; retry later",
        )
        .with_retry_after(READ_ONLY_RETRY_AFTER_SECONDS)
    }

    /// 500 `internal`. The details go to the log, not to the client.
    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal error; see the server log")
    }

    /// A business rejection with its status, code and (for `invalid_amount`) field.
    pub fn rejection(rejection: Rejection) -> ApiError {
        let error = ApiError::new(rejection_status(rejection), ErrorCode::of_rejection(rejection), rejection.message());
        match rejection_field(rejection) {
            Some(field) => error.with_field(field),
            None => error,
        }
    }

    /// An error of the actor tree. `Unavailable` is logged with its reason and answered
    /// without it.
    pub fn ledger(error: LedgerError) -> ApiError {
        match error {
            LedgerError::Rejected(rejection) => ApiError::rejection(rejection),
            LedgerError::Overloaded => ApiError::overloaded(),
            LedgerError::Unavailable(reason) => {
                tracing::error!(%reason, "the ledger is unavailable");
                ApiError::unavailable("the ledger is unavailable; retry later")
            }
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        ApiError::ledger(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bearer_challenge = self.body.code == ErrorCode::Unauthorized;
        let body = ErrorResponse { error: self.body };
        let bytes = serde_json::to_vec(&body)
            .unwrap_or_else(|_| b"{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}".to_vec());
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if bearer_challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_the_engine_spells_them() {
        let every = [
            Rejection::ExistsWithDifferentFields,
            Rejection::AccountsMustBeDifferent,
            Rejection::DebitAccountNotFound,
            Rejection::CreditAccountNotFound,
            Rejection::AccountNotFound,
            Rejection::CurrencyMismatch,
            Rejection::UnknownCurrency,
            Rejection::InvalidAmount,
            Rejection::AccountFrozen,
            Rejection::InsufficientFunds,
            Rejection::Overflow,
            Rejection::TransferNotFound,
            Rejection::TransferNotPending,
            Rejection::PendingTransferAlreadyPosted,
            Rejection::PendingTransferAlreadyVoided,
            Rejection::PendingTransferExpired,
            Rejection::ExceedsPendingAmount,
            Rejection::BatchAborted,
        ];
        for rejection in every {
            let written = serde_json::to_value(ErrorCode::of_rejection(rejection)).unwrap();
            assert_eq!(written, serde_json::Value::from(rejection.code()));
        }
    }

    #[test]
    fn ledger_errors_are_503_with_retry_after_and_no_internals() {
        let overloaded = ApiError::ledger(LedgerError::Overloaded);
        assert_eq!((overloaded.status, overloaded.body.code), (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Overloaded));
        assert_eq!(overloaded.retry_after_seconds, Some(1));
        let unavailable = ApiError::ledger(LedgerError::Unavailable("disk /dev/sda1 on fire".to_owned()));
        assert_eq!(unavailable.body.code, ErrorCode::Unavailable);
        assert!(!unavailable.body.message.contains("sda1"));
        let response = unavailable.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let rejected = ApiError::ledger(LedgerError::Rejected(Rejection::InvalidAmount));
        assert_eq!(rejected.body.field.as_deref(), Some("amount"));
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(rejection_status(Rejection::PendingTransferExpired), StatusCode::CONFLICT);
        assert_eq!(rejection_status(Rejection::TransferNotFound), StatusCode::NOT_FOUND);
        assert_eq!(rejection_status(Rejection::InsufficientFunds), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(rejection_status(Rejection::InvalidAmount), StatusCode::BAD_REQUEST);
    }
}
