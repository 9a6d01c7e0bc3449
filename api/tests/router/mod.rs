//! The in-process harness of the router tests (`http_routes`, `hardening_routes`): the real
//! router (`oneshot`) over a real ledger (recovery, committer, actors) on a temporary data
//! dir, a clock the test moves by hand, two named tokens, and the strict check of the error
//! shape. Each test file keeps only its own way of writing requests on top of [`Router`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use api::serve::{App, AppOptions, build_app};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use config::{Config, Role, TokenConfig, default_config};
use http_body_util::BodyExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// 2026-11-22T10:00:00.000Z, where the clock of every harness starts.
pub const START_MS: i64 = 1_795_341_600_000;
pub const START_TEXT: &str = "2026-11-22T10:00:00.000Z";
/// A `client` token named `checkout` (after [`with_tokens`]).
pub const CLIENT_TOKEN: &str = "client-token-0123456789";
/// An `admin` token named `operator` (after [`with_tokens`]).
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// Configures [`CLIENT_TOKEN`] and [`ADMIN_TOKEN`] (which turns authentication on).
pub fn with_tokens(config: &mut Config) {
    for (name, token, role) in [("checkout", CLIENT_TOKEN, Role::Client), ("operator", ADMIN_TOKEN, Role::Admin)] {
        config.auth.tokens.push(TokenConfig {
            name: Some(name.to_owned()),
            sha256: hex::encode(Sha256::digest(token.as_bytes())),
            role,
        });
    }
}

/// One answer: the body parsed as JSON (a non-JSON body as a JSON string, none as null).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts an error answer: status, `{"error": {"code", "message", "field"?}}` and nothing
    /// else, as JSON.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str, field: Option<&str>) {
        assert_eq!(self.status, status, "{self:?}");
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "{self:?}");
        assert!(error["message"].as_str().is_some_and(|message| !message.is_empty()), "{self:?}");
        assert_eq!(error.get("field").and_then(Value::as_str), field, "{self:?}");
        let keys: Vec<&String> = error.as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|key| ["code", "message", "field"].contains(&key.as_str())), "{self:?}");
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json", "{self:?}");
    }

    /// Asserts the status and gives the body.
    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "{self:?}");
        &self.body
    }
}

/// The router of a server built from the default config as `edit` changes it.
pub struct Router {
    app: Option<App>,
    /// The server's clock, in Unix milliseconds: move it with `fetch_add`.
    pub clock_ms: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

impl Router {
    /// Builds the app on a fresh data dir, with the manual clock at [`START_MS`].
    pub async fn start(edit: impl FnOnce(&mut Config)) -> Router {
        Router::start_with(edit, AppOptions::default()).await
    }

    /// [`Router::start`] with other app options (their clock is replaced by the manual one).
    pub async fn start_with(edit: impl FnOnce(&mut Config), mut options: AppOptions) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let mut config = default_config();
        config.storage.data_dir = dir.path().join("data");
        edit(&mut config);
        config.validate().unwrap();
        let clock_ms = Arc::new(AtomicI64::new(START_MS));
        let clock = clock_ms.clone();
        options.clock = Arc::new(move || clock.load(Ordering::SeqCst));
        let app = build_app(&config, options).await.unwrap();
        Router { app: Some(app), clock_ms, _dir: dir }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    /// Sends `request` as it is (no client address).
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app().router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply { status, headers, body }
    }

    /// Sends `request` as if from `remote` (what the listener records for each connection).
    pub async fn send_from(&self, mut request: Request<Body>, remote: SocketAddr) -> Reply {
        request.extensions_mut().insert(ConnectInfo(remote));
        self.send(request).await
    }

    pub async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}
