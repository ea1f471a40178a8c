//! `mcp-delegate`: build the [`Runtime`], bind, serve until a signal,
//! reloading on `SIGHUP` and when the config changes ([`crate::reload`]).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::ServeArgs;
use crate::http::{self, HttpApp};
use crate::reload::Server;
use crate::runtime::{BuildArgs, Runtime};
use crate::status::ReloadLog;

/// Hashing the config more often than this buys nothing but CPU.
const MIN_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

pub async fn run(args: ServeArgs) -> ExitCode {
    let Some(config_path) = args.config.clone() else {
        tracing::error!("no config file: pass --config FILE or set CONFIG_PATH");
        return ExitCode::from(2);
    };
    let reload_log = Arc::new(ReloadLog::default());
    // Building instances is synchronous plugin code: keep it off the runtime.
    let common = args.common.clone();
    let bind = common.bind;
    let build_path = config_path.clone();
    let build_log = reload_log.clone();
    let built = tokio::task::spawn_blocking(move || {
        let build_args = BuildArgs {
            common: &common,
            local_addr: None,
            reload_log: build_log,
        };
        let built = Runtime::build(&build_path, &build_args, None);
        let (built, diagnostics) = (built.runtime, built.diagnostics);
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
    for missing in &runtime.registry.modules.unavailable {
        tracing::error!(module = %missing.name, "module unavailable: {}", missing.reason);
    }
    if runtime.authenticator.is_none() {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.mode \"none\"): every caller on this machine \
             can use every tool, and no database identity is delegated. Serving on loopback only."
        );
    }

    let port = runtime.port(args.port);
    let listener = match listen(SocketAddr::new(bind, port)) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%bind, port, error = %err, "cannot listen");
            runtime.shutdown_modules_except(None);
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(bind, port));
    let runtime = runtime.bound_to(local);
    if let Some(address) = args.metrics_bind {
        match crate::metrics::bind(address).await {
            Ok(listener) => {
                crate::metrics::enable();
                tracing::info!("Metrics on http://{address}/metrics");
                tokio::spawn(crate::metrics::serve(listener));
            }
            Err(err) => {
                tracing::error!(%address, error = %err, "cannot listen for metrics");
                runtime.shutdown_modules_except(None);
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        if let Err(err) = crate::trace::init(endpoint) {
            tracing::error!("{err}");
            runtime.shutdown_modules_except(None);
            return ExitCode::FAILURE;
        }
        tracing::info!(endpoint = %endpoint, "Exporting traces with OTLP/HTTP");
    }
    crate::metrics::METRICS.generation(runtime.generation.short_hash());
    crate::metrics::METRICS.modules(&runtime.registry.modules);
    runtime.start();
    tracing::info!(
        tools = runtime.registry.tools().len(),
        generation = %runtime.generation.short_hash(),
        "Listening on http://{local}/mcp"
    );
    let server = Arc::new(Server::new(
        runtime,
        config_path,
        args.common.clone(),
        local,
        reload_log,
        args.drain_timeout,
    ));
    #[cfg(unix)]
    let hangups = tokio::spawn(server.clone().reload_on_hangup());
    let watch_interval = args.watch_interval.max(MIN_WATCH_INTERVAL);
    let watcher = (!args.no_watch).then(|| tokio::spawn(server.clone().watch(watch_interval)));
    let app = Arc::new(HttpApp {
        server: server.clone(),
        draining: std::sync::atomic::AtomicBool::new(false),
    });
    let limits = http::ConnectionLimits::of(&server.current().config.mcp);
    http::serve(listener, app, shutdown_signal(), args.drain_timeout, limits).await;
    #[cfg(unix)]
    hangups.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    tracing::info!("shutting down modules");
    server.shut_down().await;
    let _ = tokio::task::spawn_blocking(crate::trace::shutdown).await;
    ExitCode::SUCCESS
}

/// How many connections the kernel may queue before we accept them: a
/// burst of new connections (2,000 at once in the tests) is queued, not
/// dropped into SYN retransmits of a second each. Linux caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
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
