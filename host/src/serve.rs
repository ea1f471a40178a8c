//! `mcp-delegate`: build the [`Runtime`], bind, serve until a signal.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use crate::auth::resource::ResourceIdentity;
use crate::cli::ServeArgs;
use crate::http::{self, HttpApp};
use crate::runtime::Runtime;

const DEFAULT_PORT: u16 = 3000;

pub async fn run(args: ServeArgs) -> ExitCode {
    let Some(config_path) = args.config.clone() else {
        tracing::error!("no config file: pass --config FILE or set CONFIG_PATH");
        return ExitCode::from(2);
    };
    // Building instances is synchronous plugin code: keep it off the runtime.
    let common = args.common;
    let bind = common.bind;
    let built = tokio::task::spawn_blocking(move || {
        let (built, diagnostics) = Runtime::build(&config_path, &common);
        for warning in &diagnostics.warnings {
            tracing::warn!(path = %warning.path, "config: {}", warning.message);
        }
        for error in &diagnostics.errors {
            tracing::error!(path = %error.path, "config: {}", error.message);
        }
        built
    })
    .await;
    let Ok(Some(runtime)) = built else {
        tracing::error!("startup failed: see the errors above");
        return ExitCode::from(2);
    };
    for missing in &runtime.registry.unavailable {
        tracing::error!(module = %missing.name, "module unavailable: {}", missing.reason);
    }
    if runtime.authenticator.is_none() {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.mode \"none\"): every caller on this machine \
             can use every tool, and no database identity is delegated. Serving on loopback only."
        );
    }

    let port = args
        .port
        .or(runtime.config.mcp.port)
        .unwrap_or(DEFAULT_PORT);
    let listener = match tokio::net::TcpListener::bind(SocketAddr::new(bind, port)).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%bind, port, error = %err, "cannot listen");
            runtime.registry.shutdown();
            return ExitCode::FAILURE;
        }
    };
    runtime.start();
    let local = listener.local_addr().ok();
    if let Some(local) = local {
        tracing::info!(
            tools = runtime.registry.tools().len(),
            "Listening on http://{local}/mcp"
        );
    }
    let public_url = runtime
        .config
        .mcp
        .public_url
        .clone()
        .or_else(|| std::env::var("SERVER_URL").ok())
        .unwrap_or_else(|| match local {
            Some(local) => format!("http://{local}"),
            None => format!("http://{bind}:{port}"),
        });
    let resource = ResourceIdentity::new(&public_url, runtime.config.mcp.oauth.scopes.clone());
    let registry = runtime.registry.clone();
    let app = Arc::new(HttpApp { runtime, resource });
    http::serve(listener, app, shutdown_signal()).await;
    tracing::info!("shutting down modules");
    let _ = tokio::task::spawn_blocking(move || registry.shutdown()).await;
    ExitCode::SUCCESS
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
