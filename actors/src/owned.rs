//! The transfers a shard keeps in memory for the transfer ids it owns, and the reads through
//! to the history for the rest.
//!
//! In memory stay the open holds (pending transfers: a post, void or expiry needs them, and
//! the expiry index points at them) and the *recent* transfers: those whose last change the
//! history has not ingested yet. Once the history's ingested sequence passes a recent
//! transfer's last change, the transfer is dropped from memory ([`OwnedTransfers::evict`]):
//! from then on the history answers for it. A transfer is never missing from both: it leaves
//! memory only after the history holds it.

use std::collections::VecDeque;
use std::sync::Arc;

use engine::ledger::{changed_transfer, transfer_from_record};
use engine::{Id, IdMap, Record, Transfer, TransferStatus};
use history::{History, HistoryError};

/// The transfers of one shard's ids: see the module documentation.
pub(crate) struct OwnedTransfers {
    open_holds: IdMap<Arc<Transfer>>,
    recent: IdMap<Arc<Transfer>>,
    /// `(last_seq, id)` of the recent transfers, in the order they were stored.
    recent_order: VecDeque<(u64, Id)>,
    history: History,
}

impl OwnedTransfers {
    pub(crate) fn new(history: History) -> OwnedTransfers {
        OwnedTransfers {
            open_holds: IdMap::default(),
            recent: IdMap::default(),
            recent_order: VecDeque::new(),
            history,
        }
    }

    /// Loads the recovered open holds (once, before any request).
    pub(crate) fn load(&mut self, open_holds: IdMap<Arc<Transfer>>) {
        assert!(self.open_holds.is_empty() && self.recent.is_empty(), "loaded once, before any request");
        self.open_holds = open_holds;
    }

    pub(crate) fn open_holds(&self) -> impl Iterator<Item = &Arc<Transfer>> {
        self.open_holds.values()
    }

    pub(crate) fn open_hold(&self, id: &Id) -> Option<&Arc<Transfer>> {
        self.open_holds.get(id)
    }

    /// The transfer with this id if memory holds it (an open hold, or not yet in the history).
    pub(crate) fn in_memory(&self, id: &Id) -> Option<&Arc<Transfer>> {
        self.open_holds.get(id).or_else(|| self.recent.get(id))
    }

    /// The transfer with this id: from memory, else from the history (which may read disk).
    pub(crate) fn get(&self, id: &Id) -> Result<Option<Arc<Transfer>>, HistoryError> {
        match self.in_memory(id) {
            Some(transfer) => Ok(Some(transfer.clone())),
            None => self.history.transfer(id),
        }
    }

    /// Applies the part of a decided record that concerns its transfer (created, or a hold
    /// posted, voided or expired) and returns the transfer as it now is. `None` for a record
    /// that concerns no transfer.
    pub(crate) fn apply(&mut self, seq: u64, record: &Record) -> Option<Arc<Transfer>> {
        let transfer = match transfer_from_record(seq, record) {
            Some(created) => {
                assert!(self.in_memory(&created.id).is_none(), "a decided creation names a new id");
                created
            }
            None => {
                let id = record.transfer()?;
                let hold = self.open_holds.remove(id).expect("a decided change names an open hold");
                changed_transfer(&hold, seq, record).expect("a change of a hold")
            }
        };
        let transfer = Arc::new(transfer);
        self.store(transfer.clone());
        Some(transfer)
    }

    /// Keeps a transfer created (or changed) by this shard: an open hold, or a recent one.
    pub(crate) fn store(&mut self, transfer: Arc<Transfer>) {
        if transfer.status == TransferStatus::Pending {
            self.open_holds.insert(transfer.id.clone(), transfer);
        } else {
            self.recent_order.push_back((transfer.last_seq, transfer.id.clone()));
            self.recent.insert(transfer.id.clone(), transfer);
        }
    }

    /// Forgets the recent transfers the history has ingested.
    pub(crate) fn evict(&mut self) {
        let ingested = self.history.ingested_seq();
        while let Some((last_seq, _)) = self.recent_order.front()
            && *last_seq <= ingested
        {
            let (_, id) = self.recent_order.pop_front().expect("the front exists");
            self.recent.remove(&id);
        }
    }

    /// Transfers held in memory: open holds and recent ones.
    pub(crate) fn memory_counts(&self) -> (usize, usize) {
        (self.open_holds.len(), self.recent.len())
    }
}
