//! Plugin libraries: discovery and ABI checks ([`loader`]), the safe
//! Rust face of a running instance ([`handle`]), and the set of a
//! configuration's modules ([`ModuleSet`]). Nothing outside this module
//! touches abi_stable types.

mod bulkhead;
mod handle;
mod loader;

use std::sync::Arc;

pub use bulkhead::{
    BulkheadLimits, DEFAULT_CONCURRENT_CALLS, DEFAULT_QUEUED_CALLS, DEFAULT_QUEUE_TIMEOUT,
};
pub use handle::ModuleHandle;
pub use loader::{default_plugin_dir, directory_stamp, discover, PluginSet};

/// A configured module that is not running, and why.
pub struct UnavailableModule {
    pub name: String,
    pub reason: String,
}

/// The modules of one configuration: those running and those that are not.
#[derive(Default)]
pub struct ModuleSet {
    pub running: Vec<Arc<ModuleHandle>>,
    pub unavailable: Vec<UnavailableModule>,
}

impl ModuleSet {
    /// Every configured module is running.
    pub fn is_ready(&self) -> bool {
        self.unavailable.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ModuleHandle>> {
        self.running.iter().find(|module| module.name == name)
    }

    /// Whether `module` is one of this set's instances (not merely one
    /// with the same name).
    pub fn holds(&self, module: &Arc<ModuleHandle>) -> bool {
        self.running.iter().any(|own| Arc::ptr_eq(own, module))
    }

    /// Shuts down the instances `keep` does not also hold.
    pub fn shutdown_except(&self, keep: Option<&ModuleSet>) {
        for module in &self.running {
            if !keep.is_some_and(|keep| keep.holds(module)) {
                module.shutdown();
            }
        }
    }
}
