//! The pending-transfer life cycle through the live path: post (whole and partial), void,
//! expiry, and how frozen accounts and deadlines interact with them.

mod common;

use actors::LedgerError;
use common::{ManualClock, account, boot, cents, id, transfer, written};
use engine::{Amount, Overdraft, Rejection, TransferStatus};

fn rejected(rejection: Rejection) -> LedgerError {
    LedgerError::Rejected(rejection)
}

fn hold(transfer_id: &str, debit: &str, credit: &str, cents: i64, timeout_seconds: u64) -> engine::TransferRequest {
    engine::TransferRequest { pending: true, timeout_seconds, ..transfer(transfer_id, debit, credit, cents) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_life_cycle_with_frozen_accounts_and_deadlines() {
    let directory = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let node = boot(directory.path(), 3, clock.clock()).await;
    let handle = &node.handle;
    handle.create_account(account("bank", Overdraft::Unlimited)).await.unwrap();
    handle.create_account(account("alice", Overdraft::Limited(Amount::ZERO))).await.unwrap();
    handle.create_account(account("bob", Overdraft::Limited(Amount::ZERO))).await.unwrap();
    handle.create_transfer(transfer("fund", "bank", "alice", 10_000)).await.unwrap();

    // A hold counts against available funds at once.
    handle.create_transfer(hold("h1", "alice", "bob", 6_000, 0)).await.unwrap();
    let alice = handle.account(&id("alice")).await.unwrap();
    assert_eq!((alice.balance(), alice.available()), (cents(10_000), cents(4_000)));
    assert_eq!(
        handle.create_transfer(transfer("too-much", "alice", "bob", 4_001)).await,
        Err(rejected(Rejection::InsufficientFunds))
    );

    // Frozen on either side: no post; void still works.
    for frozen in ["alice", "bob"] {
        handle.set_frozen(&id(frozen), true).await.unwrap();
        assert_eq!(handle.post_transfer(&id("h1"), None).await, Err(rejected(Rejection::AccountFrozen)), "{frozen}");
        handle.set_frozen(&id(frozen), false).await.unwrap();
    }
    handle.set_frozen(&id("alice"), true).await.unwrap();
    assert_eq!(
        handle.create_transfer(transfer("x", "bank", "alice", 1)).await,
        Err(rejected(Rejection::AccountFrozen))
    );
    let voided = handle.void_transfer(&id("h1")).await.unwrap();
    assert_eq!(voided.status, TransferStatus::Voided);
    assert_eq!(handle.void_transfer(&id("h1")).await.unwrap().status, TransferStatus::Voided, "void is idempotent");
    assert_eq!(handle.post_transfer(&id("h1"), None).await, Err(rejected(Rejection::PendingTransferAlreadyVoided)));
    handle.set_frozen(&id("alice"), false).await.unwrap();

    // Partial post releases the rest; re-post with the same amount replays, another conflicts.
    handle.create_transfer(hold("h2", "alice", "bob", 5_000, 0)).await.unwrap();
    assert_eq!(
        handle.post_transfer(&id("h2"), Some(written(5_001))).await,
        Err(rejected(Rejection::ExceedsPendingAmount))
    );
    let posted = handle.post_transfer(&id("h2"), Some(written(2_000))).await.unwrap();
    assert_eq!((posted.status, posted.posted_amount), (TransferStatus::Posted, cents(2_000)));
    assert_eq!(handle.post_transfer(&id("h2"), Some(written(2_000))).await.unwrap().seq, posted.seq);
    assert_eq!(
        handle.post_transfer(&id("h2"), Some(written(1_000))).await,
        Err(rejected(Rejection::PendingTransferAlreadyPosted))
    );
    assert_eq!(handle.void_transfer(&id("h2")).await, Err(rejected(Rejection::PendingTransferAlreadyPosted)));
    assert_eq!(handle.post_transfer(&id("fund"), None).await, Err(rejected(Rejection::TransferNotPending)));
    let alice = handle.account(&id("alice")).await.unwrap();
    assert_eq!((alice.balance(), alice.pending_debits), (cents(8_000), Amount::ZERO));

    // Past the deadline, post and void answer expired even before the release has run, and
    // the release itself comes with the next expiry tick, even on a frozen account.
    handle.create_transfer(hold("h3", "alice", "bob", 1_000, 5)).await.unwrap();
    handle.set_frozen(&id("alice"), true).await.unwrap();
    clock.advance_ms(5_000);
    assert_eq!(handle.post_transfer(&id("h3"), None).await, Err(rejected(Rejection::PendingTransferExpired)));
    assert_eq!(handle.void_transfer(&id("h3")).await, Err(rejected(Rejection::PendingTransferExpired)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while handle.transfer(&id("h3")).await.unwrap().status != TransferStatus::Expired {
        assert!(std::time::Instant::now() < deadline, "the hold was not released");
        tokio::task::yield_now().await;
    }
    let bob = handle.account(&id("bob")).await.unwrap();
    assert_eq!((bob.balance(), bob.pending_credits), (cents(2_000), Amount::ZERO));
    node.stop().await;
    let (ledger, history) = common::recovered(directory.path());
    assert!(!ledger.open_holds.contains_key(&id("h3")));
    let stored = history.transfer(&id("h3")).unwrap().expect("the history holds every transfer");
    assert_eq!(stored.status, TransferStatus::Expired, "expiry is durable");
}
