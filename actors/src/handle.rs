//! The front door of the actor tree: [`LedgerHandle`].
//!
//! It routes each request to the shard that owns it, bounds the work in flight (beyond
//! `max_in_flight_transfers` transfers, or `max_in_flight_requests` other requests — account
//! creation and reads, freezes, transfer and history reads, payment facts — a request is
//! refused with [`LedgerError::Overloaded`] and counted in [`ADMISSION_REFUSED_TOTAL`] instead
//! of queueing without bound in a mailbox or the blocking pool), and answers only once every
//! effect the answer shows is durable (the read barrier: it waits for the committer's durable
//! sequence to reach the `last_seq` of what it returns). It is cheap to clone and safe to share between tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use engine::{Account, Currency, Id, Metadata, Overdraft, Rejection, Transfer, TransferRequest, WrittenAmount};
use history::History;
use ractor::{Actor, ActorRef};
use snapshots::{CommitError, CommitHandle};
use tokio::sync::{Semaphore, oneshot};

use crate::batch;
use crate::conversation::{Command, Mode, Outcome, Reply, Start};
use crate::shard::{Shard, ShardArguments, ShardLoad, ShardMessage, shard_of};
use crate::supervisor::{Supervisor, SupervisorArguments};

/// `ledger_admission_refused_total{work}`: requests refused `overloaded` at the front door,
/// `work` = `transfers` (the transfer bound) or `requests` (every other request).
pub const ADMISSION_REFUSED_TOTAL: &str = "ledger_admission_refused_total";

/// Milliseconds since the Unix epoch. Injected so that tests can control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    })
}

/// How the actor tree is sized and paced.
#[derive(Clone)]
pub struct LedgerSettings {
    /// Number of shard actors (each owns a disjoint part of the accounts and transfer ids).
    pub shards: usize,
    /// Transfers (single, batch items, posts, voids) in flight at once; beyond: overloaded.
    pub max_in_flight_transfers: usize,
    /// Other requests in flight at once (account creation and reads, freezes, transfer and
    /// history reads, payment facts); beyond: overloaded.
    pub max_in_flight_requests: usize,
    /// How often holds with a timeout are checked for expiry.
    pub expiry_tick_ms: u64,
    pub clock: Clock,
    /// While raised, no hold is expired (the read-only mode): ticks skip the expiry check, and
    /// holds whose deadline passed are expired at the first tick after it is lowered. Shared
    /// with the caller ([`LedgerHandle::set_expiry_paused`]); raise it before opening to keep
    /// expiry from running until the caller knows whether it may.
    pub expiry_paused: Arc<AtomicBool>,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            shards: 1,
            max_in_flight_transfers: 65_536,
            max_in_flight_requests: 16_384,
            expiry_tick_ms: 100,
            clock: system_clock(),
            expiry_paused: Arc::default(),
        }
    }
}

/// A request to open an account (validated by the caller: id syntax, known currency, limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRequest {
    pub id: Id,
    pub currency: Currency,
    pub overdraft: Overdraft,
    pub metadata: Metadata,
}

/// Why an operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A business rejection (the contract's error codes).
    #[error("{0}")]
    Rejected(Rejection),
    /// Too much work in flight; retry later.
    #[error("overloaded")]
    Overloaded,
    /// The ledger cannot make progress (the log cannot be written, or an actor failed).
    /// Nothing unacknowledged is visible; a restart recovers from the log.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<CommitError> for LedgerError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Full => LedgerError::Overloaded,
            CommitError::Closed => LedgerError::Unavailable("the log is closed (shutting down)".to_owned()),
            CommitError::Failed(reason) => LedgerError::Unavailable(format!("the log cannot be written: {reason}")),
        }
    }
}

/// The result of one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItemResult {
    Created(Arc<Transfer>),
    Exists(Arc<Transfer>),
    Rejected(Rejection),
}

/// Why the actor tree could not start.
#[derive(Debug, thiserror::Error)]
#[error("could not start the actors: {0}")]
pub struct StartError(String);

