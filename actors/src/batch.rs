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
use engine::{Id, Record, Rejection, Transfer, TransferRequest};
use tokio::sync::{mpsc, oneshot};

use crate::conversation::{Command, Mode, Outcome, Reply, Start};
use crate::handle::{BatchItemResult, LedgerError, LedgerHandle};
use crate::shard::ShardMessage;

/// Which earlier items each item waits for, and which later items wait for it.
struct Dependencies {
    waiting_on: Vec<usize>,
    dependents: Vec<Vec<usize>>,
}

fn dependencies(requests: &[TransferRequest]) -> Dependencies {
    let mut last_touch: HashMap<&Id, usize> = HashMap::new();
    let mut waiting_on = vec![0; requests.len()];
    let mut dependents = vec![Vec::new(); requests.len()];
    for (index, request) in requests.iter().enumerate() {
        let mut earlier: Vec<usize> = Vec::with_capacity(3);
        for key in [&request.id, &request.debit_account, &request.credit_account] {
            if let Some(previous) = last_touch.insert(key, index)
                && previous != index
                && !earlier.contains(&previous)
            {
                earlier.push(previous);
            }
        }
        waiting_on[index] = earlier.len();
        for previous in earlier {
            dependents[previous].push(index);
        }
    }
    Dependencies { waiting_on, dependents }
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
    let Dependencies { mut waiting_on, dependents } = dependencies(&requests);
    let requests: Vec<Arc<TransferRequest>> = requests.into_iter().map(Arc::new).collect();
    let (sender, mut receiver) = mpsc::unbounded_channel::<(usize, Outcome)>();
    let dispatch = |index: usize| -> Result<(), LedgerError> {
        let request = requests[index].clone();
        let command = Command::Create { request: request.clone(), mode };
        let start = Start { command, reply: Reply::Batch(index, sender.clone()) };
        handle.shard_for(&request.id).cast(ShardMessage::Start(start)).map_err(|_| handle.unavailable())
    };
    let mut outcomes: Vec<Option<Outcome>> = (0..count).map(|_| None).collect();
    let mut in_flight = 0_usize;
    for (index, waiting) in waiting_on.iter().enumerate() {
        if *waiting == 0 {
            dispatch(index)?;
            in_flight += 1;
        }
    }
    let mut failed_item: Option<usize> = None;
    while in_flight > 0 {
        let (index, outcome) = receiver.recv().await.ok_or_else(|| handle.unavailable())?;
        in_flight -= 1;
        let acceptable = matches!(
            outcome,
            Outcome::Applied(_) | Outcome::Existing(_) | Outcome::Tentative(_) | Outcome::TentativeReplay
        );
        if let Outcome::Failed(error) = &outcome
            && !atomic
        {
            // The log refused work: later items cannot be applied either.
            return Err(error.clone());
        }
        outcomes[index] = Some(outcome);
        if atomic && !acceptable && failed_item.is_none() {
            failed_item = Some(index);
        }
        if failed_item.is_some() {
            continue; // An atomic batch stops starting items once one failed.
        }
        for &dependent in &dependents[index] {
            waiting_on[dependent] -= 1;
            if waiting_on[dependent] == 0 {
                dispatch(dependent)?;
                in_flight += 1;
            }
        }
    }
    if atomic {
        return finish_atomic(handle, batch, &requests, outcomes, failed_item).await;
    }
    let mut barrier = 0;
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
            Some(Outcome::Rejected(rejection)) => Ok((0..requests.len())
                .map(|index| {
                    BatchItemResult::Rejected(if index == failed { *rejection } else { Rejection::BatchAborted })
                })
                .collect()),
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
    let mut created: HashMap<Id, Transfer> = HashMap::new();
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
    use rust_decimal::Decimal;

    fn request(id: &str, debit: &str, credit: &str) -> TransferRequest {
        let id_of = |text: &str| Id::parse(text).unwrap();
        TransferRequest {
            id: id_of(id),
            debit_account: id_of(debit),
            credit_account: id_of(credit),
            amount: Decimal::ONE,
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
        let dependencies = dependencies(&requests);
        assert_eq!(dependencies.waiting_on, vec![0, 0, 1, 1, 0]);
        assert_eq!(dependencies.dependents[0], vec![2, 3]);
        assert!(dependencies.dependents[1].is_empty());
    }
}
