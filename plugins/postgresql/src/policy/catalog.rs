//! What the policy must know of the database itself: the functions outside
//! `pg_catalog` that attribute notation can call.
//!
//! `t.f` and `(x).f` call `f(t)` / `f(x)` when `t` has no column `f`, and
//! PostgreSQL takes the notation on plain values too (`('abc').upper`): a
//! one-argument function in any schema on the search path is reachable
//! without parentheses, where the walk sees no call. The names of such
//! functions come from the database ([`crate::sql::USER_FUNCTIONS`],
//! loaded with the profile check and every minute after); a qualified
//! column reference or field selection with one of those names is judged as
//! a call of it. A plain column name (`f`, no qualifier) is never a call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// One load of the names, with a generation the verdict cache keys on.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// 0 until the first load.
    pub generation: u64,
    /// Function name → the schemas that define a one-argument form.
    by_name: HashMap<String, Vec<String>>,
}

impl Snapshot {
    /// From (name, schema) pairs.
    pub fn new(generation: u64, pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for (name, schema) in pairs {
            let schemas = by_name.entry(name).or_default();
            if !schemas.contains(&schema) {
                schemas.push(schema);
            }
        }
        Self {
            generation,
            by_name,
        }
    }

    /// The schemas whose function `name` attribute notation could call.
    pub fn schemas_of(&self, name: &str) -> Option<&[String]> {
        self.by_name.get(name).map(Vec::as_slice)
    }
}

/// The current snapshot, replaced whole on each load.
#[derive(Default)]
pub struct UserFunctions {
    current: RwLock<Arc<Snapshot>>,
    loaded_at: Mutex<Option<Instant>>,
}

impl UserFunctions {
    /// Never loaded, or loaded longer than `max_age` ago.
    pub fn is_stale(&self, max_age: Duration) -> bool {
        self.loaded_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= max_age))
            .unwrap_or(true)
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map(|snapshot| snapshot.clone())
            .unwrap_or_default()
    }

    /// Replaces the snapshot; a new generation only when the names changed.
    pub fn replace(&self, pairs: Vec<(String, String)>) {
        if let Ok(mut at) = self.loaded_at.lock() {
            *at = Some(Instant::now());
        }
        let Ok(mut current) = self.current.write() else {
            return;
        };
        let candidate = Snapshot::new(current.generation + 1, pairs);
        if current.generation == 0 || candidate.by_name != current.by_name {
            *current = Arc::new(candidate);
        }
    }
}
