//! Online backups: a complete, consistent copy of a serving data dir, written by the server
//! into another directory without stopping traffic (`POST /v1/admin/backup`).
//!
//! This module owns [`write_backup`] and what it reports. A backup is itself a data dir, at
//! one log sequence `S`:
//!
//! 1. a snapshot at `S` is taken from the log (as the periodic ones are, with no pause of the
//!    writers), holding off any other snapshot until the backup is done, so retention cannot
//!    delete a file or a log group being copied;
//! 2. every snapshot file of the data dir up to `S` is copied (temporary name, fsync, rename,
//!    directory fsync) into `<destination>/snapshots/`;
//! 3. every log group up to `S` is re-appended, verified, to a new log in
//!    `<destination>/wal/` (each append fsynced, as live);
//! 4. `<destination>/LOG_WATERMARK` records `S`.
//!
//! So `ledgerd verify --data-dir DEST` checks it, `ledgerd restore --from
//! DEST/snapshots/... [--to-seq N]` restores any point the copied log covers, and `ledgerd
//! serve --data-dir DEST` serves it. The destination must be an absolute path outside the
//! data dir that does not exist or is empty; it is locked while written, and removed again if
//! the backup fails, so a destination that exists afterwards holds a complete backup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use snapshots::{DataDirLock, SnapshotInfo, Wal};

use crate::log_watermark;
use crate::snapshot_scheduler::SnapshotService;

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub destination: PathBuf,
    /// The snapshot at the backup's sequence.
    pub snapshot: SnapshotInfo,
    /// Snapshot files copied (the newest included).
    pub snapshots_copied: usize,
    /// `(first, last)` sequence of the copied log, `None` when the log was empty.
    pub log_range: Option<(u64, u64)>,
    pub log_groups_copied: u64,
    /// Bytes written: snapshot files plus log payload.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Why a backup was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination is not acceptable (the caller's mistake).
    #[error("{0}")]
    Destination(String),
    #[error(transparent)]
    Snapshot(#[from] snapshots::RecoveryError),
    #[error(transparent)]
    SnapshotFile(#[from] snapshots::SnapshotError),
    #[error(transparent)]
    Wal(#[from] snapshots::WalError),
    #[error(transparent)]
    Watermark(#[from] log_watermark::WatermarkError),
    #[error("{}: {action}: {source}", .path.display())]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::Io { path, action, source }
}

/// Checks that `destination` may receive a backup of `data_dir`.
fn check_destination(data_dir: &Path, destination: &Path) -> Result<(), BackupError> {
    let refuse = |reason: String| Err(BackupError::Destination(reason));
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
            Some(_) => refuse(format!("destination {} must not exist or be empty", destination.display())),
            None => Ok(()),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => refuse(format!("destination {}: {error}", destination.display())),
    }
}

/// Writes a backup of the data dir `service` serves into `destination`.
pub fn write_backup(service: &SnapshotService, destination: &Path) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    check_destination(service.data_dir(), destination)?;
    let created = !destination.exists();
    let result = write_into(service, destination, started);
    if result.is_err() && destination.exists() {
        // Never leave a partial backup that could be taken for a whole one.
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
    result
}

fn write_into(service: &SnapshotService, destination: &Path, started: Instant) -> Result<BackupReport, BackupError> {
    let lock = DataDirLock::acquire(destination).map_err(|error| BackupError::Destination(error.to_string()))?;
    let _busy = service.exclusive();
    let taken = service.take_while_exclusive()?;
    let seq = taken.info.seq;
    let mut bytes = 0;

    // The snapshot files up to the backup's sequence.
    let target_dir = snapshots::snapshots_dir(destination);
    std::fs::create_dir_all(&target_dir).map_err(io_error(&target_dir, "create the directory"))?;
    let mut snapshots_copied = 0;
    for (file_seq, path) in snapshots::snapshot_files(service.data_dir())? {
        if file_seq > seq {
            continue;
        }
        let name = path.file_name().expect("a snapshot file has a name");
        let target = target_dir.join(name);
        let temporary = target.with_extension("tmp");
        bytes += std::fs::copy(&path, &temporary).map_err(io_error(&path, "copy"))?;
        std::fs::File::open(&temporary).and_then(|file| file.sync_all()).map_err(io_error(&temporary, "fsync"))?;
        std::fs::rename(&temporary, &target).map_err(io_error(&target, "rename"))?;
        snapshots::read_snapshot_info(&target)?;
        snapshots_copied += 1;
    }
    sync_dir(&target_dir)?;

    // The log up to the backup's sequence, each group verified on the way.
    let source = service.wal();
    let copy = Wal::open(destination)?;
    let mut log_groups_copied = 0;
    let mut log_range = None;
    if let Some(first) = source.first_seq() {
        for group in source.groups_from(first) {
            let mut group = group?;
            if group.first_seq > seq {
                break;
            }
            if group.last_seq() > seq {
                let keep = usize::try_from(seq - group.first_seq + 1).expect("a group's length fits in usize");
                group.records.truncate(keep);
            }
            let encoded = snapshots::EncodedGroup::from_group(&group);
            bytes += u64::try_from(encoded.bytes().len()).expect("a length fits in u64");
            copy.append_encoded(&encoded)?;
            log_groups_copied += 1;
            log_range = Some((log_range.map_or(group.first_seq, |(first, _)| first), group.last_seq()));
            if group.last_seq() >= seq {
                break;
            }
        }
    }
    drop(copy);
    log_watermark::write(destination, log_range.map_or(0, |(_, last)| last))?;
    sync_dir(destination)?;
    drop(lock);
    let report = BackupReport {
        destination: destination.to_owned(),
        snapshot: taken.info,
        snapshots_copied,
        log_range,
        log_groups_copied,
        bytes,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        destination = %report.destination.display(),
        seq,
        snapshots = report.snapshots_copied,
        log_groups = report.log_groups_copied,
        bytes = report.bytes,
        elapsed_ms = report.elapsed.as_millis(),
        "backup written"
    );
    Ok(report)
}

fn sync_dir(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path).and_then(|dir| dir.sync_all()).map_err(io_error(path, "fsync the directory"))
}
