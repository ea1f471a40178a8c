//! Calling built-in functions with sample arguments built from their
//! argument types, and comparing a session's state before and after: the
//! machinery of `tests/function_sweep.rs`.

use std::collections::{BTreeMap, BTreeSet};

use postgres::{Client, NoTls, SimpleQueryMessage};

use crate::pg::Cluster;

/// One argument type, as the server describes it.
#[derive(Debug, Clone)]
pub struct ArgType {
    pub typname: String,
    pub typtype: char,
    /// `format_type(oid, NULL)`: a name a cast can use.
    pub formatted: String,
    /// The element's typname, for an array type.
    pub element: Option<String>,
}

/// One function of the running server.
#[derive(Debug, Clone)]
pub struct Proc {
    pub kind: char,
    pub variadic: bool,
    pub args: Vec<ArgType>,
    /// `n` for a plain aggregate or a non-aggregate, `o` ordered-set,
    /// `h` hypothetical-set.
    pub agg_kind: char,
    pub direct_args: usize,
}

/// Every `pg_catalog` function of the server, by (name, identity args).
pub fn load_procs(client: &mut Client) -> BTreeMap<(String, String), Proc> {
    let sql = r#"
        SELECT p.proname::text, pg_catalog.pg_get_function_identity_arguments(p.oid),
               p.prokind::text, p.provariadic <> 0,
               ARRAY(SELECT t.typname::text || '|' || t.typtype::text || '|'
                            || pg_catalog.format_type(t.oid, NULL) || '|'
                            || coalesce(e.typname::text, '')
                     FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(oid, i)
                     JOIN pg_catalog.pg_type t ON t.oid = a.oid
                     LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
                     ORDER BY a.i),
               coalesce(g.aggkind::text, 'n'), coalesce(g.aggnumdirectargs, 0)::int4
        FROM pg_catalog.pg_proc p
        LEFT JOIN pg_catalog.pg_aggregate g ON g.aggfnoid = p.oid
        WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace"#;
    client
        .query(sql, &[])
        .expect("read pg_proc")
        .iter()
        .map(|row| {
            let args: Vec<String> = row.get(4);
            let args = args
                .iter()
                .map(|arg| {
                    let parts: Vec<&str> = arg.splitn(4, '|').collect();
                    ArgType {
                        typname: parts[0].to_owned(),
                        typtype: parts[1].chars().next().unwrap_or('b'),
                        formatted: parts[2].to_owned(),
                        element: Some(parts[3].to_owned()).filter(|e| !e.is_empty()),
                    }
                })
                .collect();
            (
                (row.get(0), row.get(1)),
                Proc {
                    kind: row.get::<_, String>(2).chars().next().unwrap_or('f'),
                    variadic: row.get(3),
                    args,
                    agg_kind: row.get::<_, String>(5).chars().next().unwrap_or('n'),
                    direct_args: usize::try_from(row.get::<_, i32>(6)).unwrap_or(0),
                },
            )
        })
        .collect()
}

