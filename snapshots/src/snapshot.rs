//! Snapshot files: the accounts and the open holds at a log sequence (what the ledger keeps in
//! memory; the history is on disk in `history/`), in
//! `<data_dir>/snapshots/snap-<seq, 20 digits>.snap`.
//!
//! A file is a fixed header followed by a body, the postcard encoding of the last sequence,
//! the accounts and the open holds. Header (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 10 | magic `LEDGERSNAP` |
//! | 1 | format version |
//! | 8 | seq (the ledger's last applied sequence) |
//! | 8 | account count |
//! | 8 | open hold count |
//! | 8 | the history's watermark when it was taken |
//! | 8 | created_at_ms (i64) |
//! | 8 | body length |
//! | 4 | crc32c of the body |
//! | 4 | crc32c of the 63 header bytes before it |
//!
//! The body's two sequences may be written in chunks ([`SnapshotContents`]): each shard of the
//! live ledger encodes its own accounts and holds, and the writer puts the chunks after the
//! total counts, so a snapshot of live state needs no second copy of the ledger.
//!
//! Writing: `snap-<seq>.tmp`, streamed, `sync_all`, rename, fsync of the directory, so a file
//! with the final name is always complete. Reading checks the header checksum, the length
//! (truncation), the body checksum, the decoding (no trailing bytes), that the counts and the
//! sequence agree with the body, and finally [`Ledger::check_invariants`]. Any flipped byte or
//! truncation is an error naming the file, never a partial ledger.

use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `ledger_snapshot_last_seq`: the log sequence of the newest snapshot written.
pub const SNAPSHOT_LAST_SEQ: &str = "ledger_snapshot_last_seq";
/// `ledger_snapshot_duration_seconds`: writing one snapshot.
pub const SNAPSHOT_DURATION_SECONDS: &str = "ledger_snapshot_duration_seconds";

use engine::account::Account;
use engine::id::{Id, IdMap};
use engine::ledger::{InvariantViolation, Ledger};
use engine::transfer::Transfer;
use serde::{Deserialize, Serialize};

/// Name of the snapshots' directory inside the data directory.
pub const SNAPSHOTS_DIR_NAME: &str = "snapshots";
/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 10] = b"LEDGERSNAP";
/// Version of the current snapshot format (1 held every transfer; it is no longer read).
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;
/// Length of the header.
pub const SNAPSHOT_HEADER_BYTES: usize = 67;
const HEADER_CHECKED_BYTES: usize = SNAPSHOT_HEADER_BYTES - 4;
// magic, version, then seq, accounts, holds, history seq, created_at, body length, and two
// checksums.
const _: () = assert!(SNAPSHOT_HEADER_BYTES == SNAPSHOT_MAGIC.len() + 1 + 6 * 8 + 2 * 4);
const FILE_PREFIX: &str = "snap-";
const FILE_SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";
const SEQ_DIGITS: usize = 20;

/// What a snapshot's header says, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file stem, `snap-<seq, 20 digits>`.
    pub id: String,
    /// Sequence of the last record folded into it.
    pub seq: u64,
    pub accounts: u64,
    pub open_holds: u64,
    /// The history's durable watermark when it was taken.
    pub history_seq: u64,
    pub created_at_ms: i64,
    /// Size of the file.
    pub bytes: u64,
    pub path: PathBuf,
}

/// Why a snapshot could not be written or is not sound.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: io::Error },
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("snapshot {path} breaks an invariant: {violation}")]
    Invariant { path: PathBuf, violation: InvariantViolation },
    #[error("{id:?} is not a snapshot id (expected snap-<20 digits>)")]
    BadId { id: String },
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { path: path.to_owned(), action, source }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt { path: path.to_owned(), reason: reason.into() }
}

/// `<data_dir>/snapshots`.
pub fn snapshots_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SNAPSHOTS_DIR_NAME)
}

/// The id of the snapshot at `seq`.
pub fn snapshot_id(seq: u64) -> String {
    format!("{FILE_PREFIX}{seq:0width$}", width = SEQ_DIGITS)
}

/// The path of the snapshot at `seq`.
pub fn snapshot_path(data_dir: &Path, seq: u64) -> PathBuf {
    snapshots_dir(data_dir).join(format!("{}{FILE_SUFFIX}", snapshot_id(seq)))
}

