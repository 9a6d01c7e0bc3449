//! The audit log of writes (`server.audit_log`, API.md §2 "Authentication, TLS, CORS, audit").
//!
//! This module owns the middleware that sees every `POST` under `/v1` once it is answered,
//! refused ones included ([`record_writes`]), and the writer thread that appends one JSON line
//! per write to the file and fsyncs in groups ([`AuditLog`]). A line holds `time`, `who` (the
//! token's `name` or the JWT's `sub`, null without one), `role`, `remote`, `method`, `route`
//! (the route's template, or the path when no route matched), `ids` (the ids the path and the
//! body name), `status` and `code` (the error code or null); never a token or a secret.
//!
//! The queue to the writer is bounded ([`AUDIT_QUEUE_LINES`]); a line that finds it full, and
//! every line of a group whose write or fsync failed, is logged as an error and counted in
//! `ledger_audit_log_failures_total`, never dropped in silence. The answer does not wait for
//! its line to be on disk.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use config::Role;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use crate::http::AppState;

/// Lines waiting for the writer at most.
pub const AUDIT_QUEUE_LINES: usize = 65_536;
/// Lines written between two fsyncs at most.
const GROUP_LINES_MAX: usize = 4_096;
/// Ids named in one line at most (a batch of 8,190 transfers names its first ones).
const IDS_MAX: usize = 100;
/// `ledger_audit_log_lines_total`: lines written and synced.
pub const AUDIT_LOG_LINES_TOTAL: &str = "ledger_audit_log_lines_total";
/// `ledger_audit_log_failures_total`: lines not written (queue full, write or fsync failed).
pub const AUDIT_LOG_FAILURES_TOTAL: &str = "ledger_audit_log_failures_total";

/// The open audit log and its writer thread.
pub struct AuditLog {
    path: PathBuf,
    sender: Mutex<Option<SyncSender<String>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens `path` for appending (created when missing) and starts the writer.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(AUDIT_QUEUE_LINES);
        let writer_path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("audit-log".to_owned())
            .spawn(move || write_lines(file, &writer_path, &receiver))?;
        metrics::counter!(AUDIT_LOG_LINES_TOTAL).increment(0);
        metrics::counter!(AUDIT_LOG_FAILURES_TOTAL).increment(0);
        Ok(AuditLog { path: path.to_owned(), sender: Mutex::new(Some(sender)), writer: Mutex::new(Some(writer)) })
    }

    /// Hands one line to the writer.
    pub fn record(&self, line: String) {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = match sender.as_ref() {
            Some(sender) => match sender.try_send(line) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => "its queue is full",
                Err(TrySendError::Disconnected(_)) => "its writer has stopped",
            },
            None => "it is closed",
        };
        tracing::error!(path = %self.path.display(), reason = refused, "an audit log line was not written");
        metrics::counter!(AUDIT_LOG_FAILURES_TOTAL).increment(1);
    }

    /// Writes and syncs every queued line, then stops the writer.
    pub fn close(&self) {
        drop(self.sender.lock().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the audit log writer panicked");
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer: waits for a line, takes every line queued behind it (up to a group), writes
/// them, fsyncs, and counts.
fn write_lines(mut file: File, path: &Path, receiver: &Receiver<String>) {
    while let Ok(first) = receiver.recv() {
        let mut group = first;
        group.push('\n');
        let mut lines = 1_u64;
        while lines < GROUP_LINES_MAX as u64 {
            let Ok(line) = receiver.try_recv() else { break };
            group.push_str(&line);
            group.push('\n');
            lines += 1;
        }
        match file.write_all(group.as_bytes()).and_then(|()| file.sync_data()) {
            Ok(()) => metrics::counter!(AUDIT_LOG_LINES_TOTAL).increment(lines),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, lines, "audit log lines could not be written");
                metrics::counter!(AUDIT_LOG_FAILURES_TOTAL).increment(lines);
            }
        }
    }
}

/// Who the auth guard found the caller to be, for the audit line (set by
/// [`crate::http::auth::guard`] when the request carries one).
#[derive(Debug, Clone, Default)]
pub struct AuditCaller(Arc<Mutex<Option<Caller>>>);

/// Who made a request (the token's `name` or the JWT's `sub`) and with which role.
type Caller = (Option<Arc<str>>, Role);

