//! Who is calling, inside PostgreSQL: the delegated transaction carries
//! `mcp.subject`, `mcp.client`, `mcp.tool`, `mcp.request_id` and, for a
//! module with `claimsSetting: true`, `request.jwt.claims`, so row-level
//! security policies and the server's own log can use them. On
//! PostgreSQL 15 and 18.

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use mcp_delegate_tests::pg::{Cluster, PgVersion};
use mcp_delegate_tests::pgfixture::{auth_section, module_entry, rows, FIXTURE_SQL};
use serde_json::{json, Value};

/// Tickets visible only to the subject of the token (not the database
/// role: alice and bob both run as `reader`).
const TICKETS_SQL: &str = r#"
CREATE TABLE tickets (id int PRIMARY KEY, owner_sub text NOT NULL, body text NOT NULL);
ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_subject ON tickets
  USING (owner_sub = current_setting('request.jwt.claims', true)::json->>'sub');
GRANT SELECT ON tickets TO reader;
INSERT INTO tickets VALUES (1, 'alice', 'alice ticket'), (2, 'bob', 'bob ticket 1'),
  (3, 'bob', 'bob ticket 2');
"#;

fn token(idp: &TestIdp, sub: &str) -> String {
    idp.mint(
        sub,
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"], "azp": "agent-x"}),
    )
}

fn query(host: &mut Host, token: &str, sql: &str) -> Value {
    host.bearer = Some(token.to_owned());
    host.call_tool("sql1-delegate", json!({"action": "query", "sql": sql}))
}

#[test]
fn the_caller_is_set_in_the_transaction_for_policies_and_the_server_log() {
    for version in PgVersion::ALL {
        let cluster = Cluster::start_version(version);
        cluster.exec("postgres", FIXTURE_SQL);
        cluster.exec("postgres", TICKETS_SQL);
        cluster.exec("postgres", "ALTER SYSTEM SET log_statement = 'all'");
        cluster.exec("postgres", "SELECT pg_reload_conf()");
        let idp = TestIdp::start();
        let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
        let config = json!({
            "auth": auth_section(&idp),
            "delegation": {"modules": {
                "postgresql1": module_entry(&cluster, json!({"claimsSetting": true}))
            }}
        });
        let mut host = Host::start(&config, plugins.path());
        let (alice, bob) = (token(&idp, "alice"), token(&idp, "bob"));

        // A policy on the token's subject: same database role, other rows.
        let seen = |host: &mut Host, token: &str| -> Vec<Value> {
            rows(&query(host, token, "SELECT id FROM tickets ORDER BY id"))
                .iter()
                .map(|row| row["id"].clone())
                .collect()
        };
        assert_eq!(seen(&mut host, &alice), [json!(1)], "{version:?}");
        assert_eq!(seen(&mut host, &bob), [json!(2), json!(3)], "{version:?}");

        let result = query(
            &mut host,
            &alice,
            "SELECT current_setting('mcp.subject') AS s, current_setting('mcp.client') AS c, \
             current_setting('mcp.tool') AS t, current_setting('mcp.request_id') AS r, \
             current_user AS u",
        );
        let row = &rows(&result)[0];
        assert_eq!(row["s"], "alice");
        assert_eq!(row["c"], "agent-x");
        assert_eq!(row["t"], "sql1-delegate");
        assert!(row["r"].as_str().unwrap().starts_with("req-"), "{row}");
        assert_eq!(row["u"], "reader");

        // The caller cannot rewrite what the policy reads.
        let spoof = query(
            &mut host,
            &alice,
            "SELECT id FROM tickets, \
             (SELECT set_config('request.jwt.claims', '{\"sub\":\"bob\"}', true)) s",
        );
        assert_eq!(spoof["isError"], true, "{spoof}");

        // The server's own log names the subject (the parameters of the
        // statement that sets the role).
        let log = cluster.server_log();
        assert!(
            log.contains("$2 = 'alice'") && log.contains("$3 = 'agent-x'"),
            "{version:?}: no attribution in the server log:\n{}",
            &log[log.len().saturating_sub(3000)..]
        );
    }
}

/// Without `claimsSetting` the claims never reach the module: a policy
/// on them sees nothing, and `request.jwt.claims` is unset.
#[test]
fn without_claims_setting_no_claims_are_set() {
    let cluster = Cluster::start_version(PgVersion::V15);
    cluster.exec("postgres", FIXTURE_SQL);
    cluster.exec("postgres", TICKETS_SQL);
    let idp = TestIdp::start();
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let config = json!({
        "auth": auth_section(&idp),
        "delegation": {"modules": {"postgresql1": module_entry(&cluster, json!({}))}}
    });
    let mut host = Host::start(&config, plugins.path());
    let alice = token(&idp, "alice");
    assert!(rows(&query(&mut host, &alice, "SELECT id FROM tickets")).is_empty());
    let result = query(
        &mut host,
        &alice,
        "SELECT coalesce(current_setting('request.jwt.claims', true), '') AS c, \
         current_setting('mcp.subject') AS s",
    );
    assert_eq!(rows(&result)[0], json!({"c": "", "s": "alice"}));
}
