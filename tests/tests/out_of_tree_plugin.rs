//! The plugin authoring kit: the echo module, copied out of the workspace
//! as a standalone crate that depends on plugin-api only, built with plain
//! `cargo build`, dropped into a plugin directory and loaded by a running
//! host through config alone.

use std::process::Command;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::paths::workspace_root;
use serde_json::json;

#[test]
fn a_module_built_outside_the_workspace_loads_through_config_alone() {
    let root = workspace_root();
    let crate_dir = tempfile::Builder::new()
        .prefix("my-module-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(crate_dir.path().join("src")).unwrap();
    std::fs::copy(
        root.join("plugins/echo/src/lib.rs"),
        crate_dir.path().join("src/lib.rs"),
    )
    .unwrap();
    // What an author writes: a standalone cdylib crate against plugin-api.
    let manifest = format!(
        r#"[package]
name = "my-module"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
mcp-delegate-plugin-api = {{ path = "{}" }}
serde_json = "1"
tracing = "0.1"

[profile.dev]
panic = "unwind"
"#,
        root.join("plugin-api").display()
    );
    std::fs::write(crate_dir.path().join("Cargo.toml"), manifest).unwrap();
    // Same dependency versions as the host (no surprise downloads).
    std::fs::copy(root.join("Cargo.lock"), crate_dir.path().join("Cargo.lock")).unwrap();
    let target = root.join("target/out-of-tree");
    let status = Command::new(env!("CARGO"))
        .current_dir(crate_dir.path())
        .args(["build", "--quiet", "--target-dir"])
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo build");
    assert!(status.success(), "the out-of-tree module did not build");

    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        target.join("debug/libmy_module.so"),
        plugins.path().join("libmy_module.so"),
    )
    .unwrap();
    let config = json!({"delegation": {"modules": {"echo7": {"greeting": "built elsewhere"}}}});
    let mut host = Host::start(&config, plugins.path());
    let result = host.call_tool("echo7-echo", json!({"message": "hello"}));
    assert_eq!(result["structuredContent"]["greeting"], "built elsewhere");
    assert_eq!(result["structuredContent"]["instance"], "echo7");
    assert!(host.logs().iter().any(|l| l.contains("libmy_module.so")));
}
