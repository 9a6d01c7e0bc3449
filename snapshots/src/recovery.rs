//! Recovery: the ledger of a data directory, rebuilt from its newest sound snapshot and the
//! log after it; point-in-time replay; snapshots built from the log; restore into a new
//! data directory.
//!
//! The rules: a snapshot that fails its checks is reported (`tracing::warn!`) and the previous
//! one is tried; with no sound snapshot the log must reach back to sequence 1, else recovery
//! refuses (it never starts from zeros over a log that does not begin at the beginning). Any
//! log group that fails its checks, and any gap, is fatal and named: sled's own recovery already
//! drops a torn, unacknowledged tail, so whatever the log still shows must be sound. Replay
//! uses [`Ledger::apply`], the same function the live path uses, and ends with
//! [`Ledger::check_invariants`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use engine::ledger::{ApplyError, InvariantViolation, Ledger};
use engine::record::Group;

use crate::snapshot::{SnapshotError, SnapshotInfo, prune, read_snapshot, snapshot_files, write_snapshot};
use crate::wal::{Wal, WalError, sync_dir};

/// Most transfers room is made for before replaying the log (see `replay_log`).
const TRANSFERS_RESERVED_MAX: usize = 1 << 25;

/// Groups decoded ahead of the one being applied.
const READ_AHEAD_GROUPS: usize = 8;

/// Where a recovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryProgress {
    /// Sequence of the snapshot recovery started from (0 = none).
    pub snapshot_seq: u64,
    /// Last sequence applied so far.
    pub applied_seq: u64,
    /// Sequence recovery will end at.
    pub target_seq: u64,
    /// Log records applied so far.
    pub replayed_records: u64,
}

/// A recovered data directory.
#[derive(Debug)]
pub struct Recovered {
    pub ledger: Ledger,
    /// The open log; the committer continues it at `ledger.last_seq + 1`.
    pub wal: Wal,
    /// The snapshot recovery started from.
    pub snapshot: Option<SnapshotInfo>,
    pub replayed_records: u64,
}

/// How many snapshots and how much log to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Newest snapshots kept (at least 1).
    pub snapshots_kept: usize,
    /// 0 = keep the whole log; N = drop the log groups wholly covered by the Nth newest
    /// snapshot.
    pub wal_retention_snapshots: usize,
}

/// Why a data directory cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(
        "refusing to start from an empty ledger: {reason}; no sound snapshot covers the records before it{}",
        bad_snapshots_note(.bad_snapshots)
    )]
    NoSoundSnapshot { reason: String, bad_snapshots: Vec<String> },
    #[error(
        "the log ends at seq {log_last_seq}, before the snapshot at seq {snapshot_seq}: acknowledged records are missing from the log"
    )]
    LogBehindSnapshot { snapshot_seq: u64, log_last_seq: u64 },
    #[error("cannot replay to seq {to_seq}: the log ends at seq {log_last_seq}")]
    BeyondLog { to_seq: u64, log_last_seq: u64 },
    #[error("cannot replay to seq {to_seq}: the snapshot is at seq {snapshot_seq}, after it")]
    BeforeSnapshot { to_seq: u64, snapshot_seq: u64 },
    #[error("the log does not apply: {0}")]
    Apply(#[from] ApplyError),
    #[error("the recovered ledger breaks an invariant at seq {seq}: {violation}")]
    Invariant { seq: u64, violation: InvariantViolation },
    #[error("{path} must not exist or be empty: {reason}")]
    TargetNotEmpty { path: PathBuf, reason: String },
    #[error("{path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
}

fn bad_snapshots_note(bad: &[String]) -> String {
    if bad.is_empty() { String::new() } else { format!(" (unsound snapshots: {})", bad.join("; ")) }
}

/// Opens the log of `data_dir` and recovers the whole ledger (newest sound snapshot, then the
/// log after it).
pub fn recover(data_dir: &Path, progress: impl FnMut(RecoveryProgress)) -> Result<Recovered, RecoveryError> {
    recover_to(data_dir, None, progress)
}

/// Like [`recover`], but stops after the record at `to_seq` (point in time) when given: the
/// newest sound snapshot at or before `to_seq` is the starting point.
pub fn recover_to(
    data_dir: &Path,
    to_seq: Option<u64>,
    progress: impl FnMut(RecoveryProgress),
) -> Result<Recovered, RecoveryError> {
    let wal = Wal::open(data_dir)?;
    let (ledger, snapshot, replayed_records) = replay_data_dir(data_dir, &wal, to_seq, progress)?;
    Ok(Recovered { ledger, wal, snapshot, replayed_records })
}

