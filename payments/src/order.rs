//! Deposit orders: an expected deposit registered with `POST /v1/deposits`, whose account a
//! CCPayment `ApiDeposit` credits, and the list of the deposits seen for it.

use engine::{Account, Id};

use crate::facts::{DepositOrderFact, ORDER_DEPOSITS_MAX};
use crate::refusal::{Refusal, RefusalKind};

/// An order a client registers, after syntax checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub id: Id,
    pub account: Id,
    pub provider: String,
}

/// A registration of an order that exists already: `Ok(true)` for the same order (a
/// replay), a conflict for another; `Ok(false)` when there is none.
pub fn before_create(fact: Option<&DepositOrderFact>, request: &OrderRequest) -> Result<bool, Refusal> {
    let Some(fact) = fact else { return Ok(false) };
    if fact.account != request.account || fact.provider != request.provider {
        return Err(Refusal::new(
            RefusalKind::Conflict,
            "conflict",
            format!("deposit order {} exists with other fields", request.id),
        ));
    }
    Ok(true)
}

/// The fact of a new order for `account`.
pub fn created(request: &OrderRequest, account: &Account, now_ms: i64) -> DepositOrderFact {
    DepositOrderFact {
        id: request.id.clone(),
        account: account.id.clone(),
        provider: request.provider.clone(),
        currency: account.currency.clone(),
        deposits: Vec::new(),
        created_at_ms: now_ms,
    }
}

/// The order with `deposit_id` listed, when it is not yet (and the list has room).
pub fn with_deposit(order: &DepositOrderFact, deposit_id: &str) -> Option<DepositOrderFact> {
    if order.deposits.len() >= ORDER_DEPOSITS_MAX || order.deposits.iter().any(|known| known == deposit_id) {
        return None;
    }
    let mut next = order.clone();
    next.deposits.push(deposit_id.to_owned());
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Amount, Currency, Metadata, Overdraft};

    #[test]
    fn orders_replay_refuse_and_list_each_deposit_once() {
        let id = |text: &str| Id::parse(text).unwrap();
        let request = OrderRequest { id: id("o-1"), account: id("alice"), provider: "ccpayment".into() };
        let account = Account::new(
            id("alice"),
            Currency::new("USDT", 6),
            Overdraft::Limited(Amount::ZERO),
            Metadata::new(),
            0,
            1,
        );
        let order = created(&request, &account, 3);
        assert_eq!(before_create(Some(&order), &request), Ok(true));
        let other = OrderRequest { account: id("bob"), ..request.clone() };
        assert_eq!(before_create(Some(&order), &other).unwrap_err().kind, RefusalKind::Conflict);
        let listed = with_deposit(&order, "r-1").unwrap();
        assert_eq!(listed.deposits, ["r-1"]);
        assert!(with_deposit(&listed, "r-1").is_none());
    }
}
