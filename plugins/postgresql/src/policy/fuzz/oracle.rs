//! Property 3's oracle: what a read may not contain, found by pg_query's
//! typed node iterator and by a walk of the serde tree written here, never
//! by the policy's own walker.

use pg_query::NodeRef;
use proptest::prelude::*;
use serde_json::Value;

use super::super::functions::NEVER_CATEGORIES;
use super::super::{analyze, StatementClass};
use super::generators::{default_allowed, read_candidates};
use super::{run, table, CASES};

/// What the oracle finds wrong in a statement admitted as a read.
fn oracle_violations(sql: &str) -> Vec<String> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
        .expect("an admitted statement parses");
    let mut out = Vec::new();
    // The top-level statement is a query or SHOW, or EXPLAIN of a query.
    for raw in &parsed.protobuf.stmts {
        let top = raw.stmt.as_ref().and_then(|node| node.node.as_ref());
        let ok = match top {
            Some(pg_query::NodeEnum::SelectStmt(_))
            | Some(pg_query::NodeEnum::VariableShowStmt(_)) => true,
            Some(pg_query::NodeEnum::ExplainStmt(explain)) => matches!(
                explain.query.as_ref().and_then(|q| q.node.as_ref()),
                Some(pg_query::NodeEnum::SelectStmt(_))
            ),
            _ => false,
        };
        if !ok {
            out.push("typed: the statement is not a query".to_owned());
        }
    }
    // pg_query's typed iterator.
    for (node, _, _, _) in parsed.protobuf.nodes() {
        match node {
            NodeRef::InsertStmt(_)
            | NodeRef::UpdateStmt(_)
            | NodeRef::DeleteStmt(_)
            | NodeRef::MergeStmt(_) => out.push("typed: a data-modifying statement".to_owned()),
            NodeRef::LockingClause(_) => out.push("typed: a locking clause".to_owned()),
            NodeRef::IntoClause(_) => out.push("typed: INTO".to_owned()),
            NodeRef::SelectStmt(select) => {
                if select.into_clause.is_some() {
                    out.push("typed: SELECT INTO".to_owned());
                }
                if !select.locking_clause.is_empty() {
                    out.push("typed: a locking clause".to_owned());
                }
            }
            NodeRef::FuncCall(call) => {
                let names: Vec<String> = call
                    .funcname
                    .iter()
                    .filter_map(|n| match &n.node {
                        Some(pg_query::NodeEnum::String(s)) => Some(s.sval.clone()),
                        _ => None,
                    })
                    .collect();
                if let Some(why) = call_violation(&names, call.args.len()) {
                    out.push(format!("typed: {why}"));
                }
            }
            _ => {}
        }
    }
    // Every node of the tree, by its serde form.
    let tree = serde_json::to_value(&parsed.protobuf).unwrap();
    scan(&tree, &mut out);
    out
}

/// Why a call of `names` with `args` arguments may not be in a read.
fn call_violation(names: &[String], args: usize) -> Option<String> {
    let (schema, name) = match names {
        [name] => (None, name.as_str()),
        [schema, name] | [_, schema, name] => (Some(schema.as_str()), name.as_str()),
        _ => return Some(format!("a call of {names:?}")),
    };
    if !matches!(schema, None | Some("pg_catalog")) {
        return Some(format!("a call of {names:?} outside pg_catalog"));
    }
    if !table().allowed_names.contains(name) {
        return Some(format!("a call of {name}, not an allowed built-in"));
    }
    let never = table().rows.iter().find(|row| {
        row.schema == "pg_catalog"
            && row.name == name
            && NEVER_CATEGORIES.contains(&row.category)
            && row.reaches(args)
    });
    never.map(|row| format!("{name} with {args} arguments is {}", row.category))
}

/// The names of a `funcname` list in serde form.
fn serde_names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            item.get("node")
                .and_then(|node| node.get("String"))
                .and_then(|string| string.get("sval"))
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

fn scan(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match key.as_str() {
                    "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                        out.push(format!("tree: {key}"));
                    }
                    "LockingClause" | "IntoClause" | "CallStmt" => out.push(format!("tree: {key}")),
                    "locking_clause" if child.as_array().is_some_and(|a| !a.is_empty()) => {
                        out.push("tree: locking_clause".to_owned());
                    }
                    "into_clause" if !child.is_null() => out.push("tree: into_clause".to_owned()),
                    "FuncCall" => {
                        let names = child.get("funcname").map(serde_names).unwrap_or_default();
                        let args = child
                            .get("args")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len);
                        if let Some(why) = call_violation(&names, args) {
                            out.push(format!("tree: {why}"));
                        }
                    }
                    _ => {}
                }
                scan(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| scan(item, out)),
        _ => {}
    }
}

#[test]
fn what_is_admitted_as_a_read_only_reads() {
    let allowed = default_allowed();
    let admitted = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);
    run(read_candidates(), |sql| {
        match analyze(&sql, &allowed, &super::super::Snapshot::default()) {
            Ok(verdict) if verdict.class == StatementClass::Read => {
                admitted.set(admitted.get() + 1);
                let violations = oracle_violations(&sql);
                prop_assert!(
                    violations.is_empty(),
                    "{:?} admitted as a read: {:?}",
                    &sql,
                    violations
                );
            }
            Ok(_) => {}
            Err(_) => refused.set(refused.get() + 1),
        }
        Ok(())
    });
    println!(
        "{} of {CASES} admitted as reads, {} refused",
        admitted.get(),
        refused.get()
    );
    assert!(admitted.get() > CASES as usize / 10, "{}", admitted.get());
}

/// The oracle is not blind: it sees what the policy must refuse.
#[test]
fn the_oracle_sees_what_it_must() {
    for sql in [
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT * FROM t FOR UPDATE",
        "SELECT (SELECT a FROM t FOR SHARE)",
        "SELECT * INTO x FROM t",
        "SELECT set_config('a', 'b', false)",
        "SELECT public.f()",
        "SELECT unknown_fn()",
        "SELECT nextval('s')",
        "SELECT ts_rewrite('a'::tsquery, 'SELECT 1')",
        "SELECT 1 FROM t LIMIT (SELECT count(*) FROM pg_read_file('x'))",
    ] {
        assert!(!oracle_violations(sql).is_empty(), "{sql}");
    }
    assert_eq!(
        oracle_violations("SELECT lower('a'), count(*) FROM t"),
        Vec::<String>::new()
    );
}
