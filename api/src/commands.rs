//! The offline commands of `ledgerd`: `snapshot create|list|verify`, `restore` and `verify`.
//!
//! This module owns their flags, what they print and the behaviour the contract leaves open:
//!
//! - A data dir given to any of them must exist (it is never created, except `restore`'s new
//!   one), and `snapshot create` and `verify` need its log (`wal/`): a folder of snapshot files
//!   alone is checked with `snapshot verify`. `snapshot create`, `verify` and `restore` (on its source, when it reads its log)
//!   take the data dir's lock, so they fail at once, clearly, while a server runs on it.
//!   `snapshot list` and `snapshot verify` read only snapshot files, which are immutable once
//!   written, so they take no lock and also work on a serving data dir or a backup copy.
//! - `created_at` is RFC 3339 UTC with milliseconds, as in the HTTP API.
//! - `snapshot verify` without `--id` checks every snapshot of the data dir.
//! - `restore --from PATH` reads the log of the snapshot's own data dir (the parent of its
//!   `snapshots/` folder) when it has one, else `--source-dir`'s; `--from ID` needs
//!   `--source-dir`. `--to-seq` beyond the log, or before the snapshot, is an error; one inside
//!   an atomic unit restores to the unit's start (`restored_to_seq: M` says where). The new
//!   data dir holds one snapshot at the restored sequence, the history as of it (copied from
//!   the source's history, then its log) and an empty log: a server started on it continues
//!   the log from the next sequence. From a snapshot file alone (no source data dir), the
//!   history holds the accounts and the open holds only, and a warning says so.
//! - Results go to stdout; progress (at most one line a second, after the first second) and
//!   errors go to stderr. Exit 0 on success, 1 on any failure (2 for bad flags, from clap).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use config::Config;
use history::{History, HistorySettings};
use serde::Serialize;
use snapshots::{DataDirLock, RecoveryProgress, SnapshotInfo, Wal};

use crate::audit::{self, Audit, AuditProgress};
use crate::http::json::format_timestamp_ms;
use crate::serve::{self, ServeArgs};

/// `ledgerd snapshot ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Offline: writes a snapshot of the data dir's current state and prints its id.
    Create(SnapshotCreateArgs),
    /// Lists the snapshots of a data dir, oldest first.
    List(SnapshotListArgs),
    /// Checks the checksums and invariants of one snapshot (--id) or of all.
    Verify(SnapshotVerifyArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotCreateArgs {
    /// The data dir (must exist; no server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Config file whose [storage] retention applies after the snapshot (default: the
    /// embedded default and LEDGERD_STORAGE__* variables, as for serve).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotListArgs {
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// One JSON array of {"id", "seq", "accounts", "created_at", "bytes"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotVerifyArgs {
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The snapshot to check (`snap-<20 digits>`); default: every snapshot of the data dir.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}

/// `ledgerd restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// A snapshot file, or a snapshot id inside --source-dir.
    #[arg(long, value_name = "PATH_OR_ID")]
    pub from: String,
    /// The new data dir: must not exist, or be empty.
    #[arg(long, value_name = "NEW_DIR")]
    pub data_dir: PathBuf,
    /// The data dir holding the snapshot id and the log to replay (default for a file: the
    /// snapshot's own data dir).
    #[arg(long, value_name = "DIR")]
    pub source_dir: Option<PathBuf>,
    /// Replay the log up to and including this sequence (default: all of it).
    #[arg(long, value_name = "N")]
    pub to_seq: Option<u64>,
}

