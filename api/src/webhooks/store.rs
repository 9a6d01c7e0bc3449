//! The webhook bookkeeping kept in the ledger's log: deposits, withdrawals, deposit orders.
//!
//! This module owns the persisted facts of the webhook state machine and their encoding, the
//! in-memory view of them, and [`KeyLocks`], the bounded per-key locks that serialize
//! everything done for one deposit, withdrawal or order.
//!
//! Each fact is one `engine::Record::External` record: `kind` is one of [`DEPOSIT_KIND`],
//! [`WITHDRAWAL_KIND`], [`DEPOSIT_ORDER_KIND`], `key` names the fact, and the payload is the
//! fact as JSON (with a format version). Replay keeps the latest payload per (kind, key), so
//! the view after a restart is exactly the last fact written for each key. A fact is put in the
//! view only once its record is durable ([`Store::save`]), always under the key's lock, so a
//! reader never sees a state that a crash could take back.
//!
//! Money is never decided by these facts alone: the transfers `dep:{provider}:{deposit_id}`
//! and `wd:{provider}:{id}` are the commit points, and the facts record what was decided. See
//! `webhooks/mod.rs` for the order of writes and how a crash between them converges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use actors::{LedgerError, LedgerHandle};

/// `kind` of a deposit's fact; key `{provider}:{deposit_id}`.
pub const DEPOSIT_KIND: &str = "webhooks.deposit";
/// `kind` of a withdrawal's fact; key: the withdrawal id.
pub const WITHDRAWAL_KIND: &str = "webhooks.withdrawal";
/// `kind` of a deposit order's fact; key: the order id.
pub const DEPOSIT_ORDER_KIND: &str = "webhooks.deposit_order";

/// Version of the JSON payloads written here.
const FACT_FORMAT_VERSION: u32 = 1;

/// Where a deposit is. Only forward: `Processing` → one of the others, which are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepositStatus {
    /// Seen, not settled yet (CCPayment `Processing`).
    Processing,
    /// Credited: the transfer `dep:{provider}:{deposit_id}` exists.
    Credited,
    /// The provider says it failed; nothing was credited.
    Failed,
    /// The provider's record is `Success` but flagged as risky: recorded, not credited.
    Risky,
}

impl DepositStatus {
    pub fn is_final(self) -> bool {
        self != DepositStatus::Processing
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DepositStatus::Processing => "processing",
            DepositStatus::Credited => "credited",
            DepositStatus::Failed => "failed",
            DepositStatus::Risky => "risky",
        }
    }
}

/// What the ledger knows of one deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositFact {
    pub version: u32,
    pub provider: String,
    pub deposit_id: String,
    pub status: DepositStatus,
    /// The provider's own status word of the last delivery acted on.
    pub provider_status: String,
    /// The account credited (or that would be), when known.
    pub account: Option<String>,
    /// The amount, as the currency prints it, when known.
    pub amount: Option<String>,
    pub currency: Option<String>,
    /// The deposit order it belongs to (CCPayment `ApiDeposit`).
    pub order_id: Option<String>,
    /// The transfer that credited it.
    pub transfer_id: Option<String>,
    pub updated_at_ms: i64,
}

/// Where a withdrawal is, as the provider reported it. The money's state is the hold's
/// (`wd:{provider}:{id}`): pending, posted (completed) or voided (failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStatus {
    /// Held; the provider has said nothing yet.
    Pending,
    /// The provider waits for an approval (CCPayment `WaitingApproval`).
    WaitingApproval,
    /// The provider is sending it (CCPayment `Processing`).
    Processing,
    /// Sent: the hold is posted.
    Completed,
    /// Failed or rejected: the hold is voided.
    Failed,
}

impl WithdrawalStatus {
    pub fn is_final(self) -> bool {
        matches!(self, WithdrawalStatus::Completed | WithdrawalStatus::Failed)
    }
}

/// What the ledger knows of one withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalFact {
    pub version: u32,
    pub id: String,
    pub provider: String,
    pub account: String,
    /// As the currency prints it.
    pub amount: String,
    pub currency: String,
    pub transfer_id: String,
    pub status: WithdrawalStatus,
    /// The provider's own status word of the last delivery acted on.
    pub provider_status: Option<String>,
    /// The provider's record id, once a delivery named one.
    pub record_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// An expected deposit, registered with `POST /v1/deposits` (CCPayment `ApiDeposit` credits
/// its account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositOrderFact {
    pub version: u32,
    pub id: String,
    pub account: String,
    pub provider: String,
    pub currency: String,
    pub created_at_ms: i64,
}

impl DepositFact {
    pub fn new(provider: &str, deposit_id: &str, status: DepositStatus, provider_status: &str, now_ms: i64) -> Self {
        DepositFact {
            version: FACT_FORMAT_VERSION,
            provider: provider.to_owned(),
            deposit_id: deposit_id.to_owned(),
            status,
            provider_status: provider_status.to_owned(),
            account: None,
            amount: None,
            currency: None,
            order_id: None,
            transfer_id: None,
            updated_at_ms: now_ms,
        }
    }

