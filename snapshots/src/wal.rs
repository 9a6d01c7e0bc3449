//! The write-ahead log: record groups in one sled tree under `<data_dir>/wal/`, made durable
//! against power loss.
//!
//! One sled key per group: the group's first sequence as 8 big-endian bytes, so that key order
//! is log order. The value is the group's checksummed envelope
//! ([`engine::record::encode_group`]); [`EncodedGroup`] builds the same bytes straight from
//! records, without first collecting them into a [`Group`].
//!
//! Durability: sled 0.34's `flush()` ends in `sync_file_range`, which survives a process crash
//! but not a power loss (sled issue #1452). After every flush, [`Wal::append`] therefore calls
//! `fdatasync` on sled's data file (`wal/db`, through a descriptor of our own) and fsyncs every
//! blob file sled created since the last append (values and consolidated tree nodes larger than
//! a quarter of a segment are written by sled as separate files under `wal/blobs/`, which sled
//! never syncs), then the `blobs` directory. Only then is an append acknowledged. sled's own
//! periodic flusher is switched off: the committer thread is the only one that flushes.
//!
//! Reading ([`Wal::groups_from`]) verifies every group (checksum, key, contiguity); a corrupt
//! group or a gap is an error naming the sequence, never skipped. sled allows reads from other
//! threads while the committer appends (a [`Wal`] is a cheap clone of one shared handle).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use engine::record::{DecodeError, ENVELOPE_HEADER_BYTES, GROUP_FORMAT_VERSION, Group, Record, Unit, decode_group};

/// Name of the log's directory inside the data directory.
pub const WAL_DIR_NAME: &str = "wal";
/// sled's segment size for the log (fixed: sled refuses to reopen a db with another). Values
/// and tree nodes above a quarter of it become blob files; 16 MiB (sled's maximum) keeps
/// groups of a few MiB and leaves of many 100 KB groups inline in the main file.
const SEGMENT_BYTES: usize = 16 << 20;
/// sled's page cache. The log is written once and read back sequentially at recovery, so a
/// large cache buys little and costs resident memory.
const CACHE_BYTES: u64 = 64 << 20;
/// Most bytes before the records in an encoded group: envelope header, two varints.
const PREFIX_BYTES_MAX: usize = ENVELOPE_HEADER_BYTES + 2 * VARINT_U64_BYTES_MAX;
const VARINT_U64_BYTES_MAX: usize = 10;
const TREE_NAME: &[u8] = b"wal";

/// What went wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log at {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("write-ahead log at {path}: {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: io::Error },
    #[error("write-ahead log: the group at seq {seq} is corrupt: {source}")]
    Corrupt { seq: u64, source: DecodeError },
    #[error("write-ahead log: the group stored under seq {key} says it starts at seq {first_seq}")]
    KeyMismatch { key: u64, first_seq: u64 },
    #[error("write-ahead log: a key of {len} bytes is not a sequence (corrupt log)")]
    BadKey { len: usize },
    #[error("write-ahead log: the group at seq {seq} holds no record (corrupt log)")]
    EmptyGroup { seq: u64 },
    #[error("write-ahead log: records from seq {expected} are missing: the next group starts at seq {found}")]
    Gap { expected: u64, found: u64 },
    #[error("write-ahead log: the next group must start at seq {expected}, not {found}")]
    OutOfOrder { expected: u64, found: u64 },
    /// A failure reported by another [`crate::Storage`] (test doubles).
    #[error("write-ahead log: {0}")]
    Failed(String),
}

/// The sled key of the group whose first record has sequence `seq`.
pub fn group_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn key_seq(key: &[u8]) -> Result<u64, WalError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| WalError::BadKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// A group's envelope, built record by record into a reusable buffer. Its bytes are exactly
/// those of [`engine::record::encode_group`] on the same group (the postcard encoding of
/// [`Group`] is the varint of `first_seq`, the varint of the record count, then the records),
/// so [`engine::record::decode_group`] reads them back.
#[derive(Debug, Clone, Default)]
pub struct EncodedGroup {
    /// `PREFIX_BYTES_MAX` reserved bytes, then the records.
    buf: Vec<u8>,
    /// Where the envelope starts once sealed.
    start: usize,
    first_seq: u64,
    record_count: u64,
    /// The submissions of more than one record pushed so far.
    units: Vec<Unit>,
    sealed: bool,
}

