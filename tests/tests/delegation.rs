//! Delegated execution against a real cluster: identities, RLS, roles.

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::pg::PgVersion;
use mcp_delegate_tests::pgfixture::{rows, Delegated, Route};
use serde_json::json;

fn each_user_sees_exactly_their_rows_as_their_own_role(route: Route) {
    let mut db = Delegated::start_via(PgVersion::V15, route, json!({}));
    let reader = db.token("reader", &["sql-read"]);
    let writer = db.token("writer", &["sql-read", "sql-write"]);
    let nobody = db.token("nobody", &[]);
    let odd = db.token("DOMAIN\\odd \"user\"", &[]);

    let seen = rows(&db.query_as(
        &reader,
        "SELECT body, current_user AS me FROM notes ORDER BY id",
        json!([]),
    ));
    assert_eq!(
        seen,
        [
            json!({"body": "reader note 1", "me": "reader"}),
            json!({"body": "reader note 2", "me": "reader"})
        ]
    );
    let seen = rows(&db.query_as(
        &odd,
        "SELECT body, current_user AS me FROM notes",
        json!([]),
    ));
    assert_eq!(
        seen,
        [json!({"body": "odd note", "me": "DOMAIN\\odd \"user\""})]
    );
    let seen = rows(&db.query_as(&writer, "SELECT body FROM notes", json!([])));
    assert_eq!(seen, [json!({"body": "writer note"})]);

    // No grant: PostgreSQL says no, as that user.
    let error = Host::tool_error(&db.query_as(&nobody, "SELECT * FROM notes", json!([])));
    assert_eq!(error["error"], "DATABASE_ERROR");
    assert_eq!(error["sqlstate"], "42501");
    assert!(!error.to_string().contains("mcp_service"), "{error}");

    // Writes need sql-write; RLS still applies to them.
    let error = Host::tool_error(&db.query_as(
        &reader,
        "INSERT INTO notes (body) VALUES ($1)",
        json!(["x"]),
    ));
    assert_eq!(error["error"], "SQL_NOT_PERMITTED");
    assert_eq!(error["requiredRole"], "sql-write");
    assert_eq!(error["statementKind"], "INSERT");
    let result = db.query_as(
        &writer,
        "INSERT INTO notes (body) VALUES ($1)",
        json!(["fresh"]),
    );
    assert_eq!(
        result["structuredContent"],
        json!({"rowCount": 1, "command": "INSERT", "message": "Successfully inserted 1 row"})
    );
    let result = db.query_as(&writer, "UPDATE notes SET body = body || '!'", json!([]));
    assert_eq!(
        result["structuredContent"]["message"],
        "Successfully updated 2 rows"
    );
    let error = Host::tool_error(&db.query_as(
        &writer,
        "INSERT INTO notes (owner, body) VALUES ('reader', 'forged')",
        json!([]),
    ));
    assert_eq!(error["sqlstate"], "42501", "{error}");
    let owners = db.cluster.query_texts(
        "postgres",
        "SELECT owner || ':' || body FROM notes ORDER BY id",
    );
    assert!(owners.contains(&"writer:fresh!".to_owned()), "{owners:?}");
    assert!(!owners.iter().any(|row| row.contains("forged")));
}

fn parameters_are_untyped_like_node_postgres_and_counted(route: Route) {
    let mut db = Delegated::start_via(PgVersion::V15, route, json!({}));
    let reader = db.token("reader", &["sql-read"]);
    let seen = rows(&db.query_as(&reader, "SELECT body FROM notes WHERE id = $1", json!([1])));
    assert_eq!(seen, [json!({"body": "reader note 1"})]);
    let seen = rows(&db.query_as(
        &reader,
        "SELECT count(*) AS n FROM notes WHERE created_at > $1 AND body LIKE $2",
        json!(["2000-01-01", "reader%"]),
    ));
    assert_eq!(seen, [json!({"n": "2"})]);
    let seen = rows(&db.query_as(
        &reader,
        "SELECT $1::int + 1 AS n, $2::bool AS b, $3::text IS NULL AS z",
        json!([41, true, null]),
    ));
    assert_eq!(seen, [json!({"n": 42, "b": true, "z": true})]);
    let error = Host::tool_error(&db.query_as(&reader, "SELECT $1, $2", json!([1])));
    assert_eq!(error["error"], "SQL_PARAMETER_COUNT");
    assert_eq!(
        (error["expected"].as_u64(), error["given"].as_u64()),
        (Some(2), Some(1))
    );
    let error = Host::tool_error(&db.query_as(&reader, "SELECT 1", json!([1])));
    assert_eq!(error["error"], "SQL_PARAMETER_COUNT");
}