/// `ledgerd verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The data dir (must exist; no server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Why an offline command failed. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("data dir {} does not exist", .0.display())]
    NoDataDir(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{reason} (stop the server first, or work on a backup copy)")]
    Locked { reason: String },
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error(transparent)]
    Recovery(#[from] snapshots::RecoveryError),
    #[error(transparent)]
    Snapshot(#[from] snapshots::SnapshotError),
    #[error(transparent)]
    Wal(#[from] snapshots::WalError),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

/// Runs `ledgerd snapshot ...`.
pub fn run_snapshot(command: &SnapshotCommand) -> Result<(), CommandError> {
    match command {
        SnapshotCommand::Create(args) => snapshot_create(args),
        SnapshotCommand::List(args) => snapshot_list(args),
        SnapshotCommand::Verify(args) => snapshot_verify(args),
    }
}

/// The data dir must be an existing directory.
fn existing_dir(path: &Path) -> Result<(), CommandError> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(CommandError::NotADirectory(path.to_owned())),
        Err(_) => Err(CommandError::NoDataDir(path.to_owned())),
    }
}

/// Locks an existing data dir (fails at once when a server holds it).
fn lock_existing(path: &Path) -> Result<DataDirLock, CommandError> {
    existing_dir(path)?;
    DataDirLock::acquire(path).map_err(|error| CommandError::Locked { reason: error.to_string() })
}

/// Whether `path` holds a log (`wal/`); the commands never create one in a directory that
/// has none.
fn has_log(path: &Path) -> bool {
    path.join(snapshots::wal::WAL_DIR_NAME).is_dir()
}

/// Locks an existing data dir and opens its log, which must exist.
fn open_existing(path: &Path) -> Result<(DataDirLock, Wal), CommandError> {
    existing_dir(path)?;
    if !has_log(path) {
        return Err(CommandError::Invalid(format!(
            "{} has no log ({}/): not a data dir (`ledgerd snapshot verify` checks snapshot files alone)",
            path.display(),
            snapshots::wal::WAL_DIR_NAME
        )));
    }
    let lock = lock_existing(path)?;
    Ok((lock, Wal::open(path)?))
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    (actors::system_clock())()
}

/// Reports replay progress on stderr: nothing during the first second, then at most one line
/// a second.
struct ProgressLine {
    what: &'static str,
    started: Instant,
    last_printed: Option<Instant>,
}

impl ProgressLine {
    const FIRST_AFTER: Duration = Duration::from_secs(1);
    const EVERY: Duration = Duration::from_secs(1);

    fn new(what: &'static str) -> ProgressLine {
        ProgressLine { what, started: Instant::now(), last_printed: None }
    }

    /// Whether a line is due now (and, if so, that one is printed now).
    fn due(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let due = match self.last_printed {
            None => now.duration_since(self.started) >= Self::FIRST_AFTER,
            Some(last) => now.duration_since(last) >= Self::EVERY,
        };
        if !due {
            return None;
        }
        self.last_printed = Some(now);
        Some(now)
    }

    /// A step of other work: `done` of `of` (history copied, checked, ingested).
    fn step(&mut self, step: &str, done: u64, of: u64) {
        let Some(now) = self.due() else {
            return;
        };
        let percent = done.saturating_mul(100) / of.max(1);
        eprintln!(
            "ledgerd: {}: {step}: {done} of {of} ({percent}%), {:.0?} elapsed",
            self.what,
            now.duration_since(self.started)
        );
    }

    fn audit(&mut self, progress: AuditProgress) {
        match progress {
            AuditProgress::Replay(report) => self.report(report),
            AuditProgress::History { what, done, of } => self.step(what, done, of),
        }
    }

    fn report(&mut self, progress: RecoveryProgress) {
        let Some(now) = self.due() else {
            return;
        };
        let span = progress.target_seq.saturating_sub(progress.snapshot_seq).max(1);
        let done = progress.applied_seq.saturating_sub(progress.snapshot_seq);
        let percent = done.saturating_mul(100) / span;
        eprintln!(
            "ledgerd: {}: replayed {} records, at seq {} of {} ({percent}%), {:.0?} elapsed",
            self.what,
            progress.replayed_records,
            progress.applied_seq,
            progress.target_seq,
            now.duration_since(self.started)
        );
    }
}

/// Writes `text` to stdout.
fn print_out(text: &str) -> Result<(), CommandError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(CommandError::Output)
}