/// The sequence an id (or file stem) names, if it is one.
pub fn parse_snapshot_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix(FILE_PREFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The path of the snapshot with id `id` in `data_dir` (the id is checked, so it cannot name
/// a file elsewhere).
pub fn snapshot_path_for_id(data_dir: &Path, id: &str) -> Result<PathBuf, SnapshotError> {
    let seq = parse_snapshot_id(id).ok_or_else(|| SnapshotError::BadId { id: id.to_owned() })?;
    Ok(snapshot_path(data_dir, seq))
}

/// The header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    seq: u64,
    accounts: u64,
    open_holds: u64,
    history_seq: u64,
    created_at_ms: i64,
    body_len: u64,
    body_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES] {
        let mut bytes = [0_u8; SNAPSHOT_HEADER_BYTES];
        bytes[0..10].copy_from_slice(SNAPSHOT_MAGIC);
        bytes[10] = SNAPSHOT_FORMAT_VERSION;
        bytes[11..19].copy_from_slice(&self.seq.to_le_bytes());
        bytes[19..27].copy_from_slice(&self.accounts.to_le_bytes());
        bytes[27..35].copy_from_slice(&self.open_holds.to_le_bytes());
        bytes[35..43].copy_from_slice(&self.history_seq.to_le_bytes());
        bytes[43..51].copy_from_slice(&self.created_at_ms.to_le_bytes());
        bytes[51..59].copy_from_slice(&self.body_len.to_le_bytes());
        bytes[59..63].copy_from_slice(&self.body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&bytes[..HEADER_CHECKED_BYTES]);
        bytes[63..67].copy_from_slice(&header_crc.to_le_bytes());
        bytes
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Header, SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(corrupt(
                path,
                format!("truncated: {} bytes, shorter than the {SNAPSHOT_HEADER_BYTES}-byte header", bytes.len()),
            ));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(bytes[63..67].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[..HEADER_CHECKED_BYTES]);
        if &bytes[0..10] != SNAPSHOT_MAGIC {
            return Err(corrupt(path, "not a ledgerd snapshot (bad magic)"));
        }
        if stored != computed {
            return Err(corrupt(
                path,
                format!("header checksum mismatch (stored {stored:08x}, computed {computed:08x})"),
            ));
        }
        if bytes[10] != SNAPSHOT_FORMAT_VERSION {
            return Err(corrupt(
                path,
                format!(
                    "snapshot format {}, but this ledgerd reads format {SNAPSHOT_FORMAT_VERSION} only (see RUNBOOK.md, \"Upgrading\")",
                    bytes[10]
                ),
            ));
        }
        Ok(Header {
            seq: u64_at(11),
            accounts: u64_at(19),
            open_holds: u64_at(27),
            history_seq: u64_at(35),
            created_at_ms: i64::from_le_bytes(bytes[43..51].try_into().expect("8 bytes")),
            body_len: u64_at(51),
            body_crc: u32::from_le_bytes(bytes[59..63].try_into().expect("4 bytes")),
        })
    }

    fn info(&self, path: &Path, bytes: u64) -> SnapshotInfo {
        SnapshotInfo {
            id: snapshot_id(self.seq),
            seq: self.seq,
            accounts: self.accounts,
            open_holds: self.open_holds,
            history_seq: self.history_seq,
            created_at_ms: self.created_at_ms,
            bytes,
            path: path.to_owned(),
        }
    }
}

/// The body as read: the last sequence, the accounts, the open holds.
#[derive(Deserialize)]
struct Body {
    last_seq: u64,
    accounts: KeyedSeq<Account>,
    open_holds: KeyedSeq<Arc<Transfer>>,
}

/// One of the body's sequences, encoded: its length and its elements' postcard encodings in
/// chunks (concatenated, they are the sequence's elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedItems {
    pub count: u64,
    pub chunks: Vec<Vec<u8>>,
}

impl EncodedItems {
    /// Adds a chunk holding `items`.
    pub fn push<'a, T: Serialize + 'a>(&mut self, items: impl IntoIterator<Item = &'a T>) {
        let mut chunk = Vec::new();
        for item in items {
            chunk = postcard::to_extend(item, chunk).expect("postcard encoding into a Vec is infallible");
            self.count += 1;
        }
        self.chunks.push(chunk);
    }

