//! The payment facts as of the durable log, and the per-key locks of the webhook service.
//!
//! This module owns [`Store`], the reads and writes of the latest `payments::Fact` of every
//! deposit, withdrawal and deposit order (each one `engine::Record::External` record, encoded
//! by the `payments` crate), and [`KeyLocks`], the bounded per-key locks that serialize
//! everything done for one deposit, withdrawal or order. The facts live in the history on disk
//! (`History::fact`); the store keeps in memory only the facts written since the history last
//! ingested, and forgets each once the history has it. A fact is readable only once its record
//! is durable ([`Store::save`]), always under its key's lock, so a reader never sees a state
//! that a crash could take back.
//!
//! Money is never decided by these facts alone: the transfers `dep:{provider}:{deposit_id}`
//! and `wd:{provider}:{id}` are the commit points, and the facts record what was decided (see
//! the `payments` crate for the order of writes and how a crash between them converges).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use actors::{LedgerError, LedgerHandle};
use history::History;
use payments::{DepositFact, DepositOrderFact, Fact, FactDecodeError, FactKind, WithdrawalFact};
use tokio::sync::OwnedMutexGuard;

/// Why a fact could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the history cannot be read: {0}")]
    History(String),
    #[error(transparent)]
    Decode(#[from] FactDecodeError),
}

/// Facts written and not yet in the history.
#[derive(Default)]
struct Recent {
    facts: HashMap<(FactKind, String), (u64, Fact)>,
    /// `(seq, kind, key)` in the order written.
    order: VecDeque<(u64, FactKind, String)>,
}

/// The payment facts: the latest of each, as of the durable log.
pub struct Store {
    history: History,
    recent: Mutex<Recent>,
}

impl Store {
    pub fn new(history: History) -> Store {
        Store { history, recent: Mutex::new(Recent::default()) }
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // A panic while holding this lock leaves plain maps behind; keep serving them.
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ingested = self.history.ingested_seq();
        while let Some((seq, _, _)) = recent.order.front()
            && *seq <= ingested
        {
            let (seq, kind, key) = recent.order.pop_front().expect("the front exists");
            if recent.facts.get(&(kind, key.clone())).is_some_and(|(written, _)| *written == seq) {
                recent.facts.remove(&(kind, key));
            }
        }
        recent
    }

    /// Writes `facts` to the log as one submission (all or none) and, once durable, makes
    /// them readable. Call it holding the facts' key locks.
    pub async fn save(&self, ledger: &LedgerHandle, facts: Vec<Fact>) -> Result<(), StoreError> {
        if facts.is_empty() {
            return Ok(());
        }
        let records =
            facts.iter().map(|fact| (fact.kind().name().to_owned(), fact.key(), fact.encode())).collect::<Vec<_>>();
        let count = u64::try_from(records.len()).expect("fits");
        let last_seq = ledger.append_externals(records).await?;
        let mut recent = self.recent();
        for (offset, fact) in (0..count).rev().zip(facts) {
            let seq = last_seq - offset;
            let (kind, key) = (fact.kind(), fact.key());
            recent.order.push_back((seq, kind, key.clone()));
            recent.facts.insert((kind, key), (seq, fact));
        }
        Ok(())
    }

    async fn fact(&self, kind: FactKind, key: String) -> Result<Option<Fact>, StoreError> {
        if let Some((_, fact)) = self.recent().facts.get(&(kind, key.clone())) {
            return Ok(Some(fact.clone()));
        }
        let history = self.history.clone();
        let name = kind.name();
        let read = tokio::task::spawn_blocking(move || history.fact(name, &key).map(|payload| (payload, key)))
            .await
            .map_err(|error| StoreError::History(error.to_string()))?
            .map_err(|error| StoreError::History(error.to_string()))?;
        match read {
            (Some(payload), key) => Ok(Some(Fact::decode(name, &key, &payload)?)),
            (None, _) => Ok(None),
        }
    }

    pub async fn deposit(&self, provider: &str, deposit_id: &str) -> Result<Option<DepositFact>, StoreError> {
        match self.fact(FactKind::Deposit, DepositFact::key_of(provider, deposit_id)).await? {
            Some(Fact::Deposit(fact)) => Ok(Some(fact)),
            _ => Ok(None),
        }
    }

    pub async fn withdrawal(&self, id: &str) -> Result<Option<WithdrawalFact>, StoreError> {
        match self.fact(FactKind::Withdrawal, id.to_owned()).await? {
            Some(Fact::Withdrawal(fact)) => Ok(Some(fact)),
            _ => Ok(None),
        }
    }

    pub async fn order(&self, id: &str) -> Result<Option<DepositOrderFact>, StoreError> {
        match self.fact(FactKind::DepositOrder, id.to_owned()).await? {
            Some(Fact::DepositOrder(fact)) => Ok(Some(fact)),
            _ => Ok(None),
        }
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
}
