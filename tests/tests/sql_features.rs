//! Legitimate analytics, type mapping, limits, catalog tools and the
//! service-account check, against a real cluster.

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::pgfixture::{rows, Delegated};
use serde_json::json;

const ANALYTICS: &[&str] = &[
    "SELECT count(*) FROM notes",
    "SELECT owner, count(*) FROM notes GROUP BY owner",
    "SELECT id, body, row_number() OVER (ORDER BY id) FROM notes",
    "SELECT id, sum(amount) OVER (PARTITION BY note_id ORDER BY id) FROM orders",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders",
    "SELECT percentile_disc(ARRAY[0.25, 0.75]) WITHIN GROUP (ORDER BY amount) FROM orders",
    "SELECT mode() WITHIN GROUP (ORDER BY note_id) FROM orders",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 10) SELECT sum(n) FROM t",
    "SELECT * FROM generate_series(1, 5) g",
    "SELECT d::date FROM generate_series('2025-01-01'::date, '2025-01-07', interval '1 day') d",
    "SELECT n.id, o.total FROM notes n, LATERAL (SELECT sum(amount) AS total FROM orders WHERE note_id = n.id) o",
    "SELECT '{\"a\": {\"b\": [1, 2]}}'::jsonb -> 'a' -> 'b' ->> 0 AS v",
    "SELECT '{\"a\": 1}'::jsonb @> '{\"a\": 1}' AS contains",
    "SELECT jsonb_path_query_array('{\"x\": [1, 2, 3]}', '$.x[*] ? (@ > 1)')",
    "SELECT jsonb_agg(body) FROM notes",
    "SELECT json_build_object('n', count(*)) FROM notes",
    "EXPLAIN SELECT * FROM notes WHERE id = 1",
    "EXPLAIN (FORMAT JSON) SELECT * FROM notes",
    "EXPLAIN (COSTS OFF, VERBOSE) SELECT count(*) FROM orders",
    "EXPLAIN ANALYZE SELECT * FROM notes",
    "SELECT date_trunc('month', created_at) AS m, count(*) FROM notes GROUP BY 1",
    "SELECT string_agg(body, ', ' ORDER BY id) FROM notes",
    "SELECT CASE WHEN amount > 10 THEN 'big' ELSE 'small' END AS size, count(*) FROM orders GROUP BY 1",
    "SELECT * FROM orders ORDER BY amount DESC LIMIT 2 OFFSET 0",
    "SELECT amount, lag(amount) OVER w, lead(amount) OVER w FROM orders WINDOW w AS (ORDER BY id)",
    "SELECT note_id, rank() OVER (ORDER BY sum(amount) DESC) FROM orders GROUP BY note_id",
    "VALUES (1, 'a'), (2, 'b')",
    "TABLE orders",
    "SELECT 1 UNION SELECT 2 INTERSECT SELECT 2",
    "SELECT * FROM orders WHERE note_id IN (SELECT id FROM notes)",
    "SELECT EXISTS (SELECT 1 FROM notes WHERE body ILIKE '%note%')",
    "SHOW search_path",
    "SHOW TIME ZONE",
    "SELECT grouping(note_id), note_id, sum(amount) FROM orders GROUP BY ROLLUP (note_id)",
    "SELECT width_bucket(amount, 0, 30, 3) AS b, count(*) FROM orders GROUP BY 1",
    "SELECT regexp_replace(body, 'note', 'memo') FROM notes",
    "SELECT created_at AT TIME ZONE 'Europe/Paris' FROM notes",
    "SELECT * FROM unnest(ARRAY[1, 2, 3]) WITH ORDINALITY AS t(v, i)",
    "SELECT corr(amount, note_id), stddev(amount) FROM orders",
    "SELECT count(*) FILTER (WHERE amount > 6) FROM orders",
    "SELECT created_at FROM notes FETCH FIRST 1 ROWS ONLY",
    "SELECT * FROM note_count",
];

