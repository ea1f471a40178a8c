//! Configuration: read once, secrets resolved, parsed into typed structs,
//! then checked against the loaded plugins ([`crate::registry`]). `check-config`
//! and startup run this same code path.

pub mod auth;
mod load;
mod model;
mod module;
mod secrets;
mod source;

pub use auth::{AuthMode, IdpUse};
pub use load::{display_path, load_file, Diagnostics};
pub use model::{AuditConfig, AuditFailMode, Config, McpConfig, ModuleEntry};
pub use module::ModuleConfig;
pub use secrets::SecretSource;
pub use source::{current_hash, sha256_hex, ConfigSource};
