//! ledgerd's actor tree.
//!
//! Accounts are partitioned over a fixed set of shard actors (ractor on tokio): each account,
//! and each transfer id, is owned by exactly one shard, chosen by a stable hash of its id, and
//! that shard serializes every change to it without locks. A transfer is a short conversation
//! between shards (see [`shard`]): the transfer's owner checks idempotency, the debit account's
//! owner places a hold, the credit account's owner decides and hands the record to the
//! committer, then the debit side and the transfer's owner apply the decision. No actor ever
//! awaits another. [`LedgerHandle`] is the front door: it routes requests, bounds what is in
//! flight, orders batch items, and answers only once the effect is durable. Shards keep the
//! accounts, the open holds and the transfers the history has not ingested yet; the history on
//! disk answers for every other stored transfer. [`open()`] is the one way to open a ledger
//! (recovery, committer, history ingest, shards, snapshots); [`maintenance`] takes its
//! snapshots and backups.

mod batch;
mod conversation;
mod handle;
pub mod maintenance;
pub mod open;
mod owned;
mod shard;
mod supervisor;

pub use handle::{
    ADMISSION_REFUSED_TOTAL, AccountRequest, BatchItemResult, Clock, LedgerError, LedgerHandle, LedgerSettings,
    StartError, system_clock,
};
pub use maintenance::{BackupReport, MaintenanceError, SnapshotService, SnapshotTaken};
pub use open::{OpenError, OpenLedger, OpenSettings, Recovery, lock_data_dir, open, open_locked};
pub use shard::{OPEN_HOLDS, TRANSFERS_NOT_YET_IN_HISTORY};
