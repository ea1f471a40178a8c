//! Which functions and operators a statement may call: deny by default.
//!
//! A call is allowed only when it names a built-in that the checked-in
//! table (data/functions.tsv, derived from `pg_proc` of PostgreSQL 15 and
//! 18 by tests/src/function_rules.rs) classifies as allowed, or a function
//! the operator names in the module's `allowedFunctions`. Categories of
//! built-ins that no config can allow ([`NEVER_CATEGORIES`]) stay refused
//! whatever the config says, and so does any function, in any schema,
//! named like one of them or like a known query-running extension function
//! ([`NEVER_NAMES`]).

use std::collections::HashMap;
use std::sync::OnceLock;

/// The built-in function table and operator table, as generated.
const FUNCTION_TABLE: &str = include_str!("../../data/functions.tsv");
const OPERATOR_TABLE: &str = include_str!("../../data/operators.tsv");

/// Categories refused whatever the config says: executing text as SQL,
/// changing settings or session state, signalling backends, files, large
/// objects, session-level advisory locks, notifications, replication, WAL,
/// backups, statistics resets and loading code.
pub const NEVER_CATEGORIES: &[&str] = &[
    "query-text",
    "settings",
    "session-state",
    "signal",
    "file",
    "large-object",
    "advisory-lock-session",
    "notify",
    "replication",
    "wal",
    "backup",
    "stats-reset",
    "load-code",
];

/// Extension functions (any schema) that run query text, open network
/// connections or touch files; `*` ends a prefix. Refused like the never
/// categories, whatever `allowedFunctions` says.
pub const NEVER_NAMES: &[&str] = &[
    "dblink*",
    "crosstab*",
    "connectby",
    "xpath_table",
    "postgres_fdw_*",
    "pg_background_*",
    "http*",
    "pg_file_*",
    "pg_logdir_ls",
    "pg_stat_statements_reset",
];

/// A built-in function's entry: how many arguments it takes and the verdict.
#[derive(Debug, Clone, Copy)]
struct Entry {
    min_args: usize,
    /// `None`: variadic.
    max_args: Option<usize>,
    verdict: TableVerdict,
    category: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TableVerdict {
    Allow,
    Write,
    Deny,
}

/// The parsed tables: built-ins by schema-qualified name, operator symbols.
struct Tables {
    functions: HashMap<(&'static str, &'static str), Vec<Entry>>,
    /// Symbols of `pg_catalog` operators whose functions are all allowed.
    operators: HashMap<&'static str, bool>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut functions: HashMap<(&str, &str), Vec<Entry>> = HashMap::new();
        for line in FUNCTION_TABLE.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&'static str> = line.split('\t').collect();
            let [schema, name, _args, min, max, verdict, category, ..] = fields[..] else {
                continue;
            };
            let verdict = match verdict {
                "allow" => TableVerdict::Allow,
                "write" => TableVerdict::Write,
                _ => TableVerdict::Deny,
            };
            functions.entry((schema, name)).or_default().push(Entry {
                // An unreadable count cannot narrow the candidates: 0 / any.
                min_args: min.parse().unwrap_or(0),
                max_args: max.parse().ok(),
                verdict,
                category,
            });
        }
        let mut operators: HashMap<&str, bool> = HashMap::new();
        for line in OPERATOR_TABLE.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&'static str> = line.split('\t').collect();
            if let [symbol, _left, _right, _function, verdict, ..] = fields[..] {
                let allowed = operators.entry(symbol).or_insert(true);
                *allowed &= verdict == "allow";
            }
        }
        Tables {
            functions,
            operators,
        }
    })
}

/// Why a call was refused: the table's category, or one of
/// `unknown-function`, `unknown-operator`, `not-allowed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub category: &'static str,
    /// No config can allow it.
    pub never: bool,
}

/// What a call does to the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallDecision {
    Allow,
    /// Allowed; the statement is a write (`nextval`, `setval`).
    Write,
    Deny(Denied),
}

fn deny(category: &'static str, never: bool) -> CallDecision {
    CallDecision::Deny(Denied { category, never })
}

fn matches_pattern(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// The never category of a built-in named `name` (any overload), if any.
fn never_category_of_name(name: &str) -> Option<&'static str> {
    tables()
        .functions
        .get(&("pg_catalog", name))?
        .iter()
        .find(|entry| NEVER_CATEGORIES.contains(&entry.category))
        .map(|entry| entry.category)
}

/// Functions and operators the operator allows beyond the built-ins
/// (`allowedFunctions`): `schema.name` or `schema.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedFunctions {
    /// (schema, name or `*`).
    entries: Vec<(String, String)>,
}

