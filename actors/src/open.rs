//! The one way to open a ledger: [`open`] locks the data dir, recovers it (snapshot, log,
//! history), and starts everything that runs while it is open, in order: the log's watermark
//! keeper, the history's ingest thread, the committer (which hands every durable group to the
//! ingest thread through a bounded queue), the shard actors, the snapshot service and its
//! periodic scheduler. [`OpenLedger::close`] stops them in the reverse order, writing what was
//! decided, ingesting it, and checkpointing the history, so that the next start reads little
//! log. `serve`, the offline commands, the benches and the tests all open a ledger this way.
//!
//! The ingest thread is off the commit path: a group is acknowledged once it is durable in the
//! log, and the history ingests it right after. When the history falls behind by
//! [`INGEST_QUEUE_GROUPS`] groups, the committer waits (backpressure, bounded memory); when the
//! history fails, the committer stops as on a failed write, and a restart re-derives the
//! history from the log.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use engine::Record;
use history::{History, HistorySettings, HistoryThreads};
use snapshots::{
    CommitterSettings, DataDirLock, DurableSink, RecoveryProgress, Retention, SnapshotInfo, WalError, WatermarkKeeper,
};

use crate::handle::{Clock, LedgerHandle, LedgerSettings};
use crate::maintenance::{SnapshotScheduler, SnapshotService};

/// Durable groups queued for the history's ingest thread at most.
pub const INGEST_QUEUE_GROUPS: usize = 64;

/// Everything [`open`] needs.
#[derive(Clone)]
pub struct OpenSettings {
    pub data_dir: PathBuf,
    pub ledger: LedgerSettings,
    pub committer: CommitterSettings,
    pub history: HistorySettings,
    /// Between periodic snapshots; zero: only on demand.
    pub snapshot_interval: Duration,
    pub retention: Retention,
    /// How often the log's watermark is written while the log moves.
    pub watermark_period: Duration,
    /// For snapshots' `created_at`.
    pub clock: Clock,
}

/// Why a ledger could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data dir {}: {source}", .path.display())]
    CreateDataDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Lock(String),
    #[error("cannot recover data dir {}: {source}", .path.display())]
    Recovery { path: PathBuf, source: Box<snapshots::RecoveryError> },
    #[error("cannot start the ledger: {0}")]
    Start(String),
}

/// What the recovery found, for the start's log line and metrics.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub snapshot: Option<SnapshotInfo>,
    pub last_seq: u64,
    pub replayed_records: u64,
    pub reingested_records: u64,
    pub accounts: usize,
}

/// An open ledger and everything that runs while it is open.
pub struct OpenLedger {
    pub handle: LedgerHandle,
    pub snapshots: Arc<SnapshotService>,
    pub recovery: Recovery,
    history: History,
    history_threads: Option<HistoryThreads>,
    committer: Option<JoinHandle<Result<(), WalError>>>,
    ingest: Option<JoinHandle<()>>,
    scheduler: Option<SnapshotScheduler>,
    watermark: Option<WatermarkKeeper>,
    _lock: DataDirLock,
}

/// The committer's sink: durable groups to the ingest thread, waiting when its queue is full.
struct IngestQueue(mpsc::SyncSender<(u64, Vec<Vec<Record>>)>);

impl DurableSink for IngestQueue {
    fn durable(&mut self, first_seq: u64, items: Vec<Vec<Record>>) -> Result<(), String> {
        self.0.send((first_seq, items)).map_err(|_| "the history stopped taking records; see the log above".to_owned())
    }
}

/// Opens the ledger of `settings.data_dir` (created when missing); `progress` hears the
/// recovery's progress (on a blocking thread).
pub async fn open(
    settings: OpenSettings,
    progress: impl FnMut(RecoveryProgress) + Send + 'static,
) -> Result<OpenLedger, OpenError> {
    let lock = lock_data_dir(&settings.data_dir)?;
    open_locked(settings, lock, progress).await
}

/// Creates the data dir when missing and locks it against a second process.
pub fn lock_data_dir(data_dir: &std::path::Path) -> Result<DataDirLock, OpenError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| OpenError::CreateDataDir { path: data_dir.to_owned(), source })?;
    DataDirLock::acquire(data_dir).map_err(|error| OpenError::Lock(one_line(&error.to_string())))
}

