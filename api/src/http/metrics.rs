//! Prometheus metrics: the recorder, the names, and `GET /metrics`.
//!
//! This module owns the process-wide `metrics` recorder (metrics-exporter-prometheus, installed
//! once by [`install_recorder`]), the description of every metric family of the contract
//! (API.md §8) — including those emitted by other crates (the committer's WAL histograms, the
//! snapshot gauges, the webhook counter) so that they appear before their first sample — the
//! request-duration middleware ([`track_requests`], labelled by the matched route template and
//! the status), the transfer counters ([`TransferMetrics`]) and the `/metrics` handler.
//!
//! `ledger_transfer_amount_total{currency}` counts money in currency units, which is not an
//! integer: the `metrics` crate's counters are integers, so this family is kept here (one
//! atomic `f64` per configured currency) and appended to the exporter's text. Floats are used
//! for metrics only, never for money in the ledger.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use engine::{Amount, Currency, Rejection};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::http::AppState;

/// `ledger_transfers_total{result}`: created | exists | a rejection code.
pub const TRANSFERS_TOTAL: &str = "ledger_transfers_total";
/// `ledger_transfer_amount_total{currency}`: money credited by posted transfers, in units.
pub const TRANSFER_AMOUNT_TOTAL: &str = "ledger_transfer_amount_total";
/// `ledger_request_duration_seconds{route,status}`.
pub const REQUEST_DURATION_SECONDS: &str = "ledger_request_duration_seconds";
/// `ledger_wal_commit_duration_seconds` (emitted by the committer).
pub const WAL_COMMIT_DURATION_SECONDS: &str = snapshots::committer::WAL_COMMIT_DURATION_SECONDS;
/// `ledger_wal_batch_size` (emitted by the committer): records per commit group.
pub const WAL_BATCH_SIZE: &str = snapshots::committer::WAL_BATCH_SIZE;
/// `ledger_wal_bytes_total` (emitted by the committer): bytes appended to the log.
pub const WAL_BYTES_TOTAL: &str = snapshots::committer::WAL_BYTES_TOTAL;
/// `ledger_accounts`: number of accounts.
pub const ACCOUNTS: &str = "ledger_accounts";
/// `ledger_webhooks_total{provider,type,result}` (emitted by the webhook route).
pub const WEBHOOKS_TOTAL: &str = "ledger_webhooks_total";
/// `ledger_webhook_fetch_duration_seconds{provider,outcome}`: one attempt to read a provider's
/// record (outcome `ok`, `refused` or `unreachable`).
pub const WEBHOOK_FETCH_DURATION_SECONDS: &str = "ledger_webhook_fetch_duration_seconds";
/// `ledger_snapshot_last_seq` (emitted by the snapshot writer).
pub const SNAPSHOT_LAST_SEQ: &str = snapshots::snapshot::SNAPSHOT_LAST_SEQ;
/// `ledger_snapshot_duration_seconds` (emitted by the snapshot writer).
pub const SNAPSHOT_DURATION_SECONDS: &str = snapshots::snapshot::SNAPSHOT_DURATION_SECONDS;

/// `ledger_auth_failures_total`: requests refused 401 by the auth guard.
pub const AUTH_FAILURES_TOTAL: &str = "ledger_auth_failures_total";
/// `ledger_auth_blocked_total`: requests refused 429 because their address failed to
/// authenticate too often (`auth.failures_per_minute`).
pub const AUTH_BLOCKED_TOTAL: &str = "ledger_auth_blocked_total";

/// Buckets of the duration histograms, in seconds (100 µs to 10 s).
const DURATION_BUCKETS_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of `ledger_wal_batch_size`, in records.
const BATCH_SIZE_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0, 16384.0];

