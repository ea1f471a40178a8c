//! Hostile SQL, run as a read-only user on PostgreSQL 15 and 18, directly
//! and through PgBouncer in transaction mode: every
//! escape we know of from the peers we studied, and variants, and every
//! function that runs query text (core, dblink, tablefunc, xml2) in every
//! place a call can hide, silently or through an error message. None may
//! change data, change identity, or leak another role's rows (the host
//! client checks every response for the `vault` role's canary); each is
//! refused with the expected code (or, where marked, runs harmlessly).

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::pg::PgVersion;
use mcp_delegate_tests::pgfixture::{Delegated, Route};
use serde_json::{json, Value};

const M: &str = "SQL_MULTIPLE_STATEMENTS";
const N: &str = "SQL_NOT_PERMITTED";
const F: &str = "SQL_FORBIDDEN_FUNCTION";
const P: &str = "SQL_PARSE_ERROR";
const D: &str = "DATABASE_ERROR";
/// Allowed to run: it is a read, and the invariants below must still hold.
const OK: &str = "ok";

const CASES: &[(&str, &str)] = &[
    // Stacked statements (the seed's first-keyword classifier lets these through).
    ("SELECT 1; RESET ROLE", M),
    ("SELECT 1; SET ROLE writer", M),
    ("SELECT 1;SELECT 2", M),
    ("COMMIT; SELECT * FROM secrets", M),
    ("ROLLBACK; SET ROLE postgres; SELECT 1", M),
    ("/* c */ SELECT 1; /* c */ DELETE FROM notes", M),
    ("SELECT 1; -- comment\nDROP TABLE notes", M),
    ("select 1;\n\nupdate notes set body = 'x'", M),
    ("SELECT 1;;;SET ROLE writer", M),
    ("SELECT 1; COMMIT; DELETE FROM notes", M),
    // SET / RESET in every spelling.
    ("SET ROLE writer", N),
    ("set role writer", N),
    ("SeT RoLe \"writer\"", N),
    ("RESET ROLE", N),
    ("SET SESSION AUTHORIZATION postgres", N),
    ("RESET SESSION AUTHORIZATION", N),
    ("SET LOCAL ROLE writer", N),
    ("SET search_path = evil", N),
    ("SET LOCAL search_path TO evil, public", N),
    ("RESET ALL", N),
    ("SET statement_timeout = 0", N),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", N),
    ("SET TRANSACTION READ WRITE", N),
    ("/* hi */ SET ROLE writer", N),
    ("SET CONSTRAINTS ALL DEFERRED", N),
    // set_config and friends, anywhere in the tree.
    ("SELECT set_config('role', 'writer', false)", F),
    ("SELECT set_config('search_path', 'evil', false)", F),
    ("SELECT SET_CONFIG('role','writer',true)", F),
    ("SELECT pg_catalog.set_config('role', 'writer', false)", F),
    ("SELECT \"set_config\"('role', 'writer', false)", F),
    ("SELECT * FROM set_config('role', 'writer', false)", F),
    (
        "SELECT * FROM pg_catalog.set_config('role', 'writer', false) AS s(x)",
        F,
    ),
    (
        "SELECT 1 FROM notes WHERE set_config('role', 'writer', false) IS NOT NULL",
        F,
    ),
    (
        "WITH x AS (SELECT set_config('role', 'writer', false)) SELECT * FROM x",
        F,
    ),
    ("SELECT (SELECT set_config('role', 'writer', false))", F),
    (
        "SELECT * FROM notes, LATERAL set_config('role', 'writer', false) s",
        F,
    ),
    (
        "SELECT * FROM ROWS FROM (set_config('role', 'writer', false)) AS r",
        F,
    ),
    (
        "SELECT CASE WHEN true THEN set_config('role', 'writer', false) END",
        F,
    ),
    (
        "SELECT array_agg(set_config('role', 'writer', false)) FROM notes",
        F,
    ),
    ("VALUES (set_config('role', 'writer', false))", F),
    ("EXPLAIN SELECT set_config('role', 'writer', false)", F),
    (
        "SELECT * FROM notes ORDER BY set_config('role', 'writer', false)",
        F,
    ),
    (
        "SELECT coalesce(NULL, set_config('role', 'writer', false))",
        F,
    ),
    (
        "SELECT query_to_xml('select * from secrets', true, true, '')",
        F,
    ),
    ("SELECT query_to_xml('set role writer', true, true, '')", F),
    ("SELECT cursor_to_xml('c', 1, true, true, '')", F),
    (
        "SELECT query_to_xml_and_xmlschema('select 1', true, true, '')",
        F,
    ),
    ("SELECT query_to_xmlschema('select 1', true, true, '')", F),
    ("SELECT dblink('dbname=postgres', 'select 1')", F),
    (
        "SELECT dblink_exec('dbname=postgres', 'drop table notes')",
        F,
    ),
    ("SELECT lo_import('/etc/passwd')", F),
    ("SELECT lo_export(1, '/tmp/x')", F),
    ("SELECT pg_read_file('/etc/passwd')", F),
    ("SELECT pg_read_binary_file('postgresql.conf')", F),
    ("SELECT * FROM pg_ls_dir('.')", F),
    ("SELECT pg_stat_file('postgresql.conf')", F),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", F),
    ("SELECT pg_cancel_backend(1)", F),
    ("SELECT pg_reload_conf()", F),
    ("SELECT pg_notify('chan', 'x')", F),
    ("SELECT pg_advisory_lock(42)", F),
    // Data-modifying statements hidden in reads.
    (
        "WITH d AS (DELETE FROM notes RETURNING *) SELECT * FROM d",
        N,
    ),
    (
        "WITH u AS (UPDATE notes SET body = 'x' RETURNING id) SELECT count(*) FROM u",
        N,
    ),
    (
        "WITH i AS (INSERT INTO notes (body) VALUES ('x') RETURNING id) SELECT * FROM i",
        N,
    ),
    (
        "WITH a AS (SELECT 1), b AS (DELETE FROM notes RETURNING 1) SELECT * FROM a",
        N,
    ),
    (
        "WITH o AS (WITH i AS (DELETE FROM notes RETURNING 1) SELECT * FROM i) SELECT * FROM o",
        N,
    ),
    ("EXPLAIN ANALYZE DELETE FROM notes", N),
    ("EXPLAIN (ANALYZE) UPDATE notes SET body = 'x'", N),
    (
        "EXPLAIN ANALYZE WITH d AS (DELETE FROM notes RETURNING 1) SELECT * FROM d",
        N,
    ),
    ("EXPLAIN DELETE FROM notes", N),
    ("SELECT * FROM notes FOR UPDATE", N),
    ("SELECT * FROM notes FOR SHARE", N),
    ("SELECT * FROM (SELECT * FROM notes FOR UPDATE) s", N),
    ("SELECT * FROM notes FOR NO KEY UPDATE SKIP LOCKED", N),
    ("SELECT * INTO stolen FROM notes", N),
    ("CREATE TABLE stolen AS SELECT * FROM notes", N),
    ("INSERT INTO notes (body) VALUES ('x')", N),
    ("DELETE FROM notes", N),
    ("UPDATE notes SET body = 'x'", N),
    (
        "MERGE INTO notes USING (SELECT 1 AS id) s ON notes.id = s.id WHEN MATCHED THEN DELETE",
        N,
    ),
    ("TRUNCATE notes", N),
    ("DROP TABLE notes", N),
    ("LOCK TABLE notes", N),
    ("ALTER TABLE notes DISABLE ROW LEVEL SECURITY", N),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        N,
    ),
    ("GRANT writer TO reader", N),
    ("CREATE ROLE evil SUPERUSER", N),
    ("ALTER ROLE reader SUPERUSER", N),
    ("DROP ROLE writer", N),
    ("CALL some_procedure()", F),
    // Statements refused for every role.
    ("BEGIN", N),
    ("COMMIT", N),
    ("ROLLBACK", N),
    ("SAVEPOINT s", N),
    ("PREPARE TRANSACTION 'x'", N),
    ("DO $$BEGIN EXECUTE 'SET ROLE writer'; END$$", N),
    (
        "DO $body$ BEGIN PERFORM set_config('role', 'writer', false); END $body$",
        N,
    ),
    ("COPY notes TO STDOUT", N),
    ("COPY (SELECT * FROM secrets) TO '/tmp/x'", N),
    ("LISTEN chan", N),
    ("NOTIFY chan", N),
    ("UNLISTEN *", N),
    ("DISCARD ALL", N),
    ("LOAD 'plpgsql'", N),
    ("ALTER SYSTEM SET work_mem = '1GB'", N),
    ("SECURITY LABEL ON TABLE notes IS 'x'", N),
    ("PREPARE p AS SELECT * FROM secrets", N),
    ("EXECUTE p", N),
    ("DEALLOCATE ALL", N),
    ("DECLARE c CURSOR FOR SELECT 1", N),
    ("FETCH ALL FROM c", N),
    ("CLOSE c", N),
    ("EXPLAIN EXECUTE p", N),
    ("ALTER DATABASE postgres SET search_path = evil", N),
    ("ALTER ROLE reader SET search_path = evil", N),
    // Never-permitted kinds nested in permitted ones: EXECUTE runs the
    // module's own named statement (which sets the role).
    ("CREATE TABLE stolen AS EXECUTE mcpd_set_role('vault')", N),
    (
        "CREATE TEMP TABLE stolen AS EXECUTE mcpd_set_role('vault')",
        N,
    ),
    (
        "EXPLAIN ANALYZE CREATE TEMP TABLE stolen AS EXECUTE mcpd_set_role('vault')",
        N,
    ),
    (
        "CREATE SCHEMA s CREATE TABLE x (a int) CREATE TRIGGER t BEFORE UPDATE ON x \
         FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        N,
    ),
    // Not SQL at all.
    ("", P),
    ("-- only a comment", P),
    ("/* just a comment */", P),
    ("SELEC 1", P),
    ("SELECT 1 \\; DELETE FROM notes", P),
    ("SELECT $$unterminated", P),
    // Quoting that looks dangerous but is one harmless read.
    ("SELECT $$; SET ROLE writer; $$ AS s", OK),
    ("SELECT $tag$ DELETE FROM notes $tag$ AS s", OK),
    ("SELECT 'set_config' AS f", OK),
    ("SELECT 1 AS \"; SET ROLE writer\"", OK),
    ("SELECT current_setting('role') AS r", OK),
    ("SELECT * FROM notes WHERE owner <> current_user", OK),
    ("SELECT * FROM reader_view", OK),
    (
        "SELECT n.body FROM notes n JOIN orders o ON o.note_id = n.id",
        OK,
    ),
    // Statements earlier callers prepared on the pooled session: their
    // SQL text.
    ("SELECT name, statement FROM pg_prepared_statements", F),
    ("SELECT * FROM pg_catalog.pg_prepared_statements", F),
    ("SELECT statement FROM pg_prepared_statement()", F),
    // The database says no, as the reader.
    ("SELECT * FROM secrets", D),
    ("SELECT nextval('notes_id_seq')", N),
    ("SELECT * FROM pg_catalog.pg_authid", D),
    ("SELECT * FROM secrets UNION ALL SELECT 1, 'x'", D),
];

