//! A module entry as the host holds it: parsed once (`load.rs`), then
//! used by the registry, the authenticator and reload alike.

use serde_json::Value;

use super::model::ModuleEntry;

/// One `delegation.modules.<name>` entry, split once: the host's keys,
/// typed, and the rest, which only the module's plugin reads.
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    /// The entry's key (`postgresql1`).
    pub name: String,
    pub host: ModuleEntry,
    /// The entry minus the host's keys, secrets resolved: what the plugin
    /// is given. `tokenExchange` (with its client secret) is never in it.
    pub plugin: Value,
    /// The `tokenExchange` value as written (secrets resolved), for
    /// comparison on reload.
    pub token_exchange_source: Value,
}
