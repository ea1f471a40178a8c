//! TLS to the database (`options.ssl`), with rustls, against a cluster that
//! refuses non-TLS TCP connections.

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use mcp_delegate_tests::pg::{test_certificates, Cluster};
use mcp_delegate_tests::pgfixture::{auth_section, module_entry, FIXTURE_SQL};
use serde_json::{json, Value};

#[test]
fn ssl_options_verify_the_server_and_plain_tcp_is_refused_by_it() {
    let cluster = Cluster::start();
    cluster.exec("postgres", FIXTURE_SQL);
    let (ca, cert, key) = test_certificates();
    cluster.enable_tls(&cert, &key);
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca).unwrap();

    let idp = TestIdp::start();
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let entry = |ssl: Value| {
        module_entry(
            &cluster,
            json!({"options": {"ssl": ssl}, "pool": {"max": 2, "min": 0, "connectionTimeoutMillis": 2000}}),
        )
    };
    let config = json!({
        "auth": auth_section(&idp),
        "delegation": {"modules": {
            "postgresql1": entry(json!({"ca": ca})),
            "postgresql2": entry(json!({"ca": ca_file.path().to_str().unwrap()})),
            "postgresql3": entry(json!({"rejectUnauthorized": false})),
            "postgresql4": entry(json!(true)),
            "postgresql5": entry(json!(false))
        }}
    });
    let mut host = Host::start(&config, plugins.path());
    host.bearer = Some(idp.mint(
        "reader",
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"]}),
    ));
    // The server refuses non-TLS TCP, so a successful query proves TLS.
    for tool in ["sql1-delegate", "sql2-delegate", "sql3-delegate"] {
        let result = host.call_tool(
            tool,
            json!({"action": "query", "sql": "SELECT current_user AS u"}),
        );
        assert_eq!(
            result["structuredContent"]["rows"],
            json!([{"u": "reader"}]),
            "{tool}: {result}"
        );
    }
    let sessions = cluster.query_texts(
        "postgres",
        "SELECT a.application_name || ':' || s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name LIKE 'mcp-delegate/%' ORDER BY 1",
    );
    assert_eq!(
        sessions,
        [
            "mcp-delegate/postgresql1:true",
            "mcp-delegate/postgresql2:true",
            "mcp-delegate/postgresql3:true"
        ]
    );
    // Verification against the public roots fails for a private CA; plain
    // TCP is refused by the server. Both are clear "unavailable" errors.
    for tool in ["sql4-delegate", "sql5-delegate"] {
        let result = host.call_tool(tool, json!({"action": "query", "sql": "SELECT 1"}));
        assert_eq!(
            Host::tool_error(&result)["error"],
            "DATABASE_UNAVAILABLE",
            "{tool}"
        );
    }
}
