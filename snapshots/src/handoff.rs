//! The commit hand-off: the bounded queue between the actors (many producers) and the one
//! committer thread (the single consumer), plus the durable sequence they share.
//!
//! `push` assigns consecutive log sequences to an item's records *under the queue's lock*, so
//! the order of the queue is the order of the sequences: the consumer always sees a contiguous
//! run with no gap. `push` never blocks on the consumer (callers are async actors): when the
//! queue holds too many records it answers [`PushError::Full`]. `take` blocks the consumer
//! until there is work, then hands over whole items, in order, up to a record budget. After
//! `close`, pushes fail and `take` drains what is left, then answers `None`.
//!
//! This file is compiled twice: normally, and by the `loom-tests` crate under `--cfg loom`
//! (through `#[path]`), where the `sync` types below are loom's. It must therefore import no
//! crate other than `std` and (under loom) `loom`.

#[cfg(loom)]
use loom::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};
#[cfg(not(loom))]
use std::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};

use std::collections::VecDeque;

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The hand-off is closed: the committer is stopping or has failed.
    Closed,
    /// The queue holds its capacity of records not yet taken: try again later.
    Full,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            PushError::Closed => "the commit hand-off is closed",
            PushError::Full => "the commit queue is full",
        })
    }
}

impl std::error::Error for PushError {}

struct State<T> {
    /// Queued items: (first sequence, record count, item).
    queue: VecDeque<(u64, u64, T)>,
    /// Sequence the next record pushed gets.
    next_seq: u64,
    /// Records in `queue`.
    queued_records: u64,
    closed: bool,
    /// The consumer sleeps on the condvar (so a push must wake it).
    consumer_waiting: bool,
}

/// A many-producer, one-consumer queue that numbers what goes through it.
pub struct Handoff<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity_records: u64,
    durable: AtomicU64,
}

impl<T> Handoff<T> {
    /// A hand-off whose first record gets sequence `first_seq` (at least 1), holding at most
    /// `capacity_units` records not yet taken (an item larger than that is still accepted into
    /// an empty queue, so that it cannot be refused forever).
    pub fn new(first_seq: u64, capacity_units: usize) -> Handoff<T> {
        assert!(first_seq >= 1, "sequences start at 1");
        assert!(capacity_units >= 1, "a hand-off holds at least one record");
        Handoff {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                next_seq: first_seq,
                queued_records: 0,
                closed: false,
                consumer_waiting: false,
            }),
            ready: Condvar::new(),
            capacity_records: u64::try_from(capacity_units).unwrap_or(u64::MAX),
            durable: AtomicU64::new(first_seq - 1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock can only come from a bug in this file; the state is
        // still consistent (every update below is completed before anything can panic).
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queues `item`, which holds `record_count` (at least 1) records, and returns the
    /// sequence of its first record; its records get consecutive sequences. Never blocks.
    pub fn push(&self, item: T, record_count: u64) -> Result<u64, PushError> {
        assert!(record_count >= 1, "an item holds at least one record");
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.queued_records > 0 && state.queued_records.saturating_add(record_count) > self.capacity_records {
            return Err(PushError::Full);
        }
        let first_seq = state.next_seq;
        state.next_seq = first_seq.checked_add(record_count).expect("log sequences do not overflow u64");
        state.queued_records += record_count;
        state.queue.push_back((first_seq, record_count, item));
        let wake = state.consumer_waiting;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(first_seq)
    }

    /// The consumer's side: waits until an item is queued, then takes whole items in order
    /// while their records fit in `max_records` (always at least one item). Answers `None`
    /// once the hand-off is closed and drained. Only one thread may call it.
    pub fn take(&self, max_records: usize) -> Option<Vec<(u64, T)>> {
        let max_records = u64::try_from(max_records).unwrap_or(u64::MAX);
        let mut state = self.lock();
        while state.queue.is_empty() {
            if state.closed {
                return None;
            }
            state.consumer_waiting = true;
            state = match self.ready.wait(state) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            state.consumer_waiting = false;
        }
        let mut taken = Vec::new();
        let mut taken_records = 0_u64;
        while let Some(&(_, count, _)) = state.queue.front() {
            if !taken.is_empty() && taken_records + count > max_records {
                break;
            }
            let (first_seq, count, item) = state.queue.pop_front().expect("the front exists");
            taken_records += count;
            state.queued_records -= count;
            taken.push((first_seq, item));
        }
        Some(taken)
    }

    /// Refuses further pushes and wakes the consumer, which drains what is queued.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        drop(state);
        self.ready.notify_all();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Sequence the next pushed record will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Records queued and not yet taken.
    pub fn queued_records(&self) -> u64 {
        self.lock().queued_records
    }

    /// Publishes that every record up to `seq` is durable. Monotone: a lower `seq` than one
    /// already published changes nothing.
    pub fn publish_durable(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::Release);
    }

    /// The highest sequence published as durable (`first_seq - 1` before any).
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }
}
