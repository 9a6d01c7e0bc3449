//! Snapshots while serving, and the one way this crate builds a snapshot.
//!
//! This module owns [`take_snapshot`] (newest sound snapshot + the log up to its last durable
//! record, folded on the calling thread, written as a new snapshot, then the retention of
//! snapshots and log), used by `ledgerd snapshot create`; [`SnapshotService`], which takes a
//! serving data dir's snapshots one at a time (periodic ones, and those of online backups);
//! and [`SnapshotScheduler`], the thread that takes one every
//! `storage.snapshot_interval_seconds` while the server runs.
//!
//! A periodic snapshot never pauses the writers: it reads the log through a clone of the
//! server's open [`Wal`] (sled serves reads while the committer appends) and folds it into a
//! ledger of its own, so the actors and the committer do not even know it runs. Only records
//! already durable are folded ([`Wal::last_seq`] is published after the fsync). One thread
//! takes every snapshot of a server, so two never overlap; a failure is logged as an error,
//! counted in `ledger_snapshot_failures_total`, and retried at the next tick, never fatal to
//! serving (the log still has everything).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use config::Config;
use snapshots::{RecoveryError, RecoveryProgress, Retention, SnapshotInfo, Wal};

use crate::background_thread::BackgroundThread;

/// `ledger_snapshot_failures_total`: periodic snapshots that failed.
pub const SNAPSHOT_FAILURES_TOTAL: &str = "ledger_snapshot_failures_total";
/// `ledger_snapshot_last_success_timestamp_seconds`: when the newest snapshot was written (at
/// start: the newest file's time, or the start itself when there is no snapshot yet).
pub const SNAPSHOT_LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "ledger_snapshot_last_success_timestamp_seconds";

/// The retention settings of `config`.
pub fn retention(config: &Config) -> Retention {
    Retention {
        snapshots_kept: config.storage.snapshots_kept,
        wal_retention_snapshots: config.storage.wal_retention_snapshots,
    }
}

/// What [`take_snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    /// The snapshot at the log's last record (the newest one, when nothing was new).
    pub info: SnapshotInfo,
    /// Whether a new file was written (false: the newest snapshot was already at the end of
    /// the log).
    pub written: bool,
    /// Snapshot files deleted by retention.
    pub snapshots_removed: usize,
    /// Log groups deleted by retention.
    pub log_groups_removed: u64,
}

/// Folds the newest sound snapshot of `data_dir` and `wal` up to the log's last durable
/// record into a new snapshot (unless the newest snapshot is already there), then applies
/// `retention`: all but the `snapshots_kept` newest snapshots are deleted, and with
/// `wal_retention_snapshots = N > 0` the log groups wholly covered by the Nth newest snapshot.
pub fn take_snapshot(
    data_dir: &Path,
    wal: &Wal,
    created_at_ms: i64,
    retention: Retention,
    progress: impl FnMut(RecoveryProgress),
) -> Result<SnapshotTaken, RecoveryError> {
    // Everything up to the log's last record is durable; later appends wait for the next one.
    let to_seq = if wal.is_empty() { None } else { Some(wal.last_seq()) };
    let (ledger, base, _) = snapshots::replay_data_dir(data_dir, wal, to_seq, progress)?;
    let (info, written) = match base {
        Some(base) if base.seq == ledger.last_seq => (base, false),
        _ => (snapshots::write_snapshot(data_dir, &ledger, created_at_ms)?, true),
    };
    drop(ledger);
    let snapshots_removed = snapshots::prune(data_dir, retention.snapshots_kept)?.len();
    let mut log_groups_removed = 0;
    if retention.wal_retention_snapshots > 0 {
        let files = snapshots::snapshot_files(data_dir)?;
        if let Some(index) = files.len().checked_sub(retention.wal_retention_snapshots) {
            let covered_seq = files[index].0;
            log_groups_removed = wal.remove_groups_before(covered_seq + 1)?;
            tracing::info!(removed = log_groups_removed, covered_seq, "log groups dropped by retention");
        }
    }
    Ok(SnapshotTaken { info, written, snapshots_removed, log_groups_removed })
}

/// The snapshots of a serving data dir: periodic ([`SnapshotScheduler`]) and on demand (an
/// online backup), one at a time.
pub struct SnapshotService {
    data_dir: PathBuf,
    wal: Wal,
    retention: Retention,
    /// Milliseconds since the epoch, for `created_at`.
    clock: actors::Clock,
    /// Held while a snapshot (or a backup, which takes one) is built: never two at once.
    busy: Mutex<()>,
}

