//! The end-of-run balance check.
//!
//! This module owns how the load generator decides that the ledger still balances: it reads
//! every account the run created (`GET /v1/accounts/{id}`, over several connections), and
//! checks, in exact decimal arithmetic, that their balances sum to zero (the funding account
//! holds minus what it gave out), that none is below minus its overdraft limit, and that what
//! the run's accounts were debited in all is what the generator saw acknowledged (plus, at
//! most, the transfers whose answer was lost).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::{Method, StatusCode, Uri};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::bench::BenchError;
use crate::bench::client::Endpoint;
use crate::bench::report::BalanceCheck;
use crate::bench::workload::Naming;

/// Connections used to read the accounts back.
const CHECK_CONNECTIONS_MAX: usize = 32;

/// The fields of an account the check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFigures {
    pub id: String,
    pub balance: Decimal,
    pub available: Decimal,
    pub debits_posted: Decimal,
    /// `None`: unlimited.
    pub overdraft_limit: Option<Decimal>,
    /// The funding account (its debits are the funding, not the load).
    pub funding: bool,
}

#[derive(Deserialize)]
struct AccountBody {
    id: String,
    balance: String,
    available: String,
    debits_posted: String,
    overdraft_limit: String,
}

fn decimal(text: &str, what: &str, id: &str) -> Result<Decimal, BenchError> {
    Decimal::from_str(text).map_err(|_| BenchError::Check(format!("account {id}: `{what}` is not a decimal: {text:?}")))
}

impl AccountFigures {
    /// From a `GET /v1/accounts/{id}` answer body.
    pub fn parse(body: &[u8], funding: bool) -> Result<AccountFigures, BenchError> {
        let account: AccountBody = serde_json::from_slice(body)
            .map_err(|error| BenchError::Check(format!("an account answer does not parse: {error}")))?;
        let id = account.id;
        Ok(AccountFigures {
            balance: decimal(&account.balance, "balance", &id)?,
            available: decimal(&account.available, "available", &id)?,
            debits_posted: decimal(&account.debits_posted, "debits_posted", &id)?,
            overdraft_limit: match account.overdraft_limit.as_str() {
                "unlimited" => None,
                limit => Some(decimal(limit, "overdraft_limit", &id)?),
            },
            funding,
            id,
        })
    }
}

/// The verdict over every account of the run. `acknowledged_units`: amount of the transfers
/// the server acknowledged as applied (created, or an identical replay of one applied before);
/// `unknown_outcome_units`: amount of those whose answer was lost.
pub fn evaluate(accounts: &[AccountFigures], acknowledged_units: u64, unknown_outcome_units: u64) -> BalanceCheck {
    let mut sum = Decimal::ZERO;
    let mut debits = Decimal::ZERO;
    let mut over_limit = 0_u64;
    for account in accounts {
        sum += account.balance;
        if !account.funding {
            debits += account.debits_posted;
        }
        if let Some(limit) = account.overdraft_limit
            && (account.balance < -limit || account.available < -limit)
        {
            over_limit += 1;
        }
    }
    let acknowledged = Decimal::from(acknowledged_units);
    let unknown = Decimal::from(unknown_outcome_units);
    let moved_as_acknowledged = debits >= acknowledged && debits <= acknowledged + unknown;
    BalanceCheck {
        accounts_checked: u64::try_from(accounts.len()).unwrap_or(u64::MAX),
        sum_of_balances: sum.normalize().to_string(),
        accounts_over_limit: over_limit,
        debits_posted: debits.normalize().to_string(),
        acknowledged_amount: acknowledged.to_string(),
        unknown_outcome_amount: unknown.to_string(),
        moved_as_acknowledged,
        passed: sum.is_zero() && over_limit == 0 && moved_as_acknowledged,
    }
}

