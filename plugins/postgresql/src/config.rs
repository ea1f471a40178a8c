//! The module's own config keys (the seed's), parsed into typed structs.

use mcp_delegate_plugin_api::config_parse::parse_with_report;
use mcp_delegate_plugin_api::{ConfigIssue, ConfigReport};
use serde::Deserialize;
use serde_json::Value;

/// `Debug` leaves the password out.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgModuleConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub options: PgOptions,
    #[serde(default)]
    pub pool: PoolConfig,
    /// Per-statement limit: the session's `statement_timeout`, sent at
    /// connection start-up.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_millis: u64,
    /// How long the client waits for the server before it gives up on the
    /// connection and cancels the statement (default: the statement
    /// timeout plus 30 s).
    #[serde(default)]
    pub client_timeout_millis: Option<u64>,
    /// Most rows a query returns before `truncated: true`.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Functions and operators beyond the safe built-ins that statements
    /// may call: `schema.name` or `schema.*` (see policy::functions).
    #[serde(default)]
    pub allowed_functions: Vec<String>,
    /// Parsed from `allowed_functions` by [`parse`].
    #[serde(skip)]
    pub(crate) allowed: crate::policy::AllowedFunctions,
    /// Most tokens of a statement the policy parses (parsing costs about
    /// 2 KiB a token); longer statements are refused unparsed.
    #[serde(default = "default_max_sql_tokens")]
    pub max_sql_tokens: usize,
    /// Most bytes of a result's JSON (its `rows` and the rest); the rows
    /// past it are dropped and the result says `truncatedBy: "bytes"`.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
    /// `"pgbouncer-transaction"`: the module connects through PgBouncer in
    /// transaction mode; see `wire::Pooling`.
    #[serde(default)]
    pub pooler: Pooler,
    /// The pooler keeps protocol-level named statements per client
    /// (PgBouncer 1.21 and later with `max_prepared_statements`). Not
    /// supported yet: refused by [`parse`].
    #[serde(default)]
    pub pooler_prepared_statements: bool,
    /// `"enforce"`: an unsafe service account disables the module;
    /// `"warn"`: it only logs (see profile.rs).
    #[serde(default)]
    pub service_account_check: crate::profile::CheckMode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgOptions {
    /// `false`, `true`, or `{mode, rejectUnauthorized, ca, cert, key}`.
    #[serde(default)]
    pub ssl: Option<Value>,
    /// The authentication methods the client answers: a name or a list of
    /// `scram-sha-256` (default), `md5`, `password`, `none`.
    #[serde(default)]
    pub require_auth: Option<Value>,
    /// `"prefer"`: SCRAM binds to the TLS channel when the server offers
    /// it; `"require"`: only a channel-bound SCRAM login over TLS. Default:
    /// `require` when TLS does not verify the server (`ssl.mode` require),
    /// else `prefer`.
    #[serde(default)]
    pub channel_binding: Option<ChannelBindingMode>,
}

impl PgOptions {
    /// `channelBinding` as it applies: without server verification, only
    /// the channel binding keeps a man in the middle out.
    pub fn channel_binding(&self) -> ChannelBindingMode {
        self.channel_binding
            .unwrap_or_else(|| match crate::wire::tls::mode_of(self.ssl.as_ref()) {
                Ok(crate::wire::tls::SslMode::Require) => ChannelBindingMode::Require,
                _ => ChannelBindingMode::Prefer,
            })
    }
}

/// `pooler`: what sits between the module and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooler {
    /// Nothing, or a pooler in session mode: each connection is a session.
    #[default]
    None,
    /// PgBouncer with `pool_mode = transaction`.
    PgbouncerTransaction,
}

impl Pooler {
    pub fn pooling(self) -> crate::wire::Pooling {
        match self {
            Self::None => crate::wire::Pooling::Session,
            Self::PgbouncerTransaction => crate::wire::Pooling::Transaction,
        }
    }
}

/// `options.channelBinding`, as libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelBindingMode {
    #[default]
    Prefer,
    Require,
}