    /// Appends another's chunks.
    pub fn extend(&mut self, other: EncodedItems) {
        self.count += other.count;
        self.chunks.extend(other.chunks);
    }

    fn bytes(&self) -> u64 {
        self.chunks.iter().map(|chunk| u64::try_from(chunk.len()).expect("fits")).sum()
    }
}

/// What a snapshot holds, encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotContents {
    /// The ledger's last applied sequence.
    pub seq: u64,
    /// The history's durable watermark when it was taken.
    pub history_seq: u64,
    pub accounts: EncodedItems,
    pub open_holds: EncodedItems,
}

impl SnapshotContents {
    /// The contents of `ledger` (which must hold its invariants: checked).
    pub fn of_ledger(ledger: &Ledger, history_seq: u64) -> Result<SnapshotContents, InvariantViolation> {
        ledger.check_invariants()?;
        let mut accounts = EncodedItems::default();
        accounts.push(ledger.accounts.values());
        let mut open_holds = EncodedItems::default();
        open_holds.push(ledger.open_holds.values().map(|hold| &**hold));
        Ok(SnapshotContents { seq: ledger.last_seq, history_seq, accounts, open_holds })
    }

    /// Bytes of the encoded contents held in memory.
    pub fn bytes(&self) -> u64 {
        self.accounts.bytes() + self.open_holds.bytes()
    }
}

/// What a snapshot's sequence of accounts or transfers holds, and the key each is kept under.
trait Keyed: Sized {
    type Item: serde::de::DeserializeOwned;
    fn keyed(item: Self::Item) -> (Id, Self);
}

impl Keyed for Account {
    type Item = Account;
    fn keyed(account: Account) -> (Id, Account) {
        (account.id.clone(), account)
    }
}

impl Keyed for Arc<Transfer> {
    type Item = Transfer;
    fn keyed(transfer: Transfer) -> (Id, Arc<Transfer>) {
        (transfer.id.clone(), Arc::new(transfer))
    }
}

/// A sequence read straight into the map the ledger keeps it in, item by item: no
/// intermediate `Vec` (at 10M transfers that copy alone was gigabytes of peak memory). The
/// first key seen twice is kept aside for the reader to report (postcard's errors carry no
/// message of ours).
struct KeyedSeq<V> {
    map: IdMap<V>,
    duplicate: Option<Id>,
}

impl<'de, V: Keyed> Deserialize<'de> for KeyedSeq<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Keyed> serde::de::Visitor<'de> for SeqVisitor<V> {
            type Value = KeyedSeq<V>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a sequence of accounts or transfers")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyedSeq<V>, A::Error> {
                let mut map = IdMap::default();
                // The length is covered by the body's checksum; bounded all the same.
                map.reserve(seq.size_hint().unwrap_or(0).min(RESERVED_ITEMS_MAX));
                let mut duplicate = None;
                while let Some(item) = seq.next_element::<V::Item>()? {
                    let (id, value) = V::keyed(item);
                    match map.entry(id) {
                        Entry::Occupied(seen) => {
                            duplicate.get_or_insert_with(|| seen.key().clone());
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(value);
                        }
                    }
                }
                Ok(KeyedSeq { map, duplicate })
            }
        }

        deserializer.deserialize_seq(SeqVisitor(std::marker::PhantomData))
    }
}

/// Most items room is made for up front when reading a snapshot.
const RESERVED_ITEMS_MAX: usize = 1 << 25;

