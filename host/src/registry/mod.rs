//! Builds the running modules and the exposed tool table from the typed
//! config and the loaded plugins. Startup and `check-config` both go through
//! [`build`]; it never blocks on a database (plugins must not).

pub(crate) mod naming;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mcp_delegate_plugin_api::{HostServices, ToolSpec};
use serde_json::{Map, Value};

use crate::builtin::{self, Builtin};
use crate::config::{Config, Diagnostics, ModuleEntry};
use crate::plugins::{ModuleHandle, PluginSet};

/// Where a tool call goes.
pub enum Route {
    Module {
        module: Arc<ModuleHandle>,
        /// The plugin's own (unprefixed) tool name.
        tool: String,
    },
    Builtin(Builtin),
}

/// Who may see and call a tool (the seed's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    AnyAuthenticated,
    UserOrAdmin,
}

impl Access {
    /// `None` principal: authentication is off (`auth.mode: "none"`).
    pub fn allows(self, principal: Option<&crate::auth::Principal>) -> bool {
        match (self, principal) {
            (_, None) | (Access::AnyAuthenticated, Some(_)) => true,
            (Access::UserOrAdmin, Some(principal)) => principal.has_role(&["user", "admin"]),
        }
    }
}

pub struct ExposedTool {
    /// The spec as clients see it: prefixed name, suffixed description.
    pub spec: ToolSpec,
    pub route: Route,
    pub access: Access,
}

/// A configured module that is not running, and why.
pub struct UnavailableModule {
    pub name: String,
    pub reason: String,
}

/// The modules and tools of one running configuration.
#[derive(Default)]
pub struct Registry {
    pub modules: Vec<Arc<ModuleHandle>>,
    pub unavailable: Vec<UnavailableModule>,
    /// The host's keys of every module entry that parsed, by entry name.
    pub entries: BTreeMap<String, ModuleEntry>,
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

    /// Every configured module is running.
    pub fn is_ready(&self) -> bool {
        self.unavailable.is_empty()
    }

    pub fn shutdown(&self) {
        for module in &self.modules {
            module.shutdown();
        }
    }
}

/// Creates one instance per module entry and the tool table. Fatal findings
/// (bad module config, duplicate tool names) go to `diagnostics.errors`;
/// a module whose plugin is missing or fails to start is listed as
/// unavailable and the others go on.
pub fn build(
    config: &Config,
    plugins: &PluginSet,
    host: HostServices,
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

    log_module_counts(config, plugins);
    for (name, raw_entry) in &config.delegation.modules {
        let path = format!("delegation.modules.{name}");
        let Some(entry) = crate::config::parse_module_entry(name, raw_entry, diagnostics) else {
            continue;
        };
        check_token_exchange(config, &path, &entry, diagnostics);
        let Some(kind) = naming::resolve_kind(name, entry.kind.as_deref(), plugins.kinds()) else {
            registry.unavailable.push(UnavailableModule {
                name: name.clone(),
                reason: format!(
                    "no loaded plugin serves module '{name}' (loaded kinds: {})",
                    plugins.kinds().collect::<Vec<_>>().join(", ")
                ),
            });
            continue;
        };
        let Some(plugin) = plugins.get(&kind) else {
            registry.unavailable.push(UnavailableModule {
                name: name.clone(),
                reason: format!("no loaded plugin serves module kind '{kind}'"),
            });
            continue;
        };
        let plugin_config = plugin_part(raw_entry);
        let errors_before = diagnostics.errors.len();
        diagnostics.extend_under(&path, plugin.validate_config(&plugin_config));
        if diagnostics.errors.len() > errors_before {
            continue;
        }
        tracing::info!("Registering {} module: {name}", plugin.info.display_name);
        let instance = match plugin.new_instance(name, &plugin_config, host) {
            Ok(instance) => instance,
            Err(reason) => {
                tracing::error!(module = %name, "module failed to start: {reason}");
                registry.unavailable.push(UnavailableModule {
                    name: name.clone(),
                    reason,
                });
                continue;
            }
        };
        let prefix = naming::tool_prefix(
            name,
            &kind,
            &plugin.info.default_tool_prefix,
            entry.tool_prefix.as_deref(),
        );
        let family = &plugin.info.tool_family;
        tracing::info!("Creating {family} tools with prefix '{prefix}' for module '{name}'...");
        let module = Arc::new(ModuleHandle::new(name.clone(), instance));
        let specs = match module.tools() {
            Ok(specs) => specs,
            Err(reason) => {
                registry.unavailable.push(UnavailableModule {
                    name: name.clone(),
                    reason,
                });
                continue;
            }
        };
        let count = specs.len();
        for spec in specs {
            let exposed = expose(&prefix, &entry, spec);
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
                access: Access::UserOrAdmin,
            });
        }
        tracing::info!("Registered {count} {family} tools for '{name}'");
        registry.modules.push(module);
        registry.entries.insert(name.clone(), entry);
    }

    apply_enabled_tools(config, &mut candidates, diagnostics);
    candidates.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    registry.index = candidates
        .iter()
        .enumerate()
        .map(|(position, tool)| (tool.spec.name.clone(), position))
        .collect();
    registry.tools = candidates;
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
            .filter(|(name, entry)| {
                let explicit = entry.get("type").and_then(Value::as_str);
                naming::resolve_kind(name, explicit, plugins.kinds()).as_deref() == Some(kind)
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

/// The entry minus the host's keys: what the plugin is given. `tokenExchange`
/// (with its client secret) never reaches a plugin.
/// A module entry without the host's keys: what its plugin sees.
pub(crate) fn plugin_part(entry: &Value) -> Value {
    let Some(object) = entry.as_object() else {
        return Value::Object(Map::new());
    };
    Value::Object(
        object
            .iter()
            .filter(|(key, _)| !ModuleEntry::HOST_KEYS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    )
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
