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
/// The module already runs as many calls as it may (`maxConcurrentCalls`
/// plus `queuedCalls`); nothing ran. Retry later.
pub const MODULE_BUSY: &str = "MODULE_BUSY";
/// `audit.failMode: closed` and the call's audit line could not be written.
pub const AUDIT_UNAVAILABLE: &str = "AUDIT_UNAVAILABLE";

/// The token lacks a scope the module requires.
pub const INSUFFICIENT_SCOPE: &str = "INSUFFICIENT_SCOPE";
/// RFC 8693 token exchange with the identity provider failed.
pub const TOKEN_EXCHANGE_FAILED: &str = "TOKEN_EXCHANGE_FAILED";
/// The token returned by token exchange did not verify.
pub const EXCHANGED_TOKEN_INVALID: &str = "EXCHANGED_TOKEN_INVALID";
/// No database identity for the caller (missing claim); nothing ran.
pub const DELEGATED_IDENTITY_MISSING: &str = "DELEGATED_IDENTITY_MISSING";

/// The SQL could not be parsed, or contains no statement.
pub const SQL_PARSE_ERROR: &str = "SQL_PARSE_ERROR";
/// More than one statement in one call.
pub const SQL_MULTIPLE_STATEMENTS: &str = "SQL_MULTIPLE_STATEMENTS";
/// The statement's class needs a delegated role the caller lacks, or the
/// statement kind is refused for every role.
pub const SQL_NOT_PERMITTED: &str = "SQL_NOT_PERMITTED";
/// The statement calls a function refused for every role.
pub const SQL_FORBIDDEN_FUNCTION: &str = "SQL_FORBIDDEN_FUNCTION";
/// The statement is larger than the module parses (`maxSqlTokens`).
pub const SQL_TOO_LARGE: &str = "SQL_TOO_LARGE";
/// The number of parameters does not match the statement's `$n`.
pub const SQL_PARAMETER_COUNT: &str = "SQL_PARAMETER_COUNT";
/// PostgreSQL refused or failed the statement (details: sqlstate, detail, hint).
pub const DATABASE_ERROR: &str = "DATABASE_ERROR";
/// The statement ran longer than `statementTimeoutMillis`.
pub const STATEMENT_TIMEOUT: &str = "STATEMENT_TIMEOUT";
/// The database refused to run as the caller's identity (no such role,
/// or the service account may not SET ROLE to it).
pub const DELEGATION_FAILED: &str = "DELEGATION_FAILED";
/// The identity changed during the call; nothing was returned or kept.
pub const SECURITY_VIOLATION: &str = "SECURITY_VIOLATION";
/// The table does not exist or the caller may not see it.
pub const TABLE_NOT_FOUND: &str = "TABLE_NOT_FOUND";
/// The module's service account is unsafe (superuser, BYPASSRLS,
/// CREATEROLE, REPLICATION, inherits delegated roles), or its check could
/// not run.
pub const SERVICE_ACCOUNT_UNSAFE: &str = "SERVICE_ACCOUNT_UNSAFE";
/// The result's first row alone is larger than `maxResultBytes`, or a read
/// went so far past it that it was cancelled; no row is returned.
pub const RESULT_TOO_LARGE: &str = "RESULT_TOO_LARGE";

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
    MODULE_BUSY,
    AUDIT_UNAVAILABLE,
    INSUFFICIENT_SCOPE,
    TOKEN_EXCHANGE_FAILED,
    EXCHANGED_TOKEN_INVALID,
    DELEGATED_IDENTITY_MISSING,
    SQL_PARSE_ERROR,
    SQL_MULTIPLE_STATEMENTS,
    SQL_NOT_PERMITTED,
    SQL_FORBIDDEN_FUNCTION,
    SQL_TOO_LARGE,
    SQL_PARAMETER_COUNT,
    DATABASE_ERROR,
    STATEMENT_TIMEOUT,
    DELEGATION_FAILED,
    SECURITY_VIOLATION,
    TABLE_NOT_FOUND,
    SERVICE_ACCOUNT_UNSAFE,
    RESULT_TOO_LARGE,
];
