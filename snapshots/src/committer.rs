//! The group committer: the one thread that writes the log.
//!
//! Actors [`submit`](CommitHandle::submit) decided records through a [`CommitHandle`]; the
//! [`Handoff`] numbers them and queues them without ever blocking the actor. One dedicated OS
//! thread takes everything waiting (up to `group_records_max` records and about
//! `group_bytes_max` bytes, never splitting a submission), encodes it as one group straight
//! from the submitted records (no copy of a record), appends it to the [`Storage`] (the
//! [`Wal`]: insert, flush, fdatasync), and only then publishes the group's last sequence as
//! durable: in the hand-off's atomic ([`CommitHandle::durable_seq`]) and on a
//! `tokio::sync::watch` channel ([`CommitHandle::wait_durable`], [`CommitHandle::subscribe`]).
//!
//! Architecture invariant: only this thread writes the log, and a sequence is published as
//! durable only after the storage reported the group containing it written and synced.
//!
//! On a storage error the committer publishes the failure, closes the hand-off and stops:
//! every waiter not yet durable gets [`CommitError::Failed`], and so does every later submit.
//! [`CommitHandle::close`] drains what was submitted, writes it, and lets the thread end `Ok`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// `ledger_wal_commit_duration_seconds`: one commit group written and synced.
pub const WAL_COMMIT_DURATION_SECONDS: &str = "ledger_wal_commit_duration_seconds";
/// `ledger_wal_batch_size`: records per commit group.
pub const WAL_BATCH_SIZE: &str = "ledger_wal_batch_size";
/// `ledger_wal_bytes_total`: bytes appended to the log.
pub const WAL_BYTES_TOTAL: &str = "ledger_wal_bytes_total";

use engine::record::Record;
use tokio::sync::watch;

use crate::handoff::{Handoff, PushError};
use crate::wal::{EncodedGroup, Wal, WalError};

/// Where committed groups go: the [`Wal`], or a test double.
pub trait Storage: Send + 'static {
    /// Writes a sealed group durably; returns only once it would survive a power loss.
    fn write_group(&mut self, group: &EncodedGroup) -> Result<(), WalError>;
}

impl Storage for Wal {
    fn write_group(&mut self, group: &EncodedGroup) -> Result<(), WalError> {
        self.append_encoded(group)
    }
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn write_group(&mut self, group: &EncodedGroup) -> Result<(), WalError> {
        (**self).write_group(group)
    }
}

/// What becomes of records once they are durable (the history ingests them).
pub trait DurableSink: Send + 'static {
    /// `items` were submitted in this order and are durable now; the first record of the first
    /// has sequence `first_seq`. Called on the committer thread after each group; it may block,
    /// which holds the next group back (backpressure). An error stops the committer as a
    /// failed write would: nothing more is acknowledged, and a restart recovers.
    fn durable(&mut self, first_seq: u64, items: Vec<Vec<Record>>) -> Result<(), String>;
}

/// A sink that drops what it is given.
pub struct NoSink;

impl DurableSink for NoSink {
    fn durable(&mut self, _first_seq: u64, _items: Vec<Vec<Record>>) -> Result<(), String> {
        Ok(())
    }
}

/// Limits of the committer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitterSettings {
    /// Most records in one group (a single larger submission still goes alone).
    pub group_records_max: usize,
    /// Most encoded record bytes in one group (a single larger submission still goes alone).
    pub group_bytes_max: usize,
    /// Most records submitted and not yet taken by the committer; beyond it submits answer
    /// [`CommitError::Full`].
    pub queue_records_max: usize,
}

/// What the committer has made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableState {
    /// Every record up to this sequence is durable.
    pub seq: u64,
    /// Set when the committer stopped on an error: nothing after `seq` will become durable.
    pub failed: Option<String>,
}

/// Why a submission was refused or will never be durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("the commit queue is full")]
    Full,
    #[error("the committer is closed")]
    Closed,
    #[error("the write-ahead log failed: {0}")]
    Failed(String),
}

/// The submitting side of the committer. Cheap to clone; usable from any thread or task.
#[derive(Clone)]
pub struct CommitHandle {
    handoff: Arc<Handoff<Vec<Record>>>,
    durable: watch::Receiver<DurableState>,
}