/// The config `snapshot create` applies retention with: as for serve (default < file <
/// environment), with the data dir of the flag.
fn offline_config(config_file: Option<&Path>, data_dir: &Path) -> Result<Config, CommandError> {
    let args = ServeArgs { config: config_file.map(Path::to_owned), data_dir: Some(data_dir.to_owned()), bind: None };
    let mut config = serve::load_config_unchecked_bind(&args, config::process_environment())?;
    config.storage.data_dir = data_dir.to_owned();
    Ok(config)
}

fn snapshot_create(args: &SnapshotCreateArgs) -> Result<(), CommandError> {
    let config = offline_config(args.config.as_deref(), &args.data_dir)?;
    let (_lock, wal) = open_existing(&args.data_dir)?;
    // Recovery opens the log itself.
    drop(wal);
    let mut progress = ProgressLine::new("snapshot create");
    let started = Instant::now();
    let recovered =
        snapshots::recover(&args.data_dir, serve::history_settings(&config), |report| progress.report(report))?;
    // The history checkpointed to the log's end, so that retention may drop all it covers.
    let history_seq = recovered.history.close(recovered.history_threads)?;
    let ledger = recovered.ledger;
    let newest = snapshots::list_snapshots(&args.data_dir)?.pop();
    let (info, written) = match newest.filter(|newest| newest.seq == ledger.last_seq) {
        Some(newest) => (newest, false),
        None => (snapshots::write_ledger_snapshot(&args.data_dir, &ledger, history_seq, now_ms())?, true),
    };
    let retained = snapshots::apply_retention(&args.data_dir, &recovered.wal, history_seq, serve::retention(&config))?;
    eprintln!(
        "ledgerd: snapshot {} at seq {}: {} accounts, {} open holds, {} bytes{} in {:.2?}{}",
        info.id,
        info.seq,
        info.accounts,
        info.open_holds,
        info.bytes,
        if written { " written" } else { " (already the newest: nothing new in the log)" },
        started.elapsed(),
        retention_note(retained.snapshots_removed, retained.log_groups_removed)
    );
    print_out(&format!("{}\n", info.id))
}

fn retention_note(snapshots_removed: usize, log_groups_removed: u64) -> String {
    if snapshots_removed == 0 && log_groups_removed == 0 {
        return String::new();
    }
    format!("; retention removed {snapshots_removed} older snapshot(s) and {log_groups_removed} log group(s)")
}

/// One snapshot as `snapshot list --json` prints it.
#[derive(Debug, Serialize)]
struct ListedSnapshot<'a> {
    id: &'a str,
    seq: u64,
    accounts: u64,
    created_at: String,
    bytes: u64,
}

fn listed(info: &SnapshotInfo) -> ListedSnapshot<'_> {
    ListedSnapshot {
        id: &info.id,
        seq: info.seq,
        accounts: info.accounts,
        created_at: format_timestamp_ms(info.created_at_ms),
        bytes: info.bytes,
    }
}

fn snapshot_list(args: &SnapshotListArgs) -> Result<(), CommandError> {
    existing_dir(&args.data_dir)?;
    let mut infos = Vec::new();
    for (_, path) in snapshots::snapshot_files(&args.data_dir)? {
        match snapshots::read_snapshot_info(&path) {
            Ok(info) => infos.push(info),
            Err(error) => eprintln!("ledgerd: warning: left out of the list: {error}"),
        }
    }
    let text = if args.json {
        let rows: Vec<ListedSnapshot<'_>> = infos.iter().map(listed).collect();
        let mut text = serde_json::to_string(&rows).map_err(|error| CommandError::Failed(error.to_string()))?;
        text.push('\n');
        text
    } else {
        infos
            .iter()
            .map(|info| {
                format!(
                    "{}  seq={}  accounts={}  created_at={}  bytes={}\n",
                    info.id,
                    info.seq,
                    info.accounts,
                    format_timestamp_ms(info.created_at_ms),
                    info.bytes
                )
            })
            .collect()
    };
    print_out(&text)
}

