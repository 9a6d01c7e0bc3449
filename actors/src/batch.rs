//! Batch coordination: items take effect as if applied one after another in index order.
//!
//! The coordinator (a task, not an actor, so it may wait) lets an item start only once every
//! earlier item that shares an account or a transfer id with it has been decided; independent
//! items run concurrently. For an atomic batch every item runs tentatively (holds placed,
//! credits usable only by the same batch, ids reserved); if all are acceptable their records
//! are handed to the committer as one unit (one log group, consecutive sequences) and every
//! shard applies its part, otherwise every shard releases what the batch reserved.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use engine::ledger::apply_to_transfers;
use engine::{Id, IdMap, Record, Rejection, Transfer, TransferRequest};
use tokio::sync::{mpsc, oneshot};

use crate::conversation::{Command, Mode, Outcome, Reply, Start};
use crate::handle::{BatchItemResult, LedgerError, LedgerHandle};
use crate::shard::{ShardMessage, shard_of};

/// Which earlier items each item waits for, and which later items wait for it.
struct Dependencies {
    /// Per item: the earlier items it must see decided (the last earlier item touching each of
    /// its keys).
    earlier: Vec<Vec<usize>>,
    /// Per item: the later items that wait for it.
    dependents: Vec<Vec<usize>>,
}

/// `in_index_order`: every item also waits for the item before it, so that items are decided,
/// and their records sequenced, in index order (the contract: the created items of a batch
/// have `seq`s that increase with their index).
fn dependencies(requests: &[Arc<TransferRequest>], in_index_order: bool) -> Dependencies {
    let mut last_touch: HashMap<&Id, usize, ahash::RandomState> = HashMap::default();
    let mut earlier = vec![Vec::new(); requests.len()];
    let mut dependents = vec![Vec::new(); requests.len()];
    for (index, request) in requests.iter().enumerate() {
        for key in [&request.id, &request.debit_account, &request.credit_account] {
            if let Some(previous) = last_touch.insert(key, index)
                && previous != index
                && !earlier[index].contains(&previous)
            {
                earlier[index].push(previous);
                dependents[previous].push(index);
            }
        }
    }
    if in_index_order {
        for (index, waits_for) in earlier.iter_mut().enumerate().skip(1) {
            let previous = index - 1;
            if !waits_for.contains(&previous) {
                waits_for.push(previous);
                dependents[previous].push(index);
            }
        }
    }
    Dependencies { earlier, dependents }
}

/// The starts of the items about to be sent, one message per shard.
struct Outgoing {
    by_shard: Vec<Vec<Start>>,
}

impl Outgoing {
    fn push(&mut self, shard: usize, start: Start) {
        self.by_shard[shard].push(start);
    }

    /// Sends every shard its items, in index order, as one message.
    fn flush(&mut self, handle: &LedgerHandle) -> Result<(), LedgerError> {
        for (shard, starts) in self.by_shard.iter_mut().enumerate() {
            if starts.is_empty() {
                continue;
            }
            let message = ShardMessage::StartMany(std::mem::take(starts));
            handle.inner.shards[shard].cast(message).map_err(|_| handle.unavailable())?;
        }
        Ok(())
    }
}