    /// The key of this fact.
    pub fn key(&self) -> String {
        deposit_key(&self.provider, &self.deposit_id)
    }
}

impl WithdrawalFact {
    pub fn format_version() -> u32 {
        FACT_FORMAT_VERSION
    }
}

impl DepositOrderFact {
    pub fn format_version() -> u32 {
        FACT_FORMAT_VERSION
    }
}

/// The key of a deposit's fact.
pub fn deposit_key(provider: &str, deposit_id: &str) -> String {
    format!("{provider}:{deposit_id}")
}

/// A fact to write.
#[derive(Debug, Clone)]
pub enum Fact {
    Deposit(DepositFact),
    Withdrawal(WithdrawalFact),
    DepositOrder(DepositOrderFact),
}

impl Fact {
    fn kind_and_key(&self) -> (&'static str, String) {
        match self {
            Fact::Deposit(fact) => (DEPOSIT_KIND, fact.key()),
            Fact::Withdrawal(fact) => (WITHDRAWAL_KIND, fact.id.clone()),
            Fact::DepositOrder(fact) => (DEPOSIT_ORDER_KIND, fact.id.clone()),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let encoded = match self {
            Fact::Deposit(fact) => serde_json::to_vec(fact),
            Fact::Withdrawal(fact) => serde_json::to_vec(fact),
            Fact::DepositOrder(fact) => serde_json::to_vec(fact),
        };
        // Plain structs of strings and numbers always encode.
        encoded.expect("a webhook fact encodes as JSON")
    }
}

/// A recovered record that does not decode: a corrupt or foreign log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook record ({kind}, {key}) does not decode: {reason}")]
pub struct FactDecodeError {
    pub kind: String,
    pub key: String,
    pub reason: String,
}

#[derive(Default)]
struct View {
    deposits: HashMap<String, DepositFact>,
    withdrawals: HashMap<String, WithdrawalFact>,
    orders: HashMap<String, DepositOrderFact>,
    /// Order id → keys of the deposits that belong to it.
    order_deposits: HashMap<String, BTreeSet<String>>,
}

impl View {
    fn insert(&mut self, fact: Fact) {
        match fact {
            Fact::Deposit(fact) => {
                if let Some(order) = &fact.order_id {
                    self.order_deposits.entry(order.clone()).or_default().insert(fact.key());
                }
                self.deposits.insert(fact.key(), fact);
            }
            Fact::Withdrawal(fact) => {
                self.withdrawals.insert(fact.id.clone(), fact);
            }
            Fact::DepositOrder(fact) => {
                self.orders.insert(fact.id.clone(), fact);
            }
        }
    }
}

/// The webhook facts: the latest of each, as of the durable log.
pub struct Store {
    view: Mutex<View>,
}

impl Store {
    /// The view of the recovered External records (`engine::Ledger.external`). Kinds other
    /// than this module's are left alone.
    pub fn load(external: &BTreeMap<(String, String), Vec<u8>>) -> Result<Store, FactDecodeError> {
        let mut view = View::default();
        for ((kind, key), payload) in external {
            let failed = |reason: String| FactDecodeError { kind: kind.clone(), key: key.clone(), reason };
            let fact = match kind.as_str() {
                DEPOSIT_KIND => Fact::Deposit(serde_json::from_slice(payload).map_err(|e| failed(e.to_string()))?),
                WITHDRAWAL_KIND => {
                    Fact::Withdrawal(serde_json::from_slice(payload).map_err(|e| failed(e.to_string()))?)
                }
                DEPOSIT_ORDER_KIND => {
                    Fact::DepositOrder(serde_json::from_slice(payload).map_err(|e| failed(e.to_string()))?)
                }
                _ => continue,
            };
            let (_, fact_key) = fact.kind_and_key();
            if fact_key != *key {
                return Err(failed(format!("its payload names the key {fact_key}")));
            }
            view.insert(fact);
        }
        Ok(Store { view: Mutex::new(view) })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // A panic while holding this lock leaves plain maps behind; keep serving them.
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `fact` to the log and, once it is durable, to the view. Call it holding the
    /// fact's key lock.
    pub async fn save(&self, ledger: &LedgerHandle, fact: Fact) -> Result<(), LedgerError> {
        let (kind, key) = fact.kind_and_key();
        ledger.append_external(kind.to_owned(), key, fact.encode()).await?;
        self.view().insert(fact);
        Ok(())
    }

    /// Every fact as the `External` records that replay to it, keyed like
    /// `engine::Ledger.external` (for a snapshot taken from live state).
    pub fn external(&self) -> BTreeMap<(String, String), Vec<u8>> {
        let view = self.view();
        let deposits = view.deposits.values().cloned().map(Fact::Deposit);
        let withdrawals = view.withdrawals.values().cloned().map(Fact::Withdrawal);
        let orders = view.orders.values().cloned().map(Fact::DepositOrder);
        deposits
            .chain(withdrawals)
            .chain(orders)
            .map(|fact| {
                let (kind, key) = fact.kind_and_key();
                ((kind.to_owned(), key), fact.encode())
            })
            .collect()
    }

    pub fn deposit(&self, provider: &str, deposit_id: &str) -> Option<DepositFact> {
        self.view().deposits.get(&deposit_key(provider, deposit_id)).cloned()
    }

    pub fn withdrawal(&self, id: &str) -> Option<WithdrawalFact> {
        self.view().withdrawals.get(id).cloned()
    }

    pub fn order(&self, id: &str) -> Option<DepositOrderFact> {
        self.view().orders.get(id).cloned()
    }

    /// The deposits of an order (at most `limit`, by key order).
    pub fn order_deposits(&self, order_id: &str, limit: usize) -> Vec<DepositFact> {
        let view = self.view();
        let Some(keys) = view.order_deposits.get(order_id) else {
            return Vec::new();
        };
        keys.iter().filter_map(|key| view.deposits.get(key).cloned()).take(limit).collect()
    }
}

/// Bounded per-key async locks: one holder per key at a time, at most `keys_max` keys held or
/// awaited at once (beyond: refused, so that a flood cannot grow memory without bound).
/// Entries are dropped when their last user (holder or waiter) is gone.
pub struct KeyLocks {
    map: Arc<Mutex<LockMap>>,
    keys_max: usize,
}

/// Key → its mutex and how many holders and waiters use it.
type LockMap = HashMap<String, (Arc<tokio::sync::Mutex<()>>, usize)>;

/// One holder or waiter of a key; forgets the key when it is the last.
struct KeyUse {
    key: String,
    map: Arc<Mutex<LockMap>>,
}

impl Drop for KeyUse {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, users)) = map.get_mut(&self.key) {
            *users -= 1;
            if *users == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Held while one key's work runs; releases (and forgets an idle key) on drop.
pub struct KeyGuard {
    // Fields drop in order: the lock is released before the use is counted out.
    _guard: OwnedMutexGuard<()>,
    _use: KeyUse,
}

/// Too many keys are locked at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many deliveries in progress")]
pub struct KeyLocksFull;

impl KeyLocks {
    pub fn new(keys_max: usize) -> KeyLocks {
        KeyLocks { map: Arc::new(Mutex::new(HashMap::new())), keys_max: keys_max.max(1) }
    }

