//! The one path from a config file to running parts. [`Runtime::build`]
//! makes everything a config describes (plugins, module instances, the
//! tool table, the authenticator and token exchangers, the call core, the
//! MCP endpoint, the protected-resource identity) without side effects
//! beyond creating instances; `serve`, `check-config` and reload all call
//! it, so `check-config` refuses exactly what `serve` would.
//! [`Runtime::start`] then starts what runs in the background (JWKS
//! refresh). A built `Runtime` is immutable: a reload builds a new one next
//! to it (keeping its unchanged parts) and swaps it in whole.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcp_delegate_plugin_api::ConfigIssue;

use crate::audit::AuditLog;
use crate::auth::exchange::TokenExchanger;
use crate::auth::resource::ResourceIdentity;
use crate::auth::Authenticator;
use crate::call::CallCore;
use crate::cli::CommonArgs;
use crate::config::{self, Config, ConfigSource, Diagnostics, McpConfig, SecretSource};
use crate::mcp::{self, EndpointSettings, McpEndpoint};
use crate::plugins::{self, PluginSet};
use crate::registry::{self, Registry};
use crate::status::{Generation, ReloadLog};

/// Bound on calls to identity providers (JWKS, token exchange).
const OUTBOUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The port when neither `--port` nor `mcp.port` names one.
pub const DEFAULT_PORT: u16 = 3000;

/// What a build needs besides the config file.
pub struct BuildArgs<'a> {
    pub common: &'a CommonArgs,
    /// The address the server listens on, once bound (the default public
    /// URL is made of it).
    pub local_addr: Option<SocketAddr>,
    /// Shared by every generation of the process.
    pub reload_log: Arc<ReloadLog>,
}

/// What [`Runtime::build`] came to.
pub struct Built {
    /// `None` when the diagnostics hold an error; then nothing of the
    /// running generation was touched.
    pub runtime: Option<Runtime>,
    pub diagnostics: Diagnostics,
    /// The files the config was read from, when it could be read: a
    /// refused reload is tried again when one of them changes.
    pub source: Option<ConfigSource>,
}

/// Everything built from one config.
pub struct Runtime {
    pub config: Config,
    pub generation: Generation,
    pub registry: Arc<Registry>,
    /// `None` when `auth.mode` is `"none"`.
    pub authenticator: Option<Arc<Authenticator>>,
    /// Where every tool call passes.
    pub core: Arc<CallCore>,
    pub mcp: McpEndpoint,
    /// The protected resource this server is (RFC 9728).
    pub resource: ResourceIdentity,
    /// The build's warnings: a reload that adds one is refused.
    pub warnings: Vec<ConfigIssue>,
    /// Where its plugin libraries came from.
    pub plugin_dir: PathBuf,
    /// Kept alive: plugin libraries are never unloaded.
    _plugins: PluginSet,
}

impl Runtime {
    /// Loads `path` and builds everything it describes, keeping from
    /// `previous` (a reload) the module instances, authenticator and token
    /// exchangers whose inputs are unchanged.
    pub fn build(path: &Path, args: &BuildArgs<'_>, previous: Option<&Runtime>) -> Built {
        let common = args.common;
        let secrets = match &common.secrets_dir {
            Some(directory) => SecretSource {
                directory: directory.clone(),
            },
            None => SecretSource::default(),
        };
        let (config, mut diagnostics) = config::load_file(path, &secrets);
        let source = config.as_ref().map(|config| config.source.clone());
        let refused = |diagnostics| Built {
            runtime: None,
            diagnostics,
            source: source.clone(),
        };
        let Some(config) = config.filter(|_| !diagnostics.has_errors()) else {
            return refused(diagnostics);
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
            return refused(diagnostics);
        }
        let Some(plugin_dir) = plugin_dir(common, &config) else {
            diagnostics.error(
                "plugins.directory",
                "no plugin directory: pass --plugin-dir",
            );
            return refused(diagnostics);
        };
        tracing::info!(dir = %plugin_dir.display(), "Loading plugins");
        let plugins = plugins::discover(&plugin_dir);
        for refused in &plugins.refused {
            diagnostics.warning(
                "plugins.directory",
                format!(
                    "library {} refused: {}",
                    refused.path.display(),
                    refused.reason
                ),
            );
        }
        let registry = registry::build(
            &config,
            &plugins,
            crate::logging::host_services(),
            previous.map(|previous| previous.registry.as_ref()),
            &mut diagnostics,
        );
        let runtime = if diagnostics.has_errors() {
            registry
                .modules
                .shutdown_except(previous.map(|previous| &previous.registry.modules));
            None
        } else {
            let parts = Parts {
                config,
                registry,
                plugins,
                plugin_dir,
            };
            parts.assemble(args, previous, &mut diagnostics)
        };
        Built {
            runtime,
            diagnostics,
            source,
        }
    }