fn snapshot_verify(args: &SnapshotVerifyArgs) -> Result<(), CommandError> {
    existing_dir(&args.data_dir)?;
    let paths: Vec<PathBuf> = match &args.id {
        Some(id) => {
            let path = snapshots::snapshot_path_for_id(&args.data_dir, id)?;
            if !path.is_file() {
                return Err(CommandError::Invalid(format!(
                    "no snapshot {id} in {}",
                    snapshots::snapshots_dir(&args.data_dir).display()
                )));
            }
            vec![path]
        }
        None => snapshots::snapshot_files(&args.data_dir)?.into_iter().map(|(_, path)| path).collect(),
    };
    if paths.is_empty() {
        return Err(CommandError::Failed(format!(
            "no snapshot in {}",
            snapshots::snapshots_dir(&args.data_dir).display()
        )));
    }
    let mut unsound = Vec::new();
    let mut report = String::new();
    for path in &paths {
        // Reading checks the checksums, the decoding and every invariant of the state.
        match snapshots::read_snapshot(path) {
            Ok((info, ledger)) => {
                drop(ledger);
                report.push_str(&format!(
                    "{}  sound  seq={}  accounts={}  open_holds={}  bytes={}\n",
                    info.id, info.seq, info.accounts, info.open_holds, info.bytes
                ));
            }
            Err(error) => {
                let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
                report.push_str(&format!("{name}  UNSOUND  {error}\n"));
                unsound.push(error.to_string());
            }
        }
    }
    print_out(&report)?;
    match unsound.len() {
        0 => Ok(()),
        1 => Err(CommandError::Failed(unsound.remove(0))),
        count => Err(CommandError::Failed(format!("{count} snapshots are not sound; first: {}", unsound[0]))),
    }
}

/// Where `restore` reads from.
struct RestoreSource {
    snapshot: PathBuf,
    /// The data dir whose log is replayed and whose history is copied, if any.
    data_dir: Option<PathBuf>,
}

/// Whether `path` holds a log or a history: a data dir to read from (and to lock).
fn is_data_dir(path: &Path) -> bool {
    has_log(path) || History::exists(path)
}

fn restore_source(args: &RestoreArgs) -> Result<RestoreSource, CommandError> {
    let as_path = Path::new(&args.from);
    if as_path.is_file() {
        let own_dir = as_path
            .parent()
            .filter(|parent| parent.file_name().is_some_and(|name| name == snapshots::snapshot::SNAPSHOTS_DIR_NAME))
            .and_then(Path::parent)
            .map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
        let data_dir = match (&args.source_dir, own_dir) {
            (Some(source), _) => {
                existing_dir(source)?;
                is_data_dir(source).then(|| source.clone())
            }
            (None, Some(own)) if is_data_dir(own) => Some(own.to_owned()),
            (None, _) => None,
        };
        return Ok(RestoreSource { snapshot: as_path.to_owned(), data_dir });
    }
    if snapshots::snapshot::parse_snapshot_id(&args.from).is_some() {
        let Some(source) = &args.source_dir else {
            return Err(CommandError::Invalid(format!(
                "--from {} is a snapshot id: name its data dir with --source-dir DIR (or give the file's path)",
                args.from
            )));
        };
        existing_dir(source)?;
        let snapshot = snapshots::snapshot_path_for_id(source, &args.from)?;
        if !snapshot.is_file() {
            return Err(CommandError::Invalid(format!(
                "no snapshot {} in {}",
                args.from,
                snapshots::snapshots_dir(source).display()
            )));
        }
        return Ok(RestoreSource { snapshot, data_dir: is_data_dir(source).then(|| source.clone()) });
    }
    Err(CommandError::Invalid(format!(
        "--from {}: no such snapshot file, and not a snapshot id (snap-<20 digits>)",
        args.from
    )))
}

