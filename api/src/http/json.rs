//! Strict JSON in, exact JSON out.
//!
//! This module owns how request bodies are read and checked: the `Content-Type` rule (415),
//! the body limit (413, mapped from axum's own limit rejection), malformed JSON (400), and
//! [`Fields`], a reader over one JSON object that refuses unknown fields, missing fields and
//! wrong types with `invalid_request` naming the field (`transfers[3].amount`), bad ids with
//! `invalid_id` and bad amounts with `invalid_amount`. It also owns the shared output formats
//! (timestamps) and [`json_response`].
//!
//! Bodies are parsed into a `serde_json::Value` first and then walked field by field, so that
//! every error can name the field at fault and pick the contract's code (an amount written as a
//! JSON number is `invalid_amount`, not a type error).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::amount::{AmountError, WrittenAmount, parse_amount};
use engine::{Id, IdError, Metadata};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::http::auth::Identity;
use crate::http::duplicate_keys::find_duplicate_key;
use crate::http::error::ApiError;
use crate::http::layers::BodyArrived;

/// A required JSON body: `Content-Type: application/json`, within the body limit, valid JSON.
pub struct JsonBody(pub Value);

/// An optional JSON body (post, void, freeze, unfreeze): an empty body is accepted whatever
/// its `Content-Type`; a non-empty one must be JSON like [`JsonBody`].
pub struct OptionalJsonBody(pub Option<Value>);

/// The bytes of a required JSON body, checked like [`JsonBody`] (`Content-Type`, limit) but
/// not parsed yet: for routes with a fast reader, which fall back to [`parse_json`].
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(request.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        read_body(request, state).await.map(JsonBytes)
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json_content_type(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        if !json {
            return Err(ApiError::unsupported_media_type());
        }
        parse_json(&bytes).map(|value| OptionalJsonBody(Some(value)))
    }
}

/// The raw body, within the body limit, whatever its `Content-Type` (webhooks: the signature
/// is checked over these exact bytes before anything is parsed).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(request, state).await.map(RawBody)
    }
}

/// Whether the request says `application/json` (parameters such as `charset` allowed).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Reads the whole body within the limit set by `DefaultBodyLimit`.
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = request.extensions().get::<BodyLimit>().map(|limit| limit.0);
    let arrived = request.extensions().get::<BodyArrived>().cloned();
    let bytes = Bytes::from_request(request, state).await.map_err(|rejection| body_rejection(&rejection, limit))?;
    if let Some(arrived) = arrived {
        arrived.mark();
    }
    Ok(bytes)
}

/// The configured body limit, put in request extensions by the router so that the 413
/// message can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn body_rejection(rejection: &BytesRejection, limit: Option<usize>) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::payload_too_large(limit.unwrap_or_default());
    }
    ApiError::invalid_request(format!("the body could not be read: {rejection}"))
}

/// Parses a body into a JSON tree: 400 `invalid_request` when it is not JSON, or when an
/// object has the same key twice (naming it: never "last one wins").
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|error| ApiError::invalid_request(format!("malformed JSON: {error}")))?;
    if let Some(path) = find_duplicate_key(bytes) {
        return Err(ApiError::invalid_field(path.clone(), format!("`{path}` is written twice")));
    }
    Ok(value)
}

/// The `{id}` segment of a route, checked as an id of up to 200 characters, so that every id
/// the ledger derives can be read back (400 `invalid_id`, field `id`).
pub struct PathId(pub Id);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await.map_err(|rejection| {
            ApiError::invalid_id("id", format!("`id` could not be read from the path: {rejection}"))
        })?;
        Id::parse_internal(&text).map(PathId).map_err(|error| id_error(&error, "id", Id::INTERNAL_CHARS_MAX))
    }
}

/// Requires the caller's role to be `admin` (403 `forbidden`). Put it first among a
/// handler's arguments so that the role is checked before the path and the body.
pub struct AdminOnly;

