//! The SQL policy's function and operator tables match what PostgreSQL 15
//! and 18 actually have: a function in `pg_proc` that the table does not
//! classify (a new version, an upgrade) fails this test, as does a table
//! edited by hand away from the rules in tests/src/function_rules.rs.
//! Regenerate with `cargo run -p mcp-delegate-tests --bin
//! mcp-delegate-function-table`.

use mcp_delegate_tests::function_table::{build_tables, read_catalogs, table_paths};

#[test]
fn the_checked_in_tables_classify_every_function_of_every_version() {
    let catalogs = read_catalogs();
    for (major, functions, operators) in &catalogs {
        assert!(
            functions.len() > 3000,
            "PostgreSQL {major}: {} functions",
            functions.len()
        );
        assert!(
            operators.len() > 700,
            "PostgreSQL {major}: {} operators",
            operators.len()
        );
    }
    let (functions, operators) = build_tables(&catalogs);
    let (function_path, operator_path) = table_paths();
    let checked_in = std::fs::read_to_string(&function_path).unwrap();
    if checked_in != functions {
        let theirs: std::collections::BTreeSet<&str> = checked_in.lines().collect();
        let ours: std::collections::BTreeSet<&str> = functions.lines().collect();
        let missing: Vec<&&str> = ours.difference(&theirs).take(20).collect();
        let stale: Vec<&&str> = theirs.difference(&ours).take(20).collect();
        panic!(
            "{} is out of date: regenerate it (see the module docs).\n\
             not (or not so) in the table: {missing:#?}\nin the table only: {stale:#?}",
            function_path.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(&operator_path).unwrap(),
        operators,
        "{} is out of date",
        operator_path.display()
    );
}
