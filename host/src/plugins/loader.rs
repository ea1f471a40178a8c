//! Finds plugin libraries in a directory and loads each exactly once.
//!
//! We use `lib_header_from_path(..).init_root_module()` rather than
//! abi_stable's `load_from_file`: the latter caches one module per interface
//! type and would hand back the first plugin for every later path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use abi_stable::std_types::RResult;
use mcp_delegate_plugin_api::{
    ConfigReport, HostServices, ModuleInfo, PluginInstanceBox, PluginModuleRef,
};
use serde_json::Value;

/// One loaded plugin library.
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub info: ModuleInfo,
    module: PluginModuleRef,
}

impl LoadedPlugin {
    pub fn validate_config(&self, config: &Value) -> ConfigReport {
        let report = (self.module.validate_config())(config.to_string().as_str().into());
        serde_json::from_str(report.as_str()).unwrap_or_else(|err| ConfigReport {
            errors: vec![mcp_delegate_plugin_api::ConfigIssue {
                path: String::new(),
                message: format!("the plugin returned an unreadable config report: {err}"),
            }],
            warnings: vec![],
        })
    }

    pub fn new_instance(
        &self,
        instance_name: &str,
        config: &Value,
        host: HostServices,
    ) -> Result<PluginInstanceBox, String> {
        match (self.module.new_instance())(
            instance_name.into(),
            config.to_string().as_str().into(),
            host,
        ) {
            RResult::ROk(instance) => Ok(instance),
            RResult::RErr(message) => Err(message.into_string()),
        }
    }
}

impl LoadedPlugin {
    /// Runs an operator command for one module entry; a plugin built
    /// before commands existed says so.
    pub fn command(&self, name: &str, config: &Value, args: &Value) -> Result<String, String> {
        let Some(command) = self.module.command() else {
            return Err(format!(
                "the {} plugin ({}) predates operator commands; upgrade it",
                self.info.display_name,
                self.path.display()
            ));
        };
        match command(
            name.into(),
            config.to_string().as_str().into(),
            args.to_string().as_str().into(),
        ) {
            RResult::ROk(text) => Ok(text.into_string()),
            RResult::RErr(message) => Err(message.into_string()),
        }
    }
}

/// The plugins found, by module kind.
#[derive(Default)]
pub struct PluginSet {
    by_kind: BTreeMap<String, LoadedPlugin>,
}

impl PluginSet {
    pub fn get(&self, kind: &str) -> Option<&LoadedPlugin> {
        self.by_kind.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }
}

/// The directory holding the running executable (`target/release` after a
/// `cargo build --release`, where the plugin libraries are built too).
pub fn default_plugin_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

fn is_library(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|ext| ext.to_str()),
        Some("so" | "dylib" | "dll")
    )
}

/// Loads every plugin library in `dir`. A library that is not a plugin is
/// skipped quietly; one that is refused is reported (error log) and skipped:
/// the host keeps serving the modules of the other plugins.
pub fn discover(dir: &Path) -> PluginSet {
    let mut set = PluginSet::default();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| is_library(path))
            .collect(),
        Err(err) => {
            tracing::error!(dir = %dir.display(), error = %err, "cannot read the plugin directory");
            return set;
        }
    };
    // Deterministic: if two libraries claim one kind, the first by name wins.
    paths.sort();
    for path in paths {
        match load_one(&path) {
            Ok(Some(plugin)) => {
                if let Some(existing) = set.by_kind.get(&plugin.info.kind) {
                    tracing::error!(
                        kind = %plugin.info.kind,
                        kept = %existing.path.display(),
                        ignored = %plugin.path.display(),
                        "two plugin libraries serve the same module kind; ignoring the second"
                    );
                    continue;
                }
                tracing::info!(
                    kind = %plugin.info.kind,
                    version = %plugin.info.version,
                    path = %plugin.path.display(),
                    "Loaded {} plugin", plugin.info.display_name
                );
                set.by_kind.insert(plugin.info.kind.clone(), plugin);
            }
            Ok(None) => {
                tracing::debug!(path = %path.display(), "not an mcp-delegate plugin; skipped");
            }
            Err(reason) => {
                tracing::error!(path = %path.display(), "plugin refused: {reason}");
            }
        }
    }
    set
}

/// `Ok(None)`: the file is a library but not an abi_stable plugin.
fn load_one(path: &Path) -> Result<Option<LoadedPlugin>, String> {
    let header = match lib_header_from_path(path) {
        Ok(header) => header,
        Err(LibraryError::GetSymbolError { .. }) => return Ok(None),
        Err(err) => return Err(summarise(&err)),
    };
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|err| summarise(&err))?;
    let info_text = (module.info_json())();
    let info: ModuleInfo = serde_json::from_str(info_text.as_str())
        .map_err(|err| format!("unreadable module info: {err}"))?;
    Ok(Some(LoadedPlugin {
        path: path.to_path_buf(),
        info,
        module,
    }))
}

/// abi_stable's layout-mismatch report runs to tens of kilobytes; keep the
/// lines that say what is wrong.
fn summarise(err: &LibraryError) -> String {
    let expected = PluginModuleRef::VERSION_STRINGS;
    let full = err.to_string();
    let mut key_lines: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("Error:") || line.contains("ncompatible version"))
        .collect();
    key_lines.dedup();
    key_lines.truncate(6);
    let detail = if key_lines.is_empty() {
        full.lines().next().unwrap_or("unknown error").to_owned()
    } else {
        key_lines.join("; ")
    };
    format!(
        "incompatible with this host's plugin-api {expected}: {detail} \
         (rebuild the plugin against a compatible mcp-delegate-plugin-api; see docs/plugin-abi.md)"
    )
}
