//! What a load run found, for people and for machines.
//!
//! This module owns the [`Report`] of a run (throughput, latency percentiles from an HDR
//! histogram, the count of each result, the balance check, the generator's own CPU time), its
//! text form and its JSON form (`--json`: one object; [`Report`] also deserializes, so other
//! tools read results back), the one-line progress printed once a second, and [`ResultCounts`].
//! The same report is produced by the PostgreSQL driver in `benches`, so that both systems are
//! compared on one format. Rates and latencies are floats (reporting only); money is decimal
//! text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency the histograms record: an hour, in microseconds.
pub const LATENCY_MICROS_MAX: u64 = 3_600_000_000;

/// A latency histogram in microseconds (1 µs to an hour, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, 3).expect("valid histogram bounds")
}

/// Records one request's latency (clamped to the histogram's range).
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_MICROS_MAX);
    histogram.saturating_record(micros);
}

/// How many transfers (or requests) ended with each result key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResultCounts(BTreeMap<String, u64>);

impl ResultCounts {
    pub fn add(&mut self, key: &str, count: u64) {
        if let Some(total) = self.0.get_mut(key) {
            *total += count;
        } else {
            self.0.insert(key.to_owned(), count);
        }
    }

    pub fn merge(&mut self, other: &ResultCounts) {
        for (key, count) in &other.0 {
            self.add(key, *count);
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(key, count)| (key.as_str(), *count))
    }
}

/// Latency percentiles of the requests of a run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    /// Requests measured.
    pub samples: u64,
}

impl LatencySummary {
    /// From a histogram in microseconds.
    pub fn from_histogram(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let milliseconds = |micros: u64| micros_as_f64(micros) / 1000.0;
        LatencySummary {
            p50: milliseconds(histogram.value_at_quantile(0.5)),
            p90: milliseconds(histogram.value_at_quantile(0.9)),
            p99: milliseconds(histogram.value_at_quantile(0.99)),
            p999: milliseconds(histogram.value_at_quantile(0.999)),
            max: milliseconds(histogram.max()),
            mean: histogram.mean() / 1000.0,
            samples: histogram.len(),
        }
    }
}

#[allow(clippy::cast_precision_loss, reason = "reporting only: latencies far below 2^52 µs")]
fn micros_as_f64(micros: u64) -> f64 {
    micros as f64
}

/// Per second, for reporting.
#[allow(clippy::cast_precision_loss, reason = "reporting only")]
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

/// Whether the ledger still balances after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceCheck {
    /// Accounts read: every account the run created, the funding account included.
    pub accounts_checked: u64,
    /// Sum of their balances: exactly zero when the ledger balances.
    pub sum_of_balances: String,
    /// Accounts below minus their overdraft limit (in balance or in available funds).
    pub accounts_over_limit: u64,
    /// What the run's accounts were debited in all, and what the generator saw acknowledged as
    /// applied (created, or an identical replay).
    pub debits_posted: String,
    pub acknowledged_amount: String,
    /// Amount of transfers whose answer was lost (a timeout or a broken connection): they may
    /// or may not have been applied.
    pub unknown_outcome_amount: String,
    /// `debits_posted` lies between `acknowledged_amount` and that plus
    /// `unknown_outcome_amount`.
    pub moved_as_acknowledged: bool,
    /// Every check held: the sum is zero, nobody is over their limit, the money moved is what
    /// was acknowledged.
    pub passed: bool,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `ledgerd` or `postgresql`.
    pub system: String,
    pub target: String,
    /// `transfers` or `health`.
    pub workload: String,
    pub run_id: String,
    pub seed: u64,
    pub accounts: u64,
    /// Transfers pick both accounts among the first this many (`null`: all of them).
    pub hot_accounts: Option<u64>,
    pub connections: usize,
    /// Transfers per request (1: `POST /v1/transfers`; more: a batch).
    pub batch: usize,
    pub atomic: bool,
    /// Seconds spent creating and funding the accounts (not part of the measurement).
    pub setup_seconds: f64,
    /// Seconds from the first request of the load to the last answer.
    pub elapsed_seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Transfers the server created (acknowledged: durable).
    pub transfers_created: u64,
    pub throughput_transfers_per_second: f64,
    /// Latency of each request (a whole batch for batches).
    pub latency_ms: LatencySummary,
    /// Transfers (requests for `health`) by result: `created`, `exists`, an error code,
    /// `http_<status>`, `timeout`, `connection_error`, `connect_error`.
    pub results: ResultCounts,
    /// `null` when skipped (`--skip-balance-check`, the `health` workload).
    pub balance: Option<BalanceCheck>,
    /// CPU time the generator process used during the load, when the OS tells it.
    pub generator_cpu_seconds: Option<f64>,
    /// Runtime threads of the generator.
    #[serde(default)]
    pub generator_threads: usize,
}

