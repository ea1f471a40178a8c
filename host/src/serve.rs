//! `mcp-delegate`: build the configuration, bind, serve until a signal.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::exchange::TokenExchanger;
use crate::auth::resource::ResourceIdentity;
use crate::auth::Authenticator;
use crate::cli::ServeArgs;
use crate::config::McpConfig;
use crate::http::{self, HttpApp};
use crate::mcp::{self, Delegation, EndpointSettings};
use crate::startup;

const DEFAULT_PORT: u16 = 3000;
/// Bound on calls to identity providers (JWKS, token exchange).
const OUTBOUND_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: ServeArgs) -> ExitCode {
    let Some(config_path) = args.config.clone() else {
        tracing::error!("no config file: pass --config FILE or set CONFIG_PATH");
        return ExitCode::from(2);
    };
    // Building instances is synchronous plugin code: keep it off the runtime.
    let common = args.common;
    let built = tokio::task::spawn_blocking(move || {
        let (built, diagnostics) = startup::build(&config_path, &common);
        for warning in &diagnostics.warnings {
            tracing::warn!(path = %warning.path, "config: {}", warning.message);
        }
        for error in &diagnostics.errors {
            tracing::error!(path = %error.path, "config: {}", error.message);
        }
        built
    })
    .await;
    let Ok(Some(built)) = built else {
        tracing::error!("startup failed: see the errors above");
        return ExitCode::from(2);
    };
    for missing in &built.registry.unavailable {
        tracing::error!(module = %missing.name, "module unavailable: {}", missing.reason);
    }

    let http_client = match reqwest::Client::builder()
        .timeout(OUTBOUND_TIMEOUT)
        .connect_timeout(OUTBOUND_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot create the HTTP client");
            return ExitCode::FAILURE;
        }
    };
    let authenticator = Authenticator::new(
        &built.config.auth,
        built.registry.entries.values(),
        built.config.mcp.oauth.required_scopes.clone(),
        http_client.clone(),
    );
    let mut exchangers = HashMap::new();
    match &authenticator {
        Some(authenticator) => {
            authenticator.spawn_key_refresh();
            for (module, entry) in &built.registry.entries {
                let Some(exchange) = entry.token_exchange.clone() else {
                    continue;
                };
                match TokenExchanger::new(module, exchange, authenticator, http_client.clone()) {
                    Ok(exchanger) => {
                        exchangers.insert(module.clone(), Arc::new(exchanger));
                    }
                    Err(err) => {
                        tracing::error!(module = %module, "config: {err}");
                        return ExitCode::from(2);
                    }
                }
            }
        }
        None => {
            if !args.bind.is_loopback() {
                tracing::error!(
                    bind = %args.bind,
                    "refusing to serve without authentication (auth.mode \"none\") on a \
                     non-loopback address; use --bind 127.0.0.1"
                );
                return ExitCode::from(2);
            }
            tracing::warn!(
                "AUTHENTICATION IS DISABLED (auth.mode \"none\"): every caller on this machine \
                 can use every tool, and no database identity is delegated. Serving on loopback only."
            );
        }
    }

    let port = args.port.or(built.config.mcp.port).unwrap_or(DEFAULT_PORT);
    let listener = match tokio::net::TcpListener::bind(SocketAddr::new(args.bind, port)).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(bind = %args.bind, port, error = %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().ok();
    let registry = Arc::new(built.registry);
    let settings = endpoint_settings(&built.config.mcp, args.bind);
    let delegation = Delegation { exchangers };
    let mcp = match mcp::endpoint(
        registry.clone(),
        built.config.mcp.server_name.clone(),
        built.config.mcp.tools_page_size,
        settings,
        delegation,
    ) {
        Ok(mcp) => mcp,
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(local) = local {
        tracing::info!(
            tools = registry.tools().len(),
            "Listening on http://{local}/mcp"
        );
    }
    let public_url = built
        .config
        .mcp
        .public_url
        .clone()
        .or_else(|| std::env::var("SERVER_URL").ok())
        .unwrap_or_else(|| match local {
            Some(local) => format!("http://{local}"),
            None => format!("http://{}:{port}", args.bind),
        });
    let app = Arc::new(HttpApp {
        mcp,
        registry: registry.clone(),
        max_request_bytes: built.config.mcp.max_request_bytes,
        authenticator,
        resource: ResourceIdentity::new(&public_url, built.config.mcp.oauth.scopes.clone()),
    });
    http::serve(listener, app, shutdown_signal()).await;
    tracing::info!("shutting down modules");
    let _ = tokio::task::spawn_blocking(move || registry.shutdown()).await;
    ExitCode::SUCCESS
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

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("signal received; stopping");
}
