//! Test helpers: records, groups, and random valid operation sequences built with the
//! engine's reference operations.

use engine::account::{Metadata, Overdraft};
use engine::amount::{Amount, Currency, WrittenAmount};
use engine::id::Id;
use engine::ledger::{Ledger, TransferBook, TransferDecision};
use engine::record::{Group, Record};
use engine::transfer::TransferRequest;

pub fn id(text: &str) -> Id {
    Id::parse_internal(text).unwrap()
}

pub fn usd() -> Currency {
    Currency::new("USD", 2)
}

/// A posted transfer record named `name` (not necessarily applicable to a ledger).
pub fn transfer_record_named(name: &str) -> Record {
    Record::CreateTransfer {
        id: id(name),
        debit_account: id("acct-a"),
        credit_account: id("acct-b"),
        amount: Amount::from_minor_units(1000),
        currency: usd(),
        pending: false,
        timeout_seconds: 0,
        description: String::new(),
        metadata: Metadata::new(),
        created_at_ms: 1_700_000_000_000,
    }
}

pub fn transfer_record(number: u64) -> Record {
    transfer_record_named(&format!("t-{number}"))
}

/// A group of `count` transfer records starting at `first_seq`.
pub fn group_of(first_seq: u64, count: usize) -> Group {
    Group::new(first_seq, (0..count as u64).map(|offset| transfer_record(first_seq + offset)).collect())
}

/// One step of a random operation sequence.
#[derive(Debug, Clone)]
pub enum Op {
    CreateAccount { name: u8, unlimited: bool, currency: bool },
    Transfer { debit: u8, credit: u8, cents: u32, pending: bool },
    Post { transfer: u16, part: bool },
    Void { transfer: u16 },
    Expire,
    Freeze { account: u8, frozen: bool },
    External { key: u8, payload: Vec<u8> },
}

/// Turns random operations into the records the reference operations decide, applying
/// each to `ledger` (and to the book of every transfer); refused operations produce nothing.
pub fn records_for(ops: &[Op], ledger: &mut Ledger) -> Vec<Record> {
    records_with_book(ops, ledger, &mut TransferBook::default())
}

/// [`records_for`], keeping `book` (which holds the transfers `ledger` has seen) too.
pub fn records_with_book(ops: &[Op], ledger: &mut Ledger, book: &mut TransferBook) -> Vec<Record> {
    let mut records = Vec::new();
    let mut transfers: Vec<Id> = book.transfers.keys().cloned().collect();
    transfers.sort();
    let mut now_ms = 1_700_000_000_000_i64;
    for op in ops {
        now_ms += 1000;
        let record = match op {
            Op::CreateAccount { name, unlimited, currency } => {
                let account = id(&format!("acct-{name}"));
                if ledger.accounts.contains_key(&account) {
                    None
                } else {
                    let overdraft = if *unlimited { Overdraft::Unlimited } else { Overdraft::Limited(Amount::ZERO) };
                    let currency = if *currency { usd() } else { Currency::new("EUR", 2) };
                    let metadata: Metadata = [("n".to_owned(), name.to_string())].into();
                    Some(Record::CreateAccount { id: account, currency, overdraft, metadata, created_at_ms: now_ms })
                }
            }
            Op::Transfer { debit, credit, cents, pending } => {
                let request = TransferRequest {
                    id: id(&format!("t-{}", ledger.last_seq + 1)),
                    debit_account: id(&format!("acct-{debit}")),
                    credit_account: id(&format!("acct-{credit}")),
                    amount: WrittenAmount::from_minor_units(u128::from(*cents) + 1, 2),
                    pending: *pending,
                    timeout_seconds: if *pending && cents % 2 == 1 { 5 } else { 0 },
                    description: "random".to_owned(),
                    metadata: Metadata::new(),
                };
                match ledger.create_transfer(&request, book.get(&request.id), now_ms) {
                    Ok(TransferDecision::New(record)) => Some(record),
                    _ => None,
                }
            }
            Op::Post { transfer, part } => {
                transfers.get(usize::from(*transfer) % transfers.len().max(1)).and_then(|transfer| {
                    let amount = book.get(transfer).map(|stored| {
                        let units = stored.amount.minor_units().unsigned_abs();
                        WrittenAmount::from_minor_units(if *part { units / 2 } else { units }, 2)
                    });
                    ledger.post(book.get(transfer), amount.as_ref(), now_ms).ok().flatten()
                })
            }
            Op::Void { transfer } => transfers
                .get(usize::from(*transfer) % transfers.len().max(1))
                .and_then(|transfer| ledger.void(book.get(transfer), now_ms).ok().flatten()),
            Op::Expire => ledger.expire(now_ms).into_iter().next(),
            Op::Freeze { account, frozen } => {
                let account = id(&format!("acct-{account}"));
                ledger.accounts.contains_key(&account).then_some(Record::SetFrozen { account, frozen: *frozen })
            }
            Op::External { key, payload } => {
                Some(Record::External { kind: "deposit".to_owned(), key: key.to_string(), payload: payload.clone() })
            }
        };
        if let Some(record) = record {
            if let Record::CreateTransfer { id, .. } = &record {
                transfers.push(id.clone());
            }
            let seq = ledger.last_seq + 1;
            ledger.apply(seq, &record).unwrap();
            book.apply(seq, &record).unwrap();
            records.push(record);
        }
    }
    ledger.check_invariants().unwrap();
    records
}

