//! The messages of the transfer conversation and what travels with them.
//!
//! A conversation carries one operation (create, post, void, expire) through its owners:
//! transfer owner → debit owner → credit owner (the decider) → debit owner → transfer owner.
//! The [`Verdict`] is filled in by the decider; everything before it only gathers facts and
//! places holds, everything after it only applies what was decided.

use std::sync::Arc;

use engine::rules::DebitFacts;
use engine::{Amount, Id, Record, Rejection, Transfer, TransferRequest, WrittenAmount};
use tokio::sync::{mpsc, oneshot};

use crate::handle::LedgerError;

/// Identifies one atomic batch while its items are tentative.
pub(crate) type BatchId = u64;

/// Whether the decision takes effect at once or waits for the rest of an atomic batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Single,
    Atomic(BatchId),
}

/// What a client asked the transfer owner to do.
#[derive(Debug)]
pub(crate) enum Command {
    Create { request: Arc<TransferRequest>, mode: Mode },
    Post { id: Id, amount: Option<WrittenAmount> },
    Void { id: Id },
}

impl Command {
    pub(crate) fn transfer_id(&self) -> &Id {
        match self {
            Command::Create { request, .. } => &request.id,
            Command::Post { id, .. } | Command::Void { id } => id,
        }
    }

    /// The ids whose state the command may read or change that are known before it runs: the
    /// transfer id and, for a creation, its two accounts.
    pub(crate) fn keys(&self) -> Vec<&Id> {
        match self {
            Command::Create { request, .. } => vec![&request.id, &request.debit_account, &request.credit_account],
            Command::Post { id, .. } | Command::Void { id } => vec![id],
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self {
            Command::Create { mode, .. } => *mode,
            Command::Post { .. } | Command::Void { .. } => Mode::Single,
        }
    }
}

/// A command with the place its outcome goes.
#[derive(Debug)]
pub(crate) struct Start {
    pub command: Command,
    pub reply: Reply,
}

/// The operation a conversation carries, with the facts gathered so far.
#[derive(Debug)]
pub(crate) enum Operation {
    Create {
        request: Arc<TransferRequest>,
        /// Filled in by the debit owner.
        facts: Option<DebitFacts>,
        /// What the debit owner holds for this conversation (zero if nothing).
        held: Amount,
    },
    Post {
        posted_amount: Amount,
        pending_amount: Amount,
        /// Filled in by the debit owner.
        debit_frozen: bool,
    },
    Void {
        pending_amount: Amount,
    },
    Expire {
        pending_amount: Amount,
    },
}

/// The decision, once the credit owner has made it.
#[derive(Debug)]
pub(crate) enum Verdict {
    Undecided,
    /// Handed to the committer at `seq`; every owner applies `record`.
    Accepted {
        seq: u64,
        record: Record,
    },
    /// Atomic batch: acceptable, waiting for the rest of the batch.
    Tentative {
        record: Record,
    },
    Rejected(Rejection),
    /// Could not be handed to the committer (full or failed); nothing was applied.
    Failed(LedgerError),
}

/// One operation travelling between the owners.
#[derive(Debug)]
pub(crate) struct Conversation {
    pub transfer_id: Id,
    pub debit: Id,
    pub credit: Id,
    pub mode: Mode,
    pub operation: Operation,
    pub verdict: Verdict,
    pub reply: Reply,
}

/// What the owners answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Created, posted, voided or expired by this request.
    Applied(Arc<Transfer>),
    /// Nothing to do: the transfer already is as asked (idempotent replay).
    Existing(Arc<Transfer>),
    /// Atomic batch: acceptable; this record will be written if the whole batch is.
    Tentative(Record),
    /// Atomic batch: the same transfer as an earlier item of this batch.
    TentativeReplay,
    /// A batch item handed back unstarted: an earlier item it depends on was not decided in
    /// time (see `ShardState::start_many`); the coordinator starts it again later.
    Deferred,
    Rejected(Rejection),
    Failed(LedgerError),
}

/// Where an outcome goes: a waiting request, a batch coordinator (with the item's index), or
/// nowhere (expiry runs on its own).
#[derive(Debug)]
pub(crate) enum Reply {
    One(oneshot::Sender<Outcome>),
    Batch(usize, mpsc::UnboundedSender<(usize, Outcome)>),
    Nobody,
}

impl Reply {
    pub(crate) fn send(self, outcome: Outcome) {
        // A requester that went away (client disconnected) no longer needs the answer; the
        // effect itself is already decided and stays.
        match self {
            Reply::One(sender) => {
                let _ = sender.send(outcome);
            }
            Reply::Batch(index, sender) => {
                let _ = sender.send((index, outcome));
            }
            Reply::Nobody => {}
        }
    }
}
