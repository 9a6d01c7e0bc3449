//! ledgerd's durability: the write-ahead log on sled, the group committer and its hand-off,
//! snapshot files, recovery (with point-in-time replay and restore), the log's watermark and
//! the data directory's lock.
//!
//! A data directory holds `LOCK` ([`lock`]), `wal/` (sled; [`wal`]), `snapshots/`
//! ([`snapshot`]), `history/` (the `history` crate) and `LOG_WATERMARK` ([`log_watermark`]).
//! Live, the committer thread ([`committer`]) is the only writer of the log and hands every
//! durable group to a [`DurableSink`] (the history's ingest); recovery ([`recovery`]) folds
//! the newest sound snapshot and the log after it with the same `engine::Ledger::apply` the
//! live path uses, and brings the history up to the log's end.

pub mod background_thread;
pub mod committer;
pub mod handoff;
pub mod lock;
pub mod log_watermark;
pub mod recovery;
pub mod snapshot;
#[cfg(test)]
mod testkit;
pub mod wal;

pub use background_thread::BackgroundThread;
pub use committer::{
    CommitError, CommitHandle, Committer, CommitterSettings, DurableSink, DurableState, NoSink, Storage,
};
pub use handoff::{Handoff, PushError};
pub use lock::{DataDirLock, LockError};
pub use log_watermark::{WatermarkError, WatermarkKeeper};
pub use recovery::{
    Recovered, RecoveryError, RecoveryProgress, Replayed, RestoreSource, recover, replay_data_dir, replay_to,
    restore_into,
};
pub use snapshot::{
    EncodedItems, Retained, Retention, SnapshotContents, SnapshotError, SnapshotInfo, apply_retention, list_snapshots,
    prune, read_snapshot, read_snapshot_info, snapshot_files, snapshot_path, snapshot_path_for_id, snapshots_dir,
    write_ledger_snapshot, write_snapshot,
};
pub use wal::{EncodedGroup, GroupIter, Wal, WalError};
