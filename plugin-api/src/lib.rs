//! The stable ABI between the `mcp-delegate` host and its delegation-module
//! plugins, plus the helpers a plugin author needs.
//!
//! The surface is deliberately tiny: one prefix-type root module
//! ([`PluginModule`]) that creates instances, and one `#[sabi_trait]` object
//! ([`abi::PluginInstance`]) per configured module. Everything that may evolve
//! (configs, call contexts, tool specs, results, errors) crosses the boundary
//! as JSON strings described by the serde types in [`contract`], so the Rust
//! layout checked by abi_stable rarely has to change.
//!
//! Plugin authors implement [`Module`] and [`ModuleFactory`] and call
//! [`export_module!`]; the glue in [`export`] wraps every entry point in
//! `catch_unwind` and forwards the plugin's `tracing` events to the host.

pub mod abi;
pub mod codes;
pub mod config_parse;
pub mod contract;
pub mod export;
pub mod json_text;
pub mod log_bridge;

pub use abi::{HostServices, LogLevel, PluginInstanceBox, PluginModule, PluginModuleRef};
pub use contract::{
    BusyAnswer, CallContext, CallFacts, ConfigIssue, ConfigReport, HealthReport, ModuleInfo,
    PoolFacts, ToolAccess, ToolAnnotations, ToolError, ToolSpec, FACTS_SEPARATOR,
};
pub use export::{Module, ModuleFactory};

/// Re-exported so that [`export_module!`] expands in a plugin crate that does
/// not depend on abi_stable itself.
#[doc(hidden)]
pub use abi_stable;
#[doc(hidden)]
pub use serde_json;
