//! The CCPayment record API client: the authoritative look-up behind every notification.
//!
//! This module owns [`RecordClient`], which POSTs `{"recordId": ...}` to
//! `{api_base_url}/ccpayment/v2/get*Record`, signed like the provider's webhooks (`Appid`,
//! `Timestamp`, `Sign`), over HTTP or HTTPS (rustls with Mozilla's roots), and reads the
//! answer `{"code": 10000, "msg": "success", "data": {"record": {...}}}` into a [`Record`].
//!
//! Every attempt has the provider's `fetch_timeout_ms`; transport errors, timeouts, `5xx` and
//! `429` answers are retried up to `fetch_retries` times with a short doubling pause, within
//! an overall deadline; any other answer is final. Answers are read up to
//! [`RESPONSE_BYTES_MAX`]. Concurrent look-ups are bounded ([`FETCHES_IN_FLIGHT_MAX`]): past
//! it the caller is told the provider is unavailable rather than queueing. Each attempt's
//! duration is recorded in `ledger_webhook_fetch_duration_seconds{provider,outcome}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::http::metrics::WEBHOOK_FETCH_DURATION_SECONDS;
use crate::webhooks::providers::Provider;
use crate::webhooks::signature::ccpayment_sign;

/// Largest answer read from the record API.
pub const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// Record look-ups in flight at once, all providers together.
pub const FETCHES_IN_FLIGHT_MAX: usize = 64;
/// The `code` of a successful answer.
pub const SUCCESS_CODE: i64 = 10_000;
/// First pause between two attempts; doubled each time, at most [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(100);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// The record look-ups of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    AppDeposit,
    UserDeposit,
    AppWithdrawal,
    UserWithdrawal,
}

impl RecordKind {
    pub fn path(self) -> &'static str {
        match self {
            RecordKind::AppDeposit => "/ccpayment/v2/getAppDepositRecord",
            RecordKind::UserDeposit => "/ccpayment/v2/getUserDepositRecord",
            RecordKind::AppWithdrawal => "/ccpayment/v2/getAppWithdrawRecord",
            RecordKind::UserWithdrawal => "/ccpayment/v2/getUserWithdrawRecord",
        }
    }
}

/// A record as the provider's API returned it (fields read on demand; unknown ones ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    fields: Map<String, Value>,
}

impl Record {
    /// A string field (numbers are accepted and printed, as some ids come as numbers).
    pub fn text(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// A boolean field (absent = false).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.fields.get(name), Some(Value::Bool(true)))
    }

    /// The fields the payment flows read.
    pub fn provider_record(&self) -> payments::ccpayment::ProviderRecord {
        payments::ccpayment::ProviderRecord {
            record_id: self.text("recordId"),
            status: self.text("status"),
            coin: self.text("coinSymbol"),
            amount: self.text("amount"),
            order_id: self.text("orderId"),
            user_id: self.text("userId"),
            reference_id: self.text("referenceId"),
            risky: self.flag("isFlaggedAsRisky"),
        }
    }
}

/// Why a look-up did not give a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer (connection, timeout, 5xx) after every attempt.
    #[error("the provider's record API did not answer after {attempts} attempt(s): {reason}")]
    Unreachable { attempts: u32, reason: String },
    /// An answer that is not a record: another HTTP status, another `code`, bad JSON.
    #[error("the provider's record API refused the look-up: {0}")]
    Refused(String),
    /// Too many look-ups in flight.
    #[error("too many record look-ups in flight")]
    Busy,
    /// The HTTPS client could not be built.
    #[error("the HTTPS client cannot be set up: {0}")]
    Setup(String),
}

/// Signed look-ups of provider records.
#[derive(Clone)]
pub struct RecordClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    in_flight: Arc<Semaphore>,
    clock_seconds: Arc<dyn Fn() -> i64 + Send + Sync>,
}

/// One attempt's result: final, or worth another try.
enum Attempt {
    Final(Result<Record, FetchError>),
    Retry(String),
}

impl RecordClient {
    /// A client whose signatures carry the time of `clock_seconds`.
    pub fn new(clock_seconds: Arc<dyn Fn() -> i64 + Send + Sync>) -> Result<RecordClient, FetchError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|error| FetchError::Setup(error.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(RecordClient { client, in_flight: Arc::new(Semaphore::new(FETCHES_IN_FLIGHT_MAX)), clock_seconds })
    }

