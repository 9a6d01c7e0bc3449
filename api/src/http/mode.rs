//! The read-only mode (the kill switch): `GET`/`POST /v1/admin/mode`, `server.read_only`, and
//! the refusal of every write while it is on (API.md §2, "Read-only mode").
//!
//! This module owns [`ModeSwitch`]: the mode in memory, its changes written to the log as one
//! `External` record each (kind [`MODE_FACT_KIND`], key [`MODE_FACT_KEY`], a small JSON
//! payload) before they take effect, so the mode survives restarts, snapshots and replays (the
//! history keeps the latest fact of a kind and key, like the payment facts); its reading back
//! at start, where `server.read_only = true` forces read-only whatever the log says; the
//! expiry of holds paused with it ([`actors::LedgerHandle::set_expiry_paused`]); and the
//! `ledger_read_only` gauge. [`refuse_writes`] answers every `POST` under `/v1` (webhooks
//! included) 503 `read_only` with `Retry-After` before any other check, except the admin
//! routes (the mode itself, snapshots, backups), which change no balance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actors::LedgerHandle;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::AppState;
use crate::http::error::{ApiError, ErrorResponse};
use crate::http::json::{AdminOnly, Fields, JsonBody, format_timestamp_ms, json_response};

/// `kind` of the log records of the mode.
pub const MODE_FACT_KIND: &str = "ledger.mode";
/// `key` of the log records of the mode.
pub const MODE_FACT_KEY: &str = "mode";
/// `ledger_read_only`: 1 while read-only, else 0.
pub const READ_ONLY_GAUGE: &str = "ledger_read_only";
/// Longest `reason`, in characters.
pub const REASON_CHARS_MAX: usize = 256;

/// The mode as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ModeRecord {
    read_only: bool,
    reason: Option<String>,
    since_ms: i64,
}

/// The mode now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModeState {
    read_only: bool,
    reason: Option<String>,
    since_ms: i64,
}

/// The read-only switch of one server.
pub struct ModeSwitch {
    read_only: AtomicBool,
    state: std::sync::Mutex<ModeState>,
    /// Serializes changes: one record written at a time, in the order applied.
    changing: tokio::sync::Mutex<()>,
    /// `server.read_only`: read-only at start, whatever the log says.
    forced_at_start: bool,
}

impl ModeSwitch {
    /// The switch before the log is read: read-only when `server.read_only` says so (writes are
    /// refused with 503 `unavailable` until recovery is done anyway).
    pub fn new(read_only_at_start: bool) -> ModeSwitch {
        metrics::describe_gauge!(READ_ONLY_GAUGE, "1 while the ledger is read-only (the kill switch), else 0.");
        metrics::gauge!(READ_ONLY_GAUGE).set(if read_only_at_start { 1.0 } else { 0.0 });
        ModeSwitch {
            read_only: AtomicBool::new(read_only_at_start),
            state: std::sync::Mutex::new(ModeState {
                read_only: read_only_at_start,
                reason: read_only_at_start.then(|| "server.read_only is set".to_owned()),
                since_ms: 0,
            }),
            changing: tokio::sync::Mutex::new(()),
            forced_at_start: read_only_at_start,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ModeState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether writes are refused now.
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// Reads the mode the log holds (once recovery is done) and applies it with
    /// `server.read_only`; resumes the expiry of holds unless read-only.
    pub fn start(&self, ledger: &LedgerHandle, now_ms: i64) -> Result<(), String> {
        let logged = ledger
            .history()
            .fact(MODE_FACT_KIND, MODE_FACT_KEY)
            .map_err(|error| format!("the mode cannot be read from the history: {error}"))?
            .map(|payload| serde_json::from_slice::<ModeRecord>(&payload))
            .transpose()
            .map_err(|error| format!("the mode's record cannot be read: {error}"))?;
        let state = match logged {
            Some(record) if record.read_only || !self.forced_at_start => {
                ModeState { read_only: record.read_only, reason: record.reason, since_ms: record.since_ms }
            }
            _ if self.forced_at_start => {
                ModeState { read_only: true, reason: Some("server.read_only is set".to_owned()), since_ms: now_ms }
            }
            _ => ModeState { read_only: false, reason: None, since_ms: now_ms },
        };
        self.apply(ledger, state);
        Ok(())
    }

    fn apply(&self, ledger: &LedgerHandle, state: ModeState) {
        let read_only = state.read_only;
        *self.lock() = state;
        self.read_only.store(read_only, Ordering::Release);
        ledger.set_expiry_paused(read_only);
        metrics::gauge!(READ_ONLY_GAUGE).set(if read_only { 1.0 } else { 0.0 });
    }

    /// Switches the mode: the change is written to the log (durable) before it takes effect.
    async fn switch(
        &self,
        ledger: &LedgerHandle,
        read_only: bool,
        reason: Option<String>,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let _changing = self.changing.lock().await;
        let record = ModeRecord { read_only, reason: reason.clone(), since_ms: now_ms };
        let payload = serde_json::to_vec(&record).map_err(|_| ApiError::internal())?;
        ledger.append_externals(vec![(MODE_FACT_KIND.to_owned(), MODE_FACT_KEY.to_owned(), payload)]).await?;
        tracing::warn!(read_only, reason = reason.as_deref().unwrap_or(""), "the ledger's mode changed");
        self.apply(ledger, ModeState { read_only, reason, since_ms: now_ms });
        Ok(())
    }

    fn body(&self) -> ModeBody {
        let state = self.lock().clone();
        ModeBody {
            mode: if state.read_only { ModeName::ReadOnly } else { ModeName::ReadWrite },
            reason: state.reason,
            since: format_timestamp_ms(state.since_ms),
        }
    }
}

/// A mode's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    ReadOnly,
    ReadWrite,
}

/// `GET /v1/admin/mode` and the answer of `POST /v1/admin/mode`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModeBody {
    pub mode: ModeName,
    /// Why it is read-only (as given when switched), or null.
    pub reason: Option<String>,
    /// RFC 3339 UTC: when the mode took effect.
    pub since: String,
}

