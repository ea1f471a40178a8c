//! The JSON contracts that cross the plugin boundary. Both sides use these
//! serde types; on the wire they are plain JSON (camelCase keys), so a plugin
//! may add fields the host ignores and the other way round.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a plugin library serves, from [`crate::PluginModule::info_json`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// The module kind, matched against `delegation.modules` keys
    /// (`postgresql` serves `postgresql`, `postgresql1`, …) and `type`.
    pub kind: String,
    /// Prefix used when an entry has no `toolPrefix`: the kind in the entry
    /// key is replaced by it (`postgresql2` → `sql2`).
    pub default_tool_prefix: String,
    /// Human name for logs (`PostgreSQL`).
    pub display_name: String,
    /// What the module's tools are called in startup logs (`SQL`).
    pub tool_family: String,
    /// The plugin's own version.
    pub version: String,
    /// Who may see and call the module's tools. Absent (plugins built
    /// before this field): users with the `user` or `admin` role.
    #[serde(default)]
    pub tool_access: ToolAccess,
    /// A line for the MCP server instructions, where `{prefix}` stands for
    /// each module's tool prefix (`Each database has {prefix}-delegate …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// Who may see and call a tool (the seed's rules). Checked by the host
/// before a call reaches the plugin.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ToolAccess {
    /// Any authenticated caller.
    Authenticated,
    /// Callers whose role (or custom roles) include `user` or `admin`.
    #[default]
    UserOrAdmin,
}

/// MCP tool annotations (hints to clients, never trusted for security).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

/// One tool an instance serves. `name` is unprefixed (`delegate`); the host
/// exposes it as `<prefix>-<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an `"type": "object"` schema).
    pub input_schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
}

/// Who is calling, as the host established it. Never carries a token or a
/// secret: only identities and roles.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallContext {
    /// Correlates host and plugin log lines for one call.
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Primary role from the IdP's role mappings (`admin`, `user`, `guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub custom_roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The database identity the call must run as (from token exchange or
    /// the requestor's legacy name). `None`: the plugin must refuse any
    /// call that would touch data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_identity: Option<String>,
    /// Roles that authorise statement classes (`sql-read`, `sql-write`, …).
    #[serde(default)]
    pub delegated_roles: Vec<String>,
    /// The OAuth client the caller came through (`azp` or `client_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The tool as the client named it (`sql1-delegate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The verified requestor token's claims as JSON text, only for
    /// modules whose entry sets `claimsSetting: true` (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<String>,
    /// The W3C trace id of the request (32 hex digits), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The host wants the call's [`CallFacts`] (for its audit log and
    /// metrics): the plugin glue appends them to the result as a trailer
    /// (see [`FACTS_SEPARATOR`]). A host that does not set it gets plain
    /// results, so old hosts and old plugins keep working together.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub want_facts: bool,
}

/// Between a call's result (or error) JSON and its [`CallFacts`] JSON, when
/// the host asked for them: a NUL, which JSON text can never contain
/// unescaped, so the split is unambiguous.
pub const FACTS_SEPARATOR: char = '\0';

/// What a call did, for the host's audit log and metrics. Never a literal,
/// a parameter value or a row: statements only as their normalized text
/// (constants replaced by placeholders) and fingerprint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallFacts {
    /// The policy's class (`read`, `write`, `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_class: Option<String>,
    /// `SELECT`, `INSERT`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized: Option<String>,
    /// Rows returned or affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// The refusal's reason category, when the policy refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_reason: Option<String>,
    /// The database's pool after the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolFacts>,
    /// When the database batch started, in microseconds after the plugin
    /// received the call, and how long it took (for the trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_after_micros: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_micros: Option<u64>,
}

/// A connection pool's state, and what getting a connection cost.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolFacts {
    pub max: u32,
    pub open: u32,
    pub idle: u32,
    /// Microseconds this call waited for a connection.
    pub wait_micros: u64,
}

/// A tool failure: `{"error": CODE, "message": "...", ...details}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolError {
    /// A stable code from [`crate::codes`] or the plugin's own list.
    pub error: String,
    pub message: String,
    /// Extra machine-readable fields (`sqlstate`, `requiredRole`, …).
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl ToolError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: code.to_owned(),
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one detail field (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON text sent across the boundary. Serialising a map of strings
    /// and JSON values cannot fail; the fallback only keeps this total.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"error":"{}","message":"unserialisable error"}}"#,
                crate::codes::INTERNAL_ERROR
            )
        })
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// Health of one instance, from [`crate::abi::PluginInstance::health`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthReport {
    pub healthy: bool,
    pub detail: String,
    /// Module-specific facts for operators (the PostgreSQL module: its
    /// hardening `profile`). Added after 0.1.0: absent from older plugins.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub status: Map<String, Value>,
}

/// One finding about a module entry's config; `path` is a JSON path relative
/// to the entry (`pool.max`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

/// Result of [`crate::PluginModule::validate_config`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigReport {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
    /// How many calls an instance made from this entry can serve at once
    /// (the PostgreSQL module: `pool.max`). The host bounds the module's
    /// concurrent calls by it unless the entry sets `maxConcurrentCalls`.
    /// Added after 0.1.0: absent from older plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// What a call that waited in the host's queue for one of those places
    /// is told when none frees in time. Added after 0.2.0: absent from
    /// older plugins (the host then waits 10 s and answers `MODULE_BUSY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<BusyAnswer>,
}

/// The PostgreSQL module's: wait `pool.connectionTimeoutMillis`, then
/// `POOL_EXHAUSTED` with "raise pool.max or pool.connectionTimeoutMillis":
/// a pool that is full is what a full bulkhead means for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BusyAnswer {
    /// How long a queued call waits, in milliseconds.
    pub wait_millis: u64,
    /// The error code then (one of [`crate::codes`]).
    pub code: String,
    /// What to change, appended to the message.
    pub hint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin built before `toolAccess` and `instructions` existed sends
    /// neither: its tools keep the seed's rule (user or admin) and it adds
    /// no instructions.
    #[test]
    fn module_info_of_an_older_plugin_reads_with_the_safe_defaults() {
        let info: ModuleInfo = serde_json::from_str(
            r#"{"kind": "x", "defaultToolPrefix": "x", "displayName": "X",
                "toolFamily": "x", "version": "0.1.0"}"#,
        )
        .unwrap();
        assert_eq!(info.tool_access, ToolAccess::UserOrAdmin);
        assert_eq!(info.instructions, None);
        let info: ModuleInfo = serde_json::from_str(
            r#"{"kind": "x", "defaultToolPrefix": "x", "displayName": "X",
                "toolFamily": "x", "version": "0.1.0", "toolAccess": "authenticated"}"#,
        )
        .unwrap();
        assert_eq!(info.tool_access, ToolAccess::Authenticated);
    }
}
