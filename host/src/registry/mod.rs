//! Builds the running modules and the exposed tool table from the typed
//! config and the loaded plugins, as part of [`crate::runtime::Runtime::build`].
//! It never blocks on a database (plugins must not).

pub(crate) mod naming;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mcp_delegate_plugin_api::{HostServices, ToolAccess, ToolSpec};

use crate::builtin::{self, Builtin};
use crate::config::{Config, Diagnostics, ModuleConfig, ModuleEntry};
use crate::plugins::{
    BulkheadLimits, ModuleHandle, ModuleSet, PluginSet, UnavailableModule,
    DEFAULT_CONCURRENT_CALLS, DEFAULT_QUEUED_CALLS, DEFAULT_QUEUE_TIMEOUT,
};

/// Where a tool call goes.
pub enum Route {
    Module {
        module: Arc<ModuleHandle>,
        /// The plugin's own (unprefixed) tool name.
        tool: String,
    },
    Builtin(Builtin),
}

pub struct ExposedTool {
    /// The spec as clients see it: prefixed name, suffixed description.
    pub spec: ToolSpec,
    pub route: Route,
    /// From the plugin's `ModuleInfo` (or the built-in tool's own rule).
    pub access: ToolAccess,
}

/// The modules and tools of one running configuration.
#[derive(Default)]
pub struct Registry {
    pub modules: ModuleSet,
    /// The host's keys of every running module, by entry name.
    pub entries: BTreeMap<String, ModuleEntry>,
    /// The MCP server instructions: the running modules' lines.
    pub instructions: String,
    /// Exposed (enabled) tools, sorted by name.
    tools: Vec<ExposedTool>,
    index: HashMap<String, usize>,
}

impl Registry {
    pub fn tools(&self) -> &[ExposedTool] {
        &self.tools
    }

