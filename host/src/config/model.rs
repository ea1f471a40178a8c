//! The typed configuration. Key names follow the seed framework's JSON
//! (camelCase), so its configs load unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::{AuthConfig, TokenExchangeConfig};
use super::module::{ModuleConfig, ResolvedJson};
use super::source::ConfigSource;

/// Default bound on an HTTP request body (`mcp.maxRequestBytes`).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Default page size of `tools/list` (`mcp.toolsPageSize`).
pub const DEFAULT_TOOLS_PAGE_SIZE: usize = 100;

/// One config file, parsed. Each section is parsed on its own
/// (`load.rs`), so this type is built, not deserialised.
#[derive(Debug, Default)]
pub struct Config {
    /// The files it was read from, and their hash.
    pub(crate) source: ConfigSource,
    pub auth: AuthConfig,
    /// The `auth` section as resolved JSON (secrets substituted): a reload
    /// keeps the running authenticator when it is unchanged.
    pub(crate) auth_source: ResolvedJson,
    pub delegation: DelegationConfig,
    pub mcp: McpConfig,
    pub plugins: PluginsConfig,
    /// No section: no audit log.
    pub audit: Option<AuditConfig>,
}

/// Where the audit log goes (one JSON line per tool call and per refused
/// request), and what happens when it cannot be written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditConfig {
    /// `"stdout"`, or the path of a file appended to (reopened on every
    /// reload and `SIGHUP`, for log rotation).
    pub sink: String,
    #[serde(default)]
    pub fail_mode: AuditFailMode,
}

/// `open`: a failing sink is counted and logged, calls go on. `closed`: a
/// call whose audit line cannot be written is refused before it runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditFailMode {
    #[default]
    Open,
    Closed,
}

#[derive(Debug, Default)]
pub struct DelegationConfig {
    /// Module entries in file order, each parsed once into the host's keys
    /// and the plugin's JSON.
    pub modules: Vec<ModuleConfig>,
}

impl DelegationConfig {
    pub fn module(&self, name: &str) -> Option<&ModuleConfig> {
        self.modules.iter().find(|module| module.name == name)
    }
}

/// The `delegation` section as written (before its entries are split).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DelegationSection {
    /// In file order (serde_json's `preserve_order`).
    #[serde(default)]
    pub modules: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpConfig {
    #[serde(default)]
    pub port: Option<u16>,
    /// Name reported in `initialize` / `server/discover`.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// When present, a tool is exposed only if its entry is `true`.
    #[serde(default)]
    pub enabled_tools: Option<BTreeMap<String, bool>>,
    /// Browser origins allowed to call `/mcp` (`https://app.example.com:443`,
    /// `http://localhost:*`). Requests with any other `Origin` get 403.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// `Host` header values accepted on `/mcp` (DNS-rebinding protection).
    /// Default: loopback names plus the bind address.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    #[serde(default = "default_tools_page_size")]
    pub tools_page_size: usize,
    /// A connection must send a request's headers within this time
    /// (slowloris), and a keep-alive connection waiting for its next
    /// request is closed after it (hyper runs one timer for both); takes
    /// effect at start.
    #[serde(default = "default_header_read_timeout_millis")]
    pub header_read_timeout_millis: u64,
    /// Connections open at once; beyond it new connections wait in the
    /// listen backlog (open ones are not affected). Read at start.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A whole request (headers, body, the call) must be answered within
    /// this time, else 504 `REQUEST_TIMEOUT` (a tool call that started
    /// runs to its end and is audited). Read at start.
    #[serde(default = "default_request_timeout_millis")]
    pub request_timeout_millis: u64,
    /// Public base URL (`https://db-mcp.example.com`, maybe with a path);
    /// default `SERVER_URL`, else `http://<bind>:<port>`.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub oauth: McpOAuthConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpOAuthConfig {
    /// Advertised in `scopes_supported` and `WWW-Authenticate`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Every token must hold these to use `/mcp` at all.
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            port: None,
            server_name: default_server_name(),
            enabled_tools: None,
            allowed_origins: Vec::new(),
            allowed_hosts: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            tools_page_size: DEFAULT_TOOLS_PAGE_SIZE,
            header_read_timeout_millis: default_header_read_timeout_millis(),
            max_connections: default_max_connections(),
            request_timeout_millis: default_request_timeout_millis(),
            public_url: None,
            oauth: McpOAuthConfig::default(),
        }
    }
}

fn default_server_name() -> String {
    "mcp-delegate".to_owned()
}
fn default_max_request_bytes() -> usize {
    DEFAULT_MAX_REQUEST_BYTES
}
fn default_tools_page_size() -> usize {
    DEFAULT_TOOLS_PAGE_SIZE
}
fn default_header_read_timeout_millis() -> u64 {
    10_000
}
fn default_max_connections() -> usize {
    4096
}
fn default_request_timeout_millis() -> u64 {
    120_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginsConfig {
    /// Where plugin libraries are found when `--plugin-dir` is not given.
    #[serde(default)]
    pub directory: Option<PathBuf>,
}

/// The host's own keys of a `delegation.modules.<name>` entry. Everything
/// else in the entry belongs to the plugin and is handed to it as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleEntry {
    /// Module kind, when the entry's name does not start with it.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub tool_prefix: Option<String>,
    /// Appended to every tool description of the module.
    #[serde(default, rename = "_comment")]
    pub comment: Option<String>,
    /// Scopes a token must hold to use this module's tools.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// RFC 8693 settings; used by the host only, never passed to the plugin
    /// (it holds the client secret).
    #[serde(default)]
    pub token_exchange: Option<TokenExchangeConfig>,
    /// Pass the verified requestor claims to the module (the PostgreSQL
    /// module sets them as `request.jwt.claims` for row-level security).
    #[serde(default)]
    pub claims_setting: bool,
    /// The bulkhead: how many of the module's calls run at once (default:
    /// what the plugin reports, for PostgreSQL `pool.max`) …
    #[serde(default)]
    pub max_concurrent_calls: Option<u32>,
    /// … how many more wait for a place (in the host, without a thread)
    /// … Beyond both: MODULE_BUSY.
    #[serde(default)]
    pub queued_calls: Option<u32>,
    /// … and for how long at most (milliseconds).
    #[serde(default)]
    pub queue_timeout_millis: Option<u64>,
}

impl ModuleEntry {
    /// The keys above, as they appear in JSON.
    pub const HOST_KEYS: &'static [&'static str] = &[
        "type",
        "toolPrefix",
        "_comment",
        "requiredScopes",
        "tokenExchange",
        "claimsSetting",
        "maxConcurrentCalls",
        "queuedCalls",
        "queueTimeoutMillis",
    ];
}