/// A point in an [`EncodedGroup`] to come back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedMark {
    len: usize,
    record_count: u64,
    units: usize,
}

impl EncodedGroup {
    /// An empty encoder; its buffer is kept across groups.
    pub fn new() -> EncodedGroup {
        EncodedGroup::default()
    }

    /// The envelope of `group`.
    pub fn from_group(group: &Group) -> EncodedGroup {
        let mut encoded = EncodedGroup::new();
        encoded.begin(group.first_seq);
        for record in &group.records {
            encoded.push(record);
        }
        encoded.units.clone_from(&group.units);
        encoded.seal();
        encoded
    }

    /// Starts a new group whose first record has sequence `first_seq`.
    pub fn begin(&mut self, first_seq: u64) {
        self.buf.clear();
        self.buf.resize(PREFIX_BYTES_MAX, 0);
        self.start = 0;
        self.first_seq = first_seq;
        self.record_count = 0;
        self.units.clear();
        self.sealed = false;
    }

    /// Appends the records of one submission, acknowledged as one unit.
    pub fn push_submission(&mut self, records: &[Record]) {
        if records.len() > 1 {
            let start = u32::try_from(self.record_count).expect("a group holds fewer than 2^32 records");
            let len = u32::try_from(records.len()).expect("a submission holds fewer than 2^32 records");
            self.units.push(Unit { start, len });
        }
        for record in records {
            self.push(record);
        }
    }

    /// Appends the next record.
    pub fn push(&mut self, record: &Record) {
        assert!(!self.sealed, "push on a sealed group");
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(record, buf).expect("postcard encoding into a Vec is infallible");
        self.record_count += 1;
    }

    /// The current end, to [`rollback`](Self::rollback) to.
    pub fn mark(&self) -> EncodedMark {
        EncodedMark { len: self.buf.len(), record_count: self.record_count, units: self.units.len() }
    }

    /// Forgets the records pushed since `mark`.
    pub fn rollback(&mut self, mark: EncodedMark) {
        assert!(!self.sealed && mark.len >= PREFIX_BYTES_MAX && mark.len <= self.buf.len());
        self.buf.truncate(mark.len);
        self.record_count = mark.record_count;
        self.units.truncate(mark.units);
    }

    /// Bytes of the records pushed so far.
    pub fn records_bytes(&self) -> usize {
        self.buf.len().saturating_sub(PREFIX_BYTES_MAX)
    }

    /// Writes the header and the checksum: the envelope is then [`bytes`](Self::bytes).
    pub fn seal(&mut self) {
        assert!(!self.sealed, "sealed twice");
        assert!(self.buf.len() >= PREFIX_BYTES_MAX, "seal before begin");
        // `Group.units` follows the records: its length, then each unit's start and length.
        let mut varint = [0_u8; VARINT_U64_BYTES_MAX];
        let units = u64::try_from(self.units.len()).expect("fits");
        let len = write_varint(&mut varint, units);
        self.buf.extend_from_slice(&varint[..len]);
        for unit in &self.units {
            for value in [unit.start, unit.len] {
                let len = write_varint(&mut varint, u64::from(value));
                self.buf.extend_from_slice(&varint[..len]);
            }
        }
        let mut varints = [0_u8; 2 * VARINT_U64_BYTES_MAX];
        let mut varints_len = write_varint(&mut varints, self.first_seq);
        varints_len += write_varint(&mut varints[varints_len..], self.record_count);
        let start = PREFIX_BYTES_MAX - ENVELOPE_HEADER_BYTES - varints_len;
        self.buf[start + ENVELOPE_HEADER_BYTES..PREFIX_BYTES_MAX].copy_from_slice(&varints[..varints_len]);
        self.buf[start + 8] = GROUP_FORMAT_VERSION;
        let payload_len =
            u32::try_from(self.buf.len() - start - ENVELOPE_HEADER_BYTES).expect("a group is smaller than 4 GiB");
        let checksum = crc32c::crc32c(&self.buf[start + 8..]);
        self.buf[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
        self.start = start;
        self.sealed = true;
    }

    /// The sealed envelope.
    pub fn bytes(&self) -> &[u8] {
        assert!(self.sealed, "bytes of an unsealed group");
        &self.buf[self.start..]
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// Sequence of the last record (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.record_count - 1
    }
}

/// postcard's varint (LEB128) of `value` into `out`; returns its length.
fn write_varint(out: &mut [u8], mut value: u64) -> usize {
    let mut len = 0;
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[len] = low;
            return len + 1;
        }
        out[len] = low | 0x80;
        len += 1;
    }
}

