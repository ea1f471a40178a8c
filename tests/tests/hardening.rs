//! The layers below the SQL policy, each tried alone, on PostgreSQL 15 and
//! 18: delegated identities are checked before anything runs as them; the
//! service account's hardening profile is checked, shown and enforced; and
//! the strict profile stops a query-text role switch inside the database
//! even when nothing else would.

use mcp_delegate_tests::host::{self, Host};
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use mcp_delegate_tests::pg::{Cluster, PgVersion};
use mcp_delegate_tests::pgfixture::{module_entry, rows, Delegated};
use serde_json::{json, Value};

/// Roles that exist, that the service account is a member of, and that
/// must still never be delegated to.
const POWERFUL_ROLES: &str = "
CREATE ROLE su SUPERUSER NOLOGIN;
CREATE ROLE bypass BYPASSRLS NOLOGIN;
CREATE ROLE creator CREATEROLE NOLOGIN;
CREATE ROLE repl REPLICATION NOLOGIN;
CREATE ROLE stranger NOLOGIN;
GRANT su, bypass, creator, repl TO mcp_service;
GRANT INSERT, SELECT ON notes TO su, bypass, creator, repl, stranger;
GRANT USAGE ON SEQUENCE notes_id_seq TO su, bypass, creator, repl, stranger;
";

fn identities_that_must_not_be_used_run_nothing(version: PgVersion) {
    // The account can switch to powerful roles, so its profile is unsafe:
    // "warn" lets the identity check be what refuses.
    let mut db = Delegated::start_on(version, json!({"serviceAccountCheck": "warn"}));
    db.cluster.exec("postgres", POWERFUL_ROLES);
    let long = "x".repeat(70);
    let refused = [
        "none",
        "NONE",
        "public",
        "current_user",
        "session_user",
        "current_role",
        "mcp_service",
        "pg_read_all_data",
        "pg_write_all_data",
        "postgres",
        "su",
        "bypass",
        "creator",
        "repl",
        "stranger",
        "ghost",
        long.as_str(),
    ];
    for identity in refused {
        let token = db.token(identity, &["sql-read", "sql-write"]);
        for sql in [
            format!("INSERT INTO notes (owner, body) VALUES ('x', 'ran as {identity}')"),
            "SELECT current_user AS u, session_user AS s".to_owned(),
        ] {
            let result = db.query_as(&token, &sql, json!([]));
            let error = Host::tool_error(&result);
            assert_eq!(error["error"], "DELEGATION_FAILED", "{identity}: {result}");
        }
        db.host.bearer = Some(token);
        for tool in ["sql1-schema", "sql1-table-details"] {
            let result = db
                .host
                .call_tool(tool, json!({"tableName": "notes", "schemaName": "public"}));
            let error = Host::tool_error(&result);
            assert_eq!(
                error["error"], "DELEGATION_FAILED",
                "{identity} {tool}: {result}"
            );
        }
    }
    let written = db.cluster.query_texts(
        "postgres",
        "SELECT count(*)::text FROM notes WHERE body LIKE 'ran as%'",
    );
    assert_eq!(written, ["0"], "a refused identity wrote");
    // The control: a delegated role works, and the check is cached.
    let writer = db.token("writer", &["sql-read", "sql-write"]);
    let result = db.query_as(
        &writer,
        "INSERT INTO notes (body) VALUES ('ran as writer')",
        json!([]),
    );
    assert_eq!(result["isError"], false, "{result}");
}

#[test]
fn identities_that_must_not_be_used_run_nothing_on_postgresql_15() {
    identities_that_must_not_be_used_run_nothing(PgVersion::V15);
}

#[test]
fn identities_that_must_not_be_used_run_nothing_on_postgresql_18() {
    identities_that_must_not_be_used_run_nothing(PgVersion::V18);
}

/// The module's report in `health-check` and `/ready`.
fn profile(db: &mut Delegated) -> (Value, Value) {
    let admin = db.token("reader", &["admin"]);
    db.host.bearer = Some(admin);
    let health = db.host.call_tool("health-check", json!({}))["structuredContent"]["modules"]
        ["postgresql1"]
        .clone();
    let (_, ready) = db.host.get("/ready");
    (health, ready["status"]["postgresql1"].clone())
}

