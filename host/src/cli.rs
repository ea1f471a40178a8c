//! Command-line interface.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mcp-delegate",
    version,
    about = "MCP server that queries PostgreSQL databases as the calling user's own role"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file (and the plugins it needs) without serving.
    CheckConfig {
        /// The config file.
        file: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print the SQL that hardens a module's database for delegation (the
    /// service account's profile). Changes nothing itself.
    DbSetup {
        /// The module entry (`postgresql1`).
        #[arg(long)]
        module: String,
        /// The config file.
        #[arg(long, env = "CONFIG_PATH")]
        config: PathBuf,
        /// A role users are delegated to (repeat for several); without
        /// one, the SQL has a placeholder.
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Directory holding plugin libraries (default: config `plugins.directory`,
    /// else the directory of this executable).
    #[arg(long)]
    pub plugin_dir: Option<PathBuf>,
    /// Directory of `{"$secret": "NAME"}` files (default /run/secrets).
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// Address to bind (check-config checks the config for it too).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (JSON).
    #[arg(long, env = "CONFIG_PATH")]
    pub config: Option<PathBuf>,
    /// Port to listen on (default: config `mcp.port`, else 3000; 0 picks a free one).
    #[arg(long, env = "SERVER_PORT")]
    pub port: Option<u16>,
    /// Reload only on SIGHUP, never because the config file changed.
    #[arg(long)]
    pub no_watch: bool,
    /// How often the config file and the secret files it names are checked
    /// for new content (`2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,
    /// Serve Prometheus metrics at `http://ADDR/metrics`, on a listener of
    /// their own (`--metrics-bind` alone: 127.0.0.1:9464). Off by default.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Export traces with OTLP/HTTP to this collector (its base URL;
    /// `/v1/traces` is added). Off by default.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How long calls in flight may finish: those of a module a reload
    /// removed, and all of them after SIGTERM or SIGINT.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}