/// A typed sample value of a named type.
pub fn sample(typname: &str) -> Option<&'static str> {
    Some(match typname {
        "bool" => "true",
        "int2" => "1::int2",
        "int4" => "1::int4",
        "int8" => "1::int8",
        "float4" => "0.5::float4",
        "float8" => "0.5::float8",
        "numeric" => "1.5::numeric",
        "oid" => "1259::oid",
        "text" => "'a'::text",
        "varchar" => "'a'::varchar",
        "bpchar" => "'a'::bpchar",
        "char" => "'a'::\"char\"",
        "name" => "'a'::name",
        "bytea" => "'\\x0102'::bytea",
        "date" => "'2025-01-01'::date",
        "time" => "'12:00'::time",
        "timetz" => "'12:00+00'::timetz",
        "timestamp" => "'2025-01-01 00:00'::timestamp",
        "timestamptz" => "'2025-01-01 00:00+00'::timestamptz",
        "interval" => "'1 day'::interval",
        "json" => "'{\"a\": [1, 2]}'::json",
        "jsonb" => "'{\"a\": [1, 2]}'::jsonb",
        "jsonpath" => "'$.a'::jsonpath",
        "xml" => "'<a>1</a>'::xml",
        "uuid" => "'00000000-0000-0000-0000-000000000001'::uuid",
        "inet" => "'127.0.0.1'::inet",
        "cidr" => "'10.0.0.0/8'::cidr",
        "macaddr" => "'08:00:2b:01:02:03'::macaddr",
        "macaddr8" => "'08:00:2b:01:02:03:04:05'::macaddr8",
        "money" => "'1.00'::money",
        "bit" => "B'1'::bit",
        "varbit" => "B'101'::varbit",
        "point" => "'(1,2)'::point",
        "lseg" => "'[(0,0),(1,1)]'::lseg",
        "line" => "'{1,-1,0}'::line",
        "box" => "'(1,1),(0,0)'::box",
        "path" => "'[(0,0),(1,1),(2,0)]'::path",
        "polygon" => "'((0,0),(1,1),(1,0))'::polygon",
        "circle" => "'<(0,0),1>'::circle",
        "tsvector" => "'a b'::tsvector",
        "tsquery" => "'a & b'::tsquery",
        "regconfig" => "'simple'::regconfig",
        "regdictionary" => "'simple'::regdictionary",
        "regclass" => "'pg_catalog.pg_class'::regclass",
        "regproc" => "'pg_catalog.now'::regproc",
        "regprocedure" => "'pg_catalog.now()'::regprocedure",
        "regoper" => "96::oid::regoper",
        "regoperator" => "'=(int4,int4)'::regoperator",
        "regtype" => "'int4'::regtype",
        "regnamespace" => "'pg_catalog'::regnamespace",
        "regrole" => "'low'::regrole",
        "regcollation" => "'\"C\"'::regcollation",
        "regdatabase" => "'postgres'::regdatabase",
        "pg_lsn" => "'0/16B3748'::pg_lsn",
        "xid" => "'1'::xid",
        "xid8" => "'1'::xid8",
        "cid" => "'1'::cid",
        "tid" => "'(0,1)'::tid",
        "txid_snapshot" => "'10:20:10,14,15'::txid_snapshot",
        "pg_snapshot" => "'10:20:10,14,15'::pg_snapshot",
        "int2vector" => "'1 2'::int2vector",
        "oidvector" => "'23 25'::oidvector",
        "aclitem" => "'low=r/postgres'::aclitem",
        "refcursor" => "'c'::refcursor",
        "int4range" => "'[1,3)'::int4range",
        "int8range" => "'[1,3)'::int8range",
        "numrange" => "'[1.5,3)'::numrange",
        "daterange" => "'[2025-01-01,2025-02-01)'::daterange",
        "tsrange" => "'[2025-01-01,2025-02-01)'::tsrange",
        "tstzrange" => "'[2025-01-01,2025-02-01)'::tstzrange",
        "int4multirange" => "'{[1,3)}'::int4multirange",
        "int8multirange" => "'{[1,3)}'::int8multirange",
        "nummultirange" => "'{[1.5,3)}'::nummultirange",
        "datemultirange" => "'{[2025-01-01,2025-02-01)}'::datemultirange",
        "tsmultirange" => "'{[2025-01-01,2025-02-01)}'::tsmultirange",
        "tstzmultirange" => "'{[2025-01-01,2025-02-01)}'::tstzmultirange",
        "_int4" => "'{1,2}'::int4[]",
        "_text" => "'{a,b}'::text[]",
        "_float8" => "'{0.25,0.5}'::float8[]",
        // Polymorphic and pseudo-types.
        "anyelement" | "anynonarray" | "anycompatible" | "anycompatiblenonarray" | "any" => {
            "1::int4"
        }
        "anyarray" | "anycompatiblearray" => "'{1,2}'::int4[]",
        "anyrange" | "anycompatiblerange" => "'[1,3)'::int4range",
        "anymultirange" | "anycompatiblemultirange" => "'{[1,3)}'::int4multirange",
        "anyenum" => "'happy'::public.sweep_mood",
        "record" => "ROW(1, 'a'::text)",
        _ => return None,
    })
}

