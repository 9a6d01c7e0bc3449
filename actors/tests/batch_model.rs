//! Batches on the live, sharded path against the reference engine applying the same items one
//! after another in index order.
//!
//! Random batches over a few accounts and a small pool of transfer ids (so that items share
//! accounts, chain on each other, and repeat ids inside a batch and across batches), on one,
//! two or three shards, in-order and atomic. Every item's result must be what sequential
//! application gives; an atomic batch with a rejected item must report the first rejected item
//! (in index order) with its code, every other item `batch_aborted`, and change nothing. The
//! state after each batch, and after recovery from the log, must equal the reference.

mod common;

use actors::BatchItemResult;
use common::{boot, id, usd, written};
use engine::ledger::TransferDecision;
use engine::{Ledger, Overdraft, Record, Rejection, TransferBook, TransferRequest};
use proptest::prelude::*;

const ACCOUNTS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
struct Item {
    id: u8,
    debit: usize,
    credit: usize,
    cents: i64,
    pending: bool,
}

#[derive(Debug, Clone)]
struct Batch {
    items: Vec<Item>,
    atomic: bool,
}

fn item() -> impl Strategy<Value = Item> {
    (0_u8..24, 0_usize..5, 0_usize..5, 1_i64..2_000, proptest::bool::weighted(0.2))
        .prop_map(|(id, debit, credit, cents, pending)| Item { id, debit, credit, cents, pending })
}

fn batch() -> impl Strategy<Value = Batch> {
    (proptest::collection::vec(item(), 1..30), proptest::bool::weighted(0.3))
        .prop_map(|(items, atomic)| Batch { items, atomic })
}

fn request(item: &Item) -> TransferRequest {
    TransferRequest {
        id: id(&format!("t{}", item.id)),
        debit_account: id(ACCOUNTS[item.debit]),
        credit_account: id(ACCOUNTS[item.credit]),
        amount: written(item.cents),
        pending: item.pending,
        timeout_seconds: 0,
        description: String::new(),
        metadata: Default::default(),
    }
}

/// What a result comes to, for comparison: the code, and for a creation the amount.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Created(engine::Amount),
    Exists,
    Rejected(Rejection),
}

fn summary(result: &BatchItemResult) -> Expected {
    match result {
        BatchItemResult::Created(transfer) => Expected::Created(transfer.amount),
        BatchItemResult::Exists(_) => Expected::Exists,
        BatchItemResult::Rejected(rejection) => Expected::Rejected(*rejection),
    }
}

/// The reference: decisions of the ledger over the book of every transfer.
#[derive(Clone, Default)]
struct Reference {
    ledger: Ledger,
    book: TransferBook,
}

fn apply(reference: &mut Reference, record: &Record) {
    let seq = reference.ledger.last_seq + 1;
    reference.ledger.apply(seq, record).expect("the reference applies its own decision");
    reference.book.apply(seq, record).expect("the book applies its own decision");
}

/// The reference results of `requests`, applied one after another at `now_ms`; an atomic
/// batch is applied only if no item is rejected.
fn reference_results(
    reference: &mut Reference,
    requests: &[TransferRequest],
    atomic: bool,
    now_ms: i64,
) -> Vec<Expected> {
    let mut trial = if atomic { reference.clone() } else { Reference::default() };
    let target = if atomic { &mut trial } else { &mut *reference };
    let mut results = Vec::with_capacity(requests.len());
    let mut first_rejected = None;
    for (index, request) in requests.iter().enumerate() {
        match target.ledger.create_transfer(request, target.book.get(&request.id), now_ms) {
            Ok(TransferDecision::New(record)) => {
                let Record::CreateTransfer { amount, .. } = &record else { unreachable!("a creation record") };
                results.push(Expected::Created(*amount));
                apply(target, &record);
            }
            Ok(TransferDecision::Replay(_)) => results.push(Expected::Exists),
            Err(rejection) => {
                results.push(Expected::Rejected(rejection));
                if atomic {
                    first_rejected = Some(index);
                    break;
                }
            }
        }
    }
    if !atomic {
        return results;
    }
    match first_rejected {
        Some(failed) => {
            (0..requests.len())
                .map(|index| {
                    if index == failed { results[failed].clone() } else { Expected::Rejected(Rejection::BatchAborted) }
                })
                .collect()
        }
        None => {
            *reference = trial;
            results
        }
    }
}

async fn run(shards: usize, batches: Vec<Batch>) -> Result<(), TestCaseError> {
    let directory = tempfile::tempdir().unwrap();
    let clock = common::ManualClock::new();
    let node = boot(directory.path(), shards, clock.clock()).await;
    let mut reference = Reference::default();
    for (index, name) in ACCOUNTS.iter().enumerate() {
        // Two accounts may go negative without bound, so that money enters the others.
        let overdraft = if index < 2 { Overdraft::Unlimited } else { Overdraft::Limited(engine::Amount::ZERO) };
        let (account, _) = node.handle.create_account(common::account(name, overdraft)).await.unwrap();
        apply(
            &mut reference,
            &Record::CreateAccount {
                id: account.id.clone(),
                currency: usd(),
                overdraft,
                metadata: Default::default(),
                created_at_ms: account.created_at_ms,
            },
        );
    }
    for batch in batches {
        let requests: Vec<TransferRequest> = batch.items.iter().map(request).collect();
        let expected = reference_results(&mut reference, &requests, batch.atomic, clock.now_ms());
        let actual = node.handle.create_batch(requests, batch.atomic).await.unwrap();
        let actual: Vec<Expected> = actual.iter().map(summary).collect();
        prop_assert_eq!(&actual, &expected, "shards {}, atomic {}", shards, batch.atomic);
        for name in ACCOUNTS {
            let live = node.handle.account(&id(name)).await.unwrap();
            let wanted = &reference.ledger.accounts[&id(name)];
            prop_assert_eq!(live.balance(), wanted.balance(), "balance of {}", name);
            prop_assert_eq!(live.pending_debits, wanted.pending_debits, "pending debits of {}", name);
            prop_assert_eq!(live.pending_credits, wanted.pending_credits, "pending credits of {}", name);
        }
    }
    node.stop().await;
    let (recovered, history) = common::recovered(directory.path());
    for name in ACCOUNTS {
        let (live, wanted) = (&recovered.accounts[&id(name)], &reference.ledger.accounts[&id(name)]);
        prop_assert_eq!(live.balance(), wanted.balance(), "recovered balance of {}", name);
        prop_assert_eq!(live.pending_debits, wanted.pending_debits, "recovered pending debits of {}", name);
    }
    prop_assert_eq!(recovered.open_holds.len(), reference.ledger.open_holds.len());
    prop_assert_eq!(history.stats().transfers, u64::try_from(reference.book.transfers.len()).unwrap());
    for (transfer_id, transfer) in &reference.book.transfers {
        let stored = history.transfer(transfer_id).unwrap().expect("the history holds every transfer");
        prop_assert_eq!((stored.amount, stored.status), (transfer.amount, transfer.status));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn batches_agree_with_sequential_application(
        shards in 1_usize..4,
        batches in proptest::collection::vec(batch(), 1..8),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(shards, batches))?;
    }
}