/// The newest sound snapshot of `data_dir` at or before `max_seq`, or `None` when recovery
/// may start from an empty ledger. Unsound snapshots are reported and skipped.
fn load_base(
    data_dir: &Path,
    wal: &Wal,
    max_seq: Option<u64>,
) -> Result<Option<(SnapshotInfo, Ledger)>, RecoveryError> {
    let files = snapshot_files(data_dir)?;
    let mut bad = Vec::new();
    for (seq, path) in files.iter().rev() {
        if max_seq.is_some_and(|max| *seq > max) {
            continue;
        }
        match read_snapshot(path) {
            Ok(found) => {
                if !bad.is_empty() {
                    tracing::warn!(id = %found.0.id, "recovering from an older snapshot: newer ones are not sound");
                }
                return Ok(Some(found));
            }
            Err(error) => {
                tracing::warn!(%error, "snapshot is not sound; trying the previous one");
                bad.push(error.to_string());
            }
        }
    }
    match wal.first_seq() {
        Some(1) => {
            if !bad.is_empty() {
                tracing::warn!("no sound snapshot: replaying the whole log from seq 1");
            }
            Ok(None)
        }
        None if files.is_empty() => Ok(None),
        None => Err(RecoveryError::NoSoundSnapshot {
            reason: "the log is empty but snapshots exist".to_owned(),
            bad_snapshots: bad,
        }),
        Some(first) => Err(RecoveryError::NoSoundSnapshot {
            reason: format!(
                "the log starts at seq {first}, not 1{}",
                if files.is_empty() { " and there is no snapshot" } else { "" }
            ),
            bad_snapshots: bad,
        }),
    }
}

/// Newest sound snapshot of `data_dir` (at or before `to_seq`), then `wal` up to `to_seq`
/// (default: its end). Returns the ledger, the snapshot used and the records replayed.
pub fn replay_data_dir(
    data_dir: &Path,
    wal: &Wal,
    to_seq: Option<u64>,
    progress: impl FnMut(RecoveryProgress),
) -> Result<(Ledger, Option<SnapshotInfo>, u64), RecoveryError> {
    let base = load_base(data_dir, wal, to_seq)?;
    let (snapshot, ledger) = match base {
        Some((info, ledger)) => (Some(info), ledger),
        None => (None, Ledger::default()),
    };
    let (ledger, replayed) = replay_log(ledger, Some(wal), to_seq, progress)?;
    Ok((ledger, snapshot, replayed))
}

/// Point-in-time replay from an explicit snapshot file (or from an empty ledger) and an
/// optional log: applies the log's records after the snapshot up to `to_seq` (default: the
/// log's end). Without a log, `to_seq` must be the snapshot's own sequence, if given.
pub fn replay_to(
    snapshot: Option<&Path>,
    wal: Option<&Wal>,
    to_seq: Option<u64>,
    progress: impl FnMut(RecoveryProgress),
) -> Result<(Ledger, u64), RecoveryError> {
    let ledger = match snapshot {
        Some(path) => read_snapshot(path)?.1,
        None => {
            if let Some(wal) = wal
                && let Some(first) = wal.first_seq()
                && first != 1
            {
                return Err(RecoveryError::NoSoundSnapshot {
                    reason: format!("the log starts at seq {first}, not 1"),
                    bad_snapshots: Vec::new(),
                });
            }
            Ledger::default()
        }
    };
    replay_log(ledger, wal, to_seq, progress)
}

