//! `mcp-delegate`: an MCP server that runs agents' SQL as the calling user's
//! own database role, through delegation-module plugins. See
//! docs/ARCHITECTURE.md for the code map.

mod auth;
mod builtin;
mod check_config;
mod cli;
mod config;
mod http;
mod logging;
mod mcp;
mod plugins;
mod registry;
mod serve;
mod startup;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init();
    match cli.command {
        Some(cli::Command::CheckConfig { file, common }) => check_config::run(&file, &common),
        None => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(serve::run(cli.serve)),
            Err(err) => {
                eprintln!("cannot start the async runtime: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
