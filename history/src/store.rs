//! [`History`]: the store, its memory, its checkpoints and its reads.
//!
//! Records are ingested in log order into the active *memtable* (in memory, readable at once).
//! A checkpoint freezes the memtable and, on the checkpoint thread, appends it to the files,
//! writes the new index runs and heads, applies the status changes of older holds in place,
//! syncs everything and then the manifest, whose watermark is the last sequence it covers.
//! Readers see the active memtable, the frozen one being written, and the files. A merge
//! thread folds index runs of similar size together.
//!
//! Memory: the accounts' directory and heads (proportional to the accounts), the memtables
//! (bounded by the checkpoint thresholds: ingesting waits when a frozen memtable is still
//! being written and the active one has reached twice the threshold), each run's filter and
//! fences and the page index (≈ 1.9 bytes per stored transfer, 0.1 of it the account index's
//! fences and page checksums), and the page cache (bounded by its setting).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::Hasher as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `ledger_history_durable_seq`: the log sequence up to which the history is checkpointed.
pub const DURABLE_SEQ: &str = "ledger_history_durable_seq";
/// `ledger_history_checkpoint_duration_seconds`: one checkpoint.
pub const CHECKPOINT_DURATION_SECONDS: &str = "ledger_history_checkpoint_duration_seconds";
/// `ledger_history_merge_duration_seconds`: one background merge of the index runs.
pub const MERGE_DURATION_SECONDS: &str = "ledger_history_merge_duration_seconds";

use engine::ledger::transfer_from_record;
use engine::{Amount, Currency, Id, IdMap, Ledger, Record, Transfer, TransferStatus};

use crate::cache::PageCache;
use crate::format::{
    AccountEntry, FRAME_HEADER_BYTES, FactEntry, FormatError, Manifest, PAGE_BYTES, RECORDS_PER_PAGE, RunName,
    TRANSFER_RECORD_BYTES, TransferRecord, TransferStrings, decode_frame, decode_heads, encode_heads, frame_len,
    push_frame,
};
use crate::readers::Readers;
use crate::run::{self, Filter, Run, RunError};

/// Name of the history's directory inside the data directory.
pub const HISTORY_DIR_NAME: &str = "history";
const MANIFEST_NAME: &str = "MANIFEST";
const TRANSFERS_NAME: &str = "transfers.dat";
const STRINGS_NAME: &str = "strings.dat";
const ACCOUNTS_NAME: &str = "accounts.dat";
const FACTS_NAME: &str = "facts.dat";
const PAGES_NAME: &str = "pages.idx";
/// Page-cache ids of the history's own files (runs use [`run::cache_file_of`]).
const TRANSFERS_CACHE: u64 = 1;
const STRINGS_CACHE: u64 = 2;
/// Threads that read the pages of a history page at once (the reads wait on the disk, not on
/// the cores; BENCHMARKS.md, "Recovery and snapshots at scale", has the measured choice).
const READER_THREADS: usize = 32;
const FACTS_CACHE: u64 = 3;
/// Runs of one size tier merged together once there are this many.
const MERGE_FAN_IN: usize = 4;
/// Two runs are of one tier when the larger is at most this many times the smaller.
const TIER_RATIO: u64 = 3;

/// How the history is sized and paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Bytes of the page cache.
    pub cache_bytes: u64,
    /// A checkpoint starts once this many records were ingested since the last one...
    pub checkpoint_records: usize,
    /// ...or this long after the last one, when anything was ingested since.
    pub checkpoint_interval_ms: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings { cache_bytes: 64 << 20, checkpoint_records: 262_144, checkpoint_interval_ms: 1_000 }
    }
}

/// What went wrong with the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history at {path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("history at {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("history: record {seq} cannot be ingested: {reason}")]
    Ingest { seq: u64, reason: String },
    #[error("history: records must arrive in order: expected seq {expected}, got {found}")]
    OutOfOrder { expected: u64, found: u64 },
    #[error("history: a checkpoint failed earlier ({0}); restart to recover from the log")]
    Failed(String),
}

impl HistoryError {
    /// Whether the files are damaged (as opposed to an IO failure or a bad input).
    pub fn is_damage(&self) -> bool {
        matches!(self, HistoryError::Damaged { .. } | HistoryError::Run(RunError::Damaged { .. }))
    }
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> HistoryError + 'a {
    move |source| HistoryError::Io { path: path.to_owned(), action, source }
}

fn damaged(path: &Path, reason: impl Into<String>) -> HistoryError {
    HistoryError::Damaged { path: path.to_owned(), reason: reason.into() }
}

fn format_damage(path: &Path, what: &str, error: &FormatError) -> HistoryError {
    damaged(path, format!("{what}: {error}"))
}

/// A page of an account's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPage {
    /// Newest first.
    pub transfers: Vec<Arc<Transfer>>,
    /// The creation sequence of the last transfer of the page, when there are more.
    pub next: Option<u64>,
}

/// Figures of the history, for metrics and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryStats {
    pub transfers: u64,
    pub accounts: u64,
    pub ingested_seq: u64,
    pub durable_seq: u64,
    pub transfer_runs: usize,
    /// Records in the memtables (not yet in the files).
    pub memtable_records: usize,
    /// Bytes of filters, fences and page index held in memory.
    pub index_memory_bytes: usize,
    pub cached_pages: usize,
}

// ---------------------------------------------------------------------------------------------
// In-memory state
// ---------------------------------------------------------------------------------------------

/// A transfer not yet in the files.
#[derive(Debug, Clone)]
struct MemTransfer {
    transfer: Arc<Transfer>,
    debit: u32,
    credit: u32,
    previous_of_debit: u64,
    previous_of_credit: u64,
    fingerprint: u64,
}

/// What a look-up found of a transfer in the files, for a change to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    ordinal: u64,
    status: TransferStatus,
    last_seq: u64,
}

/// A status change of a hold that is in the files already (applied in place at the next
/// checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    status: TransferStatus,
    posted_amount: Amount,
    last_seq: u64,
}

/// What was ingested since the last freeze.
#[derive(Debug, Default)]
struct Memtable {
    first_ordinal: u64,
    transfers: Vec<MemTransfer>,
    by_id: IdMap<u64>,
    changes: HashMap<u64, Change, ahash::RandomState>,
    facts: HashMap<(String, String), Arc<FactEntry>, ahash::RandomState>,
    /// Sequence of the last record ingested (all up to it are in this memtable or older parts).
    last_seq: u64,
    records: usize,
}

impl Memtable {
    fn new(first_ordinal: u64, last_seq: u64) -> Memtable {
        Memtable { first_ordinal, last_seq, ..Memtable::default() }
    }

    fn end_ordinal(&self) -> u64 {
        self.first_ordinal + u64::try_from(self.transfers.len()).expect("fits")
    }

    fn get(&self, ordinal: u64) -> Option<&MemTransfer> {
        let index = ordinal.checked_sub(self.first_ordinal)?;
        self.transfers.get(usize::try_from(index).ok()?)
    }
}

/// One account of the directory.
#[derive(Debug, Clone)]
struct AccountInfo {
    seq: u64,
    id: Id,
    currency: Currency,
}

/// What is in the files, as readers may use it.
#[derive(Debug, Default, Clone)]
struct DiskView {
    transfers: u64,
    strings_bytes: u64,
    facts_bytes: u64,
    transfer_runs: Vec<Arc<Run>>,
    fact_runs: Vec<Arc<Run>>,
    account_runs: Vec<Arc<Run>>,
}

/// The history's three indexes, each a list of runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    /// Fingerprint of a transfer id → the transfer's ordinal.
    Transfers,
    /// Fingerprint of a fact's kind and key → the offset of its frame in `facts.dat`.
    Facts,
    /// Account ordinal → the ordinal of a transfer that touches the account.
    Accounts,
}

impl Index {
    const ALL: [Index; 3] = [Index::Transfers, Index::Facts, Index::Accounts];

    fn filter(self) -> Filter {
        match self {
            Index::Transfers | Index::Facts => Filter::PerEntry,
            Index::Accounts => Filter::None,
        }
    }

    fn names(self, manifest: &Manifest) -> &Vec<RunName> {
        match self {
            Index::Transfers => &manifest.transfer_runs,
            Index::Facts => &manifest.fact_runs,
            Index::Accounts => &manifest.account_runs,
        }
    }

    fn names_mut(self, manifest: &mut Manifest) -> &mut Vec<RunName> {
        match self {
            Index::Transfers => &mut manifest.transfer_runs,
            Index::Facts => &mut manifest.fact_runs,
            Index::Accounts => &mut manifest.account_runs,
        }
    }

    fn runs(self, disk: &DiskView) -> &Vec<Arc<Run>> {
        match self {
            Index::Transfers => &disk.transfer_runs,
            Index::Facts => &disk.fact_runs,
            Index::Accounts => &disk.account_runs,
        }
    }

