//! Shared pieces of ledgerd's benchmarks and crash tests: opening a ledger in-process on a
//! data dir (`actors::open`: recovery, committer, history, actors) without HTTP.

use std::path::Path;
use std::time::Duration;

use actors::{AccountRequest, LedgerHandle, LedgerSettings, OpenLedger, OpenSettings, system_clock};
use engine::{Currency, Id, Overdraft, TransferRequest};
use history::HistorySettings;
use snapshots::{CommitterSettings, Retention};

/// A ledger running in this process.
pub struct InProcess {
    pub handle: LedgerHandle,
    pub opened: OpenLedger,
    pub recovered_seq: u64,
}

/// The settings the benches open a ledger with: `shards` shards, no periodic snapshot.
pub fn open_settings(data_dir: &Path, shards: usize) -> OpenSettings {
    OpenSettings {
        data_dir: data_dir.to_owned(),
        ledger: LedgerSettings {
            shards,
            max_in_flight_transfers: 1 << 20,
            max_in_flight_requests: 1 << 16,
            expiry_tick_ms: 100,
            clock: system_clock(),
            expiry_paused: Default::default(),
        },
        committer: CommitterSettings {
            group_records_max: 16_384,
            group_bytes_max: 4 << 20,
            queue_records_max: 1 << 20,
        },
        history: HistorySettings::default(),
        snapshot_interval: Duration::ZERO,
        retention: Retention { snapshots_kept: 3, wal_retention_snapshots: 0 },
        watermark_period: Duration::from_secs(1),
        clock: system_clock(),
    }
}

/// Opens `data_dir` with [`open_settings`].
pub async fn start(data_dir: &Path, shards: usize) -> anyhow::Result<InProcess> {
    start_with(open_settings(data_dir, shards)).await
}

/// Opens a ledger with `settings`.
pub async fn start_with(settings: OpenSettings) -> anyhow::Result<InProcess> {
    let opened = actors::open(settings, |_| {}).await?;
    Ok(InProcess { handle: opened.handle.clone(), recovered_seq: opened.recovery.last_seq, opened })
}

impl InProcess {
    /// Stops the ledger cleanly (everything decided written, the history checkpointed).
    pub async fn close(self) {
        self.opened.close().await;
    }
}

pub fn id(text: &str) -> Id {
    Id::parse(text).expect("a valid id")
}

/// A USD account request.
pub fn usd_account(name: &str, overdraft: Overdraft) -> AccountRequest {
    AccountRequest { id: id(name), currency: Currency::new("USD", 2), overdraft, metadata: Default::default() }
}

/// A plain USD transfer of `cents`.
pub fn usd_transfer(transfer_id: &str, debit: &str, credit: &str, cents: i64) -> TransferRequest {
    TransferRequest {
        id: id(transfer_id),
        debit_account: id(debit),
        credit_account: id(credit),
        amount: engine::WrittenAmount::from_minor_units(u128::try_from(cents).expect("a positive amount"), 2),
        pending: false,
        timeout_seconds: 0,
        description: String::new(),
        metadata: Default::default(),
    }
}

/// A small, fast, seeded generator (rand's `SmallRng`, as `ledgerd bench` uses) so that runs
/// are reproducible.
pub struct Random(rand::rngs::SmallRng);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(rand::SeedableRng::seed_from_u64(seed))
    }
    /// Uniform in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        rand::Rng::random_range(&mut self.0, 0..bound)
    }
}
