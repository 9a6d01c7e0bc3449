//! ledgerd's durability: the write-ahead log on sled, the group committer and its hand-off,
//! snapshot files, recovery (with point-in-time replay and restore), and the data directory's
//! lock.
//!
//! A data directory holds `LOCK` ([`lock`]), `wal/` (sled; [`wal`]) and `snapshots/`
//! ([`snapshot`]). Live, the committer thread ([`committer`]) is the only writer of the log;
//! recovery ([`recovery`]) folds the newest sound snapshot and the log after it with the same
//! `engine::Ledger::apply` the live path uses.

pub mod committer;
pub mod handoff;
pub mod lock;
pub mod recovery;
pub mod snapshot;
#[cfg(test)]
mod testkit;
pub mod wal;

pub use committer::{CommitError, CommitHandle, Committer, CommitterSettings, DurableState, Storage};
pub use handoff::{Handoff, PushError};
pub use lock::{DataDirLock, LockError};
pub use recovery::{
    Recovered, RecoveryError, RecoveryProgress, Retention, create_snapshot_from_log, recover, recover_to,
    replay_data_dir, replay_to, restore_into,
};
pub use snapshot::{
    SnapshotError, SnapshotInfo, list_snapshots, prune, read_snapshot, read_snapshot_info, snapshot_files,
    snapshot_path, snapshot_path_for_id, snapshots_dir, write_snapshot,
};
pub use wal::{EncodedGroup, GroupIter, Wal, WalError};