pub(crate) struct Inner {
    pub shards: Vec<ActorRef<ShardMessage>>,
    pub commit: CommitHandle,
    pub history: History,
    /// Held shared by every operation that changes state, and exclusively while a snapshot is
    /// taken: then nothing is in flight, and the shards' state is a fold of the log.
    pub gate: tokio::sync::RwLock<()>,
    admission: Arc<Semaphore>,
    max_in_flight: usize,
    /// The bound of every request that is not a transfer.
    requests: Arc<Semaphore>,
    max_in_flight_requests: usize,
    pub failed: Arc<AtomicBool>,
    pub next_batch_id: AtomicU64,
    account_count: Arc<AtomicU64>,
    supervisor: ActorRef<crate::supervisor::SupervisorMessage>,
    ticker: tokio::task::JoinHandle<()>,
    expiry_paused: Arc<AtomicBool>,
}

/// The front door of the actor tree. Cheap to clone.
#[derive(Clone)]
pub struct LedgerHandle {
    pub(crate) inner: Arc<Inner>,
}

impl LedgerHandle {
    /// Starts the shards with the recovered `ledger`, the committer's handle and the history
    /// (ingested up to `ledger.last_seq`).
    pub async fn start(
        settings: LedgerSettings,
        ledger: engine::Ledger,
        commit: CommitHandle,
        history: History,
    ) -> Result<LedgerHandle, StartError> {
        assert!(settings.shards >= 1, "at least one shard");
        let failed = Arc::new(AtomicBool::new(false));
        let (supervisor, _) =
            Actor::spawn(None, Supervisor, SupervisorArguments { failed: failed.clone(), commit: commit.clone() })
                .await
                .map_err(|error| StartError(error.to_string()))?;
        let peers = Arc::new(std::sync::OnceLock::new());
        let account_count = Arc::new(AtomicU64::new(u64::try_from(ledger.accounts.len()).unwrap_or(u64::MAX)));
        let mut shards = Vec::with_capacity(settings.shards);
        for index in 0..settings.shards {
            let arguments = ShardArguments {
                index,
                peers: peers.clone(),
                commit: commit.clone(),
                clock: settings.clock.clone(),
                account_count: account_count.clone(),
                history: history.clone(),
            };
            let (shard, _) = Actor::spawn_linked(None, Shard, arguments, supervisor.get_cell())
                .await
                .map_err(|error| StartError(error.to_string()))?;
            shards.push(shard);
        }
        peers.set(shards.clone()).map_err(|_| StartError("peers set twice".to_owned()))?;
        // The handle is ready only once every shard holds its part: until then a request would
        // queue behind the loading, and readiness would be announced too early.
        let mut loads = Vec::with_capacity(settings.shards);
        for (index, load) in partition(ledger, settings.shards).into_iter().enumerate() {
            let (reply, loaded) = oneshot::channel();
            shards[index]
                .cast(ShardMessage::Load { load: Box::new(load), reply })
                .map_err(|error| StartError(error.to_string()))?;
            loads.push(loaded);
        }
        for loaded in loads {
            loaded.await.map_err(|_| StartError("a shard stopped while loading".to_owned()))?;
        }
        let max_in_flight = settings.max_in_flight_transfers.max(1);
        let max_in_flight_requests = settings.max_in_flight_requests.max(1);
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let shards_for_ticks = shards.clone();
            let period = Duration::from_millis(settings.expiry_tick_ms.max(1));
            let expiry_paused = settings.expiry_paused.clone();
            // Ticks start expiries (and let shards forget what the history has ingested); they
            // pass the gate like any change.
            let ticker = tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let _changing = inner.gate.read().await;
                    for shard in &shards_for_ticks {
                        let expire = !expiry_paused.load(Ordering::Acquire);
                        if shard.cast(ShardMessage::Tick { expire }).is_err() {
                            return;
                        }
                    }
                }
            });
            Inner {
                shards,
                commit,
                history,
                gate: tokio::sync::RwLock::new(()),
                admission: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
                requests: Arc::new(Semaphore::new(max_in_flight_requests)),
                max_in_flight_requests,
                failed,
                next_batch_id: AtomicU64::new(1),
                account_count,
                supervisor,
                ticker,
                expiry_paused: settings.expiry_paused.clone(),
            }
        });
        Ok(LedgerHandle { inner })
    }

    /// Number of accounts.
    pub fn account_count(&self) -> u64 {
        self.inner.account_count.load(Ordering::Relaxed)
    }

    /// The committer's handle (durable sequence, subscriptions).
    pub fn commit(&self) -> &CommitHandle {
        &self.inner.commit
    }

    /// Opens an account; `Ok((account, false))` when the same account exists already.
    pub async fn create_account(&self, request: AccountRequest) -> Result<(Account, bool), LedgerError> {
        self.check_running()?;
        let _permit = self.admit_request()?;
        let _changing = self.inner.gate.read().await;
        let id = request.id.clone();
        let answer = self.ask(&id, |reply| ShardMessage::CreateAccount { request, reply }).await?;
        let (account, created) = self.durable_rejection(answer).await?;
        self.wait_durable(account.last_seq).await?;
        Ok((account, created))
    }

    /// The account as of the durable log.
    pub async fn account(&self, id: &Id) -> Result<Account, LedgerError> {
        let _permit = self.admit_request()?;
        let account = self
            .ask(id, |reply| ShardMessage::GetAccount { id: id.clone(), reply })
            .await?
            .ok_or(LedgerError::Rejected(Rejection::AccountNotFound))?;
        self.wait_durable(account.last_seq).await?;
        Ok(account)
    }

    /// Freezes or unfreezes an account (idempotent).
    pub async fn set_frozen(&self, id: &Id, frozen: bool) -> Result<Account, LedgerError> {
        self.check_running()?;
        let _permit = self.admit_request()?;
        let _changing = self.inner.gate.read().await;
        let answer = self.ask(id, |reply| ShardMessage::SetFrozen { id: id.clone(), frozen, reply }).await?;
        let account = self.durable_rejection(answer).await?;
        self.wait_durable(account.last_seq).await?;
        Ok(account)
    }

    /// Creates a transfer; `Ok((transfer, false))` for an idempotent replay.
    pub async fn create_transfer(&self, request: TransferRequest) -> Result<(Arc<Transfer>, bool), LedgerError> {
        let _permit = self.admit(1)?;
        let _changing = self.inner.gate.read().await;
        let id = request.id.clone();
        let outcome = self.converse(&id, Command::Create { request: Arc::new(request), mode: Mode::Single }).await?;
        match outcome {
            Outcome::Applied(transfer) => Ok((transfer, true)),
            Outcome::Existing(transfer) => Ok((transfer, false)),
            other => Err(unexpected(other)),
        }
    }

    /// Applies a batch as if item by item in index order; `atomic`: all or nothing.
    pub async fn create_batch(
        &self,
        requests: Vec<TransferRequest>,
        atomic: bool,
    ) -> Result<Vec<BatchItemResult>, LedgerError> {
        let _permit = self.admit(requests.len())?;
        let _changing = self.inner.gate.read().await;
        batch::run(self, requests, atomic).await
    }

    /// Posts a pending transfer (all of it by default).
    pub async fn post_transfer(&self, id: &Id, amount: Option<WrittenAmount>) -> Result<Arc<Transfer>, LedgerError> {
        let _permit = self.admit(1)?;
        let _changing = self.inner.gate.read().await;
        match self.converse(id, Command::Post { id: id.clone(), amount }).await? {
            Outcome::Applied(transfer) | Outcome::Existing(transfer) => Ok(transfer),
            other => Err(unexpected(other)),
        }
    }

    /// Voids a pending transfer.
    pub async fn void_transfer(&self, id: &Id) -> Result<Arc<Transfer>, LedgerError> {
        let _permit = self.admit(1)?;
        let _changing = self.inner.gate.read().await;
        match self.converse(id, Command::Void { id: id.clone() }).await? {
            Outcome::Applied(transfer) | Outcome::Existing(transfer) => Ok(transfer),
            other => Err(unexpected(other)),
        }
    }

    /// A transfer as of the durable log: from its owner's memory, else from the history.
    pub async fn transfer(&self, id: &Id) -> Result<Arc<Transfer>, LedgerError> {
        let _permit = self.admit_request()?;
        let mut found = self.ask(id, |reply| ShardMessage::GetTransfers { ids: vec![id.clone()], reply }).await?;
        if let Some(transfer) = found.pop().flatten() {
            self.wait_durable(transfer.last_seq).await?;
            return Ok(transfer);
        }
        // Not in memory: the history holds it (everything leaves memory only once ingested, and
        // what it ingested is durable), or it does not exist.
        self.read_history(id.clone(), |history, id| history.transfer(&id))
            .await?
            .ok_or(LedgerError::Rejected(Rejection::TransferNotFound))
    }

    /// The transfers that debit or credit `account`, newest first: at most `limit` with a
    /// creation sequence below `before_seq`, and the cursor of the next page. Read from the
    /// history once it has ingested every change of the account.
    pub async fn account_transfers(
        &self,
        account: &Id,
        limit: usize,
        before_seq: Option<u64>,
    ) -> Result<(Vec<Arc<Transfer>>, Option<u64>), LedgerError> {
        let _permit = self.admit_request()?;
        let found = self.ask(account, |reply| ShardMessage::GetAccount { id: account.clone(), reply }).await?;
        let last_seq = found.ok_or(LedgerError::Rejected(Rejection::AccountNotFound))?.last_seq;
        self.inner.history.wait_ingested(last_seq).await.map_err(history_unavailable)?;
        let page = self
            .read_history(account.clone(), move |history, account| {
                history.account_transfers(&account, before_seq, limit)
            })
            .await?
            .ok_or(LedgerError::Rejected(Rejection::AccountNotFound))?;
        Ok((page.transfers, page.next))
    }

    /// A read of the history, on a blocking thread (it may read disk).
    async fn read_history<T: Send + 'static, A: Send + 'static>(
        &self,
        argument: A,
        read: impl FnOnce(&History, A) -> Result<T, history::HistoryError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let history = self.inner.history.clone();
        tokio::task::spawn_blocking(move || read(&history, argument))
            .await
            .map_err(|_| self.unavailable())?
            .map_err(history_unavailable)
    }

    /// Pauses (`true`) or resumes the expiry of holds (see [`LedgerSettings::expiry_paused`]).
    pub fn set_expiry_paused(&self, paused: bool) {
        self.inner.expiry_paused.store(paused, Ordering::Release);
    }

    /// The history behind the ledger.
    pub fn history(&self) -> &History {
        &self.inner.history
    }

    /// The accounts and open holds as of one log sequence, encoded for a snapshot, without a
    /// second copy of the ledger: changes wait at the gate while every shard encodes its part
    /// (each answers only once nothing is in flight on it), then the state is the fold of the
    /// log up to the last sequence handed out, which this waits to be durable.
    pub async fn snapshot_contents(&self) -> Result<snapshots::SnapshotContents, LedgerError> {
        self.check_running()?;
        let mut contents = {
            let _quiet = self.inner.gate.write().await;
            let parts = loop {
                let mut answers = Vec::with_capacity(self.inner.shards.len());
                for shard in &self.inner.shards {
                    let (reply, answer) = oneshot::channel();
                    shard.cast(ShardMessage::EncodeSnapshot { reply }).map_err(|_| self.unavailable())?;
                    answers.push(answer);
                }
                let mut parts = Vec::with_capacity(answers.len());
                for answer in answers {
                    parts.push(answer.await.map_err(|_| self.unavailable())?);
                }
                if let Some(parts) = parts.into_iter().collect::<Option<Vec<_>>>() {
                    break parts;
                }
                // A conversation that started before the gate closed is still on its way:
                // it ends without waiting for anything, so ask again shortly.
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let mut contents = snapshots::SnapshotContents { seq: self.decided_seq(), ..Default::default() };
            for part in parts {
                contents.accounts.extend(part.accounts);
                contents.open_holds.extend(part.open_holds);
            }
            contents
        };
        self.wait_durable(contents.seq).await?;
        contents.history_seq = self.inner.history.durable_seq();
        Ok(contents)
    }

    /// Writes opaque bookkeeping records (payment facts: `(kind, key, payload)`) as one
    /// submission, all or none, and returns the sequence of the last once it is durable.
    pub async fn append_externals(&self, records: Vec<(String, String, Vec<u8>)>) -> Result<u64, LedgerError> {
        self.check_running()?;
        let _permit = self.admit_request()?;
        let _changing = self.inner.gate.read().await;
        let count = u64::try_from(records.len()).expect("a length fits u64");
        assert!(count > 0, "at least one record");
        let records = records.into_iter().map(|(kind, key, payload)| engine::Record::External { kind, key, payload });
        let first_seq = self.inner.commit.submit(records.collect())?;
        let last_seq = first_seq + count - 1;
        self.wait_durable(last_seq).await?;
        Ok(last_seq)
    }

    /// Stops taking work, lets what is in flight finish, writes what was decided and stops.
    pub async fn shutdown(&self) {
        drain(&self.inner.admission, self.inner.max_in_flight).await;
        drain(&self.inner.requests, self.inner.max_in_flight_requests).await;
        self.inner.ticker.abort();
        self.inner.failed.store(true, Ordering::SeqCst);
        self.inner.commit.close();
        self.inner.supervisor.stop_children(None);
        self.inner.supervisor.stop(None);
    }

    // ---- plumbing -------------------------------------------------------------------------

    fn check_running(&self) -> Result<(), LedgerError> {
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(LedgerError::Unavailable("the ledger is stopped or failed; see the server log".to_owned()));
        }
        Ok(())
    }

    fn admit(&self, count: usize) -> Result<tokio::sync::OwnedSemaphorePermit, LedgerError> {
        self.check_running()?;
        let count = u32::try_from(count.clamp(1, self.inner.max_in_flight)).unwrap_or(u32::MAX);
        self.inner.admission.clone().try_acquire_many_owned(count).map_err(|error| self.refused(error, "transfers"))
    }

    /// Admits one request that is not a transfer, or refuses it `overloaded`.
    fn admit_request(&self) -> Result<tokio::sync::OwnedSemaphorePermit, LedgerError> {
        self.inner.requests.clone().try_acquire_owned().map_err(|error| self.refused(error, "requests"))
    }

    /// A refusal at the front door: `overloaded` (counted) when the bound is reached,
    /// unavailable once the ledger has shut down.
    fn refused(&self, error: tokio::sync::TryAcquireError, work: &'static str) -> LedgerError {
        match error {
            tokio::sync::TryAcquireError::NoPermits => {
                metrics::counter!(ADMISSION_REFUSED_TOTAL, "work" => work).increment(1);
                LedgerError::Overloaded
            }
            tokio::sync::TryAcquireError::Closed => {
                LedgerError::Unavailable("the ledger is stopped or failed; see the server log".to_owned())
            }
        }
    }

    pub(crate) fn shard_for(&self, id: &Id) -> &ActorRef<ShardMessage> {
        &self.inner.shards[shard_of(id, self.inner.shards.len())]
    }

    /// Sends a request to the owner of `id` and waits for its answer (not for durability).
    async fn ask<T>(
        &self,
        id: &Id,
        message: impl FnOnce(oneshot::Sender<T>) -> ShardMessage,
    ) -> Result<T, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.shard_for(id).cast(message(reply)).map_err(|_| self.unavailable())?;
        answer.await.map_err(|_| self.unavailable())
    }

    pub(crate) fn unavailable(&self) -> LedgerError {
        LedgerError::Unavailable("an actor of the ledger failed; see the server log".to_owned())
    }

    /// Runs one conversation and waits until its answer is durable.
    async fn converse(&self, id: &Id, command: Command) -> Result<Outcome, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.shard_for(id)
            .cast(ShardMessage::Start(Start { command, reply: Reply::One(reply) }))
            .map_err(|_| self.unavailable())?;
        let outcome = answer.await.map_err(|_| self.unavailable())?;
        match &outcome {
            Outcome::Applied(transfer) | Outcome::Existing(transfer) => self.wait_durable(transfer.last_seq).await?,
            Outcome::Rejected(rejection) => {
                self.wait_durable(self.decided_seq()).await?;
                return Err(LedgerError::Rejected(*rejection));
            }
            Outcome::Failed(error) => return Err(error.clone()),
            Outcome::Tentative(_) | Outcome::TentativeReplay | Outcome::Deferred => {}
        }
        Ok(outcome)
    }

    /// The last sequence handed out so far. A decision received now saw no state later than
    /// it, so waiting for it to be durable before answering a rejection keeps the answer from
    /// resting on an effect that a crash could still undo (a hold or transfer not yet on disk).
    pub fn decided_seq(&self) -> u64 {
        self.inner.commit.next_seq() - 1
    }

    /// Passes `answer` through, but answers a business rejection only once what it saw is
    /// durable (see [`LedgerHandle::decided_seq`]).
    async fn durable_rejection<T>(&self, answer: Result<T, LedgerError>) -> Result<T, LedgerError> {
        if let Err(LedgerError::Rejected(_)) = &answer {
            self.wait_durable(self.decided_seq()).await?;
        }
        answer
    }

    pub(crate) async fn wait_durable(&self, seq: u64) -> Result<(), LedgerError> {
        self.inner.commit.wait_durable(seq).await.map_err(LedgerError::from)
    }
}