struct Writer {
    /// Blob files already synced.
    blobs_synced: HashSet<OsString>,
}

struct Inner {
    /// `<data_dir>/wal`.
    dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    /// Our own descriptor of sled's data file, for `fdatasync`.
    data_file: File,
    writer: Mutex<Writer>,
    /// Sequence of the first record in the log (0 = empty log).
    first_seq: AtomicU64,
    /// Sequence of the last record in the log (0 = empty log).
    last_seq: AtomicU64,
}

/// The write-ahead log. Clones share one open log.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .field("first_seq", &self.first_seq())
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io { path: path.to_owned(), action, source }
}

/// fsyncs a directory, so that the entries created in it survive a power loss.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Wal {
    /// Opens (or creates) the log of the data directory `data_dir`, in `<data_dir>/wal/`.
    /// Checks the last group. Fails if another process (or another `Wal` of this process)
    /// has it open.
    pub fn open(data_dir: &Path) -> Result<Wal, WalError> {
        let dir = data_dir.join(WAL_DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create the directory"))?;
        let sled_error = |source| WalError::Sled { path: dir.clone(), source };
        let db = open_sled(&dir).map_err(sled_error)?;
        let tree = db.open_tree(TREE_NAME).map_err(sled_error)?;
        db.flush().map_err(sled_error)?;
        let data_path = dir.join("db");
        let data_file = File::open(&data_path).map_err(io_error(&data_path, "open sled's data file"))?;
        data_file.sync_all().map_err(io_error(&data_path, "fsync"))?;
        let mut writer = Writer { blobs_synced: HashSet::new() };
        sync_new_blobs(&dir, &mut writer)?;
        sync_dir(&dir).map_err(io_error(&dir, "fsync the directory"))?;
        sync_dir(data_dir).map_err(io_error(data_dir, "fsync the directory"))?;

        let first_seq = match tree.first().map_err(sled_error)? {
            Some((key, _)) => key_seq(&key)?,
            None => 0,
        };
        let last_seq = match tree.last().map_err(sled_error)? {
            Some((key, value)) => {
                let seq = key_seq(&key)?;
                let group = check_group(seq, &value)?;
                group.last_seq()
            }
            None => 0,
        };
        Ok(Wal {
            inner: Arc::new(Inner {
                dir,
                db,
                tree,
                data_file,
                writer: Mutex::new(writer),
                first_seq: AtomicU64::new(first_seq),
                last_seq: AtomicU64::new(last_seq),
            }),
        })
    }

    /// `<data_dir>/wal`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Sequence of the first record in the log, `None` when the log is empty.
    pub fn first_seq(&self) -> Option<u64> {
        match self.inner.first_seq.load(Ordering::Acquire) {
            0 => None,
            seq => Some(seq),
        }
    }

    /// Sequence of the last record in the log (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// Whether the log holds no group.
    pub fn is_empty(&self) -> bool {
        self.first_seq().is_none()
    }

    /// Appends `group` and makes it durable.
    pub fn append(&self, group: &Group) -> Result<(), WalError> {
        self.append_encoded(&EncodedGroup::from_group(group))
    }

    /// Appends a sealed group and makes it durable (flush, then `fdatasync` of sled's data
    /// file and fsync of new blob files). The group must start right after the last one (any
    /// start is accepted in an empty log, e.g. one restored from a snapshot).
    pub fn append_encoded(&self, group: &EncodedGroup) -> Result<(), WalError> {
        assert!(group.record_count() >= 1, "a group holds at least one record");
        let inner = &*self.inner;
        let mut writer = inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let last_seq = inner.last_seq.load(Ordering::Acquire);
        let empty = inner.first_seq.load(Ordering::Acquire) == 0;
        if !empty && group.first_seq() != last_seq + 1 {
            return Err(WalError::OutOfOrder { expected: last_seq + 1, found: group.first_seq() });
        }
        let sled_error = |source| WalError::Sled { path: inner.dir.clone(), source };
        inner.tree.insert(group_key(group.first_seq()), group.bytes()).map_err(sled_error)?;
        inner.db.flush().map_err(sled_error)?;
        inner.data_file.sync_data().map_err(io_error(&inner.dir, "fdatasync sled's data file"))?;
        sync_new_blobs(&inner.dir, &mut writer)?;
        if empty {
            inner.first_seq.store(group.first_seq(), Ordering::Release);
        }
        inner.last_seq.store(group.last_seq(), Ordering::Release);
        Ok(())
    }

    /// The groups holding records with sequence `seq` and later, in order, each verified
    /// (checksum, key, contiguity). The first group may start before `seq`. An error ends the
    /// iteration; if the log starts after `seq`, the first item is a [`WalError::Gap`].
    pub fn groups_from(&self, seq: u64) -> GroupIter {
        // Sequences start at 1.
        let seq = seq.max(1);
        let tree = &self.inner.tree;
        let start = match tree.range(..=group_key(seq)).next_back() {
            Some(Ok((key, _))) => key,
            Some(Err(source)) => {
                return GroupIter {
                    range: None,
                    from: seq,
                    expected: None,
                    pending_error: Some(WalError::Sled { path: self.inner.dir.clone(), source }),
                    dir: self.inner.dir.clone(),
                };
            }
            None => group_key(seq).as_slice().into(),
        };
        GroupIter {
            range: Some(tree.range(start..)),
            from: seq,
            expected: None,
            pending_error: None,
            dir: self.inner.dir.clone(),
        }
    }

    /// Removes, for retention, the groups whose records all precede `seq` (their last
    /// sequence is below `seq`). The last group of the log is always kept, so that the log
    /// still knows where it ends. Returns the number of groups removed.
    pub fn remove_groups_before(&self, seq: u64) -> Result<u64, WalError> {
        let inner = &*self.inner;
        let _writer = inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sled_error = |source| WalError::Sled { path: inner.dir.clone(), source };
        // A group ends right before the next key, so every group with a key up to `seq` ends
        // before `seq`, except the last such group (its successor's key is above `seq`, or it
        // is the last group of the log).
        let mut keys = Vec::new();
        for entry in inner.tree.range(..=group_key(seq)).keys() {
            keys.push(entry.map_err(sled_error)?);
        }
        let Some(kept) = keys.pop() else { return Ok(0) };
        if keys.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for key in &keys {
            batch.remove(key.clone());
        }
        inner.tree.apply_batch(batch).map_err(sled_error)?;
        inner.db.flush().map_err(sled_error)?;
        inner.data_file.sync_data().map_err(io_error(&inner.dir, "fdatasync sled's data file"))?;
        inner.first_seq.store(key_seq(&kept)?, Ordering::Release);
        Ok(u64::try_from(keys.len()).expect("a count fits in u64"))
    }

    /// Stores raw bytes under the key of `seq`, bypassing every check (corruption tests).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, seq: u64, bytes: &[u8]) {
        self.inner.tree.insert(group_key(seq), bytes).unwrap();
        self.inner.db.flush().unwrap();
    }
}