/// A writer computing the crc32c and the length of what goes through it.
struct Checksummed<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..written]);
        self.len += u64::try_from(written).expect("a length fits in u64");
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot of `contents` into `<data_dir>/snapshots/`, durably, replacing one at the
/// same sequence.
pub fn write_snapshot(
    data_dir: &Path,
    contents: &SnapshotContents,
    created_at_ms: i64,
) -> Result<SnapshotInfo, SnapshotError> {
    let started = Instant::now();
    let dir = snapshots_dir(data_dir);
    let name = format!("{}{FILE_SUFFIX}", snapshot_id(contents.seq));
    let path = dir.join(&name);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create the directory"))?;
    durable::sync_dir(data_dir).map_err(io_error(data_dir, "fsync the directory"))?;
    let mut header = None;
    durable::replace_file(&dir, &name, |file| {
        file.write_all(&[0_u8; SNAPSHOT_HEADER_BYTES])?;
        // Buffer first, checksum the buffered chunks: postcard writes many small pieces.
        let mut writer = BufWriter::with_capacity(1 << 20, Checksummed { inner: &mut *file, crc: 0, len: 0 });
        let mut varint = Vec::with_capacity(10);
        for (value, items) in [
            (contents.seq, None),
            (contents.accounts.count, Some(&contents.accounts)),
            (contents.open_holds.count, Some(&contents.open_holds)),
        ] {
            varint.clear();
            varint = postcard::to_extend(&value, varint).map_err(io::Error::other)?;
            writer.write_all(&varint)?;
            for chunk in items.map(|items| items.chunks.as_slice()).unwrap_or_default() {
                writer.write_all(chunk)?;
            }
        }
        let checksummed = writer.into_inner().map_err(|error| error.into_error())?;
        let (body_crc, body_len) = (checksummed.crc, checksummed.len);
        let written = Header {
            seq: contents.seq,
            accounts: contents.accounts.count,
            open_holds: contents.open_holds.count,
            history_seq: contents.history_seq,
            created_at_ms,
            body_len,
            body_crc,
        };
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&written.encode())?;
        header = Some(written);
        Ok(())
    })
    .map_err(io_error(&path, "write"))?;
    let header = header.expect("written");
    let info = header.info(&path, header.body_len + SNAPSHOT_HEADER_BYTES as u64);
    metrics::gauge!(SNAPSHOT_LAST_SEQ).set(info.seq as f64);
    metrics::histogram!(SNAPSHOT_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    tracing::info!(id = %info.id, seq = info.seq, accounts = info.accounts, open_holds = info.open_holds, bytes = info.bytes, "snapshot written");
    Ok(info)
}

/// Writes a snapshot of `ledger` (offline: after recovery); checks its invariants first.
pub fn write_ledger_snapshot(
    data_dir: &Path,
    ledger: &Ledger,
    history_seq: u64,
    created_at_ms: i64,
) -> Result<SnapshotInfo, SnapshotError> {
    let contents = SnapshotContents::of_ledger(ledger, history_seq)
        .map_err(|violation| SnapshotError::Invariant { path: snapshot_path(data_dir, ledger.last_seq), violation })?;
    write_snapshot(data_dir, &contents, created_at_ms)
}

/// Reads and fully checks the snapshot at `path`.
pub fn read_snapshot(path: &Path) -> Result<(SnapshotInfo, Ledger), SnapshotError> {
    let mut file = File::open(path).map_err(io_error(path, "open"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path, "read"))?;
    decode_snapshot(path, &bytes)
}

fn decode_snapshot(path: &Path, bytes: &[u8]) -> Result<(SnapshotInfo, Ledger), SnapshotError> {
    let header = Header::decode(path, bytes)?;
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    let actual_len = u64::try_from(body.len()).expect("a length fits in u64");
    if actual_len != header.body_len {
        return Err(corrupt(
            path,
            format!("the body is {actual_len} bytes, the header says {} (truncated or extended)", header.body_len),
        ));
    }
    let computed = crc32c::crc32c(body);
    if computed != header.body_crc {
        return Err(corrupt(
            path,
            format!("body checksum mismatch (stored {:08x}, computed {computed:08x})", header.body_crc),
        ));
    }
    let (decoded, rest): (Body, &[u8]) =
        postcard::take_from_bytes(body).map_err(|error| corrupt(path, format!("the body does not decode: {error}")))?;
    if !rest.is_empty() {
        return Err(corrupt(path, format!("{} trailing bytes after the body", rest.len())));
    }
    if let Some(duplicate) = decoded.accounts.duplicate {
        return Err(corrupt(path, format!("account {duplicate} appears twice")));
    }
    if let Some(duplicate) = decoded.open_holds.duplicate {
        return Err(corrupt(path, format!("transfer {duplicate} appears twice")));
    }
    let count = |len: usize| u64::try_from(len).expect("a count fits in u64");
    if decoded.last_seq != header.seq
        || count(decoded.accounts.map.len()) != header.accounts
        || count(decoded.open_holds.map.len()) != header.open_holds
    {
        return Err(corrupt(path, "the header does not match the body (seq or counts)"));
    }
    let mut ledger =
        Ledger { last_seq: decoded.last_seq, accounts: decoded.accounts.map, open_holds: decoded.open_holds.map };
    share_hold_allocations(&mut ledger);
    ledger.check_invariants().map_err(|violation| SnapshotError::Invariant { path: path.to_owned(), violation })?;
    let info = header.info(path, count(bytes.len()));
    Ok((info, ledger))
}

