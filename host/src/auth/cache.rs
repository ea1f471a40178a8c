//! A small bounded cache whose entries expire. Used for verified tokens and
//! exchanged identities; both are keyed by a hash, never by a raw token.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use crate::metrics::METRICS;

/// No table is sized beyond this up front (a configured bound of
/// millions grows as it fills instead).
const MAX_PRESIZED_ENTRIES: usize = 200_000;

pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    max_entries: usize,
    /// Its `cache` label in the metrics.
    name: &'static str,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(name: &'static str, max_entries: usize) -> Self {
        let max_entries = max_entries.max(1);
        Self {
            // Room for twice the bound from the start. A full cache evicts
            // and inserts forever, and the tombstones that leaves make the
            // table double once, late (measured in the soak: +1.8 MiB
            // after about 40,000 inserts into 10,000 entries); at this size
            // it only ever rehashes in place. The pages are touched as
            // entries arrive, not up front.
            entries: Mutex::new(HashMap::with_capacity(
                max_entries.saturating_mul(2).min(MAX_PRESIZED_ENTRIES),
            )),
            max_entries,
            name,
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let found = match entries.get(key) {
            Some((value, expires)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                METRICS.cache_size(self.name, entries.len());
                None
            }
            None => None,
        };
        METRICS.cache_event(self.name, if found.is_some() { "hit" } else { "miss" });
        found
    }

    pub fn insert(&self, key: K, value: V, expires: Instant) {
        let now = Instant::now();
        if expires <= now {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            entries.retain(|_, (_, expiry)| *expiry > now);
            if entries.len() >= self.max_entries {
                // Still full of live entries: evict the ones closest to
                // expiry (a tenth, so inserts stay amortised O(1)).
                let mut by_expiry: Vec<(K, Instant)> =
                    entries.iter().map(|(k, (_, e))| (k.clone(), *e)).collect();
                by_expiry.sort_by_key(|(_, expiry)| *expiry);
                let evict = (self.max_entries / 10).max(1);
                for (key, _) in by_expiry.into_iter().take(evict) {
                    entries.remove(&key);
                    METRICS.cache_event(self.name, "eviction");
                }
            }
        }
        entries.insert(key, (value, expires));
        METRICS.cache_size(self.name, entries.len());
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|entries| entries.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expires_and_stays_bounded() {
        let cache = TtlCache::new("test", 10);
        let later = Instant::now() + Duration::from_secs(60);
        for key in 0..25 {
            cache.insert(key, key * 2, later + Duration::from_secs(key));
        }
        assert!(cache.len() <= 10);
        assert_eq!(cache.get(&24), Some(48));
        cache.insert(100, 1, Instant::now() + Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get(&100), None);
    }

    /// A full cache under constant churn (new users' tokens) keeps the
    /// table it started with: no late doubling (the soak's RSS step).
    #[test]
    fn a_full_cache_under_churn_keeps_its_table() {
        let cache = TtlCache::new("test", 10_000);
        let later = Instant::now() + Duration::from_secs(3600);
        let table = |cache: &TtlCache<u64, u64>| {
            cache
                .entries
                .lock()
                .map(|entries| entries.capacity())
                .unwrap_or(0)
        };
        let start = table(&cache);
        let mut most = start;
        for key in 0..100_000u64 {
            cache.insert(key, key, later + Duration::from_millis(key));
            most = most.max(table(&cache));
        }
        assert!(cache.len() <= 10_000);
        assert!(
            most <= start + start / 8,
            "the table grew from {start} to {most} entries"
        );
    }
}
