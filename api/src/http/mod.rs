//! The HTTP front: shared state, the router, and the routes that belong to no resource.
//!
//! This module owns [`AppState`] (config-derived limits, currencies, auth, rate limit, metrics
//! and the [`LedgerHandle`] once recovery is done) and [`router`], which assembles one router
//! per resource ([`accounts`], [`transfers`], withdrawals and deposits in [`webhooks`],
//! [`admin`]) under `/v1` behind the auth guard, plus `POST /v1/webhooks/{provider}` (no token:
//! providers sign their deliveries instead), `/health`, `/ready`, `/metrics` and
//! `/openapi.json` (no token), and the layers every
//! request goes through: panic catching, the request-duration metric, the request timeout and
//! the body limit. Unknown routes answer 404 `not_found` and wrong methods 405
//! `method_not_allowed`, with the JSON error body.

pub mod accounts;
pub mod admin;
pub mod audit_log;
pub mod auth;
pub mod duplicate_keys;
pub mod error;
pub mod json;
pub mod layers;
pub mod listener;
pub mod metrics;
pub mod mode;
pub mod openapi;
pub mod reserved;
pub mod transfer_json;
pub mod transfers;
pub mod webhooks;

use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actors::LedgerHandle;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use config::Config;
use engine::{Currency, CurrencyTable};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::ToSchema;

use crate::http::auth::{Authenticator, CallerRateLimiter, FailureLimiter};
use crate::http::error::ApiError;
use crate::http::json::{BodyLimit, TextLimits};
use crate::http::metrics::TransferMetrics;
use crate::webhooks::Webhooks;
use actors::SnapshotService;

/// Limits on what clients may send, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub amount_max: u128,
    pub batch_max: usize,
    pub history_limit_max: usize,
    pub text: TextLimits,
}

/// Everything the handlers share. One per server, behind an `Arc`.
pub struct AppState {
    pub limits: RequestLimits,
    pub currencies: CurrencyTable,
    pub authenticator: Authenticator,
    pub rate_limiter: Option<CallerRateLimiter>,
    /// Failed authentications per client address (`auth.failures_per_minute`).
    pub failure_limiter: FailureLimiter,
    /// `server.cors_allowed_origins`.
    cors_allowed_origins: Vec<String>,
    /// The read-only mode (the kill switch).
    pub mode: mode::ModeSwitch,
    /// Milliseconds since the epoch, for the mode's `since`.
    pub mode_clock: actors::Clock,
    /// The Prometheus recorder's handle (`None`: `/metrics` shows only what this crate keeps).
    pub prometheus: Option<PrometheusHandle>,
    pub transfer_metrics: TransferMetrics,
    body_limit_bytes: usize,
    request_timeout: Duration,
    /// Set once recovery is done; until then `/ready` and every `/v1` route answer 503.
    ledger: OnceLock<LedgerHandle>,
    /// The webhook, deposit and withdrawal service, set with the ledger.
    webhooks: OnceLock<Arc<Webhooks>>,
    /// Snapshots and backups of the served data dir (the admin routes); set with the ledger.
    snapshot_service: OnceLock<Arc<SnapshotService>>,
    /// `server.audit_log`, once opened.
    audit_log: OnceLock<Arc<audit_log::AuditLog>>,
}

impl AppState {
    /// The state for `config`, not ready yet (see [`AppState::set_ready`]).
    pub fn new(config: &Config, prometheus: Option<PrometheusHandle>) -> AppState {
        AppState::with_authenticator(config, prometheus, Authenticator::new(config))
    }

    /// The state for `config` with an authenticator built already (`serve` builds it before
    /// binding, so that a JWT key that cannot be loaded stops the start).
    pub fn with_authenticator(
        config: &Config,
        prometheus: Option<PrometheusHandle>,
        authenticator: Authenticator,
    ) -> AppState {
        let currencies: Vec<Currency> =
            config.currencies.iter().map(|currency| Currency::new(&currency.code, currency.scale)).collect();
        let limits = &config.limits;
        AppState {
            limits: RequestLimits {
                amount_max: limits.amount_max,
                batch_max: limits.batch_max,
                history_limit_max: limits.history_limit_max,
                text: TextLimits {
                    metadata_entries_max: limits.metadata_entries_max,
                    metadata_key_chars_max: limits.metadata_key_chars_max,
                    metadata_value_chars_max: limits.metadata_value_chars_max,
                    description_chars_max: limits.description_chars_max,
                },
            },
            transfer_metrics: TransferMetrics::new(currencies.iter().map(|currency| currency.code.clone())),
            currencies: CurrencyTable::new(currencies),
            authenticator,
            rate_limiter: CallerRateLimiter::from_config(config),
            failure_limiter: FailureLimiter::new(config.auth.failures_per_minute),
            cors_allowed_origins: config.server.cors_allowed_origins.clone(),
            mode: mode::ModeSwitch::new(config.server.read_only),
            mode_clock: actors::system_clock(),
            prometheus,
            body_limit_bytes: config.server.body_limit_bytes,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            ledger: OnceLock::new(),
            webhooks: OnceLock::new(),
            snapshot_service: OnceLock::new(),
            audit_log: OnceLock::new(),
        }
    }

