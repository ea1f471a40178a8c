//! `mcp-delegate db-setup --module NAME`: prints the SQL that gives the
//! module's service account its hardening profile, as the module's plugin
//! writes it (the host does not know database kinds). Never connects.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::cli::CommonArgs;
use crate::config::{self, SecretSource};
use crate::plugins;
use crate::registry::naming;

pub fn run(file: &Path, module: &str, roles: &[String], common: &CommonArgs) -> ExitCode {
    match setup_text(file, module, roles, common) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn setup_text(
    file: &Path,
    module: &str,
    roles: &[String],
    common: &CommonArgs,
) -> Result<String, String> {
    let secrets = common
        .secrets_dir
        .clone()
        .map(|directory| SecretSource { directory })
        .unwrap_or_default();
    // Only the module's own entry matters here: errors elsewhere in the
    // file are for check-config.
    let (config, diagnostics) = config::load_file(file, &secrets);
    let config = config.ok_or_else(|| {
        let first = diagnostics
            .errors
            .first()
            .map(|e| format!("{}: {}", e.path, e.message))
            .unwrap_or_default();
        format!("the config cannot be read: {first}")
    })?;
    let entry = config
        .delegation
        .module(module)
        .ok_or_else(|| format!("no module '{module}' in delegation.modules"))?;
    let directory = common
        .plugin_dir
        .clone()
        .or_else(|| config.plugins.directory.clone())
        .or_else(plugins::default_plugin_dir)
        .ok_or("no plugin directory: pass --plugin-dir")?;
    let loaded = plugins::discover(&directory);
    let kind = naming::resolve_kind(module, entry.host.kind.as_deref(), loaded.kinds())
        .ok_or_else(|| format!("no loaded plugin serves module '{module}'"))?;
    let plugin = loaded
        .get(&kind)
        .ok_or_else(|| format!("no loaded plugin serves module kind '{kind}'"))?;
    plugin.command(
        "db-setup",
        &entry.plugin,
        &json!({"module": module, "roles": roles}),
    )
}
