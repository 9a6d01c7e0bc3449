//! Property test of the engine against a tiny independent model.
//!
//! Random sequences of account, transfer, pending, post, void, expire and freeze operations
//! run against `engine::Ledger` (the reference decisions plus `apply`) and against a model of
//! a few lines over `BTreeMap`s. After every step the outcomes must agree, every invariant of
//! the contract must hold, and replaying the log written so far from empty must give exactly
//! the same ledger (the restart step).

use std::collections::BTreeMap;

use engine::ledger::TransferDecision;
use engine::{
    Amount, Currency, Id, Ledger, Overdraft, Record, Rejection, TransferBook, TransferRequest, WrittenAmount,
};
use proptest::prelude::*;

const ACCOUNTS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Operation {
    Transfer { id: u8, debit: usize, credit: usize, cents: i64, pending: bool, timeout_seconds: u64 },
    Post { id: u8, cents: Option<i64> },
    Void { id: u8 },
    Freeze { account: usize, frozen: bool },
    AdvanceSeconds(i64),
    Restart,
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0_u8..12, 0_usize..4, 0_usize..4, 1_i64..3_000, any::<bool>(), prop_oneof![Just(0_u64), 1_u64..5])
            .prop_map(|(id, debit, credit, cents, pending, timeout_seconds)| Operation::Transfer {
                id, debit, credit, cents, pending, timeout_seconds: if pending { timeout_seconds } else { 0 },
            }),
        2 => (0_u8..12, proptest::option::of(1_i64..3_000)).prop_map(|(id, cents)| Operation::Post { id, cents }),
        1 => (0_u8..12).prop_map(|id| Operation::Void { id }),
        1 => (0_usize..4, any::<bool>()).prop_map(|(account, frozen)| Operation::Freeze { account, frozen }),
        1 => (1_i64..4).prop_map(Operation::AdvanceSeconds),
        1 => Just(Operation::Restart),
    ]
}

/// Where a transfer of the model is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Posted,
    Voided,
    Expired,
}

/// A transfer of the model.
#[derive(Debug, Clone, Copy)]
struct ModelTransfer {
    debit: usize,
    credit: usize,
    cents: i64,
    deadline_ms: Option<i64>,
    status: Status,
    pending: bool,
}

/// The model: balances and holds in cents, nothing else.
#[derive(Debug, Default)]
struct Model {
    posted: BTreeMap<usize, i64>,
    transfers: BTreeMap<u8, ModelTransfer>,
    frozen: [bool; 4],
}

impl Model {
    fn held_debits(&self, account: usize) -> i64 {
        self.transfers.values().filter(|t| t.debit == account && t.status == Status::Pending).map(|t| t.cents).sum()
    }
    fn available(&self, account: usize) -> i64 {
        self.posted.get(&account).copied().unwrap_or(0) - self.held_debits(account)
    }
    /// Account 0 ("a") has an unlimited overdraft; the others none.
    fn may_spend(&self, account: usize, cents: i64) -> bool {
        account == 0 || self.available(account) >= cents
    }
}

fn id(text: &str) -> Id {
    Id::parse(text).unwrap()
}

/// An amount of `value` cents, as a total of the ledger.
fn cents(value: i64) -> Amount {
    Amount::from_minor_units(i128::from(value))
}

/// `value` cents as a client would write it (`"12.34"`).
fn written(value: i64) -> WrittenAmount {
    WrittenAmount::from_minor_units(u128::try_from(value).unwrap(), 2)
}

/// The ledger (accounts and open holds) and the book of every transfer, as the server keeps
/// them in memory and in its history.
#[derive(Debug, Default, PartialEq, Eq)]
struct State {
    ledger: Ledger,
    book: TransferBook,
}

fn apply_logged(state: &mut State, log: &mut Vec<Record>, record: Record) {
    let seq = state.ledger.last_seq + 1;
    state.ledger.apply(seq, &record).expect("a decided record applies");
    state.book.apply(seq, &record).expect("a decided record applies to the book");
    log.push(record);
}

