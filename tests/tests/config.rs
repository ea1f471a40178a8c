//! `check-config` and secret references, through the real binary.

use mcp_delegate_tests::host::{self, Host};
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use serde_json::{json, Value};

#[test]
fn check_config_reports_every_error_with_its_path_and_never_a_secret() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("PG1_PASSWORD"), "hunter2-very-secret\n").unwrap();
    let config = json!({
        "auth": {"mode": "none"},
        "mcp": {"port": "eighty", "colour": "blue"},
        "delegation": {"modules": {
            "postgresql1": {"database": "d", "user": "u",
                "password": {"$secret": "PG1_PASSWORD"}, "pool": {"max": "ten"}},
            "postgresql2": {"database": "d", "user": "u",
                "password": {"$secret": "NOT_THERE"}, "frobnicate": 1}
        }},
        "surprise": true
    });
    let (code, stdout) = host::check_config(
        &config,
        plugins.path(),
        &["--secrets-dir", secrets.path().to_str().unwrap()],
    );
    assert_ne!(code, 0, "{stdout}");
    for expected in [
        "error: delegation.modules.postgresql2.password: secret 'NOT_THERE' not found",
        "error: mcp.port:",
        "warning: surprise: unknown key",
        "warning: mcp.colour: unknown key",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("hunter2"), "a secret leaked:\n{stdout}");
}

#[test]
fn check_config_validates_module_entries_through_the_plugin() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let config = json!({"auth": {"mode": "none"}, "delegation": {"modules": {
        "postgresql1": {"database": "d", "user": "u", "pool": {"max": "ten"}},
        "postgresql2": {"database": "d", "user": "u", "frobnicate": 1}
    }}});
    let (code, stdout) = host::check_config(&config, plugins.path(), &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("error: delegation.modules.postgresql1.pool.max:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: delegation.modules.postgresql2.frobnicate: unknown key"),
        "{stdout}"
    );

    let good = json!({"auth": {"mode": "none"}, "delegation": {"modules": {"postgresql1": {"database": "d", "user": "u"}}}});
    let (code, stdout) = host::check_config(&good, plugins.path(), &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ok: 1 module(s), 5 tool(s)"), "{stdout}");
}

#[test]
fn secrets_resolve_from_files_and_environment_at_startup() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("GREETING_FILE"), "from-a-file\n").unwrap();
    let config = json!({"delegation": {"modules": {
        "echo1": {"greeting": {"$secret": "GREETING_FILE"}}
    }}});
    let mut host = Host::start_with(
        &config,
        plugins.path(),
        &["--secrets-dir", secrets.path().to_str().unwrap()],
    );
    let result = host.call_tool("echo1-echo", json!({"message": "m"}));
    assert_eq!(result["structuredContent"]["greeting"], "from-a-file");
    assert!(!host.logs().join("\n").contains("from-a-file"));
}

#[test]
fn an_unresolved_secret_stops_startup_with_the_field_path() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config =
        json!({"delegation": {"modules": {"echo1": {"greeting": {"$secret": "MISSING_X"}}}}});
    let (code, _, stderr) =
        host::serve_to_exit(&config, plugins.path(), &["--secrets-dir", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("delegation.modules.echo1.greeting"),
        "{stderr}"
    );
}

