//! A named OS thread that runs until it is told to stop: the shape of the server's periodic
//! workers (the log watermark keeper, the snapshot scheduler).
//!
//! The thread gets the receiving end of a channel; stopping drops the sender, which wakes a
//! `recv_timeout` at once with `Disconnected`, then joins the thread. Dropping the handle
//! stops it the same way, so a worker never outlives its owner.

use std::sync::mpsc;
use std::thread::JoinHandle;

/// A running worker thread; see the module documentation.
pub struct BackgroundThread {
    name: &'static str,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundThread {
    /// Starts `body` on a thread called `name`; `body` returns once its receiver reports the
    /// stop (`Disconnected`). Panics if the OS refuses to start a thread.
    pub fn spawn(name: &'static str, body: impl FnOnce(mpsc::Receiver<()>) + Send + 'static) -> BackgroundThread {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(stopped))
            .unwrap_or_else(|error| panic!("cannot start the {name} thread: {error}"));
        BackgroundThread { name, stop: Some(stop), thread: Some(thread) }
    }

    /// Tells the thread to stop and waits for it.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(thread = self.name, "a background thread panicked");
        }
    }
}

impl Drop for BackgroundThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn stop_and_drop_both_wake_and_join_the_thread() {
        for by_drop in [false, true] {
            let finished = Arc::new(AtomicBool::new(false));
            let flag = finished.clone();
            let worker = BackgroundThread::spawn("test-worker", move |stopped| {
                // An hour-long period: only the stop can end this wait in a test's time.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(3600)) {}
                flag.store(true, Ordering::SeqCst);
            });
            assert!(!finished.load(Ordering::SeqCst));
            if by_drop {
                drop(worker);
            } else {
                worker.stop();
            }
            assert!(finished.load(Ordering::SeqCst), "joined before the body finished (by_drop = {by_drop})");
        }
    }
}