impl AllowedFunctions {
    /// Parses the config list; the error names the bad entry and why.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut parsed = Vec::new();
        for entry in entries {
            let Some((schema, name)) = entry.rsplit_once('.') else {
                return Err(format!(
                    "'{entry}' must be schema-qualified: 'schema.function' or 'schema.*'"
                ));
            };
            if schema.is_empty() || name.is_empty() || schema.contains('*') {
                return Err(format!("'{entry}' must be 'schema.function' or 'schema.*'"));
            }
            if name == "*" && schema == "pg_catalog" {
                return Err(
                    "'pg_catalog.*' is not allowed: name the built-ins you need one by one"
                        .to_owned(),
                );
            }
            if name != "*" {
                if let Some(category) = never_category_of_name(name) {
                    return Err(format!(
                        "'{entry}' can never be allowed: it is in the category '{category}'"
                    ));
                }
                if NEVER_NAMES.iter().any(|p| matches_pattern(p, name)) {
                    return Err(format!(
                        "'{entry}' can never be allowed: it runs query text or reaches \
                         outside the database"
                    ));
                }
            }
            parsed.push((schema.to_owned(), name.to_owned()));
        }
        Ok(Self { entries: parsed })
    }

    /// `schema.name` is allowed, by its own entry or its schema's wildcard.
    pub(super) fn admits_qualified(&self, schema: &str, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(s, n)| s == schema && (n == name || n == "*"))
    }

    /// An unqualified `name` is allowed only by an entry naming it: the
    /// server resolves it along the search path, so a schema wildcard does
    /// not vouch for it.
    pub(super) fn admits_unqualified(&self, name: &str) -> bool {
        self.entries.iter().any(|(_, n)| n == name)
    }
}

/// The decision for a call of `schema.name` (schema `None`: unqualified)
/// with `arg_count` arguments.
pub fn decide_function(
    schema: Option<&str>,
    name: &str,
    arg_count: usize,
    allowed: &AllowedFunctions,
) -> CallDecision {
    if NEVER_NAMES.iter().any(|p| matches_pattern(p, name)) {
        return deny("query-text-or-network", true);
    }
    let table_schema = match schema {
        None | Some("pg_catalog") => "pg_catalog",
        Some("information_schema") => "information_schema",
        Some(other) => {
            // A function named like a never-allowed built-in is refused in
            // every schema: it is a copy or a trap.
            if let Some(category) = never_category_of_name(name) {
                return deny(category, true);
            }
            return if allowed.admits_qualified(other, name) {
                CallDecision::Allow
            } else {
                deny("not-allowed", false)
            };
        }
    };
    let Some(entries) = tables().functions.get(&(table_schema, name)) else {
        return match schema {
            None if allowed.admits_unqualified(name) => CallDecision::Allow,
            _ => deny("unknown-function", false),
        };
    };
    // The overloads this many arguments can reach.
    let candidates: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.min_args <= arg_count && e.max_args.is_none_or(|max| arg_count <= max))
        .collect();
    if candidates.is_empty() {
        // No built-in takes this many arguments: what the server would run
        // is an overload the table does not know (one a newer release
        // added, or a function of the same name in another schema on the
        // search path). A never-allowed name stays refused as such.
        if let Some(never) = entries
            .iter()
            .find(|e| NEVER_CATEGORIES.contains(&e.category))
        {
            return deny(never.category, true);
        }
        let named = match schema {
            None => allowed.admits_unqualified(name),
            Some(_) => allowed.admits_qualified(table_schema, name),
        };
        return if named {
            CallDecision::Allow
        } else {
            deny("unknown-function", false)
        };
    }
    if let Some(never) = candidates
        .iter()
        .find(|e| NEVER_CATEGORIES.contains(&e.category))
    {
        return deny(never.category, true);
    }
    let worst = candidates
        .iter()
        .max_by_key(|entry| entry.verdict)
        .map(|entry| (entry.verdict, entry.category));
    match worst {
        Some((TableVerdict::Deny, category)) => {
            if allowed.admits_qualified(table_schema, name) {
                CallDecision::Allow
            } else {
                deny(category, false)
            }
        }
        Some((TableVerdict::Write, _)) => CallDecision::Write,
        _ => CallDecision::Allow,
    }
}

/// The decision for an operator `schema.symbol` (schema `None`:
/// unqualified, resolved along the search path with `pg_catalog` first).
pub fn decide_operator(
    schema: Option<&str>,
    symbol: &str,
    allowed: &AllowedFunctions,
) -> CallDecision {
    match schema {
        None | Some("pg_catalog") => match tables().operators.get(symbol) {
            Some(true) => CallDecision::Allow,
            Some(false) => deny("operator-function", false),
            None if schema.is_none() && allowed.admits_unqualified(symbol) => CallDecision::Allow,
            None => deny("unknown-operator", false),
        },
        Some(other) if allowed.admits_qualified(other, symbol) => CallDecision::Allow,
        Some(_) => deny("unknown-operator", false),
    }
}

