//! The one path from a config file to running components, shared by
//! `serve` and `check-config` (and, later, reload).

use std::path::{Path, PathBuf};

use crate::cli::CommonArgs;
use crate::config::{self, Config, Diagnostics, SecretSource};
use crate::plugins::{self, PluginSet};
use crate::registry::{self, Registry};

/// The built configuration: typed config, loaded plugins, running modules.
pub struct Built {
    pub config: Config,
    pub registry: Registry,
    /// Kept alive: plugin libraries are never unloaded.
    pub _plugins: PluginSet,
}

/// Loads `path` and builds everything it describes. On `Err`, the
/// diagnostics hold at least one error.
pub fn build(path: &Path, common: &CommonArgs) -> (Option<Built>, Diagnostics) {
    let secrets = match &common.secrets_dir {
        Some(directory) => SecretSource {
            directory: directory.clone(),
        },
        None => SecretSource::default(),
    };
    let (config, mut diagnostics) = config::load_file(path, &secrets);
    let Some(config) = config else {
        return (None, diagnostics);
    };
    if diagnostics.has_errors() {
        return (None, diagnostics);
    }
    let plugin_dir = plugin_dir(common, &config);
    let plugins = match &plugin_dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "Loading plugins");
            plugins::discover(dir)
        }
        None => {
            diagnostics.error(
                "plugins.directory",
                "no plugin directory: pass --plugin-dir",
            );
            return (None, diagnostics);
        }
    };
    let registry = registry::build(
        &config,
        &plugins,
        crate::logging::host_services(),
        &mut diagnostics,
    );
    if diagnostics.has_errors() {
        registry.shutdown();
        return (None, diagnostics);
    }
    (
        Some(Built {
            config,
            registry,
            _plugins: plugins,
        }),
        diagnostics,
    )
}

fn plugin_dir(common: &CommonArgs, config: &Config) -> Option<PathBuf> {
    common
        .plugin_dir
        .clone()
        .or_else(|| config.plugins.directory.clone())
        .or_else(plugins::default_plugin_dir)
}