/// Families whose every series this module must be able to print even with no sample yet:
/// (name, type, help).
const FAMILIES: [(&str, &str, &str); 10] = [
    (TRANSFERS_TOTAL, "counter", "Transfer creation requests by result: created, exists or the rejection code."),
    (TRANSFER_AMOUNT_TOTAL, "counter", "Money credited by posted transfers, in currency units."),
    (REQUEST_DURATION_SECONDS, "histogram", "HTTP request duration by route template and status."),
    (WAL_COMMIT_DURATION_SECONDS, "histogram", "Duration of one WAL commit group (write and fsync)."),
    (WAL_BATCH_SIZE, "histogram", "Records per WAL commit group."),
    (ACCOUNTS, "gauge", "Number of accounts."),
    (
        WEBHOOKS_TOTAL,
        "counter",
        "Webhook deliveries by provider, event type and result (refused signatures have type unverified).",
    ),
    (SNAPSHOT_LAST_SEQ, "gauge", "Log sequence of the newest snapshot."),
    (SNAPSHOT_DURATION_SECONDS, "histogram", "Duration of writing one snapshot."),
    (WEBHOOK_FETCH_DURATION_SECONDS, "histogram", "Duration of one attempt to read a provider's record."),
];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and
/// describes and registers every family of the contract.
pub fn install_recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already; /metrics may be empty");
            }
            describe_and_register();
            handle
        })
        .clone()
}

/// A recorder builder with the histogram buckets of this project.
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &DURATION_BUCKETS_SECONDS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Full(WAL_BATCH_SIZE.to_owned()), &BATCH_SIZE_BUCKETS)
        })
        .unwrap_or_else(|error| {
            // Only reached with an empty bucket list, which the constants above are not.
            tracing::warn!(%error, "histogram buckets refused; histograms render as summaries");
            PrometheusBuilder::new()
        })
}

/// Describes every family and registers the unlabelled ones, so that they render before their
/// first sample.
fn describe_and_register() {
    metrics::describe_counter!(TRANSFERS_TOTAL, FAMILIES[0].2);
    metrics::describe_histogram!(REQUEST_DURATION_SECONDS, metrics::Unit::Seconds, FAMILIES[2].2);
    metrics::describe_histogram!(WAL_COMMIT_DURATION_SECONDS, metrics::Unit::Seconds, FAMILIES[3].2);
    metrics::describe_histogram!(WAL_BATCH_SIZE, metrics::Unit::Count, FAMILIES[4].2);
    metrics::describe_counter!(WAL_BYTES_TOTAL, metrics::Unit::Bytes, "Bytes appended to the write-ahead log.");
    metrics::describe_gauge!(ACCOUNTS, metrics::Unit::Count, FAMILIES[5].2);
    metrics::describe_counter!(WEBHOOKS_TOTAL, FAMILIES[6].2);
    metrics::describe_gauge!(SNAPSHOT_LAST_SEQ, FAMILIES[7].2);
    metrics::describe_histogram!(SNAPSHOT_DURATION_SECONDS, metrics::Unit::Seconds, FAMILIES[8].2);
    metrics::describe_histogram!(WEBHOOK_FETCH_DURATION_SECONDS, metrics::Unit::Seconds, FAMILIES[9].2);
    // Registering a histogram creates its (empty) series: it renders with zero counts.
    let _ = metrics::histogram!(WAL_COMMIT_DURATION_SECONDS);
    let _ = metrics::histogram!(WAL_BATCH_SIZE);
    let _ = metrics::histogram!(SNAPSHOT_DURATION_SECONDS);
    metrics::gauge!(ACCOUNTS).set(0.0);
    describe_storage();
    metrics::describe_counter!(
        actors::maintenance::SNAPSHOT_FAILURES_TOTAL,
        "Periodic snapshots that failed (the log still holds everything; see the server's error log)."
    );
    metrics::describe_gauge!(
        actors::maintenance::SNAPSHOT_LAST_SUCCESS_TIMESTAMP_SECONDS,
        metrics::Unit::Seconds,
        "Unix time at which the newest periodic snapshot was written."
    );
    metrics::counter!(actors::maintenance::SNAPSHOT_FAILURES_TOTAL).increment(0);
    metrics::counter!(WAL_BYTES_TOTAL).increment(0);
    metrics::describe_counter!(AUTH_FAILURES_TOTAL, "Requests refused 401 by authentication.");
    metrics::describe_counter!(
        AUTH_BLOCKED_TOTAL,
        "Requests refused 429 because their client address failed to authenticate too often."
    );
    metrics::counter!(AUTH_FAILURES_TOTAL).increment(0);
    metrics::counter!(AUTH_BLOCKED_TOTAL).increment(0);
    crate::http::listener::register_metrics();
    // Every result a transfer creation can count, so that each series starts at 0 and
    // `rate()` sees its first event.
    let rejections = [
        Rejection::ExistsWithDifferentFields,
        Rejection::AccountsMustBeDifferent,
        Rejection::DebitAccountNotFound,
        Rejection::CreditAccountNotFound,
        Rejection::CurrencyMismatch,
        Rejection::InvalidAmount,
        Rejection::AccountFrozen,
        Rejection::InsufficientFunds,
        Rejection::Overflow,
        Rejection::BatchAborted,
    ];
    for result in ["created", "exists"].into_iter().chain(rejections.map(Rejection::code)) {
        metrics::counter!(TRANSFERS_TOTAL, "result" => result).increment(0);
    }
}

