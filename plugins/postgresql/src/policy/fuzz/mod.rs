//! Property tests of the policy, with generators that know the answer.
//!
//! 1. Nothing panics `analyze`: random text, token soup, deep nesting and
//!    mutations (byte flips, inserted keywords and punctuation,
//!    truncations, deletions, duplications) of a corpus of realistic and
//!    hostile statements.
//! 2. A call of a never-allowed built-in (from data/functions.tsv), hidden
//!    at a random depth in a random place of a random statement, is always
//!    refused with `SQL_FORBIDDEN_FUNCTION`; the generator, not the
//!    policy, says where the call is.
//! 3. A statement admitted as a read has no data-modifying statement, no
//!    locking clause, no `INTO` and no call outside the table's allowed
//!    functions, by an oracle of its own: pg_query's typed node iterator
//!    and a walk of the whole tree written here, not the policy's walker.
//!
//! Fixed seed, fixed case counts, no regression files.

//! Files: `generators.rs` (the statements), `oracle.rs` (property 3's
//! independent walk), `never_kinds.rs` (statement kinds no role may run,
//! at the top and nested).

mod corpus;
mod generators;
mod never_kinds;
mod oracle;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use mcp_delegate_plugin_api::codes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use super::analyze;
use super::functions::NEVER_CATEGORIES;
use generators::*;

const FUNCTION_TABLE: &str = include_str!("../../../data/functions.tsv");

/// Cases per property.
const CASES: u32 = 2000;

/// A fixed seed keeps CI repeatable; `POLICY_FUZZ_SEED` and
/// `POLICY_FUZZ_CASES` explore further by hand.
fn config() -> Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("POLICY_FUZZ_CASES").map_or(CASES, |n| n as u32),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(env("POLICY_FUZZ_SEED").unwrap_or(0x6d63_702d_6465_6c65)),
        max_shrink_iters: 4000,
        ..Config::default()
    }
}

/// Runs `test` on `CASES` inputs of `strategy`; a failure panics with
/// the minimal input proptest found.
fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}

/// One row of functions.tsv.
struct Row {
    schema: &'static str,
    name: &'static str,
    min: usize,
    /// `None`: variadic.
    max: Option<usize>,
    verdict: &'static str,
    category: &'static str,
}

impl Row {
    fn reaches(&self, args: usize) -> bool {
        self.min <= args && self.max.is_none_or(|max| args <= max)
    }
}

struct Table {
    rows: Vec<Row>,
    /// Indexes of the `pg_catalog` rows in a never category.
    never: Vec<usize>,
    /// `pg_catalog` names with at least one `allow` row.
    allowed_names: BTreeSet<&'static str>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let rows: Vec<Row> = FUNCTION_TABLE
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let f: Vec<&'static str> = line.split('\t').collect();
                Row {
                    schema: f[0],
                    name: f[1],
                    min: f[3].parse().unwrap(),
                    max: f[4].parse().ok(),
                    verdict: f[5],
                    category: f[6],
                }
            })
            .collect();
        let never = (0..rows.len())
            .filter(|&i| {
                rows[i].schema == "pg_catalog" && NEVER_CATEGORIES.contains(&rows[i].category)
            })
            .collect();
        let allowed_names = rows
            .iter()
            .filter(|row| row.schema == "pg_catalog" && row.verdict == "allow")
            .map(|row| row.name)
            .collect();
        Table {
            rows,
            never,
            allowed_names,
        }
    })
}

/// Every category the table refuses a `pg_catalog` function named `name` for.
fn denied_categories(name: &str) -> BTreeSet<&'static str> {
    table()
        .rows
        .iter()
        .filter(|row| row.schema == "pg_catalog" && row.name == name && row.verdict == "deny")
        .map(|row| row.category)
        .collect()
}

#[test]
fn nothing_panics_analyze() {
    let allowed = default_allowed();
    let strategy = prop_oneof![
        3 => mutated(),
        2 => any_text(),
        2 => token_soup(),
        1 => deep(),
        2 => read_candidates(),
    ];
    run(strategy, |sql| {
        let _ = analyze(&sql, &allowed, &super::Snapshot::default());
        Ok(())
    });
}

#[test]
fn hidden_never_allowed_calls_are_always_refused() {
    let configs = [default_allowed(), generous_allowed()];
    run(hidden_never_call(), |hidden| {
        let expected = denied_categories(hidden.function);
        for allowed in &configs {
            match analyze(&hidden.sql, allowed, &super::Snapshot::default()) {
                Ok(verdict) => {
                    return Err(TestCaseError::fail(format!(
                        "{:?} admitted as {:?}: it calls {}",
                        hidden.sql, verdict, hidden.function
                    )))
                }
                Err(refusal) => {
                    prop_assert_eq!(
                        refusal.code,
                        codes::SQL_FORBIDDEN_FUNCTION,
                        "{:?}: {:?}",
                        &hidden.sql,
                        &refusal
                    );
                    prop_assert!(
                        expected.contains(refusal.reason),
                        "{:?}: reason {} is not one of {:?} ({:?})",
                        &hidden.sql,
                        refusal.reason,
                        &expected,
                        &refusal
                    );
                }
            }
        }
        Ok(())
    });
}