impl AuditCaller {
    pub fn set(&self, who: Option<Arc<str>>, role: Role) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((who, role));
    }

    fn get(&self) -> Option<Caller> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Middleware: one audit line per `POST` under `/v1` once answered, when the audit log is on.
pub async fn record_writes(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let Some(audit) = state.audit_log() else { return next.run(request).await };
    if request.method() != Method::POST || !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let caller = AuditCaller::default();
    request.extensions_mut().insert(caller.clone());
    let template = request.extensions().get::<MatchedPath>().map(|matched| matched.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.to_string());
    // The body reaches the handler as it arrives; a copy of what arrived (up to the body
    // limit) is kept for the ids it names.
    let captured = Arc::new(Mutex::new(Vec::new()));
    let limit = state.body_limit_bytes();
    let (parts, body) = request.into_parts();
    let copy = captured.clone();
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            let mut copy = copy.lock().unwrap_or_else(PoisonError::into_inner);
            if copy.len() + data.len() <= limit {
                copy.extend_from_slice(data);
            }
        }
        frame
    });
    let response = next.run(Request::from_parts(parts, Body::new(body))).await;
    let status = response.status();
    let (response, code) = if status.is_client_error() || status.is_server_error() {
        error_code(response).await
    } else {
        (response, None)
    };
    let body = std::mem::take(&mut *captured.lock().unwrap_or_else(PoisonError::into_inner));
    let (who, role) = caller.get().map_or((None, None), |(who, role)| (who, Some(role)));
    let line = json!({
        "time": crate::http::json::format_timestamp_ms((actors::system_clock())()),
        "who": who.as_deref(),
        // `Role` serializes as its name in lowercase, as in the config.
        "role": role,
        "remote": remote,
        "method": "POST",
        "route": template.as_deref().unwrap_or(&path),
        "ids": ids_named(template.as_deref(), &path, &body),
        "status": status.as_u16(),
        "code": code,
    });
    audit.record(line.to_string());
    response
}

/// The error code of an error answer (its body is read and put back).
async fn error_code(response: Response) -> (Response, Option<String>) {
    let (parts, body) = response.into_parts();
    // Error bodies are small JSON objects made by this crate.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (Response::from_parts(parts, Body::empty()), None);
    };
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|value| value["error"]["code"].as_str().map(str::to_owned));
    (Response::from_parts(parts, Body::from(bytes)), code)
}

/// The ids a write names: the path's parameters (by the route's template), then the body's
/// `id`, `debit_account`, `credit_account` and those of a batch's `transfers`, at most
/// [`IDS_MAX`].
fn ids_named(template: Option<&str>, path: &str, body: &[u8]) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(template) = template {
        for (pattern, segment) in template.split('/').zip(path.split('/')) {
            if pattern.starts_with('{') && pattern != "{provider}" {
                ids.push(segment.to_owned());
            }
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return ids };
    let push_fields = |object: &Value, ids: &mut Vec<String>| {
        for field in ["id", "debit_account", "credit_account", "deposit_id", "withdrawal_id"] {
            if let Some(id) = object.get(field).and_then(Value::as_str)
                && ids.len() < IDS_MAX
                && !ids.iter().any(|known| known == id)
            {
                ids.push(id.to_owned());
            }
        }
    };
    push_fields(&value, &mut ids);
    if let Some(items) = value.get("transfers").and_then(Value::as_array) {
        for item in items {
            if ids.len() >= IDS_MAX {
                break;
            }
            push_fields(item, &mut ids);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_of_a_write_come_from_its_path_and_its_body() {
        assert_eq!(
            ids_named(Some("/v1/transfers/{id}/post"), "/v1/transfers/t-1/post", b"{\"amount\": \"1\"}"),
            ["t-1"]
        );
        assert_eq!(
            ids_named(
                Some("/v1/transfers"),
                "/v1/transfers",
                br#"{"id": "t-2", "debit_account": "alice", "credit_account": "bob", "amount": "1"}"#
            ),
            ["t-2", "alice", "bob"]
        );
        let batch = br#"{"transfers": [{"id": "b-1", "debit_account": "alice", "credit_account": "bob"},
                                      {"id": "b-2", "debit_account": "bob", "credit_account": "alice"}]}"#;
        assert_eq!(
            ids_named(Some("/v1/transfers/batch"), "/v1/transfers/batch", batch),
            ["b-1", "alice", "bob", "b-2"]
        );
        assert_eq!(ids_named(None, "/v1/nowhere", b"not json"), Vec::<String>::new());
    }
}