/// `options.requireAuth` as methods; the error says what is wrong.
pub fn require_auth(options: &PgOptions) -> Result<Vec<crate::wire::AuthMethod>, String> {
    use crate::wire::AuthMethod;
    let names: Vec<&str> = match &options.require_auth {
        None | Some(Value::Null) => return Ok(vec![AuthMethod::ScramSha256]),
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or("must be a string or a list of strings"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("must be a string or a list of strings".into()),
    };
    if names.is_empty() {
        return Err("must name at least one method".into());
    }
    let methods = names
        .iter()
        .map(|name| {
            AuthMethod::parse(name)
                .ok_or_else(|| format!("'{name}' is not one of scram-sha-256, md5, password, none"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mode = crate::wire::tls::mode_of(options.ssl.as_ref())?;
    if methods.contains(&AuthMethod::Password) && !mode.verifies_server() {
        return Err(
            "'password' sends the password in clear: it needs options.ssl with mode \
             verify-ca or verify-full"
                .into(),
        );
    }
    Ok(methods)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolConfig {
    #[serde(default = "default_pool_max")]
    pub max: u32,
    #[serde(default)]
    pub min: u32,
    /// 0 = connections never expire for idleness.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_millis: u64,
    /// Checkout wait and connect timeout; 0 = wait without limit.
    #[serde(default = "default_connection_timeout")]
    pub connection_timeout_millis: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max: default_pool_max(),
            min: 0,
            idle_timeout_millis: default_idle_timeout(),
            connection_timeout_millis: default_connection_timeout(),
        }
    }
}

impl std::fmt::Debug for PgModuleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgModuleConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

fn default_host() -> String {
    "localhost".into()
}
fn default_port() -> u16 {
    5432
}
fn default_statement_timeout() -> u64 {
    30_000
}
fn default_max_rows() -> u64 {
    1000
}
fn default_max_sql_tokens() -> usize {
    10_000
}
fn default_max_result_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_pool_max() -> u32 {
    10
}
fn default_idle_timeout() -> u64 {
    30_000
}
fn default_connection_timeout() -> u64 {
    5_000
}

/// Parses an entry (host keys already removed by the host). Unknown keys are
/// warnings; type errors and impossible values are errors.
pub fn parse(config: &Value) -> (Option<PgModuleConfig>, ConfigReport) {
    let (parsed, mut report) = parse_with_report::<PgModuleConfig>(config);
    let Some(parsed) = parsed else {
        return (None, report);
    };
    let mut error = |path: &str, message: &str| {
        report.errors.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        })
    };
    if parsed.pool.max == 0 {
        error("pool.max", "must be at least 1");
    }
    if parsed.pool.min > parsed.pool.max {
        error("pool.min", "must not exceed pool.max");
    }
    if parsed.max_rows == 0 {
        error("maxRows", "must be at least 1");
    }
    let allowed = crate::policy::AllowedFunctions::parse(&parsed.allowed_functions);
    if let Err(message) = &allowed {
        error("allowedFunctions", message);
    }
    let mut parsed = parsed;
    parsed.allowed = allowed.unwrap_or_default();
    if let Err(message) = crate::wire::tls::mode_of(parsed.options.ssl.as_ref()) {
        error("options.ssl", &message);
    }
    if let Err(message) = require_auth(&parsed.options) {
        error("options.requireAuth", &message);
    }
    let tls_on = crate::wire::tls::mode_of(parsed.options.ssl.as_ref())
        .is_ok_and(|mode| mode != crate::wire::tls::SslMode::Disable);
    if parsed.options.channel_binding == Some(ChannelBindingMode::Require) && !tls_on {
        error(
            "options.channelBinding",
            "\"require\" needs options.ssl (TLS)",
        );
    }
    if parsed.max_sql_tokens < 100 {
        error("maxSqlTokens", "must be at least 100");
    }
    if parsed.pooler_prepared_statements {
        error(
            "poolerPreparedStatements",
            "not supported yet: behind a transaction-mode pooler the module runs \
             every statement unnamed (remove the key, or set it to false)",
        );
    }
    if parsed.max_result_bytes < 4096 {
        error("maxResultBytes", "must be at least 4096");
    }
    (Some(parsed), report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_output_never_shows_the_password() {
        let (parsed, _) = parse(&json!({"database": "d", "user": "u", "password": "hunter2"}));
        let shown = format!("{:?}", parsed.unwrap());
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn seed_entry_parses_and_mistakes_have_paths() {
        let (parsed, report) = parse(&json!({
            "host": "localhost", "port": 5432, "database": "postgres",
            "user": "mcp_service", "password": "x", "options": {"ssl": false},
            "pool": {"max": 10, "min": 0, "idleTimeoutMillis": 30000, "connectionTimeoutMillis": 5000}
        }));
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{report:?}"
        );
        assert_eq!(parsed.unwrap().pool.max, 10);

        let (_, report) = parse(&json!({"database": "d", "user": "u", "pool": {"max": "ten"}}));
        assert_eq!(report.errors[0].path, "pool.max");

        let (_, report) = parse(
            &json!({"database": "d", "user": "u", "colour": 1, "pool": {"min": 5, "max": 2}}),
        );
        assert_eq!(report.warnings[0].path, "colour");
        assert_eq!(report.errors[0].path, "pool.min");
    }
}
