//! The SQL policy's function and operator tables match what PostgreSQL 15
//! and 18 actually have: a function in `pg_proc` that the table does not
//! classify (a new version, an upgrade) fails this test, as does a table
//! edited by hand away from the rules in tests/src/function_rules.rs.
//! Differences that deny-by-default already covers pass with a note, so a
//! new minor release of PostgreSQL does not stop CI: a function the table
//! lacks (the policy refuses a call that no overload it knows takes)
//! unless a known overload takes as many arguments and the missing one is
//! not itself allowed, and a denied row for a function this machine's
//! PostgreSQL lacks.
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
    let problems = differences_that_matter(&checked_in, &functions);
    assert!(
        problems.is_empty(),
        "{} is out of date: regenerate it (see the module docs).\n{problems:#?}",
        function_path.display()
    );
    assert_eq!(
        std::fs::read_to_string(&operator_path).unwrap(),
        operators,
        "{} is out of date",
        operator_path.display()
    );
}

/// One table row: (schema, name, identity arguments) → (min_args,
/// max_args, verdict, category); the versions column is left out.
type Rows<'t> = std::collections::BTreeMap<(&'t str, &'t str, &'t str), [&'t str; 4]>;

fn rows(text: &str) -> Rows<'_> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 8, "{line}");
            ((f[0], f[1], f[2]), [f[3], f[4], f[5], f[6]])
        })
        .collect()
}

/// Whether the argument counts `a` and `b` ([min, max], max empty for
/// variadic) share any count.
fn ranges_overlap(a: &[&str; 4], b: &[&str; 4]) -> bool {
    let bound = |min: &str, max: &str| {
        let min: usize = min.parse().unwrap();
        (min, max.parse::<usize>().unwrap_or(usize::MAX))
    };
    let (a_min, a_max) = bound(a[0], a[1]);
    let (b_min, b_max) = bound(b[0], b[1]);
    a_min <= b_max && b_min <= a_max
}

/// What makes the checked-in table differ from the rules applied to this
/// machine's catalogs in a way the policy could feel.
fn differences_that_matter(checked_in: &str, generated: &str) -> Vec<String> {
    let table = rows(checked_in);
    let live = rows(generated);
    let mut problems = Vec::new();
    for (key, row) in &live {
        match table.get(key) {
            Some(known) if known == row => {}
            Some(known) => problems.push(format!("{key:?}: table {known:?}, rules {row:?}")),
            None => {
                // The policy judges a name by the overloads it knows that
                // take as many arguments; a call no known overload takes is
                // refused as unknown. A missing overload of a known name
                // is harmless only where no known overload could answer
                // for it, that is where none of its argument counts is
                // taken by a known one.
                let answered_for = table.iter().any(|((schema, name, _), known)| {
                    (*schema, *name) == (key.0, key.1) && ranges_overlap(known, row)
                });
                if answered_for && row[2] != "allow" {
                    problems.push(format!(
                        "{key:?} {row:?}: not in the table, and a known overload \
                         of the name takes as many arguments"
                    ));
                } else {
                    eprintln!("note: {key:?} is not in the table (refused as unknown); regenerate");
                }
            }
        }
    }
    for (key, row) in &table {
        if !live.contains_key(key) {
            if row[2] == "deny" {
                eprintln!("note: {key:?} is not in this machine's PostgreSQL");
            } else {
                problems.push(format!("{key:?} {row:?}: allowed, but no such function"));
            }
        }
    }
    problems
}

#[test]
fn differences_are_judged_by_what_the_policy_would_do() {
    let header = "# schema\tname\tidentity_args\tmin_args\tmax_args\tverdict\tcategory\tversions\n";
    let table = format!(
        "{header}pg_catalog\tlower\ttext\t1\t1\tallow\tpure\t15,18\n\
         pg_catalog\told\ttext\t1\t1\tdeny\tload-code\t15\n"
    );
    let same = table.replace("\t15\n", "\t15,18\n");
    assert!(differences_that_matter(&table, &same).is_empty());
    // A new denied function under a new name: covered by deny-by-default.
    let new_name = format!("{table}pg_catalog\tbinary_x\toid\t1\t1\tdeny\tload-code\t15\n");
    assert!(differences_that_matter(&table, &new_name).is_empty());
    // A new denied overload in reach of an allowed one: the policy would
    // allow the name with one argument, so the table must know it.
    let new_overload = format!("{table}pg_catalog\tlower\tbytea\t1\t1\tdeny\tfiles\t15\n");
    assert_eq!(differences_that_matter(&table, &new_overload).len(), 1);
    // ...or one that writes, for a read.
    let new_write = format!("{table}pg_catalog\tlower\tint8\t1\t1\twrite\tsequence\t15\n");
    assert_eq!(differences_that_matter(&table, &new_write).len(), 1);
    // A new overload with an argument count no known one takes: the policy
    // refuses such calls as unknown.
    let other_count =
        format!("{table}pg_catalog\tlower\ttext, text, text\t3\t3\tdeny\tfiles\t15\n");
    assert!(differences_that_matter(&table, &other_count).is_empty());
    // A new function the rules allow is refused as unknown until the
    // table is regenerated: a loss, not a hole.
    let new_allowed = format!("{table}pg_catalog\tupper2\ttext\t1\t1\tallow\tpure\t15\n");
    assert!(differences_that_matter(&table, &new_allowed).is_empty());
    // A changed verdict, a vanished allowed row.
    let changed = table.replace("allow\tpure", "deny\tfiles");
    assert_eq!(differences_that_matter(&table, &changed).len(), 1);
    let without_lower = table.replace("pg_catalog\tlower\ttext\t1\t1\tallow\tpure\t15,18\n", "");
    assert_eq!(differences_that_matter(&table, &without_lower).len(), 1);
    // A denied row this machine lacks is harmless.
    let without_old = table.replace("pg_catalog\told\ttext\t1\t1\tdeny\tload-code\t15\n", "");
    assert!(differences_that_matter(&table, &without_old).is_empty());
}
