//! Which named statements exist on a session: the delegated transaction's
//! own, and a small cache of users' statements keyed by their SQL text, so
//! that a statement run again is not parsed and planned again (what
//! node-postgres' and pgx's statement caches do).
//!
//! A text is cached on its second sighting: the first time it runs as the
//! unnamed statement. Agents often write one-off texts (values spliced
//! into the SQL); naming each would make the server copy its parse tree
//! into a saved plan, only to close it again when it is evicted.
//!
//! `DISCARD ALL` removes every named statement: whoever sends it calls
//! [`SessionStatements::forget_all`].

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Users' statements kept per connection. Each costs the server some
/// memory (its parse tree and plans), so the least recently used is closed
/// when the cache is full.
pub const USER_STATEMENT_CACHE: usize = 32;
/// A text longer than this runs as the unnamed statement, never cached:
/// neither side keeps it.
pub const MAX_CACHED_TEXT: usize = 8 * 1024;
/// Most bytes of cached texts per connection (with [`MAX_CACHED_TEXT`] and
/// [`USER_STATEMENT_CACHE`], a bound on both sides' memory).
pub const CACHED_TEXT_BUDGET: usize = 128 * 1024;
/// How many recently run, uncached texts are remembered (by a hash) so
/// that a second run of one caches it.
pub const SEEN_ONCE: usize = 64;

#[derive(Debug, Default)]
pub struct SessionStatements {
    /// The delegated transaction's own named statements exist.
    pub fixed_ready: bool,
    cached: HashMap<String, Cached>,
    /// Bytes of the texts in `cached`.
    cached_bytes: usize,
    next_id: u64,
    clock: u64,
    /// Hashes of the last [`SEEN_ONCE`] texts that ran unnamed, oldest
    /// overwritten first.
    seen_once: Vec<u64>,
    seen_next: usize,
    hasher: RandomState,
}

#[derive(Debug)]
struct Cached {
    name: String,
    last_used: u64,
}

/// How to run a user's statement on this session.
pub struct UserStatement {
    pub name: String,
    /// It must be parsed (created) first.
    pub parse: bool,
    /// Statements to close first, to keep the cache bounded.
    pub evict: Vec<String>,
}

impl UserStatement {
    /// The unnamed statement, parsed for this run only.
    pub fn unnamed() -> Self {
        Self {
            name: String::new(),
            parse: true,
            evict: Vec::new(),
        }
    }
}

impl SessionStatements {
    /// Every named statement is gone (after `DISCARD ALL`).
    pub fn forget_all(&mut self) {
        self.fixed_ready = false;
        self.cached.clear();
        self.cached_bytes = 0;
    }

    /// The statement for `sql`: the cached one; the unnamed one for a text
    /// not seen lately (or too long to cache); else a new name (recorded
    /// now; if creating it fails, the session is reset and
    /// [`SessionStatements::forget_all`] called).
    pub fn user_statement(&mut self, sql: &str) -> UserStatement {
        self.clock += 1;
        if let Some(cached) = self.cached.get_mut(sql) {
            cached.last_used = self.clock;
            return UserStatement {
                name: cached.name.clone(),
                parse: false,
                evict: Vec::new(),
            };
        }
        if sql.len() > MAX_CACHED_TEXT || self.first_sighting(sql) {
            return UserStatement::unnamed();
        }
        let mut evict = Vec::new();
        while self.cached.len() >= USER_STATEMENT_CACHE
            || self.cached_bytes + sql.len() > CACHED_TEXT_BUDGET
        {
            let oldest = self
                .cached
                .iter()
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(sql, _)| sql.clone());
            let Some((text, cached)) = oldest.and_then(|sql| self.cached.remove_entry(&sql)) else {
                break;
            };
            self.cached_bytes -= text.len();
            evict.push(cached.name);
        }
        self.next_id += 1;
        let name = format!("mcpd_user_{}", self.next_id);
        self.cached_bytes += sql.len();
        self.cached.insert(
            sql.to_owned(),
            Cached {
                name: name.clone(),
                last_used: self.clock,
            },
        );
        UserStatement {
            name,
            parse: true,
            evict,
        }
    }

    /// Whether `sql` ran lately (unnamed); remembers it if not. A hash
    /// collision only caches a text one run early.
    fn first_sighting(&mut self, sql: &str) -> bool {
        let hash = self.hasher.hash_one(sql);
        if let Some(at) = self.seen_once.iter().position(|&seen| seen == hash) {
            self.seen_once[at] = 0;
            return false;
        }
        if self.seen_once.len() < SEEN_ONCE {
            self.seen_once.push(hash);
        } else {
            self.seen_once[self.seen_next] = hash;
            self.seen_next = (self.seen_next + 1) % SEEN_ONCE;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_evicts_the_least_recently_used() {
        let mut statements = SessionStatements::default();
        let first = statements.user_statement("SELECT 1");
        assert!(first.parse && first.name.is_empty(), "first run: unnamed");
        let second = statements.user_statement("SELECT 1");
        assert!(second.parse && !second.name.is_empty() && second.evict.is_empty());
        let again = statements.user_statement("SELECT 1");
        assert!(!again.parse);
        assert_eq!(again.name, second.name);
        for i in 0..USER_STATEMENT_CACHE - 1 {
            twice(&mut statements, &format!("SELECT {}", i + 2));
        }
        // Full: "SELECT 2" is now the oldest ("SELECT 1" was used again).
        statements.user_statement("SELECT 1");
        let newcomer = twice(&mut statements, "SELECT 999");
        assert!(!newcomer.evict.is_empty());
        assert!(!statements.user_statement("SELECT 1").parse);
        assert!(statements.user_statement("SELECT 2").parse);
        statements.forget_all();
        assert!(statements.user_statement("SELECT 1").parse);
        assert!(!statements.fixed_ready);
    }

    /// Runs `sql` twice (the second run caches it); the second answer.
    fn twice(statements: &mut SessionStatements, sql: &str) -> UserStatement {
        statements.user_statement(sql);
        statements.user_statement(sql)
    }

    #[test]
    fn one_off_texts_run_unnamed_and_are_never_cached() {
        let mut statements = SessionStatements::default();
        for i in 0..1000 {
            let once = statements.user_statement(&format!("SELECT * FROM t WHERE id = {i}"));
            assert!(once.parse && once.name.is_empty() && once.evict.is_empty());
        }
        assert!(statements.cached.is_empty() && statements.cached_bytes == 0);
        // Remembered for SEEN_ONCE other texts only.
        statements.user_statement("SELECT 1");
        for i in 0..SEEN_ONCE {
            statements.user_statement(&format!("SELECT {i} + 1"));
        }
        assert!(statements.user_statement("SELECT 1").name.is_empty());
        assert!(!statements.user_statement("SELECT 1").name.is_empty());
    }

    #[test]
    fn bounded_in_bytes() {
        let mut statements = SessionStatements::default();
        let huge = format!("SELECT '{}'", "x".repeat(MAX_CACHED_TEXT));
        let unnamed = statements.user_statement(&huge);
        assert!(unnamed.name.is_empty() && unnamed.parse);
        assert!(statements.user_statement(&huge).parse, "never cached");
        for i in 0..200 {
            let text = format!("SELECT {i}, '{}'", "y".repeat((i * 997) % 8000));
            twice(&mut statements, &text);
            assert!(statements.cached_bytes <= CACHED_TEXT_BUDGET);
            assert_eq!(
                statements.cached_bytes,
                statements.cached.keys().map(String::len).sum::<usize>()
            );
        }
    }
}