/// Waits (at most 30 s) until every one of the `permits` of `bound` is back, that is until
/// every request it admitted has finished, then closes it to new ones.
async fn drain(bound: &Semaphore, permits: usize) {
    let permits = u32::try_from(permits).unwrap_or(u32::MAX);
    if let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_secs(30), bound.acquire_many(permits)).await {
        permit.forget();
    }
    bound.close();
}

fn history_unavailable(error: history::HistoryError) -> LedgerError {
    tracing::error!(%error, "the history cannot be read");
    LedgerError::Unavailable(format!("the history cannot be read: {error}"))
}

fn unexpected(outcome: Outcome) -> LedgerError {
    match outcome {
        Outcome::Rejected(rejection) => LedgerError::Rejected(rejection),
        Outcome::Failed(error) => error,
        other => unreachable!("a single conversation does not end {other:?}"),
    }
}

/// Splits a recovered ledger into the parts each shard owns. With one shard the maps move as
/// they are; otherwise each entry moves to its owner's map.
fn partition(ledger: engine::Ledger, shard_count: usize) -> Vec<ShardLoad> {
    if shard_count == 1 {
        return vec![ShardLoad { accounts: ledger.accounts, open_holds: ledger.open_holds }];
    }
    let mut loads: Vec<ShardLoad> = (0..shard_count).map(|_| ShardLoad::default()).collect();
    for (id, account) in ledger.accounts {
        loads[shard_of(&id, shard_count)].accounts.insert(id, account);
    }
    for (id, hold) in ledger.open_holds {
        loads[shard_of(&id, shard_count)].open_holds.insert(id, hold);
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpenSettings, open};

    fn id(text: &str) -> Id {
        Id::parse(text).expect("a valid id")
    }

    async fn boot(dir: &std::path::Path, ledger: LedgerSettings) -> crate::OpenLedger {
        let settings = OpenSettings {
            data_dir: dir.to_path_buf(),
            ledger,
            committer: snapshots::CommitterSettings {
                group_records_max: 64,
                group_bytes_max: 1 << 20,
                queue_records_max: 1 << 10,
            },
            history: history::HistorySettings::default(),
            snapshot_interval: Duration::ZERO,
            retention: snapshots::Retention { snapshots_kept: 1, wal_retention_snapshots: 0 },
            watermark_period: Duration::from_secs(1),
            clock: system_clock(),
        };
        open(settings, |_| {}).await.expect("the ledger opens")
    }

    fn usd() -> Currency {
        Currency::new("USD", 2)
    }

    fn account_request(name: &str) -> AccountRequest {
        AccountRequest { id: id(name), currency: usd(), overdraft: Overdraft::Unlimited, metadata: Metadata::default() }
    }

    /// Every request that is not a transfer passes the second bound: with its permits taken,
    /// each kind is refused `overloaded` at once (and counted) while transfers still pass, and
    /// once they are given back every kind is served again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_their_bound_are_refused_and_transfers_keep_their_own_bound() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ledger =
            LedgerSettings { max_in_flight_requests: 3, max_in_flight_transfers: 2, ..LedgerSettings::default() };
        let opened = boot(dir.path(), ledger).await;
        let handle = opened.handle.clone();
        handle.create_account(account_request("alice")).await.expect("alice opens");
        handle.create_account(account_request("bob")).await.expect("bob opens");
        let transfer = || TransferRequest {
            id: id("t-1"),
            debit_account: id("alice"),
            credit_account: id("bob"),
            amount: WrittenAmount::from_minor_units(100, 2),
            pending: false,
            timeout_seconds: 0,
            description: String::new(),
            metadata: Metadata::default(),
        };

        let held = handle.inner.requests.clone().try_acquire_many_owned(3).expect("every request permit");
        let overloaded = Err(LedgerError::Overloaded);
        assert_eq!(handle.account(&id("alice")).await.map(|_| ()), overloaded);
        assert_eq!(handle.transfer(&id("t-0")).await.map(|_| ()), overloaded);
        assert_eq!(handle.account_transfers(&id("alice"), 10, None).await.map(|_| ()), overloaded);
        assert_eq!(handle.set_frozen(&id("alice"), true).await.map(|_| ()), overloaded);
        assert_eq!(handle.create_account(account_request("carol")).await.map(|_| ()), overloaded);
        assert_eq!(handle.append_externals(vec![("kind".into(), "key".into(), vec![1])]).await.map(|_| ()), overloaded);
        // The refusal is counted under its kind of work.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let exposition = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            assert_eq!(handle.admit_request().map(|_| ()), overloaded);
        });
        assert!(
            exposition.render().contains("ledger_admission_refused_total{work=\"requests\"} 1"),
            "{}",
            exposition.render()
        );
        // Transfers have their own bound.
        let (created, _) = handle.create_transfer(transfer()).await.expect("a transfer passes");
        assert_eq!(created.id, id("t-1"));
        drop(held);

        assert!(!handle.account(&id("alice")).await.expect("alice reads").frozen);
        assert_eq!(handle.transfer(&id("t-1")).await.expect("t-1 reads").id, id("t-1"));
        let transfers = handle.inner.admission.clone().try_acquire_many_owned(2).expect("every transfer permit");
        assert_eq!(handle.create_transfer(transfer()).await.map(|_| ()), overloaded);
        assert!(handle.set_frozen(&id("alice"), true).await.expect("alice freezes").frozen);
        drop(transfers);
        assert_eq!(handle.create_transfer(transfer()).await.map(|(_, created)| created), Ok(false));
        opened.close().await;
        // Once stopped, a request is unavailable, not overloaded (and not counted as refused).
        assert!(matches!(handle.account(&id("alice")).await, Err(LedgerError::Unavailable(_))));
        assert!(matches!(handle.create_transfer(transfer()).await, Err(LedgerError::Unavailable(_))));
    }
}
