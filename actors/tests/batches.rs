//! Batches: in-order semantics, atomic all-or-nothing, and concurrency with single transfers.

mod common;

use actors::{BatchItemResult, LedgerError, system_clock};
use common::{account, boot, cents, id, recovered_ledger, transfer};
use engine::{Amount, Overdraft, Rejection};

fn limited() -> Overdraft {
    Overdraft::Limited(Amount::ZERO)
}

async fn open(node: &common::Node, names: &[&str]) {
    node.handle.create_account(account("bank", Overdraft::Unlimited)).await.unwrap();
    for name in names {
        node.handle.create_account(account(name, limited())).await.unwrap();
    }
}

fn code(result: &BatchItemResult) -> &'static str {
    match result {
        BatchItemResult::Created(_) => "created",
        BatchItemResult::Exists(_) => "exists",
        BatchItemResult::Rejected(rejection) => rejection.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_items_see_earlier_items() {
    let directory = tempfile::tempdir().unwrap();
    let node = boot(directory.path(), 4, system_clock()).await;
    open(&node, &["bob", "carol", "dave"]).await;
    let batch = vec![
        transfer("t1", "bank", "bob", 10_000),
        transfer("t2", "bob", "carol", 6_000),
        transfer("t3", "bob", "dave", 5_000),
        transfer("t4", "carol", "dave", 6_000),
        transfer("t1", "bank", "bob", 10_000),
        transfer("t1", "bank", "bob", 1),
    ];
    let results = node.handle.create_batch(batch, false).await.unwrap();
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(
        codes,
        ["created", "created", "insufficient_funds", "created", "exists", "exists_with_different_fields"]
    );
    assert_eq!(node.handle.account(&id("bob")).await.unwrap().balance(), cents(4_000));
    assert_eq!(node.handle.account(&id("dave")).await.unwrap().balance(), cents(6_000));
    // Sequences follow index order for dependent items.
    let seq = |index: usize| match &results[index] {
        BatchItemResult::Created(transfer) => transfer.seq,
        other => panic!("{other:?}"),
    };
    assert!(seq(0) < seq(1) && seq(1) < seq(3));
    node.stop().await;
    assert_eq!(common::recovered(directory.path()).1.stats().transfers, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_batch_is_all_or_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let node = boot(directory.path(), 4, system_clock()).await;
    open(&node, &["bob", "carol"]).await;
    let batch = vec![
        transfer("a1", "bank", "bob", 10_000),
        transfer("a2", "bob", "carol", 15_000),
        transfer("a3", "bank", "carol", 1),
    ];
    let results = node.handle.create_batch(batch, true).await.unwrap();
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(codes, ["batch_aborted", "insufficient_funds", "batch_aborted"]);
    for name in ["bob", "carol", "bank"] {
        let account = node.handle.account(&id(name)).await.unwrap();
        assert!(account.balance().is_zero(), "{name} changed");
        assert!(account.pending_debits.is_zero());
    }
    assert_eq!(node.handle.transfer(&id("a1")).await, Err(LedgerError::Rejected(Rejection::TransferNotFound)));
    // The ids of an aborted batch are free again; spending the batch's own credit works.
    let batch = vec![
        transfer("a1", "bank", "bob", 10_000),
        transfer("a2", "bob", "carol", 6_000),
        transfer("a1", "bank", "bob", 10_000),
    ];
    let results = node.handle.create_batch(batch, true).await.unwrap();
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(codes, ["created", "created", "exists"]);
    let (BatchItemResult::Created(first), BatchItemResult::Created(second)) = (&results[0], &results[1]) else {
        unreachable!()
    };
    assert_eq!(second.seq, first.seq + 1, "an atomic batch is written as consecutive records");
    assert_eq!(node.handle.account(&id("bob")).await.unwrap().balance(), cents(4_000));
    node.stop().await;
    let ledger = recovered_ledger(directory.path());
    assert_eq!(ledger.accounts[&id("carol")].balance(), cents(6_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tentative_credits_are_not_spendable_by_others() {
    let directory = tempfile::tempdir().unwrap();
    let node = boot(directory.path(), 2, system_clock()).await;
    open(&node, &["bob", "carol"]).await;
    // Many rounds of an atomic batch crediting bob while single transfers try to spend from
    // bob: a single transfer may only succeed on committed money.
    for round in 0..50 {
        let atomic = node.handle.create_batch(
            vec![
                transfer(&format!("fund-{round}"), "bank", "bob", 100),
                transfer(&format!("fail-{round}"), "carol", "bank", 1),
            ],
            true,
        );
        let spend = node.handle.create_transfer(transfer(&format!("spend-{round}"), "bob", "carol", 100));
        let (atomic, spend) = tokio::join!(atomic, spend);
        let codes: Vec<_> = atomic.unwrap().iter().map(code).collect();
        assert_eq!(codes, ["batch_aborted", "insufficient_funds"]);
        assert_eq!(spend, Err(LedgerError::Rejected(Rejection::InsufficientFunds)), "round {round}");
    }
    node.stop().await;
    recovered_ledger(directory.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_singles_and_batches_keep_every_invariant() {
    let directory = tempfile::tempdir().unwrap();
    let node = boot(directory.path(), 4, system_clock()).await;
    let names: Vec<String> = (0..12).map(|index| format!("user-{index}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    open(&node, &name_refs).await;
    for name in &names {
        node.handle.create_transfer(transfer(&format!("seed-{name}"), "bank", name, 5_000)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for worker in 0..6_u64 {
        let handle = node.handle.clone();
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut state = worker.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for step in 0..150 {
                let pick = |value: u64| names[usize::try_from(value % names.len() as u64).unwrap()].clone();
                let (from, to) = (pick(next()), pick(next()));
                let cents = i64::try_from(next() % 3_000).unwrap() + 1;
                if step % 10 == 0 {
                    let items: Vec<_> = (0..5)
                        .map(|item| transfer(&format!("w{worker}-b{step}-{item}"), &pick(next()), &pick(next()), cents))
                        .collect();
                    let atomic = step % 20 == 0;
                    let results = handle.create_batch(items.clone(), atomic).await.unwrap();
                    for (item, result) in items.into_iter().zip(results) {
                        if let BatchItemResult::Created(created) = result {
                            acknowledged.push((item.id, created.amount));
                        }
                    }
                } else {
                    match handle.create_transfer(transfer(&format!("w{worker}-{step}"), &from, &to, cents)).await {
                        Ok((created, true)) => acknowledged.push((created.id.clone(), created.amount)),
                        Ok((_, false)) => panic!("unexpected replay"),
                        Err(LedgerError::Rejected(_)) => {}
                        Err(error) => panic!("{error}"),
                    }
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(acknowledged.len() > 100, "enough transfers went through ({})", acknowledged.len());
    node.stop().await;
    let (_, history) = common::recovered(directory.path());
    for (transfer_id, amount) in acknowledged {
        let stored = history.transfer(&transfer_id).unwrap().expect("an acknowledged transfer is stored");
        assert_eq!(stored.amount, amount, "acknowledged {transfer_id} is in the log");
    }
}
