//! The one path from a config file to running parts. [`Runtime::build`]
//! makes everything a config describes (plugins, module instances, the
//! tool table, the authenticator and token exchangers, the MCP endpoint)
//! without side effects beyond creating instances; `serve` and
//! `check-config` both call it, so `check-config` refuses exactly what
//! `serve` would. [`Runtime::start`] then starts what runs in the
//! background (JWKS refresh).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::exchange::TokenExchanger;
use crate::auth::Authenticator;
use crate::cli::CommonArgs;
use crate::config::{self, Config, Diagnostics, McpConfig, SecretSource};
use crate::mcp::{self, Delegation, EndpointSettings, McpEndpoint};
use crate::plugins::{self, PluginSet};
use crate::registry::{self, Registry};

/// Bound on calls to identity providers (JWKS, token exchange).
const OUTBOUND_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything built from one config.
pub struct Runtime {
    pub config: Config,
    pub registry: Arc<Registry>,
    /// `None` when `auth.mode` is `"none"`.
    pub authenticator: Option<Arc<Authenticator>>,
    pub mcp: McpEndpoint,
    /// Kept alive: plugin libraries are never unloaded.
    _plugins: PluginSet,
}

impl Runtime {
    /// Loads `path` and builds everything it describes for a server bound
    /// to `bind`. `None` when the diagnostics hold an error.
    pub fn build(path: &Path, common: &CommonArgs) -> (Option<Runtime>, Diagnostics) {
        let secrets = match &common.secrets_dir {
            Some(directory) => SecretSource {
                directory: directory.clone(),
            },
            None => SecretSource::default(),
        };
        let (config, mut diagnostics) = config::load_file(path, &secrets);
        let Some(config) = config.filter(|_| !diagnostics.has_errors()) else {
            return (None, diagnostics);
        };
        if config.auth.mode == config::AuthMode::None && !common.bind.is_loopback() {
            diagnostics.error(
                "auth.mode",
                format!(
                    "refusing to serve without authentication (auth.mode \"none\") on the \
                     non-loopback address {}; use --bind 127.0.0.1",
                    common.bind
                ),
            );
            return (None, diagnostics);
        }
        let Some(plugin_dir) = plugin_dir(common, &config) else {
            diagnostics.error(
                "plugins.directory",
                "no plugin directory: pass --plugin-dir",
            );
            return (None, diagnostics);
        };
        tracing::info!(dir = %plugin_dir.display(), "Loading plugins");
        let plugins = plugins::discover(&plugin_dir);
        let registry = registry::build(
            &config,
            &plugins,
            crate::logging::host_services(),
            &mut diagnostics,
        );
        let built = if diagnostics.has_errors() {
            None
        } else {
            Self::assemble(config, registry, plugins, common.bind, &mut diagnostics)
        };
        (built, diagnostics)
    }

    /// The parts after the registry: authentication, token exchange, the
    /// MCP endpoint. Shuts the instances down again when one fails.
    fn assemble(
        config: Config,
        registry: Registry,
        plugins: PluginSet,
        bind: IpAddr,
        diagnostics: &mut Diagnostics,
    ) -> Option<Runtime> {
        let registry = Arc::new(registry);
        let http_client = match reqwest::Client::builder()
            .timeout(OUTBOUND_TIMEOUT)
            .connect_timeout(OUTBOUND_TIMEOUT)
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                diagnostics.error("", format!("cannot create the HTTP client: {err}"));
                registry.shutdown();
                return None;
            }
        };
        let authenticator = Authenticator::new(
            &config.auth,
            registry.entries.values(),
            config.mcp.oauth.required_scopes.clone(),
            http_client.clone(),
        );
        let mut exchangers = HashMap::new();
        for (module, entry) in &registry.entries {
            let Some(exchange) = entry.token_exchange.clone() else {
                continue;
            };
            let path = format!("delegation.modules.{module}.tokenExchange.idpName");
            let Some(authenticator) = &authenticator else {
                diagnostics.warning(
                    &path,
                    "unused: with auth.mode \"none\" there is no token to exchange",
                );
                continue;
            };
            match TokenExchanger::new(module, exchange, authenticator, http_client.clone()) {
                Ok(exchanger) => {
                    exchangers.insert(module.clone(), Arc::new(exchanger));
                }
                Err(err) => diagnostics.error(&path, err),
            }
        }
        let settings = endpoint_settings(&config.mcp, bind);
        let mcp = mcp::endpoint(
            registry.clone(),
            config.mcp.server_name.clone(),
            config.mcp.tools_page_size,
            settings,
            Delegation { exchangers },
        );
        let mcp = match mcp {
            Ok(mcp) => mcp,
            Err(invalid) => {
                diagnostics.error(&invalid.path, invalid.to_string());
                registry.shutdown();
                return None;
            }
        };
        if diagnostics.has_errors() {
            registry.shutdown();
            return None;
        }
        Some(Runtime {
            config,
            registry,
            authenticator,
            mcp,
            _plugins: plugins,
        })
    }

    /// Starts the background work: JWKS refresh. Needs the async runtime.
    pub fn start(&self) {
        if let Some(authenticator) = &self.authenticator {
            authenticator.spawn_key_refresh();
        }
    }
}

fn plugin_dir(common: &CommonArgs, config: &Config) -> Option<PathBuf> {
    common
        .plugin_dir
        .clone()
        .or_else(|| config.plugins.directory.clone())
        .or_else(plugins::default_plugin_dir)
}

fn endpoint_settings(mcp: &McpConfig, bind: IpAddr) -> EndpointSettings {
    let allowed_hosts = mcp.allowed_hosts.clone().unwrap_or_else(|| {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !bind.is_unspecified() {
            hosts.push(bind.to_string());
        }
        hosts
    });
    EndpointSettings {
        allowed_hosts,
        allowed_origins: mcp.allowed_origins.clone(),
        max_request_bytes: mcp.max_request_bytes,
    }
}