    fn runs_mut(self, disk: &mut DiskView) -> &mut Vec<Arc<Run>> {
        match self {
            Index::Transfers => &mut disk.transfer_runs,
            Index::Facts => &mut disk.fact_runs,
            Index::Accounts => &mut disk.account_runs,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    active: Memtable,
    frozen: Option<Arc<Memtable>>,
    disk: DiskView,
    /// Per account ordinal: ordinal + 1 of its newest transfer (0: none), as ingested.
    heads: Vec<u64>,
    accounts: Vec<AccountInfo>,
    account_ordinals: IdMap<u32>,
    /// Creation sequence of the first record of each page of `transfers.dat` on disk.
    page_seqs: Vec<u64>,
}

/// What the checkpoint thread is asked to write.
struct Frozen {
    memtable: Arc<Memtable>,
    heads: Vec<u64>,
    accounts_end: u64,
}

struct CheckpointQueue {
    pending: Option<Frozen>,
    /// The checkpoint thread is writing one.
    busy: bool,
    stop: bool,
    failed: Option<String>,
    /// Checkpoints completed (for waiters).
    completed: u64,
}

struct Files {
    transfers: File,
    strings: File,
    accounts: File,
    facts: File,
    pages: File,
}

struct Inner {
    dir: PathBuf,
    settings: HistorySettings,
    keys: [u64; 2],
    cache: PageCache,
    files: Files,
    state: RwLock<State>,
    /// Held for reads of `transfers.dat` pages (shared) and for in-place writes (exclusive).
    records_lock: RwLock<()>,
    /// The manifest as last written; held while one is written.
    manifest: Mutex<Manifest>,
    queue: Mutex<CheckpointQueue>,
    queue_changed: Condvar,
    ingested: AtomicU64,
    durable: AtomicU64,
    ingested_watch: tokio::sync::watch::Sender<u64>,
    last_checkpoint: Mutex<Instant>,
    merge_wanted: (Mutex<bool>, Condvar),
    /// Opened with [`History::open_read_only`].
    read_only: bool,
    /// The threads that read the pages of a history page at once.
    readers: Readers,
}

/// The history of one data directory. Clones share it.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

/// The threads of an open history. [`History::close`] writes what was ingested and stops
/// them; dropping this stops them after the checkpoint in progress, writing nothing more (as a
/// crash would, which is what tests use it for).
pub struct HistoryThreads {
    history: History,
    checkpoint: Option<JoinHandle<()>>,
    merge: Option<JoinHandle<()>>,
}

impl Drop for HistoryThreads {
    fn drop(&mut self) {
        self.history.stop_threads();
        for thread in [self.checkpoint.take(), self.merge.take()].into_iter().flatten() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("History")
            .field("dir", &self.inner.dir)
            .field("ingested_seq", &self.ingested_seq())
            .field("durable_seq", &self.durable_seq())
            .finish()
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------------

impl History {
    /// `<data_dir>/history`.
    pub fn dir_of(data_dir: &Path) -> PathBuf {
        data_dir.join(HISTORY_DIR_NAME)
    }

    /// Whether `data_dir` has a history (a manifest).
    pub fn exists(data_dir: &Path) -> bool {
        Self::dir_of(data_dir).join(MANIFEST_NAME).exists()
    }

    /// Opens the history of `data_dir` (creating an empty one when there is none) and starts its
    /// checkpoint and merge threads. Checks the manifest, the files' lengths, the directory of
    /// accounts, the heads and every index run's footer; damage is an error naming the file.
    /// Bytes beyond what the manifest covers (a checkpoint cut short) are dropped: the log
    /// after the watermark ([`History::durable_seq`]) is to be ingested again.
    pub fn open(data_dir: &Path, settings: HistorySettings) -> Result<(History, HistoryThreads), HistoryError> {
        let history = Self::open_mode(data_dir, settings, false)?;
        let dir = history.inner.dir.clone();
        let checkpoint = {
            let history = history.clone();
            std::thread::Builder::new()
                .name("history-checkpoint".to_owned())
                .spawn(move || history.checkpoint_loop())
                .map_err(io_error(&dir, "start the checkpoint thread"))?
        };
        let merge = {
            let history = history.clone();
            std::thread::Builder::new()
                .name("history-merge".to_owned())
                .spawn(move || history.merge_loop())
                .map_err(io_error(&dir, "start the merge thread"))?
        };
        history.want_merge();
        Ok((history.clone(), HistoryThreads { history, checkpoint: Some(checkpoint), merge: Some(merge) }))
    }

    /// Opens an existing history only to read it (`verify`, `restore` from it): nothing in the
    /// directory is changed (bytes past the manifest are ignored, not dropped), no thread runs,
    /// and ingesting is refused.
    pub fn open_read_only(data_dir: &Path) -> Result<History, HistoryError> {
        if !Self::exists(data_dir) {
            return Err(damaged(&Self::dir_of(data_dir), "there is no MANIFEST"));
        }
        Self::open_mode(data_dir, HistorySettings::default(), true)
    }

    fn open_mode(data_dir: &Path, settings: HistorySettings, read_only: bool) -> Result<History, HistoryError> {
        let dir = Self::dir_of(data_dir);
        let manifest_path = dir.join(MANIFEST_NAME);
        let manifest = if manifest_path.exists() {
            let bytes = std::fs::read(&manifest_path).map_err(io_error(&manifest_path, "read"))?;
            Manifest::decode(&bytes).map_err(|error| format_damage(&manifest_path, "the manifest", &error))?
        } else {
            Self::create(&dir)?
        };
        let open_file = |name: &str| -> Result<File, HistoryError> {
            let path = dir.join(name);
            let mut options = OpenOptions::new();
            options.read(true);
            if !read_only {
                options.write(true).create(true).truncate(false);
            }
            options.open(&path).map_err(io_error(&path, "open"))
        };
        let files = Files {
            transfers: open_file(TRANSFERS_NAME)?,
            strings: open_file(STRINGS_NAME)?,
            accounts: open_file(ACCOUNTS_NAME)?,
            facts: open_file(FACTS_NAME)?,
            pages: open_file(PAGES_NAME)?,
        };
        let record_bytes = u64::try_from(TRANSFER_RECORD_BYTES).expect("fits");
        let pages_expected = manifest.transfers.div_ceil(RECORDS_PER_PAGE);
        for (file, name, length) in [
            (&files.transfers, TRANSFERS_NAME, manifest.transfers * record_bytes),
            (&files.strings, STRINGS_NAME, manifest.strings_bytes),
            (&files.accounts, ACCOUNTS_NAME, manifest.accounts_bytes),
            (&files.facts, FACTS_NAME, manifest.facts_bytes),
            (&files.pages, PAGES_NAME, pages_expected * 8),
        ] {
            let path = dir.join(name);
            let found = file.metadata().map_err(io_error(&path, "read the length"))?.len();
            if found < length {
                return Err(damaged(&path, format!("{found} bytes, but the manifest covers {length}")));
            }
            if found > length && !read_only {
                // A checkpoint that did not finish: its bytes are re-derived from the log.
                file.set_len(length).map_err(io_error(&path, "drop an unfinished checkpoint's bytes"))?;
            }
        }
        let (accounts, account_ordinals) = load_accounts(&dir, &files.accounts, &manifest)?;
        let heads_path = dir.join(heads_name(manifest.heads_number));
        let heads = if manifest.accounts == 0 && !heads_path.exists() {
            Vec::new()
        } else {
            let bytes = std::fs::read(&heads_path).map_err(io_error(&heads_path, "read"))?;
            decode_heads(&bytes).map_err(|error| format_damage(&heads_path, "the heads", &error))?
        };
        if u64::try_from(heads.len()).expect("fits") != manifest.accounts {
            return Err(damaged(&heads_path, format!("{} heads for {} accounts", heads.len(), manifest.accounts)));
        }
        let page_seqs = load_page_seqs(&dir, &files.pages, pages_expected)?;
        let open_runs = |index: Index| -> Result<Vec<Arc<Run>>, HistoryError> {
            index
                .names(&manifest)
                .iter()
                .map(|name| {
                    let run = Run::open(&dir.join(run_name(name.number)), name.number, index.filter())?;
                    if run.entries() != name.entries {
                        return Err(damaged(
                            &run.path,
                            format!("{} entries, the manifest says {}", run.entries(), name.entries),
                        ));
                    }
                    Ok(Arc::new(run))
                })
                .collect()
        };
        let disk = DiskView {
            transfers: manifest.transfers,
            strings_bytes: manifest.strings_bytes,
            facts_bytes: manifest.facts_bytes,
            transfer_runs: open_runs(Index::Transfers)?,
            fact_runs: open_runs(Index::Facts)?,
            account_runs: open_runs(Index::Accounts)?,
        };
        if !read_only {
            remove_unreferenced_files(&dir, &manifest);
        }
        let watermark = manifest.watermark_seq;
        let state = State {
            active: Memtable::new(manifest.transfers, watermark),
            frozen: None,
            disk,
            heads,
            accounts,
            account_ordinals,
            page_seqs,
        };
        let (ingested_watch, _) = tokio::sync::watch::channel(watermark);
        let dir_for_errors = dir.clone();
        let inner = Arc::new(Inner {
            dir,
            settings,
            keys: manifest.fingerprint_keys,
            cache: PageCache::new(settings.cache_bytes),
            files,
            state: RwLock::new(state),
            records_lock: RwLock::new(()),
            manifest: Mutex::new(manifest),
            queue: Mutex::new(CheckpointQueue { pending: None, busy: false, stop: false, failed: None, completed: 0 }),
            queue_changed: Condvar::new(),
            ingested: AtomicU64::new(watermark),
            durable: AtomicU64::new(watermark),
            ingested_watch,
            last_checkpoint: Mutex::new(Instant::now()),
            merge_wanted: (Mutex::new(false), Condvar::new()),
            read_only,
            readers: Readers::new(READER_THREADS, "history-reader")
                .map_err(io_error(&dir_for_errors, "start the reader threads"))?,
        });
        Ok(History { inner })
    }

    /// A new, empty history in `dir`.
    fn create(dir: &Path) -> Result<Manifest, HistoryError> {
        if let Ok(mut entries) = std::fs::read_dir(dir)
            && entries.next().is_some()
        {
            return Err(damaged(dir, "the directory holds files but no MANIFEST"));
        }
        std::fs::create_dir_all(dir).map_err(io_error(dir, "create the directory"))?;
        let manifest = Manifest {
            watermark_seq: 0,
            complete_from_seq: 0,
            transfers: 0,
            strings_bytes: 0,
            accounts: 0,
            accounts_bytes: 0,
            facts_bytes: 0,
            heads_number: 0,
            next_file_number: 1,
            fingerprint_keys: [rand::random(), rand::random()],
            transfer_runs: Vec::new(),
            fact_runs: Vec::new(),
            account_runs: Vec::new(),
        };
        write_manifest(dir, &manifest)?;
        if let Some(parent) = dir.parent() {
            durable::sync_dir(parent).map_err(io_error(parent, "fsync the directory"))?;
        }
        Ok(manifest)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Every log record up to this sequence is readable.
    pub fn ingested_seq(&self) -> u64 {
        self.inner.ingested.load(Ordering::Acquire)
    }

    /// Every log record up to this sequence is in the files, synced (the watermark).
    pub fn durable_seq(&self) -> u64 {
        self.inner.durable.load(Ordering::Acquire)
    }

    /// Changes of [`History::ingested_seq`].
    pub fn subscribe_ingested(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.ingested_watch.subscribe()
    }

    /// Waits until every record up to `seq` is readable.
    pub async fn wait_ingested(&self, seq: u64) -> Result<(), HistoryError> {
        if self.ingested_seq() >= seq {
            return Ok(());
        }
        let mut receiver = self.subscribe_ingested();
        let waited = receiver.wait_for(|ingested| *ingested >= seq).await.map(|_| ());
        match waited {
            Ok(()) => Ok(()),
            Err(_) if self.ingested_seq() >= seq => Ok(()),
            Err(_) => Err(HistoryError::Failed("the history stopped".to_owned())),
        }
    }

    pub fn stats(&self) -> HistoryStats {
        let state = read_lock(&self.inner.state);
        let runs = Index::ALL.into_iter().flat_map(|index| index.runs(&state.disk));
        HistoryStats {
            transfers: state.active.end_ordinal(),
            accounts: u64::try_from(state.accounts.len()).expect("fits"),
            ingested_seq: self.ingested_seq(),
            durable_seq: self.durable_seq(),
            transfer_runs: state.disk.transfer_runs.len(),
            memtable_records: state.active.records + state.frozen.as_ref().map_or(0, |frozen| frozen.records),
            index_memory_bytes: runs.map(|run| run.memory_bytes()).sum::<usize>() + state.page_seqs.len() * 8,
            cached_pages: self.inner.cache.len(),
        }
    }

    fn fingerprint(&self, bytes: &[u8]) -> u64 {
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(self.inner.keys[0], self.inner.keys[1]);
        hasher.write(bytes);
        hasher.finish()
    }

    fn fact_fingerprint(&self, kind: &str, key: &str) -> u64 {
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(self.inner.keys[0], self.inner.keys[1]);
        hasher.write(kind.as_bytes());
        hasher.write(&[0xff]);
        hasher.write(key.as_bytes());
        hasher.finish()
    }
}

/// An account ordinal as an index.
fn slot(ordinal: u32) -> usize {
    usize::try_from(ordinal).expect("an account ordinal fits usize")
}

fn heads_name(number: u64) -> String {
    format!("heads-{number}.dat")
}

fn run_name(number: u64) -> String {
    format!("run-{number}.idx")
}

/// Deletes run and heads files the manifest does not name (left by an unfinished checkpoint or
/// merge).
fn remove_unreferenced_files(dir: &Path, manifest: &Manifest) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let runs: Vec<u64> = Index::ALL.into_iter().flat_map(|index| index.names(manifest)).map(|run| run.number).collect();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = |prefix: &str, suffix: &str| name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse::<u64>().ok();
        let stale = match (number("run-", ".idx"), number("heads-", ".dat")) {
            (Some(number), _) => !runs.contains(&number),
            (_, Some(number)) => number != manifest.heads_number,
            _ => name.ends_with(".tmp"),
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn load_accounts(dir: &Path, file: &File, manifest: &Manifest) -> Result<(Vec<AccountInfo>, IdMap<u32>), HistoryError> {
    let path = dir.join(ACCOUNTS_NAME);
    let length = usize::try_from(manifest.accounts_bytes).map_err(|_| damaged(&path, "too large"))?;
    let mut bytes = vec![0_u8; length];
    file.read_exact_at(&mut bytes, 0).map_err(io_error(&path, "read"))?;
    let mut accounts = Vec::new();
    let mut ordinals = IdMap::default();
    let mut at = 0;
    while at < bytes.len() {
        let len = frame_len(&bytes[at..]).map_err(|error| format_damage(&path, "an account", &error))?;
        let entry: AccountEntry = decode_frame(&bytes[at..at + len.min(bytes.len() - at)])
            .map_err(|error| format_damage(&path, &format!("the account at byte {at}"), &error))?;
        let ordinal = u32::try_from(accounts.len()).map_err(|_| damaged(&path, "more than 2^32 accounts"))?;
        if ordinals.insert(entry.id.clone(), ordinal).is_some() {
            return Err(damaged(&path, format!("account {} is listed twice", entry.id)));
        }
        accounts.push(AccountInfo { seq: entry.seq, id: entry.id, currency: entry.currency });
        at += len;
    }
    if u64::try_from(accounts.len()).expect("fits") != manifest.accounts {
        return Err(damaged(&path, format!("{} accounts, the manifest says {}", accounts.len(), manifest.accounts)));
    }
    Ok((accounts, ordinals))
}

fn load_page_seqs(dir: &Path, file: &File, pages: u64) -> Result<Vec<u64>, HistoryError> {
    let path = dir.join(PAGES_NAME);
    let length = usize::try_from(pages * 8).map_err(|_| damaged(&path, "too large"))?;
    let mut bytes = vec![0_u8; length];
    file.read_exact_at(&mut bytes, 0).map_err(io_error(&path, "read"))?;
    let seqs: Vec<u64> = bytes.chunks_exact(8).map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8"))).collect();
    if seqs.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(damaged(&path, "the page index is not increasing"));
    }
    Ok(seqs)
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), HistoryError> {
    durable::replace_file_with_bytes(dir, MANIFEST_NAME, &manifest.encode())
        .map_err(io_error(&dir.join(MANIFEST_NAME), "write the manifest"))
}

// ---------------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------------

/// Records applied under one hold of the state's write lock (readers wait at most that long).
const INGEST_CHUNK: usize = 512;

impl History {
    /// Ingests log records in order: `records[i]` has sequence `first_seq + i`. Records at or
    /// below [`History::ingested_seq`] are skipped (a group that overlaps). Waits when the
    /// checkpoint thread is behind (bounded memory). A record that cannot be applied (a
    /// transfer created twice, a post of what is not a hold, an unknown account) is an error:
    /// the log is corrupt or foreign.
    pub fn ingest(&self, first_seq: u64, records: &[Record]) -> Result<(), HistoryError> {
        if self.inner.read_only {
            return Err(HistoryError::Failed("the history was opened to be read only".to_owned()));
        }
        let ingested = self.ingested_seq();
        let skip = usize::try_from(ingested.saturating_sub(first_seq - 1)).unwrap_or(usize::MAX).min(records.len());
        let mut seq = first_seq + u64::try_from(skip).expect("fits");
        if skip < records.len() && seq != ingested + 1 {
            return Err(HistoryError::OutOfOrder { expected: ingested + 1, found: seq });
        }
        for chunk in records[skip..].chunks(INGEST_CHUNK) {
            self.wait_for_room()?;
            // Look-ups of older transfers (for posts, voids and expiries) read the files:
            // done before taking the write lock.
            let mut older: HashMap<Id, Stored, ahash::RandomState> = HashMap::default();
            for record in chunk {
                match record {
                    Record::PostPending { transfer, .. }
                    | Record::VoidPending { transfer, .. }
                    | Record::ExpirePending { transfer, .. } => {
                        if let Some((ordinal, stored)) = self.find_transfer(transfer)? {
                            older.insert(
                                transfer.clone(),
                                Stored { ordinal, status: stored.status, last_seq: stored.last_seq },
                            );
                        }
                    }
                    Record::CreateTransfer { id, .. } => {
                        if let Some((_, stored)) = self.find_transfer(id)? {
                            return Err(HistoryError::Ingest {
                                seq,
                                reason: format!("transfer {id} exists already (created at seq {})", stored.seq),
                            });
                        }
                    }
                    _ => {}
                }
            }
            let mut state = write_lock(&self.inner.state);
            for record in chunk {
                if let Err(reason) = apply(&mut state, seq, record, &older, |bytes| self.fingerprint(bytes)) {
                    return Err(HistoryError::Ingest { seq, reason });
                }
                state.active.last_seq = seq;
                seq += 1;
            }
            drop(state);
            self.inner.ingested.store(seq - 1, Ordering::Release);
            self.inner.ingested_watch.send_replace(seq - 1);
            self.maybe_freeze()?;
        }
        Ok(())
    }

    /// Waits while the active memtable is at twice its threshold and a frozen one is still
    /// being written.
    fn wait_for_room(&self) -> Result<(), HistoryError> {
        let limit = self.inner.settings.checkpoint_records.saturating_mul(2).max(INGEST_CHUNK);
        loop {
            let full = {
                let state = read_lock(&self.inner.state);
                state.active.records >= limit && state.frozen.is_some()
            };
            if !full {
                return Ok(());
            }
            let queue = lock(&self.inner.queue);
            if let Some(failed) = &queue.failed {
                return Err(HistoryError::Failed(failed.clone()));
            }
            let completed = queue.completed;
            let _ = self
                .inner
                .queue_changed
                .wait_timeout_while(queue, Duration::from_millis(100), |queue| {
                    queue.completed == completed && queue.failed.is_none()
                })
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Freezes the active memtable for the checkpoint thread when a threshold is reached and
    /// no other one is being written.
    fn maybe_freeze(&self) -> Result<(), HistoryError> {
        let (records, last_seq) = {
            let state = read_lock(&self.inner.state);
            (state.active.records, state.active.last_seq)
        };
        let due_by_time = lock(&self.inner.last_checkpoint).elapsed()
            >= Duration::from_millis(self.inner.settings.checkpoint_interval_ms);
        let due = records >= self.inner.settings.checkpoint_records || (due_by_time && last_seq > self.durable_seq());
        if due {
            self.freeze(false)?;
        }
        Ok(())
    }

    /// Hands the active memtable to the checkpoint thread (unless one is being written, or
    /// `wait` waits for it). Returns whether it did.
    fn freeze(&self, wait: bool) -> Result<bool, HistoryError> {
        let mut queue = lock(&self.inner.queue);
        loop {
            if let Some(failed) = &queue.failed {
                return Err(HistoryError::Failed(failed.clone()));
            }
            if queue.pending.is_none() && !queue.busy {
                break;
            }
            if !wait {
                return Ok(false);
            }
            queue = self.inner.queue_changed.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let mut state = write_lock(&self.inner.state);
        if state.active.last_seq <= self.durable_seq() && state.active.records == 0 {
            return Ok(false);
        }
        let next = Memtable::new(state.active.end_ordinal(), state.active.last_seq);
        let memtable = Arc::new(std::mem::replace(&mut state.active, next));
        state.frozen = Some(memtable.clone());
        let frozen = Frozen {
            memtable,
            heads: state.heads.clone(),
            accounts_end: u64::try_from(state.accounts.len()).expect("fits"),
        };
        drop(state);
        queue.pending = Some(frozen);
        *lock(&self.inner.last_checkpoint) = Instant::now();
        self.inner.queue_changed.notify_all();
        Ok(true)
    }

    /// Writes everything ingested so far to the files and waits until it is durable; returns
    /// the watermark.
    pub fn checkpoint(&self) -> Result<u64, HistoryError> {
        let target = self.ingested_seq();
        while self.durable_seq() < target {
            let completed = lock(&self.inner.queue).completed;
            self.freeze(true)?;
            let queue = lock(&self.inner.queue);
            let queue = self
                .inner
                .queue_changed
                .wait_while(queue, |queue| {
                    queue.completed == completed && queue.failed.is_none() && (queue.pending.is_some() || queue.busy)
                })
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(failed) = &queue.failed {
                return Err(HistoryError::Failed(failed.clone()));
            }
        }
        Ok(self.durable_seq())
    }

    /// Writes everything ingested, then stops the threads.
    pub fn close(&self, threads: HistoryThreads) -> Result<u64, HistoryError> {
        let checkpointed = self.checkpoint();
        drop(threads);
        checkpointed
    }

    fn stop_threads(&self) {
        let mut queue = lock(&self.inner.queue);
        queue.stop = true;
        self.inner.queue_changed.notify_all();
        drop(queue);
        self.want_merge();
    }
}

/// Applies one record to the state. `older`: ordinals of the transfers in the files that the
/// chunk's posts, voids and expiries name.
fn apply(
    state: &mut State,
    seq: u64,
    record: &Record,
    older: &HashMap<Id, Stored, ahash::RandomState>,
    fingerprint: impl Fn(&[u8]) -> u64,
) -> Result<(), String> {
    state.active.records += 1;
    match record {
        Record::CreateAccount { id, currency, .. } => {
            if state.account_ordinals.contains_key(id) {
                return Err(format!("account {id} exists already"));
            }
            let ordinal = u32::try_from(state.accounts.len()).map_err(|_| "more than 2^32 accounts".to_owned())?;
            state.account_ordinals.insert(id.clone(), ordinal);
            state.accounts.push(AccountInfo { seq, id: id.clone(), currency: currency.clone() });
            state.heads.push(0);
        }
        Record::CreateTransfer { id, debit_account, credit_account, .. } => {
            if state.active.by_id.contains_key(id)
                || state.frozen.as_ref().is_some_and(|frozen| frozen.by_id.contains_key(id))
            {
                return Err(format!("transfer {id} exists already"));
            }
            let debit =
                *state.account_ordinals.get(debit_account).ok_or_else(|| format!("no account {debit_account}"))?;
            let credit =
                *state.account_ordinals.get(credit_account).ok_or_else(|| format!("no account {credit_account}"))?;
            let mut transfer = transfer_from_record(seq, record).expect("a creation record creates a transfer");
            let (debit_info, credit_info) = (&state.accounts[slot(debit)], &state.accounts[slot(credit)]);
            if debit_info.currency != transfer.currency || credit_info.currency != transfer.currency {
                return Err(format!("transfer {id} is not in the currency of its accounts"));
            }
            // Share the directory's allocations.
            transfer.debit_account = debit_info.id.clone();
            transfer.credit_account = credit_info.id.clone();
            transfer.currency = debit_info.currency.clone();
            let ordinal = state.active.end_ordinal();
            let previous_of_debit = state.heads[slot(debit)];
            let previous_of_credit = state.heads[slot(credit)];
            state.heads[slot(debit)] = ordinal + 1;
            state.heads[slot(credit)] = ordinal + 1;
            state.active.by_id.insert(id.clone(), ordinal);
            state.active.transfers.push(MemTransfer {
                transfer: Arc::new(transfer),
                debit,
                credit,
                previous_of_debit,
                previous_of_credit,
                fingerprint: fingerprint(id.as_str().as_bytes()),
            });
        }
        Record::PostPending { transfer, posted_amount, .. } => {
            change_hold(state, seq, transfer, older, TransferStatus::Posted, Some(*posted_amount))?;
        }
        Record::VoidPending { transfer, .. } => change_hold(state, seq, transfer, older, TransferStatus::Voided, None)?,
        Record::ExpirePending { transfer, .. } => {
            change_hold(state, seq, transfer, older, TransferStatus::Expired, None)?
        }
        Record::External { kind, key, payload } => {
            let entry = FactEntry { seq, kind: kind.clone(), key: key.clone(), payload: payload.clone() };
            state.active.facts.insert((kind.clone(), key.clone()), Arc::new(entry));
        }
        Record::SetFrozen { .. } => {}
    }
    Ok(())
}

/// The post, void or expiry of a hold.
fn change_hold(
    state: &mut State,
    seq: u64,
    id: &Id,
    older: &HashMap<Id, Stored, ahash::RandomState>,
    status: TransferStatus,
    posted_amount: Option<Amount>,
) -> Result<(), String> {
    if let Some(ordinal) = state.active.by_id.get(id).copied() {
        let index = usize::try_from(ordinal - state.active.first_ordinal).expect("fits");
        let entry = &mut state.active.transfers[index];
        if entry.transfer.status != TransferStatus::Pending {
            return Err(format!("transfer {id} is not pending"));
        }
        let transfer = Arc::make_mut(&mut entry.transfer);
        transfer.status = status;
        if let Some(posted_amount) = posted_amount {
            transfer.posted_amount = posted_amount;
        }
        transfer.last_seq = seq;
        return Ok(());
    }
    let in_frozen = state.frozen.as_ref().and_then(|frozen| {
        let ordinal = *frozen.by_id.get(id)?;
        let transfer = &frozen.get(ordinal)?.transfer;
        Some(Stored { ordinal, status: transfer.status, last_seq: transfer.last_seq })
    });
    let stored = match in_frozen {
        Some(found) => found,
        None => *older.get(id).ok_or_else(|| format!("transfer {id} does not exist"))?,
    };
    let ordinal = stored.ordinal;
    // The newest word on the hold: a change ingested since, or what was stored.
    let current = state
        .active
        .changes
        .get(&ordinal)
        .map_or((stored.status, stored.last_seq), |change| (change.status, change.last_seq));
    if current == (status, seq) {
        // Written in place already by a checkpoint that did not reach its manifest (or copied so
        // by a backup): the log after the watermark brings it again.
        return Ok(());
    }
    if current.0 != TransferStatus::Pending {
        return Err(format!("transfer {id} is not pending"));
    }
    state
        .active
        .changes
        .insert(ordinal, Change { status, posted_amount: posted_amount.unwrap_or_default(), last_seq: seq });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
/// Where a transfer's chains go on: the accounts it touches and their previous transfers.
struct Links {
    debit: u32,
    credit: u32,
    previous_of_debit: u64,
    previous_of_credit: u64,
}

impl Links {
    /// Ordinal + 1 of the previous transfer of `account` (which this one touches), 0: none.
    fn previous_of(&self, account: u32) -> u64 {
        if self.debit == account { self.previous_of_debit } else { self.previous_of_credit }
    }

    fn touches(&self, account: u32) -> bool {
        self.debit == account || self.credit == account
    }
}

/// A stored transfer with its chain links.
struct Located {
    transfer: Arc<Transfer>,
    links: Links,
}

impl From<&MemTransfer> for Located {
    fn from(entry: &MemTransfer) -> Located {
        Located { transfer: entry.transfer.clone(), links: Links::from(entry) }
    }
}

impl From<&MemTransfer> for Links {
    fn from(entry: &MemTransfer) -> Links {
        Links {
            debit: entry.debit,
            credit: entry.credit,
            previous_of_debit: entry.previous_of_debit,
            previous_of_credit: entry.previous_of_credit,
        }
    }
}

impl From<&TransferRecord> for Links {
    fn from(record: &TransferRecord) -> Links {
        Links {
            debit: record.debit_account,
            credit: record.credit_account,
            previous_of_debit: record.previous_of_debit,
            previous_of_credit: record.previous_of_credit,
        }
    }
}

impl History {
    /// The stored transfer with this id, in its current state.
    pub fn transfer(&self, id: &Id) -> Result<Option<Arc<Transfer>>, HistoryError> {
        Ok(self.find_transfer(id)?.map(|(_, transfer)| transfer))
    }

    /// The ordinal and current state of the transfer with this id.
    fn find_transfer(&self, id: &Id) -> Result<Option<(u64, Arc<Transfer>)>, HistoryError> {
        let fingerprint = self.fingerprint(id.as_str().as_bytes());
        let candidates: Vec<Arc<Run>> = {
            let state = read_lock(&self.inner.state);
            if let Some(ordinal) = state.active.by_id.get(id) {
                let entry = state.active.get(*ordinal).expect("indexed transfers are in the memtable");
                return Ok(Some((*ordinal, entry.transfer.clone())));
            }
            if let Some(frozen) = &state.frozen
                && let Some(ordinal) = frozen.by_id.get(id)
            {
                let transfer = overlay(&state, *ordinal, frozen.get(*ordinal).expect("indexed").transfer.clone());
                return Ok(Some((*ordinal, transfer)));
            }
            state.disk.transfer_runs.iter().rev().filter(|run| run.may_contain(fingerprint)).cloned().collect()
        };
        for run in candidates {
            for ordinal in run.lookup(fingerprint, &self.inner.cache)? {
                let located = self.locate(ordinal)?;
                if located.transfer.id == *id {
                    return Ok(Some((ordinal, located.transfer)));
                }
            }
        }
        Ok(None)
    }

    /// The transfer at `ordinal`, with its chain links.
    fn locate(&self, ordinal: u64) -> Result<Located, HistoryError> {
        let (change, accounts) = {
            let state = read_lock(&self.inner.state);
            if ordinal >= state.disk.transfers {
                let entry = state
                    .frozen
                    .as_ref()
                    .and_then(|frozen| frozen.get(ordinal))
                    .or_else(|| state.active.get(ordinal))
                    .ok_or_else(|| damaged(&self.inner.dir, format!("no transfer at ordinal {ordinal}")))?;
                let mut located = Located::from(entry);
                located.transfer = overlay(&state, ordinal, located.transfer);
                return Ok(located);
            }
            (newest_change(&state, ordinal), state.accounts.len())
        };
        let record = self.read_record(ordinal)?;
        let strings_path = || self.inner.dir.join(STRINGS_NAME);
        let strings: TransferStrings = self.read_frame(
            &self.inner.files.strings,
            STRINGS_CACHE,
            record.strings_offset,
            usize::try_from(record.strings_bytes).expect("fits"),
            &format!("the strings of transfer {ordinal}"),
        )?;
        if self.fingerprint(strings.id.as_str().as_bytes()) != record.fingerprint {
            return Err(damaged(&strings_path(), format!("the strings of transfer {ordinal} name another id")));
        }
        let (debit, credit) = (slot(record.debit_account), slot(record.credit_account));
        if debit >= accounts || credit >= accounts {
            return Err(damaged(
                &self.inner.dir.join(TRANSFERS_NAME),
                format!("transfer {ordinal} names an unknown account"),
            ));
        }
        let (debit_account, credit_account, currency) = {
            let state = read_lock(&self.inner.state);
            let (debit, credit) = (&state.accounts[debit], &state.accounts[credit]);
            (debit.id.clone(), credit.id.clone(), debit.currency.clone())
        };
        let mut transfer = Transfer {
            id: strings.id,
            debit_account,
            credit_account,
            amount: record.amount,
            currency,
            pending: record.pending,
            timeout_seconds: record.timeout_seconds,
            description: strings.description,
            metadata: strings.metadata,
            created_at_ms: record.created_at_ms,
            seq: record.seq,
            status: record.status,
            posted_amount: record.posted_amount,
            last_seq: record.last_seq,
        };
        if let Some(change) = change.filter(|change| change.last_seq > transfer.last_seq) {
            transfer.status = change.status;
            transfer.posted_amount = change.posted_amount;
            transfer.last_seq = change.last_seq;
        }
        Ok(Located { transfer: Arc::new(transfer), links: Links::from(&record) })
    }

    /// The fixed record at `ordinal` (which is in the files).
    fn read_record(&self, ordinal: u64) -> Result<TransferRecord, HistoryError> {
        let page_number = ordinal / RECORDS_PER_PAGE;
        let at = usize::try_from(ordinal % RECORDS_PER_PAGE).expect("fits") * TRANSFER_RECORD_BYTES;
        let path = || self.inner.dir.join(TRANSFERS_NAME);
        let _reading = read_lock(&self.inner.records_lock);
        for attempt in 0..2 {
            let (page, cached) = match self.inner.cache.get((TRANSFERS_CACHE, page_number)).filter(|_| attempt == 0) {
                Some(page) => (page, true),
                None => (self.read_page(&self.inner.files.transfers, TRANSFERS_CACHE, page_number, &path())?, false),
            };
            match TransferRecord::decode(&page[at..at + TRANSFER_RECORD_BYTES]) {
                Ok(record) => return Ok(record),
                // A cached copy of the last page may predate records appended to it.
                Err(_) if cached => self.inner.cache.invalidate((TRANSFERS_CACHE, page_number)),
                Err(error) => return Err(format_damage(&path(), &format!("the record of transfer {ordinal}"), &error)),
            }
        }
        Err(damaged(&path(), format!("the record of transfer {ordinal} cannot be read")))
    }

    /// A page of `file` read from disk (a short last page is zero-filled) and cached.
    fn read_page(&self, file: &File, cache_file: u64, number: u64, path: &Path) -> Result<Arc<[u8]>, HistoryError> {
        let mut page = vec![0_u8; PAGE_BYTES];
        let offset = number * u64::try_from(PAGE_BYTES).expect("fits");
        let mut filled = 0;
        while filled < PAGE_BYTES {
            let read = file
                .read_at(&mut page[filled..], offset + u64::try_from(filled).expect("fits"))
                .map_err(io_error(path, "read"))?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        let page: Arc<[u8]> = Arc::from(page);
        self.inner.cache.insert((cache_file, number), page.clone());
        Ok(page)
    }

    /// The frame of `len` bytes at `offset` of an append-only file, decoded. A cached copy of
    /// the file's last page may predate what was appended to it since: a frame that does not
    /// check is read again from disk once before it counts as damage.
    fn read_frame<T: for<'de> serde::Deserialize<'de>>(
        &self,
        file: &File,
        cache_file: u64,
        offset: u64,
        len: usize,
        what: &str,
    ) -> Result<T, HistoryError> {
        let bytes = self.read_bytes(file, cache_file, offset, len)?;
        if let Ok(value) = decode_frame(&bytes) {
            return Ok(value);
        }
        let page_bytes = u64::try_from(PAGE_BYTES).expect("fits");
        let end = offset + u64::try_from(len.max(1)).expect("fits");
        for number in offset / page_bytes..=(end - 1) / page_bytes {
            self.inner.cache.invalidate((cache_file, number));
        }
        let bytes = self.read_bytes(file, cache_file, offset, len)?;
        decode_frame(&bytes).map_err(|error| format_damage(&self.path_of_cache(cache_file), what, &error))
    }

    fn path_of_cache(&self, cache_file: u64) -> PathBuf {
        self.inner.dir.join(match cache_file {
            TRANSFERS_CACHE => TRANSFERS_NAME,
            STRINGS_CACHE => STRINGS_NAME,
            _ => FACTS_NAME,
        })
    }

    /// `len` bytes of an append-only file at `offset`, through the cache.
    fn read_bytes(&self, file: &File, cache_file: u64, offset: u64, len: usize) -> Result<Vec<u8>, HistoryError> {
        let page_bytes = u64::try_from(PAGE_BYTES).expect("fits");
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        let end = offset + u64::try_from(len).expect("fits");
        let path = self.path_of_cache(cache_file);
        while at < end {
            let number = at / page_bytes;
            let page = match self.inner.cache.get((cache_file, number)) {
                Some(page) => page,
                None => self.read_page(file, cache_file, number, &path)?,
            };
            let start = usize::try_from(at % page_bytes).expect("fits");
            let take = usize::try_from((end - at).min(page_bytes - at % page_bytes)).expect("fits");
            out.extend_from_slice(&page[start..start + take]);
            at += u64::try_from(take).expect("fits");
        }
        Ok(out)
    }

    /// Newest first: at most `limit` of the transfers that debit or credit `account` (created
    /// before `before_seq` when given, a cursor from a previous page), and the next cursor.
    /// `None` when the history does not know the account.
    ///
    /// The transfers still in memory are found by their chain (each names the previous
    /// transfer of each of its accounts), those in the files by the account index; then the
    /// fixed records and the strings of every transfer on the page are read from disk at once
    /// rather than one after another, and the transfers assembled from the cache.
    pub fn account_transfers(
        &self,
        account: &Id,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Option<AccountPage>, HistoryError> {
        let limit = limit.max(1);
        // One more than the page tells whether there is a next one.
        let wanted = limit + 1;
        let bound = match before_seq {
            Some(seq) => self.ordinal_bound(seq)?,
            None => u64::MAX,
        };
        let (account_ordinal, mut ordinals, files_below, runs) = {
            let state = read_lock(&self.inner.state);
            let Some(account_ordinal) = state.account_ordinals.get(account).copied() else { return Ok(None) };
            let disk_transfers = state.disk.transfers;
            let mut ordinals = Vec::new();
            let mut next = state.heads[slot(account_ordinal)];
            while next > disk_transfers && bound > disk_transfers && ordinals.len() < wanted {
                let ordinal = next - 1;
                let links = state
                    .frozen
                    .as_ref()
                    .and_then(|frozen| frozen.get(ordinal))
                    .or_else(|| state.active.get(ordinal))
                    .map(Links::from)
                    .filter(|links| links.touches(account_ordinal))
                    .ok_or_else(|| self.broken_history(account, ordinal))?;
                if ordinal < bound {
                    ordinals.push(ordinal);
                }
                next = links.previous_of(account_ordinal);
            }
            (account_ordinal, ordinals, bound.min(disk_transfers), state.disk.account_runs.clone())
        };
        if ordinals.len() < wanted && files_below > 0 {
            ordinals.extend(self.indexed_transfers(account_ordinal, files_below, wanted - ordinals.len(), &runs)?);
        }
        self.prefetch_transfers(&ordinals);
        let mut transfers = Vec::with_capacity(ordinals.len());
        for ordinal in ordinals {
            let located = self.locate(ordinal)?;
            if !located.links.touches(account_ordinal) {
                return Err(self.broken_history(account, ordinal));
            }
            transfers.push(located.transfer);
        }
        let more = transfers.len() > limit;
        transfers.truncate(limit);
        let next = if more { transfers.last().map(|transfer| transfer.seq) } else { None };
        Ok(Some(AccountPage { transfers, next }))
    }

    fn broken_history(&self, account: &Id, ordinal: u64) -> HistoryError {
        damaged(
            &self.inner.dir.join(TRANSFERS_NAME),
            format!("the history of {account} names transfer {ordinal}, which does not touch it"),
        )
    }

    /// Largest first: at most `wanted` ordinals below `below` of the transfers in the files
    /// that touch `account`, from the account index. Each run is probed; with a cold cache the
    /// runs are read at once.
    fn indexed_transfers(
        &self,
        account: u32,
        below: u64,
        wanted: usize,
        runs: &[Arc<Run>],
    ) -> Result<Vec<u64>, HistoryError> {
        let key = u64::from(account);
        let cold = runs.iter().filter(|run| !run.pages_to_read(key, &self.inner.cache).is_empty()).count();
        let found = if cold > 1 {
            let history = self.clone();
            self.inner.readers.map(runs.to_vec(), move |run| run.values_below(key, below, wanted, &history.inner.cache))
        } else {
            runs.iter().map(|run| run.values_below(key, below, wanted, &self.inner.cache)).collect()
        };
        let mut ordinals = Vec::with_capacity(wanted);
        for values in found {
            ordinals.extend(values?);
        }
        ordinals.sort_unstable_by(|left, right| right.cmp(left));
        ordinals.dedup();
        ordinals.truncate(wanted);
        Ok(ordinals)
    }

    /// Reads into the cache, concurrently, the pages of `transfers.dat` and of `strings.dat`
    /// that the transfers at `ordinals` need: each reader takes a share of the transfers and
    /// reads each one's record, then its strings. With a cold cache a page of a history costs
    /// about two disk reads' latency per share instead of two per transfer. Best effort: a page
    /// that cannot be read here is read (and its error reported) by the caller's own read.
    fn prefetch_transfers(&self, ordinals: &[u64]) {
        let disk_transfers = read_lock(&self.inner.state).disk.transfers;
        // Cold: the record's page is not cached, or it is and a page of the strings is not.
        let cold: Vec<u64> = ordinals
            .iter()
            .copied()
            .filter(|&ordinal| ordinal < disk_transfers)
            .filter(|&ordinal| {
                self.inner.cache.get((TRANSFERS_CACHE, ordinal / RECORDS_PER_PAGE)).is_none()
                    || self.read_record(ordinal).is_ok_and(|record| {
                        strings_pages(&record).any(|page| self.inner.cache.get((STRINGS_CACHE, page)).is_none())
                    })
            })
            .collect();
        if cold.len() < 2 {
            return;
        }
        // One share per reader: fewer hand-offs (each a thread's wake-up) than one per
        // transfer, for as many reads at once.
        let per_reader = cold.len().div_ceil(READER_THREADS);
        let shares: Vec<Vec<u64>> = cold.chunks(per_reader).map(<[u64]>::to_vec).collect();
        let history = self.clone();
        self.inner.readers.map(shares, move |share| {
            let path = history.inner.dir.join(STRINGS_NAME);
            for ordinal in share {
                let Ok(record) = history.read_record(ordinal) else { continue };
                for page in strings_pages(&record) {
                    if history.inner.cache.get((STRINGS_CACHE, page)).is_none() {
                        let _ = history.read_page(&history.inner.files.strings, STRINGS_CACHE, page, &path);
                    }
                }
            }
        });
    }

    /// How many transfers were created before `seq`: the ordinal of the first one created at
    /// or after it.
    fn ordinal_bound(&self, seq: u64) -> Result<u64, HistoryError> {
        let (page, disk_transfers) = {
            let state = read_lock(&self.inner.state);
            for memtable in std::iter::once(&state.active).chain(state.frozen.as_deref()) {
                if memtable.transfers.first().is_some_and(|first| first.transfer.seq < seq) {
                    let before = memtable.transfers.partition_point(|entry| entry.transfer.seq < seq);
                    return Ok(memtable.first_ordinal + u64::try_from(before).expect("fits"));
                }
            }
            let pages = state.page_seqs.partition_point(|first| *first < seq);
            if pages == 0 {
                return Ok(0);
            }
            (u64::try_from(pages - 1).expect("fits"), state.disk.transfers)
        };
        let first = page * RECORDS_PER_PAGE;
        let end = (first + RECORDS_PER_PAGE).min(disk_transfers);
        for ordinal in first..end {
            if self.read_record(ordinal)?.seq >= seq {
                return Ok(ordinal);
            }
        }
        Ok(end)
    }

    /// The latest payload recorded for (`kind`, `key`), if any.
    pub fn fact(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, HistoryError> {
        let wanted = (kind.to_owned(), key.to_owned());
        let fingerprint = self.fact_fingerprint(kind, key);
        let candidates: Vec<Arc<Run>> = {
            let state = read_lock(&self.inner.state);
            if let Some(entry) = state.active.facts.get(&wanted) {
                return Ok(Some(entry.payload.clone()));
            }
            if let Some(entry) = state.frozen.as_ref().and_then(|frozen| frozen.facts.get(&wanted)) {
                return Ok(Some(entry.payload.clone()));
            }
            state.disk.fact_runs.iter().filter(|run| run.may_contain(fingerprint)).cloned().collect()
        };
        let mut offsets = Vec::new();
        for run in candidates {
            offsets.extend(run.lookup(fingerprint, &self.inner.cache)?);
        }
        // facts.dat is in log order: the highest offset of this (kind, key) is its latest.
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        for offset in offsets {
            let entry = self.read_fact(offset)?;
            if entry.kind == kind && entry.key == key {
                return Ok(Some(entry.payload));
            }
        }
        Ok(None)
    }

    fn read_fact(&self, offset: u64) -> Result<FactEntry, HistoryError> {
        let what = format!("the fact at byte {offset}");
        let mut header = self.read_bytes(&self.inner.files.facts, FACTS_CACHE, offset, FRAME_HEADER_BYTES)?;
        if frame_len(&header).is_err() {
            // A stale cached last page: read the header from disk.
            self.inner.cache.invalidate((FACTS_CACHE, offset / u64::try_from(PAGE_BYTES).expect("fits")));
            header = self.read_bytes(&self.inner.files.facts, FACTS_CACHE, offset, FRAME_HEADER_BYTES)?;
        }
        let len = frame_len(&header).map_err(|error| format_damage(&self.path_of_cache(FACTS_CACHE), &what, &error))?;
        self.read_frame(&self.inner.files.facts, FACTS_CACHE, offset, len, &what)
    }
}

/// The newest status change of a transfer in the files.
fn newest_change(state: &State, ordinal: u64) -> Option<Change> {
    state.active.changes.get(&ordinal).or_else(|| state.frozen.as_ref()?.changes.get(&ordinal)).copied()
}

/// `transfer` (at `ordinal`) with the newest change the memtables hold for it.
fn overlay(state: &State, ordinal: u64, transfer: Arc<Transfer>) -> Arc<Transfer> {
    match newest_change(state, ordinal) {
        Some(change) if change.last_seq > transfer.last_seq => {
            let mut changed = (*transfer).clone();
            changed.status = change.status;
            changed.posted_amount = change.posted_amount;
            changed.last_seq = change.last_seq;
            Arc::new(changed)
        }
        _ => transfer,
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and merges
// ---------------------------------------------------------------------------------------------

impl History {
    fn checkpoint_loop(&self) {
        let interval = Duration::from_millis(self.inner.settings.checkpoint_interval_ms.max(1));
        loop {
            let frozen = {
                let queue = lock(&self.inner.queue);
                let (mut queue, timeout) = self
                    .inner
                    .queue_changed
                    .wait_timeout_while(queue, interval, |queue| queue.pending.is_none() && !queue.stop)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if queue.pending.is_none() {
                    if queue.stop {
                        return;
                    }
                    if timeout.timed_out() {
                        drop(queue);
                        // Nothing arrived for a while: write what is there, so that a restart
                        // re-derives little.
                        let _ = self.freeze(false);
                    }
                    continue;
                }
                queue.busy = true;
                queue.pending.take().expect("checked")
            };
            let started = Instant::now();
            let result = self.write_checkpoint(frozen);
            let mut queue = lock(&self.inner.queue);
            queue.busy = false;
            queue.completed += 1;
            match result {
                Ok(watermark) => {
                    metrics::histogram!(CHECKPOINT_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
                    tracing::debug!(watermark, "history checkpoint");
                }
                Err(error) => {
                    tracing::error!(%error, "a history checkpoint failed; the history stops taking records");
                    queue.failed = Some(error.to_string());
                }
            }
            self.inner.queue_changed.notify_all();
            drop(queue);
            self.want_merge();
        }
    }

    /// Writes a frozen memtable to the files, syncs them, then the manifest; returns the new
    /// watermark.
    fn write_checkpoint(&self, frozen: Frozen) -> Result<u64, HistoryError> {
        let dir = &self.inner.dir;
        let files = &self.inner.files;
        let memtable = &frozen.memtable;
        let mut manifest_guard = lock(&self.inner.manifest);
        let mut manifest = manifest_guard.clone();
        assert_eq!(memtable.first_ordinal, manifest.transfers, "checkpoints continue where the files end");

        // The accounts created since the last checkpoint.
        let mut accounts_bytes = Vec::new();
        {
            let state = read_lock(&self.inner.state);
            let start = usize::try_from(manifest.accounts).expect("fits");
            let end = usize::try_from(frozen.accounts_end).expect("fits");
            for account in &state.accounts[start..end] {
                push_frame(
                    &mut accounts_bytes,
                    &AccountEntry { seq: account.seq, id: account.id.clone(), currency: account.currency.clone() },
                );
            }
        }
        write_at(files, &files.accounts, &dir.join(ACCOUNTS_NAME), &accounts_bytes, manifest.accounts_bytes)?;

        // Transfers: strings, records, and the page index.
        let mut strings = Vec::new();
        let mut records = Vec::with_capacity(memtable.transfers.len() * TRANSFER_RECORD_BYTES);
        let mut page_seqs = Vec::new();
        for (index, entry) in memtable.transfers.iter().enumerate() {
            let ordinal = memtable.first_ordinal + u64::try_from(index).expect("fits");
            let transfer = &entry.transfer;
            let strings_offset = manifest.strings_bytes + u64::try_from(strings.len()).expect("fits");
            let strings_bytes = push_frame(
                &mut strings,
                &TransferStrings {
                    id: transfer.id.clone(),
                    description: transfer.description.clone(),
                    metadata: transfer.metadata.clone(),
                },
            );
            let record = TransferRecord {
                seq: transfer.seq,
                last_seq: transfer.last_seq,
                created_at_ms: transfer.created_at_ms,
                amount: transfer.amount,
                posted_amount: transfer.posted_amount,
                debit_account: entry.debit,
                credit_account: entry.credit,
                previous_of_debit: entry.previous_of_debit,
                previous_of_credit: entry.previous_of_credit,
                timeout_seconds: transfer.timeout_seconds,
                strings_offset,
                strings_bytes: u32::try_from(strings_bytes).expect("a frame is below 4 GiB"),
                status: transfer.status,
                pending: transfer.pending,
                fingerprint: entry.fingerprint,
            };
            records.extend_from_slice(&record.encode());
            if ordinal.is_multiple_of(RECORDS_PER_PAGE) {
                page_seqs.push(transfer.seq);
            }
        }
        write_at(files, &files.strings, &dir.join(STRINGS_NAME), &strings, manifest.strings_bytes)?;
        let record_bytes = u64::try_from(TRANSFER_RECORD_BYTES).expect("fits");
        write_at(files, &files.transfers, &dir.join(TRANSFERS_NAME), &records, memtable.first_ordinal * record_bytes)?;
        let page_bytes: Vec<u8> = page_seqs.iter().flat_map(|seq| seq.to_le_bytes()).collect();
        let pages_offset = memtable.first_ordinal.div_ceil(RECORDS_PER_PAGE) * 8;
        write_at(files, &files.pages, &dir.join(PAGES_NAME), &page_bytes, pages_offset)?;

        // Facts, in log order.
        let mut facts: Vec<&Arc<FactEntry>> = memtable.facts.values().collect();
        facts.sort_unstable_by_key(|entry| entry.seq);
        let mut fact_bytes = Vec::new();
        let mut fact_entries = Vec::with_capacity(facts.len());
        for entry in facts {
            let offset = manifest.facts_bytes + u64::try_from(fact_bytes.len()).expect("fits");
            push_frame(&mut fact_bytes, &**entry);
            fact_entries.push((self.fact_fingerprint(&entry.kind, &entry.key), offset));
        }
        write_at(files, &files.facts, &dir.join(FACTS_NAME), &fact_bytes, manifest.facts_bytes)?;

        // The new index runs.
        let ordinals = (memtable.first_ordinal..).zip(&memtable.transfers);
        let transfer_entries = ordinals.clone().map(|(ordinal, entry)| (entry.fingerprint, ordinal)).collect();
        let new_transfer_run = write_new_run(dir, &mut manifest, Index::Transfers, transfer_entries)?;
        let account_entries = ordinals
            .flat_map(|(ordinal, entry)| [(u64::from(entry.debit), ordinal), (u64::from(entry.credit), ordinal)])
            .collect();
        let new_account_run = write_new_run(dir, &mut manifest, Index::Accounts, account_entries)?;
        let new_fact_run = write_new_run(dir, &mut manifest, Index::Facts, fact_entries)?;

        // Holds of earlier checkpoints posted, voided or expired since: in place.
        if !memtable.changes.is_empty() || !memtable.first_ordinal.is_multiple_of(RECORDS_PER_PAGE) {
            let path = dir.join(TRANSFERS_NAME);
            let _writing = write_lock(&self.inner.records_lock);
            for (ordinal, change) in &memtable.changes {
                let offset = ordinal * record_bytes;
                let mut bytes = [0_u8; TRANSFER_RECORD_BYTES];
                files.transfers.read_exact_at(&mut bytes, offset).map_err(io_error(&path, "read a record"))?;
                let mut record = TransferRecord::decode(&bytes)
                    .map_err(|error| format_damage(&path, &format!("the record of transfer {ordinal}"), &error))?;
                if change.last_seq > record.last_seq {
                    record.status = change.status;
                    record.posted_amount = change.posted_amount;
                    record.last_seq = change.last_seq;
                    files
                        .transfers
                        .write_all_at(&record.encode(), offset)
                        .map_err(io_error(&path, "write a record"))?;
                }
                self.inner.cache.invalidate((TRANSFERS_CACHE, ordinal / RECORDS_PER_PAGE));
            }
            // The page the new records began on was partly on disk: its cached copy is stale.
            self.inner.cache.invalidate((TRANSFERS_CACHE, memtable.first_ordinal / RECORDS_PER_PAGE));
        }

        // Heads, when they moved.
        let heads_changed = !memtable.transfers.is_empty() || frozen.accounts_end != manifest.accounts;
        let old_heads = manifest.heads_number;
        if heads_changed {
            let number = manifest.next_file_number;
            manifest.next_file_number += 1;
            let path = dir.join(heads_name(number));
            let file = File::create(&path).map_err(io_error(&path, "create"))?;
            file.write_all_at(&encode_heads(&frozen.heads), 0).map_err(io_error(&path, "write"))?;
            file.sync_all().map_err(io_error(&path, "fsync"))?;
            manifest.heads_number = number;
        }

        for (file, name) in [
            (&files.transfers, TRANSFERS_NAME),
            (&files.strings, STRINGS_NAME),
            (&files.accounts, ACCOUNTS_NAME),
            (&files.facts, FACTS_NAME),
            (&files.pages, PAGES_NAME),
        ] {
            file.sync_data().map_err(io_error(&dir.join(name), "fdatasync"))?;
        }
        durable::sync_dir(dir).map_err(io_error(dir, "fsync the directory"))?;

        manifest.watermark_seq = memtable.last_seq;
        manifest.transfers = memtable.end_ordinal();
        manifest.strings_bytes += u64::try_from(strings.len()).expect("fits");
        manifest.accounts = frozen.accounts_end;
        manifest.accounts_bytes += u64::try_from(accounts_bytes.len()).expect("fits");
        manifest.facts_bytes += u64::try_from(fact_bytes.len()).expect("fits");
        if let Some(run) = &new_transfer_run {
            manifest.transfer_runs.push(RunName { number: run.number, entries: run.entries() });
        }
        if let Some(run) = &new_fact_run {
            manifest.fact_runs.push(RunName { number: run.number, entries: run.entries() });
        }
        if let Some(run) = &new_account_run {
            manifest.account_runs.push(RunName { number: run.number, entries: run.entries() });
        }
        write_manifest(dir, &manifest)?;

        {
            let mut state = write_lock(&self.inner.state);
            state.disk.transfers = manifest.transfers;
            state.disk.strings_bytes = manifest.strings_bytes;
            state.disk.facts_bytes = manifest.facts_bytes;
            state.disk.transfer_runs.extend(new_transfer_run);
            state.disk.fact_runs.extend(new_fact_run);
            state.disk.account_runs.extend(new_account_run);
            state.page_seqs.extend(page_seqs);
            state.frozen = None;
        }
        let watermark = manifest.watermark_seq;
        *manifest_guard = manifest;
        drop(manifest_guard);
        self.inner.durable.store(watermark, Ordering::Release);
        if heads_changed {
            let _ = std::fs::remove_file(dir.join(heads_name(old_heads)));
        }
        metrics::gauge!(DURABLE_SEQ).set(seq_as_gauge(watermark));
        Ok(watermark)
    }

    fn want_merge(&self) {
        let (wanted, condvar) = &self.inner.merge_wanted;
        *lock(wanted) = true;
        condvar.notify_all();
    }

    fn merge_loop(&self) {
        loop {
            {
                let (wanted, condvar) = &self.inner.merge_wanted;
                let mut flag =
                    condvar.wait_while(lock(wanted), |flag| !*flag).unwrap_or_else(std::sync::PoisonError::into_inner);
                *flag = false;
            }
            if lock(&self.inner.queue).stop {
                return;
            }
            for index in Index::ALL {
                if lock(&self.inner.queue).stop {
                    return;
                }
                loop {
                    match self.merge_once(index) {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(error) => {
                            tracing::error!(%error, "merging index runs failed; lookups go on over the unmerged runs");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Merges one tier of runs if one is due; returns whether it did.
    fn merge_once(&self, index: Index) -> Result<bool, HistoryError> {
        let (runs, number) = {
            let mut manifest = lock(&self.inner.manifest);
            let state = read_lock(&self.inner.state);
            let Some(group) = tier_to_merge(index.runs(&state.disk)) else { return Ok(false) };
            let number = manifest.next_file_number;
            manifest.next_file_number += 1;
            (group, number)
        };
        let started = Instant::now();
        let path = self.inner.dir.join(run_name(number));
        let merged = Arc::new(run::merge(&runs, &path, number)?);
        let mut manifest_guard = lock(&self.inner.manifest);
        let mut manifest = manifest_guard.clone();
        let merged_numbers: Vec<u64> = runs.iter().map(|run| run.number).collect();
        let names = index.names_mut(&mut manifest);
        names.retain(|name| !merged_numbers.contains(&name.number));
        names.push(RunName { number, entries: merged.entries() });
        write_manifest(&self.inner.dir, &manifest)?;
        {
            let mut state = write_lock(&self.inner.state);
            let runs = index.runs_mut(&mut state.disk);
            runs.retain(|run| !merged_numbers.contains(&run.number));
            runs.push(merged.clone());
        }
        *manifest_guard = manifest;
        drop(manifest_guard);
        for run in &runs {
            let _ = std::fs::remove_file(&run.path);
        }
        metrics::histogram!(MERGE_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        tracing::debug!(entries = merged.entries(), runs = runs.len(), "history index runs merged");
        Ok(true)
    }
}

/// Writes `entries` (in any order) as a new run of `index` numbered from `manifest`, synced;
/// `None` when there are none.
fn write_new_run(
    dir: &Path,
    manifest: &mut Manifest,
    index: Index,
    mut entries: Vec<(u64, u64)>,
) -> Result<Option<Arc<Run>>, HistoryError> {
    if entries.is_empty() {
        return Ok(None);
    }
    entries.sort_unstable();
    entries.dedup();
    let number = manifest.next_file_number;
    manifest.next_file_number += 1;
    let count = u64::try_from(entries.len()).expect("fits");
    let run = Run::write(&dir.join(run_name(number)), number, index.filter(), count, entries.into_iter())?;
    Ok(Some(Arc::new(run)))
}

/// The runs of the smallest tier with [`MERGE_FAN_IN`] runs of similar size, if any.
fn tier_to_merge(runs: &[Arc<Run>]) -> Option<Vec<Arc<Run>>> {
    let mut by_size: Vec<&Arc<Run>> = runs.iter().collect();
    by_size.sort_by_key(|run| run.entries());
    by_size.windows(MERGE_FAN_IN).find_map(|window| {
        let smallest = window[0].entries().max(1);
        let largest = window[MERGE_FAN_IN - 1].entries();
        (largest <= smallest.saturating_mul(TIER_RATIO)).then(|| window.iter().map(|run| (*run).clone()).collect())
    })
}

fn write_at(_files: &Files, file: &File, path: &Path, bytes: &[u8], offset: u64) -> Result<(), HistoryError> {
    if bytes.is_empty() {
        return Ok(());
    }
    file.write_all_at(bytes, offset).map_err(io_error(path, "write"))
}

/// A sequence as a gauge value (exact below 2^53, which any sequence here is).
fn seq_as_gauge(seq: u64) -> f64 {
    let high = f64::from(u32::try_from(seq >> 32).unwrap_or(u32::MAX));
    let low = f64::from(u32::try_from(seq & 0xffff_ffff).unwrap_or(u32::MAX));
    high * 4_294_967_296.0 + low
}

// ---------------------------------------------------------------------------------------------
// Backups, exports and checks
// ---------------------------------------------------------------------------------------------

/// What [`History::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub transfers: u64,
    pub accounts: u64,
    pub facts: u64,
    pub watermark_seq: u64,
    /// Every problem found, for humans; empty when sound.
    pub problems: Vec<String>,
}

impl History {
    /// Copies the files as of the durable watermark into `target` (a new `history`
    /// directory), consistently: the manifest and the files it names are taken under the
    /// manifest's lock (run and heads files as hard links, so the lock is held briefly), the
    /// append-only files up to the lengths it covers. A hold posted in place by a checkpoint
    /// during the copy may show its newer state: recovery from the copy ingests the log after
    /// the watermark again, which brings that change too (so copy the log after this).
    pub fn backup_to(&self, target: &Path) -> Result<u64, HistoryError> {
        let dir = &self.inner.dir;
        let staging = dir.join(format!("backup-staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io_error(&staging, "create the directory"))?;
        let manifest = {
            let manifest = lock(&self.inner.manifest).clone();
            let names: Vec<String> = Index::ALL
                .into_iter()
                .flat_map(|index| index.names(&manifest))
                .map(|run| run_name(run.number))
                .chain((manifest.accounts > 0).then(|| heads_name(manifest.heads_number)))
                .collect();
            for name in &names {
                std::fs::hard_link(dir.join(name), staging.join(name)).map_err(io_error(&dir.join(name), "link"))?;
            }
            manifest
        };
        let copied = (|| {
            std::fs::create_dir_all(target).map_err(io_error(target, "create the directory"))?;
            let record_bytes = u64::try_from(TRANSFER_RECORD_BYTES).expect("fits");
            for (name, length) in [
                (TRANSFERS_NAME, manifest.transfers * record_bytes),
                (STRINGS_NAME, manifest.strings_bytes),
                (ACCOUNTS_NAME, manifest.accounts_bytes),
                (FACTS_NAME, manifest.facts_bytes),
                (PAGES_NAME, manifest.transfers.div_ceil(RECORDS_PER_PAGE) * 8),
            ] {
                copy_prefix(&dir.join(name), &target.join(name), length)?;
            }
            for entry in std::fs::read_dir(&staging).map_err(io_error(&staging, "list"))? {
                let entry = entry.map_err(io_error(&staging, "list"))?;
                let to = target.join(entry.file_name());
                std::fs::copy(entry.path(), &to).map_err(io_error(&to, "copy"))?;
                File::open(&to).and_then(|file| file.sync_all()).map_err(io_error(&to, "fsync"))?;
            }
            write_manifest(target, &manifest)
        })();
        let _ = std::fs::remove_dir_all(&staging);
        copied?;
        Ok(manifest.watermark_seq)
    }

    /// Writes a new history at `target_data_dir` holding exactly what this one held at
    /// `up_to_seq` (at most its watermark): the accounts and transfers created by then, each
    /// in the state it had then, and the facts recorded by then. `progress` hears (transfers
    /// done, transfers in all). For point-in-time restore.
    pub fn export_to(
        &self,
        target_data_dir: &Path,
        up_to_seq: u64,
        settings: HistorySettings,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(), HistoryError> {
        assert!(up_to_seq <= self.durable_seq(), "an export covers what the files hold");
        let (target, threads) = History::open(target_data_dir, settings)?;
        let accounts: Vec<AccountInfo> = {
            let state = read_lock(&self.inner.state);
            state.accounts.iter().filter(|account| account.seq <= up_to_seq).cloned().collect()
        };
        let (transfers, facts_bytes) = {
            let state = read_lock(&self.inner.state);
            (state.disk.transfers, state.disk.facts_bytes)
        };
        let no_older = HashMap::default();
        let import = |seq: u64, record: &Record| -> Result<(), HistoryError> {
            let mut state = write_lock(&target.inner.state);
            apply(&mut state, seq, record, &no_older, |bytes| target.fingerprint(bytes))
                .map_err(|reason| HistoryError::Ingest { seq, reason })?;
            drop(state);
            target.maybe_freeze()
        };
        for account in &accounts {
            let record = Record::CreateAccount {
                id: account.id.clone(),
                currency: account.currency.clone(),
                overdraft: engine::Overdraft::Unlimited,
                metadata: engine::Metadata::new(),
                created_at_ms: 0,
            };
            import(account.seq, &record)?;
        }
        for ordinal in 0..transfers {
            if ordinal % 4096 == 0 {
                progress(ordinal, transfers);
                target.wait_for_room()?;
            }
            let transfer = self.locate(ordinal)?.transfer;
            if transfer.seq > up_to_seq {
                break;
            }
            let creation = Record::CreateTransfer {
                id: transfer.id.clone(),
                debit_account: transfer.debit_account.clone(),
                credit_account: transfer.credit_account.clone(),
                amount: transfer.amount,
                currency: transfer.currency.clone(),
                pending: transfer.pending,
                timeout_seconds: transfer.timeout_seconds,
                description: transfer.description.clone(),
                metadata: transfer.metadata.clone(),
                created_at_ms: transfer.created_at_ms,
            };
            import(transfer.seq, &creation)?;
            // A hold resolved by then: its change. (One resolved later is pending then.)
            if transfer.pending && transfer.status != TransferStatus::Pending && transfer.last_seq <= up_to_seq {
                let (debit_account, credit_account) = (transfer.debit_account.clone(), transfer.credit_account.clone());
                let change = match transfer.status {
                    TransferStatus::Posted => Record::PostPending {
                        transfer: transfer.id.clone(),
                        debit_account,
                        credit_account,
                        pending_amount: transfer.amount,
                        posted_amount: transfer.posted_amount,
                    },
                    TransferStatus::Voided => Record::VoidPending {
                        transfer: transfer.id.clone(),
                        debit_account,
                        credit_account,
                        pending_amount: transfer.amount,
                    },
                    TransferStatus::Expired | TransferStatus::Pending => Record::ExpirePending {
                        transfer: transfer.id.clone(),
                        debit_account,
                        credit_account,
                        pending_amount: transfer.amount,
                    },
                };
                import(transfer.last_seq, &change)?;
            }
        }
        progress(transfers, transfers);
        let mut offset = 0;
        while offset < facts_bytes {
            let entry = self.read_fact(offset)?;
            offset += u64::try_from(frame_len_of(&entry)).expect("fits");
            if entry.seq <= up_to_seq {
                let record = Record::External { kind: entry.kind, key: entry.key, payload: entry.payload };
                import(entry.seq, &record)?;
            }
        }
        lock(&target.inner.manifest).complete_from_seq = self.complete_from_seq();
        target.finish_import(up_to_seq, threads)
    }

    /// Ends an import into a new history ([`History::export_to`], [`History::seed`]): every
    /// record up to `seq` counts as ingested, and the last checkpoint writes it all.
    fn finish_import(&self, seq: u64, threads: HistoryThreads) -> Result<(), HistoryError> {
        {
            let mut state = write_lock(&self.inner.state);
            state.active.last_seq = seq;
        }
        self.inner.ingested.store(seq, Ordering::Release);
        self.close(threads).map(|_| ())
    }

    /// Writes a new history at `target_data_dir` for a ledger restored from a snapshot alone
    /// (no history or log of its source): its accounts and its open holds, as of
    /// `ledger.last_seq`. The transfers settled before are not in it, since a snapshot does
    /// not hold them: [`History::complete_from_seq`] says so from then on.
    pub fn seed(target_data_dir: &Path, ledger: &Ledger, settings: HistorySettings) -> Result<(), HistoryError> {
        let (target, threads) = History::open(target_data_dir, settings)?;
        if target.ingested_seq() != 0 || target.stats().accounts != 0 {
            return Err(HistoryError::Failed("only an empty history can be seeded".to_owned()));
        }
        let no_older = HashMap::default();
        let import = |seq: u64, record: &Record| -> Result<(), HistoryError> {
            let mut state = write_lock(&target.inner.state);
            apply(&mut state, seq, record, &no_older, |bytes| target.fingerprint(bytes))
                .map_err(|reason| HistoryError::Ingest { seq, reason })?;
            drop(state);
            target.maybe_freeze()
        };
        let mut accounts: Vec<&engine::Account> = ledger.accounts.values().collect();
        accounts.sort_by(|left, right| left.id.cmp(&right.id));
        for account in accounts {
            // Sequence 0: the account was created before anything the history holds.
            let record = Record::CreateAccount {
                id: account.id.clone(),
                currency: account.currency.clone(),
                overdraft: account.overdraft,
                metadata: account.metadata.clone(),
                created_at_ms: account.created_at_ms,
            };
            import(0, &record)?;
        }
        let mut holds: Vec<&Arc<Transfer>> = ledger.open_holds.values().collect();
        holds.sort_by_key(|hold| hold.seq);
        for hold in holds {
            target.wait_for_room()?;
            let creation = Record::CreateTransfer {
                id: hold.id.clone(),
                debit_account: hold.debit_account.clone(),
                credit_account: hold.credit_account.clone(),
                amount: hold.amount,
                currency: hold.currency.clone(),
                pending: true,
                timeout_seconds: hold.timeout_seconds,
                description: hold.description.clone(),
                metadata: hold.metadata.clone(),
                created_at_ms: hold.created_at_ms,
            };
            import(hold.seq, &creation)?;
        }
        lock(&target.inner.manifest).complete_from_seq = ledger.last_seq;
        target.finish_import(ledger.last_seq, threads)
    }

    /// See [`Manifest::complete_from_seq`]: 0 when the history holds every record since the
    /// log's first, else the sequence it was seeded at from a snapshot alone.
    pub fn complete_from_seq(&self) -> u64 {
        lock(&self.inner.manifest).complete_from_seq
    }

    /// Every stored transfer in creation order, in its current state, to `visit` (checks of
    /// the whole ledger; stops at the first error `visit` or a read returns).
    pub fn for_each_transfer(
        &self,
        mut visit: impl FnMut(&Transfer) -> Result<(), String>,
    ) -> Result<(), HistoryError> {
        let count = read_lock(&self.inner.state).active.end_ordinal();
        for ordinal in 0..count {
            let located = self.locate(ordinal)?;
            visit(&located.transfer).map_err(|reason| damaged(&self.inner.dir, reason))?;
        }
        Ok(())
    }

    /// Reads and checks everything the files hold: every record and its strings, every chain
    /// link and head, every index run's pages and that they index exactly the transfers, every
    /// fact, the page index. `progress` hears (transfers done, in all).
    pub fn verify(&self, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport, HistoryError> {
        let (transfers, disk_transfers, accounts, heads, runs, fact_runs, account_runs, facts_bytes, page_seqs) = {
            let state = read_lock(&self.inner.state);
            (
                state.active.end_ordinal(),
                state.disk.transfers,
                state.accounts.len(),
                state.heads.clone(),
                state.disk.transfer_runs.clone(),
                state.disk.fact_runs.clone(),
                state.disk.account_runs.clone(),
                state.disk.facts_bytes,
                state.page_seqs.clone(),
            )
        };
        let mut report = VerifyReport {
            transfers,
            accounts: u64::try_from(accounts).expect("fits"),
            watermark_seq: self.durable_seq(),
            ..VerifyReport::default()
        };
        let problem = |report: &mut VerifyReport, text: String| {
            if report.problems.len() < 100 {
                report.problems.push(text);
            }
        };
        let mut running_heads = vec![0_u64; accounts];
        let mut previous_seq = 0;
        // What the account index must hold: its entries' count and an order-free digest.
        let (mut account_entries, mut account_digest) = (0_u64, 0_u64);
        for ordinal in 0..transfers {
            if ordinal % 65_536 == 0 {
                progress(ordinal, transfers);
            }
            let located = match self.locate(ordinal) {
                Ok(located) => located,
                Err(error) => {
                    problem(&mut report, error.to_string());
                    continue;
                }
            };
            let transfer = &located.transfer;
            if transfer.seq <= previous_seq {
                problem(&mut report, format!("transfer {} at ordinal {ordinal} is out of log order", transfer.id));
            }
            previous_seq = transfer.seq;
            if ordinal.is_multiple_of(RECORDS_PER_PAGE)
                && page_seqs
                    .get(usize::try_from(ordinal / RECORDS_PER_PAGE).expect("fits"))
                    .is_some_and(|seq| *seq != transfer.seq)
            {
                problem(
                    &mut report,
                    format!("the page index disagrees with transfer {} at ordinal {ordinal}", transfer.id),
                );
            }
            let (debit, credit) = (slot(located.links.debit), slot(located.links.credit));
            if debit >= accounts || credit >= accounts || debit == credit {
                problem(&mut report, format!("transfer {} names unknown or equal accounts", transfer.id));
                continue;
            }
            if located.links.previous_of_debit != running_heads[debit]
                || located.links.previous_of_credit != running_heads[credit]
            {
                problem(&mut report, format!("the account histories are broken at transfer {}", transfer.id));
            }
            running_heads[debit] = ordinal + 1;
            running_heads[credit] = ordinal + 1;
            if ordinal < disk_transfers {
                for account in [located.links.debit, located.links.credit] {
                    account_entries += 1;
                    account_digest = account_digest.wrapping_add(entry_digest(u64::from(account), ordinal));
                }
            }
            match self.find_transfer(&transfer.id) {
                Ok(Some((found, _))) if found == ordinal => {}
                Ok(_) => problem(&mut report, format!("the id index does not find transfer {}", transfer.id)),
                Err(error) => problem(&mut report, error.to_string()),
            }
        }
        progress(transfers, transfers);
        if running_heads != heads {
            problem(&mut report, "the heads of the account histories disagree with the transfers".to_owned());
        }
        let indexed: u64 = runs.iter().map(|run| run.entries()).sum();
        if indexed != disk_transfers {
            problem(
                &mut report,
                format!("the id index holds {indexed} entries for {disk_transfers} transfers in the files"),
            );
        }
        let (mut indexed_entries, mut indexed_digest) = (0_u64, 0_u64);
        for run in runs.iter().chain(&fact_runs).chain(&account_runs) {
            let of_accounts = account_runs.iter().any(|account_run| Arc::ptr_eq(account_run, run));
            for entry in run.entries_in_order() {
                match entry {
                    Ok((account, ordinal)) if of_accounts => {
                        indexed_entries += 1;
                        indexed_digest = indexed_digest.wrapping_add(entry_digest(account, ordinal));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        problem(&mut report, error.to_string());
                        break;
                    }
                }
            }
        }
        if (indexed_entries, indexed_digest) != (account_entries, account_digest) {
            problem(
                &mut report,
                format!(
                    "the account index holds {indexed_entries} entries, which disagree with the {account_entries} \
                     the transfers in the files make"
                ),
            );
        }
        let mut offset = 0;
        while offset < facts_bytes {
            match self.read_fact(offset) {
                Ok(entry) => {
                    report.facts += 1;
                    offset += u64::try_from(frame_len_of(&entry)).expect("fits");
                }
                Err(error) => {
                    problem(&mut report, error.to_string());
                    break;
                }
            }
        }
        Ok(report)
    }
}

/// The pages of `strings.dat` that hold the strings of `record`.
fn strings_pages(record: &TransferRecord) -> std::ops::RangeInclusive<u64> {
    let page_bytes = u64::try_from(PAGE_BYTES).expect("fits");
    let first = record.strings_offset / page_bytes;
    first..=(record.strings_offset + u64::from(record.strings_bytes.max(1)) - 1) / page_bytes
}

/// One entry's share of the account index's digest in [`History::verify`] (a sum of these, so
/// that the order of runs and entries does not matter).
fn entry_digest(account: u64, ordinal: u64) -> u64 {
    let mut value = account.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ordinal.rotate_left(29);
    value = (value ^ (value >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value ^ (value >> 29)
}

/// The length of a fact's frame.
fn frame_len_of(entry: &FactEntry) -> usize {
    let mut bytes = Vec::new();
    push_frame(&mut bytes, entry)
}

/// Copies the first `length` bytes of `from` into a new `to`, synced.
fn copy_prefix(from: &Path, to: &Path, length: u64) -> Result<(), HistoryError> {
    let source = File::open(from).map_err(io_error(from, "open"))?;
    let target = File::create(to).map_err(io_error(to, "create"))?;
    let mut buffer = vec![0_u8; 1 << 20];
    let mut at = 0;
    while at < length {
        let want = usize::try_from((length - at).min(1 << 20)).expect("fits");
        source.read_exact_at(&mut buffer[..want], at).map_err(io_error(from, "read"))?;
        target.write_all_at(&buffer[..want], at).map_err(io_error(to, "write"))?;
        at += u64::try_from(want).expect("fits");
    }
    target.sync_all().map_err(io_error(to, "fsync"))
}