impl std::fmt::Debug for CommitHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CommitHandle").field("durable_seq", &self.durable_seq()).finish_non_exhaustive()
    }
}

impl CommitHandle {
    /// Queues `records` (at least one; they are applied in this order) for the log and
    /// returns the sequence of the first; the others follow consecutively. Never blocks.
    pub fn submit(&self, records: Vec<Record>) -> Result<u64, CommitError> {
        assert!(!records.is_empty(), "a submission holds at least one record");
        let count = u64::try_from(records.len()).expect("a length fits in u64");
        match self.handoff.push(records, count) {
            Ok(first_seq) => Ok(first_seq),
            Err(PushError::Full) => Err(CommitError::Full),
            Err(PushError::Closed) => Err(self.stopped_error()),
        }
    }

    /// Every record up to this sequence is durable.
    pub fn durable_seq(&self) -> u64 {
        self.handoff.durable()
    }

    /// Sequence the next submitted record will get.
    pub fn next_seq(&self) -> u64 {
        self.handoff.next_seq()
    }

    /// Waits until the record at `seq` is durable (at once if it is). Fails if the committer
    /// stopped before writing it.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), CommitError> {
        if self.handoff.durable() >= seq {
            return Ok(());
        }
        let mut receiver = self.durable.clone();
        let outcome =
            receiver.wait_for(|state| state.seq >= seq || state.failed.is_some()).await.map(|state| state.seq >= seq);
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) if self.handoff.durable() >= seq => Ok(()),
            Ok(false) | Err(_) => Err(self.stopped_error()),
        }
    }

    /// A receiver of every change of the durable state.
    pub fn subscribe(&self) -> watch::Receiver<DurableState> {
        self.durable.clone()
    }

    /// Refuses further submissions; the committer writes what was submitted, then its thread
    /// ends with `Ok`.
    pub fn close(&self) {
        self.handoff.close();
    }

    fn stopped_error(&self) -> CommitError {
        match &self.durable.borrow().failed {
            Some(message) => CommitError::Failed(message.clone()),
            None => CommitError::Closed,
        }
    }
}

/// Starts the committer thread.
pub struct Committer;

impl Committer {
    /// Starts the committer thread over `storage`, whose next record gets sequence
    /// `next_seq`. The thread ends after [`CommitHandle::close`] (with `Ok`, once everything
    /// submitted is written) or on the first storage error (with that error).
    ///
    /// Panics if the OS refuses to start a thread.
    pub fn start<S: Storage>(
        storage: S,
        next_seq: u64,
        settings: CommitterSettings,
    ) -> (CommitHandle, JoinHandle<Result<(), WalError>>) {
        Self::start_with_sink(storage, next_seq, settings, NoSink)
    }

    /// [`Committer::start`], handing every durable group's records to `sink`.
    pub fn start_with_sink<S: Storage>(
        storage: S,
        next_seq: u64,
        settings: CommitterSettings,
        mut sink: impl DurableSink,
    ) -> (CommitHandle, JoinHandle<Result<(), WalError>>) {
        assert!(settings.group_records_max >= 1 && settings.group_bytes_max >= 1 && settings.queue_records_max >= 1);
        let handoff = Arc::new(Handoff::new(next_seq, settings.queue_records_max));
        let (sender, receiver) = watch::channel(DurableState { seq: next_seq - 1, failed: None });
        let guard = StopGuard { handoff: handoff.clone(), sender };
        let thread = std::thread::Builder::new()
            .name("ledger-committer".to_owned())
            .spawn(move || {
                let result = run(storage, &guard.handoff, &guard.sender, settings, &mut sink);
                if let Err(error) = &result {
                    tracing::error!(%error, durable_seq = guard.handoff.durable(), "the committer stopped: the log cannot be written");
                    guard.fail(error.to_string());
                }
                result
            })
            .expect("start the committer thread");
        (CommitHandle { handoff, durable: receiver }, thread)
    }
}

/// Closes the hand-off whenever the committer thread ends, and reports a panic as a failure.
struct StopGuard {
    handoff: Arc<Handoff<Vec<Record>>>,
    sender: watch::Sender<DurableState>,
}