/// The literal for one argument of `function`, or why there is none.
pub fn literal(function: &str, arg: &ArgType) -> Result<String, String> {
    // Sleeps sleep for nothing; sequences name ours.
    if function.starts_with("pg_sleep") {
        match arg.typname.as_str() {
            "float8" => return Ok("0::float8".into()),
            "interval" => return Ok("'0 s'::interval".into()),
            _ => {}
        }
    }
    if matches!(function, "nextval" | "setval" | "currval") && arg.typname == "regclass" {
        return Ok("'public.sweep_s'::regclass".into());
    }
    if let Some(value) = sample(&arg.typname) {
        return Ok(value.to_owned());
    }
    if arg.typtype == 'p' {
        return Err(format!("no sample of the pseudo-type {}", arg.typname));
    }
    if let Some(element) = &arg.element {
        if let Some(value) = sample(element) {
            return Ok(format!("ARRAY[{value}]"));
        }
    }
    Ok(format!("NULL::{}", arg.formatted))
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statement that calls `name` once with sample arguments.
pub fn call_sql(name: &str, proc: &Proc) -> Result<String, String> {
    if proc.kind == 'p' {
        return Err("a procedure (CALL, not SELECT)".into());
    }
    let mut args = proc
        .args
        .iter()
        .map(|arg| literal(name, arg))
        .collect::<Result<Vec<String>, String>>()?;
    // A VARIADIC array parameter takes the array as a whole; VARIADIC
    // "any" takes the values one by one.
    if proc.variadic {
        if let (Some(last), Some(arg)) = (args.last_mut(), proc.args.last()) {
            if arg.typname != "any" {
                *last = format!("VARIADIC {last}");
            }
        }
    }
    let function = format!("pg_catalog.{}", quote_ident(name));
    let call = match (proc.kind, proc.agg_kind) {
        ('w', _) => format!("{function}({}) OVER ()", args.join(", ")),
        ('a', 'o') => {
            let ordered = args.split_off(proc.direct_args.min(args.len()));
            format!(
                "{function}({}) WITHIN GROUP (ORDER BY {})",
                args.join(", "),
                ordered.join(", ")
            )
        }
        ('a', 'h') => format!(
            "{function}({}) WITHIN GROUP (ORDER BY {})",
            args.join(", "),
            args.join(", ")
        ),
        // A parameterless aggregate takes `*`.
        ('a', _) if args.is_empty() => format!("{function}(*)"),
        _ => format!("{function}({})", args.join(", ")),
    };
    Ok(format!("SELECT {call} LIMIT 3"))
}

/// The session state a call must not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub current_user: String,
    pub session_user: String,
    /// `name=setting (source)` of every setting, one a line.
    pub settings: String,
    pub advisory_locks: String,
    pub prepared_statements: String,
    pub listening_channels: String,
    pub cursors: String,
}

pub const SNAPSHOT_SQL: &str = r#"
SELECT CURRENT_USER::text, SESSION_USER::text,
  (SELECT pg_catalog.string_agg(name || '=' || coalesce(setting, '') || ' (' || source || ')',
                                E'\n' ORDER BY name)
   FROM pg_catalog.pg_settings),
  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks
   WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()),
  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements),
  (SELECT coalesce(pg_catalog.string_agg(c, ',' ORDER BY c), '')
   FROM pg_catalog.pg_listening_channels() c),
  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors)"#;

