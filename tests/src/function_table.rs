//! Reading the catalogs of real clusters and writing the policy's tables
//! (plugins/postgresql/data/functions.tsv and operators.tsv) from them,
//! with the rules of [`crate::function_rules`].

use std::collections::BTreeMap;

use crate::function_rules::{classify, ProcRow, Verdict};

/// A table's lines by key: (line without versions, verdict, versions).
type Lines = BTreeMap<(String, String, String), (String, Verdict, Vec<u32>)>;

/// Reads every function of `pg_catalog` and `information_schema`.
pub fn load(client: &mut postgres::Client) -> Vec<ProcRow> {
    let sql = r#"
        SELECT n.nspname::text, p.proname::text,
               pg_catalog.pg_get_function_identity_arguments(p.oid),
               p.prokind::text, p.provolatile::text,
               p.pronargs::int4, p.pronargdefaults::int4, p.provariadic <> 0,
               ARRAY(SELECT t.typname::text
                     FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(oid, i)
                     JOIN pg_catalog.pg_type t ON t.oid = a.oid ORDER BY a.i),
               (SELECT t.typname::text FROM pg_catalog.pg_type t WHERE t.oid = p.prorettype),
               EXISTS (SELECT 1 FROM pg_catalog.pg_type t
                       WHERE p.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend,
                                       t.typmodin, t.typmodout, t.typanalyze, t.typsubscript))
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('pg_catalog', 'information_schema')"#;
    client
        .query(sql, &[])
        .expect("read pg_proc")
        .iter()
        .map(|row| ProcRow {
            schema: row.get(0),
            name: row.get(1),
            identity_args: row.get(2),
            kind: row.get::<_, String>(3).chars().next().unwrap_or('f'),
            volatility: row.get::<_, String>(4).chars().next().unwrap_or('v'),
            nargs: row.get(5),
            ndefaults: row.get(6),
            variadic: row.get(7),
            arg_types: row.get(8),
            ret_type: row.get::<_, Option<String>>(9).unwrap_or_default(),
            type_io: row.get(10),
        })
        .collect()
}

/// One line of functions.tsv, without the versions column.
pub fn table_line(row: &ProcRow) -> String {
    let (category, verdict) = classify(row);
    let min = row.nargs - row.ndefaults;
    let max = if row.variadic {
        "*".to_owned()
    } else {
        row.nargs.to_string()
    };
    format!(
        "{}\t{}\t{}\t{min}\t{max}\t{}\t{category}",
        row.schema,
        row.name,
        row.identity_args,
        verdict.as_str()
    )
}

/// The header of functions.tsv.
pub const TABLE_HEADER: &str =
    "# schema\tname\tidentity_args\tmin_args\tmax_args\tverdict\tcategory\tversions";

/// One operator of `pg_catalog` and the function behind it.
#[derive(Debug, Clone)]
pub struct OperatorRow {
    pub symbol: String,
    pub left: String,
    pub right: String,
    /// The function's name and identity arguments, to look up its verdict.
    pub function: String,
    pub function_args: String,
}

/// Reads every operator of `pg_catalog`.
pub fn load_operators(client: &mut postgres::Client) -> Vec<OperatorRow> {
    let sql = r#"
        SELECT o.oprname::text,
               coalesce((SELECT typname::text FROM pg_catalog.pg_type WHERE oid = o.oprleft), 'none'),
               coalesce((SELECT typname::text FROM pg_catalog.pg_type WHERE oid = o.oprright), 'none'),
               p.proname::text, pg_catalog.pg_get_function_identity_arguments(p.oid)
        FROM pg_catalog.pg_operator o
        JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
        JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
        WHERE n.nspname = 'pg_catalog'"#;
    client
        .query(sql, &[])
        .expect("read pg_operator")
        .iter()
        .map(|row| OperatorRow {
            symbol: row.get(0),
            left: row.get(1),
            right: row.get(2),
            function: row.get(3),
            function_args: row.get(4),
        })
        .collect()
}

/// functions.tsv and operators.tsv, from the catalogs of every version:
/// one line per function (by schema, name and identity arguments) with
/// the versions that have it; where versions disagree, the stricter
/// verdict wins.
pub fn build_tables(versions: &[(u32, Vec<ProcRow>, Vec<OperatorRow>)]) -> (String, String) {
    let mut functions = Lines::new();
    for (major, rows, _) in versions {
        for row in rows {
            let key = (
                row.schema.clone(),
                row.name.clone(),
                row.identity_args.clone(),
            );
            let line = table_line(row);
            let verdict = classify(row).1;
            let entry = functions
                .entry(key)
                .or_insert_with(|| (line.clone(), verdict, Vec::new()));
            if verdict > entry.1 {
                *entry = (line, verdict, std::mem::take(&mut entry.2));
            }
            entry.2.push(*major);
        }
    }
    let mut function_text = format!(
        "# Generated by `cargo run -p mcp-delegate-tests --bin mcp-delegate-function-table`\n\
         # from pg_proc of PostgreSQL {}; rules in tests/src/function_rules.rs.\n{TABLE_HEADER}\n",
        versions
            .iter()
            .map(|(major, _, _)| major.to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    for (line, _, majors) in functions.values() {
        let majors: Vec<String> = majors.iter().map(u32::to_string).collect();
        function_text.push_str(&format!("{line}\t{}\n", majors.join(",")));
    }
    let verdict_of = |name: &str, args: &str| {
        functions
            .get(&("pg_catalog".to_owned(), name.to_owned(), args.to_owned()))
            .map_or(Verdict::Deny, |(_, verdict, _)| *verdict)
    };
    let mut operators = Lines::new();
    for (major, _, rows) in versions {
        for row in rows {
            let verdict = verdict_of(&row.function, &row.function_args);
            let entry = operators
                .entry((row.symbol.clone(), row.left.clone(), row.right.clone()))
                .or_insert_with(|| {
                    (
                        format!("{}({})", row.function, row.function_args),
                        verdict,
                        Vec::new(),
                    )
                });
            entry.1 = entry.1.max(verdict);
            entry.2.push(*major);
        }
    }
    let mut operator_text = String::from(
        "# Generated with functions.tsv: every pg_catalog operator, the function behind it and\n\
         # that function's verdict.\n# symbol\tleft\tright\tfunction\tverdict\tversions\n",
    );
    for ((symbol, left, right), (function, verdict, majors)) in &operators {
        let majors: Vec<String> = majors.iter().map(u32::to_string).collect();
        operator_text.push_str(&format!(
            "{symbol}\t{left}\t{right}\t{function}\t{}\t{}\n",
            verdict.as_str(),
            majors.join(",")
        ));
    }
    (function_text, operator_text)
}

/// Starts a cluster of every version and reads its catalogs.
pub fn read_catalogs() -> Vec<(u32, Vec<ProcRow>, Vec<OperatorRow>)> {
    crate::pg::PgVersion::ALL
        .iter()
        .map(|&version| {
            let cluster = crate::pg::Cluster::start_version(version);
            let mut client =
                postgres::Client::connect(&cluster.admin_url("postgres"), postgres::NoTls)
                    .expect("superuser connection");
            (
                version.major(),
                load(&mut client),
                load_operators(&mut client),
            )
        })
        .collect()
}

/// Where the tables live in the repository.
pub fn table_paths() -> (std::path::PathBuf, std::path::PathBuf) {
    let data = crate::paths::workspace_root().join("plugins/postgresql/data");
    (data.join("functions.tsv"), data.join("operators.tsv"))
}