impl StopGuard {
    /// Publishes the failure before closing, so that whoever sees the hand-off closed also
    /// sees why.
    fn fail(&self, message: String) {
        self.sender.send_replace(DurableState { seq: self.handoff.durable(), failed: Some(message) });
        self.handoff.close();
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.fail("the committer thread panicked".to_owned());
        }
        self.handoff.close();
    }
}

fn run<S: Storage>(
    mut storage: S,
    handoff: &Handoff<Vec<Record>>,
    sender: &watch::Sender<DurableState>,
    settings: CommitterSettings,
    sink: &mut impl DurableSink,
) -> Result<(), WalError> {
    // Taken but not yet written (left over when a group reached its byte limit).
    let mut carried: VecDeque<(u64, Vec<Record>)> = VecDeque::new();
    // Written, to be dropped once their durability is published.
    let mut written: Vec<Vec<Record>> = Vec::new();
    let mut encoded = EncodedGroup::new();
    let records_max = u64::try_from(settings.group_records_max).unwrap_or(u64::MAX);
    loop {
        if carried.is_empty() {
            match handoff.take(settings.group_records_max) {
                Some(items) => carried.extend(items),
                None => return Ok(()),
            }
        }
        let first_seq = carried.front().expect("there is work").0;
        encoded.begin(first_seq);
        while let Some((seq, item)) = carried.front() {
            assert_eq!(*seq, first_seq + encoded.record_count(), "the hand-off hands over contiguous sequences");
            let count = u64::try_from(item.len()).expect("a length fits in u64");
            if !written.is_empty() && encoded.record_count() + count > records_max {
                break;
            }
            let mark = encoded.mark();
            encoded.push_submission(item);
            if !written.is_empty() && encoded.records_bytes() > settings.group_bytes_max {
                encoded.rollback(mark);
                break;
            }
            written.push(carried.pop_front().expect("the front exists").1);
        }
        encoded.seal();

        let started = Instant::now();
        storage.write_group(&encoded)?;
        let elapsed = started.elapsed();

        let last_seq = encoded.last_seq();
        handoff.publish_durable(last_seq);
        sender.send_replace(DurableState { seq: last_seq, failed: None });
        metrics::histogram!(WAL_COMMIT_DURATION_SECONDS).record(elapsed.as_secs_f64());
        metrics::histogram!(WAL_BATCH_SIZE).record(encoded.record_count() as f64);
        metrics::counter!(WAL_BYTES_TOTAL).increment(u64::try_from(encoded.bytes().len()).unwrap_or(u64::MAX));
        sink.durable(first_seq, std::mem::take(&mut written)).map_err(WalError::Failed)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::transfer_record_named;
    use engine::record::{Group, decode_group};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::mpsc;

    fn settings(group_records_max: usize, group_bytes_max: usize, queue_records_max: usize) -> CommitterSettings {
        CommitterSettings { group_records_max, group_bytes_max, queue_records_max }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    fn transfer_id(record: &Record) -> String {
        record.transfer().expect("a transfer record").to_string()
    }

    /// A storage keeping decoded groups in memory; fails on the `fail_at`-th write (1-based)
    /// and, if `gate` is set, holds its first write until the test releases it.
    struct TestStorage {
        groups: Arc<Mutex<Vec<Group>>>,
        writes: usize,
        fail_at: Option<usize>,
        gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    }

    impl TestStorage {
        fn new(fail_at: Option<usize>) -> (TestStorage, Arc<Mutex<Vec<Group>>>) {
            let groups = Arc::new(Mutex::new(Vec::new()));
            (TestStorage { groups: groups.clone(), writes: 0, fail_at, gate: None }, groups)
        }
    }

    impl Storage for TestStorage {
        fn write_group(&mut self, group: &EncodedGroup) -> Result<(), WalError> {
            self.writes += 1;
            if let Some((entered, release)) = self.gate.take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            if self.fail_at == Some(self.writes) {
                return Err(WalError::Failed(format!("injected failure of write {}", self.writes)));
            }
            self.groups.lock().unwrap().push(decode_group(group.bytes()).unwrap());
            Ok(())
        }
    }

    #[test]
    fn concurrent_submitters_land_exactly_once_contiguous_and_in_order() {
        const THREADS: usize = 4;
        const SUBMITS: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let (handle, thread) = Committer::start(wal.clone(), 1, settings(64, 1 << 20, 1 << 20));
        let submitters: Vec<_> = (0..THREADS)
            .map(|thread| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    let mut submitted = Vec::new();
                    for index in 0..SUBMITS {
                        let records: Vec<Record> = (0..=index % 3)
                            .map(|part| transfer_record_named(&format!("t-{thread}-{index}-{part}")))
                            .collect();
                        let count = records.len();
                        let first_seq = handle.submit(records).unwrap();
                        submitted.push((first_seq, count, format!("t-{thread}-{index}")));
                    }
                    let last = submitted.last().map(|(seq, count, _)| seq + *count as u64 - 1).unwrap();
                    block_on(handle.wait_durable(last)).unwrap();
                    assert!(handle.durable_seq() >= last);
                    submitted
                })
            })
            .collect();
        let submitted: Vec<_> = submitters.into_iter().flat_map(|submitter| submitter.join().unwrap()).collect();
        handle.close();
        thread.join().unwrap().unwrap();

        let mut by_seq: HashMap<u64, String> = HashMap::new();
        let mut next = 1;
        for group in wal.groups_from(1) {
            let group = group.unwrap();
            assert_eq!(group.first_seq, next);
            assert!(group.records.len() <= 64);
            for (seq, record) in group.sequenced() {
                assert!(by_seq.insert(seq, transfer_id(record)).is_none());
            }
            next = group.last_seq() + 1;
        }
        let total: usize = submitted.iter().map(|(_, count, _)| count).sum();
        assert_eq!(by_seq.len(), total, "every record exactly once");
        assert_eq!(next - 1, total as u64, "contiguous from 1");
        // Each submission's records sit at the sequences submit returned, in order; so per
        // submitter, later submissions come later in the log.
        for (first_seq, count, name) in &submitted {
            for part in 0..*count {
                assert_eq!(by_seq[&(first_seq + part as u64)], format!("{name}-{part}"));
            }
        }
    }

    #[test]
    fn wait_durable_returns_only_once_the_group_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let (handle, thread) = Committer::start(wal, 1, settings(100, 1 << 20, 1000));
        for round in 0..5_u64 {
            let first_seq = handle
                .submit(vec![
                    transfer_record_named(&format!("t-{round}-a")),
                    transfer_record_named(&format!("t-{round}-b")),
                ])
                .unwrap();
            block_on(handle.wait_durable(first_seq + 1)).unwrap();
            // What is on disk right now, opened afresh (a copy, as sled locks the original).
            let copy = tempfile::tempdir().unwrap();
            copy_dir(&dir.path().join("wal"), &copy.path().join("wal"));
            let reopened = Wal::open(copy.path()).unwrap();
            let groups: Vec<Group> = reopened.groups_from(1).collect::<Result<_, _>>().unwrap();
            let names: Vec<String> = groups.iter().flat_map(|group| group.records.iter().map(transfer_id)).collect();
            assert_eq!(names.len() as u64, first_seq + 1);
            assert_eq!(names[names.len() - 2..], [format!("t-{round}-a"), format!("t-{round}-b")]);
        }
        handle.close();
        thread.join().unwrap().unwrap();
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    #[test]
    fn groups_respect_the_record_and_byte_caps_and_never_split_a_submission() {
        let record_bytes = postcard::to_allocvec(&transfer_record_named("t-00000")).unwrap().len();
        let (mut storage, groups) = TestStorage::new(None);
        let (entered_sender, entered) = mpsc::channel();
        let (release, release_receiver) = mpsc::channel();
        storage.gate = Some((entered_sender, release_receiver));
        let (handle, thread) = Committer::start(storage, 1, settings(5, 3 * record_bytes, 10_000));
        handle.submit(vec![transfer_record_named("t-first")]).unwrap();
        entered.recv().unwrap();
        // The committer is inside its first write: everything below queues up.
        let mut expected = vec!["t-first".to_owned()];
        for index in 0..40 {
            let name = format!("t-{index:05}");
            expected.push(name.clone());
            handle.submit(vec![transfer_record_named(&name)]).unwrap();
        }
        // A submission larger than both caps goes alone, whole.
        let big: Vec<Record> = (0..7).map(|part| transfer_record_named(&format!("t-big{part:02}"))).collect();
        expected.extend(big.iter().map(transfer_id));
        handle.submit(big).unwrap();
        release.send(()).unwrap();
        handle.close();
        thread.join().unwrap().unwrap();
        let groups = groups.lock().unwrap();
        let names: Vec<String> = groups.iter().flat_map(|group| group.records.iter().map(transfer_id)).collect();
        assert_eq!(names, expected);
        let sizes: Vec<usize> = groups.iter().map(|group| group.records.len()).collect();
        assert_eq!(sizes.last(), Some(&7), "the big submission alone: {sizes:?}");
        assert!(sizes[..sizes.len() - 1].iter().all(|&size| size <= 3), "byte cap: {sizes:?}");
        assert!(sizes[1..sizes.len() - 1].contains(&3), "groups fill up: {sizes:?}");
    }

    #[test]
    fn a_full_queue_refuses_without_blocking() {
        let (mut storage, _groups) = TestStorage::new(None);
        let (entered_sender, entered) = mpsc::channel();
        let (release, release_receiver) = mpsc::channel();
        storage.gate = Some((entered_sender, release_receiver));
        let (handle, thread) = Committer::start(storage, 1, settings(100, 1 << 20, 3));
        handle.submit(vec![transfer_record_named("t-0")]).unwrap();
        entered.recv().unwrap();
        for index in 1..=3 {
            handle.submit(vec![transfer_record_named(&format!("t-{index}"))]).unwrap();
        }
        assert_eq!(handle.submit(vec![transfer_record_named("t-4")]), Err(CommitError::Full));
        release.send(()).unwrap();
        block_on(handle.wait_durable(4)).unwrap();
        handle.close();
        assert_eq!(handle.submit(vec![transfer_record_named("t-5")]), Err(CommitError::Closed));
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn a_storage_failure_fails_every_waiter_and_acknowledges_nothing_unwritten() {
        let (mut storage, groups) = TestStorage::new(Some(2));
        let (entered_sender, entered) = mpsc::channel();
        let (release, release_receiver) = mpsc::channel();
        storage.gate = Some((entered_sender, release_receiver));
        let (handle, thread) = Committer::start(storage, 1, settings(2, 1 << 20, 1000));
        let mut receiver = handle.subscribe();
        let first = handle.submit(vec![transfer_record_named("t-0")]).unwrap();
        entered.recv().unwrap();
        // Queued behind the first write: they make the (failing) second group and a third.
        let seqs: Vec<u64> =
            (1..=4).map(|index| handle.submit(vec![transfer_record_named(&format!("t-{index}"))]).unwrap()).collect();
        release.send(()).unwrap();
        block_on(handle.wait_durable(first)).unwrap();
        for seq in &seqs {
            let error = block_on(handle.wait_durable(*seq)).unwrap_err();
            assert!(
                matches!(&error, CommitError::Failed(message) if message.contains("injected failure of write 2")),
                "{error:?}"
            );
        }
        let error = thread.join().unwrap().unwrap_err();
        assert!(error.to_string().contains("injected failure"));
        assert!(matches!(handle.submit(vec![transfer_record_named("t-9")]), Err(CommitError::Failed(_))));
        let state = block_on(async { receiver.wait_for(|state| state.failed.is_some()).await.unwrap().clone() });
        assert_eq!(state.seq, 1, "nothing after the last written group is acknowledged");
        assert_eq!(handle.durable_seq(), 1);
        let written: Vec<u64> = groups
            .lock()
            .unwrap()
            .iter()
            .flat_map(|group| group.sequenced().map(|(seq, _)| seq).collect::<Vec<_>>())
            .collect();
        assert_eq!(written, vec![1]);
    }

    #[test]
    fn close_drains_and_ends_ok_and_later_waits_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let (handle, thread) = Committer::start(wal.clone(), 1, settings(3, 1 << 20, 1000));
        let seqs: Vec<u64> =
            (0..10).map(|index| handle.submit(vec![transfer_record_named(&format!("t-{index}"))]).unwrap()).collect();
        handle.close();
        thread.join().unwrap().unwrap();
        assert_eq!(wal.last_seq(), 10);
        assert_eq!(handle.durable_seq(), 10);
        for seq in seqs {
            block_on(handle.wait_durable(seq)).unwrap();
        }
        assert_eq!(block_on(handle.wait_durable(11)), Err(CommitError::Closed));
    }
}