    /// Opens `server.audit_log` when the config names one.
    pub fn open_audit_log(&self, config: &Config) -> Result<(), crate::serve::ServeError> {
        let Some(path) = &config.server.audit_log else { return Ok(()) };
        let log = audit_log::AuditLog::open(path)
            .map_err(|source| crate::serve::ServeError::AuditLog { path: path.clone(), source })?;
        if self.audit_log.set(Arc::new(log)).is_err() {
            tracing::warn!("open_audit_log called twice; keeping the first");
        }
        Ok(())
    }

    /// The audit log, when on.
    pub fn audit_log(&self) -> Option<Arc<audit_log::AuditLog>> {
        self.audit_log.get().cloned()
    }

    /// Writes the audit log's queued lines and stops its writer.
    pub fn close_audit_log(&self) {
        if let Some(log) = self.audit_log.get() {
            log.close();
        }
    }

    /// The request body limit, `server.body_limit_bytes`.
    pub fn body_limit_bytes(&self) -> usize {
        self.body_limit_bytes
    }

    /// The same state with `clock` for the mode's `since` (tests pass a controllable clock).
    #[must_use]
    pub fn with_clock(mut self, clock: actors::Clock) -> AppState {
        self.mode_clock = clock;
        self
    }

    /// Recovery is done: reads the mode the log holds and applies it (with
    /// `server.read_only`). Call it before [`AppState::set_ready`], so that no write is
    /// served before the mode is known.
    pub fn start_mode(&self, ledger: &LedgerHandle) -> Result<(), String> {
        self.mode.start(ledger, (self.mode_clock)())
    }

    /// Gives the admin routes the served data dir's snapshots and backups.
    pub fn set_snapshot_service(&self, service: Arc<SnapshotService>) {
        if self.snapshot_service.set(service).is_err() {
            tracing::warn!("set_snapshot_service called twice; keeping the first");
        }
    }

    /// The snapshot service, or 503 `unavailable` while recovering.
    pub fn snapshot_service(&self) -> Result<&Arc<SnapshotService>, ApiError> {
        self.snapshot_service.get().ok_or_else(|| ApiError::unavailable("the ledger is recovering; retry later"))
    }

    /// Recovery is done: from now on `/ready` answers 200 and `/v1` routes reach `ledger`.
    pub fn set_ready(&self, ledger: LedgerHandle) {
        if self.ledger.set(ledger).is_err() {
            tracing::warn!("set_ready called twice; keeping the first ledger");
        }
    }

    /// Recovery is done: the webhook routes reach `webhooks`. Set it before
    /// [`AppState::set_ready`].
    pub fn set_webhooks(&self, webhooks: Arc<Webhooks>) {
        if self.webhooks.set(webhooks).is_err() {
            tracing::warn!("set_webhooks called twice; keeping the first");
        }
    }

    /// The webhook service, or 503 `unavailable` while recovering.
    pub fn webhooks(&self) -> Result<&Arc<Webhooks>, ApiError> {
        self.webhooks.get().ok_or_else(|| ApiError::unavailable("the ledger is recovering; retry later"))
    }

    /// Whether recovery is done.
    pub fn is_ready(&self) -> bool {
        self.ledger.get().is_some()
    }

    /// The ledger, or 503 `unavailable` while recovering.
    pub fn ledger(&self) -> Result<&LedgerHandle, ApiError> {
        self.ledger.get().ok_or_else(|| ApiError::unavailable("the ledger is recovering; retry later"))
    }
}

/// The whole HTTP application for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .merge(accounts::router())
        .merge(transfers::router())
        .merge(webhooks::router())
        .merge(mode::router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard));
    let timeout = state.request_timeout;
    let body_limit_bytes = state.body_limit_bytes;
    // Snapshots and backups may outlast the request timeout: their routes get the same guard
    // and body limit, but no timeout.
    let admin = admin::router()
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(Extension(BodyLimit(body_limit_bytes)));
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::metrics_text))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(v1)
        .merge(webhooks::webhook_router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(Extension(BodyLimit(body_limit_bytes)))
        .layer(axum::middleware::from_fn_with_state(timeout, layers::request_timeout))
        .merge(admin)
        .layer(axum::middleware::from_fn_with_state(body_limit_bytes, layers::reject_oversized))
        .layer(axum::middleware::from_fn_with_state(state.clone(), mode::refuse_writes))
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(axum::middleware::from_fn(layers::json_error_shape))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit_log::record_writes))
        .layer(CatchPanicLayer::custom(panic_response));
    let router = match layers::cors(&state.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(axum::middleware::from_fn(layers::security_headers)).with_state(state)
}

/// `{"status": "..."}` of `/health` and `/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    pub status: &'static str,
}

/// `GET /health`: 200 as long as the process serves HTTP.
async fn health() -> Json<StatusBody> {
    Json(StatusBody { status: "ok" })
}

/// `GET /ready`: 200 once recovery is done, else 503.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        Json(StatusBody { status: "ready" }).into_response()
    } else {
        ApiError::unavailable("recovering").into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(%message, "a request handler panicked");
    let mut response = ApiError::internal().into_response();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
