//! Stable error codes: the `error` field of a tool failure result. This file
//! is the one list; docs/error-codes.md mirrors it (a test keeps them equal).
//! Codes are part of the public contract: never rename one, only add.

/// The arguments do not match the tool's input schema.
pub const INVALID_ARGUMENTS: &str = "INVALID_ARGUMENTS";
/// The tool exists but its behaviour is not built yet.
pub const NOT_IMPLEMENTED: &str = "NOT_IMPLEMENTED";
/// The plugin panicked while serving the call; the host kept running.
pub const PLUGIN_PANIC: &str = "PLUGIN_PANIC";
/// The plugin returned something the host could not read.
pub const PLUGIN_PROTOCOL_ERROR: &str = "PLUGIN_PROTOCOL_ERROR";
/// A plugin-internal failure with no more specific code.
pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
/// The plugin does not know the tool the host asked for.
pub const UNKNOWN_TOOL: &str = "UNKNOWN_TOOL";
/// The module's backing database cannot be reached right now.
pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
/// The module's connection pool had no free connection within the wait.
pub const POOL_EXHAUSTED: &str = "POOL_EXHAUSTED";
/// The module is unknown or failed to start.
pub const MODULE_UNAVAILABLE: &str = "MODULE_UNAVAILABLE";

/// The token lacks a scope the module requires.
pub const INSUFFICIENT_SCOPE: &str = "INSUFFICIENT_SCOPE";
/// RFC 8693 token exchange with the identity provider failed.
pub const TOKEN_EXCHANGE_FAILED: &str = "TOKEN_EXCHANGE_FAILED";
/// The token returned by token exchange did not verify.
pub const EXCHANGED_TOKEN_INVALID: &str = "EXCHANGED_TOKEN_INVALID";
/// No database identity for the caller (missing claim); nothing ran.
pub const DELEGATED_IDENTITY_MISSING: &str = "DELEGATED_IDENTITY_MISSING";

/// Every code above, for docs and tests.
pub const ALL: &[&str] = &[
    INVALID_ARGUMENTS,
    NOT_IMPLEMENTED,
    PLUGIN_PANIC,
    PLUGIN_PROTOCOL_ERROR,
    INTERNAL_ERROR,
    UNKNOWN_TOOL,
    DATABASE_UNAVAILABLE,
    POOL_EXHAUSTED,
    MODULE_UNAVAILABLE,
    INSUFFICIENT_SCOPE,
    TOKEN_EXCHANGE_FAILED,
    EXCHANGED_TOKEN_INVALID,
    DELEGATED_IDENTITY_MISSING,
];
