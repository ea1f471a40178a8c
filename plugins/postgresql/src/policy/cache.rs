//! Verdicts by SQL text, bounded in bytes: parsing and walking the tree is
//! the policy's cost, and the answer depends on the text (and the module's
//! config) alone.
//!
//! Parsing is also the policy's memory: PostgreSQL's parse tree and its
//! walk take about 2 KiB per token (`SELECT 1,1,1,…` of half a megabyte
//! took a gigabyte). So a statement of more than `maxSqlTokens` tokens
//! (counted by [`super::size::token_count`], without parsing) is refused
//! before parsing, and at most [`MAX_CONCURRENT_PARSES`] statements are
//! parsed at once in the process, whatever the number of callers.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

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

/// Statements parsed at once in the process (parsing is CPU-bound: more
/// would not be faster, only larger).
pub const MAX_CONCURRENT_PARSES: usize = 2;

/// A counting semaphore for parses, shared by every instance.
struct ParsePermits {
    in_use: Mutex<usize>,
    freed: Condvar,
}

static PERMITS: ParsePermits = ParsePermits {
    in_use: Mutex::new(0),
    freed: Condvar::new(),
};

/// Holds one of the [`MAX_CONCURRENT_PARSES`] permits until dropped.
struct Permit;

impl Permit {
    fn acquire() -> Permit {
        let mut in_use = PERMITS.in_use.lock().unwrap_or_else(|p| p.into_inner());
        while *in_use >= MAX_CONCURRENT_PARSES {
            in_use = PERMITS
                .freed
                .wait(in_use)
                .unwrap_or_else(|p| p.into_inner());
        }
        *in_use += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_use = PERMITS.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *in_use = in_use.saturating_sub(1);
        PERMITS.freed.notify_one();
    }
}

/// Keyed by the SHA-256 of the text: the texts themselves are not kept,
/// and a collision would need a broken hash.
pub struct VerdictCache {
    state: Mutex<CacheState>,
    /// `maxSqlTokens`.
    max_tokens: usize,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<[u8; 32], Result<Verdict, Refusal>>,
    bytes: usize,
}

fn entry_bytes(result: &Result<Verdict, Refusal>) -> usize {
    ENTRY_OVERHEAD_BYTES
        + match result {
            Ok(verdict) => verdict.kind.len() + verdict.audit_text.heap_bytes(),
            Err(refusal) => refusal.heap_bytes(),
        }
}

impl VerdictCache {
    pub fn new(max_tokens: usize) -> Self {
        Self {
            state: Mutex::new(CacheState::default()),
            max_tokens,
        }
    }

    /// [`analyze`] under the size bound and the parse permits.
    fn bounded_analyze(
        &self,
        sql: &str,
        allowed: &AllowedFunctions,
        user_functions: &Snapshot,
    ) -> Result<Verdict, Refusal> {
        let tokens = super::size::token_count(sql, self.max_tokens);
        if tokens > self.max_tokens {
            return Err(Refusal::new(
                mcp_delegate_plugin_api::codes::SQL_TOO_LARGE,
                "too-large",
                format!(
                    "the statement has more than {} tokens (maxSqlTokens); split it or pass \
                     long lists as an array parameter",
                    self.max_tokens
                ),
            ));
        }
        let _permit = Permit::acquire();
        analyze(sql, allowed, user_functions).map_err(|mut refusal| {
            // What the audit log may show of a statement refused after it
            // parsed, under the same permit and size bound.
            if refusal.reason != "parse" {
                refusal.audit_text = Some(Box::new(super::AuditText::of(sql)));
            }
            refusal
        })
    }

    /// [`analyze`], remembered by the text and the function names'
    /// generation (a new load of them can change a verdict).
    pub fn analyze(
        &self,
        sql: &str,
        allowed: &AllowedFunctions,
        user_functions: &Snapshot,
    ) -> Result<Verdict, Refusal> {
        if sql.len() > MAX_CACHED_SQL_BYTES {
            return self.bounded_analyze(sql, allowed, user_functions);
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
        let verdict = self.bounded_analyze(sql, allowed, user_functions);
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
        let cache = VerdictCache::new(10_000);
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

    #[test]
    fn statements_with_too_many_tokens_are_refused_unparsed() {
        let cache = VerdictCache::new(100);
        let names = Snapshot::default();
        let none = AllowedFunctions::default();
        let wide = format!("SELECT {}", vec!["1"; 60].join(","));
        let refusal = cache.analyze(&wide, &none, &names).unwrap_err();
        assert_eq!(refusal.code, mcp_delegate_plugin_api::codes::SQL_TOO_LARGE);
        // A long literal is one token.
        let long = format!("SELECT '{}'", "x".repeat(100_000));
        assert!(cache.analyze(&long, &none, &names).is_ok());
    }
}
