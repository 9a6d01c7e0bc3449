//! What the load generator sends, and how it reads the answers.
//!
//! This module owns the naming of everything a run creates ([`Naming`]: a run id prefixes every
//! account and transfer id, so repeated runs against one server never collide), the choice of
//! random pairs ([`PairPicker`]: uniform over all accounts or over a hot set), the request
//! bodies (written straight into a byte buffer, no JSON tree), and the classification of the
//! server's answers into result keys (`created`, `exists`, an error code, `http_<status>`).
//!
//! Amounts are whole currency units (valid at any scale); they are carried as integers here
//! and summed exactly.

use std::borrow::Cow;

use hyper::StatusCode;
use rand::Rng;
use rand::rngs::SmallRng;
use serde::Deserialize;

/// Longest run id: ids are at most 64 characters, and the longest id a run makes is the run
/// id, `-c`, a connection number and a sequence number.
pub const RUN_ID_CHARS_MAX: usize = 24;

/// The result key of a transfer the server created.
pub const CREATED: &str = "created";
/// The result key of an idempotent replay.
pub const EXISTS: &str = "exists";

/// Ids of what one run creates, all prefixed by the run id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    run_id: String,
}

/// Why a run id is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--run-id must be 1 to {RUN_ID_CHARS_MAX} characters of A-Z a-z 0-9 _ . - , got {0:?}")]
pub struct RunIdError(pub String);

impl Naming {
    /// Checks `run_id` (id characters, short enough that every derived id is valid; `:` is
    /// left out so that the prefix cannot look like a provider-made id).
    pub fn new(run_id: &str) -> Result<Naming, RunIdError> {
        let valid = !run_id.is_empty()
            && run_id.len() <= RUN_ID_CHARS_MAX
            && run_id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
        if valid { Ok(Naming { run_id: run_id.to_owned() }) } else { Err(RunIdError(run_id.to_owned())) }
    }

    /// A run id from a seed: `r` and 8 hex digits.
    pub fn from_seed(seed: u64) -> Naming {
        let folded = (seed ^ (seed >> 32)) & 0xffff_ffff;
        Naming { run_id: format!("r{folded:08x}") }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The account at `index` (0-based): `RUN-aINDEX`.
    pub fn account(&self, index: u64) -> String {
        let mut id = String::with_capacity(self.run_id.len() + 12);
        self.write_account(&mut id, index);
        id
    }

    fn write_account(&self, out: &mut String, index: u64) {
        out.push_str(&self.run_id);
        out.push_str("-a");
        out.push_str(itoa::Buffer::new().format(index));
    }

    /// The funding account, with an unlimited overdraft: `RUN-funding`.
    pub fn funding_account(&self) -> String {
        format!("{}-funding", self.run_id)
    }

    /// The transfer that funds account `index`: `RUN-fINDEX`.
    pub fn funding_transfer(&self, index: u64) -> String {
        format!("{}-f{index}", self.run_id)
    }
}

/// Picks random ordered pairs of distinct accounts among the first `pool` accounts (all of
/// them, or the hot set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairPicker {
    pool: u64,
}

impl PairPicker {
    /// `pool` is at least 2.
    pub fn new(pool: u64) -> PairPicker {
        assert!(pool >= 2, "a pair needs two accounts");
        PairPicker { pool }
    }

    /// `(debit, credit)`, distinct, each uniform over the pool.
    pub fn pick(&self, random: &mut SmallRng) -> (u64, u64) {
        let debit = random.random_range(0..self.pool);
        let credit = (debit + 1 + random.random_range(0..self.pool - 1)) % self.pool;
        (debit, credit)
    }
}

/// One transfer of the load, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTransfer {
    pub sequence: u64,
    pub debit: u64,
    pub credit: u64,
    /// Whole currency units.
    pub amount_units: u64,
}

/// Writes request bodies into reusable buffers.
#[derive(Debug, Clone)]
pub struct BodyWriter {
    naming: Naming,
    /// Prefix of this connection's transfer ids: `RUN-cCONNECTION-`.
    transfer_prefix: String,
}

impl BodyWriter {
    pub fn new(naming: &Naming, connection: usize) -> BodyWriter {
        BodyWriter { naming: naming.clone(), transfer_prefix: format!("{}-c{connection}-", naming.run_id) }
    }

    /// The id of this connection's transfer number `sequence`.
    pub fn transfer_id(&self, sequence: u64) -> String {
        format!("{}{sequence}", self.transfer_prefix)
    }

