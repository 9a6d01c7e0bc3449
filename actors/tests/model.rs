//! The live, sharded path against the reference engine.
//!
//! Random operation sequences run through `LedgerHandle` (one shard, where conversations run
//! inline, or three, where they cross actors) and through `engine::Ledger`'s reference
//! decisions with a book of every transfer. Every outcome must be the same, account and
//! transfer state must be the same after every step (transfers read through the live handle,
//! from the shards' memory or the history on disk), and a restart step stops the node and
//! recovers it from its log, which must give the same state again: after a clean stop, and
//! after a stop that leaves the history behind the log (as a crash between the log's last write
//! and the history's next checkpoint does).

mod common;

use common::{ManualClock, boot, cents, id, usd, written};
use engine::ledger::TransferDecision;
use engine::{Ledger, Overdraft, Record, TransferBook, TransferRequest};
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
    RestartWithHistoryBehind,
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0_u8..10, 0_usize..4, 0_usize..4, 1_i64..3_000, any::<bool>(), prop_oneof![Just(0_u64), 1_u64..4])
            .prop_map(|(id, debit, credit, cents, pending, timeout_seconds)| Operation::Transfer {
                id, debit, credit, cents, pending, timeout_seconds: if pending { timeout_seconds } else { 0 },
            }),
        2 => (0_u8..10, proptest::option::of(1_i64..3_000)).prop_map(|(id, cents)| Operation::Post { id, cents }),
        1 => (0_u8..10).prop_map(|id| Operation::Void { id }),
        1 => (0_usize..4, any::<bool>()).prop_map(|(account, frozen)| Operation::Freeze { account, frozen }),
        1 => (1_i64..3).prop_map(Operation::AdvanceSeconds),
        1 => Just(Operation::Restart),
        1 => Just(Operation::RestartWithHistoryBehind),
    ]
}

/// The reference: the ledger's reference decisions over the book of every transfer.
#[derive(Default)]
struct Reference {
    ledger: Ledger,
    book: TransferBook,
}

fn apply(reference: &mut Reference, record: Record) {
    let seq = reference.ledger.last_seq + 1;
    reference.ledger.apply(seq, &record).expect("reference applies");
    reference.book.apply(seq, &record).expect("the book applies");
}

/// Compares what a client can see: balances, holds, flags, transfer statuses.
fn assert_same_state(live: &Ledger, history: &history::History, reference: &Reference) -> Result<(), TestCaseError> {
    let reference_book = &reference.book;
    let reference = &reference.ledger;
    for name in ACCOUNTS {
        let (live_account, reference_account) = (&live.accounts[&id(name)], &reference.accounts[&id(name)]);
        prop_assert_eq!(live_account.debits_posted, reference_account.debits_posted, "debits of {}", name);
        prop_assert_eq!(live_account.credits_posted, reference_account.credits_posted, "credits of {}", name);
        prop_assert_eq!(live_account.pending_debits, reference_account.pending_debits, "pending debits of {}", name);
        prop_assert_eq!(live_account.pending_credits, reference_account.pending_credits, "pending credits of {}", name);
        prop_assert_eq!(live_account.frozen, reference_account.frozen);
        prop_assert_eq!(live_account.version, reference_account.version, "version of {}", name);
    }
    prop_assert_eq!(&live.open_holds, &reference.open_holds);
    for (transfer_id, transfer) in &reference_book.transfers {
        let stored = history.transfer(transfer_id).unwrap();
        prop_assert_eq!(stored.as_deref(), Some(&**transfer), "transfer {} in the history", transfer_id);
    }
    Ok(())
}

/// Every transfer read through the live handle equals the reference's.
async fn assert_same_transfers(handle: &actors::LedgerHandle, reference: &Reference) -> Result<(), TestCaseError> {
    for (transfer_id, transfer) in &reference.book.transfers {
        let live = handle.transfer(transfer_id).await.unwrap();
        prop_assert_eq!(&*live, &**transfer, "transfer {} read live", transfer_id);
    }
    Ok(())
}