/// The delegated transaction is read-only for reads (even inside
/// functions, and it cannot be switched back), atomic for writes, and a
/// write whose identity changes mid-statement commits nothing.
fn reads_cannot_write_and_failed_writes_leave_nothing(route: Route) {
    // The functions are allowed, so that the database's own layers (the
    // read-only transaction, the guard) are what is tested here.
    let mut db = Delegated::start_via(
        PgVersion::V15,
        route,
        json!({"allowedFunctions": [
            "public.sneak_write", "public.unlock_and_write", "public.write_then_switch"
        ]}),
    );
    db.cluster.exec(
        "postgres",
        "CREATE FUNCTION sneak_write() RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN INSERT INTO notes (body) VALUES ('sneaked'); RETURN 1; END $$; \
         CREATE FUNCTION unlock_and_write() RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN PERFORM set_config('transaction_read_only', 'off', true); \
           INSERT INTO notes (body) VALUES ('unlocked'); RETURN 1; END $$; \
         CREATE FUNCTION write_then_switch() RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN INSERT INTO notes (body) VALUES ('switched'); EXECUTE 'SET ROLE reader'; RETURN 1; END $$; \
         GRANT EXECUTE ON FUNCTION sneak_write(), unlock_and_write(), write_then_switch() TO reader, writer; \
         GRANT INSERT ON notes TO reader; GRANT USAGE ON SEQUENCE notes_id_seq TO reader;",
    );
    let reader = db.token("reader", &["sql-read"]);
    let writer = db.token("writer", &["sql-read", "sql-write"]);

    // A SELECT is a read: it runs read-only, whatever the function does.
    let error = Host::tool_error(&db.query_as(&reader, "SELECT sneak_write()", json!([])));
    assert_eq!(error["sqlstate"], "25006", "{error}");
    let error = Host::tool_error(&db.query_as(&reader, "SELECT unlock_and_write()", json!([])));
    assert_eq!(error["error"], "DATABASE_ERROR", "{error}");

    // The guard catches the switch and the insert before it is rolled back.
    let error = Host::tool_error(&db.query_as(
        &writer,
        "INSERT INTO notes (body) SELECT 'via ' || write_then_switch()",
        json!([]),
    ));
    assert_eq!(error["error"], "SECURITY_VIOLATION", "{error}");

    // A statement that fails half-way commits none of its rows.
    let error = Host::tool_error(&db.query_as(
        &writer,
        "INSERT INTO notes (body) SELECT x FROM (VALUES ('first half'), (repeat('y', 2000))) v(x)",
        json!([]),
    ));
    assert_eq!(error["sqlstate"], "23514", "{error}");

    let bodies = db
        .cluster
        .query_texts("postgres", "SELECT body FROM notes ORDER BY id");
    for gone in ["sneaked", "unlocked", "switched", "via 1", "first half"] {
        assert!(
            !bodies.iter().any(|b| b == gone),
            "{gone} was written: {bodies:?}"
        );
    }
    // And the connections are fine for the next write.
    let result = db.query_as(
        &writer,
        "INSERT INTO notes (body) VALUES ('after')",
        json!([]),
    );
    assert_eq!(result["structuredContent"]["rowCount"], 1, "{result}");
    assert!(db
        .cluster
        .query_texts("postgres", "SELECT body FROM notes WHERE owner = 'writer'")
        .contains(&"after".to_owned()));
}

/// Statements are cached per connection; a table that changes shape under
/// a cached `SELECT *` is read afresh, not answered with an error.
fn cached_statements_follow_schema_changes(route: Route) {
    let mut db = Delegated::start_via(
        PgVersion::V15,
        route,
        json!({"pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 3000}}),
    );
    let reader = db.token("reader", &["sql-read"]);
    let sql = "SELECT * FROM orders WHERE id = $1";
    for _ in 0..3 {
        let result = db.query_as(&reader, sql, json!([1]));
        assert_eq!(rows(&result).len(), 1, "{result}");
    }
    db.cluster.exec(
        "postgres",
        "ALTER TABLE orders ADD COLUMN status text DEFAULT 'open'",
    );
    let result = db.query_as(&reader, sql, json!([1]));
    assert_eq!(rows(&result)[0]["status"], "open", "{result}");
    // Same text, other parameter values and types still work.
    let result = db.query_as(&reader, sql, json!(["2"]));
    assert_eq!(rows(&result)[0]["id"], 2, "{result}");
}

mcp_delegate_tests::on_every_route!(
    each_user_sees_exactly_their_rows_as_their_own_role,
    parameters_are_untyped_like_node_postgres_and_counted,
    reads_cannot_write_and_failed_writes_leave_nothing,
    cached_statements_follow_schema_changes,
);