    /// Waits for the lock of `key`. Dropping the future while it waits counts the waiter out.
    pub async fn lock(&self, key: String) -> Result<KeyGuard, KeyLocksFull> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !map.contains_key(&key) && map.len() >= self.keys_max {
                return Err(KeyLocksFull);
            }
            let (mutex, users) = map.entry(key.clone()).or_insert_with(|| (Arc::new(tokio::sync::Mutex::new(())), 0));
            *users += 1;
            mutex.clone()
        };
        let key_use = KeyUse { key, map: self.map.clone() };
        let guard = mutex.lock_owned().await;
        Ok(KeyGuard { _guard: guard, _use: key_use })
    }

    /// Keys currently held or awaited.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_idle_keys_are_forgotten() {
        let locks = Arc::new(KeyLocks::new(2));
        let first = locks.lock("a".to_owned()).await.unwrap();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("a".to_owned()).await.map(|_| ()) })
        };
        let other = locks.lock("b".to_owned()).await.unwrap();
        assert_eq!(locks.lock("c".to_owned()).await.err(), Some(KeyLocksFull));
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
        drop(other);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_wait_forgets_its_key() {
        let locks = Arc::new(KeyLocks::new(4));
        let held = locks.lock("a".to_owned()).await.unwrap();
        let abandoned = tokio::time::timeout(Duration::from_millis(10), locks.lock("a".to_owned())).await;
        assert!(abandoned.is_err());
        drop(held);
        assert!(locks.is_empty());
    }

    #[test]
    fn facts_round_trip_through_the_log_view() {
        let mut deposit = DepositFact::new("processor", "d-1", DepositStatus::Credited, "completed", 7);
        deposit.order_id = Some("o-1".to_owned());
        let mut external = BTreeMap::new();
        let fact = Fact::Deposit(deposit.clone());
        let (kind, key) = fact.kind_and_key();
        external.insert((kind.to_owned(), key), fact.encode());
        external.insert(("another.kind".to_owned(), "x".to_owned()), b"not json".to_vec());
        let store = Store::load(&external).unwrap();
        assert_eq!(store.deposit("processor", "d-1"), Some(deposit));
        let exported = store.external();
        assert_eq!(exported.len(), 1);
        assert_eq!(Store::load(&exported).unwrap().deposit("processor", "d-1"), store.deposit("processor", "d-1"));
        assert_eq!(store.order_deposits("o-1", 10).len(), 1);
        external.insert((DEPOSIT_KIND.to_owned(), "processor:d-2".to_owned()), b"{".to_vec());
        let error = Store::load(&external).err().unwrap();
        assert_eq!(error.key, "processor:d-2");
    }
}
