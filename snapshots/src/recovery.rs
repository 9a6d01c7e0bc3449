//! Recovery: a data directory's ledger (accounts and open holds) rebuilt from its newest sound
//! snapshot and the log after it, and its history brought up to the log's end; point-in-time
//! replay; restore into a new data directory.
//!
//! The rules: a snapshot that fails its checks is reported (`tracing::warn!`) and the previous
//! one is tried; with no sound snapshot the log must reach back to sequence 1, else recovery
//! refuses (it never starts from zeros over a log that does not begin at the beginning). Any
//! log group that fails its checks, and any gap, is fatal and named. A log that ends before its
//! `LOG_WATERMARK` ([`crate::log_watermark`]) is refused. The history's watermark must not be
//! ahead of the log; the log after the older of the two watermarks (snapshot and history) is
//! read once: records after the snapshot are applied to the ledger with `Ledger::apply`, the
//! same function the live path uses, and records after the history's watermark are ingested by
//! the history again. A damaged history is rebuilt from the log when the log reaches back to
//! sequence 1 (the damaged files are kept aside), and refused otherwise. Replay ends with
//! `Ledger::check_invariants`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use engine::ledger::{ApplyError, InvariantViolation, Ledger};
use engine::record::Group;
use history::{History, HistoryError, HistorySettings, HistoryThreads};

use crate::log_watermark::{self, WatermarkError};
use crate::snapshot::{SnapshotContents, SnapshotError, SnapshotInfo, read_snapshot, snapshot_files, write_snapshot};
use crate::wal::{Wal, WalError};

/// Groups decoded ahead of the one being applied.
const READ_AHEAD_GROUPS: usize = 8;

/// Where a recovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryProgress {
    /// Sequence of the snapshot recovery started from (0 = none).
    pub snapshot_seq: u64,
    /// Last sequence read so far.
    pub applied_seq: u64,
    /// Sequence recovery will end at.
    pub target_seq: u64,
    /// Log records applied to the ledger so far.
    pub replayed_records: u64,
}

/// A recovered data directory.
pub struct Recovered {
    pub ledger: Ledger,
    /// The open log; the committer continues it at `ledger.last_seq + 1`.
    pub wal: Wal,
    /// The history, ingested up to `ledger.last_seq`, and its threads.
    pub history: History,
    pub history_threads: HistoryThreads,
    /// The snapshot recovery started from.
    pub snapshot: Option<SnapshotInfo>,
    /// Log records applied to the ledger, and ingested again by the history.
    pub replayed_records: u64,
    pub reingested_records: u64,
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Recovered")
            .field("last_seq", &self.ledger.last_seq)
            .field("snapshot", &self.snapshot.as_ref().map(|snapshot| snapshot.seq))
            .field("replayed_records", &self.replayed_records)
            .finish_non_exhaustive()
    }
}

/// Why a data directory cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(
        "refusing to start from an empty ledger: {reason}; no sound snapshot covers the records before it{}",
        bad_snapshots_note(.bad_snapshots)
    )]
    NoSoundSnapshot { reason: String, bad_snapshots: Vec<String> },
    #[error(
        "the log ends at seq {log_last_seq}, before the snapshot at seq {snapshot_seq}: acknowledged records are missing from the log"
    )]
    LogBehindSnapshot { snapshot_seq: u64, log_last_seq: u64 },
    #[error(
        "the history holds records up to seq {history_seq} but the log ends at seq {log_last_seq}: acknowledged records are missing from the log"
    )]
    LogBehindHistory { history_seq: u64, log_last_seq: u64 },
    #[error(
        "the log starts at seq {log_first_seq}, but recovery needs it from seq {needed_seq} ({why}); restore from a backup"
    )]
    LogTooShort { log_first_seq: u64, needed_seq: u64, why: &'static str },
    #[error(
        "the history is damaged ({source}) and the log does not reach back to seq 1 to rebuild it; restore from a backup"
    )]
    HistoryUnrecoverable { source: HistoryError },
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

