//! The host's tracing subscriber, and the sink plugins log into.

use std::io::IsTerminal;

use abi_stable::std_types::RStr;
use mcp_delegate_plugin_api::{HostServices, LogLevel};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// `RUST_LOG`-style filtering, default `info`. Logs go to stderr.
pub fn init() {
    // rmcp logs every stateless request's stream lifecycle at info.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Receives a plugin's log records (see plugin-api's `log_bridge`).
extern "C" fn plugin_log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    let target = target.as_str();
    let message = message.as_str();
    match level {
        LogLevel::Error => tracing::error!(plugin_target = target, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin_target = target, "{message}"),
        LogLevel::Info => tracing::info!(plugin_target = target, "{message}"),
        LogLevel::Debug => tracing::debug!(plugin_target = target, "{message}"),
        LogLevel::Trace => tracing::trace!(plugin_target = target, "{message}"),
    }
}

/// What every plugin instance is given.
pub fn host_services() -> HostServices {
    let max_log_level = match LevelFilter::current().into_level() {
        Some(level) => LogLevel::from_tracing(&level),
        None => LogLevel::Error,
    };
    HostServices::new(plugin_log, max_log_level)
}