    /// `{"id":…,"debit_account":…,"credit_account":…,"amount":"N"}`
    pub fn write_transfer(&self, out: &mut Vec<u8>, transfer: &PlannedTransfer) {
        let mut numbers = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(self.transfer_prefix.as_bytes());
        out.extend_from_slice(numbers.format(transfer.sequence).as_bytes());
        out.extend_from_slice(b"\",\"debit_account\":\"");
        self.write_account_id(out, transfer.debit);
        out.extend_from_slice(b"\",\"credit_account\":\"");
        self.write_account_id(out, transfer.credit);
        out.extend_from_slice(b"\",\"amount\":\"");
        out.extend_from_slice(numbers.format(transfer.amount_units).as_bytes());
        out.extend_from_slice(b"\"}");
    }

    /// `{"transfers":[…],"atomic":…}`
    pub fn write_batch(&self, out: &mut Vec<u8>, transfers: &[PlannedTransfer], atomic: bool) {
        out.extend_from_slice(b"{\"transfers\":[");
        for (index, transfer) in transfers.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            self.write_transfer(out, transfer);
        }
        out.extend_from_slice(if atomic { b"],\"atomic\":true}" } else { b"],\"atomic\":false}" });
    }

    fn write_account_id(&self, out: &mut Vec<u8>, index: u64) {
        out.extend_from_slice(self.naming.run_id.as_bytes());
        out.extend_from_slice(b"-a");
        out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    }
}

/// `POST /v1/accounts` body of a bench account (overdraft limit 0) or, with `unlimited`, of
/// the funding account.
pub fn account_body(id: &str, currency: &str, unlimited: bool) -> Vec<u8> {
    let overdraft = if unlimited { ",\"overdraft_limit\":\"unlimited\"" } else { "" };
    format!("{{\"id\":\"{id}\",\"currency\":\"{currency}\"{overdraft}}}").into_bytes()
}

/// `POST /v1/transfers/batch` body that funds accounts `indexes` with `amount_units` each.
pub fn funding_batch_body(naming: &Naming, indexes: std::ops::Range<u64>, amount_units: u64) -> Vec<u8> {
    let funding = naming.funding_account();
    let mut body = String::from("{\"transfers\":[");
    for index in indexes {
        if !body.ends_with('[') {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"id\":\"{}\",\"debit_account\":\"{funding}\",\"credit_account\":\"{}\",\"amount\":\"{amount_units}\"}}",
            naming.funding_transfer(index),
            naming.account(index)
        ));
    }
    body.push_str("],\"atomic\":false}");
    body.into_bytes()
}

#[derive(Deserialize)]
struct ErrorResponse<'a> {
    #[serde(borrow)]
    error: ErrorCode<'a>,
}

#[derive(Deserialize)]
struct ErrorCode<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
}

#[derive(Deserialize)]
struct BatchResponse<'a> {
    #[serde(borrow)]
    results: Vec<BatchItem<'a>>,
}

/// One batch result; the transfer object is skipped unread.
#[derive(Deserialize)]
struct BatchItem<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    error: Option<ErrorCode<'a>>,
}

/// The result key of a non-2xx answer: its error code, else `http_<status>`.
pub fn error_key(status: StatusCode, body: &[u8]) -> Cow<'_, str> {
    match serde_json::from_slice::<ErrorResponse<'_>>(body) {
        Ok(response) if !response.error.code.is_empty() => response.error.code,
        _ => Cow::Owned(format!("http_{}", status.as_u16())),
    }
}

/// The result key of a `POST /v1/transfers` answer.
pub fn single_result(status: StatusCode, body: &[u8]) -> Cow<'_, str> {
    match status {
        StatusCode::CREATED => Cow::Borrowed(CREATED),
        StatusCode::OK => Cow::Borrowed(EXISTS),
        other => error_key(other, body),
    }
}

