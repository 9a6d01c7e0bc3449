//! The shard actor: sole owner of a partition of accounts and of transfer ids.
//!
//! Every account and every transfer id belongs to exactly one shard ([`shard_of`]). A shard
//! holds, for its accounts, the decided state (`Account`, the same struct replay builds), the
//! holds of transfers still in flight and the tentative credits of atomic batches; for its
//! transfer ids, the open holds and the transfers the history has not ingested yet
//! ([`OwnedTransfers`]; the history on disk answers for every other stored transfer), the ids
//! with a conversation in flight (and the requests queued behind them) and the expiry index.
//! It never awaits anything: every step of a conversation is one message, handled to
//! completion. It may read the history synchronously (an idempotency check of an id its memory
//! does not hold: the history's filters answer most without reading disk).
//!
//! Decided effects are applied with the engine's `apply_to_account`, `transfer_from_record` and
//! `changed_transfer`, the functions replay uses. Visibility is guarded by the read barrier: every reply carries
//! the log sequence of the last change it shows, and the front door answers only once that
//! sequence is durable.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

/// `ledger_open_holds{shard}`: pending transfers a shard holds in memory.
pub const OPEN_HOLDS: &str = "ledger_open_holds";
/// `ledger_transfers_not_yet_in_history{shard}`: settled transfers a shard keeps until the
/// history has ingested them.
pub const TRANSFERS_NOT_YET_IN_HISTORY: &str = "ledger_transfers_not_yet_in_history";

use engine::ledger::{
    Side, account_change, account_from_record, apply_to_account, transfer_from_record, transfer_record,
};
use engine::rules::{self, FirstChecks, PostOutcome};
use engine::{Account, Amount, Id, IdMap, Record, Rejection, Transfer, TransferStatus};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use snapshots::CommitHandle;
use tokio::sync::oneshot;

use crate::conversation::{BatchId, Command, Conversation, Mode, Operation, Outcome, Reply, Start, Verdict};
use crate::handle::{AccountRequest, Clock, LedgerError};
use crate::owned::OwnedTransfers;

/// The shard that owns `id` among `shard_count`.
pub(crate) fn shard_of(id: &Id, shard_count: usize) -> usize {
    let count = u64::try_from(shard_count).expect("shard count fits u64");
    usize::try_from(id.stable_hash() % count).expect("a shard index fits usize")
}

/// Messages a shard handles.
pub(crate) enum ShardMessage {
    CreateAccount {
        request: AccountRequest,
        reply: oneshot::Sender<Result<(Account, bool), LedgerError>>,
    },
    GetAccount {
        id: Id,
        reply: oneshot::Sender<Option<Account>>,
    },
    SetFrozen {
        id: Id,
        frozen: bool,
        reply: oneshot::Sender<Result<Account, LedgerError>>,
    },
    /// The transfers memory holds of these ids (the others are in the history).
    GetTransfers {
        ids: Vec<Id>,
        reply: oneshot::Sender<Vec<Option<Arc<Transfer>>>>,
    },
    Start(Start),
    /// Items of one batch, in index order (see [`ShardState::start_many`]).
    StartMany(Vec<Start>),
    Hold(Box<Conversation>),
    Decide(Box<Conversation>),
    Settle(Box<Conversation>),
    Finish(Box<Conversation>),
    CommitBatch {
        batch: BatchId,
        records: Arc<Vec<(u64, Record)>>,
        reply: oneshot::Sender<()>,
    },
    AbortBatch {
        batch: BatchId,
        reply: oneshot::Sender<()>,
    },
    /// Periodic upkeep; `expire`: also expire the holds whose deadline passed.
    Tick {
        expire: bool,
    },
    /// Loads recovered state (sent once, before any request); answers once loaded.
    Load {
        load: Box<ShardLoad>,
        reply: oneshot::Sender<()>,
    },
    /// Encodes the shard's accounts and open holds for a snapshot, when nothing is in flight
    /// on it; `None` when a conversation still is (the coordinator asks again).
    EncodeSnapshot {
        reply: oneshot::Sender<Option<ShardSnapshot>>,
    },
}