/// Every function that runs query text, as a call (core PostgreSQL, then
/// the dblink, tablefunc and xml2 extensions, which the fixture installs
/// where the server has them; refused by name wherever they are).
const EXECUTORS: &[&str] = &[
    "ts_stat('SELECT to_tsvector(secret) FROM vault_data')",
    "ts_stat($$SELECT set_config('role','vault',false)::tsvector$$)",
    "ts_stat('SELECT to_tsvector(secret) FROM vault_data', 'ab')",
    "pg_catalog.ts_stat('SELECT to_tsvector(secret) FROM vault_data')",
    "ts_rewrite('a'::tsquery, 'SELECT to_tsquery(secret), ''a''::tsquery FROM vault_data')",
    "query_to_xml('SELECT * FROM vault_data', true, false, '')",
    "query_to_xmlschema('SELECT * FROM vault_data', true, false, '')",
    "query_to_xml_and_xmlschema('SELECT * FROM vault_data', true, false, '')",
    "cursor_to_xml('c', 10, true, false, '')",
    "cursor_to_xmlschema('c', true, false, '')",
    "table_to_xml('vault_data', true, false, '')",
    "table_to_xmlschema('vault_data', true, false, '')",
    "table_to_xml_and_xmlschema('vault_data', true, false, '')",
    "schema_to_xml('public', true, false, '')",
    "schema_to_xmlschema('public', true, false, '')",
    "schema_to_xml_and_xmlschema('public', true, false, '')",
    "database_to_xml(true, false, '')",
    "database_to_xmlschema(true, false, '')",
    "database_to_xml_and_xmlschema(true, false, '')",
    "dblink('dbname=postgres', 'SELECT secret FROM vault_data')",
    "public.dblink('dbname=postgres', 'SELECT secret FROM vault_data')",
    "dblink_exec('dbname=postgres', 'SET ROLE vault')",
    "dblink_connect('c', 'dbname=postgres')",
    "dblink_send_query('c', 'SELECT secret FROM vault_data')",
    "dblink_get_result('c')",
    "crosstab('SELECT secret, secret, secret FROM vault_data')",
    "crosstab('SELECT secret, secret, secret FROM vault_data', 'SELECT 1')",
    "crosstab2('SELECT secret, secret, secret FROM vault_data')",
    "crosstab3('SELECT secret, secret, secret FROM vault_data')",
    "crosstab4('SELECT secret, secret, secret FROM vault_data')",
    "connectby('vault_data', 'id', 'id', '1', 0)",
    "xpath_table('id', 'secret', 'vault_data', '/a', 'true')",
    "set_config('role', 'vault', false)",
    "public.set_config('role', 'vault', false)",
];

