//! [`Readers`]: a fixed set of threads that wait on the disk for the history's reads.
//!
//! A page of an account's history needs a page of every account-index run, then up to one
//! page of `transfers.dat` and one of `strings.dat` per transfer on it. Read one after
//! another with a cold cache, that is hundreds of disk latencies in a row; read by these
//! threads, about three. The threads live as long as the history: starting threads per
//! request cost more than the reads they did (thread creation and its stacks' page faults
//! dominated a profile of warm history pages). The queue of waiting reads is bounded
//! ([`READS_QUEUED_MAX`]); a caller past it waits for room.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

/// Reads waiting for a thread at most; a caller past it waits.
pub const READS_QUEUED_MAX: usize = 4_096;

type Job = Box<dyn FnOnce() + Send>;

/// The reader threads. They stop when this is dropped (after the reads already queued).
pub struct Readers {
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Readers").finish_non_exhaustive()
    }
}

impl Readers {
    /// Starts `threads` threads named `{name}-{n}` (at least one).
    pub fn new(threads: usize, name: &str) -> std::io::Result<Readers> {
        let (jobs, queue) = sync_channel::<Job>(READS_QUEUED_MAX);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("{name}-{index}")).spawn(move || serve(&queue))?;
        }
        Ok(Readers { jobs })
    }

    /// `read` applied to every item on the threads at once; the results in the items' order.
    /// A single item is read on the caller's thread.
    pub fn map<T, R, F>(&self, items: Vec<T>, read: F) -> Vec<R>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        if items.len() < 2 {
            return items.into_iter().map(read).collect();
        }
        let read = Arc::new(read);
        let count = items.len();
        let (results, answers) = std::sync::mpsc::channel::<(usize, R)>();
        for (index, item) in items.into_iter().enumerate() {
            let (read, results) = (read.clone(), results.clone());
            let job: Job = Box::new(move || {
                let _ = results.send((index, read(item)));
            });
            // The threads are gone only when this is being dropped: read here then.
            if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) {
                job();
            }
        }
        drop(results);
        let mut ordered: Vec<Option<R>> = std::iter::repeat_with(|| None).take(count).collect();
        for (index, result) in answers {
            ordered[index] = Some(result);
        }
        ordered.into_iter().map(|result| result.expect("a read panicked (see the log)")).collect()
    }
}

fn serve(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        // A panicking read answers nothing (its caller says so); the thread goes on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn results_come_back_in_order_and_reads_run_at_once() {
        let readers = Readers::new(4, "test-reader").unwrap();
        assert_eq!(
            readers.map((0..1_000_u64).collect(), |value| value * 2),
            (0..1_000_u64).map(|v| v * 2).collect::<Vec<_>>()
        );
        // Four reads that each wait for all four: they finish only if they run at once.
        let barrier = Arc::new(Barrier::new(4));
        let waited = readers.map(vec![barrier.clone(), barrier.clone(), barrier.clone(), barrier], |barrier| {
            barrier.wait();
            true
        });
        assert_eq!(waited, [true; 4]);
        assert_eq!(readers.map(vec![7], |value| value + 1), [8]);
        assert!(readers.map(Vec::<u8>::new(), |value| value).is_empty());
    }
}
