//! A module entry as the host holds it: parsed once (`load.rs`), then
//! used by the registry, the authenticator and reload alike.

use std::fmt;

use serde_json::Value;

use super::model::ModuleEntry;

/// JSON with its secrets resolved: compared on reload, never printed.
#[derive(Clone, Default, PartialEq)]
pub struct ResolvedJson(pub Value);

impl fmt::Debug for ResolvedJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<resolved JSON, not shown>")
    }
}

/// One `delegation.modules.<name>` entry, split once: the host's keys,
/// typed, and the rest, which only the module's plugin reads.
#[derive(Clone)]
pub struct ModuleConfig {
    /// The entry's key (`postgresql1`).
    pub name: String,
    pub host: ModuleEntry,
    /// The entry minus the host's keys, secrets resolved: what the plugin
    /// is given. `tokenExchange` (with its client secret) is never in it.
    pub plugin: Value,
    /// The `tokenExchange` value as written (secrets resolved), for
    /// comparison on reload.
    pub token_exchange_source: ResolvedJson,
}

/// Without the plugin part, which may hold resolved secrets.
impl fmt::Debug for ModuleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}
