//! The page cache of one replica, shared by every connection that reads it: LRU, bounded by
//! bytes.
//!
//! Pages are keyed by where they were read from (file, page number). LTX files are
//! immutable, so an entry can never be stale: a new TXID moves a page to a new key. The
//! replica removes the superseded key when it publishes a TXID (precise invalidation), and
//! re-keys an entry when compaction moves an unchanged page to another file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::index::FileId;

pub type PageKey = (FileId, u32);

pub struct PageCache {
    inner: Mutex<Inner>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

struct Inner {
    lru: LruCache<PageKey, Arc<[u8]>>,
    bytes: u64,
    capacity: u64,
}

impl PageCache {
    pub fn new(capacity_bytes: u64) -> Self {
        PageCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                capacity: capacity_bytes,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: PageKey) -> Option<Arc<[u8]>> {
        let hit = self.inner.lock().lru.get(&key).cloned();
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Whether `key` is cached, without counting a hit or refreshing its recency.
    pub fn contains(&self, key: PageKey) -> bool {
        self.inner.lock().lru.contains(&key)
    }

    pub fn insert(&self, key: PageKey, page: Arc<[u8]>) {
        let mut inner = self.inner.lock();
        if page.len() as u64 > inner.capacity {
            return;
        }
        inner.bytes += page.len() as u64;
        if let Some(old) = inner.lru.put(key, page) {
            inner.bytes -= old.len() as u64;
        }
        inner.evict();
    }

    /// Removes and returns an entry, without counting a hit.
    pub fn take(&self, key: PageKey) -> Option<Arc<[u8]>> {
        let mut inner = self.inner.lock();
        let page = inner.lru.pop(&key)?;
        inner.bytes -= page.len() as u64;
        Some(page)
    }

    pub fn remove(&self, key: PageKey) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.pop(&key) {
            inner.bytes -= old.len() as u64;
        }
    }

    /// Moves an entry to a new key (the same page content now lives in another file).
    pub fn rekey(&self, from: PageKey, to: PageKey) {
        let mut inner = self.inner.lock();
        if let Some(page) = inner.lru.pop(&from) {
            if let Some(old) = inner.lru.put(to, page) {
                inner.bytes -= old.len() as u64;
            }
        }
    }

    pub fn set_capacity(&self, capacity_bytes: u64) {
        let mut inner = self.inner.lock();
        inner.capacity = capacity_bytes;
        inner.evict();
    }

    pub fn capacity(&self) -> u64 {
        self.inner.lock().capacity
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.inner.lock();
        (inner.lru.len(), inner.bytes)
    }
}

impl Inner {
    fn evict(&mut self) {
        while self.bytes > self.capacity {
            match self.lru.pop_lru() {
                Some((_, page)) => self.bytes -= page.len() as u64,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: usize) -> Arc<[u8]> {
        vec![0u8; n].into()
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let c = PageCache::new(3000);
        c.insert((1, 1), page(1024));
        c.insert((1, 2), page(1024));
        assert!(c.get((1, 1)).is_some());
        c.insert((1, 3), page(1024));
        assert_eq!(c.usage(), (2, 2048));
        assert!(c.get((1, 2)).is_none(), "page 2 was least recently used");
        assert!(c.get((1, 1)).is_some());
        assert_eq!(c.hits.load(Ordering::Relaxed), 2);
        assert_eq!(c.misses.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn rekey_and_remove() {
        let c = PageCache::new(1 << 20);
        c.insert((1, 7), page(512));
        c.rekey((1, 7), (2, 7));
        assert!(c.get((1, 7)).is_none());
        assert!(c.get((2, 7)).is_some());
        c.remove((2, 7));
        assert_eq!(c.usage(), (0, 0));
        c.insert((3, 1), page(512));
        c.set_capacity(100);
        assert_eq!(c.usage(), (0, 0));
    }
}
