//! Regenerates the SQL policy's function and operator tables
//! (plugins/postgresql/data/*.tsv) from the catalogs of throwaway
//! PostgreSQL 15 and 18 clusters. Run after changing
//! tests/src/function_rules.rs or adding a PostgreSQL version;
//! `tests/function_table.rs` fails until the checked-in tables match.

use mcp_delegate_tests::function_table::{build_tables, read_catalogs, table_paths};

fn main() {
    let (functions, operators) = build_tables(&read_catalogs());
    let (function_path, operator_path) = table_paths();
    std::fs::create_dir_all(function_path.parent().expect("data dir")).expect("create data dir");
    std::fs::write(&function_path, functions).expect("write functions.tsv");
    std::fs::write(&operator_path, operators).expect("write operators.tsv");
    println!(
        "wrote {} and {}",
        function_path.display(),
        operator_path.display()
    );
}
