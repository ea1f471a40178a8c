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

#[derive(Debug, Default)]
pub struct SessionStatements {
    /// The delegated transaction's own named statements exist.
    pub fixed_ready: bool,
    cached: HashMap<String, Cached>,
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
    /// A statement to close first, to keep the cache bounded.
    pub evict: Option<String>,
}

impl SessionStatements {
    /// Every named statement is gone (after `DISCARD ALL`).
    pub fn forget_all(&mut self) {
        self.fixed_ready = false;
        self.cached.clear();
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
                evict: None,
            };
        }
        let mut evict = None;
        if self.cached.len() >= USER_STATEMENT_CACHE {
            let oldest = self
                .cached
                .iter()
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(sql, _)| sql.clone());
            if let Some(cached) = oldest.and_then(|sql| self.cached.remove(&sql)) {
                evict = Some(cached.name);
            }
        }
        self.next_id += 1;
        let name = format!("mcpd_user_{}", self.next_id);
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
        self.cached.remove(sql);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_evicts_the_least_recently_used() {
        let mut statements = SessionStatements::default();
        let first = statements.user_statement("SELECT 1");
        assert!(first.parse && first.evict.is_none());
        let again = statements.user_statement("SELECT 1");
        assert!(!again.parse);
        assert_eq!(again.name, first.name);
        for i in 0..USER_STATEMENT_CACHE - 1 {
            statements.user_statement(&format!("SELECT {}", i + 2));
        }
        // Full: "SELECT 2" is now the oldest ("SELECT 1" was used again).
        statements.user_statement("SELECT 1");
        let newcomer = statements.user_statement("SELECT 999");
        assert!(newcomer.evict.is_some());
        assert!(!statements.user_statement("SELECT 1").parse);
        assert!(statements.user_statement("SELECT 2").parse);
        statements.forget_all();
        assert!(statements.user_statement("SELECT 1").parse);
        assert!(!statements.fixed_ready);
    }
}
