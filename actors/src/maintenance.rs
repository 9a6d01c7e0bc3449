//! Snapshots and backups of a serving data dir.
//!
//! [`SnapshotService`] takes the data dir's snapshots one at a time: the periodic ones of
//! [`SnapshotScheduler`] (every `storage.snapshot_interval_seconds`), those asked for by an
//! admin, and those of online backups. A snapshot comes from the live shards
//! ([`LedgerHandle::snapshot_contents`]: each shard encodes its own accounts and open holds while
//! changes wait at the gate for the moment it takes, no second copy of the ledger), is written
//! on a blocking thread, and is followed by the retention of snapshots and log. A failure is
//! logged, counted in `ledger_snapshot_failures_total` and retried at the next interval, never
//! fatal to serving: the log holds everything.
//!
//! [`SnapshotService::backup`] writes a complete, consistent copy of the data dir into another
//! directory without stopping traffic: a snapshot at `S`, the snapshot files up to it, the
//! history as of its watermark (`History::backup_to`), then the log up to its end at that
//! moment (after the history, so the log covers everything the copied history shows), and the
//! log's watermark. `ledgerd verify`, `restore` and `serve` all take the copy as they take a
//! data dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use history::History;
use snapshots::{DataDirLock, Retention, SnapshotInfo, Wal};
use tokio::sync::watch;

use crate::handle::{Clock, LedgerError, LedgerHandle};

/// `ledger_snapshot_failures_total`: periodic snapshots that failed.
pub const SNAPSHOT_FAILURES_TOTAL: &str = "ledger_snapshot_failures_total";
/// `ledger_snapshot_last_success_timestamp_seconds`: when the newest snapshot was written.
pub const SNAPSHOT_LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "ledger_snapshot_last_success_timestamp_seconds";

/// What [`SnapshotService::take`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    /// The snapshot at the last decided record (the newest one, when nothing was new).
    pub info: SnapshotInfo,
    /// Whether a new file was written.
    pub written: bool,
    pub snapshots_removed: usize,
    pub log_groups_removed: u64,
}

