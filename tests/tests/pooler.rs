//! `pooler: "pgbouncer-transaction"`: the module behind a real PgBouncer
//! in transaction mode, where each transaction may run on another server
//! session. (The delegation, hostile-statement and hygiene suites run
//! through PgBouncer too; this file tests what only the pooler mode does.)

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::pg::PgVersion;
use mcp_delegate_tests::pgfixture::{rows, Delegated, Route, ROUTES};
use serde_json::{json, Value};

/// Values whose text form depends on session defaults the module sets.
const FORMATS: &str = "SELECT interval '1 day 2 hours' AS i, 0.1::float8 AS f, \
    timestamptz '2020-01-01 00:00+02' AS t, date '2020-01-02' AS d, \
    current_setting('statement_timeout') AS timeout, \
    current_setting('application_name') AS app, \
    current_setting('standard_conforming_strings') AS scs";

#[test]
fn calls_through_pgbouncer_see_the_same_session_defaults_as_direct_ones() {
    let mut seen = Vec::new();
    for route in ROUTES {
        let mut db = Delegated::start_via(
            PgVersion::V15,
            route,
            json!({"statementTimeoutMillis": 2500}),
        );
        let reader = db.token("reader", &["sql-read"]);
        // Several calls, so that both of PgBouncer's server sessions serve.
        for _ in 0..6 {
            seen.push((route, rows(&db.query_as(&reader, FORMATS, json!([])))));
        }
        if let Some(bouncer) = &db.bouncer {
            assert!(
                bouncer
                    .log()
                    .contains("login attempt: db=postgres user=mcp_service"),
                "the calls did not go through PgBouncer: {}",
                bouncer.log()
            );
        }
    }
    let expected = json!([{"i": "P1DT2H", "f": 0.1, "t": "2019-12-31T22:00:00+00:00",
        "d": "2020-01-02", "timeout": "2500ms", "app": "mcp-delegate/postgresql1", "scs": "on"}]);
    for (route, rows) in seen {
        assert_eq!(json!(rows), expected, "{route:?}");
    }
}

