//! The layers every request goes through, outside the routes.
//!
//! This module owns what the contract asks of every answer and of every request before a
//! route sees it (API.md §2): the security headers (`X-Content-Type-Options: nosniff`,
//! `Cache-Control: no-store`), CORS for the configured origins only (tower-http), the body
//! limit announced by `Content-Length` (413 at once, before any `100 Continue`), the longest
//! request target (414), the request timeout (408 `request_timeout` while the body has not
//! arrived, 503 `timeout` once it has), and the JSON error shape of every error answer, even
//! those made by an extractor or a layer that knows nothing of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::error::{ApiError, ErrorCode};
use crate::http::json::is_json_content_type;

/// Longest request target (path and query), in bytes; longer: 414 `uri_too_long`.
pub const REQUEST_TARGET_BYTES_MAX: usize = 8192;

/// Most bytes of request headers (names, values and their separators); more: 431
/// `headers_too_large`. The listener reads heads of up to twice this, so that a head over this
/// limit is read whole and answered, not cut off.
pub const REQUEST_HEADERS_BYTES_MAX: usize = 64 * 1024;

/// Set by the body readers once the whole body has arrived; the request timeout reads it to
/// tell a slow client (408) from a slow ledger (503).
#[derive(Debug, Clone, Default)]
pub struct BodyArrived(pub Arc<AtomicBool>);

impl BodyArrived {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The request timeout: the whole answer within `timeout`.
pub async fn request_timeout(State(timeout): State<Duration>, mut request: Request, next: Next) -> Response {
    let arrived = BodyArrived::default();
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0");
    request.extensions_mut().insert(arrived.clone());
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) if has_body && !arrived.0.load(Ordering::Acquire) => ApiError::request_timeout().into_response(),
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// 414 for a request target over [`REQUEST_TARGET_BYTES_MAX`], 431 for headers over
/// [`REQUEST_HEADERS_BYTES_MAX`], 413 at once when `Content-Length` exceeds the body limit.
pub async fn reject_oversized(State(body_limit_bytes): State<usize>, request: Request, next: Next) -> Response {
    let target_bytes = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if target_bytes > REQUEST_TARGET_BYTES_MAX {
        return ApiError::uri_too_long(REQUEST_TARGET_BYTES_MAX).into_response();
    }
    let header_bytes: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if header_bytes > REQUEST_HEADERS_BYTES_MAX {
        return ApiError::headers_too_large(REQUEST_HEADERS_BYTES_MAX).into_response();
    }
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|length| length.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > u64::try_from(body_limit_bytes).unwrap_or(u64::MAX)) {
        let mut response = ApiError::payload_too_large(body_limit_bytes).into_response();
        // The body is not read: the connection cannot carry another request after it.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    next.run(request).await
}

/// Gives every error answer the JSON error shape: an answer of status 400 or above whose body
/// is not JSON (an extractor's plain-text rejection) is replaced by the error of its status.
pub async fn json_error_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 || is_json_content_type(response.headers()) {
        return response;
    }
    let error = error_of_status(status);
    let mut shaped = error.into_response();
    for name in [header::RETRY_AFTER, header::ALLOW, header::CONNECTION] {
        if let Some(value) = response.headers().get(&name) {
            shaped.headers_mut().insert(name, value.clone());
        }
    }
    shaped
}

/// The API error a bare status stands for.
fn error_of_status(status: StatusCode) -> ApiError {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::MethodNotAllowed, "this route does not take this method"),
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::RequestTimeout, "the request did not arrive in time"),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "the body is too large"),
        StatusCode::URI_TOO_LONG => (ErrorCode::UriTooLong, "the request target is too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (ErrorCode::UnsupportedMediaType, "the body must be sent with Content-Type: application/json")
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (ErrorCode::HeadersTooLarge, "the request head is too large"),
        StatusCode::TOO_MANY_REQUESTS => (ErrorCode::RateLimited, "too many requests; retry later"),
        StatusCode::UNAUTHORIZED => (ErrorCode::Unauthorized, "a valid bearer token is required"),
        StatusCode::FORBIDDEN => (ErrorCode::Forbidden, "this token's role may not do this"),
        StatusCode::SERVICE_UNAVAILABLE => (ErrorCode::Unavailable, "unavailable; retry later"),
        status if status.is_server_error() => (ErrorCode::Internal, "internal error; see the server log"),
        _ => (ErrorCode::InvalidRequest, "the request could not be read"),
    };
    ApiError::new(status, code, message)
}

/// Adds the security headers to every answer.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// CORS for `origins` (`server.cors_allowed_origins`), or `None` when the list is empty: then
/// no answer carries CORS headers.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_statuses_get_their_codes() {
        assert_eq!(error_of_status(StatusCode::URI_TOO_LONG).body.code, ErrorCode::UriTooLong);
        assert_eq!(error_of_status(StatusCode::BAD_REQUEST).body.code, ErrorCode::InvalidRequest);
        assert_eq!(error_of_status(StatusCode::BAD_GATEWAY).body.code, ErrorCode::Internal);
    }
}
