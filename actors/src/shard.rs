//! The shard actor: sole owner of a partition of accounts and of transfer ids.
//!
//! Every account and every transfer id belongs to exactly one shard ([`shard_of`]). A shard
//! holds, for its accounts, the decided state (`Account`, the same struct replay builds), the
//! holds of transfers still in flight, the tentative credits of atomic batches and the
//! history index; for its transfer ids, the stored transfers, the ids with a conversation in
//! flight (and the requests queued behind them) and the expiry index. It never awaits
//! anything: every step of a conversation is one message, handled to completion.
//!
//! Decided effects are applied with the engine's `apply_to_account` / `apply_to_transfers`,
//! the functions replay uses. Visibility is guarded by the read barrier: every reply carries
//! the log sequence of the last change it shows, and the front door answers only once that
//! sequence is durable.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use engine::ledger::{Side, account_from_record, apply_to_account, apply_to_transfers, transfer_record};
use engine::rules::{self, PostOutcome};
use engine::{Account, Id, Record, Rejection, Transfer, TransferStatus};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rust_decimal::Decimal;
use snapshots::CommitHandle;
use tokio::sync::oneshot;

use crate::conversation::{BatchId, Command, Conversation, Mode, Operation, Outcome, Reply, Start, Verdict};
use crate::handle::{AccountRequest, Clock, LedgerError};

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
    /// Newest first: up to `limit` (creation seq, transfer id) of the account with seq < `before`.
    History {
        account: Id,
        limit: usize,
        before: Option<u64>,
        reply: oneshot::Sender<Option<Vec<(u64, Id)>>>,
    },
    GetTransfers {
        ids: Vec<Id>,
        reply: oneshot::Sender<Vec<Option<Transfer>>>,
    },
    Start(Start),
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
    Tick,
    /// Loads recovered state (sent once, before any request).
    Load(Box<ShardLoad>),
}