fn replay(log: &[Record]) -> State {
    let mut state = State::default();
    for (index, record) in log.iter().enumerate() {
        let seq = u64::try_from(index).unwrap() + 1;
        state.ledger.apply(seq, record).expect("the log replays");
        state.book.apply(seq, record).expect("the log replays into the book");
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_model(operations in proptest::collection::vec(operation(), 1..60)) {
        let usd = Currency::new("USD", 2);
        let mut state = State::default();
        let mut log = Vec::new();
        let mut model = Model::default();
        let mut now_ms = 1_000_000_i64;
        for (index, name) in ACCOUNTS.iter().enumerate() {
            let overdraft = if index == 0 { Overdraft::Unlimited } else { Overdraft::Limited(Amount::ZERO) };
            apply_logged(&mut state, &mut log, Record::CreateAccount {
                id: id(name), currency: usd.clone(), overdraft, metadata: Default::default(), created_at_ms: now_ms,
            });
        }
        for operation in operations {
            match operation {
                Operation::Transfer { id: number, debit, credit, cents: amount, pending, timeout_seconds } => {
                    let request = TransferRequest {
                        id: id(&format!("t{number}")),
                        debit_account: id(ACCOUNTS[debit]),
                        credit_account: id(ACCOUNTS[credit]),
                        amount: written(amount),
                        pending,
                        timeout_seconds,
                        description: String::new(),
                        metadata: Default::default(),
                    };
                    let expected: Result<bool, Rejection> = match model.transfers.get(&number) {
                        Some(stored) => {
                            if (stored.debit, stored.credit, stored.cents, stored.pending) == (debit, credit, amount, pending)
                                && (stored.deadline_ms.is_some() || timeout_seconds == 0)
                                && (stored.deadline_ms.is_none() || timeout_seconds != 0) {
                                Ok(false)
                            } else {
                                Err(Rejection::ExistsWithDifferentFields)
                            }
                        }
                        None if debit == credit => Err(Rejection::AccountsMustBeDifferent),
                        None if model.frozen[debit] || model.frozen[credit] => Err(Rejection::AccountFrozen),
                        None if !model.may_spend(debit, amount) => Err(Rejection::InsufficientFunds),
                        None => Ok(true),
                    };
                    let actual = state.ledger.create_transfer(&request, state.book.get(&request.id), now_ms);
                    // Timeout differences on replays are compared through the stored transfer.
                    match (&expected, &actual) {
                        (Ok(true), Ok(TransferDecision::New(record))) => {
                            let timeout_ms = i64::try_from(timeout_seconds).unwrap() * 1000;
                            let deadline_ms = (pending && timeout_seconds > 0).then_some(now_ms + timeout_ms);
                            let status = if pending { Status::Pending } else { Status::Posted };
                            model.transfers.insert(number, ModelTransfer { debit, credit, cents: amount, deadline_ms, status, pending });
                            if !pending {
                                *model.posted.entry(debit).or_default() -= amount;
                                *model.posted.entry(credit).or_default() += amount;
                            }
                            apply_logged(&mut state, &mut log, record.clone());
                        }
                        (Ok(false), Ok(TransferDecision::Replay(_))) => {}
                        (Err(expected), Err(actual)) => prop_assert_eq!(expected, actual),
                        (Err(Rejection::ExistsWithDifferentFields), Ok(TransferDecision::Replay(stored))) => {
                            // The model cannot see timeouts of stored transfers exactly; the
                            // engine must then have matched every field.
                            prop_assert!(stored.matches(&request));
                        }
                        (Ok(false), Err(Rejection::ExistsWithDifferentFields)) => {
                            prop_assert!(!state.book.transfers[&request.id].matches(&request));
                        }
                        _ => prop_assert!(false, "model {:?} vs engine {:?}", expected, actual),
                    }
                }
                Operation::Post { id: number, cents: amount } => {
                    let actual = state.ledger.post(state.book.get(&id(&format!("t{number}"))), amount.map(written).as_ref(), now_ms);
                    let expected = match model.transfers.get(&number).copied() {
                        None => Err(Rejection::TransferNotFound),
                        Some(ModelTransfer { status: Status::Posted, pending: false, .. }) => Err(Rejection::TransferNotPending),
                        Some(ModelTransfer { status: Status::Posted, .. }) => Ok(None),
                        Some(ModelTransfer { status: Status::Voided, .. }) => Err(Rejection::PendingTransferAlreadyVoided),
                        Some(ModelTransfer { status: Status::Expired, .. }) => Err(Rejection::PendingTransferExpired),
                        Some(ModelTransfer { deadline_ms: Some(deadline), .. }) if now_ms >= deadline => Err(Rejection::PendingTransferExpired),
                        Some(stored) if amount.is_some_and(|amount| amount > stored.cents) => Err(Rejection::ExceedsPendingAmount),
                        Some(stored) if model.frozen[stored.debit] || model.frozen[stored.credit] => Err(Rejection::AccountFrozen),
                        Some(stored) => Ok(Some(stored)),
                    };
                    match (expected, actual) {
                        (Ok(Some(stored)), Ok(Some(record))) => {
                            let posted = amount.unwrap_or(stored.cents);
                            *model.posted.entry(stored.debit).or_default() -= posted;
                            *model.posted.entry(stored.credit).or_default() += posted;
                            model.transfers.get_mut(&number).unwrap().status = Status::Posted;
                            apply_logged(&mut state, &mut log, record);
                        }
                        (Ok(None), Ok(None)) => {}
                        // A re-post naming a different amount than was posted.
                        (Ok(None), Err(Rejection::PendingTransferAlreadyPosted)) => prop_assert!(amount.is_some()),
                        (Err(expected), Err(actual)) => prop_assert_eq!(expected, actual),
                        (expected, actual) => prop_assert!(false, "post: model {:?} vs engine {:?}", expected, actual),
                    }
                }
                Operation::Void { id: number } => {
                    let actual = state.ledger.void(state.book.get(&id(&format!("t{number}"))), now_ms);
                    let expected = match model.transfers.get(&number).copied() {
                        None => Err(Rejection::TransferNotFound),
                        Some(ModelTransfer { status: Status::Posted, pending: false, .. }) => Err(Rejection::TransferNotPending),
                        Some(ModelTransfer { status: Status::Posted, .. }) => Err(Rejection::PendingTransferAlreadyPosted),
                        Some(ModelTransfer { status: Status::Voided, .. }) => Ok(false),
                        Some(ModelTransfer { status: Status::Expired, .. }) => Err(Rejection::PendingTransferExpired),
                        Some(ModelTransfer { deadline_ms: Some(deadline), .. }) if now_ms >= deadline => Err(Rejection::PendingTransferExpired),
                        Some(_) => Ok(true),
                    };
                    match (expected, actual) {
                        (Ok(true), Ok(Some(record))) => {
                            model.transfers.get_mut(&number).unwrap().status = Status::Voided;
                            apply_logged(&mut state, &mut log, record);
                        }
                        (Ok(false), Ok(None)) => {}
                        (Err(expected), Err(actual)) => prop_assert_eq!(expected, actual),
                        (expected, actual) => prop_assert!(false, "void: model {:?} vs engine {:?}", expected, actual),
                    }
                }
                Operation::Freeze { account, frozen } => {
                    model.frozen[account] = frozen;
                    apply_logged(&mut state, &mut log, Record::SetFrozen { account: id(ACCOUNTS[account]), frozen });
                }
                Operation::AdvanceSeconds(seconds) => {
                    now_ms += seconds * 1000;
                    for record in state.ledger.expire(now_ms) {
                        apply_logged(&mut state, &mut log, record);
                    }
                    for stored in model.transfers.values_mut() {
                        if stored.status == Status::Pending && stored.deadline_ms.is_some_and(|deadline| now_ms >= deadline) {
                            stored.status = Status::Expired;
                        }
                    }
                }
                Operation::Restart => {
                    prop_assert_eq!(&replay(&log), &state);
                }
            }
            state.ledger.check_invariants().map_err(|violation| TestCaseError::fail(violation.to_string()))?;
            // The open holds are exactly the book's pending transfers.
            let pending = state.book.transfers.values().filter(|transfer| transfer.status == engine::TransferStatus::Pending).count();
            prop_assert_eq!(pending, state.ledger.open_holds.len());
            for (index, name) in ACCOUNTS.iter().enumerate() {
                let account = &state.ledger.accounts[&id(name)];
                prop_assert_eq!(account.balance(), cents(model.posted.get(&index).copied().unwrap_or(0)), "balance of {}", name);
                prop_assert_eq!(account.pending_debits, cents(model.held_debits(index)), "pending debits of {}", name);
                prop_assert_eq!(account.frozen, model.frozen[index]);
            }
        }
        prop_assert_eq!(&replay(&log), &state);
    }
}
