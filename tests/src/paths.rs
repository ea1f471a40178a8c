//! Where the build put things, and plugin directories for a test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// `target/<profile>`: test binaries run from `target/<profile>/deps`,
/// the demo binary from `target/<profile>`.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// The host binary built by `cargo build --workspace`.
pub fn host_binary() -> PathBuf {
    let path = build_dir().join("mcp-delegate");
    assert!(
        path.exists(),
        "{} is missing: run the README's test command (it builds the workspace first)",
        path.display()
    );
    path
}

/// A plugin library built in this workspace, by crate lib name.
pub fn plugin_library(lib_name: &str) -> PathBuf {
    let path = build_dir().join(format!("lib{lib_name}.so"));
    assert!(
        path.exists(),
        "{} is missing: run the README's test command",
        path.display()
    );
    path
}

/// A fresh directory holding copies of the given libraries.
pub fn plugin_dir(libraries: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp plugin dir");
    for library in libraries {
        let name = library.file_name().expect("library file name");
        std::fs::copy(library, dir.path().join(name)).expect("copy plugin");
    }
    dir
}

/// The echo plugin rebuilt so that it answers `"build": "echo-build-2"`
/// (an upgrade of the same plugin), under a name of its own. Built once
/// per test process.
pub fn rebuilt_echo_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            echo_variant(
                "echo-rebuilt",
                &[],
                &[("MCP_DELEGATE_ECHO_BUILD", "echo-build-2")],
                "libmcp_delegate_echo_rebuilt.so",
            )
        })
        .clone()
}

/// The echo plugin built against a plugin-api with a changed `HostServices`
/// layout (feature `abi-break-test`). Built once per test process.
pub fn incompatible_echo_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            echo_variant(
                "abi-break-test",
                &["--features", "mcp-delegate-plugin-api/abi-break-test"],
                &[],
                "libmcp_delegate_echo_incompatible.so",
            )
        })
        .clone()
}

/// Builds the echo plugin in `target/<target_subdir>` with `args` and
/// `env`, and copies the library to `<file_name>` beside it (a distinct
/// name, so it can sit beside the real echo).
fn echo_variant(
    target_subdir: &str,
    args: &[&str],
    env: &[(&str, &str)],
    file_name: &str,
) -> PathBuf {
    let target_dir = workspace_root().join("target").join(target_subdir);
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .envs(env.iter().copied())
        .args(["build", "--quiet", "-p", "mcp-delegate-echo"])
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building the echo plugin in {target_subdir} failed"
    );
    let built = target_dir.join("debug").join("libmcp_delegate_echo.so");
    let renamed = target_dir.join(file_name);
    std::fs::copy(&built, &renamed).expect("copy the echo build");
    renamed
}