/// Recovered state for one shard: the accounts and transfer ids it owns.
#[derive(Default)]
pub(crate) struct ShardLoad {
    pub accounts: IdMap<Account>,
    pub open_holds: IdMap<Arc<Transfer>>,
}

/// One shard's part of a snapshot.
pub(crate) struct ShardSnapshot {
    pub accounts: snapshots::EncodedItems,
    pub open_holds: snapshots::EncodedItems,
}

/// A transfer id with a conversation in flight.
#[derive(Default)]
struct Busy {
    /// Reserved by an atomic batch that has not committed yet, with the request it reserved.
    tentative: Option<(BatchId, Arc<engine::TransferRequest>)>,
    /// Requests for the same id, in arrival order, waiting for this conversation to end.
    waiting: VecDeque<Start>,
}

/// Everything a shard owns.
pub(crate) struct ShardState {
    index: usize,
    peers: Arc<OnceLock<Vec<ActorRef<ShardMessage>>>>,
    commit: CommitHandle,
    clock: Clock,
    account_count: Arc<std::sync::atomic::AtomicU64>,
    accounts: IdMap<Account>,
    /// Amounts held on accounts by undecided conversations and tentative batch items.
    in_flight_debits: IdMap<Amount>,
    /// Posted credits of tentative atomic-batch items: spendable only by the same batch.
    tentative_credits: HashMap<BatchId, IdMap<Amount>>,
    /// Holds placed for tentative atomic-batch items, released on commit or abort.
    batch_holds: HashMap<BatchId, Vec<(Id, Amount)>>,
    /// Transfer ids reserved by atomic batches.
    batch_reserved: HashMap<BatchId, Vec<Id>>,
    transfers: OwnedTransfers,
    busy: IdMap<Busy>,
    /// Holds with a deadline, by (deadline ms, id).
    expiry: BTreeSet<(i64, Id)>,
}

/// Startup arguments of a shard.
pub(crate) struct ShardArguments {
    pub index: usize,
    pub peers: Arc<OnceLock<Vec<ActorRef<ShardMessage>>>>,
    pub commit: CommitHandle,
    pub clock: Clock,
    pub account_count: Arc<std::sync::atomic::AtomicU64>,
    pub history: history::History,
}

pub(crate) struct Shard;

impl Actor for Shard {
    type Msg = ShardMessage;
    type State = ShardState;
    type Arguments = ShardArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMessage>,
        arguments: ShardArguments,
    ) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            index: arguments.index,
            peers: arguments.peers,
            commit: arguments.commit,
            clock: arguments.clock,
            account_count: arguments.account_count,
            accounts: IdMap::default(),
            in_flight_debits: IdMap::default(),
            tentative_credits: HashMap::new(),
            batch_holds: HashMap::new(),
            batch_reserved: HashMap::new(),
            transfers: OwnedTransfers::new(arguments.history),
            busy: IdMap::default(),
            expiry: BTreeSet::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMessage>,
        message: ShardMessage,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle(message);
        Ok(())
    }
}

impl ShardState {
    fn handle(&mut self, message: ShardMessage) {
        match message {
            ShardMessage::CreateAccount { request, reply } => {
                let _ = reply.send(self.create_account(request));
            }
            ShardMessage::GetAccount { id, reply } => {
                let _ = reply.send(self.accounts.get(&id).cloned());
            }
            ShardMessage::SetFrozen { id, frozen, reply } => {
                let _ = reply.send(self.set_frozen(&id, frozen));
            }
            ShardMessage::GetTransfers { ids, reply } => {
                let _ = reply.send(ids.iter().map(|id| self.transfers.in_memory(id).cloned()).collect());
            }
            ShardMessage::Start(start) => self.start(start),
            ShardMessage::StartMany(starts) => self.start_many(starts),
            ShardMessage::Hold(conversation) => self.hold(conversation),
            ShardMessage::Decide(conversation) => self.decide(conversation),
            ShardMessage::Settle(conversation) => self.settle(conversation),
            ShardMessage::Finish(conversation) => self.finish(conversation),
            ShardMessage::CommitBatch { batch, records, reply } => {
                self.commit_batch(batch, &records);
                let _ = reply.send(());
            }
            ShardMessage::AbortBatch { batch, reply } => {
                self.abort_batch(batch);
                let _ = reply.send(());
            }
            ShardMessage::Tick { expire } => {
                self.transfers.evict();
                let (open_holds, recent) = self.transfers.memory_counts();
                let shard = self.index.to_string();
                metrics::gauge!(OPEN_HOLDS, "shard" => shard.clone()).set(open_holds as f64);
                metrics::gauge!(TRANSFERS_NOT_YET_IN_HISTORY, "shard" => shard).set(recent as f64);
                if expire {
                    self.expire_due();
                }
            }
            ShardMessage::Load { load, reply } => {
                self.load(*load);
                let _ = reply.send(());
            }
            ShardMessage::EncodeSnapshot { reply } => {
                let _ = reply.send(self.encode_snapshot());
            }
        }
    }