pub(crate) async fn run(
    handle: &LedgerHandle,
    requests: Vec<TransferRequest>,
    atomic: bool,
) -> Result<Vec<BatchItemResult>, LedgerError> {
    let count = requests.len();
    if count == 0 {
        return Ok(Vec::new());
    }
    let batch = handle.inner.next_batch_id.fetch_add(1, Ordering::Relaxed);
    let mode = if atomic { Mode::Atomic(batch) } else { Mode::Single };
    let shard_count = handle.inner.shards.len();
    let owner = |id: &Id| shard_of(id, shard_count);
    let requests: Vec<Arc<TransferRequest>> = requests.into_iter().map(Arc::new).collect();
    // On several shards, independent items would be decided (and sequenced) in whatever order
    // their conversations finish; a plain batch chains them instead. An atomic batch commits
    // its records as one unit in index order, and on one shard every item is local and decided
    // in index order within one message, so neither needs the chain.
    let in_index_order = !atomic && shard_count > 1;
    let Dependencies { earlier, dependents } = dependencies(&requests, in_index_order);
    let mut waiting_on: Vec<usize> = earlier.iter().map(Vec::len).collect();
    // The shard owning all three of an item's ids, when one does: its conversation runs
    // entirely inside that shard.
    let local: Vec<Option<usize>> = requests
        .iter()
        .map(|request| {
            let shard = owner(&request.id);
            (owner(&request.debit_account) == shard && owner(&request.credit_account) == shard).then_some(shard)
        })
        .collect();
    let (sender, mut receiver) = mpsc::unbounded_channel::<(usize, Outcome)>();
    let start_of = |index: usize| Start {
        command: Command::Create { request: requests[index].clone(), mode },
        reply: Reply::Batch(index, sender.clone()),
    };
    let mut outgoing = Outgoing { by_shard: (0..shard_count).map(|_| Vec::new()).collect() };
    let mut dispatched = vec![false; count];
    let mut in_flight = 0_usize;

    // The first round sends every item that waits for nothing, and also every item local to a
    // shard whose earlier items all go, local too, in the same shard's message: that shard
    // decides them in index order before reaching it.
    let mut in_first_message_of: Vec<Option<usize>> = vec![None; count];
    for index in 0..count {
        let chained = match local[index] {
            Some(shard) if waiting_on[index] > 0 => {
                earlier[index].iter().all(|&previous| in_first_message_of[previous] == Some(shard))
            }
            _ => false,
        };
        if waiting_on[index] == 0 || chained {
            outgoing.push(owner(&requests[index].id), start_of(index));
            dispatched[index] = true;
            in_flight += 1;
            in_first_message_of[index] = local[index];
        }
    }
    outgoing.flush(handle)?;

    let mut outcomes: Vec<Option<Outcome>> = (0..count).map(|_| None).collect();
    // Atomic: the lowest index rejected so far. Items after it need not run (the batch is
    // aborted); items before it still do, so that the item reported is the first one that
    // applying the batch in order would reject.
    let mut failed_item: Option<usize> = None;
    let mut received = Vec::with_capacity(count.min(1024));
    while in_flight > 0 {
        if receiver.recv_many(&mut received, 1024).await == 0 {
            return Err(handle.unavailable());
        }
        for (index, outcome) in received.drain(..) {
            in_flight -= 1;
            if matches!(outcome, Outcome::Deferred) {
                dispatched[index] = false;
                if waiting_on[index] == 0 && failed_item.is_none_or(|failed| index < failed) {
                    outgoing.push(owner(&requests[index].id), start_of(index));
                    dispatched[index] = true;
                    in_flight += 1;
                }
                continue;
            }
            if let Outcome::Failed(error) = &outcome
                && !atomic
            {
                // The log refused work: later items cannot be applied either.
                return Err(error.clone());
            }
            let acceptable = matches!(
                outcome,
                Outcome::Applied(_) | Outcome::Existing(_) | Outcome::Tentative(_) | Outcome::TentativeReplay
            );
            outcomes[index] = Some(outcome);
            if atomic && !acceptable && failed_item.is_none_or(|failed| index < failed) {
                failed_item = Some(index);
            }
            for &dependent in &dependents[index] {
                waiting_on[dependent] -= 1;
                if waiting_on[dependent] == 0
                    && !dispatched[dependent]
                    && failed_item.is_none_or(|failed| dependent < failed)
                {
                    outgoing.push(owner(&requests[dependent].id), start_of(dependent));
                    dispatched[dependent] = true;
                    in_flight += 1;
                }
            }
        }
        outgoing.flush(handle)?;
    }
    if atomic {
        return finish_atomic(handle, batch, &requests, outcomes, failed_item).await;
    }
    // A rejected item was decided on what the shards held then: answer it once that is durable.
    let mut barrier = if outcomes.iter().any(|outcome| matches!(outcome, Some(Outcome::Rejected(_)))) {
        handle.decided_seq()
    } else {
        0
    };
    let results = outcomes
        .into_iter()
        .map(|outcome| match outcome.expect("every item of a batch ends") {
            Outcome::Applied(transfer) => {
                barrier = barrier.max(transfer.last_seq);
                BatchItemResult::Created(transfer)
            }
            Outcome::Existing(transfer) => {
                barrier = barrier.max(transfer.last_seq);
                BatchItemResult::Exists(transfer)
            }
            Outcome::Rejected(rejection) => BatchItemResult::Rejected(rejection),
            other => unreachable!("a non-atomic item does not end {other:?}"),
        })
        .collect();
    handle.wait_durable(barrier).await?;
    Ok(results)
}