/// How long [`open_sled`] waits for sled's own lock on the log.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens sled on `dir`. sled locks its files itself; when the last handle of a log is dropped,
/// sled's IO threads let go of the files a moment later, so a reopen by the same process right
/// after a close (a restart in place, a restore, a test) may find the lock still held. Between
/// processes the data directory's own lock (`DataDirLock`) already keeps a second process out,
/// so waiting briefly for sled's lock only ever waits for this process's previous handle.
fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .segment_size(SEGMENT_BYTES)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Decodes and checks the group stored under the key of `seq`.
fn check_group(seq: u64, value: &[u8]) -> Result<Group, WalError> {
    let group = decode_group(value).map_err(|source| WalError::Corrupt { seq, source })?;
    if group.first_seq != seq {
        return Err(WalError::KeyMismatch { key: seq, first_seq: group.first_seq });
    }
    if group.records.is_empty() {
        return Err(WalError::EmptyGroup { seq });
    }
    Ok(group)
}

/// fsyncs the blob files sled created since the last call, then their directory.
fn sync_new_blobs(dir: &Path, writer: &mut Writer) -> Result<(), WalError> {
    let blobs = dir.join("blobs");
    let entries = match std::fs::read_dir(&blobs) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(&blobs, "list the blob files")(error)),
    };
    let mut present = HashSet::with_capacity(writer.blobs_synced.len());
    let mut synced_any = false;
    for entry in entries {
        let entry = entry.map_err(io_error(&blobs, "list the blob files"))?;
        let name = entry.file_name();
        if !writer.blobs_synced.contains(&name) {
            let path = entry.path();
            match File::open(&path) {
                Ok(file) => file.sync_all().map_err(io_error(&path, "fsync a blob file"))?,
                // Removed by sled's garbage collection in the meantime.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(io_error(&path, "open a blob file")(error)),
            }
            synced_any = true;
        }
        present.insert(name);
    }
    if synced_any {
        sync_dir(&blobs).map_err(io_error(&blobs, "fsync the directory"))?;
    }
    writer.blobs_synced = present;
    Ok(())
}