pub fn snapshot(client: &mut Client) -> Result<State, String> {
    let messages = client
        .simple_query(SNAPSHOT_SQL)
        .map_err(|err| format!("the state could not be read: {err}"))?;
    let row = messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or("the state query returned no row")?;
    let text = |i: usize| row.get(i).unwrap_or_default().to_owned();
    Ok(State {
        current_user: text(0),
        session_user: text(1),
        settings: text(2),
        advisory_locks: text(3),
        prepared_statements: text(4),
        listening_channels: text(5),
        cursors: text(6),
    })
}

/// What differs between two states; `locks_ok`: a transaction-level
/// advisory lock is expected before the rollback.
pub fn differences(before: &State, after: &State, locks_ok: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |what: &str, a: &str, b: &str| {
        if a != b {
            out.push(format!("{what}: {a:?} -> {b:?}"));
        }
    };
    field("current_user", &before.current_user, &after.current_user);
    field("session_user", &before.session_user, &after.session_user);
    if !locks_ok {
        field(
            "advisory locks",
            &before.advisory_locks,
            &after.advisory_locks,
        );
    }
    field(
        "prepared statements",
        &before.prepared_statements,
        &after.prepared_statements,
    );
    field(
        "listening channels",
        &before.listening_channels,
        &after.listening_channels,
    );
    field("cursors", &before.cursors, &after.cursors);
    if before.settings != after.settings {
        let old: BTreeSet<&str> = before.settings.lines().collect();
        let new: BTreeSet<&str> = after.settings.lines().collect();
        let gone: Vec<&&str> = old.difference(&new).collect();
        let came: Vec<&&str> = new.difference(&old).collect();
        out.push(format!("settings: {gone:?} -> {came:?}"));
    }
    out
}

/// What one call did.
pub struct Probe {
    /// The SQLSTATE of the call's error, if it failed.
    pub error: Option<String>,
    pub changes: Vec<String>,
}

/// Calls `sql` inside a savepoint and compares the state with `baseline`
/// before and after rolling back to the savepoint.
pub fn probe(client: &mut Client, sql: &str, baseline: &State, locks_ok: bool) -> Probe {
    client.batch_execute("SAVEPOINT s").expect("savepoint");
    let result = client.simple_query(sql);
    assert!(!client.is_closed(), "{sql} closed the connection");
    let mut changes = Vec::new();
    let error = match result {
        Ok(_) => {
            match snapshot(client) {
                Ok(now) => changes.extend(
                    differences(baseline, &now, locks_ok)
                        .into_iter()
                        .map(|d| format!("before rollback: {d}")),
                ),
                Err(err) => changes.push(format!("before rollback: {err}")),
            }
            None
        }
        Err(err) => {
            if std::env::var_os("SWEEP_VERBOSE").is_some() {
                println!(
                    "{sql}: {}",
                    err.as_db_error()
                        .map_or_else(|| err.to_string(), |e| e.message().to_owned())
                );
            }
            Some(
                err.code()
                    .map_or_else(|| err.to_string(), |code| code.code().to_owned()),
            )
        }
    };
    client
        .batch_execute("ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s")
        .expect("rollback to savepoint");
    match snapshot(client) {
        Ok(now) => changes.extend(
            differences(baseline, &now, false)
                .into_iter()
                .map(|d| format!("after rollback to savepoint: {d}")),
        ),
        Err(err) => changes.push(format!("after rollback to savepoint: {err}")),
    }
    Probe { error, changes }
}

/// The session of the sweep: `svc` over the Unix socket, `SET ROLE low`,
/// a statement timeout, one open transaction.
pub fn sweep_session(cluster: &Cluster) -> Client {
    let url = cluster
        .admin_url("postgres")
        .replace("user=postgres", "user=svc");
    assert!(url.contains("user=svc"), "{url}");
    let mut client = Client::connect(&url, NoTls).expect("connect as svc");
    client
        .batch_execute("SET statement_timeout = '2s'; SET ROLE low; BEGIN")
        .expect("session setup");
    client
}
