//! A running module instance behind a safe, JSON-decoding Rust API.
//!
//! All methods block (plugins do synchronous I/O): call them from
//! `tokio::task::spawn_blocking`, never on a runtime thread.

use std::sync::atomic::{AtomicBool, Ordering};

use abi_stable::std_types::{RResult, RString};
use mcp_delegate_plugin_api::{
    codes, CallContext, HealthReport, PluginInstanceBox, ToolError, ToolSpec,
};

use super::loader::LibraryId;
use crate::json::RawJson;

/// A plugin's result string, lent to [`RawJson`] without a copy.
struct PluginText(RString);

impl AsRef<str> for PluginText {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

pub struct ModuleHandle {
    /// The config entry's name (`postgresql1`).
    pub name: String,
    /// The library image the instance runs on.
    pub library: LibraryId,
    /// The entry's plugin part it was made from: a reload keeps the
    /// instance (and its pool) only when both are unchanged.
    pub config: serde_json::Value,
    instance: PluginInstanceBox,
    shut_down: AtomicBool,
}

impl ModuleHandle {
    pub fn new(
        name: String,
        library: LibraryId,
        config: serde_json::Value,
        instance: PluginInstanceBox,
    ) -> Self {
        Self {
            name,
            library,
            config,
            instance,
            shut_down: AtomicBool::new(false),
        }
    }

    pub fn tools(&self) -> Result<Vec<ToolSpec>, String> {
        let text = self.instance.tools_json();
        serde_json::from_str(text.as_str()).map_err(|err| format!("unreadable tool list: {err}"))
    }

    /// Runs one tool. `args_json` is the tool arguments as JSON text, passed
    /// through untouched; the result is the plugin's JSON object, checked
    /// to be one but not re-encoded (it is copied into the response as is).
    pub fn call(
        &self,
        tool: &str,
        context: &CallContext,
        args_json: &str,
    ) -> Result<RawJson, ToolError> {
        let context_json = serde_json::to_string(context).map_err(|err| {
            ToolError::new(
                codes::INTERNAL_ERROR,
                format!("cannot encode call context: {err}"),
            )
        })?;
        let outcome =
            self.instance
                .call(tool.into(), context_json.as_str().into(), args_json.into());
        match outcome {
            RResult::ROk(text) => RawJson::lent_object(PluginText(text)).map_err(|err| {
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
            ..HealthReport::default()
        })
    }

    /// Tells the instance to stop (once); its resources are freed when
    /// the last reference to the handle is dropped.
    pub fn shutdown(&self) {
        if !self.shut_down.swap(true, Ordering::AcqRel) {
            self.instance.shutdown();
        }
    }
}
