//! A running module instance behind a safe, JSON-decoding Rust API.
//!
//! All methods block (plugins do synchronous I/O): call them from
//! `tokio::task::spawn_blocking`, never on a runtime thread.

use abi_stable::std_types::RResult;
use mcp_delegate_plugin_api::{
    codes, CallContext, HealthReport, PluginInstanceBox, ToolError, ToolSpec,
};
use serde_json::Value;

pub struct ModuleHandle {
    /// The config entry's name (`postgresql1`).
    pub name: String,
    instance: PluginInstanceBox,
}

impl ModuleHandle {
    pub fn new(name: String, instance: PluginInstanceBox) -> Self {
        Self { name, instance }
    }

    pub fn tools(&self) -> Result<Vec<ToolSpec>, String> {
        let text = self.instance.tools_json();
        serde_json::from_str(text.as_str()).map_err(|err| format!("unreadable tool list: {err}"))
    }

    pub fn call(
        &self,
        tool: &str,
        context: &CallContext,
        args: &Value,
    ) -> Result<Value, ToolError> {
        let context_json = serde_json::to_string(context).map_err(|err| {
            ToolError::new(
                codes::INTERNAL_ERROR,
                format!("cannot encode call context: {err}"),
            )
        })?;
        let args_json = args.to_string();
        let outcome = self.instance.call(
            tool.into(),
            context_json.as_str().into(),
            args_json.as_str().into(),
        );
        match outcome {
            RResult::ROk(text) => serde_json::from_str(text.as_str()).map_err(|err| {
                ToolError::new(
                    codes::PLUGIN_PROTOCOL_ERROR,
                    format!(
                        "module '{}' returned an unreadable result: {err}",
                        self.name
                    ),
                )
            }),
            RResult::RErr(text) => Err(serde_json::from_str(text.as_str()).unwrap_or_else(|_| {
                ToolError::new(
                    codes::PLUGIN_PROTOCOL_ERROR,
                    format!("module '{}' returned an unreadable error", self.name),
                )
            })),
        }
    }

    pub fn health(&self) -> HealthReport {
        let text = self.instance.health();
        serde_json::from_str(text.as_str()).unwrap_or_else(|err| HealthReport {
            healthy: false,
            detail: format!("unreadable health report: {err}"),
        })
    }

    pub fn shutdown(&self) {
        self.instance.shutdown();
    }
}