async fn run(shards: usize, operations: Vec<Operation>) -> Result<(), TestCaseError> {
    let directory = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut node = boot(directory.path(), shards, clock.clock()).await;
    let mut reference = Reference::default();
    for (index, name) in ACCOUNTS.iter().enumerate() {
        let overdraft = if index == 0 { Overdraft::Unlimited } else { Overdraft::Limited(engine::Amount::ZERO) };
        let (account, created) = node.handle.create_account(common::account(name, overdraft)).await.unwrap();
        prop_assert!(created);
        apply(
            &mut reference,
            Record::CreateAccount {
                id: account.id.clone(),
                currency: usd(),
                overdraft,
                metadata: Default::default(),
                created_at_ms: account.created_at_ms,
            },
        );
    }
    for operation in operations {
        let now_ms = clock.now_ms();
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
                let expected = reference.ledger.create_transfer(&request, reference.book.get(&request.id), now_ms);
                let actual = node.handle.create_transfer(request).await;
                match (expected, actual) {
                    (Ok(TransferDecision::New(record)), Ok((transfer, true))) => {
                        prop_assert_eq!(transfer.amount, cents(amount));
                        apply(&mut reference, record);
                    }
                    (Ok(TransferDecision::Replay(stored)), Ok((transfer, false))) => {
                        prop_assert_eq!(&stored.id, &transfer.id)
                    }
                    (Err(expected), Err(actors::LedgerError::Rejected(actual))) => prop_assert_eq!(expected, actual),
                    (expected, actual) => {
                        prop_assert!(false, "transfer: reference {:?} vs live {:?}", expected, actual)
                    }
                }
            }
            Operation::Post { id: number, cents: amount } => {
                let transfer_id = id(&format!("t{number}"));
                let amount = amount.map(written);
                let expected = reference.ledger.post(reference.book.get(&transfer_id), amount.as_ref(), now_ms);
                let actual = node.handle.post_transfer(&transfer_id, amount).await;
                match (expected, actual) {
                    (Ok(Some(record)), Ok(_)) => apply(&mut reference, record),
                    (Ok(None), Ok(_)) => {}
                    (Err(expected), Err(actors::LedgerError::Rejected(actual))) => prop_assert_eq!(expected, actual),
                    (expected, actual) => prop_assert!(false, "post: reference {:?} vs live {:?}", expected, actual),
                }
            }
            Operation::Void { id: number } => {
                let transfer_id = id(&format!("t{number}"));
                let expected = reference.ledger.void(reference.book.get(&transfer_id), now_ms);
                let actual = node.handle.void_transfer(&transfer_id).await;
                match (expected, actual) {
                    (Ok(Some(record)), Ok(_)) => apply(&mut reference, record),
                    (Ok(None), Ok(_)) => {}
                    (Err(expected), Err(actors::LedgerError::Rejected(actual))) => prop_assert_eq!(expected, actual),
                    (expected, actual) => prop_assert!(false, "void: reference {:?} vs live {:?}", expected, actual),
                }
            }
            Operation::Freeze { account, frozen } => {
                let before = reference.ledger.accounts[&id(ACCOUNTS[account])].frozen;
                node.handle.set_frozen(&id(ACCOUNTS[account]), frozen).await.unwrap();
                if before != frozen {
                    apply(&mut reference, Record::SetFrozen { account: id(ACCOUNTS[account]), frozen });
                }
            }
            Operation::AdvanceSeconds(seconds) => {
                clock.advance_ms(seconds * 1000);
                let due = reference.ledger.expire(clock.now_ms());
                // Wait (bounded) until the live expiry has released every due hold.
                let mut expired_at = Vec::with_capacity(due.len());
                for record in due {
                    let Record::ExpirePending { transfer, .. } = &record else { unreachable!() };
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    loop {
                        let live = node.handle.transfer(transfer).await.unwrap();
                        if live.status == engine::TransferStatus::Expired {
                            expired_at.push((live.last_seq, record));
                            break;
                        }
                        prop_assert!(std::time::Instant::now() < deadline, "hold {} did not expire", transfer);
                        tokio::task::yield_now().await;
                    }
                }
                // Holds due at the same tick may expire in any order (each shard expires its
                // own by deadline); the reference takes the order the live ledger wrote.
                expired_at.sort_by_key(|(seq, _)| *seq);
                for (_, record) in expired_at {
                    apply(&mut reference, record);
                }
            }
            restart @ (Operation::Restart | Operation::RestartWithHistoryBehind) => {
                assert_same_transfers(&node.handle, &reference).await?;
                if matches!(restart, Operation::Restart) {
                    node.stop().await;
                } else {
                    node.stop_leaving_history_behind().await;
                }
                let (recovered, history) = common::recovered(directory.path());
                assert_same_state(&recovered, &history, &reference)?;
                drop(history);
                node = boot(directory.path(), shards, clock.clock()).await;
            }
        }
        for name in ACCOUNTS {
            let live = node.handle.account(&id(name)).await.unwrap();
            let expected = &reference.ledger.accounts[&id(name)];
            prop_assert_eq!(live.balance(), expected.balance(), "balance of {}", name);
            prop_assert_eq!(live.pending_debits, expected.pending_debits, "pending debits of {}", name);
            prop_assert_eq!(live.pending_credits, expected.pending_credits, "pending credits of {}", name);
            prop_assert_eq!(live.version, expected.version, "version of {}", name);
        }
        reference.ledger.check_invariants().map_err(|violation| TestCaseError::fail(violation.to_string()))?;
    }
    assert_same_transfers(&node.handle, &reference).await?;
    node.stop().await;
    let (recovered, history) = common::recovered(directory.path());
    assert_same_state(&recovered, &history, &reference)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn live_shards_agree_with_the_reference(
        shards in prop_oneof![Just(1_usize), Just(3_usize)],
        operations in proptest::collection::vec(operation(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(shards, operations))?;
    }
}
