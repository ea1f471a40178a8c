//! The allow-list, checked against the servers it was derived from.
//!
//! The sweep: every `pg_catalog` function that data/functions.tsv admits
//! (verdict `allow` or `write`) and that the running server has is called,
//! as a low-privileged role, with sample arguments built from its argument
//! types, and the session must come out of each call as it went in: same
//! `current_user` and `session_user`, same settings (value and source),
//! no advisory locks, prepared statements, cursors or LISTEN channels. The
//! state is compared right after the call (inside the savepoint, before it
//! is rolled back: a setting changed for the transaction shows there) and
//! again after `ROLLBACK TO SAVEPOINT` (what survives a rollback, such as
//! a session-level advisory lock, shows there). On PostgreSQL 15 and 18.
//! Two calls that do change the session (`set_config`, a session-level
//! advisory lock) are probed first, so a blind detector fails the test.
//! `SWEEP_VERBOSE=1` prints every call that raised an error, and why.
//!
//! The complement: every function in a never-allowed category is refused
//! by a real host with `SQL_FORBIDDEN_FUNCTION` and its category.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::pg::{Cluster, PgVersion};
use mcp_delegate_tests::pgfixture::Delegated;
use mcp_delegate_tests::sweep::{call_sql, load_procs, probe, snapshot, sweep_session};
use serde_json::json;

const FUNCTION_TABLE: &str = include_str!("../../plugins/postgresql/data/functions.tsv");
/// The policy's source, for its `NEVER_CATEGORIES` (the tests crate does
/// not link the plugin).
const POLICY_FUNCTIONS: &str = include_str!("../../plugins/postgresql/src/policy/functions.rs");

/// The service account's danger, in small: a NOINHERIT login that may
/// become other roles; the sweep runs as `low`. A sequence, a table and
/// an enum give the sample arguments something real to name.
const SETUP_SQL: &str = r#"
CREATE ROLE svc LOGIN NOINHERIT;
CREATE ROLE low NOLOGIN;
CREATE ROLE other NOLOGIN;
GRANT low, other TO svc;
CREATE SEQUENCE public.sweep_s;
GRANT ALL ON SEQUENCE public.sweep_s TO low;
CREATE TABLE public.sweep_t (a int PRIMARY KEY, b text);
GRANT SELECT ON public.sweep_t TO low;
CREATE TYPE public.sweep_mood AS ENUM ('sad', 'happy');
"#;

/// One line of functions.tsv.
#[derive(Debug, Clone)]
struct TableRow {
    schema: String,
    name: String,
    identity_args: String,
    min_args: usize,
    verdict: String,
    category: String,
    versions: Vec<u32>,
}

fn table() -> Vec<TableRow> {
    FUNCTION_TABLE
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 8, "{line}");
            TableRow {
                schema: f[0].to_owned(),
                name: f[1].to_owned(),
                identity_args: f[2].to_owned(),
                min_args: f[3].parse().expect("min_args"),
                verdict: f[5].to_owned(),
                category: f[6].to_owned(),
                versions: f[7]
                    .split(',')
                    .map(|v| v.parse().expect("version"))
                    .collect(),
            }
        })
        .collect()
}

/// `NEVER_CATEGORIES` as the policy declares it.
fn never_categories() -> Vec<String> {
    let start = POLICY_FUNCTIONS
        .find("pub const NEVER_CATEGORIES")
        .expect("NEVER_CATEGORIES in policy/functions.rs");
    let body = &POLICY_FUNCTIONS[start..];
    let body = &body[body.find("&[").expect("list") + 2..body.find("];").expect("end")];
    let categories: Vec<String> = body
        .split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty())
        .collect();
    assert!(categories.len() >= 13, "{categories:?}");
    categories
}

/// The rows the sweep calls: what the policy lets a statement call.
fn swept_rows() -> Vec<TableRow> {
    table()
        .into_iter()
        .filter(|row| {
            row.schema == "pg_catalog" && matches!(row.verdict.as_str(), "allow" | "write")
        })
        .collect()
}