impl<S: Send + Sync> FromRequestParts<S> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Identity>() {
            Some(identity) => identity.require_admin().map(|()| AdminOnly),
            // The auth guard runs before every /v1 handler; without it there is no caller.
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// Header set on an idempotent replay.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// 201 with `body` when `created`, else 200 with `Idempotent-Replayed: true`.
pub fn created_or_replayed(created: bool, body: &impl Serialize) -> Response {
    if created {
        return json_response(StatusCode::CREATED, body);
    }
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A response of JSON already written, with a status and `Content-Type: application/json`.
pub fn json_bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// [`created_or_replayed`] for JSON already written.
pub fn created_or_replayed_bytes(created: bool, bytes: Vec<u8>) -> Response {
    if created {
        return json_bytes_response(StatusCode::CREATED, bytes);
    }
    let mut response = json_bytes_response(StatusCode::OK, bytes);
    response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A JSON response with a status and `Content-Type: application/json`.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => {
            tracing::error!(%error, "a response could not be encoded");
            ApiError::internal().into_response()
        }
    }
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds:
/// `2026-11-22T10:00:00.000Z`.
pub fn format_timestamp_ms(milliseconds: i64) -> String {
    let mut out = Vec::with_capacity(TIMESTAMP_BYTES);
    write_timestamp_ms(&mut out, milliseconds);
    String::from_utf8(out).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Length of a formatted timestamp with a four-digit year.
const TIMESTAMP_BYTES: usize = 24;

/// Last millisecond of the year 9999, the end of the four-digit years.
const TIMESTAMP_MS_MAX: i64 = 253_402_300_799_999;

/// Appends [`format_timestamp_ms`]'s text. Years 1970 to 9999 are computed directly (days to
/// civil date, H. Hinnant's algorithm); other instants go through the `time` crate.
pub fn write_timestamp_ms(out: &mut Vec<u8>, milliseconds: i64) {
    if !(0..=TIMESTAMP_MS_MAX).contains(&milliseconds) {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let nanoseconds = i128::from(milliseconds) * 1_000_000;
        let text = time::OffsetDateTime::from_unix_timestamp_nanos(nanoseconds)
            .ok()
            .and_then(|moment| moment.format(&format).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned());
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let days = milliseconds / 86_400_000;
    let in_day = milliseconds % 86_400_000;
    // Days since 0000-03-01, in 400-year eras of 146,097 days.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, in_day / 3_600_000, 2);
    out.push(b':');
    push_digits(out, in_day / 60_000 % 60, 2);
    out.push(b':');
    push_digits(out, in_day / 1000 % 60, 2);
    out.push(b'.');
    push_digits(out, in_day % 1000, 3);
    out.push(b'Z');
}

/// The last `width` decimal digits of a non-negative `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, value: i64, width: u32) {
    for position in (0..width).rev() {
        let digit = (value / 10_i64.pow(position)) % 10;
        out.push(b'0' + u8::try_from(digit).unwrap_or(0));
    }
}

/// Limits on metadata and descriptions (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct TextLimits {
    pub metadata_entries_max: usize,
    pub metadata_key_chars_max: usize,
    pub metadata_value_chars_max: usize,
    pub description_chars_max: usize,
}

/// A reader over one JSON object of a request. `prefix` names the object in error fields
/// (`""` for the body itself, `transfers[3]` for a batch item).
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// Reads `value` as an object whose fields are all in `known`.
    pub fn new(value: &'a Value, prefix: impl Into<String>, known: &[&str]) -> Result<Fields<'a>, ApiError> {
        let prefix = prefix.into();
        let Value::Object(object) = value else {
            let error = ApiError::invalid_request(format!("expected a JSON object, got {}", kind_of(value)));
            return Err(if prefix.is_empty() { error } else { error.with_field(prefix) });
        };
        let fields = Fields { object, prefix };
        if let Some(unknown) = object.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(ApiError::invalid_field(fields.path(unknown), format!("unknown field `{unknown}`")));
        }
        Ok(fields)
    }

    /// The field's name as errors print it.
    pub fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_owned() } else { format!("{}.{key}", self.prefix) }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key)
    }

    fn required(&self, key: &str) -> Result<&'a Value, ApiError> {
        self.get(key).ok_or_else(|| ApiError::invalid_field(self.path(key), format!("missing field `{key}`")))
    }

    fn wrong_type(&self, key: &str, expected: &str, value: &Value) -> ApiError {
        ApiError::invalid_field(self.path(key), format!("`{key}` must be {expected}, got {}", kind_of(value)))
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<&'a str, ApiError> {
        match self.required(key)? {
            Value::String(text) => Ok(text),
            other => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// A required id.
    pub fn id(&self, key: &str) -> Result<Id, ApiError> {
        let text = self.string(key)?;
        parse_id(text, &self.path(key))
    }

    /// A required amount: a string of decimal digits, positive, at most `amount_max`.
    pub fn amount(&self, key: &str, amount_max: u128) -> Result<WrittenAmount, ApiError> {
        let value =
            self.get(key).ok_or_else(|| ApiError::invalid_field(self.path(key), format!("missing field `{key}`")))?;
        self.amount_value(key, value, amount_max)
    }

    /// An optional amount.
    pub fn optional_amount(&self, key: &str, amount_max: u128) -> Result<Option<WrittenAmount>, ApiError> {
        self.get(key).map(|value| self.amount_value(key, value, amount_max)).transpose()
    }

    fn amount_value(&self, key: &str, value: &Value, amount_max: u128) -> Result<WrittenAmount, ApiError> {
        let Value::String(text) = value else {
            return Err(ApiError::invalid_amount(
                self.path(key),
                format!("`{key}` must be a string of decimal digits such as \"12.50\", got {}", kind_of(value)),
            ));
        };
        parse_amount(text, amount_max).map_err(|error| amount_error(&self.path(key), &error))
    }

    /// An optional boolean.
    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(self.wrong_type(key, "true or false", other)),
        }
    }

    /// An optional non-negative integer, at most `max`.
    pub fn optional_integer(&self, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(number)) => match number.as_u64() {
                Some(value) => check_integer(key, value, max, || self.path(key)).map(Some),
                None => Err(integer_error(key, max, self.path(key))),
            },
            Some(other) => Err(self.wrong_type(key, "an integer", other)),
        }
    }

    /// An optional string of at most `chars_max` characters.
    pub fn optional_text(&self, key: &str, chars_max: usize) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => check_text(key, text, chars_max, || self.path(key)).map(Some),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// Optional metadata: an object of string values within the limits.
    pub fn optional_metadata(&self, key: &str, limits: &TextLimits) -> Result<Metadata, ApiError> {
        let object = match self.get(key) {
            None => return Ok(BTreeMap::new()),
            Some(Value::Object(object)) => object,
            Some(other) => return Err(self.wrong_type(key, "an object of strings", other)),
        };
        let field = || self.path(key);
        check_metadata_count(key, object.len(), limits, field)?;
        let mut metadata = BTreeMap::new();
        for (name, value) in object {
            check_metadata_key(key, name, limits, field)?;
            let Value::String(text) = value else {
                return Err(ApiError::invalid_field(field(), format!("`{key}` values must be strings")));
            };
            check_metadata_value(key, text, limits, field)?;
            metadata.insert(name.clone(), text.clone());
        }
        Ok(metadata)
    }

    /// A required array.
    pub fn array(&self, key: &str) -> Result<&'a Vec<Value>, ApiError> {
        match self.required(key)? {
            Value::Array(items) => Ok(items),
            other => Err(self.wrong_type(key, "an array", other)),
        }
    }
}

