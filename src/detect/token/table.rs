//! `Table`: one bounded map of detector state. It holds at most `cap`
//! entries; inserting into a full table evicts the least recently used one
//! and counts the eviction, so that memory stays flat however long the
//! stream and however many identities an attacker invents. A snapshot lists
//! the entries oldest first, so a restore rebuilds the same order.

use std::borrow::Borrow;
use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;

pub struct Table<K: Hash + Eq, V> {
    map: LruCache<K, V, ahash::RandomState>,
    evictions: u64,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    pub fn new(cap: usize) -> Self {
        Table {
            map: LruCache::with_hasher(
                NonZeroUsize::new(cap.max(1)).unwrap_or(NonZeroUsize::MIN),
                ahash::RandomState::new(),
            ),
            evictions: 0,
        }
    }

    /// The entry for `k`, marked as recently used.
    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.map.get_mut(k)
    }

    /// The entry for `k` without touching its age.
    pub fn peek<Q: Hash + Eq + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.peek(k)
    }

    /// The entry for `k`, created with `make` if missing (evicting the
    /// least recently used entry when full). The key is copied only when
    /// the entry is new. Always `Some`; an `Option` so that callers need no
    /// panic path.
    pub fn entry<Q>(&mut self, k: &Q, make: impl FnOnce() -> V) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.map.contains(k) {
            self.insert(k.to_owned(), make());
        }
        self.map.get_mut(k)
    }

    pub fn insert(&mut self, k: K, v: V) {
        if let Some((old, _)) = self.map.push(k.clone(), v)
            && old != k
        {
            self.evictions += 1;
        }
    }

    /// Evicts the least recently used entry when `k` is missing and the
    /// table is full, and returns it (so the caller can account for it).
    pub fn make_room_for<Q: Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
    {
        if self.map.contains(k) || self.map.len() < self.map.cap().get() {
            return None;
        }
        self.evictions += 1;
        self.map.pop_lru()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Entries oldest first.
    pub fn iter_oldest_first(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_counts() {
        let mut t = Table::new(2);
        t.insert("a", 1);
        t.insert("b", 2);
        t.get_mut(&"a");
        t.insert("c", 3);
        assert!(t.peek(&"b").is_none());
        assert_eq!(t.peek(&"a"), Some(&1));
        assert_eq!(t.evictions(), 1);
        t.insert("a", 9); // replacing is not an eviction
        assert_eq!(t.evictions(), 1);
        if let Some(d) = t.entry(&"d", || 4) {
            *d += 1;
        }
        assert_eq!(t.peek(&"d"), Some(&5));
        assert_eq!(t.evictions(), 2);
        let order: Vec<_> = t.iter_oldest_first().map(|(k, _)| *k).collect();
        assert_eq!(order, ["a", "d"]);
    }
}
