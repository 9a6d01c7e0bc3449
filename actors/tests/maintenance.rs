//! The snapshot service of a serving ledger: snapshots taken while writes flow, retention of
//! snapshots and log, the periodic scheduler, and online backups that recover to the same
//! ledger and history.

mod common;

use std::time::{Duration, Instant};

use actors::{MaintenanceError, SnapshotService};
use common::{ManualClock, account, boot, boot_with, id, recovered, transfer};
use engine::Overdraft;
use snapshots::Retention;

/// Creates `bank` (unlimited) and `alice`.
async fn accounts(handle: &actors::LedgerHandle) {
    handle.create_account(account("bank", Overdraft::Unlimited)).await.unwrap();
    handle.create_account(account("alice", Overdraft::Limited(engine::Amount::ZERO))).await.unwrap();
}

/// Pays alice `count` transfers of 1..=count cents, ids `t-{first}`..
async fn pay(handle: &actors::LedgerHandle, first: usize, count: usize) {
    for index in first..first + count {
        let cents = i64::try_from(index).unwrap() + 1;
        handle.create_transfer(transfer(&format!("t-{index}"), "bank", "alice", cents)).await.unwrap();
    }
}

fn kept_snapshots(dir: &std::path::Path) -> Vec<u64> {
    snapshots::list_snapshots(dir).unwrap().iter().map(|info| info.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_written_once_per_seq_and_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let node = boot_with(dir.path(), 3, clock.clock(), |settings| {
        settings.retention = Retention { snapshots_kept: 2, wal_retention_snapshots: 1 };
    })
    .await;
    accounts(&node.handle).await;
    let service: &SnapshotService = &node.opened().snapshots;
    let history = node.opened().history();
    let mut taken = Vec::new();
    for round in 0..4 {
        pay(&node.handle, round * 5, 5).await;
        // The log is dropped only where the history is durable too.
        history.wait_ingested(node.handle.decided_seq()).await.unwrap();
        history.checkpoint().unwrap();
        let snapshot = service.take().await.unwrap();
        assert!(snapshot.written);
        assert_eq!(snapshot.info.seq, node.handle.decided_seq());
        assert_eq!(snapshot.info.created_at_ms, clock.now_ms());
        taken.push(snapshot);
    }
    // Nothing new: the newest snapshot is the answer and nothing is written.
    let again = service.take().await.unwrap();
    assert!(!again.written);
    assert_eq!(again.info, taken[3].info);
    assert_eq!(kept_snapshots(dir.path()), [taken[2].info.seq, taken[3].info.seq]);
    assert_eq!(taken.iter().map(|taken| taken.snapshots_removed).sum::<usize>(), 2);
    assert!(taken.iter().map(|taken| taken.log_groups_removed).sum::<u64>() > 0, "the log is trimmed");
    node.stop().await;

    let (ledger, history) = recovered(dir.path());
    assert_eq!(ledger.last_seq, 22);
    assert_eq!(ledger.accounts[&id("alice")].credits_posted, common::cents((1..=20).sum()));
    for index in 0..20 {
        assert!(history.transfer(&id(&format!("t-{index}"))).unwrap().is_some(), "t-{index} is in the history");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_transfers_flow_recover_to_the_same_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot(dir.path(), 3, ManualClock::new().clock()).await;
    accounts(&node.handle).await;
    let writer = {
        let handle = node.handle.clone();
        tokio::spawn(async move { pay(&handle, 0, 400).await })
    };
    let mut snapshots_written = 0;
    while !writer.is_finished() {
        let taken = node.opened().snapshots.take().await.unwrap();
        snapshots_written += usize::from(taken.written);
        // Every snapshot is a consistent cut: its ledger's invariants hold.
        let (info, ledger) = snapshots::read_snapshot(&taken.info.path).unwrap();
        ledger.check_invariants().unwrap();
        assert_eq!(info.seq, ledger.last_seq);
        assert!(ledger.last_seq <= node.handle.decided_seq());
    }
    writer.await.unwrap();
    assert!(snapshots_written > 0);
    let live = node.handle.account(&id("alice")).await.unwrap();
    node.stop().await;
    let (ledger, _) = recovered(dir.path());
    assert_eq!(ledger.accounts[&id("alice")].credits_posted, live.credits_posted);
    assert_eq!(live.credits_posted, common::cents((1..=400).sum()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_follows_the_log_and_stops_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot_with(dir.path(), 1, ManualClock::new().clock(), |settings| {
        settings.snapshot_interval = Duration::from_millis(20);
        settings.retention = Retention { snapshots_kept: 3, wal_retention_snapshots: 0 };
    })
    .await;
    accounts(&node.handle).await;
    for round in 0..3 {
        pay(&node.handle, round * 10, 10).await;
        let decided = node.handle.decided_seq();
        // Polls, with a deadline, until a periodic snapshot reaches what was decided.
        let deadline = Instant::now() + Duration::from_secs(20);
        while kept_snapshots(dir.path()).last().is_none_or(|seq| *seq < decided) {
            assert!(Instant::now() < deadline, "no periodic snapshot reached seq {decided}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(kept_snapshots(dir.path()).len() <= 3);
    let started = Instant::now();
    node.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "closing waited {:?}", started.elapsed());
    assert_eq!(kept_snapshots(dir.path()).last(), Some(&32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_interval_takes_no_periodic_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot(dir.path(), 1, ManualClock::new().clock()).await;
    accounts(&node.handle).await;
    pay(&node.handle, 0, 3).await;
    node.stop().await;
    assert!(kept_snapshots(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_recovers_to_the_ledger_and_history_it_copied() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let node = boot(dir.path(), 3, ManualClock::new().clock()).await;
    accounts(&node.handle).await;
    pay(&node.handle, 0, 150).await;
    // Let the history reach some of it on disk, so the copy has runs and a tail to ingest.
    node.opened().history().checkpoint().unwrap();
    pay(&node.handle, 150, 50).await;
    let destination = elsewhere.path().join("backup");
    let report = node.opened().snapshots.backup(&destination).await.unwrap();
    assert_eq!(report.snapshot.seq, 202);
    assert_eq!(report.log_range.map(|(_, last)| last), Some(202));
    assert!(report.history_seq <= 202);
    // Later writes are not in the copy.
    pay(&node.handle, 200, 1).await;
    let live_balance = node.handle.account(&id("alice")).await.unwrap().credits_posted;
    node.stop().await;

    let (copied, history) = recovered(&destination);
    assert_eq!(copied.last_seq, 202);
    assert_eq!(copied.accounts[&id("alice")].credits_posted, common::cents((1..=200).sum()));
    assert_ne!(copied.accounts[&id("alice")].credits_posted, live_balance);
    for index in 0..200 {
        assert!(history.transfer(&id(&format!("t-{index}"))).unwrap().is_some(), "t-{index} is in the copy");
    }
    assert!(history.transfer(&id("t-200")).unwrap().is_none());
    let verified = history.verify(|_, _| {}).unwrap();
    assert_eq!(verified.transfers, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_refuses_a_destination_it_could_damage() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let node = boot(dir.path(), 1, ManualClock::new().clock()).await;
    accounts(&node.handle).await;
    let service = &node.opened().snapshots;
    let not_empty = elsewhere.path().join("full");
    std::fs::create_dir_all(&not_empty).unwrap();
    std::fs::write(not_empty.join("something"), b"x").unwrap();
    for destination in [std::path::PathBuf::from("relative/backup"), dir.path().join("inside"), not_empty.clone()] {
        match service.backup(&destination).await {
            Err(MaintenanceError::Destination(reason)) => assert!(!reason.is_empty()),
            other => panic!("a backup into {} was not refused: {other:?}", destination.display()),
        }
    }
    // The refused attempts left the non-empty directory as it was and nothing inside the data dir.
    assert!(not_empty.join("something").exists());
    assert!(!dir.path().join("inside").exists());
    node.stop().await;
}