// ---- the rules of a field's value, shared by the strict reader above and the fast reader
// of the transfer routes (`transfer_json`), so that both accept exactly the same values. Each
// takes the field's name as errors print it lazily: the fast reader builds it only to fail.

/// An integer field of at most `max`.
pub fn check_integer(key: &str, value: u64, max: u64, path: impl FnOnce() -> String) -> Result<u64, ApiError> {
    if value <= max { Ok(value) } else { Err(integer_error(key, max, path())) }
}

fn integer_error(key: &str, max: u64, path: String) -> ApiError {
    ApiError::invalid_field(path, format!("`{key}` must be an integer from 0 to {max}"))
}

/// A text field of at most `chars_max` characters.
pub fn check_text<'t>(
    key: &str,
    text: &'t str,
    chars_max: usize,
    path: impl FnOnce() -> String,
) -> Result<&'t str, ApiError> {
    if text.chars().count() > chars_max {
        return Err(ApiError::invalid_field(path(), format!("`{key}` is at most {chars_max} characters")));
    }
    Ok(text)
}

/// The number of metadata pairs.
pub fn check_metadata_count(
    key: &str,
    count: usize,
    limits: &TextLimits,
    path: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if count > limits.metadata_entries_max {
        return Err(ApiError::invalid_field(
            path(),
            format!("`{key}` has at most {} pairs", limits.metadata_entries_max),
        ));
    }
    Ok(())
}

