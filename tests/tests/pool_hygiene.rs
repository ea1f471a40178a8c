//! Nothing one user does survives into another user's use of a pooled
//! connection; a dead database affects only its own module and heals.

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::pg::PgVersion;
use mcp_delegate_tests::pgfixture::{rows, Delegated, Route, TwoDatabases};
use serde_json::{json, Value};

const PROBE: &str = "SELECT current_user AS u, current_setting('search_path') AS p, \
    current_setting('statement_timeout') AS t, current_setting('DateStyle') AS ds, \
    current_setting('application_name') AS app";

const TRICKS: &[&str] = &[
    "SELECT set_config('search_path', 'pg_temp, evil', false)",
    "SET search_path = evil",
    "SET ROLE writer",
    "SET SESSION AUTHORIZATION writer",
    "SELECT set_config('role', 'reader', false)",
    "RESET ROLE",
    "SELECT pg_advisory_lock(7)",
    "SET statement_timeout = 1",
];

fn three_users_over_two_connections_never_see_each_others_settings(route: Route) {
    let mut db = Delegated::start_via(
        PgVersion::V15,
        route,
        json!({"pool": {"max": 2, "min": 2, "connectionTimeoutMillis": 5000}}),
    );
    let users = [
        ("reader", db.token("reader", &["sql-read"])),
        ("writer", db.token("writer", &["sql-read", "sql-write"])),
        (
            "DOMAIN\\odd \"user\"",
            db.token("DOMAIN\\odd \"user\"", &[]),
        ),
    ];
    let expected = |user: &str| json!({"u": user, "p": "\"$user\", public", "t": "30s", "ds": "ISO, YMD", "app": "mcp-delegate/postgresql1"});
    let mut calls = 0;
    let mut round = 0;
    while calls < 2000 {
        for (index, (user, token)) in users.iter().enumerate() {
            // The writer is the attacker: every other call is a trick.
            if index == 1 && round % 2 == 0 {
                let trick = TRICKS[(round / 2) % TRICKS.len()];
                let result = db.query_as(token, trick, json!([]));
                assert_eq!(result["isError"], true, "{trick} must be refused: {result}");
            } else {
                let result = db.query_as(token, PROBE, json!([]));
                assert_eq!(rows(&result), [expected(user)], "call {calls}");
            }
            calls += 1;
        }
        round += 1;
    }
    // Writes by the writer commit, and still leave nothing behind.
    let writer = users[1].1.clone();
    let result = db.query_as(
        &writer,
        "UPDATE notes SET body = body WHERE owner = current_user",
        json!([]),
    );
    assert_eq!(result["structuredContent"]["rowCount"], 1, "{result}");
    let result = db.query_as(&users[0].1, PROBE, json!([]));
    assert_eq!(rows(&result), [expected("reader")]);
    let locks = db.cluster.query_texts(
        "postgres",
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory'",
    );
    assert_eq!(locks, ["0"]);
}

#[test]
fn a_stopped_database_fails_only_its_own_tools_and_heals_on_restart() {
    let mut databases = TwoDatabases::start(PgVersion::V15, json!({}));
    let TwoDatabases {
        second: analytics,
        idp,
        host,
        ..
    } = &mut databases;
    host.bearer = Some(idp.mint(
        "reader",
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"]}),
    ));
    let count = |host: &mut Host, tool: &str| -> Value {
        host.call_tool(
            tool,
            json!({"action": "query", "sql": "SELECT count(*) AS n FROM notes"}),
        )
    };
    assert_eq!(
        count(host, "sql1-delegate")["structuredContent"]["rows"][0]["n"],
        "2"
    );
    assert_eq!(
        count(host, "sql2-delegate")["structuredContent"]["rows"][0]["n"],
        "2"
    );

    analytics.stop();
    let error = Host::tool_error(&count(host, "sql2-delegate"));
    assert_eq!(error["error"], "DATABASE_UNAVAILABLE", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("postgresql2"),
        "{error}"
    );
    assert_eq!(count(host, "sql1-delegate")["isError"], false);

    analytics.restart();
    let healed = count(host, "sql2-delegate");
    assert_eq!(healed["isError"], false, "{healed}");
    assert_eq!(healed["structuredContent"]["rows"][0]["n"], "2");
}

fn an_exhausted_pool_answers_clearly_naming_the_module(route: Route) {
    let db = Delegated::start_via(
        PgVersion::V15,
        route,
        json!({
            "pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 500}
        }),
    );
    let reader = db.token("reader", &["sql-read"]);
    let url = db.host.mcp_url();
    let slow = {
        let reader = reader.clone();
        let url = url.clone();
        std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("authorization", format!("Bearer {reader}"))
                .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                    "name": "sql1-delegate", "arguments": {"action": "query", "sql": "SELECT pg_sleep(2)"}}}).to_string())
                .send()
                .map(|r| r.status().as_u16())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, _, body) = db.host.post_with_token(
        Some(&reader),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "sql1-delegate", "arguments": {"action": "query", "sql": "SELECT 1"}}})
        .to_string(),
    );
    assert_eq!(status, 200);
    let response: Value = serde_json::from_str(&body).unwrap();
    let error = Host::tool_error(&response["result"]);
    assert_eq!(error["error"], "POOL_EXHAUSTED", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("postgresql1") && message.contains("pool.max"),
        "{message}"
    );
    assert_eq!(slow.join().unwrap().unwrap(), 200);
}

