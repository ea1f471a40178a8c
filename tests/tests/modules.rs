//! Loading the real plugins into the real host: instances per config entry,
//! prefixes, enabledTools, duplicate names, ABI refusal, panics.

use std::time::Duration;

use mcp_delegate_tests::host::{self, Host};
use mcp_delegate_tests::paths::{incompatible_echo_plugin, plugin_dir, plugin_library};
use mcp_delegate_tests::pg::Cluster;
use serde_json::{json, Value};

fn postgres_plugin() -> std::path::PathBuf {
    plugin_library("mcp_delegate_postgresql")
}
fn echo_plugin() -> std::path::PathBuf {
    plugin_library("mcp_delegate_echo")
}

/// The seed's dual config, pointed at two throwaway clusters.
fn seed_dual_config(first: &Cluster, second: &Cluster) -> Value {
    let text = std::fs::read_to_string(
        mcp_delegate_tests::paths::workspace_root().join("config/dual-postgresql-config.json"),
    )
    .expect("seed dual config");
    let mut config: Value = serde_json::from_str(&text).expect("JSON");
    for (name, cluster) in [("postgresql1", first), ("postgresql2", second)] {
        let entry = &mut config["delegation"]["modules"][name];
        entry["host"] = json!("127.0.0.1");
        entry["port"] = json!(cluster.port);
        // TLS to the database arrives with the PostgreSQL issue.
        entry["options"]["ssl"] = json!(false);
        entry["pool"]["connectionTimeoutMillis"] = json!(2000);
    }
    config
}

/// The service account with the seed config's password for it.
fn prepare_cluster(cluster: &Cluster, database: &str, service_user: &str) {
    let password = match service_user {
        "mcp_service" => "ServicePass123!",
        _ => "AnalyticsPass123!",
    };
    cluster.exec(
        "postgres",
        &format!("CREATE ROLE {service_user} LOGIN PASSWORD '{password}'"),
    );
    if database != "postgres" {
        cluster.exec(
            "postgres",
            &format!("CREATE DATABASE {database} OWNER {service_user}"),
        );
    }
}

fn health(host: &mut Host) -> Value {
    host.call_tool("health-check", json!({}))["structuredContent"].clone()
}

#[test]
fn seed_dual_config_gives_each_module_its_own_pool_and_prefixed_tools() {
    let primary = Cluster::start();
    let analytics = Cluster::start();
    prepare_cluster(&primary, "postgres", "mcp_service");
    prepare_cluster(&analytics, "analytics_db", "mcp_analytics");
    let plugins = plugin_dir(&[postgres_plugin(), echo_plugin()]);
    let mut host = Host::start(&seed_dual_config(&primary, &analytics), plugins.path());

    let names = host.tool_names();
    assert_eq!(
        names,
        [
            "health-check",
            "sql1-delegate",
            "sql1-schema",
            "sql1-table-details",
            "sql2-delegate",
            "sql2-schema",
            "sql2-table-details",
            "user-info"
        ]
    );
    // The seed's startup log lines.
    for line in [
        "Found 2 PostgreSQL module(s) in config",
        "Registering PostgreSQL module: postgresql1",
        "Creating SQL tools with prefix 'sql1' for module 'postgresql1'...",
        "Registered 3 SQL tools for 'postgresql2'",
    ] {
        assert!(
            host.logs().iter().any(|l| l.contains(line)),
            "missing log line {line:?}"
        );
    }
    // The server instructions come from the plugin, one line per prefix.
    let init = host.rpc(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "0"}}),
    );
    let instructions = init["result"]["instructions"].as_str().unwrap_or_default();
    for prefix in ["sql1", "sql2"] {
        assert!(
            instructions.contains(&format!("{prefix}-delegate runs SQL")),
            "{instructions}"
        );
    }
    // The plugin library is loaded once for both instances.
    let loads = host
        .logs()
        .iter()
        .filter(|l| l.contains("Loaded PostgreSQL plugin"))
        .count();
    assert_eq!(loads, 1);

    let report = health(&mut host);
    assert_eq!(report["healthy"], true, "{report}");
    let detail1 = report["modules"]["postgresql1"]["detail"].as_str().unwrap();
    let detail2 = report["modules"]["postgresql2"]["detail"].as_str().unwrap();
    assert!(detail1.contains("'postgres'"), "{detail1}");
    assert!(detail2.contains("'analytics_db'"), "{detail2}");

    // Each cluster sees only its own module's connections, as its own user.
    let sessions = |cluster: &Cluster| {
        cluster.query_texts(
            "postgres",
            "SELECT application_name || ' as ' || usename FROM pg_stat_activity \
             WHERE application_name LIKE 'mcp-delegate/%' ORDER BY 1",
        )
    };
    let mut first = sessions(&primary);
    first.dedup();
    let mut second = sessions(&analytics);
    second.dedup();
    assert_eq!(first, ["mcp-delegate/postgresql1 as mcp_service"]);
    assert_eq!(second, ["mcp-delegate/postgresql2 as mcp_analytics"]);

    // Without authentication there is no delegated identity, and the
    // module never falls back to its service account.
    let result = host.call_tool(
        "sql1-delegate",
        json!({"action": "query", "sql": "SELECT 1"}),
    );
    assert_eq!(
        Host::tool_error(&result)["error"],
        "DELEGATED_IDENTITY_MISSING"
    );

    // One database down: only its module is unhealthy; back up: healed.
    analytics.stop();
    let report = health(&mut host);
    assert_eq!(report["healthy"], false);
    assert_eq!(report["modules"]["postgresql1"]["healthy"], true);
    assert_eq!(report["modules"]["postgresql2"]["healthy"], false);
    analytics.restart();
    let report = health(&mut host);
    assert_eq!(report["healthy"], true, "{report}");
}

