//! Ids that belong to the ledger, and what a `client` token may name.
//!
//! This module owns the reserved-id rule and the least-privilege rules of the contract
//! (API.md §2): account ids beginning with `settlement:` and transfer ids beginning with `dep:`
//! or `wd:` are the ledger's own (the webhook service derives them), so a request that tries to
//! create one answers 400 `reserved_id`; only an `admin` may name a `settlement:` account on
//! either side of a transfer, and only an `admin` may create an account whose overdraft is
//! unlimited (403 `forbidden`). A batch is checked whole before anything is applied.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use engine::{Id, Overdraft, TransferRequest};

use crate::http::auth::Identity;
use crate::http::error::ApiError;

/// Prefix of the settlement accounts the ledger creates for each provider and currency.
pub const SETTLEMENT_ACCOUNT_PREFIX: &str = "settlement:";

/// Prefixes of the transfers the ledger derives: deposits and withdrawals.
pub const LEDGER_TRANSFER_PREFIXES: [&str; 2] = ["dep:", "wd:"];

/// Whether `id` is an account id only the ledger may create.
pub fn is_settlement_account(id: &Id) -> bool {
    id.as_str().starts_with(SETTLEMENT_ACCOUNT_PREFIX)
}

/// Whether `id` is a transfer id only the ledger may create.
pub fn is_ledger_transfer(id: &Id) -> bool {
    LEDGER_TRANSFER_PREFIXES.iter().any(|prefix| id.as_str().starts_with(prefix))
}

/// The caller of a `/v1` request, as the auth guard found it.
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The auth guard runs before every /v1 handler; without it there is no caller.
        parts.extensions.get::<Identity>().cloned().map(Caller).ok_or_else(ApiError::unauthorized)
    }
}

/// A new account: its id is not reserved (400 `reserved_id`), and an unlimited overdraft is
/// for admins (403 `forbidden`).
pub fn check_new_account(caller: &Identity, id: &Id, overdraft: &Overdraft) -> Result<(), ApiError> {
    if is_settlement_account(id) {
        return Err(ApiError::reserved_id(
            "id",
            format!("account ids beginning with `{SETTLEMENT_ACCOUNT_PREFIX}` belong to the ledger"),
        ));
    }
    if matches!(overdraft, Overdraft::Unlimited) && !caller.is_admin() {
        return Err(ApiError::forbidden()
            .with_message("only an admin token may create an account with an unlimited overdraft")
            .with_field("overdraft_limit"));
    }
    Ok(())
}

/// New transfers (one, or the items of a batch; `prefix(index)` names an item in `field`):
/// no reserved transfer id (400 `reserved_id`), then no `settlement:` account on either side
/// unless the caller is an admin (403 `forbidden`). The first item at fault answers for all.
pub fn check_new_transfers(
    caller: &Identity,
    requests: &[TransferRequest],
    prefix: impl Fn(usize) -> String,
) -> Result<(), ApiError> {
    let field = |index: usize, name: &str| {
        let prefix = prefix(index);
        if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
    };
    if let Some(index) = requests.iter().position(|request| is_ledger_transfer(&request.id)) {
        return Err(ApiError::reserved_id(
            field(index, "id"),
            "transfer ids beginning with `dep:` or `wd:` belong to the ledger",
        ));
    }
    if caller.is_admin() {
        return Ok(());
    }
    for (index, request) in requests.iter().enumerate() {
        for (name, account) in [("debit_account", &request.debit_account), ("credit_account", &request.credit_account)]
        {
            if is_settlement_account(account) {
                return Err(ApiError::forbidden()
                    .with_message("only an admin token may move money to or from a settlement account")
                    .with_field(field(index, name)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_prefixes_are_exact() {
        let id = |text: &str| Id::parse(text).unwrap();
        assert!(is_settlement_account(&id("settlement:processor:EUR")));
        assert!(!is_settlement_account(&id("settlements")));
        assert!(is_ledger_transfer(&id("dep:processor:d-1")) && is_ledger_transfer(&id("wd:p:w-9")));
        assert!(!is_ledger_transfer(&id("deposit-1")) && !is_ledger_transfer(&id("wdx")));
    }
}