/// The category of a function that attribute notation (`t.f`, `(t).f`)
/// would call with one argument and that is refused, if `name` is one.
pub fn denied_in_attribute_notation(name: &str) -> Option<&'static str> {
    if NEVER_NAMES.iter().any(|p| matches_pattern(p, name)) {
        return Some("query-text-or-network");
    }
    tables()
        .functions
        .get(&("pg_catalog", name))?
        .iter()
        .find(|e| {
            e.verdict == TableVerdict::Deny
                && e.min_args <= 1
                && e.max_args.is_none_or(|max| max >= 1)
        })
        .map(|e| e.category)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(schema: Option<&str>, name: &str, args: usize) -> CallDecision {
        decide_function(schema, name, args, &AllowedFunctions::default())
    }

    #[test]
    fn the_table_loads_and_decides() {
        assert_eq!(decide(None, "lower", 1), CallDecision::Allow);
        assert_eq!(decide(Some("pg_catalog"), "count", 0), CallDecision::Allow);
        assert_eq!(decide(None, "nextval", 1), CallDecision::Write);
        assert_eq!(decide(None, "ts_stat", 1), deny("query-text", true));
        assert_eq!(decide(None, "set_config", 3), deny("settings", true));
        // ts_rewrite: the three-argument form is pure, the two-argument one
        // runs query text.
        assert_eq!(decide(None, "ts_rewrite", 3), CallDecision::Allow);
        assert_eq!(decide(None, "ts_rewrite", 2), deny("query-text", true));
        assert_eq!(
            decide(None, "no_such_fn", 1),
            deny("unknown-function", false)
        );
        assert_eq!(decide(Some("public"), "f", 1), deny("not-allowed", false));
        assert_eq!(
            decide(Some("x"), "dblink_exec", 2),
            deny("query-text-or-network", true)
        );
        assert_eq!(decide(None, "int4in", 1), deny("type-io", false));
        // No built-in lower() takes three arguments: the server would run
        // one the table does not know (a same-named function elsewhere on
        // the search path), so it is refused unless configured.
        assert_eq!(decide(None, "lower", 3), deny("unknown-function", false));
        assert_eq!(
            decide(Some("pg_catalog"), "lower", 0),
            deny("unknown-function", false)
        );
        let named = AllowedFunctions::parse(&["public.lower".into()]).unwrap();
        assert_eq!(
            decide_function(None, "lower", 3, &named),
            CallDecision::Allow
        );
        assert_eq!(decide(None, "set_config", 1), deny("settings", true));
        assert!(tables().functions.len() > 2500);
    }

    #[test]
    fn config_allows_only_what_may_be_allowed() {
        let allowed = AllowedFunctions::parse(&[
            "public.similarity".into(),
            "ext.*".into(),
            "pg_catalog.gin_clean_pending_list".into(),
        ])
        .unwrap();
        let decide = |schema, name: &str| decide_function(schema, name, 1, &allowed);
        assert_eq!(decide(Some("public"), "similarity"), CallDecision::Allow);
        assert_eq!(decide(None, "similarity"), CallDecision::Allow);
        assert_eq!(decide(Some("ext"), "anything"), CallDecision::Allow);
        assert_eq!(decide(None, "anything"), deny("unknown-function", false));
        assert_eq!(decide(None, "gin_clean_pending_list"), CallDecision::Allow);
        assert_eq!(
            decide(Some("ext"), "dblink"),
            deny("query-text-or-network", true)
        );
        assert_eq!(decide(Some("ext"), "set_config"), deny("settings", true));
        for bad in [
            "set_config",
            "pg_catalog.set_config",
            "public.ts_stat",
            "pg_catalog.*",
            "x.dblink_exec",
            ".f",
            "s.",
            "*.f",
        ] {
            assert!(AllowedFunctions::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn operators() {
        let none = AllowedFunctions::default();
        assert_eq!(decide_operator(None, "+", &none), CallDecision::Allow);
        assert_eq!(
            decide_operator(Some("pg_catalog"), "@@", &none),
            CallDecision::Allow
        );
        assert_eq!(
            decide_operator(None, "===", &none),
            deny("unknown-operator", false)
        );
        assert_eq!(
            decide_operator(Some("public"), "+", &none),
            deny("unknown-operator", false)
        );
        let ext = AllowedFunctions::parse(&["public.*".into()]).unwrap();
        assert_eq!(
            decide_operator(Some("public"), "===", &ext),
            CallDecision::Allow
        );
    }
}