#[test]
fn the_statement_timeout_holds_behind_pgbouncer() {
    let mut db = Delegated::start_via(
        PgVersion::V15,
        Route::PgBouncer,
        json!({"statementTimeoutMillis": 500}),
    );
    let reader = db.token("reader", &["sql-read"]);
    let started = std::time::Instant::now();
    let result = db.query_as(&reader, "SELECT pg_sleep(3)", json!([]));
    assert_eq!(
        Host::tool_error(&result)["error"],
        "STATEMENT_TIMEOUT",
        "{result}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The server session it ran on went back clean: the next call works.
    assert_eq!(
        rows(&db.query_as(&reader, "SELECT current_user AS u", json!([]))),
        [json!({"u": "reader"})]
    );
}

/// Without the pooler mode the module's start-up parameters are refused by
/// PgBouncer: the mode is what makes the module work behind it.
#[test]
fn without_the_pooler_mode_pgbouncer_refuses_the_connection_clearly() {
    let mut db = Delegated::start_via(PgVersion::V15, Route::PgBouncer, json!({"pooler": "none"}));
    let reader = db.token("reader", &["sql-read"]);
    let result = db.query_as(&reader, "SELECT 1 AS one", json!([]));
    let error = Host::tool_error(&result);
    assert_eq!(error["error"], "DATABASE_UNAVAILABLE", "{result}");
    let bouncer = db.bouncer.as_ref().map(|b| b.log()).unwrap_or_default();
    assert!(
        bouncer.contains("unsupported startup parameter"),
        "{bouncer}"
    );
}

/// Many clients, three identities, two server sessions: PgBouncer hands
/// every transaction whichever session is free, and no call ever sees
/// another identity, its rows or its settings.
#[test]
fn concurrent_users_sharing_two_server_sessions_never_cross() {
    let db = Delegated::start_via(
        PgVersion::V15,
        Route::PgBouncer,
        json!({"pool": {"max": 6, "min": 0, "connectionTimeoutMillis": 5000}}),
    );
    let users = ["reader", "writer", "DOMAIN\\odd \"user\""];
    let url = db.host.mcp_url();
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            let user = users[worker % users.len()].to_owned();
            let token = db.token(&user, &["sql-read", "sql-write"]);
            let url = url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut failures = Vec::new();
                for call in 0..80 {
                    // Writers also commit session-level settings: none may
                    // reach another call.
                    let sql = if worker == 1 && call % 4 == 0 {
                        "UPDATE notes SET body = body WHERE owner = current_user"
                    } else {
                        "SELECT current_user AS u, count(*)::int AS n, \
                         bool_and(owner = current_user) AS own, \
                         current_setting('search_path') AS p FROM notes"
                    };
                    let body = json!({"jsonrpc": "2.0", "id": call, "method": "tools/call",
                        "params": {"name": "sql1-delegate",
                                   "arguments": {"action": "query", "sql": sql}}});
                    let response: Value = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("accept", "application/json, text/event-stream")
                        .header("authorization", format!("Bearer {token}"))
                        .body(body.to_string())
                        .send()
                        .and_then(|r| r.json())
                        .unwrap_or_else(|err| json!({"transport": err.to_string()}));
                    let result = &response["result"];
                    let fine = if sql.starts_with("UPDATE") {
                        result["isError"] == false
                    } else {
                        let row = &result["structuredContent"]["rows"][0];
                        row["u"] == user.as_str()
                            && row["own"] == true
                            && row["p"] == "\"$user\", public"
                    };
                    if !fine {
                        failures.push(format!("{user} call {call}: {response}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn prepared_statements_by_the_pooler_are_refused_until_supported() {
    use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    for (extra, key) in [
        (
            json!({"poolerPreparedStatements": true}),
            "poolerPreparedStatements",
        ),
        (json!({"pooler": "pgbouncer-session"}), "pooler"),
    ] {
        let mut entry =
            json!({"database": "postgres", "user": "u", "pooler": "pgbouncer-transaction"});
        if let (Some(entry), Value::Object(extra)) = (entry.as_object_mut(), extra) {
            entry.extend(extra);
        }
        let config = json!({"auth": {"mode": "none"},
            "delegation": {"modules": {"postgresql1": entry}}});
        let (code, output) = mcp_delegate_tests::host::check_config(&config, plugins.path(), &[]);
        assert_ne!(code, 0, "{output}");
        assert!(output.contains(key), "{output}");
    }
}

/// A server session whose clean-up fails (here: the service account's own
/// 20 ms statement timeout, which RESET ALL returns to, against three
/// thousand temporary tables a hostile write left and made its own reset
/// fail on) runs nothing: the module drops the connection, PgBouncer
/// closes that server session, and the read is retried on a new one.
#[test]
fn a_session_that_cannot_be_cleaned_up_is_closed_not_reused() {
    let mut db = Delegated::start_via(
        PgVersion::V15,
        Route::PgBouncer,
        json!({
            "pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 3000},
            "allowedFunctions": ["public.plant_many"]
        }),
    );
    db.cluster.exec(
        "postgres",
        "ALTER ROLE mcp_service SET statement_timeout = '20ms'; \
         CREATE FUNCTION plant_many() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
           FOR i IN 1..3000 LOOP EXECUTE format('CREATE TEMP TABLE junk%s (a int)', i); END LOOP; \
           CREATE TEMP TABLE orders (id int, note_id int, amount numeric); \
           INSERT INTO pg_temp.orders VALUES (1, 1, 666); \
           GRANT ALL ON pg_temp.orders TO PUBLIC; \
           PERFORM set_config('search_path', 'pg_temp, public', false); \
           PERFORM set_config('statement_timeout', '5', false); \
           RETURN 1; END $$; \
         GRANT EXECUTE ON FUNCTION plant_many() TO writer;",
    );
    let writer = db.token("writer", &["sql-read", "sql-write"]);
    let reader = db.token("reader", &["sql-read"]);
    let result = db.query_as(
        &writer,
        "INSERT INTO notes (body) SELECT 'many ' || plant_many()",
        json!([]),
    );
    assert_eq!(result["structuredContent"]["rowCount"], 1, "{result}");
    for _ in 0..3 {
        let result = db.query_as(
            &reader,
            "SELECT id, amount::text AS amount FROM orders ORDER BY id",
            json!([]),
        );
        // The identity check or the call itself may meet the session first:
        // either way it is dropped and the call goes on on a new one.
        assert_eq!(
            rows(&result),
            [
                json!({"id": 1, "amount": "10.50"}),
                json!({"id": 2, "amount": "20.25"}),
                json!({"id": 3, "amount": "5.00"}),
            ],
            "{result}"
        );
    }
    let log = db.bouncer.as_ref().map(|b| b.log()).unwrap_or_default();
    assert!(
        db.host
            .logs()
            .iter()
            .any(|line| line.contains("could not be cleaned up before")),
        "the clean-up did not fail: the test proves nothing"
    );
    // PgBouncer closed the server session the module walked away from.
    assert!(
        log.contains("closing because: client disconnect while server was not ready"),
        "{log}"
    );
}
