//! The payment facts as of the durable log, and the per-key locks of the webhook service.
//!
//! This module owns [`Store`], the in-memory view of the latest `payments::Fact` of every
//! deposit, withdrawal and deposit order (each one `engine::Record::External` record, encoded
//! by the `payments` crate), and [`KeyLocks`], the bounded per-key locks that serialize
//! everything done for one deposit, withdrawal or order. A fact is put in the view only once
//! its record is durable ([`Store::save`]), always under its key's lock, so a reader never sees
//! a state that a crash could take back.
//!
//! Money is never decided by these facts alone: the transfers `dep:{provider}:{deposit_id}`
//! and `wd:{provider}:{id}` are the commit points, and the facts record what was decided (see
//! the `payments` crate for the order of writes and how a crash between them converges).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use actors::{LedgerError, LedgerHandle};
use payments::{DepositFact, DepositOrderFact, Fact, FactDecodeError, FactKind, WithdrawalFact};
use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
struct View {
    deposits: HashMap<String, DepositFact>,
    withdrawals: HashMap<String, WithdrawalFact>,
    orders: HashMap<String, DepositOrderFact>,
}

impl View {
    fn insert(&mut self, fact: Fact) {
        let key = fact.key();
        match fact {
            Fact::Deposit(fact) => {
                self.deposits.insert(key, fact);
            }
            Fact::Withdrawal(fact) => {
                self.withdrawals.insert(key, fact);
            }
            Fact::DepositOrder(fact) => {
                self.orders.insert(key, fact);
            }
        }
    }
}

/// The payment facts: the latest of each, as of the durable log.
pub struct Store {
    view: Mutex<View>,
}

impl Store {
    /// The view of the recovered `External` records (`engine::Ledger.external`). Kinds other
    /// than the `payments` crate's are left alone.
    pub fn load(external: &BTreeMap<(String, String), Vec<u8>>) -> Result<Store, FactDecodeError> {
        let mut view = View::default();
        for ((kind, key), payload) in external {
            if FactKind::of_name(kind).is_none() {
                continue;
            }
            view.insert(Fact::decode(kind, key, payload)?);
        }
        Ok(Store { view: Mutex::new(view) })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // A panic while holding this lock leaves plain maps behind; keep serving them.
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `facts` to the log as one submission (all or none) and, once durable, to the
    /// view. Call it holding the facts' key locks.
    pub async fn save(&self, ledger: &LedgerHandle, facts: Vec<Fact>) -> Result<(), LedgerError> {
        if facts.is_empty() {
            return Ok(());
        }
        let records =
            facts.iter().map(|fact| (fact.kind().name().to_owned(), fact.key(), fact.encode())).collect::<Vec<_>>();
        ledger.append_externals(records).await?;
        let mut view = self.view();
        for fact in facts {
            view.insert(fact);
        }
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
            .map(|fact| ((fact.kind().name().to_owned(), fact.key()), fact.encode()))
            .collect()
    }

    pub fn deposit(&self, provider: &str, deposit_id: &str) -> Option<DepositFact> {
        self.view().deposits.get(&DepositFact::key_of(provider, deposit_id)).cloned()
    }

    pub fn withdrawal(&self, id: &str) -> Option<WithdrawalFact> {
        self.view().withdrawals.get(id).cloned()
    }

    pub fn order(&self, id: &str) -> Option<DepositOrderFact> {
        self.view().orders.get(id).cloned()
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
        let deposit = DepositFact {
            provider: "processor".to_owned(),
            deposit_id: "d-1".to_owned(),
            status: payments::DepositStatus::Failed,
            provider_status: "failed".to_owned(),
            credit: None,
            reported: payments::ReportedDetails::default(),
            order_id: Some("o-1".to_owned()),
            updated_at_ms: 7,
        };
        let mut external = BTreeMap::new();
        let fact = Fact::Deposit(deposit.clone());
        external.insert((fact.kind().name().to_owned(), fact.key()), fact.encode());
        external.insert(("another.kind".to_owned(), "x".to_owned()), b"not a fact".to_vec());
        let store = Store::load(&external).unwrap();
        assert_eq!(store.deposit("processor", "d-1"), Some(deposit));
        let exported = store.external();
        assert_eq!(exported.len(), 1);
        assert_eq!(Store::load(&exported).unwrap().deposit("processor", "d-1"), store.deposit("processor", "d-1"));
        external.insert((FactKind::Deposit.name().to_owned(), "processor:d-2".to_owned()), b"{".to_vec());
        let error = Store::load(&external).err().unwrap();
        assert_eq!(error.key, "processor:d-2");
    }
}