/// The restore target must not exist, or be an empty directory.
fn check_restore_target(target: &Path) -> Result<(), CommandError> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CommandError::Invalid(format!(
                    "--data-dir {} must not exist or be empty: it is not empty",
                    target.display()
                )));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(CommandError::Invalid(format!(
            "--data-dir {} must not exist or be an empty directory: {error}",
            target.display()
        ))),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `ledgerd restore`.
pub fn run_restore(args: &RestoreArgs) -> Result<(), CommandError> {
    let source = restore_source(args)?;
    check_restore_target(&args.data_dir)?;
    if let Some(source_dir) = &source.data_dir
        && same_dir(source_dir, &args.data_dir)
    {
        return Err(CommandError::Invalid("--data-dir must be a new data dir, not the source".to_owned()));
    }
    // The source: its lock (no server may append to the log or the history being read), then
    // its log.
    let source_lock = source.data_dir.as_deref().map(lock_existing).transpose()?;
    let wal = match &source.data_dir {
        Some(dir) if has_log(dir) => Some(Wal::open(dir)?),
        _ => None,
    };
    if let (Some(dir), Some(wal)) = (&source.data_dir, &wal)
        && let Err(error) = snapshots::log_watermark::check(dir, wal.last_seq())
    {
        eprintln!("ledgerd: warning: {error}; restoring from what the log still holds");
    }
    if wal.is_none() && args.to_seq.is_some() {
        eprintln!("ledgerd: note: no log next to the snapshot (and no --source-dir): only its own seq can be restored");
    }
    let mut progress = ProgressLine::new("restore");
    let started = Instant::now();
    let replayed =
        snapshots::replay_to(Some(&source.snapshot), wal.as_ref(), args.to_seq, |report| progress.report(report))?;
    let target_lock = lock_new_target(&args.data_dir)?;
    let restore_from = snapshots::RestoreSource { wal: wal.as_ref(), data_dir: source.data_dir.as_deref() };
    let info = snapshots::restore_into(
        &args.data_dir,
        &replayed,
        restore_from,
        now_ms(),
        HistorySettings::default(),
        |step, done, of| progress.step(step, done, of),
    )?;
    drop(wal);
    drop(source_lock);
    let seeded_at = History::open_read_only(&args.data_dir)?.complete_from_seq();
    drop(target_lock);
    if seeded_at > 0 {
        eprintln!(
            "ledgerd: warning: restored from the snapshot alone (no history or log of its data dir): the new data dir \
             has the accounts and the open holds, but not the transfers settled before seq {seeded_at}, which are \
             not readable there and whose ids are not remembered; restore from the source data dir or a backup \
             (--source-dir) to keep them"
        );
    }
    let ledger = &replayed.ledger;
    eprintln!(
        "ledgerd: restored seq {} ({} accounts, {} open holds; {} log records replayed after the snapshot) into {} in \
         {:.2?}",
        replayed.to_seq,
        ledger.accounts.len(),
        ledger.open_holds.len(),
        replayed.replayed_records,
        args.data_dir.display(),
        started.elapsed()
    );
    if let Some(asked) = args.to_seq
        && asked != replayed.to_seq
    {
        eprintln!(
            "ledgerd: note: seq {asked} is inside an atomic unit (a batch, or the facts of one decision); restored \
             to seq {}, before it",
            replayed.to_seq
        );
    }
    print_out(&format!("restored {} last_seq: {}\nrestored_to_seq: {}\n", info.id, replayed.to_seq, replayed.to_seq))
}