/// The result keys of a `POST /v1/transfers/batch` answer, one per item in order; `Err` with
/// one key for the whole request when it failed (every item then counts under it).
pub fn batch_results(status: StatusCode, body: &[u8], items: usize) -> Result<Vec<Cow<'_, str>>, Cow<'_, str>> {
    if status != StatusCode::OK {
        return Err(error_key(status, body));
    }
    let response: BatchResponse<'_> =
        serde_json::from_slice(body).map_err(|_| Cow::Borrowed("malformed_batch_response"))?;
    if response.results.len() != items {
        return Err(Cow::Borrowed("malformed_batch_response"));
    }
    Ok(response
        .results
        .into_iter()
        .map(|item| match (item.status.as_ref(), item.error) {
            ("created", _) => Cow::Borrowed(CREATED),
            ("exists", _) => Cow::Borrowed(EXISTS),
            (_, Some(error)) => error.code,
            (_, None) => Cow::Borrowed("malformed_batch_response"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn run_ids_are_checked_and_prefix_every_id() {
        assert!(Naming::new("").is_err());
        assert!(Naming::new("a b").is_err());
        assert!(Naming::new("a:b").is_err());
        assert!(Naming::new(&"x".repeat(RUN_ID_CHARS_MAX + 1)).is_err());
        let naming = Naming::new("run-1").unwrap();
        assert_eq!(naming.account(7), "run-1-a7");
        assert_eq!(naming.funding_account(), "run-1-funding");
        assert_eq!(naming.funding_transfer(3), "run-1-f3");
        assert_eq!(BodyWriter::new(&naming, 12).transfer_id(99), "run-1-c12-99");
        let from_seed = Naming::from_seed(0xdead_beef_0000_0001);
        assert_eq!(from_seed.run_id(), "rdeadbeee");
        // The longest ids a run makes are still valid ids.
        let longest = Naming::new(&"x".repeat(RUN_ID_CHARS_MAX)).unwrap();
        let transfer_id = BodyWriter::new(&longest, 4095).transfer_id(u64::MAX);
        assert!(engine::Id::parse(&transfer_id).is_ok(), "{transfer_id}");
        assert!(engine::Id::parse(&longest.account(u64::MAX)).is_ok());
    }

    #[test]
    fn pairs_are_distinct_and_cover_the_pool() {
        let mut random = SmallRng::seed_from_u64(7);
        let picker = PairPicker::new(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let (debit, credit) = picker.pick(&mut random);
            assert_ne!(debit, credit);
            assert!(debit < 3 && credit < 3);
            seen.insert((debit, credit));
        }
        // Every ordered pair of 3 accounts shows up.
        assert_eq!(seen.len(), 6);
        // A pool of two alternates between its two ordered pairs only.
        let picker = PairPicker::new(2);
        for _ in 0..100 {
            let pair = picker.pick(&mut random);
            assert!(pair == (0, 1) || pair == (1, 0), "{pair:?}");
        }
    }

    #[test]
    fn bodies_are_the_contract_json() {
        let naming = Naming::new("r1").unwrap();
        let writer = BodyWriter::new(&naming, 2);
        let transfers = [
            PlannedTransfer { sequence: 1, debit: 0, credit: 5, amount_units: 17 },
            PlannedTransfer { sequence: 2, debit: 5, credit: 0, amount_units: 1 },
        ];
        let mut single = Vec::new();
        writer.write_transfer(&mut single, &transfers[0]);
        let single: Value = serde_json::from_slice(&single).unwrap();
        assert_eq!(
            single,
            json!({"id": "r1-c2-1", "debit_account": "r1-a0", "credit_account": "r1-a5", "amount": "17"})
        );
        let mut batch = Vec::new();
        writer.write_batch(&mut batch, &transfers, false);
        let batch: Value = serde_json::from_slice(&batch).unwrap();
        assert_eq!(batch["atomic"], json!(false));
        assert_eq!(batch["transfers"][1]["id"], json!("r1-c2-2"));
        assert_eq!(batch["transfers"].as_array().unwrap().len(), 2);
        let account: Value = serde_json::from_slice(&account_body("r1-a0", "USD", false)).unwrap();
        assert_eq!(account, json!({"id": "r1-a0", "currency": "USD"}));
        let funding: Value = serde_json::from_slice(&account_body("r1-funding", "EUR", true)).unwrap();
        assert_eq!(funding["overdraft_limit"], json!("unlimited"));
        let funding: Value = serde_json::from_slice(&funding_batch_body(&naming, 3..5, 1000)).unwrap();
        assert_eq!(
            funding["transfers"][1],
            json!({"id": "r1-f4", "debit_account": "r1-funding", "credit_account": "r1-a4", "amount": "1000"})
        );
    }

    #[test]
    fn answers_become_result_keys() {
        assert_eq!(single_result(StatusCode::CREATED, b"{}"), "created");
        assert_eq!(single_result(StatusCode::OK, b"{}"), "exists");
        let rejected = br#"{"error":{"code":"insufficient_funds","message":"no"}}"#;
        assert_eq!(single_result(StatusCode::UNPROCESSABLE_ENTITY, rejected), "insufficient_funds");
        assert_eq!(single_result(StatusCode::BAD_GATEWAY, b"<html>"), "http_502");

        let body = json!({"results": [
            {"status": "created", "transfer": {"id": "t", "status": "posted", "metadata": {}}},
            {"status": "exists", "transfer": {"id": "u"}},
            {"status": "rejected", "error": {"code": "insufficient_funds", "message": "m"}},
        ]})
        .to_string();
        let keys = batch_results(StatusCode::OK, body.as_bytes(), 3).unwrap();
        assert_eq!(keys, ["created", "exists", "insufficient_funds"]);
        assert_eq!(batch_results(StatusCode::OK, body.as_bytes(), 4).unwrap_err(), "malformed_batch_response");
        let overloaded = br#"{"error":{"code":"overloaded","message":"later"}}"#;
        assert_eq!(batch_results(StatusCode::SERVICE_UNAVAILABLE, overloaded, 3).unwrap_err(), "overloaded");
    }
}