impl SnapshotService {
    pub fn new(data_dir: PathBuf, wal: Wal, retention: Retention, clock: actors::Clock) -> SnapshotService {
        SnapshotService { data_dir, wal, retention, clock, busy: Mutex::new(()) }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Milliseconds since the epoch, by the service's clock.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Waits for the snapshot in progress, if any, and holds off others until dropped.
    pub fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`take_snapshot`] now, after any snapshot in progress. The caller must not hold
    /// [`exclusive`](Self::exclusive).
    pub fn take(&self) -> Result<SnapshotTaken, RecoveryError> {
        let _busy = self.exclusive();
        self.take_while_exclusive()
    }

    /// [`take_snapshot`] for a caller holding [`exclusive`](Self::exclusive).
    pub fn take_while_exclusive(&self) -> Result<SnapshotTaken, RecoveryError> {
        let taken = take_snapshot(&self.data_dir, &self.wal, self.now_ms(), self.retention, |_| {})?;
        record_snapshot_time(taken.info.created_at_ms);
        Ok(taken)
    }
}

/// The thread taking periodic snapshots of a serving data dir. Stopped (and joined) by
/// [`SnapshotScheduler::stop`] or on drop; a snapshot in progress is finished first.
pub struct SnapshotScheduler {
    thread: BackgroundThread,
}

/// What the scheduler needs besides the service.
pub struct SchedulerSettings {
    pub interval: Duration,
    /// Sequence of the newest snapshot at start (0 = none): nothing is written until the log
    /// has moved past it.
    pub snapshot_seq: u64,
}

impl SnapshotScheduler {
    /// Starts the thread, or returns `None` when `interval` is zero (snapshots only on
    /// demand). Panics if the OS refuses to start a thread.
    pub fn start(settings: SchedulerSettings, service: Arc<SnapshotService>) -> Option<SnapshotScheduler> {
        if settings.interval.is_zero() {
            tracing::info!("periodic snapshots are off (storage.snapshot_interval_seconds = 0)");
            return None;
        }
        let thread = BackgroundThread::spawn("ledger-snapshots", move |stopped| run(&settings, &service, &stopped));
        Some(SnapshotScheduler { thread })
    }

    /// Stops the thread after the snapshot in progress, if any, and waits for it.
    pub fn stop(self) {
        self.thread.stop();
    }
}

