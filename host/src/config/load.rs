//! Reading a config file into [`Config`], collecting every finding with its
//! JSON path. Each top-level section is parsed on its own so one mistake does
//! not hide the others.

use std::path::Path;

use mcp_delegate_plugin_api::config_parse::parse_with_report;
use mcp_delegate_plugin_api::ConfigIssue;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::auth::AuthMode;
use super::model::{Config, DelegationSection, ModuleEntry};
use super::module::{ModuleConfig, ResolvedJson};
use super::secrets::{join, SecretReads, SecretSource};
use super::source::ConfigSource;

/// Errors and warnings, each with the JSON path it is about.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
}

impl Diagnostics {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigIssue {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn warning(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigIssue {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Adds a plugin's findings, whose paths are relative to `prefix`.
    pub fn extend_under(&mut self, prefix: &str, report: mcp_delegate_plugin_api::ConfigReport) {
        for issue in report.errors {
            self.error(&join_path(prefix, &issue.path), issue.message);
        }
        for issue in report.warnings {
            self.warning(&join_path(prefix, &issue.path), issue.message);
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// A finding's path as messages show it (`(config)` for the whole file).
pub fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "(config)"
    } else {
        path
    }
}

fn join_path(prefix: &str, relative: &str) -> String {
    match (prefix.is_empty(), relative.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => relative.to_owned(),
        (false, false) if relative.starts_with('[') => format!("{prefix}{relative}"),
        (false, false) => format!("{prefix}.{relative}"),
    }
}

const SECTIONS: &[&str] = &["audit", "auth", "delegation", "mcp", "plugins"];

/// Reads, resolves secrets in, and parses `path`. Warnings and errors are
/// both returned; the caller decides (errors stop startup).
pub fn load_file(path: &Path, secrets: &SecretSource) -> (Option<Config>, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            diagnostics.error("", format!("cannot read {}: {err}", path.display()));
            return (None, diagnostics);
        }
    };
    let mut root: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(err) => {
            diagnostics.error(
                "",
                format!(
                    "not valid JSON (line {}, column {}): {err}",
                    err.line(),
                    err.column()
                ),
            );
            return (None, diagnostics);
        }
    };
    let mut reads = SecretReads::default();
    secrets.resolve(&mut root, "", &mut diagnostics, &mut reads);
    let source = ConfigSource::new(path, &bytes, &reads);
    let Value::Object(mut sections) = root else {
        diagnostics.error("", "the config must be a JSON object");
        return (None, diagnostics);
    };
    for key in sections.keys() {
        if !SECTIONS.contains(&key.as_str()) && !key.starts_with('_') {
            diagnostics.warning(&join("", key), "unknown key (ignored)");
        }
    }
    let mut config = Config {
        source,
        auth_source: ResolvedJson(sections.get("auth").cloned().unwrap_or(Value::Null)),
        ..Config::default()
    };
    if let Some(auth) = parse_section(&mut sections, "auth", &mut diagnostics) {
        config.auth = auth;
    }
    if let Some(delegation) =
        parse_section::<DelegationSection>(&mut sections, "delegation", &mut diagnostics)
    {
        config.delegation.modules = delegation
            .modules
            .into_iter()
            .filter_map(|(name, entry)| parse_module_entry(name, entry, &mut diagnostics))
            .collect();
    }
    if let Some(mcp) = parse_section(&mut sections, "mcp", &mut diagnostics) {
        config.mcp = mcp;
    }
    if let Some(plugins) = parse_section(&mut sections, "plugins", &mut diagnostics) {
        config.plugins = plugins;
    }
    config.audit = parse_section(&mut sections, "audit", &mut diagnostics);
    check_values(&config, &mut diagnostics);
    (Some(config), diagnostics)
}

fn parse_section<T: DeserializeOwned>(
    sections: &mut Map<String, Value>,
    name: &str,
    diagnostics: &mut Diagnostics,
) -> Option<T> {
    let value = sections.remove(name)?;
    parse_at(value, name, true, diagnostics)
}

/// Deserialises `value` (found at `path`) into `T`: type errors become
/// errors with their full path, unknown keys warnings (if `warn_unknown`).
fn parse_at<T: DeserializeOwned>(
    value: Value,
    path: &str,
    warn_unknown: bool,
    diagnostics: &mut Diagnostics,
) -> Option<T> {
    let (parsed, mut report) = parse_with_report::<T>(&value);
    if !warn_unknown {
        report.warnings.clear();
    }
    diagnostics.extend_under(path, report);
    parsed
}

/// Splits one module entry into the host's keys, parsed (the plugin
/// checks the rest), and the plugin's JSON.
fn parse_module_entry(
    name: String,
    entry: Value,
    diagnostics: &mut Diagnostics,
) -> Option<ModuleConfig> {
    let path = join("delegation.modules", &name);
    let Value::Object(object) = entry else {
        diagnostics.error(&path, "a module entry must be an object");
        return None;
    };
    let (host_keys, plugin): (Map<String, Value>, Map<String, Value>) = object
        .into_iter()
        .partition(|(key, _)| ModuleEntry::HOST_KEYS.contains(&key.as_str()));
    let token_exchange_source = ResolvedJson(
        host_keys
            .get("tokenExchange")
            .cloned()
            .unwrap_or(Value::Null),
    );
    let host = parse_at(Value::Object(host_keys), &path, false, diagnostics)?;
    Some(ModuleConfig {
        name,
        host,
        plugin: Value::Object(plugin),
        token_exchange_source,
    })
}

/// Signature algorithms a token may use: asymmetric only. `none` and HMAC
/// (which would let anyone holding the public key forge tokens) never.
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn check_auth(config: &Config, diagnostics: &mut Diagnostics) {
    let auth = &config.auth;
    if auth.mode == AuthMode::Oauth && auth.trusted_idps.is_empty() {
        diagnostics.error(
            "auth.trustedIDPs",
            "at least one trusted IdP is needed (or set auth.mode to \"none\" for local experiments)",
        );
    }
    for (index, idp) in auth.trusted_idps.iter().enumerate() {
        for (position, algorithm) in idp.algorithms.iter().enumerate() {
            if !ASYMMETRIC_ALGORITHMS.contains(&algorithm.as_str()) {
                diagnostics.error(
                    &format!("auth.trustedIDPs[{index}].algorithms[{position}]"),
                    format!(
                        "'{algorithm}' is not allowed: use one of {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        if auth.trusted_idps[..index]
            .iter()
            .any(|other| other.name == idp.name)
        {
            diagnostics.error(
                &format!("auth.trustedIDPs[{index}].name"),
                "duplicate IdP name",
            );
        }
    }
}

fn check_values(config: &Config, diagnostics: &mut Diagnostics) {
    check_auth(config, diagnostics);
    if config.mcp.max_request_bytes == 0 {
        diagnostics.error("mcp.maxRequestBytes", "must be greater than 0");
    }
    if config.mcp.tools_page_size == 0 {
        diagnostics.error("mcp.toolsPageSize", "must be greater than 0");
    }
    if config.mcp.max_connections == 0 {
        diagnostics.error("mcp.maxConnections", "must be greater than 0");
    }
    if config.mcp.request_timeout_millis == 0 {
        diagnostics.error("mcp.requestTimeoutMillis", "must be greater than 0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> (Option<Config>, Diagnostics) {
        let file = std::env::temp_dir().join(format!(
            "mcpd-config-{}-{}.json",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&file, text).unwrap();
        let result = load_file(&file, &SecretSource::default());
        std::fs::remove_file(file).unwrap();
        result
    }

    #[test]
    fn reports_type_errors_in_several_sections_with_paths_and_unknown_keys_as_warnings() {
        let (_, diagnostics) = load_str(
            r#"{"auth": {"mode": "none"}, "mcp": {"port": "eighty", "colour": 1},
                "plugins": {"directory": 7},
                "extra": true}"#,
        );
        let errors: Vec<_> = diagnostics.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(errors, ["mcp.port", "plugins.directory"]);
        let warnings: Vec<_> = diagnostics
            .warnings
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(warnings, ["extra", "mcp.colour"]);
    }

    #[test]
    fn module_entry_type_error_names_the_entry() {
        let mut diagnostics = Diagnostics::default();
        let entry = serde_json::json!({"toolPrefix": 3, "host": "db"});
        assert!(parse_module_entry("postgresql1".into(), entry, &mut diagnostics).is_none());
        assert_eq!(
            diagnostics.errors[0].path,
            "delegation.modules.postgresql1.toolPrefix"
        );
    }
}