/// Makes the open holds share their accounts' id and currency allocations (as the live path
/// does), instead of keeping the copies decoded from the file.
fn share_hold_allocations(ledger: &mut Ledger) {
    for hold in ledger.open_holds.values_mut() {
        let (Some(debit), Some(credit)) =
            (ledger.accounts.get(&hold.debit_account), ledger.accounts.get(&hold.credit_account))
        else {
            // Reported by the invariant check that follows.
            continue;
        };
        let shared = Arc::make_mut(hold);
        shared.debit_account = debit.id.clone();
        shared.credit_account = credit.id.clone();
        shared.currency = debit.currency.clone();
    }
}

/// Reads only the header of the snapshot at `path` (and checks it, and the file's length).
pub fn read_snapshot_info(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let mut file = File::open(path).map_err(io_error(path, "open"))?;
    let len = file.metadata().map_err(io_error(path, "stat"))?.len();
    let mut bytes = [0_u8; SNAPSHOT_HEADER_BYTES];
    let mut read = 0;
    while read < bytes.len() {
        match file.read(&mut bytes[read..]).map_err(io_error(path, "read"))? {
            0 => break,
            n => read += n,
        }
    }
    let header = Header::decode(path, &bytes[..read])?;
    if header.body_len.checked_add(SNAPSHOT_HEADER_BYTES as u64) != Some(len) {
        return Err(corrupt(
            path,
            format!("the file is {len} bytes, the header says {} + {SNAPSHOT_HEADER_BYTES}", header.body_len),
        ));
    }
    Ok(header.info(path, len))
}