impl Report {
    /// Whether the run's checks passed (a skipped check passes).
    pub fn passed(&self) -> bool {
        self.balance.as_ref().is_none_or(|check| check.passed)
    }

    /// The report for people: a few aligned lines.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let hot = self.hot_accounts.map(|hot| format!(" (hot set {hot})")).unwrap_or_default();
        let shape = if self.workload == "health" {
            "GET /health".to_owned()
        } else if self.batch == 1 {
            "single transfers".to_owned()
        } else {
            format!("batches of {}{}", self.batch, if self.atomic { ", atomic" } else { "" })
        };
        let _ = writeln!(
            text,
            "{} bench: {}, {} accounts{hot}, {} connections, {shape}, {:.1} s (run {}, seed {})",
            self.system, self.target, self.accounts, self.connections, self.elapsed_seconds, self.run_id, self.seed
        );
        if self.workload == "health" {
            let _ = writeln!(text, "throughput  {} requests/s", group_digits(self.requests_per_second));
        } else {
            let _ = writeln!(
                text,
                "throughput  {} transfers/s ({} requests/s)",
                group_digits(self.throughput_transfers_per_second),
                group_digits(self.requests_per_second)
            );
        }
        let latency = &self.latency_ms;
        let _ = writeln!(
            text,
            "latency     p50 {} ms  p99 {} ms  p999 {} ms  max {} ms  ({} requests)",
            milliseconds(latency.p50),
            milliseconds(latency.p99),
            milliseconds(latency.p999),
            milliseconds(latency.max),
            latency.samples
        );
        let results: Vec<String> = self.results.iter().map(|(key, count)| format!("{key} {count}")).collect();
        let results = if results.is_empty() { "none".to_owned() } else { results.join(", ") };
        let _ = writeln!(text, "results     {results}");
        match &self.balance {
            None => {
                let _ = writeln!(text, "balance     not checked");
            }
            Some(check) => {
                let verdict = if check.passed { "balanced" } else { "NOT BALANCED" };
                let _ = writeln!(
                    text,
                    "balance     {verdict}: {} accounts sum to {}, {} over their limit; debited {} (acknowledged {}, \
                     unknown outcome {})",
                    check.accounts_checked,
                    check.sum_of_balances,
                    check.accounts_over_limit,
                    check.debits_posted,
                    check.acknowledged_amount,
                    check.unknown_outcome_amount
                );
            }
        }
        if let Some(cpu) = self.generator_cpu_seconds {
            let share = if self.elapsed_seconds > 0.0 { 100.0 * cpu / self.elapsed_seconds } else { 0.0 };
            let _ = writeln!(
                text,
                "generator   {cpu:.2} s of CPU ({share:.0}% of one core), {} runtime thread(s)",
                self.generator_threads
            );
        }
        text
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }
}

/// The progress line printed once a second.
pub fn progress_line(second: u64, rate_per_second: u64, unit: &str, created: u64, other_results: u64) -> String {
    format!(
        "[{second:>4} s] {:>11} {unit}/s   total {} created, {} other results",
        group_digits_integer(rate_per_second),
        group_digits_integer(created),
        group_digits_integer(other_results)
    )
}

fn milliseconds(value: f64) -> String {
    if value >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") }
}

/// `12345.6` → `12,346`.
fn group_digits(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return format!("{value:.0}");
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "rounded, non-negative, reporting")]
    let rounded = value.round() as u64;
    group_digits_integer(rounded)
}

fn group_digits_integer(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// CPU time (user + system) this process used so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Its clock ticks are `USER_HZ`, 100 on every Linux ABI.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_proc_stat_cpu_seconds(&stat)
}