fn an_identity_changed_inside_a_statement_is_caught_and_nothing_is_returned(route: Route) {
    // The function is allowed: the guard is what this tests.
    let mut db = Delegated::start_via(
        PgVersion::V15,
        route,
        json!({
            "pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 3000},
            "allowedFunctions": ["public.become_writer"]
        }),
    );
    // A function that switches role mid-statement: possible because the
    // session user (the service account) is a member of every delegated role.
    db.cluster.exec(
        "postgres",
        "CREATE FUNCTION become_writer() RETURNS SETOF text LANGUAGE plpgsql AS $$ \
         BEGIN EXECUTE 'SET ROLE writer'; RETURN QUERY SELECT body FROM notes; END $$; \
         GRANT EXECUTE ON FUNCTION become_writer() TO reader;",
    );
    let reader = db.token("reader", &["sql-read"]);
    let result = db.query_as(&reader, "SELECT * FROM become_writer()", json!([]));
    let error = Host::tool_error(&result);
    assert_eq!(error["error"], "SECURITY_VIOLATION");
    assert!(!result.to_string().contains("writer note"), "{result}");
    // The connection was discarded; the next call is the reader again.
    let result = db.query_as(&reader, "SELECT current_user AS u", json!([]));
    assert_eq!(rows(&result), [json!({"u": "reader"})]);
}

/// A read ends in ROLLBACK rather than DISCARD ALL (on a session of our
/// own); everything a function can leave in a session during a read or a
/// write must still be gone for the next caller of the same (single)
/// connection, or behind PgBouncer the same single server session, and a
/// replaced internal statement must not switch the guard off.
fn a_call_leaves_nothing_in_the_session(route: Route) {
    // The planting functions are allowed: session hygiene is what this tests.
    let mut db = Delegated::start_via(
        PgVersion::V15,
        route,
        json!({
            "pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 3000},
            "allowedFunctions": ["public.plant_statement", "public.leave_traces",
                "public.fake_internals", "public.prepared_by_sql"]
        }),
    );
    db.cluster.exec(
        "postgres",
        "CREATE FUNCTION plant_statement() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
           EXECUTE 'PREPARE planted AS SELECT 42'; RETURN 1; END $$; \
         CREATE FUNCTION leave_traces() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM pg_advisory_lock(4242); \
           PERFORM set_config('application_name', 'planted', false); \
           PERFORM set_config('search_path', 'planted', false); \
           EXECUTE 'LISTEN planted'; \
           EXECUTE 'DECLARE planted CURSOR WITH HOLD FOR SELECT 1'; \
           RETURN 1; END $$; \
         CREATE FUNCTION fake_internals() RETURNS SETOF text LANGUAGE plpgsql AS $$ BEGIN \
           EXECUTE 'DEALLOCATE ALL'; \
           EXECUTE 'PREPARE mcpd_rollback AS SELECT 1'; \
           EXECUTE 'PREPARE mcpd_set_role(text) AS SELECT $1'; \
           EXECUTE 'SET ROLE writer'; \
           RETURN QUERY SELECT body FROM notes; END $$; \
         CREATE FUNCTION prepared_by_sql() RETURNS bigint LANGUAGE sql AS \
           'SELECT count(*) FROM pg_prepared_statements WHERE from_sql'; \
         GRANT EXECUTE ON FUNCTION plant_statement(), leave_traces(), fake_internals(), \
           prepared_by_sql() TO reader, writer;",
    );
    let reader = db.token("reader", &["sql-read"]);
    let checks = "SELECT current_user AS u, \
        prepared_by_sql() AS prepared, \
        (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks, \
        current_setting('application_name') AS app, current_setting('search_path') AS path, \
        (SELECT count(*) FROM pg_listening_channels()) AS listening, \
        to_regclass('pg_temp.planted') IS NULL AS no_temp, \
        (SELECT count(*) FROM pg_cursors WHERE name <> $$$$) AS cursors";
    let clean = json!({"u": "reader", "prepared": "0", "locks": "0", "app": "mcp-delegate/postgresql1",
        "path": "\"$user\", public", "listening": "0", "no_temp": true, "cursors": "0"});
    assert_eq!(
        rows(&db.query_as(&reader, checks, json!([]))),
        std::slice::from_ref(&clean)
    );

    for planter in ["leave_traces", "plant_statement"] {
        let result = db.query_as(&reader, &format!("SELECT {planter}() AS t"), json!([]));
        assert_eq!(rows(&result), [json!({"t": 1})], "{result}");
        assert_eq!(
            rows(&db.query_as(&reader, checks, json!([]))),
            std::slice::from_ref(&clean),
            "after {planter}"
        );
    }

    // A write commits: what its function left must go all the same.
    let writer = db.token("writer", &["sql-read", "sql-write"]);
    for planter in ["leave_traces", "plant_statement"] {
        let result = db.query_as(
            &writer,
            &format!("INSERT INTO notes (body) SELECT 'planted ' || {planter}()"),
            json!([]),
        );
        assert_eq!(result["structuredContent"]["rowCount"], 1, "{result}");
        assert_eq!(
            rows(&db.query_as(&reader, checks, json!([]))),
            std::slice::from_ref(&clean),
            "after a write with {planter}"
        );
    }

    // Internal statements replaced during the call: the call fails, and the
    // next one runs as the right user on a clean session.
    let result = db.query_as(&reader, "SELECT * FROM fake_internals()", json!([]));
    assert_eq!(result["isError"], true, "{result}");
    assert!(!result.to_string().contains("writer note"), "{result}");
    assert_eq!(rows(&db.query_as(&reader, checks, json!([]))), [clean]);
}