/// The verified groups of [`Wal::groups_from`].
pub struct GroupIter {
    range: Option<sled::Iter>,
    from: u64,
    /// First sequence the next group must have (`None` before the first group).
    expected: Option<u64>,
    pending_error: Option<WalError>,
    dir: PathBuf,
}

impl GroupIter {
    fn next_group(&mut self) -> Option<Result<Group, WalError>> {
        let range = self.range.as_mut()?;
        loop {
            let (key, value) = match range.next()? {
                Ok(entry) => entry,
                Err(source) => return Some(Err(WalError::Sled { path: self.dir.clone(), source })),
            };
            let group = match key_seq(&key).and_then(|seq| check_group(seq, &value)) {
                Ok(group) => group,
                Err(error) => return Some(Err(error)),
            };
            let last_seq = group.last_seq();
            match self.expected {
                Some(expected) if group.first_seq != expected => {
                    return Some(Err(WalError::Gap { expected, found: group.first_seq }));
                }
                Some(_) => {}
                None if last_seq < self.from => {
                    // The group before `from`: its successor must follow it.
                    self.expected = Some(last_seq + 1);
                    continue;
                }
                None if group.first_seq > self.from => {
                    return Some(Err(WalError::Gap { expected: self.from, found: group.first_seq }));
                }
                None => {}
            }
            self.expected = Some(last_seq + 1);
            return Some(Ok(group));
        }
    }
}

