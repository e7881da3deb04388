//! A process-wide map from a key (a replica URL, a database path) to the one live object
//! every connection with that key shares. It holds weak references: the object goes when
//! its last connection does, and a later lookup finds nothing.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

pub struct Registry<K, V> {
    map: Mutex<Option<HashMap<K, Weak<V>>>>,
}

impl<K: Eq + Hash, V> Default for Registry<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash, V> Registry<K, V> {
    pub const fn new() -> Self {
        Registry {
            map: Mutex::new(None),
        }
    }

    /// The live object registered under `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.lock().as_ref()?.get(key).and_then(Weak::upgrade)
    }

    /// Registers `value` under `key` unless a live object is there already; returns the
    /// object that is registered afterwards (the older one when two raced).
    pub fn insert_or_get(&self, key: K, value: &Arc<V>) -> Arc<V> {
        let mut map = self.map.lock();
        let map = map.get_or_insert_with(HashMap::new);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        map.insert(key, Arc::downgrade(value));
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_only_what_is_alive_and_keeps_the_first() {
        let r: Registry<String, u32> = Registry::new();
        assert!(r.get("a").is_none());
        let one = Arc::new(1);
        assert_eq!(*r.insert_or_get("a".into(), &one), 1);
        let two = Arc::new(2);
        assert_eq!(*r.insert_or_get("a".into(), &two), 1, "a live one stays");
        drop(one);
        assert!(r.get("a").is_none(), "gone with its last owner");
        assert_eq!(*r.insert_or_get("a".into(), &two), 2);
    }
}