/// Opens the log and the history of `data_dir` and recovers: the ledger from the newest sound
/// snapshot and the log after it, the history up to the log's end.
pub fn recover(
    data_dir: &Path,
    history_settings: HistorySettings,
    mut progress: impl FnMut(RecoveryProgress),
) -> Result<Recovered, RecoveryError> {
    let wal = Wal::open(data_dir)?;
    log_watermark::check(data_dir, wal.last_seq())?;
    let (history, history_threads) = open_history(data_dir, &wal, history_settings)?;
    let (snapshot, ledger) =
        load_base(data_dir, &wal, None)?.map_or((None, Ledger::default()), |(info, ledger)| (Some(info), ledger));
    let snapshot_seq = ledger.last_seq;
    let log_end = if wal.is_empty() { snapshot_seq } else { wal.last_seq() };
    if !wal.is_empty() && log_end < snapshot_seq {
        return Err(RecoveryError::LogBehindSnapshot { snapshot_seq, log_last_seq: log_end });
    }
    let history_seq = history.durable_seq();
    if history_seq > log_end {
        return Err(RecoveryError::LogBehindHistory { history_seq, log_last_seq: log_end });
    }
    // The history may lag the snapshot (it is rebuilt, or was restored with less) or lead it.
    let from = snapshot_seq.min(history_seq) + 1;
    if from <= log_end {
        let first = wal.first_seq().unwrap_or(log_end + 1);
        if first > from {
            let why = if history_seq < snapshot_seq {
                "the history's watermark is behind the snapshot"
            } else {
                "the snapshot is older than the log"
            };
            return Err(RecoveryError::LogTooShort { log_first_seq: first, needed_seq: from, why });
        }
    }
    let mut report = RecoveryProgress { snapshot_seq, applied_seq: from - 1, target_seq: log_end, replayed_records: 0 };
    progress(report);
    let mut ledger = ledger;
    let mut reingested = 0_u64;
    read_log(&wal, from, log_end, |group| {
        for (seq, record) in group.sequenced() {
            if seq > snapshot_seq && seq <= log_end {
                ledger.apply(seq, record)?;
                report.replayed_records += 1;
            }
        }
        let ingested = history.ingested_seq();
        if group.last_seq() > ingested {
            reingested += group.last_seq() - ingested.max(group.first_seq - 1);
            history.ingest(group.first_seq, &group.records)?;
        }
        report.applied_seq = group.last_seq();
        progress(report);
        Ok(())
    })?;
    if ledger.last_seq != log_end {
        return Err(RecoveryError::BeyondLog { to_seq: log_end, log_last_seq: ledger.last_seq });
    }
    ledger.check_invariants().map_err(|violation| RecoveryError::Invariant { seq: ledger.last_seq, violation })?;
    Ok(Recovered {
        ledger,
        wal,
        history,
        history_threads,
        snapshot,
        replayed_records: report.replayed_records,
        reingested_records: reingested,
    })
}

/// The history of `data_dir`; a damaged one is rebuilt from the log when the log reaches
/// back to seq 1 (its files are moved aside, named in a warning), and refused otherwise.
fn open_history(
    data_dir: &Path,
    wal: &Wal,
    settings: HistorySettings,
) -> Result<(History, HistoryThreads), RecoveryError> {
    match History::open(data_dir, settings) {
        Ok(opened) => Ok(opened),
        Err(error) if error.is_damage() => {
            if !matches!(wal.first_seq(), Some(1) | None) {
                return Err(RecoveryError::HistoryUnrecoverable { source: error });
            }
            let dir = History::dir_of(data_dir);
            let aside = data_dir.join(format!(
                "history.damaged-{}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
            ));
            std::fs::rename(&dir, &aside).map_err(|source| RecoveryError::Io {
                path: dir.clone(),
                action: "move the damaged history aside",
                source,
            })?;
            durable::sync_dir(data_dir).map_err(|source| RecoveryError::Io {
                path: data_dir.to_owned(),
                action: "fsync the directory",
                source,
            })?;
            tracing::warn!(%error, aside = %aside.display(), "the history is damaged: rebuilding it from the log");
            Ok(History::open(data_dir, settings)?)
        }
        Err(error) => Err(error.into()),
    }
}

