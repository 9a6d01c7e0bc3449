//! Admin operations on the serving data dir: `POST /v1/admin/snapshots` (take a snapshot now)
//! and `POST /v1/admin/backup` (write a complete backup into another directory), both for the
//! `admin` role.
//!
//! Both go through the serving ledger's [`actors::SnapshotService`], one snapshot at a time
//! with the periodic ones; a snapshot holds changes at the gate only while the shards encode
//! their state. A backup can take longer than `server.request_timeout_ms` on a large ledger,
//! so [`router`]'s routes are merged outside the request timeout (see [`crate::http::router`]).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;
use snapshots::SnapshotInfo;
use utoipa::ToSchema;

use crate::http::AppState;
use crate::http::error::{ApiError, ErrorResponse};
use crate::http::json::{AdminOnly, Fields, JsonBody, OptionalJsonBody, format_timestamp_ms, json_response};
use actors::MaintenanceError;

/// The fields of a backup request.
pub const BACKUP_FIELDS: [&str; 1] = ["destination"];

/// The routes of this module (state: [`AppState`]).
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/admin/snapshots", post(create_snapshot)).route("/v1/admin/backup", post(create_backup))
}

/// A snapshot, as the admin routes and `ledgerd snapshot list --json` print it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotBody {
    /// `snap-<seq, 20 digits>`.
    pub id: String,
    /// Log sequence of the last record folded into it.
    pub seq: u64,
    pub accounts: u64,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub bytes: u64,
}

impl SnapshotBody {
    pub fn new(info: &SnapshotInfo) -> SnapshotBody {
        SnapshotBody {
            id: info.id.clone(),
            seq: info.seq,
            accounts: info.accounts,
            created_at: format_timestamp_ms(info.created_at_ms),
            bytes: info.bytes,
        }
    }
}

/// The answer of `POST /v1/admin/snapshots`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedSnapshotBody {
    #[serde(flatten)]
    pub snapshot: SnapshotBody,
    /// False when the newest snapshot was already at the log's end (nothing written).
    pub written: bool,
}

/// The body of `POST /v1/admin/backup`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documents the body for OpenAPI; the handler reads it field by field")]
pub struct BackupRequest {
    /// Absolute path outside the data dir, not existing or empty, on the server's machine.
    pub destination: String,
}

/// The answer of `POST /v1/admin/backup`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupBody {
    pub destination: String,
    /// The snapshot at the backup's sequence.
    pub snapshot: SnapshotBody,
    pub snapshots_copied: usize,
    /// First and last sequence of the copied log (`null` when the log was empty).
    pub log_first_seq: Option<u64>,
    pub log_last_seq: Option<u64>,
    pub log_groups_copied: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

/// Takes a snapshot now (admin), after any snapshot in progress.
#[utoipa::path(
    post, path = "/v1/admin/snapshots", tag = "admin",
    request_body(content = Option<crate::http::accounts::EmptyRequest>, content_type = "application/json", description = "Optional; may be left out."),
    responses(
        (status = 201, description = "The snapshot at the log's end.", body = CreatedSnapshotBody),
        (status = 400, description = "`invalid_request`.", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden` (admin only).", body = ErrorResponse),
        (status = 500, description = "`internal`: the snapshot could not be written (see the server log).", body = ErrorResponse),
        (status = 503, description = "`unavailable` (recovering).", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_snapshot(
    _admin: AdminOnly,
    State(state): State<Arc<AppState>>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    if let Some(body) = &body {
        Fields::new(body, "", &[])?;
    }
    let taken = state.snapshot_service()?.take().await;
    match taken {
        Ok(taken) => Ok(json_response(
            StatusCode::CREATED,
            &CreatedSnapshotBody { snapshot: SnapshotBody::new(&taken.info), written: taken.written },
        )),
        Err(MaintenanceError::Ledger(error)) => Err(error.into()),
        Err(error) => {
            tracing::error!(%error, "snapshot on demand failed");
            Err(ApiError::internal())
        }
    }
}

/// Writes a complete backup of the data dir into `destination` (admin): a snapshot taken now,
/// the older snapshots, the history and the whole log. The result is a data dir of its own.
#[utoipa::path(
    post, path = "/v1/admin/backup", tag = "admin",
    request_body(content = BackupRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The backup was written.", body = BackupBody),
        (status = 400, description = "`invalid_request` (field `destination`: relative, inside the data dir, not empty).", body = ErrorResponse),
        (status = 401, description = "`unauthorized`.", body = ErrorResponse),
        (status = 403, description = "`forbidden` (admin only).", body = ErrorResponse),
        (status = 413, description = "`payload_too_large`.", body = ErrorResponse),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorResponse),
        (status = 500, description = "`internal`: the backup could not be written (see the server log); nothing is left at the destination.", body = ErrorResponse),
        (status = 503, description = "`unavailable` (recovering).", body = ErrorResponse),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_backup(
    _admin: AdminOnly,
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let fields = Fields::new(&body, "", &BACKUP_FIELDS)?;
    let destination = PathBuf::from(fields.string("destination")?);
    let written = state.snapshot_service()?.backup(&destination).await;
    match written {
        Ok(report) => Ok(json_response(
            StatusCode::CREATED,
            &BackupBody {
                destination: report.destination.display().to_string(),
                snapshot: SnapshotBody::new(&report.snapshot),
                snapshots_copied: report.snapshots_copied,
                log_first_seq: report.log_range.map(|(first, _)| first),
                log_last_seq: report.log_range.map(|(_, last)| last),
                log_groups_copied: report.log_groups_copied,
                bytes: report.bytes,
                elapsed_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
            },
        )),
        Err(MaintenanceError::Destination(reason)) => Err(ApiError::invalid_field("destination", reason)),
        Err(MaintenanceError::Ledger(error)) => Err(error.into()),
        Err(error) => {
            tracing::error!(%error, "backup failed");
            Err(ApiError::internal())
        }
    }
}