fn sweep(version: PgVersion) {
    let started = Instant::now();
    let major = version.major();
    let cluster = Cluster::start_version(version);
    cluster.exec("postgres", SETUP_SQL);
    let mut client = sweep_session(&cluster);
    let procs = load_procs(&mut client);
    let baseline = snapshot(&mut client).expect("baseline");
    assert_eq!(
        (
            baseline.current_user.as_str(),
            baseline.session_user.as_str()
        ),
        ("low", "svc")
    );

    // The detector is live: calls that do change the session are caught,
    // one before the rollback, one after it.
    let caught = probe(
        &mut client,
        "SELECT pg_catalog.set_config('application_name', 'x', false)",
        &baseline,
        false,
    );
    assert!(
        caught.error.is_none()
            && caught
                .changes
                .iter()
                .any(|c| c.contains("application_name")),
        "set_config went unnoticed: {:?}",
        caught.changes
    );
    let caught = probe(
        &mut client,
        "SELECT pg_catalog.pg_advisory_lock(1)",
        &baseline,
        false,
    );
    assert!(
        caught
            .changes
            .iter()
            .any(|c| c.starts_with("after rollback to savepoint: advisory locks")),
        "a session-level advisory lock went unnoticed: {:?}",
        caught.changes
    );
    client
        .batch_execute("SELECT pg_catalog.pg_advisory_unlock_all()")
        .expect("unlock");
    assert_eq!(snapshot(&mut client).expect("state"), baseline);

    let mut called = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut timeouts = Vec::new();
    let mut skipped = Vec::new();
    let mut not_on_this_version = 0;
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    let mut baseline = baseline;
    let rows = swept_rows();
    for row in &rows {
        let key = (row.name.clone(), row.identity_args.clone());
        let Some(proc) = procs.get(&key) else {
            if row.versions.contains(&major) {
                missing.push(format!("{}({})", row.name, row.identity_args));
            } else {
                not_on_this_version += 1;
            }
            continue;
        };
        let sql = match call_sql(&row.name, proc) {
            Ok(sql) => sql,
            Err(why) => {
                skipped.push(format!("{}({}): {why}", row.name, row.identity_args));
                continue;
            }
        };
        let locks_ok = row.category == "advisory-lock-xact";
        let outcome = probe(&mut client, &sql, &baseline, locks_ok);
        called += 1;
        if let Some(code) = outcome.error {
            if code == "57014" {
                timeouts.push(sql.clone());
            }
            *errors.entry(code).or_default() += 1;
        }
        if !outcome.changes.is_empty() {
            changed.push(format!("{sql}: {}", outcome.changes.join("; ")));
            // Report a lasting change once, not for every later call.
            baseline = snapshot(&mut client).expect("state");
        }
    }
    client.batch_execute("ROLLBACK").expect("rollback");
    let failed: usize = errors.values().sum();
    println!(
        "PostgreSQL {major}: {} allowed rows, {called} called ({} ran, {failed} raised an \
         error), {} skipped, {not_on_this_version} not in this version, {} missing, in {:.1?}",
        rows.len(),
        called - failed,
        skipped.len(),
        missing.len(),
        started.elapsed()
    );
    println!("errors by SQLSTATE: {errors:?}");
    println!("skipped: {skipped:#?}");
    println!("timed out: {timeouts:#?}");
    assert!(
        missing.is_empty(),
        "in the table for {major} but not on the server: {missing:#?}"
    );
    assert!(
        changed.is_empty(),
        "PostgreSQL {major}: allowed functions changed the session:\n{}",
        changed.join("\n")
    );
    assert!(called > 2000, "only {called} functions called");
    assert!(
        called - failed > 1500,
        "only {} calls succeeded",
        called - failed
    );
}

#[test]
fn allowed_functions_leave_the_session_unchanged_on_postgresql_15() {
    sweep(PgVersion::V15);
}

#[test]
fn allowed_functions_leave_the_session_unchanged_on_postgresql_18() {
    sweep(PgVersion::V18);
}

/// The complement: what the sweep does not call is refused by the real
/// host, for the category the table gives it.
#[test]
fn every_never_allowed_builtin_is_refused_by_the_host() {
    let never = never_categories();
    let rows = table();
    let mut db = Delegated::start(json!({}));
    let token = db.token("reader", &["sql-read", "sql-write", "sql-admin"]);
    let mut checked = BTreeSet::new();
    let mut wrong = Vec::new();
    for row in rows
        .iter()
        .filter(|row| row.schema == "pg_catalog" && never.contains(&row.category))
    {
        if !checked.insert((row.name.clone(), row.min_args)) {
            continue;
        }
        // The categories of the never-allowed overloads this many
        // arguments can reach: the refusal names one of them.
        let expected: BTreeSet<&str> = rows
            .iter()
            .filter(|other| {
                other.schema == "pg_catalog"
                    && other.name == row.name
                    && other.min_args <= row.min_args
                    && never.contains(&other.category)
            })
            .map(|other| other.category.as_str())
            .collect();
        let nulls = vec!["NULL"; row.min_args].join(", ");
        let sql = format!("SELECT pg_catalog.{}({nulls})", row.name);
        let result = db.query_as(&token, &sql, json!([]));
        if result["isError"] != true {
            wrong.push(format!("{sql}: admitted: {result}"));
            continue;
        }
        let error = Host::tool_error(&result);
        let reason = error["reason"].as_str().unwrap_or_default();
        if error["error"] != "SQL_FORBIDDEN_FUNCTION" || !expected.contains(reason) {
            wrong.push(format!("{sql}: expected {expected:?}, got {error}"));
        }
    }
    println!("{} never-allowed calls checked", checked.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked.len() > 150, "{}", checked.len());
}
