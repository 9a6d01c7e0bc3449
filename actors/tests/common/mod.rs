//! Shared test scaffolding: boot a ledger on a data dir (recovery, committer, actors) and stop
//! it cleanly, with a clock the test controls.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use actors::{AccountRequest, Clock, LedgerHandle, LedgerSettings, OpenLedger, OpenSettings};
use engine::{Amount, Currency, Id, Overdraft, TransferRequest, WrittenAmount};
use history::HistorySettings;
use snapshots::{CommitterSettings, Retention};

pub struct Node {
    pub handle: LedgerHandle,
    opened: OpenLedger,
    pub dir: PathBuf,
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(pub Arc<AtomicI64>);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(Arc::new(AtomicI64::new(1_800_000_000_000)))
    }
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }
    pub fn clock(&self) -> Clock {
        let time = self.0.clone();
        Arc::new(move || time.load(Ordering::SeqCst))
    }
    pub fn advance_ms(&self, milliseconds: i64) {
        self.0.fetch_add(milliseconds, Ordering::SeqCst);
    }
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A small history: frequent checkpoints, so that tests cross them.
pub fn history_settings() -> HistorySettings {
    HistorySettings { cache_bytes: 1 << 20, checkpoint_records: 64, checkpoint_interval_ms: 50 }
}

/// Opens the ledger of `dir` the way the server does.
pub async fn boot(dir: &Path, shards: usize, clock: Clock) -> Node {
    boot_with(dir, shards, clock, |_| {}).await
}

/// [`boot`], with `adjust` changing the settings first (snapshot interval, retention).
pub async fn boot_with(dir: &Path, shards: usize, clock: Clock, adjust: impl FnOnce(&mut OpenSettings)) -> Node {
    let mut settings = OpenSettings {
        data_dir: dir.to_path_buf(),
        ledger: LedgerSettings {
            shards,
            max_in_flight_transfers: 100_000,
            max_in_flight_requests: 100_000,
            expiry_tick_ms: 10,
            clock: clock.clone(),
            expiry_paused: Default::default(),
        },
        committer: CommitterSettings { group_records_max: 4096, group_bytes_max: 4 << 20, queue_records_max: 1 << 20 },
        history: history_settings(),
        snapshot_interval: std::time::Duration::ZERO,
        retention: Retention { snapshots_kept: 3, wal_retention_snapshots: 0 },
        watermark_period: std::time::Duration::from_secs(1),
        clock,
    };
    adjust(&mut settings);
    let opened = actors::open(settings, |_| {}).await.expect("the ledger opens");
    Node { handle: opened.handle.clone(), opened, dir: dir.to_path_buf() }
}

impl Node {
    pub async fn stop(self) {
        self.opened.close().await;
    }

    /// Stops with the history left at its last checkpoint (as a crash would leave it).
    pub async fn stop_leaving_history_behind(self) {
        self.opened.close_leaving_history_behind().await;
    }

    /// The open ledger (snapshots, history).
    pub fn opened(&self) -> &OpenLedger {
        &self.opened
    }
}

pub fn id(text: &str) -> Id {
    Id::parse(text).unwrap()
}

pub fn usd() -> Currency {
    Currency::new("USD", 2)
}

/// `value` cents, as a total of the ledger.
pub fn cents(value: i64) -> Amount {
    Amount::from_minor_units(i128::from(value))
}

/// `value` cents as a client writes it (`"12.34"`).
pub fn written(value: i64) -> WrittenAmount {
    WrittenAmount::from_minor_units(u128::try_from(value).expect("a positive amount"), 2)
}

pub fn account(name: &str, overdraft: Overdraft) -> AccountRequest {
    AccountRequest { id: id(name), currency: usd(), overdraft, metadata: Default::default() }
}

pub fn transfer(transfer_id: &str, debit: &str, credit: &str, cents: i64) -> TransferRequest {
    TransferRequest {
        id: id(transfer_id),
        debit_account: id(debit),
        credit_account: id(credit),
        amount: written(cents),
        pending: false,
        timeout_seconds: 0,
        description: String::new(),
        metadata: Default::default(),
    }
}

/// Replays the data dir offline and checks every invariant; with the history it recovered.
pub fn recovered(dir: &Path) -> (engine::Ledger, history::History) {
    let recovered = snapshots::recover(dir, history_settings(), |_| {}).expect("recovery succeeds");
    recovered.ledger.check_invariants().expect("invariants hold after recovery");
    recovered.history.checkpoint().expect("the history checkpoints");
    drop(recovered.history_threads);
    (recovered.ledger, recovered.history)
}

/// [`recovered`], the ledger only.
pub fn recovered_ledger(dir: &Path) -> engine::Ledger {
    recovered(dir).0
}
