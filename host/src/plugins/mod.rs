//! Plugin libraries: discovery and ABI checks ([`loader`]), and the safe
//! Rust face of a running instance ([`handle`]). Nothing outside this module
//! touches abi_stable types.

mod handle;
mod loader;

pub use handle::ModuleHandle;
pub use loader::{default_plugin_dir, discover, PluginSet};
