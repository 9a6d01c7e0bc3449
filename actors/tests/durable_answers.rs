//! No answer rests on an effect that is not durable yet, rejections included.
//!
//! A storage double holds every write at a gate. A transfer that spends alice's money is
//! decided and waits for its write; a second transfer from alice, decided on the first one's
//! (not yet durable) effect, is rejected for insufficient funds — and that answer must wait
//! until the first transfer is durable: a crash before that would undo the first transfer,
//! and the rejection would then have been wrong.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use actors::{LedgerError, LedgerHandle, LedgerSettings, system_clock};
use common::{account, transfer};
use engine::{Amount, Overdraft, Rejection};
use snapshots::{Committer, CommitterSettings, EncodedGroup, Storage, WalError};

/// How many writes may complete, and how many did.
#[derive(Default)]
struct Counts {
    allowed: u64,
    written: u64,
}

/// Keeps nothing; completes a write only once the test allows it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<Counts>, Condvar)>);

impl Gate {
    fn allow(&self, allowed: u64) {
        self.0.0.lock().unwrap().allowed = allowed;
        self.0.1.notify_all();
    }

    fn written(&self) -> u64 {
        self.0.0.lock().unwrap().written
    }
}

impl Storage for Gate {
    fn write_group(&mut self, _group: &EncodedGroup) -> Result<(), WalError> {
        let (counts, changed) = &*self.0;
        let mut counts = counts.lock().unwrap();
        // The committer is a plain thread: block it until the test allows this write.
        while counts.allowed <= counts.written {
            counts = changed.wait(counts).unwrap();
        }
        counts.written += 1;
        Ok(())
    }
}

/// How long the test watches for an answer that must not come yet.
const PREMATURE_ANSWER_WINDOW: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_waits_for_the_effect_it_saw() {
    for shards in [1, 3] {
        let gate = Gate::default();
        gate.allow(u64::MAX);
        let settings = CommitterSettings { group_records_max: 1, group_bytes_max: 1 << 20, queue_records_max: 1000 };
        let (commit, committer) = Committer::start(gate.clone(), 1, settings);
        let settings = LedgerSettings {
            shards,
            max_in_flight_transfers: 1000,
            max_in_flight_requests: 1000,
            expiry_tick_ms: 10,
            clock: system_clock(),
            expiry_paused: Default::default(),
        };
        // A history that ingests nothing: the gate's storage hands no group on.
        let history_dir = tempfile::tempdir().unwrap();
        let (history, _history_threads) =
            history::History::open(history_dir.path(), common::history_settings()).unwrap();
        let handle = LedgerHandle::start(settings, engine::Ledger::default(), commit.clone(), history).await.unwrap();
        handle.create_account(account("bank", Overdraft::Unlimited)).await.unwrap();
        for name in ["alice", "bob"] {
            handle.create_account(account(name, Overdraft::Limited(Amount::ZERO))).await.unwrap();
        }
        handle.create_transfer(transfer("fund", "bank", "alice", 1_000)).await.unwrap();

        // From now on nothing more reaches the disk until the test says so.
        let durable_before = handle.commit().durable_seq();
        gate.allow(gate.written());
        let queued_before = handle.commit().next_seq();
        let spend = spawn_transfer(&handle, "spend", 1_000);
        // The spend is decided, and applied in memory, once its record is queued.
        while handle.commit().next_seq() == queued_before {
            tokio::task::yield_now().await;
        }
        let mut refused = spawn_transfer(&handle, "refused", 500);
        tokio::select! {
            answer = &mut refused => panic!("{shards} shards: answered {answer:?} before the spend it saw was durable"),
            () = tokio::time::sleep(PREMATURE_ANSWER_WINDOW) => {}
        }
        assert_eq!(handle.commit().durable_seq(), durable_before, "nothing was written meanwhile");
        gate.allow(u64::MAX);
        assert!(spend.await.unwrap().is_ok());
        assert_eq!(refused.await.unwrap(), Err(LedgerError::Rejected(Rejection::InsufficientFunds)));
        assert!(handle.commit().durable_seq() > durable_before, "the spend was durable before the rejection");
        handle.shutdown().await;
        commit.close();
        tokio::task::spawn_blocking(move || committer.join().unwrap().unwrap()).await.unwrap();
    }
}

fn spawn_transfer(
    handle: &LedgerHandle,
    name: &str,
    cents: i64,
) -> tokio::task::JoinHandle<Result<(Arc<engine::Transfer>, bool), LedgerError>> {
    let (handle, request) = (handle.clone(), transfer(name, "alice", "bob", cents));
    tokio::spawn(async move { handle.create_transfer(request).await })
}
