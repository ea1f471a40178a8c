//! Which named statements exist on a session: the delegated transaction's
//! own, and a small cache of users' statements keyed by their SQL text, so
//! that a statement run again is not parsed and planned again (what
//! node-postgres' and pgx's statement caches do).
//!
//! `DISCARD ALL` removes every named statement: whoever sends it calls
//! [`SessionStatements::forget_all`].

use std::collections::HashMap;

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

#[derive(Debug, Default)]
pub struct SessionStatements {
    /// The delegated transaction's own named statements exist.
    pub fixed_ready: bool,
    cached: HashMap<String, Cached>,
    /// Bytes of the texts in `cached`.
    cached_bytes: usize,
    next_id: u64,
    clock: u64,
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

impl SessionStatements {
    /// Every named statement is gone (after `DISCARD ALL`).
    pub fn forget_all(&mut self) {
        self.fixed_ready = false;
        self.cached.clear();
        self.cached_bytes = 0;
    }

    /// The statement for `sql`: the cached one, or a new name (recorded
    /// now; call [`SessionStatements::forget`] if creating it failed).
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
        if sql.len() > MAX_CACHED_TEXT {
            return UserStatement {
                name: String::new(),
                parse: true,
                evict: Vec::new(),
            };
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

    /// `sql`'s statement does not exist (its creation failed).
    pub fn forget(&mut self, sql: &str) {
        if self.cached.remove(sql).is_some() {
            self.cached_bytes -= sql.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_evicts_the_least_recently_used() {
        let mut statements = SessionStatements::default();
        let first = statements.user_statement("SELECT 1");
        assert!(first.parse && first.evict.is_empty());
        let again = statements.user_statement("SELECT 1");
        assert!(!again.parse);
        assert_eq!(again.name, first.name);
        for i in 0..USER_STATEMENT_CACHE - 1 {
            statements.user_statement(&format!("SELECT {}", i + 2));
        }
        // Full: "SELECT 2" is now the oldest ("SELECT 1" was used again).
        statements.user_statement("SELECT 1");
        let newcomer = statements.user_statement("SELECT 999");
        assert!(!newcomer.evict.is_empty());
        assert!(!statements.user_statement("SELECT 1").parse);
        assert!(statements.user_statement("SELECT 2").parse);
        statements.forget_all();
        assert!(statements.user_statement("SELECT 1").parse);
        assert!(!statements.fixed_ready);
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
            statements.user_statement(&text);
            assert!(statements.cached_bytes <= CACHED_TEXT_BUDGET);
            assert_eq!(
                statements.cached_bytes,
                statements.cached.keys().map(String::len).sum::<usize>()
            );
        }
    }
}