#[test]
fn legitimate_analytics_run_for_a_read_only_user() {
    assert!(ANALYTICS.len() >= 30);
    let mut db = Delegated::start(json!({}));
    let reader = db.token("reader", &["sql-read"]);
    let mut failures = Vec::new();
    for sql in ANALYTICS {
        let result = db.query_as(&reader, sql, json!([]));
        if result["isError"] != false {
            failures.push(format!("{sql}: {result}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let result = db.query_as(
        &reader,
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) AS median FROM orders",
        json!([]),
    );
    assert_eq!(rows(&result), [json!({"median": 10.5})]);
}

#[test]
fn every_listed_type_maps_to_json() {
    let mut db = Delegated::start(json!({}));
    let reader = db.token("reader", &["sql-read"]);
    let sql = r#"SELECT 1::int2 AS i2, 2::int4 AS i4, 9007199254740993::int8 AS i8,
        12345678901234567890.123::numeric AS num, 1.5::float4 AS f4, 2.25::float8 AS f8,
        'NaN'::float8 AS nan, true AS b, 'txt'::text AS t, 'v'::varchar(5) AS vc,
        '{"a":[1,2]}'::json AS j, '{"b":{"c":null}}'::jsonb AS jb,
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, '2025-01-02'::date AS d,
        '03:04:05'::time AS tm, '2025-01-02 03:04:05.5'::timestamp AS ts,
        '2025-01-02 03:04:05+02'::timestamptz AS tstz, '\x0102ff'::bytea AS by,
        ARRAY[1, 2, NULL]::int4[] AS arr, ARRAY['a b', 'c"d']::text[] AS tarr,
        ARRAY[[1, 2], [3, 4]] AS arr2, 'happy'::mood AS e, 5::posint AS dom,
        ARRAY['sad', 'happy']::mood[] AS earr, '1 day 2 hours'::interval AS iv,
        '10.0.0.1'::inet AS ip, point(1, 2) AS pt, NULL::int AS nul,
        ARRAY['2025-01-01'::date] AS darr"#;
    let result = db.query_as(&reader, sql, json!([]));
    assert_eq!(
        rows(&result)[0],
        json!({
            "i2": 1, "i4": 2, "i8": "9007199254740993", "num": "12345678901234567890.123",
            "f4": 1.5, "f8": 2.25, "nan": "NaN", "b": true, "t": "txt", "vc": "v",
            "j": {"a": [1, 2]}, "jb": {"b": {"c": null}},
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "d": "2025-01-02", "tm": "03:04:05",
            "ts": "2025-01-02T03:04:05.5", "tstz": "2025-01-02T01:04:05+00:00", "by": "AQL/",
            "arr": [1, 2, null], "tarr": ["a b", "c\"d"], "arr2": [[1, 2], [3, 4]],
            "e": "happy", "dom": 5, "earr": ["sad", "happy"], "iv": "P1DT2H", "ip": "10.0.0.1",
            "pt": "(1,2)", "nul": null, "darr": ["2025-01-01"]
        })
    );
    let columns = &result["structuredContent"]["columns"];
    let type_of = |name: &str| {
        columns
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["type"].clone())
            .unwrap()
    };
    assert_eq!(type_of("i8"), "int8");
    assert_eq!(type_of("e"), "mood");
    assert_eq!(type_of("earr"), "_mood");
    assert_eq!(result["structuredContent"]["command"], "SELECT");
    assert_eq!(result["structuredContent"]["rowCount"], 1);
    assert_eq!(result["structuredContent"]["truncated"], false);
}

#[test]
fn max_rows_truncates_and_statement_timeout_fires_without_harming_the_connection() {
    let mut db = Delegated::start(json!({
        "maxRows": 3, "statementTimeoutMillis": 500,
        "pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 3000}
    }));
    let reader = db.token("reader", &["sql-read"]);
    let result = db.query_as(
        &reader,
        "SELECT g FROM generate_series(1, 100000) g",
        json!([]),
    );
    assert_eq!(
        rows(&result),
        [json!({"g": 1}), json!({"g": 2}), json!({"g": 3})]
    );
    assert_eq!(result["structuredContent"]["truncated"], true);
    assert_eq!(result["structuredContent"]["rowCount"], 3);
    let result = db.query_as(&reader, "SELECT g FROM generate_series(1, 3) g", json!([]));
    assert_eq!(result["structuredContent"]["truncated"], false);

    let error = Host::tool_error(&db.query_as(&reader, "SELECT pg_sleep(5)", json!([])));
    assert_eq!(error["error"], "STATEMENT_TIMEOUT");
    assert_eq!(error["sqlstate"], "57014");
    // The only pooled connection still works, as the right user.
    let result = db.query_as(&reader, "SELECT current_user AS u", json!([]));
    assert_eq!(rows(&result), [json!({"u": "reader"})]);
}

#[test]
fn schema_and_table_details_show_what_the_role_may_see() {
    let mut db = Delegated::start(json!({}));
    db.host.bearer = Some(db.token("reader", &["sql-read"]));
    let schema = db.host.call_tool("sql1-schema", json!({}))["structuredContent"].clone();
    assert_eq!(schema["schema"], "public");
    let tables: Vec<(String, String)> = schema["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        [
            ("events".to_owned(), "PARTITIONED TABLE".to_owned()),
            ("note_count".to_owned(), "MATERIALIZED VIEW".to_owned()),
            ("notes".to_owned(), "TABLE".to_owned()),
            ("orders".to_owned(), "TABLE".to_owned()),
            ("reader_view".to_owned(), "VIEW".to_owned()),
        ]
    );
    assert_eq!(schema["tableCount"], 5);
    let notes = &schema["tables"][2];
    assert_eq!(notes["comment"], "Notes, one owner each");
    assert!(notes["estimatedRows"].is_u64());

    let details = db
        .host
        .call_tool("sql1-table-details", json!({"tableName": "notes"}))["structuredContent"]
        .clone();
    assert_eq!(details["table"], "notes");
    assert_eq!(details["schema"], "public");
    assert_eq!(details["comment"], "Notes, one owner each");
    assert_eq!(details["columnCount"], 4);
    assert_eq!(details["primaryKey"], json!(["id"]));
    let body = &details["columns"][2];
    assert_eq!(body["name"], "body");
    assert_eq!(body["type"], "text");
    assert_eq!(body["nullable"], false);
    assert_eq!(body["comment"], "The note text");
    assert!(details["columns"][0]["default"]
        .as_str()
        .unwrap()
        .starts_with("nextval("));
    let indexes: Vec<&str> = details["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(indexes, ["notes_owner_idx", "notes_pkey"]);
    assert_eq!(details["checkConstraints"].as_array().unwrap().len(), 1);

    let orders = db.host.call_tool(
        "sql1-table-details",
        json!({"tableName": "orders", "schemaName": "public"}),
    )["structuredContent"]
        .clone();
    assert_eq!(
        orders["foreignKeys"],
        json!([{"name": "orders_note_id_fkey", "columns": ["note_id"],
                "references": {"schema": "public", "table": "notes", "columns": ["id"]}}])
    );
    for hidden in ["secrets", "no_such_table"] {
        let result = db
            .host
            .call_tool("sql1-table-details", json!({"tableName": hidden}));
        let error = Host::tool_error(&result);
        assert_eq!(error["error"], "TABLE_NOT_FOUND", "{hidden}");
    }
    let result = db.host.call_tool("sql1-table-details", json!({}));
    assert_eq!(Host::tool_error(&result)["error"], "INVALID_ARGUMENTS");
}

#[test]
fn a_superuser_service_account_disables_its_module() {
    let mut db = Delegated::start(json!({"user": "postgres", "password": "superuser-pass"}));
    let reader = db.token("reader", &["sql-read"]);
    let error = Host::tool_error(&db.query_as(&reader, "SELECT 1", json!([])));
    assert_eq!(error["error"], "SERVICE_ACCOUNT_UNSAFE");
    assert!(error["message"].as_str().unwrap().contains("superuser"));
    db.host.bearer = Some(reader);
    let health = db.host.call_tool("health-check", json!({}))["structuredContent"].clone();
    assert_eq!(health["healthy"], false);
}

#[test]
fn no_identity_means_no_query() {
    let mut db = Delegated::start(json!({}));
    let token = db
        .idp
        .mint("ghost", "mcp-oauth", json!({"roles": ["user", "sql-read"]}));
    let error = Host::tool_error(&db.query_as(&token, "SELECT 1", json!([])));
    assert_eq!(error["error"], "DELEGATED_IDENTITY_MISSING");
    // An identity the database does not know: refused there, nothing runs.
    let stranger = db.token("stranger", &["sql-read"]);
    let error = Host::tool_error(&db.query_as(&stranger, "SELECT 1", json!([])));
    assert_eq!(error["error"], "DELEGATION_FAILED");
}

/// A server that does not answer in time: the client gives up on the
/// connection and cancels the statement, so nothing keeps running there.
#[test]
fn a_client_timeout_cancels_the_statement_on_the_server() {
    let mut db = Delegated::start(json!({
        "statementTimeoutMillis": 0, "clientTimeoutMillis": 1000,
        "pool": {"max": 2, "min": 0, "connectionTimeoutMillis": 3000}
    }));
    let reader = db.token("reader", &["sql-read"]);
    let started = std::time::Instant::now();
    let error = Host::tool_error(&db.query_as(&reader, "SELECT pg_sleep(20)", json!([])));
    assert_eq!(error["error"], "DATABASE_UNAVAILABLE", "{error}");
    assert!(started.elapsed().as_secs() < 10);
    // The sleep was cancelled on the server, not left running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let sleeping = db.cluster.query_texts(
            "postgres",
            "SELECT count(*)::text FROM pg_stat_activity \
             WHERE query LIKE 'SELECT pg_sleep(20)%' AND state = 'active'",
        );
        if sleeping == ["0"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the statement still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // And the module still serves.
    assert_eq!(
        rows(&db.query_as(&reader, "SELECT 1 AS one", json!([]))),
        [json!({"one": 1})]
    );
}