/// Reads accounts `0..accounts` of the run and its funding account, then [`evaluate`]s them.
pub async fn check_balances(
    endpoint: &Endpoint,
    naming: &Naming,
    accounts: u64,
    connections: usize,
    acknowledged_units: u64,
    unknown_outcome_units: u64,
) -> Result<BalanceCheck, BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..connections.clamp(1, CHECK_CONNECTIONS_MAX) {
        let (endpoint, naming, next) = (endpoint.clone(), naming.clone(), next.clone());
        readers.spawn(async move {
            let mut connection = endpoint.connect().await.map_err(|error| BenchError::Check(error.to_string()))?;
            let mut figures = Vec::new();
            loop {
                // Index `accounts` stands for the funding account.
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index > accounts {
                    return Ok::<_, BenchError>(figures);
                }
                let funding = index == accounts;
                let id = if funding { naming.funding_account() } else { naming.account(index) };
                let path = Uri::try_from(format!("/v1/accounts/{id}"))
                    .map_err(|error| BenchError::Check(format!("account path of {id}: {error}")))?;
                let (status, body) = connection
                    .send(&endpoint, Method::GET, path, None)
                    .await
                    .map_err(|error| BenchError::Check(format!("reading account {id}: {error}")))?;
                if status != StatusCode::OK {
                    let key = crate::bench::workload::error_key(status, &body);
                    return Err(BenchError::Check(format!("reading account {id}: {status} {key}")));
                }
                figures.push(AccountFigures::parse(&body, funding)?);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = readers.join_next().await {
        let figures = joined.map_err(|error| BenchError::Check(format!("a reader task failed: {error}")))??;
        all.extend(figures);
    }
    Ok(evaluate(&all, acknowledged_units, unknown_outcome_units))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, balance: i64, debits: i64, limit: Option<i64>) -> AccountFigures {
        AccountFigures {
            id: id.to_owned(),
            balance: Decimal::new(balance, 2),
            available: Decimal::new(balance, 2),
            debits_posted: Decimal::new(debits, 2),
            overdraft_limit: limit.map(|limit| Decimal::new(limit, 2)),
            funding: id == "funding",
        }
    }

    #[test]
    fn a_balanced_ledger_passes() {
        let accounts = [
            account("funding", -20_000, 20_000, None),
            account("a", 9_000, 1_000, Some(0)),
            account("b", 11_000, 500, Some(0)),
        ];
        let check = evaluate(&accounts, 15, 0);
        assert_eq!(check.sum_of_balances, "0");
        assert_eq!(check.debits_posted, "15");
        assert!(check.moved_as_acknowledged && check.passed, "{check:?}");
        assert_eq!(check.accounts_checked, 3);
    }

    #[test]
    fn each_broken_rule_fails_the_check() {
        // The sum is off by a cent.
        let unbalanced = [account("funding", -20_000, 20_000, None), account("a", 20_001, 0, Some(0))];
        let check = evaluate(&unbalanced, 0, 0);
        assert_eq!(check.sum_of_balances, "0.01");
        assert!(!check.passed);
        // Balanced, but an account is below its limit.
        let over = [account("funding", 100, 0, None), account("a", -100, 100, Some(50))];
        let check = evaluate(&over, 1, 0);
        assert_eq!(check.accounts_over_limit, 1);
        assert!(!check.passed);
        // Balanced, but more was debited than acknowledged (and no answer was lost).
        let moved =
            [account("funding", -1_000, 1_000, None), account("a", 0, 300, Some(0)), account("b", 1_000, 0, Some(0))];
        assert!(!evaluate(&moved, 2, 0).passed);
        // ... which is fine when up to that much had an unknown outcome,
        assert!(evaluate(&moved, 2, 1).passed);
        // ... but not when less was debited than acknowledged.
        assert!(!evaluate(&moved, 4, 0).passed);
    }

    #[test]
    fn account_answers_parse() {
        let body = br#"{"id":"r-a1","currency":"USD","balance":"90.00","available":"80.00","pending_debits":"10.00",
            "pending_credits":"0.00","debits_posted":"10.00","credits_posted":"100.00","overdraft_limit":"unlimited",
            "frozen":false,"metadata":{},"created_at":"2026-11-22T10:00:00.000Z","version":3}"#;
        let figures = AccountFigures::parse(body, false).unwrap();
        assert_eq!(figures.balance, Decimal::new(9000, 2));
        assert_eq!(figures.available, Decimal::new(8000, 2));
        assert_eq!(figures.overdraft_limit, None);
        let limited = String::from_utf8_lossy(body).replace("\"unlimited\"", "\"5.00\"");
        assert_eq!(
            AccountFigures::parse(limited.as_bytes(), false).unwrap().overdraft_limit,
            Some(Decimal::new(500, 2))
        );
        let broken = String::from_utf8_lossy(body).replace("\"90.00\"", "\"ninety\"");
        assert!(AccountFigures::parse(broken.as_bytes(), false).is_err());
    }
}