/// Registers at 0 the `ledger_webhooks_total` series each configured provider can count
/// without a client choosing them: every outcome of every type it sends that the ledger acts
/// on, an ignored other type, and the refused signatures. So `rate()` sees the first credited
/// deposit, the first duplicate and the first forged delivery. (Refusals of a verified
/// delivery, labelled with their error code, start at their first event.)
pub fn register_webhook_series(webhooks: &crate::webhooks::Webhooks) {
    for provider in webhooks.providers() {
        let name = provider.name.to_string();
        let zero = |event_type: &'static str, result: &'static str| {
            metrics::counter!(WEBHOOKS_TOTAL, "provider" => name.clone(), "type" => event_type, "result" => result)
                .increment(0);
        };
        for event_type in crate::webhooks::events::known_types(provider.scheme) {
            for result in payments::OUTCOMES {
                zero(event_type, result);
            }
        }
        zero("other", "ignored");
        zero("unverified", "invalid_signature");
        zero("unverified", "stale_webhook");
    }
}

/// Describes the storage families emitted by the actors and the history.
fn describe_storage() {
    metrics::describe_gauge!(
        actors::OPEN_HOLDS,
        metrics::Unit::Count,
        "Pending transfers held in memory, by shard (they stay until posted, voided or expired)."
    );
    metrics::describe_gauge!(
        actors::TRANSFERS_NOT_YET_IN_HISTORY,
        metrics::Unit::Count,
        "Settled transfers a shard keeps in memory until the history on disk has ingested them."
    );
    metrics::describe_gauge!(
        history::store::DURABLE_SEQ,
        "Log sequence up to which the history on disk is checkpointed (a restart ingests the log after it)."
    );
    metrics::describe_histogram!(
        history::store::CHECKPOINT_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Duration of one checkpoint of the history."
    );
    metrics::describe_histogram!(
        history::store::MERGE_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Duration of one background merge of the history's index runs."
    );
    metrics::gauge!(history::store::DURABLE_SEQ).set(0.0);
    metrics::describe_counter!(
        actors::ADMISSION_REFUSED_TOTAL,
        "Requests refused 503 overloaded at the engine's front door, by work: transfers or requests (every other kind)."
    );
    for work in ["transfers", "requests"] {
        metrics::counter!(actors::ADMISSION_REFUSED_TOTAL, "work" => work).increment(0);
    }
}

/// The transfer counters kept by the API.
pub struct TransferMetrics {
    /// Per configured currency: the `f64` bits of the money credited so far.
    amount_by_currency: HashMap<Arc<str>, AtomicU64>,
}

impl TransferMetrics {
    pub fn new(currencies: impl IntoIterator<Item = Arc<str>>) -> TransferMetrics {
        TransferMetrics {
            amount_by_currency: currencies.into_iter().map(|code| (code, AtomicU64::new(0_f64.to_bits()))).collect(),
        }
    }

    /// Counts `count` transfer creations with this result.
    pub fn count_result(&self, result: &'static str, count: u64) {
        metrics::counter!(TRANSFERS_TOTAL, "result" => result).increment(count);
    }