async fn finish_atomic(
    handle: &LedgerHandle,
    batch: u64,
    requests: &[Arc<TransferRequest>],
    outcomes: Vec<Option<Outcome>>,
    failed_item: Option<usize>,
) -> Result<Vec<BatchItemResult>, LedgerError> {
    if let Some(failed) = failed_item {
        broadcast(handle, |reply| ShardMessage::AbortBatch { batch, reply }).await?;
        return match &outcomes[failed] {
            Some(Outcome::Failed(error)) => Err(error.clone()),
            Some(Outcome::Rejected(rejection)) => {
                // The rejection was decided on what the shards held then: answer it once that
                // is durable.
                handle.wait_durable(handle.decided_seq()).await?;
                Ok((0..requests.len())
                    .map(|index| {
                        BatchItemResult::Rejected(if index == failed { *rejection } else { Rejection::BatchAborted })
                    })
                    .collect())
            }
            other => unreachable!("the failing item ended {other:?}"),
        };
    }
    let records: Vec<Record> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Some(Outcome::Tentative(record)) => Some(record.clone()),
            _ => None,
        })
        .collect();
    let mut barrier = 0;
    let mut sequenced: Vec<(u64, Record)> = Vec::with_capacity(records.len());
    if !records.is_empty() {
        let first_seq = match handle.inner.commit.submit(records.clone()) {
            Ok(first_seq) => first_seq,
            Err(error) => {
                broadcast(handle, |reply| ShardMessage::AbortBatch { batch, reply }).await?;
                return Err(error.into());
            }
        };
        sequenced = (first_seq..).zip(records).collect();
        barrier = sequenced.last().map(|(seq, _)| *seq).unwrap_or(0);
    }
    let sequenced = Arc::new(sequenced);
    broadcast(handle, |reply| ShardMessage::CommitBatch { batch, records: sequenced.clone(), reply }).await?;
    // Build the answers with the same function the owners used.
    let mut created: IdMap<Arc<Transfer>> = IdMap::default();
    for (seq, record) in sequenced.iter() {
        apply_to_transfers(&mut created, *seq, record).expect("a committed batch record applies");
    }
    let results = outcomes
        .into_iter()
        .zip(requests)
        .map(|(outcome, request)| match outcome.expect("every item of an atomic batch ends") {
            Outcome::Tentative(_) => BatchItemResult::Created(created[&request.id].clone()),
            Outcome::TentativeReplay => BatchItemResult::Exists(created[&request.id].clone()),
            Outcome::Existing(transfer) => {
                barrier = barrier.max(transfer.last_seq);
                BatchItemResult::Exists(transfer)
            }
            other => unreachable!("an accepted atomic item does not end {other:?}"),
        })
        .collect();
    handle.wait_durable(barrier).await?;
    Ok(results)
}

/// Sends a message to every shard and waits until all have handled it.
async fn broadcast(
    handle: &LedgerHandle,
    message: impl Fn(oneshot::Sender<()>) -> ShardMessage,
) -> Result<(), LedgerError> {
    let mut answers = Vec::with_capacity(handle.inner.shards.len());
    for shard in &handle.inner.shards {
        let (reply, answer) = oneshot::channel();
        shard.cast(message(reply)).map_err(|_| handle.unavailable())?;
        answers.push(answer);
    }
    for answer in answers {
        answer.await.map_err(|_| handle.unavailable())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, debit: &str, credit: &str) -> TransferRequest {
        let id_of = |text: &str| Id::parse(text).unwrap();
        TransferRequest {
            id: id_of(id),
            debit_account: id_of(debit),
            credit_account: id_of(credit),
            amount: engine::WrittenAmount::from_units(1),
            pending: false,
            timeout_seconds: 0,
            description: String::new(),
            metadata: Default::default(),
        }
    }

    #[test]
    fn items_wait_only_for_earlier_items_sharing_a_key() {
        let requests = [
            request("t1", "a", "b"),
            request("t2", "c", "d"),
            request("t3", "b", "e"),
            request("t1", "x", "y"),
            request("t5", "z", "z"),
        ];
        let requests: Vec<Arc<TransferRequest>> = requests.into_iter().map(Arc::new).collect();
        let dependencies = dependencies(&requests, false);
        let waiting_on: Vec<usize> = dependencies.earlier.iter().map(Vec::len).collect();
        assert_eq!(waiting_on, vec![0, 0, 1, 1, 0]);
        assert_eq!(dependencies.earlier[3], vec![0]);
        assert_eq!(dependencies.dependents[0], vec![2, 3]);
        assert!(dependencies.dependents[1].is_empty());
    }
}