/// One metadata key.
pub fn check_metadata_key(
    key: &str,
    name: &str,
    limits: &TextLimits,
    path: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if name.chars().count() > limits.metadata_key_chars_max {
        return Err(ApiError::invalid_field(
            path(),
            format!("`{key}` keys are at most {} characters", limits.metadata_key_chars_max),
        ));
    }
    Ok(())
}

/// One metadata value.
pub fn check_metadata_value(
    key: &str,
    text: &str,
    limits: &TextLimits,
    path: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if text.chars().count() > limits.metadata_value_chars_max {
        return Err(ApiError::invalid_field(
            path(),
            format!("`{key}` values are at most {} characters", limits.metadata_value_chars_max),
        ));
    }
    Ok(())
}

/// Parses a client id, blaming `field`.
pub fn parse_id(text: &str, field: &str) -> Result<Id, ApiError> {
    Id::parse(text).map_err(|error| id_error(&error, field, Id::CLIENT_CHARS_MAX))
}

/// The `invalid_id` error of an id that does not parse.
fn id_error(error: &IdError, field: &str, chars_max: usize) -> ApiError {
    let reason = match error {
        IdError::Empty => "must not be empty".to_owned(),
        IdError::TooLong { .. } => format!("is at most {chars_max} characters"),
        IdError::BadCharacter => "may contain only A-Z a-z 0-9 _ - . :".to_owned(),
    };
    ApiError::invalid_id(field, format!("`{field}` {reason}"))
}

/// The `invalid_amount` error of an amount that does not parse.
pub fn amount_error(field: &str, error: &AmountError) -> ApiError {
    ApiError::invalid_amount(field, format!("`{field}`: {error}"))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp_ms(1_795_341_600_123), "2026-11-22T10:00:00.123Z");
        assert_eq!(format_timestamp_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_timestamp_ms(TIMESTAMP_MS_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_direct_timestamp_formatter_agrees_with_the_time_crate() {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let by_time_crate = |milliseconds: i64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(milliseconds) * 1_000_000)
                .unwrap()
                .format(&format)
                .unwrap()
        };
        // Every day boundary of the leap-year rules' edges, and a spread of instants.
        let mut instants: Vec<i64> = vec![0, 1, 86_399_999, 86_400_000, TIMESTAMP_MS_MAX];
        for year_start_days in [10_957_i64, 11_016, 11_017, 47_541, 47_482, 2_932_893] {
            for offset in -2..=2 {
                instants.push((year_start_days + offset) * 86_400_000 + 43_210_987);
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            instants.push(i64::try_from(state % u64::try_from(TIMESTAMP_MS_MAX).unwrap()).unwrap());
        }
        for milliseconds in instants {
            assert_eq!(format_timestamp_ms(milliseconds), by_time_crate(milliseconds), "{milliseconds}");
        }
    }

    #[test]
    fn content_type_allows_parameters_only() {
        let mut headers = HeaderMap::new();
        assert!(!is_json_content_type(&headers));
        for (value, expected) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json_content_type(&headers), expected, "{value}");
        }
    }

    #[test]
    fn fields_name_the_culprit() {
        let max = 1000;
        let body = json!({"id": "a b", "amount": 5, "other": 1});
        let error = Fields::new(&body, "transfers[2]", &["id", "amount"]).err().unwrap();
        assert_eq!(error.body.field.as_deref(), Some("transfers[2].other"));
        let fields = Fields::new(&body, "", &["id", "amount", "other"]).unwrap();
        assert_eq!(fields.id("id").unwrap_err().body.field.as_deref(), Some("id"));
        let error = fields.amount("amount", max).unwrap_err();
        assert_eq!(error.body.code, crate::http::error::ErrorCode::InvalidAmount);
        assert_eq!(fields.amount("missing", max).unwrap_err().body.code, crate::http::error::ErrorCode::InvalidRequest);
    }
}