/// Reads the log's groups holding `from ..= to`, each verified, decoding one group ahead of
/// `visit` on another thread.
fn read_log(
    wal: &Wal,
    from: u64,
    to: u64,
    mut visit: impl FnMut(&Group) -> Result<(), RecoveryError>,
) -> Result<(), RecoveryError> {
    if from > to {
        return Ok(());
    }
    std::thread::scope(|scope| -> Result<(), RecoveryError> {
        let (sender, receiver) = mpsc::sync_channel::<Result<Group, WalError>>(READ_AHEAD_GROUPS);
        scope.spawn(move || {
            for group in wal.groups_from(from) {
                let stop = group.as_ref().map_or(true, |group| group.last_seq() >= to);
                if sender.send(group).is_err() || stop {
                    break;
                }
            }
        });
        for group in receiver {
            let group = group?;
            visit(&group)?;
            if group.last_seq() >= to {
                break;
            }
        }
        Ok(())
    })
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

/// A ledger replayed to a point in time.
#[derive(Debug)]
pub struct Replayed {
    pub ledger: Ledger,
    pub snapshot: Option<SnapshotInfo>,
    pub replayed_records: u64,
    /// The sequence replayed to: the one asked for, or the end of the last unit (an atomic
    /// batch, the facts of one decision) that ends at or before it.
    pub to_seq: u64,
}

/// The ledger of `data_dir` (its newest sound snapshot at or before `to_seq`, then `wal`) up
/// to `to_seq` (default: the log's end), never splitting a unit.
pub fn replay_data_dir(
    data_dir: &Path,
    wal: &Wal,
    to_seq: Option<u64>,
    progress: impl FnMut(RecoveryProgress),
) -> Result<Replayed, RecoveryError> {
    let base = load_base(data_dir, wal, to_seq)?;
    let (snapshot, ledger) = base.map_or((None, Ledger::default()), |(info, ledger)| (Some(info), ledger));
    let mut replayed = replay_log(ledger, Some(wal), to_seq, progress)?;
    replayed.snapshot = snapshot;
    Ok(replayed)
}

/// Point-in-time replay from an explicit snapshot file (or from an empty ledger) and an
/// optional log: applies the log's records after the snapshot up to `to_seq` (default: the
/// log's end), never splitting a unit. Without a log, `to_seq` must be the snapshot's own.
pub fn replay_to(
    snapshot: Option<&Path>,
    wal: Option<&Wal>,
    to_seq: Option<u64>,
    progress: impl FnMut(RecoveryProgress),
) -> Result<Replayed, RecoveryError> {
    let (info, ledger) = match snapshot {
        Some(path) => {
            let (info, ledger) = read_snapshot(path)?;
            (Some(info), ledger)
        }
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
            (None, Ledger::default())
        }
    };
    let mut replayed = replay_log(ledger, wal, to_seq, progress)?;
    replayed.snapshot = info;
    Ok(replayed)
}

