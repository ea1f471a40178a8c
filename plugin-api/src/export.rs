//! Plugin-author glue: implement [`Module`] and [`ModuleFactory`] in plain
//! Rust, then `mcp_delegate_plugin_api::export_module!(MyFactory);`.
//!
//! Every entry point the host can reach goes through `catch_unwind` here: a
//! plugin panic becomes a `PLUGIN_PANIC` error result, never an unwind across
//! the FFI boundary (which would abort the host).

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RStr, RString},
};
use serde_json::Value;

use crate::abi::{HostServices, PluginInstance, PluginInstanceBox, PluginInstance_TO};
use crate::abi::{PluginModule, PluginModuleRef};
use crate::codes;
use crate::contract::{
    CallContext, CallFacts, ConfigReport, HealthReport, ModuleInfo, ToolError, ToolSpec,
    FACTS_SEPARATOR,
};

/// One configured module instance, as a plugin author writes it.
///
/// Called from several host threads at once, always on blocking threads:
/// synchronous I/O (blocking sockets, r2d2) is fine here.
pub trait Module: Send + Sync + 'static {
    /// The tools this instance serves, names unprefixed.
    fn tools(&self) -> Vec<ToolSpec>;
    /// Runs one tool with already-parsed arguments.
    fn call(&self, tool: &str, context: &CallContext, args: Value) -> Result<Value, ToolError>;
    /// [`Module::call`] for modules that write their result's JSON text
    /// themselves (a JSON object), to spare large results a tree of
    /// `Value`s. This is what the host calls; the default encodes `call`'s
    /// result.
    fn call_json(
        &self,
        tool: &str,
        context: &CallContext,
        args: Value,
    ) -> Result<String, ToolError> {
        self.call(tool, context, args)
            .map(|value| value.to_string())
    }
    /// [`Module::call_json`] and what the call did, for the host's audit
    /// log and metrics; called instead when the host asks for facts. The
    /// default reports none.
    fn call_with_facts(
        &self,
        tool: &str,
        context: &CallContext,
        args: Value,
    ) -> (Result<String, ToolError>, Option<CallFacts>) {
        (self.call_json(tool, context, args), None)
    }
    /// Cheap health probe (for `/ready` and the `health-check` tool).
    fn health(&self) -> HealthReport;
    /// Releases resources; the instance receives no call afterwards.
    fn shutdown(&self) {}
}

/// Creates [`Module`] instances; one implementation per plugin library.
pub trait ModuleFactory {
    type Instance: Module;
    fn info() -> ModuleInfo;
    /// Checks one `delegation.modules.<name>` entry without side effects.
    fn validate_config(config: &Value) -> ConfigReport;
    /// Builds an instance. Must not block on the network.
    fn new_instance(instance_name: &str, config: Value) -> Result<Self::Instance, String>;
    /// Runs an operator command for one module entry (`config`), with
    /// `args` (a JSON object); Ok: text for the operator. The default
    /// knows no command.
    fn command(name: &str, config: &Value, args: &Value) -> Result<String, String> {
        let _ = (config, args);
        Err(format!("this module kind has no '{name}' command"))
    }
}

/// Exports `$factory` (a [`ModuleFactory`]) as this library's root module.
///
/// The symbol name is abi_stable's root-module loader name, spelled out so
/// that plugin crates need no direct abi_stable dependency; a unit test in
/// plugin-api checks it against abi_stable's constant.
#[macro_export]
macro_rules! export_module {
    ($factory:ty) => {
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static MCP_DELEGATE_LIB_HEADER: $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(
                    $crate::export::root_module::<$factory>,
                )
            }
            // SAFETY: the constructor returns the root module type the
            // header is declared with, as abi_stable's own macro does.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginModuleRef>(
                    erased_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// Builds the root module for `F`. Used by [`export_module!`].
pub fn root_module<F: ModuleFactory>() -> PluginModuleRef {
    PluginModule {
        info_json: info_json::<F>,
        validate_config: validate_config::<F>,
        new_instance: new_instance::<F>,
        command: command::<F>,
    }
    .leak_into_prefix()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// Runs `f`, turning a panic into `on_panic(message)`.
fn guarded<T>(what: &str, f: impl FnOnce() -> T, on_panic: impl FnOnce(&str) -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(entry_point = what, panic = message, "plugin panicked");
            on_panic(message)
        }
    }
}

fn to_json_string(value: &impl serde::Serialize) -> RString {
    serde_json::to_string(value).unwrap_or_default().into()
}

extern "C" fn info_json<F: ModuleFactory>() -> RString {
    guarded("info", || to_json_string(&F::info()), |_| RString::new())
}