/// `check-config` builds what `serve` builds (and reload too): every class
/// of error that stops `serve` (a type error, a bad value, an unusable IdP,
/// a missing secret, a malformed module entry, a plugin refusing its entry,
/// duplicate tool names, a token exchange through an unknown IdP or one not
/// used for it, a plugin declaring an invalid tool, no authentication off
/// loopback) fails `check-config` too, with the field's path, and stops
/// `serve` with the same path.
#[test]
fn check_config_refuses_every_class_of_error_serve_refuses() {
    let exchange_through_a_requestor_idp = json!({
        "auth": {"trustedIDPs": [{"name": "corp", "issuer": "https://idp.example.com",
            "audience": "mcp", "jwksUri": "https://idp.example.com/jwks", "use": ["requestor"]}]},
        "delegation": {"modules": {"echo1": {"tokenExchange": {
            "idpName": "corp", "tokenEndpoint": "https://idp.example.com/token",
            "audience": "db", "clientId": "c", "clientSecret": "s"}}}}
    });
    let invalid_tool = json!({
        "auth": {"mode": "none"},
        "delegation": {"modules": {"echo1": {"inputSchema": "not a schema"}}}
    });
    let plugins = plugin_dir(&[
        plugin_library("mcp_delegate_echo"),
        plugin_library("mcp_delegate_postgresql"),
    ]);
    let none = json!({"mode": "none"});
    let idp = |extra: Value| {
        let mut idp = json!({"name": "corp", "issuer": "https://idp.example.com",
            "audience": "mcp", "jwksUri": "https://idp.example.com/jwks"});
        if let (Some(idp), Value::Object(extra)) = (idp.as_object_mut(), extra) {
            idp.extend(extra);
        }
        idp
    };
    // One config per class of error serve refuses, and the path it names.
    let classes = [
        (json!({"auth": none, "mcp": {"port": "eighty"}}), "mcp.port"),
        (
            json!({"auth": none, "mcp": {"maxRequestBytes": 0}}),
            "mcp.maxRequestBytes",
        ),
        (
            json!({"auth": none, "mcp": {"maxConnections": 0}}),
            "mcp.maxConnections",
        ),
        (
            json!({"auth": none, "mcp": {"requestTimeoutMillis": 0}}),
            "mcp.requestTimeoutMillis",
        ),
        (json!({"auth": {"trustedIDPs": []}}), "auth.trustedIDPs"),
        (
            json!({"auth": {"trustedIDPs": [idp(json!({"algorithms": ["HS256"]}))]}}),
            "auth.trustedIDPs[0].algorithms[0]",
        ),
        (
            json!({"auth": {"trustedIDPs": [idp(json!({})), idp(json!({}))]}}),
            "auth.trustedIDPs[1].name",
        ),
        (
            json!({"auth": none, "delegation": {"modules": {"echo1": {"greeting": {"$secret": "NO_SUCH_SECRET_ANYWHERE"}}}}}),
            "delegation.modules.echo1.greeting",
        ),
        (
            json!({"auth": none, "delegation": {"modules": {"echo1": []}}}),
            "delegation.modules.echo1",
        ),
        (
            json!({"auth": none, "delegation": {"modules": {"echo1": {"toolPrefix": 3}}}}),
            "delegation.modules.echo1.toolPrefix",
        ),
        (
            json!({"auth": none, "delegation": {"modules": {"echo1": {"greeting": 7}}}}),
            "delegation.modules.echo1.greeting",
        ),
        (
            json!({"auth": none, "delegation": {"modules": {"postgresql1": {"host": "db", "port": "x"}}}}),
            "delegation.modules.postgresql1.port",
        ),
        (
            json!({"auth": none, "delegation": {"modules": {
                "echo1": {}, "echo2": {"toolPrefix": "echo1"}}}}),
            "delegation.modules.echo2",
        ),
        (
            json!({"auth": {"trustedIDPs": [idp(json!({}))]},
                   "delegation": {"modules": {"echo1": {"tokenExchange": {
                "idpName": "nobody", "tokenEndpoint": "https://idp.example.com/token",
                "audience": "db", "clientId": "c", "clientSecret": "s"}}}}}),
            "delegation.modules.echo1.tokenExchange.idpName",
        ),
        (
            exchange_through_a_requestor_idp,
            "delegation.modules.echo1.tokenExchange.idpName",
        ),
        (invalid_tool, "delegation.modules.echo1"),
        (
            json!({"auth": none, "delegation": {"modules": {"echo1": {"maxConcurrentCalls": 0}}}}),
            "delegation.modules.echo1.maxConcurrentCalls",
        ),
    ];
    let mut cases: Vec<(Value, &str, &[&str])> = classes
        .into_iter()
        .map(|(config, path)| (config, path, &[][..]))
        .collect();
    cases.push((
        json!({"auth": {"mode": "none"}}),
        "auth.mode",
        &["--bind", "0.0.0.0"],
    ));
    for (config, path, args) in cases {
        let (code, stdout) = host::check_config(&config, plugins.path(), args);
        assert_eq!(code, 1, "{config}: {stdout}");
        assert!(
            stdout.contains(&format!("error: {path}: ")),
            "{config}: {stdout}"
        );
        let (code, _, stderr) = host::serve_to_exit(&config, plugins.path(), args);
        assert_eq!(code, 2, "{config}: {stderr}");
        assert!(stderr.contains(path), "{config}: {stderr}");
    }
}