/// Applies the log's records after `ledger.last_seq`, up to `to_seq` (default: the end), or
/// to the end of the last unit at or before it.
fn replay_log(
    mut ledger: Ledger,
    wal: Option<&Wal>,
    to_seq: Option<u64>,
    mut progress: impl FnMut(RecoveryProgress),
) -> Result<Replayed, RecoveryError> {
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
    let mut end = target_seq;
    if let Some(wal) = wal {
        read_log(wal, snapshot_seq + 1, target_seq, |group| {
            // A unit that straddles the target is left out whole.
            if group.first_seq <= target_seq && target_seq <= group.last_seq() {
                end = group.unit_end_at_or_before(target_seq).max(snapshot_seq);
            }
            for (seq, record) in group.sequenced() {
                if seq <= ledger.last_seq {
                    continue;
                }
                if seq > end {
                    break;
                }
                ledger.apply(seq, record)?;
                report.replayed_records += 1;
            }
            report.applied_seq = ledger.last_seq;
            progress(report);
            Ok(())
        })?;
    }
    if ledger.last_seq != end {
        return Err(RecoveryError::BeyondLog { to_seq: target_seq, log_last_seq: ledger.last_seq });
    }
    ledger.check_invariants().map_err(|violation| RecoveryError::Invariant { seq: ledger.last_seq, violation })?;
    Ok(Replayed { replayed_records: report.replayed_records, to_seq: ledger.last_seq, ledger, snapshot: None })
}

/// Where a restore takes its history and log from.
pub struct RestoreSource<'a> {
    /// The source's log (locked by the caller), if it has one.
    pub wal: Option<&'a Wal>,
    /// The source data directory, whose history (if any) is read.
    pub data_dir: Option<&'a Path>,
}

