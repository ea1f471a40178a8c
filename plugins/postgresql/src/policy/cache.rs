//! Verdicts by SQL text, bounded in bytes: parsing and walking the tree is
//! the policy's cost, and the answer depends on the text (and the module's
//! config) alone.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::{analyze, AllowedFunctions, Refusal, Snapshot, Verdict};

/// Texts longer than this are analysed every time, never cached: a cache
/// of huge texts would be memory on demand for any caller.
const MAX_CACHED_SQL_BYTES: usize = 16 * 1024;
/// Bytes of cached verdicts (their own heap bytes plus a fixed cost per
/// entry); the cache starts over when full (agents repeat a small set of
/// statements).
const CACHE_BUDGET_BYTES: usize = 1024 * 1024;
/// What one entry costs besides its strings: the key, the map slot, the
/// result.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// Keyed by the SHA-256 of the text: the texts themselves are not kept,
/// and a collision would need a broken hash.
#[derive(Default)]
pub struct VerdictCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<[u8; 32], Result<Verdict, Refusal>>,
    bytes: usize,
}

fn entry_bytes(result: &Result<Verdict, Refusal>) -> usize {
    ENTRY_OVERHEAD_BYTES
        + match result {
            Ok(verdict) => verdict.kind.len(),
            Err(refusal) => refusal.heap_bytes(),
        }
}

impl VerdictCache {
    /// [`analyze`], remembered by the text and the function names'
    /// generation (a new load of them can change a verdict).
    pub fn analyze(
        &self,
        sql: &str,
        allowed: &AllowedFunctions,
        user_functions: &Snapshot,
    ) -> Result<Verdict, Refusal> {
        if sql.len() > MAX_CACHED_SQL_BYTES {
            return analyze(sql, allowed, user_functions);
        }
        let key: [u8; 32] = Sha256::new()
            .chain_update(user_functions.generation.to_le_bytes())
            .chain_update(sql.as_bytes())
            .finalize()
            .into();
        if let Ok(state) = self.state.lock() {
            if let Some(known) = state.entries.get(&key) {
                return known.clone();
            }
        }
        let verdict = analyze(sql, allowed, user_functions);
        if let Ok(mut state) = self.state.lock() {
            let cost = entry_bytes(&verdict);
            if state.bytes + cost > CACHE_BUDGET_BYTES {
                state.entries.clear();
                state.bytes = 0;
            }
            if state.entries.insert(key, verdict.clone()).is_none() {
                state.bytes += cost;
            }
        }
        verdict
    }

    /// (entries, bytes) for tests.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|s| (s.entries.len(), s.bytes))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_whatever_the_texts() {
        let cache = VerdictCache::default();
        let none = AllowedFunctions::default();
        let names = Snapshot::default();
        let big_literal = "x".repeat(MAX_CACHED_SQL_BYTES);
        assert!(cache
            .analyze(&format!("SELECT '{big_literal}'"), &none, &names)
            .is_ok());
        assert_eq!(cache.size().0, 0, "a text over the limit is not cached");
        for i in 0..20_000 {
            let sql = format!("SELECT {i} FROM t WHERE a = '{}'", "y".repeat(i % 1000));
            assert!(cache.analyze(&sql, &none, &names).is_ok());
            assert!(cache.size().1 <= CACHE_BUDGET_BYTES);
        }
        let again = cache.analyze("SELECT 1", &none, &names);
        assert_eq!(again, cache.analyze("SELECT 1", &none, &names));
    }
}