/// Recovered state for one shard.
#[derive(Default)]
pub(crate) struct ShardLoad {
    pub accounts: Vec<Account>,
    pub transfers: Vec<Transfer>,
    pub history: Vec<(Id, u64, Id)>,
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
    accounts: HashMap<Id, Account>,
    /// Amounts held on accounts by undecided conversations and tentative batch items.
    in_flight_debits: HashMap<Id, Decimal>,
    /// Posted credits of tentative atomic-batch items: spendable only by the same batch.
    tentative_credits: HashMap<BatchId, HashMap<Id, Decimal>>,
    /// Holds placed for tentative atomic-batch items, released on commit or abort.
    batch_holds: HashMap<BatchId, Vec<(Id, Decimal)>>,
    /// Transfer ids reserved by atomic batches.
    batch_reserved: HashMap<BatchId, Vec<Id>>,
    /// Per account: (creation seq, transfer id), ascending by seq.
    history: HashMap<Id, Vec<(u64, Id)>>,
    transfers: HashMap<Id, Transfer>,
    busy: HashMap<Id, Busy>,
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
            accounts: HashMap::new(),
            in_flight_debits: HashMap::new(),
            tentative_credits: HashMap::new(),
            batch_holds: HashMap::new(),
            batch_reserved: HashMap::new(),
            history: HashMap::new(),
            transfers: HashMap::new(),
            busy: HashMap::new(),
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
            ShardMessage::History { account, limit, before, reply } => {
                let _ = reply.send(self.history_page(&account, limit, before));
            }
            ShardMessage::GetTransfers { ids, reply } => {
                let _ = reply.send(ids.iter().map(|id| self.transfers.get(id).cloned()).collect());
            }
            ShardMessage::Start(start) => self.start(start),
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
            ShardMessage::Tick => self.expire_due(),
            ShardMessage::Load(load) => self.load(*load),
        }
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

    fn send(&self, to: &Id, message: ShardMessage) {
        // A peer that is gone has failed; the supervisor has already marked the ledger failed
        // and the requester sees its reply channel close.
        let _ = self.peer(to).cast(message);
    }

    fn load(&mut self, load: ShardLoad) {
        for account in load.accounts {
            self.accounts.insert(account.id.clone(), account);
        }
        for transfer in load.transfers {
            if transfer.status == TransferStatus::Pending
                && let Some(deadline) = transfer.deadline_ms()
            {
                self.expiry.insert((deadline, transfer.id.clone()));
            }
            self.transfers.insert(transfer.id.clone(), transfer);
        }
        for (account, seq, transfer) in load.history {
            insert_history(self.history.entry(account).or_default(), seq, transfer);
        }
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
        self.accounts.insert(account.id.clone(), account.clone());
        self.account_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((account, true))
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

    fn history_page(&self, account: &Id, limit: usize, before: Option<u64>) -> Option<Vec<(u64, Id)>> {
        if !self.accounts.contains_key(account) {
            return None;
        }
        let entries = self.history.get(account).map(Vec::as_slice).unwrap_or_default();
        let end = match before {
            Some(before) => entries.partition_point(|(seq, _)| *seq < before),
            None => entries.len(),
        };
        Some(entries[..end].iter().rev().take(limit).cloned().collect())
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
            Command::Create { request, mode } => {
                if let Some(stored) = self.transfers.get(&request.id) {
                    let outcome = if stored.matches(&request) {
                        Outcome::Existing(stored.clone())
                    } else {
                        Outcome::Rejected(Rejection::ExistsWithDifferentFields)
                    };
                    reply.send(outcome);
                    return;
                }
                if request.debit_account == request.credit_account {
                    reply.send(Outcome::Rejected(Rejection::AccountsMustBeDifferent));
                    return;
                }
                Conversation {
                    transfer_id: request.id.clone(),
                    debit: request.debit_account.clone(),
                    credit: request.credit_account.clone(),
                    mode,
                    operation: Operation::Create { request, facts: None, held: Decimal::ZERO },
                    verdict: Verdict::Undecided,
                    reply,
                }
            }
            Command::Post { id, amount } => {
                let Some(stored) = self.transfers.get(&id) else {
                    reply.send(Outcome::Rejected(Rejection::TransferNotFound));
                    return;
                };
                let posted_amount = match rules::check_post(stored, amount, now_ms) {
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
                let Some(stored) = self.transfers.get(&id) else {
                    reply.send(Outcome::Rejected(Rejection::TransferNotFound));
                    return;
                };
                match rules::check_void(stored, now_ms) {
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
            let Some(stored) = self.transfers.get(&id) else { continue };
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
                apply_to_transfers(&mut self.transfers, seq, &record)
                    .expect("a decided record applies to its transfer");
                let stored = self.transfers[&id].clone();
                self.track_expiry(stored.clone());
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

    fn track_expiry(&mut self, transfer: Transfer) {
        if let Some(deadline) = transfer.deadline_ms() {
            if transfer.status == TransferStatus::Pending {
                self.expiry.insert((deadline, transfer.id));
            } else {
                self.expiry.remove(&(deadline, transfer.id));
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
                    Mode::Single => Decimal::ZERO,
                };
                let debit_facts = rules::debit_facts(account, request.amount, in_flight - tentative);
                if debit_facts.may_hold() && request.amount.scale() <= account.currency.scale {
                    *self.in_flight_debits.entry(conversation.debit.clone()).or_default() += request.amount;
                    *held = request.amount;
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

    fn release_hold(&mut self, account: &Id, amount: Decimal) {
        let remaining = self.in_flight_debits.get_mut(account).expect("a released hold was placed");
        *remaining -= amount;
        assert!(!remaining.is_sign_negative() || remaining.is_zero(), "in-flight holds on {account} went negative");
        if remaining.is_zero() {
            self.in_flight_debits.remove(account);
        }
    }

    /// Applies one side of a decided record to an owned account, and indexes a creation in
    /// the account's history.
    fn apply_side(&mut self, account_id: &Id, side: Side, seq: u64, record: &Record) {
        let account = self.accounts.get_mut(account_id).expect("a decided record names existing accounts");
        apply_to_account(account, side, seq, record).expect("a decided record keeps every invariant");
        if let Record::CreateTransfer { id, .. } = record {
            insert_history(self.history.entry(account_id.clone()).or_default(), seq, id.clone());
        }
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
                let amount = match rules::decide_transfer(facts, credit, request.amount) {
                    Ok(amount) => amount,
                    Err(rejection) => return Verdict::Rejected(rejection),
                };
                let record = transfer_record(request, amount, credit, self.now_ms());
                if let Mode::Atomic(batch) = conversation.mode {
                    if !request.pending {
                        *self
                            .tentative_credits
                            .entry(batch)
                            .or_default()
                            .entry(conversation.credit.clone())
                            .or_default() += amount;
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
                apply_to_transfers(&mut self.transfers, *seq, record)
                    .expect("a decided record applies to its transfer");
                self.track_expiry(self.transfers[id].clone());
            }
        }
        self.batch_holds.remove(&batch);
        self.end_batch(batch);
    }

    fn take_tentative_credit(&mut self, batch: BatchId, account: &Id, amount: Decimal) {
        let credits = self.tentative_credits.get_mut(&batch).expect("a committed credit was tentative");
        let remaining = credits.get_mut(account).expect("a committed credit was tentative");
        *remaining -= amount;
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

fn insert_history(entries: &mut Vec<(u64, Id)>, seq: u64, transfer: Id) {
    // Sides of a transfer may be applied slightly out of sequence order; keep the index
    // sorted (almost always an append).
    let position = entries.partition_point(|(existing, _)| *existing < seq);
    entries.insert(position, (seq, transfer));
}