    /// Starts the background work: JWKS refresh (it stops by itself when
    /// this generation's authenticator is dropped). Needs the async
    /// runtime.
    pub fn start(&self) {
        if let Some(authenticator) = &self.authenticator {
            authenticator.spawn_key_refresh();
        }
    }

    /// The port to listen on: `--port`, else `mcp.port`, else 3000.
    pub fn port(&self, cli_port: Option<u16>) -> u16 {
        cli_port.or(self.config.mcp.port).unwrap_or(DEFAULT_PORT)
    }

    /// This runtime once the listener is bound: the default public URL
    /// names the address actually bound (`--port 0`).
    pub fn bound_to(mut self, local: SocketAddr) -> Self {
        self.resource = resource_identity(&self.config.mcp, Some(local), local.ip(), local.port());
        self
    }

    /// Shuts down the module instances `keep` does not also run.
    pub fn shutdown_modules_except(&self, keep: Option<&Runtime>) {
        self.registry
            .modules
            .shutdown_except(keep.map(|keep| &keep.registry.modules));
    }
}

/// What [`Runtime::build`] has made before authentication and the endpoint.
struct Parts {
    config: Config,
    registry: Registry,
    plugins: PluginSet,
    plugin_dir: PathBuf,
}

impl Parts {
    /// Authentication, token exchange, the call core and the MCP endpoint.
    /// Shuts the new instances down again when one fails.
    fn assemble(
        self,
        args: &BuildArgs<'_>,
        previous: Option<&Runtime>,
        diagnostics: &mut Diagnostics,
    ) -> Option<Runtime> {
        let Parts {
            config,
            registry,
            plugins,
            plugin_dir,
        } = self;
        let registry = Arc::new(registry);
        let fail = |registry: &Registry| {
            registry
                .modules
                .shutdown_except(previous.map(|previous| &previous.registry.modules));
        };
        let http_client = match reqwest::Client::builder()
            .timeout(OUTBOUND_TIMEOUT)
            .connect_timeout(OUTBOUND_TIMEOUT)
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                diagnostics.error("", format!("cannot create the HTTP client: {err}"));
                fail(&registry);
                return None;
            }
        };
        let kept_authenticator = previous.filter(|previous| same_auth(&previous.config, &config));
        let authenticator = match kept_authenticator {
            Some(previous) => previous.authenticator.clone(),
            None => Authenticator::new(
                &config.auth,
                config.delegation.modules.iter().map(|module| &module.host),
                config.mcp.oauth.required_scopes.clone(),
                http_client.clone(),
            ),
        };
        let mut exchangers = HashMap::new();
        for module in &config.delegation.modules {
            let Some(exchange) = module.host.token_exchange.clone() else {
                continue;
            };
            if !registry.entries.contains_key(&module.name) {
                continue;
            }
            let path = format!("delegation.modules.{}.tokenExchange.idpName", module.name);
            let Some(authenticator) = &authenticator else {
                diagnostics.warning(
                    &path,
                    "unused: with auth.mode \"none\" there is no token to exchange",
                );
                continue;
            };
            let kept = kept_authenticator
                .filter(|previous| {
                    previous
                        .config
                        .delegation
                        .module(&module.name)
                        .is_some_and(|old| {
                            old.token_exchange_source == module.token_exchange_source
                        })
                })
                .and_then(|previous| previous.core.exchanger(&module.name));
            if let Some(kept) = kept {
                exchangers.insert(module.name.clone(), kept.clone());
                continue;
            }
            match TokenExchanger::new(&module.name, exchange, authenticator, http_client.clone()) {
                Ok(exchanger) => {
                    exchangers.insert(module.name.clone(), Arc::new(exchanger));
                }
                Err(err) => diagnostics.error(&path, err),
            }
        }
        let generation = Generation {
            hash: config.source.hash.clone(),
            file_hash: config.source.file_hash.clone(),
            loaded_at: SystemTime::now(),
        };
        let audit = match &config.audit {
            Some(audit) => match AuditLog::open(audit) {
                Ok(log) => Some(Arc::new(log)),
                Err(err) => {
                    diagnostics.error("audit.sink", err);
                    fail(&registry);
                    return None;
                }
            },
            None => None,
        };
        let core = Arc::new(CallCore::new(
            registry.clone(),
            exchangers,
            generation.clone(),
            args.reload_log.clone(),
            audit,
        ));
        let bind = args.common.bind;
        let settings = endpoint_settings(&config.mcp, bind);
        let mcp = match mcp::endpoint(
            core.clone(),
            config.mcp.server_name.clone(),
            config.mcp.tools_page_size,
            settings,
        ) {
            Ok(mcp) => mcp,
            Err(invalid) => {
                diagnostics.error(&invalid.path, invalid.to_string());
                fail(&registry);
                return None;
            }
        };
        if diagnostics.has_errors() {
            fail(&registry);
            return None;
        }
        let port = args
            .local_addr
            .map_or(config.mcp.port.unwrap_or(DEFAULT_PORT), |local| {
                local.port()
            });
        let resource = resource_identity(&config.mcp, args.local_addr, bind, port);
        Some(Runtime {
            generation,
            registry,
            authenticator,
            core,
            mcp,
            resource,
            warnings: diagnostics.warnings.clone(),
            plugin_dir,
            config,
            _plugins: plugins,
        })
    }
}