/// Locks the new data dir (created when missing) while the restore writes it; someone who
/// started writing into it since the check makes the restore fail.
fn lock_new_target(target: &Path) -> Result<DataDirLock, CommandError> {
    let created = !target.exists();
    let lock = DataDirLock::acquire(target).map_err(|error| CommandError::Locked { reason: error.to_string() })?;
    let foreign = std::fs::read_dir(target)
        .map_err(|error| CommandError::Invalid(format!("{}: {error}", target.display())))?
        .filter_map(Result::ok)
        .any(|entry| entry.file_name() != snapshots::lock::LOCK_FILE_NAME);
    if foreign {
        return Err(CommandError::Invalid(format!("--data-dir {} is no longer empty", target.display())));
    }
    if created && let Some(parent) = target.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        // Make the new directory's entry durable.
        durable::sync_dir(parent)
            .map_err(|error| CommandError::Failed(format!("fsync {}: {error}", parent.display())))?;
    }
    Ok(lock)
}

/// `ledgerd verify`.
pub fn run_verify(args: &VerifyArgs) -> Result<(), CommandError> {
    let (_lock, wal) = open_existing(&args.data_dir)?;
    let mut progress = ProgressLine::new("verify");
    let started = Instant::now();
    let audit = audit::audit_data_dir(&args.data_dir, &wal, |report| progress.audit(report));
    print_out(&verify_summary(&args.data_dir, &audit, started.elapsed()))?;
    match audit.problems.len() {
        0 if audit.ledger.is_some() => Ok(()),
        0 => Err(CommandError::Failed("verify failed: the ledger could not be rebuilt".to_owned())),
        1 => Err(CommandError::Failed(format!("verify failed: {}", audit.problems[0]))),
        count => Err(CommandError::Failed(format!("verify failed: {count} problems; first: {}", audit.problems[0]))),
    }
}

/// The printed summary of `ledgerd verify`.
pub fn verify_summary(data_dir: &Path, audit: &Audit, elapsed: Duration) -> String {
    let mut text = String::new();
    let mut line = |line: String| {
        text.push_str(&line);
        text.push('\n');
    };
    line(format!("data_dir: {}", data_dir.display()));
    line(match audit.log_range {
        Some((first, last)) => format!("log: seq {first} to {last}"),
        None => "log: empty".to_owned(),
    });
    let ids: Vec<&str> = audit.sound_snapshots.iter().map(|info| info.id.as_str()).collect();
    line(format!(
        "snapshots: {} sound, {} compared with the log{}",
        audit.sound_snapshots.len(),
        audit.cross_checked_snapshots,
        if ids.is_empty() { String::new() } else { format!(" ({})", ids.join(", ")) }
    ));
    for note in &audit.notes {
        line(format!("note: {note}"));
    }
    if let Some(history_seq) = audit.history_seq {
        line(format!("history: to seq {history_seq}"));
    }
    if let Some(ledger) = &audit.ledger {
        line(format!("accounts: {}", ledger.accounts.len()));
        line(format!("open holds: {}", ledger.open_holds.len()));
        if let Some(counts) = &audit.transfers {
            let total: u64 = counts.iter().map(|(_, count)| count).sum();
            let by_status: Vec<String> =
                counts.iter().map(|(status, count)| format!("{} {count}", status.as_str())).collect();
            line(format!("transfers: {total} ({})", by_status.join(", ")));
        }
        for (code, totals) in audit::currency_totals(ledger) {
            line(format!(
                "currency {code}: accounts {}, balances sum {}, positive balances {}",
                totals.accounts,
                totals.format(totals.balances),
                totals.format(totals.positive_balances)
            ));
        }
        line(format!("last_seq: {}", ledger.last_seq));
    }
    for problem in &audit.problems {
        line(format!("problem: {problem}"));
    }
    line(format!("verified in {:.2?}", elapsed));
    line(format!("result: {}", if audit.is_sound() { "sound" } else { "NOT SOUND" }));
    text
}
