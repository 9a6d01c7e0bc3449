//! Shared pieces of ledgerd's benchmarks and crash tests: booting a ledger in-process on a
//! data dir (recovery, committer, actors) without HTTP.

use std::path::Path;

use actors::{AccountRequest, LedgerHandle, LedgerSettings, system_clock};
use engine::{Currency, Id, Overdraft, TransferRequest};
use snapshots::{Committer, CommitterSettings, WalError};

/// A ledger running in this process.
pub struct InProcess {
    pub handle: LedgerHandle,
    pub committer: std::thread::JoinHandle<Result<(), WalError>>,
    pub recovered_seq: u64,
}

/// Recovers `data_dir` and starts the committer and the actors on it.
pub async fn start(data_dir: &Path, shards: usize) -> anyhow::Result<InProcess> {
    let recovered = snapshots::recover(data_dir, |_| {})?;
    let recovered_seq = recovered.ledger.last_seq;
    let settings =
        CommitterSettings { group_records_max: 16_384, group_bytes_max: 4 << 20, queue_records_max: 1 << 20 };
    let (commit, committer) = Committer::start(recovered.wal, recovered_seq + 1, settings);
    let settings =
        LedgerSettings { shards, max_in_flight_transfers: 1 << 20, expiry_tick_ms: 100, clock: system_clock() };
    let handle = LedgerHandle::start(settings, recovered.ledger, commit).await?;
    Ok(InProcess { handle, committer, recovered_seq })
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
