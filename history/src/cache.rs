//! The bounded page cache through which the history reads its files.
//!
//! Pages of [`PAGE_BYTES`] are kept by (file, page number) in shards, each a map plus a CLOCK
//! ring: a hit marks the page, and eviction sweeps the ring, sparing marked pages once. The
//! capacity (`storage.history_cache_bytes`) bounds the memory; a page is shared (`Arc`) with the
//! readers that hold it, so an evicted page lives until its last reader drops it.
//! A page that changes on disk (a hold's status written in place) is dropped from the cache
//! by the writer with [`PageCache::invalidate`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::format::PAGE_BYTES;

/// Which page of which file.
pub type PageKey = (u64, u64);

const SHARDS: usize = 16;

struct Shard {
    pages: HashMap<PageKey, (Arc<[u8]>, bool), ahash::RandomState>,
    ring: Vec<PageKey>,
    hand: usize,
    capacity_pages: usize,
}

impl Shard {
    fn insert(&mut self, key: PageKey, page: Arc<[u8]>) {
        if self.capacity_pages == 0 {
            return;
        }
        if let Some(entry) = self.pages.get_mut(&key) {
            *entry = (page, true);
            return;
        }
        if self.ring.len() < self.capacity_pages {
            self.ring.push(key);
        } else {
            // CLOCK: spare each marked page once, replace the first unmarked one.
            loop {
                let candidate = self.ring[self.hand];
                match self.pages.get_mut(&candidate) {
                    Some((_, marked)) if *marked => *marked = false,
                    _ => {
                        self.pages.remove(&candidate);
                        self.ring[self.hand] = key;
                        self.hand = (self.hand + 1) % self.ring.len();
                        break;
                    }
                }
                self.hand = (self.hand + 1) % self.ring.len();
            }
        }
        self.pages.insert(key, (page, false));
    }
}

/// A bounded cache of file pages, shared by every reader of one history.
pub struct PageCache {
    shards: Vec<Mutex<Shard>>,
}

impl PageCache {
    /// A cache of at most `capacity_bytes` of pages (0: no caching).
    pub fn new(capacity_bytes: u64) -> PageCache {
        let pages = usize::try_from(capacity_bytes / u64::try_from(PAGE_BYTES).expect("fits")).unwrap_or(usize::MAX);
        let per_shard = pages.div_ceil(SHARDS);
        PageCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        pages: HashMap::default(),
                        ring: Vec::new(),
                        hand: 0,
                        capacity_pages: per_shard,
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, key: PageKey) -> MutexGuard<'_, Shard> {
        let index = usize::try_from((key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.1) % SHARDS as u64)
            .expect("a shard index fits usize");
        self.shards[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached page, if it is cached.
    pub fn get(&self, key: PageKey) -> Option<Arc<[u8]>> {
        let mut shard = self.shard(key);
        let (page, marked) = shard.pages.get_mut(&key)?;
        *marked = true;
        Some(page.clone())
    }

    pub fn insert(&self, key: PageKey, page: Arc<[u8]>) {
        self.shard(key).insert(key, page);
    }

    /// Forgets a page whose bytes on disk changed.
    pub fn invalidate(&self, key: PageKey) {
        let mut shard = self.shard(key);
        if shard.pages.remove(&key).is_some() {
            // Its ring slot is reused by the next insert (an unmarked, missing key).
        }
    }

    /// Pages cached now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pages.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(byte: u8) -> Arc<[u8]> {
        Arc::from(vec![byte; PAGE_BYTES])
    }

    #[test]
    fn the_cache_stays_within_its_capacity_and_keeps_what_is_used() {
        let cache = PageCache::new(u64::try_from(PAGE_BYTES * SHARDS * 4).unwrap());
        for number in 0..10_000_u64 {
            cache.insert((1, number), page(1));
            // Page (1, 0) is read again and again: CLOCK keeps it.
            assert!(cache.get((1, 0)).is_some(), "after {number}");
        }
        assert!(cache.len() <= SHARDS * 4, "{} pages cached", cache.len());
        cache.invalidate((1, 0));
        assert!(cache.get((1, 0)).is_none());
        let none = PageCache::new(0);
        none.insert((1, 1), page(2));
        assert!(none.is_empty());
    }
}