/// Creates the data directory `target` (which must not exist or be empty, but for the lock of
/// a caller holding it) holding `replayed`
/// as a snapshot and a history as of `replayed.to_seq`, taken from the source's history and, for
/// what it lacks, the source's log. A server started on `target` continues the log at
/// `replayed.to_seq + 1`.
pub fn restore_into(
    target: &Path,
    replayed: &Replayed,
    source: RestoreSource<'_>,
    created_at_ms: i64,
    history_settings: HistorySettings,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<SnapshotInfo, RecoveryError> {
    let io_error = |path: &Path, action: &'static str| {
        let path = path.to_owned();
        move |source| RecoveryError::Io { path, action, source }
    };
    match std::fs::read_dir(target) {
        Ok(entries) => {
            // The lock of the caller holding the new data dir is no content.
            let mut entries =
                entries.filter_map(Result::ok).filter(|entry| entry.file_name() != crate::lock::LOCK_FILE_NAME);
            if entries.next().is_some() {
                return Err(RecoveryError::TargetNotEmpty {
                    path: target.to_owned(),
                    reason: "it is not empty".to_owned(),
                });
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(io_error(target, "create the directory"))?;
            if let Some(parent) = target.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                durable::sync_dir(parent).map_err(io_error(parent, "fsync the directory"))?;
            }
        }
        Err(error) => return Err(RecoveryError::TargetNotEmpty { path: target.to_owned(), reason: error.to_string() }),
    }
    let to_seq = replayed.to_seq;
    // The history as of `to_seq`: exported from the source's, then the log for the rest.
    let mut covered = 0;
    let log_from_start = source.wal.is_some_and(|wal| wal.first_seq() == Some(1));
    if let Some(source_dir) = source.data_dir.filter(|dir| History::exists(dir)) {
        let source_history = History::open_read_only(source_dir)?;
        covered = source_history.durable_seq().min(to_seq);
        source_history.export_to(target, covered, history_settings, |done, all| progress("history", done, all))?;
    } else if let Some(snapshot) = replayed.snapshot.as_ref().filter(|_| !log_from_start) {
        // A snapshot without its source's history, and no log from the start: the new
        // history is seeded with the snapshot's accounts and open holds (the transfers settled
        // before it are not in a snapshot), then takes the log after it.
        let (_, base) = read_snapshot(&snapshot.path)?;
        progress("seed", 0, base.last_seq);
        History::seed(target, &base, history_settings)?;
        covered = base.last_seq;
    }
    if covered < to_seq {
        let wal = source.wal.ok_or(RecoveryError::BeyondLog { to_seq, log_last_seq: covered })?;
        if wal.first_seq().is_none_or(|first| first > covered + 1) {
            return Err(RecoveryError::LogTooShort {
                log_first_seq: wal.first_seq().unwrap_or(0),
                needed_seq: covered + 1,
                why: "the source's history does not reach the point to restore to",
            });
        }
        let (history, threads) = History::open(target, history_settings)?;
        read_log(wal, covered + 1, to_seq, |group| {
            let records = usize::try_from(to_seq.saturating_sub(group.first_seq) + 1).unwrap_or(usize::MAX);
            let records = &group.records[..records.min(group.records.len())];
            history.ingest(group.first_seq, records)?;
            progress("log", group.last_seq().min(to_seq), to_seq);
            Ok(())
        })?;
        history.close(threads)?;
    }
    if !History::exists(target) {
        // Nothing to export or ingest (an empty ledger): an empty history.
        let (history, threads) = History::open(target, history_settings)?;
        history.close(threads)?;
    }
    let contents = SnapshotContents::of_ledger(&replayed.ledger, to_seq)
        .map_err(|violation| RecoveryError::Invariant { seq: to_seq, violation })?;
    let info = write_snapshot(target, &contents, created_at_ms)?;
    // An empty log, which a server started on `target` continues after the snapshot.
    drop(Wal::open(target)?);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::write_ledger_snapshot;
    use crate::testkit::{ops_strategy, records_with_book, sample_ledger};
    use engine::TransferBook;
    use engine::record::{Record, Unit, encode_group};
    use proptest::prelude::*;

    fn settings() -> HistorySettings {
        HistorySettings { cache_bytes: 1 << 16, checkpoint_records: 5, checkpoint_interval_ms: 60_000 }
    }

    /// Writes `records` to the log of `data_dir` as groups of `group_len`, from seq `first`.
    fn write_log(wal: &Wal, first: u64, records: &[Record], group_len: usize) {
        let mut seq = first;
        for chunk in records.chunks(group_len) {
            wal.append(&Group::new(seq, chunk.to_vec())).unwrap();
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

    fn book_of(records: &[Record]) -> TransferBook {
        let mut book = TransferBook::default();
        for (index, record) in records.iter().enumerate() {
            book.apply(index as u64 + 1, record).unwrap();
        }
        book
    }

    fn recover_dir(dir: &Path) -> Result<Recovered, RecoveryError> {
        recover(dir, settings(), |_| {})
    }

    /// Every transfer of `book` is in the history, as the book has it.
    fn history_holds(recovered: &Recovered, book: &TransferBook) {
        for transfer in book.transfers.values() {
            assert_eq!(recovered.history.transfer(&transfer.id).unwrap().as_deref(), Some(&**transfer));
        }
    }

    fn close(recovered: Recovered) {
        recovered.history.close(recovered.history_threads).unwrap();
    }

    #[test]
    fn the_log_alone_recovers_the_ledger_and_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        write_log(&Wal::open(dir.path()).unwrap(), 1, &records, 3);
        let recovered = recover_dir(dir.path()).unwrap();
        assert_eq!(recovered.ledger, live);
        assert_eq!(
            (recovered.replayed_records, recovered.reingested_records),
            (records.len() as u64, records.len() as u64)
        );
        history_holds(&recovered, &book_of(&records));
        assert_eq!(recovered.history.ingested_seq(), live.last_seq);
        close(recovered);
        // A second start: the history was checkpointed at the clean stop; nothing to ingest.
        let recovered = recover_dir(dir.path()).unwrap();
        assert_eq!((recovered.ledger.last_seq, recovered.reingested_records), (live.last_seq, 0));
        close(recovered);
    }

    #[test]
    fn a_snapshot_and_the_log_after_it_recover_and_the_history_catches_up_from_its_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 2);
        drop(wal);
        // A history that stopped (crashed) with only part of the log checkpointed.
        let (history, threads) = History::open(dir.path(), settings()).unwrap();
        history.ingest(1, &records[..4]).unwrap();
        history.checkpoint().unwrap();
        drop(threads);
        write_ledger_snapshot(dir.path(), &ledger_of(&records[..6]), 4, 1).unwrap();
        let recovered = recover_dir(dir.path()).unwrap();
        assert_eq!(recovered.ledger, live);
        assert_eq!(recovered.snapshot.as_ref().unwrap().seq, 6);
        assert_eq!(recovered.replayed_records, records.len() as u64 - 6);
        assert_eq!(recovered.reingested_records, records.len() as u64 - 4);
        history_holds(&recovered, &book_of(&records));
        close(recovered);
    }

    #[test]
    fn no_sound_snapshot_and_a_log_not_from_seq_1_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 2);
        let snapshot = write_ledger_snapshot(dir.path(), &ledger_of(&records[..4]), 0, 1).unwrap();
        // The history covers the whole log, so the log before the snapshot may go.
        let (history, threads) = History::open(dir.path(), settings()).unwrap();
        history.ingest(1, &records).unwrap();
        history.close(threads).unwrap();
        assert_eq!(wal.remove_groups_before(5).unwrap(), 2);
        drop(wal);
        let recovered = recover_dir(dir.path()).unwrap();
        assert_eq!(recovered.ledger, ledger_of(&records));
        close(recovered);
        std::fs::write(&snapshot.path, b"LEDGERSNAP garbage").unwrap();
        let error = recover_dir(dir.path()).unwrap_err();
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
        write_log(&Wal::open(dir.path()).unwrap(), 1, &records, 3);
        let snapshot = write_ledger_snapshot(dir.path(), &live, 0, 1).unwrap();
        std::fs::write(&snapshot.path, b"junk").unwrap();
        let recovered = recover_dir(dir.path()).unwrap();
        assert_eq!(recovered.ledger, live);
        assert!(recovered.snapshot.is_none());
        close(recovered);
    }

    #[test]
    fn a_corrupt_log_group_refuses_to_start_naming_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 2);
        let mut bytes = encode_group(&Group::new(5, records[4..6].to_vec()));
        bytes[12] ^= 0x10;
        wal.put_raw(5, &bytes);
        drop(wal);
        let error = recover_dir(dir.path()).unwrap_err();
        assert!(matches!(error, RecoveryError::Wal(WalError::Corrupt { seq: 5, .. })), "{error}");
        assert!(error.to_string().contains("seq 5"));
    }

    #[test]
    fn a_log_behind_the_snapshot_or_the_history_or_its_watermark_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records[..3], 3);
        drop(wal);
        write_ledger_snapshot(dir.path(), &live, 0, 1).unwrap();
        let error = recover_dir(dir.path()).unwrap_err();
        assert!(matches!(error, RecoveryError::LogBehindSnapshot { log_last_seq: 3, .. }), "{error}");

        let dir = tempfile::tempdir().unwrap();
        write_log(&Wal::open(dir.path()).unwrap(), 1, &records[..3], 3);
        let (history, threads) = History::open(dir.path(), settings()).unwrap();
        history.ingest(1, &records).unwrap();
        history.close(threads).unwrap();
        let error = recover_dir(dir.path()).unwrap_err();
        assert!(matches!(error, RecoveryError::LogBehindHistory { log_last_seq: 3, .. }), "{error}");

        let dir = tempfile::tempdir().unwrap();
        write_log(&Wal::open(dir.path()).unwrap(), 1, &records[..3], 3);
        log_watermark::write(dir.path(), 5).unwrap();
        let error = recover_dir(dir.path()).unwrap_err();
        assert!(matches!(error, RecoveryError::Watermark(WatermarkError::LogShorter { .. })), "{error}");
    }

    #[test]
    fn a_damaged_history_is_rebuilt_from_a_whole_log_and_refused_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 2);
        let (history, threads) = History::open(dir.path(), settings()).unwrap();
        history.ingest(1, &records).unwrap();
        history.close(threads).unwrap();
        drop(wal);
        let manifest = dir.path().join("history").join("MANIFEST");
        let clean = std::fs::read(&manifest).unwrap();
        let mut damaged = clean.clone();
        let at = damaged.len() - 3;
        damaged[at] ^= 0x40;
        std::fs::write(&manifest, &damaged).unwrap();
        let recovered = recover_dir(dir.path()).unwrap();
        assert_eq!(recovered.ledger, live);
        history_holds(&recovered, &book_of(&records));
        close(recovered);
        assert!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .any(|entry| { entry.unwrap().file_name().to_string_lossy().starts_with("history.damaged-") })
        );
        // Without the log's beginning it cannot be rebuilt: refused.
        write_ledger_snapshot(dir.path(), &live, live.last_seq, 1).unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        assert!(wal.remove_groups_before(live.last_seq).unwrap() > 0);
        drop(wal);
        std::fs::write(&manifest, &damaged).unwrap();
        let error = recover_dir(dir.path()).unwrap_err();
        assert!(matches!(error, RecoveryError::HistoryUnrecoverable { .. }), "{error}");
    }

    #[test]
    fn point_in_time_replay_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        write_log(&wal, 1, &records, 4);
        write_ledger_snapshot(dir.path(), &ledger_of(&records[..2]), 0, 1).unwrap();
        write_ledger_snapshot(dir.path(), &ledger_of(&records[..7]), 0, 1).unwrap();
        let (history, threads) = History::open(dir.path(), settings()).unwrap();
        history.ingest(1, &records).unwrap();
        history.close(threads).unwrap();
        for to_seq in 0..=records.len() as u64 {
            let replayed = replay_data_dir(dir.path(), &wal, Some(to_seq), |_| {}).unwrap();
            assert_eq!(replayed.ledger, ledger_of(&records[..usize::try_from(to_seq).unwrap()]), "to_seq {to_seq}");
            assert_eq!(replayed.to_seq, to_seq);
            assert!(replayed.snapshot.is_none_or(|snapshot| snapshot.seq <= to_seq));
        }
        let error = replay_data_dir(dir.path(), &wal, Some(records.len() as u64 + 1), |_| {}).unwrap_err();
        assert!(matches!(error, RecoveryError::BeyondLog { .. }), "{error}");
        // From an explicit snapshot file plus the source log, into a new data dir.
        let replayed =
            replay_to(Some(&crate::snapshot::snapshot_path(dir.path(), 2)), Some(&wal), Some(5), |_| {}).unwrap();
        assert_eq!((replayed.ledger.last_seq, replayed.replayed_records), (5, 3));
        let target = dir.path().join("restored");
        let source = RestoreSource { wal: Some(&wal), data_dir: Some(dir.path()) };
        let info = restore_into(&target, &replayed, source, 9, settings(), |_, _, _| {}).unwrap();
        assert_eq!(info.seq, 5);
        let again = RestoreSource { wal: Some(&wal), data_dir: Some(dir.path()) };
        assert!(
            restore_into(&target, &replayed, again, 9, settings(), |_, _, _| {}).is_err(),
            "a non-empty target is refused"
        );
        drop(wal);
        let restored = recover_dir(&target).unwrap();
        assert_eq!(restored.ledger, ledger_of(&records[..5]));
        let book = book_of(&records[..5]);
        history_holds(&restored, &book);
        for transfer in book_of(&records).transfers.values().filter(|transfer| transfer.seq > 5) {
            assert!(restored.history.transfer(&transfer.id).unwrap().is_none(), "{} is after the point", transfer.id);
        }
        // The restored dir continues the log at seq 6.
        restored.wal.append(&Group::new(6, records[5..].to_vec())).unwrap();
        close(restored);
        let continued = recover_dir(&target).unwrap();
        assert_eq!(continued.ledger, live);
        history_holds(&continued, &book_of(&records));
        close(continued);
    }

    #[test]
    fn a_restore_from_a_snapshot_alone_seeds_the_history_with_its_open_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (live, records) = sample_ledger();
        // Records 1..=6: accounts, a payment, two holds; the snapshot at 6 is all there is.
        let at_six = ledger_of(&records[..6]);
        assert_eq!(at_six.open_holds.len(), 2);
        let info = write_ledger_snapshot(dir.path(), &at_six, 0, 1).unwrap();
        let elsewhere = dir.path().join("copied.snap");
        std::fs::copy(&info.path, &elsewhere).unwrap();
        let replayed = replay_to(Some(&elsewhere), None, None, |_| {}).unwrap();
        let target = dir.path().join("restored");
        let alone = RestoreSource { wal: None, data_dir: None };
        let restored_info = restore_into(&target, &replayed, alone, 9, settings(), |_, _, _| {}).unwrap();
        assert_eq!(restored_info.seq, 6);
        let restored = recover_dir(&target).unwrap();
        assert_eq!(restored.ledger, at_six);
        assert_eq!(restored.history.complete_from_seq(), 6);
        let book = book_of(&records[..6]);
        for transfer in book.transfers.values() {
            let found = restored.history.transfer(&transfer.id).unwrap();
            if at_six.open_holds.contains_key(&transfer.id) {
                assert_eq!(found.as_deref(), Some(&**transfer));
            } else {
                assert!(found.is_none(), "{} was settled before the snapshot", transfer.id);
            }
        }
        // The rest of the log continues it: the partial post of a hold the history was seeded with.
        restored.wal.append(&Group::new(7, records[6..].to_vec())).unwrap();
        close(restored);
        let continued = recover_dir(&target).unwrap();
        assert_eq!(continued.ledger, live);
        let posted = book_of(&records).transfers.values().find(|transfer| transfer.seq == 5).unwrap().clone();
        assert_eq!(continued.history.transfer(&posted.id).unwrap().as_deref(), Some(&*posted));
        close(continued);
    }

    #[test]
    fn a_restore_never_splits_a_unit() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = sample_ledger();
        let wal = Wal::open(dir.path()).unwrap();
        // Records 4..=6 were one atomic submission.
        wal.append(&Group::new(1, records[..3].to_vec())).unwrap();
        let mut group = Group::new(4, records[3..].to_vec());
        group.units.push(Unit { start: 0, len: 3 });
        wal.append(&group).unwrap();
        for (to_seq, expected) in [(3, 3), (4, 3), (5, 3), (6, 6), (7, 7)] {
            let replayed = replay_data_dir(dir.path(), &wal, Some(to_seq), |_| {}).unwrap();
            assert_eq!(replayed.to_seq, expected, "to seq {to_seq}");
            assert_eq!(replayed.ledger, ledger_of(&records[..usize::try_from(expected).unwrap()]));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn log_then_recover_equals_the_live_ledger(
            ops in ops_strategy(0..150),
            group_len in 1..20_usize,
            snapshot_at in 0..100_usize,
            history_at in 0..150_usize,
        ) {
            let mut live = Ledger::default();
            let mut book = TransferBook::default();
            let records = records_with_book(&ops, &mut live, &mut book);
            let dir = tempfile::tempdir().unwrap();
            let wal = Wal::open(dir.path()).unwrap();
            write_log(&wal, 1, &records, group_len);
            drop(wal);
            if snapshot_at < records.len() {
                write_ledger_snapshot(dir.path(), &ledger_of(&records[..snapshot_at]), 0, 0).unwrap();
            }
            if history_at < records.len() {
                let (history, threads) = History::open(dir.path(), settings()).unwrap();
                history.ingest(1, &records[..history_at]).unwrap();
                history.checkpoint().unwrap();
                drop(threads);
            }
            let recovered = recover(dir.path(), settings(), |_| {}).unwrap();
            prop_assert_eq!(&recovered.ledger, &live);
            prop_assert_eq!(recovered.wal.last_seq(), live.last_seq);
            history_holds(&recovered, &book);
            close(recovered);
        }
    }
}