/// Applies the log's records after `ledger.last_seq`, up to `to_seq` (default: the end).
fn replay_log(
    mut ledger: Ledger,
    wal: Option<&Wal>,
    to_seq: Option<u64>,
    mut progress: impl FnMut(RecoveryProgress),
) -> Result<(Ledger, u64), RecoveryError> {
    let snapshot_seq = ledger.last_seq;
    let log_last_seq = wal.map_or(0, Wal::last_seq);
    let log_empty = wal.is_none_or(Wal::is_empty);
    if !log_empty && log_last_seq < snapshot_seq {
        return Err(RecoveryError::LogBehindSnapshot { snapshot_seq, log_last_seq });
    }
    let target_seq = match to_seq {
        Some(to_seq) if to_seq < snapshot_seq => return Err(RecoveryError::BeforeSnapshot { to_seq, snapshot_seq }),
        Some(to_seq) if to_seq > snapshot_seq && (log_empty || to_seq > log_last_seq) => {
            return Err(RecoveryError::BeyondLog {
                to_seq,
                log_last_seq: if log_empty { snapshot_seq } else { log_last_seq },
            });
        }
        Some(to_seq) => to_seq,
        None if log_empty => snapshot_seq,
        None => log_last_seq,
    };
    let mut report = RecoveryProgress { snapshot_seq, applied_seq: snapshot_seq, target_seq, replayed_records: 0 };
    progress(report);
    // Most records of a busy log create transfers: room for all of them at once saves growing
    // (and copying) the map step by step. Bounded, so that a huge log only gets a head start.
    let records_to_replay = usize::try_from(target_seq - snapshot_seq).unwrap_or(usize::MAX);
    ledger.transfers.reserve(records_to_replay.min(TRANSFERS_RESERVED_MAX));
    if let Some(wal) = wal
        && target_seq > snapshot_seq
    {
        // Decoding (one thread) overlaps applying (this thread).
        std::thread::scope(|scope| -> Result<(), RecoveryError> {
            let (sender, receiver) = mpsc::sync_channel::<Result<Group, WalError>>(READ_AHEAD_GROUPS);
            let from = snapshot_seq + 1;
            scope.spawn(move || {
                for group in wal.groups_from(from) {
                    let stop = group.as_ref().map_or(true, |group| group.last_seq() >= target_seq);
                    if sender.send(group).is_err() || stop {
                        break;
                    }
                }
            });
            for group in receiver {
                let group = group?;
                for (seq, record) in group.sequenced() {
                    if seq <= ledger.last_seq {
                        continue;
                    }
                    if seq > target_seq {
                        break;
                    }
                    ledger.apply(seq, record)?;
                    report.replayed_records += 1;
                }
                report.applied_seq = ledger.last_seq;
                progress(report);
                if ledger.last_seq >= target_seq {
                    break;
                }
            }
            Ok(())
        })?;
    }
    if ledger.last_seq != target_seq {
        return Err(RecoveryError::BeyondLog { to_seq: target_seq, log_last_seq: ledger.last_seq });
    }
    ledger.check_invariants().map_err(|violation| RecoveryError::Invariant { seq: ledger.last_seq, violation })?;
    Ok((ledger, report.replayed_records))
}

/// Builds a snapshot from the log without touching the live actors: newest sound snapshot,
/// then the log up to its current last record, written as a new snapshot; then retention.
/// Online, pass the server's open `wal` (sled serves these reads while the committer
/// appends; run this on a blocking thread); offline, pass `None` and the log is opened here.
pub fn create_snapshot_from_log(
    data_dir: &Path,
    wal: Option<&Wal>,
    created_at_ms: i64,
    retention: Retention,
) -> Result<SnapshotInfo, RecoveryError> {
    let opened;
    let wal = match wal {
        Some(wal) => wal,
        None => {
            opened = Wal::open(data_dir)?;
            &opened
        }
    };
    // Everything up to the log's last record is durable; later appends are left for the
    // next snapshot.
    let to_seq = if wal.is_empty() { None } else { Some(wal.last_seq()) };
    let (ledger, base, _) = replay_data_dir(data_dir, wal, to_seq, |_| {})?;
    let info = match base {
        Some(base) if base.seq == ledger.last_seq => base,
        _ => write_snapshot(data_dir, &ledger, created_at_ms)?,
    };
    prune(data_dir, retention.snapshots_kept)?;
    if retention.wal_retention_snapshots > 0 {
        let files = snapshot_files(data_dir)?;
        if let Some(index) = files.len().checked_sub(retention.wal_retention_snapshots) {
            let covered = files[index].0;
            let removed = wal.remove_groups_before(covered + 1)?;
            tracing::info!(removed, covered_seq = covered, "log groups dropped by retention");
        }
    }
    Ok(info)
}