/// Whether a reload may keep the running authenticator (and with it the
/// verified-token cache and the key sets): everything it is made of is
/// unchanged. Otherwise a new one serves the next request, so a removed
/// IdP's tokens stop working at once and new role mappings apply.
fn same_auth(old: &Config, new: &Config) -> bool {
    let exchange_idps = |config: &Config| -> Vec<String> {
        config
            .delegation
            .modules
            .iter()
            .filter_map(|module| module.host.token_exchange.as_ref())
            .map(|exchange| exchange.idp_name.clone())
            .collect()
    };
    old.auth_source == new.auth_source
        && old.mcp.oauth.required_scopes == new.mcp.oauth.required_scopes
        && exchange_idps(old) == exchange_idps(new)
}

fn plugin_dir(common: &CommonArgs, config: &Config) -> Option<PathBuf> {
    common
        .plugin_dir
        .clone()
        .or_else(|| config.plugins.directory.clone())
        .or_else(plugins::default_plugin_dir)
}

/// `mcp.publicUrl`, else `SERVER_URL`, else the address served.
fn resource_identity(
    mcp: &McpConfig,
    local: Option<SocketAddr>,
    bind: IpAddr,
    port: u16,
) -> ResourceIdentity {
    let public_url = mcp
        .public_url
        .clone()
        .or_else(|| std::env::var("SERVER_URL").ok())
        .unwrap_or_else(|| match local {
            Some(local) => format!("http://{local}"),
            None => format!("http://{}", SocketAddr::new(bind, port)),
        });
    ResourceIdentity::new(&public_url, mcp.oauth.scopes.clone())
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