/// [`open`] of a data dir the caller locked already ([`lock_data_dir`]; `serve` locks it
/// before it binds, so that a second server fails before taking the port).
pub async fn open_locked(
    settings: OpenSettings,
    lock: DataDirLock,
    progress: impl FnMut(RecoveryProgress) + Send + 'static,
) -> Result<OpenLedger, OpenError> {
    let data_dir = settings.data_dir.clone();
    let recovering = data_dir.clone();
    let history_settings = settings.history;
    let recovered = tokio::task::spawn_blocking(move || snapshots::recover(&recovering, history_settings, progress))
        .await
        .map_err(|error| OpenError::Start(error.to_string()))?
        .map_err(|source| OpenError::Recovery { path: data_dir.clone(), source: Box::new(source) })?;
    let recovery = Recovery {
        snapshot: recovered.snapshot.clone(),
        last_seq: recovered.ledger.last_seq,
        replayed_records: recovered.replayed_records,
        reingested_records: recovered.reingested_records,
        accounts: recovered.ledger.accounts.len(),
    };
    let watermark = WatermarkKeeper::start(data_dir.clone(), recovered.wal.clone(), settings.watermark_period)
        .map_err(|error| OpenError::Start(one_line(&error.to_string())))?;
    let history = recovered.history.clone();
    let (queue, queued) = mpsc::sync_channel::<(u64, Vec<Vec<Record>>)>(INGEST_QUEUE_GROUPS);
    let ingesting = history.clone();
    let ingest = std::thread::Builder::new()
        .name("history-ingest".to_owned())
        .spawn(move || {
            for (first_seq, items) in queued {
                let records: Vec<Record> = items.into_iter().flatten().collect();
                if let Err(error) = ingesting.ingest(first_seq, &records) {
                    tracing::error!(%error, "the history cannot ingest the log; the ledger stops taking writes");
                    return;
                }
            }
        })
        .map_err(|error| OpenError::Start(error.to_string()))?;
    let next_seq = recovered.ledger.last_seq + 1;
    let wal = recovered.wal.clone();
    let (commit, committer) =
        snapshots::Committer::start_with_sink(recovered.wal, next_seq, settings.committer, IngestQueue(queue));
    let handle =
        match LedgerHandle::start(settings.ledger.clone(), recovered.ledger, commit.clone(), history.clone()).await {
            Ok(handle) => handle,
            Err(error) => {
                commit.close();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = committer.join();
                    let _ = ingest.join();
                })
                .await;
                let _ = history.close(recovered.history_threads);
                return Err(OpenError::Start(one_line(&error.to_string())));
            }
        };
    let snapshots = Arc::new(SnapshotService::new(
        data_dir.clone(),
        handle.clone(),
        wal,
        history.clone(),
        settings.retention,
        settings.clock.clone(),
    ));
    let scheduler = SnapshotScheduler::start(settings.snapshot_interval, snapshots.clone());
    Ok(OpenLedger {
        handle,
        snapshots,
        recovery,
        history,
        history_threads: Some(recovered.history_threads),
        committer: Some(committer),
        ingest: Some(ingest),
        scheduler,
        watermark: Some(watermark),
        _lock: lock,
    })
}

impl OpenLedger {
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Stops everything in order: the snapshot scheduler (after the snapshot in progress), the
    /// actors (they finish what is in flight), the committer (it writes what was decided), the
    /// ingest thread (it ingests what was written), the history (a last checkpoint), the
    /// watermark keeper (the log's final end); then releases the data dir.
    pub async fn close(self) {
        self.stop(true).await;
    }

    /// [`OpenLedger::close`] without the history's last checkpoint: the history stays at its
    /// previous watermark, as after a crash between the log's last write and the history's
    /// next checkpoint, and the next start ingests the rest of the log again. For tests.
    pub async fn close_leaving_history_behind(self) {
        self.stop(false).await;
    }

    async fn stop(mut self, checkpoint_history: bool) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.stop().await;
        }
        self.handle.shutdown().await;
        let committer = self.committer.take();
        let ingest = self.ingest.take();
        let history = self.history.clone();
        let history_threads = self.history_threads.take();
        let watermark = self.watermark.take();
        let stopped = tokio::task::spawn_blocking(move || {
            match committer.map(JoinHandle::join) {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(error))) => tracing::error!(%error, "the committer stopped with an error"),
                Some(Err(_)) => tracing::error!("the committer thread panicked"),
            }
            if ingest.map(JoinHandle::join).is_some_and(|joined| joined.is_err()) {
                tracing::error!("the history's ingest thread panicked");
            }
            match history_threads {
                Some(threads) if checkpoint_history => {
                    if let Err(error) = history.close(threads) {
                        tracing::error!(%error, "the history's last checkpoint failed; the next start ingests the log again");
                    }
                }
                threads => drop(threads),
            }
            if let Some(watermark) = watermark {
                watermark.stop();
            }
        })
        .await;
        if stopped.is_err() {
            tracing::error!("stopping the ledger's threads failed");
        }
    }
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