/// The snapshot files of `data_dir` (by name), oldest first: `(seq, path)`.
pub fn snapshot_files(data_dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let dir = snapshots_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(&dir, "list the directory")(error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(&dir, "list the directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name.strip_suffix(FILE_SUFFIX).and_then(parse_snapshot_id) {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// The snapshots of `data_dir`, oldest first, from their headers. A file whose header is
/// damaged is reported with a warning and left out (reading it fails with the reason).
pub fn list_snapshots(data_dir: &Path) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let mut infos = Vec::new();
    for (_, path) in snapshot_files(data_dir)? {
        match read_snapshot_info(&path) {
            Ok(info) => infos.push(info),
            Err(error) => tracing::warn!(%error, "snapshot left out of the list"),
        }
    }
    Ok(infos)
}

/// Deletes all but the `keep` newest snapshots (at least one is kept), and leftover
/// temporary files older than the newest snapshot. Returns the deleted paths.
pub fn prune(data_dir: &Path, keep: usize) -> Result<Vec<PathBuf>, SnapshotError> {
    let dir = snapshots_dir(data_dir);
    let files = snapshot_files(data_dir)?;
    let keep = keep.max(1);
    let mut removed = Vec::new();
    let newest = files.last().map_or(0, |(seq, _)| *seq);
    if files.len() > keep {
        for (_, path) in &files[..files.len() - keep] {
            std::fs::remove_file(path).map_err(io_error(path, "delete"))?;
            removed.push(path.clone());
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = name.strip_suffix(TMP_SUFFIX).and_then(parse_snapshot_id)
                && seq < newest
            {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error(&path, "delete"))?;
                removed.push(path);
            }
        }
    }
    if !removed.is_empty() {
        durable::sync_dir(&dir).map_err(io_error(&dir, "fsync the directory"))?;
    }
    Ok(removed)
}

/// How many snapshots and how much log to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Newest snapshots kept (at least 1).
    pub snapshots_kept: usize,
    /// 0 = keep the whole log; N = drop the log groups wholly covered by the Nth newest
    /// snapshot and by the history's watermark.
    pub wal_retention_snapshots: usize,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retained {
    pub snapshots_removed: usize,
    pub log_groups_removed: u64,
}

/// Applies `retention` after a snapshot: all but the newest `snapshots_kept` snapshots go, and
/// with `wal_retention_snapshots = N > 0` the log groups covered both by the Nth newest
/// snapshot and by the history's watermark `history_seq` (recovery needs the log after the
/// older of the two).
pub fn apply_retention(
    data_dir: &Path,
    wal: &crate::wal::Wal,
    history_seq: u64,
    retention: Retention,
) -> Result<Retained, crate::recovery::RecoveryError> {
    let snapshots_removed = prune(data_dir, retention.snapshots_kept)?.len();
    let mut log_groups_removed = 0;
    if retention.wal_retention_snapshots > 0 {
        let files = snapshot_files(data_dir)?;
        if let Some(index) = files.len().checked_sub(retention.wal_retention_snapshots) {
            let covered_seq = files[index].0.min(history_seq);
            log_groups_removed = wal.remove_groups_before(covered_seq + 1)?;
            tracing::info!(removed = log_groups_removed, covered_seq, "log groups dropped by retention");
        }
    }
    Ok(Retained { snapshots_removed, log_groups_removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{ops_strategy, records_for, sample_ledger};
    use proptest::prelude::*;

    fn write(data_dir: &Path, ledger: &Ledger, created_at_ms: i64) -> Result<SnapshotInfo, SnapshotError> {
        write_ledger_snapshot(data_dir, ledger, ledger.last_seq, created_at_ms)
    }

    #[test]
    fn write_then_read_gives_the_same_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = sample_ledger();
        assert!(!ledger.open_holds.is_empty(), "the sample has an open hold");
        let info = write(dir.path(), &ledger, 1_700_000_000_123).unwrap();
        assert_eq!(info.seq, ledger.last_seq);
        assert_eq!(info.id, format!("snap-{:020}", ledger.last_seq));
        assert_eq!(info.path, dir.path().join("snapshots").join(format!("{}.snap", info.id)));
        assert_eq!((info.accounts, info.open_holds, info.created_at_ms), (3, 1, 1_700_000_000_123));
        assert_eq!(info.history_seq, ledger.last_seq);
        assert_eq!(info.bytes, std::fs::metadata(&info.path).unwrap().len());
        let (read_info, read) = read_snapshot(&info.path).unwrap();
        assert_eq!(read_info, info);
        assert_eq!(read, ledger);
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![info]);
        assert!(
            !std::fs::read_dir(snapshots_dir(dir.path()))
                .unwrap()
                .any(|entry| { entry.unwrap().path().extension().unwrap() == "tmp" })
        );
    }

    #[test]
    fn contents_in_chunks_read_back_as_one_ledger() {
        // What the shards of a live ledger write: each its own accounts and holds.
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = sample_ledger();
        let mut contents = SnapshotContents { seq: ledger.last_seq, history_seq: 3, ..SnapshotContents::default() };
        for part in 0..2 {
            let mut accounts = EncodedItems::default();
            accounts.push(
                ledger.accounts.values().enumerate().filter(|(index, _)| index % 2 == part).map(|(_, account)| account),
            );
            contents.accounts.extend(accounts);
            contents.open_holds.push(ledger.open_holds.values().map(|hold| &**hold).filter(|_| part == 0));
        }
        let info = write_snapshot(dir.path(), &contents, 5).unwrap();
        assert_eq!(info.history_seq, 3);
        assert_eq!(read_snapshot(&info.path).unwrap().1, ledger);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = sample_ledger();
        let info = write(dir.path(), &ledger, 7).unwrap();
        let bytes = std::fs::read(&info.path).unwrap();
        let path = Path::new("test.snap");
        assert!(decode_snapshot(path, &bytes).is_ok());
        for index in 0..bytes.len() {
            for flip in [0x01_u8, 0x80] {
                let mut corrupted = bytes.clone();
                corrupted[index] ^= flip;
                assert!(
                    decode_snapshot(path, &corrupted).is_err(),
                    "flip {flip:#x} at byte {index} of {} went unnoticed",
                    bytes.len()
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(decode_snapshot(path, &bytes[..len]).is_err(), "truncation to {len} bytes went unnoticed");
        }
        let mut extended = bytes.clone();
        extended.push(0);
        assert!(decode_snapshot(path, &extended).is_err());
        // Through the file system too, with the error naming the file.
        std::fs::write(&info.path, &bytes[..bytes.len() - 1]).unwrap();
        let error = read_snapshot(&info.path).unwrap_err();
        assert!(error.to_string().contains(&info.id), "{error}");
        assert!(read_snapshot_info(&info.path).is_err());
        assert!(list_snapshots(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_ledger_breaking_an_invariant_is_neither_written_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = sample_ledger();
        let account = ledger.accounts.values_mut().find(|account| !account.pending_debits.is_zero()).unwrap();
        account.pending_debits = engine::Amount::from_minor_units(1);
        assert!(matches!(write(dir.path(), &ledger, 0), Err(SnapshotError::Invariant { .. })));
        // Written around the check (as a buggy writer could), it is refused when read.
        let mut contents = SnapshotContents { seq: ledger.last_seq, ..SnapshotContents::default() };
        contents.accounts.push(ledger.accounts.values());
        contents.open_holds.push(ledger.open_holds.values().map(|hold| &**hold));
        let info = write_snapshot(dir.path(), &contents, 0).unwrap();
        assert!(matches!(read_snapshot(&info.path), Err(SnapshotError::Invariant { .. })));
    }

    /// A body whose checksums are right but which lists an item twice (a writer bug, not a
    /// flipped byte) is refused, naming the item.
    #[test]
    fn an_account_or_hold_listed_twice_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = sample_ledger();
        let accounts: Vec<&Account> = ledger.accounts.values().collect();
        let holds: Vec<&Transfer> = ledger.open_holds.values().map(|hold| &**hold).collect();
        let listed = |accounts: &[&Account], holds: &[&Transfer]| {
            let mut contents = SnapshotContents { seq: ledger.last_seq, ..SnapshotContents::default() };
            contents.accounts.push(accounts.iter().copied());
            contents.open_holds.push(holds.iter().copied());
            let info = write_snapshot(dir.path(), &contents, 0).unwrap();
            read_snapshot(&info.path).map(|(_, read)| read).map_err(|error| error.to_string())
        };
        let repeated_holds = [holds[0], holds[0]];
        let error = listed(&accounts, &repeated_holds).unwrap_err();
        assert!(error.contains(&format!("transfer {} appears twice", holds[0].id)), "{error}");
        let mut repeated_accounts = accounts.clone();
        repeated_accounts.insert(0, accounts[2]);
        let error = listed(&repeated_accounts, &holds).unwrap_err();
        assert!(error.contains(&format!("account {} appears twice", accounts[2].id)), "{error}");
        assert_eq!(listed(&accounts, &holds).unwrap(), ledger);
    }

    #[test]
    fn prune_keeps_the_newest_and_ids_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = sample_ledger();
        let mut seqs = Vec::new();
        for step in 0..4 {
            ledger.last_seq += 10;
            seqs.push(write(dir.path(), &ledger, step).unwrap().seq);
        }
        std::fs::write(snapshots_dir(dir.path()).join(format!("{}.tmp", snapshot_id(1))), b"partial").unwrap();
        let removed = prune(dir.path(), 2).unwrap();
        assert_eq!(removed.len(), 3);
        let left: Vec<u64> = list_snapshots(dir.path()).unwrap().iter().map(|info| info.seq).collect();
        assert_eq!(left, seqs[2..]);
        assert_eq!(prune(dir.path(), 0).unwrap().len(), 1, "at least one is kept");
        assert_eq!(
            snapshot_path_for_id(dir.path(), &snapshot_id(seqs[3])).unwrap(),
            snapshot_path(dir.path(), seqs[3])
        );
        assert!(snapshot_path_for_id(dir.path(), "../../etc/passwd").is_err());
        assert!(snapshot_path_for_id(dir.path(), "snap-12").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn random_ledgers_round_trip(ops in ops_strategy(0..120)) {
            let mut ledger = Ledger::default();
            records_for(&ops, &mut ledger);
            let dir = tempfile::tempdir().unwrap();
            let info = write(dir.path(), &ledger, 42).unwrap();
            let (read_info, read) = read_snapshot(&info.path).unwrap();
            prop_assert_eq!(read_info, info);
            prop_assert_eq!(read, ledger);
        }
    }
}