fn parse_proc_stat_cpu_seconds(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // numbered from 3: utime is field 14 and stime field 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u32 = fields.get(11)?.parse().ok()?;
    let system: u32 = fields.get(12)?.parse().ok()?;
    Some((f64::from(user) + f64::from(system)) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        let mut histogram = latency_histogram();
        for micros in 1..=1000_u64 {
            histogram.record(micros * 10).unwrap();
        }
        let mut results = ResultCounts::default();
        results.add("created", 990);
        results.add("insufficient_funds", 10);
        Report {
            system: "ledgerd".to_owned(),
            target: "http://127.0.0.1:8080".to_owned(),
            workload: "transfers".to_owned(),
            run_id: "r1".to_owned(),
            seed: 42,
            accounts: 10_000,
            hot_accounts: Some(10),
            connections: 64,
            batch: 1,
            atomic: false,
            setup_seconds: 1.5,
            elapsed_seconds: 2.0,
            requests: 1000,
            requests_per_second: 500.0,
            transfers_created: 990,
            throughput_transfers_per_second: 1234567.4,
            latency_ms: LatencySummary::from_histogram(&histogram),
            results,
            balance: Some(BalanceCheck {
                accounts_checked: 10_001,
                sum_of_balances: "0".to_owned(),
                accounts_over_limit: 0,
                debits_posted: "5000".to_owned(),
                acknowledged_amount: "5000".to_owned(),
                unknown_outcome_amount: "0".to_owned(),
                moved_as_acknowledged: true,
                passed: true,
            }),
            generator_cpu_seconds: Some(0.5),
            generator_threads: 1,
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let latency = sample_report().latency_ms;
        // 1,000 samples of 10 µs .. 10 ms: the median is about 5 ms, p99 about 9.9 ms.
        assert!((latency.p50 - 5.0).abs() < 0.01, "{latency:?}");
        assert!((latency.p99 - 9.9).abs() < 0.02, "{latency:?}");
        assert!((latency.max - 10.0).abs() < 0.01, "{latency:?}");
        assert!(latency.p50 <= latency.p90 && latency.p90 <= latency.p99 && latency.p99 <= latency.p999);
        assert_eq!(latency.samples, 1000);
        assert_eq!(LatencySummary::from_histogram(&latency_histogram()), LatencySummary::default());
    }

    #[test]
    fn latencies_outside_the_range_are_clamped() {
        let mut histogram = latency_histogram();
        record_latency(&mut histogram, Duration::ZERO);
        record_latency(&mut histogram, Duration::from_secs(10 * 3600));
        assert_eq!(histogram.len(), 2);
        assert_eq!(histogram.min(), 1);
        assert!(histogram.max() >= LATENCY_MICROS_MAX);
    }

    #[test]
    fn the_text_report_says_everything() {
        let text = sample_report().to_text();
        assert!(text.contains("1,234,567 transfers/s (500 requests/s)"), "{text}");
        assert!(text.contains("p50 5.00 ms"), "{text}");
        assert!(text.contains("(hot set 10)"), "{text}");
        assert!(text.contains("created 990, insufficient_funds 10"), "{text}");
        assert!(text.contains("balanced: 10001 accounts sum to 0"), "{text}");
        assert!(text.contains("25% of one core"), "{text}");
        let mut failed = sample_report();
        failed.balance.as_mut().unwrap().passed = false;
        assert!(failed.to_text().contains("NOT BALANCED"));
        assert!(!failed.passed());
        failed.balance = None;
        assert!(failed.to_text().contains("not checked"));
        assert!(failed.passed());
    }

    #[test]
    fn the_json_report_round_trips() {
        let report = sample_report();
        let json = report.to_json();
        assert!(!json.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["results"]["created"], 990);
        assert_eq!(value["balance"]["passed"], true);
        assert_eq!(value["latency_ms"]["samples"], 1000);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn progress_lines_and_digit_groups() {
        assert_eq!(
            progress_line(3, 41_234, "transfers", 123_456, 7),
            "[   3 s]      41,234 transfers/s   total 123,456 created, 7 other results"
        );
        assert_eq!(group_digits_integer(0), "0");
        assert_eq!(group_digits_integer(999), "999");
        assert_eq!(group_digits_integer(1000), "1,000");
        assert_eq!(group_digits(1_000_000.4), "1,000,000");
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat() {
        let stat = "1234 (ledgerd bench) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_proc_stat_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_proc_stat_cpu_seconds("garbage"), None);
        if cfg!(target_os = "linux") {
            assert!(process_cpu_seconds().is_some());
        }
    }

    #[test]
    fn result_counts_add_and_merge() {
        let mut counts = ResultCounts::default();
        counts.add("created", 2);
        counts.add("created", 3);
        let mut other = ResultCounts::default();
        other.add("timeout", 1);
        other.add("created", 1);
        counts.merge(&other);
        assert_eq!(counts.get("created"), 6);
        assert_eq!(counts.get("timeout"), 1);
        assert_eq!(counts.get("absent"), 0);
        assert_eq!(counts.total(), 7);
    }
}