    /// The shard's accounts and open holds, encoded, when no conversation is in flight on it
    /// (then nothing it holds is tentative or half applied).
    fn encode_snapshot(&self) -> Option<ShardSnapshot> {
        if !self.busy.is_empty() || !self.in_flight_debits.is_empty() || !self.tentative_credits.is_empty() {
            return None;
        }
        let mut accounts = snapshots::EncodedItems::default();
        accounts.push(self.accounts.values());
        let mut open_holds = snapshots::EncodedItems::default();
        open_holds.push(self.transfers.open_holds().map(|hold| &**hold));
        Some(ShardSnapshot { accounts, open_holds })
    }

    /// The transfer with this id (memory, then the history), or the failure to read it.
    fn stored(&self, id: &Id) -> Result<Option<Arc<Transfer>>, LedgerError> {
        self.transfers.get(id).map_err(|error| {
            tracing::error!(%error, "the history cannot be read");
            LedgerError::Unavailable(format!("the history cannot be read: {error}"))
        })
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    fn peer(&self, id: &Id) -> &ActorRef<ShardMessage> {
        let peers = self.peers.get().expect("peers are set before any message is sent");
        &peers[shard_of(id, peers.len())]
    }

    fn owns(&self, id: &Id) -> bool {
        let peers = self.peers.get().expect("peers are set before any message is sent");
        shard_of(id, peers.len()) == self.index
    }

    /// Sends a step of a conversation to the owner of `to`. A step for this shard itself is
    /// handled at once, inline: a conversation whose participants share a shard costs no
    /// mailbox hop, and its steps run in the same order a mailbox would deliver them.
    fn send(&mut self, to: &Id, message: ShardMessage) {
        if self.owns(to) {
            self.handle(message);
            return;
        }
        // A peer that is gone has failed; the supervisor has already marked the ledger failed
        // and the requester sees its reply channel close.
        let _ = self.peer(to).cast(message);
    }

    fn load(&mut self, load: ShardLoad) {
        assert!(self.accounts.is_empty(), "a shard is loaded once, before any request");
        self.accounts = load.accounts;
        for hold in load.open_holds.values() {
            Self::track_expiry(&mut self.expiry, hold);
        }
        self.transfers.load(load.open_holds);
    }

    // ---- accounts -------------------------------------------------------------------------

    fn create_account(&mut self, request: AccountRequest) -> Result<(Account, bool), LedgerError> {
        if let Some(stored) = self.accounts.get(&request.id) {
            let same = stored.currency == request.currency
                && stored.overdraft == request.overdraft
                && stored.metadata == request.metadata;
            return if same {
                Ok((stored.clone(), false))
            } else {
                Err(LedgerError::Rejected(Rejection::ExistsWithDifferentFields))
            };
        }
        let record = Record::CreateAccount {
            id: request.id.clone(),
            currency: request.currency,
            overdraft: request.overdraft,
            metadata: request.metadata,
            created_at_ms: self.now_ms(),
        };
        let seq = self.commit.submit(vec![record.clone()]).map_err(LedgerError::from)?;
        let account = account_from_record(seq, &record).expect("a CreateAccount record creates an account");
        let answer = account.clone();
        self.accounts.insert(account.id.clone(), account);
        self.account_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((answer, true))
    }

    fn set_frozen(&mut self, id: &Id, frozen: bool) -> Result<Account, LedgerError> {
        let account = self.accounts.get_mut(id).ok_or(LedgerError::Rejected(Rejection::AccountNotFound))?;
        if account.frozen == frozen {
            return Ok(account.clone());
        }
        let record = Record::SetFrozen { account: id.clone(), frozen };
        let seq = self.commit.submit(vec![record.clone()]).map_err(LedgerError::from)?;
        apply_to_account(account, Side::Debit, seq, &record).expect("freezing never breaks an invariant");
        Ok(account.clone())
    }

    // ---- the conversation: transfer owner -------------------------------------------------

    fn start(&mut self, start: Start) {
        let id = start.command.transfer_id().clone();
        if let Some(busy) = self.busy.get_mut(&id) {
            if let (Some((batch, reserved)), Command::Create { request, mode: Mode::Atomic(mode_batch) }) =
                (&busy.tentative, &start.command)
                && batch == mode_batch
            {
                // An earlier item of the same atomic batch reserved this id.
                let outcome = if same_request(reserved, request) {
                    Outcome::TentativeReplay
                } else {
                    Outcome::Rejected(Rejection::ExistsWithDifferentFields)
                };
                start.reply.send(outcome);
                return;
            }
            busy.waiting.push_back(start);
            return;
        }
        let now_ms = self.now_ms();
        let Start { command, reply } = start;
        let conversation = match command {
            Command::Create { request, mode: Mode::Single }
                if self.owns(&request.debit_account) && self.owns(&request.credit_account) =>
            {
                return self.create_local(&request, now_ms, reply);
            }
            Command::Create { request, mode } => {
                let stored = match self.stored(&request.id) {
                    Ok(stored) => stored,
                    Err(error) => return reply.send(Outcome::Failed(error)),
                };
                match rules::first_checks(stored.as_ref(), &request) {
                    Ok(FirstChecks::New) => {}
                    Ok(FirstChecks::Replay(stored)) => return reply.send(Outcome::Existing(stored)),
                    Err(rejection) => return reply.send(Outcome::Rejected(rejection)),
                }
                Conversation {
                    transfer_id: request.id.clone(),
                    debit: request.debit_account.clone(),
                    credit: request.credit_account.clone(),
                    mode,
                    operation: Operation::Create { request, facts: None, held: Amount::ZERO },
                    verdict: Verdict::Undecided,
                    reply,
                }
            }
            Command::Post { id, amount } => {
                let stored = match self.stored(&id) {
                    Ok(Some(stored)) => stored,
                    Ok(None) => return reply.send(Outcome::Rejected(Rejection::TransferNotFound)),
                    Err(error) => return reply.send(Outcome::Failed(error)),
                };
                let posted_amount = match rules::check_post(&stored, amount.as_ref(), now_ms) {
                    Err(rejection) => return reply.send(Outcome::Rejected(rejection)),
                    Ok(PostOutcome::Replay) => return reply.send(Outcome::Existing(stored.clone())),
                    Ok(PostOutcome::Apply { posted_amount }) => posted_amount,
                };
                Conversation {
                    transfer_id: id,
                    debit: stored.debit_account.clone(),
                    credit: stored.credit_account.clone(),
                    mode: Mode::Single,
                    operation: Operation::Post { posted_amount, pending_amount: stored.amount, debit_frozen: false },
                    verdict: Verdict::Undecided,
                    reply,
                }
            }
            Command::Void { id } => {
                let stored = match self.stored(&id) {
                    Ok(Some(stored)) => stored,
                    Ok(None) => return reply.send(Outcome::Rejected(Rejection::TransferNotFound)),
                    Err(error) => return reply.send(Outcome::Failed(error)),
                };
                match rules::check_void(&stored, now_ms) {
                    Err(rejection) => return reply.send(Outcome::Rejected(rejection)),
                    Ok(false) => return reply.send(Outcome::Existing(stored.clone())),
                    Ok(true) => {}
                }
                Conversation {
                    transfer_id: id,
                    debit: stored.debit_account.clone(),
                    credit: stored.credit_account.clone(),
                    mode: Mode::Single,
                    operation: Operation::Void { pending_amount: stored.amount },
                    verdict: Verdict::Undecided,
                    reply,
                }
            }
        };
        self.busy.insert(id, Busy::default());
        let debit = conversation.debit.clone();
        self.send(&debit, ShardMessage::Hold(Box::new(conversation)));
    }

    /// A single creation whose transfer id and both accounts this shard owns, decided in one
    /// step: the conversation's steps (idempotency, hold, decision, both sides, the stored
    /// transfer) fused, with the same engine rules and the same order of checks, and no
    /// in-flight hold since nothing can interleave.
    fn create_local(&mut self, request: &engine::TransferRequest, now_ms: i64, reply: Reply) {
        let stored = match self.stored(&request.id) {
            Ok(stored) => stored,
            Err(error) => return reply.send(Outcome::Failed(error)),
        };
        match rules::first_checks(stored.as_ref(), request) {
            Ok(FirstChecks::New) => {}
            Ok(FirstChecks::Replay(stored)) => return reply.send(Outcome::Existing(stored)),
            Err(rejection) => return reply.send(Outcome::Rejected(rejection)),
        }
        let [debit, credit] = self.accounts.get_disjoint_mut([&request.debit_account, &request.credit_account]);
        let Some(debit) = debit else {
            return reply.send(Outcome::Rejected(Rejection::DebitAccountNotFound));
        };
        // Holds of atomic batches still open on this account count as spent.
        let held_elsewhere = if self.in_flight_debits.is_empty() {
            Amount::ZERO
        } else {
            self.in_flight_debits.get(&request.debit_account).copied().unwrap_or_default()
        };
        let debit_amount = rules::debit_amount(debit, &request.amount).unwrap_or(Amount::ZERO);
        let facts = rules::debit_facts(debit, debit_amount, held_elsewhere);
        let Some(credit) = credit else {
            return reply.send(Outcome::Rejected(Rejection::CreditAccountNotFound));
        };
        let amount = match rules::decide_transfer(&facts, credit, &request.amount) {
            Ok(amount) => amount,
            Err(rejection) => return reply.send(Outcome::Rejected(rejection)),
        };
        let record = transfer_record(request, amount, credit, now_ms);
        // The decision guarantees that both sides apply; computing the changes before the
        // record goes to the committer keeps a bug from logging what cannot be applied.
        let debit_change =
            account_change(debit, Side::Debit, 0, &record).expect("a decided transfer applies to its debit side");
        let credit_change =
            account_change(credit, Side::Credit, 0, &record).expect("a decided transfer applies to its credit side");
        let mut transfer = transfer_from_record(0, &record).expect("a creation record creates a transfer");
        let seq = match self.commit.submit(vec![record]) {
            Ok(seq) => seq,
            Err(error) => return reply.send(Outcome::Failed(error.into())),
        };
        // Share the accounts' id allocations.
        transfer.debit_account = debit.id.clone();
        transfer.credit_account = credit.id.clone();
        for (account, change) in [(debit, debit_change), (credit, credit_change)] {
            if let Some(change) = change {
                change.commit(account, seq);
            }
        }
        transfer.seq = seq;
        transfer.last_seq = seq;
        Self::track_expiry(&mut self.expiry, &transfer);
        let transfer = Arc::new(transfer);
        self.transfers.store(transfer.clone());
        reply.send(Outcome::Applied(transfer));
    }

    /// Starts the items of a batch in index order. The coordinator may include an item whose
    /// earlier items (sharing an account or the id with it) are in this same message, because
    /// it expects them to be decided inline, right here, before the item starts. When one of
    /// them is not (it waits behind another conversation on its id, or crosses shards), every
    /// later item of the message touching its keys is handed back undecided
    /// ([`Outcome::Deferred`]) and the coordinator starts it once its earlier items are decided.
    fn start_many(&mut self, starts: Vec<Start>) {
        let mut blocked: Vec<Id> = Vec::new();
        for start in starts {
            if !blocked.is_empty() && start.command.keys().into_iter().any(|key| blocked.contains(key)) {
                blocked.extend(start.command.keys().into_iter().cloned());
                start.reply.send(Outcome::Deferred);
                continue;
            }
            let mode = start.command.mode();
            let keys: Vec<Id> = start.command.keys().into_iter().cloned().collect();
            self.start(start);
            if !self.decided(&keys[0], mode) {
                blocked.extend(keys);
            }
        }
    }

    /// Whether the conversation on `id` started in `mode` has been decided: nothing is in
    /// flight on the id, or it is reserved by the same atomic batch (a tentative item).
    fn decided(&self, id: &Id, mode: Mode) -> bool {
        match self.busy.get(id) {
            None => true,
            Some(busy) => match (mode, &busy.tentative) {
                (Mode::Atomic(batch), Some((reserved_by, _))) => batch == *reserved_by,
                _ => false,
            },
        }
    }

    fn expire_due(&mut self) {
        let now_ms = self.now_ms();
        let due: Vec<Id> = self
            .expiry
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .map(|(_, id)| id.clone())
            .filter(|id| !self.busy.contains_key(id))
            .collect();
        for id in due {
            let Some(stored) = self.transfers.open_hold(&id) else { continue };
            if !rules::is_expired(stored, now_ms) {
                continue;
            }
            let conversation = Conversation {
                transfer_id: id.clone(),
                debit: stored.debit_account.clone(),
                credit: stored.credit_account.clone(),
                mode: Mode::Single,
                operation: Operation::Expire { pending_amount: stored.amount },
                verdict: Verdict::Undecided,
                reply: Reply::Nobody,
            };
            self.busy.insert(id, Busy::default());
            let debit = conversation.debit.clone();
            self.send(&debit, ShardMessage::Hold(Box::new(conversation)));
        }
    }

    fn finish(&mut self, mut conversation: Box<Conversation>) {
        let id = conversation.transfer_id.clone();
        let busy = self.busy.remove(&id).unwrap_or_default();
        let verdict = std::mem::replace(&mut conversation.verdict, Verdict::Undecided);
        let outcome = match verdict {
            Verdict::Accepted { seq, record } => {
                let stored = self.transfers.apply(seq, &record).expect("a decided record concerns its transfer");
                Self::track_expiry(&mut self.expiry, &stored);
                Some(Outcome::Applied(stored))
            }
            Verdict::Tentative { record } => {
                let (Mode::Atomic(batch), Operation::Create { request, .. }) =
                    (conversation.mode, &conversation.operation)
                else {
                    unreachable!("only atomic creations are tentative")
                };
                self.busy.insert(id.clone(), Busy { tentative: Some((batch, request.clone())), waiting: busy.waiting });
                self.batch_reserved.entry(batch).or_default().push(id.clone());
                conversation.reply.send(Outcome::Tentative(record));
                return;
            }
            Verdict::Rejected(rejection) => Some(Outcome::Rejected(rejection)),
            Verdict::Failed(error) => Some(Outcome::Failed(error)),
            Verdict::Undecided => unreachable!("a conversation finishes decided"),
        };
        if let Some(outcome) = outcome {
            conversation.reply.send(outcome);
        }
        self.resume_waiting(busy.waiting);
    }

    fn resume_waiting(&mut self, waiting: VecDeque<Start>) {
        for start in waiting {
            self.start(start);
        }
    }

    /// Keeps the expiry index in step with a stored transfer: a hold with a deadline is in it
    /// while pending, and out of it once posted, voided or expired.
    fn track_expiry(expiry: &mut BTreeSet<(i64, Id)>, transfer: &Transfer) {
        if let Some(deadline) = transfer.deadline_ms() {
            if transfer.status == TransferStatus::Pending {
                expiry.insert((deadline, transfer.id.clone()));
            } else {
                expiry.remove(&(deadline, transfer.id.clone()));
            }
        }
    }

    // ---- the conversation: debit owner ----------------------------------------------------

    fn hold(&mut self, mut conversation: Box<Conversation>) {
        let Some(account) = self.accounts.get(&conversation.debit) else {
            // Only a creation can name a missing account: post, void and expiry name the
            // accounts of a stored transfer, and accounts are never deleted.
            conversation.verdict = Verdict::Rejected(Rejection::DebitAccountNotFound);
            let transfer_id = conversation.transfer_id.clone();
            self.send(&transfer_id, ShardMessage::Finish(conversation));
            return;
        };
        match &mut conversation.operation {
            Operation::Create { request, facts, held } => {
                let in_flight = self.in_flight_debits.get(&conversation.debit).copied().unwrap_or_default();
                let tentative = match conversation.mode {
                    Mode::Atomic(batch) => self
                        .tentative_credits
                        .get(&batch)
                        .and_then(|credits| credits.get(&conversation.debit))
                        .copied()
                        .unwrap_or_default(),
                    Mode::Single => Amount::ZERO,
                };
                // In flight less tentative credits: both bounded, so this stays inside i128.
                let held_elsewhere = in_flight.checked_sub(tentative).expect("bounded amounts");
                let amount = rules::debit_amount(account, &request.amount);
                let debit_facts = rules::debit_facts(account, amount.unwrap_or(Amount::ZERO), held_elsewhere);
                if let Some(amount) = amount
                    && debit_facts.may_hold()
                {
                    let entry = self.in_flight_debits.entry(conversation.debit.clone()).or_default();
                    *entry = entry.checked_add(amount).expect("holds within the bound add up inside i128");
                    *held = amount;
                }
                *facts = Some(debit_facts);
            }
            Operation::Post { debit_frozen, .. } => *debit_frozen = account.frozen,
            Operation::Void { .. } | Operation::Expire { .. } => {}
        }
        let credit = conversation.credit.clone();
        self.send(&credit, ShardMessage::Decide(conversation));
    }

    fn settle(&mut self, conversation: Box<Conversation>) {
        if let Operation::Create { held, .. } = &conversation.operation
            && !held.is_zero()
        {
            match (&conversation.verdict, conversation.mode) {
                (Verdict::Tentative { .. }, Mode::Atomic(batch)) => {
                    self.batch_holds.entry(batch).or_default().push((conversation.debit.clone(), *held));
                }
                _ => self.release_hold(&conversation.debit.clone(), *held),
            }
        }
        if let Verdict::Accepted { seq, record } = &conversation.verdict {
            self.apply_side(&conversation.debit, Side::Debit, *seq, record);
        }
        let transfer_id = conversation.transfer_id.clone();
        self.send(&transfer_id, ShardMessage::Finish(conversation));
    }

    fn release_hold(&mut self, account: &Id, amount: Amount) {
        let remaining = self.in_flight_debits.get_mut(account).expect("a released hold was placed");
        *remaining = remaining.checked_sub(amount).expect("a released hold is at most what is held");
        assert!(!remaining.is_negative(), "in-flight holds on {account} went negative");
        if remaining.is_zero() {
            self.in_flight_debits.remove(account);
        }
    }

    /// Applies one side of a decided record to an owned account.
    fn apply_side(&mut self, account_id: &Id, side: Side, seq: u64, record: &Record) {
        let account = self.accounts.get_mut(account_id).expect("a decided record names existing accounts");
        apply_to_account(account, side, seq, record).expect("a decided record keeps every invariant");
    }

    // ---- the conversation: credit owner (the decider) -------------------------------------

    fn decide(&mut self, mut conversation: Box<Conversation>) {
        conversation.verdict = self.verdict(&conversation);
        if let Verdict::Accepted { seq, record } = &conversation.verdict {
            let (seq, record) = (*seq, record.clone());
            self.apply_side(&conversation.credit, Side::Credit, seq, &record);
        }
        let debit = conversation.debit.clone();
        self.send(&debit, ShardMessage::Settle(conversation));
    }

    fn verdict(&mut self, conversation: &Conversation) -> Verdict {
        let Some(credit) = self.accounts.get(&conversation.credit) else {
            return Verdict::Rejected(Rejection::CreditAccountNotFound);
        };
        let record = match &conversation.operation {
            Operation::Create { request, facts, .. } => {
                let facts = facts.as_ref().expect("the debit owner reports its facts");
                let amount = match rules::decide_transfer(facts, credit, &request.amount) {
                    Ok(amount) => amount,
                    Err(rejection) => return Verdict::Rejected(rejection),
                };
                let record = transfer_record(request, amount, credit, self.now_ms());
                if let Mode::Atomic(batch) = conversation.mode {
                    if !request.pending {
                        let credits = self.tentative_credits.entry(batch).or_default();
                        let credit = credits.entry(conversation.credit.clone()).or_default();
                        *credit = credit.checked_add(amount).expect("bounded amounts add up inside i128");
                    }
                    return Verdict::Tentative { record };
                }
                record
            }
            Operation::Post { posted_amount, pending_amount, debit_frozen } => {
                if *debit_frozen || credit.frozen {
                    return Verdict::Rejected(Rejection::AccountFrozen);
                }
                Record::PostPending {
                    transfer: conversation.transfer_id.clone(),
                    debit_account: conversation.debit.clone(),
                    credit_account: conversation.credit.clone(),
                    pending_amount: *pending_amount,
                    posted_amount: *posted_amount,
                }
            }
            Operation::Void { pending_amount } => Record::VoidPending {
                transfer: conversation.transfer_id.clone(),
                debit_account: conversation.debit.clone(),
                credit_account: conversation.credit.clone(),
                pending_amount: *pending_amount,
            },
            Operation::Expire { pending_amount } => Record::ExpirePending {
                transfer: conversation.transfer_id.clone(),
                debit_account: conversation.debit.clone(),
                credit_account: conversation.credit.clone(),
                pending_amount: *pending_amount,
            },
        };
        match self.commit.submit(vec![record.clone()]) {
            Ok(seq) => Verdict::Accepted { seq, record },
            Err(error) => Verdict::Failed(error.into()),
        }
    }

    // ---- atomic batches -------------------------------------------------------------------

    fn commit_batch(&mut self, batch: BatchId, records: &[(u64, Record)]) {
        for (seq, record) in records {
            let Record::CreateTransfer { id, debit_account, credit_account, amount, pending, .. } = record else {
                unreachable!("an atomic batch writes only transfer creations")
            };
            if self.owns(debit_account) {
                self.release_hold(debit_account, *amount);
                self.apply_side(debit_account, Side::Debit, *seq, record);
            }
            if self.owns(credit_account) {
                if !*pending {
                    self.take_tentative_credit(batch, credit_account, *amount);
                }
                self.apply_side(credit_account, Side::Credit, *seq, record);
            }
            if self.owns(id) {
                let stored = self.transfers.apply(*seq, record).expect("a decided record concerns its transfer");
                Self::track_expiry(&mut self.expiry, &stored);
            }
        }
        self.batch_holds.remove(&batch);
        self.end_batch(batch);
    }

    fn take_tentative_credit(&mut self, batch: BatchId, account: &Id, amount: Amount) {
        let credits = self.tentative_credits.get_mut(&batch).expect("a committed credit was tentative");
        let remaining = credits.get_mut(account).expect("a committed credit was tentative");
        *remaining = remaining.checked_sub(amount).expect("a committed credit is at most what is tentative");
        if remaining.is_zero() {
            credits.remove(account);
        }
    }

    fn abort_batch(&mut self, batch: BatchId) {
        for (account, amount) in self.batch_holds.remove(&batch).unwrap_or_default() {
            self.release_hold(&account, amount);
        }
        self.end_batch(batch);
    }

    /// Forgets a batch's tentative credits and releases its reserved ids.
    fn end_batch(&mut self, batch: BatchId) {
        self.tentative_credits.remove(&batch);
        for id in self.batch_reserved.remove(&batch).unwrap_or_default() {
            if let Some(busy) = self.busy.remove(&id) {
                self.resume_waiting(busy.waiting);
            }
        }
    }
}

fn same_request(a: &engine::TransferRequest, b: &engine::TransferRequest) -> bool {
    a == b
}