/// Why a snapshot or a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The destination of a backup is not acceptable (the caller's mistake).
    #[error("{0}")]
    Destination(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Recovery(#[from] snapshots::RecoveryError),
    #[error(transparent)]
    Snapshot(#[from] snapshots::SnapshotError),
    #[error(transparent)]
    Wal(#[from] snapshots::WalError),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error(transparent)]
    Watermark(#[from] snapshots::WatermarkError),
    #[error("{}: {action}: {source}", .path.display())]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("a maintenance task failed: {0}")]
    Task(String),
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> MaintenanceError {
    let path = path.to_owned();
    move |source| MaintenanceError::Io { path, action, source }
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub destination: PathBuf,
    /// The snapshot at the backup's sequence.
    pub snapshot: SnapshotInfo,
    pub snapshots_copied: usize,
    /// The history's watermark in the copy.
    pub history_seq: u64,
    /// `(first, last)` sequence of the copied log, `None` when the log was empty.
    pub log_range: Option<(u64, u64)>,
    pub log_groups_copied: u64,
    /// Bytes of snapshot files and log written (the history's files are not counted).
    pub bytes: u64,
    pub elapsed: Duration,
}

/// The snapshots and backups of a serving data dir, one at a time.
pub struct SnapshotService {
    data_dir: PathBuf,
    handle: LedgerHandle,
    wal: Wal,
    history: History,
    retention: Retention,
    clock: Clock,
    /// Held while a snapshot (or a backup, which takes one) is made: never two at once.
    busy: tokio::sync::Mutex<()>,
}

impl SnapshotService {
    pub fn new(
        data_dir: PathBuf,
        handle: LedgerHandle,
        wal: Wal,
        history: History,
        retention: Retention,
        clock: Clock,
    ) -> SnapshotService {
        SnapshotService { data_dir, handle, wal, history, retention, clock, busy: tokio::sync::Mutex::new(()) }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A snapshot now, after any in progress; then retention.
    pub async fn take(&self) -> Result<SnapshotTaken, MaintenanceError> {
        let _busy = self.busy.lock().await;
        self.take_while_busy().await
    }

    async fn take_while_busy(&self) -> Result<SnapshotTaken, MaintenanceError> {
        let data_dir = self.data_dir.clone();
        let newest = blocking(move || Ok(snapshots::list_snapshots(&data_dir)?.pop())).await?;
        if let Some(newest) = newest.filter(|newest| newest.seq == self.handle.decided_seq()) {
            return Ok(SnapshotTaken { info: newest, written: false, snapshots_removed: 0, log_groups_removed: 0 });
        }
        let contents = self.handle.snapshot_contents().await?;
        let (data_dir, wal, retention, created_at_ms) =
            (self.data_dir.clone(), self.wal.clone(), self.retention, (self.clock)());
        let history_seq = self.history.durable_seq();
        let (info, retained) = blocking(move || {
            let info = snapshots::write_snapshot(&data_dir, &contents, created_at_ms)?;
            drop(contents);
            let retained = snapshots::apply_retention(&data_dir, &wal, history_seq, retention)?;
            Ok((info, retained))
        })
        .await?;
        record_snapshot_time(info.created_at_ms);
        Ok(SnapshotTaken {
            info,
            written: true,
            snapshots_removed: retained.snapshots_removed,
            log_groups_removed: retained.log_groups_removed,
        })
    }

    /// Writes a backup of the data dir into `destination` (an absolute path outside the data
    /// dir that does not exist or is empty); a failed backup is removed again.
    pub async fn backup(&self, destination: &Path) -> Result<BackupReport, MaintenanceError> {
        let started = Instant::now();
        check_destination(&self.data_dir, destination)?;
        let created = !destination.exists();
        let lock =
            DataDirLock::acquire(destination).map_err(|error| MaintenanceError::Destination(error.to_string()))?;
        let _busy = self.busy.lock().await;
        let result = match self.take_while_busy().await {
            Ok(taken) => {
                let (data_dir, wal, history, target) =
                    (self.data_dir.clone(), self.wal.clone(), self.history.clone(), destination.to_owned());
                blocking(move || copy_data_dir(&data_dir, &wal, &history, &target, taken.info, started)).await
            }
            Err(error) => Err(error),
        };
        drop(lock);
        if result.is_err() {
            remove_failed_backup(destination, created);
        }
        result
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MaintenanceError> + Send + 'static,
) -> Result<T, MaintenanceError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| MaintenanceError::Task(error.to_string()))?
}

/// Checks that `destination` may receive a backup of `data_dir`.
fn check_destination(data_dir: &Path, destination: &Path) -> Result<(), MaintenanceError> {
    let refuse = |reason: String| Err(MaintenanceError::Destination(reason));
    if !destination.is_absolute() {
        return refuse(format!("destination {} must be an absolute path", destination.display()));
    }
    let data_dir = data_dir.canonicalize().map_err(io_error(data_dir, "resolve the data dir"))?;
    // The nearest existing ancestor, resolved, must not be inside the data dir.
    let mut existing = destination;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    let resolved = existing.canonicalize().map_err(io_error(existing, "resolve the destination"))?;
    if resolved.starts_with(&data_dir) {
        return refuse(format!("destination {} is inside the data dir", destination.display()));
    }
    match std::fs::read_dir(destination) {
        Ok(mut entries) => match entries.next() {
            // The lock file a refused attempt left is no content.
            Some(Ok(entry)) if entry.file_name() == "LOCK" && entries.next().is_none() => Ok(()),
            Some(_) => refuse(format!("destination {} must not exist or be empty", destination.display())),
            None => Ok(()),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => refuse(format!("destination {}: {error}", destination.display())),
    }
}

/// Never leaves a partial backup that could be taken for a whole one.
fn remove_failed_backup(destination: &Path, created: bool) {
    let cleanup = if created {
        std::fs::remove_dir_all(destination)
    } else {
        std::fs::read_dir(destination).and_then(|entries| {
            entries.filter_map(Result::ok).try_for_each(|entry| {
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())
                } else {
                    std::fs::remove_file(entry.path())
                }
            })
        })
    };
    if let Err(error) = cleanup {
        tracing::error!(%error, destination = %destination.display(), "cannot remove a failed backup");
    }
}

/// The copy itself: snapshot files up to the backup's, the history, then the log to its end.
fn copy_data_dir(
    data_dir: &Path,
    wal: &Wal,
    history: &History,
    destination: &Path,
    snapshot: SnapshotInfo,
    started: Instant,
) -> Result<BackupReport, MaintenanceError> {
    let seq = snapshot.seq;
    let mut bytes = 0;
    let target_dir = snapshots::snapshots_dir(destination);
    std::fs::create_dir_all(&target_dir).map_err(io_error(&target_dir, "create the directory"))?;
    let mut snapshots_copied = 0;
    for (file_seq, path) in snapshots::snapshot_files(data_dir)? {
        if file_seq > seq {
            continue;
        }
        let name = path.file_name().and_then(|name| name.to_str()).expect("a snapshot file has a name").to_owned();
        let contents = std::fs::read(&path).map_err(io_error(&path, "read"))?;
        bytes += u64::try_from(contents.len()).expect("fits");
        durable::replace_file_with_bytes(&target_dir, &name, &contents).map_err(io_error(&target_dir, "write"))?;
        snapshots::read_snapshot_info(&target_dir.join(&name))?;
        snapshots_copied += 1;
    }
    let history_seq = history.backup_to(&History::dir_of(destination))?;
    // The log as it is now: it reaches past the snapshot and past every change the history's
    // copy shows.
    let copy = Wal::open(destination)?;
    let mut log_groups_copied = 0;
    let mut log_range = None;
    let end = wal.last_seq();
    if let Some(first) = wal.first_seq() {
        for group in wal.groups_from(first) {
            let group = group?;
            if group.first_seq > end {
                break;
            }
            let encoded = snapshots::EncodedGroup::from_group(&group);
            bytes += u64::try_from(encoded.bytes().len()).expect("a length fits in u64");
            copy.append_encoded(&encoded)?;
            log_groups_copied += 1;
            log_range = Some((log_range.map_or(group.first_seq, |(first, _)| first), group.last_seq()));
            if group.last_seq() >= end {
                break;
            }
        }
    }
    drop(copy);
    snapshots::log_watermark::write(destination, log_range.map_or(0, |(_, last)| last))?;
    durable::sync_dir(destination).map_err(io_error(destination, "fsync the directory"))?;
    let report = BackupReport {
        destination: destination.to_owned(),
        snapshot,
        snapshots_copied,
        history_seq,
        log_range,
        log_groups_copied,
        bytes,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        destination = %report.destination.display(),
        seq,
        history_seq,
        snapshots = report.snapshots_copied,
        log_groups = report.log_groups_copied,
        bytes = report.bytes,
        elapsed_ms = report.elapsed.as_millis(),
        "backup written"
    );
    Ok(report)
}

/// The task taking periodic snapshots. Stopped by [`SnapshotScheduler::stop`] after the
/// snapshot in progress, if any.
pub struct SnapshotScheduler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SnapshotScheduler {
    /// Starts the task, or returns `None` when `interval` is zero (snapshots only on demand).
    pub fn start(interval: Duration, service: Arc<SnapshotService>) -> Option<SnapshotScheduler> {
        if interval.is_zero() {
            tracing::info!("periodic snapshots are off (storage.snapshot_interval_seconds = 0)");
            return None;
        }
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
                let started = Instant::now();
                match service.take().await {
                    Ok(taken) if taken.written => tracing::info!(
                        id = %taken.info.id,
                        seq = taken.info.seq,
                        bytes = taken.info.bytes,
                        snapshots_removed = taken.snapshots_removed,
                        log_groups_removed = taken.log_groups_removed,
                        elapsed_ms = started.elapsed().as_millis(),
                        "periodic snapshot"
                    ),
                    Ok(_) => tracing::debug!("no new record since the newest snapshot"),
                    Err(error) => {
                        metrics::counter!(SNAPSHOT_FAILURES_TOTAL).increment(1);
                        tracing::error!(%error, "periodic snapshot failed; the log still holds everything, retrying at the next interval");
                    }
                }
            }
        });
        Some(SnapshotScheduler { stop, task })
    }

    /// Stops the task after the snapshot in progress, and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Sets `ledger_snapshot_last_success_timestamp_seconds`.
pub fn record_snapshot_time(created_at_ms: i64) {
    metrics::gauge!(SNAPSHOT_LAST_SUCCESS_TIMESTAMP_SECONDS).set(milliseconds_as_seconds(created_at_ms));
}

/// Milliseconds since the epoch as seconds, for a gauge.
fn milliseconds_as_seconds(milliseconds: i64) -> f64 {
    // Seconds fit in a u32 until the year 2106; earlier than the epoch reads as 0.
    if milliseconds < 0 {
        return 0.0;
    }
    let whole_seconds = u32::try_from(milliseconds.div_euclid(1000)).map_or(0.0, f64::from);
    let millis = u32::try_from(milliseconds.rem_euclid(1000)).map_or(0.0, f64::from);
    whole_seconds + millis / 1000.0
}

#[cfg(test)]
mod tests {
    use super::milliseconds_as_seconds;

    #[test]
    fn seconds_of_milliseconds() {
        assert!((milliseconds_as_seconds(1_700_000_000_250) - 1_700_000_000.25).abs() < 1e-3);
        assert!(milliseconds_as_seconds(0).abs() < f64::EPSILON);
        assert!(milliseconds_as_seconds(-5).abs() < f64::EPSILON);
    }
}