    /// Looks up the record `record_id` of `kind`, giving up by `deadline`.
    pub async fn fetch(
        &self,
        provider: &Provider,
        kind: RecordKind,
        record_id: &str,
        deadline: Instant,
    ) -> Result<Record, FetchError> {
        let _permit = self.in_flight.clone().try_acquire_owned().map_err(|_| FetchError::Busy)?;
        let body = Bytes::from(serde_json::json!({ "recordId": record_id }).to_string());
        let url = format!("{}{}", provider.api_base_url, kind.path());
        let mut pause = RETRY_PAUSE_FIRST;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = provider.fetch_timeout.min(remaining);
            let started = Instant::now();
            let attempt = if timeout.is_zero() {
                Attempt::Retry("no time left".to_owned())
            } else {
                match tokio::time::timeout(timeout, self.attempt(provider, &url, body.clone())).await {
                    Ok(attempt) => attempt,
                    Err(_) => Attempt::Retry(format!("no answer within {} ms", timeout.as_millis())),
                }
            };
            let outcome = match &attempt {
                Attempt::Final(Ok(_)) => "ok",
                Attempt::Final(Err(_)) => "refused",
                Attempt::Retry(_) => "unreachable",
            };
            metrics::histogram!(WEBHOOK_FETCH_DURATION_SECONDS, "provider" => provider.name.to_string(), "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            let reason = match attempt {
                Attempt::Final(result) => return result,
                Attempt::Retry(reason) => reason,
            };
            tracing::warn!(provider = %provider.name, record_id, attempt = attempts, %reason, "record look-up failed");
            let out_of_time = Instant::now() + pause >= deadline;
            if attempts > provider.fetch_retries || out_of_time {
                return Err(FetchError::Unreachable { attempts, reason });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    async fn attempt(&self, provider: &Provider, url: &str, body: Bytes) -> Attempt {
        let timestamp = (self.clock_seconds)().to_string();
        let sign = ccpayment_sign(provider.key(), &provider.app_id, &timestamp, &body);
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/json")
            .header("appid", provider.app_id.as_str())
            .header("timestamp", timestamp)
            .header("sign", sign)
            .body(Full::new(body));
        let request = match request {
            Ok(request) => request,
            Err(error) => return Attempt::Final(Err(FetchError::Refused(format!("bad request URL {url}: {error}")))),
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) => return Attempt::Retry(error_chain(&error)),
        };
        let status = response.status();
        let bytes = match Limited::new(response.into_body(), RESPONSE_BYTES_MAX).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => return Attempt::Retry(format!("the answer could not be read: {error}")),
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Attempt::Retry(format!("HTTP {status}"));
        }
        if status != StatusCode::OK {
            return Attempt::Final(Err(FetchError::Refused(format!("HTTP {status}"))));
        }
        Attempt::Final(parse_answer(&bytes))
    }
}

/// Reads `{"code": 10000, "data": {"record": {...}}}`.
pub fn parse_answer(bytes: &[u8]) -> Result<Record, FetchError> {
    let answer: Value = serde_json::from_slice(bytes)
        .map_err(|error| FetchError::Refused(format!("the answer is not JSON: {error}")))?;
    let code = answer.get("code").and_then(Value::as_i64);
    if code != Some(SUCCESS_CODE) {
        let message = answer.get("msg").and_then(Value::as_str).unwrap_or_default();
        let code = code.map_or_else(|| "none".to_owned(), |code| code.to_string());
        return Err(FetchError::Refused(format!("code {code}: {}", message.chars().take(200).collect::<String>())));
    }
    match answer.pointer("/data/record") {
        Some(Value::Object(fields)) => Ok(Record { fields: fields.clone() }),
        _ => Err(FetchError::Refused("the answer has no data.record object".to_owned())),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::providers::Providers;
    use std::io::Read as _;

    fn provider(base_url: &str) -> Provider {
        let text = format!(
            "[[webhooks.providers]]\nname = \"cc\"\nscheme = \"ccpayment\"\napp_id = \"app\"\nsecret = \"s\"\n\
             api_base_url = \"{base_url}\"\nfetch_timeout_ms = 2000\nfetch_retries = 0\n"
        );
        let config = config::parse(&text).unwrap();
        Providers::resolve(&config.webhooks, |_| None).unwrap().get("cc").unwrap().clone()
    }

    #[tokio::test]
    async fn https_base_urls_speak_tls() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let first_byte = std::thread::spawn(move || {
            let (mut connection, _) = listener.accept().unwrap();
            let mut byte = [0_u8; 1];
            connection.read_exact(&mut byte).unwrap();
            byte[0]
        });
        let client = RecordClient::new(Arc::new(|| 1_677_152_490)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let outcome = client
            .fetch(&provider(&format!("https://127.0.0.1:{port}")), RecordKind::AppDeposit, "r-1", deadline)
            .await;
        assert!(matches!(outcome, Err(FetchError::Unreachable { attempts: 1, .. })), "{outcome:?}");
        // 0x16: a TLS handshake record (the ClientHello), not plain HTTP.
        assert_eq!(first_byte.join().unwrap(), 0x16);
    }

    #[test]
    fn answers_are_read_strictly() {
        let record = parse_answer(
            br#"{"code": 10000, "msg": "success", "data": {"record": {"recordId": "r-1", "amount": "0.5", "coinId": 1280, "isFlaggedAsRisky": true}}}"#,
        )
        .unwrap();
        assert_eq!(record.text("recordId").as_deref(), Some("r-1"));
        assert_eq!(record.text("coinId").as_deref(), Some("1280"));
        assert!(record.flag("isFlaggedAsRisky"));
        assert!(!record.flag("missing"));
        for bad in [
            &br#"{"code": 10001, "msg": "record not found"}"#[..],
            br#"{"code": "10000", "data": {"record": {}}}"#,
            br#"{"code": 10000, "data": {}}"#,
            b"<html>",
        ] {
            assert!(matches!(parse_answer(bad), Err(FetchError::Refused(_))), "{}", String::from_utf8_lossy(bad));
        }
    }
}