fn run(settings: &SchedulerSettings, service: &SnapshotService, stopped: &mpsc::Receiver<()>) {
    let mut snapshot_seq = settings.snapshot_seq;
    loop {
        match stopped.recv_timeout(settings.interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if service.wal().last_seq() <= snapshot_seq {
            tracing::debug!(snapshot_seq, "no new log record since the newest snapshot; skipping");
            continue;
        }
        let started = Instant::now();
        match service.take() {
            Ok(taken) => {
                snapshot_seq = taken.info.seq;
                tracing::info!(
                    id = %taken.info.id,
                    seq = taken.info.seq,
                    bytes = taken.info.bytes,
                    snapshots_removed = taken.snapshots_removed,
                    log_groups_removed = taken.log_groups_removed,
                    elapsed_ms = started.elapsed().as_millis(),
                    "periodic snapshot"
                );
            }
            Err(error) => {
                metrics::counter!(SNAPSHOT_FAILURES_TOTAL).increment(1);
                tracing::error!(%error, "periodic snapshot failed; the log still holds everything, retrying at the next interval");
            }
        }
    }
}

/// Sets `ledger_snapshot_last_success_timestamp_seconds`.
pub fn record_snapshot_time(created_at_ms: i64) {
    metrics::gauge!(SNAPSHOT_LAST_SUCCESS_TIMESTAMP_SECONDS).set(milliseconds_as_seconds(created_at_ms));
}

/// Milliseconds since the epoch as seconds, for a gauge.
fn milliseconds_as_seconds(milliseconds: i64) -> f64 {
    // Seconds fit in a u32 until the year 2106; earlier than the epoch reads as 0.
    let whole_seconds = u32::try_from(milliseconds.div_euclid(1000)).map_or(0.0, f64::from);
    let millis = u32::try_from(milliseconds.rem_euclid(1000)).map_or(0.0, f64::from);
    whole_seconds + millis / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::record::{Group, Record};
    use engine::{Currency, Id, Overdraft};

    fn id(text: &str) -> Id {
        Id::parse(text).unwrap()
    }

    fn records(transfers: usize) -> Vec<Record> {
        let usd = Currency::new("USD", 2);
        let mut records = vec![
            Record::CreateAccount {
                id: id("bank"),
                currency: usd.clone(),
                overdraft: Overdraft::Unlimited,
                metadata: Default::default(),
                created_at_ms: 1,
            },
            Record::CreateAccount {
                id: id("alice"),
                currency: usd.clone(),
                overdraft: Overdraft::Limited(engine::Amount::ZERO),
                metadata: Default::default(),
                created_at_ms: 1,
            },
        ];
        for index in 0..transfers {
            records.push(Record::CreateTransfer {
                id: id(&format!("t-{index}")),
                debit_account: id("bank"),
                credit_account: id("alice"),
                amount: engine::Amount::from_minor_units(i128::try_from(index).unwrap() + 1),
                currency: usd.clone(),
                pending: false,
                timeout_seconds: 0,
                description: String::new(),
                metadata: Default::default(),
                created_at_ms: 2,
            });
        }
        records
    }

    #[test]
    fn take_snapshot_writes_once_then_applies_retention() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let all = records(12);
        let retention = Retention { snapshots_kept: 2, wal_retention_snapshots: 1 };
        let mut seq = 1;
        let mut taken = Vec::new();
        for chunk in all.chunks(4) {
            wal.append(&Group { first_seq: seq, records: chunk.to_vec() }).unwrap();
            seq += u64::try_from(chunk.len()).unwrap();
            let result = take_snapshot(dir.path(), &wal, 5, retention, |_| {}).unwrap();
            assert!(result.written);
            assert_eq!(result.info.seq, wal.last_seq());
            taken.push(result);
        }
        // Nothing new: the newest snapshot is the answer, nothing written.
        let again = take_snapshot(dir.path(), &wal, 6, retention, |_| {}).unwrap();
        assert!(!again.written);
        assert_eq!(again.info, taken.last().unwrap().info);
        let kept: Vec<u64> = snapshots::list_snapshots(dir.path()).unwrap().iter().map(|info| info.seq).collect();
        assert_eq!(kept, [taken[2].info.seq, taken[3].info.seq]);
        assert!(taken.iter().map(|taken| taken.snapshots_removed).sum::<usize>() >= 2);
        // The log before the newest snapshot's group is gone; recovery still gives everything.
        assert!(wal.first_seq().unwrap() > 1);
        drop(wal);
        let recovered = snapshots::recover(dir.path(), |_| {}).unwrap();
        assert_eq!(recovered.ledger.last_seq, 14);
        assert_eq!(recovered.ledger.transfers.len(), 12);
    }

    #[test]
    fn the_scheduler_snapshots_while_the_log_grows_and_stops_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let all = records(30);
        let service = Arc::new(SnapshotService::new(
            dir.path().to_owned(),
            wal.clone(),
            Retention { snapshots_kept: 3, wal_retention_snapshots: 0 },
            Arc::new(|| 1_700_000_000_000),
        ));
        let settings = SchedulerSettings { interval: Duration::from_millis(20), snapshot_seq: 0 };
        let scheduler = SnapshotScheduler::start(settings, service).unwrap();
        let mut seq = 1;
        for chunk in all.chunks(8) {
            wal.append(&Group { first_seq: seq, records: chunk.to_vec() }).unwrap();
            seq += u64::try_from(chunk.len()).unwrap();
            // Poll (with a deadline) until a snapshot reaches the log's end.
            let deadline = Instant::now() + Duration::from_secs(20);
            while snapshots::list_snapshots(dir.path()).unwrap().last().is_none_or(|info| info.seq < wal.last_seq()) {
                assert!(Instant::now() < deadline, "no snapshot reached seq {}", wal.last_seq());
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let started = Instant::now();
        scheduler.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
        let newest = snapshots::list_snapshots(dir.path()).unwrap().pop().unwrap();
        assert_eq!(newest.seq, 32);
        assert_eq!(newest.created_at_ms, 1_700_000_000_000);
        assert!(snapshots::list_snapshots(dir.path()).unwrap().len() <= 3);
        let (_, ledger) = snapshots::read_snapshot(&newest.path).unwrap();
        assert_eq!(ledger.transfers.len(), 30);
    }

    #[test]
    fn a_zero_interval_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let service = Arc::new(SnapshotService::new(
            dir.path().to_owned(),
            wal,
            Retention { snapshots_kept: 1, wal_retention_snapshots: 0 },
            Arc::new(|| 0),
        ));
        let settings = SchedulerSettings { interval: Duration::ZERO, snapshot_seq: 0 };
        assert!(SnapshotScheduler::start(settings, service).is_none());
    }

    #[test]
    fn seconds_of_milliseconds() {
        assert!((milliseconds_as_seconds(1_700_000_000_250) - 1_700_000_000.25).abs() < 1e-3);
        assert!(milliseconds_as_seconds(0).abs() < f64::EPSILON);
    }
}