/// `POST /v1/admin/mode` body.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documents the body; it is read with Fields")]
pub struct SetModeRequest {
    /// `read_only` or `read_write`.
    #[schema(example = "read_only")]
    pub mode: String,
    /// Shown by `GET /v1/admin/mode`; at most 256 characters.
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

/// The routes of this module (state: [`AppState`]).
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/admin/mode", get(get_mode).post(set_mode))
}

/// Shows the mode.
#[utoipa::path(
    get, path = "/v1/admin/mode", tag = "admin",
    responses(
        (status = 200, description = "The mode.", body = ModeBody),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden` (admin only).", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`unavailable` while recovering.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn get_mode(_admin: AdminOnly, State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    state.ledger()?;
    Ok(json_response(StatusCode::OK, &state.mode.body()))
}

/// Switches the mode (the kill switch).
#[utoipa::path(
    post, path = "/v1/admin/mode", tag = "admin",
    request_body(content = SetModeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The mode, switched (written to the log).", body = ModeBody),
        (status = 400, description = "`invalid_request`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden` (admin only).", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 429, description = "`rate_limited`.", body = ErrorResponse),
        (status = 503, description = "`unavailable`, `timeout`.", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn set_mode(
    _admin: AdminOnly,
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let fields = Fields::new(&body, "", &["mode", "reason"])?;
    let read_only = match fields.string("mode")? {
        "read_only" => true,
        "read_write" => false,
        _ => return Err(ApiError::invalid_field("mode", "`mode` must be \"read_only\" or \"read_write\"")),
    };
    let reason = fields.optional_text("reason", REASON_CHARS_MAX)?.map(str::to_owned);
    let ledger = state.ledger()?;
    let now_ms = (state.mode_clock)();
    state.mode.switch(ledger, read_only, if read_only { reason } else { None }, now_ms).await?;
    Ok(json_response(StatusCode::OK, &state.mode.body()))
}

/// Refuses every write while read-only: 503 `read_only` with `Retry-After`, before any other
/// check (auth included). Reads, and the admin routes, pass.
pub async fn refuse_writes(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let write = request.method() == Method::POST && path.starts_with("/v1/") && !path.starts_with("/v1/admin/");
    if write && state.mode.is_read_only() {
        return ApiError::read_only().into_response();
    }
    next.run(request).await
}