/// Accounts for random operations to work on: two unlimited sources, three limited USD
/// accounts, one EUR account.
pub fn prelude() -> Vec<Op> {
    let mut ops: Vec<Op> = (0..5).map(|name| Op::CreateAccount { name, unlimited: name < 2, currency: true }).collect();
    ops.push(Op::CreateAccount { name: 5, unlimited: false, currency: false });
    ops
}

/// Random operations, preceded by [`prelude`].
pub fn ops_strategy(len: std::ops::Range<usize>) -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    use proptest::prelude::*;
    prop::collection::vec(op_strategy(), len).prop_map(|ops| prelude().into_iter().chain(ops).collect())
}

pub fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        1 => (0..8_u8, any::<bool>(), prop::bool::weighted(0.8)).prop_map(|(name, unlimited, currency)| Op::CreateAccount { name, unlimited, currency }),
        8 => (0..6_u8, 0..6_u8, 0..50_000_u32, any::<bool>()).prop_map(|(debit, credit, cents, pending)| Op::Transfer { debit, credit, cents, pending }),
        2 => (any::<u16>(), any::<bool>()).prop_map(|(transfer, part)| Op::Post { transfer, part }),
        1 => any::<u16>().prop_map(|transfer| Op::Void { transfer }),
        1 => Just(Op::Expire),
        1 => (0..6_u8, prop::bool::weighted(0.3)).prop_map(|(account, frozen)| Op::Freeze { account, frozen }),
        1 => (0..4_u8, prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(key, payload)| Op::External { key, payload }),
    ]
}

/// A small ledger with accounts, posted and pending transfers, and external facts.
pub fn sample_ledger() -> (Ledger, Vec<Record>) {
    let ops = vec![
        Op::CreateAccount { name: 0, unlimited: true, currency: true },
        Op::CreateAccount { name: 1, unlimited: false, currency: true },
        Op::CreateAccount { name: 2, unlimited: false, currency: true },
        Op::Transfer { debit: 0, credit: 1, cents: 10_000, pending: false },
        Op::Transfer { debit: 1, credit: 2, cents: 2_500, pending: true },
        Op::Transfer { debit: 1, credit: 2, cents: 100, pending: true },
        Op::Post { transfer: 1, part: true },
        Op::External { key: 1, payload: vec![1, 2, 3] },
        Op::Freeze { account: 2, frozen: true },
    ];
    let mut ledger = Ledger::default();
    let records = records_for(&ops, &mut ledger);
    (ledger, records)
}