/// The statement of the report, run inside the database as the service
/// account after `SET ROLE reader`, as a delegated transaction would: the
/// vault rows it reaches, or the database's error.
fn switch_inside_the_database(cluster: &Cluster) -> Result<Vec<String>, String> {
    let url = format!(
        "host=127.0.0.1 port={} user=mcp_service password=service-pass dbname=postgres",
        cluster.port
    );
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute("BEGIN READ ONLY; SET LOCAL ROLE reader")
        .unwrap();
    let rows = client
        .query(
            "SELECT b.word FROM ts_stat($$SELECT set_config('role','vault',false)::tsvector$$) a \
             CROSS JOIN LATERAL ts_stat('SELECT to_tsvector(''simple'', secret) FROM vault_data \
             WHERE '||(a.ndoc>0)::text) b",
            &[],
        )
        .map_err(|err| {
            err.as_db_error()
                .map_or_else(|| err.to_string(), |db| db.message().to_owned())
        })?;
    Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

fn profiles_are_checked_shown_and_enforced(version: PgVersion) {
    let mut db = Delegated::start_on(version, json!({}));
    let reader = db.token("reader", &["sql-read"]);
    let attack = "SELECT b.word FROM ts_stat($$SELECT set_config('role','vault',false)::tsvector$$) a \
        CROSS JOIN LATERAL ts_stat('SELECT to_tsvector(''simple'', secret) FROM vault_data WHERE '||(a.ndoc>0)::text) b";

    // standard: NOINHERIT, set_config still executable by everyone. The
    // database alone does not stop the switch; the policy does.
    let (health, ready) = profile(&mut db);
    assert_eq!(health["profile"], "standard", "{health}");
    assert_eq!(ready["profile"], "standard", "{ready}");
    let reached = switch_inside_the_database(&db.cluster).expect("the switch works in standard");
    assert!(
        reached.iter().any(|word| word.contains("canary")),
        "the fixture's vault rows are reachable by the switch: {reached:?}"
    );
    let error = Host::tool_error(&db.query_as(&reader, attack, json!([])));
    assert_eq!(error["error"], "SQL_FORBIDDEN_FUNCTION");

    // strict: the SQL `db-setup` prints, run as it is.
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let config = host::config_file(&json!({
        "auth": {"mode": "none"},
        "delegation": {"modules": {"postgresql1": module_entry(&db.cluster, json!({}))}}
    }));
    let mut args = vec![
        "db-setup".to_owned(),
        "--module".into(),
        "postgresql1".into(),
        "--config".into(),
        config.path().to_str().unwrap().into(),
        "--plugin-dir".into(),
        plugins.path().to_str().unwrap().into(),
    ];
    for role in [
        "reader",
        "writer",
        "nobody",
        "DOMAIN\\odd \"user\"",
        "vault",
    ] {
        args.push("--role".into());
        args.push(role.into());
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, setup_sql, stderr) = host::run_to_exit(&arg_refs);
    assert_eq!(code, 0, "{stderr}");
    db.cluster.exec("postgres", &setup_sql);
    let (health, ready) = profile(&mut db);
    assert_eq!(health["profile"], "strict", "{health}");
    assert_eq!(ready["profile"], "strict", "{ready}");
    let refused = switch_inside_the_database(&db.cluster).expect_err("strict stops the switch");
    assert!(refused.contains("set_config"), "{refused}");
    let error = Host::tool_error(&db.query_as(&reader, attack, json!([])));
    assert_eq!(error["error"], "SQL_FORBIDDEN_FUNCTION");
    // Delegation itself still works (the service account keeps set_config).
    let result = db.query_as(&reader, "SELECT current_user AS u", json!([]));
    assert_eq!(rows(&result), [json!({"u": "reader"})]);

    // unsafe: an account that can create roles. Every call is refused
    // until it is fixed; health-check and /ready say why.
    db.cluster
        .exec("postgres", "ALTER ROLE mcp_service CREATEROLE");
    let (health, ready) = profile(&mut db);
    assert_eq!(health["profile"], "unsafe", "{health}");
    assert_eq!(health["healthy"], false, "{health}");
    assert!(
        health["profileReason"]
            .as_str()
            .unwrap()
            .contains("CREATEROLE"),
        "{health}"
    );
    assert_eq!(ready["profile"], "unsafe", "{ready}");
    let error = Host::tool_error(&db.query_as(&reader, "SELECT 1", json!([])));
    assert_eq!(error["error"], "SERVICE_ACCOUNT_UNSAFE", "{error}");

    // serviceAccountCheck "warn": the same account serves, and says so.
    let warned_config = json!({
        "auth": mcp_delegate_tests::pgfixture::auth_section(&db.idp),
        "delegation": {"modules": {"postgresql1": module_entry(
            &db.cluster, json!({"serviceAccountCheck": "warn"}))}}
    });
    let mut warned = Host::start(&warned_config, plugins.path());
    warned.bearer = Some(reader.clone());
    let result = warned.call_tool(
        "sql1-delegate",
        json!({"action": "query", "sql": "SELECT current_user AS u"}),
    );
    assert_eq!(rows(&result), [json!({"u": "reader"})]);
    let result = warned.call_tool("sql1-delegate", json!({"action": "query", "sql": attack}));
    assert_eq!(Host::tool_error(&result)["error"], "SQL_FORBIDDEN_FUNCTION");
    assert!(warned
        .logs()
        .iter()
        .any(|line| line.contains("serving anyway")));

    // An account that can reach a superuser through a delegated role's
    // memberships is unsafe too.
    db.cluster.exec(
        "postgres",
        "ALTER ROLE mcp_service NOCREATEROLE; CREATE ROLE dba SUPERUSER NOLOGIN; \
         GRANT dba TO reader;",
    );
    let (health, _) = profile(&mut db);
    assert_eq!(health["profile"], "unsafe", "{health}");
    assert!(
        health["profileReason"].as_str().unwrap().contains("dba"),
        "{health}"
    );
    db.cluster.exec("postgres", "REVOKE dba FROM reader");

    // An account that inherits a delegated role's privileges is unsafe
    // too (before 16 by its INHERIT attribute, from 16 by the grant).
    db.cluster
        .exec("postgres", "ALTER ROLE mcp_service NOCREATEROLE");
    let (inherit, back) = match version {
        PgVersion::V15 => (
            "ALTER ROLE mcp_service INHERIT",
            "ALTER ROLE mcp_service NOINHERIT",
        ),
        PgVersion::V18 => (
            "GRANT writer TO mcp_service WITH INHERIT TRUE",
            "GRANT writer TO mcp_service WITH INHERIT FALSE",
        ),
    };
    db.cluster.exec("postgres", inherit);
    let (health, _) = profile(&mut db);
    assert_eq!(health["profile"], "unsafe", "{health}");
    assert!(
        health["profileReason"]
            .as_str()
            .unwrap()
            .contains("inherits"),
        "{health}"
    );
    db.cluster.exec("postgres", back);
    let (health, _) = profile(&mut db);
    assert_eq!(health["profile"], "strict", "{health}");

    // A check that cannot run counts as unsafe.
    db.cluster.exec(
        "postgres",
        "REVOKE SELECT ON pg_catalog.pg_auth_members FROM PUBLIC;",
    );
    let (health, _) = profile(&mut db);
    assert_eq!(health["profile"], "unsafe", "{health}");
    assert!(
        health["profileReason"]
            .as_str()
            .unwrap()
            .contains("could not run"),
        "{health}"
    );
    let error = Host::tool_error(&db.query_as(&reader, "SELECT 1", json!([])));
    assert_eq!(error["error"], "SERVICE_ACCOUNT_UNSAFE", "{error}");
}

#[test]
fn profiles_are_checked_shown_and_enforced_on_postgresql_15() {
    profiles_are_checked_shown_and_enforced(PgVersion::V15);
}

#[test]
fn profiles_are_checked_shown_and_enforced_on_postgresql_18() {
    profiles_are_checked_shown_and_enforced(PgVersion::V18);
}

/// A role or database default of `standard_conforming_strings = off` would
/// make the server read `'\'` differently from the SQL policy's lexer, and
/// turn what the policy saw as string literals into calls. The module
/// always starts its sessions with it on.
#[test]
fn a_legacy_string_setting_cannot_make_the_server_read_what_the_policy_did_not() {
    let mut db = Delegated::start(json!({}));
    db.cluster.exec(
        "postgres",
        "ALTER ROLE mcp_service SET standard_conforming_strings = off; \
         ALTER DATABASE postgres SET standard_conforming_strings = off;",
    );
    let reader = db.token("reader", &["sql-read"]);
    let smuggled = "SELECT '\\', ' || (SELECT count(*) FROM ts_stat($q$SELECT pg_catalog.set_config($r$role$r$,$r$vault$r$,true)::tsvector$q$))::text || (SELECT string_agg(word,$s$ $s$) FROM ts_stat($q$SELECT secret::tsvector FROM vault_data$q$)) || (SELECT count(*) FROM ts_stat($q$SELECT pg_catalog.set_config($r$role$r$,$r$reader$r$,true)::tsvector$q$))::text || ' AS a --'";
    // The host client fails the test if the canary comes back; the
    // server must read the statement as the policy did: string literals.
    let result = db.query_as(&reader, smuggled, json!([]));
    assert_eq!(result["isError"], false, "{result}");
    let text = result["structuredContent"].to_string();
    assert!(text.contains("ts_stat"), "not read as a literal: {text}");
    let settings = rows(&db.query_as(
        &reader,
        "SELECT current_setting('standard_conforming_strings') AS s",
        json!([]),
    ));
    assert_eq!(settings, [json!({"s": "on"})]);
}

/// Attribute notation calls a one-argument function without parentheses,
/// on rows and on plain values: `(q).run` is `run(q)`. A database function
/// that runs its argument as SQL (a common helper) must not be reachable
/// that way unless the operator allowed it, even under the strict profile.
#[test]
fn attribute_notation_cannot_reach_functions_that_are_not_allowed() {
    let mut db = Delegated::start(json!({}));
    db.cluster.exec(
        "postgres",
        "CREATE FUNCTION public.run(q text) RETURNS text LANGUAGE plpgsql AS $$ \
           DECLARE r text; BEGIN EXECUTE q INTO r; RETURN r; END $$; \
         CREATE FUNCTION public.status(n notes) RETURNS text LANGUAGE sql AS 'SELECT 1::text';",
    );
    let reader = db.token("reader", &["sql-read"]);
    let steal = "SELECT (q).run FROM (VALUES \
        (1, $$SELECT set_config('role','vault',true)$$), \
        (2, $$SELECT string_agg(secret, ',') FROM vault_data$$), \
        (3, $$SELECT set_config('role','reader',true)$$)) v(o, q) ORDER BY o";
    for sql in [
        steal,
        "SELECT v.run FROM (VALUES ($$SELECT 1$$)) v(run2) ",
        "SELECT ('SELECT 1'::text).run",
        "SELECT n.status FROM notes n",
    ] {
        let error = Host::tool_error(&db.query_as(&reader, sql, json!([])));
        assert_eq!(error["error"], "SQL_FORBIDDEN_FUNCTION", "{sql}: {error}");
        assert_eq!(error["reason"], "attribute-call", "{sql}: {error}");
    }
    // A column named like a function is fine without its table name.
    let result = db.query_as(
        &reader,
        "SELECT status FROM (VALUES (1)) v(status)",
        json!([]),
    );
    assert_eq!(rows(&result), [json!({"status": 1})]);
    // Allowed by the operator: then it is a call like any other.
    let mut allowed = Delegated::start(json!({"allowedFunctions": ["public.status"]}));
    allowed.cluster.exec(
        "postgres",
        "CREATE FUNCTION public.status(n notes) RETURNS text LANGUAGE sql AS 'SELECT ''ok''::text';",
    );
    let reader = allowed.token("reader", &["sql-read"]);
    let result = allowed.query_as(&reader, "SELECT n.status FROM notes n LIMIT 1", json!([]));
    assert_eq!(rows(&result), [json!({"status": "ok"})]);
}
