//! The official Python MCP client (PyPI `mcp`, installed into target/pyenv
//! by the README's test command) against the real host, in both the legacy
//! initialize flow and the 2026-07-28 discover flow.

use std::process::Command;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library, workspace_root};
use serde_json::{json, Value};

fn python() -> std::path::PathBuf {
    let path = workspace_root().join("target/pyenv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: the README's test command installs the Python MCP client",
        path.display()
    );
    path
}

fn run_client(url: &str, mode: &str, bearer: Option<&str>) -> Value {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/interop/python_client.py"))
        .args([url, mode, "echo-echo"]);
    if let Some(token) = bearer {
        command.env("MCP_BEARER_TOKEN", token);
    }
    let out = command.output().expect("run python client");
    assert!(
        out.status.success(),
        "python client failed ({mode}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

#[test]
fn official_python_client_completes_both_protocol_flows() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let host = Host::start(
        &json!({"delegation": {"modules": {"echo": {}}}}),
        plugins.path(),
    );
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let seen = run_client(&host.mcp_url(), mode, None);
        assert_eq!(seen["protocolVersion"], version, "{seen}");
        assert_eq!(
            seen["tools"],
            json!(["echo-echo", "health-check", "user-info"])
        );
        assert_eq!(seen["okIsError"], false);
        assert_eq!(seen["structured"]["message"], "hello from python");
        assert_eq!(seen["failedIsError"], true);
        let error: Value = serde_json::from_str(seen["failedText"].as_str().unwrap()).unwrap();
        assert_eq!(error["error"], "PLUGIN_PANIC");
    }
}

#[test]
fn official_python_client_completes_the_flow_with_a_bearer_token() {
    let idp = TestIdp::start();
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({
        "auth": {"trustedIDPs": [{"name": "requestor-jwt", "issuer": idp.issuer,
            "audience": "mcp-oauth", "jwksUri": idp.jwks_uri()}]},
        "delegation": {"modules": {"echo": {}}}
    });
    let host = Host::start(&config, plugins.path());
    let token = idp.mint(
        "alice",
        "mcp-oauth",
        json!({"roles": ["user"], "legacy_name": "alice_db"}),
    );
    for mode in ["legacy", "auto"] {
        let seen = run_client(&host.mcp_url(), mode, Some(&token));
        assert_eq!(seen["okIsError"], false, "{seen}");
        assert_eq!(seen["structured"]["context"]["userId"], "alice");
        assert_eq!(
            seen["structured"]["context"]["delegatedIdentity"],
            "alice_db"
        );
    }
    // And without the token the same client is turned away.
    let out = Command::new(python())
        .arg(workspace_root().join("tests/interop/python_client.py"))
        .args([host.mcp_url().as_str(), "legacy", "echo-echo"])
        .output()
        .expect("run python client");
    assert!(!out.status.success());
}
