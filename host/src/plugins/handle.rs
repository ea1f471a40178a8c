//! A running module instance behind a safe, JSON-decoding Rust API.
//!
//! All methods block (plugins do synchronous I/O): call them from
//! `tokio::task::spawn_blocking`, never on a runtime thread.

use std::sync::atomic::{AtomicBool, Ordering};

use abi_stable::std_types::{RResult, RString};
use mcp_delegate_plugin_api::{
    codes, CallContext, CallFacts, HealthReport, PluginInstanceBox, ToolError, ToolSpec,
    FACTS_SEPARATOR,
};

use super::bulkhead::{Bulkhead, BulkheadLimits};
use super::loader::LibraryId;
use crate::json::RawJson;

/// A plugin's result string, lent to [`RawJson`] without a copy: the
/// text before the facts trailer, if any.
struct PluginText {
    text: RString,
    len: usize,
}

impl AsRef<str> for PluginText {
    fn as_ref(&self) -> &str {
        self.text.as_str().get(..self.len).unwrap_or_default()
    }
}

/// Splits a plugin's answer into its JSON and the facts trailer (present
/// when the call context asked for facts).
fn split_facts(text: &str) -> (usize, Option<CallFacts>) {
    match text.rfind(FACTS_SEPARATOR) {
        Some(at) => (
            at,
            serde_json::from_str(&text[at + FACTS_SEPARATOR.len_utf8()..]).ok(),
        ),
        None => (text.len(), None),
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
    /// Bounds the instance's calls in progress (`maxConcurrentCalls`).
    pub bulkhead: Bulkhead,
    instance: PluginInstanceBox,
    shut_down: AtomicBool,
}

impl ModuleHandle {
    pub fn new(
        name: String,
        library: LibraryId,
        config: serde_json::Value,
        limits: BulkheadLimits,
        instance: PluginInstanceBox,
    ) -> Self {
        Self {
            name,
            library,
            config,
            bulkhead: Bulkhead::new(limits),
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
    /// With `context.want_facts`, also what the call did, if the plugin
    /// says.
    pub fn call(
        &self,
        tool: &str,
        context: &CallContext,
        args_json: &str,
    ) -> (Result<RawJson, ToolError>, Option<CallFacts>) {
        let context_json = match serde_json::to_string(context) {
            Ok(json) => json,
            Err(err) => {
                let error = ToolError::new(
                    codes::INTERNAL_ERROR,
                    format!("cannot encode call context: {err}"),
                );
                return (Err(error), None);
            }
        };
        let outcome =
            self.instance
                .call(tool.into(), context_json.as_str().into(), args_json.into());
        match outcome {
            RResult::ROk(text) => {
                let (len, facts) = split_facts(text.as_str());
                let result = RawJson::lent_object(PluginText { text, len }).map_err(|err| {
                    ToolError::new(
                        codes::PLUGIN_PROTOCOL_ERROR,
                        format!(
                            "module '{}' returned an unreadable result: {err}",
                            self.name
                        ),
                    )
                });
                (result, facts)
            }
            RResult::RErr(text) => {
                let (len, facts) = split_facts(text.as_str());
                let error = serde_json::from_str(&text.as_str()[..len]).unwrap_or_else(|_| {
                    ToolError::new(
                        codes::PLUGIN_PROTOCOL_ERROR,
                        format!("module '{}' returned an unreadable error", self.name),
                    )
                });
                (Err(error), facts)
            }
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
