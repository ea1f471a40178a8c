//! Configuration: read once, secrets resolved, parsed into typed structs,
//! then checked against the loaded plugins ([`crate::registry`]). `check-config`
//! and startup run this same code path.

pub mod auth;
mod load;
mod model;
mod secrets;

pub use auth::{AuthMode, IdpUse};
pub(crate) use load::parse_module_entry;
pub use load::{load_file, Diagnostics};
pub use model::{Config, McpConfig, ModuleEntry};
pub use secrets::SecretSource;