/// Creates the data directory `target` (which must not exist or be empty) holding one
/// snapshot of `ledger`; a server started on it continues the log at `ledger.last_seq + 1`.
pub fn restore_into(target: &Path, ledger: &Ledger, created_at_ms: i64) -> Result<SnapshotInfo, RecoveryError> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RecoveryError::TargetNotEmpty {
                    path: target.to_owned(),
                    reason: "it is not empty".to_owned(),
                });
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|source| RecoveryError::Io {
                path: target.to_owned(),
                action: "create the directory",
                source,
            })?;
            if let Some(parent) = target.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                sync_dir(parent).map_err(|source| RecoveryError::Io {
                    path: parent.to_owned(),
                    action: "fsync the directory",
                    source,
                })?;
            }
        }
        Err(error) => return Err(RecoveryError::TargetNotEmpty { path: target.to_owned(), reason: error.to_string() }),
    }
    Ok(write_snapshot(target, ledger, created_at_ms)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committer::{Committer, CommitterSettings};
    use crate::snapshot::{snapshot_path, write_snapshot};
    use crate::testkit::{ops_strategy, records_for, sample_ledger};
    use engine::record::{Record, encode_group};
    use proptest::prelude::*;

    /// Writes `records` to the log of `data_dir` as groups of `group_len`, from seq `first`.
    fn write_log(wal: &Wal, first: u64, records: &[Record], group_len: usize) {
        let mut seq = first;
        for chunk in records.chunks(group_len) {
            wal.append(&Group { first_seq: seq, records: chunk.to_vec() }).unwrap();
            seq += chunk.len() as u64;
        }
    }

    fn ledger_of(records: &[Record]) -> Ledger {
        let mut ledger = Ledger::default();
        for (index, record) in records.iter().enumerate() {
            ledger.apply(index as u64 + 1, record).unwrap();
        }
        ledger
    }

    #[test]
    fn an_empty_data_dir_recovers_to_an_empty_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let recovered = recover(dir.path(), |_| {}).unwrap();
        assert_eq!(recovered.ledger, Ledger::default());
        assert!(recovered.snapshot.is_none());
    }

    #[test]
    fn snapshot_plus_log_recovers_and_a_bad_snapshot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 2);
        write_snapshot(dir.path(), &ledger_of(&records[..3]), 1).unwrap();
        let newest = write_snapshot(dir.path(), &ledger_of(&records[..6]), 2).unwrap();
        drop(wal);

        let mut reports = Vec::new();
        let recovered = recover(dir.path(), |report| reports.push(report)).unwrap();
        assert_eq!(recovered.ledger, live);
        assert_eq!(recovered.snapshot.as_ref().unwrap().seq, 6);
        assert_eq!(recovered.replayed_records, records.len() as u64 - 6);
        assert_eq!(reports.last().unwrap().applied_seq, live.last_seq);
        drop(recovered);

        // Corrupt the newest snapshot: the older one is used, still the same state.
        let mut bytes = std::fs::read(&newest.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&newest.path, bytes).unwrap();
        let recovered = recover(dir.path(), |_| {}).unwrap();
        assert_eq!(recovered.ledger, live);
        assert_eq!(recovered.snapshot.as_ref().unwrap().seq, 3);
    }

    #[test]
    fn no_sound_snapshot_and_a_log_not_from_seq_1_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 2);
        let snapshot = write_snapshot(dir.path(), &ledger_of(&records[..4]), 1).unwrap();
        assert_eq!(wal.remove_groups_before(5).unwrap(), 2);
        drop(wal);
        assert_eq!(recover(dir.path(), |_| {}).unwrap().ledger, ledger_of(&records));

        std::fs::write(&snapshot.path, b"LEDGERSNAP garbage").unwrap();
        let error = recover(dir.path(), |_| {}).unwrap_err();
        assert!(matches!(error, RecoveryError::NoSoundSnapshot { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("refusing") && message.contains("starts at seq 5") && message.contains(&snapshot.id),
            "{message}"
        );
    }

    #[test]
    fn a_bad_snapshot_with_the_whole_log_replays_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 3);
        drop(wal);
        let snapshot = write_snapshot(dir.path(), &live, 1).unwrap();
        std::fs::write(&snapshot.path, b"junk").unwrap();
        let recovered = recover(dir.path(), |_| {}).unwrap();
        assert_eq!(recovered.ledger, live);
        assert!(recovered.snapshot.is_none());
    }

    #[test]
    fn a_corrupt_log_group_refuses_to_start_naming_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 2);
        let mut bytes = encode_group(&Group { first_seq: 5, records: records[4..6].to_vec() });
        bytes[12] ^= 0x10;
        wal.put_raw(5, &bytes);
        drop(wal);
        let error = recover(dir.path(), |_| {}).unwrap_err();
        assert!(matches!(error, RecoveryError::Wal(WalError::Corrupt { seq: 5, .. })), "{error}");
        assert!(error.to_string().contains("seq 5"));
    }

    #[test]
    fn a_log_behind_the_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records[..3], 3);
        drop(wal);
        write_snapshot(dir.path(), &live, 1).unwrap();
        let error = recover(dir.path(), |_| {}).unwrap_err();
        assert!(matches!(error, RecoveryError::LogBehindSnapshot { log_last_seq: 3, .. }), "{error}");
    }

    #[test]
    fn point_in_time_recovery_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 4);
        write_snapshot(dir.path(), &ledger_of(&records[..2]), 1).unwrap();
        write_snapshot(dir.path(), &ledger_of(&records[..7]), 1).unwrap();
        for to_seq in 0..=records.len() as u64 {
            let (ledger, snapshot, _) = replay_data_dir(dir.path(), &wal, Some(to_seq), |_| {}).unwrap();
            assert_eq!(ledger, ledger_of(&records[..usize::try_from(to_seq).unwrap()]), "to_seq {to_seq}");
            assert!(snapshot.is_none_or(|snapshot| snapshot.seq <= to_seq));
        }
        let error = replay_data_dir(dir.path(), &wal, Some(records.len() as u64 + 1), |_| {}).unwrap_err();
        assert!(matches!(error, RecoveryError::BeyondLog { .. }), "{error}");

        // From an explicit snapshot file plus the source log, into a new data dir.
        let (ledger, replayed) = replay_to(Some(&snapshot_path(dir.path(), 2)), Some(&wal), Some(5), |_| {}).unwrap();
        assert_eq!((ledger.last_seq, replayed), (5, 3));
        let target = dir.path().join("restored");
        let info = restore_into(&target, &ledger, 9).unwrap();
        assert_eq!(info.seq, 5);
        assert!(restore_into(&target, &ledger, 9).is_err(), "a non-empty target is refused");
        drop(wal);
        let restored = recover(&target, |_| {}).unwrap();
        assert_eq!(restored.ledger, ledger_of(&records[..5]));
        // The restored dir continues the log at seq 6.
        restored.wal.append(&Group { first_seq: 6, records: records[5..].to_vec() }).unwrap();
        drop(restored);
        assert_eq!(recover(&target, |_| {}).unwrap().ledger, live);
    }

    #[test]
    fn snapshots_from_the_log_while_the_committer_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        let settings = CommitterSettings { group_records_max: 2, group_bytes_max: 1 << 20, queue_records_max: 100 };
        let (handle, thread) = Committer::start(wal.clone(), 1, settings);
        let retention = Retention { snapshots_kept: 2, wal_retention_snapshots: 1 };
        let mut infos = Vec::new();
        for chunk in records.chunks(3) {
            let first = handle.submit(chunk.to_vec()).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(handle.wait_durable(first + chunk.len() as u64 - 1))
                .unwrap();
            let info = create_snapshot_from_log(dir.path(), Some(&wal), 5, retention).unwrap();
            assert_eq!(info.seq, wal.last_seq());
            assert_eq!(read_snapshot(&info.path).unwrap().1, ledger_of(&records[..usize::try_from(info.seq).unwrap()]));
            infos.push(info);
        }
        handle.close();
        thread.join().unwrap().unwrap();
        let left: Vec<u64> = crate::snapshot::list_snapshots(dir.path()).unwrap().iter().map(|info| info.seq).collect();
        assert_eq!(left, [infos[infos.len() - 2].seq, infos[infos.len() - 1].seq]);
        // Retention dropped the log the newest snapshot covers, except its last group.
        assert!(wal.first_seq().unwrap() > 1);
        drop(wal);
        let recovered = recover(dir.path(), |_| {}).unwrap();
        assert_eq!(recovered.ledger, live);
        drop(recovered);
        // Offline, with nothing new: the newest snapshot is the answer.
        let info = create_snapshot_from_log(dir.path(), None, 6, retention).unwrap();
        assert_eq!(info.seq, live.last_seq);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn log_then_recover_equals_the_live_ledger(
            ops in ops_strategy(0..150),
            group_len in 1..20_usize,
            snapshot_at in 0..100_usize,
        ) {
            let mut live = Ledger::default();
            let records = records_for(&ops, &mut live);
            let dir = tempfile::tempdir().unwrap();
            let wal = Wal::open(dir.path()).unwrap();
            write_log(&wal, 1, &records, group_len);
            if snapshot_at < records.len() {
                write_snapshot(dir.path(), &ledger_of(&records[..snapshot_at]), 0).unwrap();
            }
            drop(wal);
            let recovered = recover(dir.path(), |_| {}).unwrap();
            prop_assert_eq!(&recovered.ledger, &live);
            prop_assert_eq!(recovered.wal.last_seq(), live.last_seq);
        }
    }
}