fn offline_pg_entry() -> Value {
    // No connection is made with min = 0 until a tool needs one.
    json!({"host": "127.0.0.1", "port": 1, "database": "d", "user": "u",
           "pool": {"min": 0, "connectionTimeoutMillis": 500}})
}

#[test]
fn custom_prefix_and_enabled_tools() {
    let plugins = plugin_dir(&[postgres_plugin(), echo_plugin()]);
    let mut prefixed = offline_pg_entry();
    prefixed["toolPrefix"] = json!("primary-db");
    let config = json!({
        "delegation": {"modules": {"postgresql1": prefixed, "echo1": {}}},
        "mcp": {"enabledTools": {
            "primary-db-delegate": true, "primary-db-schema": true,
            "primary-db-table-details": false, "health-check": true
        }}
    });
    let mut host = Host::start(&config, plugins.path());
    assert_eq!(
        host.tool_names(),
        ["health-check", "primary-db-delegate", "primary-db-schema"]
    );
    // Hidden tools (disabled, or not enabled at all) cannot be called either.
    for hidden in ["primary-db-table-details", "echo1-echo", "sql1-delegate"] {
        let response = host.rpc("tools/call", json!({"name": hidden, "arguments": {}}));
        assert_eq!(response["error"]["code"], -32602, "{hidden}: {response}");
        assert!(response["error"]["message"]
            .as_str()
            .unwrap()
            .contains(hidden));
    }
}

#[test]
fn duplicate_tool_names_fail_startup_naming_both_entries() {
    let plugins = plugin_dir(&[postgres_plugin()]);
    let mut clash = offline_pg_entry();
    clash["toolPrefix"] = json!("sql1");
    let config = json!({"auth": {"mode": "none"}, "delegation": {"modules": {
        "postgresql1": offline_pg_entry(), "postgresql7": clash
    }}});
    let (code, _, stderr) = host::serve_to_exit(&config, plugins.path(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("tool name 'sql1-delegate' is produced by both module 'postgresql1' and module 'postgresql7'"),
        "{stderr}"
    );
}

#[test]
fn plugin_built_against_a_changed_interface_is_refused_and_the_rest_serves() {
    let broken = incompatible_echo_plugin();
    let plugins = plugin_dir(&[broken, postgres_plugin()]);
    let config = json!({"delegation": {"modules": {
        "echo1": {}, "postgresql1": offline_pg_entry()
    }}});
    let mut host = Host::start(&config, plugins.path());
    let refusal = host
        .logs()
        .into_iter()
        .find(|line| line.contains("plugin refused"))
        .expect("a refusal is logged");
    assert!(
        refusal.contains("libmcp_delegate_echo_incompatible.so"),
        "{refusal}"
    );
    assert!(refusal.contains("incompatible"), "{refusal}");
    assert!(
        refusal.len() < 2000,
        "refusal should be short, was {} bytes",
        refusal.len()
    );
    assert_eq!(
        host.tool_names(),
        [
            "health-check",
            "sql1-delegate",
            "sql1-schema",
            "sql1-table-details",
            "user-info"
        ]
    );
    let (status, ready) = host.get("/ready");
    assert_eq!(status, 503);
    assert_eq!(ready["unavailable"][0]["module"], "echo1");
}

#[test]
fn a_plugin_panic_becomes_an_error_result_and_the_host_keeps_serving() {
    let plugins = plugin_dir(&[echo_plugin()]);
    let config = json!({"delegation": {"modules": {"echo": {"greeting": "hello"}}}});
    let mut host = Host::start(&config, plugins.path());
    let result = host.call_tool("echo-echo", json!({"message": "boom", "panic": true}));
    let error = Host::tool_error(&result);
    assert_eq!(error["error"], "PLUGIN_PANIC");
    assert!(host.wait_for_log("plugin panicked", Duration::from_secs(5)));
    for round in 0..3 {
        let result = host.call_tool("echo-echo", json!({"message": format!("after {round}")}));
        assert_eq!(result["isError"], false);
        assert_eq!(
            result["structuredContent"]["message"],
            format!("after {round}")
        );
        assert_eq!(result["structuredContent"]["greeting"], "hello");
    }
    assert!(host.is_running());
}