extern "C" fn validate_config<F: ModuleFactory>(config_json: RStr<'_>) -> RString {
    guarded(
        "validate_config",
        || {
            let report = match serde_json::from_str::<Value>(config_json.as_str()) {
                Ok(config) => F::validate_config(&config),
                Err(err) => ConfigReport {
                    errors: vec![crate::ConfigIssue {
                        path: String::new(),
                        message: format!("config is not JSON: {err}"),
                    }],
                    warnings: vec![],
                    concurrency: None,
                    busy: None,
                },
            };
            to_json_string(&report)
        },
        |message| {
            to_json_string(&ConfigReport {
                errors: vec![crate::ConfigIssue {
                    path: String::new(),
                    message: format!("the plugin panicked while validating: {message}"),
                }],
                warnings: vec![],
                concurrency: None,
                busy: None,
            })
        },
    )
}

extern "C" fn new_instance<F: ModuleFactory>(
    instance_name: RStr<'_>,
    config_json: RStr<'_>,
    host: HostServices,
) -> RResult<PluginInstanceBox, RString> {
    crate::log_bridge::install(host);
    guarded(
        "new_instance",
        || {
            let config: Value = serde_json::from_str(config_json.as_str())
                .map_err(|err| format!("config is not JSON: {err}"))?;
            let module = F::new_instance(instance_name.as_str(), config)?;
            Ok(PluginInstance_TO::from_value(
                InstanceAdapter(module),
                TD_Opaque,
            ))
        },
        |message| Err(format!("the plugin panicked while starting: {message}")),
    )
    .map_err(RString::from)
    .into()
}

extern "C" fn command<F: ModuleFactory>(
    name: RStr<'_>,
    config_json: RStr<'_>,
    args_json: RStr<'_>,
) -> RResult<RString, RString> {
    guarded(
        "command",
        || {
            let config: Value = serde_json::from_str(config_json.as_str())
                .map_err(|err| format!("config is not JSON: {err}"))?;
            let args: Value = serde_json::from_str(args_json.as_str())
                .map_err(|err| format!("arguments are not JSON: {err}"))?;
            F::command(name.as_str(), &config, &args)
        },
        |message| Err(format!("the plugin panicked running '{name}': {message}")),
    )
    .map(RString::from)
    .map_err(RString::from)
    .into()
}

/// Bridges a plain-Rust [`Module`] to the FFI-safe [`PluginInstance`].
struct InstanceAdapter<M>(M);

impl<M: Module> PluginInstance for InstanceAdapter<M> {
    fn tools_json(&self) -> RString {
        guarded(
            "tools",
            || to_json_string(&self.0.tools()),
            |_| RString::from("[]"),
        )
    }

    fn call(
        &self,
        tool: RStr<'_>,
        context_json: RStr<'_>,
        args_json: RStr<'_>,
    ) -> RResult<RString, RString> {
        let (outcome, facts) = guarded(
            "call",
            || {
                let context: CallContext = match serde_json::from_str(context_json.as_str()) {
                    Ok(context) => context,
                    Err(err) => {
                        let error = ToolError::new(
                            codes::PLUGIN_PROTOCOL_ERROR,
                            format!("unreadable call context: {err}"),
                        );
                        return (Err(error), None);
                    }
                };
                let args: Value = match serde_json::from_str(args_json.as_str()) {
                    Ok(args) => args,
                    Err(err) => {
                        let error = ToolError::new(
                            codes::INVALID_ARGUMENTS,
                            format!("arguments are not JSON: {err}"),
                        );
                        return (Err(error), context.want_facts.then(CallFacts::default));
                    }
                };
                if context.want_facts {
                    let (outcome, facts) = self.0.call_with_facts(tool.as_str(), &context, args);
                    (outcome, Some(facts.unwrap_or_default()))
                } else {
                    (self.0.call_json(tool.as_str(), &context, args), None)
                }
            },
            |_| {
                let error = ToolError::new(
                    codes::PLUGIN_PANIC,
                    "the module failed unexpectedly while serving this call; \
                     the server log has the details",
                );
                (Err(error), None)
            },
        );
        let with_facts = |mut text: String| {
            if let Some(facts) = &facts {
                text.push(FACTS_SEPARATOR);
                text.push_str(to_json_string(facts).as_str());
            }
            RString::from(text)
        };
        match outcome {
            Ok(text) => ROk(with_facts(text)),
            Err(error) => RErr(with_facts(error.to_json())),
        }
    }

    fn health(&self) -> RString {
        guarded(
            "health",
            || to_json_string(&self.0.health()),
            |message| {
                to_json_string(&HealthReport {
                    healthy: false,
                    detail: format!("health probe panicked: {message}"),
                    ..HealthReport::default()
                })
            },
        )
    }

    fn shutdown(&self) {
        guarded("shutdown", || self.0.shutdown(), |_| ());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_symbol_matches_abi_stable() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