impl Iterator for GroupIter {
    type Item = Result<Group, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.pending_error.take() {
            self.range = None;
            return Some(Err(error));
        }
        let item = self.next_group();
        if matches!(item, Some(Err(_))) {
            // An error ends the log as far as readers are concerned.
            self.range = None;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{group_of, transfer_record};
    use engine::record::encode_group;

    #[test]
    fn encoded_group_equals_engine_encoding() {
        for (first_seq, count) in [(1_u64, 1_usize), (127, 3), (128, 130), (u64::MAX / 4, 2), (300, 0)] {
            let group = group_of(first_seq, count);
            let encoded = EncodedGroup::from_group(&group);
            assert_eq!(encoded.bytes(), encode_group(&group).as_slice(), "first_seq {first_seq}, {count} records");
            if count > 0 {
                assert_eq!(encoded.last_seq(), group.last_seq());
            }
        }
    }

    #[test]
    fn rollback_forgets_records() {
        let group = group_of(10, 3);
        let mut encoded = EncodedGroup::new();
        encoded.begin(10);
        for record in &group.records {
            encoded.push(record);
        }
        let mark = encoded.mark();
        encoded.push(&transfer_record(99));
        encoded.rollback(mark);
        encoded.seal();
        assert_eq!(decode_group(encoded.bytes()).unwrap(), group);
    }

    #[test]
    fn append_and_read_back_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let groups = [group_of(1, 3), group_of(4, 1), group_of(5, 10)];
        {
            let wal = Wal::open(dir.path()).unwrap();
            assert!(wal.is_empty());
            assert_eq!(wal.last_seq(), 0);
            for group in &groups {
                wal.append(group).unwrap();
            }
            assert_eq!(wal.last_seq(), 14);
        }
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!((wal.first_seq(), wal.last_seq()), (Some(1), 14));
        let read: Vec<Group> = wal.groups_from(1).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, groups);
        assert_eq!(wal.groups_from(0).count(), 3);
        // From the middle of a group: that group first.
        let read: Vec<u64> = wal.groups_from(6).map(|group| group.unwrap().first_seq).collect();
        assert_eq!(read, vec![5]);
        let read: Vec<u64> = wal.groups_from(4).map(|group| group.unwrap().first_seq).collect();
        assert_eq!(read, vec![4, 5]);
        assert_eq!(wal.groups_from(15).count(), 0);
        assert!(matches!(wal.append(&group_of(16, 1)), Err(WalError::OutOfOrder { expected: 15, found: 16 })));
    }

    #[test]
    fn corrupt_group_is_an_error_naming_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        for group in [group_of(1, 2), group_of(3, 2), group_of(5, 2)] {
            wal.append(&group).unwrap();
        }
        let mut bytes = encode_group(&group_of(3, 2));
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        wal.put_raw(3, &bytes);
        let items: Vec<_> = wal.groups_from(1).collect();
        assert_eq!(items.len(), 2, "the error ends the iteration");
        assert!(items[0].is_ok());
        let error = items[1].as_ref().unwrap_err();
        assert!(matches!(error, WalError::Corrupt { seq: 3, .. }), "{error}");
        assert!(error.to_string().contains("seq 3"), "{error}");
    }

    #[test]
    fn gaps_and_misplaced_groups_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        wal.append(&group_of(1, 2)).unwrap();
        wal.put_raw(5, &encode_group(&group_of(5, 1)));
        let error = wal.groups_from(1).nth(1).unwrap().unwrap_err();
        assert!(matches!(error, WalError::Gap { expected: 3, found: 5 }), "{error}");
        wal.put_raw(9, &encode_group(&group_of(10, 1)));
        let error = wal.groups_from(9).next().unwrap().unwrap_err();
        assert!(matches!(error, WalError::KeyMismatch { key: 9, first_seq: 10 }), "{error}");
    }

    #[test]
    fn a_log_starting_after_the_requested_seq_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        wal.append(&group_of(101, 2)).unwrap();
        let error = wal.groups_from(1).next().unwrap().unwrap_err();
        assert!(matches!(error, WalError::Gap { expected: 1, found: 101 }), "{error}");
        assert_eq!(wal.groups_from(101).count(), 1);
    }

    #[test]
    fn retention_removes_only_whole_groups_before_seq_and_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        for group in [group_of(1, 3), group_of(4, 3), group_of(7, 3)] {
            wal.append(&group).unwrap();
        }
        // Group 4..=6 holds seq 5: kept.
        assert_eq!(wal.remove_groups_before(5).unwrap(), 1);
        assert_eq!(wal.first_seq(), Some(4));
        assert_eq!(wal.remove_groups_before(7).unwrap(), 1);
        assert_eq!(wal.first_seq(), Some(7));
        assert_eq!(wal.remove_groups_before(1000).unwrap(), 0, "the last group stays");
        assert_eq!(wal.last_seq(), 9);
        drop(wal);
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!((wal.first_seq(), wal.last_seq()), (Some(7), 9));
        wal.append(&group_of(10, 1)).unwrap();
    }

    #[test]
    fn a_second_open_of_the_same_log_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _wal = Wal::open(dir.path()).unwrap();
        assert!(Wal::open(dir.path()).is_err());
    }

    #[test]
    fn large_groups_go_through_blobs_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let groups: Vec<Group> = (0..3_u64).map(|index| group_of(1 + index * 150_000, 150_000)).collect();
        {
            let wal = Wal::open(dir.path()).unwrap();
            for group in &groups {
                wal.append(group).unwrap();
            }
            // Above a quarter of sled's segment: sled wrote them as blob files, which
            // `append` synced.
            assert!(encode_group(&groups[0]).len() > SEGMENT_BYTES / 4);
            assert!(std::fs::read_dir(dir.path().join("wal").join("blobs")).unwrap().count() > 0);
        }
        let wal = Wal::open(dir.path()).unwrap();
        let read: Vec<Group> = wal.groups_from(1).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, groups);
    }

    /// The child half of `every_append_is_fdatasynced`: appends the groups under strace.
    #[test]
    #[ignore = "run by every_append_is_fdatasynced under strace"]
    fn strace_child_appends_groups() {
        let Some(dir) = std::env::var_os("LEDGERD_STRACE_CHILD_DIR") else { return };
        let groups: u64 = std::env::var("LEDGERD_STRACE_CHILD_GROUPS").unwrap().parse().unwrap();
        let wal = Wal::open(Path::new(&dir)).unwrap();
        println!("appending");
        for index in 0..groups {
            wal.append(&group_of(1 + index * 10, 10)).unwrap();
        }
    }

    /// Proves that every append reaches the disk with a real `fdatasync` (sled itself only
    /// uses `sync_file_range` and `fsync`): runs this test binary under strace.
    #[test]
    fn every_append_is_fdatasynced() {
        if std::process::Command::new("strace").arg("-V").output().is_err() {
            println!("NOTICE: strace is not installed; skipping the fdatasync check (apt-get install -y strace)");
            return;
        }
        const GROUPS: usize = 25;
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace.txt");
        let output = std::process::Command::new("strace")
            .args(["-f", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(&trace)
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "wal::tests::strace_child_appends_groups",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LEDGERD_STRACE_CHILD_DIR", dir.path().join("data"))
            .env("LEDGERD_STRACE_CHILD_GROUPS", GROUPS.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "strace run failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("appending"), "the child test did not run");
        let trace = std::fs::read_to_string(&trace).unwrap();
        // `12 fdatasync(5) = 0`, or split by another thread's call into `<unfinished ...>` and
        // `<... fdatasync resumed>) = 0`.
        let fdatasyncs = trace
            .lines()
            .filter(|line| {
                (line.contains("fdatasync(") || line.contains("<... fdatasync resumed>"))
                    && line.trim_end().ends_with("= 0")
            })
            .count();
        println!("{fdatasyncs} fdatasync calls for {GROUPS} groups");
        assert!(fdatasyncs >= GROUPS, "{fdatasyncs} fdatasync calls for {GROUPS} appended groups:\n{trace}");
    }
}