    /// Adds money credited (posted) in `currency`.
    pub fn add_credited(&self, currency: &Currency, amount: Amount) {
        let Some(total) = self.amount_by_currency.get(&currency.code) else {
            return;
        };
        // Prometheus values are floats: the counter is for dashboards, never for money.
        let amount = amount.minor_units() as f64 / 10_f64.powi(i32::try_from(currency.scale).unwrap_or(0));
        let _ = total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + amount).to_bits()));
    }

    /// The `ledger_transfer_amount_total` family in Prometheus text.
    fn render_amounts(&self, output: &mut String) {
        let mut codes: Vec<&Arc<str>> = self.amount_by_currency.keys().collect();
        codes.sort();
        let _ = writeln!(output, "# HELP {TRANSFER_AMOUNT_TOTAL} {}", FAMILIES[1].2);
        let _ = writeln!(output, "# TYPE {TRANSFER_AMOUNT_TOTAL} counter");
        for code in codes {
            let value = f64::from_bits(self.amount_by_currency[code].load(Ordering::Relaxed));
            let _ = writeln!(output, "{TRANSFER_AMOUNT_TOTAL}{{currency=\"{}\"}} {value}", escape_label(code));
        }
        output.push('\n');
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Middleware: records `ledger_request_duration_seconds{route,status}` for every request.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Runs the recorder's upkeep (drains histogram samples) every `period`, forever.
pub async fn run_upkeep(handle: PrometheusHandle, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    if let Ok(ledger) = state.ledger() {
        metrics::gauge!(ACCOUNTS).set(u64_to_f64(ledger.account_count()));
    }
    let mut text = match &state.prometheus {
        Some(handle) => {
            handle.run_upkeep();
            with_help_lines(&handle.render())
        }
        None => String::new(),
    };
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    state.transfer_metrics.render_amounts(&mut text);
    // Families with no series yet still get their HELP and TYPE lines, so that every family
    // of the contract is listed from the first scrape.
    for (name, kind, help) in FAMILIES {
        if name != TRANSFER_AMOUNT_TOTAL && !text.contains(&format!("# TYPE {name} ")) {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            text.push('\n');
        }
    }
    let mut response = (StatusCode::OK, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// `text` with a `# HELP` line before every `# TYPE` line that has none (a family emitted by
/// code that did not describe it), so that the exposition always passes `promtool check
/// metrics`.
fn with_help_lines(text: &str) -> String {
    let mut output = String::with_capacity(text.len() + 256);
    let mut previous = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, _)) = rest.split_once(' ')
            && !previous.starts_with(&format!("# HELP {name} "))
        {
            let _ = writeln!(output, "# HELP {name} {name} (no description).");
        }
        output.push_str(line);
        output.push('\n');
        previous = line;
    }
    output
}

/// A count as a gauge value (exact below 2^53, which any count here is).
fn u64_to_f64(value: u64) -> f64 {
    let capped = u32::try_from(value >> 21).map_or(f64::from(u32::MAX), f64::from);
    // value = high * 2^21 + low, both exactly representable.
    let low = f64::from(u32::try_from(value & 0x1f_ffff).unwrap_or(0));
    capped * 2_097_152.0 + low
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_convert_exactly() {
        assert_eq!(u64_to_f64(0), 0.0);
        assert_eq!(u64_to_f64(1_234_567_890), 1_234_567_890.0);
        assert_eq!(u64_to_f64(1 << 40), 1_099_511_627_776.0);
    }

    #[test]
    fn every_family_gets_a_help_line() {
        let text = "# TYPE a counter\na 1\n\n# HELP b B.\n# TYPE b gauge\nb 2\n";
        assert_eq!(
            with_help_lines(text),
            "# HELP a a (no description).\n# TYPE a counter\na 1\n\n# HELP b B.\n# TYPE b gauge\nb 2\n"
        );
    }

    #[test]
    fn amounts_render_as_a_counter_per_currency() {
        let metrics = TransferMetrics::new([Arc::from("USD"), Arc::from("EUR")]);
        let usd = Currency::new("USD", 2);
        metrics.add_credited(&usd, Amount::from_minor_units(1250));
        metrics.add_credited(&usd, Amount::from_minor_units(50));
        metrics.add_credited(&Currency::new("XXX", 0), Amount::from_minor_units(1));
        let mut text = String::new();
        metrics.render_amounts(&mut text);
        assert!(text.contains("ledger_transfer_amount_total{currency=\"USD\"} 13\n"), "{text}");
        assert!(text.contains("ledger_transfer_amount_total{currency=\"EUR\"} 0\n"), "{text}");
    }
}