    /// Where `name` is in [`Registry::tools`].
    pub fn tool_position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// Said when no module has instructions of its own.
const GENERIC_INSTRUCTIONS: &str =
    "Each delegation module's tools run as your own identity in the system it serves.";

/// Creates (or, from `previous`, keeps) one instance per module entry, and
/// the tool table. An instance is kept when its entry's plugin part and its
/// plugin library are unchanged, so its pool and caches live on. Fatal
/// findings (bad module config, duplicate tool names) go to
/// `diagnostics.errors`; a module whose plugin is missing or fails to start
/// is listed as unavailable and the others go on.
pub fn build(
    config: &Config,
    plugins: &PluginSet,
    host: HostServices,
    previous: Option<&Registry>,
    diagnostics: &mut Diagnostics,
) -> Registry {
    let mut registry = Registry::default();
    let mut candidates: Vec<ExposedTool> = builtin::all()
        .into_iter()
        .map(|builtin| ExposedTool {
            spec: builtin.spec(),
            route: Route::Builtin(builtin),
            access: builtin.access(),
        })
        .collect();
    let mut origin_of_tool: BTreeMap<String, String> = candidates
        .iter()
        .map(|tool| (tool.spec.name.clone(), "built-in tools".to_owned()))
        .collect();
    let mut instructions: Vec<String> = Vec::new();

    log_module_counts(config, plugins);
    for entry in &config.delegation.modules {
        let name = &entry.name;
        let path = format!("delegation.modules.{name}");
        check_token_exchange(config, &path, &entry.host, diagnostics);
        let Some(kind) = naming::resolve_kind(name, entry.host.kind.as_deref(), plugins.kinds())
        else {
            registry.modules.unavailable.push(UnavailableModule {
                name: name.clone(),
                reason: format!(
                    "no loaded plugin serves module '{name}' (loaded kinds: {})",
                    plugins.kinds().collect::<Vec<_>>().join(", ")
                ),
            });
            continue;
        };
        let Some(plugin) = plugins.get(&kind) else {
            registry.modules.unavailable.push(UnavailableModule {
                name: name.clone(),
                reason: format!("no loaded plugin serves module kind '{kind}'"),
            });
            continue;
        };
        let errors_before = diagnostics.errors.len();
        let report = plugin.validate_config(&entry.plugin);
        let limits = BulkheadLimits {
            concurrent: entry
                .host
                .max_concurrent_calls
                .or(report.concurrency)
                .unwrap_or(DEFAULT_CONCURRENT_CALLS),
            queued: entry.host.queued_calls.unwrap_or(DEFAULT_QUEUED_CALLS),
            queue_wait: entry
                .host
                .queue_timeout_millis
                .or(report.busy.as_ref().map(|busy| busy.wait_millis))
                .map_or(DEFAULT_QUEUE_TIMEOUT, Duration::from_millis),
            // The plugin's answer speaks of its own bound (the pool):
            // only when that is the bound in force.
            timeout_answer: report
                .busy
                .clone()
                .filter(|_| entry.host.max_concurrent_calls.is_none()),
        };
        diagnostics.extend_under(&path, report);
        if limits.concurrent == 0 {
            diagnostics.error(
                &format!("{path}.maxConcurrentCalls"),
                "must be at least 1".to_owned(),
            );
        }
        if diagnostics.errors.len() > errors_before {
            continue;
        }
        let kept = previous
            .and_then(|previous| previous.modules.get(name))
            .filter(|module| {
                module.library == plugin.id
                    && module.config == entry.plugin
                    && *module.bulkhead.limits() == limits
            });
        let is_new = kept.is_none();
        let module = match kept {
            Some(module) => {
                tracing::debug!(module = %name, "module unchanged; keeping its instance");
                module.clone()
            }
            None => {
                tracing::info!("Registering {} module: {name}", plugin.info.display_name);
                match plugin.new_instance(name, &entry.plugin, host) {
                    Ok(instance) => Arc::new(ModuleHandle::new(
                        name.clone(),
                        plugin.id,
                        entry.plugin.clone(),
                        limits,
                        instance,
                    )),
                    Err(reason) => {
                        tracing::error!(module = %name, "module failed to start: {reason}");
                        registry.modules.unavailable.push(UnavailableModule {
                            name: name.clone(),
                            reason,
                        });
                        continue;
                    }
                }
            }
        };
        let prefix = naming::tool_prefix(
            name,
            &kind,
            &plugin.info.default_tool_prefix,
            entry.host.tool_prefix.as_deref(),
        );
        let family = &plugin.info.tool_family;
        tracing::info!("Creating {family} tools with prefix '{prefix}' for module '{name}'...");
        let specs = match module.tools() {
            Ok(specs) => specs,
            Err(reason) => {
                if is_new {
                    module.shutdown();
                }
                registry.modules.unavailable.push(UnavailableModule {
                    name: name.clone(),
                    reason,
                });
                continue;
            }
        };
        let count = specs.len();
        for spec in specs {
            let exposed = expose(&prefix, &entry.host, spec);
            if let Some(other) = origin_of_tool.get(&exposed.name) {
                diagnostics.error(
                    &path,
                    format!(
                        "tool name '{}' is produced by both {other} and module '{name}'; \
                         set a distinct toolPrefix on one of them",
                        exposed.name
                    ),
                );
                continue;
            }
            origin_of_tool.insert(exposed.name.clone(), format!("module '{name}'"));
            candidates.push(ExposedTool {
                route: Route::Module {
                    module: module.clone(),
                    tool: strip_prefix(&exposed.name, &prefix),
                },
                spec: exposed,
                access: plugin.info.tool_access,
            });
        }
        if let Some(line) = &plugin.info.instructions {
            let line = line.replace("{prefix}", &prefix);
            if !instructions.contains(&line) {
                instructions.push(line);
            }
        }
        tracing::info!("Registered {count} {family} tools for '{name}'");
        registry.modules.running.push(module);
        registry.entries.insert(name.clone(), entry.host.clone());
    }

    apply_enabled_tools(config, &mut candidates, diagnostics);
    candidates.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    registry.index = candidates
        .iter()
        .enumerate()
        .map(|(position, tool)| (tool.spec.name.clone(), position))
        .collect();
    registry.tools = candidates;
    registry.instructions = if instructions.is_empty() {
        GENERIC_INSTRUCTIONS.to_owned()
    } else {
        instructions.join("\n")
    };
    registry
}

fn check_token_exchange(
    config: &Config,
    path: &str,
    entry: &ModuleEntry,
    diagnostics: &mut Diagnostics,
) {
    let Some(exchange) = &entry.token_exchange else {
        return;
    };
    if config.auth.mode == crate::config::AuthMode::None {
        diagnostics.warning(
            &format!("{path}.tokenExchange"),
            "ignored: auth.mode is \"none\", so there is no user token to exchange",
        );
    } else if !config
        .auth
        .trusted_idps
        .iter()
        .any(|idp| idp.name == exchange.idp_name)
    {
        diagnostics.error(
            &format!("{path}.tokenExchange.idpName"),
            format!(
                "'{}' is not the name of an auth.trustedIDPs entry",
                exchange.idp_name
            ),
        );
    }
}

fn log_module_counts(config: &Config, plugins: &PluginSet) {
    for kind in plugins.kinds() {
        let count = config
            .delegation
            .modules
            .iter()
            .filter(|entry: &&ModuleConfig| {
                naming::resolve_kind(&entry.name, entry.host.kind.as_deref(), plugins.kinds())
                    .as_deref()
                    == Some(kind)
            })
            .count();
        if count > 0 {
            let display_name = plugins
                .get(kind)
                .map_or(kind, |p| p.info.display_name.as_str());
            tracing::info!("Found {count} {display_name} module(s) in config");
        }
    }
}

fn expose(prefix: &str, entry: &ModuleEntry, spec: ToolSpec) -> ToolSpec {
    let description = match entry.comment.as_deref().map(str::trim) {
        Some(comment) if !comment.is_empty() => format!("{} {comment}", spec.description),
        _ => spec.description,
    };
    ToolSpec {
        name: naming::tool_name(prefix, &spec.name),
        description,
        ..spec
    }
}

fn strip_prefix(exposed: &str, prefix: &str) -> String {
    exposed
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or(exposed)
        .to_owned()
}

/// `mcp.enabledTools`: when present, only tools set to `true` are exposed.
fn apply_enabled_tools(
    config: &Config,
    candidates: &mut Vec<ExposedTool>,
    diagnostics: &mut Diagnostics,
) {
    let Some(enabled) = &config.mcp.enabled_tools else {
        return;
    };
    for name in enabled.keys() {
        if !candidates.iter().any(|tool| &tool.spec.name == name) {
            diagnostics.warning(
                &format!("mcp.enabledTools.{name}"),
                "no module provides this tool",
            );
        }
    }
    candidates.retain(|tool| enabled.get(&tool.spec.name).copied().unwrap_or(false));
}
