//! Shared test scaffolding: boot a ledger on a data dir (recovery, committer, actors) and stop
//! it cleanly, with a clock the test controls.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use actors::{AccountRequest, Clock, LedgerHandle, LedgerSettings};
use engine::{Amount, Currency, Id, Overdraft, TransferRequest, WrittenAmount};
use snapshots::{Committer, CommitterSettings};

pub struct Node {
    pub handle: LedgerHandle,
    committer: Option<std::thread::JoinHandle<Result<(), snapshots::WalError>>>,
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

pub async fn boot(dir: &Path, shards: usize, clock: Clock) -> Node {
    let recovered = snapshots::recover(dir, |_| {}).expect("recovery succeeds");
    let next_seq = recovered.ledger.last_seq + 1;
    let settings = CommitterSettings { group_records_max: 4096, group_bytes_max: 4 << 20, queue_records_max: 1 << 20 };
    let (commit, committer) = Committer::start(recovered.wal, next_seq, settings);
    let settings = LedgerSettings { shards, max_in_flight_transfers: 100_000, expiry_tick_ms: 10, clock };
    let handle = LedgerHandle::start(settings, recovered.ledger, commit).await.expect("actors start");
    Node { handle, committer: Some(committer), dir: dir.to_path_buf() }
}

impl Node {
    pub async fn stop(mut self) {
        self.handle.shutdown().await;
        let committer = self.committer.take().expect("stopped once");
        tokio::task::spawn_blocking(move || {
            committer.join().expect("committer thread").expect("committer ends cleanly")
        })
        .await
        .expect("join");
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

/// Replays the data dir offline and checks every invariant.
pub fn recovered_ledger(dir: &Path) -> engine::Ledger {
    let recovered = snapshots::recover(dir, |_| {}).expect("recovery succeeds");
    recovered.ledger.check_invariants().expect("invariants hold after recovery");
    recovered.ledger
}