/// Every place a call can hide; `{}` is the call.
const PLACES: &[&str] = &[
    "SELECT {}",
    "SELECT * FROM {} AS x",
    "SELECT 1 FROM notes, LATERAL (SELECT {}) l",
    "WITH w AS (SELECT {}) SELECT * FROM w",
    "SELECT 1 WHERE EXISTS (SELECT {})",
    "SELECT CASE WHEN current_user = 'reader' THEN (SELECT {})::text END",
    "EXPLAIN ANALYZE SELECT {}",
    // The error channel: the secret would travel in an error message.
    "SELECT CAST((SELECT {})::text AS int)",
    "SELECT 1 / 0 FROM (SELECT {}) e",
    "VALUES ((SELECT {}))",
    "SELECT 1 FROM notes ORDER BY (SELECT {})::text",
    "CREATE VIEW stolen AS SELECT {}",
    "CREATE TABLE stolen (a text DEFAULT ({})::text)",
];

/// Markers of rows the reader must never see.
const FOREIGN: &[&str] = &["writer note", "nobody note", "odd note", "top secret"];

fn digest(db: &Delegated) -> Vec<String> {
    let mut state = db.cluster.query_texts(
        "postgres",
        "SELECT md5(string_agg(id || owner || body, ',' ORDER BY id)) FROM notes",
    );
    state.extend(db.cluster.query_texts(
        "postgres",
        "SELECT md5(string_agg(id || value, ',')) FROM secrets",
    ));
    state.extend(db.cluster.query_texts(
        "postgres",
        "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    ));
    state.extend(db.cluster.query_texts(
        "postgres",
        "SELECT string_agg(rolname || rolsuper::text, ',' ORDER BY rolname) FROM pg_roles",
    ));
    state.extend(db.cluster.query_texts(
        "postgres",
        "SELECT coalesce(string_agg(setrole::text, ','), '') FROM pg_db_role_setting",
    ));
    state
}

fn hostile_sql_changes_nothing_and_leaks_nothing(version: PgVersion, route: Route) {
    assert!(CASES.len() >= 80, "{} cases", CASES.len());
    let mut db = Delegated::start_via(
        version,
        route,
        json!({"pool": {"max": 2, "min": 0, "connectionTimeoutMillis": 3000}}),
    );
    let reader = db.token("reader", &["sql-read"]);
    let admin = db.token("reader", &["sql-read", "sql-write", "sql-admin", "admin"]);
    let before = digest(&db);
    let mut mismatches = Vec::new();
    let mut tried = 0;
    let mut check =
        |db: &mut Delegated, token: &str, sql: &str, expected: &str, reason: Option<&[&str]>| {
            tried += 1;
            let result = db.query_as(token, sql, json!([]));
            let outcome = if result["isError"] == true {
                let error = Host::tool_error(&result);
                if let Some(reasons) = reason {
                    let got = error["reason"].as_str().unwrap_or_default();
                    if !reasons.contains(&got) {
                        mismatches.push(format!(
                            "{sql:?}: reason {got:?}, expected one of {reasons:?}"
                        ));
                    }
                }
                error["error"].as_str().unwrap_or_default().to_owned()
            } else {
                let text = result["structuredContent"].to_string();
                for marker in FOREIGN {
                    assert!(!text.contains(marker), "{sql:?} leaked {marker}: {text}");
                }
                OK.to_owned()
            };
            if outcome != expected {
                mismatches.push(format!(
                    "{sql:?}: expected {expected}, got {outcome}: {result}"
                ));
            }
        };
    for (sql, expected) in CASES {
        check(&mut db, &reader, sql, expected, None);
    }
    // Every query-text executor in every place, for a reader and for a
    // user with every delegated role: refused by name, whatever the class.
    let executor_reasons: &[&str] = &["query-text", "query-text-or-network", "settings"];
    for executor in EXECUTORS {
        for place in PLACES {
            let sql = place.replace("{}", executor);
            check(&mut db, &reader, &sql, F, Some(executor_reasons));
        }
        let sql = format!(
            "INSERT INTO notes (owner, body) SELECT 'vault', x::text FROM (SELECT {executor}) s(x)"
        );
        check(&mut db, &admin, &sql, F, Some(executor_reasons));
    }
    // The statement of the report: another role's rows through ts_stat.
    check(
        &mut db,
        &reader,
        "SELECT b.word FROM ts_stat($$SELECT set_config('role','vault',false)::tsvector$$) a \
         CROSS JOIN LATERAL ts_stat('SELECT to_tsvector(''simple'', body) FROM notes WHERE '||(a.ndoc>0)::text) b \
         CROSS JOIN LATERAL ts_stat('SELECT set_config(''role'',''reader'',false)::tsvector WHERE '||(b.ndoc>0)::text) c",
        F,
        Some(&["query-text"]),
    );
    // A writer switching inside one branch of a UNION.
    check(
        &mut db,
        &admin,
        "INSERT INTO notes (owner, body) SELECT owner, body FROM notes \
         UNION ALL SELECT 'vault', set_config('role', 'vault', false)",
        F,
        Some(&["settings"]),
    );
    assert!(tried >= 150 + CASES.len(), "{tried} statements tried");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert_eq!(digest(&db), before, "data, tables or roles changed");

    // The reader is still the reader, with default settings, on every
    // pooled connection.
    for _ in 0..4 {
        let result = db.query_as(
            &reader,
            "SELECT current_user AS u, session_user AS s, current_setting('search_path') AS p",
            json!([]),
        );
        assert_eq!(
            result["structuredContent"]["rows"][0],
            json!({"u": "reader", "s": "mcp_service", "p": "\"$user\", public"})
        );
    }
    // Every server session the module used (its own, or PgBouncer's,
    // whose idle sessions have no application name after their reset) is
    // idle, as the service account, in no transaction.
    let sessions: Vec<String> = db.cluster.query_texts(
        "postgres",
        "SELECT state || ':' || usename || ':' || (backend_xid IS NULL)::text \
         FROM pg_stat_activity WHERE application_name = 'mcp-delegate/postgresql1' \
            OR (usename = 'mcp_service' AND backend_type = 'client backend')",
    );
    assert!(!sessions.is_empty());
    assert!(
        sessions.iter().all(|s| s == "idle:mcp_service:true"),
        "{sessions:?}"
    );
}

#[test]
fn hostile_sql_on_postgresql_15_changes_nothing_and_leaks_nothing() {
    hostile_sql_changes_nothing_and_leaks_nothing(PgVersion::V15, Route::Direct);
}

#[test]
fn hostile_sql_on_postgresql_18_changes_nothing_and_leaks_nothing() {
    hostile_sql_changes_nothing_and_leaks_nothing(PgVersion::V18, Route::Direct);
}

#[test]
fn hostile_sql_through_pgbouncer_on_postgresql_15_changes_nothing_and_leaks_nothing() {
    hostile_sql_changes_nothing_and_leaks_nothing(PgVersion::V15, Route::PgBouncer);
}

#[test]
fn hostile_sql_through_pgbouncer_on_postgresql_18_changes_nothing_and_leaks_nothing() {
    hostile_sql_changes_nothing_and_leaks_nothing(PgVersion::V18, Route::PgBouncer);
}

fn the_same_statements_are_refused_before_reaching_the_database(route: Route) {
    // Refusals make no round trip: with the database stopped they still
    // answer with the policy's code, not DATABASE_UNAVAILABLE.
    let mut db = Delegated::start_via(PgVersion::V15, route, json!({}));
    let reader = db.token("reader", &["sql-read"]);
    db.cluster.stop();
    for (sql, expected) in CASES.iter().filter(|(_, code)| [M, N, F, P].contains(code)) {
        let result = db.query_as(&reader, sql, json!([]));
        let error: Value = Host::tool_error(&result);
        assert_eq!(error["error"], *expected, "{sql:?}");
    }
    db.cluster.restart();
}

mcp_delegate_tests::on_every_route!(the_same_statements_are_refused_before_reaching_the_database);