/// A write that makes the reset after it fail (a session-level statement
/// timeout of 5 ms against a thousand temporary tables to drop) and leaves
/// a temporary `orders` shadowing the real one, readable by everyone, a
/// session-level `search_path` that puts it first, a role, and read-only
/// serializable transaction defaults: the
/// next caller of the same connection (or PgBouncer's single server
/// session, which goes back to the pool when the failed reset ends its
/// transaction) must still read the real table as itself with the
/// module's timeout and the database's defaults, and writes must work.
fn a_reset_made_to_fail_leaves_nothing_for_the_next_caller(route: Route) {
    let mut db = Delegated::start_via(
        PgVersion::V15,
        route,
        json!({
            "pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 3000},
            "allowedFunctions": ["public.plant_shadow"]
        }),
    );
    db.cluster.exec(
        "postgres",
        "CREATE FUNCTION plant_shadow() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
           FOR i IN 1..1000 LOOP EXECUTE format('CREATE TEMP TABLE junk%s (a int)', i); END LOOP; \
           CREATE TEMP TABLE orders (id int, note_id int, amount numeric); \
           INSERT INTO pg_temp.orders VALUES (1, 1, 666); \
           GRANT ALL ON pg_temp.orders TO PUBLIC; \
           PERFORM set_config('search_path', 'pg_temp, public', false); \
           PERFORM set_config('default_transaction_read_only', 'on', false); \
           PERFORM set_config('default_transaction_isolation', 'serializable', false); \
           PERFORM set_config('role', 'writer', false); \
           PERFORM setseed(0.5); \
           PERFORM set_config('statement_timeout', '5', false); \
           RETURN 1; END $$; \
         GRANT EXECUTE ON FUNCTION plant_shadow() TO writer;",
    );
    let writer = db.token("writer", &["sql-read", "sql-write"]);
    let reader = db.token("reader", &["sql-read"]);
    let result = db.query_as(
        &writer,
        "INSERT INTO notes (body) SELECT 'shadow ' || plant_shadow()",
        json!([]),
    );
    // It committed: it is reported so, whatever happened after.
    assert_eq!(result["structuredContent"]["rowCount"], 1, "{result}");
    for round in 0..3 {
        let result = db.query_as(
            &reader,
            "SELECT id, amount::text AS amount, current_user AS u, \
             current_setting('statement_timeout') AS t, current_setting('search_path') AS p, \
             current_setting('transaction_isolation') AS i FROM orders ORDER BY id",
            json!([]),
        );
        let expected = |id: i64, amount: &str| {
            json!({"id": id, "amount": amount, "u": "reader", "t": "30s",
                   "p": "\"$user\", public", "i": "read committed"})
        };
        assert_eq!(
            rows(&result),
            [
                expected(1, "10.50"),
                expected(2, "20.25"),
                expected(3, "5.00")
            ],
            "{result}"
        );
        // And a write is a write again, as its own user.
        let result = db.query_as(
            &writer,
            &format!(
                "INSERT INTO notes (body) VALUES ('after {round}') RETURNING current_user AS u"
            ),
            json!([]),
        );
        assert_eq!(rows(&result), [json!({"u": "writer"})], "{result}");
    }
}

mcp_delegate_tests::on_every_route!(
    three_users_over_two_connections_never_see_each_others_settings,
    an_exhausted_pool_answers_clearly_naming_the_module,
    an_identity_changed_inside_a_statement_is_caught_and_nothing_is_returned,
    a_call_leaves_nothing_in_the_session,
    a_reset_made_to_fail_leaves_nothing_for_the_next_caller,
);
